//! A healthy cache that fills and is flushed, over and over: a sawtooth in
//! the heap that no detector should call a leak, and the noise a real leak
//! must be found under.
//!
//! The cache fills evenly to `peak_bytes` over `period`, then is cleared
//! at once, like a response cache flushed on a timer.

use std::time::Duration;

/// How the cache fills and flushes.
#[derive(Debug, Clone, Copy)]
pub struct Sawtooth {
    /// What the cache holds just before a flush.
    pub peak_bytes: usize,
    /// From empty to full.
    pub period: Duration,
}

/// Fills of the cache per period.
const STEPS: u32 = 60;

/// Runs the cache forever on the current runtime.
pub async fn run(sawtooth: Sawtooth) {
    let step_bytes = sawtooth.peak_bytes / STEPS as usize;
    let mut ticks = tokio::time::interval(sawtooth.period / STEPS);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cache: Vec<Vec<u8>> = Vec::new();
    loop {
        for step in 0..STEPS {
            ticks.tick().await;
            cache.push(entry(step, step_bytes));
        }
        cache.clear();
        cache.shrink_to_fit();
    }
}

/// One cached response, filled so that its pages are resident too. Never
/// inlined, so that stacks name it as the allocation site it is.
#[inline(never)]
fn entry(step: u32, bytes: usize) -> Vec<u8> {
    vec![(step % 251) as u8; bytes]
}
