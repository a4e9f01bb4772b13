//! The hello-world HTTP server that the `probe_cost` benchmark measures.
//!
//! It is a hyper 1 server on a tokio runtime with one worker thread,
//! answering `GET /` with a short body. It is as small as a service can be,
//! so whatever an observability tool adds per request shows up rather than
//! disappearing in the application's own work. One worker makes the cost easy
//! to read: the benchmark pins the whole process to one core, so every
//! thread the tool adds competes with the worker for it.
//!
//! Two binaries run it, `hello-plain` and `hello-tracked`, because the global
//! allocator is chosen at compile time; the [`Mode`] picks what else runs
//! in the process. The server prints `listening ADDR` on stdout once bound to
//! `127.0.0.1:0`.

use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// What runs in the server process besides the server itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing: the server alone (with whatever global allocator the binary
    /// installed).
    Bare,
    /// meshwatch's probe, configured from the environment
    /// (`MESHWATCH_COLLECTOR`, `MESHWATCH_HEAP_SAMPLE_BYTES`, ...).
    Probe,
    /// Every connection's future instrumented by one shared
    /// `tokio_metrics::TaskMonitor`, read once a second by a thread of its
    /// own, as a service exporting those metrics would.
    TokioMetrics,
    /// `console-subscriber` with its defaults (needs the `console` feature
    /// and `--cfg tokio_unstable`).
    Console,
}

impl Mode {
    /// Parses the name the benchmark passes on the command line.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bare" => Some(Self::Bare),
            "probe" => Some(Self::Probe),
            "tokio-metrics" => Some(Self::TokioMetrics),
            "console" => Some(Self::Console),
            _ => None,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The command line named no known mode.
    #[error("usage: hello-plain|hello-tracked bare|probe|tokio-metrics|console (got {0:?})")]
    Usage(Option<String>),
    /// `console` was asked of a binary built without the `console` feature.
    #[error("this binary was built without the `console` feature")]
    NoConsole,
    /// The runtime, the listener or stdout failed.
    #[error("hello server: {0}")]
    Io(#[from] std::io::Error),
}

/// The binaries' `main`: reads the mode from the first argument and serves
/// until killed; says why on stderr and fails when it cannot.
pub fn main() -> std::process::ExitCode {
    let arg = std::env::args().nth(1);
    let result = match arg.as_deref().and_then(Mode::from_name) {
        Some(mode) => run(mode),
        None => Err(ServeError::Usage(arg)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the server in `mode` until the process is killed.
///
/// # Errors
///
/// When `mode` is unavailable in this build, or the runtime, the listener or
/// stdout fails.
pub fn run(mode: Mode) -> Result<(), ServeError> {
    if mode == Mode::Console {
        init_console()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        // The probe watches the runtime it is started in.
        let _probe = (mode == Mode::Probe).then(|| meshwatch_probe::init("hello-bench"));
        let monitor = if mode == Mode::TokioMetrics {
            let monitor = tokio_metrics::TaskMonitor::new();
            spawn_metrics_reader(&monitor)?;
            Some(monitor)
        } else {
            None
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening {}", listener.local_addr()?)?;
        stdout.flush()?;
        // Accept on the worker too, not on this thread, so the process
        // serves from exactly one runtime thread.
        tokio::spawn(accept_loop(listener, monitor))
            .await
            .map_err(std::io::Error::other)
    })?;
    Ok(())
}

/// Accepts connections forever, each served by a task of its own.
async fn accept_loop(listener: TcpListener, monitor: Option<tokio_metrics::TaskMonitor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, say: back off rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        match &monitor {
            Some(monitor) => tokio::spawn(monitor.instrument(serve_connection(stream))),
            None => tokio::spawn(serve_connection(stream)),
        };
    }
}

async fn serve_connection(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // A client that resets the connection is not the server's problem.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(hello))
        .await;
}

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let found = request.method() == Method::GET && request.uri().path() == "/";
    let mut response = Response::new(Full::new(Bytes::from_static(if found {
        b"Hello, world!\n"
    } else {
        b"not found\n"
    })));
    if !found {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(response)
}

/// Reads the monitor's metrics once a second on a thread of its own, as a
/// service exporting them would; the reading is part of the cost measured.
fn spawn_metrics_reader(monitor: &tokio_metrics::TaskMonitor) -> std::io::Result<()> {
    let mut intervals = monitor.intervals();
    std::thread::Builder::new()
        .name("task-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                std::hint::black_box(intervals.next());
            }
        })?;
    Ok(())
}

#[cfg(feature = "console")]
fn init_console() -> Result<(), ServeError> {
    // Its defaults, as a user following its README would run it; the
    // benchmark sets `TOKIO_CONSOLE_BIND` to an ephemeral port.
    console_subscriber::init();
    Ok(())
}

#[cfg(not(feature = "console"))]
fn init_console() -> Result<(), ServeError> {
    Err(ServeError::NoConsole)
}
