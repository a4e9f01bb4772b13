//! Recorded history from a Prometheus server: range queries through its
//! HTTP API (`/api/v1/query_range`), in chunks under its limit of 11,000
//! points per series.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use meshwatch_collector::backtest::RecordedRow;
use serde::Deserialize;

use super::mapping::{Mapped, Rows, map_name, subject};

/// Points per series per request: under Prometheus's 11,000.
const POINTS_PER_REQUEST: i64 = 10_000;
/// How long one range query may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One `--query`: a PromQL expression, and the meshwatch series it gives
/// when its results carry no metric name (`rss_bytes=avg(...)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The series its results are, when named by the user.
    pub named: Option<Mapped>,
    /// The PromQL.
    pub promql: String,
}

impl std::str::FromStr for Query {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((name, promql)) = s.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let named = map_name(name).ok_or_else(|| {
                format!("{name:?} is not a series meshwatch reads; see docs/BACKTEST.md")
            })?;
            return Ok(Self {
                named: Some(named),
                promql: promql.to_owned(),
            });
        }
        Ok(Self {
            named: None,
            promql: s.to_owned(),
        })
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// One series a query gave: what it is, whose, and its points.
type Fetched = (Mapped, (String, String), Vec<(i64, f64)>);

/// Runs each query over `[from_ms, to_ms]` at `step` on the server at
/// `base`, and gathers the results into rows; `progress` hears of each
/// request.
pub fn read(
    base: &str,
    queries: &[Query],
    (from_ms, to_ms): (i64, i64),
    step: Duration,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<RecordedRow>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let step_ms = i64::try_from(step.as_millis())?.max(1000);
    let mut series: Vec<Fetched> = Vec::new();
    for query in queries {
        let mut start = from_ms;
        while start <= to_ms {
            let end = (start + step_ms * (POINTS_PER_REQUEST - 1)).min(to_ms);
            progress(&format!(
                "{}: {} .. {}",
                query.promql,
                crate::format::utc(start),
                crate::format::utc(end)
            ));
            let url = format!("{}/api/v1/query_range", base.trim_end_matches('/'));
            let mut response = agent
                .get(&url)
                .query("query", &query.promql)
                .query("start", format!("{:.3}", start as f64 / 1000.0))
                .query("end", format!("{:.3}", end as f64 / 1000.0))
                .query("step", format!("{}s", step_ms as f64 / 1000.0))
                .call()
                .with_context(|| format!("cannot reach Prometheus at {base}"))?;
            let body: Response = response
                .body_mut()
                .read_json()
                .with_context(|| format!("{url} did not answer with Prometheus's JSON"))?;
            if body.status != "success" {
                bail!(
                    "Prometheus refused {:?}: {}",
                    query.promql,
                    body.error.unwrap_or_else(|| "no reason given".to_owned())
                );
            }
            for result in body.data.map(|d| d.result).unwrap_or_default() {
                let mapped = match (query.named, result.metric.get("__name__")) {
                    (Some(named), _) => named,
                    (None, Some(name)) => map_name(name).with_context(|| {
                        format!("{name:?} is not a series meshwatch reads; name it: --query 'rss_bytes={}'", query.promql)
                    })?,
                    (None, None) => bail!(
                        "the results of {:?} carry no metric name; name the series they are: --query 'rss_bytes={}'",
                        query.promql,
                        query.promql
                    ),
                };
                let who = subject(&result.metric).with_context(|| {
                    format!("a series of {:?} has none of the labels that name a service (job, service, service_name, container)", query.promql)
                })?;
                let points = result
                    .values
                    .iter()
                    .filter_map(|(t, v)| Some(((t * 1000.0).round() as i64, v.parse().ok()?)))
                    .collect();
                series.push((mapped, who, points));
            }
            start = end + step_ms;
        }
    }
    // Series by subject and time, so that CPU counters turn into rates.
    series.sort_by(|a, b| a.1.cmp(&b.1));
    let mut rows = Rows::default();
    for (mapped, who, points) in series {
        for (t_ms, value) in points {
            rows.add(&who, mapped, t_ms, value);
        }
    }
    Ok(rows.into_rows())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch_collector::Metric;

    #[test]
    fn a_query_may_name_its_series() {
        let q: Query = "rss_bytes=avg by (job) (process_resident_memory_bytes)"
            .parse()
            .unwrap();
        assert_eq!(q.named, Some(Mapped::Gauge(Metric::RssBytes)));
        assert_eq!(q.promql, "avg by (job) (process_resident_memory_bytes)");
        let q: Query = r#"process_resident_memory_bytes{job="proxy"}"#.parse().unwrap();
        assert_eq!(q.named, None);
        assert!("nonsense_name=up".parse::<Query>().is_err());
    }
}
