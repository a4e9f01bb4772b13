//! TLS for the wire protocol, both ends: what the collector serves with and
//! what a probe verifies the collector against.
//!
//! Certificates and keys are PEM files, as every CA tool writes them. The
//! crypto is rustls with the `ring` provider, chosen per configuration
//! rather than installed process-wide, so a service that links the probe
//! and uses rustls itself keeps its own choice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}")]
    Pem {
        /// What the file should hold ("certificates", "a private key").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file held no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate was refused as a trust anchor.
    #[error("{path}: not a usable CA certificate")]
    Anchor {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// rustls refused the certificate and key (a key that does not match
    /// the certificate, say).
    #[error("the certificate and key do not make a TLS identity")]
    Identity(#[source] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("cannot verify client certificates")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The name the collector's certificate should carry is not a DNS name
    /// or an IP address.
    #[error("{0:?} is not a DNS name or IP address to verify the collector's certificate against")]
    ServerName(String),
    /// The protocol versions could not be set up (a rustls build without
    /// them).
    #[error("TLS setup failed")]
    Setup(#[source] rustls::Error),
}

/// The crypto provider every configuration here uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, in order (a leaf, then its chain).
///
/// # Errors
///
/// [`TlsError`] when the file cannot be read or holds no certificate.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what: "certificates",
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
///
/// [`TlsError`] when the file cannot be read or holds no key.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        what: "a private key",
        path: path.to_owned(),
        source,
    })
}

/// The CA certificates of a PEM file, as trust anchors.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|source| TlsError::Anchor {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// The certificate, then its chain.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
}

impl IdentityFiles {
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        Ok((certificates(&self.cert)?, private_key(&self.key)?))
    }
}

/// The collector's side: serve with `identity`, and when `client_ca` is
/// given, ask every client for a certificate issued by it (mutual TLS).
/// Sends no session tickets: probes hold one connection for hours, and an
/// unread ticket is a byte a probe's check for a closed connection would
/// have to tell from data.
///
/// # Errors
///
/// [`TlsError`] when a file is unreadable or the key does not match.
pub fn server_config(
    identity: &IdentityFiles,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = identity.load()?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Identity)?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client's side: verify the server against the CAs in `ca`, and present
/// `identity` when given (for a collector that asks for client
/// certificates).
///
/// # Errors
///
/// [`TlsError`] when a file is unreadable or the key does not match.
pub fn client_config(
    ca: &Path,
    identity: Option<&IdentityFiles>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots(ca)?);
    let config = match identity {
        Some(identity) => {
            let (certs, key) = identity.load()?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(TlsError::Identity)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name to verify a server's certificate against, from the `host:port`
/// (or `[v6]:port`) a client connects to: a DNS name, or an IP address
/// that the certificate must list.
///
/// # Errors
///
/// [`TlsError::ServerName`] when the host part is neither.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_part_of_the_address() {
        assert_eq!(
            server_name("collector.internal:7070").unwrap(),
            ServerName::try_from("collector.internal").unwrap()
        );
        assert_eq!(
            server_name("127.0.0.1:7070").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:7070").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert!(matches!(
            server_name("bad name:1"),
            Err(TlsError::ServerName(_))
        ));
    }

    #[test]
    fn missing_or_empty_files_say_which_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = certificates(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            certificates(&empty),
            Err(TlsError::NoCertificate { .. })
        ));
    }
}
