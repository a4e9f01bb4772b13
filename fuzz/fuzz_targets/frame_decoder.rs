//! Feeds arbitrary bytes, split at arbitrary points, to the frame decoder the
//! collector runs on every probe connection (and the probe on every reply).
//! It must never panic, never buffer past the limit, and decode the same
//! messages however the bytes are split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwatch_proto::v1::{CollectorMessage, ProbeMessage};

const MAX: usize = 64 * 1024;

#[path = "../../proto/tests/support/split.rs"]
mod split;
use split::decode_chunks;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(bytes.len());
    let (whole, whole_failed) = decode_chunks::<ProbeMessage>(&[bytes], MAX);
    let (parts, parts_failed) = decode_chunks::<ProbeMessage>(&[&bytes[..split], &bytes[split..]], MAX);
    assert_eq!(whole_failed, parts_failed);
    assert_eq!(whole, parts);
    let _ = decode_chunks::<CollectorMessage>(&[bytes], MAX);
});
