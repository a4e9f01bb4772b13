//! Captures the calling thread's return addresses into a fixed array.
//!
//! First with the probe's own framehop unwinder (`stack::unwind_here`),
//! which caches each address's unwind rule and so costs a fraction of
//! libgcc's per-frame parsing; when that unwinder is busy on another thread,
//! with `backtrace::trace_unsynchronized` (libgcc's `_Unwind_Backtrace`).
//! That is the unsynchronized variant because the synchronized one takes a
//! lock that a reentrant call from inside the allocator could find held; on
//! Linux the unwinder is thread-safe. Without the `stacks` feature, nothing
//! is captured and every sample falls into one anonymous site.

use super::table::Stack;

/// The calling thread's stack, innermost first, at most [`MAX_DEPTH`](super::table::MAX_DEPTH)
/// frames. The first few are the profiler's and the allocator's own; the
/// collector trims them once it has named the frames
/// (`heap_sites::allocating_frames`).
#[cfg(feature = "stacks")]
#[inline(never)]
pub(crate) fn capture() -> Stack {
    let mut stack = Stack::EMPTY;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if let Some(depth) = crate::stack::unwind_here(&mut stack.frames) {
        stack.depth = depth;
        return stack;
    }
    // SAFETY: the closure only writes into `stack`, bounded by MAX_DEPTH;
    // on Linux the unwinder may run on several threads at once.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            // The outermost frame's is 0: the end of the stack.
            let ip = frame.ip() as usize;
            if ip == 0 {
                return false;
            }
            stack.frames[stack.depth] = ip;
            stack.depth += 1;
            stack.depth < super::table::MAX_DEPTH
        });
    }
    stack
}

/// Readies the unwinder [`capture`] uses, off the service's hot path.
pub(crate) fn prepare() {
    #[cfg(all(
        feature = "stacks",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    crate::stack::prepare_unwinder();
}

#[cfg(not(feature = "stacks"))]
pub(crate) fn capture() -> Stack {
    Stack::EMPTY
}
