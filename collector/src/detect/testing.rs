//! Synthetic windows for the detectors' table tests: ten minutes of one
//! point a second per series, each series a function of time.

use std::collections::BTreeMap;

use super::{InstanceWindow, Window};
use crate::registry::InstanceState;
use crate::series::Metric;

/// The window's span, matching `LeakSettings::default().window`.
pub const SPAN_MS: i64 = 10 * 60 * 1000;
/// The present of every synthetic window.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// A series valued `f(t)`, with `t` in ms since the window opened.
pub type SeriesFn<'f> = &'f dyn Fn(i64) -> f64;

/// An up instance with one point a second of each series over the span.
pub fn instance(id: &'static str, series: &[(Metric, SeriesFn<'_>)]) -> InstanceWindow<'static> {
    let start = NOW_MS - SPAN_MS;
    let series = series
        .iter()
        .map(|&(metric, f)| {
            let points = (0..=SPAN_MS / 1000)
                .map(|s| (start + s * 1000, f(s * 1000)))
                .collect();
            (metric, points)
        })
        .collect::<BTreeMap<_, _>>();
    InstanceWindow {
        instance_id: id,
        started_at_ms: start,
        last_seen_ms: NOW_MS,
        state: InstanceState::Up,
        ending: None,
        restarts: 0,
        series,
        heap_sites: Vec::new(),
        latest: None,
        long: None,
    }
}

/// A window of service `svc` over the span, with no incident open.
pub fn window(instances: Vec<InstanceWindow<'static>>) -> Window<'static> {
    Window {
        service: "svc",
        now_ms: NOW_MS,
        span_ms: SPAN_MS,
        open: false,
        open_kinds: Vec::new(),
        long_due: true,
        instances,
    }
}
