//! The collector in-process, spoken to over real sockets: good probes get in,
//! bad input gets a Reject or a closed connection, and the good probes keep
//! being served throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use meshwatch_collector::{Config, RunningCollector, StartError};
use meshwatch_proto::v1::{
    CollectorMessage, Hello, ProbeMessage, ProcessStats, RejectCode, RuntimeStats, Snapshot,
    collector_message, probe_message,
};
use meshwatch_proto::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, PROTOCOL_VERSION, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-token";
const WAIT: Duration = Duration::from_secs(5);

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http = "127.0.0.1:0".parse().unwrap();
    config.token = Some(TOKEN.to_owned());
    config.hello_timeout = Duration::from_millis(500);
    config
}

fn hello(instance_id: &str) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        service: "checkout".to_owned(),
        instance_id: instance_id.to_owned(),
        pid: 4242,
        host: "test-host".to_owned(),
        start_time_unix_ms: 1_700_000_000_000,
        probe_version: "0.1.0".to_owned(),
        token: TOKEN.to_owned(),
        runtime: "rust".to_owned(),
        interval_ms: 1000,
        watched_from_outside: false,
        session_key: vec![7; 16],
    }
}

fn snapshot(seq: u64, rss_bytes: u64) -> Snapshot {
    Snapshot {
        seq,
        time_unix_ms: 1_700_000_000_000 + i64::try_from(seq).unwrap() * 1000,
        process: Some(ProcessStats {
            rss_bytes,
            threads: 5,
            ..ProcessStats::default()
        }),
        runtimes: vec![RuntimeStats {
            workers: 2,
            ..RuntimeStats::default()
        }],
        ..Snapshot::default()
    }
}

async fn send(stream: &mut TcpStream, kind: probe_message::Kind) {
    let mut out = Vec::new();
    encode_frame(
        &ProbeMessage { kind: Some(kind) },
        DEFAULT_MAX_FRAME_LEN,
        &mut out,
    )
    .unwrap();
    stream.write_all(&out).await.unwrap();
}

/// The collector's next message, `None` when it closed the connection.
async fn recv(stream: &mut TcpStream) -> Option<collector_message::Kind> {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(msg) = decoder.next_message::<CollectorMessage>().unwrap() {
                return msg.kind;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => decoder.extend(&buf[..n]),
            }
        }
    })
    .await
    .expect("the collector neither answered nor closed")
}

/// Whether the collector closed the connection (EOF or reset) within WAIT.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

async fn welcomed(addr: SocketAddr, instance_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    send(&mut stream, probe_message::Kind::Hello(hello(instance_id))).await;
    match recv(&mut stream).await {
        Some(collector_message::Kind::Welcome(welcome)) => {
            assert_eq!(welcome.protocol_version, PROTOCOL_VERSION);
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    stream
}

async fn rejected_with(addr: SocketAddr, hello: Hello) -> RejectCode {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    send(&mut stream, probe_message::Kind::Hello(hello)).await;
    let code = match recv(&mut stream).await {
        Some(collector_message::Kind::Reject(reject)) => {
            assert!(
                reject.reason.ends_with('.'),
                "a sentence: {}",
                reject.reason
            );
            reject.code()
        }
        other => panic!("expected Reject, got {other:?}"),
    };
    assert!(
        closed(&mut stream).await,
        "the connection stays open after a Reject"
    );
    code
}

/// A GET over a fresh connection; returns the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

async fn services(collector: &RunningCollector) -> serde_json::Value {
    let (status, body) = http_get(collector.http_addr(), "/api/v1/services").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the services list until `check` accepts the instance `id`.
async fn wait_for_instance(
    collector: &RunningCollector,
    id: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = services(collector).await;
        let found = body["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["instance_id"] == id)
            .cloned();
        if let Some(instance) = found.filter(|i| check(i)) {
            return instance;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance {id} never matched: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_good_probes_through_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let collector = meshwatch_collector::start(config(dir.path()))
        .await
        .unwrap();
    let ingest = collector.ingest_addr();

    // A good probe gets in, and its snapshot shows up in the API.
    let mut good = welcomed(ingest, "good-1").await;
    send(
        &mut good,
        probe_message::Kind::Snapshot(snapshot(1, 1_000_000)),
    )
    .await;
    let instance = wait_for_instance(&collector, "good-1", |i| {
        i["headline"]["rss_bytes"] == 1_000_000
    })
    .await;
    assert_eq!(instance["service"], "checkout");
    assert_eq!(instance["state"], "up");
    assert_eq!(instance["pid"], 4242);
    assert_eq!(instance["headline"]["workers"], 2);

    // Garbage that looks like HTTP: its "length" is far over the limit.
    let mut stream = TcpStream::connect(ingest).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed(&mut stream).await,
        "HTTP garbage did not close the connection"
    );

    // A frame of the right size whose body is not protobuf.
    let mut stream = TcpStream::connect(ingest).await.unwrap();
    stream
        .write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(
        closed(&mut stream).await,
        "a malformed body did not close the connection"
    );

    // An oversized frame header, refused before any body is read.
    let mut stream = TcpStream::connect(ingest).await.unwrap();
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(
        closed(&mut stream).await,
        "an oversized frame did not close the connection"
    );

    // Silence: no Hello within the hello timeout.
    let mut stream = TcpStream::connect(ingest).await.unwrap();
    assert!(
        closed(&mut stream).await,
        "a silent connection was kept open"
    );

    // Hellos that are refused, each with its code.
    let mut wrong_token = hello("bad-token");
    wrong_token.token = "guess".to_owned();
    assert_eq!(
        rejected_with(ingest, wrong_token).await,
        RejectCode::BadToken
    );
    let mut wrong_version = hello("bad-version");
    wrong_version.protocol_version = PROTOCOL_VERSION + 1;
    assert_eq!(
        rejected_with(ingest, wrong_version).await,
        RejectCode::UnsupportedVersion
    );
    let mut no_service = hello("no-service");
    no_service.service.clear();
    assert_eq!(
        rejected_with(ingest, no_service).await,
        RejectCode::Malformed
    );

    // A first frame that is not a Hello.
    let mut stream = TcpStream::connect(ingest).await.unwrap();
    send(&mut stream, probe_message::Kind::Snapshot(snapshot(1, 1))).await;
    match recv(&mut stream).await {
        Some(collector_message::Kind::Reject(reject)) => {
            assert_eq!(reject.code(), RejectCode::ExpectedHello);
        }
        other => panic!("expected Reject, got {other:?}"),
    }

    // None of that reached the registry, and the good probe still works.
    send(
        &mut good,
        probe_message::Kind::Snapshot(snapshot(2, 2_000_000)),
    )
    .await;
    wait_for_instance(&collector, "good-1", |i| {
        i["headline"]["rss_bytes"] == 2_000_000
    })
    .await;
    let listed = services(&collector).await;
    assert_eq!(listed["services"].as_array().unwrap().len(), 1, "{listed}");

    // Its history holds both snapshots.
    let (status, body) = http_get(
        collector.http_addr(),
        "/api/v1/series?service=checkout&metric=rss_bytes&instance=good-1",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).unwrap();
    let points = series["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{series}");

    // The rejections were counted by reason.
    let (status, metrics) = http_get(collector.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    for (reason, count) in [
        ("too_large", 2),
        ("malformed", 1),
        ("hello_timeout", 1),
        ("bad_token", 1),
        ("unsupported_version", 1),
        ("malformed_hello", 1),
        ("expected_hello", 1),
    ] {
        let line =
            format!("meshwatch_collector_frames_rejected_total{{reason=\"{reason}\"}} {count}\n");
        assert!(
            metrics.contains(&line),
            "{reason} not counted {count} times:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("meshwatch_rss_bytes{service=\"checkout\",instance=\"good-1\"} 2000000")
    );

    // Closing the connection marks the instance down at once; a new instance
    // of the same service is then a restart.
    drop(good);
    wait_for_instance(&collector, "good-1", |i| i["state"] == "down").await;
    let _next = welcomed(ingest, "good-2").await;
    let next = wait_for_instance(&collector, "good-2", |i| i["state"] == "restarted").await;
    assert_eq!(next["restarts"], 1);

    collector.shutdown().await.unwrap();
}

#[tokio::test]
async fn refuses_unsafe_or_shared_setups() {
    let dir = tempfile::tempdir().unwrap();

    let mut open = config(dir.path());
    open.listen = "0.0.0.0:0".parse().unwrap();
    open.token = None;
    let refused = meshwatch_collector::start(open).await;
    assert!(
        matches!(refused, Err(StartError::NoToken { .. })),
        "{refused:?}"
    );

    let first = meshwatch_collector::start(config(dir.path()))
        .await
        .unwrap();
    let second = meshwatch_collector::start(config(dir.path())).await;
    let message = second
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        matches!(second, Err(StartError::DataDirLocked { .. })),
        "{message}"
    );
    assert!(message.contains("another running collector"), "{message}");
    first.shutdown().await.unwrap();

    // Released on shutdown: the directory can be used again.
    let again = meshwatch_collector::start(config(dir.path()))
        .await
        .unwrap();
    again.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_dated_a_year_ahead_is_stored_at_now_and_the_next_still_shows() {
    let dir = tempfile::tempdir().unwrap();
    let collector = meshwatch_collector::start(config(dir.path()))
        .await
        .unwrap();
    let mut probe = welcomed(collector.ingest_addr(), "skewed-1").await;
    let year_ms = 365 * 24 * 3600 * 1000;
    // The second snapshot is dated when it is sent, after the collector
    // clamped the first to its own clock, as a probe whose clock was fixed
    // would date it.
    for seq in [1, 2] {
        let time_unix_ms = match seq {
            1 => meshwatch_api::now_ms() + year_ms,
            _ => meshwatch_api::now_ms(),
        };
        send(
            &mut probe,
            probe_message::Kind::Snapshot(Snapshot {
                time_unix_ms,
                ..snapshot(seq, 1_000_000 * seq)
            }),
        )
        .await;
        let rss = 1_000_000 * seq;
        wait_for_instance(&collector, "skewed-1", |i| {
            i["headline"]["rss_bytes"] == rss
        })
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = http_get(
        collector.http_addr(),
        "/api/v1/series?service=checkout&metric=rss_bytes",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).unwrap();
    let points = series["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{body}");
    let latest = meshwatch_api::now_ms();
    assert!(
        points.iter().all(|p| p[0].as_i64().unwrap() <= latest),
        "nothing stored ahead of now: {body}"
    );
    let (_, metrics) = http_get(collector.http_addr(), "/metrics").await;
    assert!(
        metrics.contains("meshwatch_collector_snapshot_times_clamped_total 1"),
        "{metrics}"
    );
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_instance_id_cannot_be_taken_over_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let collector = meshwatch_collector::start(config(dir.path()))
        .await
        .unwrap();
    let ingest = collector.ingest_addr();
    let _owner = welcomed(ingest, "taken-1").await;
    wait_for_instance(&collector, "taken-1", |i| i["state"] == "up").await;
    // Another probe copying all the API shows of the owner (its pid, host
    // and start time), without its secret key.
    let hijack = Hello {
        session_key: vec![8; 16],
        ..hello("taken-1")
    };
    assert_eq!(
        rejected_with(ingest, hijack).await,
        RejectCode::InstanceInUse
    );
    // The same process coming back on a new connection (its old one dead
    // but not yet noticed) is let in.
    let _again = welcomed(ingest, "taken-1").await;
    let instance = wait_for_instance(&collector, "taken-1", |i| i["state"] == "up").await;
    assert_eq!(instance["pid"], 4242, "still the real probe's instance");
    let (_, metrics) = http_get(collector.http_addr(), "/metrics").await;
    assert!(
        metrics.contains("reason=\"instance_in_use\"} 1"),
        "{metrics}"
    );
    collector.shutdown().await.unwrap();
}
