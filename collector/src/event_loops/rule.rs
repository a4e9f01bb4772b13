//! The rule that tells an event loop stuck in code that never yields from
//! one that is merely busy, from outside the process.
//!
//! A busy loop, however saturated, returns to its poll function between
//! callbacks: the beacon ([`super::beacon`]) fires within microseconds of
//! being armed. A loop held by one callback does not, for as long as the
//! callback runs. So the loop's thread is stuck once the beacon has been
//! silent for the threshold (1 s, the probe's default stuck-poll
//! threshold) while the thread is not waiting in its poll (an idle loop
//! waits there, silent too). It is a `runaway_loop` when the thread spent
//! at least half that time running or runnable (on a CPU, or waiting in
//! the run queue for one: a spinning thread on a loaded machine gets only
//! part of a CPU, but wants all of it), else a `blocked_worker` (asleep in
//! a synchronous read, a lock, a sleep). Only a thread seen turning once
//! (the beacon hit
//! at least once) is judged: a thread that never reaches this poll function
//! (a batch job, a loop through another library) is not an event loop this
//! rule knows.

/// How long a silent beacon makes a loop stuck.
pub(crate) const THRESHOLD_MS: u64 = 1_000;
/// How often a stuck loop's evidence is sent again.
const REPORT_EVERY_MS: u64 = 1_000;

/// What one look at the loop's thread found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Look {
    /// Milliseconds on a monotonic clock.
    pub now_ms: u64,
    /// The beacon fired since it was armed (and has been re-armed).
    pub turned: bool,
    /// The thread's CPU time so far, user and system, in milliseconds.
    pub cpu_ms: u64,
    /// The thread's time in the run queue so far, runnable but waiting for
    /// a CPU, in milliseconds.
    pub run_queue_ms: u64,
    /// The thread is waiting in its poll system call now.
    pub waiting_in_poll: bool,
}

/// What the rule makes of a look.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The loop turns, or waits, or is not a loop the rule judges.
    Turning,
    /// Silent for half the threshold: worth taking stack samples.
    Suspect,
    /// Stuck since `since_ms`; `report` when the evidence should be sent
    /// (`first` for the first time).
    Stuck {
        since_ms: u64,
        first: bool,
        report: bool,
        runaway: bool,
        cpu_percent: f64,
    },
    /// The stuck period that began at `since_ms` is over.
    Recovered { since_ms: u64, stuck_for_ms: u64 },
}

/// The rule's memory of one loop.
#[derive(Debug, Default)]
pub(crate) struct StallRule {
    /// Seen waiting in its poll call, or turning: an event loop.
    is_loop: bool,
    /// The beacon missed a turn: the loop is not judged.
    beacon_blind: bool,
    /// Seen waiting in its poll call at the last look.
    was_waiting: bool,
    /// Seen leaving its poll call since the last hit.
    left_poll: bool,
    /// When the loop was last known at its poll, and its CPU time then.
    at_poll_ms: u64,
    cpu_at_poll_ms: u64,
    run_queue_at_poll_ms: u64,
    /// The current stuck period: its start and its last report.
    stuck: Option<(u64, u64)>,
}

impl StallRule {
    /// Whether the beacon was caught missing a turn of the loop.
    pub(crate) fn beacon_blind(&self) -> bool {
        self.beacon_blind
    }

    /// Judges one look.
    pub(crate) fn observe(&mut self, look: Look) -> Verdict {
        if look.turned {
            self.left_poll = false;
        } else if look.waiting_in_poll && self.left_poll {
            self.beacon_blind = true;
        }
        if self.was_waiting && !look.waiting_in_poll && !look.turned {
            self.left_poll = true;
        }
        self.was_waiting = look.waiting_in_poll;
        if look.turned || look.waiting_in_poll {
            self.is_loop = true;
            self.at_poll_ms = look.now_ms;
            self.cpu_at_poll_ms = look.cpu_ms;
            self.run_queue_at_poll_ms = look.run_queue_ms;
            return match self.stuck.take() {
                Some((since_ms, _)) => Verdict::Recovered {
                    since_ms,
                    stuck_for_ms: look.now_ms.saturating_sub(since_ms),
                },
                None => Verdict::Turning,
            };
        }
        let silent_ms = look.now_ms.saturating_sub(self.at_poll_ms);
        if !self.is_loop || self.beacon_blind || silent_ms < THRESHOLD_MS / 2 {
            return Verdict::Turning;
        }
        if silent_ms < THRESHOLD_MS {
            return Verdict::Suspect;
        }
        let cpu_ms = look.cpu_ms.saturating_sub(self.cpu_at_poll_ms);
        let queued_ms = look.run_queue_ms.saturating_sub(self.run_queue_at_poll_ms);
        let share = cpu_ms as f64 / silent_ms as f64;
        let runaway = (cpu_ms + queued_ms) as f64 >= 0.5 * silent_ms as f64;
        let since_ms = self.at_poll_ms;
        let (first, report) = match self.stuck {
            None => {
                self.stuck = Some((since_ms, look.now_ms));
                (true, true)
            }
            Some((_, reported_ms)) if look.now_ms - reported_ms >= REPORT_EVERY_MS => {
                self.stuck = Some((since_ms, look.now_ms));
                (false, true)
            }
            Some(_) => (false, false),
        };
        Verdict::Stuck {
            since_ms,
            first,
            report,
            runaway,
            cpu_percent: (share * 100.0).min(100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(now_ms: u64, turned: bool, cpu_ms: u64, waiting_in_poll: bool) -> Look {
        Look {
            now_ms,
            turned,
            cpu_ms,
            run_queue_ms: 0,
            waiting_in_poll,
        }
    }

    /// Looks every 100 ms from `from` to `to`, the thread on a CPU for
    /// `cpu_share` of the time, turning or not.
    fn run(rule: &mut StallRule, from: u64, to: u64, cpu_share: f64, turned: bool) -> Vec<Verdict> {
        (from..=to)
            .step_by(100)
            .map(|t| rule.observe(look(t, turned, (t as f64 * cpu_share) as u64, false)))
            .collect()
    }

    #[test]
    fn a_saturated_loop_that_turns_is_never_stuck() {
        let mut rule = StallRule::default();
        let verdicts = run(&mut rule, 0, 60_000, 1.0, true);
        assert!(verdicts.iter().all(|v| *v == Verdict::Turning));
    }

    #[test]
    fn a_loop_that_stops_turning_while_on_a_cpu_is_a_runaway_within_the_threshold() {
        let mut rule = StallRule::default();
        run(&mut rule, 0, 1_000, 0.2, true);
        let spinning = run(&mut rule, 1_100, 3_000, 1.0, false);
        assert_eq!(spinning[3], Verdict::Turning);
        assert_eq!(spinning[4], Verdict::Suspect, "half the threshold");
        let first = spinning
            .iter()
            .position(|v| matches!(v, Verdict::Stuck { first: true, .. }))
            .unwrap();
        assert_eq!(first, 9, "stuck at 2.0 s, 1 s after the last turn");
        let Verdict::Stuck {
            since_ms,
            runaway,
            cpu_percent,
            ..
        } = &spinning[first]
        else {
            unreachable!()
        };
        assert_eq!(*since_ms, 1_000);
        assert!(*runaway && *cpu_percent > 90.0, "{cpu_percent}");
        let reports = spinning
            .iter()
            .filter(|v| matches!(v, Verdict::Stuck { report: true, .. }))
            .count();
        assert_eq!(reports, 2, "the first report and one a second later");
        assert_eq!(
            rule.observe(look(3_100, true, 3_100, false)),
            Verdict::Recovered {
                since_ms: 1_000,
                stuck_for_ms: 2_100
            }
        );
    }

    #[test]
    fn a_loop_off_its_poll_and_off_the_cpu_is_a_blocked_worker() {
        let mut rule = StallRule::default();
        run(&mut rule, 0, 500, 0.1, true);
        let blocked = run(&mut rule, 600, 2_000, 0.0, false);
        assert!(blocked.iter().any(|v| matches!(
            v,
            Verdict::Stuck {
                runaway: false,
                first: true,
                ..
            }
        )));
    }

    #[test]
    fn a_spinning_loop_starved_of_cpu_by_a_loaded_machine_is_still_a_runaway() {
        let mut rule = StallRule::default();
        run(&mut rule, 0, 500, 0.1, true);
        // A third of a CPU, the rest of the time in the run queue.
        let verdicts: Vec<_> = (600..=2_000u64)
            .step_by(100)
            .map(|t| {
                rule.observe(Look {
                    run_queue_ms: (t - 500) * 2 / 3,
                    ..look(t, false, 50 + (t - 500) / 3, false)
                })
            })
            .collect();
        assert!(verdicts.iter().any(|v| matches!(
            v,
            Verdict::Stuck {
                runaway: true,
                first: true,
                ..
            }
        )));
    }

    #[test]
    fn an_idle_loop_waits_in_its_poll_and_is_not_stuck() {
        let mut rule = StallRule::default();
        run(&mut rule, 0, 300, 0.0, true);
        for t in (400..30_000).step_by(100) {
            assert_eq!(rule.observe(look(t, false, 0, true)), Verdict::Turning);
        }
        // Woken after a long wait, a callback runs for 400 ms: not stuck,
        // the silence counts from the wait.
        for t in (30_100..30_500).step_by(100) {
            assert!(!matches!(
                rule.observe(look(t, false, t - 30_000, false)),
                Verdict::Stuck { .. }
            ));
        }
    }

    #[test]
    fn a_loop_that_idled_in_its_poll_is_judged_without_a_turn_seen() {
        let mut rule = StallRule::default();
        rule.observe(look(0, false, 0, true));
        let spinning = run(&mut rule, 100, 1_500, 1.0, false);
        assert!(
            spinning
                .iter()
                .any(|v| matches!(v, Verdict::Stuck { runaway: true, .. })),
            "woken from a long wait into a spin: {spinning:?}"
        );
    }

    #[test]
    fn a_beacon_caught_missing_a_turn_stops_the_judging() {
        let mut rule = StallRule::default();
        rule.observe(look(0, false, 0, true));
        rule.observe(look(100, false, 50, false));
        rule.observe(look(200, false, 60, true));
        assert!(rule.beacon_blind(), "left and came back without a hit");
        let busy = run(&mut rule, 300, 5_000, 1.0, false);
        assert!(busy.iter().all(|v| *v == Verdict::Turning));

        let mut rule = StallRule::default();
        rule.observe(look(0, false, 0, true));
        rule.observe(look(100, false, 50, false));
        rule.observe(look(200, true, 60, true));
        assert!(!rule.beacon_blind(), "the hit saw the turn");
    }

    #[test]
    fn a_thread_never_seen_turning_is_not_judged() {
        let mut rule = StallRule::default();
        let verdicts = run(&mut rule, 0, 10_000, 1.0, false);
        assert!(verdicts.iter().all(|v| *v == Verdict::Turning));
    }
}
