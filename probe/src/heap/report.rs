//! The sampler thread's side of heap profiling: reads the site table, names
//! the stacks, and picks what goes into a snapshot.
//!
//! Naming a stack reads debug info and allocates, so it happens here, never
//! on the allocation path, and once per site: names are cached per site for
//! as long as the site holds live samples, and the [`Symbolizer`] caches
//! per address underneath. A site's frames are sent when it first appears
//! and then every [`RESEND_EVERY`] reports (the collector keeps the last
//! ones it received), so a snapshot stays small.

use std::collections::HashMap;

use meshwatch_proto::v1::{Frame, HeapSite};

use super::table::{self, SiteReading};
use crate::stack::{AddressKind, Symbolizer};

/// Sites sent per snapshot, those holding the most live bytes.
const TOP_SITES: usize = 32;
/// Reports between two sendings of a site's frames.
const RESEND_EVERY: u64 = 30;
/// Frames sent per site, innermost first, once the allocator's are trimmed.
const MAX_FRAMES: usize = 24;
/// Among the innermost frames, how far to look for the allocator's own.
const ALLOCATOR_FRAMES_SEARCH: usize = 16;

/// What the heap profiler adds to a snapshot.
#[derive(Debug, Default)]
pub(crate) struct HeapReport {
    pub sites: Vec<HeapSite>,
    pub live_samples: u64,
    pub samples_dropped: u64,
}

/// Lives on the sampler thread.
#[derive(Debug, Default)]
pub(crate) struct HeapReporter {
    symbolizer: Symbolizer,
    readings: Vec<SiteReading>,
    named: HashMap<u64, NamedSite>,
    reports: u64,
}

#[derive(Debug)]
struct NamedSite {
    frames: Vec<Frame>,
    last_sent: u64,
}

impl HeapReporter {
    /// Reads the sites and returns the largest, with frames where due.
    pub fn report(&mut self) -> HeapReport {
        self.reports += 1;
        let totals = table::read(&mut self.readings);
        self.readings
            .sort_unstable_by(|a, b| b.live_bytes.total_cmp(&a.live_bytes));
        self.readings.truncate(TOP_SITES);
        // Forget the names of sites no longer reported: bounded by TOP_SITES.
        let readings = &self.readings;
        self.named
            .retain(|id, _| readings.iter().any(|r| r.id == *id));

        let mut sites = Vec::with_capacity(self.readings.len());
        for reading in &self.readings {
            let named = match self.named.entry(reading.id) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let addrs: Vec<u64> = reading.stack.addrs().iter().map(|&a| a as u64).collect();
                    let frames = self.symbolizer.stack(&addrs, AddressKind::Return);
                    entry.insert(NamedSite {
                        frames: trim_allocator_frames(frames),
                        last_sent: 0,
                    })
                }
            };
            let due = named.last_sent == 0 || self.reports - named.last_sent >= RESEND_EVERY;
            if due {
                named.last_sent = self.reports;
            }
            sites.push(HeapSite {
                id: reading.id,
                live_bytes: reading.live_bytes.max(0.0).round() as u64,
                live_objects: reading.live_objects.max(0.0).round() as u64,
                allocated_bytes_total: reading.allocated_bytes.max(0.0).round() as u64,
                live_samples: reading.live_samples,
                frames: if due {
                    named.frames.clone()
                } else {
                    Vec::new()
                },
            });
        }
        self.symbolizer.release_if_idle();
        HeapReport {
            sites,
            live_samples: totals.live_samples,
            samples_dropped: totals.dropped,
        }
    }
}

/// Drops the innermost frames that belong to the unwinder, the profiler or
/// the allocator, so a site's first frame is the code that asked for
/// memory (or the container that grew for it), and keeps [`MAX_FRAMES`].
///
/// The boundary is the last of the innermost frames that is the profiler's
/// or the global allocator's entry point (`__rust_alloc` and kin), plus the
/// `alloc::alloc` functions right above it; deeper frames are the caller's,
/// whatever their names.
fn trim_allocator_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
    const ENTRY: &[&str] = &[
        "meshwatch_probe::heap::sample",
        "meshwatch_probe::heap::on_alloc",
        "meshwatch_probe::heap::capture",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str) -> Frame {
        Frame {
            function: function.to_owned(),
            ..Frame::default()
        }
    }

    #[test]
    fn trims_the_allocator_frames_only() {
        let frames = vec![
            frame("backtrace::backtrace::trace_unsynchronized"),
            frame("meshwatch_probe::heap::capture::capture"),
            frame(
                "<meshwatch_probe::alloc::TrackingAllocator<A> as core::alloc::global::GlobalAlloc>::alloc",
            ),
            frame("__rustc::__rust_alloc"),
            frame("alloc::alloc::alloc"),
            frame("alloc::raw_vec::RawVec<T,A>::allocate_in"),
            frame("my_service::cache::remember"),
            frame("alloc::alloc::exchange_malloc_in_a_caller_far_away"),
        ];
        let names: Vec<String> = trim_allocator_frames(frames)
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert_eq!(names[0], "alloc::raw_vec::RawVec<T,A>::allocate_in");
        assert_eq!(names[1], "my_service::cache::remember");
        assert_eq!(names.len(), 3);
    }
}
