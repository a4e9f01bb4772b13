//! `meshwatch`: the command line of meshwatch.
//!
//! - `meshwatch status` prints the mesh once, as a table or `--json`;
//! - `meshwatch demo` runs a collector and a demo mesh and shows it;
//! - `meshwatch` alone watches the mesh, refreshing every second.

mod client;
mod demo;
mod format;
mod status;
mod watch;

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
    /// Start a collector on a temporary data dir and a demo mesh, and watch it.
    Demo(demo::DemoArgs),
    /// Run one service of the demo mesh (started by `meshwatch demo`).
    #[command(hide = true)]
    DemoService(meshwatch_examples::service::ServiceArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::Status { json }) => {
            let client = ApiClient::new(&cli.collector);
            if json {
                let raw = client.raw("/api/v1/services")?;
                println!("{}", serde_json::to_string_pretty(&raw)?);
            } else {
                print!("{}", status::render_table(&client.services()?));
            }
            Ok(())
        }
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::DemoService(args)) => meshwatch_examples::service::run(&args),
        None => watch::run(&ApiClient::new(&cli.collector)),
    }
}

/// Logs go to stderr, filtered by `MESHWATCH_LOG` (default: warnings), so
/// they never mix with the tables and JSON on stdout.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHWATCH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
}
