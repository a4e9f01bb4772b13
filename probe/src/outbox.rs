//! The bounded queue between the sampler and the exporter.
//!
//! The sampler never waits: when the queue is full (the collector is away or
//! slow), the oldest snapshot is dropped and counted, since a newer snapshot
//! supersedes it. Events are kept in preference to snapshots, because each
//! event says something no later message repeats.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use meshwatch_proto::v1::{ProbeMessage, probe_message::Kind};

use crate::stats::ProbeCounters;

#[derive(Debug)]
struct State {
    queue: VecDeque<ProbeMessage>,
    closed: bool,
    /// The consumer is done: it said goodbye, or gave up.
    finished: bool,
    /// Closed because the process reported on is gone: no goodbye, its end
    /// is a death.
    abandoned: bool,
    /// How many times `pop` found nothing and went (back) to waiting: lets
    /// a test close the queue while a consumer is surely waiting.
    #[cfg(test)]
    waits: usize,
}

/// A bounded multi-producer, single-consumer queue of outgoing messages.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                closed: false,
                finished: false,
                abandoned: false,
                #[cfg(test)]
                waits: 0,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every mutation is a single VecDeque call), so poison is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `msg`, dropping (and counting) the oldest snapshot, or failing
    /// that the oldest message, when full. Never blocks beyond the lock.
    pub fn push(&self, msg: ProbeMessage, counters: &ProbeCounters) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.queue.len() >= self.capacity {
            let victim = state
                .queue
                .iter()
                .position(|m| matches!(m.kind, Some(Kind::Snapshot(_))))
                .unwrap_or(0);
            if let Some(dropped) = state.queue.remove(victim) {
                count_drop(&dropped, counters);
            }
        }
        state.queue.push_back(msg);
        drop(state);
        // Every waiter: the exporter may be in `pop` or `wait_closed`, and
        // the sampler in `wait_closed`; one notification could miss it.
        self.ready.notify_all();
    }

    /// Puts back a message whose send failed, to go first on the next
    /// connection. If the queue has filled meanwhile, the message is dropped
    /// and counted instead.
    pub fn requeue(&self, msg: ProbeMessage, counters: &ProbeCounters) {
        let mut state = self.lock();
        if state.queue.len() >= self.capacity {
            count_drop(&msg, counters);
            return;
        }
        state.queue.push_front(msg);
    }

    /// The next message, waiting up to `timeout`. `None` on timeout or once
    /// closed.
    pub fn pop(&self, timeout: Duration) -> Option<ProbeMessage> {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| {
                let empty = s.queue.is_empty() && !s.closed;
                #[cfg(test)]
                if empty {
                    s.waits += 1;
                }
                empty
            })
            .unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return None;
        }
        state.queue.pop_front()
    }

    /// Waits up to `timeout` or until closed. Returns whether it was closed:
    /// the exporter's backoff sleeps here so that shutdown is prompt.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        state.closed
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Wakes every waiter and refuses further messages.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Closes the queue for a process that is gone: the consumer leaves
    /// without a goodbye.
    pub fn abandon(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.abandoned = true;
        }
        self.ready.notify_all();
    }

    /// Whether the queue was closed by [`abandon`](Self::abandon).
    pub fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// Says the consumer is done with the queue (the exporter, after its
    /// goodbye), for whoever waits in [`wait_finished`](Self::wait_finished).
    pub fn finish(&self) {
        self.lock().finished = true;
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for the consumer to finish; whether it did.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| !s.finished)
            .unwrap_or_else(PoisonError::into_inner);
        state.finished
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

fn count_drop(msg: &ProbeMessage, counters: &ProbeCounters) {
    match msg.kind {
        Some(Kind::Event(_)) => counters.event_dropped(),
        _ => counters.snapshot_dropped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch_proto::v1::{Event, Snapshot};

    fn snapshot(seq: u64) -> ProbeMessage {
        ProbeMessage {
            kind: Some(Kind::Snapshot(Snapshot {
                seq,
                ..Snapshot::default()
            })),
        }
    }

    fn event() -> ProbeMessage {
        ProbeMessage {
            kind: Some(Kind::Event(Event::default())),
        }
    }

    fn seq(msg: ProbeMessage) -> u64 {
        match msg.kind {
            Some(Kind::Snapshot(s)) => s.seq,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    #[test]
    fn drops_oldest_snapshot_when_full_and_counts_it() {
        let counters = ProbeCounters::default();
        let outbox = Outbox::new(2);
        outbox.push(snapshot(1), &counters);
        outbox.push(event(), &counters);
        outbox.push(snapshot(2), &counters);
        outbox.push(snapshot(3), &counters);
        assert_eq!(outbox.len(), 2);
        assert_eq!(counters.totals().snapshots_dropped, 2);
        assert_eq!(counters.totals().events_dropped, 0);
        assert!(matches!(
            outbox.pop(Duration::ZERO).unwrap().kind,
            Some(Kind::Event(_))
        ));
        assert_eq!(seq(outbox.pop(Duration::ZERO).unwrap()), 3);
    }

    #[test]
    fn requeued_message_goes_first() {
        let counters = ProbeCounters::default();
        let outbox = Outbox::new(4);
        outbox.push(snapshot(2), &counters);
        outbox.requeue(snapshot(1), &counters);
        assert_eq!(seq(outbox.pop(Duration::ZERO).unwrap()), 1);
    }

    #[test]
    fn close_wakes_a_waiting_consumer() {
        let outbox = std::sync::Arc::new(Outbox::new(1));
        let waiter = {
            let outbox = outbox.clone();
            std::thread::spawn(move || outbox.pop(Duration::from_secs(60)))
        };
        // The lock is free only once the consumer waits on the condition.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while outbox.lock().waits == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the consumer never waited"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let closed_at = std::time::Instant::now();
        outbox.close();
        let popped = waiter.join().unwrap();
        let woken_after = closed_at.elapsed();
        assert!(popped.is_none());
        // Woken by the close, not by its 60 s timeout (the bound is generous
        // for a loaded machine).
        assert!(
            woken_after < Duration::from_secs(20),
            "woken after {woken_after:?}"
        );
        assert!(outbox.wait_closed(Duration::ZERO));
    }
}
