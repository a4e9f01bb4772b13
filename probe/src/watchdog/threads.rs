//! This process's threads, as the watchdog reads them: a thread's name and
//! scheduler times, and which unmapped worker thread a stuck worker runs on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use procfs::process::Process;

use super::rule::ThreadTimes;

/// The share of the time watched an unmapped thread must have spent
/// running or runnable (waiting for a CPU: on an overloaded machine a
/// spinning thread waits much of the time) to be taken for a stuck
/// worker's thread.
const INFER_MIN_SHARE: f64 = 0.5;

/// The name tokio gives worker (and blocking) threads unless told otherwise.
const DEFAULT_WORKER_NAME: &str = "tokio-rt-worker";

/// A worker-named thread no worker is known to run on, with its times.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub tid: u32,
    pub name: String,
    pub times: ThreadTimes,
}

/// The process's threads through `/proc/self/task`; `None` inside when
/// `/proc/self` cannot be read, and then every answer is `None`.
#[derive(Debug)]
pub(super) struct Threads {
    process: Option<Process>,
}

impl Threads {
    pub fn new() -> Self {
        Self {
            process: Process::myself().ok(),
        }
    }

    /// The thread's scheduler statistics and the moment they were read
    /// (not the tick's start: a tick can be long).
    pub fn times(&self, tid: u32) -> Option<(ThreadTimes, Instant)> {
        let stat = self.task(tid)?.schedstat().ok()?;
        let times = ThreadTimes {
            exec_ns: stat.sum_exec_runtime,
            wait_ns: stat.run_delay,
        };
        Some((times, Instant::now()))
    }

    /// The thread's name (`comm`).
    pub fn name(&self, tid: u32) -> Option<String> {
        Some(self.task(tid)?.stat().ok()?.comm)
    }

    /// The thread `tid` of the process.
    fn task(&self, tid: u32) -> Option<procfs::process::Task> {
        self.process
            .as_ref()?
            .task_from_tid(i32::try_from(tid).ok()?)
            .ok()
    }

    /// The threads named like a worker (like the `known` workers' threads,
    /// or tokio's default name) that are not among `known`.
    pub fn unmapped(&self, known: &[u32]) -> Option<Vec<Candidate>> {
        let names: Vec<String> = known
            .iter()
            .filter_map(|&tid| self.name(tid))
            .chain([DEFAULT_WORKER_NAME.to_owned()])
            .collect();
        let tasks = self.process.as_ref()?.tasks().ok()?;
        Some(
            tasks
                .flatten()
                .filter_map(|task| {
                    let tid = u32::try_from(task.tid).ok()?;
                    let name = task.stat().ok()?.comm;
                    if known.contains(&tid) || !names.contains(&name) {
                        return None;
                    }
                    let stat = task.schedstat().ok()?;
                    Some(Candidate {
                        tid,
                        name,
                        times: ThreadTimes {
                            exec_ns: stat.sum_exec_runtime,
                            wait_ns: stat.run_delay,
                        },
                    })
                })
                .collect(),
        )
    }
}

/// Of the candidates seen `before` and `now`, `elapsed` apart, the one that
/// ran (or waited to run) the most, if that is at least half of `elapsed`:
/// a spinning thread. With its times at the start. A blocked worker's
/// thread uses no CPU, so it is never picked.
pub(super) fn hottest(
    before: &[Candidate],
    now: &[Candidate],
    elapsed: Duration,
) -> Option<(Candidate, ThreadTimes)> {
    let started: HashMap<u32, ThreadTimes> = before.iter().map(|c| (c.tid, c.times)).collect();
    let (candidate, start, busy) = now
        .iter()
        .filter_map(|c| {
            let start = *started.get(&c.tid)?;
            let busy =
                (c.times.exec_ns + c.times.wait_ns).saturating_sub(start.exec_ns + start.wait_ns);
            Some((c, start, busy))
        })
        .max_by_key(|&(_, _, busy)| busy)?;
    (busy as f64 >= INFER_MIN_SHARE * elapsed.as_nanos() as f64).then(|| (candidate.clone(), start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(tid: u32, exec_ms: u64, wait_ms: u64) -> Candidate {
        Candidate {
            tid,
            name: DEFAULT_WORKER_NAME.to_owned(),
            times: ThreadTimes {
                exec_ns: exec_ms * 1_000_000,
                wait_ns: wait_ms * 1_000_000,
            },
        }
    }

    #[test]
    fn picks_the_thread_that_spun_and_none_when_all_are_idle() {
        let before = [candidate(1, 0, 0), candidate(2, 0, 0), candidate(3, 0, 0)];
        // Over 200 ms: thread 2 ran 60 ms and waited 60 ms for a CPU.
        let now = [
            candidate(1, 5, 0),
            candidate(2, 60, 60),
            candidate(4, 500, 0),
        ];
        let (picked, start) = hottest(&before, &now, Duration::from_millis(200)).unwrap();
        assert_eq!(
            picked.tid, 2,
            "thread 4 appeared since: no start to measure from"
        );
        assert_eq!(start.exec_ns, 0);
        let idle = [candidate(1, 5, 0), candidate(2, 10, 10)];
        assert!(hottest(&before, &idle, Duration::from_millis(200)).is_none());
    }

    #[test]
    fn lists_this_process_threads_not_yet_known() {
        let threads = Threads::new();
        let (started, running) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name(DEFAULT_WORKER_NAME.to_owned())
            .spawn(move || {
                started.send(crate::identity::current_tid()).unwrap();
                released.recv()
            })
            .unwrap();
        let tid = running.recv().unwrap();
        let unmapped = threads.unmapped(&[]).unwrap();
        assert!(
            unmapped
                .iter()
                .any(|c| c.tid == tid && c.name == DEFAULT_WORKER_NAME),
            "the worker-named thread is listed: {unmapped:?}"
        );
        assert!(
            threads
                .unmapped(&[tid])
                .unwrap()
                .iter()
                .all(|c| c.tid != tid)
        );
        assert_eq!(threads.name(tid).as_deref(), Some(DEFAULT_WORKER_NAME));
        assert!(threads.times(tid).is_some());
        release.send(()).unwrap();
        worker.join().unwrap().unwrap();
    }
}
