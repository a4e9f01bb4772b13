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

use crate::registry::InstanceState;
use crate::series::{Metric, MetricKind, Sample};
use crate::state::{CollectorStats, State};

/// The labels of every per-instance family.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
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

    let up = Family::<InstanceLabels, Gauge>::default();
    let restarts = Family::<InstanceLabels, Counter>::default();
    for instance in &instances {
        let key = labels(&instance.service, &instance.instance_id);
        up.get_or_create(&key)
            .set(i64::from(instance.state != InstanceState::Down));
        restarts
            .get_or_create(&key)
            .inc_by(u64::from(instance.restarts));
    }
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
        "Snapshots dated ahead of the collector's clock, stored at its current time instead",
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

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
