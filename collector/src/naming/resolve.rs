//! Names raw addresses with `blazesym`, caching by module and address.
//!
//! An address is matched to the module whose executable range holds it,
//! turned into the address in the file by the module's load bias, and looked
//! up in that file's DWARF (function, file and line, inlined calls
//! included), falling back to its symbol table. Frames that cannot be named
//! say which module and offset they are, never nothing:
//! `libfoo.so.1+0x1a2b`, or the bare address when no module holds it.
//!
//! The parsed debug info lives here, in the collector; the services it
//! belongs to never load it. Names are cached by build ID and address in the
//! file, so every instance of a binary shares them and two builds never do.
//! blazesym keeps every file it has read open and parsed; past
//! [`MAX_FILES`] distinct files the symbolizer and the caches start afresh,
//! so deploys and hostile probes cannot grow the collector's memory or fds.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blazesym::Pid;
use blazesym::symbolize::source::{Elf, Process, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer};
use meshwatch_proto::v1::{Frame, Module};

use super::locate::{LocateError, locate};

/// Named addresses remembered before the cache is cleared: far above the
/// distinct code addresses of a host's hot paths, and a bound on memory.
const MAX_CACHED_ADDRESSES: usize = 64 * 1024;
/// Module lookups remembered before that cache is cleared.
const MAX_CACHED_MODULES: usize = 4096;
/// Distinct files read before the symbolizer starts afresh: a host runs a
/// few dozen binaries and libraries at a time.
const MAX_FILES: usize = 64;
/// How long a module that could not be found stays unnamed before it is
/// looked for again (debug info may be installed meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// Whether an address is the exact instruction a thread was executing (the
/// leaf of a stack taken from a signal's context) or a return address, which
/// points just past the call and is looked up one byte earlier so that the
/// line is the call's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressKind {
    Exact,
    Return,
}

/// A module as one probe described it, identified for the caches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ModuleKey {
    path: String,
    build_id: Vec<u8>,
}

/// Where a module's names come from, or why they cannot, and since when.
type Located = (Result<PathBuf, LocateError>, Instant);

/// Names addresses; lives on the naming thread (blazesym's symbolizer is
/// neither `Send` nor `Sync`).
pub(crate) struct Resolver {
    symbolizer: Symbolizer,
    debuginfo_dirs: Vec<PathBuf>,
    /// Per process and module.
    files: HashMap<(u32, ModuleKey), Located>,
    /// The files the symbolizer has read since it started.
    files_read: HashSet<PathBuf>,
    /// Frames per (build ID, address in the file, kind), innermost first.
    frames: HashMap<(Vec<u8>, u64, AddressKind), Vec<Frame>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("debuginfo_dirs", &self.debuginfo_dirs)
            .field("files", &self.files.len())
            .field("frames", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl Resolver {
    pub(crate) fn new(debuginfo_dirs: Vec<PathBuf>) -> Self {
        Self {
            symbolizer: symbolizer(&debuginfo_dirs),
            debuginfo_dirs,
            files: HashMap::new(),
            files_read: HashSet::new(),
            frames: HashMap::new(),
        }
    }

    /// The frames of a whole stack, leaf first, where `addrs[0]` is of
    /// `leaf_kind` and every other address is a return address. `pid` is
    /// the process that loaded `modules`, in its own PID namespace.
    pub(crate) fn stack(
        &mut self,
        pid: u32,
        modules: &[Module],
        addrs: &[u64],
        leaf_kind: AddressKind,
    ) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let kind = if i == 0 {
                leaf_kind
            } else {
                AddressKind::Return
            };
            frames.extend(self.frames(pid, modules, addr, kind));
        }
        frames
    }

    /// The frames at one address, innermost first; never empty.
    fn frames(&mut self, pid: u32, modules: &[Module], addr: u64, kind: AddressKind) -> Vec<Frame> {
        // A return address can sit just past the end of its module's code
        // (a call that never returns, last in the segment): the call is at
        // the byte before.
        let call = match kind {
            AddressKind::Exact => addr,
            AddressKind::Return => addr.saturating_sub(1),
        };
        let Some(module) = modules.iter().find(|m| (m.start..m.end).contains(&call)) else {
            return unnamed_stack(modules, &[addr]);
        };
        let offset = addr.wrapping_sub(module.load_bias);
        let file = if is_vdso(module) {
            None
        } else {
            match self.file(pid, module) {
                Ok(file) => Some(file),
                Err(_) => return unnamed_stack(modules, &[addr]),
            }
        };
        // `locate` only finds files whose build ID is the module's.
        let key = (module.build_id.clone(), offset, kind);
        if let Some(frames) = self.frames.get(&key) {
            // Cached from any process that loaded this build: the same
            // names, at this process's address.
            return frames
                .iter()
                .map(|f| Frame {
                    address: addr,
                    ..f.clone()
                })
                .collect();
        }
        if self.frames.len() >= MAX_CACHED_ADDRESSES {
            self.frames.clear();
        }
        let lookup = match kind {
            AddressKind::Exact => offset,
            AddressKind::Return => offset.saturating_sub(1),
        };
        let (source, input) = match &file {
            Some(file) => (Source::Elf(Elf::new(file)), Input::VirtOffset(lookup)),
            None => match own_vdso() {
                Some((source, base)) => (source, Input::AbsAddr(base + lookup)),
                None => return unnamed_stack(modules, &[addr]),
            },
        };
        let named = match self.symbolizer.symbolize_single(&source, input) {
            Ok(Symbolized::Sym(sym)) => {
                let mut frames: Vec<Frame> = sym
                    .inlined
                    .iter()
                    .rev()
                    .map(|inlined| frame(&inlined.name, inlined.code_info.as_ref(), addr))
                    .collect();
                frames.push(frame(&sym.name, sym.code_info.as_deref(), addr));
                frames
            }
            Ok(Symbolized::Unknown(_)) => unnamed_stack(modules, &[addr]),
            // Not remembered: the file may read fine next time.
            Err(error) => {
                tracing::debug!(%error, module = %module.path, "naming an address failed");
                return unnamed_stack(modules, &[addr]);
            }
        };
        // The vDSO has no source file: say where the frame is, so that it
        // reads as the kernel's and is never taken for the service's code.
        let named = if file.is_none() {
            named
                .into_iter()
                .map(|f| Frame {
                    file: if f.file.is_empty() {
                        VDSO_FILE.to_owned()
                    } else {
                        f.file
                    },
                    ..f
                })
                .collect()
        } else {
            named
        };
        self.frames.insert(key, named.clone());
        named
    }

    /// The file for `module`, found once per process and module (a module
    /// that could not be found is looked for again after [`RETRY_AFTER`]).
    fn file(&mut self, pid: u32, module: &Module) -> Result<PathBuf, LocateError> {
        let key = (
            pid,
            ModuleKey {
                path: module.path.clone(),
                build_id: module.build_id.clone(),
            },
        );
        if let Some((found, at)) = self.files.get(&key)
            && (found.is_ok() || at.elapsed() < RETRY_AFTER)
        {
            return found.clone();
        }
        if self.files.len() >= MAX_CACHED_MODULES {
            self.files.clear();
        }
        let found = locate(&module.path, &module.build_id, pid, &self.debuginfo_dirs);
        match &found {
            Ok(file) => {
                if !self.files_read.contains(file) && self.files_read.len() >= MAX_FILES {
                    // blazesym keeps every file it read open and parsed.
                    self.symbolizer = symbolizer(&self.debuginfo_dirs);
                    self.files_read.clear();
                    self.frames.clear();
                }
                self.files_read.insert(file.clone());
            }
            Err(error) => {
                tracing::debug!(%error, "frames in this module are shown as module+offset");
            }
        }
        self.files.insert(key, (found.clone(), Instant::now()));
        found
    }
}

/// The names the loader gives the kernel's vDSO, the small library
/// through which `clock_gettime` and friends run without a system call: a
/// service that reads the clock in a loop spends its time there.
const VDSO_NAMES: [&str; 3] = ["linux-vdso.so.1", "linux-vdso32.so.1", "linux-gate.so.1"];

/// The file of a frame in the vDSO, as `/proc/PID/maps` names it.
pub(crate) const VDSO_FILE: &str = "[vdso]";

/// Whether `module` is the vDSO, which has no file to read.
fn is_vdso(module: &Module) -> bool {
    VDSO_NAMES.contains(&module.path.as_str())
}

/// The collector's own vDSO, to name another process's vDSO addresses
/// with (by their offset in it): the kernel maps the same image into every
/// process of the host, and the collector names only its host's processes.
/// The source and where the image starts; `None` without one.
fn own_vdso() -> Option<(Source<'static>, u64)> {
    // SAFETY: getauxval reads the process's auxiliary vector, and returns
    // 0 for an entry that is absent.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    let process = Process {
        pid: Pid::Slf,
        debug_syms: false,
        perf_map: false,
        map_files: false,
        vdso: true,
        ..Process::new(Pid::Slf)
    };
    (base != 0).then_some((Source::Process(process), base))
}

/// A symbolizer that reads DWARF (with inlined calls) and symbol tables,
/// demangles, and follows debug links into `debuginfo_dirs` and the
/// system's debug directories.
pub(crate) fn symbolizer(debuginfo_dirs: &[PathBuf]) -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        // A file replaced on disk is read again, not served stale.
        .enable_auto_reload(true)
        .set_debug_dirs(Some(
            debuginfo_dirs
                .iter()
                .cloned()
                .chain(["/usr/lib/debug".into(), "/lib/debug".into()]),
        ))
        .build()
}

/// The frame blazesym named `name` at `code`, for address `addr`.
pub(crate) fn frame(name: &str, code: Option<&CodeInfo<'_>>, addr: u64) -> Frame {
    Frame {
        function: name.to_owned(),
        file: code
            .map(|c| c.to_path().display().to_string())
            .unwrap_or_default(),
        line: code.and_then(|c| c.line).unwrap_or(0),
        address: addr,
    }
}

/// A frame that could not be named: its module and offset (the address in
/// the file, as `addr2line -e MODULE` takes it), or the bare address.
fn unnamed(addr: u64, module: Option<(&Module, u64)>) -> Frame {
    let function = match module {
        Some((module, offset)) => {
            let name = module.path.rsplit('/').next().unwrap_or(&module.path);
            format!("{name}+{offset:#x}")
        }
        None => format!("{addr:#x}"),
    };
    Frame {
        function,
        address: addr,
        ..Frame::default()
    }
}

/// The frames of a stack named by module and offset only: what a message
/// carries when the naming thread cannot answer in time.
pub(crate) fn unnamed_stack(modules: &[Module], addrs: &[u64]) -> Vec<Frame> {
    addrs
        .iter()
        .map(|&addr| {
            let module = modules.iter().find(|m| (m.start..m.end).contains(&addr));
            unnamed(addr, module.map(|m| (m, addr.wrapping_sub(m.load_bias))))
        })
        .collect()
}

pub(crate) use meshwatch_api::own_code::is_unnamed;

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_distinctive_name() -> u64 {
        std::hint::black_box(7)
    }

    /// This test binary as a probe would describe it, worked out by
    /// blazesym's own normalizer (an independent reading of the process's
    /// mappings): the executable mapping holding `addr`, and the bias from
    /// runtime address to the address in the file.
    fn own_module(addr: u64) -> Module {
        use blazesym::helper::ElfResolver;
        use blazesym::normalize::Normalizer;
        use blazesym::symbolize::TranslateFileOffset as _;

        let normalizer = Normalizer::new();
        let normalized = normalizer
            .normalize_user_addrs(blazesym::Pid::Slf, &[addr])
            .unwrap();
        let (file_offset, meta) = normalized.outputs[0];
        let elf = normalized.meta[meta].as_elf().unwrap();
        let virt = ElfResolver::open(&elf.path)
            .unwrap()
            .file_offset_to_virt_offset(file_offset)
            .unwrap()
            .unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let (start, end) = maps
            .lines()
            .filter_map(|line| line.split_whitespace().next()?.split_once('-'))
            .map(|(a, b)| {
                (
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                )
            })
            .find(|(a, b)| (*a..*b).contains(&addr))
            .unwrap();
        Module {
            path: elf.path.display().to_string(),
            build_id: elf.build_id.as_deref().unwrap_or_default().to_vec(),
            load_bias: addr - virt,
            start,
            end,
        }
    }

    #[test]
    fn names_the_clock_functions_of_the_vdso_though_it_has_no_file() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let Some((start, end)) = maps
            .lines()
            .filter(|line| line.ends_with("[vdso]"))
            .filter_map(|line| line.split_whitespace().next()?.split_once('-'))
            .map(|(a, b)| {
                (
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                )
            })
            .next()
        else {
            eprintln!("this kernel maps no vDSO");
            return;
        };
        // As a probe describes it: the loader's name, the vDSO linked at 0.
        let vdso = Module {
            path: "linux-vdso.so.1".to_owned(),
            build_id: vec![1],
            load_bias: start,
            start,
            end,
        };
        let mut resolver = Resolver::new(Vec::new());
        let named: Vec<Frame> = (start..end)
            .step_by(16)
            .flat_map(|addr| {
                resolver.stack(
                    std::process::id(),
                    std::slice::from_ref(&vdso),
                    &[addr],
                    AddressKind::Exact,
                )
            })
            .filter(|frame| !is_unnamed(&frame.function))
            .collect();
        assert!(
            named
                .iter()
                .any(|f| f.function.contains("clock_gettime") && f.file == VDSO_FILE),
            "{named:?}"
        );
    }

    #[test]
    fn names_a_function_of_this_binary_with_file_and_line() {
        let addr = a_function_with_a_distinctive_name as *const () as u64;
        let module = own_module(addr);
        let mut resolver = Resolver::new(Vec::new());
        let frames = resolver.stack(std::process::id(), &[module], &[addr], AddressKind::Exact);
        let frame = frames.last().unwrap();
        assert!(
            frame
                .function
                .contains("a_function_with_a_distinctive_name"),
            "{frames:?}"
        );
        assert!(frame.file.ends_with("resolve.rs"), "{frames:?}");
        assert!(frame.line > 0);
        assert!(frames.iter().all(|f| f.address == addr));
        // Cached: the same answer without the file.
        assert_eq!(resolver.frames.len(), 1);
        let again = resolver.stack(
            std::process::id(),
            &[own_module(addr)],
            &[addr],
            AddressKind::Exact,
        );
        assert_eq!(again, frames);
    }

    #[test]
    fn unnameable_frames_show_module_and_offset() {
        let module = Module {
            path: "/nowhere/libgone.so.1".to_owned(),
            build_id: vec![0xab, 0xcd],
            load_bias: 0x7000_0000,
            start: 0x7000_1000,
            end: 0x7000_9000,
        };
        let mut resolver = Resolver::new(Vec::new());
        let frames = resolver.stack(1, &[module], &[0x7000_1a2b, 0x10], AddressKind::Exact);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["libgone.so.1+0x1a2b", "0x10"]);
        assert!(frames.iter().all(|f| is_unnamed(&f.function)));
        assert!(!is_unnamed("<T as svc::Handler>::call"));
    }
}
