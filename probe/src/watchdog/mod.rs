//! The watchdog: flags a poll that does not return while it is still stuck,
//! says whether its thread spins or blocks, and shows where.
//!
//! It runs on its own OS thread, never on the watched runtimes, so a runtime
//! whose every worker is stuck is still reported. Every tick it reads each
//! worker's published counters ([`rule`]); a worker that is active with the
//! same counters for longer than `stuck_poll_threshold` is stuck, and a
//! [`period`] follows it. Its OS thread comes from the [`census`] (or is
//! inferred among the process's [`threads`]); the thread's scheduler
//! statistics since half the threshold classify it ([`rule::classify`]);
//! its stack is sampled by signal ([`crate::stack`]) at detection and every
//! [`SAMPLE_EVERY`] after (a blocked worker's only once: a signal can end
//! the system call it waits in early). An event goes out at once (`STUCK`), again every
//! [`REFRESH`] while the worker stays stuck (`STILL_STUCK`, with more
//! samples), and when its counters move again (`RECOVERED`).

mod census;
mod period;
mod report;
mod rule;
mod threads;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshwatch_proto::v1::{Event, ProbeMessage, StuckPoll, StuckPollState, event, probe_message};

use crate::config::Config;
use crate::identity::now_unix_ms;
use crate::outbox::Outbox;
use crate::sampler::WatchedRuntimes;
use crate::stack::{ModuleMap, StackSampler};
use crate::stats::ProbeCounters;
use census::Census;
use period::{KnownThread, Period, WorkerThread};
use rule::{Verdict, WorkerCounters, WorkerWatch};
use threads::Threads;

/// How often a stuck thread's stack is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How often a stuck poll is reported again while it lasts.
const REFRESH: Duration = Duration::from_secs(1);
/// The longest tick; shorter thresholds tick faster.
const MAX_TICK: Duration = Duration::from_millis(100);
/// The longest that unmapped worker threads are watched before the hottest
/// is taken for a stuck worker the census never saw; at most a quarter of
/// the threshold, so the thread is known before the first report.
const INFER_OVER: Duration = Duration::from_millis(200);
/// The shortest stretch of a thread's CPU figures that classifies a period
/// (at most a quarter of the threshold). A period the watchdog first sees
/// already past the threshold (the counters froze long before, or the
/// watchdog thread was itself descheduled) would otherwise be classified
/// over a few microseconds, where a spinning thread reads as 0 % CPU.
const CLASSIFY_OVER: Duration = Duration::from_millis(200);

/// Starts the watchdog thread. It stops when the outbox is closed.
pub(crate) fn spawn(
    config: &Config,
    outbox: Arc<Outbox>,
    counters: Arc<ProbeCounters>,
    runtimes: WatchedRuntimes,
) -> std::io::Result<JoinHandle<()>> {
    let threshold = config.stuck_poll_threshold;
    std::thread::Builder::new()
        .name("meshwatch-watchdog".to_owned())
        .spawn(move || {
            crate::guest::enter_probe_thread();
            let tick = (threshold / 10).clamp(Duration::from_millis(10), MAX_TICK);
            let mut watchdog = Watchdog::new(threshold, runtimes);
            while !outbox.wait_closed(tick) {
                for stuck in watchdog.tick(Instant::now()) {
                    let message = ProbeMessage {
                        kind: Some(probe_message::Kind::Event(Event {
                            time_unix_ms: now_unix_ms(),
                            kind: Some(event::Kind::StuckPoll(stuck)),
                        })),
                    };
                    outbox.push(message, &counters);
                }
            }
        })
}

/// The watchdog's state, driven by [`Watchdog::tick`].
#[derive(Debug)]
struct Watchdog {
    threshold: Duration,
    runtimes: WatchedRuntimes,
    census: Census,
    watches: HashMap<(u32, u32), WorkerWatch>,
    periods: HashMap<(u32, u32), Period>,
    stacks: StackSampler,
    modules: ModuleMap,
    threads: Threads,
}

impl Watchdog {
    fn new(threshold: Duration, runtimes: WatchedRuntimes) -> Self {
        Self {
            threshold,
            runtimes,
            census: Census::default(),
            watches: HashMap::new(),
            periods: HashMap::new(),
            stacks: StackSampler::new(),
            modules: ModuleMap::default(),
            threads: Threads::new(),
        }
    }

    /// Looks at every worker once; returns the events to send.
    fn tick(&mut self, now: Instant) -> Vec<StuckPoll> {
        let mut events = Vec::new();
        for (runtime_id, handle) in self.runtimes.handles() {
            self.census
                .refresh(&self.runtimes, runtime_id, &handle, now);
            let metrics = handle.metrics();
            for index in 0..metrics.num_workers() {
                let counters = WorkerCounters {
                    park_unpark: metrics.worker_park_unpark_count(index),
                    parks: metrics.worker_park_count(index),
                    busy: metrics.worker_total_busy_duration(index),
                };
                let worker = u32::try_from(index).unwrap_or(u32::MAX);
                let id = (runtime_id, worker);
                let (verdict, spawned_at) = match exact_verdict(&handle, index) {
                    Some(exact) => exact,
                    None => (
                        self.watches
                            .entry(id)
                            .or_insert_with(|| WorkerWatch::new(counters, now))
                            .observe(counters, now),
                        None,
                    ),
                };
                match verdict {
                    Verdict::Progressing => {
                        let recovered = self
                            .periods
                            .remove(&id)
                            .and_then(|period| period.recovered(&mut self.modules));
                        events.extend(recovered);
                    }
                    Verdict::Frozen { since } => {
                        events.extend(self.frozen(id, since, now, spawned_at));
                    }
                }
            }
        }
        events
    }

    /// Follows a frozen worker; returns an event when one is due.
    fn frozen(
        &mut self,
        id: (u32, u32),
        since: Instant,
        now: Instant,
        spawned_at: Option<String>,
    ) -> Option<StuckPoll> {
        let frozen_for = now.duration_since(since);
        if frozen_for < self.threshold / 2 {
            return None;
        }
        if !self.periods.contains_key(&id) {
            let period = self.open_period(id, frozen_for, spawned_at);
            self.periods.insert(id, period);
        }
        self.infer_thread(id, now);
        let over = CLASSIFY_OVER.min(self.threshold / 4);
        let measured_enough = self
            .periods
            .get(&id)
            .is_none_or(|period| period.ready_to_classify(now, over));
        if frozen_for < self.threshold || !measured_enough {
            return None;
        }
        let times = self
            .periods
            .get(&id)
            .and_then(Period::tid)
            .and_then(|t| self.threads.times(t));
        let period = self.periods.get_mut(&id)?;
        // Report at once, before the first stack sample; again as soon as
        // the first sample is in, then every REFRESH.
        let first_stack = period
            .last_event
            .as_ref()
            .is_some_and(|e| e.stack_samples == 0)
            && period.sampling.samples.taken > 0;
        let state = match period.last_report {
            None => StuckPollState::Stuck,
            Some(at) if first_stack || now.duration_since(at) >= REFRESH => {
                StuckPollState::StillStuck
            }
            Some(_) => {
                self.sample_if_due(id, now);
                return None;
            }
        };
        period.last_report = Some(now);
        let event = period.event(id, state, frozen_for, times, &mut self.modules);
        period.last_event = Some(event.clone());
        Some(event)
    }

    /// A new period for worker `id`, frozen for `frozen_for`, with the
    /// thread the census knows for it.
    fn open_period(
        &self,
        (runtime_id, worker): (u32, u32),
        frozen_for: Duration,
        spawned_at: Option<String>,
    ) -> Period {
        let key = format!(
            "rt{runtime_id}-w{worker}-{}",
            now_unix_ms() - i64::try_from(frozen_for.as_millis()).unwrap_or(0)
        );
        let thread = match self.census.tid(runtime_id, worker as usize) {
            Some(tid) => WorkerThread::Known(KnownThread {
                tid,
                name: self.threads.name(tid).unwrap_or_default(),
                start: self.threads.times(tid),
                inferred: false,
            }),
            None => WorkerThread::Unknown {
                watching: None,
                misses: 0,
            },
        };
        Period::new(key, thread, spawned_at)
    }

    fn sample_if_due(&mut self, id: (u32, u32), now: Instant) {
        let Some(period) = self.periods.get_mut(&id) else {
            return;
        };
        let sampling = &mut period.sampling;
        // A blocked worker's thread sits in a system call, and a signal can
        // end the call early (`poll`, `epoll_wait` and reads with a timeout
        // are not restarted). Its stack is read without one where it can
        // be; where a sample took a signal, no other is sent.
        if period.class == Some(rule::Class::BlockedWorker) && sampling.signalled {
            return;
        }
        let due = sampling
            .last
            .is_none_or(|at| now.duration_since(at) >= SAMPLE_EVERY);
        let tid = match &period.thread {
            WorkerThread::Known(known) if due && !sampling.abandoned => known.tid,
            _ => return,
        };
        sampling.last = Some(now);
        match self.stacks.sample(tid) {
            Ok(sample) => {
                sampling.signalled |= sample.signalled;
                sampling.samples.push(sample.addrs);
            }
            Err(err) => {
                sampling.abandoned = true;
                sampling.samples.last_error = Some(err.to_string());
            }
        }
    }

    /// For a stuck worker whose thread the census never saw: watches the
    /// worker-named threads no other worker is known to run on, and takes
    /// the one that used at least half a core over [`INFER_OVER`] (at most
    /// a quarter of the threshold). A blocked worker's thread uses none, so
    /// it stays unknown, and the event says so.
    fn infer_thread(&mut self, id: (u32, u32), now: Instant) {
        if !matches!(
            self.periods.get(&id).map(|p| &p.thread),
            Some(WorkerThread::Unknown { .. })
        ) {
            return;
        }
        let known: Vec<u32> = self.census.known_tids().collect();
        let candidates = self.threads.unmapped(&known);
        let over = INFER_OVER.min(self.threshold / 4);
        let Some(period) = self.periods.get_mut(&id) else {
            return;
        };
        let WorkerThread::Unknown { watching, misses } = &mut period.thread else {
            return;
        };
        let Some(candidates) = candidates else {
            *misses = period::SEARCH_LOOKS;
            return;
        };
        let Some((since, before)) = watching.as_ref() else {
            *watching = Some((now, candidates));
            return;
        };
        let elapsed = now.duration_since(*since);
        if elapsed < over {
            return;
        }
        match threads::hottest(before, &candidates, elapsed) {
            Some((hottest, start)) => {
                period.thread = WorkerThread::Known(KnownThread {
                    tid: hottest.tid,
                    name: hottest.name,
                    start: Some((start, *since)),
                    inferred: true,
                });
            }
            // Nothing spins: watch afresh, in case the loop is yet to heat up.
            None => {
                *watching = Some((now, candidates));
                *misses = misses.saturating_add(1);
            }
        }
    }
}

/// The verdict of the task hooks for `worker` of the runtime, when they
/// describe it (built with `--cfg tokio_unstable` and
/// [`crate::install_task_hooks`]): exact, where the counters only infer.
#[cfg(tokio_unstable)]
fn exact_verdict(
    handle: &tokio::runtime::Handle,
    worker: usize,
) -> Option<(Verdict, Option<String>)> {
    Some(match crate::hooks::poll_of(handle.id(), worker)? {
        crate::hooks::Poll::Idle => (Verdict::Progressing, None),
        crate::hooks::Poll::Running { since, location } => {
            (Verdict::Frozen { since }, Some(location.to_string()))
        }
    })
}

/// Without `--cfg tokio_unstable` there are no task hooks: the counters
/// rule alone.
#[cfg(not(tokio_unstable))]
fn exact_verdict(
    _handle: &tokio::runtime::Handle,
    _worker: usize,
) -> Option<(Verdict, Option<String>)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch_proto::v1::StuckPollClass;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[inline(never)]
    fn spin_until(stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    }

    fn run_watchdog(
        watchdog: &mut Watchdog,
        until: impl Fn(&[StuckPoll]) -> bool,
    ) -> Vec<StuckPoll> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut all = Vec::new();
        while !until(&all) {
            assert!(Instant::now() < deadline, "{all:#?}");
            all.extend(watchdog.tick(Instant::now()));
            std::thread::sleep(Duration::from_millis(20));
        }
        all
    }

    fn flagged(events: &[StuckPoll], state: StuckPollState) -> Option<&StuckPoll> {
        events.iter().find(|e| e.state() == state)
    }

    /// The spinning tests capture stacks by signal and measure thread CPU:
    /// run one at a time so they do not skew each other on a small machine.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn two_workers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    struct StopOnDrop(Arc<AtomicBool>);

    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    #[cfg(tokio_unstable)]
    #[test]
    fn task_hooks_time_a_short_stuck_poll_and_name_its_spawn_site() {
        let _serial = one_at_a_time();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        let runtime = crate::install_task_hooks(builder.worker_threads(2).enable_all())
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let _unblock = StopOnDrop(stop.clone());
        let runtimes = WatchedRuntimes::default();
        runtimes.add(runtime.handle().clone());
        // A threshold far below what the counters rule can do.
        let mut watchdog = Watchdog::new(Duration::from_millis(100), runtimes);
        let spinner = {
            let stop = stop.clone();
            runtime.spawn(async move { spin_until(&stop) })
        };
        let events = run_watchdog(&mut watchdog, |e| {
            flagged(e, StuckPollState::Stuck).is_some()
        });
        let stuck = flagged(&events, StuckPollState::Stuck).unwrap();
        assert!(
            stuck.spawn_location.contains("watchdog/mod.rs"),
            "{stuck:#?}"
        );
        assert!(stuck.caveat.contains("task hooks"), "{stuck:#?}");
        assert!(
            stuck.stuck_for_ms >= 100 && stuck.stuck_for_ms < 1000,
            "{stuck:#?}"
        );
        stop.store(true, Ordering::Relaxed);
        runtime.block_on(spinner).unwrap();
        let events = run_watchdog(&mut watchdog, |e| {
            flagged(e, StuckPollState::Recovered).is_some()
        });
        assert!(flagged(&events, StuckPollState::Recovered).is_some());
    }

    #[test]
    fn infers_the_thread_of_a_worker_stuck_before_the_census_saw_it() {
        let _serial = one_at_a_time();
        let runtime = two_workers();
        let stop = Arc::new(AtomicBool::new(false));
        // Ends the spin even if an assertion fails, or dropping the runtime
        // would wait for it forever.
        let _unblock = StopOnDrop(stop.clone());
        // The loop starts before the watchdog exists: no census task has run.
        let spinner = {
            let stop = stop.clone();
            runtime.spawn(async move { spin_until(&stop) })
        };
        let runtimes = WatchedRuntimes::default();
        runtimes.add(runtime.handle().clone());
        let mut watchdog = Watchdog::new(Duration::from_millis(300), runtimes);
        let events = run_watchdog(&mut watchdog, |e| {
            flagged(e, StuckPollState::Stuck).is_some()
        });
        let stuck = flagged(&events, StuckPollState::Stuck).unwrap();
        assert_eq!(stuck.class(), StuckPollClass::RunawayLoop, "{stuck:#?}");
        assert_ne!(stuck.tid, 0, "{stuck:#?}");
        assert!(stuck.caveat.contains("hottest unmapped"), "{stuck:#?}");
        stop.store(true, Ordering::Relaxed);
        runtime.block_on(spinner).unwrap();
    }

    /// Ticks `watchdog` until the census has found both workers of runtime
    /// 0 while they are idle.
    fn census_finds_both_workers(watchdog: &mut Watchdog) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while (0..2).any(|w| watchdog.census.tid(0, w).is_none()) {
            assert!(Instant::now() < deadline);
            assert!(watchdog.tick(Instant::now()).is_empty());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_loop_first_seen_past_the_threshold_is_measured_before_it_is_classified() {
        let _serial = one_at_a_time();
        let runtime = two_workers();
        let runtimes = WatchedRuntimes::default();
        runtimes.add(runtime.handle().clone());
        let threshold = Duration::from_millis(300);
        let mut watchdog = Watchdog::new(threshold, runtimes);
        census_finds_both_workers(&mut watchdog);
        let stop = Arc::new(AtomicBool::new(false));
        let _unblock = StopOnDrop(stop.clone());
        let spinner = {
            let stop = stop.clone();
            runtime.spawn(async move { spin_until(&stop) })
        };
        // The watchdog does not look until the worker has been frozen for
        // twice the threshold, so its period opens already past it.
        std::thread::sleep(threshold * 2);
        let events = run_watchdog(&mut watchdog, |e| {
            flagged(e, StuckPollState::Stuck).is_some()
        });
        let stuck = flagged(&events, StuckPollState::Stuck).unwrap();
        assert_eq!(stuck.class(), StuckPollClass::RunawayLoop, "{stuck:#?}");
        assert!(stuck.cpu_percent > 0.0, "{stuck:#?}");
        stop.store(true, Ordering::Relaxed);
        runtime.block_on(spinner).unwrap();
    }

    #[test]
    fn flags_a_spinning_and_a_blocking_poll_and_their_recovery() {
        let _serial = one_at_a_time();
        let runtime = two_workers();
        let runtimes = WatchedRuntimes::default();
        runtimes.add(runtime.handle().clone());
        let mut watchdog = Watchdog::new(Duration::from_millis(300), runtimes);
        census_finds_both_workers(&mut watchdog);

        let stop = Arc::new(AtomicBool::new(false));
        let _unblock = StopOnDrop(stop.clone());
        let spinner = {
            let stop = stop.clone();
            runtime.spawn(async move { spin_until(&stop) })
        };
        // Refreshes come every second; the first with a stack as soon as a
        // sample is in.
        let sampled = |e: &StuckPoll| {
            e.state() == StuckPollState::StillStuck
                && (e.stack_samples > 0 || !cfg!(feature = "stacks"))
        };
        let events = run_watchdog(&mut watchdog, |e| e.iter().any(sampled));
        let stuck = flagged(&events, StuckPollState::Stuck).unwrap();
        assert_eq!(stuck.class(), StuckPollClass::RunawayLoop, "{stuck:#?}");
        // The class says the thread burned CPU; how much depends on what
        // else this machine runs.
        assert!(stuck.cpu_percent > 0.0, "{stuck:#?}");
        assert!(stuck.stuck_for_ms >= 300);
        assert_ne!(stuck.tid, 0);
        let still = events.iter().find(|e| sampled(e)).unwrap();
        assert_eq!(still.key, stuck.key);
        if cfg!(feature = "stacks") {
            // Raw samples for the collector to name: the spinning function
            // at the leaf (or up to two frames above it, in a debug
            // build), in a module the event describes.
            let entry = spin_until as *const () as u64;
            let sample = still.samples.last().unwrap();
            assert!(
                sample.addresses[..3.min(sample.addresses.len())]
                    .iter()
                    .any(|a| (entry..entry + 4096).contains(a)),
                "{still:#x?}"
            );
            assert!(
                still
                    .modules
                    .iter()
                    .any(|m| (m.start..m.end).contains(&sample.addresses[0])),
                "{still:#x?}"
            );
            assert!(still.frames.is_empty(), "the probe names nothing");
        }
        stop.store(true, Ordering::Relaxed);
        runtime.block_on(spinner).unwrap();
        let events = run_watchdog(&mut watchdog, |e| {
            flagged(e, StuckPollState::Recovered).is_some()
        });
        assert_eq!(
            flagged(&events, StuckPollState::Recovered).unwrap().key,
            stuck.key
        );

        // A blocking wait inside async code, until the watchdog has flagged
        // it and reported it again a few times.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let sleeper = runtime.spawn(async move {
            let _ = released.recv();
        });
        let events = run_watchdog(&mut watchdog, |e| {
            e.iter()
                .filter(|e| e.state() == StuckPollState::StillStuck)
                .count()
                >= 3
        });
        release.send(()).unwrap();
        let last = events.last().unwrap();
        if cfg!(all(feature = "stacks", target_arch = "x86_64")) {
            // Read where it waits in the kernel, with no signal, as often
            // as a spinning one is sampled.
            assert!(last.stack_samples >= 2, "{last:#?}");
        } else {
            assert!(
                last.stack_samples <= 1,
                "a blocked worker is signalled once, not every {SAMPLE_EVERY:?}: {last:#?}"
            );
        }
        let blocked = flagged(&events, StuckPollState::Stuck).unwrap();
        assert_eq!(
            blocked.class(),
            StuckPollClass::BlockedWorker,
            "{blocked:#?}"
        );
        assert_ne!(blocked.key, stuck.key);
        runtime.block_on(sleeper).unwrap();
    }
}
