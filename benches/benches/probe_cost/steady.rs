//! Steady state: keep-alive connections at saturation, variants alternating
//! round by round, ratios to plain taken within each round.

use std::time::Duration;

use meshwatch_benches::wrk::Load;
use meshwatch_benches::{Spread, median, usage};
use meshwatch_e2e::Collector;

use crate::budget;
use crate::variants::{Binaries, Server, Variant};
use crate::{SERVER_CORE, Settings, WRK_CORE, load_average};

/// One variant's figures in one round.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Requests per second over the window.
    pub throughput: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// The server's RSS at the end of the window, MiB.
    pub rss_mib: f64,
    /// The server's CPU over the window (all threads) per request, µs.
    pub cpu_us_per_request: f64,
}

/// Starts a fresh server of `variant`, warms it up, then measures one
/// window. `None` (having said why) when the server or wrk failed.
fn measure(
    variant: &Variant,
    binary: &std::path::Path,
    collector: &Collector,
    settings: &Settings,
) -> Option<Sample> {
    let server = match Server::start(variant, binary, SERVER_CORE, &collector.ingest) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("  {}: cannot start: {err}", variant.name);
            return None;
        }
    };
    let load = |seconds| Load {
        addr: &server.addr,
        core: WRK_CORE,
        connections: settings.connections,
        seconds,
        close: false,
    };
    // Warm up: connections, the probe's first snapshots, lazy statics.
    if let Err(err) = load(settings.warmup).run() {
        eprintln!("  {}: warm-up failed: {err}", variant.name);
        return None;
    }
    let read_usage = || match usage(server.pid()) {
        Ok(usage) => Some(usage),
        Err(err) => {
            eprintln!("  {}: cannot read /proc of the server: {err}", variant.name);
            None
        }
    };
    let before = read_usage()?;
    if let Some(hz) = variant.profile_hz {
        // Through the window and a little past it.
        if let Err(err) = start_profile(collector, server.pid(), settings.seconds + 1, hz) {
            eprintln!("  {}: cannot start the profile: {err}", variant.name);
            return None;
        }
    }
    let report = match load(settings.seconds).run() {
        Ok(report) => report,
        Err(err) => {
            eprintln!("  {}: wrk failed: {err}", variant.name);
            return None;
        }
    };
    let after = read_usage()?;
    if report.socket_errors > 0 || report.non_2xx > 0 {
        eprintln!(
            "  {}: {} socket errors, {} non-2xx responses",
            variant.name, report.socket_errors, report.non_2xx
        );
    }
    let cpu = after.cpu.saturating_sub(before.cpu);
    Some(Sample {
        throughput: report.requests_per_sec,
        p50_us: micros(report.p50),
        p99_us: micros(report.p99),
        rss_mib: mib(after.rss_bytes),
        cpu_us_per_request: micros(cpu) / report.requests.max(1) as f64,
    })
}

/// Asks `collector` for a CPU profile of the instance with `pid`, as
/// `meshwatch profile` does, waiting up to 10 s for it to register.
fn start_profile(collector: &Collector, pid: u32, seconds: u64, hz: u32) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let instance = loop {
        let found = collector
            .instances()
            .into_iter()
            .find(|i| i["pid"] == pid && i["state"] != "down");
        if let Some(instance) = found {
            break instance["instance_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("no live instance with pid {pid} at the collector"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (status, body) = meshwatch_e2e::http_post(
        &collector.http,
        &format!("/api/v1/profile?instance={instance}&seconds={seconds}&hz={hz}"),
    );
    if status == 202 {
        Ok(())
    } else {
        Err(format!("the collector answered {status}: {body}"))
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Every round's sample per variant (`None` where a run failed), in the
/// order of `variants`.
pub struct Results<'a> {
    variants: Vec<&'a Variant>,
    rounds: Vec<Vec<Option<Sample>>>,
}

/// Runs `settings.rounds` rounds, each measuring every variant once in
/// turn, and prints each round as it ends. The order rotates by one each
/// round, so that a load that rises during a round does not always fall on
/// the same variants (plain included).
pub fn run<'a>(
    variants: &[&'a Variant],
    binaries: &Binaries,
    collector: &Collector,
    settings: &Settings,
) -> Results<'a> {
    let runnable: Vec<&Variant> = variants
        .iter()
        .copied()
        .filter(|v| binaries.path(v.binary).is_some())
        .collect();
    let mut rounds = Vec::new();
    for round in 1..=settings.rounds {
        let mut samples: Vec<Option<Sample>> = vec![None; runnable.len()];
        let first = (round as usize - 1) % runnable.len().max(1);
        for i in (first..runnable.len()).chain(0..first) {
            let v = runnable[i];
            samples[i] = binaries
                .path(v.binary)
                .and_then(|binary| measure(v, binary, collector, settings));
        }
        let line: Vec<String> = runnable
            .iter()
            .zip(&samples)
            .map(|(v, s)| match s {
                Some(s) => format!(
                    "{} {:.0} req/s p99 {:.0} µs {:.2} µs/req",
                    v.name, s.throughput, s.p99_us, s.cpu_us_per_request
                ),
                None => format!("{} failed", v.name),
            })
            .collect();
        eprintln!(
            "round {round}/{} (load {}): {}",
            settings.rounds,
            load_average(),
            line.join(", ")
        );
        rounds.push(samples);
    }
    Results {
        variants: runnable,
        rounds,
    }
}

/// A variant's ratios to plain, one per round where both ran.
#[derive(Debug, Default)]
struct Ratios {
    throughput: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<f64>,
    rss_mib_diff: Vec<f64>,
}

impl Results<'_> {
    fn column(&self, index: usize) -> Vec<Sample> {
        self.rounds
            .iter()
            .filter_map(|round| round[index])
            .collect()
    }

    fn ratios(&self, index: usize) -> Ratios {
        let mut ratios = Ratios::default();
        for round in &self.rounds {
            let (Some(plain), Some(s)) = (round[0], round[index]) else {
                continue;
            };
            ratios.throughput.push(s.throughput / plain.throughput);
            ratios.p50.push(s.p50_us / plain.p50_us);
            ratios.p99.push(s.p99_us / plain.p99_us);
            ratios
                .cpu
                .push(s.cpu_us_per_request / plain.cpu_us_per_request);
            ratios.rss_mib_diff.push(s.rss_mib - plain.rss_mib);
        }
        ratios
    }

    /// The full report: a Markdown table of medians with min–max, then
    /// the per-round ratios to plain and the budget's verdict.
    pub fn print_full(&self) {
        println!();
        println!(
            "| variant | req/s | p50 µs | p99 µs | RSS MiB | CPU µs/req | req/s ÷ plain | p50 ÷ plain | p99 ÷ plain | CPU/req ÷ plain | RSS − plain |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for (i, v) in self.variants.iter().enumerate() {
            let col = self.column(i);
            let field = |f: fn(&Sample) -> f64, digits: usize| {
                spread(&col.iter().map(f).collect::<Vec<_>>(), digits)
            };
            let r = self.ratios(i);
            let ratio = |values: &[f64]| {
                if i == 0 {
                    "1".to_owned()
                } else {
                    spread(values, 3)
                }
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                v.name,
                field(|s| s.throughput, 0),
                field(|s| s.p50_us, 0),
                field(|s| s.p99_us, 0),
                field(|s| s.rss_mib, 1),
                field(|s| s.cpu_us_per_request, 2),
                ratio(&r.throughput),
                ratio(&r.p50),
                ratio(&r.p99),
                ratio(&r.cpu),
                if i == 0 {
                    "0".to_owned()
                } else {
                    spread(&r.rss_mib_diff, 1)
                },
            );
        }
        println!();
        println!("Per-round ratios to plain (req/s, p99, CPU/req):");
        for (i, v) in self.variants.iter().enumerate().skip(1) {
            let r = self.ratios(i);
            let rounds: Vec<String> = (0..r.throughput.len())
                .map(|k| format!("{:.3}/{:.2}/{:.3}", r.throughput[k], r.p99[k], r.cpu[k]))
                .collect();
            println!("  {}: {}", v.name, rounds.join(", "));
        }
        println!();
        self.print_quick();
    }

    /// One line per variant: its median ratios to plain and the budget's
    /// verdict.
    pub fn print_quick(&self) {
        for (i, v) in self.variants.iter().enumerate().skip(1) {
            let r = self.ratios(i);
            let m = |values: &[f64]| median(values).unwrap_or(f64::NAN);
            let (throughput, p50, p99, cpu) = (m(&r.throughput), m(&r.p50), m(&r.p99), m(&r.cpu));
            println!(
                "{:<15} req/s x{throughput:.3}  p50 x{p50:.2}  p99 x{p99:.2}  CPU/req x{cpu:.3}  RSS {:+.1} MiB  {}",
                v.name,
                m(&r.rss_mib_diff),
                budget::verdict(&budget::steady_breaches(throughput, p99, cpu))
            );
        }
    }
}

/// "median (min–max)" with `digits` decimals; "—" when empty.
pub fn spread(values: &[f64], digits: usize) -> String {
    match Spread::of(values) {
        Some(s) if values.len() > 1 => {
            format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits)
        }
        Some(s) => format!("{:.d$}", s.median, d = digits),
        None => "—".to_owned(),
    }
}
