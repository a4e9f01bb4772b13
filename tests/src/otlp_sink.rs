//! An OTLP/HTTP endpoint for the tests: takes every POST, keeps its path
//! and body for the test to decode (with the OpenTelemetry project's own
//! types), and answers 200, or 503 while told to be unavailable.
//!
//! Only the HTTP framing is ours, and only what the collector's exporter
//! sends: one request per connection or keep-alive, a `Content-Length`
//! body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One request the sink took.
#[derive(Debug, Clone)]
pub struct Received {
    /// `/v1/metrics` or `/v1/logs`.
    pub path: String,
    /// The request's headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The protobuf body.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    unavailable: AtomicBool,
    refused: AtomicUsize,
}

/// The endpoint, listening on an ephemeral loopback port until dropped
/// with the test.
#[derive(Debug, Clone)]
pub struct OtlpSink {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl OtlpSink {
    /// Starts the sink.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP sink");
        let addr = listener.local_addr().expect("the sink's address");
        let inner = Arc::new(Inner::default());
        let serving = Arc::clone(&inner);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let inner = Arc::clone(&serving);
                std::thread::spawn(move || serve(stream, &inner));
            }
        });
        Self { addr, inner }
    }

    /// The base URL to give `--otlp-endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// While `true`, every request is answered 503 and not kept.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Requests answered 503 so far.
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Every request kept so far to `path`.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.inner
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn serve(stream: TcpStream, inner: &Inner) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let answer: &[u8] = if inner.unavailable.load(Ordering::SeqCst) {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            inner
                .received
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(request);
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        };
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body,
    })
}
