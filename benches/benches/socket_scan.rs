//! The probe's socket scan (`/proc/self/fd` joined with `/proc/self/net/tcp`
//! and `tcp6`) at 0, 1,000 and 10,000 open sockets.
//!
//! This process links the probe, holds the sockets itself (pairs of
//! loopback connections) and reports to a real collector every 200 ms. Two
//! figures per size: one scan's duration, as the probe measures and sends it
//! (`sockets.scan_duration_ns` in `/api/v1/services`), and the CPU the
//! probe's sampler thread actually used per second, which the scan budget
//! keeps bounded by reusing an expensive scan. Run with
//! `cargo bench -p meshwatch-benches --bench socket_scan`; `SECONDS` (default
//! 5) per size.
#![allow(clippy::expect_used)] // a benchmark that cannot set up has nothing to report

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use meshwatch_benches::{env_or, median};
use meshwatch_e2e::Collector;

const SIZES: [usize; 3] = [0, 1_000, 10_000];

/// Opens `sockets` sockets as loopback connection pairs.
fn open_sockets(listener: &TcpListener, sockets: usize) -> Vec<TcpStream> {
    let addr = listener.local_addr().expect("listener address");
    let mut held = Vec::with_capacity(sockets);
    for _ in 0..sockets / 2 {
        let client = TcpStream::connect(addr).expect("connect: is RLIMIT_NOFILE above 10,100?");
        let (server, _) = listener.accept().expect("accept");
        held.push(client);
        held.push(server);
    }
    held
}

/// CPU time so far of the probe's sampler thread (`meshwatch-sampler`,
/// truncated to 15 characters by the kernel).
fn sampler_cpu() -> Duration {
    let Ok(tasks) = procfs::process::Process::myself().and_then(|p| p.tasks()) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|t| {
            t.stat()
                .is_ok_and(|s| s.comm.starts_with("meshwatch-sampl"))
        })
        .filter_map(|t| t.schedstat().ok())
        .map(|s| Duration::from_nanos(s.sum_exec_runtime))
        .sum()
}

/// The scan durations the probe reported over `seconds`, in microseconds.
fn scan_times(collector: &Collector, seconds: u64) -> Vec<f64> {
    let mut times = Vec::new();
    let mut last_seen = 0;
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        for instance in collector.instances() {
            let seen = instance["last_seen_ms"].as_i64().unwrap_or(0);
            if seen != last_seen
                && let Some(ns) = instance["sockets"]["scan_duration_ns"].as_f64()
            {
                last_seen = seen;
                times.push(ns / 1000.0);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    times
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = if full { env_or("SECONDS", 5) } else { 1 };
    let collector = Collector::start();
    let probe = meshwatch_probe::Probe::builder()
        .service("socket-scan-bench")
        .collector(collector.ingest.clone())
        .interval(Duration::from_millis(200))
        .start()
        .expect("probe starts");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");

    let mut baseline = None;
    println!("socket_scan: {seconds} s per size, medians; snapshots every 200 ms");
    for size in SIZES {
        let held = open_sockets(&listener, if full { size } else { size.min(100) });
        std::thread::sleep(Duration::from_millis(500));
        let cpu_before = sampler_cpu();
        let window = Instant::now();
        let scan = median(&scan_times(&collector, seconds)).unwrap_or(f64::NAN);
        let cpu_share = (sampler_cpu() - cpu_before).as_secs_f64() / window.elapsed().as_secs_f64();
        let base = *baseline.get_or_insert(scan);
        println!(
            "  {:>6} sockets: one scan {scan:>7.0} us (ratio to 0 sockets {:.1}); sampler thread {:.2} % of a core",
            held.len(),
            scan / base,
            cpu_share * 100.0,
        );
        drop(held);
    }
    probe.shutdown();
}
