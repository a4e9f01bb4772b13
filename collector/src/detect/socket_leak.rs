//! `socket_leak`: sockets the service never closes.
//!
//! The signal is CLOSE_WAIT: the peer hung up, the kernel told the process,
//! and the process has not closed its end. A healthy service has CLOSE_WAIT
//! sockets only for the moment between the peer's FIN and its own close, so
//! a floor of them that keeps rising is an unclosed socket on some error
//! path, unambiguously. ESTABLISHED connections rising is not flagged on its
//! own: a proxy holding WebSockets legitimately gains connections with its
//! users, and without a request rate the probe cannot tell the two apart;
//! the connection-age histogram in the instance's socket view shows those.

use meshwatch_api::evidence::SocketLeakEvidence;

use super::leaks::{LeakSettings, per_instance};
use super::{Detector, Needs, Verdict, Window};
use crate::incidents::{Evidence, Finding, IncidentKind, Severity};
use crate::series::Metric;

/// The `socket_leak` detector.
#[derive(Debug, Clone)]
pub struct SocketLeak {
    settings: LeakSettings,
}

impl SocketLeak {
    /// A detector with these thresholds.
    pub fn new(settings: LeakSettings) -> Self {
        Self { settings }
    }
}

impl Detector for SocketLeak {
    fn kind(&self) -> IncidentKind {
        IncidentKind::SocketLeak
    }

    fn needs(&self) -> Needs {
        Needs {
            metrics: &[
                Metric::TcpCloseWait,
                Metric::TcpEstablished,
                Metric::FdsOpen,
            ],
            span: self.settings.window,
            heap_sites: false,
            latest_snapshot: false,
        }
    }

    fn check(&self, window: &Window<'_>) -> Verdict {
        per_instance(
            window,
            &self.settings,
            Metric::TcpCloseWait,
            |instance, close_wait| {
                let leaking = if window.open {
                    close_wait.still_rising()
                } else {
                    close_wait.rising(self.settings.min_close_wait_growth)
                };
                if !leaking {
                    return None;
                }
                let now = instance
                    .latest(Metric::TcpCloseWait)
                    .unwrap_or(close_wait.trend.level);
                Some(Finding {
                    severity: Severity::Warning,
                    summary: format!(
                        "{} leaks sockets: {now:.0} in CLOSE_WAIT, {} (peers hung up, the service never closed its side)",
                        window.service,
                        close_wait.rate_text(),
                    ),
                    evidence: Evidence::SocketLeak(SocketLeakEvidence {
                        instance: instance.instance_id.to_owned(),
                        window_seconds: close_wait.scale.window_ms / 1000,
                        tcp_close_wait: now.max(0.0).round() as u64,
                        close_wait_trend: close_wait.evidence(),
                        tcp_established: instance.latest_count(Metric::TcpEstablished),
                        fds_open: instance.latest_count(Metric::FdsOpen),
                    }),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{instance, window};

    fn detector() -> SocketLeak {
        SocketLeak::new(LeakSettings::default())
    }

    #[test]
    fn flags_close_wait_that_keeps_rising() {
        // One more unclosed socket every 20 s, with a little jitter.
        let series = |t: i64| (t / 20_000) as f64 + [0.0, 1.0, 0.0][(t / 1000 % 3) as usize];
        let verdict = detector().check(&window(vec![instance(
            "a",
            &[
                (Metric::TcpCloseWait, &series),
                (Metric::TcpEstablished, &|_| 40.0),
            ],
        )]));
        let Verdict::Unhealthy(problems) = verdict else {
            panic!("expected a leak, got {verdict:?}");
        };
        assert_eq!(problems[0].instance.as_deref(), Some("a"));
        assert!(problems[0].finding.summary.contains("CLOSE_WAIT"));
    }

    #[test]
    fn bursts_of_close_wait_and_a_warming_pool_are_not_leaks() {
        // Brief spikes of 30 CLOSE_WAIT sockets that are closed again.
        let bursts = |t: i64| if t % 60_000 < 3000 { 30.0 } else { 0.0 };
        // A pool filling to 50 connections in the first minute, then flat.
        let warming = |t: i64| (t as f64 / 1200.0).min(50.0);
        let verdict = detector().check(&window(vec![
            instance("a", &[(Metric::TcpCloseWait, &bursts)]),
            instance(
                "b",
                &[
                    (Metric::TcpCloseWait, &|_| 0.0),
                    (Metric::TcpEstablished, &warming),
                ],
            ),
        ]));
        assert_eq!(verdict, Verdict::Healthy);
    }

    #[test]
    fn short_history_is_undecided() {
        let mut w = window(vec![instance(
            "a",
            &[(Metric::TcpCloseWait, &|t| t as f64)],
        )]);
        w.instances[0]
            .series
            .get_mut(&Metric::TcpCloseWait)
            .unwrap()
            .truncate(3);
        assert_eq!(detector().check(&w), Verdict::Undecided);
    }
}
