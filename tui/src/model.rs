//! The mesh as the TUI and the report see it.
//!
//! The collector's typed views ([`InstanceView`], [`Incident`]) carry what
//! this build knows. A newer collector may add figures to an instance's
//! headline (socket counts, say) or whole sections (heap sites); those are
//! kept by name, so a column or a chart that names them shows them as soon as
//! they arrive, and unknown sections are shown generically.

use meshwatch_collector::incidents::{Incident, Severity};
use meshwatch_collector::registry::InstanceState;
use meshwatch_collector::views::InstanceView;
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

/// Orders severities for sorting: critical above warning above nothing.
pub fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Warning => 2,
        Severity::Critical => 3,
    }
}

/// The lowercase name of a severity.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// An incident's kind as the API spells it, e.g. `runaway_loop`.
pub fn kind_name(incident: &Incident) -> &'static str {
    incident.kind.as_str()
}

/// A time-stamped value: milliseconds since the Unix epoch, and the value.
pub type Point = (i64, f64);

/// One instance's history of one metric, from `/api/v1/series`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InstanceSeries {
    /// The instance the points belong to.
    pub instance_id: String,
    /// Oldest first.
    pub points: Vec<Point>,
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
    /// Metric names as in `/api/v1/series`, each one line.
    pub metrics: &'static [&'static str],
}

/// Process CPU.
pub const CPU: ChartSpec = ChartSpec {
    title: "CPU",
    unit: Unit::Percent,
    metrics: &["cpu_percent"],
};
/// Resident memory and the allocator's live bytes.
pub const MEMORY: ChartSpec = ChartSpec {
    title: "memory",
    unit: Unit::Bytes,
    metrics: &["rss_bytes", "heap_live_bytes"],
};
/// Alive tokio tasks.
pub const TASKS: ChartSpec = ChartSpec {
    title: "tasks",
    unit: Unit::Count,
    metrics: &["tasks_alive"],
};
/// Open file descriptors.
pub const FDS: ChartSpec = ChartSpec {
    title: "file descriptors",
    unit: Unit::Count,
    metrics: &["fds_open"],
};
/// TCP sockets by state.
pub const SOCKETS: ChartSpec = ChartSpec {
    title: "sockets",
    unit: Unit::Count,
    metrics: &["tcp_established", "tcp_close_wait"],
};
/// OS threads.
pub const THREADS: ChartSpec = ChartSpec {
    title: "threads",
    unit: Unit::Count,
    metrics: &["threads"],
};

/// The history charts of a service, most telling first. A chart whose
/// metrics the collector does not serve is left out, so adding one here is
/// all a new metric needs.
pub const SERVICE_CHARTS: &[ChartSpec] = &[CPU, MEMORY, TASKS, FDS, SOCKETS, THREADS];

/// The charts that tell an incident's story, by kind; none for kinds whose
/// evidence is a stack rather than a trend.
pub fn incident_charts(incident: &Incident) -> &'static [ChartSpec] {
    match kind_name(incident) {
        "memory_growth" => &[MEMORY],
        "socket_leak" => &[SOCKETS],
        "fd_leak" => &[FDS],
        "task_leak" => &[TASKS],
        "crash_loop" | "service_down" => &[MEMORY],
        _ => &[],
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
pub(crate) mod fixtures {
    //! Fixed data for the tests of the views and the report.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    /// The instant the fixtures are "now".
    pub const NOW_MS: i64 = 1_700_000_600_000;

    /// A runaway loop on checkout, as the watchdog reports it.
    pub fn runaway() -> Incident {
        serde_json::from_value(json!({
            "id": "7", "kind": "runaway_loop", "severity": "critical",
            "service": "checkout", "instance": "c0ffee00aaaabbbbccccddddeeeeffff",
            "opened_at_ms": NOW_MS - 42_000, "last_seen_at_ms": NOW_MS - 1_000, "resolved_at_ms": null,
            "summary": "worker 1 of checkout has been stuck in one poll for 42.0s at 99% CPU",
            "evidence": {
                "thread": {"tid": 4244, "name": "tokio-rt-worker"},
                "cpu_percent": 99.2, "stuck_for_ms": 42_000,
                "spawn_location": "examples/src/service.rs:88:5",
                "frames": [
                    {"function": "core::str::validations::next_code_point", "file": "core/src/str/validations.rs", "line": 36},
                    {"function": "mesh_service::faults::parse_header", "file": "examples/src/faults.rs", "line": 57},
                    {"function": "mesh_service::faults::handle_loop::{{closure}}", "file": "examples/src/faults.rs", "line": 31},
                    {"function": "tokio::runtime::task::core::Core<T,S>::poll", "file": "tokio/src/runtime/task/core.rs", "line": 331}
                ],
                "hot_frames": [{"function": "mesh_service::faults::parse_header", "file": "examples/src/faults.rs", "line": 57, "samples": 5}],
                "stack_samples": [
                    [{"function": "mesh_service::faults::parse_header"}, {"function": "mesh_service::faults::handle_loop::{{closure}}"}],
                    [{"function": "core::str::validations::next_code_point"}, {"function": "mesh_service::faults::parse_header"}, {"function": "mesh_service::faults::handle_loop::{{closure}}"}],
                    [{"function": "mesh_service::faults::parse_header"}, {"function": "mesh_service::faults::handle_loop::{{closure}}"}]
                ],
                "caveat": null,
                "worker": 1
            }
        }))
        .unwrap()
    }

    /// Memory climbing on inventory, as the growth detector reports it.
    pub fn growth() -> Incident {
        serde_json::from_value(json!({
            "id": "8", "kind": "memory_growth", "severity": "warning",
            "service": "inventory", "instance": "1234567890abcdef1234567890abcdef",
            "opened_at_ms": NOW_MS - 120_000, "last_seen_at_ms": NOW_MS - 1_000, "resolved_at_ms": null,
            "summary": "inventory's heap grows 1.0 MiB/min; the limit is reached in about 2h",
            "evidence": {
                "metric": "heap_live_bytes",
                "slope_bytes_per_s": 17476.0, "r_squared": 0.98, "window_ms": 300_000,
                "time_to_limit_ms": 7_200_000, "limit_bytes": 2_147_483_648u64,
                "sites": [
                    {"function": "mesh_service::faults::SessionCache::insert", "live_bytes": 8_388_608, "growth_bytes_per_s": 16000.0,
                     "frames": [
                        {"function": "alloc::vec::Vec<T>::push", "file": "alloc/src/vec/mod.rs", "line": 1900},
                        {"function": "mesh_service::faults::SessionCache::insert", "file": "examples/src/faults.rs", "line": 120}
                     ]},
                    {"function": "hyper::proto::h1::Conn::read", "live_bytes": 65536, "growth_bytes_per_s": 0.0, "frames": []}
                ]
            }
        }))
        .unwrap()
    }

    /// A kind whose evidence this build has no special view for.
    pub fn socket_leak() -> Incident {
        serde_json::from_value(json!({
            "id": "9", "kind": "socket_leak", "severity": "warning",
            "service": "gateway", "instance": "fedcba9876543210fedcba9876543210",
            "opened_at_ms": NOW_MS - 300_000, "last_seen_at_ms": NOW_MS - 2_000, "resolved_at_ms": NOW_MS - 2_000,
            "summary": "gateway's CLOSE_WAIT sockets rose from 0 to 120 in 5m",
            "evidence": {
                "close_wait": 120, "slope_per_min": 24.0,
                "peers": [{"peer": "10.0.0.7:443", "count": 100, "oldest_age_ms": 290_000},
                          {"peer": "10.0.0.9:443", "count": 20, "oldest_age_ms": 60_000}]
            }
        }))
        .unwrap()
    }

    fn instance(value: serde_json::Value) -> Instance {
        Instance::from_json(value).unwrap()
    }

    /// The demo mesh: one service looping, one leaking, one healthy, one down.
    pub fn mesh() -> Vec<Instance> {
        let headline = |cpu: f64, rss: u64, heap: u64, tasks: u64| {
            json!({
                "cpu_percent": cpu, "rss_bytes": rss, "virtual_bytes": 1, "heap_live_bytes": heap,
                "threads": 9, "tasks_alive": tasks, "workers": 2, "global_queue_depth": 0,
                "fds_open": 17, "fds_limit": 1024, "memory_limit_bytes": 2_147_483_648u64,
                "memory_limit_source": "host"
            })
        };
        let base = |service: &str,
                    id: &str,
                    state: &str,
                    headline: serde_json::Value,
                    incidents: Vec<Incident>| {
            json!({
                "service": service, "instance_id": id, "pid": 4242, "host": "demo-host",
                "runtime": "rust", "probe_version": "0.1.0", "state": state,
                "started_at_ms": NOW_MS - 300_000, "last_seen_ms": NOW_MS - 500,
                "uptime_seconds": 300, "restarts": 0, "interval_ms": 1000,
                "headline": headline,
                "runtimes": [{"runtime_id": 0, "flavor": "multi_thread", "workers": 2, "tasks_alive": 12, "global_queue_depth": 0}],
                "threads": [
                    {"tid": 4243, "name": "main", "cpu_percent": 0.0},
                    {"tid": 4244, "name": "tokio-rt-worker", "cpu_percent": 99.2},
                    {"tid": 4245, "name": "tokio-rt-worker", "cpu_percent": 0.4},
                    {"tid": 4246, "name": "meshwatch-sampler", "cpu_percent": 0.1}
                ],
                "probe": {"snapshots_dropped_total": 0, "events_dropped_total": 0, "connects_total": 1,
                          "sample_duration_ns": 150000, "sample_errors_total": 0},
                "open_incidents": incidents
            })
        };
        let mut gateway = base(
            "gateway",
            "fedcba9876543210fedcba9876543210",
            "up",
            headline(3.5, 20 << 20, 1 << 20, 30),
            vec![],
        );
        gateway["headline"]["tcp_established"] = json!(12);
        gateway["headline"]["tcp_close_wait"] = json!(3);
        gateway["sockets"] = json!({
            "total": 16, "rx_queue_bytes": 0, "tx_queue_bytes": 512, "scan_duration_ns": 41_000,
            "by_state": [{"name": "ESTABLISHED", "count": 12}, {"name": "CLOSE_WAIT", "count": 3},
                         {"name": "LISTEN", "count": 1}],
            "by_listen_port": [{"name": "8080", "count": 15}],
            "top_peers": [{"name": "10.0.0.7", "count": 9}, {"name": "10.0.0.9", "count": 6}],
            "ages": [{"le_seconds": 1, "count": 1}, {"le_seconds": 10, "count": 2},
                     {"le_seconds": 60, "count": 4}, {"le_seconds": 600, "count": 5},
                     {"le_seconds": 3600, "count": 3}, {"le_seconds": null, "count": 0}]
        });
        gateway["heap_sites"] = json!([
            {"site": "614825e15975a783", "function": "gateway::SessionCache::remember_session",
             "live_bytes": 9_474_096.0, "live_objects": 2442, "frames": []},
            {"site": "0badc0ffee000001", "function": null,
             "live_bytes": 65_536.0, "live_objects": 12, "frames": []}
        ]);
        // A section from a newer collector, shown generically.
        gateway["gpu"] = json!({"utilization_percent": 40.0});
        let mut down = base(
            "billing",
            "0000111122223333444455556666777",
            "down",
            json!(null),
            vec![],
        );
        down["restarts"] = json!(2);
        vec![
            instance(gateway),
            instance(base(
                "checkout",
                "c0ffee00aaaabbbbccccddddeeeeffff",
                "up",
                headline(101.3, 31 << 20, 2 << 20, 12),
                vec![runaway()],
            )),
            instance(base(
                "inventory",
                "1234567890abcdef1234567890abcdef",
                "up",
                headline(4.0, 96 << 20, 60 << 20, 14),
                vec![growth()],
            )),
            instance(down),
        ]
    }

    /// A minute of history for `metric` on one instance, one point a second.
    pub fn history(instance_id: &str, metric: &str) -> Vec<InstanceSeries> {
        let value = |t: i64| -> f64 {
            let t = t as f64;
            match metric {
                "cpu_percent" => 50.0 + 45.0 * (t / 7.0).sin(),
                "rss_bytes" => 80.0 * 1048576.0 + t * 200_000.0,
                "heap_live_bytes" => 40.0 * 1048576.0 + t * 17_476.0 + 300_000.0 * (t / 3.0).sin(),
                _ => 10.0 + (t % 5.0),
            }
        };
        vec![InstanceSeries {
            instance_id: instance_id.to_owned(),
            points: (0..120)
                .map(|t| (NOW_MS - 120_000 + t * 1000, value(t)))
                .collect(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
