//! `--own-signal-handlers`: the service behaves like one that installs its
//! own signal handlers and runs a SIGPROF CPU profiler, to show that the
//! probe's stack capture neither breaks them nor is broken by them.
//!
//! Installed before the probe starts: handlers on `SIGUSR1` and on
//! `SIGRTMAX` (the probe's first choice, so the probe must pick another
//! signal), and a 100 Hz `ITIMER_PROF` profiler whose `SIGPROF` handler
//! counts its ticks. `GET /signals` reports the three counts.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use axum::Json;
use axum::Router;
use axum::routing::get;

static USR1: AtomicU64 = AtomicU64::new(0);
static RTMAX: AtomicU64 = AtomicU64::new(0);
static PROF: AtomicU64 = AtomicU64::new(0);

extern "C" fn count(sig: c_int) {
    let counter = if sig == libc::SIGUSR1 {
        &USR1
    } else if sig == libc::SIGPROF {
        &PROF
    } else {
        &RTMAX
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Installs the handlers and starts the profiler's timer.
///
/// # Errors
///
/// When the system refuses a handler or the timer.
pub fn install() -> anyhow::Result<()> {
    for sig in [libc::SIGUSR1, libc::SIGRTMAX(), libc::SIGPROF] {
        // SAFETY: installs a handler that only does an atomic add, with a
        // zero-initialized (plain C) `sigaction`.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = count as extern "C" fn(c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!(
                "cannot install a handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let tick = libc::timeval {
        tv_sec: 0,
        tv_usec: 10_000,
    };
    let timer = libc::itimerval {
        it_interval: tick,
        it_value: tick,
    };
    // SAFETY: a valid timer value; the old value is not wanted.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, std::ptr::null_mut()) } != 0 {
        bail!(
            "cannot start the profiling timer: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// `GET /signals`: how often each of the service's own handlers ran.
pub fn routes() -> Router {
    Router::new().route(
        "/signals",
        get(|| async {
            Json(serde_json::json!({
                "usr1": USR1.load(Ordering::Relaxed),
                "rtmax": RTMAX.load(Ordering::Relaxed),
                "prof": PROF.load(Ordering::Relaxed),
            }))
        }),
    )
}
