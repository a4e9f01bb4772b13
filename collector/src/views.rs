//! The services view of the API, built from the state by pure functions.
//!
//! The types are `meshwatch-api`'s, the contract with the TUI and with
//! scripts; this module only fills them in.

use meshwatch_api::{
    AgeBucketView, Evidence, Headline, HeapSiteView, Incident, InstanceState, InstanceView,
    NamedCount, ProbeView, RuntimeView, ServicesView, SocketsView,
};
use meshwatch_proto::v1::{MemoryLimitSource, RuntimeStats, Snapshot, SocketStats};

use crate::registry::Instance;
use crate::state::State;

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
        watched_from_outside: instance.watched_from_outside,
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
                        worker_tids: r.worker.iter().map(|w| w.tid).collect(),
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
            .map(flag_of_service)
            .collect(),
        sockets: snapshot.and_then(|s| s.sockets.as_ref()).map(sockets_view),
        heap_sites: heap_sites_view(state, &instance.instance_id),
        ending: instance.ending,
        tokio_console: snapshot
            .map(|s| s.tokio_console.clone())
            .filter(|addr| !addr.is_empty()),
    }
}

/// An open incident as an instance of `/api/v1/services` carries it: its
/// own whole; one of its whole service without the evidence, which is the
/// service's (`/api/v1/incidents/{id}` has it). A service-wide incident's
/// evidence lists every instance (a crash loop's lives), so a copy in each
/// of N instances made the answer grow with N².
fn flag_of_service(incident: &Incident) -> Incident {
    if incident.instance.is_some() {
        return incident.clone();
    }
    Incident {
        evidence: Evidence::Other(serde_json::json!({
            "service_wide": format!("the evidence is the service's: /api/v1/incidents/{}", incident.id),
        })),
        ..incident.clone()
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
            live_bytes: site.live_bytes().round() as u64,
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
        listening: stats.listening.clone(),
    }
}

fn headline(snapshot: &Snapshot, cpu_percent: Option<f64>) -> Headline {
    let process = snapshot.process;
    let runtimes = &snapshot.runtimes;
    // No watched runtime (a non-tokio service) is "unknown", not 0.
    let runtime_sum = |figure: fn(&RuntimeStats) -> u64| {
        (!runtimes.is_empty()).then(|| runtimes.iter().map(figure).fold(0, u64::saturating_add))
    };
    Headline {
        cpu_percent,
        rss_bytes: process.map(|p| p.rss_bytes),
        virtual_bytes: process.map(|p| p.virtual_bytes),
        heap_live_bytes: snapshot.heap.filter(|h| h.tracked).map(|h| h.live_bytes),
        threads: process.map(|p| p.threads),
        tasks_alive: runtime_sum(|r| r.tasks_alive),
        workers: (!runtimes.is_empty()).then(|| {
            runtimes
                .iter()
                .map(|r| r.workers)
                .fold(0, u32::saturating_add)
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch_proto::v1::RuntimeStats;

    #[test]
    fn sums_of_a_probes_figures_saturate_rather_than_overflow() {
        let huge = RuntimeStats {
            tasks_alive: u64::MAX - 1,
            global_queue_depth: u64::MAX,
            workers: u32::MAX,
            ..RuntimeStats::default()
        };
        let snapshot = Snapshot {
            runtimes: vec![huge.clone(), huge],
            ..Snapshot::default()
        };
        let figures = headline(&snapshot, None);
        assert_eq!(figures.tasks_alive, Some(u64::MAX));
        assert_eq!(figures.global_queue_depth, Some(u64::MAX));
        assert_eq!(figures.workers, Some(u32::MAX));
        // No runtime is "unknown", not 0.
        assert_eq!(headline(&Snapshot::default(), None).tasks_alive, None);
    }
}
