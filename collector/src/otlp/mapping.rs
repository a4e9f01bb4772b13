//! The standard runtime metrics of OpenTelemetry SDKs, in meshwatch's terms.
//!
//! Each SDK names its process and runtime metrics by the semantic
//! conventions, old or new: Node's `@opentelemetry/host-metrics` and
//! `@opentelemetry/instrumentation-runtime-node`, Python's
//! `opentelemetry-instrumentation-system-metrics`. [`RULES`] says which
//! metric (and which of its points, by attribute) is which figure of a
//! probe's snapshot; points of one figure are summed (the V8 heap's spaces,
//! the CPU time's user and system modes). Cumulative sums are read as
//! totals; a delta sum carries no total and is skipped.
//!
//! A figure the export does not carry reads as 0 in the snapshot, as the
//! wire protocol has no "absent" for a number: a service that exports no fd
//! count shows 0 fds.

use meshwatch_proto::v1::{HeapStats, ProcessStats, Snapshot};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, NumberDataPoint, ScopeMetrics, metric, number_data_point,
};

use super::resource::{as_text, attribute};
use super::sessions::ExportFacts;

/// A figure of a probe's snapshot that an export can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    Rss,
    Virtual,
    CpuSeconds,
    Threads,
    Fds,
    HeapUsed,
    HeapLimit,
    EventLoopDelayMax,
}

/// Which points of a metric count.
#[derive(Debug, Clone, Copy)]
enum Points {
    /// Every point (summed).
    All,
    /// The points whose attribute `.0` is `.1`.
    Where(&'static str, &'static str),
}

/// Metric name, the points that count, and the figure they are.
const RULES: &[(&str, Points, Figure)] = &[
    // Semantic conventions for process metrics (Node host-metrics, newer
    // Python system-metrics).
    ("process.memory.usage", Points::All, Figure::Rss),
    ("process.memory.virtual", Points::All, Figure::Virtual),
    ("process.cpu.time", Points::All, Figure::CpuSeconds),
    ("process.thread.count", Points::All, Figure::Threads),
    (
        "process.open_file_descriptor.count",
        Points::All,
        Figure::Fds,
    ),
    // Older Python system-metrics.
    (
        "process.runtime.cpython.memory",
        Points::Where("type", "rss"),
        Figure::Rss,
    ),
    (
        "process.runtime.cpython.memory",
        Points::Where("type", "vms"),
        Figure::Virtual,
    ),
    (
        "process.runtime.cpython.cpu_time",
        Points::All,
        Figure::CpuSeconds,
    ),
    (
        "process.runtime.cpython.thread_count",
        Points::All,
        Figure::Threads,
    ),
    // Node's runtime instrumentation: the V8 heap, by space.
    ("v8js.memory.heap.used", Points::All, Figure::HeapUsed),
    ("v8js.memory.heap.limit", Points::All, Figure::HeapLimit),
    // The largest event-loop delay since the last export.
    (
        "nodejs.eventloop.delay.max",
        Points::All,
        Figure::EventLoopDelayMax,
    ),
];

/// What one export says about its process.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Readings {
    rss_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    cpu_seconds: Option<f64>,
    threads: Option<f64>,
    fds_open: Option<f64>,
    heap_used_bytes: Option<f64>,
    heap_limit_bytes: Option<f64>,
    event_loop_delay_max_s: Option<f64>,
    /// The newest point's time, in milliseconds since the Unix epoch; 0
    /// when no point was read.
    time_ms: i64,
    /// The earliest start time of a cumulative point read: when the SDK
    /// started counting, near the process's start; 0 when none.
    start_ms: i64,
}

impl Readings {
    /// Reads every metric of `scopes` that [`RULES`] knows.
    pub fn read(scopes: &[ScopeMetrics]) -> Self {
        let mut readings = Self::default();
        for metric in scopes.iter().flat_map(|s| &s.metrics) {
            let Some((points, cumulative)) = number_points(metric.data.as_ref()) else {
                continue;
            };
            for &(name, which, figure) in RULES {
                if metric.name != name {
                    continue;
                }
                let scale = unit_scale(&metric.unit);
                let chosen = points.iter().filter(|p| which.admits(p));
                let mut sum = None;
                for point in chosen {
                    let Some(value) = point_value(point) else {
                        continue;
                    };
                    *sum.get_or_insert(0.0) += value * scale;
                    readings.note_times(point, cumulative);
                }
                if let Some(sum) = sum {
                    *readings.slot(figure) = Some(sum);
                }
            }
        }
        readings
    }

    /// What the sessions need of this export.
    pub fn facts(&self) -> ExportFacts {
        ExportFacts {
            start_ms: self.start_ms,
            collected_ms: self.time_ms,
            cpu_seconds: self.cpu_seconds,
        }
    }

    /// The largest event-loop delay since the last export, in
    /// milliseconds, when exported (Node.js).
    pub fn event_loop_delay_max_ms(&self) -> Option<u64> {
        self.event_loop_delay_max_s
            .map(|s| (s.max(0.0) * 1000.0).round() as u64)
    }

    /// The snapshot a probe would have sent with these figures, numbered
    /// `seq`.
    pub fn snapshot(&self, seq: u64) -> Snapshot {
        let has_process = [
            self.rss_bytes,
            self.virtual_bytes,
            self.cpu_seconds,
            self.threads,
            self.fds_open,
        ]
        .iter()
        .any(Option::is_some);
        Snapshot {
            seq,
            time_unix_ms: self.time_ms,
            process: has_process.then(|| ProcessStats {
                rss_bytes: whole(self.rss_bytes),
                virtual_bytes: whole(self.virtual_bytes),
                cpu_seconds_total: self.cpu_seconds.unwrap_or(0.0).max(0.0),
                threads: u32::try_from(whole(self.threads)).unwrap_or(u32::MAX),
                fds_open: whole(self.fds_open),
                ..ProcessStats::default()
            }),
            heap: self.heap(),
            ..Snapshot::default()
        }
    }

    /// The runtime's heap (V8's), when exported.
    pub fn heap(&self) -> Option<HeapStats> {
        self.heap_used_bytes.map(|used| HeapStats {
            tracked: true,
            live_bytes: whole(Some(used)),
            limit_bytes: whole(self.heap_limit_bytes),
            ..HeapStats::default()
        })
    }

    fn slot(&mut self, figure: Figure) -> &mut Option<f64> {
        match figure {
            Figure::Rss => &mut self.rss_bytes,
            Figure::Virtual => &mut self.virtual_bytes,
            Figure::CpuSeconds => &mut self.cpu_seconds,
            Figure::Threads => &mut self.threads,
            Figure::Fds => &mut self.fds_open,
            Figure::HeapUsed => &mut self.heap_used_bytes,
            Figure::HeapLimit => &mut self.heap_limit_bytes,
            Figure::EventLoopDelayMax => &mut self.event_loop_delay_max_s,
        }
    }

    fn note_times(&mut self, point: &NumberDataPoint, cumulative: bool) {
        let ms = |nanos: u64| i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX);
        self.time_ms = self.time_ms.max(ms(point.time_unix_nano));
        if cumulative && point.start_time_unix_nano > 0 {
            let start = ms(point.start_time_unix_nano);
            if self.start_ms == 0 || start < self.start_ms {
                self.start_ms = start;
            }
        }
    }
}

impl Points {
    fn admits(self, point: &NumberDataPoint) -> bool {
        match self {
            Points::All => true,
            Points::Where(key, value) => attribute(&point.attributes, key)
                .and_then(as_text)
                .is_some_and(|v| v == value),
        }
    }
}

/// A figure as a whole number, 0 when absent.
fn whole(value: Option<f64>) -> u64 {
    value.map_or(0, |v| v.max(0.0) as u64)
}

/// The number points of a gauge or a cumulative sum, and whether they are
/// cumulative; `None` for other kinds (histograms, delta sums).
fn number_points(data: Option<&metric::Data>) -> Option<(&[NumberDataPoint], bool)> {
    match data? {
        metric::Data::Gauge(gauge) => Some((&gauge.data_points, false)),
        metric::Data::Sum(sum)
            if sum.aggregation_temporality == AggregationTemporality::Cumulative as i32 =>
        {
            Some((&sum.data_points, true))
        }
        _ => None,
    }
}

fn point_value(point: &NumberDataPoint) -> Option<f64> {
    match point.value? {
        number_data_point::Value::AsDouble(v) => Some(v).filter(|v| v.is_finite()),
        number_data_point::Value::AsInt(v) => Some(v as f64),
    }
}

/// What to multiply a value in `unit` (UCUM, as OpenTelemetry writes
/// units) by to get bytes or seconds.
fn unit_scale(unit: &str) -> f64 {
    match unit {
        "ms" => 1e-3,
        "us" => 1e-6,
        "ns" => 1e-9,
        "KiBy" => 1024.0,
        "MiBy" => 1024.0 * 1024.0,
        "kBy" => 1e3,
        "MBy" => 1e6,
        _ => 1.0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, Sum};

    use super::*;

    /// A point of `value` at `t_ms`, with string attributes.
    pub(crate) fn point(value: f64, t_ms: u64, attributes: &[(&str, &str)]) -> NumberDataPoint {
        NumberDataPoint {
            attributes: crate::otlp::resource::tests::string_attributes(attributes),
            start_time_unix_nano: 1_000 * 1_000_000,
            time_unix_nano: t_ms * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..NumberDataPoint::default()
        }
    }

    pub(crate) fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
        Metric {
            name: name.to_owned(),
            unit: unit.to_owned(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Metric::default()
        }
    }

    pub(crate) fn sum(
        name: &str,
        unit: &str,
        temporality: AggregationTemporality,
        points: Vec<NumberDataPoint>,
    ) -> Metric {
        Metric {
            name: name.to_owned(),
            unit: unit.to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: temporality as i32,
                is_monotonic: true,
            })),
            ..Metric::default()
        }
    }

    fn read(metrics: Vec<Metric>) -> Readings {
        Readings::read(&[ScopeMetrics {
            metrics,
            ..ScopeMetrics::default()
        }])
    }

    #[test]
    fn node_process_and_v8_heap_become_a_snapshot() {
        let readings = read(vec![
            gauge("process.memory.usage", "By", vec![point(50e6, 5_000, &[])]),
            sum(
                "process.cpu.time",
                "s",
                AggregationTemporality::Cumulative,
                vec![
                    point(1.5, 5_000, &[("state", "user")]),
                    point(0.5, 5_000, &[("state", "system")]),
                ],
            ),
            gauge(
                "v8js.memory.heap.used",
                "By",
                vec![
                    point(10e6, 5_000, &[("v8js.heap.space.name", "old_space")]),
                    point(2e6, 5_000, &[("v8js.heap.space.name", "new_space")]),
                ],
            ),
            gauge("v8js.memory.heap.limit", "By", vec![point(4e9, 5_000, &[])]),
            gauge(
                "nodejs.eventloop.delay.max",
                "s",
                vec![point(2.5, 5_000, &[])],
            ),
            gauge("http.server.duration", "ms", vec![point(3.0, 5_000, &[])]),
        ]);
        let snapshot = readings.snapshot(7);
        assert_eq!(snapshot.seq, 7);
        assert_eq!(snapshot.time_unix_ms, 5_000);
        let process = snapshot.process.unwrap();
        assert_eq!(process.rss_bytes, 50_000_000);
        assert!((process.cpu_seconds_total - 2.0).abs() < 1e-9);
        assert_eq!(process.fds_open, 0, "not exported: 0");
        let heap = snapshot.heap.unwrap();
        assert!(heap.tracked);
        assert_eq!(heap.live_bytes, 12_000_000, "summed over spaces");
        assert_eq!(heap.limit_bytes, 4_000_000_000);
        assert_eq!(
            readings.facts().start_ms,
            1_000,
            "from the cumulative CPU time"
        );
        assert_eq!(readings.event_loop_delay_max_ms(), Some(2_500));
    }

    #[test]
    fn older_python_metrics_pick_points_by_type_and_scale_units() {
        let readings = read(vec![
            gauge(
                "process.runtime.cpython.memory",
                "By",
                vec![
                    point(30e6, 9_000, &[("type", "rss")]),
                    point(400e6, 9_000, &[("type", "vms")]),
                ],
            ),
            sum(
                "process.runtime.cpython.cpu_time",
                "ms",
                AggregationTemporality::Cumulative,
                vec![point(2_500.0, 9_000, &[("type", "user")])],
            ),
            gauge(
                "process.runtime.cpython.thread_count",
                "{thread}",
                vec![point(3.0, 9_000, &[])],
            ),
        ]);
        let process = readings.snapshot(1).process.unwrap();
        assert_eq!(process.rss_bytes, 30_000_000);
        assert_eq!(process.virtual_bytes, 400_000_000);
        assert!((process.cpu_seconds_total - 2.5).abs() < 1e-9);
        assert_eq!(process.threads, 3);
        assert!(readings.snapshot(1).heap.is_none());
    }

    #[test]
    fn delta_sums_and_unknown_metrics_carry_nothing() {
        let readings = read(vec![
            sum(
                "process.cpu.time",
                "s",
                AggregationTemporality::Delta,
                vec![point(0.1, 1_000, &[])],
            ),
            gauge("queue.depth", "1", vec![point(3.0, 1_000, &[])]),
        ]);
        let snapshot = readings.snapshot(1);
        assert!(snapshot.process.is_none() && snapshot.heap.is_none());
    }
}
