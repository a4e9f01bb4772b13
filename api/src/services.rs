//! `GET /api/v1/services`: the instances of the mesh and their figures.

use serde::{Deserialize, Serialize};

use crate::Incident;

/// Whether an instance is alive, as shown to people and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Connected and sending snapshots on time.
    Up,
    /// Its connection closed, or it missed too many snapshots.
    Down,
    /// Up, and a recent replacement of a dead instance of its service.
    Restarted,
    /// A state this client does not know, from a newer collector.
    #[serde(other)]
    Unknown,
}

impl InstanceState {
    /// The lowercase name used in the API: `up`, `down`, `restarted`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Up => "up",
            InstanceState::Down => "down",
            InstanceState::Restarted => "restarted",
            InstanceState::Unknown => "unknown",
        }
    }
}

/// One named frame of a stack: an allocation site's or a stuck poll's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Frame {
    /// The demangled function; `module+0xoffset` when it could not be named.
    pub function: String,
    /// The source file, empty when unknown.
    pub file: String,
    /// The line, 0 when unknown.
    pub line: u32,
}

impl Frame {
    /// Whether the frame is the service's own code, not a library's, the
    /// runtime's or the standard library's ([`crate::own_code`]).
    pub fn is_own_code(&self) -> bool {
        crate::own_code::is_own_code(&self.function, &self.file)
    }
}

/// One thread's CPU use between the last two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadCpu {
    /// The OS thread id.
    pub tid: u32,
    /// The thread's name, e.g. `tokio-rt-worker`.
    pub name: String,
    /// Percent of one core; `None` when the thread is new since the previous
    /// snapshot or on the first snapshot.
    pub cpu_percent: Option<f64>,
}

/// `GET /api/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicesView {
    /// Every instance, sorted by service, then start time.
    pub services: Vec<InstanceView>,
}

/// One instance in the services list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The service's name, shared by its instances.
    pub service: String,
    /// Random per process start.
    pub instance_id: String,
    /// The process id on its host.
    pub pid: u32,
    /// The host the instance runs on.
    pub host: String,
    /// The probe's language or runtime: `rust`, `node`, `python`.
    pub runtime: String,
    /// The probe library's version.
    pub probe_version: String,
    /// Watched from outside by the collector (`--watch`), not by a probe
    /// linked into it: no runtime, heap or stuck-poll figures.
    #[serde(default)]
    pub watched_from_outside: bool,
    /// `up`, `down` or `restarted`.
    pub state: InstanceState,
    /// When the process started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// When the collector last heard from it.
    pub last_seen_ms: i64,
    /// Seconds since the process started; frozen once down.
    pub uptime_seconds: u64,
    /// How many times its service restarted before this instance.
    pub restarts: u32,
    /// The probe's snapshot interval.
    pub interval_ms: u32,
    /// The latest snapshot's headline figures; `null` before the first one.
    pub headline: Option<Headline>,
    /// One entry per watched tokio runtime.
    pub runtimes: Vec<RuntimeView>,
    /// Per-thread CPU between the last two snapshots.
    pub threads: Vec<ThreadCpu>,
    /// The probe's own health: drops, connects, sampling cost.
    pub probe: Option<ProbeView>,
    /// The TCP sockets of the process; `null` when the probe sends none.
    pub sockets: Option<SocketsView>,
    /// The allocation sites holding the most sampled live memory, largest
    /// first; empty without the tracking allocator's heap sampling.
    #[serde(default)]
    pub heap_sites: Vec<HeapSiteView>,
    /// Incidents open on this instance.
    #[serde(deserialize_with = "crate::incident::lenient_list")]
    pub open_incidents: Vec<Incident>,
    /// How it went down, while down: `stopped` (its probe said goodbye),
    /// `disconnected` or `missed_heartbeats`; `null` while up.
    #[serde(default)]
    pub ending: Option<crate::evidence::Ending>,
    /// Where the process serves tokio-console (it runs console-subscriber),
    /// `ip:port`; `null` when it does not.
    #[serde(default)]
    pub tokio_console: Option<String>,
}

/// The figures a person looks at first, from the latest snapshot. Counts
/// and sizes are integers; a figure the snapshot lacks is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    /// CPU use between the last two snapshots, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Virtual memory.
    pub virtual_bytes: Option<u64>,
    /// Live bytes of the tracking allocator; `null` when not installed.
    pub heap_live_bytes: Option<u64>,
    /// OS threads of the process.
    pub threads: Option<u32>,
    /// Alive tasks, summed over watched runtimes.
    pub tasks_alive: Option<u64>,
    /// Runtime worker threads, summed over watched runtimes.
    pub workers: Option<u32>,
    /// Tasks waiting in the runtimes' global queues.
    pub global_queue_depth: Option<u64>,
    /// Open file descriptors.
    pub fds_open: Option<u64>,
    /// The soft RLIMIT_NOFILE; 0 when unlimited.
    pub fds_limit: Option<u64>,
    /// The memory the process may use before it is killed.
    pub memory_limit_bytes: Option<u64>,
    /// Where the limit comes from: `cgroup` or `host`.
    pub memory_limit_source: Option<String>,
    /// TCP connections in ESTABLISHED.
    pub tcp_established: Option<u32>,
    /// TCP sockets in CLOSE_WAIT: peers hung up, the process did not close.
    pub tcp_close_wait: Option<u32>,
}

/// The process's TCP sockets: by state, by listening port, by peer, by age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketsView {
    /// TCP sockets in every state.
    pub total: u32,
    /// `{state, count}` for every state with a socket, most first.
    pub by_state: Vec<NamedCount>,
    /// `{name: port, count}` of connections per local listening port.
    pub by_listen_port: Vec<NamedCount>,
    /// `{name: address, count}` of the remote hosts with most connections.
    pub top_peers: Vec<NamedCount>,
    /// Connection ages: `{le_seconds, count}`, the last bucket's bound `null`.
    pub ages: Vec<AgeBucketView>,
    /// Bytes waiting in receive queues.
    pub rx_queue_bytes: u64,
    /// Bytes waiting in send queues.
    pub tx_queue_bytes: u64,
    /// How long the probe's scan took.
    pub scan_duration_ns: u64,
    /// The local addresses the process listens on (`ip:port`), sorted.
    #[serde(default)]
    pub listening: Vec<String>,
}

/// One allocation site of an instance, as its last snapshot reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeapSiteView {
    /// The probe's id for the site, in hex.
    pub site: String,
    /// The first function of the service's own code on the stack.
    pub function: Option<String>,
    /// Estimated bytes live at the site.
    pub live_bytes: u64,
    /// Estimated live allocations.
    pub live_objects: u64,
    /// The stack, innermost first (at most a dozen frames).
    pub frames: Vec<Frame>,
}

/// A count under a name: a TCP state, a port, a peer address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedCount {
    /// What is counted.
    pub name: String,
    /// How many.
    pub count: u32,
}

/// Connections younger than `le_seconds` (and at least the previous bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeBucketView {
    /// The bucket's upper bound in seconds; `null` for the oldest bucket.
    pub le_seconds: Option<u64>,
    /// Connections in the bucket.
    pub count: u32,
}

/// One watched tokio runtime of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeView {
    /// Distinguishes runtimes within one process.
    pub runtime_id: u32,
    /// `multi_thread` or `current_thread`.
    pub flavor: String,
    /// Worker threads.
    pub workers: u32,
    /// Tasks spawned and not yet completed.
    pub tasks_alive: u64,
    /// Tasks waiting in the global queue.
    pub global_queue_depth: u64,
    /// Alive tasks by spawn location (`name`), most first; only for
    /// runtimes with the probe's task hooks (`--cfg tokio_unstable`).
    #[serde(default)]
    pub spawn_sites: Vec<NamedCount>,
    /// The OS thread each worker last ran on, by worker index; 0 until the
    /// probe has found it.
    #[serde(default)]
    pub worker_tids: Vec<u32>,
}

/// The probe's own health, so its gaps are visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeView {
    /// Snapshots the probe dropped while it could not send them.
    pub snapshots_dropped_total: u64,
    /// Events the probe dropped for the same reason.
    pub events_dropped_total: u64,
    /// Connections the probe made to the collector.
    pub connects_total: u64,
    /// How long the probe's last sampling pass took.
    pub sample_duration_ns: u64,
    /// Sources the probe failed to read, since it started.
    pub sample_errors_total: u64,
}
