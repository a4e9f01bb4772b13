//! Which OS thread runs each worker of a watched runtime.
//!
//! Stable tokio does not say (`worker_thread_id` needs `tokio_unstable`),
//! and thread names do not either: blocking-pool threads are named
//! `tokio-rt-worker` too. So the watchdog asks the workers themselves: a few
//! times a second it spawns tiny census tasks on the runtime; each records
//! `tokio::runtime::worker_index()` and its thread id in a lock-free table.
//! Idle workers are woken to take them, busy ones steal them, so every
//! worker that runs tasks is found within a round or two. The table is
//! refreshed continually because the map moves: `block_in_place` hands a
//! worker to another thread. A worker stuck in a poll runs no census task,
//! so its entry is the thread it last ran on, just before it got stuck.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::identity::current_tid;
use crate::sampler::{WatchedRuntimes, WorkerTids};

/// How often a runtime whose workers are all known is counted again.
const EVERY: Duration = Duration::from_millis(500);
/// How often while some worker is still unknown.
const RETRY: Duration = Duration::from_millis(100);
/// Census tasks per worker and round: more than one, so that a worker that
/// wakes late still finds one to take.
const TASKS_PER_WORKER: usize = 2;

#[derive(Debug)]
struct Table {
    /// Thread id per worker index; 0 until a census task ran there. Shared
    /// with the snapshots, through [`WatchedRuntimes`].
    tids: WorkerTids,
    last_round: Option<Instant>,
}

/// The worker-to-thread tables of every watched runtime.
#[derive(Debug, Default)]
pub(crate) struct Census {
    tables: HashMap<u32, Table>,
}

impl Census {
    /// Spawns a census round on `handle` when one is due, recording into
    /// the runtime's table in `runtimes`.
    pub fn refresh(
        &mut self,
        runtimes: &WatchedRuntimes,
        runtime_id: u32,
        handle: &Handle,
        now: Instant,
    ) {
        let workers = handle.metrics().num_workers();
        let table = self.tables.entry(runtime_id).or_insert_with(|| Table {
            tids: runtimes.worker_tids(runtime_id, workers),
            last_round: None,
        });
        let complete = table.tids.iter().all(|t| t.load(Ordering::Relaxed) != 0);
        let due = if complete { EVERY } else { RETRY };
        if table
            .last_round
            .is_some_and(|last| now.duration_since(last) < due)
        {
            return;
        }
        table.last_round = Some(now);
        for _ in 0..workers * TASKS_PER_WORKER {
            let tids = table.tids.clone();
            // The join handle is dropped: the task runs detached.
            drop(handle.spawn(async move {
                if let Some(slot) = tokio::runtime::worker_index().and_then(|i| tids.get(i)) {
                    slot.store(current_tid(), Ordering::Relaxed);
                }
            }));
        }
    }

    /// Every thread the census has seen running a worker, in any runtime.
    pub fn known_tids(&self) -> impl Iterator<Item = u32> + '_ {
        self.tables
            .values()
            .flat_map(|t| t.tids.iter().map(|tid| tid.load(Ordering::Relaxed)))
            .filter(|&tid| tid != 0)
    }

    /// The thread that last ran worker `worker` of runtime `runtime_id`.
    pub fn tid(&self, runtime_id: u32, worker: usize) -> Option<u32> {
        let tid = self
            .tables
            .get(&runtime_id)?
            .tids
            .get(worker)?
            .load(Ordering::Relaxed);
        (tid != 0).then_some(tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_thread_of_every_worker() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();
        let mut census = Census::default();
        let runtimes = WatchedRuntimes::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while (0..3).any(|w| census.tid(0, w).is_none()) {
            assert!(Instant::now() < deadline, "{census:?}");
            census.refresh(&runtimes, 0, runtime.handle(), Instant::now());
            std::thread::sleep(RETRY);
        }
        let tids: Vec<u32> = (0..3).filter_map(|w| census.tid(0, w)).collect();
        let mut distinct = tids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{tids:?}");
        assert!(!tids.contains(&current_tid()));
        let shared = runtimes.worker_tids(0, 3);
        let published: Vec<u32> = shared.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        assert_eq!(published, tids, "the snapshots see what the census found");
        assert_eq!(census.tid(0, 3), None);
        assert_eq!(census.tid(1, 0), None);
    }
}
