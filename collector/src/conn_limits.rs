//! How many connections the collector holds: in total on each listener,
//! and from any one address beyond loopback; and how long an HTTP client
//! may go silent.
//!
//! Every connection costs a file descriptor, a task and its buffers. Without
//! a cap, a client opening connections and never closing them takes the
//! process to its fd limit, and then `accept` fails for everyone, the
//! `/healthz` of the supervisor included. So each listener has a total of
//! its own (the probes' listener a share of the fd limit, the HTTP API a
//! small fixed number, so one cannot starve the other), and a remote
//! address may hold only part of it. Loopback has no per-address cap: every
//! local process shares 127.0.0.1, so for local clients only the total
//! means anything.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

use crate::state::Shared;
use crate::tls::{Acceptor, Handshaking};

/// Descriptors kept free of probe connections: the store, the HTTP API,
/// `/proc` reads and the watchers' connections need their own.
pub(crate) const RESERVED_FDS: usize = 256;
/// HTTP connections open at once.
pub(crate) const MAX_HTTP_CONNECTIONS: usize = 256;
/// Connections one remote address may hold: probes of one host.
pub(crate) const MAX_PROBES_PER_ADDRESS: usize = 1024;
/// HTTP connections one remote address may hold.
pub(crate) const MAX_HTTP_PER_ADDRESS: usize = 32;
/// How long an HTTP client may send nothing before its connection closes
/// (a request's headers that never finish, an idle keep-alive).
pub(crate) const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections held, by remote address (beyond loopback).
type AddressCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The connections one listener holds, and the caps on them.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    total: Arc<Semaphore>,
    max_total: usize,
    by_address: AddressCounts,
    max_per_address: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The listener holds all the connections it may.
    #[error("too many open connections ({0})")]
    Total(usize),
    /// This address holds all the connections one address may.
    #[error("too many open connections from this address ({0})")]
    PerAddress(usize),
}

/// One admitted connection; its slots free when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    _total: OwnedSemaphorePermit,
    address: Option<(IpAddr, AddressCounts)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((ip, counts)) = &self.address {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = counts.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(ip);
                }
            }
        }
    }
}

impl ConnectionLimits {
    /// At most `max_total` connections, `max_per_address` from one remote
    /// address.
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            by_address: Arc::new(Mutex::new(HashMap::new())),
            max_per_address,
        }
    }

    /// The total this listener may hold.
    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    /// Admits a connection from `peer`, or says why not.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let total = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| Refusal::Total(self.max_total))?;
        if peer.is_loopback() {
            return Ok(Admitted {
                _total: total,
                address: None,
            });
        }
        let mut counts = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = counts.entry(peer).or_insert(0);
        if *held >= self.max_per_address {
            return Err(Refusal::PerAddress(self.max_per_address));
        }
        *held += 1;
        Ok(Admitted {
            _total: total,
            address: Some((peer, Arc::clone(&self.by_address))),
        })
    }
}

/// The probes' listener's total: `configured`, but never more than the fd
/// limit leaves after [`RESERVED_FDS`].
pub(crate) fn probe_connection_cap(configured: usize) -> usize {
    let soft_limit = procfs::process::Process::myself()
        .and_then(|me| me.limits())
        .ok()
        .and_then(|limits| match limits.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(n) => usize::try_from(n).ok(),
            procfs::process::LimitValue::Unlimited => None,
        });
    match soft_limit {
        Some(fds) => configured.min(fds.saturating_sub(RESERVED_FDS).max(1)),
        None => configured,
    }
}

/// The HTTP API's listener: connections admitted by its limits, each
/// closed after [`HTTP_READ_TIMEOUT`] without a byte from the client.
#[derive(Debug)]
pub(crate) struct BoundedListener {
    inner: TcpListener,
    limits: ConnectionLimits,
    shared: Arc<Shared>,
    acceptor: Acceptor,
}

impl BoundedListener {
    /// Serves `inner` within `limits`, over TLS when `acceptor` has a
    /// certificate, counting refusals in `shared`'s stats.
    pub(crate) fn new(
        inner: TcpListener,
        limits: ConnectionLimits,
        shared: Arc<Shared>,
        acceptor: Acceptor,
    ) -> Self {
        Self {
            inner,
            limits,
            shared,
            acceptor,
        }
    }
}

/// An admitted HTTP connection with its read deadline (which also bounds
/// a TLS handshake's pauses).
#[derive(Debug)]
pub(crate) struct BoundedStream {
    stream: Handshaking<Pin<Box<TimeoutStream<TcpStream>>>>,
    _admitted: Admitted,
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => match self.limits.admit(peer.ip()) {
                    Ok(admitted) => {
                        let mut stream = TimeoutStream::new(stream);
                        stream.set_read_timeout(Some(HTTP_READ_TIMEOUT));
                        let io = BoundedStream {
                            stream: self.acceptor.lazily(Box::pin(stream)),
                            _admitted: admitted,
                        };
                        return (io, peer);
                    }
                    Err(refusal) => {
                        self.shared.stats.http_connections_refused.inc();
                        tracing::warn!(%peer, "refusing an HTTP connection: {refusal}");
                    }
                },
                // Out of fds and the like: wait a little rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_the_total_and_each_remote_address_but_not_loopback() {
        let limits = ConnectionLimits::new(5, 2);
        let remote: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let a = limits.admit(remote).unwrap();
        let _b = limits.admit(remote).unwrap();
        assert_eq!(limits.admit(remote).unwrap_err(), Refusal::PerAddress(2));
        let _c = limits.admit(other).unwrap();
        let _d = limits.admit(local).unwrap();
        let _e = limits.admit(local).unwrap();
        assert_eq!(limits.admit(local).unwrap_err(), Refusal::Total(5));
        drop(a);
        let _f = limits
            .admit(remote)
            .expect("a closed connection frees its total and its address slot");
        assert_eq!(limits.admit(other).unwrap_err(), Refusal::Total(5));
    }

    #[test]
    fn the_probes_share_of_the_fd_limit_leaves_room_for_the_rest() {
        let cap = probe_connection_cap(usize::MAX);
        assert!(cap >= 1);
        assert!(cap < usize::MAX, "this process has an fd limit");
        assert_eq!(probe_connection_cap(3), 3.min(cap));
    }
}
