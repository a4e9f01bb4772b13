//! Feeds arbitrary bytes, split at arbitrary points, to the frame decoder the
//! collector runs on every probe connection (and the probe on every reply).
//! It must never panic, never buffer past the limit, and decode the same
//! messages however the bytes are split.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The limit the collector runs with (`FRAME_CORPUS_MAX` in
/// `proto/tests/decoder_properties.rs`, which replays this target's corpus).
const MAX: usize = 64 * 1024;

#[path = "../../proto/tests/support/split.rs"]
mod split;

fuzz_target!(|data: &[u8]| split::assert_split_invariant(data, MAX));
