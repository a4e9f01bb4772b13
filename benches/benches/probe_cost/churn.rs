//! Connection churn: every request on a new connection, for minutes, with
//! the server's RSS sampled as it goes. This is where per-connection state
//! that is never freed shows: a tool that keeps something per task or per
//! socket grows here while the steady state looks fine.

use std::process::Command;
use std::time::{Duration, Instant};

use meshwatch_benches::usage;
use meshwatch_benches::wrk::{self, Load};

use crate::budget;
use crate::steady::mib;
use crate::variants::{Binaries, Server, Variant};
use crate::{SERVER_CORE, Settings, WRK_CORE, load_average};

/// How often the RSS is recorded.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How often the RSS is checked against the cap.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// One variant's churn run.
#[derive(Debug)]
struct Run {
    name: &'static str,
    /// (seconds into the window, RSS MiB), every `SAMPLE_EVERY` and at the end.
    rss: Vec<(f64, f64)>,
    throughput: f64,
    p99_us: f64,
    cpu_us_per_request: f64,
    /// Seconds into the window at which the RSS cap was passed.
    aborted_at: Option<f64>,
}

impl Run {
    fn start_mib(&self) -> f64 {
        self.rss.first().map_or(f64::NAN, |s| s.1)
    }
    fn end_mib(&self) -> f64 {
        self.rss.last().map_or(f64::NAN, |s| s.1)
    }
    fn max_mib(&self) -> f64 {
        self.rss.iter().map(|s| s.1).fold(f64::NAN, f64::max)
    }
}

/// Runs every variant under churn in turn, then prints the report.
pub fn run(variants: &[&Variant], binaries: &Binaries, ingest: &str, settings: &Settings) {
    let mut runs = Vec::new();
    for variant in variants {
        let Some(binary) = binaries.path(variant.binary) else {
            continue;
        };
        match churn(variant, binary, ingest, settings) {
            Ok(run) => {
                eprintln!(
                    "churn {} (load {}): {:.0} req/s, RSS {:.1} → {:.1} MiB (max {:.1}){}",
                    run.name,
                    load_average(),
                    run.throughput,
                    run.start_mib(),
                    run.end_mib(),
                    run.max_mib(),
                    run.aborted_at
                        .map(|t| format!(", ABORTED at {t:.0} s"))
                        .unwrap_or_default()
                );
                runs.push(run);
            }
            Err(err) => eprintln!("churn {}: failed: {err}", variant.name),
        }
    }
    print(&runs, settings);
}

fn churn(
    variant: &Variant,
    binary: &std::path::Path,
    ingest: &str,
    settings: &Settings,
) -> Result<Run, Box<dyn std::error::Error>> {
    let mut server = Server::start(variant, binary, SERVER_CORE, ingest)?;
    let load = |seconds, close| Load {
        addr: &server.addr,
        core: WRK_CORE,
        connections: settings.connections,
        seconds,
        close,
    };
    load(settings.warmup, false).run()?;
    let before = usage(server.pid())?;
    let started = Instant::now();
    let mut child = load(settings.churn_seconds, true).spawn()?;
    let mut rss = vec![(0.0, mib(before.rss_bytes))];
    let mut aborted_at = None;
    let mut last = before;
    while child.try_wait()?.is_none() {
        std::thread::sleep(CHECK_EVERY);
        let Ok(now) = usage(server.pid()) else {
            // The server died (out of memory, say): stop the load too.
            aborted_at = Some(started.elapsed().as_secs_f64());
            interrupt(child.id());
            break;
        };
        last = now;
        let t = started.elapsed().as_secs_f64();
        if mib(now.rss_bytes) > settings.rss_cap_mib {
            rss.push((t, mib(now.rss_bytes)));
            aborted_at = Some(t);
            interrupt(child.id());
            break;
        }
        let recorded = rss.last().map_or(0.0, |s| s.0);
        if t - recorded >= SAMPLE_EVERY.as_secs_f64() {
            rss.push((t, mib(now.rss_bytes)));
        }
    }
    let report = wrk::finish(child)?;
    if aborted_at.is_none() {
        let end = usage(server.pid())?;
        let t = started.elapsed().as_secs_f64();
        // The end replaces a sample taken in the last second.
        if rss.last().is_some_and(|s| t - s.0 < 1.0) {
            rss.pop();
        }
        rss.push((t, mib(end.rss_bytes)));
        last = end;
    } else if server.exited() {
        eprintln!("churn {}: the server died", variant.name);
    }
    drop(server);
    Ok(Run {
        name: variant.name,
        rss,
        throughput: report.requests_per_sec,
        p99_us: report.p99.as_secs_f64() * 1e6,
        cpu_us_per_request: last.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e6
            / report.requests.max(1) as f64,
        aborted_at,
    })
}

/// Sends SIGINT to wrk, which then stops and prints what it measured.
fn interrupt(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

fn print(runs: &[Run], settings: &Settings) {
    let plain = runs.iter().find(|r| r.name == crate::variants::PLAIN);
    println!();
    println!(
        "Connection churn: {} s per variant, {} connections, `Connection: close`, RSS cap {:.0} MiB",
        settings.churn_seconds, settings.connections, settings.rss_cap_mib
    );
    println!();
    println!(
        "| variant | req/s | ÷ plain | p99 µs | CPU µs/req | RSS start MiB | RSS end MiB | RSS max MiB | growth MiB | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let ratio = plain.map_or(f64::NAN, |p| run.throughput / p.throughput);
        let growth = run.end_mib() - run.start_mib();
        let verdict = match run.aborted_at {
            Some(t) => format!(
                "ABORTED at {t:.0} s (RSS over {:.0} MiB)",
                settings.rss_cap_mib
            ),
            None => budget::verdict(&budget::churn_breaches(growth, ratio)),
        };
        println!(
            "| {} | {:.0} | {:.3} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:+.1} | {} |",
            run.name,
            run.throughput,
            ratio,
            run.p99_us,
            run.cpu_us_per_request,
            run.start_mib(),
            run.end_mib(),
            run.max_mib(),
            growth,
            verdict
        );
    }
    println!();
    println!("RSS samples (s: MiB):");
    for run in runs {
        let samples: Vec<String> = run
            .rss
            .iter()
            .map(|(t, m)| format!("{t:.0}: {m:.1}"))
            .collect();
        println!("  {}: {}", run.name, samples.join(", "));
    }
}
