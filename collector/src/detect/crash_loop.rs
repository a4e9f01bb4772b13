//! `crash_loop`: a service whose instances keep dying.
//!
//! Each process start is a new instance; the registry marks one `down` when
//! its connection drops or its heartbeats stop. Several deaths of one
//! service within a short window is a crash loop, whatever the exit reason:
//! an OOM kill after a leak, a panic on some input, a failing health check.
//! One death per instance during a rolling deploy is not: it takes
//! `crash_min_deaths` deaths within `crash_window`. The evidence lists each
//! life, so the rhythm (every 5 s? every 3 h?) is visible at a glance.

use meshwatch_api::evidence::CrashLoopEvidence;

use super::leaks::LeakSettings;
use super::{Detector, InstanceWindow, Needs, Problem, Verdict, Window};
use crate::incidents::{Evidence, Finding, IncidentKind, Severity};
use crate::registry::InstanceState;

/// The `crash_loop` detector.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    settings: LeakSettings,
}

impl CrashLoop {
    /// A detector with these thresholds.
    pub fn new(settings: LeakSettings) -> Self {
        Self { settings }
    }
}

impl Detector for CrashLoop {
    fn kind(&self) -> IncidentKind {
        IncidentKind::CrashLoop
    }

    fn needs(&self) -> Needs {
        Needs {
            metrics: &[],
            span: self.settings.crash_window,
            heap_sites: false,
            latest_snapshot: false,
        }
    }

    fn check(&self, window: &Window<'_>) -> Verdict {
        let since = window.now_ms.saturating_sub(window.span_ms);
        let deaths: Vec<_> = window
            .instances
            .iter()
            // A stop (the probe said goodbye) is no death: a deploy or a
            // Ctrl-C is not a crash.
            .filter(|i| i.died() && i.last_seen_ms >= since)
            .collect();
        if deaths.len() < self.settings.crash_min_deaths {
            return Verdict::Healthy;
        }
        let mut lives: Vec<f64> = deaths
            .iter()
            .map(|i| (i.last_seen_ms - i.started_at_ms).max(0) as f64 / 1000.0)
            .collect();
        let median_life = super::trend::median(&mut lives).unwrap_or(0.0);
        let alive = window
            .instances
            .iter()
            .any(|i| i.state != InstanceState::Down);
        let restarts = window
            .instances
            .iter()
            .map(|i| i.restarts)
            .max()
            .unwrap_or(0);
        Verdict::Unhealthy(vec![Problem {
            instance: None,
            detail: String::new(),
            finding: Finding {
                severity: if alive {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                summary: format!(
                    "{} is crash-looping: {} deaths in the last {}, each instance living about {}{}",
                    window.service,
                    deaths.len(),
                    super::memory::duration(window.span_ms as f64 / 1000.0),
                    super::memory::duration(median_life),
                    if alive { "" } else { "; no instance is up now" },
                ),
                evidence: Evidence::CrashLoop(CrashLoopEvidence {
                    window_seconds: window.span_ms / 1000,
                    deaths: u32::try_from(deaths.len()).unwrap_or(u32::MAX),
                    restarts,
                    median_lifetime_seconds: median_life,
                    instance_up: alive,
                    lives: window.instances.iter().map(InstanceWindow::life).collect(),
                }),
            },
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{NOW_MS, instance, window};

    fn life(
        id: &'static str,
        started_s_ago: i64,
        died_s_ago: Option<i64>,
    ) -> super::super::InstanceWindow<'static> {
        let mut i = instance(id, &[]);
        i.started_at_ms = NOW_MS - started_s_ago * 1000;
        i.last_seen_ms = NOW_MS - died_s_ago.unwrap_or(0) * 1000;
        i.state = if died_s_ago.is_some() {
            InstanceState::Down
        } else {
            InstanceState::Restarted
        };
        i
    }

    #[test]
    fn flags_instances_dying_every_few_seconds() {
        let verdict = CrashLoop::new(LeakSettings::default()).check(&window(vec![
            life("a", 40, Some(35)),
            life("b", 30, Some(25)),
            life("c", 20, Some(15)),
            life("d", 10, None),
        ]));
        let Verdict::Unhealthy(problems) = verdict else {
            panic!("expected a crash loop, got {verdict:?}");
        };
        let Evidence::CrashLoop(evidence) = &problems[0].finding.evidence else {
            panic!("crash loop evidence");
        };
        assert_eq!(evidence.deaths, 3);
        assert_eq!(evidence.median_lifetime_seconds, 5.0);
        assert_eq!(evidence.lives.len(), 4);
        assert_eq!(evidence.lives[0].lived_seconds, 5);
        assert_eq!(problems[0].finding.severity, Severity::Warning);
        assert_eq!(problems[0].instance, None, "a service-wide problem");
    }

    #[test]
    fn clean_stops_are_not_deaths() {
        let stopped = |id, started, ended| {
            let mut i = life(id, started, Some(ended));
            i.ending = Some(crate::registry::Ending::Stopped);
            i
        };
        let verdict = CrashLoop::new(LeakSettings::default()).check(&window(vec![
            stopped("a", 40, 35),
            stopped("b", 30, 25),
            stopped("c", 20, 15),
            life("d", 10, None),
        ]));
        assert_eq!(
            verdict,
            Verdict::Healthy,
            "five Ctrl-Cs are not a crash loop"
        );
        // Deaths among the stops still count.
        let verdict = CrashLoop::new(LeakSettings::default()).check(&window(vec![
            stopped("a", 40, 35),
            life("b", 30, Some(25)),
            life("c", 20, Some(15)),
            life("d", 12, Some(11)),
            life("e", 10, None),
        ]));
        assert!(matches!(verdict, Verdict::Unhealthy(_)), "{verdict:?}");
    }

    #[test]
    fn a_rolling_deploy_and_old_deaths_are_not_a_loop() {
        let verdict = CrashLoop::new(LeakSettings::default()).check(&window(vec![
            // Died long before the window.
            life("old1", 5000, Some(4000)),
            life("old2", 4000, Some(3000)),
            // Replaced once by the deploy, a minute ago.
            life("a", 3000, Some(60)),
            life("b", 60, None),
        ]));
        assert_eq!(verdict, Verdict::Healthy);
    }
}
