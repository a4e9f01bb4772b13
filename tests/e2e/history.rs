//! The collector's history survives its own SIGKILL: a restarted collector
//! on the same data directory serves what the dead one stored.

use std::time::Duration;

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
