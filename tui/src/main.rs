//! `meshwatch`: the command line of meshwatch.
//!
//! - `meshwatch` opens the interactive TUI on a collector;
//! - `meshwatch status` prints the mesh once, as a table or `--json`;
//! - `meshwatch report INCIDENT` writes a post-mortem of one incident;
//! - `meshwatch backtest` runs the detectors over recorded history;
//! - `meshwatch demo` runs a collector, a demo mesh with faults, and the TUI.

mod backtest;
mod client;
mod demo;
mod evidence;
#[cfg(test)]
mod fixtures;
mod format;
mod model;
mod profile;
mod report;
mod status;
mod ui;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use client::ApiClient;

// The CLI also runs the demo's services (`demo-service`), which report their
// heap like any instrumented service.
#[global_allocator]
static ALLOC: meshwatch_probe::TrackingAllocator = meshwatch_probe::TrackingAllocator::system();

/// Watch a mesh of evented services: runaway loops, climbing memory, leaks.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// The collector's HTTP API.
    #[arg(
        long,
        global = true,
        env = "MESHWATCH_URL",
        default_value = "http://127.0.0.1:6741"
    )]
    collector: String,
    /// File holding the collector's token, sent with every request: the
    /// collector asks for it when its API listens beyond loopback. Without
    /// it, the MESHWATCH_TOKEN environment variable is used when set.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The CA (PEM) that issued an `https://` collector's certificate, when
    /// not a public one.
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
    /// `meshwatch.log` in the temporary directory. Other commands log to stderr.
    #[arg(long, global = true, env = "MESHWATCH_LOG_FILE", value_name = "PATH")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every instance of the mesh once, with its headline figures.
    Status {
        /// Print the collector's JSON instead of a table.
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
    init_logging(tui.then(|| {
        cli.log_file
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("meshwatch.log"))
    }))?;
    let token = meshwatch_api::token::read_token(cli.token_file.as_deref())?;
    let tls = client::TlsFiles {
        ca: cli.tls_ca.clone(),
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
    };
    let client = ApiClient::new(&cli.collector)
        .with_token(token)
        .with_tls(&tls)?;
    match cli.command {
        Some(Command::Status { json }) => {
            if json {
                let raw = client.raw("/api/v1/services")?;
                println!("{}", serde_json::to_string_pretty(&raw)?);
            } else {
                print!("{}", status::render_table(&client.services()?));
            }
            Ok(())
        }
        Some(Command::Report(args)) => report::run(&client, &args),
        Some(Command::Backtest(args)) => backtest::run(&client, &args),
        Some(Command::Profile(args)) => profile::run(&client, &args),
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::DemoService(args)) => meshwatch_examples::service::run(&args),
        None => ui::run(client, None),
    }
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
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| {
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
