//! Names stack samples on a thread of its own, so the watchdog keeps
//! ticking while debug info loads.
//!
//! The first lookup in a process parses the binary's line tables, which
//! takes from a fraction of a second (release, line tables only) to several
//! seconds (debug builds). Done on the watchdog thread, that would blind it
//! to every other worker meanwhile. The namer thread starts on the first
//! sample, so a service that never gets stuck never pays for it.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};

use meshwatch_proto::v1::Frame;

use crate::stack::{AddressKind, RELEASE_AFTER, Symbolizer};

/// Samples waiting to be named; beyond it new samples are dropped (the
/// watchdog samples again soon).
const QUEUE: usize = 8;

/// A stack to name, for the stuck period `key`.
#[derive(Debug)]
struct Request {
    key: String,
    addrs: Vec<u64>,
}

/// A named stack, for the stuck period `key`, leaf first.
#[derive(Debug)]
pub(crate) struct Named {
    pub key: String,
    pub frames: Vec<Frame>,
}

/// The watchdog's end of the namer thread.
#[derive(Debug, Default)]
pub(crate) struct Namer {
    link: Option<(SyncSender<Request>, Receiver<Named>)>,
}

impl Namer {
    /// Queues `addrs` (leaf first, the leaf an exact address) to be named.
    /// Returns false when the sample had to be dropped.
    pub fn submit(&mut self, key: &str, addrs: Vec<u64>) -> bool {
        if self.link.is_none() {
            self.link = start();
        }
        let Some((requests, _)) = &self.link else {
            return false;
        };
        let request = Request {
            key: key.to_owned(),
            addrs,
        };
        match requests.try_send(request) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                self.link = None;
                false
            }
        }
    }

    /// The stacks named since the last call.
    pub fn named(&self) -> Vec<Named> {
        self.link
            .as_ref()
            .map(|(_, named)| named.try_iter().collect())
            .unwrap_or_default()
    }
}

/// Starts the thread; `None` when the OS refuses (samples then go unnamed
/// and the watchdog reports without frames).
fn start() -> Option<(SyncSender<Request>, Receiver<Named>)> {
    let (requests, incoming) = mpsc::sync_channel::<Request>(QUEUE);
    let (outgoing, named) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("meshwatch-namer".to_owned())
        .spawn(move || {
            let mut symbolizer = Symbolizer::default();
            loop {
                // Ends when the watchdog drops its sender; wakes now and then
                // to free the debug info once naming is idle.
                let request = match incoming.recv_timeout(RELEASE_AFTER) {
                    Ok(request) => request,
                    Err(RecvTimeoutError::Timeout) => {
                        symbolizer.release_if_idle();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let frames = symbolizer.stack(&request.addrs, AddressKind::Exact);
                let named = Named {
                    key: request.key,
                    frames,
                };
                if outgoing.send(named).is_err() {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => Some((requests, named)),
        Err(err) => {
            tracing::warn!(error = %err, "meshwatch: cannot start the namer thread; stacks will not be named");
            None
        }
    }
}
