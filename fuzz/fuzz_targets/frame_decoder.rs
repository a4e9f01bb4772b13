//! Feeds arbitrary bytes, split at arbitrary points, to the frame decoder the
//! collector runs on every probe connection (and the probe on every reply).
//! It must never panic, never buffer past the limit, and decode the same
//! messages however the bytes are split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwatch_proto::FrameDecoder;
use meshwatch_proto::v1::{CollectorMessage, ProbeMessage};

const MAX: usize = 64 * 1024;

fn decode_all<M: prost::Message + Default + PartialEq>(chunks: &[&[u8]]) -> (Vec<M>, bool) {
    let mut decoder = FrameDecoder::new(MAX);
    let mut messages = Vec::new();
    for chunk in chunks {
        decoder.extend(chunk);
        loop {
            match decoder.next_message::<M>() {
                Ok(Some(msg)) => messages.push(msg),
                Ok(None) => break,
                Err(_) => return (messages, true),
            }
        }
        assert!(decoder.buffered() <= MAX + 4 + chunk.len());
    }
    (messages, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(bytes.len());
    let (whole, whole_failed) = decode_all::<ProbeMessage>(&[bytes]);
    let (parts, parts_failed) = decode_all::<ProbeMessage>(&[&bytes[..split], &bytes[split..]]);
    assert_eq!(whole_failed, parts_failed);
    assert_eq!(whole, parts);
    let _ = decode_all::<CollectorMessage>(&[bytes]);
});
