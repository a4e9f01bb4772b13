//! Fault `block`: a blocking call inside async code.
//!
//! `GET /fault/block[?secs=N]` spawns a task that retries a flaky upstream
//! with a *synchronous* backoff: `std::thread::sleep` in an async fn holds
//! the tokio worker thread for the whole sleep (default 5 s), idle, while
//! the tasks queued behind it wait.
//!
//! `GET /fault/block-read[?secs=N]` spawns a task that asks an upstream
//! over UDP with std's *synchronous* socket and waits for the answer with a
//! read timeout (default 5 s); the upstream is silent, so the worker is held
//! for the whole timeout. `GET /fault/block-read/outcome` says how the last
//! read ended: `timed out` is its own result, `interrupted` would mean that
//! something (a profiler's signal) cut the wait short.

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use tracing::Instrument as _;

const DEFAULT_BLOCK: Duration = Duration::from_secs(5);

/// How the last `block-read` ended, in words.
type Outcome = Arc<Mutex<String>>;

pub(super) fn routes() -> Router {
    let outcome = Outcome::default();
    Router::new()
        .route("/fault/block", get(trigger).post(trigger))
        .route(
            "/fault/block-read",
            get(trigger_read)
                .post(trigger_read)
                .with_state(outcome.clone()),
        )
        .route(
            "/fault/block-read/outcome",
            get(read_outcome).with_state(outcome),
        )
}

async fn trigger(Query(params): Query<super::Duration>) -> String {
    let backoff = params.get().unwrap_or(DEFAULT_BLOCK);
    tokio::spawn(retry_upstream(backoff).in_current_span());
    "block fault started\n".to_owned()
}

/// Retries once after a backoff. The bug: the backoff blocks the thread
/// (`std::thread::sleep`) instead of yielding (`tokio::time::sleep`).
async fn retry_upstream(backoff: Duration) {
    backoff_blocking(backoff);
    tracing::info!(?backoff, "block fault: retried after a blocking backoff");
}

#[inline(never)]
fn backoff_blocking(backoff: Duration) {
    std::thread::sleep(backoff);
}

async fn trigger_read(
    State(outcome): State<Outcome>,
    Query(params): Query<super::Duration>,
) -> String {
    let timeout = params.get().unwrap_or(DEFAULT_BLOCK);
    *lock(&outcome) = "pending".to_owned();
    tokio::spawn(
        async move {
            let ended = ask_upstream_blocking(timeout);
            tracing::info!(ended, "block-read fault: the synchronous read ended");
            *lock(&outcome) = ended;
        }
        .in_current_span(),
    );
    "block-read fault started\n".to_owned()
}

async fn read_outcome(State(outcome): State<Outcome>) -> String {
    format!("{}\n", lock(&outcome))
}

fn lock(outcome: &Outcome) -> std::sync::MutexGuard<'_, String> {
    outcome.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asks a silent upstream and waits for its answer on the worker thread:
/// `timed out after N s`, `interrupted after N s: ...`, or what else ended
/// the wait.
#[inline(never)]
fn ask_upstream_blocking(timeout: Duration) -> String {
    let started = Instant::now();
    let asked = UdpSocket::bind("127.0.0.1:0").and_then(|socket| {
        socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        // The upstream: a socket that never answers.
        let upstream = UdpSocket::bind("127.0.0.1:0")?;
        socket.send_to(b"lookup", upstream.local_addr()?)?;
        let mut answer = [0u8; 512];
        socket.recv(&mut answer)
    });
    let after = started.elapsed().as_secs_f64();
    match asked {
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!("timed out after {after:.1} s")
        }
        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
            format!("interrupted after {after:.1} s: {err}")
        }
        Err(err) => format!("failed after {after:.1} s: {err}"),
        Ok(n) => format!("answered with {n} bytes after {after:.1} s"),
    }
}
