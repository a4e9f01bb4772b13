//! The long view of each instance: the floor of its trend series over days,
//! in buckets, for the detectors' long windows (issue 12).
//!
//! The in-memory rings ([`SeriesStore`](crate::series::SeriesStore)) hold
//! fifteen minutes at full rate; a leak of a few MiB an hour needs hours or
//! days to tell from noise. Reading days of rows from the store on every
//! detection pass would cost far more than judging them, so each instance
//! keeps, beside its ring, the *minimum* of each trend series per bucket in
//! two tiers:
//!
//! - one-minute buckets over the last six hours, for windows up to six
//!   hours;
//! - ten-minute buckets over the last four days, for longer ones.
//!
//! The minimum is all a trend detector reads of a long window: it judges
//! the lower envelope, the floor a leak lifts and a burst does not, and the
//! minimum of minima is the minimum. Six series of `f32` in 936 buckets is
//! about 30 KiB an instance, bounded by construction.
//!
//! After a restart of the collector, the buckets of the instances that were
//! alive are refilled from the persistent history (see
//! [`seed_from_store`](crate::history::seed_long_history)), so a slow leak
//! does not go unjudged for days because the collector was upgraded.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::series::{Metric, Point};

/// The series kept in the long view: those the trend detectors judge, and
/// the CPU they weigh load with.
pub const LONG_METRICS: [Metric; 6] = [
    Metric::HeapLiveBytes,
    Metric::RssBytes,
    Metric::TcpCloseWait,
    Metric::FdsOpen,
    Metric::TasksAlive,
    Metric::CpuPercent,
];

/// One tier: buckets of `width_ms`, at most `capacity` of them.
#[derive(Debug, Clone, Copy)]
pub struct Tier {
    /// Width of a bucket, in ms.
    pub width_ms: i64,
    /// Buckets kept.
    pub capacity: usize,
}

/// The fine tier: one-minute buckets over six hours.
pub const FINE: Tier = Tier {
    width_ms: 60_000,
    capacity: 6 * 60,
};

/// The broad tier: ten-minute buckets over four days.
pub const BROAD: Tier = Tier {
    width_ms: 600_000,
    capacity: 4 * 24 * 6,
};

/// A window up to this long reads the fine tier; a longer one, the broad.
pub const FINE_REACH_MS: i64 = FINE.width_ms * FINE.capacity as i64;

/// The minimum of each of [`LONG_METRICS`] within one bucket; `NaN` where
/// the bucket saw no value.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    start_ms: i64,
    floors: [f32; LONG_METRICS.len()],
}

/// One tier's buckets of one instance, oldest first.
#[derive(Debug, Clone, Default)]
struct Buckets(VecDeque<Bucket>);

impl Buckets {
    fn record(&mut self, tier: Tier, t_ms: i64, values: &[Option<f64>; LONG_METRICS.len()]) {
        let start_ms = t_ms - t_ms.rem_euclid(tier.width_ms);
        match self.0.back_mut() {
            Some(last) if last.start_ms == start_ms => {
                for (floor, value) in last.floors.iter_mut().zip(values) {
                    if let Some(v) = value {
                        let v = *v as f32;
                        if floor.is_nan() || v < *floor {
                            *floor = v;
                        }
                    }
                }
            }
            // Out of order (a clock stepping back): dropped, as the rings do.
            Some(last) if last.start_ms > start_ms => {}
            _ => {
                if self.0.len() >= tier.capacity {
                    self.0.pop_front();
                }
                let mut floors = [f32::NAN; LONG_METRICS.len()];
                for (floor, value) in floors.iter_mut().zip(values) {
                    if let Some(v) = value {
                        *floor = *v as f32;
                    }
                }
                self.0.push_back(Bucket { start_ms, floors });
            }
        }
    }

    /// The floors of series `column` in buckets starting at or after
    /// `from_ms`, each dated at its bucket's middle.
    fn floors(&self, tier: Tier, column: usize, from_ms: i64) -> Vec<Point> {
        let first = self.0.partition_point(|b| b.start_ms < from_ms);
        self.0
            .range(first..)
            .filter(|b| !b.floors[column].is_nan())
            .map(|b| (b.start_ms + tier.width_ms / 2, f64::from(b.floors[column])))
            .collect()
    }

    /// Puts `older` before the buckets held, keeping those held where both
    /// have one, within capacity.
    fn prepend(&mut self, tier: Tier, older: Buckets) {
        let first_held = self.0.front().map_or(i64::MAX, |b| b.start_ms);
        let mut merged: VecDeque<Bucket> = older
            .0
            .into_iter()
            .filter(|b| b.start_ms < first_held)
            .collect();
        merged.extend(self.0.drain(..));
        while merged.len() > tier.capacity {
            merged.pop_front();
        }
        self.0 = merged;
    }
}

/// The two tiers of one instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceFloors {
    fine: Buckets,
    broad: Buckets,
}

impl InstanceFloors {
    /// Records one sample: `value` gives each metric's value, if it has one.
    pub fn record(&mut self, t_ms: i64, value: impl Fn(Metric) -> Option<f64>) {
        let values = LONG_METRICS.map(&value);
        self.fine.record(FINE, t_ms, &values);
        self.broad.record(BROAD, t_ms, &values);
    }

    /// The floors of `metric` over the trailing `window_ms` before `now_ms`,
    /// from the tier that window reads; empty for a metric not kept.
    pub fn floors(&self, metric: Metric, window_ms: i64, now_ms: i64) -> Vec<Point> {
        let Some(column) = LONG_METRICS.iter().position(|&m| m == metric) else {
            return Vec::new();
        };
        let from_ms = now_ms.saturating_sub(window_ms);
        if window_ms <= FINE_REACH_MS {
            self.fine.floors(FINE, column, from_ms)
        } else {
            self.broad.floors(BROAD, column, from_ms)
        }
    }

    /// Puts `older`'s buckets (read back from the store) before these.
    pub fn prepend(&mut self, older: InstanceFloors) {
        self.fine.prepend(FINE, older.fine);
        self.broad.prepend(BROAD, older.broad);
    }
}

/// The long view of every instance, keyed by instance id.
///
/// Each view is shared (`Arc`) with the detection pass that reads it, so
/// the pass takes it without copying under the collector's lock; a sample
/// recorded while a pass still holds it copies it first.
#[derive(Debug, Default)]
pub struct LongHistory {
    by_instance: HashMap<String, Arc<InstanceFloors>>,
}

impl LongHistory {
    /// Records one sample of `instance_id`.
    pub fn record(&mut self, instance_id: &str, t_ms: i64, value: impl Fn(Metric) -> Option<f64>) {
        if let Some(floors) = self.by_instance.get_mut(instance_id) {
            Arc::make_mut(floors).record(t_ms, value);
        } else {
            let mut floors = InstanceFloors::default();
            floors.record(t_ms, value);
            self.by_instance
                .insert(instance_id.to_owned(), Arc::new(floors));
        }
    }

    /// The long view of one instance, if it has one.
    pub fn get(&self, instance_id: &str) -> Option<Arc<InstanceFloors>> {
        self.by_instance.get(instance_id).cloned()
    }

    /// Puts `older` before what `instance_id` holds: its history before the
    /// collector started, read back from the store.
    pub fn prepend(&mut self, instance_id: &str, older: InstanceFloors) {
        Arc::make_mut(self.by_instance.entry(instance_id.to_owned()).or_default()).prepend(older);
    }

    /// Forgets an instance, when the registry forgets it.
    pub fn remove(&mut self, instance_id: &str) {
        self.by_instance.remove(instance_id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rss(v: f64) -> impl Fn(Metric) -> Option<f64> {
        move |m| (m == Metric::RssBytes).then_some(v)
    }

    #[test]
    fn a_bucket_keeps_the_minimum_and_is_dated_at_its_middle() {
        let mut floors = InstanceFloors::default();
        for (t, v) in [(0, 5.0), (10_000, 3.0), (50_000, 9.0), (60_000, 7.0)] {
            floors.record(t, rss(v));
        }
        assert_eq!(
            floors.floors(Metric::RssBytes, 3_600_000, 120_000),
            vec![(30_000, 3.0), (90_000, 7.0)]
        );
        assert!(
            floors
                .floors(Metric::FdsOpen, 3_600_000, 120_000)
                .is_empty()
        );
        assert!(
            floors
                .floors(Metric::Threads, 3_600_000, 120_000)
                .is_empty()
        );
    }

    #[test]
    fn long_windows_read_the_broad_tier_and_tiers_are_bounded() {
        let mut floors = InstanceFloors::default();
        let day = 24 * 3_600_000;
        // Five days at one point a minute: the fine tier keeps six hours.
        for minute in 0..5 * 24 * 60 {
            floors.record(minute * 60_000, rss(minute as f64));
        }
        let now = 5 * day;
        let fine = floors.floors(Metric::RssBytes, FINE_REACH_MS, now);
        assert_eq!(fine.len(), FINE.capacity);
        let broad = floors.floors(Metric::RssBytes, 10 * day, now);
        assert_eq!(broad.len(), BROAD.capacity);
        // Each broad bucket holds the lowest of its ten minutes.
        assert_eq!(broad[0].1, (day / 60_000) as f64);
    }

    #[test]
    fn history_read_back_goes_before_what_was_recorded_since() {
        let mut long = LongHistory::default();
        long.record("a", 600_000, rss(2.0));
        let mut older = InstanceFloors::default();
        older.record(0, rss(1.0));
        older.record(600_000, rss(0.5));
        long.prepend("a", older);
        let points = long
            .get("a")
            .unwrap()
            .floors(Metric::RssBytes, 3_600_000, 700_000);
        assert_eq!(points, vec![(30_000, 1.0), (630_000, 2.0)]);
        long.remove("a");
        assert!(long.get("a").is_none());
    }
}
