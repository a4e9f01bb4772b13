//! The probes' side of the collector: a TCP listener and one task per
//! connection speaking the meshwatch protocol.
//!
//! A connection must open with a `Hello` within the hello timeout; the
//! collector checks it ([`check_hello`]) and answers `Welcome` or `Reject`,
//! closing after a `Reject`. Then `Snapshot`s update the registry and the
//! series, and `Event`s are kept for the detectors. Anything a probe sends
//! that cannot be trusted (an oversized frame, bytes that do not decode, a
//! silence too long) closes that connection with a warning naming the peer,
//! and touches nothing else: every error here is a value, never a panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshwatch_proto::v1::{
    CollectorMessage, Event, Hello, ProbeMessage, Reject, RejectCode, Welcome, collector_message,
    event, probe_message,
};
use meshwatch_proto::{FrameDecoder, FrameError, PROTOCOL_VERSION, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::conn_limits::{ConnectionLimits, MAX_PROBES_PER_ADDRESS, probe_connection_cap};
use tokio::task::JoinSet;

use crate::registry::ConnId;
use crate::state::{Shared, now_ms};
use crate::tls::{Acceptor, Stream};

/// The longest service name or instance id accepted: names are labels in
/// the UI and in Prometheus, not payloads.
const MAX_NAME_LEN: usize = 256;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// A probe whose process started this long before the collector was
/// running before it: its long view is refilled from the store.
const SEED_IF_OLDER_MS: i64 = 60_000;

/// Why a connection ended, for the log line that names its peer.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("no Hello within {0:?} of connecting")]
    HelloTimeout(Duration),
    #[error("no frame for {0:?}; the probe is stuck or gone")]
    Silent(Duration),
    #[error("rejected ({}): {reason}", code.as_str_name())]
    Rejected { code: RejectCode, reason: String },
    #[error("could not encode a reply: {0}")]
    Reply(FrameError),
}

/// Checks a probe's first frame, in the order that reveals the least to an
/// unauthenticated peer: the version (without which nothing else can be
/// read reliably), then the token, then the content.
///
/// # Errors
///
/// The `Reject` to send: its reason says what was wrong and what to do.
pub(crate) fn check_hello(hello: &Hello, token: Option<&str>) -> Result<(), Reject> {
    let reject = |code: RejectCode, reason: String| Reject {
        code: code.into(),
        reason,
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(reject(
            RejectCode::UnsupportedVersion,
            format!(
                "This collector speaks meshwatch protocol version {PROTOCOL_VERSION}, but the probe speaks version {}. Upgrade the probe or the collector so that their versions match.",
                hello.protocol_version
            ),
        ));
    }
    if let Some(expected) = token
        && !constant_time_eq::constant_time_eq(hello.token.as_bytes(), expected.as_bytes())
    {
        let what = if hello.token.is_empty() {
            "The probe sent no token, but this collector requires one."
        } else {
            "The probe's token does not match the collector's."
        };
        return Err(reject(
            RejectCode::BadToken,
            format!(
                "{what} Set MESHWATCH_TOKEN in the service's environment to the collector's token."
            ),
        ));
    }
    for (field, value) in [
        ("service", &hello.service),
        ("instance_id", &hello.instance_id),
    ] {
        if value.is_empty() || value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
            return Err(reject(
                RejectCode::Malformed,
                format!(
                    "The Hello's {field} must be 1 to {MAX_NAME_LEN} bytes without control characters, but was {:?} ({} bytes). Give the probe a service name (or MESHWATCH_SERVICE) and a fresh instance id.",
                    value.chars().take(64).collect::<String>(),
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Accepts probe connections until `shutdown` fires, serving each on its own
/// task, at most `max_connections` at a time.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    acceptor: Acceptor,
) {
    let limits = ConnectionLimits::new(
        probe_connection_cap(shared.config.max_connections),
        MAX_PROBES_PER_ADDRESS,
    );
    if limits.max_total() < shared.config.max_connections {
        tracing::info!(
            limit = limits.max_total(),
            "probe connections capped below --max-connections by the open-file limit"
        );
    }
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = match limits.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(refusal) => {
                            shared.stats.connections_refused.inc();
                            tracing::warn!(%peer, "refusing a probe connection: {refusal}");
                            continue;
                        }
                    };
                    let shared = Arc::clone(&shared);
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        shared.stats.connections.inc();
                        // The handshake shares the Hello's deadline.
                        match acceptor.accept(stream, shared.config.hello_timeout).await {
                            Ok(stream) => serve_connection(stream, peer, &shared).await,
                            Err(error) => {
                                shared.stats.reject("tls_handshake");
                                tracing::warn!(%peer, %error, "closing probe connection: TLS handshake failed");
                            }
                        }
                        shared.stats.connections.dec();
                        drop(slot);
                    });
                }
                // Out of fds and the like: wait a little rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "accepting a probe connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

/// One probe connection, start to end; logs why it ended.
pub(crate) async fn serve_connection(stream: Stream, peer: SocketAddr, shared: &Arc<Shared>) {
    let mut conn = Connection {
        stream,
        decoder: FrameDecoder::new(shared.config.max_frame_len),
        buf: vec![0; READ_CHUNK],
        max_frame_len: shared.config.max_frame_len,
    };
    let mut registered = None;
    let result = conn.run(shared, &mut registered).await;
    if let Some((instance_id, conn_id)) = &registered {
        shared.profiles.close(instance_id, *conn_id);
        shared.lock().disconnect(instance_id, *conn_id);
    }
    match result {
        Ok(()) => {
            tracing::info!(%peer, instance = registered.as_ref().map(|r| r.0.as_str()), "probe disconnected")
        }
        Err(error) => {
            shared.stats.reject(reject_reason(&error));
            tracing::warn!(%peer, instance = registered.as_ref().map(|r| r.0.as_str()), reason = %error, "closing probe connection");
        }
    }
}

/// Sleeps until `deadline`, or for ever without one (a branch of a
/// `select!` that is disabled then).
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How often an instance whose message is being named is marked alive.
const ALIVE_EVERY: Duration = Duration::from_millis(250);

/// Awaits `work` on a message of `instance` (naming its stacks), marking the
/// instance alive meanwhile: the probe did speak, and a first parse of a
/// large binary's debug info must not make it look down.
async fn while_alive<F: std::future::Future>(
    work: F,
    shared: &Shared,
    instance: &str,
    conn: ConnId,
) -> F::Output {
    let mut work = std::pin::pin!(work);
    // The first mark is due one period in: a message named at once (most
    // are: they carry no stack, or names from the cache) takes no extra lock.
    let mut alive =
        tokio::time::interval_at(tokio::time::Instant::now() + ALIVE_EVERY, ALIVE_EVERY);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = alive.tick() => {
                shared.lock().registry.heard_from(instance, conn, now_ms());
            }
        }
    }
}

/// One line per event: what happened, without the stacks it carries.
fn log_event(hello: &Hello, event: &Event) {
    match &event.kind {
        Some(event::Kind::StuckPoll(stuck)) => tracing::info!(
            service = %hello.service,
            instance = %hello.instance_id,
            key = %stuck.key,
            state = stuck.state().as_str_name(),
            class = stuck.class().as_str_name(),
            thread = %stuck.thread_name,
            stuck_for_ms = stuck.stuck_for_ms,
            "stuck poll"
        ),
        None => {
            tracing::debug!(instance = %hello.instance_id, "event of a kind this collector does not know")
        }
    }
}

/// The `reason` label counted for a connection that ended in error.
fn reject_reason(error: &ConnError) -> &'static str {
    match error {
        ConnError::Io(_) => "io_error",
        ConnError::Truncated => "truncated",
        ConnError::Frame(FrameError::TooLarge { .. }) => "too_large",
        ConnError::Frame(FrameError::Malformed(_)) => "malformed",
        ConnError::HelloTimeout(_) => "hello_timeout",
        ConnError::Silent(_) => "silent",
        ConnError::Rejected { code, .. } => match code {
            RejectCode::BadToken => "bad_token",
            RejectCode::UnsupportedVersion => "unsupported_version",
            RejectCode::Malformed => "malformed_hello",
            RejectCode::ExpectedHello => "expected_hello",
            RejectCode::InstanceInUse => "instance_in_use",
            RejectCode::Unspecified => "rejected",
        },
        ConnError::Reply(_) => "reply_error",
    }
}

struct Connection {
    stream: Stream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    max_frame_len: usize,
}

impl Connection {
    async fn run(
        &mut self,
        shared: &Arc<Shared>,
        registered: &mut Option<(String, ConnId)>,
    ) -> Result<(), ConnError> {
        let hello_timeout = shared.config.hello_timeout;
        let first = tokio::time::timeout(hello_timeout, self.read_message())
            .await
            .map_err(|_| ConnError::HelloTimeout(hello_timeout))?;
        let Some(first) = first? else {
            return Ok(());
        };
        let hello = match first.kind {
            Some(probe_message::Kind::Hello(hello)) => hello,
            _ => {
                return self
                    .reject(Reject {
                        code: RejectCode::ExpectedHello.into(),
                        reason: "The first frame on a connection must be a Hello, and this one was not. Send Hello first, then snapshots and events.".to_owned(),
                    })
                    .await;
            }
        };
        if let Err(reject) = check_hello(&hello, shared.config.token.as_deref()) {
            return self.reject(reject).await;
        }
        let mut hello = hello;
        shared
            .stats
            .fields_cut
            .inc_by(crate::bounds::bound_hello(&mut hello));
        // Checked and registered under one lock: two Hellos with one id
        // cannot both get in.
        let admitted = {
            let mut state = shared.lock();
            match state.registry.held_by_another(&hello) {
                Some(owner) => Err(format!("pid {} on {}", owner.pid, owner.host)),
                None => Ok(state.hello(&hello, now_ms())),
            }
        };
        let conn_id = match admitted {
            Ok(conn_id) => conn_id,
            Err(owner) => {
                return self
                    .reject(Reject {
                        code: RejectCode::InstanceInUse.into(),
                        reason: format!(
                            "Instance id {:?} is in use by another live process ({owner}). Each process needs an id of its own; the probe makes one at random.",
                            hello.instance_id
                        ),
                    })
                    .await;
            }
        };
        *registered = Some((hello.instance_id.clone(), conn_id));
        let started = hello.start_time_unix_ms;
        if started > 0 && started < shared.started_ms - SEED_IF_OLDER_MS {
            tokio::spawn(crate::history::seed_long_history(
                Arc::clone(shared),
                hello.service.clone(),
                hello.instance_id.clone(),
            ));
        }
        tracing::info!(service = %hello.service, instance = %hello.instance_id, pid = hello.pid, "probe connected");
        self.send(collector_message::Kind::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            collector_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
        .await?;

        // A live probe sends a snapshot every interval; one silent for this
        // long is hung or gone, and holds a slot and a buffer for nothing.
        let interval = Duration::from_millis(u64::from(
            hello
                .interval_ms
                .clamp(1000, crate::registry::MAX_INTERVAL_MS),
        ));
        let silence =
            (interval * shared.config.down_after_missed.saturating_add(1)).max(hello_timeout);
        let mut orders = shared.profiles.open(&hello.instance_id, conn_id);
        let mut profile = crate::profiles::Taker::default();
        let outside = crate::profiles::OutsideTaker::default();
        let mut heard = tokio::time::Instant::now();
        loop {
            let gives_up = profile.deadline();
            let message = tokio::select! {
                message = tokio::time::timeout_at(heard + silence, self.read_message()) => {
                    message.map_err(|_| ConnError::Silent(silence))??
                }
                Some(order) = orders.recv() => {
                    if hello.watched_from_outside {
                        outside.begin(order, &hello, now_ms());
                    } else if let Some(request) = profile.begin(order, &hello.instance_id, now_ms()) {
                        self.send(collector_message::Kind::ProfileRequest(request)).await?;
                    }
                    continue;
                }
                () = sleep_until(gives_up), if gives_up.is_some() => {
                    profile.expire();
                    continue;
                }
            };
            heard = tokio::time::Instant::now();
            let Some(message) = message else {
                return Ok(());
            };
            match message.kind {
                Some(probe_message::Kind::Snapshot(mut snapshot)) => {
                    shared
                        .stats
                        .fields_cut
                        .inc_by(crate::bounds::bound_snapshot(&mut snapshot));
                    let naming = shared.namer.snapshot(hello.pid, &mut snapshot);
                    while_alive(naming, shared, &hello.instance_id, conn_id).await;
                    let clamped =
                        shared
                            .lock()
                            .snapshot(&hello.instance_id, conn_id, snapshot, now_ms());
                    if clamped {
                        shared.stats.snapshot_times_clamped.inc();
                    }
                }
                Some(probe_message::Kind::Event(mut event)) => {
                    shared
                        .stats
                        .fields_cut
                        .inc_by(crate::bounds::bound_event(&mut event));
                    log_event(&hello, &event);
                    if let Some(event::Kind::StuckPoll(stuck)) = &mut event.kind {
                        let naming = shared.namer.stuck_poll(hello.pid, stuck);
                        while_alive(naming, shared, &hello.instance_id, conn_id).await;
                    }
                    shared
                        .lock()
                        .event(&hello.instance_id, conn_id, event, now_ms());
                }
                Some(probe_message::Kind::Profile(mut data)) => {
                    shared
                        .stats
                        .fields_cut
                        .inc_by(crate::bounds::bound_profile(&mut data));
                    if let Some(mut finished) = profile.part(data) {
                        let modules = std::mem::take(&mut finished.modules);
                        let naming = shared
                            .namer
                            .profile(hello.pid, modules, &mut finished.stacks);
                        let named = while_alive(naming, shared, &hello.instance_id, conn_id).await;
                        finished.answer(&hello, named);
                    }
                }
                Some(probe_message::Kind::Goodbye(_)) => {
                    tracing::info!(service = %hello.service, instance = %hello.instance_id, "probe said goodbye: the process is stopping");
                    shared.lock().registry.goodbye(&hello.instance_id, conn_id);
                }
                // A second Hello, or a kind newer than this collector: the
                // protocol lets fields be added, so skip rather than fail.
                Some(probe_message::Kind::Hello(_)) | None => {
                    tracing::debug!(instance = %hello.instance_id, "ignoring an unexpected frame");
                }
            }
        }
    }

    /// The next message, or `None` at a clean end of stream.
    async fn read_message(&mut self) -> Result<Option<ProbeMessage>, ConnError> {
        loop {
            if let Some(message) = self.decoder.next_message::<ProbeMessage>()? {
                return Ok(Some(message));
            }
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                if self.decoder.buffered() > 0 {
                    return Err(ConnError::Truncated);
                }
                return Ok(None);
            }
            self.decoder.extend(&self.buf[..n]);
        }
    }

    async fn send(&mut self, kind: collector_message::Kind) -> Result<(), ConnError> {
        let mut out = Vec::new();
        encode_frame(
            &CollectorMessage { kind: Some(kind) },
            self.max_frame_len,
            &mut out,
        )
        .map_err(ConnError::Reply)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Sends the Reject and ends the connection with it as the reason.
    async fn reject(&mut self, reject: Reject) -> Result<(), ConnError> {
        let code = reject.code();
        let reason = reject.reason.clone();
        // The peer may already be gone; the reject is logged either way.
        let _ = self.send(collector_message::Kind::Reject(reject)).await;
        let _ = self.stream.shutdown().await;
        Err(ConnError::Rejected { code, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            service: "checkout".to_owned(),
            instance_id: "abc".to_owned(),
            token: "s3cret".to_owned(),
            ..Hello::default()
        }
    }

    fn code(result: Result<(), Reject>) -> Option<RejectCode> {
        result.err().map(|r| r.code())
    }

    #[test]
    fn accepts_a_good_hello_with_or_without_a_required_token() {
        assert_eq!(check_hello(&hello(), Some("s3cret")), Ok(()));
        assert_eq!(check_hello(&hello(), None), Ok(()));
    }

    #[test]
    fn rejects_each_fault_with_its_code_and_a_helpful_reason() {
        let mut h = hello();
        h.protocol_version = 99;
        let reject = check_hello(&h, Some("s3cret")).err();
        assert_eq!(
            reject.as_ref().map(Reject::code),
            Some(RejectCode::UnsupportedVersion)
        );
        assert!(reject.is_some_and(|r| r.reason.contains("99") && r.reason.contains("Upgrade")));

        assert_eq!(
            code(check_hello(&hello(), Some("other"))),
            Some(RejectCode::BadToken)
        );
        let mut h = hello();
        h.token.clear();
        let reject = check_hello(&h, Some("s3cret")).err();
        assert!(reject.is_some_and(|r| r.reason.contains("MESHWATCH_TOKEN")));

        let mut h = hello();
        h.service.clear();
        assert_eq!(code(check_hello(&h, None)), Some(RejectCode::Malformed));
        let mut h = hello();
        h.instance_id = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(code(check_hello(&h, None)), Some(RejectCode::Malformed));
        let mut h = hello();
        h.service = "a\nb".to_owned();
        assert_eq!(code(check_hello(&h, None)), Some(RejectCode::Malformed));
    }

    #[test]
    fn a_refused_name_is_quoted_cut_to_64_characters_with_its_length() {
        let mut h = hello();
        h.instance_id = "é".repeat(MAX_NAME_LEN);
        let reason = check_hello(&h, None).err().map(|r| r.reason).unwrap();
        let quoted = format!("{:?}", "é".repeat(64));
        assert!(reason.contains(&quoted), "{reason}");
        assert!(!reason.contains(&"é".repeat(65)), "{reason}");
        assert!(
            reason.contains(&format!("({} bytes)", 2 * MAX_NAME_LEN)),
            "{reason}"
        );
    }

    #[test]
    fn checks_the_token_before_the_content() {
        let mut h = hello();
        h.service.clear();
        h.token = "wrong".to_owned();
        assert_eq!(
            code(check_hello(&h, Some("s3cret"))),
            Some(RejectCode::BadToken)
        );
    }
}
