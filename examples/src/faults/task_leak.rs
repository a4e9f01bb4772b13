//! Fault `task-leak`: a task per request that waits forever.
//!
//! Each request hands its reply to a task that waits for the upstream's
//! answer on a oneshot channel, with the sender kept in a table of pending
//! requests. The bug: the code that answers forgets requests whose upstream
//! timed out, but never removes their senders, so those tasks wait forever
//! and `num_alive_tasks` climbs with every request while the load is flat.
//!
//! `GET /fault/task-leak[?per_sec=N]` starts N requests a second (default
//! 10), every one of which times out upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use tokio::sync::oneshot;

const DEFAULT_PER_SEC: f64 = 10.0;

#[derive(Debug, serde::Deserialize)]
struct Rate {
    per_sec: Option<f64>,
}

pub(super) fn routes() -> Router {
    Router::new().route("/fault/task-leak", get(trigger).post(trigger))
}

async fn trigger(Query(rate): Query<Rate>) -> String {
    let per_sec = rate
        .per_sec
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(DEFAULT_PER_SEC);
    tokio::spawn(requests(per_sec));
    format!("task-leak fault started: {per_sec} requests a second\n")
}

/// Senders of the requests still waiting for the upstream, by request id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<String>>>>;

async fn requests(per_sec: f64) {
    let pending = Pending::default();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    for id in 0u64.. {
        ticks.tick().await;
        spawn_reply_waiter(id, &pending);
        // The upstream never answers: nothing ever sends on the channel, and
        // nothing removes the sender either.
    }
}

/// Spawns the task that will reply once the upstream answers.
#[inline(never)]
fn spawn_reply_waiter(id: u64, pending: &Pending) {
    let (tx, rx) = oneshot::channel::<String>();
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, tx);
    tokio::spawn(async move {
        if let Ok(answer) = rx.await {
            tracing::debug!(id, %answer, "replied");
        }
    });
}
