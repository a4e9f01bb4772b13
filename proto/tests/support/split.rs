//! Decodes a byte stream delivered in chunks, as a peer's socket would: the
//! one routine behind the decoder's fuzz target and its property tests.

use meshwatch_proto::FrameDecoder;
use meshwatch_proto::v1::{CollectorMessage, ProbeMessage};

/// The fuzz target's property on one input: its first byte says where to
/// split the rest, and decoded whole or in those two parts (as probe
/// messages) the same messages come out, with the same failure; decoded as
/// collector messages it does not panic either.
pub fn assert_split_invariant(data: &[u8], max: usize) {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(bytes.len());
    let whole = decode_chunks::<ProbeMessage>(&[bytes], max);
    let parts = decode_chunks::<ProbeMessage>(&[&bytes[..split], &bytes[split..]], max);
    assert_eq!(whole, parts, "input {bytes:?} split at {split}");
    let _ = decode_chunks::<CollectorMessage>(&[bytes], max);
}

/// Every message decoded from `chunks` fed in order to a decoder refusing
/// frames over `max`, and whether decoding stopped on an error. Asserts
/// that the decoder never buffers more than the limit allows.
pub fn decode_chunks<M: prost::Message + Default>(chunks: &[&[u8]], max: usize) -> (Vec<M>, bool) {
    let mut decoder = FrameDecoder::new(max);
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
        assert!(decoder.buffered() <= max + meshwatch_proto::FRAME_HEADER_LEN + chunk.len());
    }
    (messages, false)
}
