//! Services in other languages, with no code change: a Python process
//! watched from outside by the collector's `--watch`, its figures, its
//! death and its restart.

use std::process::{Command, Stdio};

use meshwatch_e2e::{Collector, Foreign};
use serde_json::Value;

/// A Python HTTP server.
fn start_python() -> Foreign {
    Foreign::spawn(
        Command::new("python3")
            .args(["-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(std::env::temp_dir()),
        "python3 (the watched process of this test)",
    )
}

fn is_pid(instance: &Value, pid: u32) -> bool {
    instance["service"] == "pyweb" && instance["pid"] == pid
}

#[test]
fn a_python_process_is_watched_from_outside_through_its_death_and_restart() {
    let collector = Collector::start_with(None, &["--watch", r"http\.server=pyweb"]);
    let mut first = start_python();
    let pid = first.pid();
    let up = collector.wait_for_instance("the python process watched", |i| {
        is_pid(i, pid)
            && i["headline"]["rss_bytes"]
                .as_u64()
                .is_some_and(|rss| rss > 0)
            && !i["sockets"]["listening"]
                .as_array()
                .is_none_or(Vec::is_empty)
    });
    assert_eq!(up["runtime"], "python", "{up:#}");
    assert!(up["headline"]["threads"].as_u64().unwrap() >= 1, "{up:#}");
    assert!(up["headline"]["fds_open"].as_u64().unwrap() >= 3, "{up:#}");
    assert!(
        up["headline"]["heap_live_bytes"].is_null(),
        "no heap from outside: {up:#}"
    );

    first.kill();
    let down = collector.wait_for_instance("the python process down", |i| {
        is_pid(i, pid) && i["state"] == "down"
    });
    assert_eq!(
        down["ending"], "disconnected",
        "a death, not a stop: {down:#}"
    );

    let second = start_python();
    let next = collector.wait_for_instance("its successor", |i| is_pid(i, second.pid()));
    assert_eq!(next["state"], "restarted", "{next:#}");
    assert_eq!(next["restarts"], 1, "{next:#}");
    assert_ne!(next["instance_id"], up["instance_id"]);
}

#[test]
fn a_node_process_dying_again_and_again_is_a_crash_loop() {
    let collector = Collector::start_with(
        None,
        &[
            "--watch",
            "meshwatch-e2e-crasher=crasher",
            "--leak-window-secs",
            "20",
        ],
    );
    // The test is the supervisor: it starts the process again each time it
    // dies (here, killed once it is watched).
    for life in 0..4 {
        let mut node = Command::new("node")
            .args(["-e", "setInterval(() => {}, 1000)", "meshwatch-e2e-crasher"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs (the watched process of this test)");
        let pid = node.id();
        let up = collector.wait_for_instance(&format!("life {life} watched"), |i| {
            i["service"] == "crasher" && i["pid"] == pid
        });
        assert_eq!(up["runtime"], "node", "{up:#}");
        assert_eq!(up["watched_from_outside"], true, "{up:#}");
        let _ = node.kill();
        let _ = node.wait();
        collector.wait_for_instance(&format!("life {life} down"), |i| {
            i["pid"] == pid && i["state"] == "down"
        });
    }
    meshwatch_e2e::wait_for(
        "crash_loop on crasher",
        std::time::Duration::from_secs(60),
        || {
            collector.get_json("/api/v1/incidents?state=open")["incidents"]
                .as_array()?
                .iter()
                .find(|i| i["kind"] == "crash_loop" && i["service"] == "crasher")
                .cloned()
        },
    );
}
