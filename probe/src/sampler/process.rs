//! Process-wide and per-thread figures from `/proc/self`, through `procfs`.

use meshwatch_proto::v1::{MemoryLimitSource, ProcessStats, ThreadStats};
use procfs::process::{LimitValue, Process};
use procfs::{Current, Meminfo};

/// Reads `/proc/self` for the snapshot. Keeps the handle and the constants
/// that never change, so each pass only reads the files that do.
#[derive(Debug)]
pub(crate) struct ProcessSampler {
    process: Process,
    page_size: u64,
    ticks_per_second: f64,
}

/// One pass of the process sampler, with the count of sources that failed:
/// a source that cannot be read leaves its fields at zero rather than failing
/// the whole snapshot.
#[derive(Debug, Default)]
pub(crate) struct ProcessSample {
    pub process: ProcessStats,
    pub threads: Vec<ThreadStats>,
    pub errors: u64,
}

impl ProcessSampler {
    pub fn new() -> procfs::ProcResult<Self> {
        Ok(Self::of(Process::myself()?))
    }

    /// A sampler of another process of the host, watched from outside.
    #[cfg(feature = "external")]
    pub fn for_pid(pid: u32) -> procfs::ProcResult<Self> {
        let pid = i32::try_from(pid).map_err(|_| procfs::ProcError::NotFound(None))?;
        Ok(Self::of(Process::new(pid)?))
    }

    fn of(process: Process) -> Self {
        Self {
            process,
            page_size: procfs::page_size(),
            ticks_per_second: procfs::ticks_per_second().max(1) as f64,
        }
    }

    /// Whether the process is still there (its `/proc` entry answers).
    #[cfg(feature = "external")]
    pub fn is_alive(&self) -> bool {
        self.process.is_alive()
    }

    pub fn sample(&self) -> ProcessSample {
        let mut sample = ProcessSample::default();
        let stats = &mut sample.process;
        match self.process.stat() {
            Ok(stat) => {
                stats.rss_bytes = stat.rss.saturating_mul(self.page_size);
                stats.virtual_bytes = stat.vsize;
                stats.cpu_seconds_total = (stat.utime + stat.stime) as f64 / self.ticks_per_second;
                stats.threads = u32::try_from(stat.num_threads).unwrap_or(0);
            }
            Err(_) => sample.errors += 1,
        }
        match self.process.fd_count() {
            Ok(count) => stats.fds_open = count as u64,
            Err(_) => sample.errors += 1,
        }
        match self.process.limits() {
            Ok(limits) => {
                stats.fds_limit = match limits.max_open_files.soft_limit {
                    LimitValue::Value(n) => n,
                    LimitValue::Unlimited => 0,
                }
            }
            Err(_) => sample.errors += 1,
        }
        match memory_limit(&self.process) {
            Some((bytes, source)) => {
                stats.memory_limit_bytes = bytes;
                stats.memory_limit_source = source as i32;
            }
            None => sample.errors += 1,
        }
        match self.process.tasks() {
            Ok(tasks) => {
                for task in tasks.flatten() {
                    // A thread may exit between listing and reading: skip it.
                    let (Ok(stat), Ok(sched)) = (task.stat(), task.schedstat()) else {
                        continue;
                    };
                    sample.threads.push(ThreadStats {
                        tid: u32::try_from(task.tid).unwrap_or(0),
                        name: stat.comm,
                        cpu_ns_total: sched.sum_exec_runtime,
                    });
                }
            }
            Err(_) => sample.errors += 1,
        }
        sample
    }
}

/// The memory the process may use: the tightest cgroup v2 `memory.max` on the
/// path from its cgroup up to the root, else the host's total memory.
fn memory_limit(process: &Process) -> Option<(u64, MemoryLimitSource)> {
    if let Some(limit) = cgroup_memory_max(process) {
        return Some((limit, MemoryLimitSource::Cgroup));
    }
    let meminfo = Meminfo::current().ok()?;
    Some((meminfo.mem_total, MemoryLimitSource::Host))
}

fn cgroup_memory_max(process: &Process) -> Option<u64> {
    let cgroups = process.cgroups().ok()?;
    // cgroup v2 is the unified hierarchy, numbered 0.
    let unified = cgroups.into_iter().find(|cg| cg.hierarchy == 0)?;
    let mut path = std::path::PathBuf::from("/sys/fs/cgroup");
    path.push(unified.pathname.trim_start_matches('/'));
    let mut tightest: Option<u64> = None;
    loop {
        if let Ok(text) = std::fs::read_to_string(path.join("memory.max"))
            && let Some(limit) = parse_memory_max(&text)
        {
            tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
        }
        if path.as_os_str() == "/sys/fs/cgroup" || !path.pop() {
            break;
        }
    }
    tightest
}

/// `memory.max` holds a byte count, or `max` for no limit.
fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory_max() {
        assert_eq!(parse_memory_max("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_memory_max("max\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let sample = ProcessSampler::new().unwrap().sample();
        assert_eq!(sample.errors, 0);
        assert!(sample.process.rss_bytes > 0);
        assert!(sample.process.threads >= 1);
        assert!(sample.process.fds_open >= 3);
        assert!(sample.process.memory_limit_bytes > 0);
        let me = sample
            .threads
            .iter()
            .find(|t| t.tid == sample.threads[0].tid)
            .unwrap();
        assert!(me.cpu_ns_total > 0);
    }
}
