//! The watchdog's cost on a saturated HTTP service, and how fast it flags a
//! runaway loop.
//!
//! 1. Throughput of `mesh-service` (2 workers, `GET /` hello-world) under an
//!    in-process keep-alive load generator, with the probe disabled
//!    (`MESHWATCH_DISABLE=1`) and enabled (sampler, watchdog and exporter),
//!    alternating the two in one run; the ratio is enabled / disabled.
//! 2. Time from `GET /fault/loop` to the `runaway_loop` incident in the
//!    collector's API (polled every 10 ms), over several triggers.
//!
//! Run with `cargo bench -p meshwatch-benches --bench watchdog_overhead`.
//! Settings: `ROUNDS` (default 5) pairs of `SECONDS` (default 8) each,
//! `CLIENTS` (default 4) load threads, `TRIGGERS` (default 5).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark that fails has nothing to report

use std::time::{Duration, Instant};

use meshwatch_benches::median;
use meshwatch_e2e::load::Load;
use meshwatch_e2e::{Collector, Service, wait_for};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Requests per second one service answered over `seconds` of load.
fn throughput(collector: &Collector, enabled: bool, seconds: u64, clients: usize) -> f64 {
    let disable = if enabled { "0" } else { "1" };
    let service = Service::start_with(
        collector,
        "bench",
        2,
        &[],
        &[("MESHWATCH_DISABLE", disable), ("MESHWATCH_LOG", "warn")],
    );
    // Warm up connections and the runtime before the window opens.
    let warmup = Load::start(&service.http, clients, 0);
    std::thread::sleep(Duration::from_millis(500));
    warmup.stop();
    let load = Load::start(&service.http, clients, 0);
    std::thread::sleep(Duration::from_secs(seconds));
    let report = load.stop();
    assert_eq!(report.errors, 0, "requests failed");
    report.ok as f64 / seconds as f64
}

/// Milliseconds from each loop trigger to its incident.
fn time_to_incident(collector: &Collector, triggers: u64) -> Vec<f64> {
    let service = Service::start_with(
        collector,
        "bench-loop",
        2,
        &["--fault", "loop"],
        &[("MESHWATCH_LOG", "warn")],
    );
    let open_loops = || -> Vec<String> {
        collector.get_json("/api/v1/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "runaway_loop" && i["service"] == "bench-loop")
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    std::thread::sleep(Duration::from_secs(1));
    let mut times = Vec::new();
    for _ in 0..triggers {
        let triggered = Instant::now();
        service.get("/fault/loop?secs=2");
        loop {
            if !open_loops().is_empty() {
                times.push(triggered.elapsed().as_secs_f64() * 1e3);
                break;
            }
            assert!(triggered.elapsed() < Duration::from_secs(10), "not flagged");
            std::thread::sleep(Duration::from_millis(10));
        }
        wait_for("the loop resolved", Duration::from_secs(30), || {
            open_loops().is_empty().then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    times
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing:
    // run one short round then, to check the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { env_or("ROUNDS", 5) } else { 1 };
    let seconds = if full { env_or("SECONDS", 8) } else { 1 };
    let triggers = if full { env_or("TRIGGERS", 5) } else { 1 };
    let clients = usize::try_from(env_or("CLIENTS", 4)).unwrap_or(4);
    let collector = Collector::start();

    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let disabled = throughput(&collector, false, seconds, clients);
        let enabled = throughput(&collector, true, seconds, clients);
        eprintln!(
            "round {}: disabled {disabled:.0} req/s, enabled {enabled:.0} req/s",
            round + 1
        );
        off.push(disabled);
        on.push(enabled);
        ratios.push(enabled / disabled);
    }
    let detect = time_to_incident(&collector, triggers);
    eprintln!("trigger to incident (ms): {detect:.0?}");

    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    println!(
        "watchdog_overhead: {rounds} rounds of {seconds} s, {clients} keep-alive clients, medians"
    );
    println!(
        "  throughput: disabled {:.0} req/s, enabled {:.0} req/s, ratio of medians {:.3}, median of per-round ratios {:.3}",
        m(&off),
        m(&on),
        m(&on) / m(&off),
        m(&ratios)
    );
    println!(
        "  trigger to runaway_loop incident: median {:.0} ms over {triggers} triggers (min {:.0}, max {:.0})",
        m(&detect),
        detect.iter().copied().fold(f64::INFINITY, f64::min),
        detect.iter().copied().fold(0.0, f64::max)
    );
}
