//! One stuck period of one worker: what is known of its thread, the stack
//! samples taken, and the events it gives.

use std::time::{Duration, Instant};

use meshwatch_proto::v1::{StuckPoll, StuckPollClass, StuckPollState};

use super::report::{self, Samples};
use super::rule::{self, Class, ThreadTimes, ThreadUse};
use super::threads::Candidate;
use crate::stack::ModuleMap;

/// The OS thread a stuck worker runs on, as far as the watchdog knows.
#[derive(Debug)]
pub(super) enum WorkerThread {
    /// The census never saw it (the worker got stuck before its first
    /// census task ran). The worker-named threads no other worker runs on
    /// are watched from `since`, to find the one that spins.
    Unknown {
        watching: Option<(Instant, Vec<Candidate>)>,
        /// Looks at the threads that found none spinning. After
        /// [`SEARCH_LOOKS`] of them (or when the threads cannot be read) the
        /// worker is reported as it is, without its thread.
        misses: u8,
    },
    /// Known: from the census, or inferred as the unmapped thread that
    /// spins.
    Known(KnownThread),
}

/// Looks without a spinning thread before a worker whose thread is unknown
/// is reported without it: one look can miss a loop that had not started
/// spinning, or a thread that was not yet a candidate when it began.
pub(super) const SEARCH_LOOKS: u8 = 2;

/// A stuck worker's thread.
#[derive(Debug)]
pub(super) struct KnownThread {
    pub tid: u32,
    pub name: String,
    /// Where its CPU is measured from, and when that was read.
    pub start: Option<(ThreadTimes, Instant)>,
    /// Inferred (the hottest unmapped worker thread), not seen by the census.
    pub inferred: bool,
}

/// Stack sampling of a period's thread.
#[derive(Debug, Default)]
pub(super) struct Sampling {
    pub samples: Samples,
    pub last: Option<Instant>,
    /// The thread did not answer a capture: no more signals are queued.
    pub abandoned: bool,
    /// A sample took a signal.
    pub signalled: bool,
}

/// One worker that has been frozen for at least half the threshold.
#[derive(Debug)]
pub(super) struct Period {
    /// The probe's key for the period, so one period is one incident.
    pub key: String,
    pub thread: WorkerThread,
    pub sampling: Sampling,
    /// Where the polled task was spawned, when the task hooks timed the poll
    /// (`--cfg tokio_unstable`): then it is one poll for certain.
    pub spawned_at: Option<String>,
    /// Fixed by the first report that measured the thread.
    pub class: Option<Class>,
    pub last_report: Option<Instant>,
    pub last_event: Option<StuckPoll>,
}

impl Period {
    /// A period starting with what the census knows of the thread.
    pub fn new(key: String, thread: WorkerThread, spawned_at: Option<String>) -> Self {
        Self {
            key,
            thread,
            sampling: Sampling::default(),
            spawned_at,
            class: None,
            last_report: None,
            last_event: None,
        }
    }

    /// The thread's id, when known.
    pub fn tid(&self) -> Option<u32> {
        match &self.thread {
            WorkerThread::Known(known) => Some(known.tid),
            WorkerThread::Unknown { .. } => None,
        }
    }

    /// Whether the first report can go at `now`: once the thread's CPU has
    /// been measured for `over`, or, while the thread is unknown, once the
    /// search for it has looked [`SEARCH_LOOKS`] times. The class is fixed by the first
    /// report that measured the thread, so a report sent earlier would fix
    /// it on too little (or on nothing: a spinning worker whose thread was
    /// still being searched for would go out as blocked).
    pub fn ready_to_classify(&self, now: Instant, over: Duration) -> bool {
        match (&self.class, &self.thread) {
            (None, WorkerThread::Known(known)) => known
                .start
                .is_none_or(|(_, from)| now.duration_since(from) >= over),
            (None, WorkerThread::Unknown { misses, .. }) => *misses >= SEARCH_LOOKS,
            _ => true,
        }
    }

    /// The event at `now` in `state`, classifying the period on its first
    /// report that measured the thread (`end`: its times now).
    pub fn event(
        &mut self,
        (runtime_id, worker): (u32, u32),
        state: StuckPollState,
        frozen_for: Duration,
        end: Option<(ThreadTimes, Instant)>,
        modules: &mut ModuleMap,
    ) -> StuckPoll {
        let mut notes = Vec::new();
        let (tid, name, usage) = match &self.thread {
            WorkerThread::Known(known) => {
                if known.inferred {
                    notes.push(
                        "the worker got stuck before the probe mapped it to its OS thread; the thread shown is the hottest unmapped worker-named thread, which could in rare cases be a blocking-pool thread"
                            .to_owned(),
                    );
                }
                let usage = match (known.start, end) {
                    (Some((start, from)), Some((end, to))) => {
                        Some(ThreadUse::between(start, end, to.duration_since(from)))
                    }
                    _ => None,
                };
                (known.tid, known.name.clone(), usage)
            }
            WorkerThread::Unknown { .. } => {
                notes.push(
                    "the worker's OS thread is not known yet (no census task ran on it before it got stuck), so its CPU and stack are unknown"
                        .to_owned(),
                );
                (0, String::new(), None)
            }
        };
        if let Some(usage) = usage
            && usage.wait_percent >= 20.0
        {
            notes.push(format!(
                "the thread waited for a CPU {:.0}% of the time: the machine is overloaded",
                usage.wait_percent
            ));
        }
        // Fixed once measured, so a period is one incident. Without the
        // thread's figures the worker is still not running tasks: blocked,
        // from the runtime's point of view, until its thread is found.
        let class = match (self.class, usage) {
            (Some(class), _) => class,
            (None, Some(usage)) => *self.class.insert(rule::classify(usage)),
            (None, None) => Class::BlockedWorker,
        };
        let samples = &self.sampling.samples;
        StuckPoll {
            key: self.key.clone(),
            state: state.into(),
            class: match class {
                Class::RunawayLoop => StuckPollClass::RunawayLoop,
                Class::BlockedWorker => StuckPollClass::BlockedWorker,
            }
            .into(),
            runtime_id,
            worker_index: worker,
            tid,
            thread_name: name,
            stuck_for_ms: u64::try_from(frozen_for.as_millis()).unwrap_or(u64::MAX),
            cpu_percent: usage.map_or(0.0, |u| u.cpu_percent),
            spawn_location: self.spawned_at.clone().unwrap_or_default(),
            stack_samples: samples.taken,
            caveat: report::caveat(samples, &notes, self.spawned_at.is_some()),
            samples: samples.raw(),
            modules: modules.modules_for(samples.addresses()),
            spans: if tid == 0 {
                Vec::new()
            } else {
                crate::spans::active_on(tid)
            },
            ..StuckPoll::default()
        }
    }

    /// The last report, marked recovered, with the samples taken since;
    /// `None` when the period was never reported.
    pub fn recovered(&self, modules: &mut ModuleMap) -> Option<StuckPoll> {
        let last = self.last_event.as_ref()?;
        let samples = &self.sampling.samples;
        Some(StuckPoll {
            state: StuckPollState::Recovered.into(),
            caveat: report::caveat(samples, &[], self.spawned_at.is_some()),
            samples: samples.raw(),
            modules: modules.modules_for(samples.addresses()),
            stack_samples: samples.taken,
            ..last.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_report_waits_for_the_thread_to_be_measured_or_searched_for() {
        let start = Instant::now();
        let over = Duration::from_millis(250);
        let unknown = |misses| {
            Period::new(
                "k".to_owned(),
                WorkerThread::Unknown {
                    watching: None,
                    misses,
                },
                None,
            )
        };
        assert!(!unknown(0).ready_to_classify(start, over));
        assert!(!unknown(1).ready_to_classify(start, over));
        assert!(unknown(SEARCH_LOOKS).ready_to_classify(start, over));

        let known = |start: Option<(ThreadTimes, Instant)>| {
            Period::new(
                "k".to_owned(),
                WorkerThread::Known(KnownThread {
                    tid: 1,
                    name: String::new(),
                    start,
                    inferred: false,
                }),
                None,
            )
        };
        let times = ThreadTimes {
            exec_ns: 0,
            wait_ns: 0,
        };
        let measured = known(Some((times, start)));
        assert!(!measured.ready_to_classify(start + over / 2, over));
        assert!(measured.ready_to_classify(start + over, over));
        // Its figures cannot be read: nothing to wait for.
        assert!(known(None).ready_to_classify(start, over));
        // Classified: later reports go when due.
        let mut classified = unknown(0);
        classified.class = Some(Class::RunawayLoop);
        assert!(classified.ready_to_classify(start, over));
    }
}
