//! `crash_loop` and `service_down`: instances that end.
//!
//! Absolute times in evidence end in `_at_ms`, durations in `_ms` or
//! `_seconds`, so that a generic reader can tell them apart by name.

use serde::{Deserialize, Serialize};

use crate::InstanceState;

/// One instance's life, as the registry saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceLife {
    /// The instance.
    pub instance_id: String,
    /// When its process started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// When the collector last heard from it.
    pub last_seen_at_ms: i64,
    /// Whether it is up now.
    pub state: InstanceState,
    /// How it ended; `None` while it runs.
    pub ending: Option<Ending>,
    /// From start to last heard of.
    pub lived_seconds: i64,
    /// Restarts of its service before it.
    pub restarts: u32,
}

impl InstanceLife {
    /// From start to last heard of, to the millisecond: `lived_seconds`
    /// rounds a life of 0.6 s down to none, and a crash loop's lives are
    /// often that short.
    pub fn lived_ms(&self) -> i64 {
        (self.last_seen_at_ms - self.started_at_ms).max(0)
    }
}

impl Default for InstanceLife {
    fn default() -> Self {
        Self {
            instance_id: String::new(),
            started_at_ms: 0,
            last_seen_at_ms: 0,
            state: InstanceState::Unknown,
            ending: None,
            lived_seconds: 0,
            restarts: 0,
        }
    }
}

/// How an instance ended: a stop or a death.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Its probe said goodbye: the process shut down on purpose.
    Stopped,
    /// Its connection closed without a goodbye: killed, crashed, or cut off.
    Disconnected,
    /// It went silent with its connection open: hung, or the network.
    MissedHeartbeats,
    /// An ending this client does not know, from a newer collector.
    #[serde(other)]
    Unknown,
}

impl Ending {
    /// Whether this ending is a death rather than a stop.
    pub fn is_death(self) -> bool {
        !matches!(self, Ending::Stopped)
    }

    /// A few words for people: `stopped cleanly`, `connection lost`, ...
    pub fn describe(self) -> &'static str {
        match self {
            Ending::Stopped => "stopped cleanly",
            Ending::Disconnected => "connection lost without a goodbye",
            Ending::MissedHeartbeats => "went silent (missed heartbeats)",
            Ending::Unknown => "ended",
        }
    }
}

/// A service whose instances keep dying.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrashLoopEvidence {
    /// The window deaths were counted over.
    pub window_seconds: i64,
    /// Deaths in the window (clean stops are not counted).
    pub deaths: u32,
    /// Restarts in the window.
    pub restarts: u32,
    /// How long an instance lived, the median.
    pub median_lifetime_seconds: f64,
    /// Whether an instance is up now.
    pub instance_up: bool,
    /// The instances of the window, oldest first.
    pub lives: Vec<InstanceLife>,
}

/// A service with no instance up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceDownEvidence {
    /// Since when no instance has been up (ms since the Unix epoch).
    pub down_since_at_ms: i64,
    /// How long an outage must last before it is an incident.
    pub grace_seconds: u64,
    /// The instance heard from last, and how it ended.
    pub last_instance: Option<InstanceLife>,
    /// The service's instances the collector knows.
    pub instances_known: u32,
}
