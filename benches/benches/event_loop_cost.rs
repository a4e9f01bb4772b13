//! What following event loops from outside costs (issue 11, item 8).
//!
//! ```text
//! cargo bench -p meshwatch-benches --bench event_loop_cost    # ROUNDS=5 SECONDS=10
//! ```
//!
//! Two figures, each against its baseline measured in the same run:
//! - **Stack sampling on a stuck process**: the collector's CPU, as a share
//!   of a core, while the Node.js service it watches spins in a callback
//!   that never yields (the loop flagged, its thread sampled at 99 Hz and
//!   each sample named), against the same collector while the service
//!   idles.
//! - **A watched Node.js service under load**: `tests/node/loop-service.js`
//!   pinned to core 0, driven by wrk (one thread, 50 keep-alive
//!   connections) from core 1; rounds alternate the service unwatched (no
//!   collector) and watched (a collector with `--watch-pid`, so the
//!   process's samplers, its socket scans and the loop beacon all run).
//!   The collector is pinned to core 1 with wrk, as a host daemon has a
//!   core share of its own: what is measured is what watching does to the
//!   service, not the collector's CPU taken from it (that is
//!   `watch_cost`'s figure).
//!   Throughput and p99 ratios are taken round by round, then their median
//!   quoted, as this machine drifts more between rounds than the effect.
//!
//! Settings (environment): `ROUNDS` (5), `SECONDS` (10), `CONNECTIONS`
//! (50). Needs `node` and `wrk`. Run by `cargo test --benches`, it only
//! checks that the service answers and is flagged when it spins.

#![allow(clippy::expect_used)] // a benchmark that cannot set up has nothing to report

use std::process::Command;
use std::time::{Duration, Instant};

use meshwatch_benches::{env_or, median, usage, wrk};
use meshwatch_e2e::foreign::{node_dir, request_in_background};
use meshwatch_e2e::{Collector, Foreign, wait_for};

/// The Node.js service pinned to core 0, with the flags that name its
/// JavaScript functions.
fn start_service() -> (Foreign, u16) {
    Foreign::spawn_listening(
        Command::new("taskset")
            .args([
                "-c",
                "0",
                "node",
                "--perf-basic-prof",
                "--interpreted-frames-native-stack",
            ])
            // Its own working directory: V8 writes a log there.
            .arg(node_dir().join("loop-service.js")),
        "node (the service of this benchmark)",
    )
}

/// A collector watching process `pid`, once its instance is up and its
/// loop has had a second to be seen.
fn watching(pid: u32) -> Collector {
    let collector = Collector::start_with(None, &["--watch-pid", &format!("{pid}=bench")]);
    collector.wait_for_instance("the service watched", |i| i["pid"] == pid);
    std::thread::sleep(Duration::from_secs(1));
    collector
}

/// The collector's CPU over `seconds`, as a share of a core.
fn collector_cpu(collector: &Collector, seconds: u64) -> f64 {
    let pid = collector.process.pid();
    let start = usage(pid).expect("collector usage");
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let end = usage(pid).expect("collector usage");
    (end.cpu - start.cpu).as_secs_f64() / began.elapsed().as_secs_f64()
}

/// Spins the service's loop for `ms` on a thread of its own.
fn spin(port: u16, ms: u64) -> std::thread::JoinHandle<()> {
    request_in_background(port, &format!("/spin?ms={ms}"))
}

/// Moves every thread of process `pid` to core 1 (threads it starts later
/// inherit it).
fn pin_to_core_1(pid: u32) {
    let status = Command::new("taskset")
        .args(["-a", "-cp", "1", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset runs");
    assert!(status.success(), "taskset failed");
}

fn stuck_sampling(seconds: u64) {
    let (service, port) = start_service();
    let collector = watching(service.pid());
    let idle = collector_cpu(&collector, seconds);
    let spinning = spin(port, (seconds + 4) * 1000);
    wait_for(
        "the spin flagged",
        Duration::from_secs(30),
        || -> Option<()> {
            let incidents = collector.get_json("/api/v1/incidents");
            incidents["incidents"]
                .as_array()?
                .iter()
                .any(|i| i["kind"] == "runaway_loop" && i["resolved_at_ms"].is_null())
                .then_some(())
        },
    );
    let stuck = collector_cpu(&collector, seconds);
    spinning.join().expect("the spin's request");
    println!(
        "stack sampling on a stuck process, collector CPU over {seconds} s: idle service {idle:.4} core, spinning service {stuck:.4} core (ratio {:.1}, +{:.4} core)",
        stuck / idle.max(1e-6),
        stuck - idle
    );
}

fn watched_under_load(rounds: u64, seconds: u64, connections: usize) {
    let (service, port) = start_service();
    let addr = format!("127.0.0.1:{port}");
    let load = wrk::Load {
        addr: &addr,
        core: 1,
        connections,
        seconds,
        close: false,
    };
    // Warm the service's JIT before the first measured round.
    wrk::Load {
        seconds: 2,
        ..load.clone()
    }
    .run()
    .expect("wrk warm-up");
    let (mut throughput, mut p99) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let plain = load.run().expect("wrk, unwatched");
        let collector = watching(service.pid());
        pin_to_core_1(collector.process.pid());
        let watched = load.run().expect("wrk, watched");
        drop(collector);
        let ratio_tput = watched.requests_per_sec / plain.requests_per_sec;
        let ratio_p99 = watched.p99.as_secs_f64() / plain.p99.as_secs_f64();
        println!(
            "  round {round}: unwatched {:.0} req/s p99 {:?}; watched {:.0} req/s p99 {:?}; ratios {ratio_tput:.3} / {ratio_p99:.3}",
            plain.requests_per_sec, plain.p99, watched.requests_per_sec, watched.p99
        );
        throughput.push(ratio_tput);
        p99.push(ratio_p99);
    }
    println!(
        "watched Node service under load ({rounds} rounds of {seconds} s, {connections} connections): median throughput ratio {:.3}, median p99 ratio {:.3}",
        median(&throughput).unwrap_or(f64::NAN),
        median(&p99).unwrap_or(f64::NAN)
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        // `cargo test --benches`: the pieces work.
        let (service, port) = start_service();
        let collector = watching(service.pid());
        let spinning = spin(port, 3000);
        wait_for("the spin flagged", Duration::from_secs(30), || {
            collector.get_json("/api/v1/incidents")["incidents"]
                .as_array()?
                .iter()
                .any(|i| i["kind"] == "runaway_loop")
                .then_some(())
        });
        spinning.join().expect("the spin's request");
        return;
    }
    let rounds = env_or("ROUNDS", 5);
    let seconds = env_or("SECONDS", 10);
    let connections = env_or("CONNECTIONS", 50) as usize;
    assert!(wrk::installed(), "wrk is needed: apt-get install wrk");
    stuck_sampling(seconds);
    watched_under_load(rounds, seconds, connections);
}
