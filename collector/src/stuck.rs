//! Stuck polls: turns the probes' `StuckPoll` events into `runaway_loop` and
//! `blocked_worker` incidents.
//!
//! The probe has already decided (it watches the worker from inside the
//! process); the collector opens the incident on the first event, refreshes
//! its evidence with each later one, and resolves it when the probe says the
//! poll returned or the instance goes down. The incident's key carries the
//! probe's period key, so two stuck workers of one instance are two
//! incidents, and a worker stuck again later is a new one.

use meshwatch_api::evidence::{HotFrame, StackSample, StuckPollEvidence, ThreadRef};
use meshwatch_proto::v1::{Frame, StuckPoll, StuckPollClass, StuckPollState};

use crate::incidents::{Evidence, Finding, IncidentBook, IncidentKey, IncidentKind, Severity};
use crate::stuck_samples::is_own;

/// Bytes of frame text (function and file names) one incident's evidence
/// keeps: a real stuck poll's common stack, hottest frames and distinct
/// samples hold some tens of kilobytes; a probe that sends the most its
/// messages may hold (a megabyte of names, event after event) cannot make
/// each of the thousand incidents the collector keeps as large.
const EVIDENCE_FRAME_BYTES: usize = 128 * 1024;

/// The bytes of frame names an incident's evidence holds: what makes a
/// stuck poll's evidence large (others hold a few figures).
pub(crate) fn evidence_frame_bytes(evidence: &Evidence) -> usize {
    let Evidence::StuckPoll(stuck) = evidence else {
        return 0;
    };
    stuck
        .frames
        .iter()
        .chain(stuck.hot_frames.iter().map(|h| &h.frame))
        .chain(stuck.samples.iter().flat_map(|s| &s.frames))
        .map(|f| f.function.len() + f.file.len() + std::mem::size_of::<u32>())
        .sum()
}

/// What a frame costs of [`EVIDENCE_FRAME_BYTES`]: its names and its line.
fn frame_cost(frame: &Frame) -> usize {
    frame.function.len() + frame.file.len() + std::mem::size_of::<u32>()
}

/// The frame text still allowed into one incident's evidence, spent on the
/// common stack first, then the hottest frames, then the samples.
#[derive(Debug)]
struct FrameBudget {
    left: usize,
    cut: bool,
}

impl FrameBudget {
    /// Takes `frames` whole if they fit what is left; else none of them,
    /// noting the cut (half a stack would mislead).
    fn take<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a Frame> + Clone,
    ) -> Option<Vec<meshwatch_api::Frame>> {
        let cost: usize = frames.clone().map(frame_cost).sum();
        if cost > self.left {
            self.cut = true;
            return None;
        }
        self.left -= cost;
        Some(frames.map(api_frame).collect())
    }
}

/// The incident kinds this module owns.
const KINDS: [IncidentKind; 2] = [IncidentKind::RunawayLoop, IncidentKind::BlockedWorker];

/// Applies one `StuckPoll` event of instance `instance` of `service`.
pub(crate) fn apply(
    book: &mut IncidentBook,
    service: &str,
    instance: &str,
    stuck: &StuckPoll,
    now_ms: i64,
) {
    let key = |kind| IncidentKey {
        kind,
        service: service.to_owned(),
        instance: Some(instance.to_owned()),
        detail: stuck.key.clone(),
    };
    match stuck.state() {
        StuckPollState::Recovered => {
            for kind in KINDS {
                book.resolve(&key(kind), now_ms);
            }
        }
        StuckPollState::Stuck | StuckPollState::StillStuck | StuckPollState::Unspecified => {
            let kind = kind_of(stuck.class());
            // A period keeps its class in the probe; should a probe change
            // it, the period is still one open incident.
            for other in KINDS.into_iter().filter(|k| *k != kind) {
                book.resolve(&key(other), now_ms);
            }
            let finding = finding(&kind, stuck);
            book.report(&key(kind), finding, now_ms);
        }
    }
}

/// Resolves the stuck-poll incidents of every instance for which `is_down`
/// holds: a process that died or went silent is no longer stuck.
pub(crate) fn resolve_down(
    book: &mut IncidentBook,
    is_down: impl Fn(&str) -> bool,
    now_ms: i64,
) -> usize {
    book.resolve_where(
        |key| KINDS.contains(&key.kind) && key.instance.as_deref().is_some_and(&is_down),
        now_ms,
    )
}

/// A stuck poll of unknown class is still a worker that runs no tasks.
fn kind_of(class: StuckPollClass) -> IncidentKind {
    match class {
        StuckPollClass::RunawayLoop => IncidentKind::RunawayLoop,
        StuckPollClass::BlockedWorker | StuckPollClass::Unspecified => IncidentKind::BlockedWorker,
    }
}

fn finding(kind: &IncidentKind, stuck: &StuckPoll) -> Finding {
    let thread = if stuck.thread_name.is_empty() {
        format!("thread {}", stuck.tid)
    } else {
        format!("thread {} ({})", stuck.tid, stuck.thread_name)
    };
    let what = match kind {
        IncidentKind::RunawayLoop => format!("spins at {:.0}% CPU", stuck.cpu_percent),
        _ => format!("is blocked at {:.0}% CPU", stuck.cpu_percent),
    };
    let place = match top_function(stuck) {
        Some(frame) => format!(" in {}", describe(frame)),
        None => String::new(),
    };
    let stuck_for_s = stuck.stuck_for_ms as f64 / 1000.0;
    let summary = if stuck.event_loop {
        format!("the event loop ({thread}) has not turned for {stuck_for_s:.1} s and {what}{place}")
    } else {
        format!(
            "a poll on worker {} ({thread}) has not returned for {stuck_for_s:.1} s and {what}{place}",
            stuck.worker_index,
        )
    };
    Finding {
        severity: Severity::Critical,
        summary,
        evidence: evidence(stuck),
    }
}

/// The innermost frame of the service's own code: common to every sample
/// when there is one, else the hottest leaf of the service's own (samples
/// of one spin can differ below it: a JIT compiling the loop midway, a
/// clock read in the C library).
fn top_function(stuck: &StuckPoll) -> Option<&Frame> {
    stuck.frames.iter().find(|f| is_own(f)).or_else(|| {
        stuck
            .hot_frames
            .iter()
            .filter_map(|h| h.frame.as_ref())
            .find(|f| is_own(f))
    })
}

fn describe(frame: &Frame) -> String {
    let file = frame.file.rsplit('/').next().unwrap_or_default();
    if file.is_empty() {
        frame.function.clone()
    } else {
        format!("{} ({file}:{})", frame.function, frame.line)
    }
}

/// A wire frame as the API's.
pub(crate) fn api_frame(frame: &Frame) -> meshwatch_api::Frame {
    meshwatch_api::Frame {
        function: frame.function.clone(),
        file: frame.file.clone(),
        line: frame.line,
    }
}

fn evidence(stuck: &StuckPoll) -> Evidence {
    let mut budget = FrameBudget {
        left: EVIDENCE_FRAME_BYTES,
        cut: false,
    };
    // The common stack, innermost first, as far as it fits.
    let mut frames = Vec::new();
    for frame in &stuck.frames {
        match budget.take(std::iter::once(frame)) {
            Some(taken) => frames.extend(taken),
            None => break,
        }
    }
    let hot_frames = stuck
        .hot_frames
        .iter()
        .filter_map(|h| {
            let frame = h.frame.as_ref()?;
            let taken = budget.take(std::iter::once(frame))?;
            Some(HotFrame {
                frame: taken.into_iter().next()?,
                samples: h.samples,
            })
        })
        .collect();
    let samples = stuck
        .named_samples
        .iter()
        .filter_map(|s| {
            Some(StackSample {
                frames: budget.take(s.frames.iter())?,
                count: s.count,
            })
        })
        .collect();
    let mut caveat = stuck.caveat.clone();
    if budget.cut {
        if !caveat.is_empty() {
            caveat.push(' ');
        }
        caveat.push_str(&format!(
            "The stacks were cut to {} KiB of names; the rest is left out.",
            EVIDENCE_FRAME_BYTES / 1024
        ));
    }
    Evidence::StuckPoll(StuckPollEvidence {
        thread: ThreadRef {
            tid: stuck.tid,
            name: stuck.thread_name.clone(),
        },
        runtime_id: stuck.runtime_id,
        worker_index: stuck.worker_index,
        event_loop: stuck.event_loop,
        cpu_percent: stuck.cpu_percent,
        stuck_for_ms: stuck.stuck_for_ms,
        spawn_location: (!stuck.spawn_location.is_empty()).then(|| stuck.spawn_location.clone()),
        frames,
        hot_frames,
        stack_samples: stuck.stack_samples,
        samples,
        caveat: (!caveat.is_empty()).then_some(caveat),
        key: stuck.key.clone(),
        spans: stuck.spans.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::incidents::StateFilter;
    use crate::stuck_samples::tests::frame;
    use meshwatch_proto::v1::HotFrame;

    fn event(key: &str, state: StuckPollState, class: StuckPollClass) -> StuckPoll {
        StuckPoll {
            key: key.to_owned(),
            state: state.into(),
            class: class.into(),
            worker_index: 1,
            tid: 42,
            thread_name: "tokio-rt-worker".to_owned(),
            stuck_for_ms: 1500,
            cpu_percent: 99.0,
            frames: vec![
                frame("core::str::whatever", 3),
                frame("svc::parse_records", 40),
                frame("tokio::runtime::task::poll", 9),
            ],
            hot_frames: vec![HotFrame {
                frame: Some(frame("core::str::whatever", 3)),
                samples: 4,
            }],
            stack_samples: 4,
            caveat: "may be a run".to_owned(),
            ..StuckPoll::default()
        }
    }

    #[test]
    fn evidence_keeps_the_innermost_frames_within_its_budget_and_says_so() {
        let mut fat = event("k", StuckPollState::Stuck, StuckPollClass::RunawayLoop);
        let name = "f".repeat(1000);
        fat.frames = (0..256)
            .map(|line| frame(&format!("{line}{name}"), line))
            .collect();
        fat.hot_frames = fat.frames[..64]
            .iter()
            .map(|f| HotFrame {
                frame: Some(f.clone()),
                samples: 1,
            })
            .collect();
        let Evidence::StuckPoll(kept) = evidence(&fat) else {
            panic!("stuck-poll evidence");
        };
        let bytes: usize = kept
            .frames
            .iter()
            .chain(kept.hot_frames.iter().map(|h| &h.frame))
            .map(|f| f.function.len() + f.file.len())
            .sum();
        assert!(bytes <= EVIDENCE_FRAME_BYTES, "{bytes} bytes kept");
        assert!(kept.frames.len() > 64, "{} frames kept", kept.frames.len());
        assert_eq!(kept.frames[0].line, 0, "innermost first");
        assert!(
            kept.caveat
                .as_deref()
                .unwrap_or_default()
                .contains("cut to 128 KiB")
        );

        let Evidence::StuckPoll(slim) = evidence(&event(
            "k",
            StuckPollState::Stuck,
            StuckPollClass::RunawayLoop,
        )) else {
            panic!("stuck-poll evidence");
        };
        assert_eq!(slim.frames.len(), 3, "a real stack is kept whole");
        assert!(
            !slim.caveat.unwrap_or_default().contains("cut to"),
            "nothing cut"
        );

        assert!(evidence_frame_bytes(&Evidence::StuckPoll(kept)) <= EVIDENCE_FRAME_BYTES);
    }

    #[test]
    fn resolved_incidents_keep_a_bounded_total_of_frame_names() {
        let mut book = IncidentBook::default();
        let name = "f".repeat(1000);
        for n in 0..600 {
            let mut fat = event(
                &format!("k{n}"),
                StuckPollState::Stuck,
                StuckPollClass::RunawayLoop,
            );
            fat.frames = (0..256)
                .map(|line| frame(&format!("{line}{name}"), line))
                .collect();
            apply(&mut book, "svc", "i1", &fat, n);
            let recovered = event(
                &format!("k{n}"),
                StuckPollState::Recovered,
                StuckPollClass::RunawayLoop,
            );
            apply(&mut book, "svc", "i1", &recovered, n);
        }
        let resolved = book.list(StateFilter::Resolved);
        let bytes: usize = resolved
            .iter()
            .map(|i| evidence_frame_bytes(&i.evidence))
            .sum();
        assert!(bytes <= 32 * 1024 * 1024, "{bytes} bytes kept");
        assert!(resolved.len() >= 200, "{} kept", resolved.len());
        assert!(resolved.len() < 600, "the oldest went");
        assert_eq!(
            resolved.last().unwrap().opened_at_ms,
            599,
            "the newest stay"
        );
    }

    #[test]
    fn opens_refreshes_and_resolves_a_runaway_loop() {
        let mut book = IncidentBook::default();
        let stuck = event("k1", StuckPollState::Stuck, StuckPollClass::RunawayLoop);
        apply(&mut book, "svc", "i1", &stuck, 10);
        let open = book.list(StateFilter::Open);
        assert_eq!(open.len(), 1);
        let incident = open[0];
        assert_eq!(incident.kind, IncidentKind::RunawayLoop);
        assert!(
            incident
                .summary
                .contains("svc::parse_records (loop_parser.rs:40)"),
            "{}",
            incident.summary
        );
        assert!(incident.summary.contains("99% CPU"), "{}", incident.summary);
        let Evidence::StuckPoll(evidence) = &incident.evidence else {
            panic!("stuck poll evidence");
        };
        assert_eq!(evidence.thread.tid, 42);
        assert_eq!(evidence.frames[1].function, "svc::parse_records");
        assert_eq!(evidence.hot_frames[0].samples, 4);
        assert_eq!(evidence.spawn_location, None);
        assert_eq!(evidence.caveat.as_deref(), Some("may be a run"));

        let mut still = event(
            "k1",
            StuckPollState::StillStuck,
            StuckPollClass::RunawayLoop,
        );
        still.stuck_for_ms = 2500;
        apply(&mut book, "svc", "i1", &still, 20);
        let open = book.list(StateFilter::Open);
        assert_eq!(open.len(), 1);
        let Evidence::StuckPoll(evidence) = &open[0].evidence else {
            panic!("stuck poll evidence");
        };
        assert_eq!(evidence.stuck_for_ms, 2500);
        assert_eq!(open[0].last_seen_at_ms, 20);

        let recovered = event("k1", StuckPollState::Recovered, StuckPollClass::RunawayLoop);
        apply(&mut book, "svc", "i1", &recovered, 30);
        assert!(book.list(StateFilter::Open).is_empty());
        assert_eq!(book.list(StateFilter::Resolved)[0].resolved_at_ms, Some(30));
    }

    #[test]
    fn blocked_workers_and_instances_going_down() {
        let mut book = IncidentBook::default();
        let mut blocked = event("k2", StuckPollState::Stuck, StuckPollClass::BlockedWorker);
        blocked.cpu_percent = 0.0;
        blocked.frames.clear();
        blocked.hot_frames.clear();
        apply(&mut book, "svc", "i1", &blocked, 10);
        apply(
            &mut book,
            "svc",
            "i2",
            &event("k3", StuckPollState::Stuck, StuckPollClass::Unspecified),
            10,
        );
        let open = book.list(StateFilter::Open);
        assert!(open.iter().all(|i| i.kind == IncidentKind::BlockedWorker));
        assert!(
            open[0].summary.ends_with("is blocked at 0% CPU"),
            "{}",
            open[0].summary
        );
        assert_eq!(resolve_down(&mut book, |i| i == "i1", 20), 1);
        let open = book.list(StateFilter::Open);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].instance.as_deref(), Some("i2"));
    }
}
