//! Fault `block`: a blocking call inside async code.
//!
//! `GET /fault/block[?secs=N]` spawns a task that retries a flaky upstream
//! with a *synchronous* backoff: `std::thread::sleep` in an async fn holds
//! the tokio worker thread for the whole sleep (default 5 s), idle, while
//! the tasks queued behind it wait.

use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use tracing::Instrument as _;

const DEFAULT_BLOCK: Duration = Duration::from_secs(5);

pub(super) fn routes() -> Router {
    Router::new().route("/fault/block", get(trigger).post(trigger))
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
