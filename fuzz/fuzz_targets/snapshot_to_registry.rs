//! Snapshots and events from an admitted probe, into the registry: a valid
//! Hello, then arbitrary bytes as the frames that follow it, through the
//! bounds, the namer, the registry, the series and the incident book; then
//! a pass of every detector and the services view, the incidents and
//! `/metrics` rendered. Overflowing sums, NaN figures, huge lists and
//! mangled stacks must all end in a served answer, not a panic.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use meshwatch_collector::fuzzing::Harness;

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    let harness = HARNESS.get_or_init(|| Mutex::new(Harness::for_target("snapshot")));
    let mut harness = harness.lock().unwrap_or_else(|e| e.into_inner());
    harness.admitted_probe(data);
});
