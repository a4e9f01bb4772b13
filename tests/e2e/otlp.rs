//! OpenTelemetry metrics in: a real Node.js process exporting its runtime
//! metrics with the OpenTelemetry SDK (`tests/node/otlp-heap-leak.js`, its
//! packages pinned by `tests/node/package-lock.json`) joins the mesh with
//! no meshwatch code in it; its V8 heap leak opens `memory_growth`, a
//! callback holding its event loop opens `runaway_loop` or
//! `blocked_worker`, and when it dies its instance goes down.

use std::process::Command;
use std::time::Duration;

use meshwatch_e2e::foreign::{
    install_node_packages, install_python_packages, node_dir, python_dir,
};
use meshwatch_e2e::{Collector, Foreign, wait_for};
use serde_json::Value;

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
            // The service's name on the command line too, so a `--watch`
            // pattern can pick this process out of the tests' others.
            .args(["otlp-heap-leak.js", service])
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
/// must fill first, and a loaded machine delays the exports.
const DETECTION_BOUND: Duration = Duration::from_secs(120);

#[test]
fn a_node_service_exporting_otlp_joins_the_mesh_and_its_heap_leak_opens_memory_growth() {
    let collector = Collector::start_with(None, &["--memory-window-secs", "20"]);
    // 500 KB a second kept forever: 30 MB a minute of V8 heap.
    let mut node = start_node(&collector, "nodeproxy", "proto", "500000", &[]);
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
    // 1.8 GB an hour, blurred by GC and by a loaded machine's timers.
    assert!(rate > 600e6, "{rate}");

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

#[test]
fn a_process_both_watched_and_exporting_otlp_is_one_instance_with_both_views() {
    let collector =
        Collector::start_with(None, &["--watch", r"otlp-heap-leak\.js nodeboth$=nodeboth"]);
    let node = start_node(&collector, "nodeboth", "proto", "100000", &[]);
    let pid = node.pid();
    // The watcher's view (sockets, threads from /proc) with the export's
    // V8 heap, in one instance of the process.
    let both = collector.wait_for_instance("the watched process with its V8 heap", |i| {
        i["service"] == "nodeboth"
            && i["pid"] == pid
            && i["watched_from_outside"] == true
            && i["headline"]["heap_live_bytes"]
                .as_u64()
                .is_some_and(|b| b > 0)
    });
    assert!(
        both["headline"]["threads"].as_u64().unwrap() > 1,
        "{both:#}"
    );
    // Any instance the exports made before the watcher picked the process
    // up is gone.
    std::thread::sleep(Duration::from_secs(3));
    let instances: Vec<Value> = collector
        .instances()
        .into_iter()
        .filter(|i| i["pid"] == pid)
        .collect();
    assert_eq!(instances.len(), 1, "{instances:#?}");
}

#[test]
fn a_python_service_leaking_into_a_dict_opens_memory_growth_through_its_otlp_export() {
    let collector = Collector::start_with(None, &["--memory-window-secs", "20"]);
    install_python_packages();
    let python = Foreign::spawn(
        Command::new(python_dir().join(".venv/bin/python"))
            .arg("otlp_dict_leak.py")
            .current_dir(python_dir())
            .env("OTEL_SERVICE_NAME", "pyleak")
            .env("OTLP_URL", format!("{}/v1/metrics", collector.http))
            // 2 MB a second: 120 MB a minute of RSS.
            .env("LEAK_BYTES_PER_SEC", "2000000"),
        "python3 (the OTLP-exporting service of this test)",
    );
    let up = collector.wait_for_instance("the python service's exports", |i| {
        i["service"] == "pyleak" && i["headline"]["rss_bytes"].as_u64().is_some_and(|b| b > 0)
    });
    assert_eq!(up["runtime"], "python", "{up:#}");
    assert_eq!(up["pid"], python.pid(), "{up:#}");
    assert!(up["headline"]["threads"].as_u64().unwrap() >= 1, "{up:#}");
    let incident = wait_for(
        "memory_growth on the python service's RSS",
        DETECTION_BOUND,
        || incident(&collector, "pyleak", "memory_growth"),
    );
    assert_eq!(incident["evidence"]["series"], "rss_bytes", "{incident:#}");
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
