//! Who this process is: the facts sent in `Hello`.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// The identity of the process a probe reports, fixed when it starts.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub instance_id: String,
    pub pid: u32,
    pub host: String,
    pub start_time_unix_ms: i64,
    /// The language or runtime: `rust` for a linked probe.
    pub runtime: String,
    /// Watched from outside rather than by a probe inside it.
    pub outside: bool,
    /// The secret that lets this probe, and no one else, take its instance
    /// back while the collector still holds its old connection.
    pub session_key: [u8; 16],
}

impl Identity {
    pub fn of_this_process() -> Self {
        Self {
            instance_id: random_instance_id(),
            pid: std::process::id(),
            host: host_name(),
            start_time_unix_ms: process_start_unix_ms(&procfs::process::Process::myself().ok())
                .unwrap_or_else(now_unix_ms),
            runtime: "rust".to_owned(),
            outside: false,
            session_key: random_key(),
        }
    }

    /// Another process of this host, watched from outside. Its instance id
    /// is derived from the host, the pid and the process's start, so the
    /// same process is the same instance whoever watches it, and a new
    /// process behind a reused pid is a new one.
    #[cfg(feature = "external")]
    pub fn of_process(pid: u32, runtime: &str) -> Option<Self> {
        let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok();
        let start = process_start_unix_ms(&process)?;
        let host = host_name();
        let word = |salt: u64| {
            let mut hasher = std::hash::DefaultHasher::new();
            hasher.write_u64(salt);
            hasher.write(host.as_bytes());
            hasher.write_u32(pid);
            hasher.write_i64(start);
            hasher.finish()
        };
        Some(Self {
            instance_id: format!("{:016x}{:016x}", word(1), word(2)),
            pid,
            host: host.clone(),
            start_time_unix_ms: start,
            runtime: runtime.to_owned(),
            outside: true,
            session_key: random_key(),
        })
    }
}

/// 128 random bits as hex.
fn random_instance_id() -> String {
    let [high, low] = random_words();
    format!("{high:016x}{low:016x}")
}

/// 128 random bits. Each `RandomState` is keyed from the OS's random
/// source, so two processes (or two starts of one) get different bits
/// without a dependency on a random-number crate.
fn random_words() -> [u64; 2] {
    let word = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    [word(1), word(2)]
}

/// 16 bytes from the kernel's random source (`getrandom`), or, where that
/// fails, [`random_words`]: a secret no other process can read or guess.
fn random_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    // SAFETY: the kernel writes at most `key.len()` bytes into `key`.
    let filled = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
    if usize::try_from(filled).ok() != Some(key.len()) {
        let [high, low] = random_words();
        key[..8].copy_from_slice(&high.to_le_bytes());
        key[8..].copy_from_slice(&low.to_le_bytes());
    }
    key
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// When the process started, from its `starttime` (clock ticks after boot)
/// and the boot time: the probe may be initialized well after the process
/// started, and restarts are judged by the process's real start.
fn process_start_unix_ms(process: &Option<procfs::process::Process>) -> Option<i64> {
    let stat = process.as_ref()?.stat().ok()?;
    let boot_secs = procfs::boot_time_secs().ok()?;
    let ticks = procfs::ticks_per_second();
    if ticks == 0 {
        return None;
    }
    let since_boot_ms = stat.starttime.checked_mul(1000)? / ticks;
    i64::try_from(boot_secs.checked_mul(1000)?.checked_add(since_boot_ms)?).ok()
}

/// The calling thread's kernel id (as in `/proc/self/task/TID`). Only a
/// system call, so it is safe inside a signal handler too.
pub(crate) fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).unwrap_or(0)
}

/// The wall clock in milliseconds since the Unix epoch; 0 if the clock is
/// before 1970.
pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_distinct_hex() {
        let a = random_instance_id();
        let b = random_instance_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn session_keys_are_random_and_per_identity() {
        let (a, b) = (random_key(), random_key());
        assert_ne!(a, b);
        assert_ne!(a, [0; 16]);
        let identity = Identity::of_this_process();
        assert_ne!(
            identity.session_key,
            Identity::of_this_process().session_key
        );
        assert_eq!(identity.clone().session_key, identity.session_key);
    }

    #[test]
    fn process_start_is_in_the_past_and_recent() {
        let start = process_start_unix_ms(&procfs::process::Process::myself().ok()).unwrap();
        let now = now_unix_ms();
        assert!(start <= now + 1000, "start {start} after now {now}");
        assert!(
            now - start < 24 * 3600 * 1000,
            "test process started over a day ago?"
        );
    }
}
