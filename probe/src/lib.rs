//! `meshwatch-probe`: link it into a tokio service to report the service's
//! threads, runtime, heap and sockets to the meshwatch collector.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: meshwatch_probe::TrackingAllocator = meshwatch_probe::TrackingAllocator::system();
//!
//! #[tokio::main]
//! async fn main() {
//!     let _probe = meshwatch_probe::init("checkout");
//!     // ... the service ...
//! }
//! ```
//!
//! # How it behaves as a guest
//!
//! The probe runs on OS threads of its own, never on the service's runtime:
//! a sampler that reads `/proc/self`, the watched runtimes' stable metrics
//! and the allocator's counters once per interval; a watchdog that flags a
//! poll that does not return (`runaway_loop` or `blocked_worker`) and samples
//! the stuck thread's stack as raw addresses, which the collector names; and
//! an exporter that sends snapshots and events to the collector. When the
//! runtime is stuck, the probe still reports.
//!
//! It never fails the service. [`init`] logs a problem through `tracing` and
//! carries on; a collector that is down means retries with backoff, a bounded
//! buffer, and counted drops, sent with the next snapshot that gets through.
//!
//! What else it promises the service it lives in:
//! - **Signals.** A stuck thread's stack is read without a signal while the
//!   thread waits in the kernel (x86_64: from `/proc/self/task/TID/syscall`
//!   and a copy of its stack), so a blocked worker's own `poll`,
//!   `epoll_wait` or socket read with a timeout is never cut short with
//!   `EINTR`. Only a running thread is signalled, with a real-time signal
//!   nobody handles yet (never `SIGPROF`, `SIGUSR1` or `SIGUSR2`), whose
//!   handler is checked before each use: a service that takes the signal
//!   later keeps it. Where a waiting thread cannot be read (aarch64, a
//!   sandboxed `/proc`), it is signalled once per stuck period.
//! - **Fork.** A child forked while a probe thread held the heap-sample
//!   table's lock never takes it: a `pthread_atfork` handler turns heap
//!   sampling off in the child, which frees and allocates freely.
//! - **Its own threads.** They run at a lower priority (nice 10) than the
//!   service's, and their allocations are never heap-sampled, so the heap
//!   profile shows the service's memory, not the probe's.
//! - **Shutdown.** [`ProbeHandle::shutdown`] returns within the exporter's
//!   current step: a handshake with a collector that never answers is given
//!   up at once (and on its own after 5 s). Dropping the handle waits at
//!   most 250 ms.
//! - **Memory.** The outbox holds at most `buffer_capacity` messages (64
//!   by default; the oldest snapshot is dropped and counted when full), and
//!   the heap profiler follows at most 8,192 sampled allocations from at
//!   most 1,024 sites (more are dropped and counted).
//!
//! # With `--cfg tokio_unstable`
//!
//! A service built with `--cfg tokio_unstable` can also install the probe's
//! task hooks on its runtime builder, `install_task_hooks(&mut builder)`,
//! before `build()` (or `TaskHooks`, which chains the service's own hooks
//! after the probe's, since tokio keeps one hook of each kind). The watchdog then times each poll exactly (so a lower
//! `stuck_poll_threshold`, such as 100 ms, is safe, and a stuck poll is never
//! confused with a run of long ones) and names the stuck task's spawn site;
//! snapshots count alive tasks by spawn site, which names a task leak's
//! origin. Without the hooks, everything works from stable metrics.
//!
//! # Configuration
//!
//! [`init`] reads the environment; [`Probe::builder`] gives explicit control.
//! The variables are `MESHWATCH_COLLECTOR` (default `127.0.0.1:6740`),
//! `MESHWATCH_TOKEN`, `MESHWATCH_SERVICE` (overrides the name in code),
//! `MESHWATCH_INTERVAL_MS` (default 1000), `MESHWATCH_STUCK_POLL_MS` (default
//! 1000), `MESHWATCH_HEAP_SAMPLE_BYTES` (default 524288; 0 turns heap
//! sampling off) and `MESHWATCH_DISABLE=1`.
#![warn(missing_docs)]

mod alloc;
mod config;
mod exit;
mod exporter;
#[cfg(feature = "external")]
mod external;
mod guest;
mod handle;
mod heap;
#[cfg(tokio_unstable)]
mod hooks;
mod identity;
mod link;
mod outbox;
mod profiler;
mod sampler;
mod spans;
mod stack;
mod stats;
mod watchdog;

pub use alloc::TrackingAllocator;
pub use config::{DEFAULT_COLLECTOR, Probe, ProbeBuilder};
#[cfg(feature = "external")]
pub use external::{WatchedEvents, runtime_of};
pub use handle::ProbeHandle;
#[cfg(tokio_unstable)]
pub use hooks::{TaskHooks, install_task_hooks};
#[cfg(feature = "spans")]
pub use spans::SpanLayer;

/// Why the probe could not start. Only [`ProbeBuilder::start`] returns it;
/// [`init`] logs it and carries on without a probe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// A setting that cannot work; the message says which and what to do.
    #[error("invalid meshwatch probe configuration: {0}")]
    InvalidConfig(&'static str),
    /// The OS refused to start one of the probe's threads.
    #[error("cannot start a meshwatch probe thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A process to watch from outside is gone, or its `/proc` entry is
    /// unreadable (another user's process, without the privileges).
    #[cfg(feature = "external")]
    #[error("cannot watch process {pid}: its /proc entry is gone or unreadable")]
    NoSuchProcess {
        /// The process id asked for.
        pid: u32,
    },
    /// The TLS files cannot be used (unreadable, not PEM, a key that does
    /// not match), or the collector's address has no name to verify.
    #[cfg(feature = "tls")]
    #[error("invalid meshwatch probe TLS setup")]
    Tls(#[from] meshwatch_proto::tls::TlsError),
}

/// Starts the probe for the service `name`, configured from the environment.
///
/// Never fails and never panics: on a bad configuration it logs the problem
/// through `tracing` and returns a handle that does nothing. Called inside a
/// tokio runtime, the probe watches that runtime. Keep the handle alive for
/// as long as the service runs.
pub fn init(name: &str) -> ProbeHandle {
    match Probe::builder().service(name).start() {
        Ok(handle) => handle,
        Err(err) => {
            let mut why = err.to_string();
            let mut cause = std::error::Error::source(&err);
            while let Some(inner) = cause {
                why.push_str(": ");
                why.push_str(&inner.to_string());
                cause = inner.source();
            }
            tracing::warn!("meshwatch: probe not started: {why}");
            ProbeHandle::inert()
        }
    }
}
