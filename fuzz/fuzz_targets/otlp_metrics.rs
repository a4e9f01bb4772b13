//! The OTLP receiver (`POST /v1/metrics`): arbitrary bytes as an export, in
//! protobuf and in JSON. Every answer must be a status the receiver
//! documents (200, 400, 401, 413, 415), never a panic or a 500, and what it
//! takes must survive a detection pass and the views.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use meshwatch_collector::fuzzing::Harness;

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    let harness = HARNESS.get_or_init(|| Mutex::new(Harness::for_target("otlp")));
    let mut harness = harness.lock().unwrap_or_else(|e| e.into_inner());
    harness.otlp_metrics(data);
});
