//! A small HTTP load generator: threads of keep-alive requests to an example
//! service, for the no-false-flag test and the watchdog benchmark.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What one run of load achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests answered with a success status.
    pub ok: u64,
    /// Requests that failed (connection errors, timeouts, error statuses).
    pub errors: u64,
}

/// Threads sending requests until [`Load::stop`].
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts `threads` threads, each with its own keep-alive connection to
    /// `http` (`host:port`). Every `work_every`-th request of a thread is
    /// `/work?ms=5..10` (a legitimately slow poll); the rest are `/`.
    /// `work_every` 0 sends only `/`.
    pub fn start(http: &str, threads: usize, work_every: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                let base = format!("http://{http}");
                std::thread::spawn(move || run(&base, t as u64, work_every, &stop))
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops every thread and adds up what they did.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().filter_map(|t| t.join().ok()).fold(
            LoadReport::default(),
            |sum, r| LoadReport {
                ok: sum.ok + r.ok,
                errors: sum.errors + r.errors,
            },
        )
    }
}

fn run(base: &str, seed: u64, work_every: u64, stop: &AtomicBool) -> LoadReport {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut report = LoadReport::default();
    let mut n = seed;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let url = if work_every > 0 && n.is_multiple_of(work_every) {
            format!("{base}/work?ms={}", 5 + n % 6)
        } else {
            format!("{base}/")
        };
        let answered = agent
            .get(&url)
            .call()
            .and_then(|mut response| response.body_mut().read_to_string());
        match answered {
            Ok(_) => report.ok += 1,
            Err(_) => report.errors += 1,
        }
    }
    report
}
