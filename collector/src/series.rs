//! Bounded in-memory history: one ring of `(t_ms, value)` points per instance
//! and metric.
//!
//! Every metric the collector keeps is one line of the [`Metric`] table: its
//! name (snake_case with its unit, the same in the store, the JSON API and,
//! prefixed `meshwatch_`, in `/metrics`), whether it is a gauge or a counter,
//! its help text, and how to read it from a [`Sample`]. The store
//! itself is generic over that table, so adding a metric touches nothing else.
//!
//! Memory is bounded by construction: each ring holds at most the configured
//! capacity, and an instance's rings go when the registry forgets it.

use std::collections::{HashMap, VecDeque};

use meshwatch_proto::v1::Snapshot;

/// What the collector knows at one instant about one instance: the snapshot
/// as received plus the figures derived from it and its predecessor.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The snapshot as the probe sent it.
    pub snapshot: &'a Snapshot,
    /// Process CPU use since the previous snapshot, in percent of one core;
    /// `None` for the first snapshot of an instance.
    pub cpu_percent: Option<f64>,
}

/// How a metric behaves over time, which decides its Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A level that goes up and down.
    Gauge,
    /// A running total that only grows while the process lives.
    Counter,
}

macro_rules! metrics {
    ($( $variant:ident => $name:literal, $kind:ident, $help:literal, $read:expr; )*) => {
        /// A series the collector keeps for every instance.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Metric {
            $(
                #[doc = $help]
                $variant,
            )*
        }

        impl Metric {
            /// Every metric, in the order of the table: the order of `/metrics`.
            pub const ALL: &[Metric] = &[$(Metric::$variant),*];

            /// The name used by the store, the API and (prefixed) Prometheus.
            pub fn name(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* }
            }

            /// A sentence saying what the series measures, for `/metrics` HELP.
            pub fn help(self) -> &'static str {
                match self { $(Metric::$variant => $help,)* }
            }

            /// Gauge or counter, for the Prometheus type.
            pub fn kind(self) -> MetricKind {
                match self { $(Metric::$variant => MetricKind::$kind,)* }
            }

            /// The value of this metric in `sample`, `None` when the sample
            /// does not carry it (no heap tracking, first snapshot for rates).
            pub fn read(self, sample: &Sample<'_>) -> Option<f64> {
                let read: fn(&Sample<'_>) -> Option<f64> = match self { $(Metric::$variant => $read,)* };
                read(sample)
            }
        }
    };
}

// Counts are exported as f64 because every series stores f64; u64 counts
// above 2^53 lose precision, far beyond any real process.
metrics! {
    RssBytes => "rss_bytes", Gauge, "Resident set size of the process.",
        |s| s.snapshot.process.map(|p| p.rss_bytes as f64);
    VirtualBytes => "virtual_bytes", Gauge, "Virtual memory size of the process.",
        |s| s.snapshot.process.map(|p| p.virtual_bytes as f64);
    HeapLiveBytes => "heap_live_bytes", Gauge, "Bytes live in the probe's tracking allocator (only when the service installed it).",
        |s| s.snapshot.heap.filter(|h| h.tracked).map(|h| h.live_bytes as f64);
    HeapLimitBytes => "heap_limit_bytes", Gauge, "The heap's own limit, when the runtime has one (V8's heap limit, from OpenTelemetry).",
        |s| s.snapshot.heap.filter(|h| h.tracked && h.limit_bytes > 0).map(|h| h.limit_bytes as f64);
    HeapAllocatedBytesTotal => "heap_allocated_bytes_total", Counter, "Bytes allocated through the probe's tracking allocator since the process started.",
        |s| s.snapshot.heap.filter(|h| h.tracked).map(|h| h.allocated_bytes_total as f64);
    HeapSamplesDroppedTotal => "heap_samples_dropped_total", Counter, "Heap samples the probe could not record because its fixed-size tables were full.",
        |s| s.snapshot.heap.filter(|h| h.tracked).map(|h| h.samples_dropped_total as f64);
    CpuSecondsTotal => "cpu_seconds_total", Counter, "User plus system CPU time of the process since it started.",
        |s| s.snapshot.process.map(|p| p.cpu_seconds_total);
    CpuPercent => "cpu_percent", Gauge, "Process CPU use between the last two snapshots, in percent of one core.",
        |s| s.cpu_percent;
    Threads => "threads", Gauge, "OS threads of the process.",
        |s| s.snapshot.process.map(|p| f64::from(p.threads));
    TasksAlive => "tasks_alive", Gauge, "Alive tokio tasks, summed over the watched runtimes.",
        |s| runtimes_sum(s, |r| r.tasks_alive as f64);
    Workers => "workers", Gauge, "Worker threads, summed over the watched runtimes.",
        |s| runtimes_sum(s, |r| f64::from(r.workers));
    GlobalQueueDepth => "global_queue_depth", Gauge, "Tasks waiting in the runtimes' global queues.",
        |s| runtimes_sum(s, |r| r.global_queue_depth as f64);
    FdsOpen => "fds_open", Gauge, "Open file descriptors of the process.",
        |s| s.snapshot.process.map(|p| p.fds_open as f64);
    FdsLimit => "fds_limit", Gauge, "The soft limit on open file descriptors; 0 when unlimited.",
        |s| s.snapshot.process.map(|p| p.fds_limit as f64);
    TcpSockets => "tcp_sockets", Gauge, "TCP sockets held by the process, in every state.",
        |s| s.snapshot.sockets.as_ref().map(|t| f64::from(t.total));
    TcpEstablished => "tcp_established", Gauge, "TCP connections of the process in ESTABLISHED.",
        |s| s.snapshot.sockets.as_ref().map(|t| f64::from(t.established));
    TcpCloseWait => "tcp_close_wait", Gauge, "TCP sockets in CLOSE_WAIT: the peer hung up and the process has not closed its side.",
        |s| s.snapshot.sockets.as_ref().map(|t| f64::from(t.close_wait));
    TcpTimeWait => "tcp_time_wait", Gauge, "TCP sockets of the process in TIME_WAIT.",
        |s| s.snapshot.sockets.as_ref().map(|t| f64::from(t.time_wait));
    MemoryLimitBytes => "memory_limit_bytes", Gauge, "Memory the process may use before it is killed: the cgroup limit, else host memory.",
        |s| s.snapshot.process.map(|p| p.memory_limit_bytes as f64);
    ProbeSnapshotsDroppedTotal => "probe_snapshots_dropped_total", Counter, "Snapshots the probe dropped because the collector was away.",
        |s| s.snapshot.probe.map(|p| p.snapshots_dropped_total as f64);
    ProbeEventsDroppedTotal => "probe_events_dropped_total", Counter, "Events the probe dropped because the collector was away.",
        |s| s.snapshot.probe.map(|p| p.events_dropped_total as f64);
}

/// The sum of one runtime figure over all watched runtimes; `None` when the
/// probe watches no runtime (a non-tokio service), rather than a false 0.
fn runtimes_sum(
    sample: &Sample<'_>,
    figure: fn(&meshwatch_proto::v1::RuntimeStats) -> f64,
) -> Option<f64> {
    let runtimes = &sample.snapshot.runtimes;
    (!runtimes.is_empty()).then(|| runtimes.iter().map(figure).sum())
}

impl Metric {
    /// The metric called `name`, as written in the API and the store.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// Every metric name, comma-separated, for error messages that tell the
    /// user what they could have asked for.
    pub fn names() -> String {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.join(", ")
    }

    fn index(self) -> usize {
        // The enum is fieldless and declared in the order of ALL.
        self as usize
    }
}

/// One point of a series: `(t_ms, value)`, as the API writes it.
pub use meshwatch_api::Point;

/// One instance's history: a ring of sample times and, aligned with it, a
/// column of values per metric, at most `capacity` samples, oldest first.
///
/// Columns rather than a `(time, value)` ring per metric: every metric of a
/// sample shares its time, so storing it once and the values as `f32`
/// takes 4 bytes a value instead of 16, which is what keeps 1,000 probes'
/// fifteen minutes in memory under the collector's budget. `f32` keeps 7
/// significant digits: a byte count of 1 GiB is exact to 64 bytes. A metric
/// a sample lacks is `NaN` in its column and skipped when read.
#[derive(Debug, Clone)]
struct History {
    times: VecDeque<i64>,
    columns: Vec<VecDeque<f32>>,
}

impl History {
    fn new() -> Self {
        Self {
            times: VecDeque::new(),
            columns: vec![VecDeque::new(); Metric::ALL.len()],
        }
    }

    fn push(&mut self, capacity: usize, t_ms: i64, value: impl Fn(Metric) -> Option<f64>) {
        // Samples out of order (a probe's clock stepping back) would break
        // range queries; they are dropped rather than reordered.
        if self.times.back().is_some_and(|&t| t_ms < t) {
            return;
        }
        if self.times.len() >= capacity {
            self.times.pop_front();
            for column in &mut self.columns {
                column.pop_front();
            }
        }
        self.times.push_back(t_ms);
        for (&metric, column) in Metric::ALL.iter().zip(&mut self.columns) {
            column.push_back(value(metric).map_or(f32::NAN, |v| v as f32));
        }
    }

    fn range(&self, metric: Metric, from_ms: Option<i64>, to_ms: Option<i64>) -> Vec<Point> {
        self.times
            .iter()
            .zip(&self.columns[metric.index()])
            .filter(|&(&t, v)| {
                !v.is_nan()
                    && from_ms.is_none_or(|from| t >= from)
                    && to_ms.is_none_or(|to| t <= to)
            })
            .map(|(&t, &v)| (t, f64::from(v)))
            .collect()
    }
}

/// The history of every instance, keyed by instance id, bounded per series.
#[derive(Debug)]
pub struct SeriesStore {
    capacity: usize,
    by_instance: HashMap<String, History>,
}

impl SeriesStore {
    /// A store keeping at most `capacity` points per series (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_instance: HashMap::new(),
        }
    }

    /// Records every metric `sample` carries, at `t_ms`.
    pub fn record(&mut self, instance_id: &str, t_ms: i64, sample: &Sample<'_>) {
        self.record_values(instance_id, t_ms, |metric| metric.read(sample));
    }

    /// Records the metrics `value` gives, at `t_ms`: a sample read back
    /// from recorded history rather than received.
    pub fn record_values(
        &mut self,
        instance_id: &str,
        t_ms: i64,
        value: impl Fn(Metric) -> Option<f64>,
    ) {
        let capacity = self.capacity;
        match self.by_instance.get_mut(instance_id) {
            Some(history) => history.push(capacity, t_ms, value),
            None => {
                let mut history = History::new();
                history.push(capacity, t_ms, value);
                self.by_instance.insert(instance_id.to_owned(), history);
            }
        }
    }

    /// The points of one series within `[from_ms, to_ms]` (either end open
    /// when `None`), oldest first; empty when nothing was recorded.
    pub fn range(
        &self,
        instance_id: &str,
        metric: Metric,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Vec<Point> {
        self.by_instance
            .get(instance_id)
            .map(|history| history.range(metric, from_ms, to_ms))
            .unwrap_or_default()
    }

    /// Forgets an instance's history, when the registry forgets the instance.
    pub fn remove(&mut self, instance_id: &str) {
        self.by_instance.remove(instance_id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use meshwatch_proto::v1::{HeapStats, ProcessStats, RuntimeStats};

    fn snapshot(rss: u64) -> Snapshot {
        Snapshot {
            process: Some(ProcessStats {
                rss_bytes: rss,
                threads: 4,
                ..ProcessStats::default()
            }),
            runtimes: vec![
                RuntimeStats {
                    workers: 2,
                    tasks_alive: 10,
                    ..RuntimeStats::default()
                },
                RuntimeStats {
                    workers: 1,
                    tasks_alive: 5,
                    ..RuntimeStats::default()
                },
            ],
            heap: Some(HeapStats::default()),
            ..Snapshot::default()
        }
    }

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for (i, &m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            assert!(seen.insert(m.name()), "duplicate {}", m.name());
            assert!(m.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(Metric::from_name(m.name()), Some(m));
            assert!(!m.help().is_empty());
            assert_eq!(
                m.kind() == MetricKind::Counter,
                m.name().ends_with("_total")
            );
        }
        assert_eq!(Metric::from_name("rss"), None);
        assert!(Metric::names().starts_with("rss_bytes, virtual_bytes"));
    }

    #[test]
    fn reads_sums_runtimes_and_skips_untracked_heap() {
        let snap = snapshot(100);
        let sample = Sample {
            snapshot: &snap,
            cpu_percent: None,
        };
        assert_eq!(Metric::RssBytes.read(&sample), Some(100.0));
        assert_eq!(Metric::TasksAlive.read(&sample), Some(15.0));
        assert_eq!(Metric::Workers.read(&sample), Some(3.0));
        assert_eq!(Metric::HeapLiveBytes.read(&sample), None);
        assert_eq!(Metric::CpuPercent.read(&sample), None);
        let bare = Snapshot::default();
        let sample = Sample {
            snapshot: &bare,
            cpu_percent: Some(12.5),
        };
        assert_eq!(Metric::TasksAlive.read(&sample), None);
        assert_eq!(Metric::CpuPercent.read(&sample), Some(12.5));
    }

    #[test]
    fn keeps_at_most_capacity_points_and_filters_ranges() {
        let mut store = SeriesStore::new(3);
        for t in 1..=5 {
            let snap = snapshot(t as u64 * 10);
            store.record(
                "i1",
                t * 1000,
                &Sample {
                    snapshot: &snap,
                    cpu_percent: None,
                },
            );
        }
        let all = store.range("i1", Metric::RssBytes, None, None);
        assert_eq!(all, vec![(3000, 30.0), (4000, 40.0), (5000, 50.0)]);
        assert_eq!(
            store.range("i1", Metric::RssBytes, Some(3500), Some(4000)),
            vec![(4000, 40.0)]
        );
        assert!(store.range("i1", Metric::CpuPercent, None, None).is_empty());
        assert!(store.range("nope", Metric::RssBytes, None, None).is_empty());
        store.remove("i1");
        assert!(store.range("i1", Metric::RssBytes, None, None).is_empty());
    }

    #[test]
    fn drops_points_that_go_back_in_time() {
        let mut store = SeriesStore::new(10);
        let snap = snapshot(1);
        let sample = Sample {
            snapshot: &snap,
            cpu_percent: None,
        };
        store.record("i", 2000, &sample);
        store.record("i", 1000, &sample);
        store.record("i", 2000, &sample);
        assert_eq!(store.range("i", Metric::RssBytes, None, None).len(), 2);
    }
}
