//! The probe against a hand-driven collector socket: what it sends, and how
//! it survives a collector that is absent or misbehaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use meshwatch_probe::Probe;
use meshwatch_proto::v1::{
    CollectorMessage, ProbeMessage, Snapshot, Welcome, collector_message, probe_message,
};
use meshwatch_proto::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, encode_frame};

/// Reads frames from one accepted probe connection.
struct FakeCollectorConn {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl FakeCollectorConn {
    fn accept(listener: &TcpListener) -> Self {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_LEN),
        }
    }

    fn next(&mut self) -> ProbeMessage {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(msg) = self.decoder.next_message::<ProbeMessage>().unwrap() {
                return msg;
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "probe closed the connection");
            self.decoder.extend(&buf[..n]);
        }
    }

    fn welcome(&mut self) {
        let mut frame = Vec::new();
        let reply = CollectorMessage {
            kind: Some(collector_message::Kind::Welcome(Welcome::default())),
        };
        encode_frame(&reply, DEFAULT_MAX_FRAME_LEN, &mut frame).unwrap();
        self.stream.write_all(&frame).unwrap();
    }

    fn next_snapshot(&mut self) -> Snapshot {
        match self.next().kind {
            Some(probe_message::Kind::Snapshot(s)) => s,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
}

fn free_port_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn start_without_collector_returns_at_once_and_shuts_down() {
    let started = Instant::now();
    let handle = Probe::builder()
        .service("lonely")
        .collector(free_port_addr())
        .interval(Duration::from_millis(20))
        .start()
        .unwrap();
    // A generous bound: starting must not wait for a connection.
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(handle.is_active());
    std::thread::sleep(Duration::from_millis(200));
    handle.shutdown();
}

#[test]
fn sends_hello_then_snapshots_of_the_watched_runtime() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .build()
        .unwrap();
    let handle = runtime.block_on(async {
        Probe::builder()
            .service("checkout")
            .collector(listener.local_addr().unwrap().to_string())
            .token("s3cret")
            .interval(Duration::from_millis(50))
            .start()
            .unwrap()
    });

    let mut conn = FakeCollectorConn::accept(&listener);
    let hello = match conn.next().kind {
        Some(probe_message::Kind::Hello(h)) => h,
        other => panic!("expected Hello first, got {other:?}"),
    };
    assert_eq!(hello.service, "checkout");
    assert_eq!(hello.token, "s3cret");
    assert_eq!(hello.pid, std::process::id());
    assert_eq!(hello.protocol_version, meshwatch_proto::PROTOCOL_VERSION);
    assert_eq!(hello.instance_id.len(), 32);
    conn.welcome();

    let first = conn.next_snapshot();
    let second = conn.next_snapshot();
    assert!(second.seq > first.seq);
    let process = second.process.unwrap();
    assert!(process.rss_bytes > 0);
    assert!(process.threads >= 3);
    assert!(!second.threads.is_empty());
    assert_eq!(second.runtimes.len(), 1);
    assert_eq!(second.runtimes[0].workers, 3);
    handle.shutdown();
}

#[test]
fn counts_snapshots_dropped_while_the_collector_was_away() {
    let addr = free_port_addr();
    let handle = Probe::builder()
        .service("patient")
        .collector(addr.clone())
        .interval(Duration::from_millis(10))
        .buffer_capacity(2)
        .start()
        .unwrap();
    // About 30 snapshots are taken while nobody listens; two fit the buffer.
    std::thread::sleep(Duration::from_millis(300));
    let listener = TcpListener::bind(&addr).unwrap();
    let mut conn = FakeCollectorConn::accept(&listener);
    assert!(matches!(
        conn.next().kind,
        Some(probe_message::Kind::Hello(_))
    ));
    conn.welcome();
    let dropped = (0..20)
        .map(|_| conn.next_snapshot().probe.unwrap().snapshots_dropped_total)
        .max()
        .unwrap();
    assert!(dropped >= 10, "only {dropped} drops counted");
    handle.shutdown();
}

#[test]
fn survives_a_collector_that_answers_garbage() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handle = Probe::builder()
        .service("sturdy")
        .collector(listener.local_addr().unwrap().to_string())
        .interval(Duration::from_millis(20))
        .start()
        .unwrap();
    {
        let mut conn = FakeCollectorConn::accept(&listener);
        assert!(matches!(
            conn.next().kind,
            Some(probe_message::Kind::Hello(_))
        ));
        // An absurd length prefix, then junk.
        conn.stream
            .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .unwrap();
    }
    // The probe drops that connection and, after its backoff, says Hello again.
    let mut conn = FakeCollectorConn::accept(&listener);
    assert!(matches!(
        conn.next().kind,
        Some(probe_message::Kind::Hello(_))
    ));
    conn.welcome();
    assert!(conn.next_snapshot().seq > 0);
    handle.shutdown();
}

#[test]
fn init_never_fails_even_on_a_bad_name() {
    assert!(Probe::builder().service("  ").start().is_err());
    let inert = meshwatch_probe::init("  ");
    assert!(
        !inert.is_active(),
        "init returns an inert handle instead of failing"
    );
}
