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
//!
//! **Several windows** (issue 12, first part). A fast leak must not wait for
//! ten minutes of history: each instance is judged on trailing windows of
//! one minute and three minutes before the detector's own (`window`), and
//! the first that is decisive opens the incident and is named in its
//! evidence (`window_seconds`). A short window asks more, since it sees
//! fewer points and more windows are tried: a sign test at 1 % (every pair
//! of its floor's 16 points rising) instead of 5 %, the same growth, a
//! recent slope still near the window's (the raw points' too, since the
//! envelope lags by its width: [`Trend::rises_lately`]), not explained by
//! load. And it judges only an instance that had lived a minute before the
//! part of the window a trend needs ([`InstanceWindow::past_warm_up`]):
//! a process warming up (a connection pool filling from 0 to 200 over its
//! first minute, a restart's caches) rises as steadily as a leak while it
//! does, and is done by then. Measured on synthetic series in the tests
//! below: +5 CLOSE_WAIT sockets, +5 fds or +10 tasks a second are flagged
//! 40 s after they begin; a pool warming over its first minute, a
//! tenfold load step with the sockets and tasks it brings, and a noisy flat
//! count are not.
//!
//! After the detector's own window come the long ones, an hour to three
//! days, on the floors of the long view ([`super::scale`] says what each
//! asks): a slow leak of a few fds an hour is flagged there, and a count
//! rising with a daily swing of traffic is not, once the instance has a day
//! before to compare with.

use std::time::Duration;

use meshwatch_api::evidence::SignTest;

use super::memory::{MemorySettings, Trend, trend};
use super::{InstanceWindow, Problem, Scale, ScaleKind, Verdict, Window, due_scales};
use crate::incidents::Finding;
use crate::series::Metric;

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
    /// Shorter windows judged first, shortest first: a fast leak opens on
    /// the first that is decisive.
    pub short_windows: Vec<Duration>,
    /// A short window judges an instance only once it has lived this long
    /// before the window began: past its warm-up.
    pub warm_up: Duration,
    /// Longer windows judged after the detector's own, shortest first, from
    /// the long view: a slow leak opens on the first that is decisive.
    pub long_windows: Vec<Duration>,
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
            short_windows: vec![Duration::from_secs(60), Duration::from_secs(180)],
            warm_up: Duration::from_secs(60),
            long_windows: MemorySettings::default().long_windows,
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

/// A count series judged over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountTrend {
    /// The window judged: the detector's or a shorter one.
    pub scale: Scale,
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

/// The trend of `metric`'s floor in `instance` over the trailing window
/// `scale` before `now_ms`, `None` when its history does not cover enough
/// of that window.
pub fn count_trend(
    instance: &InstanceWindow<'_>,
    metric: Metric,
    scale: Scale,
    now_ms: i64,
) -> Option<CountTrend> {
    let points = instance.on_scale(metric, scale, now_ms);
    let trend = trend(&points, scale)?;
    let mean = points.iter().map(|&(_, v)| v).sum::<f64>() / points.len() as f64;
    Some(CountTrend {
        scale,
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
            && t.rises_lately(self.scale)
            && t.sign.p_value <= self.scale.max_p_value()
            && self.growth >= min_growth
            && t.goes_on(self.scale)
    }

    /// Still climbing lately: enough to keep an open incident open, so that
    /// it does not flap while the signals that opened it wobble. On a days
    /// window, whose envelope climbs in daily steps, climbing at all.
    pub fn still_rising(&self) -> bool {
        self.trend.slope > 0.0
            && (self.trend.recent_slope > 0.0 || self.scale.kind == ScaleKind::Days)
    }

    /// How fast it climbs and over which window, for a summary: `+5.0/min
    /// over the last 3 min`, or per hour for a slow leak (`+2.0/h over the
    /// last 72.0 h`).
    pub fn rate_text(&self) -> String {
        let per_minute = self.trend.slope * 60.0;
        let rate = if per_minute >= 1.0 {
            format!("+{per_minute:.1}/min")
        } else {
            format!("+{:.1}/h", per_minute * 60.0)
        };
        format!(
            "{rate} over the last {}",
            super::memory::duration(self.scale.window_ms as f64 / 1000.0)
        )
    }

    /// Growth over the window relative to the series' mean (at least 1, so
    /// a series near zero does not make any growth look enormous).
    pub fn relative_growth(&self) -> f64 {
        self.growth / self.mean.max(1.0)
    }
}

/// Whether the rise of `count` is explained by load: the CPU's floor grew,
/// relatively, at least `1 / LOAD_FACTOR` as much over the same window. Not
/// explained when the CPU's history is too short to tell.
pub fn explained_by_load(count: &CountTrend, instance: &InstanceWindow<'_>, now_ms: i64) -> bool {
    let Some(cpu) = count_trend(instance, Metric::CpuPercent, count.scale, now_ms) else {
        return false;
    };
    cpu.growth > 0.0 && cpu.relative_growth() * LOAD_FACTOR >= count.relative_growth()
}

/// Judges every instance of `window` on the trend of its `metric`, over
/// each of `settings`' windows in turn, shortest first: `judge` returns a
/// finding for an instance that leaks, and the first window that gives one
/// decides. A short window skips an instance still warming up. Instances
/// whose history is too short for every window are skipped; when none could
/// be judged, the verdict is `Undecided`.
pub fn per_instance(
    window: &Window<'_>,
    settings: &LeakSettings,
    metric: Metric,
    mut judge: impl FnMut(&InstanceWindow<'_>, &CountTrend) -> Option<Finding>,
) -> Verdict {
    let mut judged = false;
    let mut problems = Vec::new();
    let ladder = due_scales(
        &settings.short_windows,
        window.span_ms,
        &settings.long_windows,
        window.long_due,
    );
    for instance in &window.instances {
        let finding = ladder.iter().find_map(|&scale| {
            if !instance.past_warm_up(scale, window.now_ms, settings.warm_up) {
                return None;
            }
            let count = count_trend(instance, metric, scale, window.now_ms)?;
            judged = true;
            let level_and_growth = (count.trend.level, count.growth);
            judge(instance, &count).filter(|_| {
                window.open
                    || instance.beyond_yesterday(metric, scale, window.now_ms, level_and_growth)
            })
        });
        if let Some(finding) = finding {
            problems.push(Problem {
                instance: Some(instance.instance_id.to_owned()),
                detail: String::new(),
                finding,
            });
        }
    }
    match (judged, problems.is_empty()) {
        (false, _) => Verdict::Undecided,
        // What a long window opened is for a long window to resolve.
        (true, true) if window.open && !window.long_due => Verdict::Undecided,
        (true, true) => Verdict::Healthy,
        (true, false) => Verdict::Unhealthy(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::fd_leak::FdLeak;
    use crate::detect::socket_leak::SocketLeak;
    use crate::detect::task_leak::TaskLeak;
    use crate::detect::testing::{NOW_MS, SPAN_MS, SeriesFn, instance, window};
    use crate::detect::{Detector, InstanceWindow};

    /// Seconds since the window opened, from a synthetic series' `t` (ms).
    fn secs(t: i64) -> f64 {
        t as f64 / 1000.0
    }

    /// A count flat at `base` that starts rising by `per_second` `ago` seconds
    /// before now.
    fn leak_since(base: f64, per_second: f64, ago: i64) -> impl Fn(i64) -> f64 {
        let start = SPAN_MS / 1000 - ago;
        move |t| base + per_second * (secs(t) - start as f64).max(0.0)
    }

    /// Whether `detector` flags an instance with these series, and on which
    /// window.
    fn flagged(detector: &dyn Detector, instance: InstanceWindow<'static>) -> Option<i64> {
        match detector.check(&window(vec![instance])) {
            Verdict::Unhealthy(problems) => Some(match &problems[0].finding.evidence {
                crate::incidents::Evidence::SocketLeak(e) => e.window_seconds,
                crate::incidents::Evidence::FdLeak(e) => e.window_seconds,
                crate::incidents::Evidence::TaskLeak(e) => e.window_seconds,
                other => panic!("unexpected evidence {other:?}"),
            }),
            _ => None,
        }
    }

    /// The first of `agos` (seconds since the leak began) at which the
    /// detector flags it, with the window that decided.
    fn first_flagged(
        detector: &dyn Detector,
        metric: Metric,
        leak: &dyn Fn(i64) -> Box<dyn Fn(i64) -> f64>,
    ) -> Option<(i64, i64)> {
        (5..=120).step_by(5).find_map(|ago| {
            let series = leak(ago);
            let cpu = |_| 20.0;
            let one = instance("a", &[(metric, &*series), (Metric::CpuPercent, &cpu)]);
            flagged(detector, one).map(|window| (ago, window))
        })
    }

    #[test]
    fn fast_leaks_open_on_the_one_minute_window_within_their_targets() {
        let settings = LeakSettings::default();
        let cases: [(&dyn Detector, Metric, f64, f64, i64); 3] = [
            (
                &SocketLeak::new(settings.clone()),
                Metric::TcpCloseWait,
                2.0,
                5.0,
                60,
            ),
            (
                &FdLeak::new(settings.clone()),
                Metric::FdsOpen,
                40.0,
                5.0,
                90,
            ),
            (
                &TaskLeak::new(settings.clone()),
                Metric::TasksAlive,
                300.0,
                10.0,
                60,
            ),
        ];
        for (detector, metric, base, rate, target) in cases {
            let leak = |ago| Box::new(leak_since(base, rate, ago)) as Box<dyn Fn(i64) -> f64>;
            let (after, window) = first_flagged(detector, metric, &leak)
                .unwrap_or_else(|| panic!("{metric:?} never flagged"));
            assert!(
                after <= target,
                "{metric:?} flagged {after} s in, target {target}"
            );
            assert_eq!(window, 60, "{metric:?} decided by the one-minute window");
        }
    }

    /// An instance that started `age_s` seconds ago, its series sampled
    /// from its start only.
    fn young(age_s: i64, series: &[(Metric, SeriesFn<'_>)]) -> InstanceWindow<'static> {
        let mut one = instance("young", series);
        let started = NOW_MS - age_s * 1000;
        one.started_at_ms = started;
        for points in one.series.values_mut() {
            points.retain(|&(t, _)| t >= started);
        }
        one
    }

    #[test]
    fn a_pool_warming_over_its_first_minute_is_not_a_leak_at_any_age() {
        let settings = LeakSettings::default();
        let fds = FdLeak::new(settings.clone());
        let tasks = TaskLeak::new(settings);
        for age_s in (20..=600).step_by(10) {
            let born = SPAN_MS / 1000 - age_s;
            let pool =
                move |t: i64| 10.0 + 200.0 * ((secs(t) - born as f64) / 60.0).clamp(0.0, 1.0);
            let cpu = |_| 5.0;
            for (detector, metric) in [
                (&fds as &dyn Detector, Metric::FdsOpen),
                (&tasks as &dyn Detector, Metric::TasksAlive),
            ] {
                let one = young(age_s, &[(metric, &pool), (Metric::CpuPercent, &cpu)]);
                assert_eq!(
                    flagged(detector, one),
                    None,
                    "{metric:?} at {age_s} s of age"
                );
            }
        }
    }

    #[test]
    fn a_tenfold_load_step_with_its_sockets_and_tasks_is_not_a_leak() {
        let settings = LeakSettings::default();
        let detectors: [(&dyn Detector, Metric); 2] = [
            (&FdLeak::new(settings.clone()), Metric::FdsOpen),
            (&TaskLeak::new(settings.clone()), Metric::TasksAlive),
        ];
        // The step lasts 2 minutes; judged at every point of it and after.
        for step_ago in (10..=300).step_by(10) {
            let start = (SPAN_MS / 1000 - step_ago) as f64;
            let busy =
                move |t: i64| (secs(t) - start).clamp(0.0, 120.0) > 0.0 && secs(t) - start < 120.0;
            let count = move |t: i64| if busy(t) { 500.0 } else { 50.0 };
            let cpu = move |t: i64| if busy(t) { 80.0 } else { 8.0 };
            for (detector, metric) in detectors {
                let one = instance("a", &[(metric, &count), (Metric::CpuPercent, &cpu)]);
                assert_eq!(
                    flagged(detector, one),
                    None,
                    "{metric:?}, step {step_ago} s ago"
                );
            }
        }
    }

    #[test]
    fn a_noisy_flat_count_is_not_a_leak() {
        let settings = LeakSettings::default();
        let noisy = |t: i64| 100.0 + ((t / 1000 * 7919) % 23) as f64;
        let cpu = |_| 10.0;
        for (detector, metric) in [
            (
                &FdLeak::new(settings.clone()) as &dyn Detector,
                Metric::FdsOpen,
            ),
            (&SocketLeak::new(settings.clone()), Metric::TcpCloseWait),
            (&TaskLeak::new(settings.clone()), Metric::TasksAlive),
        ] {
            let one = instance("a", &[(metric, &noisy), (Metric::CpuPercent, &cpu)]);
            assert_eq!(flagged(detector, one), None, "{metric:?}");
        }
    }
}
