//! Names the stacks probes send, so that services never load debug info.
//!
//! Probes send raw addresses (allocation sites' stacks in snapshots, stack
//! samples in stuck-poll events) with the objects they fall in
//! ([`locate`] finds the files, [`resolve`] reads them). Ingest hands each
//! such message to [`Namer`] before it takes the state's lock; naming runs on
//! one `meshwatch-namer` thread, because blazesym's symbolizer is not
//! `Send` and the first lookup in a binary parses its DWARF, which must not
//! stall the async runtime. The named message then looks exactly as if the
//! probe had named it: `HeapSite.frames` trimmed of the allocator's frames,
//! and `StuckPoll.frames`, `hot_frames` and the samples' part of the caveat.
//!
//! While a message waits for its names, ingest keeps its instance alive, so
//! a first parse of a large debug build does not make it look down. When the
//! thread is behind or takes longer than [`NAMING_TIMEOUT`], the frames say
//! module and offset instead; the names come from the cache with the next
//! message that carries the stack (a stuck poll's next event; a heap site's
//! next resend), and a heap site keeps any names it already had.
//!
//! What one message may ask is bounded ([`MAX_MODULES`], [`MAX_STACKS`],
//! [`MAX_DEPTH`]): past those, modules, stacks and frames are cut, so that a
//! probe cannot make naming one message cost more than a real one does.

mod locate;
mod resolve;

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

use meshwatch_proto::v1::{Frame, Module, ProfileStack, Snapshot, StuckPoll};
use tokio::sync::oneshot;

use resolve::{AddressKind, Resolver, unnamed_stack};
pub(crate) use resolve::{frame, is_unnamed, symbolizer};

/// Messages waiting to be named; past this, frames go out unnamed.
const QUEUE: usize = 64;
/// How long a message waits for its names: a first parse of a large debug
/// build takes seconds.
const NAMING_TIMEOUT: Duration = Duration::from_secs(30);
/// Modules considered per message: a real process's stacks touch a few.
const MAX_MODULES: usize = 256;
/// Stacks named per message: a snapshot's heap sites, or a stuck poll's
/// samples.
const MAX_STACKS: usize = 64;
/// Stacks named of one CPU profile, as many as a probe sends.
const MAX_PROFILE_STACKS: usize = 10_000;
/// Addresses named per stack.
const MAX_DEPTH: usize = 256;

/// One message's stacks, to name with its modules.
struct Job {
    pid: u32,
    modules: Vec<Module>,
    stacks: Vec<(Vec<u64>, AddressKind)>,
    reply: oneshot::Sender<Vec<Vec<Frame>>>,
}

/// The ingest side of the naming thread. Cloning shares the thread.
#[derive(Debug, Clone)]
pub(crate) struct Namer {
    jobs: Option<SyncSender<Job>>,
}

impl Namer {
    /// Starts the naming thread, which looks for debug info in
    /// `debuginfo_dirs` before the modules' own paths. If the OS refuses
    /// the thread, frames are shown as module and offset.
    pub(crate) fn start(debuginfo_dirs: Vec<PathBuf>) -> Self {
        let (jobs, incoming) = mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("meshwatch-namer".to_owned())
            .spawn(move || serve(&incoming, &debuginfo_dirs));
        match spawned {
            Ok(_) => Self { jobs: Some(jobs) },
            Err(error) => {
                tracing::warn!(%error, "cannot start the naming thread; stacks will show module and offset");
                Self { jobs: None }
            }
        }
    }

    /// Names the allocation sites' stacks of a snapshot from process `pid`.
    pub(crate) async fn snapshot(&self, pid: u32, snapshot: &mut Snapshot) {
        let modules = std::mem::take(&mut snapshot.modules);
        let with_stacks: Vec<usize> = (0..snapshot.heap_sites.len())
            .filter(|&i| snapshot.heap_sites[i].stack.is_some())
            .collect();
        if with_stacks.is_empty() {
            return;
        }
        let stacks = with_stacks
            .iter()
            .filter_map(|&i| snapshot.heap_sites[i].stack.take())
            .map(|raw| (raw.addresses, AddressKind::Return))
            .collect();
        let named = self.name(pid, modules, stacks, MAX_STACKS).await;
        for (i, frames) in with_stacks.into_iter().zip(named) {
            snapshot.heap_sites[i].frames = crate::heap_sites::allocating_frames(frames);
        }
    }

    /// Names a stuck poll's stack samples from process `pid` and derives
    /// its frames, hot leaves and the samples' part of the caveat.
    pub(crate) async fn stuck_poll(&self, pid: u32, stuck: &mut StuckPoll) {
        let modules = std::mem::take(&mut stuck.modules);
        let samples = std::mem::take(&mut stuck.samples);
        if samples.is_empty() {
            return;
        }
        let stacks = samples
            .into_iter()
            .map(|raw| (raw.addresses, AddressKind::Exact))
            .collect();
        let named = self.name(pid, modules, stacks, MAX_STACKS).await;
        crate::stuck_samples::add_evidence(stuck, &named);
    }

    /// Names a CPU profile's stacks from process `pid`, in their order.
    pub(crate) async fn profile(
        &self,
        pid: u32,
        modules: Vec<Module>,
        stacks: &mut [ProfileStack],
    ) -> Vec<Vec<Frame>> {
        let raw = stacks
            .iter_mut()
            .map(|s| {
                let addrs = s.stack.take().map(|r| r.addresses).unwrap_or_default();
                (addrs, AddressKind::Exact)
            })
            .collect();
        self.name(pid, modules, raw, MAX_PROFILE_STACKS).await
    }

    async fn name(
        &self,
        pid: u32,
        mut modules: Vec<Module>,
        mut stacks: Vec<(Vec<u64>, AddressKind)>,
        max_stacks: usize,
    ) -> Vec<Vec<Frame>> {
        modules.truncate(MAX_MODULES);
        stacks.truncate(max_stacks);
        for (addrs, _) in &mut stacks {
            addrs.truncate(MAX_DEPTH);
        }
        let unnamed = |modules: &[Module], stacks: &[(Vec<u64>, AddressKind)]| {
            stacks
                .iter()
                .map(|(addrs, _)| unnamed_stack(modules, addrs))
                .collect()
        };
        let Some(jobs) = &self.jobs else {
            return unnamed(&modules, &stacks);
        };
        let (reply, answer) = oneshot::channel();
        // A copy stays here, to fall back on if the names are late.
        let job = Job {
            pid,
            modules: modules.clone(),
            stacks: stacks.clone(),
            reply,
        };
        if jobs.try_send(job).is_err() {
            tracing::debug!("the naming thread is behind; frames go out as module+offset");
            return unnamed(&modules, &stacks);
        }
        match tokio::time::timeout(NAMING_TIMEOUT, answer).await {
            Ok(Ok(named)) => named,
            // Still parsing a large binary, or the thread is gone.
            _ => unnamed(&modules, &stacks),
        }
    }
}

/// The naming thread: answers jobs until every sender is gone. A job that
/// panics (a bug, or a file that trips the parser) is answered with module
/// and offset, and the thread starts afresh with empty caches.
fn serve(incoming: &Receiver<Job>, debuginfo_dirs: &[PathBuf]) {
    let mut resolver = Resolver::new(debuginfo_dirs.to_vec());
    while let Ok(job) = incoming.recv() {
        let named = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.stacks
                .iter()
                .map(|(addrs, kind)| resolver.stack(job.pid, &job.modules, addrs, *kind))
                .collect::<Vec<_>>()
        }));
        let named = named.unwrap_or_else(|_| {
            tracing::warn!(
                pid = job.pid,
                "naming a stack panicked; those frames show module and offset"
            );
            resolver = Resolver::new(debuginfo_dirs.to_vec());
            job.stacks
                .iter()
                .map(|(addrs, _)| unnamed_stack(&job.modules, addrs))
                .collect()
        });
        // The message may have stopped waiting; its names are cached anyway.
        let _ = job.reply.send(named);
    }
}
