//! Faults an example service can be started with. `--fault NAME` switches
//! one on; `GET /fault/NAME` (or `POST`) triggers it, so a demo or a test
//! decides when the trouble starts.
//!
//! Each fault is a realistic bug in a module of its own; this module only
//! lists them and mounts their routes.

mod blocking;
mod crash;
mod exit;
mod loop_parser;
pub mod session_leak;
mod task_leak;
mod unclosed_socket;

use axum::Router;

use session_leak::LeakSwitch;

/// A fault the service can be started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// `/fault/loop[?secs=N]`: a parser whose cursor does not advance on
    /// malformed input spins a worker (forever, or for N seconds).
    Loop,
    /// `/fault/block[?secs=N]`: a blocking sleep inside async code holds
    /// a worker for N seconds (default 5); `/fault/block-read[?secs=N]`: a
    /// synchronous socket read with an N-second timeout does, and
    /// `/fault/block-read/outcome` says how it ended.
    Block,
    /// `/fault/leak`: the proxy's session cache stops evicting closed
    /// sessions, so memory climbs at `--sessions-per-sec` ×
    /// `--session-bytes` (the simulated traffic runs from the start).
    Leak,
    /// `/fault/close-wait[?per_sec=N]`: a malformed request on a side port
    /// leaves its socket open, so CLOSE_WAIT sockets and fds climb.
    CloseWait,
    /// `/fault/task-leak[?per_sec=N]`: a task per request waits forever on
    /// a channel nobody completes, so alive tasks climb.
    TaskLeak,
    /// `/fault/crash[?secs=N]`: the process aborts after N seconds.
    Crash,
    /// `/fault/exit[?code=N]`: the process exits with status N (default 0)
    /// through `std::process::exit`, dropping nothing.
    Exit,
}

/// What the faults' routes act on.
#[derive(Debug, Clone, Default)]
pub struct FaultState {
    /// Turns the session cache's leak on.
    pub leak: LeakSwitch,
}

impl Fault {
    /// The routes that trigger this fault.
    fn routes(self, state: &FaultState) -> Router {
        match self {
            Fault::Loop => loop_parser::routes(),
            Fault::Block => blocking::routes(),
            Fault::Leak => session_leak::routes(state.leak.clone()),
            Fault::CloseWait => unclosed_socket::routes(),
            Fault::TaskLeak => task_leak::routes(),
            Fault::Crash => crash::routes(),
            Fault::Exit => exit::routes(),
        }
    }
}

/// The trigger routes of every fault switched on.
pub fn routes(faults: &[Fault], state: &FaultState) -> Router {
    faults.iter().fold(Router::new(), |router, fault| {
        router.merge(fault.routes(state))
    })
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
