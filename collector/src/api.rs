//! The HTTP API: versioned JSON for the TUI and scripts, `/metrics` for
//! Prometheus, `/healthz` for supervisors.
//!
//! Handlers are thin: they validate the query into a typed request, take the
//! state lock briefly, and serialize a view built by [`crate::views`]. Every
//! error is JSON `{"error": "..."}` with a message saying what was wrong and
//! what is accepted, so a person with `curl` can correct themselves. Requests
//! carry their parameters in the query string (even `POST /api/v1/profile`,
//! which asks a probe to act), so request bodies are capped at a few bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use meshwatch_api::{ErrorBody, IncidentsView, InstanceSeries, SeriesView};

use crate::incidents::StateFilter;
use crate::profiles::{self, Lookup, ProfileError};
use crate::series::{Metric, Point};
use crate::state::{Shared, now_ms};
use crate::store::StoreError;
use crate::{prom, views};

/// Request bodies are never needed: parameters go in the query string.
const MAX_BODY_BYTES: usize = 1024;

/// The query string of a request, as key/value pairs.
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The routes of the API over the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/services", get(services))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/series", get(series))
        .route("/api/v1/profile", post(start_profile))
        .route("/api/v1/profile/{id}", get(collect_profile))
        .route(
            "/v1/metrics",
            post(crate::otlp::receive_metrics)
                .layer(axum::extract::DefaultBodyLimit::max(crate::otlp::MAX_BODY)),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            require_token,
        ))
        .with_state(shared)
}

/// Asks every request but `/healthz` for the collector's token when the
/// API listens beyond loopback ([`crate::config::Config::http_requires_token`]):
/// the mesh's figures, incidents and stacks are not for whoever reaches
/// the port. `/healthz` stays open for load balancers and supervisors.
async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let open = request.uri().path() == "/healthz" || !shared.config.http_requires_token();
    let token = shared.config.token.as_deref().unwrap_or_default();
    if open || bearer_matches(request.headers(), token) {
        return next.run(request).await;
    }
    shared.stats.reject("http_bad_token");
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "this collector's API needs its token: send Authorization: Bearer TOKEN (meshwatch reads it from --token-file or MESHWATCH_TOKEN)".to_owned(),
    }
    .into_response()
}

/// Whether `headers` carry `Authorization: Bearer TOKEN`, compared in
/// constant time.
pub(crate) fn bearer_matches(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq::constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// An error answer: a status and a sentence for the person who asked.
#[derive(Debug, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// The collector's own failure (the store), not the request's.
    fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Serializes `value` as the JSON body of a 200 answer. Views are built
/// under the state lock and serialized after it is released, so a large
/// answer does not hold up ingest.
fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("could not encode the answer: {error}"),
        }
        .into_response(),
    }
}

fn params(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params
        .map(|Query(params)| params)
        .map_err(|rejection| ApiError::bad_request(format!("bad query string: {rejection}")))
}

/// Defaults of `POST /api/v1/profile`: pprof's usual rate, and long
/// enough for a busy service's hot functions to stand out.
const PROFILE_SECONDS: u64 = 10;
const PROFILE_HZ: u32 = 99;

/// `POST /api/v1/profile?instance=ID[&seconds=10][&hz=99]`: asks the
/// instance's probe for a CPU profile. Answers at once, `202 Accepted` with
/// the ticket to collect it by.
async fn start_profile(
    State(shared): State<Arc<Shared>>,
    query: Params,
) -> Result<Response, ApiError> {
    let query = params(query)?;
    let instance = query.get("instance").ok_or_else(|| {
        ApiError::bad_request(
            "missing instance=ID: the instance to profile, as /api/v1/services lists it",
        )
    })?;
    let seconds = bounded(
        &query,
        "seconds",
        PROFILE_SECONDS,
        1..=profiles::MAX_SECONDS,
    )?;
    let hz = bounded(
        &query,
        "hz",
        u64::from(PROFILE_HZ),
        1..=u64::from(profiles::MAX_HZ),
    )?;
    let hz = u32::try_from(hz).unwrap_or(profiles::MAX_HZ);
    let ticket = shared
        .profiles
        .order(
            instance,
            std::time::Duration::from_secs(seconds),
            hz,
            now_ms(),
        )
        .map_err(profile_error)?;
    Ok((StatusCode::ACCEPTED, json(&ticket)).into_response())
}

/// `GET /api/v1/profile/{id}`: the profile once it is in (200), its ticket
/// again while it is being taken (202), or why there is none.
async fn collect_profile(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    match shared.profiles.lookup(&id) {
        None => Err(ApiError::not_found(format!(
            "no profile {id:?}: profiles are kept {} minutes after they are taken",
            profiles::KEPT_FOR.as_secs() / 60
        ))),
        Some(Lookup::Running(ticket)) => Ok((StatusCode::ACCEPTED, json(&ticket)).into_response()),
        Some(Lookup::Done(result)) => Ok(json(&*result.map_err(profile_error)?)),
    }
}

/// The integer parameter `name`, `default` when absent, within `range`.
fn bounded(
    query: &HashMap<String, String>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let Some(given) = query.get(name) else {
        return Ok(default);
    };
    given
        .parse::<u64>()
        .ok()
        .filter(|value| range.contains(value))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name}={given:?} is not a whole number from {} to {}",
                range.start(),
                range.end()
            ))
        })
}

/// The status each reason for no profile answers with.
fn profile_error(error: ProfileError) -> ApiError {
    let status = match &error {
        ProfileError::NotConnected(_) => StatusCode::NOT_FOUND,
        ProfileError::Busy(_) | ProfileError::Refused(_) => StatusCode::CONFLICT,
        ProfileError::NoAnswer(_) => StatusCode::GATEWAY_TIMEOUT,
        ProfileError::Disconnected => StatusCode::BAD_GATEWAY,
        ProfileError::TooMany => StatusCode::TOO_MANY_REQUESTS,
    };
    ApiError {
        status,
        message: error.to_string(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {}. The collector serves /api/v1/services, /api/v1/incidents, /api/v1/series, /metrics and /healthz.",
        uri.path()
    ))
}

/// `/metrics`: OpenMetrics for a scraper that asks for it (Prometheus
/// does), else Prometheus's classic text format, which every other
/// consumer reads (`promtool check metrics`, older agents, `curl`).
async fn metrics(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    let rendered = prom::render(&shared.lock(), &shared.stats);
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    match rendered {
        Ok(text) if openmetrics => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            prom::classic(&text),
        )
            .into_response(),
        Err(error) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("could not render metrics: {error}"),
        }
        .into_response(),
    }
}

async fn services(State(shared): State<Arc<Shared>>) -> Response {
    let view = views::services(&shared.lock(), now_ms());
    json(&view)
}

async fn incidents(State(shared): State<Arc<Shared>>, query: Params) -> Result<Response, ApiError> {
    let query = params(query)?;
    let filter = match query.get("state") {
        Some(value) => value
            .parse::<StateFilter>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => StateFilter::All,
    };
    let incidents = shared
        .lock()
        .incidents
        .list(filter)
        .into_iter()
        .cloned()
        .collect();
    Ok(json(&IncidentsView { incidents }))
}

/// Stored rows one `/api/v1/series` request may read: about 70 instances'
/// week at the store's 10 s resolution, some tens of megabytes in flight.
const MAX_SERIES_ROWS: usize = 4_000_000;
/// Points per instance in an answer, unless `max_points` asks otherwise.
const DEFAULT_MAX_POINTS: usize = 5_000;
/// The most `max_points` may ask for.
const MAX_POINTS_LIMIT: usize = 50_000;

/// A validated `/api/v1/series` request.
#[derive(Debug, PartialEq)]
struct SeriesQuery {
    service: String,
    metric: Metric,
    instance: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// Each instance's series is thinned to at most this many points.
    max_points: usize,
}

impl SeriesQuery {
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let service = query
            .get("service")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing service: ask for /api/v1/series?service=NAME&metric=METRIC",
                )
            })?
            .clone();
        let metric_name = query.get("metric").map(String::as_str).unwrap_or_default();
        let metric = Metric::from_name(metric_name).ok_or_else(|| {
            let what = if metric_name.is_empty() {
                "missing metric".to_owned()
            } else {
                format!("unknown metric {metric_name:?}")
            };
            ApiError::bad_request(format!("{what}: valid metrics are {}", Metric::names()))
        })?;
        let time = |key: &str| -> Result<Option<i64>, ApiError> {
            query
                .get(key)
                .map(|value| {
                    value.parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "{key}={value:?} is not a time: give milliseconds since the Unix epoch, e.g. {key}=1700000000000"
                        ))
                    })
                })
                .transpose()
        };
        let (from_ms, to_ms) = (time("from")?, time("to")?);
        if let (Some(from), Some(to)) = (from_ms, to_ms)
            && from > to
        {
            return Err(ApiError::bad_request(format!(
                "from={from} is after to={to}: the range must run forward"
            )));
        }
        let max_points = match query.get("max_points") {
            None => DEFAULT_MAX_POINTS,
            Some(value) => value
                .parse::<usize>()
                .ok()
                .filter(|n| (2..=MAX_POINTS_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "max_points={value:?} is not a number from 2 to {MAX_POINTS_LIMIT}"
                    ))
                })?,
        };
        Ok(Self {
            service,
            metric,
            instance: query.get("instance").cloned(),
            from_ms,
            to_ms,
            max_points,
        })
    }
}

/// History of one metric of one service: the persistent store (every
/// instance the service ever had, across collector restarts, at the store's
/// resolution) completed with the in-memory series (every sample of the
/// recent past) where they overlap.
async fn series(State(shared): State<Arc<Shared>>, query: Params) -> Result<Response, ApiError> {
    let query = SeriesQuery::parse(&params(query)?)?;
    let recent: BTreeMap<String, Vec<Point>> = {
        let state = shared.lock();
        state
            .registry
            .sorted()
            .into_iter()
            .filter(|i| i.service == query.service)
            .filter(|i| query.instance.as_ref().is_none_or(|w| &i.instance_id == w))
            .map(|i| {
                let points =
                    state
                        .series
                        .range(&i.instance_id, query.metric, query.from_ms, query.to_ms);
                (i.instance_id.clone(), points)
            })
            .collect()
    };
    let store = Arc::clone(&shared.store);
    let (service, metric, instance) = (query.service.clone(), query.metric, query.instance.clone());
    let (from, to) = (
        query.from_ms.unwrap_or(i64::MIN),
        query.to_ms.unwrap_or(i64::MAX),
    );
    let read = tokio::task::spawn_blocking(move || {
        store.range(
            &service,
            metric,
            instance.as_deref(),
            (from, to),
            MAX_SERIES_ROWS,
        )
    })
    .await
    .map_err(|e| ApiError::internal(format!("history read failed: {e}")))?;
    // A failed store (a full disk) leaves the recent past, from memory.
    let (stored, history_unavailable) = match read {
        Ok(stored) => (stored, None),
        Err(StoreError::RangeTooLarge { limit }) => {
            return Err(ApiError::bad_request(format!(
                "the range holds more than {limit} stored rows: narrow it with from= and to=, or ask for one instance="
            )));
        }
        Err(other) => (BTreeMap::new(), Some(other.to_string())),
    };

    let mut series = merge_history(stored, recent);
    for one in &mut series {
        thin(&mut one.points, query.max_points);
    }
    if series.is_empty() {
        let what = match &query.instance {
            Some(wanted) => format!(
                "service {:?} has no instance {wanted:?}: GET /api/v1/services lists its instances",
                query.service
            ),
            None => format!(
                "unknown service {:?}: GET /api/v1/services lists the services this collector knows",
                query.service
            ),
        };
        return Err(ApiError::not_found(what));
    }
    Ok(json(&SeriesView {
        service: query.service,
        metric: query.metric.name().to_owned(),
        series,
        history_unavailable,
    }))
}

/// Thins `points` (oldest first) to at most `max` evenly spaced ones,
/// keeping the first and the last: a week at 1 Hz drawn on a terminal
/// needs a few thousand.
fn thin(points: &mut Vec<Point>, max: usize) {
    let len = points.len();
    if len <= max || max < 2 {
        return;
    }
    let kept: Vec<Point> = (0..max)
        .map(|k| points[k * (len - 1) / (max - 1)])
        .collect();
    *points = kept;
}

/// Joins stored and recent points per instance: stored points before the
/// first recent one, then the recent ones. Instances sorted by their first
/// point, so restarts read in order.
fn merge_history(
    stored: BTreeMap<String, Vec<Point>>,
    mut recent: BTreeMap<String, Vec<Point>>,
) -> Vec<InstanceSeries> {
    let mut merged: Vec<InstanceSeries> = stored
        .into_iter()
        .map(|(instance_id, mut points)| {
            if let Some(live) = recent.remove(&instance_id) {
                if let Some(&(first_live, _)) = live.first() {
                    points.retain(|&(t, _)| t < first_live);
                }
                points.extend(live);
            }
            InstanceSeries {
                instance_id,
                points,
            }
        })
        .collect();
    merged.extend(
        recent
            .into_iter()
            .map(|(instance_id, points)| InstanceSeries {
                instance_id,
                points,
            }),
    );
    merged.sort_by_key(|s| s.points.first().map_or(i64::MAX, |p| p.0));
    merged
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::incidents::tests::incident;
    use axum::body::Body;
    use axum::http::Request;
    use meshwatch_proto::v1::{Hello, ProcessStats, RuntimeStats, Snapshot};
    use tower::ServiceExt;

    fn shared() -> Arc<Shared> {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let shared = Arc::new(Shared::new(Config::new(dir.path()), store));
        {
            let mut state = shared.lock();
            let conn = state.hello(
                &Hello {
                    service: "checkout".to_owned(),
                    instance_id: "c1".to_owned(),
                    pid: 42,
                    start_time_unix_ms: 1_000,
                    interval_ms: 1_000,
                    ..Hello::default()
                },
                now_ms(),
            );
            for (t, cpu) in [(10_000, 1.0), (11_000, 1.5)] {
                let snapshot = Snapshot {
                    time_unix_ms: at(t),
                    process: Some(ProcessStats {
                        rss_bytes: 4096,
                        cpu_seconds_total: cpu,
                        threads: 3,
                        ..ProcessStats::default()
                    }),
                    runtimes: vec![RuntimeStats {
                        workers: 2,
                        tasks_alive: 7,
                        flavor: "multi_thread".to_owned(),
                        ..RuntimeStats::default()
                    }],
                    ..Snapshot::default()
                };
                state.snapshot("c1", conn, snapshot, now_ms());
            }
            state.hello(
                &Hello {
                    service: "auth".to_owned(),
                    instance_id: "a1".to_owned(),
                    ..Hello::default()
                },
                now_ms(),
            );
            state.incidents.upsert(incident("i-1", "c1", None));
            state.incidents.upsert(incident("i-2", "c1", Some(3)));
        }
        shared
    }

    /// `offset_ms` after a base a minute before the tests started: the
    /// collector keeps a snapshot's time only within 15 minutes of its own
    /// clock.
    fn at(offset_ms: i64) -> i64 {
        static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        *BASE.get_or_init(|| now_ms() / 1000 * 1000 - 60_000) + offset_ms
    }

    async fn get(shared: &Arc<Shared>, uri: &str) -> (StatusCode, String) {
        let response = router(Arc::clone(shared))
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_service_wide_incident_is_a_flag_on_each_instance_not_a_copy_of_its_evidence() {
        let shared = shared();
        let lives: Vec<serde_json::Value> = (0..200)
            .map(|n| serde_json::json!({"instance_id": format!("a{n:03}-{}", "x".repeat(40))}))
            .collect();
        {
            let mut state = shared.lock();
            for n in 0..200 {
                state.hello(
                    &Hello {
                        service: "auth".to_owned(),
                        instance_id: format!("a{n:03}"),
                        ..Hello::default()
                    },
                    now_ms(),
                );
            }
            let key = crate::incidents::IncidentKey {
                kind: crate::incidents::IncidentKind::CrashLoop,
                service: "auth".to_owned(),
                instance: None,
                detail: String::new(),
            };
            let finding = crate::incidents::Finding {
                severity: crate::incidents::Severity::Critical,
                summary: "auth keeps dying".to_owned(),
                evidence: crate::incidents::Evidence::Other(serde_json::json!({ "lives": lives })),
            };
            state.incidents.report(&key, finding, now_ms());
        }
        let (status, body) = get(&shared, "/api/v1/services").await;
        assert_eq!(status, StatusCode::OK);
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let flagged: Vec<&serde_json::Value> = view["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["service"] == "auth")
            .collect();
        assert_eq!(flagged.len(), 201);
        for instance in flagged {
            let incident = &instance["open_incidents"][0];
            assert_eq!(incident["kind"], "crash_loop", "{instance:#}");
            assert!(incident["evidence"]["lives"].is_null(), "{incident:#}");
        }
        assert!(
            body.len() < 400 * 1024,
            "linear in the instances: {} bytes",
            body.len()
        );
        let (_, incidents) = get(&shared, "/api/v1/incidents").await;
        assert!(
            incidents.contains("a199-"),
            "the incident keeps its evidence"
        );
    }

    #[tokio::test]
    async fn beyond_loopback_every_route_but_healthz_asks_for_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut config = Config::new(dir.path());
        config.http = "0.0.0.0:6741".parse().unwrap();
        config.token = Some("s3cret".to_owned());
        let shared = Arc::new(Shared::new(config, store));
        let (status, body) = get(&shared, "/api/v1/services").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("MESHWATCH_TOKEN"), "{body}");
        assert_eq!(get(&shared, "/metrics").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(&shared, "/healthz").await.0, StatusCode::OK);
        let with_token = |token: &str| {
            Request::get("/api/v1/services")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap()
        };
        let wrong = router(Arc::clone(&shared))
            .oneshot(with_token("guess"))
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let right = router(Arc::clone(&shared))
            .oneshot(with_token("s3cret"))
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::OK);
    }

    async fn get_json(shared: &Arc<Shared>, uri: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = get(shared, uri).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    #[tokio::test]
    async fn healthz_and_unknown_paths() {
        let shared = shared();
        assert_eq!(
            get(&shared, "/healthz").await,
            (StatusCode::OK, "ok".to_owned())
        );
        let (status, body) = get_json(&shared, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("/api/v1/services"));
    }

    #[tokio::test]
    async fn services_lists_instances_sorted_with_headline_and_incidents() {
        let shared = shared();
        let (status, body) = get_json(&shared, "/api/v1/services").await;
        assert_eq!(status, StatusCode::OK);
        let services = body["services"].as_array().unwrap();
        assert_eq!(services.len(), 2);
        assert_eq!(services[0]["service"], "auth");
        assert_eq!(services[0]["headline"], serde_json::Value::Null);
        assert_eq!(services[0]["state"], "up");
        let checkout = &services[1];
        assert_eq!(checkout["pid"], 42);
        assert_eq!(checkout["started_at_ms"], 1_000);
        assert_eq!(checkout["headline"]["rss_bytes"], 4096);
        assert_eq!(checkout["headline"]["cpu_percent"], 50.0);
        assert_eq!(checkout["headline"]["workers"], 2);
        assert_eq!(
            checkout["headline"]["heap_live_bytes"],
            serde_json::Value::Null
        );
        assert_eq!(
            checkout["headline"]["memory_limit_source"],
            serde_json::Value::Null
        );
        assert_eq!(checkout["runtimes"][0]["flavor"], "multi_thread");
        assert_eq!(checkout["open_incidents"].as_array().unwrap().len(), 1);
        assert_eq!(checkout["open_incidents"][0]["id"], "i-1");
    }

    #[tokio::test]
    async fn incidents_filter_by_state_and_reject_unknown_states() {
        let shared = shared();
        let count = |body: &serde_json::Value| body["incidents"].as_array().unwrap().len();
        assert_eq!(count(&get_json(&shared, "/api/v1/incidents").await.1), 2);
        assert_eq!(
            count(&get_json(&shared, "/api/v1/incidents?state=open").await.1),
            1
        );
        assert_eq!(
            count(
                &get_json(&shared, "/api/v1/incidents?state=resolved")
                    .await
                    .1
            ),
            1
        );
        assert_eq!(
            count(&get_json(&shared, "/api/v1/incidents?state=all").await.1),
            2
        );
        let (status, body) = get_json(&shared, "/api/v1/incidents?state=closed").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("state=open"));
    }

    #[tokio::test]
    async fn series_returns_points_in_range() {
        let shared = shared();
        let (status, body) =
            get_json(&shared, "/api/v1/series?service=checkout&metric=rss_bytes").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metric"], "rss_bytes");
        assert_eq!(body["series"][0]["instance_id"], "c1");
        assert_eq!(
            body["series"][0]["points"],
            serde_json::json!([[at(10_000), 4096.0], [at(11_000), 4096.0]])
        );
        let uri = format!(
            "/api/v1/series?service=checkout&metric=cpu_percent&instance=c1&from={}&to={}",
            at(10_500),
            at(20_000)
        );
        let (_, body) = get_json(&shared, &uri).await;
        assert_eq!(
            body["series"][0]["points"],
            serde_json::json!([[at(11_000), 50.0]])
        );
    }

    #[test]
    fn thinning_keeps_the_ends_and_spreads_the_rest() {
        let mut points: Vec<Point> = (0..10_001).map(|t| (t, t as f64)).collect();
        thin(&mut points, 101);
        assert_eq!(points.len(), 101);
        assert_eq!(points.first(), Some(&(0, 0.0)));
        assert_eq!(points.last(), Some(&(10_000, 10_000.0)));
        assert!(points.windows(2).all(|w| w[1].0 - w[0].0 == 100));
        let mut few: Vec<Point> = vec![(1, 1.0), (2, 2.0)];
        thin(&mut few, 101);
        assert_eq!(few.len(), 2, "short series are left whole");
    }

    #[tokio::test]
    async fn series_explains_bad_requests() {
        let shared = shared();
        for (uri, status, needle) in [
            (
                "/api/v1/series?metric=rss_bytes",
                StatusCode::BAD_REQUEST,
                "missing service",
            ),
            (
                "/api/v1/series?service=checkout",
                StatusCode::BAD_REQUEST,
                "rss_bytes, virtual_bytes",
            ),
            (
                "/api/v1/series?service=checkout&metric=rss",
                StatusCode::BAD_REQUEST,
                "unknown metric \"rss\"",
            ),
            (
                "/api/v1/series?service=checkout&metric=rss_bytes&from=yesterday",
                StatusCode::BAD_REQUEST,
                "milliseconds",
            ),
            (
                "/api/v1/series?service=checkout&metric=rss_bytes&from=5&to=1",
                StatusCode::BAD_REQUEST,
                "forward",
            ),
            (
                "/api/v1/series?service=checkout&metric=rss_bytes&max_points=1",
                StatusCode::BAD_REQUEST,
                "from 2 to 50000",
            ),
            (
                "/api/v1/series?service=nope&metric=rss_bytes",
                StatusCode::NOT_FOUND,
                "unknown service",
            ),
            (
                "/api/v1/series?service=checkout&metric=rss_bytes&instance=a1",
                StatusCode::NOT_FOUND,
                "no instance",
            ),
        ] {
            let (got, body) = get_json(&shared, uri).await;
            assert_eq!(got, status, "{uri}");
            let message = body["error"].as_str().unwrap();
            assert!(message.contains(needle), "{uri}: {message}");
        }
    }

    #[tokio::test]
    async fn metrics_exports_one_family_per_metric_with_labels() {
        let shared = shared();
        shared.stats.reject("bad_token");
        let (status, text) = get(&shared, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for &metric in Metric::ALL {
            // The classic text format, as a client without an Accept
            // header gets it: counters by their `_total` name.
            let family = format!("# HELP meshwatch_{} ", metric.name());
            let sent = !matches!(
                metric,
                Metric::HeapLiveBytes
                    | Metric::HeapLimitBytes
                    | Metric::TcpSockets
                    | Metric::TcpEstablished
                    | Metric::TcpCloseWait
                    | Metric::TcpTimeWait
                    | Metric::HeapAllocatedBytesTotal
                    | Metric::HeapSamplesDroppedTotal
                    | Metric::ProbeSnapshotsDroppedTotal
                    | Metric::ProbeEventsDroppedTotal
            );
            assert_eq!(text.contains(&family), sent, "{metric:?}\n{text}");
        }
        assert!(
            text.contains("# HELP meshwatch_rss_bytes Resident set size of the process.\n"),
            "{text}"
        );
        assert!(
            text.contains("meshwatch_rss_bytes{service=\"checkout\",instance=\"c1\"} 4096"),
            "{text}"
        );
        assert!(
            text.contains("meshwatch_cpu_seconds_total{service=\"checkout\",instance=\"c1\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains("meshwatch_instance_up{service=\"auth\",instance=\"a1\",runtime=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshwatch_instance_restarts_total{service=\"auth\",instance=\"a1\"} 0"),
            "{text}"
        );
        assert!(text.contains("meshwatch_collector_connections 0"), "{text}");
        assert!(
            text.contains("meshwatch_collector_frames_rejected_total{reason=\"bad_token\"} 1"),
            "{text}"
        );
    }
}
