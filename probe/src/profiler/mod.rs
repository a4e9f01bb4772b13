//! CPU profiles on demand: the collector asks over the probe's connection
//! (`ProfileRequest`), a `meshwatch-profiler` thread samples the threads
//! that are running for the time asked, and the answer goes back as
//! `ProfileData` messages through the outbox.
//!
//! Nothing of this runs, and no timer or signal is armed, until a request
//! arrives: the thread exists only while a profile is taken, and one
//! profile at a time runs in a process.
//!
//! Stacks are taken with the same signal capture as the watchdog's
//! ([`crate::stack`]): the handler only copies registers and the top of the
//! stack, and unwinding runs on the profiler's thread. That is what keeps
//! the failures profilers that unwind inside the signal handler are known
//! for (a deadlock when the handler interrupts the allocator or the
//! unwinder's own lock, a crash on a corrupt frame) out of the service.

mod sampling;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meshwatch_proto::v1::{ProbeMessage, ProfileData, ProfileRequest, probe_message};

use crate::outbox::Outbox;
use crate::stats::ProbeCounters;
use sampling::{CpuProfile, Sampler};

/// The longest profile a probe takes, whatever it is asked.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(60);
/// The highest sampling rate a probe uses, whatever it is asked.
pub(crate) const MAX_FREQUENCY_HZ: u32 = 1000;
/// Encoded bytes of stacks per `ProfileData` part, well under any frame
/// limit a collector sets.
const PART_BYTES: usize = 256 * 1024;

/// Set while a profile runs in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Answers the collector's profile requests for one probe.
#[derive(Debug, Clone)]
pub(crate) struct Profiles {
    outbox: Arc<Outbox>,
    counters: Arc<ProbeCounters>,
}

impl Profiles {
    pub(crate) fn new(outbox: Arc<Outbox>, counters: Arc<ProbeCounters>) -> Self {
        Self { outbox, counters }
    }

    /// Starts the profile `request` asks for on a thread of its own, or
    /// answers at once with the reason it cannot. Never blocks.
    pub(crate) fn start(&self, request: &ProfileRequest) {
        let id = request.request_id;
        let duration = Duration::from_millis(u64::from(request.duration_ms)).min(MAX_DURATION);
        let hz = request.frequency_hz.clamp(1, MAX_FREQUENCY_HZ);
        if duration.is_zero() {
            self.refuse(id, "the profile asked for lasts no time");
            return;
        }
        if RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.refuse(
                id,
                "a profile of this process is already running; try again when it ends",
            );
            return;
        }
        let profiles = self.clone();
        let spawned = std::thread::Builder::new()
            .name("meshwatch-profiler".to_owned())
            .spawn(move || {
                crate::guest::enter_probe_thread();
                let profile = Sampler::new(hz).run(duration, || profiles.outbox.is_closed());
                RUNNING.store(false, Ordering::Release);
                profiles.send(id, profile);
            });
        if let Err(err) = spawned {
            RUNNING.store(false, Ordering::Release);
            self.refuse(
                id,
                &format!("the probe could not start its profiler thread: {err}"),
            );
        }
    }

    /// Answers `id` with no profile and the reason why.
    pub(crate) fn refuse(&self, id: u64, reason: &str) {
        self.push(ProfileData {
            request_id: id,
            last: true,
            error: reason.to_owned(),
            ..ProfileData::default()
        });
    }

    /// Sends `profile` as parts of at most [`PART_BYTES`] of stacks, the
    /// last with the modules and totals.
    fn send(&self, id: u64, profile: CpuProfile) {
        let (stacks, last) = profile.into_parts(id);
        let mut part = Vec::new();
        let mut bytes = 0;
        for stack in stacks {
            let size = prost::Message::encoded_len(&stack);
            if bytes + size > PART_BYTES && !part.is_empty() {
                self.push(ProfileData {
                    request_id: id,
                    stacks: std::mem::take(&mut part),
                    ..ProfileData::default()
                });
                bytes = 0;
            }
            bytes += size;
            part.push(stack);
        }
        self.push(ProfileData {
            stacks: part,
            ..last
        });
    }

    fn push(&self, data: ProfileData) {
        let message = ProbeMessage {
            kind: Some(probe_message::Kind::Profile(data)),
        };
        self.outbox.push(message, &self.counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64, duration_ms: u32) -> ProfileRequest {
        ProfileRequest {
            request_id: id,
            duration_ms,
            frequency_hz: 200,
        }
    }

    fn profile_parts(outbox: &Outbox, id: u64) -> Vec<ProfileData> {
        let mut parts = Vec::new();
        while let Some(message) = outbox.pop(Duration::from_secs(5)) {
            if let Some(probe_message::Kind::Profile(data)) = message.kind {
                assert_eq!(data.request_id, id);
                let last = data.last;
                parts.push(data);
                if last {
                    break;
                }
            }
        }
        parts
    }

    #[test]
    fn a_second_profile_while_one_runs_is_refused_and_the_first_completes() {
        let outbox = Arc::new(Outbox::new(64));
        let profiles = Profiles::new(Arc::clone(&outbox), Arc::default());
        profiles.start(&request(1, 300));
        profiles.start(&request(2, 300));
        let refused = profile_parts(&outbox, 2);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].last && refused[0].error.contains("already running"));
        let done = profile_parts(&outbox, 1);
        let last = done.last().unwrap();
        assert!(last.last);
        assert_eq!(last.frequency_hz, 200);
        assert!(last.duration_ms >= 300, "{last:?}");
        // Done: the next request is taken.
        profiles.start(&request(3, 0));
        assert!(profile_parts(&outbox, 3)[0].error.contains("no time"));
        profiles.start(&request(4, 50));
        assert!(profile_parts(&outbox, 4).last().unwrap().last);
    }
}
