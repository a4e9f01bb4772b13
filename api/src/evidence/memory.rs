//! `memory_growth`: memory that keeps climbing.

use serde::{Deserialize, Serialize};

use super::InstanceLife;
use crate::Frame;

/// The evidence of memory growth: the trend of the series that grows (the
/// tracking allocator's live bytes when the service has it, else RSS), and
/// the allocation sites that grow with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryGrowthEvidence {
    /// The instance whose memory grows.
    pub instance: String,
    /// The window the trend was fitted over.
    pub window_seconds: i64,
    /// The series judged: `heap_live_bytes` or `rss_bytes`.
    pub series: String,
    /// The judged series' slope.
    pub growth_bytes_per_hour: f64,
    /// That slope over the series' level: 0.1 is 10 % an hour.
    pub relative_growth_per_hour: f64,
    /// The heap's trend, when the heap is the judged series.
    pub heap: Option<MemoryTrend>,
    /// RSS's trend, when known.
    pub rss: Option<MemoryTrend>,
    /// RSS now.
    pub rss_bytes: Option<u64>,
    /// The memory the process may use before it is killed.
    pub memory_limit_bytes: Option<u64>,
    /// The heap's own limit, when the runtime has one (V8's): a heap that
    /// reaches it fails there, whatever memory is left.
    pub heap_limit_bytes: Option<u64>,
    /// When the growth reaches the nearer of the two limits at this slope.
    pub projected_time_to_limit_seconds: Option<f64>,
    /// The allocation sites, those that grew over the window first.
    pub suspects: Vec<SuspectSite>,
    /// The service's instances over the window: a leak followed across
    /// restarts.
    pub instances: Vec<InstanceLife>,
}

impl MemoryGrowthEvidence {
    /// The trend of the judged series: what a chart's trend line is drawn
    /// from.
    pub fn judged_trend(&self) -> Option<&MemoryTrend> {
        match self.series.as_str() {
            "heap_live_bytes" => self.heap.as_ref(),
            _ => self.rss.as_ref(),
        }
    }
}

/// A fitted trend of a memory series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryTrend {
    /// Over the whole window.
    pub slope_bytes_per_hour: f64,
    /// Over its recent part: a leak that speeds up or stops shows here.
    pub recent_slope_bytes_per_hour: f64,
    /// The series' floor now, on the fitted line.
    pub level_bytes: f64,
    /// Of the pairs of successive floors compared, how many rose.
    pub rising_pairs: u64,
    /// Pairs compared.
    pub pairs: u64,
    /// The sign test's p-value: how likely this many rises are by chance.
    pub p_value: f64,
}

/// An allocation site from the heap profiler's samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SuspectSite {
    /// The probe's id for the site, in hex.
    pub site: String,
    /// The first function of the service's own code on its stack.
    pub function: Option<String>,
    /// Whether its live bytes grew over the window.
    pub growing: bool,
    /// Its live bytes' slope.
    pub growth_bytes_per_hour: f64,
    /// Estimated bytes live at the site now.
    pub live_bytes: u64,
    /// Estimated live allocations.
    pub live_objects: u64,
    /// Samples behind the estimates: few samples, rough estimates.
    pub live_samples: u32,
    /// Estimated bytes allocated per second at the site, when known.
    pub allocated_bytes_per_second: Option<f64>,
    /// Its stack, innermost first.
    pub frames: Vec<Frame>,
}
