//! CPU profiles of processes watched from outside (`--watch`), which have
//! no probe inside to take them: the same sampling the loop watcher uses
//! for a stuck loop's stacks, over every thread and for the time asked.
//!
//! - A Node.js or native process: `perf_event_open` CPU-clock sampling of
//!   each of its threads at the rate asked, with user call chains, named by
//!   blazesym (JavaScript from the perf map `node --perf-basic-prof`
//!   writes). CPU-clock samples come only while a thread runs, so each
//!   sample stands for one period of CPU.
//! - A Python process: py-spy reads the interpreter's frames at the rate
//!   asked, without pausing it; only threads running Python code (not
//!   idle in a wait) are counted, each look one period of CPU.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blazesym::symbolize::Symbolizer;
use meshwatch_proto::v1::{Frame, Hello};
use perf_event::Sampler;

use super::perf_map::PerfMap;
use super::stacks::{cpu_clock_sampler, name_chain, python_frames, python_spy, user_addresses};
use crate::profiles::{ProfileError, Sampled};

/// Threads of one process sampled at most.
const MAX_THREADS: usize = 256;
/// How often the perf ring buffers are emptied: each holds about a hundred
/// call chains.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Samples the CPU of the process `hello` describes for `duration` at
/// `hz`. Blocks for the duration: run it off the async runtime.
pub(crate) fn profile(hello: &Hello, duration: Duration, hz: u32) -> Result<Sampled, ProfileError> {
    let period_ns = 1_000_000_000 / u64::from(hz.max(1));
    let started = Instant::now();
    let counts = if hello.runtime == "python" {
        python(hello.pid, duration, hz)?
    } else {
        native(hello.pid, duration, hz)?
    };
    let samples = counts.values().sum();
    Ok(Sampled {
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        frequency_hz: hz,
        samples,
        stacks: counts
            .into_iter()
            .map(|((thread, frames), count)| (thread, frames, count, count * period_ns))
            .collect(),
    })
}

type Counts = HashMap<(String, Vec<Frame>), u64>;

/// Perf CPU-clock samples of every thread of `pid`.
fn native(pid: u32, duration: Duration, hz: u32) -> Result<Counts, ProfileError> {
    let threads = threads(pid);
    let mut samplers: Vec<(String, Sampler)> = Vec::new();
    let mut refusal = None;
    for (tid, name) in threads.into_iter().take(MAX_THREADS) {
        match cpu_clock_sampler(tid, u64::from(hz)) {
            Ok(sampler) => samplers.push((name, sampler)),
            Err(err) => refusal = Some(err),
        }
    }
    if samplers.is_empty() {
        return Err(ProfileError::Refused(match refusal {
            Some(err) => format!(
                "the collector cannot sample process {pid}: {}",
                super::beacon::perf_refusal(&err)
            ),
            None => format!("process {pid} has no thread left to sample"),
        }));
    }
    let mut chains: HashMap<(String, Vec<u64>), u64> = HashMap::new();
    let end = Instant::now() + duration;
    loop {
        let last = Instant::now() >= end;
        for (name, sampler) in &mut samplers {
            while let Some(record) = sampler.next_record() {
                if let Ok(perf_event::data::Record::Sample(sample)) = record.parse_record()
                    && let Some(chain) = sample.callchain()
                {
                    *chains
                        .entry((name.clone(), user_addresses(chain)))
                        .or_default() += 1;
                }
            }
        }
        if last {
            break;
        }
        std::thread::sleep(DRAIN_EVERY.min(end.saturating_duration_since(Instant::now())));
    }
    let symbolizer = crate::naming::symbolizer(&[]);
    let mut perf_map = PerfMap::of(pid);
    perf_map.refresh();
    Ok(name_chains(&symbolizer, &perf_map, pid, chains))
}

/// Each distinct chain named once; chains that name alike are merged.
fn name_chains(
    symbolizer: &Symbolizer,
    perf_map: &PerfMap,
    pid: u32,
    chains: HashMap<(String, Vec<u64>), u64>,
) -> Counts {
    let mut counts = Counts::new();
    for ((thread, chain), count) in chains {
        let frames = name_chain(symbolizer, perf_map, pid, &chain);
        *counts.entry((thread, frames)).or_default() += count;
    }
    counts
}

/// The threads of `pid` and their names.
fn threads(pid: u32) -> Vec<(u32, String)> {
    let Ok(process) = procfs::process::Process::new(pid as i32) else {
        return Vec::new();
    };
    let Ok(tasks) = process.tasks() else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = u32::try_from(task.tid).ok()?;
            let name = task.stat().map(|s| s.comm).unwrap_or_default();
            Some((tid, name))
        })
        .collect()
}

/// The Python frames of `pid`'s running threads, looked at `hz` times a
/// second.
fn python(pid: u32, duration: Duration, hz: u32) -> Result<Counts, ProfileError> {
    let mut spy = python_spy(pid).map_err(|err| {
        ProfileError::Refused(format!(
            "cannot read the Python interpreter's frames: {err}"
        ))
    })?;
    let period = Duration::from_secs(1) / hz.max(1);
    let end = Instant::now() + duration;
    let mut counts = Counts::new();
    let mut next = Instant::now();
    while Instant::now() < end {
        if let Ok(traces) = spy.get_stack_traces() {
            for trace in traces.into_iter().filter(|t| t.active) {
                let thread = trace.thread_name.clone().unwrap_or_else(|| {
                    format!("thread {}", trace.os_thread_id.unwrap_or(trace.thread_id))
                });
                *counts.entry((thread, python_frames(trace))).or_default() += 1;
            }
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Ok(counts)
}
