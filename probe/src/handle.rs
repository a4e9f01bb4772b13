//! The running probe: its threads and the handle that owns them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshwatch_proto::v1::{ProbeMessage, probe_message};

use crate::ProbeError;
use crate::config::Config;
use crate::exit::GOODBYE_WAIT;
use crate::exporter::Exporter;
use crate::identity::Identity;
use crate::outbox::Outbox;
use crate::sampler::{Sampler, WatchedRuntimes};
use crate::stats::ProbeCounters;

/// Keeps the probe running; dropping it stops the probe's threads.
///
/// Hold it for the life of the service (`let _probe = init("name");`). A
/// handle from a disabled or failed start does nothing and costs nothing.
#[derive(Debug)]
pub struct ProbeHandle {
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    outbox: Arc<Outbox>,
    runtimes: WatchedRuntimes,
    threads: Vec<JoinHandle<()>>,
    /// Kept for what the collector adds to a watched process's report
    /// (`watched_events`).
    #[cfg(feature = "external")]
    counters: Arc<ProbeCounters>,
    /// Watching another process from outside: its end is not this
    /// process's, so no goodbye, no wait, and this process's heap sampling
    /// is left alone.
    external: bool,
}

impl ProbeHandle {
    /// A handle that watches nothing: from `MESHWATCH_DISABLE=1` or a failed
    /// start in `init`.
    pub(crate) fn inert() -> Self {
        Self { running: None }
    }

    pub(crate) fn start(config: Config) -> Result<Self, ProbeError> {
        if config.disabled {
            tracing::info!("meshwatch: probe disabled by MESHWATCH_DISABLE");
            return Ok(Self::inert());
        }
        let heap_sample_interval = config.heap_sample_interval;
        let config = Arc::new(config);
        let outbox = Arc::new(Outbox::new(config.buffer_capacity));
        let counters = Arc::new(ProbeCounters::default());
        let runtimes = WatchedRuntimes::default();
        if let Ok(current) = tokio::runtime::Handle::try_current() {
            runtimes.add(current);
        }

        let sampler = {
            let (config, outbox, counters, runtimes) = (
                config.clone(),
                outbox.clone(),
                counters.clone(),
                runtimes.clone(),
            );
            std::thread::Builder::new()
                .name("meshwatch-sampler".to_owned())
                .spawn(move || {
                    crate::guest::enter_probe_thread();
                    let sampler = Sampler::new(runtimes, config.interval);
                    run_sampler(&config, &outbox, &counters, sampler);
                })
                .map_err(ProbeError::Spawn)?
        };
        let watchdog = match crate::watchdog::spawn(
            &config,
            outbox.clone(),
            counters.clone(),
            runtimes.clone(),
        ) {
            Ok(thread) => thread,
            Err(err) => {
                outbox.close();
                return Err(ProbeError::Spawn(err));
            }
        };
        let exporter = match spawn_exporter(
            config,
            Identity::of_this_process(),
            &outbox,
            counters.clone(),
        ) {
            Ok(thread) => thread,
            Err(err) => {
                outbox.close();
                return Err(err);
            }
        };
        crate::heap::set_sample_interval(heap_sample_interval);
        crate::exit::goodbye_on_clean_exit(&outbox);
        Ok(Self {
            running: Some(Running {
                outbox,
                runtimes,
                threads: vec![sampler, watchdog, exporter],
                #[cfg(feature = "external")]
                counters,
                external: false,
            }),
        })
    }

    /// Watches another process of the host from outside, as `identity`:
    /// its process, thread and socket figures, until it is gone.
    #[cfg(feature = "external")]
    pub(crate) fn start_external(
        config: Config,
        pid: u32,
        identity: Identity,
    ) -> Result<Self, ProbeError> {
        let config = Arc::new(config);
        let sampler =
            Sampler::for_pid(pid, config.interval).ok_or(ProbeError::NoSuchProcess { pid })?;
        let outbox = Arc::new(Outbox::new(config.buffer_capacity));
        let counters = Arc::new(ProbeCounters::default());
        let sampler = {
            let (config, outbox, counters) = (config.clone(), outbox.clone(), counters.clone());
            std::thread::Builder::new()
                .name(format!("meshwatch-watch-{pid}"))
                .spawn(move || run_sampler(&config, &outbox, &counters, sampler))
                .map_err(ProbeError::Spawn)?
        };
        let exporter = match spawn_exporter(config, identity, &outbox, counters.clone()) {
            Ok(thread) => thread,
            Err(err) => {
                outbox.abandon();
                return Err(err);
            }
        };
        Ok(Self {
            running: Some(Running {
                outbox,
                runtimes: WatchedRuntimes::default(),
                threads: vec![sampler, exporter],
                counters,
                external: true,
            }),
        })
    }

    /// Stops watching without a goodbye, and without waiting: for a process
    /// watched from outside that is gone, whose end is a death.
    #[cfg(feature = "external")]
    pub fn abandon(mut self) {
        if let Some(running) = self.running.take() {
            running.outbox.abandon();
        }
    }

    /// Whether the watched process is gone (the probe stopped watching it
    /// on its own).
    #[cfg(feature = "external")]
    pub fn target_gone(&self) -> bool {
        self.running
            .as_ref()
            .is_none_or(|running| running.outbox.is_abandoned())
    }

    /// What the collector adds to the report of a process watched from
    /// outside (its event loop's stalls), sent on this watcher's
    /// connection with its snapshots; `None` once stopped.
    #[cfg(feature = "external")]
    pub fn watched_events(&self) -> Option<crate::external::WatchedEvents> {
        let running = self.running.as_ref()?;
        Some(crate::external::WatchedEvents::new(
            running.outbox.clone(),
            running.counters.clone(),
        ))
    }

    /// Watches another tokio runtime as well. Runtimes are watched once
    /// however often they are added.
    pub fn watch_runtime(&self, handle: &tokio::runtime::Handle) {
        if let Some(running) = &self.running {
            running.runtimes.add(handle.clone());
        }
    }

    /// Whether the probe's threads are running (false when disabled).
    pub fn is_active(&self) -> bool {
        self.running.is_some()
    }

    /// Stops the probe and waits for its threads to finish, the exporter
    /// saying goodbye to the collector (so this end is counted as a stop,
    /// not a death). Dropping the handle does the same, waiting at most
    /// 250 ms.
    pub fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
            for thread in running.threads {
                // A probe thread that panicked has nothing left to clean up.
                let _ = thread.join();
            }
        }
    }
}

impl Drop for ProbeHandle {
    /// Stops the probe, and gives the exporter 250 ms at most to
    /// tell the collector this is a stop, not a death: the handle is usually
    /// dropped as `main` returns, and the process exits right after.
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            if running.external {
                // Watching stops; the process watched goes on, or is gone.
                running.outbox.abandon();
                return;
            }
            running.stop();
            let deadline = Instant::now() + GOODBYE_WAIT;
            while running.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl Running {
    /// Tells the threads to stop, and stops heap sampling: nothing would
    /// report the samples any more.
    fn stop(&self) {
        crate::heap::set_sample_interval(0);
        self.outbox.close();
    }
}

/// Starts the exporter thread: it sends what `outbox` holds, as `identity`.
fn spawn_exporter(
    config: Arc<Config>,
    identity: Identity,
    outbox: &Arc<Outbox>,
    counters: Arc<ProbeCounters>,
) -> Result<JoinHandle<()>, ProbeError> {
    let exporter = Exporter {
        config,
        identity,
        outbox: outbox.clone(),
        counters,
    };
    std::thread::Builder::new()
        .name("meshwatch-exporter".to_owned())
        .spawn(move || {
            crate::guest::enter_probe_thread();
            exporter.run();
        })
        .map_err(ProbeError::Spawn)
}

/// The sampler thread: one snapshot per interval, on a fixed schedule so
/// that a slow pass does not shift every later one. For a process watched
/// from outside, it stops when the process is gone, abandoning the outbox:
/// that end is a death, not a stop.
fn run_sampler(config: &Config, outbox: &Outbox, counters: &ProbeCounters, mut sampler: Sampler) {
    let mut next = Instant::now();
    loop {
        if sampler.target_gone() {
            outbox.abandon();
            return;
        }
        let snapshot = sampler.snapshot(counters);
        outbox.push(
            ProbeMessage {
                kind: Some(probe_message::Kind::Snapshot(snapshot)),
            },
            counters,
        );
        next += config.interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (the machine was suspended or overloaded): skip the
            // missed ticks rather than sample in a burst.
            next = now + config.interval;
        }
        if outbox.wait_closed(next - now) {
            return;
        }
    }
}
