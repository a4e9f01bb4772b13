//! The probe's own health counters, sent in every snapshot so that what the
//! probe dropped or failed to read is visible, not silent.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Shared by the sampler and exporter threads.
#[derive(Debug, Default)]
pub(crate) struct ProbeCounters {
    snapshots_dropped: AtomicU64,
    events_dropped: AtomicU64,
    connects: AtomicU64,
    sample_errors: AtomicU64,
    sample_duration_ns: AtomicU64,
}

/// A plain copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CounterTotals {
    pub snapshots_dropped: u64,
    pub events_dropped: u64,
    pub connects: u64,
    pub sample_errors: u64,
    pub sample_duration_ns: u64,
}

impl ProbeCounters {
    pub fn snapshot_dropped(&self) {
        self.snapshots_dropped.fetch_add(1, Relaxed);
    }

    pub fn event_dropped(&self) {
        self.events_dropped.fetch_add(1, Relaxed);
    }

    pub fn connected(&self) {
        self.connects.fetch_add(1, Relaxed);
    }

    pub fn add_sample_errors(&self, n: u64) {
        self.sample_errors.fetch_add(n, Relaxed);
    }

    pub fn set_sample_duration(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sample_duration_ns.store(ns, Relaxed);
    }

    pub fn totals(&self) -> CounterTotals {
        CounterTotals {
            snapshots_dropped: self.snapshots_dropped.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            connects: self.connects.load(Relaxed),
            sample_errors: self.sample_errors.load(Relaxed),
            sample_duration_ns: self.sample_duration_ns.load(Relaxed),
        }
    }
}
