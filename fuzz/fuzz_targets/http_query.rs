//! The HTTP API's request parsing: arbitrary bytes as the query of every
//! endpoint that takes one, and as a whole path. Every answer must be a
//! status the API documents (200, 400, 401, 404, 405), never a panic or a
//! 500 from bad input.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use meshwatch_collector::fuzzing::Harness;

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    let harness = HARNESS.get_or_init(|| Mutex::new(Harness::for_target("http")));
    let harness = harness.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(text) = std::str::from_utf8(data) {
        harness.http_queries(text);
    }
});
