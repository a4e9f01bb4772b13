//! Task hooks, an optional extra for services built with
//! `--cfg tokio_unstable`: exact poll start and end per worker, and alive
//! tasks per spawn location.
//!
//! The stable rule infers a stuck poll from counters tokio publishes every
//! 61 scheduler ticks, so it needs a threshold of about a second and cannot
//! tell one long poll from a run of them. With the hooks installed on the
//! runtime's builder ([`install_task_hooks`]), each worker records when its
//! current poll started and which task (by spawn location) it polls: the
//! watchdog then knows exactly, can use a lower threshold, and names the
//! task's spawn site. The spawn and terminate hooks count alive tasks per
//! spawn location, which the snapshot carries so a task leak names its
//! spawn site.
//!
//! The hooks write to fixed tables allocated when they are installed, with
//! relaxed atomics: no allocation and no lock on the runtime's hot path.
//! Each hooked runtime has its own tables; runtimes without hooks keep the
//! stable rule.

use std::panic::Location;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle, Id};

/// Workers whose polls are timed; more are ignored.
const MAX_WORKERS: usize = 256;
/// Distinct spawn locations counted; tasks from more share one slot.
const MAX_SITES: usize = 512;
/// Spawn sites a snapshot carries, most alive tasks first.
pub(crate) const TOP_SITES: usize = 10;

struct PollSlot {
    /// Nanoseconds since [`EPOCH`] plus one when the current poll began; 0
    /// while the worker is not polling.
    started: AtomicU64,
    location: AtomicPtr<Location<'static>>,
}

struct SiteSlot {
    location: AtomicPtr<Location<'static>>,
    alive: AtomicI64,
}

/// One hooked runtime's tables, allocated once when the hooks are
/// installed; the hooks reach them through the `Arc` they capture.
struct Tables {
    /// Set by the first hook that runs, from inside the runtime.
    runtime: OnceLock<Id>,
    polls: Box<[PollSlot]>,
    sites: Box<[SiteSlot]>,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Every hooked runtime's tables, for the watchdog and the sampler; locked
/// only by them, never by the hooks.
static HOOKED: Mutex<Vec<Arc<Tables>>> = Mutex::new(Vec::new());

/// Installs the probe's task hooks on a runtime builder. Call it before
/// `build()`:
///
/// ```ignore
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// meshwatch_probe::install_task_hooks(builder.enable_all()).build()?
/// ```
pub fn install_task_hooks(builder: &mut Builder) -> &mut Builder {
    let epoch = *EPOCH.get_or_init(Instant::now);
    let tables = Arc::new(Tables {
        runtime: OnceLock::new(),
        polls: (0..MAX_WORKERS)
            .map(|_| PollSlot {
                started: AtomicU64::new(0),
                location: AtomicPtr::new(std::ptr::null_mut()),
            })
            .collect(),
        sites: (0..MAX_SITES)
            .map(|_| SiteSlot {
                location: AtomicPtr::new(std::ptr::null_mut()),
                alive: AtomicI64::new(0),
            })
            .collect(),
    });
    HOOKED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(tables.clone());
    let (before, after, spawn, terminate) =
        (tables.clone(), tables.clone(), tables.clone(), tables);
    builder
        .on_before_task_poll(move |meta| before.poll_started(meta.spawned_at(), epoch))
        .on_after_task_poll(move |_| after.poll_ended())
        .on_task_spawn(move |meta| spawn.count_task(meta.spawned_at(), 1))
        .on_task_terminate(move |meta| terminate.count_task(meta.spawned_at(), -1))
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Tables {
    fn poll_started(&self, location: &'static Location<'static>, epoch: Instant) {
        if self.runtime.get().is_none()
            && let Ok(handle) = Handle::try_current()
        {
            let _ = self.runtime.set(handle.id());
        }
        let Some(slot) = tokio::runtime::worker_index().and_then(|i| self.polls.get(i)) else {
            return;
        };
        slot.location
            .store(std::ptr::from_ref(location).cast_mut(), Relaxed);
        slot.started.store(nanos_since(epoch) + 1, Relaxed);
    }

    fn poll_ended(&self) {
        if let Some(slot) = tokio::runtime::worker_index().and_then(|i| self.polls.get(i)) {
            slot.started.store(0, Relaxed);
        }
    }

    /// Adds `delta` to the alive count of `location`'s slot, claiming a free
    /// slot for a new location (open addressing on the location's address).
    fn count_task(&self, location: &'static Location<'static>, delta: i64) {
        let key = std::ptr::from_ref(location).cast_mut();
        let start = (key as usize >> 4) % MAX_SITES;
        for probe in 0..MAX_SITES {
            let slot = &self.sites[(start + probe) % MAX_SITES];
            let current = slot.location.load(Relaxed);
            if current == key
                || (current.is_null()
                    && slot
                        .location
                        .compare_exchange(std::ptr::null_mut(), key, Relaxed, Relaxed)
                        .map_or_else(|found| found == key, |_| true))
            {
                slot.alive.fetch_add(delta, Relaxed);
                return;
            }
        }
    }
}

/// The tables of the hooked runtime `runtime`, if it is hooked.
fn tables_of(runtime: Id) -> Option<Arc<Tables>> {
    HOOKED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|t| t.runtime.get() == Some(&runtime))
        .cloned()
}

/// What the hooks say about one worker of a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poll {
    /// Between polls.
    Idle,
    /// In a poll since `since`, of a task spawned at `location`.
    Running {
        since: Instant,
        location: &'static Location<'static>,
    },
}

/// The hooks' view of `worker` of `runtime`, or `None` when the hooks do
/// not describe that runtime (not installed, or another runtime's).
pub(crate) fn poll_of(runtime: Id, worker: usize) -> Option<Poll> {
    let epoch = EPOCH.get()?;
    let tables = tables_of(runtime)?;
    let slot = tables.polls.get(worker)?;
    let started = slot.started.load(Relaxed);
    let location = slot.location.load(Relaxed);
    if started == 0 || location.is_null() {
        return Some(Poll::Idle);
    }
    // SAFETY: only `&'static Location` pointers are ever stored.
    let location: &'static Location<'static> = unsafe { &*location };
    Some(Poll::Running {
        since: *epoch + Duration::from_nanos(started - 1),
        location,
    })
}

/// The spawn locations with the most alive tasks, for the runtime the
/// hooks describe; empty when they describe none.
pub(crate) fn spawn_sites(runtime: Id) -> Vec<(String, u64)> {
    let Some(tables) = tables_of(runtime) else {
        return Vec::new();
    };
    let mut sites: Vec<(String, u64)> = tables
        .sites
        .iter()
        .filter_map(|slot| {
            let location = slot.location.load(Relaxed);
            let alive = u64::try_from(slot.alive.load(Relaxed))
                .ok()
                .filter(|&n| n > 0)?;
            // SAFETY: only `&'static Location` pointers are ever stored.
            let location: &'static Location<'static> = unsafe { location.as_ref()? };
            Some((location.to_string(), alive))
        })
        .collect();
    sites.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sites.truncate(TOP_SITES);
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_polls_and_counts_alive_tasks_by_spawn_site() {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        let runtime = install_task_hooks(builder.worker_threads(2).enable_all())
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let _waiters: Vec<_> = (0..5)
            .map(|_| runtime.spawn(std::future::pending::<()>()))
            .collect();
        let spinner = runtime.spawn(async move {
            let _ = tx.send(tokio::runtime::worker_index());
            std::thread::sleep(Duration::from_millis(300));
        });
        let worker = rx.recv().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let id = runtime.handle().id();
        match poll_of(id, worker) {
            Some(Poll::Running { since, location }) => {
                assert!(since.elapsed() >= Duration::from_millis(90));
                assert!(location.file().ends_with("hooks.rs"), "{location}");
            }
            other => panic!("expected a running poll, got {other:?}"),
        }
        runtime.block_on(spinner).unwrap();
        // The after-poll hook runs just after the task's output is handed
        // to its join handle: give it a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while poll_of(id, worker) != Some(Poll::Idle) {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                poll_of(id, worker)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let sites = spawn_sites(id);
        assert!(
            sites.iter().any(|(l, n)| l.contains("hooks.rs") && *n >= 5),
            "{sites:?}"
        );
    }
}
