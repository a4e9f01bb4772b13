//! `task_leak`: tokio tasks that are spawned and never finish.
//!
//! The typical bug: a task per request that awaits a channel nobody ever
//! completes. Each one is cheap, so nothing fails for hours, but
//! `num_alive_tasks` (a stable tokio metric) climbs with every request while
//! the load stays flat. A rise matched by load (CPU rising as much) is
//! traffic, not a leak. The spawn site of the leaking tasks needs
//! `--cfg tokio_unstable` task hooks, which the probe does not yet collect;
//! the evidence says so.

use meshwatch_api::evidence::{SpawnSite, TaskLeakEvidence};

use super::leaks::{LeakSettings, explained_by_load, per_instance};
use super::{Detector, InstanceWindow, Needs, Verdict, Window};
use crate::incidents::{Evidence, Finding, IncidentKind, Severity};
use crate::series::Metric;

/// The `task_leak` detector.
#[derive(Debug, Clone)]
pub struct TaskLeak {
    settings: LeakSettings,
}

impl TaskLeak {
    /// A detector with these thresholds.
    pub fn new(settings: LeakSettings) -> Self {
        Self { settings }
    }
}

impl Detector for TaskLeak {
    fn kind(&self) -> IncidentKind {
        IncidentKind::TaskLeak
    }

    fn needs(&self) -> Needs {
        Needs {
            metrics: &[Metric::TasksAlive, Metric::CpuPercent],
            span: self.settings.window,
            heap_sites: false,
            latest_snapshot: true,
        }
    }

    fn check(&self, window: &Window<'_>) -> Verdict {
        per_instance(
            window,
            &self.settings,
            Metric::TasksAlive,
            |instance, tasks| {
                let leaking = if window.open {
                    tasks.still_rising()
                } else {
                    tasks.rising(self.settings.min_task_growth)
                        && tasks.relative_growth() >= self.settings.min_task_relative_growth
                        && !explained_by_load(tasks, instance, window.now_ms)
                };
                if !leaking {
                    return None;
                }
                let alive = instance
                    .latest(Metric::TasksAlive)
                    .unwrap_or(tasks.trend.level);
                let spawn_sites = spawn_sites(instance);
                let mut summary = format!(
                    "{} leaks tasks: {alive:.0} alive, {} while its load is flat",
                    window.service,
                    tasks.rate_text()
                );
                if let Some(top) = spawn_sites.first().map(|s| s.location.as_str()) {
                    summary.push_str(&format!("; most spawned at {top}"));
                }
                Some(Finding {
                severity: Severity::Warning,
                summary,
                evidence: Evidence::TaskLeak(TaskLeakEvidence {
                    instance: instance.instance_id.to_owned(),
                    window_seconds: tasks.scale.window_ms / 1000,
                    tasks_alive: alive.max(0.0).round() as u64,
                    tasks_trend: tasks.evidence(),
                    cpu_percent: instance.latest(Metric::CpuPercent),
                    spawn_site_note: spawn_sites.is_empty().then(|| {
                        "spawn sites need the probe's task hooks on the runtime (a service built with --cfg tokio_unstable)".to_owned()
                    }),
                    spawn_sites,
                }),
            })
            },
        )
    }
}

/// The spawn sites with most alive tasks, from the instance's latest
/// snapshot: empty unless the service runs the probe's task hooks.
fn spawn_sites(instance: &InstanceWindow<'_>) -> Vec<SpawnSite> {
    let Some(snapshot) = instance.latest else {
        return Vec::new();
    };
    let mut sites: Vec<SpawnSite> = snapshot
        .runtimes
        .iter()
        .flat_map(|r| &r.spawn_sites)
        .map(|s| SpawnSite {
            location: s.location.clone(),
            alive: s.alive,
        })
        .collect();
    sites.sort_unstable_by(|a, b| {
        b.alive
            .cmp(&a.alive)
            .then_with(|| b.location.cmp(&a.location))
    });
    sites.truncate(5);
    sites
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{SeriesFn, instance, window};

    fn detector() -> TaskLeak {
        TaskLeak::new(LeakSettings::default())
    }

    #[test]
    fn names_the_spawn_site_when_the_task_hooks_report_it() {
        let leak = |t: i64| 20.0 + t as f64 / 1000.0;
        let mut instance = instance(
            "a",
            &[(Metric::TasksAlive, &leak), (Metric::CpuPercent, &|_| 30.0)],
        );
        let snapshot = meshwatch_proto::v1::Snapshot {
            runtimes: vec![meshwatch_proto::v1::RuntimeStats {
                spawn_sites: vec![
                    meshwatch_proto::v1::SpawnSite {
                        location: "src/a.rs:1:1".into(),
                        alive: 3,
                    },
                    meshwatch_proto::v1::SpawnSite {
                        location: "src/leak.rs:9:5".into(),
                        alive: 600,
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let snapshot: &'static _ = Box::leak(Box::new(snapshot));
        instance.latest = Some(snapshot);
        let Verdict::Unhealthy(problems) = detector().check(&window(vec![instance])) else {
            panic!("expected a leak");
        };
        let finding = &problems[0].finding;
        assert!(
            finding.summary.contains("most spawned at src/leak.rs:9:5"),
            "{}",
            finding.summary
        );
        let Evidence::TaskLeak(evidence) = &finding.evidence else {
            panic!("task leak evidence");
        };
        assert_eq!(evidence.spawn_sites[0].alive, 600);
        assert_eq!(evidence.spawn_site_note, None);
    }

    #[test]
    fn flags_tasks_rising_under_flat_load() {
        let leak = |t: i64| 20.0 + t as f64 / 1000.0 + (t / 1000 % 4) as f64; // +60/min
        let cpu = |t: i64| 30.0 + (t / 1000 % 5) as f64;
        let verdict = detector().check(&window(vec![instance(
            "a",
            &[(Metric::TasksAlive, &leak), (Metric::CpuPercent, &cpu)],
        )]));
        assert!(
            matches!(verdict, Verdict::Unhealthy(ref p) if p.len() == 1),
            "{verdict:?}"
        );
    }

    #[test]
    fn an_open_leak_stays_open_while_tasks_climb_even_as_load_rises() {
        let leak = |t: i64| 20.0 + t as f64 / 1000.0;
        let cpu = |t: i64| 10.0 + t as f64 / 10_000.0;
        let series: &[(Metric, SeriesFn<'_>)] =
            &[(Metric::TasksAlive, &leak), (Metric::CpuPercent, &cpu)];
        let mut w = window(vec![instance("a", series)]);
        assert_eq!(detector().check(&w), Verdict::Healthy, "load explains it");
        w.open = true;
        assert!(
            matches!(detector().check(&w), Verdict::Unhealthy(_)),
            "but once open it stays"
        );
        let flat = |_| 500.0;
        let mut w = window(vec![instance("a", &[(Metric::TasksAlive, &flat)])]);
        w.open = true;
        assert_eq!(
            detector().check(&w),
            Verdict::Healthy,
            "resolves when the climb stops"
        );
    }

    #[test]
    fn bursts_daily_swings_and_warm_up_are_not_leaks() {
        let bursts = |t: i64| if t % 30_000 < 2000 { 900.0 } else { 40.0 };
        let swing_tasks = |t: i64| 100.0 + t as f64 / 2000.0;
        let swing_cpu = |t: i64| 20.0 + t as f64 / 20_000.0;
        let warm = |t: i64| 10.0 + (t as f64 / 400.0).min(300.0);
        let verdict = detector().check(&window(vec![
            instance(
                "a",
                &[
                    (Metric::TasksAlive, &bursts),
                    (Metric::CpuPercent, &|_| 30.0),
                ],
            ),
            instance(
                "b",
                &[
                    (Metric::TasksAlive, &swing_tasks),
                    (Metric::CpuPercent, &swing_cpu),
                ],
            ),
            instance(
                "c",
                &[(Metric::TasksAlive, &warm), (Metric::CpuPercent, &|_| 30.0)],
            ),
        ]));
        assert_eq!(verdict, Verdict::Healthy);
    }
}
