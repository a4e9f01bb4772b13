//! The fuzz target's property (`fuzz/fuzz_targets/frame_decoder.rs`), run on
//! stable in every test run over deterministic pseudo-random input and over
//! the fuzzer's kept corpus (`fuzz/corpus/frame_decoder`): the decoder never
//! panics, never buffers past its limit, and decodes the same messages
//! however the bytes are split.

#![allow(clippy::unwrap_used)]

use meshwatch_proto::encode_frame;
use meshwatch_proto::v1::{Hello, ProbeMessage, Snapshot, probe_message::Kind};

mod support {
    pub mod split;
}
use support::split::{assert_split_invariant, decode_chunks};

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

#[test]
fn decoding_is_independent_of_how_bytes_are_split() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5000 {
        let bytes = stream(&mut rng);
        let split = rng.below(bytes.len() + 1);
        let whole = decode_chunks::<ProbeMessage>(&[&bytes], MAX);
        let parts = decode_chunks::<ProbeMessage>(&[&bytes[..split], &bytes[split..]], MAX);
        assert_eq!(whole, parts, "input {bytes:?} split at {split}");
    }
}

/// The fuzz target's limit (`fuzz/fuzz_targets/frame_decoder.rs`).
const FRAME_CORPUS_MAX: usize = 64 * 1024;

#[test]
fn the_fuzzers_kept_inputs_decode_the_same_however_split() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame_decoder");
    let mut inputs: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() > 100,
        "{} inputs in {}",
        inputs.len(),
        dir.display()
    );
    for input in inputs {
        assert_split_invariant(&std::fs::read(&input).unwrap(), FRAME_CORPUS_MAX);
    }
}
