//! `GET /api/v1/incidents`: what the detectors found.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Evidence;

/// What kind of trouble an incident describes. Written as its snake_case
/// name; a name this client does not know reads as [`IncidentKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// A kind from a newer collector, by its name.
    Other(String),
}

impl IncidentKind {
    /// Every kind this version knows, in the order people read them.
    pub const KNOWN: [IncidentKind; 8] = [
        IncidentKind::RunawayLoop,
        IncidentKind::BlockedWorker,
        IncidentKind::MemoryGrowth,
        IncidentKind::SocketLeak,
        IncidentKind::FdLeak,
        IncidentKind::TaskLeak,
        IncidentKind::CrashLoop,
        IncidentKind::ServiceDown,
    ];

    /// The snake_case name used in the API, e.g. `runaway_loop`.
    pub fn as_str(&self) -> &str {
        match self {
            IncidentKind::RunawayLoop => "runaway_loop",
            IncidentKind::BlockedWorker => "blocked_worker",
            IncidentKind::MemoryGrowth => "memory_growth",
            IncidentKind::SocketLeak => "socket_leak",
            IncidentKind::FdLeak => "fd_leak",
            IncidentKind::TaskLeak => "task_leak",
            IncidentKind::CrashLoop => "crash_loop",
            IncidentKind::ServiceDown => "service_down",
            IncidentKind::Other(name) => name,
        }
    }

    /// The kind named `name`; [`IncidentKind::Other`] for a name this
    /// version does not know.
    pub fn from_name(name: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .unwrap_or_else(|| IncidentKind::Other(name.to_owned()))
    }
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for IncidentKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IncidentKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(IncidentKind::from_name(&name))
    }
}

/// How urgent an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Hurting the service now, or soon.
    Critical,
    /// A severity this client does not know, from a newer collector.
    #[serde(other)]
    Unknown,
}

impl Severity {
    /// The lowercase name used in the API: `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Unknown => "unknown",
        }
    }
}

/// One finding of a detector.
///
/// Its evidence is typed by its kind ([`Evidence`]); reading an incident
/// reads its `evidence` object as the kind's type, and as raw JSON
/// ([`Evidence::Other`]) when the kind is unknown or the object does not
/// fit the type. An incident whose own fields do not read is left out of
/// the lists that hold it, rather than failing them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawIncident")]
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
    /// The detector's evidence: the stack, the trend, the counts.
    pub evidence: Evidence,
}

impl Incident {
    /// Whether the incident is still going on.
    pub fn is_open(&self) -> bool {
        self.resolved_at_ms.is_none()
    }
}

/// An incident as written, its evidence not yet read by kind.
#[derive(Deserialize)]
struct RawIncident {
    id: String,
    kind: IncidentKind,
    severity: Severity,
    service: String,
    #[serde(default)]
    instance: Option<String>,
    opened_at_ms: i64,
    last_seen_at_ms: i64,
    #[serde(default)]
    resolved_at_ms: Option<i64>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    evidence: serde_json::Value,
}

impl From<RawIncident> for Incident {
    fn from(raw: RawIncident) -> Self {
        Incident {
            evidence: Evidence::read(&raw.kind, raw.evidence),
            id: raw.id,
            kind: raw.kind,
            severity: raw.severity,
            service: raw.service,
            instance: raw.instance,
            opened_at_ms: raw.opened_at_ms,
            last_seen_at_ms: raw.last_seen_at_ms,
            resolved_at_ms: raw.resolved_at_ms,
            summary: raw.summary,
        }
    }
}

/// `GET /api/v1/incidents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentsView {
    /// In the order they were opened, oldest first.
    #[serde(deserialize_with = "lenient_list")]
    pub incidents: Vec<Incident>,
}

/// Reads a list of incidents, leaving out any that does not read as one (a
/// required field missing or of another type, from a collector this client
/// does not understand), so that one odd incident never hides the others.
pub(crate) fn lenient_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Incident>, D::Error> {
    let values = Vec::<serde_json::Value>::deserialize(deserializer)?;
    Ok(values
        .into_iter()
        .filter_map(|value| Incident::deserialize(value).ok())
        .collect())
}
