//! The fuzz target's property (`fuzz/fuzz_targets/frame_decoder.rs`), run on
//! stable in every test run over deterministic pseudo-random input: the
//! decoder never panics, never buffers past its limit, and decodes the same
//! messages however the bytes are split.

#![allow(clippy::unwrap_used)]

use meshwatch_proto::v1::{Hello, ProbeMessage, Snapshot, probe_message::Kind};
use meshwatch_proto::{FrameDecoder, encode_frame};

const MAX: usize = 4096;

/// xorshift64*: enough randomness for input generation, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A stream of valid frames with garbage, truncation or bit flips mixed in.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..rng.below(6) {
        let msg = if rng.below(2) == 0 {
            ProbeMessage {
                kind: Some(Kind::Hello(Hello {
                    service: "s".repeat(rng.below(100)),
                    pid: rng.next() as u32,
                    ..Hello::default()
                })),
            }
        } else {
            ProbeMessage {
                kind: Some(Kind::Snapshot(Snapshot {
                    seq: rng.next(),
                    ..Snapshot::default()
                })),
            }
        };
        encode_frame(&msg, MAX, &mut bytes).unwrap();
    }
    match rng.below(4) {
        0 => (0..rng.below(64)).for_each(|_| bytes.push(rng.next() as u8)),
        1 if !bytes.is_empty() => {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        2 => bytes.truncate(rng.below(bytes.len() + 1)),
        _ => {}
    }
    bytes
}

fn decode(chunks: &[&[u8]]) -> (Vec<ProbeMessage>, bool) {
    let mut decoder = FrameDecoder::new(MAX);
    let mut messages = Vec::new();
    for chunk in chunks {
        decoder.extend(chunk);
        loop {
            match decoder.next_message::<ProbeMessage>() {
                Ok(Some(msg)) => messages.push(msg),
                Ok(None) => break,
                Err(_) => return (messages, true),
            }
        }
        assert!(decoder.buffered() <= MAX + 4 + chunk.len());
    }
    (messages, false)
}

#[test]
fn decoding_is_independent_of_how_bytes_are_split() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5000 {
        let bytes = stream(&mut rng);
        let split = rng.below(bytes.len() + 1);
        let whole = decode(&[&bytes]);
        let parts = decode(&[&bytes[..split], &bytes[split..]]);
        assert_eq!(whole, parts, "input {bytes:?} split at {split}");
    }
}
