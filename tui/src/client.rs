//! The collector's HTTP API, as the CLI sees it.

use std::time::Duration;

use anyhow::Context;
use meshwatch_collector::views::ServicesView;

/// How long one API call may take before the CLI gives up on it.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one collector's JSON API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
}

impl ApiClient {
    /// A client of the collector at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    /// `GET /api/v1/services`: every instance of the mesh.
    pub fn services(&self) -> anyhow::Result<ServicesView> {
        self.get("/api/v1/services")
    }

    /// The raw JSON of `path`, for `--json` output that passes the API through.
    pub fn raw(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.get(path)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut response = self.agent.get(&url).call().with_context(|| {
            format!("cannot reach the collector at {}: is meshwatch-collector running there? (set it with --collector)", self.base)
        })?;
        response.body_mut().read_json().with_context(|| {
            format!(
                "the collector at {} answered {url} with unexpected JSON",
                self.base
            )
        })
    }
}
