//! OTLP out (`--otlp-endpoint`): a collector exports a real service's
//! series as OTLP metrics, each instance its own resource, and its
//! runaway loop as log records when it opens and when it resolves. What the
//! endpoint received is decoded with the OpenTelemetry project's own types
//! (`opentelemetry-proto`). The endpoint starts unavailable: the incident's
//! records wait and arrive once it is back.

use std::time::Duration;

use meshwatch_e2e::otlp_sink::OtlpSink;
use meshwatch_e2e::{Collector, Service, http_get, wait_for};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn resource_text<'a>(resource: Option<&'a Resource>, key: &str) -> Option<&'a str> {
    text(&resource?.attributes, key)
}

/// The resources for `service` in every metrics request received.
fn resources_of(sink: &OtlpSink, service: &str) -> Vec<ResourceMetrics> {
    sink.received("/v1/metrics")
        .iter()
        .flat_map(|r| {
            ExportMetricsServiceRequest::decode(&r.body[..])
                .expect("a metrics request OTLP's own types decode")
                .resource_metrics
        })
        .filter(|rm| resource_text(rm.resource.as_ref(), "service.name") == Some(service))
        .collect()
}

fn metric<'a>(resource: &'a ResourceMetrics, name: &str) -> Option<&'a Metric> {
    resource
        .scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

/// The value of a metric's first point, with whether it is a monotonic sum.
fn first_value(metric: &Metric) -> (f64, Option<bool>) {
    let (points, monotonic) = match metric.data.as_ref() {
        Some(metric::Data::Gauge(g)) => (&g.data_points, None),
        Some(metric::Data::Sum(s)) => (&s.data_points, Some(s.is_monotonic)),
        other => panic!("{} is not a number: {other:?}", metric.name),
    };
    let value = match points.first().and_then(|p| p.value.as_ref()) {
        Some(number_data_point::Value::AsDouble(v)) => *v,
        Some(number_data_point::Value::AsInt(v)) => *v as f64,
        None => panic!("{} has no point", metric.name),
    };
    (value, monotonic)
}

/// Every log record received for `service`.
fn records_of(sink: &OtlpSink, service: &str) -> Vec<LogRecord> {
    sink.received("/v1/logs")
        .iter()
        .flat_map(|r| {
            ExportLogsServiceRequest::decode(&r.body[..])
                .expect("a logs request OTLP's own types decode")
                .resource_logs
        })
        .filter(|rl| resource_text(rl.resource.as_ref(), "service.name") == Some(service))
        .flat_map(|rl| rl.scope_logs.into_iter().flat_map(|s| s.log_records))
        .collect()
}

#[test]
fn a_service_and_its_runaway_loop_are_exported_as_otlp_metrics_and_logs() {
    let sink = OtlpSink::start();
    sink.set_unavailable(true);
    let collector = Collector::start_with(
        None,
        &[
            "--otlp-endpoint",
            &sink.url(),
            "--otlp-interval-secs",
            "1",
            "--otlp-header",
            "x-api-key=secret-7",
        ],
    );
    let name = "otlp-exported";
    let service = Service::start_with(&collector, name, 2, &["--fault", "loop"], &[]);
    let instance = collector.wait_for_instance(&format!("{name} mapped"), |i| {
        let tids = i["runtimes"][0]["worker_tids"].as_array();
        i["service"] == name
            && tids.is_some_and(|t| t.len() == 2 && t.iter().all(|tid| tid.as_u64() != Some(0)))
    });
    let instance_id = instance["instance_id"].as_str().unwrap().to_owned();

    // The loop opens and resolves while the endpoint is away.
    service.get("/fault/loop?secs=3");
    collector.wait_for_incident(
        "the runaway loop to open and resolve",
        Duration::from_secs(30),
        |i| i["kind"] == "runaway_loop" && i["service"] == name && !i["resolved_at_ms"].is_null(),
    );
    assert!(
        sink.refused() > 0,
        "the exporter tried while the endpoint was away"
    );
    assert!(records_of(&sink, name).is_empty());
    sink.set_unavailable(false);

    // Its records arrive once the endpoint is back (the backoff is at most a
    // minute), opening first.
    let records = wait_for("both incident records", Duration::from_secs(90), || {
        let records = records_of(&sink, name);
        (records.len() >= 2).then_some(records)
    });
    let opened = &records[0];
    assert_eq!(
        opened.event_name, "meshwatch.incident.opened",
        "{records:#?}"
    );
    assert_eq!(
        text(&opened.attributes, "meshwatch.incident.kind"),
        Some("runaway_loop")
    );
    assert_eq!(
        text(&opened.attributes, "meshwatch.incident.state"),
        Some("open")
    );
    assert_eq!(
        opened.severity_number, 17,
        "a critical incident opens at ERROR: {opened:#?}"
    );
    let summary = match opened.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("the body is the summary: {other:?}"),
    };
    assert!(summary.contains("spins"), "{summary}");
    assert!(
        attribute(&opened.attributes, "meshwatch.evidence.cpu_percent").is_some(),
        "the evidence travels as attributes: {opened:#?}"
    );
    let resolved = records
        .iter()
        .find(|r| r.event_name == "meshwatch.incident.resolved")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(
        text(&resolved.attributes, "meshwatch.incident.id"),
        text(&opened.attributes, "meshwatch.incident.id")
    );
    assert!(resolved.time_unix_nano > opened.time_unix_nano);

    // The metrics: the instance's own resource, named by the conventions.
    let resource = wait_for("the instance's metrics", Duration::from_secs(30), || {
        resources_of(&sink, name).into_iter().last()
    });
    let attrs = resource.resource.as_ref();
    assert_eq!(
        resource_text(attrs, "service.instance.id"),
        Some(instance_id.as_str())
    );
    assert!(resource_text(attrs, "host.name").is_some_and(|h| !h.is_empty()));
    assert_eq!(resource_text(attrs, "process.runtime.name"), Some("rust"));
    let (rss, monotonic) = first_value(metric(&resource, "process.memory.usage").unwrap());
    assert!(rss > 1e6, "an RSS in bytes: {rss}");
    assert_eq!(
        monotonic,
        Some(false),
        "an UpDownCounter, as the conventions say"
    );
    let (cpu, monotonic) = first_value(metric(&resource, "process.cpu.time").unwrap());
    assert!(cpu > 0.0 && monotonic == Some(true), "{cpu}");
    let (up, _) = first_value(metric(&resource, "meshwatch.instance.up").unwrap());
    assert_eq!(up, 1.0);
    assert!(metric(&resource, "meshwatch.tokio.workers").is_some());

    let metrics = sink.received("/v1/metrics");
    assert!(
        metrics[0]
            .headers
            .iter()
            .any(|(n, v)| n == "x-api-key" && v == "secret-7"),
        "--otlp-header is sent: {:?}",
        metrics[0].headers
    );
    let exposition = http_get(&collector.http, "/metrics");
    assert!(
        exposition.contains(
            "meshwatch_collector_otlp_export_requests_total{signal=\"logs\",outcome=\"retried\"}"
        ),
        "the exporter's own counters: {exposition}"
    );
}
