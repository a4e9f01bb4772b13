//! Keeps the stack samples of one stuck period for the event, and says what
//! the probe could not tell.
//!
//! Samples stay raw addresses: the collector names them, then finds the
//! frames common to every sample and the hottest leaves (naming first is
//! what lets a loop caught at different lines count as one function).

use std::collections::VecDeque;

use meshwatch_proto::v1::RawStack;

/// Samples kept per stuck period, the most recent ones (two seconds' worth
/// at one every 250 ms). Every event carries them all as raw addresses, so
/// this bounds an event's size (a few KiB for typical depths), which matters
/// while the collector is away and events wait in the outbox.
pub(crate) const MAX_SAMPLES: usize = 8;

/// The stack samples of one stuck period, leaf first each.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    stacks: VecDeque<Vec<u64>>,
    /// Samples taken over the whole period, including those evicted.
    pub taken: u32,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
}

impl Samples {
    pub fn push(&mut self, stack: Vec<u64>) {
        if self.stacks.len() >= MAX_SAMPLES {
            self.stacks.pop_front();
        }
        self.stacks.push_back(stack);
        self.taken = self.taken.saturating_add(1);
    }

    /// The kept samples, oldest first, as the wire carries them.
    pub fn raw(&self) -> Vec<RawStack> {
        self.stacks
            .iter()
            .map(|addresses| RawStack {
                addresses: addresses.clone(),
            })
            .collect()
    }

    /// Every address of the kept samples, for the module table.
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.stacks.iter().flatten().copied()
    }
}

/// What stable signals cannot tell, said once per event.
pub(crate) const STABLE_RULE_CAVEAT: &str = "tokio publishes a worker's counters only every 61 scheduler ticks, so without --cfg tokio_unstable a run of long polls (up to 244 with LIFO wake-ups) looks like one stuck poll";

/// Said instead of [`STABLE_RULE_CAVEAT`] when the task hooks timed the poll.
const EXACT_POLL: &str =
    "the task hooks (--cfg tokio_unstable) timed this poll: it is one poll, from its start";

/// The event's caveat: the rule's limit, and anything that went wrong. What
/// the samples say about the rule (whether they share the service's frames)
/// is added by the collector once it has named them.
pub(crate) fn caveat(samples: &Samples, extra: &[String], exact: bool) -> String {
    let mut parts = vec![
        if exact {
            EXACT_POLL
        } else {
            STABLE_RULE_CAVEAT
        }
        .to_owned(),
    ];
    if let Some(error) = &samples.last_error {
        parts.push(format!("stack capture failed: {error}"));
    }
    parts.extend(extra.iter().cloned());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_samples_and_counts_them_all() {
        let mut samples = Samples::default();
        for i in 0..(MAX_SAMPLES as u64 + 4) {
            samples.push(vec![i, 100]);
        }
        assert_eq!(samples.taken, MAX_SAMPLES as u32 + 4);
        let raw = samples.raw();
        assert_eq!(raw.len(), MAX_SAMPLES);
        assert_eq!(raw[0].addresses, [4, 100], "the oldest were evicted");
        assert_eq!(samples.addresses().count(), 2 * MAX_SAMPLES);
    }

    #[test]
    fn the_caveat_says_the_rule_the_failure_and_the_notes() {
        let samples = Samples {
            last_error: Some("thread 7 did not answer".to_owned()),
            ..Samples::default()
        };
        let said = caveat(&samples, &["the thread is unknown".to_owned()], false);
        assert!(said.starts_with(STABLE_RULE_CAVEAT));
        assert!(
            said.contains("did not answer") && said.contains("unknown"),
            "{said}"
        );
        assert!(caveat(&Samples::default(), &[], true).starts_with(EXACT_POLL));
    }
}
