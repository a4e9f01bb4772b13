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

use tokio::runtime::{Builder, Handle, Id, TaskMeta};

/// Workers whose polls are timed; more are ignored.
const MAX_WORKERS: usize = 256;
/// Distinct spawn locations counted; tasks spawned at further locations
/// are not counted.
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

/// A task hook of the service's own.
type ServiceHook = Box<dyn Fn(&TaskMeta<'_>) + Send + Sync>;

/// The probe's task hooks, with the service's own chained after them.
///
/// tokio keeps one hook of each kind per runtime builder, so the last one
/// set wins. A service with hooks of its own gives them here rather than
/// to the builder, and each runs right after the probe's:
///
/// ```ignore
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// meshwatch_probe::TaskHooks::new()
///     .on_task_spawn(|meta| tracing::trace!(id = %meta.id(), "spawned"))
///     .install(builder.enable_all())
///     .build()?
/// ```
#[derive(Default)]
pub struct TaskHooks {
    before_poll: Option<ServiceHook>,
    after_poll: Option<ServiceHook>,
    spawn: Option<ServiceHook>,
    terminate: Option<ServiceHook>,
}

impl std::fmt::Debug for TaskHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHooks")
            .field("before_poll", &self.before_poll.is_some())
            .field("after_poll", &self.after_poll.is_some())
            .field("spawn", &self.spawn.is_some())
            .field("terminate", &self.terminate.is_some())
            .finish()
    }
}

impl TaskHooks {
    /// The probe's hooks alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `hook` before each poll of a task, after the probe's.
    pub fn on_before_task_poll(
        mut self,
        hook: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.before_poll = Some(Box::new(hook));
        self
    }

    /// Runs `hook` after each poll of a task, after the probe's.
    pub fn on_after_task_poll(
        mut self,
        hook: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.after_poll = Some(Box::new(hook));
        self
    }

    /// Runs `hook` when a task is spawned, after the probe's.
    pub fn on_task_spawn(mut self, hook: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.spawn = Some(Box::new(hook));
        self
    }

    /// Runs `hook` when a task terminates, after the probe's.
    pub fn on_task_terminate(
        mut self,
        hook: impl Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.terminate = Some(Box::new(hook));
        self
    }

    /// Installs the hooks on a runtime builder. Call it before `build()`,
    /// and set no task hook on the builder after it.
    pub fn install(self, builder: &mut Builder) -> &mut Builder {
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
        let chain = |theirs: Option<ServiceHook>,
                     ours: Box<dyn Fn(&TaskMeta<'_>) + Send + Sync>| {
            move |meta: &TaskMeta<'_>| {
                ours(meta);
                if let Some(theirs) = &theirs {
                    theirs(meta);
                }
            }
        };
        let (before, after, spawn, terminate) =
            (tables.clone(), tables.clone(), tables.clone(), tables);
        builder
            .on_before_task_poll(chain(
                self.before_poll,
                Box::new(move |meta| before.poll_started(meta.spawned_at(), epoch)),
            ))
            .on_after_task_poll(chain(
                self.after_poll,
                Box::new(move |_| after.poll_ended()),
            ))
            .on_task_spawn(chain(
                self.spawn,
                Box::new(move |meta| spawn.count_task(meta.spawned_at(), 1)),
            ))
            .on_task_terminate(chain(
                self.terminate,
                Box::new(move |meta| terminate.count_task(meta.spawned_at(), -1)),
            ))
    }
}

/// Installs the probe's task hooks on a runtime builder, with no hooks of
/// the service's own (see [`TaskHooks`] to chain those). Call it before
/// `build()`:
///
/// ```ignore
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// meshwatch_probe::install_task_hooks(builder.enable_all()).build()?
/// ```
pub fn install_task_hooks(builder: &mut Builder) -> &mut Builder {
    TaskHooks::new().install(builder)
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
        let (release, released) = std::sync::mpsc::channel::<()>();
        let spinner = runtime.spawn(async move {
            let _ = tx.send(tokio::runtime::worker_index());
            // One long poll, until the test has seen it.
            let _ = released.recv();
        });
        let worker = rx.recv().unwrap().unwrap();
        let id = runtime.handle().id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match poll_of(id, worker) {
                Some(Poll::Running { since, location }) => {
                    assert!(location.file().ends_with("hooks.rs"), "{location}");
                    if since.elapsed() >= Duration::from_millis(50) {
                        break;
                    }
                }
                other => panic!("expected a running poll, got {other:?}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the poll's age never grew"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        release.send(()).unwrap();
        runtime.block_on(spinner).unwrap();
        // The after-poll hook runs just after the task's output is handed
        // to its join handle: wait for it.
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

    #[test]
    fn the_services_own_hooks_run_after_the_probes() {
        use std::sync::atomic::AtomicUsize;
        static SPAWNED: AtomicUsize = AtomicUsize::new(0);
        static TERMINATED: AtomicUsize = AtomicUsize::new(0);
        let mut builder = tokio::runtime::Builder::new_current_thread();
        let runtime = TaskHooks::new()
            .on_task_spawn(|_| {
                SPAWNED.fetch_add(1, Relaxed);
            })
            .on_task_terminate(|_| {
                TERMINATED.fetch_add(1, Relaxed);
            })
            .install(builder.enable_all())
            .build()
            .unwrap();
        let _waiting = runtime.spawn(std::future::pending::<()>());
        let task = runtime.spawn(async {});
        runtime.block_on(task).unwrap();
        assert_eq!(SPAWNED.load(Relaxed), 2, "the service's spawn hook ran");
        assert_eq!(TERMINATED.load(Relaxed), 1, "and its terminate hook");
        // And the probe's: the waiting task is alive at its spawn site.
        let sites = spawn_sites(runtime.handle().id());
        assert!(
            sites.iter().any(|(l, n)| l.contains("hooks.rs") && *n == 1),
            "{sites:?}"
        );
    }
}
