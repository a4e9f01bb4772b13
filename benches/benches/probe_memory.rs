//! The probe's memory, side by side: the resident memory of `mesh-service`
//! with the whole probe on (tracking allocator, heap sampling at its
//! default, watchdog, reporting to a real collector) against the same
//! service without meshwatch (`mesh-service-untracked` with
//! `MESHWATCH_DISABLE=1`), in the moments that used to cost the most:
//! idle, under load, and during a runaway-loop incident (when the watchdog
//! samples the stuck thread's stack and, before naming moved to the
//! collector, the service parsed its own debug info).
//!
//! Run with `cargo bench -p meshwatch-benches --bench probe_memory`.
//! Settings: `ROUNDS` (default 5) alternating pairs, `LOAD_SECONDS`
//! (default 5) of keep-alive load from `CONNECTIONS` (default 4) clients.

#![allow(clippy::expect_used)] // a benchmark that cannot start has nothing to report

use std::time::Duration;

use meshwatch_benches::{env_or, http_load, median, usage};
use meshwatch_e2e::{Collector, Process};

/// Reads one moment's figure out of a measurement.
type Pick = fn(&Moments) -> f64;

/// RSS in MiB of one process at each moment measured.
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    idle: f64,
    loaded: f64,
    looping: f64,
}

fn rss_mib(process: &Process) -> f64 {
    usage(process.pid())
        .expect("read the service's usage")
        .rss_bytes as f64
        / (1 << 20) as f64
}

/// Starts `bin` with the loop fault, then measures it idle, after load and
/// while one worker spins.
fn measure(bin: &str, envs: &[(&str, &str)], load: Duration, connections: usize) -> Moments {
    let mut all_envs = vec![("MESHWATCH_LOG", "warn")];
    all_envs.extend_from_slice(envs);
    let (process, addr) = Process::start(
        bin,
        &[
            "--name",
            "memory-bench",
            "--workers",
            "2",
            "--fault",
            "loop",
        ],
        &all_envs,
        "mesh-service listening http=",
    );
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_mib(&process);
    http_load(&addr, connections, load).expect("load");
    let loaded = rss_mib(&process);
    // The loop's own request never answers; a short timeout lets it spin.
    let trigger = addr.clone();
    std::thread::spawn(move || {
        let _ = get_once(&trigger, "/fault/loop?secs=5");
    });
    // Past the 1 s threshold, the stuck event and several stack samples.
    std::thread::sleep(Duration::from_secs(4));
    let looping = rss_mib(&process);
    Moments {
        idle,
        loaded,
        looping,
    }
}

/// One GET, answered or not within 10 s.
fn get_once(addr: &str, path: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { env_or("ROUNDS", 5) } else { 1 };
    let load = Duration::from_secs(if full { env_or("LOAD_SECONDS", 5) } else { 1 });
    let connections = env_or("CONNECTIONS", 4) as usize;
    let collector = Collector::start();
    let ingest = collector.ingest.as_str();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let base = measure(
            "mesh-service-untracked",
            &[("MESHWATCH_DISABLE", "1")],
            load,
            connections,
        );
        let probe = measure(
            "mesh-service",
            &[("MESHWATCH_COLLECTOR", ingest)],
            load,
            connections,
        );
        println!("round {round}: without {base:?}, with the probe {probe:?}");
        without.push(base);
        with.push(probe);
    }
    println!("moment  without (MiB)  with probe (MiB)  difference (MiB, median of rounds)");
    let moments: [(&str, Pick); 3] = [
        ("idle", |m| m.idle),
        ("loaded", |m| m.loaded),
        ("looping", |m| m.looping),
    ];
    for (name, pick) in moments {
        let a: Vec<f64> = without.iter().map(pick).collect();
        let b: Vec<f64> = with.iter().map(pick).collect();
        let diff: Vec<f64> = a.iter().zip(&b).map(|(a, b)| b - a).collect();
        println!(
            "{name:8} {:>14.1} {:>17.1} {:>+10.1}",
            median(&a).unwrap_or(f64::NAN),
            median(&b).unwrap_or(f64::NAN),
            median(&diff).unwrap_or(f64::NAN),
        );
    }
}
