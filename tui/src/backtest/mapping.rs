//! How series from elsewhere map onto meshwatch's: the names Prometheus's
//! standard client libraries export, and the labels that name a service
//! and an instance. `docs/BACKTEST.md` lists the same table.

use std::collections::{BTreeMap, HashMap};

use meshwatch_collector::Metric;
use meshwatch_collector::backtest::RecordedRow;

/// A series name from elsewhere, and what it becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mapped {
    /// A gauge that is one of meshwatch's series as it is.
    Gauge(Metric),
    /// A counter of CPU seconds, which becomes `cpu_percent` by its rate.
    CpuSecondsTotal,
}

/// Prometheus names and what they are in meshwatch. Process metrics are
/// the client libraries' standard ones (Go, Node.js's prom-client, Python's
/// prometheus_client, Rust's prometheus crate export the same names);
/// runtime ones are per library.
const PROMETHEUS_NAMES: &[(&str, Mapped)] = &[
    (
        "process_resident_memory_bytes",
        Mapped::Gauge(Metric::RssBytes),
    ),
    (
        "process_virtual_memory_bytes",
        Mapped::Gauge(Metric::VirtualBytes),
    ),
    ("process_open_fds", Mapped::Gauge(Metric::FdsOpen)),
    ("process_max_fds", Mapped::Gauge(Metric::FdsLimit)),
    ("process_cpu_seconds_total", Mapped::CpuSecondsTotal),
    (
        "go_memstats_heap_alloc_bytes",
        Mapped::Gauge(Metric::HeapLiveBytes),
    ),
    ("go_goroutines", Mapped::Gauge(Metric::TasksAlive)),
    ("go_threads", Mapped::Gauge(Metric::Threads)),
    (
        "nodejs_heap_size_used_bytes",
        Mapped::Gauge(Metric::HeapLiveBytes),
    ),
    (
        "container_memory_working_set_bytes",
        Mapped::Gauge(Metric::RssBytes),
    ),
    (
        "container_spec_memory_limit_bytes",
        Mapped::Gauge(Metric::MemoryLimitBytes),
    ),
];

/// What `name` is in meshwatch: one of its own series names (`rss_bytes`),
/// the same as a collector exports it (`meshwatch_rss_bytes`), or one of
/// [`PROMETHEUS_NAMES`]. `None` for a name it cannot use.
pub fn map_name(name: &str) -> Option<Mapped> {
    if let Some((_, mapped)) = PROMETHEUS_NAMES.iter().find(|(n, _)| *n == name) {
        return Some(*mapped);
    }
    let own = name.strip_prefix("meshwatch_").unwrap_or(name);
    match Metric::from_name(own)? {
        Metric::CpuSecondsTotal => Some(Mapped::CpuSecondsTotal),
        metric => Some(Mapped::Gauge(metric)),
    }
}

/// The labels that name the service, first found wins.
const SERVICE_LABELS: &[&str] = &["service", "service_name", "job", "container"];
/// The labels that name the instance, first found wins.
const INSTANCE_LABELS: &[&str] = &["instance_id", "instance", "pod"];

/// The service and instance a labelled series belongs to; the service
/// stands in for the instance when no label names one.
pub fn subject(labels: &BTreeMap<String, String>) -> Option<(String, String)> {
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let service = first(SERVICE_LABELS)?;
    let instance = first(INSTANCE_LABELS).unwrap_or_else(|| service.clone());
    Some((service, instance))
}

/// Gathers points of many series into rows: one per instance and time,
/// with every metric sampled then, CPU counters turned into percent.
#[derive(Debug, Default)]
pub struct Rows {
    rows: BTreeMap<(i64, String, String), Vec<(Metric, f64)>>,
    /// The last CPU counter reading of each instance: `(t_ms, seconds)`.
    cpu: HashMap<(String, String), (i64, f64)>,
}

impl Rows {
    /// Adds one point of series `mapped` of `(service, instance)`. Points
    /// of a CPU counter must come in time order per instance.
    pub fn add(&mut self, subject: &(String, String), mapped: Mapped, t_ms: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let (metric, value) = match mapped {
            Mapped::Gauge(metric) => (metric, value),
            Mapped::CpuSecondsTotal => {
                let last = self.cpu.insert(subject.clone(), (t_ms, value));
                match last {
                    // A counter that went back is a restart: no rate there.
                    Some((t0, v0)) if t_ms > t0 && value >= v0 => (
                        Metric::CpuPercent,
                        (value - v0) / ((t_ms - t0) as f64 / 1000.0) * 100.0,
                    ),
                    _ => return,
                }
            }
        };
        self.rows
            .entry((t_ms, subject.0.clone(), subject.1.clone()))
            .or_default()
            .push((metric, value));
    }

    /// The rows gathered, in time order.
    pub fn into_rows(self) -> Vec<RecordedRow> {
        self.rows
            .into_iter()
            .map(|((t_ms, service, instance), values)| RecordedRow {
                service,
                instance,
                t_ms,
                values,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_from_prometheus_and_from_meshwatch() {
        assert_eq!(
            map_name("process_resident_memory_bytes"),
            Some(Mapped::Gauge(Metric::RssBytes))
        );
        assert_eq!(
            map_name("meshwatch_fds_open"),
            Some(Mapped::Gauge(Metric::FdsOpen))
        );
        assert_eq!(
            map_name("heap_live_bytes"),
            Some(Mapped::Gauge(Metric::HeapLiveBytes))
        );
        assert_eq!(
            map_name("process_cpu_seconds_total"),
            Some(Mapped::CpuSecondsTotal)
        );
        assert_eq!(map_name("http_requests_total"), None);
    }

    #[test]
    fn cpu_counters_become_percent_and_points_gather_into_rows() {
        let mut rows = Rows::default();
        let who = ("api".to_owned(), "a:9100".to_owned());
        rows.add(&who, Mapped::CpuSecondsTotal, 0, 10.0);
        rows.add(&who, Mapped::CpuSecondsTotal, 10_000, 15.0);
        rows.add(&who, Mapped::Gauge(Metric::RssBytes), 10_000, 7.0);
        rows.add(&who, Mapped::Gauge(Metric::RssBytes), 20_000, f64::NAN);
        let rows = rows.into_rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].t_ms, 10_000);
        assert_eq!(
            rows[0].values,
            vec![(Metric::CpuPercent, 50.0), (Metric::RssBytes, 7.0)]
        );
    }

    #[test]
    fn labels_name_the_subject() {
        let labels: BTreeMap<String, String> = [("job", "proxy"), ("instance", "10.0.0.1:9100")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        assert_eq!(
            subject(&labels),
            Some(("proxy".to_owned(), "10.0.0.1:9100".to_owned()))
        );
        assert_eq!(subject(&BTreeMap::new()), None);
    }
}
