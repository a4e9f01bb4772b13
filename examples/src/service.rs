//! One example service: an HTTP server on a tokio runtime with the probe.
//!
//! Routes:
//! - `GET /` answers `hello`: the cheapest request, for saturation tests;
//! - `GET /work?ms=N` spins the CPU for N milliseconds (at most 1000) inside
//!   the handler, as a legitimately slow request does;
//! - `GET /fault/NAME` triggers a fault switched on with `--fault NAME`
//!   (see [`crate::faults`]);
//! - `GET /signals` with `--own-signal-handlers` (see [`crate::signals`]).
//!
//! With `--sessions-per-sec N` (or `--fault leak`) it also plays a proxy
//! that clients hold connections to (see [`crate::faults::session_leak`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::Query;
use axum::routing::get;

use crate::faults::session_leak::{self, SessionTraffic};
use crate::faults::{self, Fault, FaultState};
use crate::signals;

/// How an example service is started.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The service name reported to the collector.
    #[arg(long, default_value = "example")]
    pub name: String,
    /// Worker threads of the tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Address of the HTTP server; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Switch on a fault, triggered later by `GET /fault/NAME`; repeatable.
    #[arg(long = "fault", value_enum)]
    pub faults: Vec<Fault>,
    /// Install the service's own signal handlers and a SIGPROF profiler
    /// before the probe starts, as some services do.
    #[arg(long)]
    pub own_signal_handlers: bool,
    /// Simulated proxy sessions opened per second, each held for
    /// --session-hold-ms; 0 for none, except with --fault leak, which
    /// defaults to 4 (about 1 MB/min with 4 KiB sessions once leaking).
    #[arg(long, default_value_t = 0)]
    pub sessions_per_sec: u32,
    /// Bytes each session buffers.
    #[arg(long, default_value_t = 4096)]
    pub session_bytes: usize,
    /// How long a simulated client holds its connection, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub session_hold_ms: u64,
    /// A healthy cache that fills to this many MiB over
    /// --cache-period-secs, then is flushed, over and over; 0 for none.
    #[arg(long, default_value_t = 0)]
    pub cache_sawtooth_mib: usize,
    /// How long the sawtooth cache takes to fill, in seconds.
    #[arg(long, default_value_t = 60)]
    pub cache_period_secs: u64,
}

impl ServiceArgs {
    /// The simulated proxy traffic to run, if any.
    fn session_traffic(&self) -> Option<SessionTraffic> {
        let sessions_per_sec = match self.sessions_per_sec {
            0 if self.faults.contains(&Fault::Leak) => 4,
            0 => return None,
            n => n,
        };
        Some(SessionTraffic {
            sessions_per_sec,
            session_bytes: self.session_bytes,
            hold: Duration::from_millis(self.session_hold_ms),
        })
    }
}

/// An instrumented example HTTP service for meshwatch's demo and tests.
#[derive(Debug, clap::Parser)]
#[command(name = "mesh-service", version)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

/// The whole of a `mesh-service` binary: logs to stderr (filter in
/// `MESHWATCH_LOG`), reads the command line, runs the service. Shared by
/// `mesh-service` and `mesh-service-untracked`, which differ only in their
/// global allocator.
///
/// # Errors
///
/// When the service cannot start.
pub fn main() -> anyhow::Result<()> {
    use clap::Parser as _;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHWATCH_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        // Lets a stuck poll's incident name the request it serves.
        .with(meshwatch_probe::SpanLayer::new())
        .init();
    run(&Cli::parse().service)
}

/// Runs each request inside a `request{method path id}` span, as tracing
/// middleware (tower-http's `TraceLayer`) does in real services; work a
/// handler spawns carries it along with `in_current_span`.
async fn in_request_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::Instrument as _;
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        id = NEXT_ID.fetch_add(1, Ordering::Relaxed),
    );
    next.run(request).instrument(span).await
}

/// The announcement printed on stdout once the server listens, so a parent
/// process (the demo, a test) learns the port it picked.
pub const LISTENING_PREFIX: &str = "mesh-service listening http=";

/// Runs the service until SIGINT or SIGTERM.
///
/// # Errors
///
/// When the runtime cannot be built or the address cannot be bound.
pub fn run(args: &ServiceArgs) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(args.workers.max(1)).enable_all();
    // Built with --cfg tokio_unstable, the probe times polls exactly and
    // counts tasks by spawn site.
    #[cfg(tokio_unstable)]
    meshwatch_probe::install_task_hooks(&mut builder);
    let runtime = builder.build().context("cannot build the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: &ServiceArgs) -> anyhow::Result<()> {
    let fault_state = FaultState::default();
    let mut app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/work", get(work))
        .merge(faults::routes(&args.faults, &fault_state))
        .layer(axum::middleware::from_fn(in_request_span));
    if args.own_signal_handlers {
        signals::install()?;
        app = app.merge(signals::routes());
    }
    // Before the probe registers: a stop right after is a clean one.
    let stop = stop_signals()?;
    let _probe = meshwatch_probe::init(&args.name);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot bind {}", args.listen))?;
    let addr = listener.local_addr().context("listener has no address")?;
    println!("{LISTENING_PREFIX}{addr}");
    if let Some(traffic) = args.session_traffic() {
        tokio::spawn(session_leak::run(traffic, fault_state.leak.clone()));
    }
    if args.cache_sawtooth_mib > 0 {
        tokio::spawn(crate::cache_sawtooth::run(
            crate::cache_sawtooth::Sawtooth {
                peak_bytes: args.cache_sawtooth_mib << 20,
                period: Duration::from_secs(args.cache_period_secs.max(1)),
            },
        ));
    }

    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .context("HTTP server failed")
}

#[derive(Debug, serde::Deserialize)]
struct WorkParams {
    ms: Option<u64>,
}

/// Spins for the requested time: a slow but well-behaved request.
async fn work(Query(params): Query<WorkParams>) -> String {
    let ms = params.ms.unwrap_or(1).min(1000);
    let until = Instant::now() + Duration::from_millis(ms);
    let mut spins = 0u64;
    while Instant::now() < until {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    format!("worked {ms} ms ({spins} spins)\n")
}

/// The service's stop signals (SIGINT, SIGTERM), installed at once: a stop
/// that comes before the server runs is still a clean stop, not a kill by
/// the default action.
#[cfg(unix)]
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Ctrl-C, where there are no Unix signals.
#[cfg(not(unix))]
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
