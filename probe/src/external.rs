//! Watching another process of the host from outside: what the collector's
//! `--watch` starts for each Node.js, Python or native process it matches.
//!
//! The probe's own samplers read `/proc/PID` instead of `/proc/self`, and
//! its exporter speaks the ordinary wire protocol, so a watched process is
//! an instance like any other to the collector: registry, series, leaks,
//! crash loops. What only a linked probe sees (the tokio runtimes, the
//! tracking allocator's heap, stuck polls) is absent.

use std::path::Path;
use std::sync::Arc;

use meshwatch_proto::v1::{Event, ProbeMessage, StuckPoll, event, probe_message};

use crate::outbox::Outbox;
use crate::stats::ProbeCounters;

/// Adds to the report of a process watched from outside what the
/// collector learns of it by other means: the stalls of its event loop,
/// which only a watcher with the host's privileges can see. The events
/// travel on the watcher's own connection, queued like the watchdog's, so
/// they reach the collector by the path any probe's do.
#[derive(Debug, Clone)]
pub struct WatchedEvents {
    outbox: Arc<Outbox>,
    counters: Arc<ProbeCounters>,
}

impl WatchedEvents {
    pub(crate) fn new(outbox: Arc<Outbox>, counters: Arc<ProbeCounters>) -> Self {
        Self { outbox, counters }
    }

    /// Queues a stuck-poll event (an event loop that stopped turning), to go
    /// out with the next message. Never blocks beyond the queue's lock.
    pub fn stuck_poll(&self, stuck: StuckPoll) {
        let message = ProbeMessage {
            kind: Some(probe_message::Kind::Event(Event {
                time_unix_ms: crate::identity::now_unix_ms(),
                kind: Some(event::Kind::StuckPoll(stuck)),
            })),
        };
        self.outbox.push(message, &self.counters);
    }

    /// Whether watching has stopped (the process is gone, or the watcher was
    /// abandoned): events would go nowhere.
    pub fn is_closed(&self) -> bool {
        self.outbox.is_closed()
    }
}

/// The language or runtime of process `pid`, from its executable and the
/// first two words of its command line (the second for a program started
/// through a launcher: `/usr/bin/env node app.js`, a version manager's
/// shim script): `node`, `python`, or `native` for anything else.
pub fn runtime_of(pid: u32) -> &'static str {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let exe = std::fs::read_link(proc_dir.join("exe")).ok();
    let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .take(2)
        .filter_map(|word| String::from_utf8(word.to_vec()).ok())
        .collect();
    let base = |path: &Path| path.file_name()?.to_str().map(str::to_owned);
    let names: Vec<String> = exe
        .as_deref()
        .and_then(base)
        .into_iter()
        .chain(words.iter().filter_map(|w| base(Path::new(w))))
        .collect();
    runtime_named(names.iter().map(String::as_str))
}

/// The runtime a program named one of `names` is.
fn runtime_named<'a>(mut names: impl Iterator<Item = &'a str> + Clone) -> &'static str {
    if names
        .clone()
        .any(|n| n == "node" || n == "nodejs" || n.starts_with("node-"))
    {
        "node"
    } else if names.any(|n| n.starts_with("python") || n.starts_with("pypy")) {
        "python"
    } else {
        "native"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_node_and_python_from_native_programs() {
        assert_eq!(runtime_named(["node"].into_iter()), "node");
        assert_eq!(
            runtime_named(["python3.11", "gunicorn"].into_iter()),
            "python"
        );
        assert_eq!(runtime_named(["pypy3"].into_iter()), "python");
        assert_eq!(runtime_named(["envoy"].into_iter()), "native");
        assert_eq!(runtime_of(std::process::id()), "native", "this test binary");
    }
}

#[cfg(test)]
mod watching {
    use std::time::{Duration, Instant};

    use crate::Probe;

    #[test]
    fn watches_another_process_until_it_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let handle = Probe::builder()
            .service("sleeper")
            .collector("127.0.0.1:1")
            .interval(Duration::from_millis(50))
            .watch_process(child.id())
            .unwrap();
        assert!(handle.is_active() && !handle.target_gone());
        child.kill().unwrap();
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !handle.target_gone() {
            assert!(
                Instant::now() < deadline,
                "the probe never noticed the process was gone"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(matches!(
            Probe::builder().service("none").watch_process(u32::MAX),
            Err(crate::ProbeError::NoSuchProcess { .. })
        ));
    }
}
