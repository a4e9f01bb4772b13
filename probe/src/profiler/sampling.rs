//! The profiler's loop: at each tick, the threads that used CPU since the
//! last one and are running now have their stacks taken, and each distinct
//! stack is counted with the CPU time its thread used.
//!
//! Only a thread in the running state is signalled. A thread asleep in a
//! system call is left alone, since a signal can end `epoll_wait`, `poll`
//! or a read with a timeout early; the CPU it used since its last sample is
//! carried to its next one, so short bursts still weigh what they cost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meshwatch_proto::v1::{Module, ProfileData, ProfileStack, RawStack};
use procfs::process::Process;

use crate::stack::{ModuleMap, StackSampler};

/// Distinct (thread, stack) pairs a profile keeps; samples of further
/// stacks are counted as dropped. A profile of a real service holds a few
/// thousand.
const MAX_STACKS: usize = 10_000;

/// What one distinct stack weighs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Weight {
    samples: u64,
    cpu_ns: u64,
}

/// A finished profile, before it is cut into messages.
#[derive(Debug, Default)]
pub(super) struct CpuProfile {
    stacks: HashMap<(String, Vec<u64>), Weight>,
    samples: u64,
    dropped: u64,
    took: Duration,
    hz: u32,
    modules: Vec<Module>,
    error: Option<String>,
}

impl CpuProfile {
    fn record(&mut self, thread: &str, addrs: Vec<u64>, cpu_ns: u64) {
        self.samples += 1;
        let key = (thread.to_owned(), addrs);
        let full = self.stacks.len() >= MAX_STACKS;
        match self.stacks.get_mut(&key) {
            Some(weight) => add(weight, cpu_ns),
            None if full => self.dropped += 1,
            None => add(self.stacks.entry(key).or_default(), cpu_ns),
        }
    }

    /// The stacks as wire messages, and the last part's header: totals,
    /// modules and the error, if any.
    pub(super) fn into_parts(self, request_id: u64) -> (Vec<ProfileStack>, ProfileData) {
        let stacks = self
            .stacks
            .into_iter()
            .map(|((thread_name, addresses), weight)| ProfileStack {
                stack: Some(RawStack { addresses }),
                thread_name,
                samples: weight.samples,
                cpu_ns: weight.cpu_ns,
            })
            .collect();
        let last = ProfileData {
            request_id,
            last: true,
            modules: self.modules,
            error: self.error.unwrap_or_default(),
            samples: self.samples,
            samples_dropped: self.dropped,
            duration_ms: u32::try_from(self.took.as_millis()).unwrap_or(u32::MAX),
            frequency_hz: self.hz,
            stacks: Vec::new(),
        };
        (stacks, last)
    }
}

fn add(weight: &mut Weight, cpu_ns: u64) {
    weight.samples += 1;
    weight.cpu_ns = weight.cpu_ns.saturating_add(cpu_ns);
}

/// What the loop remembers of a thread between ticks.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// `sum_exec_runtime` at the last tick.
    exec_ns: u64,
    /// CPU used since the thread's last sample, not yet attributed.
    unattributed_ns: u64,
    /// The last tick that listed the thread: those not listed have exited.
    tick: u64,
    /// Its stack could not be taken (it blocks the signal, say): it is not
    /// asked again in this profile, since each miss waits for the capture's
    /// timeout.
    deaf: bool,
}

/// Takes one CPU profile of this process.
pub(super) struct Sampler {
    hz: u32,
    process: Option<Process>,
    stacks: StackSampler,
    modules: ModuleMap,
    seen: HashMap<u32, Seen>,
    ticks: u64,
    profile: CpuProfile,
}

impl Sampler {
    pub(super) fn new(hz: u32) -> Self {
        Self {
            hz,
            process: Process::myself().ok(),
            stacks: StackSampler::new(),
            modules: ModuleMap::default(),
            seen: HashMap::new(),
            ticks: 0,
            profile: CpuProfile::default(),
        }
    }

    /// Samples for `duration`, or until `stop` says so (the probe is
    /// shutting down), and returns the profile.
    pub(super) fn run(mut self, duration: Duration, stop: impl Fn() -> bool) -> CpuProfile {
        let period = Duration::from_secs(1) / self.hz.max(1);
        let started = Instant::now();
        let end = started + duration;
        let me = crate::identity::current_tid();
        // The first look only learns each thread's CPU time so far.
        self.tick(me);
        let mut next = started + period;
        while !stop() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if next > now {
                std::thread::sleep((next - now).min(end - now));
                continue;
            }
            self.tick(me);
            // A tick that ran late is not made up with a burst.
            next = (next + period).max(Instant::now());
        }
        self.finish(started.elapsed())
    }

    /// One look at every thread but the profiler's own (`me`).
    fn tick(&mut self, me: u32) {
        let Some(tasks) = self.process.as_ref().and_then(|p| p.tasks().ok()) else {
            self.profile.error =
                Some("the probe cannot list its process's threads in /proc/self/task".to_owned());
            return;
        };
        self.ticks += 1;
        let tick = self.ticks;
        for task in tasks.flatten() {
            let Ok(tid) = u32::try_from(task.tid) else {
                continue;
            };
            if tid == me {
                continue;
            }
            let Ok(schedstat) = task.schedstat() else {
                continue;
            };
            let exec_ns = schedstat.sum_exec_runtime;
            let seen = self.seen.entry(tid).or_insert(Seen {
                exec_ns,
                unattributed_ns: 0,
                tick,
                deaf: false,
            });
            seen.tick = tick;
            let ran = exec_ns.saturating_sub(seen.exec_ns);
            seen.exec_ns = exec_ns;
            seen.unattributed_ns = seen.unattributed_ns.saturating_add(ran);
            if ran == 0 || seen.deaf {
                continue;
            }
            let Ok(stat) = task.stat() else {
                continue;
            };
            if stat.state != 'R' {
                continue;
            }
            match self.stacks.sample(tid) {
                Ok(sample) => {
                    let cpu_ns = std::mem::take(&mut seen.unattributed_ns);
                    self.profile.record(&stat.comm, sample.addrs, cpu_ns);
                }
                Err(err) => {
                    seen.deaf = true;
                    self.profile.error = Some(format!("some stacks could not be taken: {err}"));
                }
            }
        }
        self.seen.retain(|_, seen| seen.tick == tick);
    }

    fn finish(mut self, took: Duration) -> CpuProfile {
        let addresses = self
            .profile
            .stacks
            .keys()
            .flat_map(|(_, addrs)| addrs.iter().copied());
        self.profile.modules = self.modules.modules_for(addresses);
        self.profile.took = took;
        self.profile.hz = self.hz;
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[inline(never)]
    fn burn_cpu_in_a_distinctively_named_function(stop: &AtomicBool) -> u64 {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
        }
        n
    }

    #[test]
    fn counts_distinct_stacks_and_drops_past_the_cap() {
        let mut profile = CpuProfile::default();
        profile.record("a", vec![1, 2], 10);
        profile.record("a", vec![1, 2], 5);
        profile.record("b", vec![1, 2], 1);
        assert_eq!(profile.stacks.len(), 2);
        assert_eq!(
            profile.stacks[&("a".to_owned(), vec![1, 2])],
            Weight {
                samples: 2,
                cpu_ns: 15
            }
        );
        for i in 0..MAX_STACKS as u64 {
            profile.record("c", vec![i + 100], 1);
        }
        assert_eq!(profile.stacks.len(), MAX_STACKS);
        assert_eq!(profile.samples, 3 + MAX_STACKS as u64);
        assert_eq!(profile.dropped, 2);
        let (stacks, last) = profile.into_parts(9);
        assert_eq!(stacks.len(), MAX_STACKS);
        assert_eq!((last.request_id, last.samples_dropped), (9, 2));
        assert!(last.last && last.stacks.is_empty());
    }

    #[cfg(all(
        feature = "stacks",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[test]
    fn samples_the_thread_that_burns_cpu_and_names_its_objects() {
        let stop = Arc::new(AtomicBool::new(false));
        let burner = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("burner".to_owned())
                .spawn(move || burn_cpu_in_a_distinctively_named_function(&stop))
                .unwrap()
        };
        let profile = Sampler::new(200).run(Duration::from_millis(500), || false);
        stop.store(true, Ordering::Relaxed);
        burner.join().unwrap();
        let entry = burn_cpu_in_a_distinctively_named_function as *const () as u64;
        let burning: Vec<(&(String, Vec<u64>), &Weight)> = profile
            .stacks
            .iter()
            .filter(|((thread, _), _)| thread == "burner")
            .collect();
        let samples: u64 = burning.iter().map(|(_, w)| w.samples).sum();
        let cpu_ns: u64 = burning.iter().map(|(_, w)| w.cpu_ns).sum();
        // 200 Hz for half a second of a thread that always runs: about 100
        // samples, fewer on a loaded machine, never none.
        assert!(samples >= 10, "{samples} samples: {:?}", profile.error);
        assert!(cpu_ns >= 50_000_000, "{cpu_ns} ns");
        assert!(
            burning
                .iter()
                .any(|((_, addrs), _)| addrs[..3.min(addrs.len())]
                    .iter()
                    .any(|a| (entry..entry + 4096).contains(a))),
            "the burning function is at the top of its stacks"
        );
        assert!(!profile.modules.is_empty());
        assert_eq!(profile.hz, 200);
        assert!(profile.took >= Duration::from_millis(500));
    }
}
