//! The incident screens drawn from incidents recorded from real services
//! ([`crate::recorded`]), at the sizes they are read at during an incident:
//! a laptop's 80x24 terminal and a larger 120x36 one.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

use super::app::{App, Detail, Flow};
use super::fetch::{Data, Message};
use super::input::Intent;
use super::tests::screen;
use crate::recorded::{self, Recording};

/// The sizes every screen is checked at.
const SIZES: [(u16, u16); 2] = [(80, 24), (120, 36)];

/// An app showing `recording`'s incident in its detail, with the history
/// its charts ask for.
fn incident_open(recording: &Recording) -> App {
    let mut app = App::new("http://127.0.0.1:6741", recording.at_ms);
    let data = Data {
        at_ms: recording.at_ms,
        instances: recording.instances.clone(),
        incidents: vec![recording.incident.clone()],
        ..Data::default()
    };
    app.on_message(Message::Fetched(Box::new(data)));
    for intent in [Intent::ShowIncidents, Intent::Open] {
        assert_eq!(app.apply(intent), Flow::Continue);
    }
    assert!(
        matches!(app.details.last(), Some(Detail::Incident(d)) if d.id == recording.incident.id),
        "{}: the incident did not open",
        recording.name
    );
    fill(&mut app, recording);
    app
}

/// Gives the app every series it wants from the recording, as the fetcher
/// would from the collector.
fn fill(app: &mut App, recording: &Recording) {
    for req in app.wants() {
        let series = recording.series(req.metric, req.window.range(recording.at_ms));
        app.data.series.insert(req, series);
    }
}

/// Every key of the evidence that is an identifier rather than a word
/// (`stuck_for_ms`, `growth_bytes_per_hour`): none may reach the screen,
/// where each figure has a label.
fn raw_keys(evidence: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    let mut stack = vec![evidence];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(fields) => {
                keys.extend(fields.keys().filter(|k| k.contains('_')).cloned());
                stack.extend(fields.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn every_recorded_incident_reads_at_80x24_and_120x36() {
    let mut problems = Vec::new();
    for recording in recorded::all() {
        let app = incident_open(&recording);
        let evidence = serde_json::to_value(&recording.incident.evidence).unwrap();
        let has_stack = evidence
            .get("frames")
            .and_then(Value::as_array)
            .is_some_and(|frames| !frames.is_empty());
        for (width, height) in SIZES {
            let shown = screen(&app, width, height);
            let name = format!("recorded_{}_{width}x{height}", recording.name);
            insta::assert_snapshot!(name, shown);
            let mut problem = |what: String| {
                problems.push(format!("{} at {width}x{height}: {what}", recording.name));
            };
            for key in raw_keys(&evidence) {
                if shown.contains(&key) {
                    problem(format!("the raw key {key} is shown"));
                }
            }
            for path in ["/.cargo/registry/", "/rustc/"] {
                if shown.contains(path) {
                    problem(format!("a whole {path} path is shown"));
                }
            }
            if has_stack && !shown.contains('▶') {
                problem("no hot frame is marked".to_owned());
            }
            let charted = !crate::model::incident_charts(&recording.incident).is_empty();
            if charted && !shown.contains("opened") {
                problem("the chart does not mark the opening".to_owned());
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_recorded_stack_unfolds_with_every_library_frame_on_one_line_of_its_own() {
    let recording = recorded::all()
        .into_iter()
        .find(|r| r.name == "runaway_loop")
        .unwrap();
    let mut app = incident_open(&recording);
    assert_eq!(app.apply(Intent::Fold), Flow::Continue);
    let (width, height) = (120, 60);
    let shown = screen(&app, width, height);
    insta::assert_snapshot!("recorded_runaway_loop_unfolded_120x60", shown);
    // tokio's and std's frames are back, each with its path from its crate.
    assert!(shown.contains("tokio-1.54.1/"), "{shown}");
    assert!(shown.contains("std/src/"), "{shown}");
    assert!(!shown.contains("frames of"), "nothing folded: {shown}");
    // Every frame row keeps to its line: it starts with a number.
    let frame_rows = shown
        .lines()
        .map(|l| l.trim_matches('"'))
        .skip_while(|l| !l.starts_with("stack, innermost first"))
        .skip(1)
        .take_while(|l| !l.starts_with("hottest leaves") && !l.starts_with(" ↑↓"))
        .collect::<Vec<_>>();
    assert!(frame_rows.len() > 20, "{shown}");
    for row in frame_rows {
        let number: String = row.chars().skip(1).take(3).collect();
        assert!(
            number.trim().parse::<usize>().is_ok(),
            "a wrapped frame: {row:?}"
        );
    }
}
