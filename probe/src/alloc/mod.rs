//! The tracking allocator: counts what the service allocates and frees.
//!
//! It wraps any [`GlobalAlloc`] and forwards every call to it, counting on
//! the way. The counting is thread-local: an increment and a subtraction,
//! then a branch, besides the inner call ([`counts`]; 8 instructions for an
//! allocation and 15 for a free on x86_64, `BENCHMARKS.md`); the totals are
//! read once per snapshot, off the hot path.
//!
//! The allocations' countdown is also the heap profiler's: the rare
//! allocation that runs it out settles the thread's counts and, when it is
//! a sample, has its stack captured (see `heap`). Every free asks the
//! profiler whether the pointer may have been sampled (one load), and a
//! pointer that was is forgotten before its address can be handed out again.
//!
//! The counters are process-wide statics rather than fields of the allocator,
//! because the probe reads them without access to the service's
//! `#[global_allocator]` static, and because a process has only one global
//! allocator anyway.

mod counts;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::Ordering::Relaxed;

use crate::heap;
use counts::{INSTALLED, TOTALS};

/// A `GlobalAlloc` that counts allocations and live bytes for the probe.
///
/// Install it as the service's global allocator. It keeps the service's own
/// allocator as its inner one, so a service that uses mimalloc or jemalloc
/// keeps it:
///
/// ```
/// #[global_allocator]
/// static ALLOC: meshwatch_probe::TrackingAllocator = meshwatch_probe::TrackingAllocator::system();
/// ```
///
/// Without it, the probe still reports RSS, but not the allocator's live
/// bytes, which are what tells a leak from allocator fragmentation.
#[derive(Debug)]
pub struct TrackingAllocator<A = System> {
    inner: A,
}

impl TrackingAllocator<System> {
    /// Tracks the system allocator. A `const fn`, so it can initialize a static.
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A> TrackingAllocator<A> {
    /// Tracks `inner`, any global allocator. A `const fn`, so it can
    /// initialize a static.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's
// arguments unchanged and returns its result; the bookkeeping around the calls
// touches only atomics and const-initialized thread-locals without a
// destructor, and the heap profiler's sampled path runs under a reentrancy
// guard with preallocated tables, so it neither allocates through this
// allocator recursively nor unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for TrackingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Counted before the call, so that the common path ends in a tail
        // call to the inner allocator. The slow path checks the result and
        // takes a failed allocation back; on the common path a failure is
        // counted as an allocation (see `allocate_rarely`).
        if counts::spend_allocation(layout.size()) {
            // SAFETY: the caller's layout, unchanged.
            return unsafe { self.allocate_rarely(layout, Zeroed::No) };
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counts::spend_allocation(layout.size()) {
            // SAFETY: the caller's layout, unchanged.
            return unsafe { self.allocate_rarely(layout, Zeroed::Yes) };
        }
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The common path counts and forwards, the inner call last so that
        // it compiles to a tail call; the rare work (a sampled pointer to
        // forget before its address can be handed out again, a flush) is
        // out of line.
        if counts::spend_free(layout.size()) || heap::may_be_sampled(ptr) {
            // SAFETY: the caller's arguments, unchanged.
            unsafe { self.dealloc_rarely(ptr, layout) };
        } else {
            // SAFETY: forwarded unchanged; the caller upholds the contract.
            unsafe { self.inner.dealloc(ptr, layout) };
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Forgotten first: once the inner allocator moved the block, another
        // thread may be handed the old address. (A failed realloc thus loses
        // one sample; it only happens when memory is exhausted.)
        if heap::may_be_sampled(ptr) {
            heap::forget(ptr);
        }
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let new_ptr = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            if counts::spend_free(layout.size()) {
                counts::freed_slowly();
            }
            if counts::spend_allocation(new_size) {
                counts::allocated_slowly(new_ptr, new_size);
            }
        }
        new_ptr
    }
}

/// Which of the inner allocator's calls [`TrackingAllocator::allocate_rarely`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zeroed {
    Yes,
    No,
}

impl<A: GlobalAlloc> TrackingAllocator<A> {
    /// The rare part of [`GlobalAlloc::alloc`] and `alloc_zeroed`, out of
    /// line: the countdown ran out, so the thread's counts are settled (and
    /// flushed, or the allocation sampled) once the allocation succeeded.
    ///
    /// A failed allocation is taken back here. On the common path it would
    /// be counted, but every allocation of 64 KiB or more comes here (the
    /// countdown is never armed above that), so only a small allocation
    /// failing, when the process is out of memory, can be miscounted.
    ///
    /// # Safety
    ///
    /// `alloc`'s: `layout` has a non-zero size.
    #[cold]
    #[inline(never)]
    unsafe fn allocate_rarely(&self, layout: Layout, zeroed: Zeroed) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let ptr = unsafe {
            match zeroed {
                Zeroed::Yes => self.inner.alloc_zeroed(layout),
                Zeroed::No => self.inner.alloc(layout),
            }
        };
        if ptr.is_null() {
            counts::allocation_failed(layout.size());
        } else {
            counts::allocated_slowly(ptr, layout.size());
        }
        ptr
    }

    /// The rare part of [`GlobalAlloc::dealloc`], out of line.
    ///
    /// # Safety
    ///
    /// `dealloc`'s: `ptr` was allocated by this allocator with `layout`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_rarely(&self, ptr: *mut u8, layout: Layout) {
        heap::forget(ptr);
        counts::freed_slowly();
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.dealloc(ptr, layout) };
    }
}

/// The process's totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HeapTotals {
    /// Whether a `TrackingAllocator` has served any allocation in this process.
    pub installed: bool,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocations: u64,
    pub frees: u64,
}

impl HeapTotals {
    /// Bytes allocated and not yet freed. A thread may have flushed a free
    /// of memory whose allocation another thread still holds back; saturate
    /// rather than wrap.
    pub fn live_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes)
    }
}

/// Reads the allocator's counters: every thread's flushed counts, so each
/// running thread's last few operations may be missing (see [`counts`]).
pub(crate) fn heap_totals() -> HeapTotals {
    HeapTotals {
        installed: INSTALLED.load(Relaxed),
        allocated_bytes: TOTALS.allocated_bytes.load(Relaxed),
        freed_bytes: TOTALS.freed_bytes.load(Relaxed),
        allocations: TOTALS.allocations.load(Relaxed),
        frees: TOTALS.frees.load(Relaxed),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::counts::flush_this_thread;
    use super::*;

    /// The counters are process-wide: every test that allocates through a
    /// `TrackingAllocator` takes this lock, so exact deltas hold.
    pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Allocates, reallocates and frees through a wrapper on this thread:
    /// 4,000 bytes in two allocations and two frees.
    fn alloc_realloc_free() {
        let alloc = TrackingAllocator::system();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a valid non-zero layout; the pointer is freed with the
        // layout it was (re)allocated with.
        unsafe {
            let ptr = alloc.alloc(layout);
            assert!(!ptr.is_null());
            let ptr = alloc.realloc(ptr, layout, 3000);
            assert!(!ptr.is_null());
            alloc.dealloc(ptr, Layout::from_size_align(3000, 8).unwrap());
        }
    }

    /// How much each total grew from `before` to `after`.
    fn growth(before: HeapTotals, after: HeapTotals) -> [u64; 4] {
        [
            after.allocated_bytes - before.allocated_bytes,
            after.freed_bytes - before.freed_bytes,
            after.allocations - before.allocations,
            after.frees - before.frees,
        ]
    }

    #[test]
    fn counts_alloc_realloc_and_free_through_the_wrapper() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        flush_this_thread();
        let before = heap_totals();
        alloc_realloc_free();
        flush_this_thread();
        let after = heap_totals();
        assert!(after.installed);
        // The totals only grow, and only flushes of threads that allocate
        // through a wrapper add to them: at least this thread's counts.
        let [allocated, freed, allocations, frees] = growth(before, after);
        assert!(allocated >= 4000 && freed >= 4000, "{allocated} {freed}");
        assert!(allocations >= 2 && frees >= 2, "{allocations} {frees}");
    }

    #[test]
    fn a_thread_flushes_what_it_held_back_when_it_exits() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = heap_totals();
        let held_back = std::thread::spawn(|| {
            // The thread's first allocation and first free flush (and
            // arrange the exit flush); the second of each stays within the
            // budget.
            alloc_realloc_free();
            assert_eq!(counts::held_back(), (1, 1), "held back before exit");
        });
        held_back.join().unwrap();
        let [allocated, freed, allocations, frees] = growth(before, heap_totals());
        assert!(allocated >= 4000 && freed >= 4000, "{allocated} {freed}");
        assert!(allocations >= 2 && frees >= 2, "{allocations} {frees}");
    }

    #[test]
    fn live_bytes_saturates_instead_of_wrapping() {
        let totals = HeapTotals {
            allocated_bytes: 5,
            freed_bytes: 7,
            ..HeapTotals::default()
        };
        assert_eq!(totals.live_bytes(), 0);
    }
}
