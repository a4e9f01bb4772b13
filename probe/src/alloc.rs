//! The tracking allocator: counts what the service allocates and frees.
//!
//! It wraps any [`GlobalAlloc`] and forwards every call to it, counting on
//! the way. Each thread counts in thread-local cells and adds them to the
//! process's atomic totals every 64 operations or 64 KiB, and when it exits
//! ([`Pending`]): the hot path has no locked instruction. The totals are
//! read once per snapshot, off the hot path.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::heap;

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
            allocated(ptr, layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            allocated(ptr, layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The common path counts and forwards, the inner call last so that
        // it compiles to a tail call; the rare work (a sampled pointer to
        // forget before its address can be handed out again, a flush) is
        // out of line.
        let flush_due = record_free(layout.size());
        if flush_due || heap::may_be_sampled(ptr) {
            // SAFETY: the caller's arguments, unchanged.
            unsafe { self.dealloc_rarely(ptr, layout, flush_due) };
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
            if record_free(layout.size()) {
                flush_this_thread();
            }
            allocated(new_ptr, new_size);
        }
        new_ptr
    }
}

impl<A: GlobalAlloc> TrackingAllocator<A> {
    /// The rare part of [`GlobalAlloc::dealloc`], out of line.
    ///
    /// # Safety
    ///
    /// `dealloc`'s: `ptr` was allocated by this allocator with `layout`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_rarely(&self, ptr: *mut u8, layout: Layout, flush_due: bool) {
        heap::forget(ptr);
        if flush_due {
            flush_this_thread();
        }
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.inner.dealloc(ptr, layout) };
    }
}

/// Counts a successful allocation of `size` bytes at `ptr`, and does the
/// rare work it may be due (a flush, a heap sample) out of line.
#[inline]
fn allocated(ptr: *mut u8, size: usize) {
    let flush_due = record_alloc(size);
    let sample_due = heap::sample_due(size);
    if flush_due | sample_due {
        allocated_rarely(ptr, size, flush_due, sample_due);
    }
}

/// The rare part of [`allocated`].
#[cold]
#[inline(never)]
fn allocated_rarely(ptr: *mut u8, size: usize, flush_due: bool, sample_due: bool) {
    if flush_due {
        flush_this_thread();
    }
    if sample_due {
        heap::sample(ptr, size);
    }
}

/// The process's totals, on a cache line of their own. Threads add to them
/// only when they flush what they held back (see [`Pending`]).
#[repr(align(128))]
struct Totals {
    allocated_bytes: AtomicU64,
    freed_bytes: AtomicU64,
    allocations: AtomicU64,
    frees: AtomicU64,
}

static TOTALS: Totals = Totals {
    allocated_bytes: AtomicU64::new(0),
    freed_bytes: AtomicU64::new(0),
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
};
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// What a thread may hold back before it flushes: at most 64 KiB of
/// allocations and frees together, and at most [`FLUSH_BUDGET`] /
/// [`OPERATION_COST`] = 64 operations. The totals a snapshot reads thus lag
/// each thread by at most that much; a thread that exits flushes first
/// (the main thread, and threads still running when the process exits, do
/// not: their last few counts die with the process).
const FLUSH_BUDGET: i64 = 64 * 1024;

/// What each allocation or free spends of the budget besides its bytes.
const OPERATION_COST: i64 = 1024;

/// One thread's counts not yet added to [`TOTALS`].
///
/// Adding to the shared atomics on every allocation cost two locked
/// read-modify-writes per allocation and two per free, tens of cycles each
/// even uncontended: the largest part of what the tracking allocator cost a
/// small HTTP service (`BENCHMARKS.md`). A thread now adds to plain
/// thread-local cells and flushes them with one locked addition per counter
/// every 64 operations or 64 KiB, whichever comes first.
struct Pending {
    allocated_bytes: Cell<u64>,
    freed_bytes: Cell<u64>,
    allocations: Cell<u64>,
    frees: Cell<u64>,
    /// What is left of the budget; at or below 0, the next operation flushes.
    budget: Cell<i64>,
    /// Whether this thread's exit will flush (see [`exit_flush`]).
    exit: Cell<ExitFlush>,
}

/// Where a thread stands with its exit flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitFlush {
    /// Not arranged yet: the first flush arranges it.
    Unarranged,
    /// The thread's exit will flush what it still holds.
    Arranged,
    /// The exit flush ran (or cannot be arranged): every operation from now
    /// on is flushed at once.
    Immediate,
}

thread_local! {
    // Const-initialized and without a destructor: reading it never
    // allocates, which matters because the allocator itself reads it.
    static PENDING: Pending = const {
        Pending {
            allocated_bytes: Cell::new(0),
            freed_bytes: Cell::new(0),
            allocations: Cell::new(0),
            frees: Cell::new(0),
            budget: Cell::new(0),
            exit: Cell::new(ExitFlush::Unarranged),
        }
    };
}

impl Pending {
    /// Counts one operation of `size` bytes against the budget; true when
    /// it is spent and the caller must [`flush`](Self::flush).
    #[inline]
    fn spend(&self, size: usize) -> bool {
        // Wrapping, not saturating: this is every allocation's and free's
        // path, and saturation costs seven instructions there. It cannot
        // wrap for a block that exists (one within 1 KiB of `isize::MAX`
        // bytes cannot be allocated); were it to, a flush would only come
        // later.
        let left = self
            .budget
            .get()
            .wrapping_sub(size as i64)
            .wrapping_sub(OPERATION_COST);
        self.budget.set(left);
        left <= 0
    }

    /// Adds what this thread holds to the totals, and arranges the exit
    /// flush on a thread's first flush.
    fn flush(&self) {
        let allocations = self.allocations.take();
        add(&TOTALS.allocated_bytes, self.allocated_bytes.take());
        add(&TOTALS.freed_bytes, self.freed_bytes.take());
        add(&TOTALS.allocations, allocations);
        add(&TOTALS.frees, self.frees.take());
        if allocations > 0 && !INSTALLED.load(Relaxed) {
            INSTALLED.store(true, Relaxed);
        }
        if self.exit.get() == ExitFlush::Unarranged {
            let arranged = exit_flush::arrange();
            self.exit.set(if arranged {
                ExitFlush::Arranged
            } else {
                ExitFlush::Immediate
            });
        }
        let budget = match self.exit.get() {
            ExitFlush::Arranged => FLUSH_BUDGET,
            ExitFlush::Unarranged | ExitFlush::Immediate => 0,
        };
        self.budget.set(budget);
    }
}

/// Adds `value` to `counter` unless it is 0.
fn add(counter: &AtomicU64, value: u64) {
    if value != 0 {
        counter.fetch_add(value, Relaxed);
    }
}

/// Flushes a thread's pending counts when it exits, through a POSIX
/// thread-specific key's destructor.
///
/// A Rust `thread_local!` with a destructor cannot be used: registering it
/// allocates through the global allocator, which is this one. The C
/// library's key destructors run after the thread's Rust thread-local
/// destructors (which may still free memory, and are counted), and
/// `pthread_setspecific` allocates, if at all, with the C library's own
/// `calloc`, never through this allocator.
mod exit_flush {
    use std::sync::OnceLock;

    use super::{ExitFlush, PENDING};

    /// The process's key, created on first use; `None` if the C library
    /// had no key to give.
    static KEY: OnceLock<Option<libc::pthread_key_t>> = OnceLock::new();

    /// Arranges for the calling thread's exit to flush its counts; false
    /// if it cannot be arranged (the caller then flushes every operation).
    pub(super) fn arrange() -> bool {
        let key = KEY.get_or_init(|| {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is a valid out-pointer; `on_exit` has the
            // destructor signature the C library expects.
            (unsafe { libc::pthread_key_create(&mut key, Some(on_exit)) } == 0).then_some(key)
        });
        let Some(key) = *key else {
            return false;
        };
        // A non-null value is what makes the destructor run; it is never
        // dereferenced.
        // SAFETY: `key` came from pthread_key_create and is never deleted.
        unsafe {
            libc::pthread_setspecific(key, std::ptr::NonNull::<u8>::dangling().as_ptr().cast()) == 0
        }
    }

    /// The key's destructor: flushes, and makes the rest of the thread's
    /// operations (a later destructor may still free) flush at once.
    unsafe extern "C" fn on_exit(_: *mut libc::c_void) {
        let _ = PENDING.try_with(|pending| {
            pending.exit.set(ExitFlush::Immediate);
            pending.budget.set(0);
            pending.flush();
        });
    }
}

/// Counts an allocation of `size` bytes; true when a flush is due.
#[inline]
fn record_alloc(size: usize) -> bool {
    record(
        size,
        |p| (&p.allocated_bytes, &p.allocations),
        |t| (&t.allocated_bytes, &t.allocations),
    )
}

/// Counts a free of `size` bytes; true when a flush is due.
#[inline]
fn record_free(size: usize) -> bool {
    record(
        size,
        |p| (&p.freed_bytes, &p.frees),
        |t| (&t.freed_bytes, &t.frees),
    )
}

/// Adds one operation of `size` bytes to the `(bytes, count)` cells that
/// `pending` picks, or, without this thread's cells, straight to the
/// totals that `total` picks; true when a flush is due.
#[inline(always)]
fn record(
    size: usize,
    pending: impl FnOnce(&Pending) -> (&Cell<u64>, &Cell<u64>),
    total: impl FnOnce(&Totals) -> (&AtomicU64, &AtomicU64),
) -> bool {
    PENDING
        .try_with(|p| {
            let (bytes, count) = pending(p);
            bytes.set(bytes.get() + size as u64);
            count.set(count.get() + 1);
            p.spend(size)
        })
        .unwrap_or_else(|_| {
            let (bytes, count) = total(&TOTALS);
            add(bytes, size as u64);
            add(count, 1);
            false
        })
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
/// running thread's last few operations may be missing (see [`Pending`]).
pub(crate) fn heap_totals() -> HeapTotals {
    HeapTotals {
        installed: INSTALLED.load(Relaxed),
        allocated_bytes: TOTALS.allocated_bytes.load(Relaxed),
        freed_bytes: TOTALS.freed_bytes.load(Relaxed),
        allocations: TOTALS.allocations.load(Relaxed),
        frees: TOTALS.frees.load(Relaxed),
    }
}

/// Adds what the calling thread holds back to the totals now.
#[cold]
#[inline(never)]
pub(crate) fn flush_this_thread() {
    let _ = PENDING.try_with(Pending::flush);
}

#[cfg(test)]
pub(crate) mod tests {
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
            // The thread's first operation flushes (and arranges the exit
            // flush); the next three stay within the budget.
            alloc_realloc_free();
            let pending = PENDING.with(|p| (p.allocations.get(), p.frees.get()));
            assert_eq!(pending, (1, 2), "held back before exit");
        });
        held_back.join().unwrap();
        let [allocated, freed, allocations, frees] = growth(before, heap_totals());
        assert!(allocated >= 4000 && freed >= 4000, "{allocated} {freed}");
        assert!(allocations >= 2 && frees >= 2, "{allocations} {frees}");
    }

    #[test]
    fn a_large_allocation_is_flushed_at_once() {
        let pending = Pending {
            allocated_bytes: Cell::new(0),
            freed_bytes: Cell::new(0),
            allocations: Cell::new(0),
            frees: Cell::new(0),
            budget: Cell::new(FLUSH_BUDGET),
            exit: Cell::new(ExitFlush::Arranged),
        };
        pending.allocated_bytes.set(10);
        assert!(!pending.spend(10), "small: held back");
        assert!(pending.spend(1 << 20), "large: flushed at once");
        pending.flush();
        assert_eq!(pending.allocated_bytes.get(), 0);
        assert_eq!(pending.budget.get(), FLUSH_BUDGET);
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
