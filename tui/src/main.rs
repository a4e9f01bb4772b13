//! `meshwatch`: the command line of meshwatch.
//!
//! - `meshwatch` opens the interactive TUI on a collector;
//! - `meshwatch status` prints the mesh once, as a table or `--json`;
//! - `meshwatch report INCIDENT` writes a post-mortem of one incident;
//! - `meshwatch backtest` runs the detectors over recorded history;
//! - `meshwatch demo` runs a collector, a demo mesh with faults, and the TUI.

mod backtest;
mod client;
mod collectors;
mod config;
mod demo;
mod evidence;
#[cfg(test)]
mod fixtures;
mod format;
mod logfile;
mod model;
mod profile;
#[cfg(test)]
mod recorded;
mod report;
mod status;
mod ui;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use client::ApiClient;
use collectors::Collectors;

/// The collector asked when neither a flag nor the config file names one.
const DEFAULT_COLLECTOR: &str = "http://127.0.0.1:6741";

// The CLI also runs the demo's services (`demo-service`), which report their
// heap like any instrumented service.
#[global_allocator]
static ALLOC: meshwatch_probe::TrackingAllocator = meshwatch_probe::TrackingAllocator::system();

/// Watch a mesh of evented services: runaway loops, climbing memory, leaks.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// A collector's HTTP API. Repeat it (or separate URLs with commas in
    /// MESHWATCH_URL) for a mesh over several hosts: `status` shows them as
    /// one, with a HOST column. Default: the config file's `collectors`
    /// (~/.config/meshwatch/config.toml), else http://127.0.0.1:6741.
    #[arg(
        long,
        global = true,
        env = "MESHWATCH_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    collector: Vec<String>,
    /// File holding the collector's token, sent with every request: the
    /// collector asks for it when its API listens beyond loopback. Without
    /// it, the config file's `token_file`, else the MESHWATCH_TOKEN
    /// environment variable when set.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The CA (PEM) that issued an `https://` collector's certificate, when
    /// not a public one (default: the config file's `tls_ca`).
    #[arg(long, global = true, env = "MESHWATCH_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a collector that asks for one
    /// (--tls-client-ca).
    #[arg(
        long,
        global = true,
        env = "MESHWATCH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "MESHWATCH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Where the TUI writes its logs (never to the screen); default
    /// `tui.log` in ~/.local/state/meshwatch (or $XDG_STATE_HOME). Created
    /// readable by you alone, never through a symlink. Other commands log
    /// to stderr.
    #[arg(long, global = true, env = "MESHWATCH_LOG_FILE", value_name = "PATH")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every instance of the mesh once, with its headline figures,
    /// and each collector that could not be reached.
    Status {
        /// Print JSON instead of a table: the collectors' instances
        /// (`/api/v1/services`) together, each naming its `collector`, and
        /// the collectors that did not answer under `unreachable`.
        #[arg(long)]
        json: bool,
    },
    /// Write a post-mortem of one incident: Markdown, SVG charts, flame graph.
    Report(report::ReportArgs),
    /// Take an instance's CPU profile now (or with --heap, its live heap)
    /// and write it in pprof's format (profile.pb.gz), with a flame graph,
    /// and print its top functions.
    Profile(profile::ProfileArgs),
    /// Run the detectors over recorded history (a data dir, the collector,
    /// a CSV file or Prometheus) and print when each incident would have
    /// opened and resolved.
    Backtest(backtest::BacktestArgs),
    /// Start a collector on a temporary data dir and a demo mesh whose
    /// faults fire on a schedule, and open the TUI on it.
    Demo(demo::DemoArgs),
    /// Run one service of the demo mesh (started by `meshwatch demo`).
    #[command(hide = true)]
    DemoService(meshwatch_examples::service::ServiceArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tui = match &cli.command {
        None => true,
        Some(Command::Demo(args)) => !args.no_tui,
        Some(_) => false,
    };
    init_logging(tui.then(|| cli.log_file.clone().unwrap_or_else(logfile::default_path)))?;
    // Read (the config file, the token) only by the commands that talk to
    // collectors: the demo runs its own, and its services talk to none.
    let mesh = || collectors(&cli);
    match &cli.command {
        Some(Command::Status { json }) => {
            let mesh = mesh()?;
            if *json {
                let merged = mesh.services_json()?;
                println!("{}", serde_json::to_string_pretty(&merged)?);
            } else {
                print!("{}", status::render_mesh(&mesh.services()?, mesh.len()));
            }
            Ok(())
        }
        Some(Command::Report(args)) => {
            let mesh = mesh()?;
            let (client, incident) = mesh.for_incident(&args.incident)?;
            let args = report::ReportArgs {
                incident,
                out: args.out.clone(),
            };
            report::run(client, &args)
        }
        Some(Command::Backtest(args)) => backtest::run(mesh()?.single("backtest")?, args),
        Some(Command::Profile(args)) => profile::run(mesh()?.single("profile")?, args),
        Some(Command::Demo(args)) => demo::run(args),
        Some(Command::DemoService(args)) => meshwatch_examples::service::run(args),
        None => ui::run(mesh()?, None),
    }
}

/// The mesh's collectors, from the flags, else the config file, else the
/// default, each with the token and TLS files (flags first, then the file).
fn collectors(cli: &Cli) -> anyhow::Result<Collectors> {
    let file = config::load()?;
    let token_file = cli.token_file.as_deref().or(file.token_file.as_deref());
    let token = meshwatch_api::token::read_token(token_file)?;
    let tls = client::TlsFiles {
        ca: cli.tls_ca.clone().or(file.tls_ca),
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
    };
    let urls = if !cli.collector.is_empty() {
        cli.collector.clone()
    } else if !file.collectors.is_empty() {
        file.collectors
    } else {
        vec![DEFAULT_COLLECTOR.to_owned()]
    };
    let members = urls
        .iter()
        .map(|url| ApiClient::new(url).with_token(token.clone()).with_tls(&tls))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Collectors::new(members))
}

/// Logs are filtered by `MESHWATCH_LOG` (default: warnings) and go to
/// `file` when the TUI owns the screen, else to stderr, so they never mix
/// with the tables and JSON on stdout.
fn init_logging(file: Option<PathBuf>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHWATCH_LOG")
        .unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let file = logfile::open(&path).with_context(|| {
                format!(
                    "cannot open the log file {} (choose another with --log-file)",
                    path.display()
                )
            })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
