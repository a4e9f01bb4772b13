//! Incidents as OTLP log records: one when an incident opens and one when it
//! resolves, under the resource of the instance (or service) it is about.
//!
//! [`IncidentFeed`] finds the transitions by reading the incident book on
//! each turn of the exporter rather than by a hook in the book: ids count
//! up, so an incident with a larger id than the last one seen has opened
//! since, and the open ones already sent are checked for their resolution.
//! An incident that opens and resolves between two turns gives both records.

use std::collections::HashMap;

use meshwatch_api::Incident;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use serde_json::Value;

use super::metrics::nanos;
use super::{Subject, attribute, scope, subject_resource, text};
use crate::incidents::{IncidentBook, Severity, StateFilter};

/// The longest text an evidence attribute keeps; a stack's frames beyond it
/// are cut (the whole evidence stays in the collector's API).
const MAX_ATTRIBUTE_TEXT: usize = 8 * 1024;

/// Whether a record tells of an incident's opening or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The incident opened.
    Opened,
    /// The incident resolved.
    Resolved,
}

impl Transition {
    /// The record's `event.name`.
    pub fn event_name(self) -> &'static str {
        match self {
            Transition::Opened => "meshwatch.incident.opened",
            Transition::Resolved => "meshwatch.incident.resolved",
        }
    }
}

/// One record to send: the incident as it stood at the transition.
#[derive(Debug, Clone)]
pub struct IncidentRecord {
    /// Opened or resolved.
    pub transition: Transition,
    /// The incident, copied.
    pub incident: Incident,
    /// When the collector saw the transition (Unix ms).
    pub observed_ms: i64,
}

/// Which incidents have been sent as opened, to send their resolution.
#[derive(Debug, Default)]
pub struct IncidentFeed {
    /// The largest id seen.
    last_id: u64,
    /// Open incidents sent as opened, as sent: kept so that a resolution is
    /// sent even when the book forgot the incident first.
    open: HashMap<String, Incident>,
}

impl IncidentFeed {
    /// A feed that starts after what `book` holds now: incidents already
    /// open when the exporter starts are not sent as opening, but their
    /// resolution is.
    pub fn starting_at(book: &IncidentBook) -> Self {
        let mut feed = IncidentFeed::default();
        for incident in book.list(StateFilter::All) {
            feed.last_id = feed.last_id.max(numeric(&incident.id));
            if incident.is_open() {
                feed.open.insert(incident.id.clone(), incident.clone());
            }
        }
        feed
    }

    /// The transitions since the last call, oldest first.
    pub fn poll(&mut self, book: &IncidentBook, now_ms: i64) -> Vec<IncidentRecord> {
        let mut records = Vec::new();
        let mut resolved: Vec<String> = Vec::new();
        for (id, sent) in &self.open {
            match book.get(id) {
                Some(incident) if incident.is_open() => {}
                Some(incident) => {
                    records.push(record(Transition::Resolved, incident.clone(), now_ms));
                    resolved.push(id.clone());
                }
                None => {
                    let mut gone = sent.clone();
                    gone.resolved_at_ms = Some(now_ms);
                    records.push(record(Transition::Resolved, gone, now_ms));
                    resolved.push(id.clone());
                }
            }
        }
        for id in resolved {
            self.open.remove(&id);
        }
        let last_id = self.last_id;
        for incident in book
            .list(StateFilter::All)
            .into_iter()
            .filter(|i| numeric(&i.id) > last_id)
        {
            self.last_id = self.last_id.max(numeric(&incident.id));
            records.push(record(Transition::Opened, incident.clone(), now_ms));
            if incident.is_open() {
                self.open.insert(incident.id.clone(), incident.clone());
            } else {
                records.push(record(Transition::Resolved, incident.clone(), now_ms));
            }
        }
        records.sort_by_key(transition_ms);
        records
    }
}

fn record(transition: Transition, incident: Incident, observed_ms: i64) -> IncidentRecord {
    IncidentRecord {
        transition,
        incident,
        observed_ms,
    }
}

fn numeric(id: &str) -> u64 {
    id.parse().unwrap_or(0)
}

/// When the transition happened: the opening, or the resolution.
fn transition_ms(record: &IncidentRecord) -> i64 {
    match record.transition {
        Transition::Opened => record.incident.opened_at_ms,
        Transition::Resolved => record
            .incident
            .resolved_at_ms
            .unwrap_or(record.incident.last_seen_at_ms),
    }
}

/// One request with `records`, grouped by the resource of their subject.
/// `subjects` gives what is known of each instance (its pid and runtime).
pub fn request(
    records: &[IncidentRecord],
    subject: impl Fn(&Incident) -> Subject,
    host: &str,
) -> ExportLogsServiceRequest {
    let mut resources: Vec<(Subject, Vec<LogRecord>)> = Vec::new();
    for record in records {
        let who = subject(&record.incident);
        let log = log_record(record);
        match resources.iter_mut().find(|(s, _)| *s == who) {
            Some((_, logs)) => logs.push(log),
            None => resources.push((who, vec![log])),
        }
    }
    ExportLogsServiceRequest {
        resource_logs: resources
            .into_iter()
            .map(|(who, log_records)| ResourceLogs {
                resource: Some(subject_resource(&who, host)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn log_record(record: &IncidentRecord) -> LogRecord {
    let incident = &record.incident;
    // An opening is as severe as the incident; its end is news, not trouble.
    let severity = match (record.transition, incident.severity) {
        (Transition::Resolved, _) => SeverityNumber::Info,
        (Transition::Opened, Severity::Critical) => SeverityNumber::Error,
        (Transition::Opened, Severity::Warning | Severity::Unknown) => SeverityNumber::Warn,
    };
    let state = match record.transition {
        Transition::Opened => "open",
        Transition::Resolved => "resolved",
    };
    let mut attributes = vec![
        text("meshwatch.incident.id", &incident.id),
        text("meshwatch.incident.kind", incident.kind.as_str()),
        text("meshwatch.incident.severity", incident.severity.as_str()),
        text("meshwatch.incident.state", state),
        int("meshwatch.incident.opened_at_ms", incident.opened_at_ms),
    ];
    if let Some(resolved) = incident.resolved_at_ms {
        attributes.push(int("meshwatch.incident.resolved_at_ms", resolved));
    }
    if let Ok(Value::Object(fields)) = serde_json::to_value(&incident.evidence) {
        attributes.extend(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(key, value)| evidence(&key, value)),
        );
    }
    LogRecord {
        time_unix_nano: nanos(transition_ms(record)),
        observed_time_unix_nano: nanos(record.observed_ms),
        severity_number: severity as i32,
        severity_text: severity_text(severity).to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(incident.summary.clone())),
        }),
        attributes,
        event_name: record.transition.event_name().to_owned(),
        ..LogRecord::default()
    }
}

fn severity_text(severity: SeverityNumber) -> &'static str {
    match severity {
        SeverityNumber::Error => "ERROR",
        SeverityNumber::Warn => "WARN",
        _ => "INFO",
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

/// One evidence field as `meshwatch.evidence.<key>`: numbers, flags and
/// texts as themselves, lists and objects as their JSON (cut to
/// [`MAX_ATTRIBUTE_TEXT`]), which every log backend shows and searches.
fn evidence(key: &str, value: Value) -> KeyValue {
    let value = match value {
        Value::Bool(b) => any_value::Value::BoolValue(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => any_value::Value::StringValue(cut(s)),
        other => any_value::Value::StringValue(cut(other.to_string())),
    };
    attribute(&format!("meshwatch.evidence.{key}"), value)
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_ATTRIBUTE_TEXT {
        let mut end = MAX_ATTRIBUTE_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::{Evidence, Finding, IncidentKey, IncidentKind};

    fn key(instance: &str) -> IncidentKey {
        IncidentKey {
            kind: IncidentKind::RunawayLoop,
            service: "svc".to_owned(),
            instance: Some(instance.to_owned()),
            detail: String::new(),
        }
    }

    fn finding() -> Finding {
        Finding {
            severity: Severity::Critical,
            summary: "spins".to_owned(),
            evidence: Evidence::Other(serde_json::json!({"cpu_percent": 99.5, "frames": ["a"]})),
        }
    }

    fn events(records: &[IncidentRecord]) -> Vec<(Transition, String)> {
        records
            .iter()
            .map(|r| (r.transition, r.incident.id.clone()))
            .collect()
    }

    #[test]
    fn sends_each_opening_and_resolution_once_even_between_two_polls() {
        let mut book = IncidentBook::default();
        book.report(&key("before"), finding(), 1_000);
        let mut feed = IncidentFeed::starting_at(&book);
        assert!(feed.poll(&book, 1_500).is_empty(), "open before the start");

        let a = book.report(&key("a"), finding(), 2_000);
        assert_eq!(
            events(&feed.poll(&book, 2_100)),
            [(Transition::Opened, a.clone())]
        );
        assert!(feed.poll(&book, 2_200).is_empty(), "once");

        // Opens and resolves between two polls; `a` and `before` resolve.
        let b = book.report(&key("b"), finding(), 3_000);
        book.resolve(&key("b"), 3_500);
        book.resolve(&key("a"), 3_600);
        book.resolve(&key("before"), 3_700);
        let got = events(&feed.poll(&book, 4_000));
        assert_eq!(
            got,
            [
                (Transition::Opened, b.clone()),
                (Transition::Resolved, b),
                (Transition::Resolved, a),
                (Transition::Resolved, "1".to_owned()),
            ],
            "in the order they happened"
        );
        assert!(feed.poll(&book, 4_100).is_empty());
    }

    #[test]
    fn a_record_carries_severity_kind_summary_and_evidence() {
        let mut book = IncidentBook::default();
        book.report(&key("a"), finding(), 2_000);
        let records = IncidentFeed::default().poll(&book, 2_100);
        let log = log_record(&records[0]);
        assert_eq!(log.severity_number, SeverityNumber::Error as i32);
        assert_eq!(log.event_name, "meshwatch.incident.opened");
        assert_eq!(log.time_unix_nano, 2_000_000_000);
        let attribute = |key: &str| {
            log.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone()?.value)
        };
        assert_eq!(
            attribute("meshwatch.incident.kind"),
            Some(any_value::Value::StringValue("runaway_loop".to_owned()))
        );
        assert_eq!(
            attribute("meshwatch.evidence.cpu_percent"),
            Some(any_value::Value::DoubleValue(99.5))
        );
        assert_eq!(
            attribute("meshwatch.evidence.frames"),
            Some(any_value::Value::StringValue("[\"a\"]".to_owned()))
        );
        assert_eq!(
            cut("é".repeat(MAX_ATTRIBUTE_TEXT)).len(),
            MAX_ATTRIBUTE_TEXT + "…".len()
        );
    }
}
