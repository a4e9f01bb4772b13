//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature):
//! the collector's own paths, driven with arbitrary input, with nothing
//! mocked. Not part of the collector's API.
//!
//! A [`Harness`] is a collector without sockets: its state, store, namer
//! and HTTP router, on a current-thread runtime. [`Harness::connection`]
//! runs the ingest path a probe connection runs (frame decoder, Hello
//! checks, bounds, registry, series, incidents) over an in-memory pipe;
//! [`Harness::tick`] runs the detectors and renders what the API and
//! `/metrics` serve; [`Harness::get`] routes one request through the API.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

use meshwatch_proto::v1::{Hello, ProbeMessage, probe_message};
use meshwatch_proto::{DEFAULT_MAX_FRAME_LEN, PROTOCOL_VERSION, encode_frame};

use crate::config::Config;
use crate::detect::DetectorSet;
use crate::state::{Shared, now_ms};

/// A collector without sockets, for fuzzing.
#[allow(missing_debug_implementations)]
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    detectors: DetectorSet,
    ticks: u64,
    hellos: u64,
    /// A data dir [`Harness::for_target`] made, removed on drop.
    own_dir: Option<std::path::PathBuf>,
}

/// The statuses the API documents; anything else from bad input is a bug.
const DOCUMENTED_STATUSES: [u16; 5] = [200, 400, 401, 404, 405];
/// What `POST /api/v1/profile` and `GET /api/v1/profile/ID` answer: a
/// ticket (202), a profile (200), or what stood in the way (the instance is
/// not connected, busy, gone, silent, or too many profiles run).
const PROFILE_STATUSES: [u16; 10] = [200, 202, 400, 401, 404, 405, 409, 429, 502, 504];
/// What the OTLP receiver answers: taken (in part), refused (bad
/// payload, token, size or media type).
const OTLP_STATUSES: [u16; 5] = [200, 400, 401, 413, 415];

impl Harness {
    /// A collector whose store lives in `data_dir` (created when missing).
    ///
    /// # Panics
    ///
    /// When the runtime or the store cannot be made: a fuzzing setup error.
    #[allow(clippy::expect_used)]
    pub fn new(data_dir: &std::path::Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        std::fs::create_dir_all(data_dir).expect("the data dir");
        let config = Config::new(data_dir);
        let store = crate::store::Store::open(data_dir).expect("the store");
        let detectors = DetectorSet::new(&config);
        let shared = Arc::new(Shared::new(config, store));
        Self {
            runtime,
            shared,
            detectors,
            ticks: 0,
            hellos: 0,
            own_dir: None,
        }
    }

    /// A harness whose store lives in a directory of the system's
    /// temporary one, unique to `target` and this process.
    pub fn for_target(target: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("meshwatch-fuzz-{target}-{}", std::process::id()));
        let mut harness = Self::new(&dir);
        harness.own_dir = Some(dir);
        harness
    }

    /// The `snapshot_to_registry` property: a valid Hello (one of eight
    /// instance ids, in turn), then `frames` as whatever follows it, then a
    /// detection pass and the views rendered. Never a panic or a hang.
    pub fn admitted_probe(&mut self, frames: &[u8]) {
        let n = self.hellos % 8;
        self.hellos += 1;
        let hello = ProbeMessage {
            kind: Some(probe_message::Kind::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                service: "fuzzed".to_owned(),
                instance_id: format!("{n:032x}"),
                pid: 4242 + n as u32,
                host: "fuzz".to_owned(),
                interval_ms: 1000,
                runtime: "rust".to_owned(),
                ..Hello::default()
            })),
        };
        let mut bytes = Vec::new();
        // A Hello this small always fits a frame.
        let _ = encode_frame(&hello, DEFAULT_MAX_FRAME_LEN, &mut bytes);
        bytes.extend_from_slice(frames);
        self.connection(&bytes);
        self.tick();
    }

    /// The `http_query` property: `text` as the query of every endpoint
    /// that takes one, and as a path, each answered with a documented
    /// status.
    ///
    /// # Panics
    ///
    /// On any other status: what the fuzzer is looking for.
    pub fn http_queries(&self, text: &str) {
        let gets = [
            format!("/api/v1/series?{text}"),
            format!("/api/v1/incidents?{text}"),
            format!("/api/v1/services?{text}"),
            format!("/api/v1/incidents/{text}"),
            format!("/{text}"),
        ]
        .map(|uri| ("GET", uri, &DOCUMENTED_STATUSES[..]));
        let profiles = [
            ("POST", format!("/api/v1/profile?{text}")),
            ("GET", format!("/api/v1/profile/{text}")),
        ]
        .map(|(method, uri)| (method, uri, &PROFILE_STATUSES[..]));
        for (method, uri, statuses) in gets.into_iter().chain(profiles) {
            if let Some(status) = self.request(method, &uri, "", Vec::new()) {
                assert!(
                    statuses.contains(&status),
                    "{method} {uri:?} answered {status}"
                );
            }
        }
    }

    /// The `otlp_metrics` property: `bytes` as an OTLP metrics export, in
    /// protobuf and in JSON, each answered with a status the receiver
    /// documents, then a detection pass over what was taken and the views
    /// rendered.
    ///
    /// # Panics
    ///
    /// On any other status: what the fuzzer is looking for.
    pub fn otlp_metrics(&mut self, bytes: &[u8]) {
        for content_type in ["application/x-protobuf", "application/json"] {
            if let Some(status) = self.request("POST", "/v1/metrics", content_type, bytes.to_vec())
            {
                assert!(
                    OTLP_STATUSES.contains(&status),
                    "POST /v1/metrics ({content_type}) answered {status}"
                );
            }
        }
        self.tick();
    }

    /// Serves `bytes` as everything one probe connection sends, then its
    /// end: whatever they hold, the collector must neither panic nor hang.
    pub fn connection(&self, bytes: &[u8]) {
        let shared = Arc::clone(&self.shared);
        self.runtime.block_on(async move {
            let (mut probe, collector) = tokio::io::duplex(64 * 1024);
            let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
            let serving = tokio::spawn(async move {
                crate::ingest::serve_connection(Box::new(collector), peer, &shared).await;
            });
            // The collector may close early (a Reject): the rest is moot.
            let _ = probe.write_all(bytes).await;
            let _ = probe.shutdown().await;
            // Drain its replies so that it never waits on a full pipe.
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut probe, &mut sink).await;
            let _ = serving.await;
        });
    }

    /// Runs the registry's clock and every detector once, then renders the
    /// services view, the open incidents and `/metrics`, as the API would;
    /// every 256th time the resolved incidents too (a thousand of them take
    /// longer to render than the rest of a run).
    pub fn tick(&mut self) {
        let now = now_ms();
        crate::tick_detectors(&self.shared, &mut self.detectors, now);
        self.get("/api/v1/services");
        self.get("/api/v1/incidents?state=open");
        self.get("/metrics");
        if self.ticks.is_multiple_of(256) {
            self.get("/api/v1/incidents?state=resolved");
        }
        self.ticks += 1;
    }

    /// Routes `GET uri` through the HTTP API and returns the status code.
    /// A URI that is not one (bytes a request line cannot hold) is `None`.
    pub fn get(&self, uri: &str) -> Option<u16> {
        self.request("GET", uri, "", Vec::new())
    }

    /// Routes `method uri` with `body` (of `content_type`, when given)
    /// through the HTTP API and returns the status code; `None` for a URI
    /// that is not one.
    fn request(&self, method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> Option<u16> {
        let mut request = Request::builder().method(method).uri(uri);
        if !content_type.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        let request = request.body(Body::from(body)).ok()?;
        let router = crate::api::router(Arc::clone(&self.shared));
        self.runtime.block_on(async move {
            let response = router.oneshot(request).await.ok()?;
            let status = response.status().as_u16();
            // Read the body: a panic while serializing shows here.
            axum::body::to_bytes(response.into_body(), 64 << 20)
                .await
                .ok()?;
            Some(status)
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(dir) = &self.own_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
