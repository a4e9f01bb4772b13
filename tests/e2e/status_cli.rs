//! `meshwatch status` against a real collector and service.

use std::process::Command;

use meshwatch_e2e::{Collector, Service, bin_dir, status};

#[test]
fn status_prints_the_mesh_as_a_table_and_as_json() {
    let collector = Collector::start();
    let service = Service::start(&collector, "inventory", 2);
    collector.wait_for_instance("inventory with a snapshot", |i| {
        i["service"] == "inventory" && !i["headline"].is_null()
    });

    let table = status(&collector, false);
    let header = table.lines().next().unwrap();
    for column in [
        "SERVICE", "INSTANCE", "PID", "STATE", "UPTIME", "CPU", "RSS", "THREADS", "TASKS", "FDS",
        "RESTARTS",
    ] {
        assert!(header.contains(column), "no {column} column in:\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("inventory"))
        .unwrap_or_else(|| panic!("no inventory row in:\n{table}"));
    assert!(row.contains(&service.process.pid().to_string()), "{row}");
    assert!(row.contains(" up "), "{row}");

    let json: serde_json::Value = serde_json::from_str(&status(&collector, true)).unwrap();
    let instances = json["services"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["service"], "inventory");
    assert_eq!(instances[0]["pid"], service.process.pid());
}

#[test]
fn status_explains_an_unreachable_collector() {
    let out = Command::new(bin_dir().join("meshwatch"))
        .args(["status", "--collector", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:9"),
        "error does not name the collector: {stderr}"
    );
}
