//! CPU profiles, taken on demand by an instance's probe and named by the
//! collector (`POST /api/v1/profile`), written as a pprof CPU profile
//! (`samples/count` and `cpu/nanoseconds`, each sample labelled with its
//! thread) and a flame graph whose first level is the threads.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use meshwatch_api::CpuProfileView;

use super::pprof::{ProfileBuilder, SampleType};
use super::top::{TopFunction, table, top_functions};
use super::{TOP, short, write_files};
use crate::client::ApiClient;
use crate::evidence::Frame;
use crate::format;

/// The values of a CPU profile's samples, as pprof's tools expect them.
pub const CPU_SAMPLE_TYPES: [SampleType; 2] = [
    SampleType {
        name: "samples",
        unit: "count",
    },
    SampleType {
        name: "cpu",
        unit: "nanoseconds",
    },
];

/// A CPU profile as the collector answered it.
#[derive(Debug, Clone)]
pub struct CpuProfile {
    pub view: CpuProfileView,
}

/// How often a client asks whether a profile is in.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Asks the collector for a CPU profile of `instance` over `seconds` at
/// `hz`, and waits for it, calling `progress` with the seconds waited at
/// each poll.
///
/// # Errors
///
/// When the collector cannot be reached or says why there is no profile,
/// or when no thread of the instance ran while it was profiled.
pub fn take_cpu_profile(
    client: &ApiClient,
    instance: &str,
    seconds: u64,
    hz: u32,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<CpuProfile> {
    let ticket = client.start_cpu_profile(instance, seconds, hz)?;
    let started = Instant::now();
    let view = loop {
        std::thread::sleep(POLL_EVERY);
        if let Some(view) = client.cpu_profile(&ticket)? {
            break view;
        }
        progress(started.elapsed().as_secs());
    };
    if view.stacks.is_empty() {
        bail!(
            "no thread of {} instance {} ran while it was profiled ({} samples over {}){}",
            view.service,
            short(&view.instance_id),
            view.samples,
            format::duration_ms(f64::from(view.duration_ms)),
            view.caveat
                .as_ref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
    }
    Ok(CpuProfile { view })
}

impl CpuProfile {
    /// The functions with the most CPU time, self and total.
    pub fn top(&self, limit: usize) -> Vec<TopFunction> {
        top_functions(
            self.view
                .stacks
                .iter()
                .map(|stack| (self.view.frames_of(stack), stack.cpu_ns)),
            limit,
        )
    }

    /// CPU time used by the threads profiled, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.view.stacks.iter().map(|s| s.cpu_ns).sum()
    }

    /// Writes `profile.pb.gz` and `flame.svg` into `out`.
    ///
    /// # Errors
    ///
    /// When the directory or a file cannot be written.
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        let stacks: Vec<(Vec<Frame>, u64)> = self
            .view
            .stacks
            .iter()
            .map(|stack| {
                let mut frames: Vec<Frame> = self.view.frames_of(stack).map(Into::into).collect();
                frames.push(Frame {
                    function: format!("thread {}", stack.thread),
                    location: None,
                    own: false,
                });
                (frames, stack.cpu_ns)
            })
            .collect();
        let title = format!(
            "CPU of {} ({}) over {}",
            self.view.service,
            short(&self.view.instance_id),
            format::duration_ms(f64::from(self.view.duration_ms))
        );
        write_files(out, &self.pprof()?, &title, "ns of CPU", &stacks)
    }

    /// The profile as a gzipped pprof CPU profile.
    fn pprof(&self) -> anyhow::Result<Vec<u8>> {
        let view = &self.view;
        let mut builder = ProfileBuilder::new(&CPU_SAMPLE_TYPES);
        for stack in &view.stacks {
            let frames: Vec<meshwatch_api::Frame> = view.frames_of(stack).cloned().collect();
            let samples = i64::try_from(stack.samples).unwrap_or(i64::MAX);
            let cpu_ns = i64::try_from(stack.cpu_ns).unwrap_or(i64::MAX);
            builder.sample(&frames, vec![samples, cpu_ns], &[("thread", &stack.thread)]);
        }
        builder.period(
            CPU_SAMPLE_TYPES[1],
            1_000_000_000 / i64::from(view.frequency_hz.max(1)),
        );
        builder.time_nanos(view.started_ms.saturating_mul(1_000_000));
        builder.duration_nanos(i64::from(view.duration_ms) * 1_000_000);
        builder.comment(&format!(
            "meshwatch CPU profile of {} instance {} (pid {} on {}): running threads sampled at {} Hz, each sample weighted by the CPU its thread used since its last one",
            view.service, view.instance_id, view.pid, view.host, view.frequency_hz
        ));
        Ok(builder.gzipped()?)
    }

    /// What the profile holds, in one line.
    pub fn headline(&self) -> String {
        let view = &self.view;
        let mut threads: Vec<&str> = view.stacks.iter().map(|s| s.thread.as_str()).collect();
        threads.sort_unstable();
        threads.dedup();
        format!(
            "{} samples over {} at {} Hz, {} of CPU on {} threads ({})",
            view.samples,
            format::duration_ms(f64::from(view.duration_ms)),
            view.frequency_hz,
            cpu_time(self.cpu_ns()),
            threads.len(),
            threads.join(", "),
        )
    }

    /// What makes the profile partial, if anything.
    pub fn notes(&self) -> Vec<String> {
        let view = &self.view;
        let mut notes = Vec::new();
        if view.samples_dropped > 0 {
            notes.push(format!(
                "{} samples of rarer stacks were left out past the most distinct stacks kept",
                view.samples_dropped
            ));
        }
        notes.extend(view.caveat.clone());
        notes
    }

    /// What the profile holds and its top functions, for the terminal.
    pub fn summary(&self) -> String {
        let view = &self.view;
        let mut out = format!(
            "CPU profile of {} instance {} (pid {} on {}): {}\n",
            view.service,
            view.instance_id,
            view.pid,
            view.host,
            self.headline()
        );
        for note in self.notes() {
            out.push_str(&format!("note: {note}\n"));
        }
        out.push_str(&table(&self.top(TOP), cpu_time));
        out
    }
}

/// CPU time given in nanoseconds, as the tables show it.
pub fn cpu_time(ns: u64) -> String {
    format::duration_ms(ns as f64 / 1e6)
}
