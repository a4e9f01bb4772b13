//! `meshwatch demo`: the one command a newcomer runs.
//!
//! It starts a collector in this process on a temporary data dir, then the
//! demo mesh as child processes of this same binary (`meshwatch
//! demo-service`, so `cargo run` builds everything the demo needs), fires
//! the faults of [`faults::SCHEDULE`] at them, and opens the TUI on the
//! mesh (or, with `--no-tui`, prints the mesh every second). On quit or
//! Ctrl-C it stops the services and removes the data.

mod faults;
mod node;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use meshwatch_collector::config::{DEFAULT_HTTP, DEFAULT_LISTEN};

use crate::client::ApiClient;
use crate::status;

/// One service of the demo mesh.
struct DemoService {
    name: &'static str,
    workers: usize,
    /// Fault switches and traffic; the faults fire on [`faults::SCHEDULE`].
    args: &'static [&'static str],
}

/// The demo mesh. `inventory` is a proxy whose session cache will stop
/// evicting (1 MiB/s once triggered, so the climb shows within a minute);
/// `checkout` has a parser that will spin; `gateway` stays healthy.
const MESH: &[DemoService] = &[
    DemoService {
        name: "checkout",
        workers: 2,
        args: &["--fault", "loop"],
    },
    DemoService {
        name: "inventory",
        workers: 2,
        args: &[
            "--fault",
            "leak",
            "--sessions-per-sec",
            "64",
            "--session-bytes",
            "16384",
        ],
    },
    DemoService {
        name: "gateway",
        workers: 4,
        args: &[],
    },
];

/// The demo's memory detector window: short, so a newcomer sees the leak
/// flagged within a minute (a real collector looks back 8 minutes).
const DEMO_MEMORY_WINDOW: Duration = Duration::from_secs(30);

const REFRESH: Duration = Duration::from_secs(1);

/// Options of `meshwatch demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop by itself after this many seconds (default: run until quit).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Print the mesh every second instead of opening the TUI.
    #[arg(long)]
    pub no_tui: bool,
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

/// Runs the demo until quit, Ctrl-C or `--duration`.
///
/// # Errors
///
/// When the collector cannot start, a service cannot be spawned, or the
/// terminal cannot be used.
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

    let addresses = faults::Addresses::default();
    let children = spawn_mesh(ingest, data_dir.path(), &addresses)?;
    let started = Instant::now();
    let no_tui = args.no_tui;
    let schedule = std::thread::Builder::new()
        .name("demo-faults".to_owned())
        .spawn(move || {
            faults::run_schedule(faults::SCHEDULE, started, &addresses, &mut |outcome| {
                let line = match outcome {
                    Ok(line) => {
                        tracing::info!("{line}");
                        line
                    }
                    Err(line) => {
                        tracing::warn!("{line}");
                        line
                    }
                };
                if no_tui {
                    println!("demo: {line}");
                }
            });
        });
    if let Err(err) = schedule {
        tracing::warn!("cannot start the fault schedule: {err}");
    }
    let client = ApiClient::new(&http);
    let deadline = args
        .duration
        .map(|secs| started + Duration::from_secs(secs));
    let shown = if args.no_tui {
        println!("in another terminal: cargo run -p meshwatch -- --collector {http}");
        runtime.block_on(print_until_stopped(&client, deadline))
    } else {
        crate::ui::run(crate::collectors::Collectors::new(vec![client]), deadline)
    };
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
    config.memory.window = DEMO_MEMORY_WINDOW;
    config.detect_interval = Duration::from_secs(2);
    config.watch.push(node::watch_rule()?);
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
/// in the data dir so its output does not scribble over the display, and
/// reading its stdout for the HTTP address its fault switches listen on.
fn spawn_mesh(
    ingest: SocketAddr,
    data_dir: &Path,
    addresses: &faults::Addresses,
) -> anyhow::Result<Children> {
    let exe =
        std::env::current_exe().context("cannot find this executable to run the demo mesh")?;
    let mut children = Children::default();
    for DemoService {
        name,
        workers,
        args,
    } in MESH
    {
        let log_path = data_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut child = Command::new(&exe)
            .args([
                "demo-service",
                "--name",
                name,
                "--workers",
                &workers.to_string(),
            ])
            .args(*args)
            .env("MESHWATCH_COLLECTOR", ingest.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start demo service {name}"))?;
        if let Some(stdout) = child.stdout.take() {
            addresses.watch(name, stdout);
        }
        children.0.push(child);
    }
    children.0.extend(node::spawn(data_dir)?);
    Ok(children)
}

async fn print_until_stopped(client: &ApiClient, deadline: Option<Instant>) -> anyhow::Result<()> {
    let stop_after = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_after);
    let started = Instant::now();
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
                        println!("--- demo +{elapsed} ---\n{}", status::render_table(&view, false));
                    }
                    Err(err) => eprintln!("{err:#}"),
                }
            }
        }
    }
}
