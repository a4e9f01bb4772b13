//! Stuck polls: a runaway loop and a blocking call are flagged with the
//! function at fault and resolved when they end; a busy healthy service is
//! not flagged; a service with its own signal handlers keeps them.

use std::process::Command;
use std::time::{Duration, Instant};

use meshwatch_e2e::load::Load;
use meshwatch_e2e::{Collector, Service, recorded, status, wait_for};
use serde_json::Value;

/// Starts `mesh-service` with both stuck-poll faults and `extra` flags, and
/// returns it with its instance id once it reports.
fn faulty(collector: &Collector, name: &str, extra: &[&str]) -> (Service, String) {
    let mut args = vec!["--fault", "loop", "--fault", "block"];
    args.extend_from_slice(extra);
    let service = Service::start_with(collector, name, 2, &args, &[]);
    // Until the watchdog's census has mapped both workers to their threads,
    // so that the trouble finds them known.
    let instance = collector.wait_for_instance(&format!("{name} mapped"), |i| {
        let tids = i["runtimes"][0]["worker_tids"].as_array();
        i["service"] == name
            && tids.is_some_and(|t| t.len() == 2 && t.iter().all(|tid| tid.as_u64() != Some(0)))
    });
    let id = instance["instance_id"].as_str().unwrap().to_owned();
    (service, id)
}

fn incidents(collector: &Collector, instance: &str) -> Vec<Value> {
    collector.get_json("/api/v1/incidents")["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["instance"] == instance)
        .cloned()
        .collect()
}

fn find(collector: &Collector, instance: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    incidents(collector, instance).into_iter().find(|i| pred(i))
}

fn functions(incident: &Value) -> Vec<String> {
    incident["evidence"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap().to_owned())
        .collect()
}

/// Triggers the loop fault and checks it is flagged within 3 s, with the
/// parser among the frames, shown by `meshwatch status`, then resolved.
/// With `recording`, the named incident is kept under that name while open.
fn loop_is_diagnosed(
    collector: &Collector,
    service: &Service,
    instance: &str,
    recording: Option<&str>,
) {
    let triggered = Instant::now();
    service.get("/fault/loop?secs=6");
    let opened = wait_for("a runaway_loop incident", Duration::from_secs(10), || {
        find(collector, instance, |i| i["kind"] == "runaway_loop")
    });
    let flagged_after = triggered.elapsed();
    assert!(
        flagged_after <= Duration::from_secs(3),
        "flagged after {flagged_after:?}"
    );
    assert!(opened["resolved_at_ms"].is_null(), "{opened:#}");
    assert_ne!(opened["evidence"]["thread"]["tid"], 0, "{opened:#}");
    assert!(opened["evidence"]["stuck_for_ms"].as_u64().unwrap() >= 1000);
    let table = status(collector, false);
    assert!(table.contains("runaway_loop"), "{table}");
    // The collector names the first stack from the binary's debug info,
    // which takes a while in debug builds.
    // Release builds with line tables only name inlined frames without
    // their module path, so only the function's own name is required.
    let named = wait_for(
        "the parser among the frames",
        Duration::from_secs(20),
        || {
            find(collector, instance, |i| {
                i["kind"] == "runaway_loop"
                    && functions(i).iter().any(|f| f.contains("parse_records"))
            })
        },
    );
    // The summary names the innermost frame common to every sample: the
    // parser, or the field reader it calls over and over.
    let summary = named["summary"].as_str().unwrap();
    assert!(
        summary.contains("parse_records") || summary.contains("next_field"),
        "{named:#}"
    );
    assert!(named["evidence"]["stack_samples"].as_u64().unwrap() >= 1);
    if let Some(name) = recording {
        recorded::keep(collector, name, &named);
    }
    assert!(!named["evidence"]["caveat"].as_str().unwrap().is_empty());
    // The request behind it, from the service's tracing spans (SpanLayer):
    // the request's span, carried into the task it spawned, and the
    // parser's own.
    let spans: Vec<&str> = named["evidence"]["spans"]
        .as_array()
        .expect("spans in the evidence")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        spans.len() == 2
            && spans[0].starts_with("request{method=GET path=/fault/loop id=")
            && spans[1] == "parse_batch{bytes=31}",
        "{spans:?}"
    );
    wait_for(
        "the loop incident resolved",
        Duration::from_secs(20),
        || {
            find(collector, instance, |i| {
                i["kind"] == "runaway_loop" && !i["resolved_at_ms"].is_null()
            })
        },
    );
}

#[test]
fn runaway_loop_is_flagged_with_the_looping_function_and_resolves() {
    let collector = Collector::start();
    let (service, instance) = faulty(&collector, "looping", &[]);
    loop_is_diagnosed(&collector, &service, &instance, Some("runaway_loop"));
    report_names_the_loop(&collector, &instance);
}

/// `meshwatch report` on the real incident: the stack the collector named
/// reaches the report with file and line, with how many samples it rests
/// on, and the flame graph when the samples differ.
fn report_names_the_loop(collector: &Collector, instance: &str) {
    let incident = find(collector, instance, |i| i["kind"] == "runaway_loop").unwrap();
    let report = meshwatch_e2e::report(collector, &incident);
    let md = &report.markdown;
    assert!(md.contains("parse_records"), "{md}");
    assert!(md.contains("loop_parser.rs:"), "file and line: {md}");
    let taken = incident["evidence"]["stack_samples"].as_u64().unwrap();
    assert!(taken >= 1, "{incident:#}");
    assert!(
        md.contains(&format!("- stack samples: {taken}")),
        "the sample count reaches the report: {md}"
    );
    // The samples themselves, named: a flame graph when they differ (a loop
    // caught in one leaf function every time has one stack to draw).
    let distinct = incident["evidence"]["samples"].as_array().unwrap().len();
    assert!(distinct >= 1, "the named samples: {incident:#}");
    match report.svg("flame.svg") {
        Some(flame) => assert!(
            flame.contains("parse_records"),
            "the flame graph names the loop"
        ),
        None => assert_eq!(distinct, 1, "{distinct} distinct stacks and no flame graph"),
    }
}

#[test]
fn blocking_call_is_flagged_as_a_blocked_worker_and_resolves() {
    let collector = Collector::start();
    let (service, instance) = faulty(&collector, "blocking", &[]);
    service.get("/fault/block?secs=5");
    let opened = wait_for("a blocked_worker incident", Duration::from_secs(10), || {
        find(&collector, &instance, |i| i["kind"] == "blocked_worker")
    });
    assert!(
        opened["evidence"]["cpu_percent"].as_f64().unwrap() < 50.0,
        "{opened:#}"
    );
    assert!(
        find(&collector, &instance, |i| i["kind"] == "runaway_loop").is_none(),
        "a sleeping thread is not a loop"
    );
    // The reader's view of it: the thread, its CPU, the worker.
    let report = meshwatch_e2e::report(&collector, &opened);
    let md = &report.markdown;
    assert!(md.contains("`blocked_worker`"), "{md}");
    assert!(md.contains("- thread CPU: "), "{md}");
    assert!(md.contains("| `worker` |"), "{md}");
    wait_for(
        "the blocked worker resolved",
        Duration::from_secs(20),
        || {
            find(&collector, &instance, |i| {
                i["kind"] == "blocked_worker" && !i["resolved_at_ms"].is_null()
            })
        },
    );

    // A worker held by a synchronous socket read with a timeout: the
    // watchdog reads its stack where it waits, again and again, and the
    // read still ends with its own result (no signal cut it short).
    service.get("/fault/block-read?secs=4");
    let reading = wait_for("a second blocked_worker", Duration::from_secs(10), || {
        find(&collector, &instance, |i| {
            i["kind"] == "blocked_worker" && i["id"] != opened["id"]
        })
    });
    let resolved = wait_for(
        "the read's blocked worker resolved",
        Duration::from_secs(20),
        || {
            find(&collector, &instance, |i| {
                i["id"] == reading["id"] && !i["resolved_at_ms"].is_null()
            })
        },
    );
    if cfg!(target_arch = "x86_64") {
        let samples = resolved["evidence"]["stack_samples"].as_u64().unwrap();
        assert!(samples >= 2, "sampled while it waits: {resolved:#}");
        assert!(
            functions(&resolved)
                .iter()
                .any(|f| f.contains("ask_upstream_blocking")),
            "{resolved:#}"
        );
        recorded::keep(&collector, "blocked_worker", &resolved);
    }
    let outcome = wait_for("the read's outcome", Duration::from_secs(10), || {
        Some(service.get("/fault/block-read/outcome")).filter(|o| !o.starts_with("pending"))
    });
    assert!(outcome.starts_with("timed out after 4."), "{outcome}");
}

#[test]
fn saturated_healthy_service_opens_no_incident() {
    let collector = Collector::start();
    let service = Service::start(&collector, "busy", 2);
    let instance = collector.wait_for_instance("busy reporting", |i| {
        i["service"] == "busy" && i["headline"]["workers"] == 2
    });
    let instance = instance["instance_id"].as_str().unwrap();
    // Six keep-alive clients; one request in ten is a 5-10 ms poll.
    let load = Load::start(&service.http, 6, 10);
    std::thread::sleep(Duration::from_secs(20));
    let report = load.stop();
    assert!(
        report.ok > 1000,
        "the load generator barely ran: {report:?}"
    );
    let found = incidents(&collector, instance);
    assert!(found.is_empty(), "false flags: {found:#?}");
}

#[test]
fn own_signal_handlers_and_a_sigprof_profiler_keep_working() {
    let collector = Collector::start();
    let (service, instance) = faulty(&collector, "signals", &["--own-signal-handlers"]);
    let counts =
        |service: &Service| -> Value { serde_json::from_str(&service.get("/signals")).unwrap() };
    let pid = service.process.pid().to_string();
    for sig in ["-USR1", "-64"] {
        let sent = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(sent.success(), "kill {sig}");
    }
    let before = wait_for(
        "the service's handlers to run",
        Duration::from_secs(10),
        || {
            let c = counts(&service);
            (c["usr1"] == 1 && c["rtmax"] == 1 && c["prof"].as_u64() > Some(0)).then_some(c)
        },
    );

    loop_is_diagnosed(&collector, &service, &instance, None);

    let after = counts(&service);
    assert_eq!(
        after["usr1"], 1,
        "the probe's signal is not SIGUSR1: {after}"
    );
    assert_eq!(
        after["rtmax"], 1,
        "the probe's signal is not SIGRTMAX: {after}"
    );
    assert!(
        after["prof"].as_u64() > before["prof"].as_u64(),
        "the profiler kept ticking: {before} then {after}"
    );
    assert_eq!(service.get("/"), "hello");
}
