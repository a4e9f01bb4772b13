//! TLS on the collector's listeners (`--tls-cert`, `--tls-key`, and
//! `--tls-client-ca` for mutual TLS): the probes' port and the HTTP API
//! alike, with one rustls configuration.
//!
//! The handshake never runs on an accept loop: a client that starts one and
//! stalls would hold every other connection behind it. Probe connections
//! shake hands on their own task within the Hello timeout; HTTP connections
//! inside the stream handed to the server ([`Handshaking`]), under the HTTP
//! read timeout.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use meshwatch_proto::tls::{IdentityFiles, TlsError, server_config};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;

/// A byte stream the collector serves: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A served connection, whichever it is.
pub(crate) type Stream = Box<dyn Io>;

/// The TLS files the collector serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Its certificate (then its chain) and private key.
    pub identity: IdentityFiles,
    /// When set, every client must present a certificate issued by one of
    /// the CAs in this PEM file: probes, the TUI and scrapers alike.
    pub client_ca: Option<PathBuf>,
}

/// Turns accepted TCP connections into served streams: TLS when the
/// collector has a certificate, else as they are.
#[derive(Clone)]
pub(crate) struct Acceptor(Option<TlsAcceptor>);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Acceptor(tls)"
        } else {
            "Acceptor(plain)"
        })
    }
}

impl Acceptor {
    /// An acceptor for `settings`; plain when `None`.
    ///
    /// # Errors
    ///
    /// [`TlsError`] when a file is unreadable or the key does not match.
    pub(crate) fn new(settings: Option<&TlsSettings>) -> Result<Self, TlsError> {
        let Some(settings) = settings else {
            return Ok(Self::plain());
        };
        let config = server_config(&settings.identity, settings.client_ca.as_deref())?;
        Ok(Self(Some(TlsAcceptor::from(config))))
    }

    /// An acceptor that serves connections as they are.
    pub(crate) fn plain() -> Self {
        Self(None)
    }

    /// Whether connections get TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.0.is_some()
    }

    /// Completes the TLS handshake on `stream` within `within`, or hands it
    /// back as it is when this acceptor is plain.
    pub(crate) async fn accept<S: Io + 'static>(
        &self,
        stream: S,
        within: Duration,
    ) -> io::Result<Stream> {
        let Some(acceptor) = &self.0 else {
            return Ok(Box::new(stream));
        };
        let tls = tokio::time::timeout(within, acceptor.accept(stream))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long")
            })??;
        Ok(Box::new(tls))
    }

    /// `stream` to be served at once, its handshake (if any) run by the
    /// first read or write on it.
    pub(crate) fn lazily<S: Io + 'static>(&self, stream: S) -> Handshaking<S> {
        match &self.0 {
            Some(acceptor) => Handshaking::Pending(Box::new(acceptor.accept(stream))),
            None => Handshaking::Done(Box::new(stream)),
        }
    }
}

/// A connection whose TLS handshake runs on its first use: the HTTP
/// server's accept loop hands it on at once.
pub(crate) enum Handshaking<S> {
    /// The handshake is under way.
    Pending(Box<tokio_rustls::Accept<S>>),
    /// Ready to serve (TLS established, or plain).
    Done(Stream),
}

impl<S> std::fmt::Debug for Handshaking<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pending(_) => "Handshaking::Pending",
            Self::Done(_) => "Handshaking::Done",
        })
    }
}

impl<S: Io + 'static> Handshaking<S> {
    /// Drives the handshake; the stream once it is done.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut Stream>> {
        if let Self::Pending(accept) = self {
            let tls = ready!(Pin::new(accept.as_mut()).poll(cx))?;
            *self = Self::Done(Box::new(tls));
        }
        match self {
            Self::Done(stream) => Poll::Ready(Ok(stream)),
            Self::Pending(_) => Poll::Pending,
        }
    }
}

impl<S: Io + 'static> AsyncRead for Handshaking<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<S: Io + 'static> AsyncWrite for Handshaking<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_shutdown(cx)
    }
}
