//! Running [wrk](https://github.com/wg/wrk) and reading its report.
//!
//! wrk is the load generator of the `probe_cost` benchmark: written in C
//! with an event loop, one thread of it saturates a small server while
//! costing little itself, and `--latency` gives the latency percentiles the
//! budget is written in. It runs as a child process pinned to a core of its
//! own (`taskset`), and its human-readable report is parsed here.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// What the benchmark reads from one wrk run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Responses received over the run.
    pub requests: u64,
    /// The run's length as wrk measured it.
    pub elapsed: Duration,
    /// wrk's `Requests/sec`: `requests` over `elapsed`.
    pub requests_per_sec: f64,
    /// Median latency, from the `--latency` distribution.
    pub p50: Duration,
    /// 99th percentile latency, from the `--latency` distribution.
    pub p99: Duration,
    /// Connect, read, write errors and timeouts, summed (0 when wrk printed
    /// no `Socket errors` line).
    pub socket_errors: u64,
    /// Responses with a status other than 2xx or 3xx.
    pub non_2xx: u64,
}

/// Why wrk's report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A line the report always has was not found.
    #[error("wrk's report has no {0} line")]
    Missing(&'static str),
    /// A figure did not parse.
    #[error("wrk's report: cannot read {what} from {text:?}")]
    Bad {
        /// Which figure.
        what: &'static str,
        /// The text that did not parse.
        text: String,
    },
}

/// Why a wrk run gave no report.
#[derive(Debug, thiserror::Error)]
pub enum WrkError {
    /// wrk (or taskset) could not be started or waited for.
    #[error("cannot run wrk: {0}")]
    Run(#[from] std::io::Error),
    /// wrk exited with a failure.
    #[error("wrk failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// wrk's output did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// One wrk invocation: `taskset -c CORE wrk -t1 -cCONNECTIONS -dSECONDSs
/// --latency [-H "Connection: close"] http://ADDR/`.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    /// The server, `host:port`.
    pub addr: &'a str,
    /// The core wrk is pinned to.
    pub core: usize,
    /// Open connections (wrk's `-c`).
    pub connections: usize,
    /// How long to run.
    pub seconds: u64,
    /// One connection per request (`Connection: close`), for connection
    /// churn; otherwise keep-alive.
    pub close: bool,
}

impl Load<'_> {
    /// The command line, for running and for printing.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &self.core.to_string(), "wrk", "-t1"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.seconds))
            .arg("--latency");
        if self.close {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(format!("http://{}/", self.addr));
        cmd
    }

    /// Runs wrk to the end and parses its report.
    ///
    /// # Errors
    ///
    /// When wrk cannot run, fails, or prints a report that does not parse.
    pub fn run(&self) -> Result<Report, WrkError> {
        report(self.command().stdin(Stdio::null()).output()?)
    }

    /// Starts wrk and returns at once, stdout and stderr piped; end it with
    /// [`finish`] (after `kill -INT` to cut it short: wrk then reports what
    /// it did so far).
    ///
    /// # Errors
    ///
    /// When wrk cannot be started.
    pub fn spawn(&self) -> std::io::Result<Child> {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    }
}

/// Waits for a wrk started by [`Load::spawn`] and parses its report.
///
/// # Errors
///
/// As [`Load::run`].
pub fn finish(child: Child) -> Result<Report, WrkError> {
    report(child.wait_with_output()?)
}

fn report(output: Output) -> Result<Report, WrkError> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Interrupted with SIGINT, wrk prints its report and exits 0; any other
    // failure leaves no report.
    if !output.status.success() {
        return Err(WrkError::Failed {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(parse(&stdout)?)
}

/// Whether `wrk` is on the `PATH`.
pub fn installed() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Reads wrk's report (as printed with `--latency`).
///
/// # Errors
///
/// When a line wrk always prints is missing or a figure does not parse.
pub fn parse(output: &str) -> Result<Report, ParseError> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut socket_errors = 0;
    let mut non_2xx = 0;
    for line in output.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            // "966543 requests in 10.00s, 80.21MB read"
            let elapsed = rest.split(',').next().unwrap_or_default();
            requests = Some((
                number::<u64>("requests", count)?,
                duration("run length", elapsed)?,
            ));
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = Some(number::<f64>("requests/sec", rate)?);
        } else if let Some(latency) = line.strip_prefix("50%") {
            p50 = Some(duration("p50", latency)?);
        } else if let Some(latency) = line.strip_prefix("99%") {
            p99 = Some(duration("p99", latency)?);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "Socket errors: connect 0, read 12, write 0, timeout 0"
            for field in errors.split(',') {
                let count = field.split_whitespace().last().unwrap_or_default();
                socket_errors += number::<u64>("socket errors", count)?;
            }
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = number::<u64>("non-2xx responses", count)?;
        }
    }
    let (requests, elapsed) = requests.ok_or(ParseError::Missing("\"N requests in T\""))?;
    Ok(Report {
        requests,
        elapsed,
        requests_per_sec: requests_per_sec.ok_or(ParseError::Missing("Requests/sec"))?,
        p50: p50.ok_or(ParseError::Missing("50% latency"))?,
        p99: p99.ok_or(ParseError::Missing("99% latency"))?,
        socket_errors,
        non_2xx,
    })
}

fn number<T: std::str::FromStr>(what: &'static str, text: &str) -> Result<T, ParseError> {
    text.trim().parse().map_err(|_| ParseError::Bad {
        what,
        text: text.trim().to_owned(),
    })
}

/// Reads one of wrk's times: a number with `us`, `ms`, `s`, `m` or `h`.
fn duration(what: &'static str, text: &str) -> Result<Duration, ParseError> {
    let text = text.trim();
    let bad = || ParseError::Bad {
        what,
        text: text.to_owned(),
    };
    // Nanoseconds per unit; longer suffixes first, as "ms" ends in "s".
    const UNITS: [(&str, f64); 5] = [
        ("us", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
    ];
    let (value, scale) = UNITS
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|value| (value, *scale)))
        .ok_or_else(bad)?;
    let value: f64 = value.trim().parse().map_err(|_| bad())?;
    let nanos = (value * scale).round();
    if !(0.0..=u64::MAX as f64).contains(&nanos) {
        return Err(bad());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of `wrk -t1 -c50 -d2s --latency` (wrk 4.1.0, Debian)
    /// against `hello-plain bare` on this machine.
    const KEEP_ALIVE: &str = "Running 2s test @ http://127.0.0.1:33729/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.08ms    2.66ms  24.60ms   88.19%
    Req/Sec    28.54k     8.80k   46.67k    70.00%
  Latency Distribution
     50%  757.00us
     75%    2.80ms
     90%    5.11ms
     99%   12.90ms
  57043 requests in 2.02s, 4.90MB read
Requests/sec:  28257.18
Transfer/sec:      2.43MB
";

    /// Real output of the same, the server killed a second into the run.
    const SERVER_KILLED: &str = "Running 3s test @ http://127.0.0.1:33761/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.28ms    1.72ms  13.38ms   87.38%
    Req/Sec    31.24k    14.59k   60.88k    80.00%
  Latency Distribution
     50%  661.00us
     75%  786.00us
     90%    3.97ms
     99%    8.40ms
  31293 requests in 3.09s, 2.69MB read
  Socket errors: connect 0, read 50, write 28766, timeout 0
Requests/sec:  10131.41
Transfer/sec:      0.87MB
";

    #[test]
    fn reads_a_keep_alive_report() {
        let report = parse(KEEP_ALIVE).unwrap();
        assert_eq!(
            report,
            Report {
                requests: 57043,
                elapsed: Duration::from_millis(2020),
                requests_per_sec: 28257.18,
                p50: Duration::from_micros(757),
                p99: Duration::from_micros(12900),
                socket_errors: 0,
                non_2xx: 0,
            }
        );
    }

    #[test]
    fn reads_socket_errors() {
        let report = parse(SERVER_KILLED).unwrap();
        assert_eq!(report.requests, 31293);
        assert_eq!(report.p50, Duration::from_micros(661));
        assert_eq!(report.p99, Duration::from_micros(8400));
        assert_eq!(report.socket_errors, 50 + 28766);
    }

    #[test]
    fn reads_times_in_every_unit() {
        assert_eq!(
            duration("t", "490.00us").unwrap(),
            Duration::from_micros(490)
        );
        assert_eq!(
            duration("t", " 1.25ms").unwrap(),
            Duration::from_micros(1250)
        );
        assert_eq!(duration("t", "10.00s").unwrap(), Duration::from_secs(10));
        assert_eq!(duration("t", "2.00m").unwrap(), Duration::from_secs(120));
        assert!(duration("t", "fast").is_err());
        assert!(duration("t", "12").is_err());
    }

    #[test]
    fn a_report_without_percentiles_is_an_error() {
        let err = parse("  10 requests in 1.00s, 1.00KB read\nRequests/sec: 10.00\n").unwrap_err();
        assert!(matches!(err, ParseError::Missing(_)));
    }
}
