//! Turns code addresses into function, file and line, with a cache.
//!
//! Uses the `backtrace` crate's resolver (DWARF line tables through `gimli`),
//! which is why release builds keep `debug = "line-tables-only"`: without
//! line tables a frame still gets its function name from the symbol table,
//! without file and line. With the `stacks` feature off, frames carry only
//! their address.
//!
//! The resolver's parsed debug info is large (tens of MiB for a service,
//! more in debug builds) and lives in the service's process, so it is
//! released once naming has been idle for a while ([`RELEASE_AFTER`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meshwatch_proto::v1::Frame;

/// Addresses remembered before the cache is cleared: a bound on the probe's
/// memory, far above the distinct code addresses a service's hot paths have.
const MAX_CACHED: usize = 16 * 1024;

/// How long the parsed debug info stays loaded after the last address that
/// needed it. Loading it costs a fraction of a second of CPU; keeping it
/// costs tens of MiB of the service's memory (it holds the line tables of
/// the whole binary). Naming comes in bursts (a stuck poll, new allocation
/// sites at start), so it is kept through a burst and released after.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_secs(10);

/// Names addresses, remembering the answers. Lives on one probe thread.
#[derive(Debug, Default)]
pub(crate) struct Symbolizer {
    cache: HashMap<u64, Vec<Frame>>,
    /// When an address last needed the debug info, while it is loaded.
    loaded_since_miss: Option<Instant>,
}

/// Whether an address is the exact instruction a thread was executing (the
/// leaf of a stack taken from a signal's context) or a return address (every
/// caller's frame), which points just past the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressKind {
    /// The program counter itself.
    Exact,
    /// A return address; looked up one byte earlier so that the line is the
    /// call's, not the next statement's.
    Return,
}

impl Symbolizer {
    /// The frames of `addr`, innermost first: an address inside inlined code
    /// names every function inlined there, then the one they were inlined
    /// into. Never empty: an address that cannot be named is one frame with
    /// an empty function name.
    pub fn frames(&mut self, addr: u64, kind: AddressKind) -> &[Frame] {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(&addr) {
            self.cache.clear();
        }
        let lookup = match kind {
            AddressKind::Exact => addr,
            AddressKind::Return => addr.saturating_sub(1),
        };
        let loaded = &mut self.loaded_since_miss;
        self.cache.entry(addr).or_insert_with(|| {
            *loaded = Some(Instant::now());
            resolve(addr, lookup)
        })
    }

    /// Frees the parsed debug info once no address has needed it for
    /// [`RELEASE_AFTER`]; the names already found stay cached. Call it now
    /// and then from the thread that names.
    pub fn release_if_idle(&mut self) {
        if self
            .loaded_since_miss
            .is_some_and(|at| at.elapsed() >= RELEASE_AFTER)
        {
            self.loaded_since_miss = None;
            #[cfg(feature = "stacks")]
            crate::alloc::untracked(backtrace::clear_symbol_cache);
            // The debug info was many small allocations; glibc keeps freed
            // memory in its arenas unless asked to hand it back.
            #[cfg(all(feature = "stacks", target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory to the OS; it
            // touches no memory the program uses and is thread-safe.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// The frames of a whole stack, leaf first, where `addrs[0]` is of
    /// `leaf_kind` and every other address is a return address.
    pub fn stack(&mut self, addrs: &[u64], leaf_kind: AddressKind) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let kind = if i == 0 {
                leaf_kind
            } else {
                AddressKind::Return
            };
            frames.extend_from_slice(self.frames(addr, kind));
        }
        frames
    }
}

/// Names one address. The resolver's debug info is loaded (and later
/// freed) outside the service's heap totals; the frames returned are copied
/// out of that scope so that they are counted like any other memory.
#[cfg(feature = "stacks")]
fn resolve(addr: u64, lookup: u64) -> Vec<Frame> {
    let raw = crate::alloc::untracked(|| resolve_untracked(addr, lookup));
    let frames = raw.clone();
    crate::alloc::untracked(move || drop(raw));
    frames
}

#[cfg(feature = "stacks")]
fn resolve_untracked(addr: u64, lookup: u64) -> Vec<Frame> {
    let mut frames = Vec::new();
    backtrace::resolve(lookup as usize as *mut std::ffi::c_void, |symbol| {
        frames.push(Frame {
            // `{:#}` demangles without the trailing hash.
            function: symbol
                .name()
                .map(|name| format!("{name:#}"))
                .unwrap_or_default(),
            file: symbol
                .filename()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            line: symbol.lineno().unwrap_or(0),
            address: addr,
        });
    });
    if frames.is_empty() {
        frames.push(unnamed(addr));
    }
    frames
}

#[cfg(not(feature = "stacks"))]
fn resolve(addr: u64, _lookup: u64) -> Vec<Frame> {
    vec![unnamed(addr)]
}

fn unnamed(addr: u64) -> Frame {
    Frame {
        address: addr,
        ..Frame::default()
    }
}

#[cfg(all(test, feature = "stacks"))]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_distinctive_name() -> u64 {
        let mut addr = 0u64;
        backtrace::trace(|frame| {
            addr = frame.ip() as u64;
            false
        });
        std::hint::black_box(addr)
    }

    #[test]
    fn names_a_function_of_this_crate_with_file_and_line() {
        let addr = a_function_with_a_distinctive_name();
        let mut symbolizer = Symbolizer::default();
        let frames = symbolizer.stack(&[addr], AddressKind::Exact);
        assert!(
            frames.iter().any(
                |f| f.function.contains("a_function_with_a_distinctive_name")
                    || f.function.contains("backtrace")
            ),
            "{frames:?}"
        );
        assert!(frames.iter().all(|f| f.address == addr));
        assert!(frames.iter().any(|f| f.line > 0 && f.file.ends_with(".rs")));
    }

    #[test]
    fn releasing_the_debug_info_keeps_the_names_found() {
        let addr = a_function_with_a_distinctive_name();
        let mut symbolizer = Symbolizer::default();
        let named = symbolizer.stack(&[addr], AddressKind::Exact);
        assert!(symbolizer.loaded_since_miss.is_some());
        symbolizer.release_if_idle();
        assert!(symbolizer.loaded_since_miss.is_some(), "not idle yet");
        symbolizer.loaded_since_miss = Instant::now().checked_sub(RELEASE_AFTER);
        symbolizer.release_if_idle();
        assert!(symbolizer.loaded_since_miss.is_none(), "released");
        assert_eq!(symbolizer.stack(&[addr], AddressKind::Exact), named);
        assert!(
            symbolizer.loaded_since_miss.is_none(),
            "a cached name loads nothing"
        );
    }

    #[test]
    fn unknown_address_is_one_unnamed_frame() {
        let mut symbolizer = Symbolizer::default();
        let frames = symbolizer.frames(8, AddressKind::Return).to_vec();
        assert_eq!(frames, vec![unnamed(8)]);
    }
}
