//! A process that exits with status 0 has stopped, not died: the probe says
//! goodbye then too, not only when its handle is dropped.
//!
//! A service that ends with `std::process::exit(0)` (after a drain, on a
//! supervisor's request) drops nothing, so without this its end would read
//! as a lost connection: a death, which `crash_loop` counts. glibc's
//! `on_exit` runs a function with the exit status as the process exits:
//! status 0 closes each running probe's outbox, and waits up to
//! [`GOODBYE_WAIT`] for its exporter to send the goodbye. Any other status
//! is left alone, so the end counts as a death, as it should. Without glibc
//! (musl), only a dropped handle says goodbye.

use std::sync::{Arc, Mutex, Once, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::outbox::Outbox;

/// How long an exit, or a dropped handle, may wait for the goodbyes, in all.
pub(crate) const GOODBYE_WAIT: Duration = Duration::from_millis(250);

/// The outboxes of the probes running in this process, with the process id
/// they were started in: a forked child inherits the list but not the
/// threads, and must not wait for them.
static RUNNING: Mutex<Vec<(u32, Weak<Outbox>)>> = Mutex::new(Vec::new());

/// Has the exit hook say goodbye for `outbox` when the process exits with
/// status 0.
pub(crate) fn goodbye_on_clean_exit(outbox: &Arc<Outbox>) {
    static HOOK: Once = Once::new();
    HOOK.call_once(install);
    let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    running.retain(|(_, weak)| weak.strong_count() > 0);
    running.push((std::process::id(), Arc::downgrade(outbox)));
}

/// Closes the outboxes of this process's probes and waits for their
/// goodbyes, at most [`GOODBYE_WAIT`] in all.
fn say_goodbye() {
    let pid = std::process::id();
    // Only tried: a child forked while a probe was starting in another
    // thread finds the list locked forever, and must still exit.
    let Ok(running) = RUNNING.try_lock() else {
        return;
    };
    // An outbox already closed was stopped by its dropped handle, which
    // waited for the goodbye itself.
    let outboxes: Vec<Arc<Outbox>> = running
        .iter()
        .filter(|(started_in, _)| *started_in == pid)
        .filter_map(|(_, weak)| weak.upgrade())
        .filter(|outbox| !outbox.is_closed())
        .collect();
    drop(running);
    for outbox in &outboxes {
        outbox.close();
    }
    let deadline = Instant::now() + GOODBYE_WAIT;
    for outbox in &outboxes {
        outbox.wait_finished(deadline.saturating_duration_since(Instant::now()));
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn install() {
    unsafe extern "C" {
        /// glibc: runs `function(status, arg)` at `exit`.
        fn on_exit(
            function: extern "C" fn(libc::c_int, *mut libc::c_void),
            arg: *mut libc::c_void,
        ) -> libc::c_int;
    }
    extern "C" fn at_exit(status: libc::c_int, _: *mut libc::c_void) {
        if status == 0 {
            say_goodbye();
        }
    }
    // SAFETY: registers a function with the signature glibc calls; it
    // touches only this module's statics and the outboxes' locks.
    if unsafe { on_exit(at_exit, std::ptr::null_mut()) } != 0 {
        tracing::debug!(
            "meshwatch: cannot register the exit hook; only a dropped handle says goodbye"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn install() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_exit_closes_the_running_outboxes_and_waits_for_their_goodbye() {
        let outbox = Arc::new(Outbox::new(4));
        goodbye_on_clean_exit(&outbox);
        let exporter = {
            let outbox = outbox.clone();
            std::thread::spawn(move || {
                // The exporter: until closed, then it finishes.
                while !outbox.wait_closed(Duration::from_secs(60)) {}
                outbox.finish();
            })
        };
        say_goodbye();
        assert!(outbox.is_closed());
        assert!(
            outbox.wait_finished(Duration::ZERO),
            "waited for the goodbye"
        );
        exporter.join().unwrap();
        drop(outbox);
        // A probe gone since: nothing to close, nothing to wait for.
        let started = Instant::now();
        say_goodbye();
        assert!(started.elapsed() < GOODBYE_WAIT);
    }
}
