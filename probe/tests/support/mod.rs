//! What the probe's integration tests share: a collector end driven by
//! hand, to see exactly what the probe sends.
#![allow(dead_code)] // each test binary uses its own part of it

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use meshwatch_proto::v1::{
    CollectorMessage, Hello, ProbeMessage, Snapshot, Welcome, collector_message, probe_message,
};
use meshwatch_proto::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, encode_frame};

/// Reads frames from one accepted probe connection, and answers.
pub struct FakeCollectorConn {
    /// The connection, to send the probe what a test wants.
    pub stream: TcpStream,
    decoder: FrameDecoder,
}

impl FakeCollectorConn {
    pub fn accept(listener: &TcpListener) -> Self {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_LEN),
        }
    }

    /// Accepts the probe's connection and reads its Hello.
    pub fn accept_hello(listener: &TcpListener) -> (Self, Hello) {
        let mut conn = Self::accept(listener);
        match conn.next().kind {
            Some(probe_message::Kind::Hello(hello)) => (conn, hello),
            other => panic!("expected Hello first, got {other:?}"),
        }
    }

    pub fn next(&mut self) -> ProbeMessage {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(msg) = self.decoder.next_message::<ProbeMessage>().unwrap() {
                return msg;
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "probe closed the connection");
            self.decoder.extend(&buf[..n]);
        }
    }

    pub fn welcome(&mut self) {
        let mut frame = Vec::new();
        let reply = CollectorMessage {
            kind: Some(collector_message::Kind::Welcome(Welcome::default())),
        };
        encode_frame(&reply, DEFAULT_MAX_FRAME_LEN, &mut frame).unwrap();
        self.stream.write_all(&frame).unwrap();
    }

    pub fn next_snapshot(&mut self) -> Snapshot {
        match self.next().kind {
            Some(probe_message::Kind::Snapshot(s)) => s,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
}
