//! What each thread the probe starts does first: step out of the service's
//! way.
//!
//! The probe's threads (sampler, watchdog, exporter) live in the service's
//! process, so they share its CPU affinity and, pinned or not, its cores.
//! Their work is small on average (well under 1 % of a core) but comes in
//! bursts: a snapshot each second reads `/proc` and scans the socket table,
//! which under connection churn lists tens of thousands of TIME_WAIT
//! sockets. At the default priority such a burst takes its full time slice
//! from a worker that has requests waiting, which shows in the service's
//! tail latency. At a lower priority the scheduler lets the workers run
//! first and spreads the probe's work into the gaps.
//!
//! Not the lowest priority (`SCHED_IDLE`, nice 19): on a host whose cores
//! are all busy, the probe must still send a snapshot every interval, or
//! the collector takes the service for down, and its watchdog must still
//! see a stuck worker within the threshold.

/// The nice value the probe's threads run at: about a tenth of a default
/// thread's share of a busy core (Linux's weight 110 against 1024).
const PROBE_THREAD_NICE: i32 = 10;

/// Called first by every thread the probe starts: its allocations are never
/// heap-sampled (the profiler does not profile itself), and it runs at a
/// lower priority than the service's threads.
pub(crate) fn enter_probe_thread() {
    crate::heap::exclude_this_thread();
    lower_this_thread_priority();
}

/// Lowers the calling thread's priority to [`PROBE_THREAD_NICE`], unless it
/// is lower already (a service run under `nice` keeps its own). On Linux a
/// thread id given to `setpriority` changes that thread only. Failure is
/// harmless: the thread keeps the priority it has.
fn lower_this_thread_priority() {
    let tid = crate::identity::current_tid();
    // SAFETY: plain system calls on this thread's id; errno is reset first,
    // since -1 is also a valid nice value.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if *libc::__errno_location() != 0 || current >= PROBE_THREAD_NICE {
            return;
        }
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, PROBE_THREAD_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value.
    fn nice() -> i32 {
        let tid = crate::identity::current_tid();
        // SAFETY: a plain system call on this thread's id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
    }

    #[test]
    fn a_probe_thread_runs_below_the_service_and_the_service_is_untouched() {
        let before = nice();
        let inside = std::thread::spawn(|| {
            enter_probe_thread();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(inside, PROBE_THREAD_NICE.max(before));
        assert_eq!(nice(), before, "only the probe's thread changed");
    }
}
