//! One refresh of the TUI over many hosts: `COLLECTORS` (10) real
//! collectors, each with `PER` (100) simulated probes reporting every
//! second; the time and bytes of one refresh of the merged mesh, measured
//! as `meshwatch status --json` over all of them, which asks every
//! collector's `/api/v1/services` at once and merges them as the TUI's
//! round does. The baseline is the same command over one of the
//! collectors, in the same run. The bytes a TUI round reads add each
//! collector's `/api/v1/incidents`. Medians of `ROUNDS` (20) refreshes;
//! the command's own start (a process) is in every figure.
//!
//! `cargo bench -p meshwatch-benches --bench tui_refresh`
#![allow(clippy::expect_used)] // a benchmark that cannot set up has nothing to report

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshwatch_benches::simulated::drive;
use meshwatch_benches::{env_or, median};
use meshwatch_e2e::{Collector, bin_dir, http_get, wait_for};

/// Runs `meshwatch status --json` over `urls` `rounds` times; the median
/// time in ms and the bytes it printed.
fn refresh(urls: &[String], rounds: u64) -> (f64, usize) {
    let mut times = Vec::new();
    let mut printed = 0;
    for _ in 0..rounds {
        let mut command = Command::new(bin_dir().join("meshwatch"));
        command
            .arg("status")
            .arg("--json")
            .env_remove("MESHWATCH_URL");
        for url in urls {
            command.args(["--collector", url]);
        }
        let began = Instant::now();
        let out = command.output().expect("run meshwatch status");
        times.push(began.elapsed().as_secs_f64() * 1e3);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed = out.stdout.len();
    }
    (median(&times).unwrap_or(0.0), printed)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (count, per, rounds) = if full {
        (
            env_or("COLLECTORS", 10) as usize,
            env_or("PER", 100) as usize,
            env_or("ROUNDS", 20),
        )
    } else {
        (2, 5, 2)
    };
    let collectors: Vec<Collector> = (0..count).map(|_| Collector::start()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let period = Arc::new(AtomicU64::new(1000));
    let senders: Vec<_> = collectors
        .iter()
        .enumerate()
        .map(|(k, collector)| {
            let (ingest, stop, period) = (collector.ingest.clone(), stop.clone(), period.clone());
            std::thread::spawn(move || drive(ingest, k * per, per, stop, period))
        })
        .collect();
    for collector in &collectors {
        wait_for("every probe reporting", Duration::from_secs(60), || {
            let reporting = collector
                .instances()
                .iter()
                .filter(|i| !i["headline"].is_null())
                .count();
            (reporting == per).then_some(())
        });
    }
    let urls: Vec<String> = collectors.iter().map(|c| c.http.clone()).collect();
    let (one_ms, one_bytes) = refresh(&urls[..1], rounds);
    let (all_ms, all_bytes) = refresh(&urls, rounds);
    let read: usize = urls
        .iter()
        .map(|url| {
            http_get(url, "/api/v1/services").len() + http_get(url, "/api/v1/incidents").len()
        })
        .sum();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        let _ = sender.join();
    }
    println!(
        "tui_refresh: {count} collectors x {per} instances, median of {rounds} refreshes (meshwatch status --json)"
    );
    println!(
        "  one collector ({per} instances): {one_ms:.1} ms, {:.1} KiB printed",
        one_bytes as f64 / 1024.0
    );
    println!(
        "  {count} collectors ({} instances): {all_ms:.1} ms (ratio {:.2}), {:.1} KiB printed; a TUI round reads {:.1} KiB (services and incidents of every collector)",
        count * per,
        all_ms / one_ms.max(1e-9),
        all_bytes as f64 / 1024.0,
        read as f64 / 1024.0
    );
}
