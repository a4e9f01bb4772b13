//! The windows a trend detector judges an instance on, from a minute to
//! days, and what each asks (issue 12).
//!
//! A trend detector climbs a ladder of trailing windows, shortest first,
//! and the first on which the instance is decisively leaking opens the
//! incident (and is named in its evidence). Four kinds of rung:
//!
//! - **short** windows (a minute to a few), below the detector's own,
//!   read the full-rate in-memory rings. They see few points and are one
//!   of several tries, so they ask more: the sign test at 1 % instead of
//!   5 %, the raw points still rising lately, and an instance past its
//!   warm-up;
//! - the detector's **own** window (8 or 10 minutes), as before;
//! - **long** windows (an hour to half a day), from the one- and
//!   ten-minute floors of the long view
//!   ([`LongHistory`](crate::long_history::LongHistory));
//! - **days** windows (a day and a half and more) judge the floor through
//!   a day-wide envelope: the lowest value of each trailing day, which a
//!   daily swing leaves flat and a leak lifts by its daily growth. The
//!   day-wide envelope needs a day of lead-in, so these windows also need
//!   80 % of their length in history. Their envelope of a leak under a
//!   daily swing climbs in daily steps, so instead of a recent slope near
//!   the window's they ask each half of the envelope to rise (a single step,
//!   a cache filled once, lifts one half only).
//!
//! A rise over minutes or hours may be the rising half of a daily swing:
//! on every window but a days one, once the instance has history a day
//! back, the floor now must stand above the highest floor of the same
//! window a day earlier by the window's growth
//! ([`InstanceWindow::beyond_yesterday`]), which a swing never does and a
//! leak does. On an instance's first day there is no day before to ask,
//! and a swing steeper than the detectors' rates (10 % of the floor an
//! hour for memory) is flagged like a leak.

use std::borrow::Cow;
use std::time::Duration;

use super::InstanceWindow;
use crate::long_history::BROAD;
use crate::series::{Metric, Point};

/// One day, in ms: the period of the swings traffic brings.
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// Which rung of the ladder a window is, which decides where its points
/// come from and what it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleKind {
    /// Shorter than the detector's own window: asks more.
    Short,
    /// The detector's own window.
    Own,
    /// Longer, under a day and a half: floors from the long view, a
    /// quarter-window envelope, checked against the day before.
    Long,
    /// A day and a half or more: floors from the long view through a
    /// day-wide envelope.
    Days,
}

/// One window a trend detector judges an instance on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Its length, in ms.
    pub window_ms: i64,
    /// Which rung it is.
    pub kind: ScaleKind,
}

/// Windows at least this long judge through a day-wide envelope.
const DAYS_FROM_MS: i64 = DAY_MS * 3 / 2;

impl Scale {
    /// The sign test's significance level on this window: 1 % on a short
    /// one, which sees fewer points and is one of several tried (with 16
    /// envelope points, every pair rising), 5 % on the others.
    pub fn max_p_value(self) -> f64 {
        if self.kind == ScaleKind::Short {
            0.01
        } else {
            0.05
        }
    }

    /// The width of the lower envelope on this window: a quarter of it, so
    /// bursts and caches that fill and clear within that count as their
    /// floor; a day on a days window, so a daily swing does too.
    pub fn envelope_ms(self) -> i64 {
        if self.kind == ScaleKind::Days {
            DAY_MS
        } else {
            self.window_ms / 4
        }
    }

    /// Whether the window reads the long view rather than the rings.
    pub fn is_long(self) -> bool {
        matches!(self.kind, ScaleKind::Long | ScaleKind::Days)
    }
}

/// The rungs of `scales` a pass judges: every one when its long windows
/// are due ([`Window::long_due`](super::Window)), else the short and own.
pub fn due_scales(
    short: &[Duration],
    span_ms: i64,
    long: &[Duration],
    long_due: bool,
) -> Vec<Scale> {
    let mut ladder = scales(short, span_ms, long);
    ladder.retain(|s| long_due || !s.is_long());
    ladder
}

/// The ladder a trend detector climbs, shortest first: `short` windows
/// below its own `span_ms`, `span_ms` itself, then the `long` windows
/// above it.
pub fn scales(short: &[Duration], span_ms: i64, long: &[Duration]) -> Vec<Scale> {
    let ms = |w: &Duration| i64::try_from(w.as_millis()).unwrap_or(i64::MAX);
    let short = short
        .iter()
        .map(ms)
        .filter(|&w| w < span_ms)
        .map(|w| Scale {
            window_ms: w,
            kind: ScaleKind::Short,
        });
    let own = Scale {
        window_ms: span_ms,
        kind: ScaleKind::Own,
    };
    let long = long.iter().map(ms).filter(|&w| w > span_ms).map(|w| Scale {
        window_ms: w,
        kind: if w >= DAYS_FROM_MS {
            ScaleKind::Days
        } else {
            ScaleKind::Long
        },
    });
    short.chain([own]).chain(long).collect()
}

impl InstanceWindow<'_> {
    /// The points of `metric` that `scale` judges: the trailing window of
    /// the full-rate ring for a short or own window, the floors of the long
    /// view for a longer one.
    pub fn on_scale(&self, metric: Metric, scale: Scale, now_ms: i64) -> Cow<'_, [Point]> {
        if scale.is_long() {
            Cow::Owned(self.long.as_ref().map_or_else(Vec::new, |long| {
                long.floors(metric, scale.window_ms, now_ms)
            }))
        } else {
            Cow::Borrowed(self.trailing(metric, scale.window_ms, now_ms))
        }
    }

    /// Whether a rise of `growth` over a window to the floor `level` now is
    /// more than a daily swing: when the instance's long view reaches a day
    /// before the window, `level` must exceed the highest floor of that
    /// window a day earlier by at least `growth`: a leak has grown a day's
    /// worth since, more than any window under a day holds. True when the
    /// history is too short to tell, and on a days window (whose day-wide
    /// envelope already flattens a swing).
    pub fn beyond_yesterday(
        &self,
        metric: Metric,
        scale: Scale,
        now_ms: i64,
        (level, growth): (f64, f64),
    ) -> bool {
        if scale.kind == ScaleKind::Days {
            return true;
        }
        let Some(long) = &self.long else {
            return true;
        };
        let yesterday_ms = now_ms - DAY_MS;
        // The day-old floors are ten-minute buckets: take one bucket more on
        // either side, so that the window a day ago is covered whole.
        let bucket_ms = BROAD.width_ms;
        let points = long.floors(metric, scale.window_ms + DAY_MS + 2 * bucket_ms, now_ms);
        let day_before: Vec<f64> = points
            .iter()
            .take_while(|&&(t, _)| t <= yesterday_ms + bucket_ms)
            .map(|&(_, v)| v)
            .collect();
        let covered = points
            .first()
            .is_some_and(|&(t, _)| t <= yesterday_ms - scale.window_ms * 4 / 5);
        if !covered {
            return true;
        }
        let highest = day_before.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        level - highest >= growth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_runs_from_short_to_days() {
        let min = |m: u64| Duration::from_secs(m * 60);
        let ladder = scales(
            &[min(1), min(3), min(20)],
            10 * 60_000,
            &[min(5), min(60), min(48 * 60)],
        );
        let kinds: Vec<(i64, ScaleKind)> = ladder
            .iter()
            .map(|s| (s.window_ms / 60_000, s.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (1, ScaleKind::Short),
                (3, ScaleKind::Short),
                (10, ScaleKind::Own),
                (60, ScaleKind::Long),
                (48 * 60, ScaleKind::Days),
            ]
        );
        assert_eq!(ladder[4].envelope_ms(), DAY_MS);
        assert_eq!(ladder[3].envelope_ms(), 15 * 60_000);
    }
}
