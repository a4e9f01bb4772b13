//! Simulated probes: real TCP connections speaking the real protocol, each
//! sending a realistic snapshot of a small service, so a collector can be
//! loaded with thousands of instances without thousands of processes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshwatch_api::now_ms;
use meshwatch_proto::v1::{
    AgeBucket, HeapStats, Hello, ProbeMessage, ProbeStats, ProcessStats, RuntimeStats, Snapshot,
    SocketStats, StateCount, ThreadStats, WorkerStats, probe_message,
};
use meshwatch_proto::{DEFAULT_MAX_FRAME_LEN, PROTOCOL_VERSION, encode_frame};

/// Connections each sender thread drives.
pub const PER_THREAD: usize = 100;

/// `msg` as one frame of the wire protocol.
#[allow(clippy::expect_used)] // this module's fixed messages: one too large is a bug here
fn frame(msg: probe_message::Kind) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &ProbeMessage { kind: Some(msg) },
        DEFAULT_MAX_FRAME_LEN,
        &mut out,
    )
    .expect("frame fits");
    out
}

/// A snapshot like a small service's: 8 threads, one runtime of 4 workers,
/// a few socket states.
fn snapshot(seq: u64) -> Snapshot {
    Snapshot {
        seq,
        time_unix_ms: now_ms(),
        process: Some(ProcessStats {
            rss_bytes: 40 << 20,
            virtual_bytes: 1 << 30,
            cpu_seconds_total: seq as f64 * 0.02,
            threads: 8,
            fds_open: 40,
            fds_limit: 65536,
            memory_limit_bytes: 1 << 31,
            ..ProcessStats::default()
        }),
        threads: (0..8)
            .map(|i| ThreadStats {
                tid: 1000 + i,
                name: "tokio-rt-worker".to_owned(),
                cpu_ns_total: seq * 1_000_000,
            })
            .collect(),
        runtimes: vec![RuntimeStats {
            flavor: "multi_thread".to_owned(),
            workers: 4,
            tasks_alive: 120,
            worker: (0..4)
                .map(|i| WorkerStats {
                    index: i,
                    busy_ns_total: seq * 10_000_000,
                    park_count: seq * 3,
                    park_unpark_count: seq * 6,
                    ..WorkerStats::default()
                })
                .collect(),
            ..RuntimeStats::default()
        }],
        heap: Some(HeapStats {
            tracked: true,
            live_bytes: 20 << 20,
            ..HeapStats::default()
        }),
        probe: Some(ProbeStats::default()),
        sockets: Some(SocketStats {
            total: 30,
            established: 25,
            listen: 1,
            by_state: vec![StateCount {
                state: "ESTABLISHED".to_owned(),
                count: 25,
            }],
            ages: vec![AgeBucket {
                le_seconds: 60,
                count: 25,
            }],
            ..SocketStats::default()
        }),
        ..Snapshot::default()
    }
}

/// Connects `count` probes and sends each a snapshot every `period_ms`
/// until `stop`.
pub fn drive(
    ingest: String,
    first: usize,
    count: usize,
    stop: Arc<AtomicBool>,
    period_ms: Arc<AtomicU64>,
) {
    let mut conns: Vec<TcpStream> = (first..first + count)
        .filter_map(|i| {
            let mut stream = TcpStream::connect(&ingest).ok()?;
            let hello = Hello {
                protocol_version: PROTOCOL_VERSION,
                service: format!("svc-{}", i % 50),
                instance_id: format!("{i:032x}"),
                pid: i as u32,
                host: "bench".to_owned(),
                runtime: "rust".to_owned(),
                interval_ms: 1000,
                start_time_unix_ms: now_ms(),
                ..Hello::default()
            };
            stream
                .write_all(&frame(probe_message::Kind::Hello(hello)))
                .ok()?;
            let mut welcome = [0u8; 64];
            let _ = stream.read(&mut welcome).ok()?;
            Some(stream)
        })
        .collect();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        seq += 1;
        let bytes = frame(probe_message::Kind::Snapshot(snapshot(seq)));
        conns.retain_mut(|c| c.write_all(&bytes).is_ok());
        let period = Duration::from_millis(period_ms.load(Ordering::Relaxed));
        if let Some(rest) = period.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}
