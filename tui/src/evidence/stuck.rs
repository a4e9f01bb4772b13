//! The view of a stuck poll: `runaway_loop` or `blocked_worker`.

use meshwatch_api::evidence::StuckPollEvidence;

use super::{Field, Frame, Section, frames};
use crate::format;

/// A frame the sampler found hottest, with how many samples it topped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotFrame {
    /// The frame.
    pub frame: Frame,
    /// In how many stack samples it was the leaf.
    pub samples: u64,
}

impl HotFrame {
    /// `function (N samples)`, or `(1 sample)`.
    pub fn describe(&self) -> String {
        let plural = if self.samples == 1 { "" } else { "s" };
        format!("{} ({} sample{plural})", self.frame.function, self.samples)
    }
}

/// One distinct stack among the samples and how many samples had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSample {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// How many samples had exactly this stack.
    pub count: u64,
}

/// The evidence of a stuck poll, as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopEvidence {
    /// `name (tid N)` of the stuck thread.
    pub thread: String,
    /// The thread's CPU while stuck, in percent of one core.
    pub cpu_percent: f64,
    /// How long the poll has not returned.
    pub stuck_for_ms: u64,
    /// Where the stuck task was spawned, when known.
    pub spawn_location: Option<String>,
    /// The stack (frames common to the samples), innermost first.
    pub frames: Vec<Frame>,
    /// The hottest leaf frames.
    pub hot_frames: Vec<HotFrame>,
    /// How many stack samples the watchdog took.
    pub stack_samples: u64,
    /// The latest samples, each distinct stack once: for a flame graph.
    pub samples: Vec<StackSample>,
    /// What the watchdog could not tell for sure.
    pub caveat: Option<String>,
    /// The `tracing` spans the thread is inside, outermost first: the
    /// request it serves.
    pub spans: Vec<String>,
    /// The worker's index and runtime, shown after the stack; none for an
    /// event loop's thread.
    worker: Option<(u32, u32)>,
}

impl From<&StuckPollEvidence> for LoopEvidence {
    fn from(e: &StuckPollEvidence) -> Self {
        let thread = if e.thread.name.is_empty() {
            format!("tid {}", e.thread.tid)
        } else {
            format!("{} (tid {})", e.thread.name, e.thread.tid)
        };
        Self {
            thread,
            cpu_percent: e.cpu_percent,
            stuck_for_ms: e.stuck_for_ms,
            spawn_location: e.spawn_location.clone(),
            frames: frames(&e.frames),
            hot_frames: e
                .hot_frames
                .iter()
                .map(|h| HotFrame {
                    frame: Frame::from(&h.frame),
                    samples: u64::from(h.samples),
                })
                .collect(),
            stack_samples: u64::from(e.stack_samples),
            samples: e
                .samples
                .iter()
                .map(|s| StackSample {
                    frames: frames(&s.frames),
                    count: u64::from(s.count),
                })
                .collect(),
            caveat: e.caveat.clone(),
            spans: e.spans.clone(),
            worker: (!e.event_loop).then_some((e.worker_index, e.runtime_id)),
        }
    }
}

impl LoopEvidence {
    /// The headline figures, as `(name, value)`: thread, its CPU, how long
    /// it has been stuck, how many samples, where the task was spawned.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            ("thread", self.thread.clone()),
            ("thread CPU", format!("{:.1}%", self.cpu_percent)),
            ("stuck for", format::duration_ms(self.stuck_for_ms as f64)),
        ];
        if self.stack_samples > 0 {
            facts.push(("stack samples", self.stack_samples.to_string()));
        }
        facts.extend(self.spawn_location.clone().map(|s| ("spawned at", s)));
        if !self.spans.is_empty() {
            facts.push(("inside spans", self.spans.join(" › ")));
        }
        facts
    }

    /// Whether the frame at `index` is one of the hot frames. When none of
    /// the hottest leaves is in the stack shown (the stack the samples
    /// share, whose leaves differ below it), or none is named, the hot one
    /// is the innermost of the service's own frames, the code the summary
    /// names and a person reads first; without one, the innermost frame,
    /// the deepest all samples were in.
    pub fn is_hot(&self, index: usize) -> bool {
        let Some(frame) = self.frames.get(index) else {
            return false;
        };
        let leaf = |f: &Frame| {
            self.hot_frames
                .iter()
                .any(|hot| hot.frame.function == f.function)
        };
        if !self.frames.iter().any(leaf) {
            let innermost_own = self.frames.iter().position(|f| f.own).unwrap_or(0);
            return index == innermost_own;
        }
        leaf(frame)
    }

    /// What the facts and the stack leave out: which worker of which
    /// runtime (nothing for an event loop's thread).
    pub(super) fn rest(&self) -> Vec<Section> {
        let Some((worker, runtime)) = self.worker else {
            return Vec::new();
        };
        vec![Section::Fields(vec![
            Field {
                name: "worker".to_owned(),
                value: worker.to_string(),
            },
            Field {
                name: "runtime".to_owned(),
                value: runtime.to_string(),
            },
        ])]
    }

    /// The samples, weighed by how many had each stack; without samples,
    /// each hot leaf on top of the common frames, weighed by its samples.
    pub(super) fn weighted_stacks(&self) -> Vec<(Vec<Frame>, u64)> {
        if !self.samples.is_empty() {
            return self
                .samples
                .iter()
                .filter(|s| !s.frames.is_empty())
                .map(|s| (s.frames.clone(), s.count.max(1)))
                .collect();
        }
        self.hot_frames
            .iter()
            .map(|hot| {
                let mut stack = vec![hot.frame.clone()];
                stack.extend(
                    self.frames
                        .iter()
                        .skip_while(|f| f.function == hot.frame.function)
                        .cloned(),
                );
                (stack, hot.samples.max(1))
            })
            .collect()
    }
}
