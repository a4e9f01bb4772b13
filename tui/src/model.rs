//! The mesh as the TUI and the report see it.
//!
//! The collector's typed views ([`InstanceView`], [`Incident`]) carry what
//! this build knows. A newer collector may add figures to an instance's
//! headline (socket counts, say) or whole sections (heap sites); those are
//! kept by name, so a column or a chart that names them shows them as soon as
//! they arrive, and unknown sections are shown generically.

use meshwatch_api::{Incident, IncidentKind, InstanceState, InstanceView, Severity};
pub use meshwatch_api::{InstanceSeries, Point};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::format;

/// One instance, as typed view plus everything the collector said about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The fields this build knows.
    pub view: InstanceView,
    /// The headline's figures by name, including ones this build has no
    /// field for.
    pub figures: Map<String, Value>,
    /// Top-level sections this build has no view for, in the API's order.
    pub extra: Vec<(String, Value)>,
    /// Which of the mesh's collectors reported it (its place in the list
    /// given, from 0): where requests about it go.
    pub collector: usize,
}

impl Instance {
    /// Reads one element of `/api/v1/services`.
    pub fn from_json(value: Value) -> Result<Self, serde_json::Error> {
        let view = InstanceView::deserialize(&value)?;
        let known = serde_json::to_value(&view)?;
        let figures = value
            .get("headline")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let extra = match value {
            Value::Object(map) => map
                .into_iter()
                .filter(|(key, value)| known.get(key).is_none() && !value.is_null())
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            view,
            figures,
            extra,
            collector: 0,
        })
    }

    /// A headline figure by its API name, `None` when unknown.
    pub fn figure(&self, name: &str) -> Option<f64> {
        self.figures.get(name).and_then(Value::as_f64)
    }

    /// How much attention the instance needs: open critical incidents first,
    /// then warnings, then instances that are down, then healthy ones.
    pub fn urgency(&self) -> u8 {
        let incidents = self
            .view
            .open_incidents
            .iter()
            .map(|i| severity_rank(i.severity))
            .max()
            .unwrap_or(0);
        let down = u8::from(self.view.state == InstanceState::Down);
        incidents.max(down)
    }

    /// The first 8 characters of the instance id, enough to tell instances apart.
    pub fn short_id(&self) -> String {
        self.view.instance_id.chars().take(8).collect()
    }
}

/// Orders severities for sorting: critical above warning above nothing; a
/// severity from a newer collector counts as a warning.
pub fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Warning | Severity::Unknown => 2,
        Severity::Critical => 3,
    }
}

/// The lowercase name of a severity.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
        Severity::Unknown => "unknown",
    }
}

/// An incident's kind as the API spells it, e.g. `runaway_loop`.
pub fn kind_name(incident: &Incident) -> &str {
    incident.kind.as_str()
}

/// How a metric's values read to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Sizes: `30.0 MiB`.
    Bytes,
    /// Percent of one core: `12.5%`.
    Percent,
    /// Plain counts.
    Count,
}

impl Unit {
    /// A value in this unit, short enough for a table cell or an axis.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Bytes => format::bytes_short(value),
            Unit::Percent => format!("{value:.1}%"),
            Unit::Count => format!("{value:.0}"),
        }
    }
}

/// A chart of one or more metrics sharing a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartSpec {
    /// Shown above the chart.
    pub title: &'static str,
    /// The unit of every metric in it.
    pub unit: Unit,
    /// The metrics drawn, each one line.
    pub metrics: &'static [ChartMetric],
}

/// One line of a chart: which metric, and what the legend calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartMetric {
    /// The metric's name in `/api/v1/series`.
    pub name: &'static str,
    /// The legend's word for it: a person reads "RSS", not `rss_bytes`.
    pub label: &'static str,
}

const fn line(name: &'static str, label: &'static str) -> ChartMetric {
    ChartMetric { name, label }
}

/// Process CPU.
pub const CPU: ChartSpec = ChartSpec {
    title: "CPU",
    unit: Unit::Percent,
    metrics: &[line("cpu_percent", "CPU")],
};
/// Resident memory and the allocator's live bytes.
pub const MEMORY: ChartSpec = ChartSpec {
    title: "memory",
    unit: Unit::Bytes,
    metrics: &[line("rss_bytes", "RSS"), line("heap_live_bytes", "heap")],
};
/// Alive tokio tasks.
pub const TASKS: ChartSpec = ChartSpec {
    title: "tasks",
    unit: Unit::Count,
    metrics: &[line("tasks_alive", "alive")],
};
/// Open file descriptors.
pub const FDS: ChartSpec = ChartSpec {
    title: "file descriptors",
    unit: Unit::Count,
    metrics: &[line("fds_open", "open")],
};
/// TCP sockets by state.
pub const SOCKETS: ChartSpec = ChartSpec {
    title: "sockets",
    unit: Unit::Count,
    metrics: &[
        line("tcp_established", "established"),
        line("tcp_close_wait", "CLOSE_WAIT"),
    ],
};
/// OS threads.
pub const THREADS: ChartSpec = ChartSpec {
    title: "threads",
    unit: Unit::Count,
    metrics: &[line("threads", "threads")],
};

/// The history charts of a service, most telling first. A chart whose
/// metrics the collector does not serve is left out, so adding one here is
/// all a new metric needs.
pub const SERVICE_CHARTS: &[ChartSpec] = &[CPU, MEMORY, TASKS, FDS, SOCKETS, THREADS];

/// The charts that tell an incident's story, by kind; none for kinds whose
/// evidence is a stack rather than a trend.
pub fn incident_charts(incident: &Incident) -> &'static [ChartSpec] {
    match incident.kind {
        IncidentKind::MemoryGrowth => &[MEMORY],
        IncidentKind::SocketLeak => &[SOCKETS],
        IncidentKind::FdLeak => &[FDS],
        IncidentKind::TaskLeak => &[TASKS],
        IncidentKind::CrashLoop | IncidentKind::ServiceDown => &[MEMORY],
        IncidentKind::RunawayLoop | IncidentKind::BlockedWorker | IncidentKind::Other(_) => &[],
    }
}

/// All points of every instance of a series, as one line in time order: a
/// service's history continues across restarts.
pub fn merged(series: &[InstanceSeries]) -> Vec<Point> {
    let mut points: Vec<Point> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

/// The narrowest time range a chart zooms to: two seconds, a few snapshots
/// at the probe's pace, so a service seconds old still fills its chart.
pub const MIN_SHOWN_MS: i64 = 2_000;

/// The part of `[from_ms, to_ms]` a chart shows: from just before
/// `first_point_ms`, so an instance that has existed for one minute fills
/// the chart rather than sitting against the right edge of a ten-minute
/// window (a mark before the data, such as a detector's window that began
/// before the instance, is left out: all the data is after it); without
/// data, from just before the earliest of the `marks` inside the range.
/// Never less than two seconds, never beyond the range.
pub fn shown_range(
    (from_ms, to_ms): (i64, i64),
    first_point_ms: Option<i64>,
    marks: impl IntoIterator<Item = i64>,
) -> (i64, i64) {
    let earliest = first_point_ms.or_else(|| {
        marks
            .into_iter()
            .filter(|at| (from_ms..=to_ms).contains(at))
            .min()
    });
    let Some(earliest) = earliest else {
        return (from_ms, to_ms);
    };
    let pad = (to_ms - earliest) / 20;
    let from = (earliest - pad).min(to_ms - MIN_SHOWN_MS);
    (from.max(from_ms), to_ms)
}

/// The least-squares line through `points`, as its two end points; with
/// `slope_per_ms` given (a detector's slope), only the intercept is fitted.
pub fn fitted(points: &[Point], slope_per_ms: Option<f64>) -> Option<Vec<Point>> {
    let (first, last) = (points.first()?.0, points.last()?.0);
    if points.len() < 2 || first == last {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| (p.0 - first) as f64).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let slope = slope_per_ms.unwrap_or_else(|| {
        let cov: f64 = points
            .iter()
            .map(|p| ((p.0 - first) as f64 - mean_t) * (p.1 - mean_v))
            .sum();
        let var: f64 = points
            .iter()
            .map(|p| ((p.0 - first) as f64 - mean_t).powi(2))
            .sum();
        cov / var
    });
    let at = |t: i64| mean_v + slope * ((t - first) as f64 - mean_t);
    Some(vec![(first, at(first)), (last, at(last))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_zooms_to_the_data_it_has() {
        let minute = 60_000;
        let window = (0, 10 * minute);
        // An instance one minute old: from just before its first point.
        let (from, to) = shown_range(window, Some(9 * minute), []);
        assert_eq!(to, 10 * minute);
        assert!(from < 9 * minute && from > 8 * minute, "{from}");
        // A mark before the data does not widen it; without data, marks
        // inside the window place it.
        assert_eq!(
            shown_range(window, Some(9 * minute), [2 * minute]),
            (from, to)
        );
        assert_eq!(
            shown_range(window, None, [2 * minute]).0,
            2 * minute - 24_000
        );
        assert_eq!(shown_range(window, None, [-5 * minute]), window);
        // Never under two seconds, never beyond the window, whole when empty.
        assert_eq!(
            shown_range(window, Some(10 * minute), []).0,
            10 * minute - 2_000
        );
        assert_eq!(shown_range(window, Some(0), []), window);
        assert_eq!(shown_range(window, None, []), window);
    }
    use crate::fixtures;

    #[test]
    fn keeps_figures_and_sections_this_build_does_not_know() {
        let mesh = fixtures::mesh();
        let gateway = &mesh[0];
        assert_eq!(gateway.figure("tcp_close_wait"), Some(3.0));
        assert_eq!(gateway.figure("rss_bytes"), Some(20.0 * 1048576.0));
        assert_eq!(gateway.figure("no_such_figure"), None);
        assert_eq!(gateway.extra.len(), 1);
        assert_eq!(gateway.extra[0].0, "gpu");
        assert_eq!(gateway.view.sockets.as_ref().map(|s| s.total), Some(16));
        assert!(mesh[1].extra.is_empty());
    }

    #[test]
    fn urgency_puts_critical_before_warning_before_down_before_healthy() {
        let mesh = fixtures::mesh();
        let urgency: Vec<u8> = mesh.iter().map(Instance::urgency).collect();
        assert_eq!(urgency, vec![0, 3, 2, 1]);
    }

    #[test]
    fn fits_a_line_or_uses_the_given_slope() {
        let points: Vec<Point> = (0..10).map(|t| (t * 1000, 5.0 + 2.0 * t as f64)).collect();
        let line = fitted(&points, None).unwrap();
        assert!(
            (line[0].1 - 5.0).abs() < 1e-9 && (line[1].1 - 23.0).abs() < 1e-9,
            "{line:?}"
        );
        let flat = fitted(&points, Some(0.0)).unwrap();
        assert!((flat[0].1 - 14.0).abs() < 1e-9 && (flat[1].1 - 14.0).abs() < 1e-9);
        assert_eq!(fitted(&points[..1], None), None);
    }

    #[test]
    fn merges_instances_in_time_order() {
        let series = vec![
            InstanceSeries {
                instance_id: "b".into(),
                points: vec![(3, 3.0), (4, 4.0)],
            },
            InstanceSeries {
                instance_id: "a".into(),
                points: vec![(1, 1.0), (2, 2.0)],
            },
        ];
        let times: Vec<i64> = merged(&series).iter().map(|p| p.0).collect();
        assert_eq!(times, vec![1, 2, 3, 4]);
    }
}
