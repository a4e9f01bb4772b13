//! Posting OTLP/HTTP protobuf requests, with the spec's retry rules and a
//! backoff that keeps a down endpoint from being hammered.
//!
//! The OTLP specification says which answers are worth retrying (429, 502,
//! 503, 504, and no answer at all) and that a `Retry-After` is honoured;
//! anything else is a refusal, and sending the same request again would be
//! refused again.

use std::time::{Duration, Instant};

use prost::Message;

/// The longest a request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint took it (2xx).
    Sent,
    /// Worth sending again later: the endpoint is down, overloaded or said
    /// to retry.
    Retry(String),
    /// Refused for good (another 4xx or 5xx): sending it again is useless.
    Refused(String),
}

/// The OTLP/HTTP endpoint and the state of its backoff.
#[derive(Debug)]
pub struct Sender {
    agent: ureq::Agent,
    base: String,
    headers: Vec<(String, String)>,
    backoff: Duration,
    next_attempt: Option<Instant>,
}

impl Sender {
    /// A sender to `endpoint` (the OTLP/HTTP base URL, e.g.
    /// `http://otel-collector:4318`; `/v1/metrics` and `/v1/logs` are
    /// appended as the specification says), adding `headers` to each
    /// request.
    pub fn new(endpoint: &str, headers: Vec<(String, String)>) -> Self {
        Self {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(TIMEOUT))
                .http_status_as_error(false)
                .build()
                .into(),
            base: endpoint.trim_end_matches('/').to_owned(),
            headers,
            backoff: FIRST_BACKOFF,
            next_attempt: None,
        }
    }

    /// Whether a request may be sent at `now`: not while backing off.
    pub fn ready(&self, now: Instant) -> bool {
        self.next_attempt.is_none_or(|at| now >= at)
    }

    /// Posts `message` to `path` (`/v1/metrics` or `/v1/logs`), and backs
    /// off after a failure worth retrying.
    pub fn post(&mut self, path: &str, message: &impl Message) -> Outcome {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/x-protobuf");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let outcome = match request.send(&message.encode_to_vec()[..]) {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match status {
                    200..=299 => Outcome::Sent,
                    429 | 502 | 503 | 504 => {
                        if let Some(wait) = retry_after {
                            self.backoff = wait.clamp(FIRST_BACKOFF, MAX_BACKOFF);
                        }
                        Outcome::Retry(format!("{url} answered {status}"))
                    }
                    _ => Outcome::Refused(format!("{url} answered {status}")),
                }
            }
            Err(err) => Outcome::Retry(format!("{url}: {err}")),
        };
        match &outcome {
            Outcome::Retry(_) => {
                self.next_attempt = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            Outcome::Sent | Outcome::Refused(_) => {
                self.next_attempt = None;
                self.backoff = FIRST_BACKOFF;
            }
        }
        outcome
    }
}
