//! The state shared by ingest, the periodic tick and the HTTP API.
//!
//! One mutex guards the registry, the series and the incidents together, so
//! a reader never sees an instance without its history. Every critical
//! section is short and does no I/O.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use meshwatch_proto::v1::{Event, Hello, Snapshot, event};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::Config;
use crate::detect::{Cut, DetectorSet, Pass, Stores};
use crate::heap_sites::HeapSiteStore;
use crate::incidents::IncidentBook;
use crate::long_history::LongHistory;
use crate::naming::Namer;
use crate::registry::{ConnId, InstanceState, Registry, RegistryLimits};
use crate::series::{Metric, Sample, SeriesStore};
use crate::store::{HistoryRow, Store};
use crate::stuck;

/// Down instances kept per service before the oldest are forgotten.
const MAX_DOWN_PER_SERVICE: usize = 20;
/// Down instances kept in all services together.
const MAX_DOWN: usize = 2000;
/// History rows waiting for the store: over a minute of 1,000 instances at
/// the default resolution, about 30 MiB at most. If the store fails for
/// longer, the oldest are dropped (and counted) rather than growing memory.
const MAX_PENDING_ROWS: usize = 100_000;

pub(crate) use meshwatch_api::now_ms;

/// Drops the oldest rows of `pending` beyond [`MAX_PENDING_ROWS`] and says
/// how many went.
fn drop_beyond_bound(pending: &mut VecDeque<HistoryRow>) -> u64 {
    let excess = pending.len().saturating_sub(MAX_PENDING_ROWS);
    pending.drain(..excess);
    excess as u64
}

/// How far behind the collector's clock a snapshot may be dated and keep
/// its time. A probe keeps up to 64 snapshots while the collector is away
/// (a minute at the default interval, longer at longer ones), and those
/// are late, not wrong; a snapshot older than this is from a clock that is
/// wrong, or from a buffer older than any detector's short windows.
const MAX_LAG_MS: i64 = 15 * 60 * 1000;

/// The time to store a snapshot at: the probe's, unless it is missing,
/// ahead of the collector's `now_ms` (a skewed or hostile clock would key
/// history in the future, where it is never pruned, and freeze the series
/// behind it), or more than [`MAX_LAG_MS`] behind it (history keyed in the
/// past, where the detectors' windows never see it); then `now_ms`, and
/// whether it was clamped.
fn sample_time(probe_ms: i64, now_ms: i64) -> (i64, bool) {
    match probe_ms {
        t if t <= 0 => (now_ms, false),
        t if t > now_ms || t < now_ms.saturating_sub(MAX_LAG_MS) => (now_ms, true),
        t => (t, false),
    }
}

/// The registry, the series and the incidents, kept consistent together.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) registry: Registry,
    pub(crate) series: SeriesStore,
    pub(crate) heap_sites: HeapSiteStore,
    /// The floors of the trend series over days, for the long windows.
    pub(crate) long: LongHistory,
    pub(crate) incidents: IncidentBook,
    /// Rows for the persistent history, written by the flusher task.
    pending_history: VecDeque<HistoryRow>,
    /// When each instance last had a row queued, for the store's resolution.
    last_stored_ms: std::collections::HashMap<String, i64>,
    history_resolution_ms: i64,
    /// History rows dropped because the store could not keep up; added to
    /// the collector's counter at the next flush.
    pub(crate) history_rows_overflowed: u64,
    /// The instances that report through OTLP instead of a probe.
    pub(crate) otlp: crate::otlp::Sessions,
}

/// Points kept per allocation site per window of the memory detector.
const SITE_POINTS_PER_WINDOW: u32 = 32;

impl State {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            registry: Registry::new(RegistryLimits {
                down_after_missed: config.down_after_missed,
                restarted_display_ms: i64::try_from(config.restarted_display.as_millis())
                    .unwrap_or(i64::MAX),
                max_down_per_service: MAX_DOWN_PER_SERVICE,
                max_down: MAX_DOWN,
                down_retention_ms: i64::try_from(config.down_retention.as_millis())
                    .unwrap_or(i64::MAX),
            }),
            series: SeriesStore::new(config.series_capacity),
            heap_sites: HeapSiteStore::new(
                i64::try_from((config.memory.window / SITE_POINTS_PER_WINDOW).as_millis())
                    .unwrap_or(i64::MAX),
            ),
            long: LongHistory::default(),
            incidents: IncidentBook::default(),
            pending_history: VecDeque::new(),
            last_stored_ms: std::collections::HashMap::new(),
            history_resolution_ms: i64::try_from(config.history_resolution.as_millis())
                .unwrap_or(i64::MAX),
            history_rows_overflowed: 0,
            otlp: crate::otlp::Sessions::default(),
        }
    }

    pub(crate) fn hello(&mut self, hello: &Hello, now_ms: i64) -> ConnId {
        self.registry.hello(hello, now_ms)
    }

    /// Updates the instance and appends to its history, at the probe's
    /// sampling time (the receive time when the probe sent none, or dated
    /// it ahead of `now_ms` or far behind). Returns whether its time was
    /// clamped.
    pub(crate) fn snapshot(
        &mut self,
        instance_id: &str,
        conn: ConnId,
        snapshot: Snapshot,
        now_ms: i64,
    ) -> bool {
        let (t_ms, clamped) = sample_time(snapshot.time_unix_ms, now_ms);
        let mut snapshot = snapshot;
        if snapshot.heap.is_none() {
            // A process watched from outside whose OTLP export says more.
            snapshot.heap = self.otlp.attached_heap(instance_id, now_ms);
        }
        if let Some(instance) = self.registry.snapshot(instance_id, conn, snapshot, now_ms)
            && let Some(snapshot) = &instance.last_snapshot
        {
            let sample = Sample {
                snapshot,
                cpu_percent: instance.cpu_percent,
            };
            self.series.record(instance_id, t_ms, &sample);
            self.long
                .record(instance_id, t_ms, |metric| metric.read(&sample));
            let due = self
                .last_stored_ms
                .get(instance_id)
                .is_none_or(|&last| t_ms - last >= self.history_resolution_ms);
            if due {
                self.last_stored_ms.insert(instance_id.to_owned(), t_ms);
                let row = HistoryRow {
                    service: instance.service.clone(),
                    instance: instance_id.to_owned(),
                    t_ms,
                    values: Metric::ALL
                        .iter()
                        .filter_map(|&m| m.read(&sample).map(|v| (m, v)))
                        .collect(),
                };
                self.pending_history.push_back(row);
                self.history_rows_overflowed += drop_beyond_bound(&mut self.pending_history);
            }
            self.heap_sites
                .record(instance_id, t_ms, &snapshot.heap_sites);
        }
        clamped
    }

    /// Hands the queued history rows to the flusher, with the count of rows
    /// dropped since the last call because the queue was full.
    pub(crate) fn take_history(&mut self) -> (Vec<HistoryRow>, u64) {
        (
            Vec::from(std::mem::take(&mut self.pending_history)),
            std::mem::take(&mut self.history_rows_overflowed),
        )
    }

    /// Puts back rows the store could not take (a full disk), ahead of the
    /// rows queued since, to be written when it recovers. The oldest go
    /// first (counted) once more than the queue's bound wait.
    pub(crate) fn requeue_history(&mut self, rows: Vec<HistoryRow>) {
        for row in rows.into_iter().rev() {
            self.pending_history.push_front(row);
        }
        self.history_rows_overflowed += drop_beyond_bound(&mut self.pending_history);
    }

    /// The rows waiting for the store.
    pub(crate) fn history_rows_waiting(&self) -> usize {
        self.pending_history.len()
    }

    /// Lets a probe's event open, refresh or resolve incidents. Events are
    /// not kept: what they say lives on in the incidents.
    pub(crate) fn event(&mut self, instance_id: &str, conn: ConnId, event: Event, now_ms: i64) {
        let Some(instance) = self.registry.heard_from(instance_id, conn, now_ms) else {
            return;
        };
        if let Some(event::Kind::StuckPoll(stuck)) = &event.kind {
            stuck::apply(
                &mut self.incidents,
                &instance.service,
                instance_id,
                stuck,
                now_ms,
            );
        }
    }

    pub(crate) fn disconnect(&mut self, instance_id: &str, conn: ConnId) {
        self.registry.disconnect(instance_id, conn);
        self.resolve_down(now_ms());
    }

    /// Forgets an instance and its history at once.
    pub(crate) fn forget(&mut self, instance_id: &str) {
        self.registry.forget(instance_id);
        self.drop_history(instance_id);
    }

    fn drop_history(&mut self, instance_id: &str) {
        self.series.remove(instance_id);
        self.last_stored_ms.remove(instance_id);
        self.heap_sites.remove(instance_id);
        self.long.remove(instance_id);
    }

    /// Applies the passage of time and drops the history of forgotten
    /// instances.
    pub(crate) fn tick(&mut self, now_ms: i64) {
        let forgotten = self.registry.tick(now_ms);
        // After the registry's tick, which marked them down for their
        // missed exports first.
        let missed = self.registry.down_after_missed();
        for (instance, conn) in self.otlp.expire(now_ms, missed) {
            self.registry.disconnect(&instance, conn);
        }
        for forgotten in forgotten {
            self.drop_history(&forgotten);
        }
        self.resolve_down(now_ms);
    }

    /// What `detectors` need to judge the next batch of services of
    /// `pass` now, copied out.
    pub(crate) fn cut(&self, detectors: &DetectorSet, now_ms: i64, pass: &mut Pass) -> Vec<Cut> {
        let stores = Stores {
            registry: &self.registry,
            series: &self.series,
            heap_sites: &self.heap_sites,
            long: &self.long,
        };
        detectors.cut(now_ms, stores, &self.incidents, pass)
    }

    /// An instance that is down (or forgotten) has no stuck poll any more.
    fn resolve_down(&mut self, now_ms: i64) {
        let registry = &self.registry;
        stuck::resolve_down(
            &mut self.incidents,
            |instance| {
                registry
                    .get(instance)
                    .is_none_or(|i| i.state == InstanceState::Down)
            },
            now_ms,
        );
    }
}

/// Why the collector refused a frame or a connection, as the `reason` label
/// of `meshwatch_collector_frames_rejected_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    pub(crate) reason: &'static str,
}

/// The collector's own health, exported on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct CollectorStats {
    /// Probe connections open now.
    pub(crate) connections: Gauge,
    /// Probe connections refused at the listener's limits (`max_connections`
    /// within the fd limit, or one address's share).
    pub(crate) connections_refused: Counter,
    /// HTTP connections refused at the HTTP API's limits.
    pub(crate) http_connections_refused: Counter,
    /// Frames or connections refused, by reason.
    pub(crate) frames_rejected: Family<RejectLabels, Counter>,
    /// History rows lost because the store failed or could not keep up.
    pub(crate) history_rows_dropped: Counter,
    /// History rows committed to the store.
    pub(crate) history_rows_written: Counter,
    /// History rows waiting for the store at the last flush: grows while
    /// the store is unavailable.
    pub(crate) history_rows_waiting: Gauge,
    /// 1 while the store takes writes, 0 from a failed write until it
    /// reopens and takes one again.
    pub(crate) history_store_up: Gauge,
    /// Snapshots dated ahead of the collector's clock or more than 15
    /// minutes behind it, stored at its now.
    pub(crate) snapshot_times_clamped: Counter,
    /// Texts and lists of probes' messages cut to the collector's bounds.
    pub(crate) fields_cut: Counter,
    /// The OTLP exporter's requests and drops.
    pub(crate) export: crate::export::ExportStats,
}

impl CollectorStats {
    pub(crate) fn reject(&self, reason: &'static str) {
        self.frames_rejected
            .get_or_create(&RejectLabels { reason })
            .inc();
    }
}

/// Everything the tasks of one collector share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// The persistent history; its calls block, so run them off the runtime.
    pub(crate) store: std::sync::Arc<Store>,
    pub(crate) stats: CollectorStats,
    /// Names the raw stacks probes send, off the lock and off the runtime.
    pub(crate) namer: Namer,
    /// Each connected probe's line for CPU profile requests.
    pub(crate) profiles: crate::profiles::ProfileDesk,
    /// When this collector started, in ms since the epoch: a probe whose
    /// process is older was there before, and its long view is refilled
    /// from the store.
    pub(crate) started_ms: i64,
    /// One refill of a long view from the store at a time.
    pub(crate) seeding: tokio::sync::Semaphore,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(config: Config, store: Store) -> Self {
        let stats = CollectorStats::default();
        stats.history_store_up.set(1);
        Self {
            state: Mutex::new(State::new(&config)),
            store: std::sync::Arc::new(store),
            stats,
            namer: Namer::start(config.debuginfo_dirs.clone()),
            profiles: crate::profiles::ProfileDesk::default(),
            started_ms: now_ms(),
            seeding: tokio::sync::Semaphore::new(1),
            config,
        }
    }

    /// Locks the state. A panic while it was held (a bug) does not take the
    /// collector down: the state is still consistent enough to serve.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probes_time_ahead_of_the_collector_or_far_behind_is_clamped_to_now() {
        assert_eq!(sample_time(1_000, 2_000), (1_000, false));
        assert_eq!(sample_time(0, 2_000), (2_000, false), "no time sent");
        let year = 365 * 24 * 3600 * 1000;
        assert_eq!(sample_time(2_000 + year, 2_000), (2_000, true));
        // Late from a buffer: kept; an hour behind: a wrong clock.
        let now = 10 * year;
        let minute = 60_000;
        assert_eq!(sample_time(now - minute, now), (now - minute, false));
        assert_eq!(
            sample_time(now - 15 * minute, now),
            (now - 15 * minute, false)
        );
        assert_eq!(sample_time(now - 60 * minute, now), (now, true));
    }
}
