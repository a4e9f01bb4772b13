//! Shared helpers for meshwatch's benchmarks: medians and process CPU/RSS
//! readings, the hello-world server and the wrk runner of `probe_cost`. The
//! benchmarks themselves are in `benches/`.

pub mod hello;
pub mod simulated;
pub mod wrk;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty. Benchmarks quote medians because this machine is noisy.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// The median of a figure over rounds with its extremes: how a noisy
/// figure is quoted, so a reader sees the spread along with the middle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median of the finite values.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of the finite `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let finite = || values.iter().copied().filter(|v| v.is_finite());
        Some(Self {
            median: median(values)?,
            min: finite().fold(f64::INFINITY, f64::min),
            max: finite().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// The number in environment variable `name`, else `default`: how the
/// benchmarks take their settings (`ROUNDS=3 cargo bench ...`).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) and resident memory of process `pid`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU time since the process started.
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads the CPU time of every thread of `pid` from its `schedstat`
/// (nanoseconds, where `/proc/PID/stat` counts 10 ms ticks) and the RSS.
/// Threads that exited are not counted: measure windows in which the
/// process's threads live throughout.
///
/// # Errors
///
/// When the process is gone or `/proc` is unreadable.
pub fn usage(pid: u32) -> procfs::ProcResult<Usage> {
    let process = procfs::process::Process::new(i32::try_from(pid).unwrap_or(i32::MAX))?;
    let mut cpu_ns = 0;
    for task in process.tasks()?.flatten() {
        if let Ok(sched) = task.schedstat() {
            cpu_ns += sched.sum_exec_runtime;
        }
    }
    Ok(Usage {
        cpu: Duration::from_nanos(cpu_ns),
        rss_bytes: process.stat()?.rss * procfs::page_size(),
    })
}

/// Drives `GET /` at `addr` (`host:port`) from `connections` threads, each
/// on one keep-alive HTTP/1.1 connection, for `duration`; returns the
/// responses received. A minimal client on purpose: it costs little CPU,
/// which matters when client and server share two cores.
///
/// # Errors
///
/// When a connection fails or a response is malformed.
pub fn http_load(addr: &str, connections: usize, duration: Duration) -> std::io::Result<u64> {
    drive(
        addr,
        connections,
        Until::Deadline(Instant::now() + duration),
    )
}

/// Like [`http_load`], but sends exactly `per_connection` requests on each
/// connection: for measurements counted per request rather than timed.
///
/// # Errors
///
/// When a connection fails or a response is malformed.
pub fn http_requests(addr: &str, connections: usize, per_connection: u64) -> std::io::Result<u64> {
    drive(addr, connections, Until::Count(per_connection))
}

/// When a load connection stops sending.
#[derive(Debug, Clone, Copy)]
enum Until {
    Deadline(Instant),
    Count(u64),
}

fn drive(addr: &str, connections: usize, until: Until) -> std::io::Result<u64> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections.max(1))
            .map(|_| scope.spawn(|| keep_alive_client(addr, until)))
            .collect();
        let mut total = 0;
        for worker in workers {
            total += worker
                .join()
                .map_err(|_| std::io::Error::other("a load thread panicked"))??;
        }
        Ok(total)
    })
}

fn keep_alive_client(addr: &str, until: Until) -> std::io::Result<u64> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    let mut done = 0;
    while match until {
        Until::Deadline(deadline) => Instant::now() < deadline,
        Until::Count(count) => done < count,
    } {
        writer.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        done += 1;
    }
    Ok(done)
}

/// The instruction total of one callgrind dump: its `totals:` (or
/// `summary:`) line, the first event being instructions executed (`Ir`).
pub fn callgrind_totals(dump: &str) -> Option<u64> {
    dump.lines().find_map(|line| {
        let rest = line
            .strip_prefix("totals:")
            .or_else(|| line.strip_prefix("summary:"))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::{Spread, callgrind_totals, median};

    #[test]
    fn reads_the_totals_of_a_callgrind_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 1234\n\nfl=(1) x\nfn=(1) y\n0 5\ntotals: 1234\n";
        assert_eq!(callgrind_totals(dump), Some(1234));
        assert_eq!(callgrind_totals("events: Ir\n"), None);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn spread_ignores_non_finite_values() {
        let spread = Spread::of(&[3.0, f64::NAN, 1.0, 2.0]).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Spread::of(&[f64::NAN]), None);
    }
}
