//! A Node.js event loop that stopped turning, seen through the service's
//! own OpenTelemetry exports.
//!
//! Two signals, the larger taken ([`stall_ms`]):
//! - The SDK collects its metrics on a timer of the event loop, so a loop
//!   that one callback held for three seconds collects three seconds late:
//!   the gap between two collections' times, less the measured interval.
//!   It needs nothing but the SDK, and errs short (the collection due in
//!   the middle of the stall counts only the stall's second half).
//! - `@opentelemetry/instrumentation-runtime-node` exports the largest
//!   event-loop delay since the last export, `nodejs.eventloop.delay.max`.
//!   It would say the stall's full length, but a stall that spans the
//!   histogram's reset is lost (Node's `monitorEventLoopDelay` forgets its
//!   last timestamp on `reset()`, and the collection timer runs before the
//!   histogram's after a stall; seen with Node 20 and the instrumentation's
//!   0.36), so it is used when it has one.
//!
//! A stall of a second or more means one callback held the loop that long:
//! for a probe linked into a Rust service, a poll that did not return. It
//! becomes the same `StuckPoll` events a probe's watchdog sends, so the
//! incident, its kind and its evidence are the ones a Rust service gets. A
//! loop that is merely busy still turns: its timers, and so its
//! collections, run on time.
//!
//! Runaway loop or blocked worker: the process's CPU time between the two
//! exports around the stall. A callback that spins burns about a CPU second
//! per second of delay; one that blocks (a synchronous read on a slow disk,
//! `Atomics.wait`) burns next to none. At least half the stall in CPU is a
//! runaway loop.
//!
//! The export is sent by the loop itself, so it arrives only once the loop
//! turns again: the stall is known after the fact, and is reported as
//! stuck and recovered at once, with no stack. A loop that never yields
//! stops the exports too, and shows as the instance going down.

use meshwatch_proto::v1::{StuckPoll, StuckPollClass, StuckPollState};

/// The delay that counts as a stall: the probe's default stuck-poll
/// threshold (`MESHWATCH_STUCK_POLL_MS`).
pub(crate) const STALL_MS: u64 = 1000;

/// What is said of every stall seen this way, in the evidence.
const CAVEAT: &str = "Seen through the service's OpenTelemetry exports (a collection that came \
late, or nodejs.eventloop.delay.max), once the loop turned again: how long at least, and whether it \
burned CPU, but no stack. A loop that never yields stops the exports too, and shows as the instance \
going down.";

/// How long the loop stalled before this export, from the exported
/// largest delay and from how late the SDK collected; `None` when neither
/// says a stall of [`STALL_MS`] or more.
pub(crate) fn stall_ms(delay_max_ms: Option<u64>, late_by_ms: Option<i64>) -> Option<u64> {
    let late = late_by_ms.and_then(|ms| u64::try_from(ms).ok());
    [delay_max_ms, late]
        .into_iter()
        .flatten()
        .max()
        .filter(|&ms| ms >= STALL_MS)
}

/// The `StuckPoll` events for an export whose largest event-loop delay was
/// `delay_ms`, the process having spent `cpu_seconds` of CPU since the
/// previous export (`None` when not known): stuck and recovered, or none
/// when the loop did not stall. `pid` is the process's (its main thread
/// runs the loop); `seq` numbers the export, so each stall is an incident
/// of its own.
pub(crate) fn stall_events(
    pid: u32,
    delay_ms: u64,
    cpu_seconds: Option<f64>,
    seq: u64,
) -> Option<[StuckPoll; 2]> {
    if delay_ms < STALL_MS {
        return None;
    }
    let delay_s = delay_ms as f64 / 1000.0;
    let class = match cpu_seconds {
        Some(cpu) if cpu >= 0.5 * delay_s => StuckPollClass::RunawayLoop,
        Some(_) => StuckPollClass::BlockedWorker,
        None => StuckPollClass::Unspecified,
    };
    let stuck = StuckPoll {
        key: format!("event-loop-{seq}"),
        state: StuckPollState::Stuck.into(),
        class: class.into(),
        tid: pid,
        thread_name: "event loop".to_owned(),
        stuck_for_ms: delay_ms,
        cpu_percent: cpu_seconds.map_or(0.0, |cpu| (cpu / delay_s * 100.0).min(100.0)),
        caveat: CAVEAT.to_owned(),
        event_loop: true,
        ..StuckPoll::default()
    };
    let recovered = StuckPoll {
        state: StuckPollState::Recovered.into(),
        ..stuck.clone()
    };
    Some([stuck, recovered])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longer_signal_counts_and_short_ones_are_no_stall() {
        assert_eq!(stall_ms(Some(100), Some(2_200)), Some(2_200));
        assert_eq!(stall_ms(Some(3_000), Some(1_200)), Some(3_000));
        assert_eq!(stall_ms(None, Some(-50)), None, "early is not a stall");
        assert_eq!(stall_ms(Some(900), Some(300)), None);
        assert_eq!(stall_ms(None, None), None);
    }

    #[test]
    fn a_stall_spent_in_cpu_is_a_runaway_loop_and_one_spent_waiting_is_blocked() {
        assert!(
            stall_events(1, 400, Some(0.4), 1).is_none(),
            "under a second"
        );
        let [stuck, recovered] = stall_events(7, 3_000, Some(2.9), 5).unwrap();
        assert_eq!(stuck.class(), StuckPollClass::RunawayLoop);
        assert_eq!(stuck.state(), StuckPollState::Stuck);
        assert_eq!(recovered.state(), StuckPollState::Recovered);
        assert_eq!(stuck.key, recovered.key);
        assert_eq!((stuck.tid, stuck.stuck_for_ms), (7, 3_000));
        assert!(
            (stuck.cpu_percent - 96.7).abs() < 0.1,
            "{}",
            stuck.cpu_percent
        );
        let [blocked, _] = stall_events(7, 3_000, Some(0.1), 6).unwrap();
        assert_eq!(blocked.class(), StuckPollClass::BlockedWorker);
        assert_ne!(blocked.key, stuck.key, "each stall its own incident");
        let [unknown, _] = stall_events(7, 3_000, None, 7).unwrap();
        assert_eq!(unknown.class(), StuckPollClass::Unspecified);
    }
}
