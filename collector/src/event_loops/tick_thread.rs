//! The shape both event-loop threads share: fed work through a channel,
//! doing a round of it every [`TICK`], stopped and joined when dropped.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use super::TICK;

/// What a tick thread does: takes new work, and goes round all it has.
pub(super) trait Rounds {
    /// The work it is fed.
    type Item: Send + 'static;
    /// Takes one piece of new work.
    fn add(&mut self, item: Self::Item);
    /// Goes round all its work once.
    fn round(&mut self);
}

/// A thread running [`Rounds`] every [`TICK`] until dropped.
#[derive(Debug)]
pub(super) struct TickThread<T> {
    feed: Option<Sender<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> TickThread<T> {
    /// Starts thread `name`, whose work is made on it by `make` (what it
    /// holds need not be `Send`).
    pub(super) fn start<R, F>(name: &str, make: F) -> std::io::Result<Self>
    where
        R: Rounds<Item = T>,
        F: FnOnce() -> R + Send + 'static,
    {
        let (feed, incoming) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&incoming, make()))?;
        Ok(Self {
            feed: Some(feed),
            thread: Some(thread),
        })
    }

    /// Hands the thread new work; false if it is no longer running.
    pub(super) fn send(&self, item: T) -> bool {
        self.feed
            .as_ref()
            .is_some_and(|feed| feed.send(item).is_ok())
    }
}

impl<T> Drop for TickThread<T> {
    fn drop(&mut self) {
        self.feed = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run<R: Rounds>(incoming: &Receiver<R::Item>, mut rounds: R) {
    let mut next_round = Instant::now();
    loop {
        match incoming.recv_timeout(next_round.saturating_duration_since(Instant::now())) {
            Ok(item) => {
                rounds.add(item);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        next_round = Instant::now() + TICK;
        rounds.round();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    struct Counting(Arc<Mutex<(Vec<u32>, u32)>>);

    impl Rounds for Counting {
        type Item = u32;
        fn add(&mut self, item: u32) {
            self.0.lock().unwrap().0.push(item);
        }
        fn round(&mut self) {
            self.0.lock().unwrap().1 += 1;
        }
    }

    #[test]
    fn takes_its_work_goes_round_and_stops_when_dropped() {
        let seen = Arc::new(Mutex::new((Vec::new(), 0)));
        let made = Arc::clone(&seen);
        let thread = TickThread::start("test-ticks", move || Counting(made)).unwrap();
        assert!(thread.send(7));
        std::thread::sleep(TICK * 2 + Duration::from_millis(100));
        drop(thread);
        let (items, rounds) = seen.lock().unwrap().clone();
        assert_eq!(items, vec![7]);
        assert!(rounds >= 1, "the first round is at once");
        assert_eq!(Arc::strong_count(&seen), 1, "the thread has ended");
    }
}
