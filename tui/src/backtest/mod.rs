//! `meshwatch backtest`: the collector's detectors over recorded history,
//! to see when each incident would have opened and resolved, before
//! meshwatch is deployed or after an incident it was not there for.
//!
//! The history comes from a stopped collector's data directory, a running
//! collector's API, a CSV file, or a Prometheus server; the replay itself
//! is the collector's ([`meshwatch_collector::backtest`]).

mod csv;
mod mapping;
mod prometheus;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use meshwatch_api::evidence::Evidence;
use meshwatch_api::{Incident, now_ms};
use meshwatch_collector::backtest::{BacktestOptions, BacktestReport, RecordedRow};
use meshwatch_collector::{Config, Metric};

use crate::client::{ApiClient, Range};
use crate::format;

/// Where the history comes from, and how to replay it.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").args(["data_dir", "csv", "prometheus", "service"]).required(true).multiple(true)))]
pub struct BacktestArgs {
    /// Read a stopped collector's data directory (its `history.redb`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["csv", "prometheus"])]
    data_dir: Option<PathBuf>,
    /// Read a CSV file: `time,service,instance,metric,value` per line.
    #[arg(long, value_name = "FILE", conflicts_with = "prometheus")]
    csv: Option<PathBuf>,
    /// Read a Prometheus server's range queries (give --query).
    #[arg(long, value_name = "URL", requires = "query")]
    prometheus: Option<String>,
    /// A PromQL query whose series to replay; repeat for several. Name the
    /// series its results are when they carry no metric name:
    /// `rss_bytes=avg by (job) (...)`.
    #[arg(long, value_name = "PROMQL")]
    query: Vec<prometheus::Query>,
    /// Only this service; with neither --data-dir, --csv nor --prometheus,
    /// read it from the running collector's API (--collector).
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// How far back the history starts (ignored for --csv, which is read
    /// whole).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Recorded time between two detection passes.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    step: Duration,
    /// The resolution asked of Prometheus and of the collector's API.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    resolution: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Reads the history, replays it and prints what would have opened.
pub fn run(client: &ApiClient, args: &BacktestArgs) -> anyhow::Result<()> {
    let to_ms = now_ms();
    let from_ms = to_ms - i64::try_from(args.since.as_millis()).context("--since is too long")?;
    let rows = read_rows(client, args, (from_ms, to_ms))?;
    if rows.is_empty() {
        bail!(
            "the history holds no points meshwatch can read in the range asked; check the source, --service and --since"
        );
    }
    eprintln!("replaying {} rows ...", rows.len());
    let options = BacktestOptions {
        step: args.step,
        down_after: (args.resolution * 6).max(Duration::from_secs(60)),
    };
    let report = meshwatch_collector::backtest::run(&Config::new("unused"), options, rows)?;
    if args.json {
        let json = serde_json::json!({
            "from_ms": report.span_ms.0,
            "to_ms": report.span_ms.1,
            "rows": report.rows,
            "instances": report.instances,
            "incidents": report.incidents,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

fn read_rows(
    client: &ApiClient,
    args: &BacktestArgs,
    range: (i64, i64),
) -> anyhow::Result<Vec<RecordedRow>> {
    let service = args.service.as_deref();
    if let Some(dir) = &args.data_dir {
        eprintln!("reading {} ...", dir.display());
        return Ok(meshwatch_collector::backtest::read_store(
            dir, service, range,
        )?);
    }
    let mut rows = if let Some(path) = &args.csv {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        csv::read(std::io::BufReader::new(file), &path.display().to_string())?
    } else if let Some(base) = &args.prometheus {
        prometheus::read(base, &args.query, range, args.resolution, |what| {
            eprintln!("querying {what}");
        })?
    } else if let Some(service) = service {
        from_collector(client, service, range, args.resolution)?
    } else {
        bail!(
            "give a source: --data-dir, --csv, --prometheus, or --service to read the running collector"
        );
    };
    if let Some(service) = service {
        rows.retain(|row| row.service == service);
    }
    Ok(rows)
}

/// The series the detectors read, asked of a running collector.
const DETECTOR_SERIES: &[Metric] = &[
    Metric::HeapLiveBytes,
    Metric::HeapLimitBytes,
    Metric::RssBytes,
    Metric::MemoryLimitBytes,
    Metric::CpuPercent,
    Metric::TcpCloseWait,
    Metric::FdsOpen,
    Metric::FdsLimit,
    Metric::TasksAlive,
];

/// The most points per instance the collector's series API gives (it
/// refuses to be asked for more): a week at 10 s is thinned to this.
const API_MAX_POINTS: usize = 50_000;

/// A service's history through a running collector's API, at most one
/// point per `resolution` per series (and [`API_MAX_POINTS`]).
fn from_collector(
    client: &ApiClient,
    service: &str,
    (from_ms, to_ms): (i64, i64),
    resolution: Duration,
) -> anyhow::Result<Vec<RecordedRow>> {
    let per_point = i64::try_from(resolution.as_millis())?.max(1000);
    let max_points = usize::try_from((to_ms - from_ms) / per_point + 1)?.clamp(2, API_MAX_POINTS);
    let mut rows = mapping::Rows::default();
    for &metric in DETECTOR_SERIES {
        eprintln!(
            "reading {} of {service} from {} ...",
            metric.name(),
            client.base()
        );
        let range = Range { from_ms, to_ms };
        let Some(series) = client.series_points(service, metric.name(), range, max_points)? else {
            continue;
        };
        for instance in series {
            let who = (service.to_owned(), instance.instance_id);
            for (t_ms, value) in instance.points {
                rows.add(&who, mapping::Mapped::Gauge(metric), t_ms, value);
            }
        }
    }
    Ok(rows.into_rows())
}

/// The report as a person reads it: when each incident opened, how long
/// into the history, which window decided, and when it resolved.
fn text(report: &BacktestReport) -> String {
    let (from, to) = report.span_ms;
    let mut out = format!(
        "{} rows of {} instances, {} to {}\n",
        report.rows,
        report.instances,
        format::utc(from),
        format::utc(to)
    );
    if report.incidents.is_empty() {
        out.push_str("no incident would have opened\n");
        return out;
    }
    out.push_str(&format!(
        "{} incidents would have opened:\n",
        report.incidents.len()
    ));
    for incident in &report.incidents {
        out.push_str(&incident_text(incident, from));
    }
    out
}

fn incident_text(incident: &Incident, history_from_ms: i64) -> String {
    let into = format::duration_ms((incident.opened_at_ms - history_from_ms) as f64);
    let resolved = match incident.resolved_at_ms {
        Some(at) => format!(
            "resolved {} (after {})",
            format::utc(at),
            format::duration_ms((at - incident.opened_at_ms) as f64)
        ),
        None => "still open at the end".to_owned(),
    };
    let mut out = format!(
        "\n{} {} {}{}\n  opened   {} ({} into the history)\n  {}\n  {}\n",
        incident.kind,
        crate::model::severity_name(incident.severity),
        incident.service,
        incident
            .instance
            .as_deref()
            .map(|i| format!(" / {i}"))
            .unwrap_or_default(),
        format::utc(incident.opened_at_ms),
        into,
        resolved,
        incident.summary,
    );
    if let Some(window) = decided_by(&incident.evidence) {
        out.push_str(&format!(
            "  decided on a window of {}\n",
            format::duration_ms(window as f64 * 1000.0)
        ));
    }
    if let Evidence::MemoryGrowth(memory) = &incident.evidence
        && let Some(left) = memory.projected_time_to_limit_seconds
    {
        out.push_str(&format!(
            "  projected time to the limit: {}\n",
            format::duration_ms(left * 1000.0)
        ));
    }
    out
}

/// The window a trend incident was decided on, in seconds.
fn decided_by(evidence: &Evidence) -> Option<i64> {
    match evidence {
        Evidence::MemoryGrowth(e) => Some(e.window_seconds),
        Evidence::SocketLeak(e) => Some(e.window_seconds),
        Evidence::FdLeak(e) => Some(e.window_seconds),
        Evidence::TaskLeak(e) => Some(e.window_seconds),
        _ => None,
    }
}
