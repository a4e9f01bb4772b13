//! The collector's connection limits, tried as a hostile local client
//! would: more probe connections than its open-file limit allows leave its
//! HTTP API answering, an HTTP client that goes silent is closed, a
//! service whose instances die by the hundred stays cheap to ask about,
//! and a client that sends the largest and most of everything leaves the
//! collector within a stated memory bound.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use meshwatch_e2e::{Collector, status, wait_for};

use meshwatch_proto::v1::{
    Event, Frame, Hello, ProbeMessage, StuckPoll, StuckPollClass, StuckPollState, event,
    probe_message,
};
use meshwatch_proto::{DEFAULT_MAX_FRAME_LEN, PROTOCOL_VERSION, encode_frame};

use crate::bad_input::{connect, frame, hello_as, now_ms, snapshot_at};

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
fn the_collector_raises_its_open_file_limit_to_the_hard_one() {
    raise_own_fd_limit(2048);
    let collector = Collector::start_with_fd_limits(512, 2048, &[]);
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", collector.process.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let figures: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(figures, ["2048", "2048"], "{open_files}");
    assert!(
        collector
            .process
            .stderr()
            .contains("raised the open-file limit"),
        "said in the log"
    );
}

#[test]
fn an_otlp_export_over_4_mib_is_refused_and_the_api_answers() {
    let collector = Collector::start();
    // The OTLP receiver reads at most 4 MiB.
    let body = vec![0u8; 4 * 1024 * 1024 + 1];
    let sent = ureq::post(format!("{}/v1/metrics", collector.http))
        .header("Content-Type", "application/x-protobuf")
        .config()
        .http_status_as_error(false)
        .build()
        .send(&body[..]);
    match sent {
        Ok(response) => assert_eq!(response.status().as_u16(), 413),
        // Or closed on the client while it was still sending.
        Err(ureq::Error::Io(err)) => assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{err}"
        ),
        Err(err) => panic!("POST /v1/metrics: {err}"),
    }
    let health = ureq::get(&format!("{}/healthz", collector.http))
        .call()
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
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

/// The resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A stuck-poll event with key `key` as large as a frame may hold: every
/// text a kilobyte, 256 frames of kilobyte names.
fn fat_stuck_poll(key: String) -> Vec<u8> {
    let kib = |c: char| c.to_string().repeat(1024);
    let frames = (0..240)
        .map(|n| Frame {
            function: format!("{n}{}", kib('f')),
            file: kib('p'),
            line: n,
            address: u64::from(n),
        })
        .collect();
    frame(probe_message::Kind::Event(Event {
        time_unix_ms: now_ms(),
        kind: Some(event::Kind::StuckPoll(StuckPoll {
            key,
            state: StuckPollState::Stuck.into(),
            class: StuckPollClass::RunawayLoop.into(),
            thread_name: kib('t'),
            stuck_for_ms: 5_000,
            cpu_percent: 100.0,
            spawn_location: kib('s'),
            frames,
            caveat: kib('c'),
            ..StuckPoll::default()
        })),
    }))
}

/// A frame that holds an empty message: its length, zero, and nothing.
fn frame_of_nothing() -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &ProbeMessage { kind: None },
        DEFAULT_MAX_FRAME_LEN,
        &mut out,
    )
    .unwrap();
    assert_eq!(out, [0, 0, 0, 0]);
    out
}

/// The most the collector may hold after the attack below; it starts at
/// about 20 MiB. Before its bounds it grew by over a gigabyte: every
/// stuck-poll event kept whole, 64 per instance, and every service kept.
const MAX_RSS_AFTER_ATTACK: u64 = 160 << 20;

#[test]
fn a_hostile_client_leaves_the_collector_within_its_memory_bound() {
    let collector = Collector::start();
    let pid = collector.process.pid();
    let before = rss_bytes(pid);

    // Huge names: Hellos whose every text is most of a frame.
    for n in 0..50u32 {
        let mut probe = connect(&collector);
        let big = "n".repeat(300_000);
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            service: format!("{n}{big}"),
            instance_id: format!("{n:032x}"),
            pid: 30_000 + n,
            host: big.clone(),
            runtime: big,
            interval_ms: 1000,
            ..Hello::default()
        };
        let _ = probe.write_all(&frame(probe_message::Kind::Hello(hello)));
        let _ = probe.read(&mut [0u8; 64]);
    }

    // Thousands of distinct stuck-poll keys, each event as fat as allowed,
    // from a few dozen instances.
    for instance in 0..30u32 {
        let mut probe = connect(&collector);
        probe
            .write_all(&hello_as(
                "spinner",
                &format!("{:032x}", 1 << 20 | instance),
                40_000 + instance,
            ))
            .unwrap();
        let _ = probe.read(&mut [0u8; 64]);
        for key in 0..100 {
            if probe
                .write_all(&fat_stuck_poll(format!("{instance}-{key}")))
                .is_err()
            {
                break;
            }
        }
    }

    // 400k empty frames, over a hundred connections.
    let empty = frame_of_nothing();
    let burst: Vec<u8> = empty.repeat(4000);
    for _ in 0..100 {
        let mut probe = connect(&collector);
        let _ = probe.write_all(&burst);
    }

    // 10,000 services that each come, report once and leave.
    for n in 0..10_000u32 {
        let mut probe = connect(&collector);
        let _ = probe.write_all(&hello_as(
            &format!("pod-{n}"),
            &format!("{:032x}", 2 << 20 | n),
            50_000 + n,
        ));
        let _ = probe.write_all(&snapshot_at(1, now_ms(), 1_000_000));
        let _ = probe.read(&mut [0u8; 64]);
    }

    std::thread::sleep(Duration::from_secs(3));
    let after = rss_bytes(pid);
    assert!(
        after < MAX_RSS_AFTER_ATTACK,
        "the collector grew from {} MiB to {} MiB",
        before >> 20,
        after >> 20
    );
    let health = ureq::get(&format!("{}/healthz", collector.http))
        .call()
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let services = collector.get_json("/api/v1/services");
    let listed = services["services"].as_array().map_or(0, Vec::len);
    assert!(
        listed <= 2000 + 30,
        "{listed} instances kept: at most 2,000 down ones and the live"
    );
    let incidents = collector.get_json("/api/v1/incidents?state=open");
    let open = incidents["incidents"].as_array().map_or(0, Vec::len);
    assert!(
        open <= 30 * 16,
        "{open} incidents open: 16 per instance at most"
    );
    assert!(
        collector
            .metric("meshwatch_collector_fields_cut_total")
            .is_some_and(|n| n >= 50.0),
        "the huge names were cut and counted"
    );
    assert!(
        collector
            .metric("meshwatch_collector_incidents_evicted_total")
            .is_some_and(|n| n > 0.0),
        "the endless stuck-poll keys were evicted and counted"
    );
}
