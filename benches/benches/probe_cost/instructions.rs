//! Instructions per request, counted by callgrind: the measure this noisy
//! machine cannot blur.
//!
//! Time-based CPU figures here move by 2x between rounds (the virtual CPUs'
//! speed follows the host's load), far more than the few per cent the
//! budget is about. Instruction counts do not: `valgrind --tool=callgrind`
//! counts every instruction each thread executes, the same for the same
//! binary and requests whatever else the machine does. Each variant's server
//! runs under callgrind with a thread's counts kept apart
//! (`--separate-threads=yes`); after a warm-up the counters are zeroed, a
//! fixed number of keep-alive requests is sent, and the counters are dumped.
//!
//! Two figures per variant. The worker's instructions per request are the
//! cost in the request path (the tracking allocator, heap sampling, the
//! watchdog's census tasks on the runtime): exact. The other threads'
//! (the probe's sampler, watchdog and exporter; tokio-metrics' reader) run
//! on wall-clock intervals, and callgrind slows the server about fifty-fold,
//! so over the same requests they run about fifty times more often than
//! they would: their figure is an upper bound, reported apart.

use std::path::Path;
use std::process::Command;

use meshwatch_benches::{callgrind_totals, http_requests, median};

use crate::SERVER_CORE;
use crate::variants::{Binaries, Server, Variant};

/// One variant's counts over the measured requests.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Requests answered while counting.
    pub requests: u64,
    /// Instructions of the busiest thread (the runtime's worker).
    pub worker: u64,
    /// Instructions of every other thread together.
    pub others: u64,
}

/// Keep-alive connections the requests are spread over.
const CONNECTIONS: usize = 10;

/// Counts `variant`'s instructions over `requests` requests after `warmup`.
fn count(
    variant: &Variant,
    binary: &Path,
    ingest: &str,
    warmup: u64,
    requests: u64,
) -> Result<Counts, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = dir.path().join("cg.out");
    let out_arg = format!("--callgrind-out-file={}", out.display());
    let wrapper = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        // Names in full in every dump, so each thread's file reads alone.
        "--compress-strings=no",
        "--quiet",
        &out_arg,
    ];
    let server = Server::start_under(&wrapper, variant, binary, SERVER_CORE, ingest)
        .map_err(|e| format!("start under valgrind: {e}"))?;
    let per_connection = |n: u64| n.div_ceil(CONNECTIONS as u64);
    http_requests(&server.addr, CONNECTIONS, per_connection(warmup))
        .map_err(|e| format!("warm-up: {e}"))?;
    control(&["-z", &server.pid().to_string()])?;
    let requests = http_requests(&server.addr, CONNECTIONS, per_connection(requests))
        .map_err(|e| format!("requests: {e}"))?;
    control(&["-d", &server.pid().to_string()])?;
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(dir.path()).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        // Dump 1 of each thread: `cg.out.1-01`, `cg.out.1-02`, ...
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("cg.out.1-") {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            threads.push(callgrind_totals(&text).ok_or(format!("no totals in {name}"))?);
        }
    }
    drop(server);
    if let Some(keep) = std::env::var_os("CALLGRIND_KEEP") {
        keep_outputs(dir.path(), Path::new(&keep), variant.name)?;
    }
    threads.sort_unstable();
    let worker = threads.pop().ok_or("callgrind dumped no thread")?;
    Ok(Counts {
        requests,
        worker,
        others: threads.iter().sum(),
    })
}

/// Copies a run's dumps into `keep` as `VARIANT.cg.out.*`, for
/// `callgrind_annotate` (`CALLGRIND_KEEP=DIR`).
fn keep_outputs(from: &Path, keep: &Path, variant: &str) -> Result<(), String> {
    std::fs::create_dir_all(keep).map_err(|e| format!("{}: {e}", keep.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            let to = keep.join(format!("{variant}.{name}"));
            std::fs::copy(&path, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    Ok(())
}

/// Runs `callgrind_control` and insists it worked.
fn control(args: &[&str]) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {args:?}: {status}"))
    }
}

/// Counts every variant `rounds` times, alternating, and prints the medians
/// of instructions per request and of the round-by-round ratios to plain
/// (the first variant). One round's count is exact for what was sent, but
/// how many requests each wake-up of the worker serves varies between runs,
/// which moves the count per request by about 1 %: hence rounds and medians.
pub fn run(
    variants: &[&Variant],
    binaries: &Binaries,
    ingest: &str,
    warmup: u64,
    requests: u64,
    rounds: usize,
) {
    println!(
        "callgrind: {rounds} rounds; each {warmup} warm-up requests, then {requests} counted, over {CONNECTIONS} keep-alive connections"
    );
    let built: Vec<(&Variant, &Path)> = variants
        .iter()
        .filter_map(|v| Some((*v, binaries.path(v.binary)?)))
        .collect();
    // Per variant: worker and other threads' instructions per request, and
    // the worker's ratio to plain, one entry per round.
    let mut worker = vec![Vec::new(); built.len()];
    let mut others = vec![Vec::new(); built.len()];
    let mut ratios = vec![Vec::new(); built.len()];
    for round in 1..=rounds {
        let mut plain = None;
        for (i, (variant, binary)) in built.iter().enumerate() {
            match count(variant, binary, ingest, warmup, requests) {
                Ok(counts) => {
                    let per = |n: u64| n as f64 / counts.requests.max(1) as f64;
                    let w = per(counts.worker);
                    let base = *plain.get_or_insert(w);
                    println!("  round {round}: {} {w:.0}", variant.name);
                    worker[i].push(w);
                    others[i].push(per(counts.others));
                    ratios[i].push(w / base);
                }
                Err(why) => println!("  round {round}: {} failed: {why}", variant.name),
            }
        }
    }
    println!(
        "| variant | worker instructions / request (median, min–max) | ÷ plain (median of rounds) | other threads / request (upper bound) |"
    );
    println!("|---|---|---|---|");
    for (i, (variant, _)) in built.iter().enumerate() {
        let (Some(w), Some(r), Some(o)) =
            (median(&worker[i]), median(&ratios[i]), median(&others[i]))
        else {
            println!("| {} | failed | | |", variant.name);
            continue;
        };
        let min = worker[i].iter().copied().fold(f64::INFINITY, f64::min);
        let max = worker[i].iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {w:.0} ({min:.0}–{max:.0}) | {r:.3} | {o:.0} |",
            variant.name
        );
    }
}
