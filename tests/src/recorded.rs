//! Incidents recorded from real services, for the TUI's snapshot tests.
//!
//! The TUI draws its incident screens and the report from what the collector
//! serves. Fixtures written by hand agree with the screens that read them but
//! not necessarily with the collector, so the screens are also tested on
//! recordings: what the API served about one real incident, taken by the
//! end-to-end test that caused it, kept in `tui/tests/recorded/NAME.json`.
//!
//! Each run of those end-to-end tests records the incident afresh and checks
//! that the collector still serves nothing the kept recording lacks: a field
//! added to the evidence fails here until the recording is taken again with
//! `MESHWATCH_UPDATE_RECORDINGS=1`, so the snapshots never fall behind what
//! a person would see.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::Collector;

/// The series kept with a recording: every metric the TUI charts.
const METRICS: [&str; 8] = [
    "cpu_percent",
    "rss_bytes",
    "heap_live_bytes",
    "tasks_alive",
    "fds_open",
    "tcp_established",
    "tcp_close_wait",
    "threads",
];

/// History kept before the incident opened: the report's margin and the
/// longest detector window the screens mark.
const BEFORE_MS: i64 = 15 * 60_000;

/// The environment variable that makes the tests write their recordings.
const UPDATE: &str = "MESHWATCH_UPDATE_RECORDINGS";

/// Where recording `name` is kept.
fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tui/tests/recorded")
        .join(format!("{name}.json"))
}

/// Records what `collector` serves about `incident` now (the incident, its
/// service's instances and their history) as recording `name`; writes it
/// when `MESHWATCH_UPDATE_RECORDINGS` is set, else checks the kept one still
/// has every field the collector served.
pub fn keep(collector: &Collector, name: &str, incident: &Value) {
    let fresh = record(collector, incident);
    let file = path(name);
    if std::env::var_os(UPDATE).is_some() {
        let text = serde_json::to_string_pretty(&fresh).expect("a recording serializes");
        std::fs::write(&file, text + "\n")
            .unwrap_or_else(|err| panic!("writing {}: {err}", file.display()));
        return;
    }
    let kept: Value = std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| {
            panic!(
                "no readable recording {}: take it with {UPDATE}=1",
                file.display()
            )
        });
    let missing = unknown_paths(&fresh["incident"], &kept["incident"]);
    assert!(
        missing.is_empty(),
        "the collector now serves {missing:?} in a {name} incident, which {} lacks: \
         take the recording again with {UPDATE}=1 and review the TUI's snapshots",
        file.display()
    );
}

/// The recording: the incident as served now, the instances of its service,
/// and each charted metric of that service from before the incident to now.
fn record(collector: &Collector, incident: &Value) -> Value {
    let at_ms = now_ms();
    let id = &incident["id"];
    let incidents = collector.get_json("/api/v1/incidents");
    let current = incidents["incidents"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["id"] == *id))
        .cloned()
        .unwrap_or_else(|| panic!("incident {id} is no longer served"));
    let service = current["service"].as_str().expect("an incident's service");
    let instances: Vec<Value> = collector
        .instances()
        .into_iter()
        .filter(|i| i["service"] == service)
        .collect();
    let from_ms = current["opened_at_ms"].as_i64().unwrap_or(at_ms) - BEFORE_MS;
    let mut series = Map::new();
    for metric in METRICS {
        let body = collector.get_json(&format!(
            "/api/v1/series?service={service}&metric={metric}&from={from_ms}&to={at_ms}"
        ));
        series.insert(metric.to_owned(), body["series"].clone());
    }
    json!({
        "at_ms": at_ms,
        "incident": current,
        "instances": instances,
        "series": series,
    })
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970");
    i64::try_from(since.as_millis()).expect("a time in range")
}

/// The paths of `fresh` that `kept` does not have. Arrays stand for their
/// elements (`frames[]`), and a field the recording holds as null or as an
/// empty array stands for whatever it could hold: an incident's optional
/// parts come and go between runs.
fn unknown_paths(fresh: &Value, kept: &Value) -> Vec<String> {
    let mut known = BTreeSet::new();
    let mut open = BTreeSet::new();
    paths(kept, String::new(), &mut |path, value| {
        let is_open = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if is_open {
            open.insert(path.clone());
        }
        known.insert(path);
    });
    let mut missing = BTreeSet::new();
    paths(fresh, String::new(), &mut |path, _| {
        let within = |o: &String| {
            path.strip_prefix(o.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
        };
        let covered = known.contains(&path) || open.iter().any(within);
        if !covered {
            missing.insert(path);
        }
    });
    missing.into_iter().collect()
}

/// Calls `each` with the path of every value within `value`.
fn paths(value: &Value, at: String, each: &mut impl FnMut(String, &Value)) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                paths(field, path, each);
            }
        }
        Value::Array(items) => {
            for item in items {
                paths(item, format!("{at}[]"), each);
            }
        }
        _ => {}
    }
    each(at, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_the_recording_lacks_is_named_and_optional_parts_may_fill_in() {
        let kept = json!({
            "kind": "runaway_loop",
            "evidence": {"frames": [{"function": "f"}], "thread": null, "spans": []},
        });
        let same_shape = json!({
            "kind": "runaway_loop",
            "evidence": {
                "frames": [{"function": "g"}, {"function": "h"}],
                "thread": {"tid": 7, "name": "tokio-rt-worker"},
                "spans": ["request{id=1}"],
            },
        });
        assert!(unknown_paths(&same_shape, &kept).is_empty());
        let grown = json!({
            "kind": "runaway_loop",
            "evidence": {
                "frames": [{"function": "g", "inlined": true}],
                "hot": 0,
                "thread_name": "w",
            },
        });
        assert_eq!(
            unknown_paths(&grown, &kept),
            [
                "evidence.frames[].inlined",
                "evidence.hot",
                "evidence.thread_name"
            ]
        );
    }
}
