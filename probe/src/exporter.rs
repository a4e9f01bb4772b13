//! The exporter thread: keeps a connection to the collector and sends what
//! the outbox holds.
//!
//! It runs on its own OS thread, never on the service's runtime, so a runtime
//! stuck in a loop does not silence the probe. Every socket call has a
//! timeout, so a collector that accepts and then hangs cannot hang the
//! exporter for long either. While there is no connection it retries with
//! exponential backoff, warning at most once per backoff period.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwatch_proto::v1::{
    CollectorMessage, Goodbye, Hello, ProbeMessage, RejectCode, collector_message, probe_message,
};
use meshwatch_proto::{FrameDecoder, FrameError, PROTOCOL_VERSION, encode_frame};

use crate::config::Config;
use crate::identity::Identity;
use crate::link::Link;
use crate::outbox::Outbox;
use crate::profiler::Profiles;
use crate::stats::ProbeCounters;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole handshake (Hello out, Welcome or Reject back) must finish
/// within this, however the collector dribbles its bytes: a per-read
/// timeout alone would let a slow or hostile peer hold the exporter (and a
/// shutdown waiting on it) for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a handshake that waits for the collector's reply checks
/// whether the probe is being shut down.
const STOP_CHECK_EVERY: Duration = Duration::from_millis(50);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the exporter waits for a message before checking the
/// connection and shutdown again.
const POLL_PERIOD: Duration = Duration::from_millis(250);
/// The collector only ever sends small control messages.
const MAX_REPLY_LEN: usize = 64 * 1024;

/// Why a connection attempt or an established connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot resolve collector address {addr:?}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("collector address {0:?} resolves to nothing")]
    NoAddress(String),
    #[error("cannot reach the collector: {0}")]
    Io(#[from] io::Error),
    #[error("the collector sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the collector closed the connection")]
    Closed,
    #[error("the collector sent an unexpected reply")]
    UnexpectedReply,
    #[error("the collector rejected this probe ({code:?}): {reason}")]
    Rejected { code: RejectCode, reason: String },
    #[error("the probe is stopping")]
    Stopping,
}

/// The exporter's state; consumed by [`Exporter::run`] on its thread.
#[derive(Debug)]
pub(crate) struct Exporter {
    pub config: Arc<Config>,
    pub identity: Identity,
    pub outbox: Arc<Outbox>,
    pub counters: Arc<ProbeCounters>,
}

impl Exporter {
    /// Connects, sends, reconnects, until the outbox is closed.
    pub fn run(self) {
        let mut backoff = MIN_BACKOFF;
        let mut last_warning: Option<Instant> = None;
        while !self.outbox.is_closed() {
            let outcome = self.connect().and_then(|stream| {
                self.counters.connected();
                backoff = MIN_BACKOFF;
                tracing::info!(collector = %self.config.collector, "meshwatch: connected to the collector");
                self.pump(stream)
            });
            let err = match outcome {
                // Closed while connected or connecting: shutting down.
                Ok(()) | Err(LinkError::Stopping) => break,
                Err(err) => err,
            };
            if let LinkError::Rejected { .. } = err {
                // A configuration problem: retrying soon would only repeat it.
                backoff = MAX_BACKOFF;
            }
            let due = last_warning.is_none_or(|at| at.elapsed() >= backoff);
            if due {
                tracing::warn!(
                    collector = %self.config.collector,
                    retry_in_ms = backoff.as_millis() as u64,
                    "meshwatch: {err}"
                );
                last_warning = Some(Instant::now());
            } else {
                tracing::debug!(collector = %self.config.collector, "meshwatch: {err}");
            }
            if self.outbox.wait_closed(backoff) {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.outbox.finish();
    }

    /// Opens a connection (and TLS over it, when configured) and completes
    /// the Hello/Welcome handshake, all within [`HANDSHAKE_TIMEOUT`].
    fn connect(&self) -> Result<Link, LinkError> {
        let addr = self
            .config
            .collector
            .to_socket_addrs()
            .map_err(|source| LinkError::Resolve {
                addr: self.config.collector.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| LinkError::NoAddress(self.config.collector.clone()))?;
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut stream = self.secure(tcp, deadline)?;

        let hello = ProbeMessage {
            kind: Some(probe_message::Kind::Hello(self.hello())),
        };
        let mut frame = Vec::new();
        encode_frame(&hello, self.config.max_frame_len, &mut frame)?;
        stream.write_all(&frame)?;
        stream.flush()?;

        let reply = read_reply(&mut stream, deadline, || self.outbox.is_closed())?;
        stream.tcp().set_read_timeout(Some(IO_TIMEOUT))?;
        match reply.kind {
            Some(collector_message::Kind::Welcome(_)) => Ok(stream),
            Some(collector_message::Kind::Reject(reject)) => Err(LinkError::Rejected {
                code: reject.code(),
                reason: reject.reason,
            }),
            Some(collector_message::Kind::ProfileRequest(_)) | None => {
                Err(LinkError::UnexpectedReply)
            }
        }
    }

    /// TLS over `tcp` when the probe has a CA for the collector, else
    /// `tcp` as it is.
    #[cfg(feature = "tls")]
    fn secure(&self, tcp: TcpStream, deadline: Instant) -> Result<Link, LinkError> {
        let Some(tls) = &self.config.tls else {
            return Ok(Link::Plain(tcp));
        };
        let name = meshwatch_proto::tls::server_name(&self.config.collector)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        Ok(Link::tls(tcp, Arc::clone(tls), name, deadline)?)
    }

    /// `tcp` as it is: this probe was built without TLS.
    #[cfg(not(feature = "tls"))]
    #[allow(clippy::unused_self, clippy::unnecessary_wraps)]
    fn secure(&self, tcp: TcpStream, _deadline: Instant) -> Result<Link, LinkError> {
        Ok(Link::Plain(tcp))
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            service: self.config.service.clone(),
            instance_id: self.identity.instance_id.clone(),
            pid: self.identity.pid,
            host: self.identity.host.clone(),
            start_time_unix_ms: self.identity.start_time_unix_ms,
            probe_version: env!("CARGO_PKG_VERSION").to_owned(),
            token: self.config.token.clone().unwrap_or_default(),
            runtime: self.identity.runtime.clone(),
            watched_from_outside: self.identity.outside,
            interval_ms: u32::try_from(self.config.interval.as_millis()).unwrap_or(u32::MAX),
            session_key: self.identity.session_key.to_vec(),
        }
    }

    /// Sends queued messages until the connection fails (an error) or the
    /// outbox closes (`Ok`). A message whose send failed goes back in front.
    /// Between messages, reads what the collector asks for.
    fn pump(&self, mut stream: Link) -> Result<(), LinkError> {
        let mut frame = Vec::new();
        let mut requests = FrameDecoder::new(MAX_REPLY_LEN);
        loop {
            let Some(msg) = self.outbox.pop(POLL_PERIOD) else {
                if self.outbox.is_closed() {
                    // A process watched from outside that is gone died, as
                    // far as anyone can tell: no goodbye for it.
                    if !self.outbox.is_abandoned() {
                        say_goodbye(&mut stream, self.config.max_frame_len);
                    }
                    return Ok(());
                }
                self.receive(&mut stream, &mut requests)?;
                continue;
            };
            frame.clear();
            if let Err(err) = encode_frame(&msg, self.config.max_frame_len, &mut frame) {
                // Cannot happen for our own snapshots short of a bug; drop it
                // rather than retry it forever.
                tracing::warn!("meshwatch: dropping an outgoing message: {err}");
                continue;
            }
            let sent = self
                .receive(&mut stream, &mut requests)
                .and_then(|()| Ok(stream.write_all(&frame).and_then(|()| stream.flush())?));
            if let Err(err) = sent {
                self.outbox.requeue(msg, &self.counters);
                return Err(err);
            }
        }
    }

    /// Reads whatever the collector has sent without waiting, and acts on
    /// each whole message: a profile request starts a profile. Detects a
    /// connection the collector closed while we were idle, before we write
    /// into it and lose the message: a closed peer reads as end-of-file.
    fn receive(&self, stream: &mut Link, requests: &mut FrameDecoder) -> Result<(), LinkError> {
        if !has_input(stream.tcp())? {
            return Ok(());
        }
        stream.tcp().set_nonblocking(true)?;
        let read = read_available(stream, requests);
        stream.tcp().set_nonblocking(false)?;
        read?;
        while let Some(message) = requests.next_message::<CollectorMessage>()? {
            match message.kind {
                Some(collector_message::Kind::ProfileRequest(request)) => {
                    let profiles =
                        Profiles::new(Arc::clone(&self.outbox), Arc::clone(&self.counters));
                    if self.identity.outside {
                        profiles.refuse(request.request_id, "this process is watched from outside, and its probe cannot take its stacks");
                    } else {
                        profiles.start(&request);
                    }
                }
                // Welcome and Reject belong to the handshake; a kind newer
                // than this probe is skipped.
                _ => tracing::debug!("meshwatch: ignoring a message from the collector"),
            }
        }
        Ok(())
    }
}

/// Whether the collector sent bytes not yet read; an error when it closed
/// the connection.
fn has_input(stream: &TcpStream) -> Result<bool, LinkError> {
    stream.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    let result = stream.peek(&mut byte);
    stream.set_nonblocking(false)?;
    match result {
        Ok(0) => Err(LinkError::Closed),
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Reads into `decoder` until the (non-blocking) stream has nothing more.
fn read_available(stream: &mut Link, decoder: &mut FrameDecoder) -> Result<(), LinkError> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Err(LinkError::Closed),
            Ok(n) => decoder.extend(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// How long the last frame may take to write: the service is exiting.
const GOODBYE_TIMEOUT: Duration = Duration::from_millis(200);

/// Tells the collector this is a stop, not a death. Best effort: the
/// service is shutting down and does not wait for it.
fn say_goodbye(stream: &mut Link, max_frame_len: usize) {
    let goodbye = ProbeMessage {
        kind: Some(probe_message::Kind::Goodbye(Goodbye {})),
    };
    let mut frame = Vec::new();
    if encode_frame(&goodbye, max_frame_len, &mut frame).is_ok() {
        let _ = stream.tcp().set_write_timeout(Some(GOODBYE_TIMEOUT));
        let _ = stream.write_all(&frame).and_then(|()| stream.flush());
    }
}

/// Reads one reply frame, by `deadline` however the bytes arrive.
fn read_reply(
    stream: &mut Link,
    deadline: Instant,
    stopping: impl Fn() -> bool,
) -> Result<CollectorMessage, LinkError> {
    let mut decoder = FrameDecoder::new(MAX_REPLY_LEN);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(msg) = decoder.next_message::<CollectorMessage>()? {
            return Ok(msg);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(
                io::Error::new(io::ErrorKind::TimedOut, "the handshake took too long").into(),
            );
        }
        if stopping() {
            return Err(LinkError::Stopping);
        }
        // In slices, so that a probe shut down meanwhile stops waiting.
        stream
            .tcp()
            .set_read_timeout(Some(left.min(STOP_CHECK_EVERY)))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(LinkError::Closed),
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        decoder.extend(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collector_dribbling_its_reply_cannot_hold_the_handshake_past_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dribbler = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            // A 100-byte frame announced, then one byte of it every 50 ms:
            // each read succeeds, none completes the frame in time.
            let _ = peer.write_all(&100u32.to_be_bytes());
            for _ in 0..100 {
                if peer.write_all(&[0]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut stream = Link::Plain(TcpStream::connect(addr).unwrap());
        let started = Instant::now();
        let result = read_reply(&mut stream, started + Duration::from_millis(300), || false);
        let took = started.elapsed();
        assert!(
            matches!(&result, Err(LinkError::Io(err)) if err.kind() == io::ErrorKind::TimedOut || err.kind() == io::ErrorKind::WouldBlock),
            "{result:?}"
        );
        assert!(took < Duration::from_secs(3), "held for {took:?}");
        drop(stream);
        dribbler.join().unwrap();
    }
}
