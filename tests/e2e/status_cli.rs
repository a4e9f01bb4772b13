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

/// Runs `meshwatch status` against `collector` with `token` in
/// `MESHWATCH_TOKEN` (none set when `None`).
fn status_with_token(collector: &Collector, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(bin_dir().join("meshwatch"));
    cmd.args(["status", "--collector", &collector.http])
        .env_remove("MESHWATCH_TOKEN");
    if let Some(token) = token {
        cmd.env("MESHWATCH_TOKEN", token);
    }
    cmd.output().unwrap()
}

#[test]
fn beyond_loopback_the_api_asks_for_the_token_and_the_cli_sends_it() {
    let collector = Collector::start_with(Some("s3cret"), &["--http", "0.0.0.0:0"]);
    let refused = status_with_token(&collector, None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("wants its token"), "{stderr}");
    let wrong = status_with_token(&collector, Some("guess"));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    let taken = status_with_token(&collector, Some("s3cret"));
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert!(
        String::from_utf8_lossy(&taken.stdout).contains("no services have reported"),
        "the (empty) mesh, read with the token"
    );
}

#[test]
fn a_collector_will_not_serve_its_api_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin_dir().join("meshwatch-collector"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("MESHWATCH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
}
