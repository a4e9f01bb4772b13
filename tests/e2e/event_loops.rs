//! Event loops watched from outside: a real Node.js service and a real
//! gevent service, with no meshwatch code in them, watched by the
//! collector's `--watch-pid`. A callback that never yields opens
//! `runaway_loop` within seconds with the spinning JavaScript or Python
//! function named; a synchronous wait opens `blocked_worker`; both resolve
//! when the loop turns again; a minute of saturating load opens nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use meshwatch_e2e::foreign::{
    install_python_packages, node_dir, python_dir, request_in_background as request,
};
use meshwatch_e2e::load::Load;
use meshwatch_e2e::{Collector, Foreign, wait_for};
use serde_json::Value;

/// The target is 3 s from the loop's start to the incident; the bound is
/// wider for a CI machine running the other tests at the same time.
const FLAGGED_WITHIN: Duration = Duration::from_secs(6);

/// `tests/node/loop-service.js`, with the perf map that names its
/// JavaScript functions, compiled or still interpreted.
fn start_node() -> (Foreign, u16) {
    Foreign::spawn_listening(
        Command::new("node")
            .args(["--perf-basic-prof", "--interpreted-frames-native-stack"])
            // Its own working directory: V8 writes a log there.
            .arg(node_dir().join("loop-service.js")),
        "node (the event-loop service of this test)",
    )
}

/// `tests/python/gevent_service.py`.
fn start_gevent() -> (Foreign, u16) {
    install_python_packages();
    Foreign::spawn_listening(
        Command::new(python_dir().join(".venv/bin/python"))
            .arg("gevent_service.py")
            .current_dir(python_dir()),
        "python (the gevent service of this test)",
    )
}

/// The collector watching `services` (pid and name), once each is an
/// instance and its loop has had time to be seen turning.
fn watching(services: &[(&Foreign, &str)]) -> Collector {
    let args: Vec<String> = services
        .iter()
        .flat_map(|(process, name)| {
            [
                "--watch-pid".to_owned(),
                format!("{}={name}", process.pid()),
            ]
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let collector = Collector::start_with(None, &args);
    for (process, name) in services {
        collector.wait_for_instance("the service watched from outside", |i| {
            i["service"] == *name && i["pid"] == process.pid()
        });
    }
    // The loop watcher looks four times a second from the moment the
    // process is watched; a second covers its first turns.
    std::thread::sleep(Duration::from_secs(1));
    collector
}

fn incidents(collector: &Collector, service: &str, kind: &str) -> Vec<Value> {
    collector.get_json("/api/v1/incidents")["incidents"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|i| i["service"] == service && i["kind"] == kind)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for an open incident of `kind` on `service` whose evidence
/// satisfies `complete`, and says how long after `since` it was seen.
fn flagged(
    collector: &Collector,
    service: &str,
    kind: &str,
    since: Instant,
    complete: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let incident = wait_for(kind, Duration::from_secs(30), || {
        incidents(collector, service, kind)
            .into_iter()
            .find(|i| i["resolved_at_ms"].is_null() && complete(i))
    });
    (incident, since.elapsed())
}

fn resolved(collector: &Collector, incident: &Value) {
    wait_for("the incident resolved", Duration::from_secs(30), || {
        incidents(
            collector,
            incident["service"].as_str()?,
            incident["kind"].as_str()?,
        )
        .into_iter()
        .find(|i| i["id"] == incident["id"] && !i["resolved_at_ms"].is_null())
    });
}

/// Whether the evidence's frames or hot leaves hold one of `functions` in
/// `file`, with a line.
fn names(incident: &Value, functions: &[&str], file: &str) -> bool {
    let evidence = &incident["evidence"];
    let frames = evidence["frames"].as_array().into_iter().flatten();
    let hot = evidence["hot_frames"].as_array().into_iter().flatten();
    frames.chain(hot).any(|frame| {
        functions.iter().any(|f| frame["function"] == *f)
            && frame["file"]
                .as_str()
                .is_some_and(|path| path.ends_with(file))
            && frame["line"].as_u64().is_some_and(|line| line > 0)
    })
}

/// The service `service` on `port`, watched by `collector`: a request
/// that spins its loop for 6 s is a `runaway_loop` naming one of
/// `spinning` in `file`, and one that blocks it 4 s a `blocked_worker`;
/// each resolves when the loop turns again.
fn spins_and_blocks_are_flagged(
    collector: &Collector,
    service: &str,
    port: u16,
    spinning: &[&str],
    file: &str,
) {
    let started = Instant::now();
    let spin = request(port, "/spin?ms=6000");
    let (incident, after) = flagged(collector, service, "runaway_loop", started, |i| {
        names(i, spinning, file)
    });
    assert!(
        after < FLAGGED_WITHIN,
        "named after {after:?}: {incident:#}"
    );
    assert_eq!(incident["evidence"]["event_loop"], true, "{incident:#}");
    let summary = incident["summary"].as_str().unwrap();
    assert!(summary.starts_with("the event loop"), "{summary}");
    assert!(
        spinning
            .iter()
            .any(|f| summary.contains(&format!("{f} ({file}:"))),
        "{summary}"
    );
    assert!(
        incident["evidence"]["caveat"]
            .as_str()
            .unwrap()
            .contains("epoll"),
        "how it was seen: {incident:#}"
    );
    meshwatch_e2e::recorded::keep(collector, &format!("{service}_runaway_loop"), &incident);
    spin.join().unwrap();
    resolved(collector, &incident);

    let started = Instant::now();
    let block = request(port, "/block?ms=4000");
    let (blocked, after) = flagged(collector, service, "blocked_worker", started, |_| true);
    assert!(
        after < FLAGGED_WITHIN,
        "flagged after {after:?}: {blocked:#}"
    );
    assert!(
        incidents(collector, service, "runaway_loop")
            .iter()
            .all(|i| i["id"] == incident["id"]),
        "a wait is not a spin"
    );
    block.join().unwrap();
    resolved(collector, &blocked);

    // Profiled from outside too, by `meshwatch profile`, with the same
    // sampling: the spinning function takes the CPU.
    let spin = request(port, "/spin?ms=4000");
    let out = tempfile::tempdir().unwrap();
    let run = crate::profile::profile(
        collector,
        &[service, "--seconds", "2", "--hz", "200"],
        out.path(),
    );
    assert!(
        run.status.success(),
        "profile from outside: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let by_function = crate::profile::cpu_by_function(&crate::profile::decode(out.path()));
    assert!(
        spinning
            .iter()
            .any(|f| by_function.get(*f).is_some_and(|ns| *ns > 0)),
        "{spinning:?} in {:?}",
        by_function.keys().collect::<Vec<_>>()
    );
    spin.join().unwrap();
}

#[test]
fn a_node_callback_that_never_yields_is_a_runaway_loop_named_in_javascript() {
    let (node, port) = start_node();
    let collector = watching(&[(&node, "nodeloop")]);
    let spinning = ["busyFor", "spinWithoutYielding"];
    spins_and_blocks_are_flagged(&collector, "nodeloop", port, &spinning, "loop-service.js");
}

#[test]
fn a_gevent_greenlet_that_never_yields_is_a_runaway_loop_named_in_python() {
    let (python, port) = start_gevent();
    let collector = watching(&[(&python, "geventloop")]);
    let spinning = ["busy_for", "spin_without_yielding"];
    spins_and_blocks_are_flagged(
        &collector,
        "geventloop",
        port,
        &spinning,
        "gevent_service.py",
    );
}

#[test]
fn node_and_gevent_services_saturated_for_a_minute_are_not_flagged() {
    let (node, node_port) = start_node();
    let (python, python_port) = start_gevent();
    let collector = watching(&[(&node, "nodebusy"), (&python, "geventbusy")]);

    // Keep-alive clients with a slow (5-10 ms) request now and then.
    let loads = [
        Load::start(&format!("127.0.0.1:{node_port}"), 4, 10),
        Load::start(&format!("127.0.0.1:{python_port}"), 4, 10),
    ];
    std::thread::sleep(Duration::from_secs(60));
    let reports = loads.map(Load::stop);
    for report in reports {
        assert!(report.ok > 1_000, "the load ran: {report:?}");
    }
    for service in ["nodebusy", "geventbusy"] {
        for kind in ["runaway_loop", "blocked_worker"] {
            let found = incidents(&collector, service, kind);
            assert!(found.is_empty(), "busy is not stuck: {found:#?}");
        }
    }

    // The loops were followed all along: a spin now is flagged. It lasts
    // 3 s, so its incident may have opened and resolved again between two
    // looks on a loaded machine: either counts (there was none before).
    let spins = [
        request(node_port, "/spin?ms=3000"),
        request(python_port, "/spin?ms=3000"),
    ];
    for service in ["nodebusy", "geventbusy"] {
        wait_for("runaway_loop", Duration::from_secs(30), || {
            incidents(&collector, service, "runaway_loop")
                .into_iter()
                .next()
        });
    }
    for spin in spins {
        spin.join().unwrap();
    }
}
