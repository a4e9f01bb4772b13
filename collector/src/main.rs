//! `meshwatch-collector`: the daemon that receives probe snapshots, keeps
//! their history and serves it over HTTP.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use meshwatch_collector::{Config, WatchRule, config};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Receives snapshots from meshwatch probes, keeps their history, and serves
/// it as JSON (for the `meshwatch` TUI) and Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "meshwatch-collector", version)]
struct Cli {
    /// Address where probes connect. Loopback by default; any other address
    /// needs a token (or --allow-no-token).
    #[arg(long, value_name = "IP:PORT", default_value_t = config::DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// Address of the HTTP API (/api/v1/..., /metrics, /healthz).
    #[arg(long, value_name = "IP:PORT", default_value_t = config::DEFAULT_HTTP)]
    http: SocketAddr,

    /// Directory for the collector's data; created when missing, and locked
    /// so that two collectors never share it.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// File holding the token probes must present (surrounding whitespace is
    /// ignored). Without it, the MESHWATCH_TOKEN environment variable is used
    /// when set.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Listen on non-loopback addresses without a token. Anyone who can
    /// reach --listen can then feed this collector, and anyone who can reach
    /// --http read the mesh.
    #[arg(long)]
    allow_no_token: bool,

    /// Serve both ports over TLS with this certificate (PEM, then its
    /// chain). Probes then need MESHWATCH_TLS_CA, and the TUI --tls-ca.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Ask every client (probes, the TUI, scrapers) for a certificate issued
    /// by a CA in this PEM file: mutual TLS. Counts as auth for listening
    /// beyond loopback.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Keep one stored sample per instance per this many seconds in the
    /// persistent history (recent samples are all kept in memory).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    history_resolution: u64,

    /// Delete stored history older than this many hours.
    #[arg(long, value_name = "HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..))]
    retention_hours: u64,
    /// How far back the memory_growth detector looks, in seconds. An
    /// instance is judged once its history covers 80 % of it; shorter
    /// windows react faster to smaller samples. Default 480 (8 minutes); it
    /// judges 3- and 5-minute windows first, so a fast leak opens sooner.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(10..))]
    memory_window_secs: Option<u64>,

    /// How far back the socket, fd and task leak detectors look, in seconds
    /// (the crash loop detector counts deaths over the same span). Default
    /// 600 (10 minutes); they judge 1- and 3-minute windows first, so a
    /// fast leak opens sooner.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(10..))]
    leak_window_secs: Option<u64>,

    /// How long every instance of a service must have been down, in
    /// seconds, before `service_down` opens: room for a restart or a
    /// rolling deploy. Default 30.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    service_down_grace_secs: Option<u64>,

    /// How long an instance that is down is kept, in hours, before it is
    /// forgotten with its in-memory history (the stored history follows
    /// --retention-hours); a service whose instances are all forgotten
    /// leaves the mesh. Default 24.
    #[arg(long, value_name = "HOURS", value_parser = clap::value_parser!(u64).range(1..))]
    down_retention_hours: Option<u64>,

    /// Watch the processes whose command line matches REGEX, as instances of
    /// SERVICE, with no code change (Node.js, Python, any program): their
    /// CPU per thread, RSS, fds and sockets, and their restarts. New
    /// matching processes are picked up as they start. Repeatable.
    #[arg(long, value_name = "REGEX=SERVICE", value_parser = WatchRule::command)]
    watch: Vec<WatchRule>,

    /// Watch the process PID, as an instance of SERVICE, while it lives.
    /// Repeatable.
    #[arg(long, value_name = "PID=SERVICE", value_parser = WatchRule::pid)]
    watch_pid: Vec<WatchRule>,

    /// Watch every process in the cgroup PATH or below it (a systemd
    /// unit's, /system.slice/proxy.service; a container's), as instances of
    /// SERVICE. Repeatable.
    #[arg(long, value_name = "PATH=SERVICE", value_parser = WatchRule::cgroup)]
    watch_cgroup: Vec<WatchRule>,

    /// A directory of debug info, looked up by build ID before a binary's
    /// own path (`.build-id/ab/cdef….debug` as GDB reads it, or a debuginfod
    /// cache): names the stacks of stripped or remote binaries. Repeatable.
    #[arg(long, value_name = "DIR")]
    debuginfo_dir: Vec<PathBuf>,

    /// Export every instance's headline series as OTLP metrics and every
    /// incident's opening and resolution as OTLP log records to this
    /// OTLP/HTTP endpoint (protobuf), e.g. http://otel-collector:4318
    /// (/v1/metrics and /v1/logs are appended). docs/OTLP.md lists the
    /// names.
    #[arg(long, value_name = "URL", value_parser = otlp_endpoint)]
    otlp_endpoint: Option<String>,

    /// A header added to every OTLP export request, e.g. a backend's API
    /// key. Repeatable.
    #[arg(long, value_name = "NAME=VALUE", value_parser = otlp_header, requires = "otlp_endpoint")]
    otlp_header: Vec<(String, String)>,

    /// How often the OTLP metrics are sent, in seconds (incidents go within
    /// a second of opening or resolving).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    otlp_interval_secs: u64,
}

/// An OTLP/HTTP base URL: `http://` or `https://`, a host, no query.
fn otlp_endpoint(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{url:?} names no host"));
    }
    if rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "{url:?}: give the base URL, without a query or spaces"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `NAME=VALUE`, a header name of token characters and a value without
/// line breaks.
fn otlp_header(pair: &str) -> Result<(String, String), String> {
    let (name, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("{pair:?} is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("the value of header {name} has a line break"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// The environment variable holding the log filter (tracing `EnvFilter` syntax).
const LOG_ENV: &str = "MESHWATCH_LOG";

fn token(cli: &Cli) -> anyhow::Result<Option<String>> {
    Ok(meshwatch_api::token::read_token(cli.token_file.as_deref())?)
}

/// Raises the soft limit on open files to the hard one: every probe is a
/// connection, and at the usual default of 1024 `accept` fails, and the
/// HTTP API with it. Says what it did; a failure leaves the limit as it was.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer for getrlimit, and a valid
    // in-pointer for setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let from = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::info!(from, to = limit.rlim_cur, "raised the open-file limit");
        }
    }
}

/// SIGINT and SIGTERM, watched from before the listening line is printed so
/// that a signal sent right after it still stops the collector cleanly.
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with every cause, whatever RUST_BACKTRACE says.
            eprintln!("meshwatch-collector: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let mut config = Config::new(cli.data_dir.clone());
    config.listen = cli.listen;
    config.http = cli.http;
    config.token = token(&cli)?;
    config.allow_no_token = cli.allow_no_token;
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        config.tls = Some(meshwatch_collector::TlsSettings {
            identity: meshwatch_collector::IdentityFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            client_ca: cli.tls_client_ca.clone(),
        });
    }
    config.history_resolution = Duration::from_secs(cli.history_resolution);
    config.history_retention = Duration::from_secs(cli.retention_hours.saturating_mul(3600));
    if let Some(secs) = cli.memory_window_secs {
        config.memory.window = std::time::Duration::from_secs(secs);
        // Judge at least a dozen times per window.
        config.detect_interval = config.detect_interval.min(config.memory.window / 12);
    }
    if let Some(secs) = cli.leak_window_secs {
        config.leaks.window = Duration::from_secs(secs);
        config.leaks.crash_window = Duration::from_secs(secs);
        config.detect_interval = config.detect_interval.min(config.leaks.window / 12);
    }
    if let Some(hours) = cli.down_retention_hours {
        config.down_retention = Duration::from_secs(hours.saturating_mul(3600));
    }
    if let Some(secs) = cli.service_down_grace_secs {
        config.leaks.service_down_grace = Duration::from_secs(secs);
        // Noticed within a few seconds of the grace running out.
        config.detect_interval = config
            .detect_interval
            .min(config.leaks.service_down_grace / 4)
            .max(Duration::from_millis(250));
    }

    config.debuginfo_dirs = cli.debuginfo_dir.clone();
    config.otlp_export =
        cli.otlp_endpoint
            .clone()
            .map(|endpoint| meshwatch_collector::OtlpExport {
                endpoint,
                headers: cli.otlp_header.clone(),
                interval: Duration::from_secs(cli.otlp_interval_secs),
            });
    config.watch = cli
        .watch
        .iter()
        .chain(&cli.watch_pid)
        .chain(&cli.watch_cgroup)
        .cloned()
        .collect();

    raise_fd_limit();
    for (what, addr) in config.unguarded() {
        let who = if what == "probes" {
            "anyone who reaches it can feed this collector as any service"
        } else {
            "anyone who reaches it reads the mesh's figures and incidents and can send OTLP"
        };
        tracing::warn!(
            %addr,
            "listening for {what} beyond loopback without a token or client certificates (--allow-no-token): {who}"
        );
    }
    if config.tls.is_none()
        && let Some(addr) = [config.listen, config.http]
            .into_iter()
            .find(|addr| !addr.ip().is_loopback())
    {
        tracing::warn!(
            %addr,
            "listening beyond loopback without TLS (--tls-cert, --tls-key): the token and the mesh's figures cross the network in clear"
        );
    }
    let mut signals = StopSignals::install()?;
    let collector = meshwatch_collector::start(config).await?;
    {
        // Tests and scripts start the collector on port 0 and read the
        // chosen ports from this one line.
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "meshwatch-collector listening ingest={} http={}",
            collector.ingest_addr(),
            collector.http_addr()
        )
        .and_then(|()| stdout.flush())
        .context("cannot write the listening line to stdout")?;
    }

    let signal = signals.recv().await;
    tracing::info!(signal, "shutting down");
    collector.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
