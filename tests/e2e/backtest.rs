//! `meshwatch backtest` over recorded history (issue 12, item 5): days of
//! synthetic history with a slow leak and a daily swing, from a CSV file
//! and from a real Prometheus server loaded with `promtool`.

use std::f64::consts::PI;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use meshwatch_e2e::{Collector, Service, bin_dir, wait_for};

const MIB: f64 = 1024.0 * 1024.0;
const HOUR_S: i64 = 3600;
/// Recorded time between detection passes over days of history: the
/// default minute costs a debug build a minute of CPU per replay, and a
/// leak over days is as well seen every five (as in `slow_leaks.rs`).
const PASS_EVERY: &str = "5m";

/// RSS of `proxy`, leaking 10 MiB/h under a 30 MiB daily swing, and of
/// `steady`, swinging 30 MiB a day with no leak, `s` seconds in.
fn rss(service: &str, s: i64) -> f64 {
    let swing = -15.0 * MIB * (2.0 * PI * s as f64 / (24 * HOUR_S) as f64).cos();
    // A little noise that repeats: the same history every run.
    let noise = ((s / 60 * 7919) % 200) as f64 / 100.0 * MIB - MIB;
    let leak = if service == "proxy" {
        10.0 * MIB * s as f64 / HOUR_S as f64
    } else {
        0.0
    };
    300.0 * MIB + swing + leak + noise
}

/// Runs `meshwatch backtest` with `args` and returns its JSON report.
fn backtest(args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin_dir().join("meshwatch"))
        .arg("backtest")
        .args(args)
        .arg("--json")
        .output()
        .expect("run meshwatch backtest");
    assert!(
        out.status.success(),
        "backtest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// Checks the report of the two services' history: `proxy`'s leak flagged
/// within 12 hours of `start_s` with a projected time to its limit, and
/// nothing else.
fn assert_flags_the_leak_only(report: &serde_json::Value, start_s: i64) {
    let incidents = report["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1, "{report:#}");
    let incident = &incidents[0];
    assert_eq!(incident["kind"], "memory_growth");
    assert_eq!(incident["service"], "proxy");
    let hours = (incident["opened_at_ms"].as_i64().unwrap() / 1000 - start_s) as f64 / 3600.0;
    assert!(hours <= 12.0, "flagged {hours:.1} h into the leak");
    let left = &incident["evidence"]["projected_time_to_limit_seconds"];
    assert!(left.as_f64().is_some_and(|s| s > 0.0), "{incident:#}");
}

#[test]
fn a_csv_history_of_three_days_flags_the_slow_leak_and_not_the_swing() {
    let dir = tempfile::tempdir().unwrap();
    let start_s = unix_seconds() - 3 * 24 * HOUR_S;
    let mut csv = String::from("time,service,instance,metric,value\n");
    for s in (0..3 * 24 * HOUR_S).step_by(30) {
        for service in ["proxy", "steady"] {
            let t = start_s + s;
            writeln!(
                csv,
                "{t},{service},{service}-1,rss_bytes,{:.0}",
                rss(service, s)
            )
            .unwrap();
            writeln!(
                csv,
                "{t},{service},{service}-1,memory_limit_bytes,{}",
                4096.0 * MIB
            )
            .unwrap();
        }
    }
    let path = dir.path().join("history.csv");
    std::fs::write(&path, csv).unwrap();

    let report = backtest(&["--csv", path.to_str().unwrap(), "--step", PASS_EVERY]);
    assert_flags_the_leak_only(&report, start_s);
    assert_eq!(report["instances"], 2);

    // The text names the window that decided.
    let out = Command::new(bin_dir().join("meshwatch"))
        .args([
            "backtest",
            "--csv",
            path.to_str().unwrap(),
            "--step",
            PASS_EVERY,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decided on a window of"), "{text}");
    assert!(text.contains("projected time to the limit"), "{text}");
}

#[test]
fn a_week_in_a_real_prometheus_is_backtested_through_its_query_api() {
    let promtool = crate::prometheus::installed("promtool");
    let dir = tempfile::tempdir().unwrap();
    // A week of one-minute samples, ending a minute ago; the leak starts on
    // the fifth day, after four days of the swing alone.
    let end_s = unix_seconds() - 60;
    let start_s = end_s - 7 * 24 * HOUR_S;
    let leak_from_s = start_s + 4 * 24 * HOUR_S;
    let mut om = String::from("# TYPE process_resident_memory_bytes gauge\n");
    for service in ["proxy", "steady"] {
        for t in (start_s..=end_s).step_by(60) {
            let leak = if service == "proxy" && t >= leak_from_s {
                10.0 * MIB * (t - leak_from_s) as f64 / HOUR_S as f64
            } else {
                0.0
            };
            let value = rss("steady", t - start_s) + leak;
            writeln!(
                om,
                "process_resident_memory_bytes{{job=\"{service}\",instance=\"{service}:9100\"}} {value:.0} {t}"
            )
            .unwrap();
        }
    }
    om.push_str("# EOF\n");
    let om_path = dir.path().join("week.om");
    std::fs::write(&om_path, om).unwrap();
    let tsdb = dir.path().join("tsdb");
    let made = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om_path)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let server = crate::prometheus::Prometheus::start(&config, &tsdb);
    let url = server.url.clone();

    let report = backtest(&[
        "--prometheus",
        &url,
        "--query",
        "process_resident_memory_bytes",
        "--since",
        "7d",
        "--resolution",
        "60s",
        "--step",
        PASS_EVERY,
    ]);
    drop(server);
    let incidents = report["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1, "{report:#}");
    let incident = &incidents[0];
    assert_eq!(incident["kind"], "memory_growth");
    assert_eq!(incident["service"], "proxy");
    assert_eq!(incident["instance"], serde_json::Value::Null);
    let opened_s = incident["opened_at_ms"].as_i64().unwrap() / 1000;
    let hours = (opened_s - leak_from_s) as f64 / 3600.0;
    assert!(
        (0.0..=12.0).contains(&hours),
        "flagged {hours:.1} h into the leak"
    );
    assert_eq!(report["instances"], 2, "{report:#}");
}

fn unix_seconds() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(now.expect("a clock after 1970").as_secs()).expect("seconds fit")
}

#[test]
fn a_collectors_own_history_is_replayed_through_its_api_and_from_its_data_dir() {
    let mut collector = Collector::start_with(None, &["--history-resolution", "1"]);
    let _service = Service::start(&collector, "inventory", 1);
    collector.wait_for_instance("the service reporting", |i| i["service"] == "inventory");
    // Six seconds of history, a stored row a second.
    wait_for("six seconds of history", Duration::from_secs(60), || {
        let series = collector.get_json("/api/v1/series?service=inventory&metric=rss_bytes");
        let points = series["series"][0]["points"].as_array()?;
        let t = |p: Option<&serde_json::Value>| p?[0].as_i64();
        (t(points.last())? - t(points.first())? >= 6000).then_some(())
    });
    // A running collector: through its API.
    // Over the default week: more points than the API gives at once.
    let live = backtest(&["--collector", &collector.http, "--service", "inventory"]);
    assert_eq!(live["instances"], 1, "{live:#}");
    assert!(
        live["rows"].as_u64().is_some_and(|rows| rows >= 5),
        "{live:#}"
    );

    // Its data dir is refused while it runs, with what to do instead.
    let data_dir = collector.data_dir().to_str().unwrap().to_owned();
    let held = Command::new(bin_dir().join("meshwatch"))
        .args(["backtest", "--data-dir", &data_dir])
        .output()
        .unwrap();
    assert!(!held.status.success());
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(stderr.contains("--collector"), "{stderr}");

    // Stopped: from its store.
    collector.process.kill();
    let stored = backtest(&["--data-dir", &data_dir, "--since", "1h"]);
    assert_eq!(stored["instances"], 1, "{stored:#}");
    assert!(
        stored["rows"].as_u64().is_some_and(|rows| rows >= 5),
        "{stored:#}"
    );
}
