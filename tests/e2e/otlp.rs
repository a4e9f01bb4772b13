//! OpenTelemetry metrics in: a real Node.js process exporting its runtime
//! metrics with the OpenTelemetry SDK (`tests/node/otlp-heap-leak.js`, its
//! packages pinned by `tests/node/package-lock.json`) joins the mesh with
//! no meshwatch code in it; its V8 heap leak opens `memory_growth`, a
//! callback holding its event loop opens `runaway_loop` or
//! `blocked_worker`, and when it dies its instance goes down.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use meshwatch_e2e::{Collector, Foreign, wait_for};
use serde_json::Value;

/// The Node programs' directory.
fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Installs the pinned packages once (`npm ci`), unless `.ci/run` did.
fn install_node_packages() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed || node_dir().join("node_modules/.package-lock.json").exists() {
        *installed = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(node_dir())
        .status()
        .expect("npm runs (it installs the Node programs' OpenTelemetry packages)");
    assert!(status.success(), "npm ci in tests/node failed");
    *installed = true;
}

/// Starts a Node.js service exporting OTLP to `collector` as `service`,
/// in `encoding` (`proto` or `json`), leaking `leak` bytes a second.
fn start_node(
    collector: &Collector,
    service: &str,
    encoding: &str,
    leak: &str,
    env: &[(&str, &str)],
) -> Foreign {
    install_node_packages();
    Foreign::spawn(
        Command::new("node")
            .arg("otlp-heap-leak.js")
            .current_dir(node_dir())
            .env("OTEL_SERVICE_NAME", service)
            .env("OTLP_URL", format!("{}/v1/metrics", collector.http))
            .env("OTLP_ENCODING", encoding)
            .env("LEAK_BYTES_PER_SEC", leak)
            .envs(env.iter().copied()),
        "node (the OTLP-exporting service of this test)",
    )
}

/// How long the V8 heap leak may take to be flagged: the window (20 s)
/// must fill first.
const DETECTION_BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_node_service_exporting_otlp_joins_the_mesh_and_its_heap_leak_opens_memory_growth() {
    let collector = Collector::start_with(None, &["--memory-window-secs", "20"]);
    // 300 KB a second of strings kept forever: 18 MB a minute of V8 heap.
    let mut node = start_node(&collector, "nodeproxy", "proto", "300000", &[]);
    let pid = node.pid();
    let up = collector.wait_for_instance("the node service's first exports", |i| {
        i["service"] == "nodeproxy"
            && i["headline"]["heap_live_bytes"]
                .as_u64()
                .is_some_and(|b| b > 0)
            && i["headline"]["rss_bytes"].as_u64().is_some_and(|b| b > 0)
            // From the cumulative CPU time of two exports.
            && i["headline"]["cpu_percent"].is_number()
    });
    assert_eq!(up["runtime"], "node", "{up:#}");
    assert_eq!(up["pid"], pid, "{up:#}");
    assert!(
        up["probe_version"]
            .as_str()
            .unwrap()
            .starts_with("otlp opentelemetry"),
        "the SDK is named: {up:#}"
    );

    let incident = wait_for("memory_growth on the V8 heap", DETECTION_BOUND, || {
        collector.get_json("/api/v1/incidents")["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["kind"] == "memory_growth" && i["service"] == "nodeproxy")
            .cloned()
    });
    let evidence = &incident["evidence"];
    assert_eq!(evidence["series"], "heap_live_bytes", "{incident:#}");
    let rate = evidence["growth_bytes_per_hour"].as_f64().unwrap();
    assert!(rate > 100e6, "18 MB a minute, blurred by GC: {rate}");

    // Its exports stop with it: down, for its silence, within a few of its
    // measured 1 s intervals.
    node.kill();
    let down = collector.wait_for_instance("the node service down", |i| {
        i["service"] == "nodeproxy" && i["state"] == "down"
    });
    assert_eq!(down["ending"], "missed_heartbeats", "{down:#}");
}

/// The incident of `kind` for `service`, once there is one.
fn incident(collector: &Collector, service: &str, kind: &str) -> Option<Value> {
    collector.get_json("/api/v1/incidents")["incidents"]
        .as_array()?
        .iter()
        .find(|i| i["kind"] == kind && i["service"] == service)
        .cloned()
}

#[test]
fn a_stalled_event_loop_is_a_runaway_loop_when_it_spins_and_a_blocked_worker_when_it_waits() {
    let collector = Collector::start();
    let _node = start_node(
        &collector,
        "nodeloop",
        "proto",
        "0",
        &[("STALLS", "spin@5000:2500,sleep@12000:2500")],
    );
    let bound = Duration::from_secs(40);
    let spun = wait_for("runaway_loop from the spinning callback", bound, || {
        incident(&collector, "nodeloop", "runaway_loop")
    });
    let evidence = &spun["evidence"];
    assert!(
        evidence["stuck_for_ms"].as_u64().unwrap() >= 1_500,
        "{spun:#}"
    );
    assert!(
        evidence["cpu_percent"].as_f64().unwrap() >= 50.0,
        "{spun:#}"
    );
    assert!(
        evidence["caveat"]
            .as_str()
            .unwrap()
            .contains("OpenTelemetry"),
        "how it was seen is said: {spun:#}"
    );
    assert_eq!(evidence["thread"]["name"], "event loop", "{spun:#}");
    assert!(
        !spun["resolved_at_ms"].is_null(),
        "seen once over: {spun:#}"
    );

    let waited = wait_for("blocked_worker from the waiting callback", bound, || {
        incident(&collector, "nodeloop", "blocked_worker")
    });
    assert!(
        waited["evidence"]["cpu_percent"].as_f64().unwrap() < 50.0,
        "{waited:#}"
    );
}

/// POSTs `body` to the collector's OTLP endpoint; the status code.
fn post_metrics(collector: &Collector, content_type: &str, body: &[u8]) -> u16 {
    match ureq::post(format!("{}/v1/metrics", collector.http))
        .header("Content-Type", content_type)
        .send(body)
    {
        Ok(response) => response.status().as_u16(),
        Err(ureq::Error::StatusCode(code)) => code,
        Err(err) => panic!("POST /v1/metrics: {err}"),
    }
}

#[test]
fn json_exports_with_the_token_are_taken_and_others_refused_clearly() {
    let collector = Collector::start_with(Some("s3cret"), &[]);
    let _node = start_node(
        &collector,
        "nodejson",
        "json",
        "0",
        &[("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer s3cret")],
    );
    let up = collector.wait_for_instance("the JSON exporter's instance", |i| {
        i["service"] == "nodejson" && i["headline"]["rss_bytes"].as_u64().is_some_and(|b| b > 0)
    });
    assert_eq!(up["runtime"], "node", "{up:#}");

    assert_eq!(
        post_metrics(&collector, "application/json", b"{}"),
        401,
        "no token"
    );
    let refused = collector.metric("meshwatch_collector_frames_rejected_total");
    assert!(refused.is_some_and(|n| n >= 1.0), "counted: {refused:?}");
}

#[test]
fn an_export_without_a_service_name_is_refused_with_the_reason() {
    let collector = Collector::start();
    let body = br#"{"resourceMetrics":[{"resource":{"attributes":[]},"scopeMetrics":[]}]}"#;
    let response = ureq::post(format!("{}/v1/metrics", collector.http))
        .header("Content-Type", "application/json")
        .config()
        .http_status_as_error(false)
        .build()
        .send(&body[..])
        .expect("POST /v1/metrics");
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = serde_json::from_str(&response.into_body().read_to_string().expect("body"))
        .expect("an OTLP JSON answer");
    let message = answer["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("OTEL_SERVICE_NAME"), "{answer}");
    assert_eq!(post_metrics(&collector, "text/plain", b"x"), 415);
}
