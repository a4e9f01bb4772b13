//! Services in other languages, with no code change: processes of this host
//! watched from outside (`--watch REGEX=SERVICE`, `--watch-pid PID=SERVICE`).
//!
//! Every few seconds the watcher lists the host's processes and, for each
//! that a rule matches (its command line against the pattern, or its pid),
//! starts the probe's external watcher (`meshwatch_probe`'s `external`
//! feature): the probe's own process, thread and socket samplers pointed at
//! `/proc/PID`, sending to this collector's ingest address over the ordinary
//! wire protocol, as an instance of the rule's service. So a watched Node.js
//! or Python process is an instance like any other: the registry, the
//! history, `memory_growth` (on RSS), `socket_leak`, `fd_leak`,
//! `crash_loop` and `service_down` all apply. A new process that matches is
//! picked up within two scans of its start (the second sighting: by then a
//! launcher has handed over to the real program): a restart of the same
//! service. A process that
//! goes is a death (it sends no goodbye).
//!
//! Why a watcher inside the collector that speaks the wire protocol, rather
//! than the collector reading `/proc` into its state directly: the samplers,
//! the socket scan and the ingest path are the ones linked probes use, so
//! there is one implementation of each, and a watched process cannot reach
//! the state by any path a probe could not.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use meshwatch_probe::{Probe, ProbeHandle};
use regex::Regex;
use tokio::sync::watch;

/// How often the host's processes are listed.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// The snapshot interval of a watched process.
const INTERVAL: Duration = Duration::from_secs(1);
/// Command lines kept for matching, at most.
const MAX_CMDLINE: usize = 4096;

/// A process to watch, and the service it is an instance of.
#[derive(Debug, Clone)]
pub enum WatchRule {
    /// Every process whose command line (its arguments joined by spaces)
    /// the pattern matches.
    Command {
        /// Matched anywhere in the command line.
        pattern: Regex,
        /// The service the processes are instances of.
        service: String,
    },
    /// Every process in the cgroup at `path`, or below it (a systemd unit's,
    /// `/system.slice/proxy.service`; a container's).
    Cgroup {
        /// A cgroup path, as `/proc/PID/cgroup` writes it.
        path: String,
        /// The service the processes are instances of.
        service: String,
    },
    /// One process, while it lives.
    Pid {
        /// Its process id.
        pid: u32,
        /// The service it is an instance of.
        service: String,
    },
}

/// A `--watch` or `--watch-pid` value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum WatchRuleError {
    /// No `=SERVICE` at the end, or an empty side.
    #[error(
        "{0:?} is not PATTERN=SERVICE: give the process and the service it is, e.g. 'node .*proxy\\.js=proxy'"
    )]
    Shape(String),
    /// The pattern is not a regular expression.
    #[error("{0:?} is not a regular expression: {1}")]
    Pattern(String, #[source] regex::Error),
    /// The pid is not a number.
    #[error("{0:?} is not a process id: give PID=SERVICE, e.g. 4242=billing")]
    Pid(String),
    /// The cgroup path is not absolute.
    #[error(
        "{0:?} is not a cgroup path: give PATH=SERVICE, e.g. /system.slice/proxy.service=proxy"
    )]
    Cgroup(String),
}

impl WatchRule {
    /// Parses `--watch 'REGEX=SERVICE'` (split at the last `=`, so the
    /// pattern may hold one).
    pub fn command(value: &str) -> Result<Self, WatchRuleError> {
        let (pattern, service) = split(value)?;
        let pattern =
            Regex::new(pattern).map_err(|err| WatchRuleError::Pattern(pattern.to_owned(), err))?;
        Ok(WatchRule::Command { pattern, service })
    }

    /// Parses `--watch-pid PID=SERVICE`.
    pub fn pid(value: &str) -> Result<Self, WatchRuleError> {
        let (pid, service) = split(value)?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| WatchRuleError::Pid(pid.to_owned()))?;
        Ok(WatchRule::Pid { pid, service })
    }

    /// Parses `--watch-cgroup PATH=SERVICE`.
    pub fn cgroup(value: &str) -> Result<Self, WatchRuleError> {
        let (path, service) = split(value)?;
        let path = path.trim().trim_end_matches('/');
        if !path.starts_with('/') || path.len() < 2 {
            return Err(WatchRuleError::Cgroup(path.to_owned()));
        }
        Ok(WatchRule::Cgroup {
            path: path.to_owned(),
            service,
        })
    }

    /// The service of `process`, if this rule watches it.
    fn service_of(&self, process: &Seen<'_>) -> Option<&str> {
        let matched = match self {
            WatchRule::Command { pattern, .. } => pattern.is_match(process.cmdline),
            WatchRule::Pid { pid, .. } => *pid == process.pid,
            WatchRule::Cgroup { path, .. } => process.cgroups().iter().any(|c| under(c, path)),
        };
        matched.then_some(self.service())
    }

    fn service(&self) -> &str {
        match self {
            WatchRule::Command { service, .. }
            | WatchRule::Pid { service, .. }
            | WatchRule::Cgroup { service, .. } => service,
        }
    }
}

/// Whether cgroup `path` is `unit` or below it.
fn under(path: &str, unit: &str) -> bool {
    path.strip_prefix(unit)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A process met by a scan, with what the rules read of it; its cgroups
/// are read only if a cgroup rule asks.
struct Seen<'a> {
    pid: u32,
    cmdline: &'a str,
    process: &'a procfs::process::Process,
    cgroups: std::cell::OnceCell<Vec<String>>,
}

impl Seen<'_> {
    fn cgroups(&self) -> &[String] {
        self.cgroups.get_or_init(|| {
            self.process
                .cgroups()
                .map(|groups| groups.into_iter().map(|g| g.pathname).collect())
                .unwrap_or_default()
        })
    }
}

fn split(value: &str) -> Result<(&str, String), WatchRuleError> {
    let (left, service) = value
        .rsplit_once('=')
        .ok_or_else(|| WatchRuleError::Shape(value.to_owned()))?;
    let service = service.trim();
    if left.is_empty() || service.is_empty() {
        return Err(WatchRuleError::Shape(value.to_owned()));
    }
    Ok((left, service.to_owned()))
}

/// Where watched processes report, and how.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub ingest: SocketAddr,
    pub token: Option<String>,
}

/// The watcher's state across scans.
#[derive(Debug)]
struct Watcher {
    rules: Vec<WatchRule>,
    target: Target,
    /// The processes watched now.
    watched: HashMap<u32, ProbeHandle>,
    /// Processes that could not be watched or read in full, said once.
    warned: HashSet<u32>,
    /// Pid rules already used: a pid is watched once, never its reuse.
    pids_done: HashSet<u32>,
    /// Matching processes seen by the last scan, not watched yet: a process
    /// is watched from its second sighting, once a launcher (`env`, a
    /// version manager's shim) has handed over to the real program, whose
    /// executable says its runtime.
    pending: HashSet<u32>,
    own_pid: u32,
    /// Follows the event loops of the processes watched.
    loops: crate::event_loops::LoopWatch,
}

impl Watcher {
    /// One scan: forgets the processes that are gone, and watches the new
    /// ones a rule matches.
    fn scan(&mut self) {
        self.watched.retain(|_, handle| !handle.target_gone());
        let Ok(processes) = procfs::process::all_processes() else {
            return;
        };
        let mut sighted = HashSet::new();
        for process in processes.flatten() {
            let Ok(pid) = u32::try_from(process.pid) else {
                continue;
            };
            if pid == self.own_pid
                || self.watched.contains_key(&pid)
                || self.pids_done.contains(&pid)
            {
                continue;
            }
            let cmdline = process
                .cmdline()
                .map(|args| args.join(" "))
                .unwrap_or_default();
            if cmdline.is_empty() {
                // A kernel thread, or a process whose arguments are hidden.
                continue;
            }
            let cmdline: String = cmdline.chars().take(MAX_CMDLINE).collect();
            let seen = Seen {
                pid,
                cmdline: &cmdline,
                process: &process,
                cgroups: std::cell::OnceCell::new(),
            };
            let Some((service, by_pid)) = self.rules.iter().find_map(|rule| {
                Some((
                    rule.service_of(&seen)?,
                    matches!(rule, WatchRule::Pid { .. }),
                ))
            }) else {
                continue;
            };
            let service = service.to_owned();
            if !self.pending.contains(&pid) {
                sighted.insert(pid);
                continue;
            }
            if by_pid {
                self.pids_done.insert(pid);
            }
            self.watch(pid, &service, &process);
        }
        self.pending = sighted;
    }

    fn watch(&mut self, pid: u32, service: &str, process: &procfs::process::Process) {
        if process.fd_count().is_err() && self.warned.insert(pid) {
            tracing::warn!(
                pid,
                service,
                "cannot read the fds and sockets of a watched process: run the collector as its user, or as root (or with CAP_SYS_PTRACE); its other figures are reported"
            );
        }
        let mut builder = Probe::builder()
            .service(service)
            .collector(self.target.ingest.to_string())
            .interval(INTERVAL);
        if let Some(token) = &self.target.token {
            builder = builder.token(token.clone());
        }
        let started = |p: &procfs::process::Process| p.stat().ok().map(|s| s.starttime);
        let scanned = started(process);
        match builder.watch_process(pid) {
            // The pid may have been reused between the scan and the start:
            // watch only the process the rule matched.
            Ok(handle)
                if scanned.is_some()
                    && procfs::process::Process::new(process.pid)
                        .ok()
                        .and_then(|now| started(&now))
                        == scanned =>
            {
                tracing::info!(pid, service, "watching a process from outside");
                if let Some(events) = handle.watched_events() {
                    self.loops.follow(crate::event_loops::WatchedLoop {
                        pid,
                        runtime: meshwatch_probe::runtime_of(pid),
                        events,
                    });
                }
                self.watched.insert(pid, handle);
            }
            Ok(handle) => handle.abandon(),
            Err(err) => {
                if self.warned.insert(pid) {
                    tracing::warn!(pid, service, "cannot watch a process: {err}");
                }
            }
        }
    }
}

/// Watches the processes `rules` match until `stop` says so, on a thread
/// of its own (the scans read `/proc`, which blocks).
pub(crate) async fn watch_until_stopped(
    rules: Vec<WatchRule>,
    target: Target,
    mut stop: watch::Receiver<bool>,
) {
    if rules.is_empty() {
        return;
    }
    let mut watcher = Watcher {
        rules,
        target,
        watched: HashMap::new(),
        warned: HashSet::new(),
        pids_done: HashSet::new(),
        pending: HashSet::new(),
        own_pid: std::process::id(),
        loops: crate::event_loops::LoopWatch::start(),
    };
    let mut interval = tokio::time::interval(SCAN_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = interval.tick() => {
                watcher = match tokio::task::spawn_blocking(move || {
                    watcher.scan();
                    watcher
                })
                .await
                {
                    Ok(watcher) => watcher,
                    Err(err) => {
                        tracing::error!("the process watcher failed: {err}");
                        return;
                    }
                };
            }
        }
    }
    // The collector is stopping, not the processes: no goodbye, no wait.
    for (_, handle) in watcher.watched.drain() {
        handle.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a rule sees of a process with this command line, pid and
    /// cgroups.
    fn seen<'a>(
        process: &'a procfs::process::Process,
        pid: u32,
        cmdline: &'a str,
        cgroups: &[&str],
    ) -> Seen<'a> {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(cgroups.iter().map(|c| (*c).to_owned()).collect());
        Seen {
            pid,
            cmdline,
            process,
            cgroups: cell,
        }
    }

    #[test]
    fn parses_rules_and_explains_bad_ones() {
        let me = procfs::process::Process::myself().unwrap();
        let at = |pid, cmdline, cgroups| seen(&me, pid, cmdline, cgroups);
        let rule = WatchRule::command("node .*proxy\\.js=proxy").unwrap();
        assert_eq!(
            rule.service_of(&at(7, "node /srv/proxy.js --port 80", &[])),
            Some("proxy")
        );
        assert_eq!(rule.service_of(&at(7, "node /srv/api.js", &[])), None);
        let eq = WatchRule::command("--mode=fast=fast-svc").unwrap();
        assert_eq!(
            eq.service_of(&at(1, "app --mode=fast", &[])),
            Some("fast-svc"),
            "split at the last ="
        );
        let pid = WatchRule::pid("4242=billing").unwrap();
        assert_eq!(pid.service_of(&at(4242, "anything", &[])), Some("billing"));
        assert_eq!(pid.service_of(&at(4243, "anything", &[])), None);
        let unit = WatchRule::cgroup("/system.slice/proxy.service/=proxy").unwrap();
        let in_unit = ["/", "/system.slice/proxy.service"];
        assert_eq!(unit.service_of(&at(1, "x", &in_unit)), Some("proxy"));
        let below = ["/system.slice/proxy.service/worker"];
        assert_eq!(unit.service_of(&at(1, "x", &below)), Some("proxy"));
        let beside = ["/system.slice/proxy.service2"];
        assert_eq!(
            unit.service_of(&at(1, "x", &beside)),
            None,
            "a prefix of a name is not a parent"
        );
        for bad in ["no-service", "=svc", "node="] {
            let err = WatchRule::command(bad).unwrap_err().to_string();
            assert!(err.contains("PATTERN=SERVICE"), "{err}");
        }
        assert!(
            WatchRule::command("(unclosed=svc")
                .unwrap_err()
                .to_string()
                .contains("regular expression")
        );
        assert!(
            WatchRule::pid("abc=svc")
                .unwrap_err()
                .to_string()
                .contains("process id")
        );
        assert!(
            WatchRule::cgroup("relative=svc")
                .unwrap_err()
                .to_string()
                .contains("cgroup path")
        );
    }

    #[test]
    fn reads_the_cgroups_of_a_process() {
        let me = procfs::process::Process::myself().unwrap();
        let this = Seen {
            pid: std::process::id(),
            cmdline: "",
            process: &me,
            cgroups: std::cell::OnceCell::new(),
        };
        assert!(
            this.cgroups().iter().all(|c| c.starts_with('/')),
            "{:?}",
            this.cgroups()
        );
        assert!(!this.cgroups().is_empty());
    }
}
