//! `runaway_loop` and `blocked_worker`: a poll that does not return.

use serde::{Deserialize, Serialize};

use crate::Frame;

/// The evidence of a stuck poll, from the probe's watchdog and the stack
/// samples it took of the stuck thread, named by the collector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StuckPollEvidence {
    /// The stuck thread.
    pub thread: ThreadRef,
    /// Which of the process's runtimes the worker belongs to.
    pub runtime_id: u32,
    /// The worker's index in its runtime.
    pub worker_index: u32,
    /// The thread's CPU while stuck, in percent of one core.
    pub cpu_percent: f64,
    /// How long the poll has not returned.
    pub stuck_for_ms: u64,
    /// Where the polled task was spawned, when the runtime says.
    pub spawn_location: Option<String>,
    /// The frames every sample shares, innermost first.
    pub frames: Vec<Frame>,
    /// The leaf frames seen most often, hottest first.
    pub hot_frames: Vec<HotFrame>,
    /// How many stack samples the watchdog took of the thread.
    pub stack_samples: u32,
    /// The latest samples, named, each distinct stack once with how many
    /// samples had it: what a flame graph is drawn from.
    pub samples: Vec<StackSample>,
    /// What the watchdog and the samples could not tell for sure.
    pub caveat: Option<String>,
    /// The probe's key for this stuck period.
    pub key: String,
    /// The `tracing` spans the stuck thread is inside, outermost first, as
    /// `name{field=value ...}`: the request it serves. Empty when the
    /// service does not record them (`meshwatch_probe::SpanLayer`).
    pub spans: Vec<String>,
    /// The thread runs an event loop (Node.js, Python) watched from outside
    /// or through OpenTelemetry, not a tokio worker: what is stuck is a
    /// callback, and `runtime_id` and `worker_index` do not apply.
    pub event_loop: bool,
}

/// A thread of the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreadRef {
    /// The OS thread id.
    pub tid: u32,
    /// The thread's name, empty when it has none.
    pub name: String,
}

/// A leaf frame and how many samples ended in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HotFrame {
    /// The frame.
    #[serde(flatten)]
    pub frame: Frame,
    /// Samples whose leaf it was.
    pub samples: u32,
}

/// One distinct stack among the samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StackSample {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// How many samples had exactly this stack.
    pub count: u32,
}
