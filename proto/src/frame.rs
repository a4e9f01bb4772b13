//! Length-prefixed framing of protobuf messages.

use prost::Message;

/// Bytes of the length prefix in front of every frame.
pub const FRAME_HEADER_LEN: usize = 4;

/// The default limit on one frame's body: 1 MiB. A snapshot of a busy service
/// is a few KiB; anything near this limit is a bug or an attack.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

/// Why a stream of frames could not be decoded. Each variant ends the
/// connection: after a bad frame the stream cannot be trusted to be in step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announced more bytes than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced body length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The body was not a valid protobuf encoding of the expected message.
    #[error("frame body is not a valid message: {0}")]
    Malformed(String),
}

/// Appends `msg` to `out` as one frame: a big-endian `u32` length, then the
/// message's protobuf encoding.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the encoded message exceeds `max_len`; `out`
/// is then left as it was, so a sender can drop the message and go on.
pub fn encode_frame<M: Message>(
    msg: &M,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > max_len || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    out.reserve(FRAME_HEADER_LEN + len);
    // `len` fits in u32: checked above.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode_raw(out);
    Ok(())
}

/// Decodes frames from bytes that arrive in arbitrary pieces.
///
/// Feed it with [`FrameDecoder::extend`] and drain it with
/// [`FrameDecoder::next_message`]. It refuses an oversized frame as soon as
/// its header arrives, before buffering the body, so a peer cannot make the
/// receiver allocate more than the limit.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_len: usize,
}

/// Buffer capacity a decoder keeps between messages. A large frame (up to
/// the limit, 1 MiB by default) grows the buffer; once it is decoded and
/// little is left, the buffer goes back to this, so a connection that sent
/// one large message does not hold a megabyte for its lifetime.
const RETAINED_CAPACITY: usize = 64 * 1024;

impl FrameDecoder {
    /// A decoder refusing frames whose body exceeds `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_len,
        }
    }

    /// Appends bytes received from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded into a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when a header announces more than the limit,
    /// [`FrameError::Malformed`] when a body does not decode as `M`.
    pub fn next_message<M: Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        let Some(header) = self.buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        let end = FRAME_HEADER_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let decoded = M::decode(&self.buf[FRAME_HEADER_LEN..end]);
        self.buf.drain(..end);
        if self.buf.capacity() > RETAINED_CAPACITY && self.buf.len() <= RETAINED_CAPACITY / 2 {
            self.buf.shrink_to(RETAINED_CAPACITY);
        }
        decoded
            .map(Some)
            .map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Hello, ProbeMessage, probe_message::Kind};

    fn hello(service: &str) -> ProbeMessage {
        ProbeMessage {
            kind: Some(Kind::Hello(Hello {
                protocol_version: crate::PROTOCOL_VERSION,
                service: service.to_owned(),
                ..Hello::default()
            })),
        }
    }

    #[test]
    fn round_trips_messages_split_at_every_byte() {
        let mut wire = Vec::new();
        encode_frame(&hello("a"), DEFAULT_MAX_FRAME_LEN, &mut wire).unwrap();
        encode_frame(&hello("bb"), DEFAULT_MAX_FRAME_LEN, &mut wire).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut got = Vec::new();
        for byte in &wire {
            decoder.extend(std::slice::from_ref(byte));
            while let Some(msg) = decoder.next_message::<ProbeMessage>().unwrap() {
                got.push(msg);
            }
        }
        assert_eq!(got, vec![hello("a"), hello("bb")]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn the_buffer_goes_back_to_its_retained_size_after_a_large_frame() {
        let large = hello(&"s".repeat(900 * 1024));
        let mut bytes = Vec::new();
        encode_frame(&large, 1 << 20, &mut bytes).unwrap();
        encode_frame(&hello("small"), 1 << 20, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&bytes);
        assert!(decoder.buf.capacity() > 900 * 1024);
        assert_eq!(decoder.next_message::<ProbeMessage>().unwrap(), Some(large));
        assert!(
            decoder.buf.capacity() <= RETAINED_CAPACITY,
            "{}",
            decoder.buf.capacity()
        );
        assert_eq!(
            decoder.next_message::<ProbeMessage>().unwrap(),
            Some(hello("small")),
            "what followed is kept"
        );
    }

    #[test]
    fn refuses_oversized_frame_from_its_header_alone() {
        let mut decoder = FrameDecoder::new(16);
        decoder.extend(&17u32.to_be_bytes());
        assert_eq!(
            decoder.next_message::<ProbeMessage>(),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
    }

    #[test]
    fn refuses_to_encode_oversized_message_and_leaves_buffer_intact() {
        let mut out = vec![1, 2, 3];
        let err = encode_frame(&hello(&"x".repeat(64)), 16, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 16, .. }));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn reports_garbage_body_as_malformed() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        decoder.extend(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decoder.next_message::<ProbeMessage>(),
            Err(FrameError::Malformed(_))
        ));
    }
}
