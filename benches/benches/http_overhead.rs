//! End-to-end cost of the tracking allocator and heap sampling on an HTTP
//! service at saturation: requests per second of `mesh-service` (tracking
//! allocator, probe running, heap sampling at 512 KiB) against
//! `mesh-service-untracked` with `MESHWATCH_DISABLE=1` (no meshwatch cost at
//! all), alternating the two in one run; the middle column is the tracked
//! service with sampling off (`MESHWATCH_HEAP_SAMPLE_BYTES=0`).
//!
//! Run with `cargo bench -p meshwatch-benches --bench http_overhead`.
//! Settings: `ROUNDS` (default 5) rounds of `SECONDS` (default 4) per
//! variant, `CONNECTIONS` (default 4) keep-alive client connections.

#![allow(clippy::expect_used)] // a benchmark that cannot start has nothing to report

use std::time::Duration;

use meshwatch_benches::{env_or, http_load, median};
use meshwatch_e2e::{Collector, Process};

/// Requests per second of one freshly started service.
fn throughput(bin: &str, envs: &[(&str, &str)], seconds: u64, connections: usize) -> f64 {
    let mut all_envs = vec![("MESHWATCH_LOG", "warn")];
    all_envs.extend_from_slice(envs);
    let (_process, addr) = Process::start(
        bin,
        &["--name", "http-bench", "--workers", "2"],
        &all_envs,
        "mesh-service listening http=",
    );
    // Warm up: connections, the probe's first snapshots and symbolization.
    http_load(&addr, connections, Duration::from_millis(500)).expect("warm-up load");
    let done = http_load(&addr, connections, Duration::from_secs(seconds)).expect("load");
    done as f64 / seconds as f64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { env_or("ROUNDS", 5) } else { 1 };
    let seconds = if full { env_or("SECONDS", 4) } else { 1 };
    let connections = env_or("CONNECTIONS", 4) as usize;
    let collector = Collector::start();
    let ingest = collector.ingest.as_str();
    let (mut off, mut counting, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds as usize {
        off.push(throughput(
            "mesh-service-untracked",
            &[("MESHWATCH_DISABLE", "1")],
            seconds,
            connections,
        ));
        counting.push(throughput(
            "mesh-service",
            &[
                ("MESHWATCH_COLLECTOR", ingest),
                ("MESHWATCH_HEAP_SAMPLE_BYTES", "0"),
            ],
            seconds,
            connections,
        ));
        on.push(throughput(
            "mesh-service",
            &[("MESHWATCH_COLLECTOR", ingest)],
            seconds,
            connections,
        ));
        eprintln!(
            "round {}: off {:.0} req/s, tracking {:.0} req/s, tracking+sampling {:.0} req/s",
            round + 1,
            off[round],
            counting[round],
            on[round]
        );
    }
    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    println!(
        "http_overhead: {rounds} rounds of {seconds} s, {connections} connections, GET /, medians"
    );
    println!("  off (untracked, probe disabled)   {:.0} req/s", m(&off));
    println!(
        "  tracking + probe, no sampling     {:.0} req/s (ratio {:.3})",
        m(&counting),
        m(&counting) / m(&off)
    );
    println!(
        "  tracking + probe + 512 KiB samples {:.0} req/s (ratio {:.3})",
        m(&on),
        m(&on) / m(&off)
    );
}
