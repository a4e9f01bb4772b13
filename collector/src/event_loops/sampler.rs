//! The thread that takes and names a suspect loop's stacks, apart from the
//! thread that judges the loops.
//!
//! Naming is slow and its cost is not bounded by the collector: the first
//! stack of a Node.js process parses its 100 MiB executable's symbols
//! (over a second on a loaded machine), every later one looks addresses up
//! in a perf map that keeps growing, and py-spy reads a whole interpreter.
//! Were it done between two looks, one loop's stacks would hold back the
//! looks at every other loop, and a loop stuck for three seconds could
//! end before it was looked at twice. So the judge (`meshwatch-loops`) only
//! says which loops want stacks ([`LoopStacks::want`]) and reads the
//! latest named ones when it reports ([`LoopStacks::latest`]); this thread
//! does the rest, four times a second, for every loop that wants them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use blazesym::symbolize::Symbolizer;
use meshwatch_proto::v1::Frame;

use super::stacks::StackSource;
use super::tick_thread::{Rounds, TickThread};

/// What the judge and the sampler share about one loop.
#[derive(Debug, Default)]
struct Shared {
    /// The loop is suspect or stuck: take its stacks.
    wanted: bool,
    /// Counts the changes of `wanted`: stacks taken in one period are not
    /// mixed into the next.
    period: u64,
    /// The latest named stacks, leaf first, taken since `wanted` was set.
    samples: VecDeque<Vec<Frame>>,
    /// Why stacks cannot be taken, once a try has failed.
    failed: Option<String>,
}

/// `shared`, locked; a panic elsewhere while it was held leaves plain
/// data, still good to read.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// One loop's stacks, as the judge sees them.
#[derive(Debug)]
pub(crate) struct LoopStacks {
    shared: Arc<Mutex<Shared>>,
}

impl LoopStacks {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Starts or stops taking this loop's stacks. Stopping forgets the
    /// stacks taken, and why they could not be: the next stuck period
    /// starts afresh.
    pub(crate) fn want(&self, wanted: bool) {
        let mut shared = self.lock();
        if shared.wanted != wanted {
            shared.wanted = wanted;
            shared.period += 1;
            shared.samples.clear();
            shared.failed = None;
        }
    }

    /// The stacks taken since they were wanted, oldest first.
    pub(crate) fn latest(&self) -> Vec<Vec<Frame>> {
        self.lock().samples.iter().cloned().collect()
    }

    /// Why this loop's stacks cannot be taken, if a try failed.
    pub(crate) fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }
}

/// A loop the sampler thread knows.
#[derive(Debug)]
struct Followed {
    pid: u32,
    runtime: &'static str,
    shared: Arc<Mutex<Shared>>,
    /// Taking stacks, for the period it was started in.
    source: Option<(u64, StackSource)>,
}

/// The `meshwatch-loop-stacks` thread; stops when dropped.
#[derive(Debug)]
pub(crate) struct StackSampler {
    thread: Option<TickThread<Followed>>,
}

impl StackSampler {
    /// Starts the thread. If it cannot start, stuck loops are still
    /// flagged, with no stacks, and the error is logged.
    pub(crate) fn start() -> Self {
        let thread = TickThread::start("meshwatch-loop-stacks", Sampling::new)
            .inspect_err(|err| {
                tracing::error!("cannot start the thread that samples stuck event loops: {err}");
            })
            .ok();
        Self { thread }
    }

    /// The stacks of thread `pid` of process `pid`, named for `runtime`;
    /// they are taken until the returned handle is dropped.
    pub(crate) fn follow(&self, pid: u32, runtime: &'static str) -> LoopStacks {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let followed = Followed {
            pid,
            runtime,
            shared: Arc::clone(&shared),
            source: None,
        };
        if !self
            .thread
            .as_ref()
            .is_some_and(|thread| thread.send(followed))
        {
            lock(&shared).failed =
                Some("the collector's stack sampling thread is not running".to_owned());
        }
        LoopStacks { shared }
    }
}

/// The loops followed, with the symbolizer that names their stacks.
struct Sampling {
    symbolizer: Symbolizer,
    loops: Vec<Followed>,
}

impl Sampling {
    fn new() -> Self {
        Self {
            symbolizer: crate::naming::symbolizer(&[]),
            loops: Vec::new(),
        }
    }
}

impl Rounds for Sampling {
    type Item = Followed;

    fn add(&mut self, followed: Followed) {
        self.loops.push(followed);
    }

    fn round(&mut self) {
        // A handle the judge dropped is a loop no longer followed.
        self.loops
            .retain(|followed| Arc::strong_count(&followed.shared) > 1);
        for followed in &mut self.loops {
            followed.turn(&self.symbolizer);
        }
    }
}

impl Followed {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Takes the stacks since the last turn if they are wanted; the lock
    /// is never held while they are taken or named.
    fn turn(&mut self, symbolizer: &Symbolizer) {
        let (wanted, period, failed) = {
            let shared = self.lock();
            (shared.wanted, shared.period, shared.failed.is_some())
        };
        // A source from an earlier period holds that period's samples.
        let mut source = self.source.take().filter(|(of, _)| *of == period);
        if !wanted || failed {
            return;
        }
        if source.is_none() {
            match StackSource::start(self.pid, self.pid, self.runtime) {
                Ok(started) => source = Some((period, started)),
                Err(err) => {
                    self.lock().failed = Some(err.to_string());
                    return;
                }
            }
        }
        let mut taken = VecDeque::new();
        if let Some((_, source)) = &mut source {
            source.collect(symbolizer, &mut taken);
        }
        self.source = source;
        let mut shared = self.lock();
        if shared.period == period {
            for stack in taken {
                super::stacks::push(&mut shared.samples, stack);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn frame(function: &str) -> Vec<Frame> {
        vec![Frame {
            function: function.to_owned(),
            ..Frame::default()
        }]
    }

    #[test]
    fn a_new_period_starts_without_the_last_ones_stacks_or_failure() {
        let stacks = LoopStacks {
            shared: Arc::new(Mutex::new(Shared::default())),
        };
        stacks.want(true);
        {
            let mut shared = stacks.lock();
            shared.samples.push_back(frame("spin"));
            shared.failed = Some("no perf".to_owned());
        }
        stacks.want(true);
        assert_eq!(
            stacks.latest(),
            vec![frame("spin")],
            "still the same period"
        );
        stacks.want(false);
        assert!(stacks.latest().is_empty());
        assert_eq!(stacks.failed(), None);
        assert_eq!(stacks.lock().period, 2);
    }

    #[test]
    fn a_loop_whose_stacks_cannot_be_taken_says_why() {
        let sampler = StackSampler::start();
        // No process has this id: it is above the largest pid_max.
        let stacks = sampler.follow(4_194_305, "native");
        stacks.want(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while stacks.failed().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(stacks.failed().is_some());
        assert!(stacks.latest().is_empty());
    }
}
