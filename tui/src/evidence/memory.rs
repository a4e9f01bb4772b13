//! The view of `memory_growth`: the growing sites and the trend.

use meshwatch_api::evidence::{MemoryGrowthEvidence, SuspectSite};

use super::lifecycle::lives_table;
use super::{Field, Frame, Section, frames};
use crate::format;

/// An allocation site, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The site's function (or the innermost frame of its stack).
    pub label: String,
    /// Its figures (live bytes, growth, counts), formatted.
    pub figures: Vec<Field>,
    /// Its stack, innermost first.
    pub frames: Vec<Frame>,
    /// Live bytes, for weighing the site in a flame graph.
    pub live_bytes: u64,
}

impl From<&SuspectSite> for Site {
    fn from(site: &SuspectSite) -> Self {
        let frames = frames(&site.frames);
        let label = site
            .function
            .clone()
            .or_else(|| frames.first().map(|f| f.function.clone()))
            .unwrap_or_else(|| format!("site {}", site.site));
        let mut figures = vec![
            field("live", format::bytes(site.live_bytes)),
            field(
                "growth",
                format!("{}/h", format::bytes_change(site.growth_bytes_per_hour)),
            ),
            field("objects", site.live_objects.to_string()),
            field("samples", site.live_samples.to_string()),
        ];
        if let Some(rate) = site.allocated_bytes_per_second {
            figures.push(field(
                "allocated",
                format!("{}/s", format::bytes(rate.max(0.0).round() as u64)),
            ));
        }
        if !site.growing {
            figures.push(field("growing", "no".to_owned()));
        }
        Site {
            label,
            figures,
            frames,
            live_bytes: site.live_bytes,
        }
    }
}

/// What the detector judged, in words: the heap the probe's allocator
/// tracks, or the resident memory the kernel counts.
fn judged_series(series: &str) -> String {
    match series {
        "heap_live_bytes" => "the heap (bytes live in the probe's allocator)".to_owned(),
        "rss_bytes" => "resident memory (RSS)".to_owned(),
        other => other.to_owned(),
    }
}

fn field(name: &str, value: String) -> Field {
    Field::new(name, value)
}

/// The evidence of `memory_growth`, as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEvidence {
    /// The sites, those that grew first.
    pub sites: Vec<Site>,
    /// The detector's slope of the judged series in bytes per millisecond,
    /// for drawing its line; `None` when it sent no trend.
    pub slope_bytes_per_ms: Option<f64>,
    evidence: MemoryGrowthEvidence,
}

impl From<&MemoryGrowthEvidence> for MemoryEvidence {
    fn from(evidence: &MemoryGrowthEvidence) -> Self {
        Self {
            sites: evidence.suspects.iter().map(Site::from).collect(),
            slope_bytes_per_ms: evidence
                .judged_trend()
                .map(|t| t.slope_bytes_per_hour / 3_600_000.0),
            evidence: evidence.clone(),
        }
    }
}

impl MemoryEvidence {
    /// How much history the detector judged when it opened the incident.
    pub fn window_ms(&self) -> i64 {
        self.evidence.window_seconds.saturating_mul(1000)
    }

    /// The trend's figures and the service's instances: what the sites
    /// leave out.
    pub(super) fn rest(&self, now_ms: i64) -> Vec<Section> {
        let e = &self.evidence;
        let mut fields = vec![
            field("judged", judged_series(&e.series)),
            field(
                "growth",
                format!("{}/h", format::bytes_change(e.growth_bytes_per_hour)),
            ),
            field(
                "relative growth",
                format!("{:.1}%/h", e.relative_growth_per_hour * 100.0),
            ),
        ];
        if let Some(trend) = e.judged_trend() {
            fields.push(field(
                "recent growth",
                format!(
                    "{}/h",
                    format::bytes_change(trend.recent_slope_bytes_per_hour)
                ),
            ));
            fields.push(field(
                "rising pairs",
                format!(
                    "{} of {} (p = {:.3})",
                    trend.rising_pairs, trend.pairs, trend.p_value
                ),
            ));
        }
        fields.extend(e.rss_bytes.map(|b| field("RSS", format::bytes(b))));
        fields.extend(
            e.memory_limit_bytes
                .map(|b| field("memory limit", format::bytes(b))),
        );
        fields.extend(
            e.heap_limit_bytes
                .map(|b| field("heap limit", format::bytes(b))),
        );
        fields.extend(
            e.projected_time_to_limit_seconds
                .map(|s| field("limit reached in", format::duration_ms(s * 1000.0))),
        );
        fields.push(field(
            "window",
            format::duration_ms(e.window_seconds as f64 * 1000.0),
        ));
        let mut sections = vec![Section::Fields(fields)];
        if !e.instances.is_empty() {
            sections.push(lives_table("instances", &e.instances, now_ms));
        }
        sections
    }
}
