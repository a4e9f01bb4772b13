//! The collector's HTTP API, as the CLI sees it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use meshwatch_api::{
    CpuProfileView, ErrorBody, Incident, IncidentsView, InstanceSeries, ProfileTicket, SeriesView,
    ServicesView,
};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::model::Instance;

/// How long one API call may take before the CLI gives up on it.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read: a mesh of hundreds of instances with their
/// evidence stays well under it.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;
/// The largest profile read: ten thousand deep stacks with their frames.
const MAX_PROFILE_BYTES: u64 = 256 * 1024 * 1024;

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

    /// Asks the collector for a CPU profile of `instance`, taken by its
    /// probe over `seconds` at `hz`; the ticket says where to collect it.
    ///
    /// # Errors
    ///
    /// When the collector cannot be reached, or says why it cannot take
    /// the profile (the instance is gone, a profile is already running).
    pub fn start_cpu_profile(
        &self,
        instance: &str,
        seconds: u64,
        hz: u32,
    ) -> anyhow::Result<ProfileTicket> {
        let path = format!(
            "/api/v1/profile?instance={}&seconds={seconds}&hz={hz}",
            query_escape(instance)
        );
        let request = self.agent.post(format!("{}{path}", self.base));
        let sent = request
            .config()
            .http_status_as_error(false)
            .build()
            .send_empty();
        match self
            .profile_answer(sent, &path)
            .context("the collector took no profile")?
        {
            ProfileAnswer::Taking(ticket) => Ok(ticket),
            ProfileAnswer::Done(_) => {
                bail!("the collector answered {path} with a profile before taking it")
            }
        }
    }

    /// The CPU profile of `ticket` once it is in; `None` while the probe
    /// still samples.
    ///
    /// # Errors
    ///
    /// When the collector cannot be reached, or says why there is no
    /// profile (the probe refused, did not answer, or disconnected).
    pub fn cpu_profile(&self, ticket: &ProfileTicket) -> anyhow::Result<Option<CpuProfileView>> {
        let path = format!("/api/v1/profile/{}", query_escape(&ticket.id));
        let request = self.agent.get(format!("{}{path}", self.base));
        let sent = request.config().http_status_as_error(false).build().call();
        match self
            .profile_answer(sent, &path)
            .context("the collector has no profile")?
        {
            ProfileAnswer::Taking(_) => Ok(None),
            ProfileAnswer::Done(view) => Ok(Some(view)),
        }
    }

    /// Reads the collector's answer about a profile: the profile (200),
    /// its ticket while it is taken (202), or the collector's own reason.
    fn profile_answer(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        path: &str,
    ) -> anyhow::Result<ProfileAnswer> {
        let mut response = sent.map_err(|err| self.unreachable(err))?;
        let url = format!("{}{path}", self.base);
        match response.status().as_u16() {
            200 => read_json(&mut response, &self.base, &url, MAX_PROFILE_BYTES)
                .map(ProfileAnswer::Done),
            202 => read_json(&mut response, &self.base, &url, MAX_ANSWER_BYTES)
                .map(ProfileAnswer::Taking),
            401 => Err(self.unauthorized()),
            status => {
                let reason = response
                    .body_mut()
                    .read_json::<ErrorBody>()
                    .map_or_else(|_| format!("it answered {status}"), |body| body.error);
                bail!("{reason}")
            }
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let request = self.authorized(self.agent.get(&url));
        let mut response = match request.call() {
            Err(ureq::Error::StatusCode(401)) => return Err(self.unauthorized()),
            other => other.map_err(|err| self.unreachable(err))?,
        };
        read_json(&mut response, &self.base, &url, MAX_ANSWER_BYTES)
    }

    /// `request` with the collector's token, when it has one.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(authorization) => request.header("Authorization", authorization),
            None => request,
        }
    }

    /// The error for a collector that refused the token (or its absence).
    fn unauthorized(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "the collector at {} wants its token: give --token-file FILE or set MESHWATCH_TOKEN{}",
            self.base,
            if self.authorization.is_some() {
                " (the one given was refused)"
            } else {
                ""
            }
        )
    }

    /// The error for a collector that could not be asked at all.
    fn unreachable(&self, err: ureq::Error) -> anyhow::Error {
        anyhow::Error::new(err).context(format!(
            "cannot reach the collector at {}: is meshwatch-collector running there? (set it with --collector)",
            self.base
        ))
    }
}

/// Reads a JSON answer of at most `limit` bytes.
fn read_json<T: serde::de::DeserializeOwned>(
    response: &mut ureq::http::Response<ureq::Body>,
    base: &str,
    url: &str,
    limit: u64,
) -> anyhow::Result<T> {
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_json()
        .with_context(|| format!("the collector at {base} answered {url} with unexpected JSON"))
}

/// What the collector says about a profile.
enum ProfileAnswer {
    /// Being taken.
    Taking(ProfileTicket),
    /// In.
    Done(CpuProfileView),
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
