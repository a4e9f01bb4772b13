//! Shared helpers for meshwatch's benchmarks: medians and process CPU/RSS
//! readings. The benchmarks themselves are in `benches/`.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
