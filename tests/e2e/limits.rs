//! The collector's connection limits, tried as a hostile local client
//! would: more probe connections than its open-file limit allows leave its
//! HTTP API answering, and an HTTP client that goes silent is closed.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use meshwatch_e2e::{Collector, wait_for};

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
