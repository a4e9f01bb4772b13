//! Unwinds the calling thread cheaply, for the heap profiler's samples.
//!
//! A sampled allocation needs its stack now, inside the allocator. libgcc's
//! unwinder (`_Unwind_Backtrace`) finds and parses every frame's CFI afresh,
//! about 1,300 instructions a frame: at 40 frames, 50,000 instructions per
//! sample, a tenth of a small HTTP service's work at the default sampling
//! rate (`BENCHMARKS.md`). framehop caches the unwind rule of every address
//! it has seen, so once the service's hot paths are warm a frame costs a
//! hash lookup. The registers come from a few instructions of inline
//! assembly in this frame, and the stack is read in place, bounded by this
//! thread's stack.
//!
//! One unwinder serves every thread, behind a mutex that is only ever
//! tried: a thread that finds it busy (another thread sampling, or a child
//! forked while the lock was held) returns `None`, and the caller falls
//! back to libgcc. Nothing here blocks or is signal-unsafe beyond what the
//! allocator's sampled path already allows (it runs under the profiler's
//! reentrancy guard, so the unwinder's own allocations are not sampled).

use std::cell::Cell;
use std::sync::Mutex;

use super::capture::Registers;
use super::unwind::StackUnwinder;

/// The shared unwinder, built on first use.
static UNWINDER: Mutex<Option<StackUnwinder>> = Mutex::new(None);

thread_local! {
    /// The end (highest address) of this thread's stack; 0 until looked up.
    static STACK_END: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's return addresses, innermost first, into `out`;
/// how many were written. `None` when the shared unwinder is busy or this
/// thread's stack bounds are unknown: the caller then unwinds another way.
#[inline(never)]
pub(crate) fn unwind_here(out: &mut [usize]) -> Option<usize> {
    let stack_end = stack_end()?;
    let mut guard = UNWINDER.try_lock().ok()?;
    let unwinder = guard.get_or_insert_with(StackUnwinder::new);
    let regs = registers();
    Some(unwinder.unwind_here(regs, stack_end, out))
}

/// Builds the shared unwinder and lists the loaded objects now, on the
/// calling thread (the probe's start). Otherwise the first sampled
/// allocation builds them, on a worker: their memory (the rule caches,
/// about 160 KiB) then sits for good in that worker's allocator arena,
/// between the blocks of its hot path, and measurably slowed the allocator
/// there (`BENCHMARKS.md`).
pub(crate) fn prepare_unwinder() {
    if let Ok(mut guard) = UNWINDER.lock() {
        guard.get_or_insert_with(StackUnwinder::new).refresh();
    }
}

/// This frame's program counter, stack pointer and frame pointer (and link
/// register on aarch64). Always inlined into [`unwind_here`], whose frame
/// stays live while its stack is read.
#[inline(always)]
fn registers() -> Registers {
    let (pc, sp, fp, lr): (u64, u64, u64, u64);
    // SAFETY: reads registers into outputs; touches no memory and no stack.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
        lr = 0;
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "adr {pc}, .",
            "mov {sp}, sp",
            "mov {fp}, x29",
            "mov {lr}, x30",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            lr = out(reg) lr,
            options(nomem, nostack, preserves_flags),
        );
    }
    Registers { pc, sp, fp, lr }
}

/// The end of the calling thread's stack, looked up once per thread.
fn stack_end() -> Option<u64> {
    let cached = STACK_END.try_with(Cell::get).ok()?;
    if cached != 0 {
        return Some(cached);
    }
    let end = lookup_stack_end()?;
    let _ = STACK_END.try_with(|c| c.set(end));
    Some(end)
}

/// Asks the C library for the calling thread's stack. For the main thread
/// glibc reads `/proc/self/maps` (once, then cached above).
fn lookup_stack_end() -> Option<u64> {
    // SAFETY: `attr` is initialized by pthread_getattr_np before use and
    // destroyed after; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (got == 0 && !addr.is_null()).then(|| addr as u64 + size as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn unwind_from_a_distinctive_function(out: &mut [usize]) -> Option<usize> {
        let depth = unwind_here(out);
        std::hint::black_box(depth)
    }

    #[test]
    fn walks_from_here_through_the_caller_into_the_thread_entry() {
        // The heap profiler's tests sample through the same shared unwinder.
        let _serial = crate::alloc::tests::SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = [0usize; 64];
        let depth = unwind_from_a_distinctive_function(&mut out).expect("the unwinder is free");
        let addrs = &out[..depth];
        assert!(depth >= 4, "{addrs:x?}");
        let entry = unwind_from_a_distinctive_function as *const () as usize;
        assert!(
            addrs[..3].iter().any(|a| (entry..entry + 1024).contains(a)),
            "{addrs:x?}, caller at {entry:#x}"
        );
        // The same walk as libgcc's, frame for frame, below this one.
        let mut theirs = Vec::new();
        backtrace::trace(|frame| {
            theirs.push(frame.ip() as usize);
            true
        });
        let ours_outer: Vec<usize> = addrs.iter().rev().take(3).copied().collect();
        let theirs_outer: Vec<usize> = theirs
            .iter()
            .rev()
            .filter(|&&a| a != 0)
            .take(3)
            .copied()
            .collect();
        assert_eq!(ours_outer, theirs_outer, "{addrs:x?} vs {theirs:x?}");
    }
}
