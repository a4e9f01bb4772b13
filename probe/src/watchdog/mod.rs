//! The watchdog: flags a poll that does not return while it is still stuck,
//! says whether its thread spins or blocks, and shows where.
//!
//! It runs on its own OS thread, never on the watched runtimes, so a runtime
//! whose every worker is stuck is still reported. Every tick it reads each
//! worker's published counters ([`rule`]); a worker that is active with the
//! same counters for longer than `stuck_poll_threshold` is stuck. Its OS
//! thread comes from the [`census`]; the thread's scheduler statistics
//! since half the threshold classify it ([`rule::classify`]); its stack is
//! sampled by signal ([`crate::stack`]) at detection and every
//! [`SAMPLE_EVERY`] after. An event goes out at once (`STUCK`), again every
//! [`REFRESH`] while the worker stays stuck (`STILL_STUCK`, with more
//! samples), and when its counters move again (`RECOVERED`).

mod census;
mod report;
mod rule;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshwatch_proto::v1::{
    Event, ProbeMessage, StuckPoll, StuckPollClass, StuckPollState, event, probe_message,
};
use procfs::process::Process;

use crate::config::Config;
use crate::identity::now_unix_ms;
use crate::outbox::Outbox;
use crate::sampler::WatchedRuntimes;
use crate::stack::{ModuleMap, StackSampler};
use crate::stats::ProbeCounters;
use census::Census;
use report::Samples;
use rule::{Class, ThreadTimes, ThreadUse, Verdict, WorkerCounters, WorkerWatch};

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
/// The share of [`INFER_OVER`] an unmapped thread must have spent running
/// or runnable (waiting for a CPU: on an overloaded machine a spinning
/// thread waits much of the time) to be taken for the stuck worker's thread.
const INFER_MIN_SHARE: f64 = 0.5;
/// The name tokio gives worker (and blocking) threads unless told otherwise.
const DEFAULT_WORKER_NAME: &str = "tokio-rt-worker";

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

/// One worker that has been frozen for at least half the threshold.
#[derive(Debug)]
struct Period {
    key: String,
    tid: Option<u32>,
    thread_name: String,
    /// Where the thread's CPU is measured from, and when it was read.
    start: Option<(ThreadTimes, Instant)>,
    samples: Samples,
    last_sample: Option<Instant>,
    /// The thread did not answer a capture: do not queue more signals.
    capture_abandoned: bool,
    /// While the census does not know the worker's thread: the unmapped
    /// worker-named threads and their times, to find the one that spins.
    candidates: Option<(Instant, Vec<(u32, ThreadTimes)>)>,
    /// The thread was inferred (the hottest unmapped worker thread), not
    /// seen by the census.
    inferred: bool,
    /// The task hooks timed this poll (`--cfg tokio_unstable`), so it is
    /// one poll for certain.
    exact: bool,
    /// Where the polled task was spawned, when the task hooks said.
    spawn_location: String,
    /// Fixed by the first report that measured the thread, so a period is one incident.
    class: Option<Class>,
    last_report: Option<Instant>,
    last_event: Option<StuckPoll>,
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
    process: Option<Process>,
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
            process: Process::myself().ok(),
        }
    }

    /// Looks at every worker once; returns the events to send.
    fn tick(&mut self, now: Instant) -> Vec<StuckPoll> {
        let mut events = Vec::new();
        for (runtime_id, handle) in self.runtimes.handles() {
            self.census.refresh(runtime_id, &handle, now);
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
                        if let Some(period) = self.periods.remove(&id)
                            && let Some(last) = &period.last_event
                        {
                            events.push(recovered(&period, last, &mut self.modules));
                        }
                    }
                    Verdict::Frozen { since } => {
                        if let Some(event) = self.frozen(id, since, now, spawned_at) {
                            events.push(event);
                        }
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
        let (runtime_id, worker) = id;
        if !self.periods.contains_key(&id) {
            let tid = self.census.tid(runtime_id, worker as usize);
            let period = Period {
                key: format!(
                    "rt{runtime_id}-w{worker}-{}",
                    now_unix_ms() - i64::try_from(frozen_for.as_millis()).unwrap_or(0)
                ),
                tid,
                thread_name: tid.and_then(|t| self.thread_name(t)).unwrap_or_default(),
                start: tid.and_then(|t| self.thread_times(t)),
                samples: Samples::default(),
                last_sample: None,
                capture_abandoned: false,
                candidates: None,
                inferred: false,
                exact: spawned_at.is_some(),
                spawn_location: spawned_at.unwrap_or_default(),
                class: None,
                last_report: None,
                last_event: None,
            };
            self.periods.insert(id, period);
        }
        if self.periods.get(&id).is_some_and(|p| p.tid.is_none()) {
            self.infer_thread(id, now);
        }
        if frozen_for < self.threshold {
            return None;
        }
        let times = self
            .periods
            .get(&id)
            .and_then(|p| p.tid)
            .and_then(|t| self.thread_times(t));
        let period = self.periods.get_mut(&id)?;
        // Report at once, before the first stack sample; again as soon as
        // the first sample is in, then every REFRESH.
        let first_stack = period
            .last_event
            .as_ref()
            .is_some_and(|e| e.stack_samples == 0)
            && period.samples.taken > 0;
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
        let event = build_event(period, id, state, frozen_for, times, &mut self.modules);
        period.last_event = Some(event.clone());
        Some(event)
    }

    fn sample_if_due(&mut self, id: (u32, u32), now: Instant) {
        let Some(period) = self.periods.get_mut(&id) else {
            return;
        };
        let due = period
            .last_sample
            .is_none_or(|at| now.duration_since(at) >= SAMPLE_EVERY);
        let Some(tid) = period.tid.filter(|_| due && !period.capture_abandoned) else {
            return;
        };
        period.last_sample = Some(now);
        match self.stacks.sample(tid) {
            Ok(addrs) => period.samples.push(addrs),
            Err(err) => {
                period.capture_abandoned = true;
                period.samples.last_error = Some(err.to_string());
            }
        }
    }

    /// For a stuck worker whose thread the census never saw (it got stuck
    /// before its first census task ran): watches the worker-named threads
    /// no other worker is known to run on, and takes the one that used at
    /// least half a core over [`INFER_OVER`]. A blocked worker's thread uses
    /// none, so it stays unknown, and the event says so.
    fn infer_thread(&mut self, id: (u32, u32), now: Instant) {
        let Some(process) = self.process.as_ref() else {
            return;
        };
        let known: Vec<u32> = self.census.known_tids().collect();
        let names: Vec<String> = known
            .iter()
            .filter_map(|&tid| self.thread_name(tid))
            .chain([DEFAULT_WORKER_NAME.to_owned()])
            .collect();
        let Ok(tasks) = process.tasks() else {
            return;
        };
        let mut thread_names = HashMap::new();
        let unmapped: Vec<(u32, ThreadTimes)> = tasks
            .flatten()
            .filter_map(|task| {
                let tid = u32::try_from(task.tid).ok()?;
                let name = task.stat().ok()?.comm;
                if known.contains(&tid) || !names.contains(&name) {
                    return None;
                }
                thread_names.insert(tid, name);
                let stat = task.schedstat().ok()?;
                Some((
                    tid,
                    ThreadTimes {
                        exec_ns: stat.sum_exec_runtime,
                        wait_ns: stat.run_delay,
                    },
                ))
            })
            .collect();
        let Some(period) = self.periods.get_mut(&id) else {
            return;
        };
        let Some((since, before)) = &period.candidates else {
            period.candidates = Some((now, unmapped));
            return;
        };
        let elapsed = now.duration_since(*since);
        if elapsed < INFER_OVER.min(self.threshold / 4) {
            return;
        }
        let hottest = unmapped
            .iter()
            .filter_map(|(tid, times)| {
                let (_, start) = before.iter().find(|(t, _)| t == tid)?;
                let busy =
                    (times.exec_ns + times.wait_ns).saturating_sub(start.exec_ns + start.wait_ns);
                Some((*tid, *start, busy))
            })
            .max_by_key(|&(_, _, busy)| busy);
        match hottest {
            Some((tid, start, ran))
                if ran as f64 >= INFER_MIN_SHARE * elapsed.as_nanos() as f64 =>
            {
                period.tid = Some(tid);
                period.start = Some((start, *since));
                period.inferred = true;
                period.thread_name = thread_names.remove(&tid).unwrap_or_default();
            }
            // Nothing spins: watch afresh, in case the loop is yet to heat up.
            _ => period.candidates = Some((now, unmapped)),
        }
    }

    /// The thread's scheduler statistics and the moment they were read
    /// (not the tick's start: naming a stack can make a tick long).
    fn thread_times(&self, tid: u32) -> Option<(ThreadTimes, Instant)> {
        let task = self
            .process
            .as_ref()?
            .task_from_tid(i32::try_from(tid).ok()?)
            .ok()?;
        let stat = task.schedstat().ok()?;
        let times = ThreadTimes {
            exec_ns: stat.sum_exec_runtime,
            wait_ns: stat.run_delay,
        };
        Some((times, Instant::now()))
    }

    fn thread_name(&self, tid: u32) -> Option<String> {
        let task = self
            .process
            .as_ref()?
            .task_from_tid(i32::try_from(tid).ok()?)
            .ok()?;
        Some(task.stat().ok()?.comm)
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

/// The last report of a period, marked recovered, with the samples taken
/// since.
fn recovered(period: &Period, last: &StuckPoll, modules: &mut ModuleMap) -> StuckPoll {
    StuckPoll {
        state: StuckPollState::Recovered.into(),
        caveat: report::caveat(&period.samples, &[], period.exact),
        samples: period.samples.raw(),
        modules: modules.modules_for(period.samples.addresses()),
        stack_samples: period.samples.taken,
        ..last.clone()
    }
}

/// The event for a period at `now`, classifying it on its first report.
fn build_event(
    period: &mut Period,
    (runtime_id, worker): (u32, u32),
    state: StuckPollState,
    frozen_for: Duration,
    end: Option<(ThreadTimes, Instant)>,
    modules: &mut ModuleMap,
) -> StuckPoll {
    let mut notes = Vec::new();
    let usage = match (period.start, end) {
        (Some((start, from)), Some((end, to))) => {
            Some(ThreadUse::between(start, end, to.duration_since(from)))
        }
        _ => None,
    };
    if period.inferred {
        notes.push(
            "the worker got stuck before the probe mapped it to its OS thread; the thread shown is the hottest unmapped worker-named thread, which could in rare cases be a blocking-pool thread"
                .to_owned(),
        );
    }
    if period.tid.is_none() {
        notes.push(
            "the worker's OS thread is not known yet (no census task ran on it before it got stuck), so its CPU and stack are unknown"
                .to_owned(),
        );
    }
    if let Some(usage) = usage
        && usage.wait_percent >= 20.0
    {
        notes.push(format!(
            "the thread waited for a CPU {:.0}% of the time: the machine is overloaded",
            usage.wait_percent
        ));
    }
    // Fixed once measured, so a period is one incident. Without the
    // thread's figures the worker is still not running tasks: blocked, from
    // the runtime's point of view, until its thread is found.
    let class = match (period.class, usage) {
        (Some(class), _) => class,
        (None, Some(usage)) => *period.class.insert(rule::classify(usage)),
        (None, None) => Class::BlockedWorker,
    };
    let caveat = report::caveat(&period.samples, &notes, period.exact);
    StuckPoll {
        key: period.key.clone(),
        state: state.into(),
        class: match class {
            Class::RunawayLoop => StuckPollClass::RunawayLoop,
            Class::BlockedWorker => StuckPollClass::BlockedWorker,
        }
        .into(),
        runtime_id,
        worker_index: worker,
        tid: period.tid.unwrap_or(0),
        thread_name: period.thread_name.clone(),
        stuck_for_ms: u64::try_from(frozen_for.as_millis()).unwrap_or(u64::MAX),
        cpu_percent: usage.map_or(0.0, |u| u.cpu_percent),
        spawn_location: period.spawn_location.clone(),
        stack_samples: period.samples.taken,
        caveat,
        samples: period.samples.raw(),
        modules: modules.modules_for(period.samples.addresses()),
        ..StuckPoll::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn flags_a_spinning_and_a_blocking_poll_and_their_recovery() {
        let _serial = one_at_a_time();
        let runtime = two_workers();
        let runtimes = WatchedRuntimes::default();
        runtimes.add(runtime.handle().clone());
        let mut watchdog = Watchdog::new(Duration::from_millis(300), runtimes);
        // Let the census find both workers while they are idle.
        let deadline = Instant::now() + Duration::from_secs(10);
        while (0..2).any(|w| watchdog.census.tid(0, w).is_none()) {
            assert!(Instant::now() < deadline);
            assert!(watchdog.tick(Instant::now()).is_empty());
            std::thread::sleep(Duration::from_millis(20));
        }

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

        // A blocking wait inside async code, until the watchdog has flagged it.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let sleeper = runtime.spawn(async move {
            let _ = released.recv();
        });
        let events = run_watchdog(&mut watchdog, |e| {
            flagged(e, StuckPollState::Stuck).is_some()
        });
        release.send(()).unwrap();
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
