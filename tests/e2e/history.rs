//! The collector's history survives its own SIGKILL: a restarted collector
//! on the same data directory serves what the dead one stored, and its
//! probes reconnect to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwatch_e2e::load::Load;
use meshwatch_e2e::{Collector, Service, wait_for};

const FINE: &[&str] = &["--history-resolution", "1"];

fn rss_points(collector: &Collector, service: &str) -> Vec<(String, usize)> {
    let body = collector.get_json(&format!(
        "/api/v1/series?service={service}&metric=rss_bytes"
    ));
    body["series"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .map(|s| {
                    (
                        s["instance_id"].as_str().unwrap_or_default().to_owned(),
                        s["points"].as_array().map_or(0, Vec::len),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn history_survives_a_collector_killed_with_sigkill() {
    let collector = Collector::start_with(None, FINE);
    let mut service = Service::start(&collector, "durable", 1);
    let before = collector.wait_for_instance("durable up", |i| i["service"] == "durable");
    let instance = before["instance_id"].as_str().unwrap().to_owned();
    // At one stored sample a second, wait until the store has committed at
    // least three rows of it.
    wait_for("three rows committed", Duration::from_secs(30), || {
        collector
            .metric("meshwatch_collector_history_rows_written_total")
            .filter(|&rows| rows >= 3.0)
    });
    service.process.kill();

    let restarted = collector.crash_and_restart(FINE);
    let points = rss_points(&restarted, "durable");
    let old = points
        .iter()
        .find(|(id, _)| *id == instance)
        .unwrap_or_else(|| panic!("no stored history of {instance}: {points:?}"));
    assert!(old.1 >= 3, "only {} stored points survived", old.1);
    // The service itself is unknown to the new registry, but its history is
    // there: the series API answers from the store.
    assert!(restarted.instances().is_empty());
}

/// Issue 13, item 7: the collector killed with SIGKILL and restarted on
/// its ports while its service is under load. The probe reconnects on its
/// own, the service answers every request throughout, and the store holds
/// the dead collector's history up to its last second.
#[test]
fn a_collector_killed_under_load_loses_at_most_its_last_second_and_its_probes_come_back() {
    let collector = Collector::start_with(None, FINE);
    let service = Service::start(&collector, "busy", 2);
    let before = collector.wait_for_instance("busy up", |i| i["service"] == "busy");
    let instance = before["instance_id"].as_str().unwrap().to_owned();
    let load = Load::start(&service.http, 4, 0);
    wait_for("five rows committed", Duration::from_secs(30), || {
        collector
            .metric("meshwatch_collector_history_rows_written_total")
            .filter(|&rows| rows >= 5.0)
    });
    let killed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap())
        .unwrap();

    let restarted = collector.crash_and_restart_in_place(FINE);
    restarted.wait_for_instance("the same probe back", |i| i["instance_id"] == instance);
    let report = load.stop();
    assert_eq!(report.errors, 0, "the service failed requests: {report:?}");
    assert!(report.ok > 0);

    let series =
        restarted.get_json("/api/v1/series?service=busy&metric=rss_bytes&max_points=50000");
    let points = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance_id"] == instance.as_str())
        .and_then(|s| s["points"].as_array().cloned())
        .unwrap_or_default();
    let last_before_kill = points
        .iter()
        .filter_map(|p| p[0].as_i64())
        .filter(|&t| t <= killed_at_ms)
        .max()
        .expect("history from before the kill");
    // Rows go to the store once a second, at one row a second: at most
    // the last second (and a row's own second) is lost.
    assert!(
        killed_at_ms - last_before_kill <= 2_500,
        "the stored history stops {} ms before the kill",
        killed_at_ms - last_before_kill
    );
    // The snapshots the probe took while no collector was up (it retries
    // after 500 ms at the soonest, and a new collector takes longer to
    // start) were kept and sent once it was back: no hole after the kill.
    let during_outage: Vec<i64> = points
        .iter()
        .filter_map(|p| p[0].as_i64())
        .filter(|&t| t > killed_at_ms && t < killed_at_ms + 500)
        .collect();
    assert!(
        !during_outage.is_empty(),
        "nothing from the first 500 ms of the outage: {:?}",
        points
            .iter()
            .filter_map(|p| p[0].as_i64())
            .filter(|&t| t > killed_at_ms - 2_000 && t < killed_at_ms + 3_000)
            .map(|t| t - killed_at_ms)
            .collect::<Vec<_>>()
    );
}
