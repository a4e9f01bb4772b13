//! The tracking allocator: counts what the service allocates and frees.
//!
//! It wraps any [`GlobalAlloc`] and forwards every call to it, adding a few
//! relaxed atomic additions on the way. The counters are sharded: each thread
//! writes to one of [`SHARDS`] cache-line-sized slots, picked once per thread,
//! so threads do not contend on one cache line for every allocation. Reading
//! the totals sums the shards; that happens once per snapshot, off the hot
//! path.
//!
//! Every allocation also counts down this thread's bytes until the heap
//! profiler's next sample (see `heap`); the rare allocation that reaches
//! zero has its stack captured, and every free tells the profiler, which
//! forgets the pointer if it was sampled.
//!
//! The counters are process-wide statics rather than fields of the allocator,
//! because the probe reads them without access to the service's
//! `#[global_allocator]` static, and because a process has only one global
//! allocator anyway.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::heap;

/// Number of counter shards; a power of two so picking one is a mask.
const SHARDS: usize = 32;

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
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            record_alloc(layout.size());
            heap::on_alloc(ptr, layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record_alloc(layout.size());
            heap::on_alloc(ptr, layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Forget a sample before the address can be handed out again.
        heap::on_free(ptr);
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.dealloc(ptr, layout) };
        record_free(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Forgotten first: once the inner allocator moved the block, another
        // thread may be handed the old address. (A failed realloc thus loses
        // one sample; it only happens when memory is exhausted.)
        heap::on_free(ptr);
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let new_ptr = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            record_free(layout.size());
            record_alloc(new_size);
            heap::on_alloc(new_ptr, new_size);
        }
        new_ptr
    }
}

/// One thread group's counters, padded to a cache line of its own.
#[repr(align(128))]
struct Shard {
    allocated_bytes: AtomicU64,
    freed_bytes: AtomicU64,
    allocations: AtomicU64,
    frees: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to build the array
const EMPTY_SHARD: Shard = Shard {
    allocated_bytes: AtomicU64::new(0),
    freed_bytes: AtomicU64::new(0),
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
};

static COUNTERS: [Shard; SHARDS] = [EMPTY_SHARD; SHARDS];
static INSTALLED: AtomicBool = AtomicBool::new(false);
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// In a thread's slot: no shard picked yet.
const UNSET: usize = usize::MAX;

thread_local! {
    // The thread's shard index. Const-initialized and without a destructor:
    // reading it never allocates, which matters because the allocator
    // itself reads it.
    static SLOT: Cell<usize> = const { Cell::new(UNSET) };
}

/// This thread's shard.
#[inline]
fn shard() -> &'static Shard {
    let index = SLOT
        .try_with(|slot| {
            let value = slot.get();
            if value == UNSET {
                let index = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
                slot.set(index);
                return index;
            }
            value
        })
        // During thread teardown the slot may be gone; shard 0 is as good as any.
        .unwrap_or(0);
    &COUNTERS[index]
}

#[inline]
fn record_alloc(size: usize) {
    let shard = shard();
    shard.allocated_bytes.fetch_add(size as u64, Relaxed);
    shard.allocations.fetch_add(1, Relaxed);
    if !INSTALLED.load(Relaxed) {
        INSTALLED.store(true, Relaxed);
    }
}

#[inline]
fn record_free(size: usize) {
    let shard = shard();
    shard.freed_bytes.fetch_add(size as u64, Relaxed);
    shard.frees.fetch_add(1, Relaxed);
}

/// Totals summed over all shards at one moment.
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
    /// Bytes allocated and not yet freed. The shards are read one after the
    /// other, so a free can be counted before its allocation; saturate rather
    /// than wrap.
    pub fn live_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes)
    }
}

/// Reads the allocator's counters.
pub(crate) fn heap_totals() -> HeapTotals {
    let mut totals = HeapTotals {
        installed: INSTALLED.load(Relaxed),
        ..HeapTotals::default()
    };
    for shard in &COUNTERS {
        totals.allocated_bytes += shard.allocated_bytes.load(Relaxed);
        totals.freed_bytes += shard.freed_bytes.load(Relaxed);
        totals.allocations += shard.allocations.load(Relaxed);
        totals.frees += shard.frees.load(Relaxed);
    }
    totals
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The counters are process-wide: every test that allocates through a
    /// `TrackingAllocator` takes this lock, so exact deltas hold.
    pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn counts_alloc_realloc_and_free_through_the_wrapper() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let alloc = TrackingAllocator::system();
        let before = heap_totals();
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
        let after = heap_totals();
        assert!(after.installed);
        // Every other test that allocates through the wrapper holds SERIAL,
        // so the deltas are exact.
        assert_eq!(after.allocated_bytes - before.allocated_bytes, 4000);
        assert_eq!(after.freed_bytes - before.freed_bytes, 4000);
        assert_eq!(after.allocations - before.allocations, 2);
        assert_eq!(after.frees - before.frees, 2);
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
