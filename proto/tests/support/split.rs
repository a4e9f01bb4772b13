//! Decodes a byte stream delivered in chunks, as a peer's socket would: the
//! one routine behind the decoder's fuzz target and its property test.

use meshwatch_proto::FrameDecoder;

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
