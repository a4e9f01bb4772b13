//! A service that forks while the probe samples its heap. The child of a
//! `fork` has only the thread that forked, so a lock another thread held at
//! that moment stays held in the child for good: were the child to take the
//! heap-sample table's lock (to forget a sampled pointer it frees, or to
//! record one it allocates), it would hang. Its own test binary, since it
//! installs the tracking allocator as the global one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meshwatch_probe::{Probe, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Forks done; each child runs while other threads churn the table.
const FORKS: usize = 200;
/// How long a child may take to free, allocate and exit.
const CHILD_DEADLINE: Duration = Duration::from_secs(10);

/// Waits for `child` to exit; its status, or `None` once the deadline has
/// passed (then it is killed).
fn wait_exit(child: libc::pid_t) -> Option<libc::c_int> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child, with a valid out-pointer.
        let waited = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if waited == child {
            return Some(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_child_forked_while_the_heap_is_sampled_frees_allocates_and_exits() {
    // Every allocation sampled, and no collector: the probe keeps sampling.
    let probe = Probe::builder()
        .service("forker")
        .collector("127.0.0.1:9")
        .heap_sample_interval(1)
        .start()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let boxes: Vec<Box<[u8; 64]>> = (0..64).map(|_| Box::new([0; 64])).collect();
                    drop(std::hint::black_box(boxes));
                }
            })
        })
        .collect();

    let mut hung = 0;
    for _ in 0..FORKS {
        let sampled: Vec<Box<[u8; 256]>> = (0..32).map(|_| Box::new([1; 256])).collect();
        // SAFETY: the child only frees, allocates and exits with `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                drop(sampled);
                let more: Vec<Vec<u8>> = (0..32).map(|i| vec![0; 128 + i]).collect();
                drop(std::hint::black_box(more));
                // SAFETY: ends the child without running the parent's
                // exit handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            child => {
                drop(sampled);
                match wait_exit(child) {
                    Some(status) => assert!(
                        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                        "the child ended with status {status:#x}"
                    ),
                    None => hung += 1,
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in churn {
        thread.join().unwrap();
    }
    probe.shutdown();
    assert_eq!(hung, 0, "{hung} of {FORKS} children hung");
}
