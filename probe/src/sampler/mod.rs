//! Builds a `Snapshot` from every source: the process, its threads, its TCP
//! sockets, the watched runtimes, the tracking allocator and the probe's own counters.

mod console;
mod process;
mod runtime;
mod sockets;

use std::time::Instant;

use meshwatch_proto::v1::{HeapStats, ProbeStats, Snapshot};

use crate::alloc::heap_totals;
use crate::heap::{self, HeapReporter};
use crate::identity::now_unix_ms;
use crate::stats::ProbeCounters;
use console::ConsoleBind;
use process::ProcessSampler;
pub(crate) use runtime::{WatchedRuntimes, WorkerTids};
use sockets::SocketSampler;

/// Takes snapshots; lives on the probe's sampler thread.
#[derive(Debug)]
pub(crate) struct Sampler {
    process: Option<ProcessSampler>,
    sockets: SocketSampler,
    console: ConsoleBind,
    runtimes: WatchedRuntimes,
    /// The allocator's figures and sites, for a probe inside the process;
    /// `None` for a process watched from outside.
    heap: Option<HeapReporter>,
    seq: u64,
}

impl Sampler {
    pub fn new(runtimes: WatchedRuntimes, interval: std::time::Duration) -> Self {
        let process = match ProcessSampler::new() {
            Ok(sampler) => Some(sampler),
            Err(err) => {
                tracing::warn!(error = %err, "meshwatch: /proc/self is unreadable; process figures will be missing");
                None
            }
        };
        Self {
            process,
            sockets: SocketSampler::new(interval),
            console: ConsoleBind::from_env(),
            runtimes,
            heap: Some(HeapReporter::default()),
            seq: 0,
        }
    }

    /// A sampler of another process of the host, watched from outside: its
    /// process, thread and socket figures (no runtime, no heap). `None`
    /// when its `/proc` entry cannot be opened.
    #[cfg(feature = "external")]
    pub fn for_pid(pid: u32, interval: std::time::Duration) -> Option<Self> {
        Some(Self {
            process: Some(ProcessSampler::for_pid(pid).ok()?),
            sockets: SocketSampler::for_pid(pid, interval),
            // Its environment is not ours: console-subscriber's default.
            console: ConsoleBind::default(),
            runtimes: WatchedRuntimes::default(),
            heap: None,
            seq: 0,
        })
    }

    /// Whether the process watched from outside is gone; never for the
    /// probe's own process.
    pub fn target_gone(&self) -> bool {
        #[cfg(feature = "external")]
        if self.heap.is_none() {
            return !self.process.as_ref().is_some_and(ProcessSampler::is_alive);
        }
        false
    }

    /// Samples every source once. Sources that fail are counted in
    /// `counters` and leave their figures at zero.
    pub fn snapshot(&mut self, counters: &ProbeCounters) -> Snapshot {
        let started = Instant::now();
        self.seq += 1;
        let mut snapshot = Snapshot {
            seq: self.seq,
            time_unix_ms: now_unix_ms(),
            ..Snapshot::default()
        };
        match &self.process {
            Some(sampler) => {
                let sample = sampler.sample();
                snapshot.process = Some(sample.process);
                snapshot.threads = sample.threads;
                counters.add_sample_errors(sample.errors);
            }
            None => counters.add_sample_errors(1),
        }
        let mut errors = 0;
        let sockets = self.sockets.sample(&mut errors);
        counters.add_sample_errors(errors);
        snapshot.tokio_console = self.console.serving(&sockets.listening).unwrap_or_default();
        snapshot.sockets = Some(sockets);
        snapshot.runtimes = self.runtimes.sample();
        if let Some(heap_reporter) = &mut self.heap {
            let totals = heap_totals();
            let mut stats = HeapStats {
                tracked: totals.installed,
                live_bytes: totals.live_bytes(),
                allocated_bytes_total: totals.allocated_bytes,
                freed_bytes_total: totals.freed_bytes,
                allocations_total: totals.allocations,
                frees_total: totals.frees,
                ..HeapStats::default()
            };
            if totals.installed {
                let report = heap_reporter.report();
                stats.sample_interval_bytes = heap::sample_interval();
                stats.live_samples = report.live_samples;
                stats.samples_dropped_total = report.samples_dropped;
                snapshot.heap_sites = report.sites;
                snapshot.modules = report.modules;
            }
            snapshot.heap = Some(stats);
        }
        counters.set_sample_duration(started.elapsed());
        snapshot.probe = Some(counters.to_stats());
        snapshot
    }
}

/// Keeps `ProbeStats` construction next to its only caller's types.
impl ProbeCounters {
    fn to_stats(&self) -> ProbeStats {
        let totals = self.totals();
        ProbeStats {
            snapshots_dropped_total: totals.snapshots_dropped,
            events_dropped_total: totals.events_dropped,
            connects_total: totals.connects,
            sample_duration_ns: totals.sample_duration_ns,
            sample_errors_total: totals.sample_errors,
        }
    }
}
