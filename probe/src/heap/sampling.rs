//! Which allocations to sample: Poisson sampling on bytes.
//!
//! Every byte allocated has the same small chance, `1 / mean`, of being
//! picked; an allocation is sampled when it contains a picked byte. Each
//! thread keeps a countdown of bytes until its next picked byte, drawn from
//! an exponential distribution of that mean. The tracking allocator's own
//! countdown is armed to run out no later, and its slow path passes on the
//! bytes that went by ([`advance`]): an allocation that is not sampled pays
//! nothing here. Large allocations are thus sampled more
//! often than small ones, in proportion to the memory they hold, and
//! [`weight`] scales each sample back to an unbiased estimate.
//!
//! The thread-local state is const-initialized and has no destructor, so
//! reading it never allocates: the allocator itself reads it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The mean bytes between samples; 0 turns sampling off. Off until a probe
/// starts and sets it, so a service that links the allocator but runs no
/// probe pays for nothing beyond the counters.
static MEAN_BYTES: AtomicU64 = AtomicU64::new(0);

/// Seeds threads' generators apart from one another.
static SEEDS: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// How many bytes a thread allocates before it looks at the mean again while
/// sampling is off: cheap, and sampling switched on is noticed soon.
const RECHECK_BYTES: i64 = 1 << 20;

struct ThreadState {
    /// Bytes left until the next sample, as of the allocator's last slow
    /// path; 0 until first drawn.
    countdown: Cell<i64>,
    /// The mean the countdown was drawn with; 0 when not drawn yet.
    drawn_with: Cell<u64>,
    /// xorshift64* state; 0 until seeded.
    rng: Cell<u64>,
    /// Set while this thread is inside the profiler (so allocations made
    /// while capturing a stack are not sampled in turn), and for good on the
    /// probe's own threads.
    busy: Cell<bool>,
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            countdown: Cell::new(0),
            drawn_with: Cell::new(0),
            rng: Cell::new(0),
            busy: Cell::new(false),
        }
    };
}

/// Sets the mean bytes between samples; 0 turns sampling off.
pub(crate) fn set_mean(bytes: u64) {
    MEAN_BYTES.store(bytes, Relaxed);
}

/// The mean bytes between samples now; 0 when sampling is off.
pub(crate) fn mean() -> u64 {
    MEAN_BYTES.load(Relaxed)
}

/// Counts `bytes` allocated down; when that reaches the picked byte, draws
/// the next countdown and returns the mean to weigh this allocation by
/// ([`decide`]). During thread teardown the state may be gone: then nothing
/// is sampled.
pub(crate) fn advance(bytes: u64) -> Option<u64> {
    STATE
        .try_with(|state| {
            let left = state
                .countdown
                .get()
                .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
            state.countdown.set(left);
            if left > 0 { None } else { decide(state) }
        })
        .ok()
        .flatten()
}

/// The bytes until this thread's next sample; `i64::MAX` once its state is
/// gone.
pub(crate) fn left() -> i64 {
    STATE
        .try_with(|state| state.countdown.get())
        .unwrap_or(i64::MAX)
}

/// Whether the allocation that ran the countdown out is a sample, with the
/// mean to weigh it by. Draws the next countdown either way.
fn decide(state: &ThreadState) -> Option<u64> {
    if state.busy.get() {
        // Inside the profiler or on a probe thread: not sampled, and
        // back here only after a while.
        state.countdown.set(RECHECK_BYTES);
        return None;
    }
    let mean = MEAN_BYTES.load(Relaxed);
    if mean == 0 {
        state.countdown.set(RECHECK_BYTES);
        state.drawn_with.set(0);
        return None;
    }
    let drawn_with = state.drawn_with.replace(mean);
    let next = draw(state, mean);
    state.countdown.set(next);
    // A countdown not drawn with this mean (a new thread, sampling just
    // switched on or changed) says nothing: start afresh.
    (drawn_with == mean).then_some(mean)
}

/// Runs `f` with this thread marked busy, so allocations inside it are not
/// sampled. Returns `None` when the thread is already busy (a reentrant
/// call) or its state is gone.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let entered = STATE
        .try_with(|state| !state.busy.replace(true))
        .unwrap_or(false);
    if !entered {
        return None;
    }
    let result = f();
    let _ = STATE.try_with(|state| state.busy.set(false));
    Some(result)
}

/// Never samples allocations of the calling thread: the probe's own threads
/// call it, so the profiler does not profile itself.
pub(crate) fn exclude_this_thread() {
    let _ = STATE.try_with(|state| state.busy.set(true));
}

/// An exponential draw of mean `mean` bytes, at least 1.
fn draw(state: &ThreadState, mean: u64) -> i64 {
    let mut x = state.rng.get();
    if x == 0 {
        // Seeded from a global sequence and this thread's state address,
        // mixed by splitmix64: distinct per thread, no allocation.
        let addr = std::ptr::from_ref(state) as u64;
        x = splitmix64(SEEDS.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed) ^ addr) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.rng.set(x);
    let bits = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    // Uniform in (0, 1]: never 0, so the logarithm is finite.
    let uniform = (bits as f64 + 1.0) / (1u64 << 53) as f64;
    let bytes = -uniform.ln() * mean as f64;
    (bytes as i64).max(1)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What one sampled allocation of `size` bytes stands for, in bytes and in
/// allocations: it was sampled with probability `1 - exp(-size / mean)`, so
/// it counts `1 / that` times (the unbiased estimator of tcmalloc and
/// jemalloc). A small allocation stands for about `mean / size` of its kind.
pub(crate) fn weight(size: usize, mean: u64) -> (f64, f64) {
    let size = size.max(1) as f64;
    let probability = -(-size / mean.max(1) as f64).exp_m1();
    let objects = 1.0 / probability;
    (size * objects, objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_is_the_mean_for_small_and_the_size_for_large() {
        let mean = 512 * 1024;
        let (bytes, objects) = weight(16, mean);
        assert!(
            (bytes - mean as f64).abs() / (mean as f64) < 0.001,
            "{bytes}"
        );
        assert!((objects - mean as f64 / 16.0).abs() < 1.0, "{objects}");
        let (bytes, objects) = weight(64 << 20, mean);
        assert!((bytes - (64 << 20) as f64).abs() < 1.0);
        assert!((objects - 1.0).abs() < 1e-9);
    }

    #[test]
    fn draws_average_to_the_mean() {
        let state = ThreadState {
            countdown: Cell::new(0),
            drawn_with: Cell::new(0),
            rng: Cell::new(0),
            busy: Cell::new(false),
        };
        let n = 20_000;
        let sum: f64 = (0..n).map(|_| draw(&state, 1000) as f64).sum();
        let avg = sum / f64::from(n);
        assert!((avg - 1000.0).abs() < 40.0, "{avg}");
    }

    #[test]
    fn guard_refuses_reentry_and_releases() {
        assert_eq!(guarded(|| guarded(|| 1)), Some(None));
        assert_eq!(guarded(|| 2), Some(2));
    }
}
