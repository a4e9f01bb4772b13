//! `/metrics`: the collector's view in Prometheus (OpenMetrics) text format,
//! so fleets can scrape every collector with the engines they already run.
//!
//! Each scrape builds a fresh `prometheus_client` registry from the current
//! state: instances come and go, and a family rebuilt per scrape can never
//! keep the series of an instance the registry has forgotten. Every metric of
//! the [`Metric`] table becomes one family named `meshwatch_<name>` with
//! `service` and `instance` labels; instances that are down export only
//! `meshwatch_instance_up` and their restart count, so dead processes do not
//! look alive on dashboards.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::incidents::StateFilter;
use crate::registry::InstanceState;
use crate::series::{Metric, MetricKind, Sample};
use crate::state::{CollectorStats, State};

/// The labels of every per-instance family.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    service: String,
    instance: String,
}

/// The labels of `meshwatch_instance_up`: which runtime, so that alerts
/// and dashboards can tell a Rust service from a Node.js or Python one.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpLabels {
    service: String,
    instance: String,
    runtime: String,
}

/// The labels of `meshwatch_incident_open`. `instance` is empty for an
/// incident of a whole service (`service_down`, `crash_loop`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabels {
    kind: String,
    severity: String,
    service: String,
    instance: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// The HELP text of a metric: the encoder ends it with a period itself.
fn help(metric: Metric) -> &'static str {
    metric.help().trim_end_matches('.')
}

/// Renders the whole exposition. Families with no value (no instance up, or
/// a figure no probe sends) are left out by the encoder.
///
/// # Errors
///
/// Only when formatting into the string fails, which does not happen for a
/// `String`; the error is passed on rather than unwrapped.
pub(crate) fn render(state: &State, stats: &CollectorStats) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("meshwatch");
    let instances = state.registry.sorted();
    let labels = |service: &str, instance: &str| InstanceLabels {
        service: service.to_owned(),
        instance: instance.to_owned(),
    };

    for &metric in Metric::ALL {
        let values = instances.iter().filter_map(|instance| {
            if instance.state == InstanceState::Down {
                return None;
            }
            let sample = Sample {
                snapshot: instance.last_snapshot.as_ref()?,
                cpu_percent: instance.cpu_percent,
            };
            let value = metric.read(&sample)?;
            Some((labels(&instance.service, &instance.instance_id), value))
        });
        match metric.kind() {
            MetricKind::Gauge => {
                let family = Family::<InstanceLabels, FloatGauge>::default();
                for (key, value) in values {
                    family.get_or_create(&key).set(value);
                }
                registry.register(metric.name(), help(metric), family);
            }
            MetricKind::Counter => {
                let family = Family::<InstanceLabels, FloatCounter>::default();
                for (key, value) in values {
                    family.get_or_create(&key).inc_by(value.max(0.0));
                }
                // The encoder appends `_total` to counters itself.
                let name = metric
                    .name()
                    .strip_suffix("_total")
                    .unwrap_or(metric.name());
                registry.register(name, help(metric), family);
            }
        }
    }

    let up = Family::<UpLabels, Gauge>::default();
    let restarts = Family::<InstanceLabels, Counter>::default();
    for instance in &instances {
        let up_key = UpLabels {
            service: instance.service.clone(),
            instance: instance.instance_id.clone(),
            runtime: instance.runtime.clone(),
        };
        up.get_or_create(&up_key)
            .set(i64::from(instance.state != InstanceState::Down));
        restarts
            .get_or_create(&labels(&instance.service, &instance.instance_id))
            .inc_by(u64::from(instance.restarts));
    }
    let open = Family::<IncidentLabels, Gauge>::default();
    for incident in state.incidents.list(StateFilter::Open) {
        let key = IncidentLabels {
            kind: incident.kind.as_str().to_owned(),
            severity: incident.severity.as_str().to_owned(),
            service: incident.service.clone(),
            instance: incident.instance.clone().unwrap_or_default(),
        };
        open.get_or_create(&key).inc();
    }
    // Registered even when empty, so that an alert on it has a family to
    // evaluate and a dashboard shows 0 incidents rather than no data.
    registry.register(
        "incident_open",
        "Incidents open now, by kind, severity, service and instance (empty for an incident of a whole service): alert on it",
        open,
    );
    registry.register(
        "instance_up",
        "1 while the instance is up or restarted, 0 once it is down",
        up,
    );
    registry.register(
        "instance_restarts",
        "Dead predecessors this instance replaced, counted along the chain of restarts of its service",
        restarts,
    );
    registry.register(
        "collector_connections",
        "Probe connections open now",
        stats.connections.clone(),
    );
    registry.register(
        "collector_connections_refused",
        "Probe connections refused because the connection limit was reached",
        stats.connections_refused.clone(),
    );
    registry.register(
        "collector_http_connections_refused",
        "HTTP connections refused because the HTTP API's connection limit, or one address's share of it, was reached",
        stats.http_connections_refused.clone(),
    );
    registry.register(
        "collector_frames_rejected",
        "Probe connections closed for bad input or refused at Hello, by reason",
        stats.frames_rejected.clone(),
    );
    registry.register(
        "collector_history_rows_dropped",
        "History rows lost because more waited for the persistent store than its queue holds",
        stats.history_rows_dropped.clone(),
    );
    registry.register(
        "collector_history_rows_written",
        "History rows committed to the persistent store",
        stats.history_rows_written.clone(),
    );
    registry.register(
        "collector_history_rows_waiting",
        "History rows held in memory for the persistent store, which grows while the store is unavailable",
        stats.history_rows_waiting.clone(),
    );
    registry.register(
        "collector_history_store_up",
        "1 while the persistent store takes writes, 0 from a failed write (a full disk) until it reopens and takes one again",
        stats.history_store_up.clone(),
    );
    registry.register(
        "collector_snapshot_times_clamped",
        "Snapshots dated ahead of the collector's clock or more than 15 minutes behind it, stored at its current time instead",
        stats.snapshot_times_clamped.clone(),
    );
    registry.register(
        "collector_incidents_evicted",
        "Open incidents resolved early because their instance had 16 of that kind open already (distinct stuck-poll keys without end)",
        prometheus_client::metrics::counter::ConstCounter::new(state.incidents.evicted()),
    );
    registry.register(
        "collector_fields_cut",
        "Texts and lists of probes' messages cut to the collector's bounds (a name over 1 KiB, more threads than 4096, ...)",
        stats.fields_cut.clone(),
    );

    registry.register(
        "collector_otlp_export_requests",
        "OTLP export requests by signal (metrics, logs) and outcome: sent, retried (the endpoint was away or busy) or refused",
        stats.export.requests.clone(),
    );
    registry.register(
        "collector_otlp_log_records_dropped",
        "Incident log records not exported: the queue held 10,000 while the endpoint was away, or the endpoint refused them",
        stats.export.records_dropped.clone(),
    );
    registry.register(
        "collector_otlp_metric_turns_dropped",
        "Metrics exports skipped because the OTLP endpoint was away (the next one's totals carry what they held)",
        stats.export.metric_turns_dropped.clone(),
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// OpenMetrics text (as [`render`] makes it) in Prometheus's classic text
/// format: a counter family is named by its samples' `_total` name in its
/// `HELP` and `TYPE` lines, and there is no `# UNIT` or `# EOF` line. The
/// samples are the same.
pub(crate) fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_in_the_classic_format() {
        let openmetrics = "# HELP meshwatch_cpu_seconds CPU time.\n# TYPE meshwatch_cpu_seconds counter\n# UNIT meshwatch_cpu_seconds seconds\nmeshwatch_cpu_seconds_total{service=\"a\"} 1.5\n# HELP meshwatch_rss_bytes RSS.\n# TYPE meshwatch_rss_bytes gauge\nmeshwatch_rss_bytes 4096\n# EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP meshwatch_cpu_seconds_total CPU time.\n# TYPE meshwatch_cpu_seconds_total counter\nmeshwatch_cpu_seconds_total{service=\"a\"} 1.5\n# HELP meshwatch_rss_bytes RSS.\n# TYPE meshwatch_rss_bytes gauge\nmeshwatch_rss_bytes 4096\n"
        );
    }
}
