//! Each incident kind's evidence, typed.
//!
//! Every type defaults its missing fields (`#[serde(default)]`), and
//! ignores fields it does not know: evidence from an older or a newer
//! collector still reads. Figures that count things are integers, sizes are
//! whole bytes, rates and slopes are floats that say their unit.

mod leaks;
mod lifecycle;
mod memory;
mod stuck;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use leaks::{
    CountTrend, FdLeakEvidence, SignTest, SocketLeakEvidence, SpawnSite, TaskLeakEvidence,
};
pub use lifecycle::{CrashLoopEvidence, Ending, InstanceLife, ServiceDownEvidence};
pub use memory::{MemoryGrowthEvidence, MemoryTrend, SuspectSite};
pub use stuck::{HotFrame, StackSample, StuckPollEvidence, ThreadRef};

use crate::IncidentKind;

/// An incident's evidence, by its kind. Written as the kind's evidence
/// object alone: the incident's `kind` says which type it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    /// `runaway_loop` and `blocked_worker`.
    StuckPoll(StuckPollEvidence),
    /// `memory_growth`.
    MemoryGrowth(MemoryGrowthEvidence),
    /// `socket_leak`.
    SocketLeak(SocketLeakEvidence),
    /// `fd_leak`.
    FdLeak(FdLeakEvidence),
    /// `task_leak`.
    TaskLeak(TaskLeakEvidence),
    /// `crash_loop`.
    CrashLoop(CrashLoopEvidence),
    /// `service_down`.
    ServiceDown(ServiceDownEvidence),
    /// A kind this version does not know, or evidence that does not fit its
    /// kind's type: the JSON as sent.
    Other(serde_json::Value),
}

impl Evidence {
    /// Reads `value` as the evidence of `kind`.
    pub fn read(kind: &IncidentKind, value: serde_json::Value) -> Self {
        match kind {
            IncidentKind::RunawayLoop | IncidentKind::BlockedWorker => {
                typed(value, Evidence::StuckPoll)
            }
            IncidentKind::MemoryGrowth => typed(value, Evidence::MemoryGrowth),
            IncidentKind::SocketLeak => typed(value, Evidence::SocketLeak),
            IncidentKind::FdLeak => typed(value, Evidence::FdLeak),
            IncidentKind::TaskLeak => typed(value, Evidence::TaskLeak),
            IncidentKind::CrashLoop => typed(value, Evidence::CrashLoop),
            IncidentKind::ServiceDown => typed(value, Evidence::ServiceDown),
            IncidentKind::Other(_) => Evidence::Other(value),
        }
    }

    /// The evidence as a JSON value, as the API writes it: for showing the
    /// figures a typed view leaves out.
    pub fn to_value(&self) -> serde_json::Value {
        // Plain data with string keys: cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads `value` as `T`, or keeps it raw when it does not fit.
fn typed<T: DeserializeOwned>(value: serde_json::Value, wrap: fn(T) -> Evidence) -> Evidence {
    match T::deserialize(&value) {
        Ok(evidence) => wrap(evidence),
        Err(_) => Evidence::Other(value),
    }
}
