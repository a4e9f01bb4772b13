//! What the count-leak detectors (`socket_leak`, `fd_leak`, `task_leak`)
//! share: their settings, and the rule for "a count whose floor keeps
//! rising".
//!
//! A leaked socket, fd or task is never released, so the *floor* of its
//! count rises: the lower envelope of the series, which a burst (many
//! short-lived connections, a spike of tasks) does not move. The rule asks
//! the same of that floor as the memory detector asks of the heap: a
//! significant Cox–Stuart sign test, enough growth over the window, and a
//! recent slope still near the window's, so that a pool warming up (a step,
//! then a plateau) is not a leak.
//!
//! Load changes counts legitimately: more traffic, more connections and
//! tasks. The probe sees no request rate, so CPU stands in for load: a count
//! whose relative growth is matched by the CPU's (a daily swing, a ramp of
//! traffic) is not flagged.

use std::time::Duration;

use meshwatch_api::evidence::SignTest;

use super::memory::{Trend, trend};
use super::{InstanceWindow, Problem, Verdict, Window};
use crate::incidents::Finding;
use crate::series::Metric;

/// The sign test's significance level.
const MAX_P_VALUE: f64 = 0.05;
/// The recent slope must be at least this share of the window's.
const RECENT_SHARE: f64 = 0.3;
/// A count must grow at least this many times faster (relatively) than the
/// CPU for the growth not to be explained by load.
const LOAD_FACTOR: f64 = 2.0;

/// Thresholds of the socket, fd and task leak detectors and of the crash
/// loop detector. The defaults judge a 10-minute window, within the
/// collector's 15 minutes of in-memory history at 1 Hz.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LeakSettings {
    /// How far back the count detectors look; an instance is judged once its
    /// history covers 80 % of it.
    pub window: Duration,
    /// CLOSE_WAIT sockets the floor must have gained over the window.
    pub min_close_wait_growth: f64,
    /// Open fds the floor must have gained over the window.
    pub min_fd_growth: f64,
    /// An fd leak is critical when the limit is this close.
    pub critical_fd_time_to_limit: Duration,
    /// Alive tasks the floor must have gained over the window.
    pub min_task_growth: f64,
    /// And as a share of where the floor started.
    pub min_task_relative_growth: f64,
    /// How far back the crash loop detector counts deaths.
    pub crash_window: Duration,
    /// Deaths of a service's instances within `crash_window` that make a
    /// crash loop.
    pub crash_min_deaths: usize,
    /// How long every instance of a service must have been down before
    /// `service_down` opens: room for a restart or a rolling deploy.
    pub service_down_grace: Duration,
}

impl Default for LeakSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10 * 60),
            min_close_wait_growth: 5.0,
            min_fd_growth: 20.0,
            critical_fd_time_to_limit: Duration::from_secs(3600),
            min_task_growth: 50.0,
            min_task_relative_growth: 0.25,
            crash_window: Duration::from_secs(10 * 60),
            crash_min_deaths: 3,
            service_down_grace: Duration::from_secs(30),
        }
    }
}

/// A count series judged over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountTrend {
    /// The trend of its floor.
    pub trend: Trend,
    /// What the floor gained over the window.
    pub growth: f64,
    /// The series' mean over the window: the scale growth is relative to.
    pub mean: f64,
}

impl CountTrend {
    /// The trend as evidence.
    pub fn evidence(&self) -> meshwatch_api::evidence::CountTrend {
        meshwatch_api::evidence::CountTrend {
            per_minute: self.trend.slope * 60.0,
            recent_per_minute: self.trend.recent_slope * 60.0,
            growth_over_window: self.growth,
            floor_now: self.trend.level,
            sign_test: SignTest {
                rising: self.trend.sign.rising as u64,
                pairs: self.trend.sign.pairs as u64,
                p_value: self.trend.sign.p_value,
            },
            span_seconds: self.trend.span_s,
        }
    }
}

/// The trend of `metric`'s floor in `instance`, `None` when its history
/// does not cover enough of the window.
pub fn count_trend(
    instance: &InstanceWindow<'_>,
    metric: Metric,
    window_ms: i64,
) -> Option<CountTrend> {
    let points = instance.points(metric);
    let trend = trend(points, window_ms)?;
    let mean = points.iter().map(|&(_, v)| v).sum::<f64>() / points.len() as f64;
    Some(CountTrend {
        trend,
        growth: trend.slope * trend.span_s,
        mean,
    })
}

impl CountTrend {
    /// A steady rise of at least `min_growth`, still going on.
    pub fn rising(&self, min_growth: f64) -> bool {
        let t = &self.trend;
        t.slope > 0.0
            && t.sign.p_value <= MAX_P_VALUE
            && self.growth >= min_growth
            && t.recent_slope >= RECENT_SHARE * t.slope
    }

    /// Still climbing lately: enough to keep an open incident open, so that
    /// it does not flap while the signals that opened it wobble.
    pub fn still_rising(&self) -> bool {
        self.trend.slope > 0.0 && self.trend.recent_slope > 0.0
    }

    /// Growth over the window relative to the series' mean (at least 1, so
    /// a series near zero does not make any growth look enormous).
    pub fn relative_growth(&self) -> f64 {
        self.growth / self.mean.max(1.0)
    }
}

/// Whether the rise of `count` is explained by load: the CPU's floor grew,
/// relatively, at least `1 / LOAD_FACTOR` as much. Not explained when the
/// CPU's history is too short to tell.
pub fn explained_by_load(
    count: &CountTrend,
    instance: &InstanceWindow<'_>,
    window_ms: i64,
) -> bool {
    let Some(cpu) = count_trend(instance, Metric::CpuPercent, window_ms) else {
        return false;
    };
    cpu.growth > 0.0 && cpu.relative_growth() * LOAD_FACTOR >= count.relative_growth()
}

/// Judges every instance of `window` on the trend of its `metric`: `judge`
/// returns a finding for an instance that leaks. Instances whose history
/// is too short are skipped; when none could be judged, the verdict is
/// `Undecided`.
pub fn per_instance(
    window: &Window<'_>,
    metric: Metric,
    mut judge: impl FnMut(&InstanceWindow<'_>, &CountTrend) -> Option<Finding>,
) -> Verdict {
    let mut judged = false;
    let mut problems = Vec::new();
    for instance in &window.instances {
        let Some(count) = count_trend(instance, metric, window.span_ms) else {
            continue;
        };
        judged = true;
        if let Some(finding) = judge(instance, &count) {
            problems.push(Problem {
                instance: Some(instance.instance_id.to_owned()),
                detail: String::new(),
                finding,
            });
        }
    }
    match (judged, problems.is_empty()) {
        (false, _) => Verdict::Undecided,
        (true, true) => Verdict::Healthy,
        (true, false) => Verdict::Unhealthy(problems),
    }
}
