//! The object files the loader mapped into this process: the executable and
//! its shared libraries, with their segments and build IDs.
//!
//! Two readers need them. The unwinder walks stacks with the unwind tables
//! these objects carry in memory. The collector names the addresses the
//! probe captures, and for that the probe tells it, for every object an
//! address falls in, the path the loader opened, the GNU build ID (which
//! finds the debug info and proves a file on disk is the one loaded) and the
//! load bias (which turns a runtime address back into the file's address).
//! The service itself never opens a debug section.
//!
//! The list comes from `dl_iterate_phdr`, from the program headers the
//! loader keeps in memory: no file is read. It is taken again when the
//! loader's add/remove counters say an object came or went.

use std::ffi::{CStr, c_int, c_void};
use std::ops::Range;

use meshwatch_proto::v1::Module;

/// `NT_GNU_BUILD_ID`, the note type of a GNU build ID.
const NT_GNU_BUILD_ID: u32 = 3;
/// Build IDs are 20 bytes (SHA-1) in practice; longer ones are refused.
const MAX_BUILD_ID: usize = 64;

/// One loaded object's segments, as its program headers describe them.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadedObject {
    /// The loader's name for it: empty for the executable.
    pub name: String,
    /// Runtime address minus the address in the file.
    pub bias: u64,
    /// `(vaddr, filesz, memsz, executable)` of each PT_LOAD.
    pub loads: Vec<(u64, u64, u64, bool)>,
    /// `(vaddr, memsz)` of PT_GNU_EH_FRAME.
    pub eh_frame_hdr: Option<(u64, u64)>,
    /// The GNU build ID from a PT_NOTE segment, when there is one.
    pub build_id: Vec<u8>,
}

impl LoadedObject {
    /// The runtime addresses its loadable segments cover; `None` without any.
    pub fn range(&self) -> Option<Range<u64>> {
        let start = self.loads.iter().map(|l| l.0).min()?;
        let end = self.loads.iter().map(|l| l.0 + l.2).max()?;
        Some((self.bias + start)..(self.bias + end))
    }

    /// The runtime addresses of its executable segments: where return
    /// addresses can point.
    fn code_range(&self) -> Option<Range<u64>> {
        let code = self.loads.iter().filter(|l| l.3);
        let start = code.clone().map(|l| l.0).min()?;
        let end = code.map(|l| l.0 + l.2).max()?;
        Some((self.bias + start)..(self.bias + end))
    }
}

/// The loaded objects and the loader's add/remove counters when listed.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub generation: (u64, u64),
    pub objects: Vec<LoadedObject>,
}

/// The `dl_iterate_phdr` callback: appends one object's description to the
/// `Listing` that `data` points to.
unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Listing` passed by `list_objects`, and `info`
    // is valid for the duration of the callback.
    let (listing, info) = unsafe { (&mut *data.cast::<Listing>(), &*info) };
    listing.generation = (info.dlpi_adds, info.dlpi_subs);
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut object = LoadedObject {
        name,
        bias: info.dlpi_addr,
        ..LoadedObject::default()
    };
    // SAFETY: the loader gives `dlpi_phnum` headers at `dlpi_phdr`.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    // The loadable segments first: a note is read only where one of them
    // maps it from the file.
    let mapped_from_file = |start: u64, len: u64| {
        headers.iter().any(|h| {
            h.p_type == libc::PT_LOAD
                && h.p_flags & libc::PF_R != 0
                && start >= h.p_vaddr
                && start.saturating_add(len) <= h.p_vaddr.saturating_add(h.p_filesz)
        })
    };
    for header in headers {
        match header.p_type {
            libc::PT_LOAD => object.loads.push((
                header.p_vaddr,
                header.p_filesz,
                header.p_memsz,
                header.p_flags & libc::PF_X != 0,
            )),
            libc::PT_GNU_EH_FRAME => object.eh_frame_hdr = Some((header.p_vaddr, header.p_memsz)),
            libc::PT_NOTE
                if object.build_id.is_empty()
                    && header.p_filesz > 0
                    && mapped_from_file(header.p_vaddr, header.p_filesz) =>
            {
                let start = info.dlpi_addr.wrapping_add(header.p_vaddr);
                // SAFETY: the note lies inside the file-backed part of a
                // readable PT_LOAD segment (checked just above) of an object
                // the loader holds for the duration of this callback, and it
                // is not empty.
                let notes = unsafe {
                    std::slice::from_raw_parts(
                        start as usize as *const u8,
                        usize::try_from(header.p_filesz).unwrap_or(0),
                    )
                };
                object.build_id = gnu_build_id(notes, header.p_align)
                    .unwrap_or_default()
                    .to_vec();
            }
            _ => {}
        }
    }
    listing.objects.push(object);
    0
}

/// Every object loaded now.
pub(crate) fn list_objects() -> Listing {
    let mut listing = Listing::default();
    // SAFETY: `collect` matches the callback signature and only touches the
    // `Listing` passed through `data`.
    unsafe { libc::dl_iterate_phdr(Some(collect), (&raw mut listing).cast()) };
    listing
}

/// The loader's add/remove counters, to tell whether a listing is stale.
pub(crate) fn current_generation() -> (u64, u64) {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: as in `collect`.
        let (out, info) = unsafe { (&mut *data.cast::<(u64, u64)>(), &*info) };
        *out = (info.dlpi_adds, info.dlpi_subs);
        1 // stop after the first object
    }
    let mut generation = (0, 0);
    // SAFETY: as in `list_objects`.
    unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut generation).cast()) };
    generation
}

/// The descriptor of a GNU build ID note among the ELF notes in `notes`,
/// a note segment aligned to `align` (8 for segments such as
/// `.note.gnu.property`, whose fields are padded to 8 bytes; 4 otherwise).
fn gnu_build_id(mut notes: &[u8], align: u64) -> Option<&[u8]> {
    let mask = if align == 8 { 7 } else { 3 };
    let word = |bytes: &[u8], at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_ne_bytes(raw)).ok()
    };
    let padded = |n: usize| n.checked_add(mask).map(|n| n & !mask);
    while notes.len() >= 12 {
        let (name_len, desc_len, kind) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)?);
        // The descriptor and the next note start at the segment's alignment.
        let desc_at = padded(12 + name_len)?;
        let next = padded(desc_at.checked_add(desc_len)?)?;
        let name = notes.get(12..12 + name_len)?;
        let desc = notes.get(desc_at..desc_at + desc_len)?;
        if kind == NT_GNU_BUILD_ID as usize && name == b"GNU\0" && desc.len() <= MAX_BUILD_ID {
            return Some(desc);
        }
        notes = notes.get(next..)?;
    }
    None
}

/// Describes, for the collector, the objects that hold a set of addresses.
/// Lives on one probe thread; refreshes its listing when the loader's
/// counters move.
#[derive(Debug, Default)]
pub(crate) struct ModuleMap {
    listing: Option<Listing>,
    /// The executable's path, which the loader lists with an empty name.
    exe: String,
}

impl ModuleMap {
    /// The objects that hold any of `addrs`, each once, in the wire's form.
    /// Addresses outside every object (none, in a sane stack) are left for
    /// the collector to show as bare addresses.
    pub fn modules_for(&mut self, addrs: impl IntoIterator<Item = u64>) -> Vec<Module> {
        let generation = current_generation();
        if self
            .listing
            .as_ref()
            .is_none_or(|l| l.generation != generation)
        {
            self.listing = Some(list_objects());
        }
        if self.exe.is_empty() {
            // After a deploy replaced the binary, the link reads
            // "PATH (deleted)"; the collector looks for PATH's build, and
            // falls back to the process's own /proc/PID/exe.
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            self.exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_owned();
        }
        let Some(listing) = &self.listing else {
            return Vec::new();
        };
        let mut used = vec![false; listing.objects.len()];
        for addr in addrs {
            if let Some(i) = listing
                .objects
                .iter()
                .position(|o| o.code_range().is_some_and(|r| r.contains(&addr)))
            {
                used[i] = true;
            }
        }
        listing
            .objects
            .iter()
            .zip(used)
            .filter(|(_, used)| *used)
            .filter_map(|(object, _)| {
                let code = object.code_range()?;
                Some(Module {
                    path: if object.name.is_empty() {
                        self.exe.clone()
                    } else {
                        object.name.clone()
                    },
                    build_id: object.build_id.clone(),
                    load_bias: object.bias,
                    start: code.start,
                    end: code.end,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One ELF note named "GNU", as a linker lays it out in a segment
    /// aligned to `align`: header, name and descriptor, each padded.
    fn note(kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_ne_bytes());
        note.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_ne_bytes());
        note.extend_from_slice(&kind.to_ne_bytes());
        note.extend_from_slice(b"GNU\0");
        note.resize(note.len().next_multiple_of(align), 0);
        note.extend_from_slice(desc);
        note.resize(note.len().next_multiple_of(align), 0);
        note
    }

    #[test]
    fn reads_a_gnu_build_id_note_after_another_note() {
        // An ABI tag note first, then the build ID.
        let notes = [
            note(1, &[0; 16], 4),
            note(NT_GNU_BUILD_ID, &[0xab, 0xcd, 0xef], 4),
        ]
        .concat();
        assert_eq!(gnu_build_id(&notes, 4), Some(&[0xab, 0xcd, 0xef][..]));
        assert_eq!(gnu_build_id(&notes[..30], 4), None, "truncated");
        assert_eq!(gnu_build_id(&[], 4), None);

        // In an 8-aligned segment (a property note first, as on x86_64), a
        // 12-byte descriptor starts at 16 and the next note at 32.
        let aligned = [
            note(5, &[0; 12], 8),
            note(NT_GNU_BUILD_ID, &[0x12, 0x34], 8),
        ]
        .concat();
        assert_eq!(aligned.len(), 32 + 24);
        assert_eq!(gnu_build_id(&aligned, 8), Some(&[0x12, 0x34][..]));
    }

    #[inline(never)]
    fn a_function_in_the_executable() -> u64 {
        std::hint::black_box(0)
    }

    #[test]
    fn describes_the_executable_holding_an_address() {
        let here = a_function_in_the_executable as *const () as u64;
        let modules = ModuleMap::default().modules_for([here, here + 1, 8]);
        assert_eq!(modules.len(), 1, "{modules:?}");
        let exe = &modules[0];
        assert!(exe.start <= here && here < exe.end, "{exe:?}");
        let on_disk = std::env::current_exe().unwrap();
        assert_eq!(exe.path, on_disk.display().to_string());
        // Rust's linker driver asks for a build ID on Linux.
        assert!(!exe.build_id.is_empty(), "{exe:?}");
        let listing = list_objects();
        assert!(listing.objects.len() >= 2, "{listing:?}");
        assert!(listing.objects[0].eh_frame_hdr.is_some());
    }
}
