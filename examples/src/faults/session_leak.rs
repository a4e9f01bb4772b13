//! Fault `leak`: a proxy's session cache that stops evicting.
//!
//! The service plays a proxy that clients hold long connections to: a
//! steady stream of sessions opens (one every `1 / sessions_per_sec`), each
//! keeps a buffer of `session_bytes` for as long as its connection is held
//! (`hold`), then closes. A healthy cache evicts a session when it closes,
//! so it holds `rate × hold` sessions and its memory is flat. Once the leak
//! is triggered (`GET /fault/leak`), [`SessionCache::close`] only marks the
//! session closed and keeps it: the cache, and the heap, grow by
//! `rate × session_bytes` per second for as long as the service runs, and
//! the allocation site that grows is [`SessionCache::remember_session`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::get;

/// Turns the leak on: shared by the trigger route and the cache.
#[derive(Debug, Clone, Default)]
pub struct LeakSwitch(Arc<AtomicBool>);

impl LeakSwitch {
    /// From now on, closed sessions stay in the cache.
    pub fn turn_on(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub(super) fn routes(switch: LeakSwitch) -> Router {
    let trigger = move || {
        let switch = switch.clone();
        async move {
            switch.turn_on();
            "leak fault started: closed sessions are no longer evicted\n"
        }
    };
    Router::new().route("/fault/leak", get(trigger.clone()).post(trigger))
}

/// How the simulated clients behave.
#[derive(Debug, Clone, Copy)]
pub struct SessionTraffic {
    /// Sessions opened per second.
    pub sessions_per_sec: u32,
    /// Bytes of buffer each session holds.
    pub session_bytes: usize,
    /// How long a client holds its connection.
    pub hold: Duration,
}

/// One client's session: what a proxy keeps per connection.
#[derive(Debug)]
struct Session {
    /// Buffered bytes of the client's stream.
    _buffer: Vec<u8>,
}

/// Sessions by id.
#[derive(Debug, Default)]
pub struct SessionCache {
    sessions: HashMap<u64, Session>,
    leak: LeakSwitch,
}

impl SessionCache {
    /// A cache that evicts on close until `leak` is turned on.
    pub fn new(leak: LeakSwitch) -> Self {
        Self {
            sessions: HashMap::new(),
            leak,
        }
    }

    /// Opens a session with a buffer of `bytes`. Never inlined, so that
    /// stacks name it as the allocation site it is.
    #[inline(never)]
    pub fn remember_session(&mut self, id: u64, bytes: usize) {
        // Filled, not just reserved, so the memory is resident too.
        let buffer = vec![(id % 251) as u8; bytes];
        self.sessions.insert(id, Session { _buffer: buffer });
    }

    /// Closes a session. The bug, once the leak is on: the closed session
    /// stays in the cache forever.
    pub fn close(&mut self, id: u64) {
        if !self.leak.is_on() {
            self.sessions.remove(&id);
        }
    }

    /// Sessions held, open or not.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the cache holds no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Runs the simulated clients forever on the current runtime.
pub async fn run(traffic: SessionTraffic, leak: LeakSwitch) {
    let cache = Arc::new(Mutex::new(SessionCache::new(leak)));
    let period = Duration::from_secs(1) / traffic.sessions_per_sec.max(1);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for id in 0u64.. {
        ticks.tick().await;
        lock(&cache).remember_session(id, traffic.session_bytes);
        let cache = Arc::clone(&cache);
        tokio::spawn(async move {
            tokio::time::sleep(traffic.hold).await;
            lock(&cache).close(id);
        });
    }
}

fn lock(cache: &Mutex<SessionCache>) -> std::sync::MutexGuard<'_, SessionCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_cache_evicts_and_a_leaking_one_keeps_closed_sessions() {
        let mut healthy = SessionCache::new(LeakSwitch::default());
        let switch = LeakSwitch::default();
        switch.turn_on();
        let mut leaking = SessionCache::new(switch);
        for id in 0..10 {
            healthy.remember_session(id, 100);
            leaking.remember_session(id, 100);
            healthy.close(id);
            leaking.close(id);
        }
        assert!(healthy.is_empty());
        assert_eq!(leaking.len(), 10, "all closed, none evicted");
    }
}
