//! The evidence a stuck poll's stack samples give, once named: the frames
//! every sample shares, the hottest leaves, and whether the samples agree on
//! the service's code.
//!
//! The probe sends raw samples; this runs after [`crate::naming`] has named
//! them. Comparing by function name rather than by address is what lets a
//! loop caught at different instructions still count as one frame.

use std::collections::HashMap;

use meshwatch_proto::v1::{Frame, HotFrame, NamedStack, StuckPoll};

/// Common frames kept, innermost first.
const MAX_FRAMES: usize = 64;
/// Hot leaves kept.
const MAX_HOT: usize = 5;

/// Whether a frame is the service's own code (see [`meshwatch_api::own_code`]).
pub(crate) fn is_own(frame: &Frame) -> bool {
    meshwatch_api::own_code::is_own_code(&frame.function, &frame.file)
}

/// Fills a stuck poll's `frames` and `hot_frames` from its named samples
/// (oldest first, each leaf first), and adds to its caveat what the samples
/// say about the rule that flagged it.
pub(crate) fn add_evidence(stuck: &mut StuckPoll, samples: &[Vec<Frame>]) {
    stuck.frames = common_frames(samples);
    stuck.hot_frames = hot_frames(samples);
    stuck.named_samples = distinct_stacks(samples);
    let kept = samples.len();
    // What one unit of work is: a tokio worker's poll, or an event loop's
    // callback.
    let unit = if stuck.event_loop { "callback" } else { "poll" };
    let unnamed = |f: &Frame| crate::naming::is_unnamed(&f.function);
    // The probe keeps the latest samples of a long stall, and counts all.
    let taken = stuck.stack_samples as usize;
    let (all, these) = if taken > kept {
        (
            format!("the latest {kept} of {taken} stack samples"),
            format!("the latest {kept} of {taken} stack samples"),
        )
    } else {
        (
            format!("all {kept} stack samples"),
            format!("the {kept} stack samples"),
        )
    };
    let agreement = if kept >= 2 {
        if stuck.frames.iter().any(is_own) {
            format!("{all} share the service's frames below, consistent with one {unit}")
        } else if samples.iter().flatten().any(unnamed) {
            format!(
                "{these} could not all be named (give the collector the binary's debug info with --debuginfo-dir), so whether they share the service's code is unknown"
            )
        } else {
            format!(
                "{these} share no frame of the service's code, so this may be a run of long {unit}s"
            )
        }
    } else if kept == 1 {
        "one stack sample so far".to_owned()
    } else {
        return;
    };
    stuck.caveat = if stuck.caveat.is_empty() {
        agreement
    } else {
        format!("{}; {agreement}", stuck.caveat)
    };
}

/// The frames every sample shares, innermost first, compared from the
/// thread's entry inward by function name (reported with the latest
/// sample's line).
fn common_frames(samples: &[Vec<Frame>]) -> Vec<Frame> {
    let Some(latest) = samples.last() else {
        return Vec::new();
    };
    let shared = samples
        .iter()
        .map(|stack| {
            latest
                .iter()
                .rev()
                .zip(stack.iter().rev())
                .take_while(|(a, b)| a.function == b.function)
                .count()
        })
        .min()
        .unwrap_or(0);
    let start = latest.len() - shared;
    latest[start..].iter().take(MAX_FRAMES).cloned().collect()
}

/// Each distinct stack of the samples (by function, innermost first) once,
/// with how many samples had it, most first: what a flame graph is drawn
/// from. A stack shows the latest of its samples' lines.
fn distinct_stacks(samples: &[Vec<Frame>]) -> Vec<NamedStack> {
    let mut stacks: Vec<NamedStack> = Vec::new();
    for sample in samples.iter().filter(|s| !s.is_empty()) {
        let same = |stack: &&mut NamedStack| {
            stack.frames.len() == sample.len()
                && stack
                    .frames
                    .iter()
                    .zip(sample)
                    .all(|(a, b)| a.function == b.function)
        };
        match stacks.iter_mut().find(same) {
            Some(stack) => {
                stack.count += 1;
                stack.frames.clone_from(sample);
            }
            None => stacks.push(NamedStack {
                frames: sample.clone(),
                count: 1,
            }),
        }
    }
    stacks.sort_by_key(|s| std::cmp::Reverse(s.count));
    stacks
}

/// The leaf functions seen most often, hottest first.
fn hot_frames(samples: &[Vec<Frame>]) -> Vec<HotFrame> {
    let mut counts: HashMap<&str, (u32, &Frame)> = HashMap::new();
    for leaf in samples.iter().filter_map(|s| s.first()) {
        let entry = counts.entry(leaf.function.as_str()).or_insert((0, leaf));
        entry.0 += 1;
        entry.1 = leaf;
    }
    let mut hot: Vec<(u32, &Frame)> = counts.into_values().collect();
    hot.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.function.cmp(&b.1.function)));
    hot.into_iter()
        .take(MAX_HOT)
        .map(|(samples, frame)| HotFrame {
            frame: Some(frame.clone()),
            samples,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A frame as the collector names it from a binary's debug info: the
    /// service's own (`svc::…`) in its source tree, any other under the
    /// toolchain's sources.
    pub(crate) fn frame(function: &str, line: u32) -> Frame {
        let file = if function.starts_with("svc::") {
            "/src/examples/src/faults/loop_parser.rs"
        } else {
            "/rustc/59807616e/library/core/src/lib.rs"
        };
        Frame {
            function: function.to_owned(),
            file: file.to_owned(),
            line,
            address: u64::from(line),
        }
    }

    fn stack(names: &[(&str, u32)]) -> Vec<Frame> {
        names.iter().map(|&(n, l)| frame(n, l)).collect()
    }

    fn stuck(samples: &[Vec<Frame>]) -> StuckPoll {
        let mut stuck = StuckPoll {
            caveat: "the rule".to_owned(),
            ..StuckPoll::default()
        };
        add_evidence(&mut stuck, samples);
        stuck
    }

    #[test]
    fn common_frames_match_by_function_from_the_root() {
        let samples = [
            stack(&[
                ("svc::next_token", 10),
                ("svc::parse", 30),
                ("svc::handler", 50),
                ("tokio::runtime::poll", 1),
            ]),
            stack(&[
                ("svc::parse", 28),
                ("svc::handler", 50),
                ("tokio::runtime::poll", 1),
            ]),
        ];
        let stuck = stuck(&samples);
        let names: Vec<&str> = stuck.frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            ["svc::parse", "svc::handler", "tokio::runtime::poll"]
        );
        assert_eq!(stuck.frames[0].line, 28, "the latest sample's line");
        assert!(
            stuck.caveat.starts_with("the rule; all 2"),
            "{}",
            stuck.caveat
        );
        assert!(stuck.caveat.contains("consistent with one poll"));
        // A long stall: the probe kept the latest samples of many.
        let mut long = StuckPoll {
            stack_samples: 66,
            ..StuckPoll::default()
        };
        add_evidence(&mut long, &samples);
        assert!(
            long.caveat
                .starts_with("the latest 2 of 66 stack samples share"),
            "{}",
            long.caveat
        );
    }

    #[test]
    fn hot_frames_count_leaves_and_runtime_only_samples_say_so() {
        let samples: Vec<Vec<Frame>> = (0..16)
            .map(|i| {
                let leaf = if i % 4 == 0 { "svc::b" } else { "svc::a" };
                stack(&[(leaf, i), ("tokio::x", 1)])
            })
            .collect();
        let stuck = stuck(&samples);
        assert_eq!(
            stuck.hot_frames[0].frame.as_ref().unwrap().function,
            "svc::a"
        );
        assert_eq!(stuck.hot_frames[0].samples, 12);
        assert_eq!(stuck.hot_frames[1].samples, 4);
        // Two distinct stacks, whatever their lines: 12 and 4 samples.
        let counts: Vec<u32> = stuck.named_samples.iter().map(|s| s.count).collect();
        assert_eq!(counts, [12, 4]);
        assert_eq!(stuck.named_samples[0].frames[0].function, "svc::a");
        assert_eq!(stuck.named_samples[0].frames[0].line, 15, "the latest line");
        assert_eq!(stuck.frames.len(), 1);
        assert!(
            stuck.caveat.contains("may be a run of long polls"),
            "{}",
            stuck.caveat
        );
    }

    #[test]
    fn unnamed_samples_do_not_pass_for_a_run_of_polls() {
        let samples = [
            stack(&[("svc+0x1a2b", 0), ("libc.so.6+0x29d90", 0)]),
            stack(&[("svc+0x1a40", 0), ("libc.so.6+0x29d90", 0)]),
        ];
        let stuck = stuck(&samples);
        assert!(
            stuck.caveat.contains("could not all be named"),
            "{}",
            stuck.caveat
        );
        assert!(!stuck.caveat.contains("run of long polls"));
    }

    #[test]
    fn no_samples_leave_the_event_as_it_was() {
        let stuck = stuck(&[]);
        assert!(stuck.frames.is_empty() && stuck.hot_frames.is_empty());
        assert_eq!(stuck.caveat, "the rule");
    }
}
