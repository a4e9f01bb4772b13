//! Whether an event loop still turns, seen from outside: a one-shot
//! hardware breakpoint on the C library function the loop waits in.
//!
//! An event loop (libuv under Node.js, libev under gevent, asyncio's
//! selector) enters its poll function (`epoll_wait`, `epoll_pwait`, `poll`,
//! `select`) once per turn. A breakpoint on that function's first
//! instruction, counted by `perf_event_open` for the loop's thread alone,
//! says the loop turned since it was armed. It is one-shot
//! (`PERF_EVENT_IOC_REFRESH` with 1): the kernel disables it at the first
//! hit, so a loop turning 100,000 times a second traps once per arming, not
//! 100,000 times (a trap costs about 10 µs in a virtual machine: always-on
//! uprobes or breakpoints would cost a busy service a third of its CPU).
//! A disabled breakpoint event cannot be re-armed reliably, so each arming
//! opens a fresh one; that is a few system calls, four times a second.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use perf_event::events::Breakpoint;
use perf_event::{Builder, Counter};
use procfs::process::{MMapPath, Process};

/// A one-shot breakpoint on each of a process's poll functions, for its
/// event loop's thread.
#[derive(Debug)]
pub(crate) struct PollBeacon {
    tid: i32,
    /// The functions' addresses in the process, with their names.
    targets: Vec<(u64, &'static str)>,
    armed: Vec<Counter>,
}

/// Why the beacon could not be set.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BeaconError {
    /// The process's memory map or the C library could not be read.
    #[error("cannot read process {pid}'s memory map: {source}")]
    Maps {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
    /// None of the functions is in the C library or the executable.
    #[error("process {pid} has none of {functions:?} in its C library or executable")]
    NotFound {
        pid: u32,
        functions: &'static [&'static str],
    },
    /// `perf_event_open` refused the breakpoint.
    #[error("{}", perf_refusal(source))]
    Perf {
        #[source]
        source: std::io::Error,
    },
}

/// What `perf_event_open`'s error means for a host daemon.
pub(crate) fn perf_refusal(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => format!(
            "perf_event_open refused ({err}): watching an event loop from outside needs root, or CAP_PERFMON and CAP_SYS_PTRACE"
        ),
        Some(libc::ENOSPC) => format!(
            "no hardware breakpoint is free for the thread ({err}): a debugger may hold them"
        ),
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL) => {
            format!("this kernel or machine has no perf breakpoints ({err})")
        }
        _ => format!("perf_event_open failed: {err}"),
    }
}

/// The C library's functions for the poll system call `syscall` (as
/// `/proc/PID/syscall` shows it), the ones a loop waiting in it calls;
/// `None` for any other system call.
pub(crate) fn poll_functions(syscall: i64) -> Option<&'static [&'static str]> {
    #[cfg(target_arch = "x86_64")]
    match syscall {
        libc::SYS_epoll_wait => return Some(&["epoll_wait"]),
        libc::SYS_poll => return Some(&["poll"]),
        libc::SYS_select => return Some(&["select"]),
        _ => {}
    }
    match syscall {
        // The C library may implement the older calls with these.
        libc::SYS_epoll_pwait => Some(&["epoll_pwait", "epoll_wait"]),
        libc::SYS_epoll_pwait2 => Some(&["epoll_pwait2"]),
        libc::SYS_ppoll => Some(&["ppoll", "poll"]),
        libc::SYS_pselect6 => Some(&["pselect", "select"]),
        _ => None,
    }
}

impl PollBeacon {
    /// Finds `functions` in process `pid`'s C library (or, for a static
    /// program, its executable), for breakpoints on thread `tid`.
    pub(crate) fn locate(
        pid: u32,
        tid: u32,
        functions: &'static [&'static str],
    ) -> Result<Self, BeaconError> {
        let maps_error = |source| BeaconError::Maps { pid, source };
        let process = Process::new(pid as i32).map_err(maps_error)?;
        let maps = process.maps().map_err(maps_error)?;
        let exe = process.exe().ok();
        let is_libc = |path: &Path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libc.so") || name.starts_with("libc-"))
        };
        let mapped: Vec<PathBuf> = maps
            .iter()
            .filter_map(|map| match &map.pathname {
                MMapPath::Path(path) => Some(path.clone()),
                _ => None,
            })
            .collect();
        let candidates = mapped
            .iter()
            .filter(|path| is_libc(path))
            .chain(exe.iter())
            .cloned();
        let inspector = blazesym::inspect::Inspector::new();
        for object in candidates {
            // Through the process's root, so a container's library is read.
            let on_disk = Path::new("/proc")
                .join(pid.to_string())
                .join("root")
                .join(object.strip_prefix("/").unwrap_or(&object));
            let mut elf = blazesym::inspect::source::Elf::new(on_disk);
            // The object's own symbol table, which gives file offsets.
            elf.debug_syms = false;
            let source = blazesym::inspect::source::Source::Elf(elf);
            let Ok(found) = inspector.lookup(&source, functions) else {
                continue;
            };
            let mut targets = Vec::new();
            for (name, infos) in functions.iter().zip(found) {
                let Some(offset) = infos.iter().find_map(|info| info.file_offset) else {
                    continue;
                };
                let address = maps.iter().find_map(|map| {
                    let executable = map.perms.contains(procfs::process::MMPermissions::EXECUTE);
                    let here = matches!(&map.pathname, MMapPath::Path(p) if *p == object);
                    let length = map.address.1 - map.address.0;
                    (executable && here && offset >= map.offset && offset - map.offset < length)
                        .then(|| map.address.0 + (offset - map.offset))
                });
                if let Some(address) = address
                    && !targets.iter().any(|(a, _)| *a == address)
                {
                    targets.push((address, *name));
                }
            }
            if !targets.is_empty() {
                return Ok(Self {
                    tid: tid as i32,
                    targets,
                    armed: Vec::new(),
                });
            }
        }
        Err(BeaconError::NotFound { pid, functions })
    }

    /// The functions watched, for the evidence.
    pub(crate) fn functions(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.targets.iter().map(|(_, name)| *name)
    }

    /// Arms a fresh one-shot breakpoint on each function.
    pub(crate) fn arm(&mut self) -> Result<(), BeaconError> {
        self.armed.clear();
        for (address, _) in &self.targets {
            let perf = |source| BeaconError::Perf { source };
            let counter = Builder::new(Breakpoint::execute(*address))
                .observe_pid(self.tid)
                .any_cpu()
                .sample_period(1)
                .enabled(false)
                .build()
                .map_err(perf)?;
            // SAFETY: the descriptor is the counter's own, open for the
            // call; REFRESH takes an integer argument.
            let refreshed = unsafe { perf_event_open_sys::ioctls::REFRESH(counter.as_raw_fd(), 1) };
            if refreshed < 0 {
                return Err(perf(std::io::Error::last_os_error()));
            }
            self.armed.push(counter);
        }
        Ok(())
    }

    /// Whether the thread entered a poll function since the last arming.
    pub(crate) fn hit(&mut self) -> bool {
        self.armed
            .iter_mut()
            .any(|counter| counter.read().is_ok_and(|count| count > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_poll_calls_and_nothing_else() {
        assert!(
            poll_functions(libc::SYS_epoll_pwait)
                .is_some_and(|names| names.contains(&"epoll_pwait"))
        );
        assert_eq!(poll_functions(libc::SYS_futex), None);
        assert_eq!(poll_functions(libc::SYS_read), None);
        assert_eq!(poll_functions(-1), None, "not in a system call");
    }

    /// A thread of this test that waits in `epoll_wait` once a round, and
    /// the beacon on it: hit after each round, silent while it spins.
    #[test]
    fn a_beacon_fires_once_per_arming_when_the_loop_turns() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
        let thread = std::thread::spawn(move || {
            // SAFETY: plain system calls on a descriptor this thread owns.
            let epoll = unsafe { libc::epoll_create1(0) };
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
            let _ = tx.send(unsafe { libc::gettid() });
            while let Ok(turn) = go_rx.recv() {
                if turn {
                    for _ in 0..1000 {
                        // SAFETY: as above.
                        unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 1, 0) };
                    }
                }
                let _ = tx.send(0);
            }
        });
        let tid = rx.recv().unwrap() as u32;
        let mut beacon = match PollBeacon::locate(std::process::id(), tid, &["epoll_wait"]) {
            Ok(beacon) => beacon,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(beacon.functions().collect::<Vec<_>>(), ["epoll_wait"]);
        if let Err(err) = beacon.arm() {
            // SAFETY: a plain system call.
            let root = unsafe { libc::geteuid() } == 0;
            assert!(!root, "as root the breakpoint must be set: {err}");
            eprintln!("skipped without root: {err}");
            return;
        }
        go_tx.send(false).unwrap();
        rx.recv().unwrap();
        assert!(!beacon.hit(), "no poll entered yet");
        go_tx.send(true).unwrap();
        rx.recv().unwrap();
        assert!(beacon.hit(), "a thousand poll calls");
        assert_eq!(beacon.armed[0].read().unwrap(), 1, "one-shot: one trap");
        beacon.arm().unwrap();
        assert!(!beacon.hit(), "re-armed");
        drop(go_tx);
        thread.join().unwrap();
    }
}
