//! The Hello handshake as the collector runs it on a new probe connection:
//! arbitrary bytes as everything a connection sends (frames or not, a Hello
//! or not, any fields), through the frame decoder, the Hello checks, the
//! bounds and the registry. It must never panic or hang, and a refused
//! Hello must leave the collector serving the next connection.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use meshwatch_collector::fuzzing::Harness;

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    let harness = HARNESS.get_or_init(|| Mutex::new(Harness::for_target("hello")));
    let harness = harness.lock().unwrap_or_else(|e| e.into_inner());
    harness.connection(data);
});
