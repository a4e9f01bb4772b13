//! The collector's HTTP API, as the CLI sees it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use meshwatch_api::{Incident, IncidentsView, InstanceSeries, SeriesView, ServicesView};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::model::Instance;

/// How long one API call may take before the CLI gives up on it.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one collector's JSON API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
    /// The `Authorization` header's value, when the collector has a token.
    authorization: Option<String>,
}

/// An HTTP agent with the CLI's timeout and `tls`.
fn agent(tls: TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .tls_config(tls)
        .build()
        .into()
}

/// A closed time range in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first instant wanted.
    pub from_ms: i64,
    /// The last instant wanted.
    pub to_ms: i64,
}

/// The PEM files for a collector served over TLS (`https://`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA that issued the collector's certificate; without it, the
    /// usual public CAs.
    pub ca: Option<PathBuf>,
    /// This client's certificate and key, for a collector that asks for
    /// client certificates (`--tls-client-ca`).
    pub cert: Option<PathBuf>,
    /// The key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    fn config(&self) -> anyhow::Result<TlsConfig> {
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &self.ca {
            let roots = certificates(ca)?;
            tls = tls.root_certs(RootCerts::Specific(Arc::new(roots)));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let pem = std::fs::read(key)
                    .with_context(|| format!("cannot read the TLS key {}", key.display()))?;
                let key = PrivateKey::from_pem(&pem)
                    .with_context(|| format!("{} holds no PEM private key", key.display()))?;
                tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
            }
            (None, None) => {}
            _ => bail!("a client certificate needs both --tls-cert and --tls-key"),
        }
        Ok(tls.build())
    }
}

/// The certificates of a PEM file.
fn certificates(path: &Path) -> anyhow::Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the certificates in {}", path.display()))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

impl ApiClient {
    /// A client of the collector at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent: agent(TlsConfig::default()),
            authorization: None,
        }
    }

    /// Speaks TLS to an `https://` collector with these files.
    ///
    /// # Errors
    ///
    /// When a file is unreadable or holds no certificate or key.
    pub fn with_tls(mut self, files: &TlsFiles) -> anyhow::Result<Self> {
        self.agent = agent(files.config()?);
        Ok(self)
    }

    /// Sends `token` as a bearer token with every request.
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.authorization = token.map(|t| format!("Bearer {t}"));
        self
    }

    /// The collector's base URL, to show people where the data comes from.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/services`: every instance of the mesh.
    pub fn services(&self) -> anyhow::Result<ServicesView> {
        self.get("/api/v1/services")
    }

    /// `GET /api/v1/services`, keeping the figures and sections this build
    /// has no type for, so the views can show them by name.
    pub fn instances(&self) -> anyhow::Result<Vec<Instance>> {
        let raw: serde_json::Value = self.get("/api/v1/services")?;
        let list = raw
            .get("services")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        list.into_iter()
            .map(|value| {
                Instance::from_json(value).with_context(|| {
                    format!(
                        "the collector at {} sent an instance this meshwatch cannot read",
                        self.base
                    )
                })
            })
            .collect()
    }

    /// `GET /api/v1/incidents`: open and resolved incidents, oldest first.
    pub fn incidents(&self) -> anyhow::Result<Vec<Incident>> {
        self.get::<IncidentsView>("/api/v1/incidents")
            .map(|view| view.incidents)
    }

    /// `GET /api/v1/series` for every instance of `service` over `range`.
    ///
    /// A metric the collector does not know (an older collector) or a
    /// service it has forgotten is `None`, not an error: the view shows no
    /// data for it while the rest of the screen stays live.
    pub fn series(
        &self,
        service: &str,
        metric: &str,
        range: Range,
    ) -> anyhow::Result<Option<Vec<InstanceSeries>>> {
        self.series_path(&format!(
            "/api/v1/series?service={}&metric={}&from={}&to={}",
            query_escape(service),
            query_escape(metric),
            range.from_ms,
            range.to_ms
        ))
    }

    /// The same, thinned by the collector to at most `max_points` per
    /// instance (it caps this too), for a backtest over days.
    pub fn series_points(
        &self,
        service: &str,
        metric: &str,
        range: Range,
        max_points: usize,
    ) -> anyhow::Result<Option<Vec<InstanceSeries>>> {
        self.series_path(&format!(
            "/api/v1/series?service={}&metric={}&from={}&to={}&max_points={max_points}",
            query_escape(service),
            query_escape(metric),
            range.from_ms,
            range.to_ms
        ))
    }

    fn series_path(&self, path: &str) -> anyhow::Result<Option<Vec<InstanceSeries>>> {
        match self.get::<SeriesView>(path) {
            Ok(view) => Ok(Some(view.series)),
            Err(err) if is_client_error(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The raw JSON of `path`, for `--json` output that passes the API through.
    pub fn raw(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.get(path)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = match request.call() {
            Err(ureq::Error::StatusCode(401)) => bail!(
                "the collector at {} wants its token: give --token-file FILE or set MESHWATCH_TOKEN{}",
                self.base,
                if self.authorization.is_some() {
                    " (the one given was refused)"
                } else {
                    ""
                }
            ),
            other => other.with_context(|| {
                format!("cannot reach the collector at {}: is meshwatch-collector running there? (set it with --collector)", self.base)
            })?,
        };
        response.body_mut().read_json().with_context(|| {
            format!(
                "the collector at {} answered {url} with unexpected JSON",
                self.base
            )
        })
    }
}

/// Whether the collector answered 4xx: it is there, but refused the question.
fn is_client_error(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ureq::Error>(),
            Some(ureq::Error::StatusCode(400..=499))
        )
    })
}

/// Percent-encodes everything but unreserved characters, so any service
/// name survives a query string.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("check out&x=1"), "check%20out%26x%3D1");
        assert_eq!(query_escape("rss_bytes"), "rss_bytes");
    }
}
