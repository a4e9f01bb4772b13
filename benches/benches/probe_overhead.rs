//! The probe's cost in an idle service: CPU per sampling interval and
//! resident memory, against the same service with `MESHWATCH_DISABLE=1`,
//! alternating the two in one run.
//!
//! Run with `cargo bench -p meshwatch-benches --bench probe_overhead`.
//! Settings: `ROUNDS` (default 5) pairs of `SECONDS` (default 10) each, at a
//! 100 ms interval so that one run covers many sampling passes.

#![allow(clippy::expect_used)] // a benchmark that cannot read /proc has nothing to report

use std::time::Duration;

use meshwatch_benches::{env_or, median, usage};
use meshwatch_e2e::{Collector, Process};

const INTERVAL_MS: u64 = 100;

/// Runs one `mesh-service` for `seconds` and returns its CPU time and final
/// RSS, measured from just after startup.
fn measure(collector: &Collector, enabled: bool, seconds: u64) -> (Duration, u64) {
    let interval = INTERVAL_MS.to_string();
    let disable = if enabled { "0" } else { "1" };
    let (process, _) = Process::start(
        "mesh-service",
        &["--name", "bench", "--workers", "2"],
        &[
            ("MESHWATCH_COLLECTOR", &collector.ingest),
            ("MESHWATCH_INTERVAL_MS", &interval),
            ("MESHWATCH_DISABLE", disable),
            ("MESHWATCH_LOG", "warn"),
        ],
        "mesh-service listening http=",
    );
    // Let startup settle before the window opens.
    std::thread::sleep(Duration::from_millis(500));
    let before = usage(process.pid()).expect("read /proc of the service");
    std::thread::sleep(Duration::from_secs(seconds));
    let after = usage(process.pid()).expect("read /proc of the service");
    (after.cpu.saturating_sub(before.cpu), after.rss_bytes)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing:
    // run a single short round then, to check the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { env_or("ROUNDS", 5) } else { 1 };
    let seconds = if full { env_or("SECONDS", 10) } else { 1 };
    let collector = Collector::start();
    let passes = (seconds * 1000 / INTERVAL_MS) as f64;

    let mut cpu_per_pass_us = Vec::new();
    let mut base_cpu_ms = Vec::new();
    let mut probe_cpu_ms = Vec::new();
    let mut rss_on = Vec::new();
    let mut rss_off = Vec::new();
    for round in 0..rounds {
        let (off_cpu, off_rss) = measure(&collector, false, seconds);
        let (on_cpu, on_rss) = measure(&collector, true, seconds);
        let extra = on_cpu.as_secs_f64() - off_cpu.as_secs_f64();
        cpu_per_pass_us.push(extra / passes * 1e6);
        base_cpu_ms.push(off_cpu.as_secs_f64() * 1e3);
        probe_cpu_ms.push(on_cpu.as_secs_f64() * 1e3);
        rss_on.push(on_rss as f64);
        rss_off.push(off_rss as f64);
        eprintln!(
            "round {}: cpu off {:.1} ms, on {:.1} ms; rss off {:.1} MiB, on {:.1} MiB",
            round + 1,
            off_cpu.as_secs_f64() * 1e3,
            on_cpu.as_secs_f64() * 1e3,
            off_rss as f64 / 1048576.0,
            on_rss as f64 / 1048576.0,
        );
    }
    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    println!("probe_overhead: {rounds} rounds of {seconds} s, interval {INTERVAL_MS} ms, medians");
    println!(
        "  CPU over the window: disabled {:.1} ms, enabled {:.1} ms (ratio {:.2})",
        m(&base_cpu_ms),
        m(&probe_cpu_ms),
        m(&probe_cpu_ms) / m(&base_cpu_ms)
    );
    println!(
        "  probe CPU per sampling interval: {:.0} us",
        m(&cpu_per_pass_us)
    );
    println!(
        "  RSS: disabled {:.1} MiB, enabled {:.1} MiB (ratio {:.2}, +{:.1} MiB)",
        m(&rss_off) / 1048576.0,
        m(&rss_on) / 1048576.0,
        m(&rss_on) / m(&rss_off),
        (m(&rss_on) - m(&rss_off)) / 1048576.0
    );
}
