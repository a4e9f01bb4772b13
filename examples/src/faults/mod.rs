//! Faults an example service can be started with, each switched on by
//! `--fault NAME` and triggered over HTTP (`GET /fault/NAME`), so a demo or
//! a test decides when the trouble starts.
//!
//! Each fault is a realistic bug in a module of its own; this module only
//! lists them and mounts their routes.

mod blocking;
mod loop_parser;

use axum::Router;

/// A fault the service can be started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// `GET /fault/loop[?secs=N]`: a parser whose cursor does not advance on
    /// malformed input spins a worker (forever, or for N seconds).
    Loop,
    /// `GET /fault/block[?secs=N]`: a blocking sleep inside async code holds
    /// a worker for N seconds (default 5).
    Block,
}

impl Fault {
    /// The routes that trigger this fault.
    fn routes(self) -> Router {
        match self {
            Fault::Loop => loop_parser::routes(),
            Fault::Block => blocking::routes(),
        }
    }
}

/// The trigger routes of every fault switched on.
pub fn routes(faults: &[Fault]) -> Router {
    faults
        .iter()
        .fold(Router::new(), |router, fault| router.merge(fault.routes()))
}

/// The `?secs=N` of a trigger.
#[derive(Debug, serde::Deserialize)]
struct Duration {
    secs: Option<f64>,
}

impl Duration {
    fn get(&self) -> Option<std::time::Duration> {
        self.secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64)
    }
}
