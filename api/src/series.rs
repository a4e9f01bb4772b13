//! `GET /api/v1/series` and the error body every endpoint shares.

use serde::{Deserialize, Serialize};

/// One point of a series: `(ms since the Unix epoch, value)`, written as a
/// two-element array to keep long series small.
pub type Point = (i64, f64);

/// `GET /api/v1/series?service=S&metric=M`: one metric of every instance
/// of a service (or of the one asked for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesView {
    /// The service asked for.
    pub service: String,
    /// The metric's name, e.g. `rss_bytes`.
    pub metric: String,
    /// One series per instance, ordered by their first point, so restarts
    /// read in order.
    pub series: Vec<InstanceSeries>,
    /// Set when the persistent history could not be read (its store failed,
    /// on a full disk say, and has not reopened yet): the points are then
    /// only the collector's in-memory recent past, and this says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_unavailable: Option<String>,
}

/// One instance's points of a metric, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSeries {
    /// The instance.
    pub instance_id: String,
    /// `(t_ms, value)`, oldest first.
    pub points: Vec<Point>,
}

/// The body of every error answer: one sentence for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and, where it helps, what to ask instead.
    pub error: String,
}
