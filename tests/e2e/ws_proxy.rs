//! The service of the story behind meshwatch: a Node.js WebSocket proxy
//! (`tests/node/ws-proxy.js`, the `ws` package) that keeps each client's
//! history for as long as the client stays connected, so its memory climbs
//! with long-lived connections. Flagged with no change to it: watched from
//! outside by pid (its RSS), or through its own OpenTelemetry exports (its
//! V8 heap, with the time to the heap limit).

use std::process::Command;
use std::time::Duration;

use meshwatch_e2e::foreign::{install_node_packages, node_dir};
use meshwatch_e2e::{Collector, Foreign, wait_for};
use serde_json::Value;

/// Long-lived clients: 20 connections, each sending 10 messages of 4 KB a
/// second, all kept: about 2.9 GB an hour.
const CLIENTS: [&str; 3] = ["20", "10", "4000"];

/// How long the leak may take to be flagged: the 20 s window must fill,
/// and a loaded machine delays the samples.
const DETECTION_BOUND: Duration = Duration::from_secs(120);

fn start_proxy(env: &[(&str, &str)]) -> (Foreign, u16) {
    install_node_packages();
    Foreign::spawn_listening(
        Command::new("node")
            .arg("ws-proxy.js")
            .current_dir(node_dir())
            .envs(env.iter().copied()),
        "node (the WebSocket proxy of this test)",
    )
}

fn start_clients(port: u16) -> Foreign {
    Foreign::spawn(
        Command::new("node")
            .arg("ws-clients.js")
            .arg(port.to_string())
            .args(CLIENTS)
            .current_dir(node_dir()),
        "node (the proxy's clients)",
    )
}

fn memory_growth(collector: &Collector, service: &str) -> Value {
    wait_for("memory_growth", DETECTION_BOUND, || {
        collector.get_json("/api/v1/incidents")["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["kind"] == "memory_growth" && i["service"] == service)
            .cloned()
    })
}

#[test]
fn a_websocket_proxy_keeping_its_clients_history_is_flagged_from_outside_by_pid() {
    let (proxy, port) = start_proxy(&[]);
    let watch = format!("{}=wsproxy", proxy.pid());
    let collector =
        Collector::start_with(None, &["--memory-window-secs", "20", "--watch-pid", &watch]);
    let _clients = start_clients(port);
    let connected = collector.wait_for_instance("the proxy with its clients connected", |i| {
        i["service"] == "wsproxy"
            && i["headline"]["tcp_established"]
                .as_u64()
                .is_some_and(|n| n >= 20)
    });
    assert_eq!(connected["runtime"], "node", "{connected:#}");

    let incident = memory_growth(&collector, "wsproxy");
    let evidence = &incident["evidence"];
    assert_eq!(evidence["series"], "rss_bytes", "{incident:#}");
    let rate = evidence["growth_bytes_per_hour"].as_f64().unwrap();
    assert!(rate > 500e6, "about 2.9 GB an hour: {rate}");
}

#[test]
fn the_same_proxy_exporting_otlp_is_flagged_on_its_v8_heap_with_the_time_to_its_limit() {
    let collector = Collector::start_with(None, &["--memory-window-secs", "20"]);
    let url = format!("{}/v1/metrics", collector.http);
    let (_proxy, port) = start_proxy(&[("OTEL_SERVICE_NAME", "wsproxy-otlp"), ("OTLP_URL", &url)]);
    let _clients = start_clients(port);

    let incident = memory_growth(&collector, "wsproxy-otlp");
    let evidence = &incident["evidence"];
    assert_eq!(evidence["series"], "heap_live_bytes", "{incident:#}");
    let limit = evidence["heap_limit_bytes"].as_u64().unwrap_or(0);
    assert!(limit > 100 << 20, "V8's heap limit: {incident:#}");
    let to_limit = evidence["projected_time_to_limit_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        to_limit > 0.0 && to_limit < 24.0 * 3600.0,
        "hours, at gigabytes an hour: {incident:#}"
    );
}
