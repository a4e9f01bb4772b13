//! The stable metrics of the tokio runtimes the probe watches.
//!
//! Only metrics that need no `--cfg tokio_unstable` feed the core signals;
//! the per-worker poll, steal and queue counts are added when the service is
//! built with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use meshwatch_proto::v1::{RuntimeStats, SpawnSite, WorkerStats};
use tokio::runtime::{Handle, RuntimeFlavor};

/// The runtimes to watch, shared between the probe handle (which adds them)
/// and the sampler and watchdog threads (which read them), with the thread
/// each worker runs on as the watchdog's census finds it.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchedRuntimes {
    handles: Arc<Mutex<Vec<Handle>>>,
    worker_tids: Arc<Mutex<HashMap<u32, WorkerTids>>>,
}

/// Thread id per worker index of one runtime; 0 until found.
pub(crate) type WorkerTids = Arc<[AtomicU32]>;

impl WatchedRuntimes {
    /// Adds a runtime unless it is already watched. Returns whether it was new.
    pub fn add(&self, handle: Handle) -> bool {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if handles.iter().any(|h| h.id() == handle.id()) {
            return false;
        }
        handles.push(handle);
        true
    }

    /// The watched runtimes with their ids (their order of addition, the
    /// `runtime_id` of snapshots and events).
    pub fn handles(&self) -> Vec<(u32, Handle)> {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles
            .iter()
            .enumerate()
            .map(|(id, handle)| (runtime_id(id), handle.clone()))
            .collect()
    }

    /// The worker thread table of runtime `runtime_id`, made with `workers`
    /// slots on first use: the census fills it, snapshots carry it.
    pub fn worker_tids(&self, runtime_id: u32, workers: usize) -> WorkerTids {
        self.worker_tids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(runtime_id)
            .or_insert_with(|| (0..workers).map(|_| AtomicU32::new(0)).collect())
            .clone()
    }

    pub fn sample(&self) -> Vec<RuntimeStats> {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        let tids = self
            .worker_tids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        handles
            .iter()
            .enumerate()
            .map(|(id, handle)| {
                let id = runtime_id(id);
                sample_runtime(id, handle, tids.get(&id))
            })
            .collect()
    }
}

fn runtime_id(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

fn sample_runtime(runtime_id: u32, handle: &Handle, tids: Option<&WorkerTids>) -> RuntimeStats {
    let metrics = handle.metrics();
    let workers = metrics.num_workers();
    RuntimeStats {
        runtime_id,
        flavor: match handle.runtime_flavor() {
            RuntimeFlavor::CurrentThread => "current_thread",
            RuntimeFlavor::MultiThread => "multi_thread",
            _ => "other",
        }
        .to_owned(),
        workers: u32::try_from(workers).unwrap_or(u32::MAX),
        tasks_alive: metrics.num_alive_tasks() as u64,
        global_queue_depth: metrics.global_queue_depth() as u64,
        worker: (0..workers)
            .map(|index| {
                #[allow(unused_mut)] // mutated only under tokio_unstable
                let mut stats = WorkerStats {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    busy_ns_total: u64::try_from(
                        metrics.worker_total_busy_duration(index).as_nanos(),
                    )
                    .unwrap_or(u64::MAX),
                    park_count: metrics.worker_park_count(index),
                    park_unpark_count: metrics.worker_park_unpark_count(index),
                    tid: tids
                        .and_then(|t| t.get(index))
                        .map_or(0, |t| t.load(Ordering::Relaxed)),
                    ..WorkerStats::default()
                };
                #[cfg(tokio_unstable)]
                {
                    stats.poll_count = metrics.worker_poll_count(index);
                    stats.steal_count = metrics.worker_steal_count(index);
                    stats.local_queue_depth = metrics.worker_local_queue_depth(index) as u64;
                }
                stats
            })
            .collect(),
        spawn_sites: spawn_sites(handle),
    }
}

/// Alive tasks by spawn location, from the task hooks when the runtime has
/// them.
#[cfg(tokio_unstable)]
fn spawn_sites(handle: &Handle) -> Vec<SpawnSite> {
    crate::hooks::spawn_sites(handle.id())
        .into_iter()
        .map(|(location, alive)| SpawnSite { location, alive })
        .collect()
}

/// Without `--cfg tokio_unstable` there are no task hooks to ask.
#[cfg(not(tokio_unstable))]
fn spawn_sites(_handle: &Handle) -> Vec<SpawnSite> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_a_multi_thread_runtime_once_however_often_added() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();
        let watched = WatchedRuntimes::default();
        assert!(watched.add(runtime.handle().clone()));
        assert!(!watched.add(runtime.handle().clone()));
        let _task = runtime.spawn(std::future::pending::<()>());
        let stats = watched.sample();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].flavor, "multi_thread");
        assert_eq!(stats[0].workers, 3);
        assert_eq!(stats[0].worker.len(), 3);
        assert_eq!(stats[0].tasks_alive, 1);
    }
}
