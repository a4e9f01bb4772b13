//! The stuck-poll rule on stable tokio metrics, as pure functions.
//!
//! Tokio publishes a worker's `park_unpark_count`, `park_count` and
//! `total_busy_duration` only when it parks and at maintenance, every
//! `event_interval` (61) scheduler ticks. The park/unpark count is odd while
//! the worker is parked. So a worker whose published counters stay the same
//! while it is not parked has not reached maintenance since: it is inside
//! one poll, or in a run of long polls. [`WorkerWatch`] turns successive
//! readings into "progressing" or "frozen since"; [`classify`] decides from
//! the thread's scheduler statistics whether a frozen worker spins or blocks.

use std::time::{Duration, Instant};

/// One reading of a worker's published counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerCounters {
    pub park_unpark: u64,
    pub parks: u64,
    pub busy: Duration,
}

impl WorkerCounters {
    /// Odd park/unpark counts mean the worker is parked (idle).
    pub fn parked(&self) -> bool {
        self.park_unpark % 2 == 1
    }
}

/// What a reading says about the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Parked, or its counters moved since the last reading.
    Progressing,
    /// Active with the same counters since `since`.
    Frozen { since: Instant },
}

/// The rule's memory of one worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerWatch {
    last: WorkerCounters,
    changed_at: Instant,
}

impl WorkerWatch {
    pub fn new(first: WorkerCounters, now: Instant) -> Self {
        Self {
            last: first,
            changed_at: now,
        }
    }

    /// Takes a new reading.
    pub fn observe(&mut self, counters: WorkerCounters, now: Instant) -> Verdict {
        if counters != self.last || counters.parked() {
            self.last = counters;
            self.changed_at = now;
            return Verdict::Progressing;
        }
        Verdict::Frozen {
            since: self.changed_at,
        }
    }
}

/// A thread's scheduler statistics (`/proc/self/task/TID/schedstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadTimes {
    /// Time on a CPU.
    pub exec_ns: u64,
    /// Time runnable but waiting for a CPU.
    pub wait_ns: u64,
}

/// What a frozen worker's thread does with its time, over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ThreadUse {
    /// On a CPU, in percent of one core.
    pub cpu_percent: f64,
    /// Runnable but waiting for a CPU, in percent of the window: high when
    /// the machine is overloaded.
    pub wait_percent: f64,
}

impl ThreadUse {
    pub fn between(start: ThreadTimes, end: ThreadTimes, window: Duration) -> Self {
        let ms = window.as_secs_f64() * 1e3;
        let percent = |a: u64, b: u64| {
            if ms <= 0.0 {
                0.0
            } else {
                b.saturating_sub(a) as f64 / 1e6 / ms * 100.0
            }
        };
        Self {
            cpu_percent: percent(start.exec_ns, end.exec_ns),
            wait_percent: percent(start.wait_ns, end.wait_ns),
        }
    }
}

/// Share of the window a thread must want a CPU (running or runnable) to
/// count as spinning. A blocked thread wants next to none; a spinning one
/// most, but not all: it also sleeps in page faults (code pages of a binary
/// still being written back), which count as neither. Half keeps such a
/// loop a loop.
pub(crate) const HOT_PERCENT: f64 = 50.0;

/// How a stuck worker's thread behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// It wants a CPU all the time: a loop that never yields.
    RunawayLoop,
    /// It sleeps: a blocking call inside async code.
    BlockedWorker,
}

/// Spinning when the thread ran or waited to run for at least
/// [`HOT_PERCENT`] of the window. Counting the wait keeps a spinning thread
/// a loop on an overloaded machine, where it gets only part of a core.
pub(crate) fn classify(usage: ThreadUse) -> Class {
    if usage.cpu_percent + usage.wait_percent >= HOT_PERCENT {
        Class::RunawayLoop
    } else {
        Class::BlockedWorker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(park_unpark: u64, busy_ms: u64) -> WorkerCounters {
        WorkerCounters {
            park_unpark,
            parks: park_unpark / 2,
            busy: Duration::from_millis(busy_ms),
        }
    }

    #[test]
    fn active_worker_with_frozen_counters_is_frozen_since_the_last_change() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut watch = WorkerWatch::new(counters(4, 10), t0);
        assert_eq!(
            watch.observe(counters(4, 20), at(100)),
            Verdict::Progressing
        );
        assert_eq!(
            watch.observe(counters(4, 20), at(200)),
            Verdict::Frozen { since: at(100) }
        );
        assert_eq!(
            watch.observe(counters(4, 20), at(1500)),
            Verdict::Frozen { since: at(100) }
        );
        // The poll returned: maintenance published new busy time.
        assert_eq!(
            watch.observe(counters(4, 1600), at(1600)),
            Verdict::Progressing
        );
    }

    #[test]
    fn parked_worker_is_never_frozen() {
        let t0 = Instant::now();
        let mut watch = WorkerWatch::new(counters(5, 10), t0);
        for ms in [100, 1000, 60_000] {
            assert_eq!(
                watch.observe(counters(5, 10), t0 + Duration::from_millis(ms)),
                Verdict::Progressing
            );
        }
        // Woken and then stuck: frozen from the unpark on.
        let woke = t0 + Duration::from_secs(61);
        assert_eq!(watch.observe(counters(6, 10), woke), Verdict::Progressing);
        assert_eq!(
            watch.observe(counters(6, 10), woke + Duration::from_secs(2)),
            Verdict::Frozen { since: woke }
        );
    }

    #[test]
    fn classifies_spinning_waiting_and_sleeping_threads() {
        let second = Duration::from_secs(1);
        let times = |exec_ms: u64, wait_ms: u64| ThreadTimes {
            exec_ns: exec_ms * 1_000_000,
            wait_ns: wait_ms * 1_000_000,
        };
        let spinning = ThreadUse::between(times(0, 0), times(990, 0), second);
        assert!((spinning.cpu_percent - 99.0).abs() < 1e-9);
        assert_eq!(classify(spinning), Class::RunawayLoop);
        // Half a core on an overloaded machine, runnable the rest: a loop.
        let overloaded = ThreadUse::between(times(0, 0), times(300, 500), second);
        assert_eq!(classify(overloaded), Class::RunawayLoop);
        // Spinning, with stalls in page faults that count as neither.
        let faulting = ThreadUse::between(times(0, 0), times(600, 0), second);
        assert_eq!(classify(faulting), Class::RunawayLoop);
        // Blocked, with some work between its blocking calls.
        let mostly_blocked = ThreadUse::between(times(0, 0), times(200, 50), second);
        assert_eq!(classify(mostly_blocked), Class::BlockedWorker);
        let sleeping = ThreadUse::between(times(5, 1), times(6, 1), second);
        assert_eq!(classify(sleeping), Class::BlockedWorker);
        assert_eq!(
            ThreadUse::between(times(0, 0), times(5, 0), Duration::ZERO).cpu_percent,
            0.0
        );
    }
}
