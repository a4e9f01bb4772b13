//! `socket_leak`, `fd_leak` and `task_leak`: counts whose floor keeps rising.

use serde::{Deserialize, Serialize};

/// The fitted trend of a count's floor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CountTrend {
    /// Over the whole window.
    pub per_minute: f64,
    /// Over its recent part.
    pub recent_per_minute: f64,
    /// What the floor gained over the window.
    pub growth_over_window: f64,
    /// The floor now, on the fitted line.
    pub floor_now: f64,
    /// Whether the rise is more than chance.
    pub sign_test: SignTest,
    /// The time the points span.
    pub span_seconds: f64,
}

/// A sign test over successive floors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignTest {
    /// Pairs that rose.
    pub rising: u64,
    /// Pairs compared.
    pub pairs: u64,
    /// How likely this many rises are by chance.
    pub p_value: f64,
}

/// TCP connections left in CLOSE_WAIT: the peer hung up, the service never
/// closed its side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketLeakEvidence {
    /// The instance that leaks.
    pub instance: String,
    /// The window the trend was fitted over.
    pub window_seconds: i64,
    /// Sockets in CLOSE_WAIT now.
    pub tcp_close_wait: u64,
    /// Their trend.
    pub close_wait_trend: CountTrend,
    /// Connections in ESTABLISHED now, for scale.
    pub tcp_established: Option<u64>,
    /// Open file descriptors now.
    pub fds_open: Option<u64>,
}

/// File descriptors rising toward the process's limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FdLeakEvidence {
    /// The instance that leaks.
    pub instance: String,
    /// The window the trend was fitted over.
    pub window_seconds: i64,
    /// Open now.
    pub fds_open: u64,
    /// The soft limit; `None` when unlimited or unknown.
    pub fds_limit: Option<u64>,
    /// When the limit is reached at this slope.
    pub projected_time_to_limit_seconds: Option<f64>,
    /// Their trend.
    pub fds_trend: CountTrend,
    /// TCP sockets among them, when known: whether it is sockets that leak.
    pub tcp_sockets: Option<u64>,
}

/// Alive tasks rising while the load is flat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskLeakEvidence {
    /// The instance that leaks.
    pub instance: String,
    /// The window the trend was fitted over.
    pub window_seconds: i64,
    /// Alive now.
    pub tasks_alive: u64,
    /// Their trend.
    pub tasks_trend: CountTrend,
    /// The process's CPU now: flat load while tasks pile up.
    pub cpu_percent: Option<f64>,
    /// The spawn sites with most alive tasks, most first.
    pub spawn_sites: Vec<SpawnSite>,
    /// Why there are no spawn sites, when there are none.
    pub spawn_site_note: Option<String>,
}

/// Alive tasks spawned at one place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpawnSite {
    /// `file:line:column` of the spawn.
    pub location: String,
    /// Tasks spawned there and alive.
    pub alive: u64,
}
