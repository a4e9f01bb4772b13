//! The headline series as OTLP metrics: one resource per instance, named by
//! OpenTelemetry's semantic conventions where one exists and under
//! `meshwatch.` where none does.
//!
//! [`otel_name`] is the mapping, one arm per [`Metric`], so a metric added to
//! the table must be given its OpenTelemetry name (or left out) here too.
//! The mapping is listed for users in `docs/OTLP.md`.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};

use super::{Row, resource, scope, text};
use crate::series::Metric;

/// How a series is sent: its OpenTelemetry instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A value sampled now (`Gauge`).
    Gauge,
    /// A level that is a sum of parts and may go down (`UpDownCounter`: a
    /// non-monotonic cumulative `Sum`), as the conventions define the
    /// process's memory, threads and descriptors.
    UpDown,
    /// A running total since the process started (`Counter`: a monotonic
    /// cumulative `Sum`).
    Total,
}

/// One series as OpenTelemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtelName {
    /// The metric's name.
    pub name: &'static str,
    /// Its UCUM unit.
    pub unit: &'static str,
    /// Its instrument.
    pub shape: Shape,
    /// For the TCP socket counts: the `network.connection.state` the value
    /// is of, so the states of one metric add up to the process's sockets.
    pub state: Option<&'static str>,
}

const fn named(name: &'static str, unit: &'static str, shape: Shape) -> Option<OtelName> {
    Some(OtelName {
        name,
        unit,
        shape,
        state: None,
    })
}

const fn sockets(state: &'static str) -> Option<OtelName> {
    Some(OtelName {
        name: "meshwatch.process.tcp.socket.count",
        unit: "{socket}",
        shape: Shape::UpDown,
        state: Some(state),
    })
}

/// The OpenTelemetry name of `metric`; `None` for the series that are not
/// exported: `cpu_percent` (a backend derives it from `process.cpu.time`,
/// which keeps it exact over any step) and `tcp_sockets` (sent as the
/// `other` state, the sockets in none of the states sent apart).
pub fn otel_name(metric: Metric) -> Option<OtelName> {
    use Shape::{Gauge, Total, UpDown};
    match metric {
        Metric::RssBytes => named("process.memory.usage", "By", UpDown),
        Metric::VirtualBytes => named("process.memory.virtual", "By", UpDown),
        Metric::HeapLiveBytes => named("meshwatch.heap.live", "By", Gauge),
        Metric::HeapLimitBytes => named("meshwatch.heap.limit", "By", Gauge),
        Metric::HeapAllocatedBytesTotal => named("meshwatch.heap.allocated", "By", Total),
        Metric::HeapSamplesDroppedTotal => {
            named("meshwatch.probe.heap_samples.dropped", "{sample}", Total)
        }
        Metric::CpuSecondsTotal => named("process.cpu.time", "s", Total),
        Metric::CpuPercent | Metric::TcpSockets => None,
        Metric::Threads => named("process.thread.count", "{thread}", UpDown),
        Metric::TasksAlive => named("meshwatch.tokio.tasks.alive", "{task}", Gauge),
        Metric::Workers => named("meshwatch.tokio.workers", "{thread}", Gauge),
        Metric::GlobalQueueDepth => named("meshwatch.tokio.global_queue.depth", "{task}", Gauge),
        Metric::FdsOpen => named(
            "process.unix.file_descriptor.count",
            "{file_descriptor}",
            UpDown,
        ),
        Metric::FdsLimit => named(
            "meshwatch.process.unix.file_descriptor.limit",
            "{file_descriptor}",
            Gauge,
        ),
        Metric::TcpEstablished => sockets("established"),
        Metric::TcpCloseWait => sockets("close_wait"),
        Metric::TcpTimeWait => sockets("time_wait"),
        Metric::MemoryLimitBytes => named("meshwatch.process.memory.limit", "By", Gauge),
        Metric::ProbeSnapshotsDroppedTotal => {
            named("meshwatch.probe.snapshots.dropped", "{snapshot}", Total)
        }
        Metric::ProbeEventsDroppedTotal => {
            named("meshwatch.probe.events.dropped", "{event}", Total)
        }
    }
}

/// The sockets of a process in none of the states sent apart, so that
/// `meshwatch.process.tcp.socket.count` summed over its states is every TCP
/// socket of the process.
const OTHER_SOCKETS: OtelName = OtelName {
    name: "meshwatch.process.tcp.socket.count",
    unit: "{socket}",
    shape: Shape::UpDown,
    state: Some("other"),
};

/// `meshwatch.instance.up`: 1 while the instance is up, 0 once it is down.
const UP: OtelName = OtelName {
    name: "meshwatch.instance.up",
    unit: "1",
    shape: Shape::Gauge,
    state: None,
};

/// `meshwatch.incident.open`: incidents open now on the instance, by kind
/// and severity.
const INCIDENTS: OtelName = OtelName {
    name: "meshwatch.incident.open",
    unit: "{incident}",
    shape: Shape::Gauge,
    state: None,
};

/// One request with the resources of `rows`.
pub fn request(rows: &[Row], host: &str) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: rows.iter().map(|row| resource_metrics(row, host)).collect(),
    }
}

fn resource_metrics(row: &Row, host: &str) -> ResourceMetrics {
    let time = nanos(row.time_ms);
    let start = nanos(row.started_at_ms);
    let mut metrics: Vec<OtlpMetric> = Vec::new();
    let mut add = |name: OtelName, value: f64, attributes: Vec<KeyValue>| {
        let point = NumberDataPoint {
            attributes,
            start_time_unix_nano: if name.shape == Shape::Gauge { 0 } else { start },
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..NumberDataPoint::default()
        };
        match metrics.iter_mut().find(|m| m.name == name.name) {
            Some(existing) => push_point(existing, point),
            None => metrics.push(metric(name, point)),
        }
    };
    let mut other_sockets = None;
    for &(metric, value) in &row.values {
        if metric == Metric::TcpSockets {
            other_sockets = Some(value);
        }
        if let Some(name) = otel_name(metric) {
            let attributes = name
                .state
                .map(|state| vec![text("network.connection.state", state)])
                .unwrap_or_default();
            if name.state.is_some() {
                other_sockets = other_sockets.map(|total| total - value);
            }
            add(name, value, attributes);
        }
    }
    if let Some(other) = other_sockets {
        add(
            OTHER_SOCKETS,
            other.max(0.0),
            vec![text("network.connection.state", "other")],
        );
    }
    if let Some(up) = row.up {
        add(UP, if up { 1.0 } else { 0.0 }, Vec::new());
    }
    for ((kind, severity), count) in &row.incidents {
        add(
            INCIDENTS,
            f64::from(*count),
            vec![
                text("meshwatch.incident.kind", kind),
                text("meshwatch.incident.severity", severity),
            ],
        );
    }
    ResourceMetrics {
        resource: Some(resource(row, host)),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn metric(name: OtelName, point: NumberDataPoint) -> OtlpMetric {
    let data = match name.shape {
        Shape::Gauge => metric::Data::Gauge(Gauge {
            data_points: vec![point],
        }),
        Shape::UpDown | Shape::Total => metric::Data::Sum(Sum {
            data_points: vec![point],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: name.shape == Shape::Total,
        }),
    };
    OtlpMetric {
        name: name.name.to_owned(),
        unit: name.unit.to_owned(),
        data: Some(data),
        ..OtlpMetric::default()
    }
}

fn push_point(metric: &mut OtlpMetric, point: NumberDataPoint) {
    match &mut metric.data {
        Some(metric::Data::Gauge(gauge)) => gauge.data_points.push(point),
        Some(metric::Data::Sum(sum)) => sum.data_points.push(point),
        _ => {}
    }
}

/// Unix milliseconds as OTLP's nanoseconds; 0 (unknown) before the epoch.
pub(super) fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).map_or(0, |ms| ms.saturating_mul(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_otlp_lists_every_series_and_its_name() {
        let doc = include_str!("../../../docs/OTLP.md");
        for &metric in Metric::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", metric.name())),
                "docs/OTLP.md has no row for {}",
                metric.name()
            );
            if let Some(name) = otel_name(metric) {
                assert!(doc.contains(name.name), "docs/OTLP.md lacks {}", name.name);
                assert!(doc.contains(name.unit), "docs/OTLP.md lacks {}", name.unit);
                if let Some(state) = name.state {
                    assert!(doc.contains(&format!("`{state}`")), "{state}");
                }
            }
        }
        for extra in [UP, INCIDENTS, OTHER_SOCKETS] {
            assert!(
                doc.contains(extra.name),
                "docs/OTLP.md lacks {}",
                extra.name
            );
        }
    }

    #[test]
    fn every_exported_name_is_a_convention_or_under_meshwatch() {
        let conventions = [
            "process.memory.usage",
            "process.memory.virtual",
            "process.cpu.time",
            "process.thread.count",
            "process.unix.file_descriptor.count",
        ];
        for &metric in Metric::ALL {
            if let Some(name) = otel_name(metric) {
                assert!(
                    conventions.contains(&name.name) || name.name.starts_with("meshwatch."),
                    "{metric:?} as {}",
                    name.name
                );
                assert!(!name.unit.is_empty(), "{metric:?} has a unit");
                let total = metric.name().ends_with("_total");
                assert_eq!(name.shape == Shape::Total, total, "{metric:?}");
            }
        }
    }
}
