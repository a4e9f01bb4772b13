//! The probe against a hand-driven collector socket: what it sends, and how
//! it survives a collector that is absent or misbehaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use meshwatch_probe::Probe;
use support::FakeCollectorConn;

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
fn shutdown_does_not_wait_for_a_collector_silent_in_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handle = Probe::builder()
        .service("patient")
        .collector(listener.local_addr().unwrap().to_string())
        .start()
        .unwrap();
    // The collector takes the Hello and never answers: the probe waits
    // for its reply, for up to the handshake's 5 s.
    let (_silent, _) = FakeCollectorConn::accept_hello(&listener);
    let stopping = Instant::now();
    handle.shutdown();
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
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

    let (mut conn, hello) = FakeCollectorConn::accept_hello(&listener);
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
    let (mut conn, _) = FakeCollectorConn::accept_hello(&listener);
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
        let (mut conn, _) = FakeCollectorConn::accept_hello(&listener);
        // An absurd length prefix, then junk.
        conn.stream
            .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .unwrap();
    }
    // The probe drops that connection and, after its backoff, says Hello again.
    let (mut conn, _) = FakeCollectorConn::accept_hello(&listener);
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
