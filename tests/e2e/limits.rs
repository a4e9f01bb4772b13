//! The collector's connection limits, tried as a hostile local client
//! would: more probe connections than its open-file limit allows leave its
//! HTTP API answering, an HTTP client that goes silent is closed, and a
//! service whose instances die by the hundred stays cheap to ask about.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use meshwatch_e2e::{Collector, status, wait_for};

use crate::bad_input::{connect, hello_as, now_ms, snapshot_at};

/// Lets this test process open more sockets than the usual 1024.
fn raise_own_fd_limit(to: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < to {
            limit.rlim_cur = to.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

#[test]
fn eleven_hundred_connections_under_a_1024_fd_limit_leave_the_api_answering() {
    raise_own_fd_limit(4096);
    let collector = Collector::start_with_fd_limit(1024, &[]);
    let held: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(&collector.ingest).ok())
        .collect();
    assert!(held.len() >= 1000, "connected {}", held.len());

    // The probes' listener keeps to its share of the fd limit (1024 less
    // the 256 kept for the rest) and refuses the rest, counted (silent
    // connections also time out and free their slots, so not all 332 extra
    // are refused); the HTTP API has fds and slots of its own.
    wait_for("refusals counted", Duration::from_secs(30), || {
        collector
            .metric("meshwatch_collector_connections_refused_total")
            .filter(|&n| n > 0.0)
    });
    let open = collector
        .metric("meshwatch_collector_connections")
        .unwrap_or(f64::MAX);
    assert!(open <= 768.0, "{open} probe connections held");
    let health = ureq::get(&format!("{}/healthz", collector.http))
        .call()
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let services = collector.get_json("/api/v1/services");
    assert!(services["services"].is_array(), "{services}");
    assert!(
        collector
            .process
            .stderr()
            .contains("refusing a probe connection"),
        "said in the log"
    );
    drop(held);
}

#[test]
fn a_silent_http_client_is_closed_after_the_read_timeout() {
    let collector = Collector::start();
    let address = collector.http.trim_start_matches("http://");
    let mut silent = TcpStream::connect(address).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let began = Instant::now();
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    let waited = began.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "closed, not answered: {read:?}"
    );
    assert!(
        waited >= Duration::from_secs(25) && waited < Duration::from_secs(60),
        "closed after the 30 s read timeout, not at once nor never: {waited:?}"
    );
}

/// Issue 13: 300 instances of one service in a crash loop (each says hello,
/// sends a snapshot and drops its connection without a goodbye), and
/// `meshwatch status` stays fast and small: the service's down instances
/// are bounded, and its service-wide incident is not copied into each.
#[test]
fn three_hundred_instances_of_one_service_in_a_crash_loop_leave_status_fast() {
    let collector = Collector::start();
    for life in 0..300u32 {
        let mut probe = connect(&collector);
        probe
            .write_all(&hello_as("phoenix", &format!("{life:032x}"), 10_000 + life))
            .unwrap();
        probe
            .write_all(&snapshot_at(1, now_ms(), 20_000_000))
            .unwrap();
        // Read the Welcome, so the collector has registered this life before
        // it dies.
        let mut welcome = [0u8; 64];
        let _ = probe.read(&mut welcome);
    }
    wait_for("crash_loop on phoenix", Duration::from_secs(60), || {
        let incidents = collector.get_json("/api/v1/incidents");
        incidents["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["kind"] == "crash_loop" && i["service"] == "phoenix")
            .cloned()
    });

    let began = Instant::now();
    let json: serde_json::Value = serde_json::from_str(&status(&collector, true)).unwrap();
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "meshwatch status took {took:?}"
    );
    let phoenix = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == "phoenix")
        .count();
    assert!(
        (1..=25).contains(&phoenix),
        "{phoenix} instances of phoenix listed: down ones are bounded"
    );
    let services = meshwatch_e2e::http_get(&collector.http, "/api/v1/services");
    assert!(
        services.len() < 256 * 1024,
        "/api/v1/services is {} bytes",
        services.len()
    );
}
