//! The event loops of processes watched from outside (`--watch`): a Node.js,
//! Python or native loop stuck in code that never yields is flagged
//! `runaway_loop` while it spins, with the spinning function named.
//!
//! One thread, `meshwatch-loops`, looks at the main thread of every watched
//! process four times a second (the thread that runs Node's and gevent's
//! loop, and asyncio's by default):
//! - its CPU time and the system call it waits in (`/proc/PID/task/PID`);
//! - a one-shot breakpoint on the poll function it waits in ([`beacon`]),
//!   set the first time the thread is seen waiting, which says whether the
//!   loop turned since the last look;
//! - [`rule`] judges the two: stuck once the loop has not turned for a
//!   second while not waiting;
//! - from half the threshold on, the thread's stacks are taken ([`stacks`])
//!   and named on a thread of their own ([`sampler`]), so a report soon
//!   names the function, and naming one loop's stacks never delays the
//!   looks at the others.
//!
//! What it finds goes out as the probe's `StuckPoll` events on the watched
//! process's own connection ([`meshwatch_probe::WatchedEvents`]), so the
//! collector opens, refreshes and resolves the incident as it does a
//! probe's.

mod beacon;
mod perf_map;
mod profile;
mod rule;
mod sampler;
mod stacks;
mod tick_thread;

pub(crate) use profile::profile as profile_from_outside;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meshwatch_probe::WatchedEvents;
use meshwatch_proto::v1::{StuckPoll, StuckPollClass, StuckPollState};

use beacon::{PollBeacon, poll_functions};
use rule::{Look, StallRule, Verdict};
use sampler::{LoopStacks, StackSampler};
use stacks::StackSource;
use tick_thread::{Rounds, TickThread};

/// How often each loop is looked at.
const TICK: Duration = Duration::from_millis(250);

/// A watched process whose event loop to follow.
#[derive(Debug)]
pub(crate) struct WatchedLoop {
    /// The process; its main thread has the same id.
    pub pid: u32,
    /// `node`, `python` or `native`: how its stacks are named.
    pub runtime: &'static str,
    /// Where its stalls are reported.
    pub events: WatchedEvents,
}

/// The `meshwatch-loops` thread; stops when dropped.
#[derive(Debug)]
pub(crate) struct LoopWatch {
    thread: Option<TickThread<WatchedLoop>>,
}

impl LoopWatch {
    /// Starts the thread. If it cannot start, loops are not followed and
    /// the error is logged: the rest of the watching goes on.
    pub(crate) fn start() -> Self {
        let thread = TickThread::start("meshwatch-loops", Judge::new)
            .inspect_err(|err| tracing::error!("cannot start the event-loop watcher: {err}"))
            .ok();
        Self { thread }
    }

    /// Follows the loop of a newly watched process until it is gone.
    pub(crate) fn follow(&self, watched: WatchedLoop) {
        if let Some(thread) = &self.thread {
            thread.send(watched);
        }
    }
}

/// The loops followed, looked at every [`TICK`].
struct Judge {
    sampler: StackSampler,
    clock: Instant,
    loops: HashMap<u32, LoopMonitor>,
}

impl Judge {
    fn new() -> Self {
        Self {
            sampler: StackSampler::start(),
            clock: Instant::now(),
            loops: HashMap::new(),
        }
    }
}

impl Rounds for Judge {
    type Item = WatchedLoop;

    fn add(&mut self, watched: WatchedLoop) {
        let stacks = self.sampler.follow(watched.pid, watched.runtime);
        self.loops
            .insert(watched.pid, LoopMonitor::new(watched, stacks));
    }

    fn round(&mut self) {
        let now_ms = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.loops.retain(|_, monitor| monitor.look(now_ms));
    }
}

/// The beacon of one loop, once its poll function is known.
#[derive(Debug)]
enum BeaconState {
    /// The thread has not been seen waiting in a poll call yet.
    Unset,
    Set(PollBeacon),
    /// It could not be set: said once, not tried again.
    Failed,
}

/// One watched process's loop.
#[derive(Debug)]
struct LoopMonitor {
    watched: WatchedLoop,
    thread_name: String,
    beacon: BeaconState,
    rule: StallRule,
    /// Its stacks, wanted while it is suspect or stuck.
    stacks: LoopStacks,
}

/// What `/proc` says of the loop's thread now.
struct ThreadNow {
    name: String,
    cpu_ms: u64,
    /// Its time in the run queue, waiting for a CPU.
    run_queue_ms: u64,
    /// The system call it waits in, if any.
    syscall: Option<i64>,
}

impl ThreadNow {
    fn read(pid: u32) -> Option<Self> {
        let task = procfs::process::Process::new(pid as i32)
            .ok()?
            .task_from_tid(pid as i32)
            .ok()?;
        let stat = task.stat().ok()?;
        // Nanoseconds from the scheduler; clock ticks where it keeps none.
        let (cpu_ms, run_queue_ms) = match task.schedstat() {
            Ok(sched) => (
                sched.sum_exec_runtime / 1_000_000,
                sched.run_delay / 1_000_000,
            ),
            Err(_) => {
                let ticks = (stat.utime + stat.stime).saturating_mul(1000);
                (ticks / procfs::ticks_per_second().max(1), 0)
            }
        };
        // `running`, or the number of the call it is in (-1 for none).
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/syscall"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
            .filter(|&nr: &i64| nr >= 0);
        Some(ThreadNow {
            name: stat.comm,
            cpu_ms,
            run_queue_ms,
            syscall,
        })
    }
}

impl LoopMonitor {
    fn new(watched: WatchedLoop, stacks: LoopStacks) -> Self {
        Self {
            watched,
            thread_name: String::new(),
            beacon: BeaconState::Unset,
            rule: StallRule::default(),
            stacks,
        }
    }

    /// One look; false once the process is gone or no longer watched.
    fn look(&mut self, now_ms: u64) -> bool {
        let pid = self.watched.pid;
        if self.watched.events.is_closed() {
            return false;
        }
        let Some(thread) = ThreadNow::read(pid) else {
            return false;
        };
        self.thread_name = thread.name;
        let waiting_in = thread.syscall.and_then(poll_functions);
        if let (BeaconState::Unset, Some(functions)) = (&self.beacon, waiting_in) {
            self.beacon = match PollBeacon::locate(pid, pid, functions).and_then(|mut beacon| {
                beacon.arm()?;
                Ok(beacon)
            }) {
                Ok(beacon) => BeaconState::Set(beacon),
                Err(err) => {
                    tracing::warn!(
                        pid,
                        "cannot follow the event loop of a watched process, so a loop stuck in it is not flagged: {err}"
                    );
                    BeaconState::Failed
                }
            };
        }
        let turned = match &mut self.beacon {
            BeaconState::Set(beacon) => {
                let hit = beacon.hit();
                if hit && let Err(err) = beacon.arm() {
                    tracing::warn!(pid, "stopped following an event loop: {err}");
                    self.beacon = BeaconState::Failed;
                }
                hit
            }
            _ => false,
        };
        let was_blind = self.rule.beacon_blind();
        let verdict = self.rule.observe(Look {
            now_ms,
            turned,
            cpu_ms: thread.cpu_ms,
            run_queue_ms: thread.run_queue_ms,
            waiting_in_poll: waiting_in.is_some(),
        });
        if !was_blind && self.rule.beacon_blind() {
            tracing::info!(
                pid,
                "the event loop of a watched process reaches its poll call by a road the beacon does not see; a loop stuck in it is not flagged"
            );
            self.beacon = BeaconState::Failed;
        }
        match verdict {
            Verdict::Turning => self.stacks.want(false),
            Verdict::Suspect => self.stacks.want(true),
            Verdict::Stuck {
                since_ms,
                report,
                runaway,
                cpu_percent,
                ..
            } => {
                self.stacks.want(true);
                if report {
                    let class = if runaway {
                        StuckPollClass::RunawayLoop
                    } else {
                        StuckPollClass::BlockedWorker
                    };
                    let mut stuck = self.stuck_poll(since_ms, now_ms - since_ms, class);
                    stuck.cpu_percent = cpu_percent;
                    self.watched.events.stuck_poll(stuck);
                }
            }
            Verdict::Recovered {
                since_ms,
                stuck_for_ms,
            } => {
                let mut recovered =
                    self.stuck_poll(since_ms, stuck_for_ms, StuckPollClass::Unspecified);
                recovered.state = StuckPollState::Recovered.into();
                self.watched.events.stuck_poll(recovered);
                self.stacks.want(false);
            }
        }
        true
    }

    /// The event for the stuck period that began at `since_ms`, with the
    /// samples taken so far.
    fn stuck_poll(&self, since_ms: u64, stuck_for_ms: u64, class: StuckPollClass) -> StuckPoll {
        let samples = self.stacks.latest();
        let mut stuck = StuckPoll {
            key: format!("event-loop-{since_ms}"),
            state: StuckPollState::Stuck.into(),
            class: class.into(),
            tid: self.watched.pid,
            thread_name: self.thread_name.clone(),
            stuck_for_ms,
            stack_samples: u32::try_from(samples.len()).unwrap_or(u32::MAX),
            caveat: self.caveat(),
            event_loop: true,
            ..StuckPoll::default()
        };
        crate::stuck_samples::add_evidence(&mut stuck, &samples);
        // The named samples are the collector's to fill from raw ones; on
        // the wire a probe's are dropped, so these stay here.
        stuck.named_samples.clear();
        stuck
    }

    /// How the stall was seen, and what the stacks could not say.
    fn caveat(&self) -> String {
        let functions = match &self.beacon {
            BeaconState::Set(beacon) => beacon.functions().collect::<Vec<_>>().join(" or "),
            _ => "its poll function".to_owned(),
        };
        let mut caveat = format!(
            "seen from outside the process: its event loop's thread has not entered {functions} for as long as it has been stuck"
        );
        match self.stacks.failed() {
            Some(why) => caveat.push_str(&format!("; no stack samples: {why}")),
            _ if self.watched.runtime == "node" && !StackSource::has_perf_map(self.watched.pid) => {
                caveat.push_str(
                    "; JavaScript functions are named only when node runs with --perf-basic-prof, and those not yet compiled only with --interpreted-frames-native-stack too (NODE_OPTIONS='--perf-basic-prof --interpreted-frames-native-stack')",
                );
            }
            _ => {}
        }
        caveat
    }
}
