//! The meshwatch wire protocol, shared by the probe and the collector.
//!
//! The schema lives in `proto/meshwatch.proto`, which is the contract for
//! probes in any language. This crate holds the Rust types generated from it
//! (checked in, so building needs no `protoc`; the `generated_is_current` test
//! fails when they drift from the schema) and the framing: each message travels
//! as a 4-byte big-endian length followed by its protobuf encoding.
//!
//! Framing is sans-I/O: [`encode_frame`] appends a frame to a buffer and
//! [`FrameDecoder`] takes bytes as they arrive and yields whole messages, so
//! the blocking probe and the async collector share one implementation, and
//! the fuzzer exercises exactly what runs in production.
#![warn(missing_docs)]

mod frame;
#[cfg(feature = "tls")]
pub mod tls;

pub use frame::{DEFAULT_MAX_FRAME_LEN, FRAME_HEADER_LEN, FrameDecoder, FrameError, encode_frame};

/// The protocol version this crate speaks, sent in `Hello.protocol_version`.
///
/// It changes only when a peer speaking the previous version would misread
/// the new messages; adding fields does not change it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The generated message types of `meshwatch.proto`, package `meshwatch.v1`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    include!("gen/meshwatch.v1.rs");
}
