//! Fault `crash`: the process dies.
//!
//! `GET /fault/crash[?secs=N]` aborts the process after N seconds (default
//! 0), as a panic in a thread that aborts, an OOM kill or a failed
//! assertion would. Under a supervisor that restarts it, a service that hits
//! this on every start is a crash loop.

use axum::Router;
use axum::extract::Query;
use axum::routing::get;

pub(super) fn routes() -> Router {
    Router::new().route("/fault/crash", get(trigger).post(trigger))
}

async fn trigger(Query(params): Query<super::Duration>) -> &'static str {
    let after = params.get().unwrap_or_default();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        tracing::error!("crash fault: aborting");
        std::process::abort();
    });
    "crash fault armed\n"
}
