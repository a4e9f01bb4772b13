//! Fault `close-wait`: a socket left open on an error path.
//!
//! The service speaks a small line protocol on a side port: a client sends
//! `GET key`, the service answers and closes. The bug is on the error path:
//! a malformed request is "parked for a retry" that never comes, so the
//! service keeps the socket. When the client gives up and hangs up, the
//! kernel moves the service's end to CLOSE_WAIT and it stays there, holding
//! an fd, until the process dies.
//!
//! `GET /fault/close-wait[?per_sec=N]` opens the side port and starts a
//! client that sends one malformed request N times a second (default 2)
//! and hangs up each time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const DEFAULT_PER_SEC: f64 = 2.0;

/// How many requests a second the fault's client sends.
#[derive(Debug, serde::Deserialize)]
struct Rate {
    per_sec: Option<f64>,
}

pub(super) fn routes() -> Router {
    Router::new().route("/fault/close-wait", get(trigger).post(trigger))
}

async fn trigger(Query(rate): Query<Rate>) -> String {
    let per_sec = rate
        .per_sec
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(DEFAULT_PER_SEC);
    match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => match listener.local_addr() {
            Ok(addr) => {
                tokio::spawn(serve_lines(listener, Arc::default()));
                tokio::spawn(malformed_client(addr, per_sec));
                format!(
                    "close-wait fault started: {per_sec} malformed requests a second to {addr}\n"
                )
            }
            Err(err) => format!("close-wait fault failed: {err}\n"),
        },
        Err(err) => format!("close-wait fault failed: {err}\n"),
    }
}

/// Sockets parked for a retry that never happens.
type Parked = Arc<Mutex<Vec<TcpStream>>>;

async fn serve_lines(listener: TcpListener, parked: Parked) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(handle_request(stream, parked.clone()));
    }
}

/// Answers one request. The bug: a malformed request parks the socket.
#[inline(never)]
async fn handle_request(stream: TcpStream, parked: Parked) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let mut stream = reader.into_inner();
    match line.trim().strip_prefix("GET ") {
        Some(key) => {
            let _ = stream
                .write_all(format!("value of {key}\n").as_bytes())
                .await;
            // Dropping the stream closes it: the healthy path.
        }
        // Should answer an error and close; keeps the socket instead.
        None => parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stream),
    }
}

/// A client that sends malformed requests and hangs up.
async fn malformed_client(addr: SocketAddr, per_sec: f64) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    loop {
        ticks.tick().await;
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            let _ = stream.write_all(b"FETCH key\n").await;
            // Give the server the line, then hang up.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
