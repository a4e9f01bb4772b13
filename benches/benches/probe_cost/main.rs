//! What the probe costs a saturated HTTP service, told truthfully (issue 9).
//!
//! A hyper hello-world server with one tokio worker (`hello-plain`,
//! `hello-tracked`) runs pinned to core 0 in each variant (see
//! `variants.rs`): no meshwatch at all, the probe at its defaults, the probe
//! with heap sampling off, the tracking allocator alone, and two peers,
//! tokio-metrics and console-subscriber. `wrk` (one thread, 50 keep-alive
//! connections) drives it from core 1, so load generator and server never
//! share a core and the server's own core is its only budget: every thread
//! a tool adds competes with the worker for it. Each variant is a fresh
//! process, warmed up, then measured over a window: throughput, p50 and p99
//! from wrk, the server's RSS at the end, its CPU over the window (every
//! thread's `schedstat`) per request. Variants alternate within each round,
//! and ratios to plain are taken round by round, then their median quoted:
//! this machine's speed drifts between rounds far more than the effects
//! measured.
//!
//! ```text
//! cargo bench -p meshwatch-benches --bench probe_cost            # ROUNDS=5 SECONDS=10
//! QUICK=1 cargo bench -p meshwatch-benches --bench probe_cost    # ~2 min, one line per variant
//! CHURN=1 cargo bench -p meshwatch-benches --bench probe_cost    # new connection per request, 4 min each
//! INSTRUCTIONS=1 cargo bench -p meshwatch-benches --bench probe_cost   # instructions per request (callgrind)
//! ```
//!
//! Settings (environment): `ROUNDS` (5, at least 5 unless `QUICK`),
//! `SECONDS` (10), `WARMUP_SECONDS` (2), `CONNECTIONS` (50), `VARIANTS`
//! (comma-separated names; plain always runs), `CHURN_SECONDS` (240),
//! `RSS_CAP_MIB` (2048: a server past it under churn is killed and reported
//! as aborted), and with `INSTRUCTIONS`, `ROUNDS` (3), `REQUESTS` (20000),
//! `WARMUP_REQUESTS` (2000) and `CALLGRIND_KEEP` (a directory to keep each
//! variant's callgrind dumps in, for `callgrind_annotate`). The budget printed is issue 9's; it is informational, never
//! asserted. Installs `wrk` with apt-get if it is missing. Run by
//! `cargo test --benches` (no `--bench` flag), it only checks that each
//! server build answers one request.

#![allow(clippy::expect_used)] // a benchmark that cannot set up has nothing to report

mod budget;
mod churn;
mod instructions;
mod steady;
mod variants;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use meshwatch_benches::{env_or, wrk};
use meshwatch_e2e::Collector;

use variants::{Binaries, Binary, Server, VARIANTS};

/// The core the server is pinned to.
const SERVER_CORE: usize = 0;
/// The core wrk is pinned to.
const WRK_CORE: usize = 1;

/// How a run is configured, from the environment.
#[derive(Debug)]
pub struct Settings {
    rounds: u64,
    seconds: u64,
    warmup: u64,
    connections: usize,
    churn_seconds: u64,
    rss_cap_mib: f64,
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `/proc/loadavg`'s three averages, for the record of each round.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// Installs wrk with apt-get when it is not on the PATH.
fn ensure_wrk() {
    if wrk::installed() {
        return;
    }
    eprintln!(
        "probe_cost: wrk is missing; installing it: apt-get update && apt-get install -y wrk"
    );
    for args in [&["update", "-qq"][..], &["install", "-y", "-qq", "wrk"]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            // stdout is the report's.
            .stdout(std::io::stderr())
            .status()
            .expect("run apt-get");
        assert!(status.success(), "apt-get {args:?} failed: {status}");
    }
    assert!(
        wrk::installed(),
        "wrk is still missing after apt-get install"
    );
    eprintln!("probe_cost: wrk installed");
}

/// The server builds; the console one is built here, if asked for.
fn binaries(want_console: bool) -> Binaries {
    let console = if want_console {
        match variants::build_console() {
            Ok(path) => Some(path),
            Err(why) => {
                eprintln!("probe_cost: skipping the console variant: {why}");
                None
            }
        }
    } else {
        None
    };
    Binaries {
        plain: PathBuf::from(env!("CARGO_BIN_EXE_hello-plain")),
        tracked: PathBuf::from(env!("CARGO_BIN_EXE_hello-tracked")),
        console,
    }
}

/// Under `cargo test`: each build of the server starts and answers `GET /`.
fn smoke() {
    let binaries = binaries(false);
    for variant in VARIANTS
        .iter()
        .filter(|v| v.binary != Binary::Console && !v.reports)
    {
        let binary = binaries.path(variant.binary).expect("built by cargo");
        let server = Server::start(variant, binary, SERVER_CORE, "").expect("start the server");
        let mut stream = TcpStream::connect(&server.addr).expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with("Hello, world!\n"),
            "{}: unexpected response {response:?}",
            variant.name
        );
    }
    eprintln!("probe_cost: smoke check passed (run with `cargo bench` to measure)");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let quick = flag("QUICK");
    let churn = flag("CHURN");
    let instructions = flag("INSTRUCTIONS");
    let settings = Settings {
        rounds: if quick {
            env_or("ROUNDS", 2)
        } else {
            env_or("ROUNDS", 5).max(5)
        },
        seconds: env_or("SECONDS", if quick { 4 } else { 10 }),
        warmup: env_or("WARMUP_SECONDS", if quick { 1 } else { 2 }),
        connections: env_or("CONNECTIONS", 50) as usize,
        churn_seconds: env_or("CHURN_SECONDS", 240),
        rss_cap_mib: env_or("RSS_CAP_MIB", 2048) as f64,
    };
    let mut selected = variants::selected();
    if instructions || churn {
        // A profile is asked for over a measured window, which these
        // modes do not have.
        selected.retain(|v| v.profile_hz.is_none());
    }
    ensure_wrk();
    let binaries = binaries(selected.iter().any(|v| v.binary == Binary::Console));
    let collector = Collector::start();
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "probe_cost: {} on {nproc} cores ({}), load average {} at start",
        if instructions {
            "instructions"
        } else if churn {
            "churn"
        } else if quick {
            "quick"
        } else {
            "full"
        },
        cpu_model(),
        load_average()
    );
    println!(
        "server pinned to core {SERVER_CORE}, wrk -t1 -c{} pinned to core {WRK_CORE}; warm-up {} s",
        settings.connections, settings.warmup
    );
    for v in &selected {
        let missing = binaries.path(v.binary).is_none();
        println!(
            "  {:<15} {}{}",
            v.name,
            v.what,
            if missing {
                " — SKIPPED (not built)"
            } else {
                ""
            }
        );
    }
    if instructions {
        let warmup = env_or("WARMUP_REQUESTS", 2_000);
        let requests = env_or("REQUESTS", 20_000);
        let rounds = env_or("ROUNDS", 3) as usize;
        instructions::run(
            &selected,
            &binaries,
            &collector.ingest,
            warmup,
            requests,
            rounds,
        );
    } else if churn {
        churn::run(&selected, &binaries, &collector.ingest, &settings);
    } else {
        println!(
            "{} rounds of {} s per variant, variants alternating",
            settings.rounds, settings.seconds
        );
        let results = steady::run(&selected, &binaries, &collector, &settings);
        if quick {
            results.print_quick();
        } else {
            results.print_full();
        }
    }
    println!("load average {} at the end", load_average());
}
