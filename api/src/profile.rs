//! `POST /api/v1/profile`: a CPU profile taken on demand by an instance's
//! probe, its stacks named by the collector.

use serde::{Deserialize, Serialize};

use crate::Frame;

/// A CPU profile of one instance: each distinct stack of each thread that
/// ran while it was taken, with how often it was seen and the CPU time
/// behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuProfileView {
    pub service: String,
    pub instance_id: String,
    pub pid: u32,
    pub host: String,
    /// When sampling started.
    pub started_ms: i64,
    /// How long the probe sampled, and at what rate.
    pub duration_ms: u32,
    pub frequency_hz: u32,
    /// Stack samples taken in all.
    pub samples: u64,
    /// Samples of stacks past the most distinct stacks a probe keeps,
    /// counted but not in `stacks`.
    pub samples_dropped: u64,
    /// What makes the profile partial (some stacks could not be taken), in
    /// words for the operator; `None` when nothing did.
    pub caveat: Option<String>,
    /// Every frame the stacks use, each once: stacks refer to them by
    /// index, as pprof's own format does, so that a deep profile's
    /// answer stays small.
    pub frames: Vec<Frame>,
    /// The distinct stacks, heaviest first.
    pub stacks: Vec<ProfileStackView>,
}

impl CpuProfileView {
    /// The frames of `stack`, innermost first; an index outside
    /// [`Self::frames`] (a malformed answer) is skipped.
    pub fn frames_of<'a>(&'a self, stack: &'a ProfileStackView) -> impl Iterator<Item = &'a Frame> {
        stack
            .frames
            .iter()
            .filter_map(|&i| self.frames.get(i as usize))
    }
}

/// One distinct stack of one thread in a [`CpuProfileView`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileStackView {
    /// The thread's name, e.g. `tokio-rt-worker`.
    pub thread: String,
    /// Indexes into [`CpuProfileView::frames`], innermost first.
    pub frames: Vec<u32>,
    /// Samples that had this stack.
    pub samples: u64,
    /// CPU time the thread used in the periods that ended with those
    /// samples, in nanoseconds.
    pub cpu_ns: u64,
}

/// The answer to `POST /api/v1/profile`, and to `GET
/// /api/v1/profile/{id}` while the profile is being taken: where to ask
/// for it, and when it should be in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileTicket {
    /// Asked for with `GET /api/v1/profile/{id}`.
    pub id: String,
    pub instance_id: String,
    /// When the probe was asked.
    pub started_ms: i64,
    /// How long it samples, and at what rate.
    pub duration_ms: u32,
    pub frequency_hz: u32,
}
