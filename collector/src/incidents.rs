//! Incidents: what the detectors found, with the evidence to act on.
//!
//! An incident is opened by a detector, updated while the condition lasts
//! (`last_seen_at_ms`), and resolved when it ends. The [`IncidentBook`] holds
//! them for the API; it has no detectors of its own yet, so it stays empty
//! until they land, but its shape and its filter are the API's contract.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What kind of trouble an incident describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// A poll that does not return while its thread burns a CPU.
    RunawayLoop,
    /// A poll that does not return while its thread is idle: blocking code in async.
    BlockedWorker,
    /// Memory that keeps climbing.
    MemoryGrowth,
    /// TCP connections that are never closed.
    SocketLeak,
    /// File descriptors rising toward their limit.
    FdLeak,
    /// Alive tasks rising while the load is flat.
    TaskLeak,
    /// A service whose instances keep dying.
    CrashLoop,
    /// A service with no instance up.
    ServiceDown,
}

impl IncidentKind {
    /// The snake_case name used in the API, e.g. `runaway_loop`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::RunawayLoop => "runaway_loop",
            IncidentKind::BlockedWorker => "blocked_worker",
            IncidentKind::MemoryGrowth => "memory_growth",
            IncidentKind::SocketLeak => "socket_leak",
            IncidentKind::FdLeak => "fd_leak",
            IncidentKind::TaskLeak => "task_leak",
            IncidentKind::CrashLoop => "crash_loop",
            IncidentKind::ServiceDown => "service_down",
        }
    }
}

/// How urgent an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Hurting the service now, or soon.
    Critical,
}

/// One finding of a detector, as served by `/api/v1/incidents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Unique within this collector; stable for the incident's life.
    pub id: String,
    /// What kind of trouble.
    pub kind: IncidentKind,
    /// How urgent.
    pub severity: Severity,
    /// The service affected.
    pub service: String,
    /// The instance affected, when the incident concerns one.
    pub instance: Option<String>,
    /// When it was first detected (ms since the Unix epoch).
    pub opened_at_ms: i64,
    /// When the condition was last observed.
    pub last_seen_at_ms: i64,
    /// When it ended; `None` while open.
    pub resolved_at_ms: Option<i64>,
    /// One sentence for a person: what is wrong.
    pub summary: String,
    /// The detector's concrete evidence (stack, slope, counts), as JSON.
    pub evidence: serde_json::Value,
}

impl Incident {
    /// Whether the incident is still going on.
    pub fn is_open(&self) -> bool {
        self.resolved_at_ms.is_none()
    }
}

/// Which incidents a query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateFilter {
    /// Only those still going on.
    Open,
    /// Only those that ended.
    Resolved,
    /// Both.
    #[default]
    All,
}

impl StateFilter {
    /// Whether `incident` passes this filter.
    pub fn matches(self, incident: &Incident) -> bool {
        match self {
            StateFilter::Open => incident.is_open(),
            StateFilter::Resolved => !incident.is_open(),
            StateFilter::All => true,
        }
    }
}

/// A `state=` value that is none of `open`, `resolved`, `all`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown incident state {0:?}: use state=open, state=resolved or state=all")]
pub struct UnknownStateFilter(String);

impl FromStr for StateFilter {
    type Err = UnknownStateFilter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(StateFilter::Open),
            "resolved" => Ok(StateFilter::Resolved),
            "all" => Ok(StateFilter::All),
            other => Err(UnknownStateFilter(other.to_owned())),
        }
    }
}

/// Every incident the collector knows, oldest first.
#[derive(Debug, Default)]
pub struct IncidentBook {
    incidents: Vec<Incident>,
}

impl IncidentBook {
    /// Records a new incident or, when one with the same id exists,
    /// replaces it: detectors re-report an incident as its evidence grows.
    pub fn upsert(&mut self, incident: Incident) {
        match self.incidents.iter_mut().find(|i| i.id == incident.id) {
            Some(existing) => *existing = incident,
            None => self.incidents.push(incident),
        }
    }

    /// The incidents passing `filter`, oldest first.
    pub fn list(&self, filter: StateFilter) -> Vec<&Incident> {
        self.incidents
            .iter()
            .filter(|i| filter.matches(i))
            .collect()
    }

    /// The open incidents concerning one instance, for the services view.
    pub fn open_for_instance(&self, instance_id: &str) -> Vec<&Incident> {
        self.incidents
            .iter()
            .filter(|i| i.is_open() && i.instance.as_deref() == Some(instance_id))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn incident(id: &str, instance: &str, resolved: Option<i64>) -> Incident {
        Incident {
            id: id.to_owned(),
            kind: IncidentKind::RunawayLoop,
            severity: Severity::Critical,
            service: "svc".to_owned(),
            instance: Some(instance.to_owned()),
            opened_at_ms: 1,
            last_seen_at_ms: 2,
            resolved_at_ms: resolved,
            summary: "a loop".to_owned(),
            evidence: serde_json::json!({}),
        }
    }

    #[test]
    fn parses_filters_and_explains_bad_ones() {
        assert_eq!("open".parse(), Ok(StateFilter::Open));
        assert_eq!("resolved".parse(), Ok(StateFilter::Resolved));
        assert_eq!("all".parse(), Ok(StateFilter::All));
        let err = "closed".parse::<StateFilter>().unwrap_err().to_string();
        assert!(
            err.contains("\"closed\"") && err.contains("state=open"),
            "{err}"
        );
    }

    #[test]
    fn filters_by_state_and_instance_and_upserts_by_id() {
        let mut book = IncidentBook::default();
        book.upsert(incident("1", "i1", None));
        book.upsert(incident("2", "i2", Some(5)));
        assert_eq!(book.list(StateFilter::All).len(), 2);
        assert_eq!(book.list(StateFilter::Open)[0].id, "1");
        assert_eq!(book.list(StateFilter::Resolved)[0].id, "2");
        assert_eq!(book.open_for_instance("i1").len(), 1);
        assert!(book.open_for_instance("i2").is_empty());
        book.upsert(incident("1", "i1", Some(9)));
        assert_eq!(book.list(StateFilter::All).len(), 2);
        assert!(book.list(StateFilter::Open).is_empty());
        let json = serde_json::to_value(book.list(StateFilter::All)[0]).unwrap();
        assert_eq!(json["kind"], "runaway_loop");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["resolved_at_ms"], 9);
    }
}
