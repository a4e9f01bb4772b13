//! `service_down`: a service with no instance up.
//!
//! This is the registry's story of the mesh: every instance of a service
//! has been down for longer than a grace period (30 s by default, long
//! enough for a restart or a rolling deploy to bring a new one up). The
//! incident names the instance heard from last and how it ended: a stop
//! (its probe said goodbye; a warning, someone may have meant it) or a
//! death (a lost connection or missed heartbeats; critical). It resolves
//! when an instance is up again.
//!
//! A service that keeps dying and is down now is a crash loop first:
//! `crash_loop`'s evidence already says that no instance is up, so while
//! one is open this detector stands back rather than raise a second
//! incident about the same failure.

use std::time::Duration;

use meshwatch_api::evidence::ServiceDownEvidence;

use super::memory::duration;
use super::{Detector, InstanceWindow, Needs, Problem, Verdict, Window};
use crate::incidents::{Evidence, Finding, IncidentKind, Severity};
use crate::registry::InstanceState;

/// The `service_down` detector.
#[derive(Debug, Clone)]
pub struct ServiceDown {
    grace: Duration,
}

impl ServiceDown {
    /// A detector that opens once a service has had no instance up for
    /// `grace`.
    pub fn new(grace: Duration) -> Self {
        Self { grace }
    }
}

impl Detector for ServiceDown {
    fn kind(&self) -> IncidentKind {
        IncidentKind::ServiceDown
    }

    fn needs(&self) -> Needs {
        Needs {
            metrics: &[],
            span: self.grace,
            heap_sites: false,
            latest_snapshot: false,
        }
    }

    fn check(&self, window: &Window<'_>) -> Verdict {
        let up = window
            .instances
            .iter()
            .any(|i| i.state != InstanceState::Down);
        if up || window.open_kinds.contains(&IncidentKind::CrashLoop) {
            return Verdict::Healthy;
        }
        // The instance heard from last tells how the service went down.
        let Some(last) = window.instances.iter().max_by_key(|i| i.last_seen_ms) else {
            return Verdict::Healthy;
        };
        let down_for_ms = window.now_ms.saturating_sub(last.last_seen_ms);
        let grace_ms = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        if down_for_ms < grace_ms {
            // Within the grace period: a restart may be on its way. An
            // incident already open stays open.
            return if window.open {
                self.down(window, last, down_for_ms)
            } else {
                Verdict::Healthy
            };
        }
        self.down(window, last, down_for_ms)
    }
}

impl ServiceDown {
    fn down(&self, window: &Window<'_>, last: &InstanceWindow<'_>, down_for_ms: i64) -> Verdict {
        let life = last.life();
        let died = last.died();
        let ended = life.ending.map_or("went down", |e| e.describe());
        let summary = format!(
            "{} is down: no instance up for {}; the last, {}, {ended}",
            window.service,
            duration(down_for_ms as f64 / 1000.0),
            short(&life.instance_id),
        );
        Verdict::Unhealthy(vec![Problem {
            instance: None,
            detail: String::new(),
            finding: Finding {
                severity: if died {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                summary,
                evidence: Evidence::ServiceDown(ServiceDownEvidence {
                    down_since_at_ms: last.last_seen_ms,
                    grace_seconds: self.grace.as_secs(),
                    last_instance: Some(life),
                    instances_known: u32::try_from(window.instances.len()).unwrap_or(u32::MAX),
                }),
            },
        }])
    }
}

/// The first 8 characters of an instance id: enough to tell instances apart
/// in a sentence.
fn short(instance_id: &str) -> &str {
    instance_id.get(..8).unwrap_or(instance_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{NOW_MS, instance, window};
    use crate::registry::Ending;

    fn detector() -> ServiceDown {
        ServiceDown::new(Duration::from_secs(30))
    }

    fn down(id: &'static str, last_seen_ms: i64, ending: Ending) -> InstanceWindow<'static> {
        let mut i = instance(id, &[]);
        i.state = InstanceState::Down;
        i.last_seen_ms = last_seen_ms;
        i.ending = Some(ending);
        i
    }

    #[test]
    fn opens_once_every_instance_has_been_down_past_the_grace() {
        let within = window(vec![down("a", NOW_MS - 10_000, Ending::Disconnected)]);
        assert!(matches!(detector().check(&within), Verdict::Healthy));
        let past = window(vec![
            down("old", NOW_MS - 600_000, Ending::Stopped),
            down("last", NOW_MS - 40_000, Ending::MissedHeartbeats),
        ]);
        let Verdict::Unhealthy(problems) = detector().check(&past) else {
            panic!("down past the grace");
        };
        let finding = &problems[0].finding;
        assert_eq!(finding.severity, Severity::Critical, "a death");
        assert!(
            finding.summary.contains("went silent"),
            "{}",
            finding.summary
        );
        let Evidence::ServiceDown(evidence) = &finding.evidence else {
            panic!("typed evidence");
        };
        let last = evidence.last_instance.as_ref().unwrap();
        assert_eq!(last.instance_id, "last");
        assert_eq!(last.ending, Some(Ending::MissedHeartbeats));
        assert_eq!(evidence.instances_known, 2);
    }

    #[test]
    fn a_clean_stop_is_a_warning_and_an_instance_up_resolves() {
        let stopped = window(vec![down("a", NOW_MS - 60_000, Ending::Stopped)]);
        let Verdict::Unhealthy(problems) = detector().check(&stopped) else {
            panic!("down");
        };
        assert_eq!(problems[0].finding.severity, Severity::Warning);
        let back = window(vec![
            down("a", NOW_MS - 60_000, Ending::Stopped),
            instance("b", &[]),
        ]);
        assert!(matches!(detector().check(&back), Verdict::Healthy));
    }

    #[test]
    fn stands_back_while_a_crash_loop_is_open() {
        let mut dying = window(vec![down("a", NOW_MS - 60_000, Ending::Disconnected)]);
        dying.open_kinds = vec![IncidentKind::CrashLoop];
        assert!(matches!(detector().check(&dying), Verdict::Healthy));
    }
}
