//! Captures the calling thread's return addresses without allocating.
//!
//! Uses `backtrace::trace_unsynchronized` (the unwinder walking the stack
//! through the DWARF CFI of each frame) into a fixed array. It is the
//! unsynchronized variant because the synchronized one takes a lock that a
//! reentrant call from inside the allocator could find held; on Linux the
//! unwinder is thread-safe. Without the `stacks` feature, nothing is
//! captured and every sample falls into one anonymous site.

use super::table::Stack;

/// The calling thread's stack, innermost first, at most [`MAX_DEPTH`](super::table::MAX_DEPTH)
/// frames. The first few are the profiler's and the allocator's own; the
/// collector trims them once it has named the frames
/// (`heap_sites::allocating_frames`).
#[cfg(feature = "stacks")]
#[inline(never)]
pub(crate) fn capture() -> Stack {
    let mut stack = Stack::EMPTY;
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

#[cfg(not(feature = "stacks"))]
pub(crate) fn capture() -> Stack {
    Stack::EMPTY
}
