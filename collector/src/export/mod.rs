//! OTLP export (`--otlp-endpoint`): the mesh's headline series as OTLP
//! metrics and its incidents as OTLP log records, to an OpenTelemetry
//! Collector or any backend that takes OTLP/HTTP, so that a fleet keeps
//! months of history and pages people with the engine it already runs.
//!
//! One exporter runs beside the collector's tasks, on a thread of its own
//! (its HTTP calls block). Each turn (every second) it reads what changed
//! under the collector's lock, copying only the latest values, and sends
//! outside it:
//!
//! - every `interval` (default 15 s), one resource per instance with the
//!   instance's latest values ([`metrics`]), in requests of at most
//!   [`RESOURCES_PER_REQUEST`] resources;
//! - the incidents that opened or resolved since the last turn
//!   ([`logs`]), queued (at most [`MAX_QUEUED_RECORDS`], the oldest
//!   dropped and counted beyond) and sent in requests of at most
//!   [`RECORDS_PER_REQUEST`].
//!
//! While the endpoint is down the sender backs off (1 s doubling to a
//! minute, or the endpoint's `Retry-After`): log records wait in the queue
//! and are sent once it is back; a metrics turn that cannot be sent is
//! dropped and counted, since the next turn's cumulative totals carry what
//! it held. The collector itself never waits for the endpoint.
//!
//! The messages are built with the OpenTelemetry project's own OTLP types
//! (`opentelemetry-proto`) rather than through the SDK's meter and logger
//! providers: a provider has one resource, and the collector speaks for a
//! thousand instances, each its own resource (see `docs/ARCHITECTURE.md`).

mod logs;
mod metrics;
mod sender;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwatch_api::Incident;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;

use crate::incidents::StateFilter;
use crate::registry::InstanceState;
use crate::series::{Metric, Sample};
use crate::state::{Shared, State, now_ms};
use logs::{IncidentFeed, IncidentRecord};
use sender::{Outcome, Sender};

/// Resources in one metrics request: about 200 KiB of protobuf.
pub const RESOURCES_PER_REQUEST: usize = 200;
/// Log records in one request.
pub const RECORDS_PER_REQUEST: usize = 512;
/// Log records held while the endpoint is away; beyond, the oldest go.
pub const MAX_QUEUED_RECORDS: usize = 10_000;
/// How often the exporter looks for incidents that opened or resolved.
const TURN: Duration = Duration::from_secs(1);

/// Where and how often to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The OTLP/HTTP base URL, e.g. `http://otel-collector:4318`:
    /// `/v1/metrics` and `/v1/logs` are appended.
    pub endpoint: String,
    /// Headers added to every request (a backend's API key).
    pub headers: Vec<(String, String)>,
    /// How often the metrics are sent.
    pub interval: Duration,
}

/// The labels of the exporter's own counters on `/metrics`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ExportLabels {
    /// `metrics` or `logs`.
    pub(crate) signal: &'static str,
    /// `sent`, `retried` (the endpoint was away or busy) or `refused`.
    pub(crate) outcome: &'static str,
}

/// The exporter's own figures, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    /// Requests by signal and outcome.
    pub(crate) requests: Family<ExportLabels, Counter>,
    /// Log records dropped: the queue was full, or the endpoint refused
    /// them for good.
    pub(crate) records_dropped: Counter,
    /// Metrics turns not sent because the endpoint was away.
    pub(crate) metric_turns_dropped: Counter,
}

/// Who a resource is: an instance, or a whole service for the incidents
/// of a service (`service_down`, `crash_loop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    service: String,
    instance_id: Option<String>,
    pid: u32,
    runtime: String,
    host: String,
}

/// Open incidents of one subject by (kind, severity).
type OpenCounts = BTreeMap<(String, String), u32>;

/// One resource of a metrics turn: an instance's latest values, or a
/// service's incidents.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    subject: Subject,
    started_at_ms: i64,
    time_ms: i64,
    /// Up or down, for instances; `None` for a service.
    up: Option<bool>,
    values: Vec<(Metric, f64)>,
    /// Open incidents by (kind, severity).
    incidents: OpenCounts,
}

/// Exports until `stop` turns true, then sends what log records it can
/// within one last attempt. Runs on a blocking thread.
pub(crate) async fn export_until_stopped(
    shared: Arc<Shared>,
    settings: OtlpExport,
    stop: watch::Receiver<bool>,
) {
    let joined = tokio::task::spawn_blocking(move || Exporter::new(&shared, &settings).run(stop));
    if let Err(err) = joined.await {
        tracing::error!(%err, "the OTLP exporter stopped");
    }
}

struct Exporter<'a> {
    shared: &'a Shared,
    settings: &'a OtlpExport,
    sender: Sender,
    feed: IncidentFeed,
    queue: VecDeque<IncidentRecord>,
    host: String,
    next_metrics: Instant,
    /// The last failure logged, so a down endpoint is said once.
    failing: bool,
}

impl<'a> Exporter<'a> {
    fn new(shared: &'a Shared, settings: &'a OtlpExport) -> Self {
        let feed = IncidentFeed::starting_at(&shared.lock().incidents);
        Self {
            shared,
            settings,
            sender: Sender::new(&settings.endpoint, settings.headers.clone()),
            feed,
            queue: VecDeque::new(),
            host: host_name(),
            next_metrics: Instant::now(),
            failing: false,
        }
    }

    fn stats(&self) -> &ExportStats {
        &self.shared.stats.export
    }

    fn run(mut self, stop: watch::Receiver<bool>) {
        tracing::info!(endpoint = %self.settings.endpoint, "exporting OTLP metrics and incident logs");
        loop {
            let stopping = *stop.borrow();
            let records = self.feed.poll(&self.shared.lock().incidents, now_ms());
            self.enqueue(records);
            self.send_logs();
            if stopping {
                return;
            }
            let now = Instant::now();
            if now >= self.next_metrics {
                self.next_metrics = now + self.settings.interval;
                self.send_metrics();
            }
            std::thread::sleep(TURN);
        }
    }

    fn enqueue(&mut self, records: Vec<IncidentRecord>) {
        for record in records {
            if self.queue.len() >= MAX_QUEUED_RECORDS {
                self.queue.pop_front();
                self.stats().records_dropped.inc();
            }
            self.queue.push_back(record);
        }
    }

    fn send_logs(&mut self) {
        while !self.queue.is_empty() && self.sender.ready(Instant::now()) {
            let batch: Vec<IncidentRecord> = self
                .queue
                .iter()
                .take(RECORDS_PER_REQUEST)
                .cloned()
                .collect();
            let request = {
                let state = self.shared.lock();
                logs::request(&batch, |incident| subject_of(&state, incident), &self.host)
            };
            let outcome = self.sender.post("/v1/logs", &request);
            self.count("logs", &outcome);
            match outcome {
                Outcome::Sent => {
                    self.queue.drain(..batch.len());
                }
                Outcome::Refused(_) => {
                    self.queue.drain(..batch.len());
                    self.stats().records_dropped.inc_by(batch.len() as u64);
                }
                Outcome::Retry(_) => return,
            }
        }
    }

    fn send_metrics(&mut self) {
        if !self.sender.ready(Instant::now()) {
            self.stats().metric_turns_dropped.inc();
            return;
        }
        let rows = rows(&self.shared.lock());
        for chunk in rows.chunks(RESOURCES_PER_REQUEST) {
            let outcome = self
                .sender
                .post("/v1/metrics", &metrics::request(chunk, &self.host));
            self.count("metrics", &outcome);
            if matches!(outcome, Outcome::Retry(_)) {
                self.stats().metric_turns_dropped.inc();
                return;
            }
        }
    }

    /// Counts `outcome`, and says once when the endpoint starts failing and
    /// once when it is back.
    fn count(&mut self, signal: &'static str, outcome: &Outcome) {
        let label = match outcome {
            Outcome::Sent => "sent",
            Outcome::Retry(_) => "retried",
            Outcome::Refused(_) => "refused",
        };
        self.stats()
            .requests
            .get_or_create(&ExportLabels {
                signal,
                outcome: label,
            })
            .inc();
        match outcome {
            Outcome::Sent if self.failing => {
                self.failing = false;
                tracing::info!(endpoint = %self.settings.endpoint, "the OTLP endpoint takes exports again");
            }
            Outcome::Sent => {}
            Outcome::Retry(why) if !self.failing => {
                self.failing = true;
                tracing::warn!(%why, "cannot export OTLP; retrying with backoff, incident records kept meanwhile");
            }
            Outcome::Retry(_) => {}
            Outcome::Refused(why) => {
                tracing::warn!(%why, signal, "the OTLP endpoint refused an export; it is dropped");
            }
        }
    }
}

/// The latest values of every instance, and the incidents of every service
/// that has service-wide ones open: copied under the lock, small.
fn rows(state: &State) -> Vec<Row> {
    let mut open: BTreeMap<(&str, Option<&str>), OpenCounts> = BTreeMap::new();
    for incident in state.incidents.list(StateFilter::Open) {
        *open
            .entry((incident.service.as_str(), incident.instance.as_deref()))
            .or_default()
            .entry((
                incident.kind.as_str().to_owned(),
                incident.severity.as_str().to_owned(),
            ))
            .or_default() += 1;
    }
    let now = now_ms();
    let mut rows: Vec<Row> = state
        .registry
        .sorted()
        .into_iter()
        .map(|instance| {
            let up = instance.state != InstanceState::Down;
            let values = match (&instance.last_snapshot, up) {
                (Some(snapshot), true) => {
                    let sample = Sample {
                        snapshot,
                        cpu_percent: instance.cpu_percent,
                    };
                    Metric::ALL
                        .iter()
                        .filter_map(|&m| Some((m, m.read(&sample)?)))
                        .collect()
                }
                _ => Vec::new(),
            };
            let time_ms = instance
                .last_snapshot
                .as_ref()
                .filter(|_| up)
                .map_or(now, |s| s.time_unix_ms.min(now));
            Row {
                subject: Subject {
                    service: instance.service.clone(),
                    instance_id: Some(instance.instance_id.clone()),
                    pid: instance.pid,
                    runtime: instance.runtime.clone(),
                    host: instance.host.clone(),
                },
                started_at_ms: instance.start_time_ms,
                time_ms,
                up: Some(up),
                values,
                incidents: open
                    .remove(&(
                        instance.service.as_str(),
                        Some(instance.instance_id.as_str()),
                    ))
                    .unwrap_or_default(),
            }
        })
        .collect();
    rows.extend(
        open.into_iter()
            .filter(|((_, instance), _)| instance.is_none())
            .map(|((service, _), incidents)| Row {
                subject: Subject {
                    service: service.to_owned(),
                    instance_id: None,
                    pid: 0,
                    runtime: String::new(),
                    host: String::new(),
                },
                started_at_ms: 0,
                time_ms: now,
                up: None,
                values: Vec::new(),
                incidents,
            }),
    );
    rows
}

/// Who `incident` is about, with what the registry knows of its instance.
fn subject_of(state: &State, incident: &Incident) -> Subject {
    let known = incident
        .instance
        .as_deref()
        .and_then(|id| state.registry.get(id));
    Subject {
        service: incident.service.clone(),
        instance_id: incident.instance.clone(),
        pid: known.map_or(0, |i| i.pid),
        runtime: known.map(|i| i.runtime.clone()).unwrap_or_default(),
        host: known.map(|i| i.host.clone()).unwrap_or_default(),
    }
}

/// The resource of a row.
fn resource(row: &Row, collector_host: &str) -> Resource {
    subject_resource(&row.subject, collector_host)
}

/// The resource attributes of `subject`, by the semantic conventions:
/// `service.name`, `service.instance.id`, `host.name` (the probe's, else
/// this collector's host), `process.pid` and `process.runtime.name`.
fn subject_resource(subject: &Subject, collector_host: &str) -> Resource {
    let host = if subject.host.is_empty() {
        collector_host
    } else {
        &subject.host
    };
    let mut attributes = vec![
        text("service.name", &subject.service),
        text("host.name", host),
    ];
    if let Some(instance) = &subject.instance_id {
        attributes.push(text("service.instance.id", instance));
    }
    if subject.pid > 0 {
        attributes.push(attribute(
            "process.pid",
            any_value::Value::IntValue(i64::from(subject.pid)),
        ));
    }
    if !subject.runtime.is_empty() {
        attributes.push(text("process.runtime.name", &subject.runtime));
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// The instrumentation scope of everything exported: this collector.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "meshwatch-collector".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    }
}

/// A text attribute.
fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_owned()))
}

/// An attribute of any value.
fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// This machine's host name, for resources whose probe gave none.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}
