//! `meshwatch demo`: the one command a newcomer runs.
//!
//! It starts a collector in this process on a temporary data dir, then the
//! demo mesh as child processes of this same binary (`meshwatch
//! demo-service`, so `cargo run` builds everything the demo needs), and shows
//! the mesh until Ctrl-C, when it stops the services and removes the data.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use meshwatch_collector::config::{DEFAULT_HTTP, DEFAULT_LISTEN};

use crate::client::ApiClient;
use crate::status;

/// The demo mesh: service names and their runtime's worker count.
const MESH: &[(&str, usize)] = &[("checkout", 2), ("inventory", 2), ("gateway", 4)];

const REFRESH: Duration = Duration::from_secs(1);

/// Options of `meshwatch demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
}

/// Child processes killed when dropped, so that an error or Ctrl-C never
/// leaves demo services behind.
#[derive(Debug, Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the demo until Ctrl-C or `--duration`.
///
/// # Errors
///
/// When the collector cannot start or a service cannot be spawned.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let data_dir = tempfile::Builder::new()
        .prefix("meshwatch-demo-")
        .tempdir()
        .context("cannot create a temporary data directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("meshwatch-demo")
        .build()
        .context("cannot build the tokio runtime")?;
    let collector = runtime.block_on(start_collector(data_dir.path()))?;
    let ingest = collector.ingest_addr();
    let http = format!("http://{}", collector.http_addr());
    println!(
        "meshwatch demo: collector ingest={ingest} http={http}, data in {}",
        data_dir.path().display()
    );
    println!("in another terminal: cargo run --bin meshwatch -- status --collector {http}");

    let children = spawn_mesh(ingest, data_dir.path())?;
    let client = ApiClient::new(&http);
    let shown = runtime.block_on(show_until_stopped(&client, args));
    drop(children);
    runtime
        .block_on(collector.shutdown())
        .context("collector failed")?;
    shown
}

/// Starts the collector on the default ports so `meshwatch status` finds it
/// without flags; if they are taken (a collector already runs), on free ones.
async fn start_collector(data_dir: &Path) -> anyhow::Result<meshwatch_collector::RunningCollector> {
    let mut config = meshwatch_collector::Config::new(data_dir.join("store"));
    config.listen = DEFAULT_LISTEN;
    config.http = DEFAULT_HTTP;
    if let Ok(running) = meshwatch_collector::start(config.clone()).await {
        return Ok(running);
    }
    config.listen = SocketAddr::new(DEFAULT_LISTEN.ip(), 0);
    config.http = SocketAddr::new(DEFAULT_HTTP.ip(), 0);
    meshwatch_collector::start(config)
        .await
        .context("cannot start the demo's collector")
}

/// Spawns each demo service as `meshwatch demo-service`, logging to a file
/// in the data dir so its output does not scribble over the display.
fn spawn_mesh(ingest: SocketAddr, data_dir: &Path) -> anyhow::Result<Children> {
    let exe =
        std::env::current_exe().context("cannot find this executable to run the demo mesh")?;
    let mut children = Children::default();
    for (name, workers) in MESH {
        let log_path = data_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(&exe)
            .args([
                "demo-service",
                "--name",
                name,
                "--workers",
                &workers.to_string(),
            ])
            .env("MESHWATCH_COLLECTOR", ingest.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start demo service {name}"))?;
        children.0.push(child);
    }
    Ok(children)
}

async fn show_until_stopped(client: &ApiClient, args: &DemoArgs) -> anyhow::Result<()> {
    let stop_after = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_after);
    let started = std::time::Instant::now();
    let mut ticks = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = &mut stop_after => return Ok(()),
            _ = ticks.tick() => {
                let client = client.clone();
                // The client blocks; keep it off the collector's workers.
                let view = tokio::task::spawn_blocking(move || client.services()).await?;
                match view {
                    Ok(view) => {
                        let elapsed = crate::format::uptime(started.elapsed().as_secs());
                        println!("--- demo +{elapsed} ---\n{}", status::render_table(&view));
                    }
                    Err(err) => eprintln!("{err:#}"),
                }
            }
        }
    }
}
