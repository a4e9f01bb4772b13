//! Fault `exit`: the process ends on purpose, through `std::process::exit`.
//!
//! `GET /fault/exit[?code=N]` exits with status N (default 0) at once, from
//! a task, dropping nothing: as a service does that decides to stop (after a
//! drain, on a supervisor's request), or gives up (`exit(1)` on a bad
//! configuration). Status 0 is a stop, any other a death.

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Code {
    code: Option<i32>,
}

pub(super) fn routes() -> Router {
    Router::new().route("/fault/exit", get(trigger).post(trigger))
}

async fn trigger(Query(params): Query<Code>) -> &'static str {
    let code = params.code.unwrap_or(0);
    tokio::spawn(async move {
        // Let the answer go out first.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tracing::info!(code, "exit fault: exiting");
        std::process::exit(code);
    });
    "exit fault armed\n"
}
