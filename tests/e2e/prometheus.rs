//! Prometheus alerting on meshwatch's incidents, with Debian's real
//! Prometheus (`.ci/run` installs it): the shipped configuration and rules
//! pass promtool, a live collector's `/metrics` passes promtool's linter,
//! and a Prometheus server scraping a real collector fires
//! `MeshwatchRunawayLoop` for a service stuck in a loop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use meshwatch_e2e::{Collector, Service, wait_for};
use serde_json::Value;

/// A Prometheus server run by a test; killed when dropped.
pub(crate) struct Prometheus {
    child: Child,
    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl Prometheus {
    /// Starts Prometheus on `config` with its TSDB in `tsdb`, and waits
    /// until it is ready.
    pub(crate) fn start(config: &Path, tsdb: &Path) -> Self {
        let prometheus = installed("prometheus");
        let port = free_port();
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--storage.tsdb.retention.time=30d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_for("Prometheus ready", Duration::from_secs(60), || {
            ureq::get(&format!("{}/-/ready", server.url)).call().ok()
        });
        server
    }

    /// GETs `path` of its API and returns the JSON.
    fn get(&self, path: &str) -> Value {
        let body = meshwatch_e2e::http_get(&self.url, path);
        serde_json::from_str(&body).unwrap_or_else(|err| panic!("{path}: {err}: {body}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of `program` from Debian's prometheus package; panics saying
/// how to get it when it is missing.
pub(crate) fn installed(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "this test needs {program} from Debian's prometheus package; .ci/run installs it"
            )
        })
}

/// A port free a moment ago, for a server that cannot report the one it
/// bound.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `deploy/prometheus/`, where the shipped configuration and rules are.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Runs `promtool ARGS`, with `stdin` on its standard input.
fn promtool(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(installed("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write promtool's input");
    child.wait_with_output().expect("promtool ends")
}

fn assert_passes(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "promtool rejects {what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A collector and a service of it in a runaway loop, once the incident
/// is open; the service's instance id.
fn stuck_in_a_loop(collector: &Collector) -> (Service, String) {
    let service = Service::start_with(collector, "spinner", 2, &["--fault", "loop"], &[]);
    let instance =
        collector.wait_for_instance("the spinner reporting", |i| i["service"] == "spinner");
    service.get("/fault/loop");
    wait_for("a runaway_loop incident", Duration::from_secs(20), || {
        let open = collector.get_json("/api/v1/incidents?state=open");
        open["incidents"]
            .as_array()?
            .iter()
            .any(|i| i["kind"] == "runaway_loop")
            .then_some(())
    });
    let id = instance["instance_id"].as_str().unwrap().to_owned();
    (service, id)
}

#[test]
fn the_shipped_configuration_rules_and_a_live_collectors_metrics_pass_promtool() {
    let config = deploy_dir().join("prometheus.yml");
    assert_passes(
        &promtool(&["check", "config", config.to_str().unwrap()], ""),
        "deploy/prometheus/prometheus.yml",
    );
    let rules = deploy_dir().join("alerts.yml");
    assert_passes(
        &promtool(&["check", "rules", rules.to_str().unwrap()], ""),
        "deploy/prometheus/alerts.yml",
    );

    let collector = Collector::start();
    let (_service, instance) = stuck_in_a_loop(&collector);
    let metrics = meshwatch_e2e::http_get(&collector.http, "/metrics");
    assert_passes(
        &promtool(&["check", "metrics"], &metrics),
        "the collector's /metrics",
    );
    let open = format!(
        "meshwatch_incident_open{{kind=\"runaway_loop\",severity=\"critical\",service=\"spinner\",instance=\"{instance}\"}} 1"
    );
    assert!(metrics.contains(&open), "{open} in:\n{metrics}");
    let up = format!(
        "meshwatch_instance_up{{service=\"spinner\",instance=\"{instance}\",runtime=\"rust\"}} 1"
    );
    assert!(metrics.contains(&up), "{up} in:\n{metrics}");
    assert!(
        metrics.contains("# TYPE meshwatch_incident_open gauge"),
        "{metrics}"
    );
}

#[test]
fn a_real_prometheus_scraping_a_collector_fires_the_runaway_loop_alert() {
    let collector = Collector::start();
    let (_service, instance) = stuck_in_a_loop(&collector);
    // The shipped configuration, scraping this collector every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let shipped = std::fs::read_to_string(deploy_dir().join("prometheus.yml")).unwrap();
    let rules = deploy_dir().join("alerts.yml").canonicalize().unwrap();
    let ours = shipped
        .replace(
            "127.0.0.1:6741",
            collector.http.trim_start_matches("http://"),
        )
        .replace(": 15s", ": 1s")
        .replace("- alerts.yml", &format!("- {}", rules.display()));
    assert_ne!(ours, shipped);
    std::fs::write(&config, ours).unwrap();
    let prometheus = Prometheus::start(&config, &dir.path().join("tsdb"));

    let query = "/api/v1/query?query=meshwatch_incident_open%7Bkind%3D%22runaway_loop%22%7D";
    let result = wait_for(
        "the incident in Prometheus",
        Duration::from_secs(60),
        || {
            let answer = prometheus.get(query);
            let result = answer["data"]["result"].as_array()?.first()?.clone();
            (result["value"][1] == "1").then_some(result)
        },
    );
    assert_eq!(result["metric"]["instance"], instance, "{result:#}");
    assert_eq!(result["metric"]["service"], "spinner", "{result:#}");
    let alert = wait_for("the alert firing", Duration::from_secs(60), || {
        let alerts = prometheus.get("/api/v1/alerts");
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "MeshwatchRunawayLoop" && a["state"] == "firing")
            .cloned()
    });
    assert_eq!(alert["labels"]["severity"], "critical", "{alert:#}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("spinner:")),
        "{alert:#}"
    );
}
