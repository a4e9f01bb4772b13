//! Services appear in the registry, go down when killed, and come back as
//! restarts.

use std::time::Duration;

use meshwatch_e2e::{Collector, Service};
use serde_json::Value;

fn is(instance: &Value, service: &str, state: &str) -> bool {
    instance["service"] == service && instance["state"] == state
}

#[test]
fn two_services_show_up_with_plausible_figures() {
    let collector = Collector::start();
    let alpha = Service::start(&collector, "alpha", 2);
    let beta = Service::start(&collector, "beta", 3);

    for (service, name, workers) in [(&alpha, "alpha", 2), (&beta, "beta", 3)] {
        let instance = collector.wait_for_instance(&format!("{name} up with figures"), |i| {
            is(i, name, "up") && i["headline"]["workers"] == workers
        });
        assert_eq!(instance["pid"], service.process.pid());
        let headline = &instance["headline"];
        assert!(headline["rss_bytes"].as_u64().unwrap() > 0, "{instance}");
        // Three or more threads: main, tokio workers, the probe's own.
        assert!(
            headline["threads"].as_u64().unwrap() > workers,
            "{instance}"
        );
        assert!(headline["fds_open"].as_u64().unwrap() >= 3, "{instance}");
        assert!(
            headline["memory_limit_bytes"].as_u64().unwrap() > 0,
            "{instance}"
        );
        // The example links the tracking allocator.
        assert!(
            headline["heap_live_bytes"].as_u64().unwrap() > 0,
            "{instance}"
        );
        assert_eq!(instance["restarts"], 0);
        assert_eq!(instance["instance_id"].as_str().unwrap().len(), 32);
    }
}

#[test]
fn killed_service_turns_down_and_its_successor_is_restarted() {
    let collector = Collector::start();
    let mut first = Service::start(&collector, "fragile", 1);
    let before = collector.wait_for_instance("fragile up", |i| is(i, "fragile", "up"));

    first.process.kill();
    let down = collector.wait_for_instance("fragile down", |i| is(i, "fragile", "down"));
    assert_eq!(down["instance_id"], before["instance_id"]);

    let second = Service::start(&collector, "fragile", 1);
    let after = collector.wait_for_instance("fragile restarted", |i| is(i, "fragile", "restarted"));
    assert_ne!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["pid"], second.process.pid());
    assert_eq!(after["restarts"], 1);
}

/// The open incidents of `kind` on `service`.
fn open_of(collector: &Collector, kind: &str, service: &str) -> Vec<Value> {
    collector.get_json("/api/v1/incidents?state=open")["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["kind"] == kind && i["service"] == service)
        .collect()
}

#[test]
fn a_service_with_no_instance_up_past_the_grace_is_down_until_one_returns() {
    let collector = Collector::start_with(None, &["--service-down-grace-secs", "2"]);
    let mut only = Service::start(&collector, "lonely", 1);
    let up = collector.wait_for_instance("lonely up", |i| is(i, "lonely", "up"));
    only.process.kill();

    let down = meshwatch_e2e::wait_for("service_down on lonely", Duration::from_secs(30), || {
        open_of(&collector, "service_down", "lonely").pop()
    });
    assert_eq!(down["severity"], "critical", "a kill is a death: {down:#}");
    assert!(down["instance"].is_null(), "service-wide: {down:#}");
    let last = &down["evidence"]["last_instance"];
    assert_eq!(last["instance_id"], up["instance_id"], "{down:#}");
    assert_eq!(last["ending"], "disconnected", "{down:#}");
    meshwatch_e2e::recorded::keep(&collector, "service_down", &down);
    assert!(
        down["summary"]
            .as_str()
            .unwrap()
            .contains("connection lost"),
        "{down:#}"
    );
    let report = meshwatch_e2e::report(&collector, &down);
    assert!(
        report
            .markdown
            .contains("| `it ended` | connection lost without a goodbye |"),
        "{}",
        report.markdown
    );

    let _back = Service::start(&collector, "lonely", 1);
    meshwatch_e2e::wait_for("service_down resolved", Duration::from_secs(30), || {
        open_of(&collector, "service_down", "lonely")
            .is_empty()
            .then_some(())
    });
}
