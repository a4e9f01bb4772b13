//! The JSON shapes of the API, built from the state by pure functions.
//!
//! They are the contract with the TUI and with scripts: field names are
//! snake_case, times are `_ms` since the Unix epoch, and a figure the
//! collector does not know is `null` rather than a misleading 0.

use meshwatch_proto::v1::{MemoryLimitSource, RuntimeStats, Snapshot, SocketStats};
use serde::{Deserialize, Serialize};

use crate::heap_sites::SiteFrame;
use crate::incidents::Incident;
use crate::registry::{Instance, InstanceState, ThreadCpu};
use crate::state::State;

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
    pub open_incidents: Vec<Incident>,
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
}

/// One allocation site of an instance, as its last snapshot reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeapSiteView {
    /// The probe's id for the site, in hex.
    pub site: String,
    /// The first function of the service's own code on the stack.
    pub function: Option<String>,
    /// Estimated bytes live at the site.
    pub live_bytes: f64,
    /// Estimated live allocations.
    pub live_objects: u64,
    /// The stack, innermost first (at most a dozen frames).
    pub frames: Vec<SiteFrame>,
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

/// Every instance, in the registry's order (service, then start time).
pub(crate) fn services(state: &State, now_ms: i64) -> ServicesView {
    let services = state
        .registry
        .sorted()
        .into_iter()
        .map(|instance| instance_view(state, instance, now_ms))
        .collect();
    ServicesView { services }
}

fn instance_view(state: &State, instance: &Instance, now_ms: i64) -> InstanceView {
    let snapshot = instance.last_snapshot.as_ref();
    InstanceView {
        service: instance.service.clone(),
        instance_id: instance.instance_id.clone(),
        pid: instance.pid,
        host: instance.host.clone(),
        runtime: instance.runtime.clone(),
        probe_version: instance.probe_version.clone(),
        state: instance.state,
        started_at_ms: instance.started_at_ms(),
        last_seen_ms: instance.last_seen_ms,
        uptime_seconds: instance.uptime_seconds(now_ms),
        restarts: instance.restarts,
        interval_ms: instance.effective_interval_ms(),
        headline: snapshot.map(|s| headline(s, instance.cpu_percent)),
        runtimes: snapshot
            .map(|s| {
                s.runtimes
                    .iter()
                    .map(|r| RuntimeView {
                        runtime_id: r.runtime_id,
                        flavor: r.flavor.clone(),
                        workers: r.workers,
                        tasks_alive: r.tasks_alive,
                        global_queue_depth: r.global_queue_depth,
                        spawn_sites: r
                            .spawn_sites
                            .iter()
                            .map(|site| NamedCount {
                                name: site.location.clone(),
                                count: u32::try_from(site.alive).unwrap_or(u32::MAX),
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        threads: instance.thread_cpu.clone(),
        probe: snapshot.and_then(|s| s.probe).map(|p| ProbeView {
            snapshots_dropped_total: p.snapshots_dropped_total,
            events_dropped_total: p.events_dropped_total,
            connects_total: p.connects_total,
            sample_duration_ns: p.sample_duration_ns,
            sample_errors_total: p.sample_errors_total,
        }),
        open_incidents: state
            .incidents
            .open_for_instance(
                &instance.service,
                &instance.instance_id,
                instance.state != InstanceState::Down,
            )
            .into_iter()
            .cloned()
            .collect(),
        sockets: snapshot.and_then(|s| s.sockets.as_ref()).map(sockets_view),
        heap_sites: heap_sites_view(state, &instance.instance_id),
    }
}

/// Sites shown per instance, and frames per site.
const SITES_SHOWN: usize = 10;
const SITE_FRAMES: usize = 12;

fn heap_sites_view(state: &State, instance_id: &str) -> Vec<HeapSiteView> {
    let mut sites: Vec<_> = state.heap_sites.sites(instance_id).collect();
    sites.sort_by(|a, b| b.live_bytes().total_cmp(&a.live_bytes()));
    sites
        .into_iter()
        .take(SITES_SHOWN)
        .map(|site| HeapSiteView {
            site: format!("{:016x}", site.id),
            function: site.own_function().map(str::to_owned),
            live_bytes: site.live_bytes(),
            live_objects: site.live_objects,
            frames: site.frames.iter().take(SITE_FRAMES).cloned().collect(),
        })
        .collect()
}

fn sockets_view(stats: &SocketStats) -> SocketsView {
    let named = |name: String, count: u32| NamedCount { name, count };
    SocketsView {
        total: stats.total,
        by_state: stats
            .by_state
            .iter()
            .map(|c| named(c.state.clone(), c.count))
            .collect(),
        by_listen_port: stats
            .by_listen_port
            .iter()
            .map(|c| named(c.port.to_string(), c.count))
            .collect(),
        top_peers: stats
            .top_peers
            .iter()
            .map(|c| named(c.address.clone(), c.count))
            .collect(),
        ages: stats
            .ages
            .iter()
            .map(|b| AgeBucketView {
                le_seconds: (b.le_seconds > 0).then_some(b.le_seconds),
                count: b.count,
            })
            .collect(),
        rx_queue_bytes: stats.rx_queue_bytes,
        tx_queue_bytes: stats.tx_queue_bytes,
        scan_duration_ns: stats.scan_duration_ns,
    }
}

fn headline(snapshot: &Snapshot, cpu_percent: Option<f64>) -> Headline {
    let process = snapshot.process;
    let runtimes = &snapshot.runtimes;
    // No watched runtime (a non-tokio service) is "unknown", not 0.
    let runtime_sum = |figure: fn(&RuntimeStats) -> u64| {
        (!runtimes.is_empty()).then(|| runtimes.iter().map(figure).sum::<u64>())
    };
    Headline {
        cpu_percent,
        rss_bytes: process.map(|p| p.rss_bytes),
        virtual_bytes: process.map(|p| p.virtual_bytes),
        heap_live_bytes: snapshot.heap.filter(|h| h.tracked).map(|h| h.live_bytes),
        threads: process.map(|p| p.threads),
        tasks_alive: runtime_sum(|r| r.tasks_alive),
        workers: (!runtimes.is_empty()).then(|| runtimes.iter().map(|r| r.workers).sum()),
        global_queue_depth: runtime_sum(|r| r.global_queue_depth),
        fds_open: process.map(|p| p.fds_open),
        fds_limit: process.map(|p| p.fds_limit),
        memory_limit_bytes: process.map(|p| p.memory_limit_bytes),
        memory_limit_source: process
            .and_then(|p| match p.memory_limit_source() {
                MemoryLimitSource::Cgroup => Some("cgroup"),
                MemoryLimitSource::Host => Some("host"),
                MemoryLimitSource::Unspecified => None,
            })
            .map(str::to_owned),
        tcp_established: snapshot.sockets.as_ref().map(|t| t.established),
        tcp_close_wait: snapshot.sockets.as_ref().map(|t| t.close_wait),
    }
}
