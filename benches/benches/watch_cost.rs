//! What watching processes from outside costs the collector (`--watch`):
//! its CPU and RSS while it watches N idle processes (50 by default),
//! against the same collector idle, measured first in the same run.
//!
//! ```text
//! cargo bench -p meshwatch-benches --bench watch_cost        # PROCESSES=50 SECONDS=30
//! ```
//!
//! Each watched process is a small Python event loop, `select` with a
//! 100 ms timeout, turning ten times a second: the cost measured is the
//! collector's (its watcher's scans of `/proc`, one external probe per
//! process sampling `/proc/PID` every second and sending over loopback,
//! ingest, and the loop watcher's four looks a second at each process with
//! its breakpoint re-armed at each turn), not the watched processes' own
//! work. Run by `cargo test
//! --benches`, it watches 3 processes for 2 seconds, to check it works.

#![allow(clippy::expect_used)] // a benchmark that cannot set up has nothing to report

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshwatch_benches::{env_or, usage};
use meshwatch_e2e::Collector;

/// The argument that marks the watched processes, for the watch rule.
const MARKER: &str = "meshwatch-bench-watched";

/// The watched processes, killed when dropped.
struct Watched(Vec<Child>);

impl Drop for Watched {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let processes = if full { env_or("PROCESSES", 50) } else { 3 } as usize;
    let seconds = if full { env_or("SECONDS", 30) } else { 2 };
    let rule = format!("{MARKER}=watched");
    let collector = Collector::start_with(None, &["--watch", &rule]);
    let pid = collector.process.pid();

    let idle_start = usage(pid).expect("collector usage");
    std::thread::sleep(Duration::from_secs(seconds));
    let idle_end = usage(pid).expect("collector usage");
    let idle_cpu = (idle_end.cpu - idle_start.cpu).as_secs_f64() / seconds as f64;

    let watched = Watched(
        (0..processes)
            .map(|_| {
                Command::new("python3")
                    .args([
                        "-c",
                        "import select\nwhile True: select.select([], [], [], 0.1)",
                        MARKER,
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("sh runs")
            })
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = loop {
        let up = collector
            .instances()
            .iter()
            .filter(|i| i["service"] == "watched" && i["state"] != "down")
            .count();
        if up >= processes || Instant::now() > deadline {
            break up;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // A few seconds for every watcher's first snapshots and connections.
    std::thread::sleep(Duration::from_secs(3));
    let start = usage(pid).expect("collector usage");
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let end = usage(pid).expect("collector usage");
    let cpu = (end.cpu - start.cpu).as_secs_f64() / began.elapsed().as_secs_f64();
    drop(watched);

    println!(
        "watch_cost: {processes} processes watched from outside ({up} up), measured over {seconds} s"
    );
    println!(
        "  collector CPU: idle {idle_cpu:.3} core, watching {cpu:.3} core (ratio {:.1}); {:.4} core per process",
        cpu / idle_cpu.max(1e-6),
        (cpu - idle_cpu).max(0.0) / processes.max(1) as f64
    );
    println!(
        "  collector RSS: idle {:.1} MiB, watching {:.1} MiB (ratio {:.2})",
        idle_end.rss_bytes as f64 / 1048576.0,
        end.rss_bytes as f64 / 1048576.0,
        end.rss_bytes as f64 / idle_end.rss_bytes as f64
    );
}
