//! OpenTelemetry metrics in: an OTLP/HTTP receiver at `POST /v1/metrics`
//! on the collector's HTTP port.
//!
//! A Node.js or Python service that already exports its runtime metrics
//! with its OpenTelemetry SDK joins the mesh by pointing the exporter here
//! (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=http://COLLECTOR:HTTP_PORT/v1/metrics`),
//! with no code change. Each resource of an export is an instance
//! ([`resource`]: `service.name`, and `service.instance.id` or host and
//! pid); its standard process and runtime metrics become the figures of a
//! probe's snapshot ([`mapping`]), recorded through the same state, series,
//! history and detectors as a probe's; a Node.js event loop that stalled
//! for a second or more is a stuck poll, `runaway_loop` or
//! `blocked_worker` ([`event_loop`]); and an instance whose exports stop
//! goes down as a probe's does when its connection goes silent
//! ([`sessions`]). So `memory_growth` runs on its RSS, or on the V8 heap
//! with the time to V8's heap limit, and `service_down` and `crash_loop`
//! apply.
//!
//! Both encodings of OTLP/HTTP are taken, by `Content-Type`: binary
//! protobuf (`application/x-protobuf`) and JSON (`application/json`), the
//! answer in the request's. The types are `opentelemetry-proto`'s. When the
//! collector has a token, an export must carry it as
//! `Authorization: Bearer TOKEN` (`OTEL_EXPORTER_OTLP_HEADERS`). The body
//! is bounded by [`MAX_BODY`]; the instances followed by
//! [`sessions::MAX_SESSIONS`].

mod event_loop;
mod mapping;
mod resource;
mod sessions;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshwatch_proto::v1::{Event, event};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use crate::registry::ConnId;
use crate::state::{Shared, State};
use mapping::Readings;
use resource::Source;
pub(crate) use sessions::Sessions;
use sessions::{Admission, Target};

/// The largest export body taken, in bytes. A process's runtime metrics
/// are a few KiB; an SDK batching many services' metrics stays well below.
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;

/// How an export was encoded, and how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = content_type.split(';').next()?.trim();
        match mime {
            "application/x-protobuf" | "application/protobuf" => Some(Self::Protobuf),
            "application/json" => Some(Self::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    fn decode(self, body: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
        match self {
            Self::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(|e| e.to_string()),
            Self::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
        }
    }

    fn answer(self, status: StatusCode, response: &ExportMetricsServiceResponse) -> Response {
        let body = match self {
            Self::Protobuf => response.encode_to_vec(),
            Self::Json => serde_json::to_vec(response).unwrap_or_default(),
        };
        (status, [(header::CONTENT_TYPE, self.content_type())], body).into_response()
    }
}

/// `POST /v1/metrics`: records each resource's metrics as a snapshot of its
/// instance. Answers 200 when every resource was taken, 200 with a partial
/// success naming what was not when some were, 400 when none could be.
pub(crate) async fn receive_metrics(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(token) = shared.config.token.as_deref()
        && !crate::api::bearer_matches(&headers, token)
    {
        shared.stats.reject("otlp_bad_token");
        return (
            StatusCode::UNAUTHORIZED,
            "This collector requires its token: send Authorization: Bearer TOKEN (OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20TOKEN).\n",
        )
            .into_response();
    }
    let Some(encoding) = Encoding::of(&headers) else {
        shared.stats.reject("otlp_content_type");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "OTLP/HTTP takes Content-Type application/x-protobuf or application/json.\n",
        )
            .into_response();
    };
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| e.as_bytes() != b"identity")
    {
        shared.stats.reject("otlp_compressed");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "This collector takes uncompressed OTLP: set OTEL_EXPORTER_OTLP_COMPRESSION=none.\n",
        )
            .into_response();
    }
    let request = match encoding.decode(&body) {
        Ok(request) => request,
        Err(error) => {
            shared.stats.reject("otlp_bad_body");
            let response = partial(
                0,
                format!("the body is not an OTLP metrics export: {error}"),
            );
            return encoding.answer(StatusCode::BAD_REQUEST, &response);
        }
    };
    let now_ms = crate::state::now_ms();
    let outcome = {
        let mut state = shared.lock();
        record(&mut state, &request, now_ms)
    };
    if outcome.taken == 0 && !outcome.errors.is_empty() {
        shared.stats.reject("otlp_refused");
        return encoding.answer(
            StatusCode::BAD_REQUEST,
            &partial(outcome.rejected_points, outcome.errors.join("; ")),
        );
    }
    let response = if outcome.errors.is_empty() {
        ExportMetricsServiceResponse::default()
    } else {
        partial(outcome.rejected_points, outcome.errors.join("; "))
    };
    encoding.answer(StatusCode::OK, &response)
}

fn partial(rejected_data_points: i64, error_message: String) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points,
            error_message,
        }),
    }
}

/// What became of one export's resources.
#[derive(Debug, Default)]
struct Outcome {
    /// Resources recorded.
    taken: usize,
    /// Data points of the resources refused.
    rejected_points: i64,
    /// Why each refused resource was, at most a few.
    errors: Vec<String>,
}

/// Reasons quoted back to the exporter, at most.
const MAX_ERRORS: usize = 4;

/// Records every resource of `request` into `state`.
fn record(state: &mut State, request: &ExportMetricsServiceRequest, now_ms: i64) -> Outcome {
    let mut outcome = Outcome::default();
    for resource_metrics in &request.resource_metrics {
        let taken = Source::from_resource(resource_metrics.resource.as_ref())
            .map_err(|e| e.to_string())
            .and_then(|source| {
                let readings = Readings::read(&resource_metrics.scope_metrics);
                record_instance(state, &source, &readings, now_ms)
            });
        match taken {
            Ok(()) => outcome.taken += 1,
            Err(error) => {
                outcome.rejected_points += data_points(resource_metrics);
                if outcome.errors.len() < MAX_ERRORS {
                    outcome.errors.push(error);
                }
            }
        }
    }
    outcome
}

/// Records one instance's export: registers it when new (or when its
/// interval changed), then its snapshot.
fn record_instance(
    state: &mut State,
    source: &Source,
    readings: &Readings,
    now_ms: i64,
) -> Result<(), String> {
    let admission = state
        .otlp
        .admit(source, readings.facts(), now_ms)
        .map_err(|e| e.to_string())?;
    if let Some((watched, watched_conn)) = watched_twin(state, source) {
        state
            .otlp
            .attach(&source.instance_id, &watched, readings.heap(), now_ms);
        // An instance the exports made before the watcher picked the
        // process up is the same process: it goes.
        if state.registry.get(&source.instance_id).is_some() {
            state.forget(&source.instance_id);
        }
        record_stall(
            state,
            (&watched, watched_conn),
            source,
            readings,
            &admission,
            now_ms,
        );
        return Ok(());
    }
    let conn = match &admission.target {
        Target::Registered(conn) => *conn,
        Target::Register(hello) => {
            if let Some(owner) = state.registry.held_by_another(hello) {
                let owner = format!("pid {} on {}", owner.pid, owner.host);
                state.otlp.refused(&source.instance_id);
                return Err(format!(
                    "instance id {:?} is in use by another live process ({owner})",
                    source.instance_id
                ));
            }
            let conn = state.hello(hello, now_ms);
            state.otlp.registered(&source.instance_id, conn);
            conn
        }
    };
    state.snapshot(
        &source.instance_id,
        conn,
        readings.snapshot(admission.seq),
        now_ms,
    );
    record_stall(
        state,
        (&source.instance_id, conn),
        source,
        readings,
        &admission,
        now_ms,
    );
    Ok(())
}

/// The instance watched from outside (`--watch`) that is the process
/// `source` names, if any: its exports then add to that instance.
fn watched_twin(state: &State, source: &Source) -> Option<(String, ConnId)> {
    if source.pid == 0 || source.host.is_empty() {
        return None;
    }
    state
        .registry
        .watched_process(&source.host, source.pid)
        .map(|(id, conn)| (id.to_owned(), conn))
}

/// Records, on `instance` and its connection, the stall of the event loop
/// the export shows, if any.
fn record_stall(
    state: &mut State,
    (instance, conn): (&str, ConnId),
    source: &Source,
    readings: &Readings,
    admission: &Admission,
    now_ms: i64,
) {
    let stall = event_loop::stall_ms(readings.event_loop_delay_max_ms(), admission.late_by_ms)
        .and_then(|stall_ms| {
            event_loop::stall_events(
                source.pid,
                stall_ms,
                admission.cpu_since_last,
                admission.seq,
            )
        });
    for stuck in stall.into_iter().flatten() {
        let event = Event {
            time_unix_ms: now_ms,
            kind: Some(event::Kind::StuckPoll(stuck)),
        };
        state.event(instance, conn, event, now_ms);
    }
}

/// The data points of every metric of a resource, for the partial
/// success's count of what was refused.
fn data_points(resource_metrics: &opentelemetry_proto::tonic::metrics::v1::ResourceMetrics) -> i64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let count = |data: &Data| match data {
        Data::Gauge(g) => g.data_points.len(),
        Data::Sum(s) => s.data_points.len(),
        Data::Histogram(h) => h.data_points.len(),
        Data::ExponentialHistogram(h) => h.data_points.len(),
        Data::Summary(s) => s.data_points.len(),
    };
    let total: usize = resource_metrics
        .scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .filter_map(|m| m.data.as_ref())
        .map(count)
        .sum();
    i64::try_from(total).unwrap_or(i64::MAX)
}
