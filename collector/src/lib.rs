#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod api;
pub mod backtest;
mod bounds;
pub mod config;
mod conn_limits;
mod datadir;
mod detect;
mod event_loops;
mod export;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod heap_sites;
mod history;
mod incidents;
mod ingest;
mod long_history;
mod naming;
mod otlp;
mod profiles;
mod prom;
mod registry;
mod series;
mod state;
mod store;
mod stuck;
mod stuck_samples;
mod tls;
mod views;
mod watched;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
pub use detect::leaks::LeakSettings;
pub use detect::memory::MemorySettings;
pub use export::OtlpExport;
pub use meshwatch_proto::tls::IdentityFiles;
pub use series::Metric;
pub use tls::TlsSettings;
pub use watched::{WatchRule, WatchRuleError};

use datadir::DataDirLock;
use detect::{DetectorSet, Pass};
use state::{Shared, now_ms};

/// How often the registry applies the passage of time (missed snapshots,
/// restarted instances settling to up). A quarter second keeps `down`
/// within a fraction of an interval of the truth at negligible cost.
const TICK: Duration = Duration::from_millis(250);

/// One tick: the registry's clock under the lock, and when a detection pass
/// is due, batch after batch of services, the detectors' windows copied out
/// under it, judged without it (so ingest and the API are not held up by
/// the detectors), and their verdicts applied under it again.
fn tick_detectors(shared: &Shared, detectors: &mut DetectorSet, now_ms: i64) {
    {
        let mut state = shared.lock();
        state.tick(now_ms);
        if !detectors.due(now_ms) {
            return;
        }
    }
    let mut pass = Pass::default();
    while !pass.done() {
        let cuts = shared.lock().cut(detectors, now_ms, &mut pass);
        let judged = detectors.check(cuts);
        DetectorSet::apply(judged, now_ms, &mut shared.lock().incidents);
    }
}

/// Why a collector could not start. Each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory or its lock file could not be created or opened.
    #[error("cannot use data directory {path}: {source}; check that it is a writable directory")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another collector holds the data directory.
    #[error(
        "data directory lock {path} is held by another running collector; stop it or give this one another --data-dir"
    )]
    DataDirLocked {
        /// The lock file.
        path: PathBuf,
    },
    /// Probes or API clients would be served from the network without a
    /// token.
    #[error(
        "refusing to listen on {listen} without a token: anyone who can reach it could feed this collector or read the mesh. Give a token (--token-file or MESHWATCH_TOKEN), listen on loopback, or pass --allow-no-token"
    )]
    NoToken {
        /// The non-loopback address, for probes or the HTTP API.
        listen: SocketAddr,
    },
    /// The TLS certificate, key or client CA cannot be used.
    #[error("cannot set up TLS")]
    Tls(#[from] meshwatch_proto::tls::TlsError),
    /// The persistent history in the data directory could not be opened.
    #[error("{0}; move the damaged file aside or give another --data-dir")]
    Store(#[source] store::StoreError),
    /// A listening socket could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}; is another process using the port?")]
    Bind {
        /// `probes` or `HTTP`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Why a collector stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// A collector task panicked: a bug, reported rather than hidden.
    #[error("a collector task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// A collector serving probes and HTTP on its own tasks.
///
/// Dropping it stops the collector too, without waiting; call
/// [`RunningCollector::shutdown`] to stop it and wait until it has.
#[derive(Debug)]
pub struct RunningCollector {
    ingest_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    ingest: JoinHandle<()>,
    /// The plain loopback port of the watchers, when the main one is TLS.
    watch_ingest: Option<JoinHandle<()>>,
    http: JoinHandle<std::io::Result<()>>,
    ticker: JoinHandle<()>,
    flusher: JoinHandle<()>,
    watcher: JoinHandle<()>,
    exporter: Option<JoinHandle<()>>,
    _lock: DataDirLock,
}

impl RunningCollector {
    /// The address probes connect to; with port 0 in the config, the port
    /// the system chose.
    pub fn ingest_addr(&self) -> SocketAddr {
        self.ingest_addr
    }

    /// The address of the HTTP API, resolved like [`Self::ingest_addr`].
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting, closes every probe connection, lets in-flight HTTP
    /// requests finish, and waits for all of it; then releases the data
    /// directory.
    ///
    /// # Errors
    ///
    /// [`StopError`] when the HTTP server had failed or a task panicked.
    pub async fn shutdown(self) -> Result<(), StopError> {
        // Receivers gone means the tasks already ended; nothing to signal.
        let _ = self.shutdown.send(true);
        self.ingest.await.map_err(StopError::Task)?;
        if let Some(watch_ingest) = self.watch_ingest {
            watch_ingest.await.map_err(StopError::Task)?;
        }
        self.ticker.await.map_err(StopError::Task)?;
        self.flusher.await.map_err(StopError::Task)?;
        self.watcher.await.map_err(StopError::Task)?;
        if let Some(exporter) = self.exporter {
            exporter.await.map_err(StopError::Task)?;
        }
        self.http
            .await
            .map_err(StopError::Task)?
            .map_err(StopError::Http)
    }
}

/// Starts a collector: locks the data directory, binds both addresses, and
/// spawns ingest, the HTTP API and the registry's clock on the current tokio
/// runtime. Returns once both sockets are listening, so the addresses are
/// ready to use.
///
/// # Errors
///
/// [`StartError`] when the configuration is unsafe, the data directory is
/// unusable or taken, or an address cannot be bound.
pub async fn start(config: Config) -> Result<RunningCollector, StartError> {
    if let Some(listen) = config.exposed_without_token() {
        return Err(StartError::NoToken { listen });
    }
    let acceptor = tls::Acceptor::new(config.tls.as_ref())?;
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let bind = |what: &'static str, addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })?;
        let local =
            listener
                .local_addr()
                .map_err(|source| StartError::Bind { what, addr, source })?;
        Ok::<_, StartError>((listener, local))
    };
    let (ingest_listener, ingest_addr) = bind("probes", config.listen).await?;
    let (http_listener, http_addr) = bind("HTTP", config.http).await?;

    let store = store::Store::open(&config.data_dir).map_err(StartError::Store)?;
    let shared = Arc::new(Shared::new(config, store));
    let (shutdown, stop) = watch::channel(false);

    let ingest = tokio::spawn(ingest::serve(
        ingest_listener,
        Arc::clone(&shared),
        stop.clone(),
        acceptor.clone(),
    ));
    // Watchers live inside the collector; over TLS they would need a
    // certificate of their own, so they reach it on a plain loopback port
    // of their own (the token still applies).
    let (watch_ingest, watch_addr) = if acceptor.is_tls() && !shared.config.watch.is_empty() {
        let (listener, addr) = bind("watchers", SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let serving = tokio::spawn(ingest::serve(
            listener,
            Arc::clone(&shared),
            stop.clone(),
            tls::Acceptor::plain(),
        ));
        (Some(serving), addr)
    } else {
        (None, ingest_addr)
    };

    let mut http_stop = stop.clone();
    let app = api::router(Arc::clone(&shared));
    let http_listener = conn_limits::BoundedListener::new(
        http_listener,
        conn_limits::ConnectionLimits::new(
            conn_limits::MAX_HTTP_CONNECTIONS,
            conn_limits::MAX_HTTP_PER_ADDRESS,
        ),
        Arc::clone(&shared),
        acceptor,
    );
    let http = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.changed().await;
            })
            .await
    });

    let flusher = tokio::spawn(history::flush_until_stopped(
        Arc::clone(&shared),
        stop.clone(),
    ));

    let watcher = tokio::spawn(watched::watch_until_stopped(
        shared.config.watch.clone(),
        watched::Target {
            ingest: watch_addr,
            token: shared.config.token.clone(),
        },
        stop.clone(),
    ));

    let exporter = shared.config.otlp_export.clone().map(|settings| {
        tokio::spawn(export::export_until_stopped(
            Arc::clone(&shared),
            settings,
            stop.clone(),
        ))
    });

    let mut tick_stop = stop;
    let mut detectors = DetectorSet::new(&shared.config);
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick_stop.changed() => break,
                _ = interval.tick() => tick_detectors(&shared, &mut detectors, now_ms()),
            }
        }
    });

    tracing::info!(%ingest_addr, %http_addr, "collector started");
    Ok(RunningCollector {
        ingest_addr,
        http_addr,
        shutdown,
        ingest,
        watch_ingest,
        http,
        ticker,
        flusher,
        watcher,
        exporter,
        _lock: lock,
    })
}
