//! What each thread counts on the allocator's hot path, and how it reaches
//! the process's totals.
//!
//! Adding to shared atomics on every allocation cost two locked
//! read-modify-writes per allocation and two per free, tens of cycles each
//! even uncontended. A thread instead counts in thread-local cells, and its
//! hot path is one increment of the operation count and one subtraction from
//! a countdown of bytes, then a branch ([`Side::spend`]; seven instructions
//! on x86_64 with the thread-local addressing). The countdown reaching zero
//! sends the operation to the slow path, which works out the bytes from how
//! far the countdown went ([`Side::settle`]), adds them to the thread's
//! pending bytes, and flushes them to the [`Totals`] once 64 KiB have passed
//! ([`FLUSH_BUDGET`]).
//!
//! The allocations' countdown doubles as the heap profiler's: it is armed
//! to whichever comes first, the flush or the profiler's next sample (see
//! `heap`), so an allocation that is not sampled pays for one countdown,
//! not two.
//!
//! A thread flushes when it exits too, through a POSIX key destructor
//! ([`exit_flush`]): the totals a snapshot reads lag each running thread by
//! at most 64 KiB allocated and 64 KiB freed.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::heap;

/// The bytes one side of a thread (allocations, or frees) holds back before
/// it flushes them to the totals.
pub(super) const FLUSH_BUDGET: i64 = 64 * 1024;

/// The process's totals, on a cache line of their own. Threads add to them
/// only when they flush what they held back.
#[repr(align(128))]
pub(super) struct Totals {
    pub allocated_bytes: AtomicU64,
    pub freed_bytes: AtomicU64,
    pub allocations: AtomicU64,
    pub frees: AtomicU64,
}

pub(super) static TOTALS: Totals = Totals {
    allocated_bytes: AtomicU64::new(0),
    freed_bytes: AtomicU64::new(0),
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
};

/// Whether a `TrackingAllocator` has served any allocation in this process.
pub(super) static INSTALLED: AtomicBool = AtomicBool::new(false);

/// One direction of a thread's counts, allocations or frees, not yet in
/// the totals.
pub(super) struct Side {
    /// Operations since the last flush: the hot path's increment.
    operations: Cell<u64>,
    /// Bytes left until the slow path: the hot path's countdown. At or below
    /// 0, the operation that took it there goes to the slow path.
    left: Cell<i64>,
    /// What `left` stood at when last settled: `mark - left` is the bytes
    /// the hot path counted since.
    mark: Cell<i64>,
    /// Bytes settled since the last flush.
    bytes: Cell<u64>,
    /// What is left of the flush budget as of the last settle.
    budget: Cell<i64>,
}

impl Side {
    /// A side that sends its first operation to the slow path, which
    /// flushes it and arranges the thread's exit flush.
    const fn new() -> Self {
        Self {
            operations: Cell::new(0),
            left: Cell::new(0),
            mark: Cell::new(0),
            bytes: Cell::new(0),
            budget: Cell::new(0),
        }
    }

    /// Counts one operation of `size` bytes; true when the countdown ran
    /// out and the caller must take the slow path.
    #[inline(always)]
    fn spend(&self, size: usize) -> bool {
        self.operations.set(self.operations.get() + 1);
        // Wrapping: this is every allocation's and free's path, and
        // checked arithmetic costs instructions there. `size` fits an isize
        // (a `Layout` guarantees it) and `left` is at most the budget when
        // armed, so it cannot wrap before the slow path sees it.
        let left = self.left.get().wrapping_sub(size as i64);
        self.left.set(left);
        left <= 0
    }

    /// Takes back an operation of `size` bytes that [`spend`](Self::spend)
    /// counted but did not happen (the inner allocator returned null).
    fn unspend(&self, size: usize) {
        self.operations.set(self.operations.get().wrapping_sub(1));
        self.left.set(self.left.get().wrapping_add(size as i64));
    }

    /// Moves the bytes the countdown went through since the last settle
    /// into the pending bytes, and returns them.
    fn settle(&self) -> u64 {
        let left = self.left.get();
        let spent = self.mark.replace(left).wrapping_sub(left);
        self.bytes.set(self.bytes.get().wrapping_add(spent as u64));
        self.budget.set(self.budget.get().wrapping_sub(spent));
        spent as u64
    }

    /// Whether the flush budget is spent.
    fn flush_due(&self) -> bool {
        self.budget.get() <= 0
    }

    /// Arms the countdown to run out at the end of the flush budget, or
    /// after `limit` bytes if that comes first.
    fn arm(&self, limit: i64) {
        let left = self.budget.get().min(limit);
        self.left.set(left);
        self.mark.set(left);
    }

    /// Adds the pending counts to `bytes` and `operations` and starts a
    /// new budget of `budget`; returns the operations flushed. The caller
    /// has settled.
    fn flush_into(&self, bytes: &AtomicU64, operations: &AtomicU64, budget: i64) -> u64 {
        let flushed = self.operations.take();
        add(bytes, self.bytes.take());
        add(operations, flushed);
        self.budget.set(budget);
        flushed
    }
}

/// One thread's counts not yet added to [`TOTALS`].
pub(super) struct Pending {
    pub allocations: Side,
    pub frees: Side,
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
    // allocates, which matters because the allocator itself reads it, and
    // it compiles to plain accesses relative to the thread pointer.
    pub(super) static PENDING: Pending = const {
        Pending {
            allocations: Side::new(),
            frees: Side::new(),
            exit: Cell::new(ExitFlush::Unarranged),
        }
    };
}

impl Pending {
    /// The budget a side starts after a flush: none once the thread is
    /// exiting or its exit flush cannot be arranged, so that every later
    /// operation is flushed at once.
    fn next_budget(&self) -> i64 {
        if self.exit.get() == ExitFlush::Unarranged {
            self.exit.set(if exit_flush::arrange() {
                ExitFlush::Arranged
            } else {
                ExitFlush::Immediate
            });
        }
        match self.exit.get() {
            ExitFlush::Arranged => FLUSH_BUDGET,
            ExitFlush::Unarranged | ExitFlush::Immediate => 0,
        }
    }

    /// Settles the allocations' countdown and tells the heap profiler how
    /// many bytes went by; the sampling mean when the allocation that ran
    /// the countdown out is a sample.
    fn settle_allocations(&self) -> Option<u64> {
        let bytes = self.allocations.settle();
        heap::bytes_allocated(bytes)
    }

    /// Flushes the allocations if their budget is spent.
    fn flush_allocations_if_due(&self) {
        if self.allocations.flush_due() {
            let budget = self.next_budget();
            let flushed =
                self.allocations
                    .flush_into(&TOTALS.allocated_bytes, &TOTALS.allocations, budget);
            if flushed > 0 && !INSTALLED.load(Relaxed) {
                INSTALLED.store(true, Relaxed);
            }
        }
    }

    /// Flushes the frees if their budget is spent.
    fn flush_frees_if_due(&self) {
        if self.frees.flush_due() {
            let budget = self.next_budget();
            self.frees
                .flush_into(&TOTALS.freed_bytes, &TOTALS.frees, budget);
        }
    }

    /// Settles and flushes both sides now, and arms them again.
    fn flush(&self) {
        // A sample falling due here is skipped: there is no allocation in
        // hand to attribute it to. Only tests and thread exit come here.
        let _ = self.settle_allocations();
        self.frees.settle();
        self.allocations.budget.set(0);
        self.frees.budget.set(0);
        self.flush_allocations_if_due();
        self.flush_frees_if_due();
        self.allocations.arm(heap::bytes_until_sample());
        self.frees.arm(i64::MAX);
    }
}

/// Adds `value` to `counter` unless it is 0.
fn add(counter: &AtomicU64, value: u64) {
    if value != 0 {
        counter.fetch_add(value, Relaxed);
    }
}

/// The hot path of an allocation of `size` bytes; true when it must go to
/// [`allocated_slowly`] (or, should it fail, [`allocation_failed`]).
#[inline(always)]
pub(super) fn spend_allocation(size: usize) -> bool {
    PENDING
        .try_with(|p| p.allocations.spend(size))
        .unwrap_or(false)
}

/// The hot path of a free of `size` bytes; true when it must go to
/// [`freed_slowly`].
#[inline(always)]
pub(super) fn spend_free(size: usize) -> bool {
    PENDING.try_with(|p| p.frees.spend(size)).unwrap_or(false)
}

/// The slow path of an allocation of `size` bytes at `ptr`: settles, flushes
/// if due, arms the countdown again, and takes the heap profiler's sample
/// if this allocation is one.
pub(super) fn allocated_slowly(ptr: *mut u8, size: usize) {
    let sample = PENDING
        .try_with(|p| {
            let sample = p.settle_allocations();
            p.flush_allocations_if_due();
            // Armed before sampling: the profiler's own allocations (made
            // under its reentrancy guard) count against the new countdown.
            p.allocations.arm(heap::bytes_until_sample());
            sample
        })
        .ok()
        .flatten();
    if let Some(mean) = sample {
        heap::sample(ptr, size, mean);
    }
}

/// Takes back an allocation of `size` bytes the inner allocator failed.
pub(super) fn allocation_failed(size: usize) {
    let _ = PENDING.try_with(|p| p.allocations.unspend(size));
}

/// The slow path of a free: settles, flushes if due, arms again.
pub(super) fn freed_slowly() {
    let _ = PENDING.try_with(|p| {
        p.frees.settle();
        p.flush_frees_if_due();
        p.frees.arm(i64::MAX);
    });
}

/// Adds what the calling thread holds back to the totals now.
#[cfg(test)]
pub(super) fn flush_this_thread() {
    let _ = PENDING.try_with(Pending::flush);
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
            pending.flush();
        });
    }
}

/// The calling thread's allocations and frees not yet flushed.
#[cfg(test)]
pub(super) fn held_back() -> (u64, u64) {
    PENDING.with(|p| (p.allocations.operations.get(), p.frees.operations.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A side with a fresh flush budget, its countdown armed to the budget.
    fn armed_side() -> Side {
        let side = Side::new();
        side.budget.set(FLUSH_BUDGET);
        side.arm(i64::MAX);
        side
    }

    #[test]
    fn settling_recovers_the_bytes_the_countdown_went_through() {
        let side = armed_side();
        assert!(!side.spend(100));
        assert!(!side.spend(28));
        assert_eq!(side.settle(), 128);
        assert_eq!(side.settle(), 0, "settled bytes are not counted twice");
        assert_eq!(side.bytes.get(), 128);
        assert_eq!(side.operations.get(), 2);
        assert_eq!(side.budget.get(), FLUSH_BUDGET - 128);
    }

    #[test]
    fn the_countdown_runs_out_at_the_budget_or_the_limit_whichever_is_first() {
        let side = armed_side();
        side.arm(1000);
        assert!(!side.spend(999));
        assert!(side.spend(1), "the limit");
        side.settle();
        side.arm(i64::MAX);
        assert!(side.spend((FLUSH_BUDGET - 1000) as usize), "the budget");
        side.settle();
        assert!(side.flush_due());
    }

    #[test]
    fn a_large_operation_runs_the_countdown_out_at_once() {
        let side = armed_side();
        assert!(!side.spend(10), "small: held back");
        assert!(side.spend(1 << 20), "large: to the slow path");
        assert_eq!(side.settle(), (1 << 20) + 10);
        assert!(side.flush_due());
    }

    #[test]
    fn a_failed_allocation_is_taken_back() {
        let side = armed_side();
        assert!(!side.spend(64));
        assert!(side.spend(1 << 30));
        side.unspend(1 << 30);
        assert_eq!(side.settle(), 64);
        assert_eq!(side.operations.get(), 1);
    }
}
