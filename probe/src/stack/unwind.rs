//! Unwinds a captured stack into return addresses, with DWARF CFI.
//!
//! The unwind tables are the `.eh_frame_hdr` and `.eh_frame` sections every
//! ELF object loaded in the process already has mapped in memory (Rust keeps
//! them for panics even in release builds), found through `dl_iterate_phdr`.
//! `framehop` walks the frames from the captured registers, reading the
//! stack from the copy the signal handler made; it falls back to frame
//! pointers where an address has no unwind information. Nothing is read
//! from disk and no section is copied: the tables are used where the loader
//! mapped them, and the object list is taken again whenever the loader
//! reports that objects were added or removed.

use std::ops::{Deref, Range};

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, MayAllocateDuringUnwind, Module, Unwinder,
    UnwinderNative,
};

use super::capture::{RawStack, Registers};
use super::objects::{LoadedObject, current_generation, list_objects};
use super::rule_caches::RuleCaches;

/// Frames kept per stack: deeper stacks are cut, outermost frames last.
const MAX_FRAMES: usize = 256;

/// Bytes of a loaded object, used in place.
#[derive(Debug, Clone, Copy)]
struct Mapped {
    ptr: *const u8,
    len: usize,
}

impl Default for Mapped {
    fn default() -> Self {
        Self {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
        }
    }
}

impl Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` lies inside a readable segment of an object
        // the loader has mapped (from its program headers). Objects are only
        // unmapped by `dlclose`, and the unwinder is rebuilt whenever the
        // loader's add/remove counters change, before every unwind.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Decodes the `eh_frame_ptr` field of an `.eh_frame_hdr` at address `hdr`
/// (its avma): the address of `.eh_frame`. Handles the encodings linkers
/// emit: absolute or PC-relative, 4 or 8 bytes.
fn eh_frame_address(hdr: &[u8], hdr_avma: u64) -> Option<u64> {
    const PCREL: u8 = 0x10;
    let (&version, rest) = hdr.split_first()?;
    let &encoding = rest.first()?;
    if version != 1 {
        return None;
    }
    let field = hdr.get(4..)?;
    let value = match encoding & 0x0f {
        0x03 => u64::from(u32::from_ne_bytes(field.get(..4)?.try_into().ok()?)),
        0x0b => i64::from(i32::from_ne_bytes(field.get(..4)?.try_into().ok()?)) as u64,
        0x00 | 0x04 | 0x0c => u64::from_ne_bytes(field.get(..8)?.try_into().ok()?),
        _ => return None,
    };
    match encoding & 0x70 {
        0 => Some(value),
        PCREL => Some((hdr_avma + 4).wrapping_add(value)),
        _ => None,
    }
}

fn mapped(avma: u64, len: u64) -> Mapped {
    Mapped {
        ptr: avma as usize as *const u8,
        len: usize::try_from(len).unwrap_or(0),
    }
}

/// Builds framehop's view of one object; `None` for objects without
/// loadable segments.
fn module(object: &LoadedObject) -> Option<Module<Mapped>> {
    let range = object.range()?;
    let bias = object.bias;
    let mut info = ExplicitModuleSectionInfo::<Mapped> {
        base_svma: 0,
        ..ExplicitModuleSectionInfo::default()
    };
    if let Some(&(vaddr, filesz, _, _)) = object.loads.iter().find(|l| l.3) {
        info.text_svma = Some(vaddr..vaddr + filesz);
        info.text = Some(mapped(bias + vaddr, filesz));
    }
    if let Some((vaddr, memsz)) = object.eh_frame_hdr {
        let hdr = mapped(bias + vaddr, memsz);
        info.eh_frame_hdr_svma = Some(vaddr..vaddr + memsz);
        if let Some(eh_avma) = eh_frame_address(&hdr, bias + vaddr) {
            let eh_svma = eh_avma.wrapping_sub(bias);
            // `.eh_frame` has no size of its own here: it runs to the end of
            // the segment holding it, and the table in the header says where
            // each entry starts.
            if let Some(&(seg, filesz, _, _)) = object
                .loads
                .iter()
                .find(|l| (l.0..l.0 + l.1).contains(&eh_svma))
            {
                let len = seg + filesz - eh_svma;
                info.eh_frame_svma = Some(eh_svma..eh_svma + len);
                info.eh_frame = Some(mapped(eh_avma, len));
            }
        }
        info.eh_frame_hdr = Some(hdr);
    }
    let name = if object.name.is_empty() {
        "main".to_owned()
    } else {
        object.name.clone()
    };
    Some(Module::new(name, range, bias, info))
}

/// Walks captured stacks. Lives on the watchdog thread.
pub(crate) struct StackUnwinder {
    generation: Option<(u64, u64)>,
    unwinder: UnwinderNative<Mapped, MayAllocateDuringUnwind>,
    caches: RuleCaches,
    /// Address ranges of the objects, to tell code addresses from garbage.
    code: Vec<Range<u64>>,
}

impl std::fmt::Debug for StackUnwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackUnwinder")
            .field("modules", &self.code.len())
            .finish_non_exhaustive()
    }
}

impl StackUnwinder {
    pub fn new() -> Self {
        Self {
            generation: None,
            unwinder: UnwinderNative::new(),
            caches: RuleCaches::new(),
            code: Vec::new(),
        }
    }

    /// Lists the loaded objects again if the loader says they changed.
    pub fn refresh(&mut self) {
        if self.generation == Some(current_generation()) {
            return;
        }
        let listing = list_objects();
        self.unwinder = UnwinderNative::new();
        self.caches = RuleCaches::new();
        self.code.clear();
        for object in &listing.objects {
            if let (Some(range), Some(module)) = (object.range(), module(object)) {
                self.code.push(range);
                self.unwinder.add_module(module);
            }
        }
        self.generation = Some(listing.generation);
    }

    /// The code addresses of `raw`, leaf (the program counter) first, every
    /// other one a return address.
    pub fn unwind(&mut self, raw: &RawStack) -> Vec<u64> {
        let regs = raw.regs;
        let stack = &raw.stack;
        let read = |addr: u64| -> Result<u64, ()> {
            let offset = usize::try_from(addr.checked_sub(regs.sp).ok_or(())?).map_err(|_| ())?;
            let bytes = stack.get(offset..offset + 8).ok_or(())?;
            Ok(u64::from_ne_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut addrs = Vec::new();
        self.walk(regs, read, MAX_FRAMES, |addr| addrs.push(addr));
        addrs
    }

    /// Unwinds the calling thread from `regs` (taken just now, in a frame
    /// that is still live), reading its stack in place between `regs.sp` and
    /// `stack_end`, into `out`; returns how many addresses it wrote. Used
    /// inside the allocator, so it allocates nothing once warm.
    pub fn unwind_here(&mut self, regs: Registers, stack_end: u64, out: &mut [usize]) -> usize {
        let read = |addr: u64| -> Result<u64, ()> {
            if addr < regs.sp
                || addr.checked_add(8).is_none_or(|end| end > stack_end)
                || !addr.is_multiple_of(8)
            {
                return Err(());
            }
            // SAFETY: `addr..addr+8` lies between this thread's stack
            // pointer and the end of its stack, memory that is mapped and
            // live while the caller's frame is.
            Ok(unsafe { std::ptr::read(addr as usize as *const u64) })
        };
        let mut depth = 0;
        self.walk(regs, read, out.len(), |addr| {
            out[depth] = addr as usize;
            depth += 1;
        });
        depth
    }

    /// Walks from `regs` with `read` reading the stack, passing each code
    /// address (leaf first) to `push`, at most `max`.
    fn walk(
        &mut self,
        regs: Registers,
        mut read: impl FnMut(u64) -> Result<u64, ()>,
        max: usize,
        mut push: impl FnMut(u64),
    ) {
        self.refresh();
        #[cfg(target_arch = "x86_64")]
        let unwind_regs = framehop::x86_64::UnwindRegsX86_64::new(regs.pc, regs.sp, regs.fp);
        #[cfg(target_arch = "aarch64")]
        let unwind_regs = framehop::aarch64::UnwindRegsAarch64::new(regs.lr, regs.sp, regs.fp);
        let mut unwind_regs = unwind_regs;
        let mut frame = FrameAddress::InstructionPointer(regs.pc);
        let mut pushed = 0;
        loop {
            let addr = frame.address();
            let kept = pushed == 0 || frame.is_return_address();
            // Addresses outside every object are garbage, not code.
            if kept && self.code.iter().any(|r| r.contains(&addr)) {
                push(addr);
                pushed += 1;
            }
            if pushed >= max {
                break;
            }
            let cache = self.caches.for_address(frame.address_for_lookup());
            match self
                .unwinder
                .unwind_frame(frame, &mut unwind_regs, cache, &mut read)
            {
                Ok(Some(return_address)) => match FrameAddress::from_return_address(return_address)
                {
                    Some(next) => frame = next,
                    None => break,
                },
                // The end of the stack, or a frame the tables cannot walk
                // past: keep what was found.
                Ok(None) | Err(_) => break,
            }
        }
    }
}

// SAFETY: the unwinder's `Mapped` pointers refer to segments the loader
// mapped for the whole process (not to any thread's memory), valid until
// `dlclose`; the unwinder lists the objects again whenever the loader's
// add/remove counters change. Moving it to another thread changes none of
// that.
unsafe impl Send for StackUnwinder {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pc_relative_and_absolute_eh_frame_pointers() {
        // version 1, pcrel|sdata4, then -0x100.
        let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
        hdr.extend_from_slice(&(-0x100i32).to_ne_bytes());
        assert_eq!(eh_frame_address(&hdr, 0x5000), Some(0x5004 - 0x100));
        let mut abs = vec![1, 0x04, 0x03, 0x3b];
        abs.extend_from_slice(&0x1234u64.to_ne_bytes());
        assert_eq!(eh_frame_address(&abs, 0x5000), Some(0x1234));
        assert_eq!(eh_frame_address(&[2, 0x1b, 0, 0, 0, 0, 0, 0], 0), None);
        assert_eq!(eh_frame_address(&[1], 0), None);
    }

    #[test]
    fn builds_a_module_for_this_executable() {
        let listing = list_objects();
        assert!(module(&listing.objects[0]).is_some());
    }
}
