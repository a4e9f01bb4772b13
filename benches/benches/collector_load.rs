//! The collector under the load of many probes: N simulated probes (real
//! TCP connections speaking the real protocol, each sending a realistic
//! snapshot every second) against a real `meshwatch-collector`; the
//! collector's CPU and RSS, against the same collector idle in the same run.
//!
//! The probes first send at 10 Hz for `FILL` seconds (default 95), so the
//! collector's in-memory history (900 samples per instance) is full and the
//! RSS measured is the steady state; then at 1 Hz for `SECONDS` (default
//! 30), over which the CPU is measured. The store's growth is the data
//! directory's size at the end against the idle collector's, over the rows
//! it wrote (one per instance per `--history-resolution`, 10 s). Run with
//! `cargo bench -p meshwatch-benches --bench collector_load`; `PROBES`
//! (default 1000). With `OTLP=1` the collector also exports to an OTLP
//! endpoint on loopback (`--otlp-endpoint`, every `OTLP_INTERVAL` seconds,
//! default 15, the collector's own default): compare its CPU with a run
//! without.
#![allow(clippy::expect_used)] // a benchmark that cannot set up has nothing to report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshwatch_benches::simulated::{PER_THREAD, drive};
use meshwatch_benches::{env_or, usage};
use meshwatch_e2e::Collector;
use meshwatch_e2e::otlp_sink::OtlpSink;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let probes = if full {
        env_or("PROBES", 1000) as usize
    } else {
        20
    };
    let seconds = if full { env_or("SECONDS", 30) } else { 2 };
    let fill = if full { env_or("FILL", 95) } else { 1 };
    let otlp = (env_or("OTLP", 0) == 1).then(OtlpSink::start);
    let otlp_args = otlp.as_ref().map(|sink| {
        vec![
            "--otlp-endpoint".to_owned(),
            sink.url(),
            "--otlp-interval-secs".to_owned(),
            env_or("OTLP_INTERVAL", 15).to_string(),
        ]
    });
    let args: Vec<&str> = otlp_args.iter().flatten().map(String::as_str).collect();
    let collector = Collector::start_with(None, &args);
    let pid = collector.process.pid();

    let idle_start = usage(pid).expect("collector usage");
    std::thread::sleep(Duration::from_secs(seconds.min(10)));
    let idle_end = usage(pid).expect("collector usage");
    let idle_cpu = (idle_end.cpu - idle_start.cpu).as_secs_f64() / seconds.min(10) as f64;
    let idle_store = dir_bytes(&collector.data_dir());

    let stop = Arc::new(AtomicBool::new(false));
    let period_ms = Arc::new(AtomicU64::new(100));
    let senders: Vec<_> = (0..probes.div_ceil(PER_THREAD))
        .map(|t| {
            let first = t * PER_THREAD;
            let count = PER_THREAD.min(probes - first);
            let (ingest, stop, period) =
                (collector.ingest.clone(), stop.clone(), period_ms.clone());
            std::thread::spawn(move || drive(ingest, first, count, stop, period))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(fill));
    period_ms.store(1000, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let connected = collector.instances().len();
    let start = usage(pid).expect("collector usage");
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let end = usage(pid).expect("collector usage");
    let cpu = (end.cpu - start.cpu).as_secs_f64() / began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        let _ = sender.join();
    }
    println!(
        "collector_load: {probes} probes ({connected} registered), history filled at 10 Hz for {fill} s, then 1 Hz for {seconds} s"
    );
    println!(
        "  collector CPU: idle {:.3} core, loaded {cpu:.3} core (ratio {:.1})",
        idle_cpu,
        cpu / idle_cpu.max(1e-6)
    );
    println!(
        "  collector RSS: idle {:.1} MiB, loaded {:.1} MiB (ratio {:.1})",
        idle_end.rss_bytes as f64 / 1048576.0,
        end.rss_bytes as f64 / 1048576.0,
        end.rss_bytes as f64 / idle_end.rss_bytes as f64
    );
    if let Some(sink) = &otlp {
        let requests = sink.received("/v1/metrics");
        let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
        println!(
            "  OTLP export: {} metrics requests in the run, {:.1} KiB each on average",
            requests.len(),
            bytes as f64 / requests.len().max(1) as f64 / 1024.0
        );
    }
    // The flusher commits every second: let the last rows land.
    std::thread::sleep(Duration::from_secs(2));
    let rows = collector
        .metric("meshwatch_collector_history_rows_written_total")
        .unwrap_or(0.0);
    let grown = dir_bytes(&collector.data_dir()).saturating_sub(idle_store);
    let per_row = grown as f64 / rows.max(1.0);
    println!(
        "  store: idle {:.1} MiB, {rows:.0} rows later {:.1} MiB: {per_row:.0} bytes a row, {:.1} MiB a probe a day at one row per 10 s",
        idle_store as f64 / 1048576.0,
        (idle_store + grown) as f64 / 1048576.0,
        per_row * 8640.0 / 1048576.0
    );
}

/// The bytes of the files directly in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
