//! `mesh-service`: run one example service of the demo mesh.

use clap::Parser;
use meshwatch_examples::service::{self, ServiceArgs};

#[global_allocator]
static ALLOC: meshwatch_probe::TrackingAllocator = meshwatch_probe::TrackingAllocator::system();

/// An instrumented example HTTP service for meshwatch's demo and tests.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHWATCH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    service::run(&Cli::parse().service)
}
