//! The byte stream to the collector: plain TCP, or TLS over it when the
//! probe was given a CA to verify the collector with (`MESHWATCH_TLS_CA`).
//!
//! Both are blocking streams on the exporter's own thread. Timeouts and the
//! closed-connection check act on the TCP socket underneath either way.

use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(feature = "tls")]
use std::time::Instant;

/// A connection to the collector.
#[derive(Debug)]
pub(crate) enum Link {
    /// Plain TCP, on loopback or a trusted network.
    Plain(TcpStream),
    /// TLS, the collector verified against the configured CA.
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Link {
    /// The TCP socket underneath, for timeouts and the closed-connection
    /// check.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Self::Tls(tls) => tls.get_ref(),
        }
    }

    /// Starts TLS on `tcp` and completes its handshake by `deadline`,
    /// however slowly the collector answers.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(
        tcp: TcpStream,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        deadline: Instant,
    ) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake took too long",
                ));
            }
            tls.sock.set_read_timeout(Some(left))?;
            let (read, _) = tls.conn.complete_io(&mut tls.sock)?;
            if read == 0 && tls.conn.wants_read() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the collector closed the connection during the TLS handshake",
                ));
            }
        }
        Ok(Self::Tls(Box::new(tls)))
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf),
            #[cfg(feature = "tls")]
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.write(buf),
            #[cfg(feature = "tls")]
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(stream) => stream.flush(),
            #[cfg(feature = "tls")]
            Self::Tls(tls) => tls.flush(),
        }
    }
}
