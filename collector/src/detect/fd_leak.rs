//! `fd_leak`: file descriptors trending toward their limit.
//!
//! Every open file, socket, pipe and epoll instance holds an fd, and at
//! RLIMIT_NOFILE the next `accept` or `open` fails, which usually looks like
//! an outage with nothing in the logs but `EMFILE`. The detector flags a
//! floor of open fds that keeps rising faster than load explains, and
//! projects when the limit is reached at the current slope.

use meshwatch_api::evidence::FdLeakEvidence;

use super::leaks::{LeakSettings, explained_by_load, per_instance};
use super::{Detector, Needs, Verdict, Window};
use crate::incidents::{Evidence, Finding, IncidentKind, Severity};
use crate::series::Metric;

/// The `fd_leak` detector.
#[derive(Debug, Clone)]
pub struct FdLeak {
    settings: LeakSettings,
}

impl FdLeak {
    /// A detector with these thresholds.
    pub fn new(settings: LeakSettings) -> Self {
        Self { settings }
    }
}

impl Detector for FdLeak {
    fn kind(&self) -> IncidentKind {
        IncidentKind::FdLeak
    }

    fn needs(&self) -> Needs {
        Needs {
            metrics: &[
                Metric::FdsOpen,
                Metric::FdsLimit,
                Metric::CpuPercent,
                Metric::TcpSockets,
            ],
            span: self.settings.window,
            heap_sites: false,
            latest_snapshot: false,
        }
    }

    fn check(&self, window: &Window<'_>) -> Verdict {
        per_instance(window, &self.settings, Metric::FdsOpen, |instance, fds| {
            let leaking = if window.open {
                fds.still_rising()
            } else {
                fds.rising(self.settings.min_fd_growth)
                    && !explained_by_load(fds, instance, window.now_ms)
            };
            if !leaking {
                return None;
            }
            let open = instance.latest(Metric::FdsOpen).unwrap_or(fds.trend.level);
            // 0 means unlimited.
            let limit = instance.latest(Metric::FdsLimit).filter(|&l| l > 0.0);
            let time_to_limit_s = limit.map(|l| ((l - open) / fds.trend.slope).max(0.0));
            let critical = time_to_limit_s
                .is_some_and(|s| s <= self.settings.critical_fd_time_to_limit.as_secs_f64());
            let mut summary = format!(
                "{} leaks file descriptors: {open:.0} open, {}",
                window.service,
                fds.rate_text()
            );
            if let (Some(limit), Some(s)) = (limit, time_to_limit_s) {
                summary.push_str(&format!(
                    "; reaches the limit of {limit:.0} in {}",
                    crate::detect::memory::duration(s)
                ));
            }
            Some(Finding {
                severity: if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                summary,
                evidence: Evidence::FdLeak(FdLeakEvidence {
                    instance: instance.instance_id.to_owned(),
                    window_seconds: fds.scale.window_ms / 1000,
                    fds_open: open.max(0.0).round() as u64,
                    fds_limit: limit.map(|l| l.round() as u64),
                    projected_time_to_limit_seconds: time_to_limit_s,
                    fds_trend: fds.evidence(),
                    tcp_sockets: instance.latest_count(Metric::TcpSockets),
                }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{instance, window};

    fn detector() -> FdLeak {
        FdLeak::new(LeakSettings::default())
    }

    #[test]
    fn flags_fds_climbing_toward_the_limit_with_time_to_exhaustion() {
        let leak = |t: i64| 30.0 + t as f64 / 5000.0; // +12/min
        let verdict = detector().check(&window(vec![instance(
            "a",
            &[
                (Metric::FdsOpen, &leak),
                (Metric::FdsLimit, &|_| 1024.0),
                (Metric::CpuPercent, &|_| 5.0),
            ],
        )]));
        let Verdict::Unhealthy(problems) = verdict else {
            panic!("expected a leak, got {verdict:?}");
        };
        let Evidence::FdLeak(evidence) = &problems[0].finding.evidence else {
            panic!("fd leak evidence");
        };
        assert_eq!(evidence.fds_limit, Some(1024));
        let eta = evidence.projected_time_to_limit_seconds.unwrap();
        // (1024 - 150) fds at 0.2 fd/s is about 73 minutes.
        assert!((4000.0..4800.0).contains(&eta), "{eta}");
        assert_eq!(problems[0].finding.severity, Severity::Warning);
        assert!(
            problems[0]
                .finding
                .summary
                .contains("reaches the limit of 1024")
        );
    }

    #[test]
    fn bursts_daily_swings_and_warm_up_are_not_leaks() {
        // Short bursts of 200 extra fds.
        let bursts = |t: i64| if t % 90_000 < 5000 { 230.0 } else { 30.0 };
        // Morning ramp: fds and CPU rise together with traffic.
        let ramp_fds = |t: i64| 100.0 + t as f64 / 3000.0;
        let ramp_cpu = |t: i64| 10.0 + t as f64 / 30_000.0;
        // A pool opening 80 connections during the first two minutes.
        let warm = |t: i64| 20.0 + (t as f64 / 1500.0).min(80.0);
        let verdict = detector().check(&window(vec![
            instance(
                "a",
                &[(Metric::FdsOpen, &bursts), (Metric::CpuPercent, &|_| 5.0)],
            ),
            instance(
                "b",
                &[
                    (Metric::FdsOpen, &ramp_fds),
                    (Metric::CpuPercent, &ramp_cpu),
                ],
            ),
            instance(
                "c",
                &[(Metric::FdsOpen, &warm), (Metric::CpuPercent, &|_| 5.0)],
            ),
        ]));
        assert_eq!(verdict, Verdict::Healthy);
    }
}
