//! The stacks of a stuck event loop's thread, named, taken from outside.
//!
//! - A Node.js or native process: `perf_event_open` CPU-clock sampling of
//!   the thread with user call chains (the kernel walks frame pointers, which
//!   V8 keeps for JavaScript frames), named by blazesym from the process's
//!   own files and, for JIT code, from the perf map (`/tmp/perf-PID.map`,
//!   read by [`PerfMap`]) that `node --perf-basic-prof` writes (with
//!   `--interpreted-frames-native-stack`, functions V8 has not compiled
//!   yet are in it too). Without the flag JavaScript frames stay
//!   addresses, and the caveat says which flags name them.
//! - A Python process: the interpreter's frames read from its memory with
//!   py-spy's library, non-blocking (the process is never paused): Python
//!   function, file and line, the running greenlet's under gevent.
//!
//! Sampling runs only while a loop is suspect or stuck.

use std::collections::VecDeque;
use std::path::Path;

use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use meshwatch_proto::v1::Frame;
use perf_event::events::Software;
use perf_event::{Builder, SampleFlag, Sampler};

use super::beacon::perf_refusal;
use super::perf_map::PerfMap;

/// Samples a second while a loop is suspect or stuck.
const SAMPLES_PER_SECOND: u64 = 99;
/// Samples kept (the latest), and frames per sample.
pub(crate) const MAX_SAMPLES: usize = 32;
const MAX_DEPTH: usize = 64;
/// The perf ring buffer: 16 pages of 4 KiB plus its header page.
const RING_BYTES: usize = 16 * 4096;

/// Where a stuck loop's stacks come from.
pub(crate) enum StackSource {
    /// CPU-clock samples with call chains, named from the perf map and by
    /// blazesym.
    Perf {
        sampler: Sampler,
        pid: u32,
        perf_map: PerfMap,
    },
    /// The Python interpreter's frames.
    Python {
        spy: Box<py_spy::PythonSpy>,
        tid: u32,
    },
}

impl std::fmt::Debug for StackSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StackSource::Perf { pid, .. } => write!(f, "StackSource::Perf({pid})"),
            StackSource::Python { tid, .. } => write!(f, "StackSource::Python({tid})"),
        }
    }
}

/// Why stacks could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StackError {
    /// `perf_event_open` refused.
    #[error("{}", perf_refusal(.0))]
    Perf(#[source] std::io::Error),
    /// py-spy could not read the interpreter.
    #[error("cannot read the Python interpreter's frames: {0}")]
    Python(String),
}

impl StackSource {
    /// Starts taking stacks of thread `tid` of process `pid`, whose runtime
    /// is `runtime`.
    pub(crate) fn start(pid: u32, tid: u32, runtime: &str) -> Result<Self, StackError> {
        if runtime == "python" {
            let spy = python_spy(pid).map_err(StackError::Python)?;
            return Ok(StackSource::Python {
                spy: Box::new(spy),
                tid,
            });
        }
        let sampler = cpu_clock_sampler(tid, SAMPLES_PER_SECOND).map_err(StackError::Perf)?;
        Ok(StackSource::Perf {
            sampler,
            pid,
            perf_map: PerfMap::of(pid),
        })
    }

    /// Adds the stacks taken since the last call to `into` (leaf first,
    /// named), keeping the latest [`MAX_SAMPLES`].
    pub(crate) fn collect(&mut self, symbolizer: &Symbolizer, into: &mut VecDeque<Vec<Frame>>) {
        match self {
            StackSource::Perf {
                sampler,
                pid,
                perf_map,
            } => {
                let mut chains = Vec::new();
                while let Some(record) = sampler.next_record() {
                    if let Ok(perf_event::data::Record::Sample(sample)) = record.parse_record()
                        && let Some(chain) = sample.callchain()
                    {
                        chains.push(user_addresses(chain));
                    }
                }
                if !chains.is_empty() {
                    perf_map.refresh();
                }
                for chain in chains.iter().rev().take(MAX_SAMPLES).rev() {
                    push(into, name_chain(symbolizer, perf_map, *pid, chain));
                }
            }
            StackSource::Python { spy, tid } => {
                let Ok(traces) = spy.get_stack_traces() else {
                    return;
                };
                let thread = traces
                    .into_iter()
                    .find(|trace| trace.os_thread_id == Some(u64::from(*tid)));
                if let Some(trace) = thread {
                    push(into, python_frames(trace));
                }
            }
        }
    }

    /// Whether this source's JavaScript frames have names: a Node.js
    /// process started without `--perf-basic-prof` writes no perf map.
    pub(crate) fn has_perf_map(pid: u32) -> bool {
        Path::new(&format!("/tmp/perf-{pid}.map")).exists()
    }
}

/// A CPU-clock sampler of thread `tid` (of any process) at `hz`, with
/// user call chains: samples come only while the thread runs.
pub(super) fn cpu_clock_sampler(tid: u32, hz: u64) -> std::io::Result<Sampler> {
    let counter = Builder::new(Software::CPU_CLOCK)
        .observe_pid(tid as i32)
        .any_cpu()
        .sample_frequency(hz)
        .sample(SampleFlag::CALLCHAIN)
        .exclude_kernel(true)
        .exclude_callchain_kernel(true)
        .build()?;
    let mut sampler = counter.sampled(RING_BYTES)?;
    sampler.enable()?;
    Ok(sampler)
}

/// py-spy on the Python process `pid`, reading without pausing it; the
/// error in words.
pub(super) fn python_spy(pid: u32) -> Result<py_spy::PythonSpy, String> {
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::NonBlocking,
        ..py_spy::Config::default()
    };
    py_spy::PythonSpy::new(pid as py_spy::Pid, &config).map_err(|err| err.to_string())
}

/// A Python thread's frames, innermost first, as the wire has them.
pub(super) fn python_frames(trace: py_spy::StackTrace) -> Vec<Frame> {
    trace
        .frames
        .into_iter()
        .take(MAX_DEPTH)
        .map(|f| Frame {
            function: f.name,
            file: f.filename,
            line: u32::try_from(f.line).unwrap_or(0),
            address: 0,
        })
        .collect()
}

pub(super) fn push(into: &mut VecDeque<Vec<Frame>>, stack: Vec<Frame>) {
    if stack.is_empty() {
        return;
    }
    if into.len() == MAX_SAMPLES {
        into.pop_front();
    }
    into.push_back(stack);
}

/// The user-space addresses of a perf call chain, leaf first, without the
/// kernel's context markers (`PERF_CONTEXT_USER` and the like, the top 4095
/// values of the address space).
pub(super) fn user_addresses(chain: &[u64]) -> Vec<u64> {
    const CONTEXT_MARKERS: u64 = u64::MAX - 4095;
    chain
        .iter()
        .copied()
        .filter(|&address| address < CONTEXT_MARKERS && address != 0)
        .take(MAX_DEPTH)
        .collect()
}

/// Names a chain: the leaf at its address, every caller at the
/// instruction before its return address. JIT code is named from
/// `perf_map`, the rest by blazesym from the process's files.
pub(super) fn name_chain(
    symbolizer: &Symbolizer,
    perf_map: &PerfMap,
    pid: u32,
    chain: &[u64],
) -> Vec<Frame> {
    let lookups: Vec<u64> = chain
        .iter()
        .enumerate()
        .map(|(i, &address)| if i == 0 { address } else { address - 1 })
        .collect();
    // JIT code from the perf map; blazesym is asked only about the rest.
    let jit: Vec<Option<Frame>> = chain
        .iter()
        .zip(&lookups)
        .map(|(&address, &lookup)| {
            let entry = perf_map.name(lookup)?;
            Some(match jit_frame(entry) {
                Some(frame) => Frame { address, ..frame },
                None => crate::naming::frame(entry, None, address),
            })
        })
        .collect();
    let native: Vec<u64> = lookups
        .iter()
        .zip(&jit)
        .filter(|(_, frame)| frame.is_none())
        .map(|(&lookup, _)| lookup)
        .collect();
    let source = Source::Process(Process {
        perf_map: false,
        ..Process::new(pid.into())
    });
    let mut named = if native.is_empty() {
        Vec::new()
    } else {
        symbolizer
            .symbolize(&source, Input::AbsAddr(&native))
            .unwrap_or_default()
    }
    .into_iter();
    chain
        .iter()
        .zip(jit)
        .map(|(&address, jit)| {
            jit.unwrap_or_else(|| match named.next() {
                Some(Symbolized::Sym(sym)) => {
                    crate::naming::frame(&sym.name, sym.code_info.as_deref(), address)
                }
                _ => unnamed(address),
            })
        })
        .collect()
}

fn unnamed(address: u64) -> Frame {
    Frame {
        function: format!("{address:#x}"),
        address,
        ..Frame::default()
    }
}

/// A frame from a V8 perf map entry, `JS:*name /path/file.js:12:5`: the
/// kind before the colon, the tier marker (`*` optimized, `~`
/// interpreted, `^` and `+` baseline and Maglev), the function (empty for
/// an anonymous one), and its file, line and column. `None` for a name
/// that is not such an entry.
fn jit_frame(entry: &str) -> Option<Frame> {
    let (kind, rest) = entry.split_once(':')?;
    if !matches!(kind, "JS" | "LazyCompile" | "Function" | "Script" | "Eval") {
        return None;
    }
    let rest = rest.trim_start_matches(['*', '~', '^', '+', '-']);
    let (function, location) = match rest.rsplit_once(' ') {
        Some((function, location)) => (function, location),
        None => ("", rest),
    };
    let mut parts = location.rsplitn(3, ':');
    let (_column, line, file) = (parts.next()?, parts.next()?, parts.next()?);
    let line = line.parse().ok()?;
    Some(Frame {
        function: if function.is_empty() {
            "(anonymous)".to_owned()
        } else {
            function.to_owned()
        },
        file: file.to_owned(),
        line,
        address: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v8_perf_map_entries() {
        let frame = jit_frame("JS:*spinForever /srv/app/spin.js:2:21").unwrap();
        assert_eq!(
            (frame.function.as_str(), frame.file.as_str(), frame.line),
            ("spinForever", "/srv/app/spin.js", 2)
        );
        let anonymous = jit_frame("JS:~ node:internal/timers:512:25").unwrap();
        assert_eq!(anonymous.function, "(anonymous)");
        assert_eq!(anonymous.file, "node:internal/timers");
        let older = jit_frame("LazyCompile:~handle /srv/app/x.js:7:1").unwrap();
        assert_eq!(
            (older.function.as_str(), older.file.as_str(), older.line),
            ("handle", "/srv/app/x.js", 7)
        );
        assert!(jit_frame("Builtins_JSEntry").is_none());
        assert!(jit_frame("v8::internal::Invoke(v8::internal::Isolate*)").is_none());
        assert!(jit_frame("JS:*broken").is_none());
    }

    #[test]
    fn drops_the_kernels_context_markers() {
        let chain = [u64::MAX - 511, 0x7f00_0000_1000, 0x40_1000, 0];
        assert_eq!(user_addresses(&chain), [0x7f00_0000_1000, 0x40_1000]);
    }
}
