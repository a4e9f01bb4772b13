//! Bad input on the ingest port gets a clear Reject or a closed connection
//! with a logged reason, while the collector keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use meshwatch_e2e::{Collector, Service, wait_for};
use meshwatch_proto::v1::{
    CollectorMessage, Hello, ProbeMessage, RejectCode, collector_message, probe_message,
};
use meshwatch_proto::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, PROTOCOL_VERSION, encode_frame};

const TOKEN: &str = "correct-horse";

pub(crate) fn connect(collector: &Collector) -> TcpStream {
    let stream = TcpStream::connect(&collector.ingest).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// Reads until the collector closes the connection; returns the replies sent
/// before it did.
fn replies_until_closed(mut stream: TcpStream) -> Vec<CollectorMessage> {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => decoder.extend(&buf[..n]),
            // A reset also means the collector closed on us.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!("collector neither answered nor closed: {err}"),
        }
        while let Some(msg) = decoder.next_message::<CollectorMessage>().unwrap() {
            replies.push(msg);
        }
    }
    replies
}

fn hello(version: u32, token: &str) -> Vec<u8> {
    frame(probe_message::Kind::Hello(Hello {
        protocol_version: version,
        token: token.to_owned(),
        ..hello_fields("intruder", "0123456789abcdef0123456789abcdef", 1)
    }))
}

/// A current Hello for `instance_id` of service `service` from process
/// `pid`, without a token.
fn hello_fields(service: &str, instance_id: &str, pid: u32) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        service: service.to_owned(),
        instance_id: instance_id.to_owned(),
        pid,
        host: "test".to_owned(),
        interval_ms: 1000,
        ..Hello::default()
    }
}

fn rejection(replies: &[CollectorMessage]) -> (RejectCode, String) {
    match replies {
        [
            CollectorMessage {
                kind: Some(collector_message::Kind::Reject(reject)),
            },
        ] => (reject.code(), reject.reason.clone()),
        other => panic!("expected exactly one Reject, got {other:?}"),
    }
}

#[test]
fn bad_input_is_refused_and_the_mesh_keeps_being_served() {
    let collector = Collector::start_with_token(Some(TOKEN));
    let _healthy = Service::start(&collector, "healthy", 1);
    let up = collector.wait_for_instance("healthy up", |i| i["service"] == "healthy");

    // Garbage bytes: an absurd length prefix then noise. Closed.
    let mut garbage = connect(&collector);
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(replies_until_closed(garbage).is_empty());

    // A frame header announcing more than the limit. Closed before the body.
    let mut oversized = connect(&collector);
    let len = u32::try_from(DEFAULT_MAX_FRAME_LEN + 1).unwrap();
    oversized.write_all(&len.to_be_bytes()).unwrap();
    assert!(replies_until_closed(oversized).is_empty());

    // A well-formed Hello with the wrong token.
    let mut wrong_token = connect(&collector);
    wrong_token
        .write_all(&hello(PROTOCOL_VERSION, "guess"))
        .unwrap();
    let (code, reason) = rejection(&replies_until_closed(wrong_token));
    assert_eq!(code, RejectCode::BadToken);
    assert!(reason.contains("token"), "unclear reason: {reason}");

    // A well-formed Hello speaking a protocol version from the future.
    let mut wrong_version = connect(&collector);
    wrong_version
        .write_all(&hello(PROTOCOL_VERSION + 1, TOKEN))
        .unwrap();
    let (code, reason) = rejection(&replies_until_closed(wrong_version));
    assert_eq!(code, RejectCode::UnsupportedVersion);
    assert!(reason.contains("version"), "unclear reason: {reason}");

    // Each refusal is logged with its reason (after the connection closes,
    // so on a busy machine a moment after the client sees the close).
    for expected in ["exceeds the limit", "token", "version"] {
        wait_for(
            &format!("a log line about {expected:?}"),
            Duration::from_secs(10),
            || collector.process.stderr().contains(expected).then_some(()),
        );
    }

    // The healthy service was served throughout and still is.
    let seen = up["last_seen_ms"].as_i64().unwrap();
    wait_for("healthy to report again", Duration::from_secs(10), || {
        collector.instances().into_iter().find(|i| {
            i["service"] == "healthy"
                && i["state"] == "up"
                && i["last_seen_ms"].as_i64().unwrap() > seen
        })
    });
    assert!(
        !collector
            .instances()
            .iter()
            .any(|i| i["service"] == "intruder"),
        "a rejected probe must not be registered"
    );
}

/// Frames one probe message.
pub(crate) fn frame(kind: probe_message::Kind) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_frame(
        &ProbeMessage { kind: Some(kind) },
        DEFAULT_MAX_FRAME_LEN,
        &mut frame,
    )
    .unwrap();
    frame
}

#[test]
fn oversized_names_and_lists_are_cut_and_counted_not_kept_whole() {
    let collector = Collector::start();
    let mut stream = connect(&collector);
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        service: "hoarder".to_owned(),
        instance_id: "fedcba9876543210fedcba9876543210".to_owned(),
        pid: 7,
        host: "h".repeat(200_000),
        interval_ms: 1000,
        ..Hello::default()
    };
    stream
        .write_all(&frame(probe_message::Kind::Hello(hello)))
        .unwrap();
    let threads = (0..20_000)
        .map(|tid| meshwatch_proto::v1::ThreadStats {
            tid,
            name: "t".repeat(20),
            cpu_ns_total: 1,
        })
        .collect();
    let snapshot = meshwatch_proto::v1::Snapshot {
        seq: 1,
        threads,
        ..Default::default()
    };
    stream
        .write_all(&frame(probe_message::Kind::Snapshot(snapshot)))
        .unwrap();
    let instance = collector.wait_for_instance("the hoarder's snapshot", |i| {
        i["service"] == "hoarder" && i["threads"].as_array().is_some_and(|t| !t.is_empty())
    });
    assert_eq!(instance["host"].as_str().unwrap().len(), 1024, "host cut");
    assert!(
        instance["threads"].as_array().unwrap().len() <= 4096,
        "threads cut"
    );
    let cut = wait_for("the cuts counted", Duration::from_secs(5), || {
        collector
            .metric("meshwatch_collector_fields_cut_total")
            .filter(|&n| n >= 2.0)
    });
    assert!(cut >= 2.0);
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A Hello for `instance_id` of service `service` from process `pid`.
pub(crate) fn hello_as(service: &str, instance_id: &str, pid: u32) -> Vec<u8> {
    frame(probe_message::Kind::Hello(hello_fields(
        service,
        instance_id,
        pid,
    )))
}

/// A snapshot numbered `seq`, dated `time_unix_ms`, with this RSS.
pub(crate) fn snapshot_at(seq: u64, time_unix_ms: i64, rss_bytes: u64) -> Vec<u8> {
    frame(probe_message::Kind::Snapshot(
        meshwatch_proto::v1::Snapshot {
            seq,
            time_unix_ms,
            process: Some(meshwatch_proto::v1::ProcessStats {
                rss_bytes,
                ..Default::default()
            }),
            ..Default::default()
        },
    ))
}

#[test]
fn a_snapshot_dated_a_year_ahead_is_stored_at_now_and_the_next_one_still_shows() {
    let collector = Collector::start();
    let mut stream = connect(&collector);
    stream
        .write_all(&hello_as("skewed", "00000000000000000000000000000a11", 11))
        .unwrap();
    let year_ms = 365 * 24 * 3600 * 1000;
    stream
        .write_all(&snapshot_at(1, now_ms() + year_ms, 111_000_000))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stream
        .write_all(&snapshot_at(2, now_ms(), 222_000_000))
        .unwrap();

    let points = wait_for(
        "the current snapshot in the series",
        Duration::from_secs(15),
        || {
            let series = collector.get_json("/api/v1/series?service=skewed&metric=rss_bytes");
            let points = series["series"][0]["points"].as_array()?.clone();
            points
                .iter()
                .any(|p| p[1].as_f64() == Some(222_000_000.0))
                .then_some(points)
        },
    );
    let latest_allowed = now_ms() + 5_000;
    assert!(
        points
            .iter()
            .all(|p| p[0].as_i64().is_some_and(|t| t <= latest_allowed)),
        "nothing stored ahead of now: {points:?}"
    );
    let clamped = collector
        .metric("meshwatch_collector_snapshot_times_clamped_total")
        .unwrap_or(0.0);
    assert!(clamped >= 1.0, "the clamp counted: {clamped}");
}

#[test]
fn a_hello_with_a_live_instance_id_from_another_process_is_refused() {
    let collector = Collector::start();
    let id = "00000000000000000000000000000b22";
    let mut owner = connect(&collector);
    owner.write_all(&hello_as("owned", id, 100)).unwrap();
    owner
        .write_all(&snapshot_at(1, now_ms(), 1_000_000))
        .unwrap();
    collector.wait_for_instance("the owner registered", |i| i["instance_id"] == id);

    let mut thief = connect(&collector);
    thief.write_all(&hello_as("owned", id, 200)).unwrap();
    let (code, reason) = rejection(&replies_until_closed(thief));
    assert_eq!(code, RejectCode::InstanceInUse, "{reason}");
    let owned = collector.wait_for_instance("the owner still there", |i| i["instance_id"] == id);
    assert_eq!(owned["pid"], 100, "not taken over: {owned:#}");
    drop(owner);
}

#[test]
fn a_hello_copying_everything_the_api_shows_of_a_live_probe_is_refused() {
    let collector = Collector::start();
    let service = Service::start(&collector, "victim", 1);
    let shown = collector.wait_for_instance("the real probe", |i| i["service"] == "victim");
    // What anyone on the host can read from the API.
    let copied = Hello {
        service: "victim".to_owned(),
        instance_id: shown["instance_id"].as_str().unwrap().to_owned(),
        pid: u32::try_from(shown["pid"].as_u64().unwrap()).unwrap(),
        host: shown["host"].as_str().unwrap().to_owned(),
        start_time_unix_ms: shown["started_at_ms"].as_i64().unwrap(),
        runtime: "rust".to_owned(),
        ..hello_fields("victim", "", 0)
    };
    let mut thief = connect(&collector);
    thief
        .write_all(&frame(probe_message::Kind::Hello(copied)))
        .unwrap();
    let (code, reason) = rejection(&replies_until_closed(thief));
    assert_eq!(code, RejectCode::InstanceInUse, "{reason}");
    // The real probe still reports on its own connection.
    let before = shown["last_seen_ms"].as_i64().unwrap();
    collector.wait_for_instance("the real probe still reporting", |i| {
        i["instance_id"] == shown["instance_id"]
            && i["state"] == "up"
            && i["last_seen_ms"].as_i64().is_some_and(|t| t > before)
    });
    drop(service);
}
