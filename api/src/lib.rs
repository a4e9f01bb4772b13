//! The types of the meshwatch collector's JSON API (`/api/v1/...`).
//!
//! The collector builds its answers from these types and the `meshwatch`
//! CLI and TUI read them back, so the two cannot drift apart the way hand
//! written JSON keys and hand written readers did: a field renamed here is
//! renamed on both sides, and the round-trip tests below check every kind
//! of incident. This is the role `console-api` plays for tokio-console.
//!
//! Conventions: field names are snake_case, times are `_ms` since the Unix
//! epoch, durations say their unit (`_ms`, `_seconds`), and a figure the
//! collector does not know is `null` rather than a misleading 0.
//!
//! Forward compatibility: a client built against an older version of this
//! crate reads what a newer collector sends. Unknown fields are ignored;
//! an incident of a kind it does not know reads as
//! [`IncidentKind::Other`] with [`Evidence::Other`] (its evidence as raw
//! JSON); an unknown instance state or severity reads as `Unknown`. Every
//! evidence type defaults its missing fields, so evidence from an older
//! collector reads too.

pub mod evidence;
mod incident;
pub mod own_code;
mod profile;
mod series;
mod services;
pub mod token;

pub use evidence::Evidence;
pub use incident::{Incident, IncidentKind, IncidentsView, Severity};
pub use profile::{CpuProfileView, ProfileStackView, ProfileTicket};
pub use series::{ErrorBody, InstanceSeries, Point, SeriesView};
pub use services::{
    AgeBucketView, Frame, Headline, HeapSiteView, InstanceState, InstanceView, NamedCount,
    ProbeView, RuntimeView, ServicesView, SocketsView, ThreadCpu,
};

/// Now, in the API's time base: milliseconds since the Unix epoch by the
/// wall clock, the base the probes use too, so that series from both line
/// up. 0 on a clock set before 1970.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
