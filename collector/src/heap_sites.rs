//! The history of each instance's sampled allocation sites, for telling a
//! site that keeps growing (a leak) from one that is merely large.
//!
//! Probes send the sites holding the most memory in every snapshot, with
//! their stacks only now and then; this store keeps, per instance and site,
//! the last stack received and a thinned history of the site's estimated
//! live bytes and bytes allocated. Memory is bounded by construction: at
//! most [`MAX_SITES`] sites per instance (the least recently reported go
//! first), [`MAX_POINTS`] points per site, [`MAX_FRAMES`] frames per stack,
//! and an instance's sites go when the registry forgets the instance.

use std::collections::{HashMap, VecDeque};

use meshwatch_proto::v1::{Frame, HeapSite};

/// Sites kept per instance: the probe sends 32 per snapshot.
pub const MAX_SITES: usize = 48;
/// Points kept per site.
pub const MAX_POINTS: usize = 48;
/// Frames kept per stack, innermost first.
pub const MAX_FRAMES: usize = 16;
/// Characters kept of a function name or file path: generic Rust names can
/// run to kilobytes.
const MAX_NAME: usize = 200;

/// One frame of an allocation site's stack: the API's frame.
pub use meshwatch_api::Frame as SiteFrame;

/// One point of a site's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SitePoint {
    /// When the probe sampled (ms since the Unix epoch).
    pub t_ms: i64,
    /// Estimated bytes live at the site.
    pub live_bytes: f64,
    /// Estimated bytes allocated at the site since the process started.
    pub allocated_bytes_total: f64,
}

/// What is known about one allocation site of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteHistory {
    /// The probe's id for the site (a hash of its addresses).
    pub id: u64,
    /// The last stack the probe sent, innermost first; empty until one came.
    pub frames: Vec<SiteFrame>,
    /// Live and allocated bytes over time, oldest first, thinned.
    pub points: VecDeque<SitePoint>,
    /// Estimated live allocations at the last report.
    pub live_objects: u64,
    /// Sampled allocations alive at the last report.
    pub live_samples: u32,
    /// When the site was last reported.
    pub last_seen_ms: i64,
}

impl SiteHistory {
    /// The first frame that is the service's own code rather than the
    /// standard library's or a dependency's: the name a person looks for.
    pub fn own_function(&self) -> Option<&str> {
        self.frames
            .iter()
            .find(|f| meshwatch_api::own_code::is_own_code(&f.function, &f.file))
            .or(self.frames.first())
            .map(|f| f.function.as_str())
    }

    /// Estimated bytes live at the site at its last report.
    pub fn live_bytes(&self) -> f64 {
        self.points.back().map_or(0.0, |p| p.live_bytes)
    }
}

/// Frames searched for the allocator's own, among the innermost.
const ALLOCATOR_FRAMES_SEARCH: usize = 16;

/// A site's named stack (innermost first, as captured inside the
/// allocator) without the frames of the unwinder, the probe and the
/// allocator, so its first frame is the code that asked for memory (or the
/// container that grew for it).
///
/// The boundary is the last of the innermost frames that is the profiler's
/// or the global allocator's entry point (`__rust_alloc` and kin), plus the
/// `alloc::alloc` functions right above it; deeper frames are the caller's,
/// whatever their names.
pub(crate) fn allocating_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
    const ENTRY: &[&str] = &[
        "meshwatch_probe::heap::",
        "meshwatch_probe::alloc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rdl_",
        "__rg_",
    ];
    const WRAPPERS: &[&str] = &["alloc::alloc::", "<alloc::alloc::Global"];
    let matches = |f: &Frame, marks: &[&str]| marks.iter().any(|m| f.function.contains(m));
    let mut skip = frames
        .iter()
        .take(ALLOCATOR_FRAMES_SEARCH)
        .rposition(|f| matches(f, ENTRY))
        .map_or(0, |i| i + 1);
    while frames.get(skip).is_some_and(|f| matches(f, WRAPPERS)) {
        skip += 1;
    }
    frames.drain(..skip.min(frames.len()));
    frames.truncate(MAX_FRAMES);
    frames
}

/// Every instance's site histories.
#[derive(Debug)]
pub struct HeapSiteStore {
    min_spacing_ms: i64,
    by_instance: HashMap<String, HashMap<u64, SiteHistory>>,
}

impl HeapSiteStore {
    /// A store keeping a point per site at most every `min_spacing_ms`.
    pub fn new(min_spacing_ms: i64) -> Self {
        Self {
            min_spacing_ms: min_spacing_ms.max(0),
            by_instance: HashMap::new(),
        }
    }

    /// Records the sites of one snapshot taken at `t_ms`.
    pub fn record(&mut self, instance_id: &str, t_ms: i64, sites: &[HeapSite]) {
        if sites.is_empty() && !self.by_instance.contains_key(instance_id) {
            return;
        }
        let histories = self.by_instance.entry(instance_id.to_owned()).or_default();
        for site in sites {
            if !histories.contains_key(&site.id) && histories.len() >= MAX_SITES {
                let stalest = histories
                    .values()
                    .min_by_key(|h| h.last_seen_ms)
                    .map(|h| h.id);
                if let Some(stalest) = stalest {
                    histories.remove(&stalest);
                }
            }
            let history = histories.entry(site.id).or_insert_with(|| SiteHistory {
                id: site.id,
                frames: Vec::new(),
                points: VecDeque::new(),
                live_objects: 0,
                live_samples: 0,
                last_seen_ms: t_ms,
            });
            // Frames the naming thread could not name in time (module and
            // offset only) never replace names the site already has.
            let unnamed = site
                .frames
                .iter()
                .all(|f| crate::naming::is_unnamed(&f.function));
            let named_before = history
                .frames
                .iter()
                .any(|f| !crate::naming::is_unnamed(&f.function));
            let no_better = site.frames.is_empty() || (unnamed && named_before);
            if !no_better {
                history.frames = site
                    .frames
                    .iter()
                    .take(MAX_FRAMES)
                    .map(|f| SiteFrame {
                        function: truncate(&f.function),
                        file: truncate(&f.file),
                        line: f.line,
                    })
                    .collect();
            }
            history.live_objects = site.live_objects;
            history.live_samples = site.live_samples;
            history.last_seen_ms = t_ms;
            let due = history
                .points
                .back()
                .is_none_or(|p| t_ms - p.t_ms >= self.min_spacing_ms);
            if due {
                if history.points.len() >= MAX_POINTS {
                    history.points.pop_front();
                }
                history.points.push_back(SitePoint {
                    t_ms,
                    live_bytes: site.live_bytes as f64,
                    allocated_bytes_total: site.allocated_bytes_total as f64,
                });
            }
        }
    }

    /// The sites of one instance, in no particular order.
    pub fn sites(&self, instance_id: &str) -> impl Iterator<Item = &SiteHistory> {
        self.by_instance
            .get(instance_id)
            .into_iter()
            .flat_map(HashMap::values)
    }

    /// Forgets an instance's sites, when the registry forgets the instance.
    pub fn remove(&mut self, instance_id: &str) {
        self.by_instance.remove(instance_id);
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_NAME) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trims_the_allocator_frames_only() {
        let frames = [
            "backtrace::backtrace::trace_unsynchronized",
            "meshwatch_probe::heap::capture::capture",
            "<meshwatch_probe::alloc::TrackingAllocator<A> as core::alloc::global::GlobalAlloc>::alloc",
            "__rustc::__rust_alloc",
            "alloc::alloc::alloc",
            "alloc::raw_vec::RawVec<T,A>::allocate_in",
            "my_service::cache::remember",
            "alloc::alloc::exchange_malloc_in_a_caller_far_away",
        ]
        .map(|function| Frame {
            function: function.to_owned(),
            ..Frame::default()
        });
        let names: Vec<String> = allocating_frames(frames.to_vec())
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert_eq!(names[0], "alloc::raw_vec::RawVec<T,A>::allocate_in");
        assert_eq!(names[1], "my_service::cache::remember");
        assert_eq!(names.len(), 3);
    }

    fn site(id: u64, live: u64, with_frames: bool) -> HeapSite {
        HeapSite {
            id,
            stack: None,
            live_bytes: live,
            live_objects: 1,
            allocated_bytes_total: live * 2,
            live_samples: 1,
            frames: if with_frames {
                vec![Frame {
                    function: "x".repeat(500),
                    file: "src/lib.rs".to_owned(),
                    line: 7,
                    address: 1,
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn thins_points_keeps_frames_and_bounds_everything() {
        let mut store = HeapSiteStore::new(1000);
        store.record("i", 0, &[site(1, 10, true)]);
        store.record("i", 500, &[site(1, 20, false)]);
        store.record("i", 1000, &[site(1, 30, false)]);
        let history = store.sites("i").next().unwrap();
        let lives: Vec<f64> = history.points.iter().map(|p| p.live_bytes).collect();
        assert_eq!(lives, vec![10.0, 30.0]);
        assert_eq!(history.frames.len(), 1, "frames kept when not resent");
        assert_eq!(history.frames[0].function.chars().count(), MAX_NAME + 1);
        assert_eq!(history.last_seen_ms, 1000);

        for t in 0..(MAX_POINTS as i64 + 10) {
            store.record("i", 2000 + t * 1000, &[site(1, 1, false)]);
        }
        assert_eq!(store.sites("i").next().unwrap().points.len(), MAX_POINTS);

        for id in 0..(MAX_SITES as u64 + 5) {
            store.record("i", 100_000 + id as i64, &[site(100 + id, 1, false)]);
        }
        assert_eq!(store.sites("i").count(), MAX_SITES);
        assert!(
            store.sites("i").all(|h| h.id != 1),
            "the stalest went first"
        );
        store.remove("i");
        assert_eq!(store.sites("i").count(), 0);
    }
}
