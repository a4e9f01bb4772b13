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

#[test]
fn allow_no_token_starts_beyond_loopback_and_warns_for_each_open_port() {
    let collector = Collector::start_with(
        None,
        &[
            "--listen",
            "0.0.0.0:0",
            "--http",
            "0.0.0.0:0",
            "--allow-no-token",
        ],
    );
    assert_eq!(
        collector.get_json("/api/v1/services")["services"],
        serde_json::json!([])
    );
    let stderr = collector.process.stderr();
    for what in [
        "listening for probes beyond loopback",
        "listening for the HTTP API beyond loopback",
    ] {
        assert!(stderr.contains(what), "no warning for {what}: {stderr}");
    }
}

/// Runs `meshwatch status` with `args` and `envs` (and no MESHWATCH_URL),
/// and insists it worked.
fn status_of_mesh(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(bin_dir().join("meshwatch"))
        .arg("status")
        .args(args)
        .env_remove("MESHWATCH_URL")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "meshwatch status {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn status_shows_one_mesh_over_three_collectors_and_names_the_unreachable() {
    let mut collectors: Vec<Collector> = (0..3).map(|_| Collector::start()).collect();
    let services: Vec<Service> = collectors
        .iter()
        .zip(["orders", "payments", "ledger"])
        .map(|(collector, name)| Service::start(collector, name, 1))
        .collect();
    for (collector, name) in collectors.iter().zip(["orders", "payments", "ledger"]) {
        collector.wait_for_instance(name, |i| i["service"] == name && !i["headline"].is_null());
    }
    let urls: Vec<String> = collectors.iter().map(|c| c.http.clone()).collect();
    let flags: Vec<&str> = urls
        .iter()
        .flat_map(|url| ["--collector", url.as_str()])
        .collect();

    let table = status_of_mesh(&flags, &[]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[..3], ["SERVICE", "HOST", "INSTANCE"], "{table}");
    for (service, name) in services.iter().zip(["orders", "payments", "ledger"]) {
        let row = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{table}"));
        assert!(row.contains(&service.process.pid().to_string()), "{row}");
    }
    let json: serde_json::Value = serde_json::from_str(&status_of_mesh(
        &[flags.as_slice(), &["--json"]].concat(),
        &[],
    ))
    .unwrap();
    let instances = json["services"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{json:#}");
    for (url, name) in urls.iter().zip(["orders", "payments", "ledger"]) {
        let instance = instances.iter().find(|i| i["service"] == name).unwrap();
        assert_eq!(instance["collector"], url.as_str(), "{instance:#}");
    }
    assert_eq!(json["unreachable"], serde_json::json!([]));

    // The same mesh from the config file, with no flag.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(&config, format!("collectors = [{}]\n", list.join(", "))).unwrap();
    let config_env = [("MESHWATCH_CONFIG", config.to_str().unwrap())];
    let from_file = status_of_mesh(&[], &config_env);
    for name in ["orders", "payments", "ledger"] {
        assert!(from_file.contains(name), "{from_file}");
    }

    // One collector gone: the other two still show, and it is named.
    collectors[1].process.kill();
    let table = status_of_mesh(&[], &config_env);
    assert!(
        table.contains("orders") && table.contains("ledger"),
        "{table}"
    );
    assert!(!table.lines().any(|l| l.starts_with("payments")), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("unreachable: {}", urls[1]))),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&status_of_mesh(&["--json"], &config_env)).unwrap();
    assert_eq!(json["services"].as_array().unwrap().len(), 2, "{json:#}");
    assert_eq!(json["unreachable"][0]["collector"], urls[1].as_str());
}
