//! Turns the stack samples of one stuck period into the event's evidence:
//! the frames common to every sample, the hottest leaves, and what the
//! probe could not tell.

use std::collections::{HashMap, VecDeque};

use meshwatch_proto::v1::{Frame, HotFrame};

/// Samples kept per stuck period: the most recent ones.
pub(crate) const MAX_SAMPLES: usize = 16;
/// Common frames sent, innermost first.
const MAX_FRAMES: usize = 64;
/// Hot leaves sent.
const MAX_HOT: usize = 5;

/// The symbolized stack samples of one stuck period, leaf first each.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    stacks: VecDeque<Vec<Frame>>,
    /// Samples taken over the whole period, including those evicted.
    pub taken: u32,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
}

impl Samples {
    pub fn push(&mut self, stack: Vec<Frame>) {
        if self.stacks.len() >= MAX_SAMPLES {
            self.stacks.pop_front();
        }
        self.stacks.push_back(stack);
        self.taken = self.taken.saturating_add(1);
    }

    /// The frames every kept sample shares, innermost first. Stacks are
    /// compared from the thread's entry inward by function name, so a loop
    /// caught at different lines still counts as one frame (reported with
    /// the line of the latest sample).
    pub fn common_frames(&self) -> Vec<Frame> {
        let Some(latest) = self.stacks.back() else {
            return Vec::new();
        };
        let mut shared = latest.len();
        for stack in &self.stacks {
            let same = latest
                .iter()
                .rev()
                .zip(stack.iter().rev())
                .take_while(|(a, b)| a.function == b.function)
                .count();
            shared = shared.min(same);
        }
        let start = latest.len() - shared;
        latest[start..].iter().take(MAX_FRAMES).cloned().collect()
    }

    /// The leaf frames seen most often, hottest first.
    pub fn hot_frames(&self) -> Vec<HotFrame> {
        let mut counts: HashMap<&str, (u32, &Frame)> = HashMap::new();
        for leaf in self.stacks.iter().filter_map(|s| s.first()) {
            let entry = counts.entry(leaf.function.as_str()).or_insert((0, leaf));
            entry.0 += 1;
            entry.1 = leaf;
        }
        let mut hot: Vec<HotFrame> = counts
            .into_values()
            .map(|(samples, frame)| HotFrame {
                frame: Some(frame.clone()),
                samples,
            })
            .collect();
        hot.sort_by(|a, b| {
            b.samples.cmp(&a.samples).then_with(|| {
                let name = |h: &HotFrame| h.frame.as_ref().map(|f| f.function.clone());
                name(a).cmp(&name(b))
            })
        });
        hot.truncate(MAX_HOT);
        hot
    }
}

/// What stable signals cannot tell, said once per event.
pub(crate) const STABLE_RULE_CAVEAT: &str = "tokio publishes a worker's counters only every 61 scheduler ticks, so without --cfg tokio_unstable a run of long polls (up to 244 with LIFO wake-ups) looks like one stuck poll";

/// The event's caveat: the stable rule's limit, what the samples say about
/// it, and anything that went wrong.
/// Said instead of [`STABLE_RULE_CAVEAT`] when the task hooks timed the poll.
const EXACT_POLL: &str =
    "the task hooks (--cfg tokio_unstable) timed this poll: it is one poll, from its start";

pub(crate) fn caveat(samples: &Samples, common: &[Frame], extra: &[String], exact: bool) -> String {
    let mut parts = vec![
        if exact {
            EXACT_POLL
        } else {
            STABLE_RULE_CAVEAT
        }
        .to_owned(),
    ];
    let kept = samples.stacks.len();
    if kept >= 2 {
        if common.iter().any(|f| !f.is_runtime()) {
            parts.push(format!(
                "all {kept} stack samples share the service's frames below, consistent with one poll"
            ));
        } else {
            parts.push(format!(
                "the {kept} stack samples share no frame of the service's code, so this may be a run of long polls"
            ));
        }
    } else if kept == 1 {
        parts.push("one stack sample so far".to_owned());
    }
    if let Some(error) = &samples.last_error {
        parts.push(format!("stack capture failed: {error}"));
    }
    parts.extend(extra.iter().cloned());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, line: u32) -> Frame {
        Frame {
            function: function.to_owned(),
            file: "src/x.rs".to_owned(),
            line,
            address: u64::from(line),
        }
    }

    fn stack(names: &[(&str, u32)]) -> Vec<Frame> {
        names.iter().map(|&(n, l)| frame(n, l)).collect()
    }

    #[test]
    fn common_frames_match_by_function_from_the_root() {
        let mut samples = Samples::default();
        samples.push(stack(&[
            ("svc::next_token", 10),
            ("svc::parse", 30),
            ("svc::handler", 50),
            ("tokio::runtime::poll", 1),
        ]));
        samples.push(stack(&[
            ("svc::parse", 28),
            ("svc::handler", 50),
            ("tokio::runtime::poll", 1),
        ]));
        let common = samples.common_frames();
        let names: Vec<&str> = common.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            ["svc::parse", "svc::handler", "tokio::runtime::poll"]
        );
        assert_eq!(common[0].line, 28, "the latest sample's line");
        let caveat = caveat(&samples, &common, &[], false);
        assert!(caveat.contains("consistent with one poll"), "{caveat}");
    }

    #[test]
    fn hot_frames_count_leaves_and_samples_stay_bounded() {
        let mut samples = Samples::default();
        for i in 0..(MAX_SAMPLES as u32 + 4) {
            let leaf = if i % 4 == 0 { "svc::b" } else { "svc::a" };
            samples.push(stack(&[(leaf, i), ("tokio::x", 1)]));
        }
        assert_eq!(samples.taken, MAX_SAMPLES as u32 + 4);
        let hot = samples.hot_frames();
        assert_eq!(hot[0].frame.as_ref().unwrap().function, "svc::a");
        assert_eq!(hot[0].samples, 12);
        assert_eq!(hot[1].samples, 4);
        let common = samples.common_frames();
        assert_eq!(common.len(), 1);
        assert!(caveat(&samples, &common, &[], false).contains("may be a run of long polls"));
    }

    #[test]
    fn no_samples_give_no_frames_and_say_why() {
        let samples = Samples {
            last_error: Some("thread 7 did not answer".to_owned()),
            ..Samples::default()
        };
        assert!(samples.common_frames().is_empty());
        assert!(samples.hot_frames().is_empty());
        let caveat = caveat(&samples, &[], &["the thread is unknown".to_owned()], false);
        assert!(caveat.starts_with(STABLE_RULE_CAVEAT));
        assert!(
            caveat.contains("did not answer") && caveat.contains("unknown"),
            "{caveat}"
        );
    }
}
