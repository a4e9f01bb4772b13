//! The sampler thread's side of heap profiling: reads the site table and
//! picks what goes into a snapshot.
//!
//! The probe does not name stacks: a site's stack goes out as raw return
//! addresses with the description of the objects they fall in, and the
//! collector names it (and trims the allocator's own frames). A site's stack
//! is sent when it first appears and then every [`RESEND_EVERY`] reports
//! (the collector keeps the last one it received), so a snapshot stays small.

use std::collections::HashMap;

use meshwatch_proto::v1::{HeapSite, Module, RawStack};

use super::table::{self, SiteReading};
use crate::stack::ModuleMap;

/// Sites sent per snapshot, those holding the most live bytes.
const TOP_SITES: usize = 32;
/// Reports between two sendings of a site's stack.
const RESEND_EVERY: u64 = 30;

/// What the heap profiler adds to a snapshot.
#[derive(Debug, Default)]
pub(crate) struct HeapReport {
    pub sites: Vec<HeapSite>,
    /// The objects holding the addresses of the stacks sent.
    pub modules: Vec<Module>,
    pub live_samples: u64,
    pub samples_dropped: u64,
}

/// Lives on the sampler thread.
#[derive(Debug, Default)]
pub(crate) struct HeapReporter {
    modules: ModuleMap,
    readings: Vec<SiteReading>,
    /// When each reported site's stack was last sent.
    last_sent: HashMap<u64, u64>,
    reports: u64,
}

impl HeapReporter {
    /// Reads the sites and returns the largest, with stacks where due.
    pub fn report(&mut self) -> HeapReport {
        self.reports += 1;
        let totals = table::read(&mut self.readings);
        self.readings
            .sort_unstable_by(|a, b| b.live_bytes.total_cmp(&a.live_bytes));
        self.readings.truncate(TOP_SITES);
        // Forget sites no longer reported: bounded by TOP_SITES.
        let readings = &self.readings;
        self.last_sent
            .retain(|id, _| readings.iter().any(|r| r.id == *id));

        let mut sites = Vec::with_capacity(self.readings.len());
        for reading in &self.readings {
            let last_sent = self.last_sent.entry(reading.id).or_insert(0);
            let due = *last_sent == 0 || self.reports - *last_sent >= RESEND_EVERY;
            if due {
                *last_sent = self.reports;
            }
            sites.push(HeapSite {
                id: reading.id,
                live_bytes: reading.live_bytes.max(0.0).round() as u64,
                live_objects: reading.live_objects.max(0.0).round() as u64,
                allocated_bytes_total: reading.allocated_bytes.max(0.0).round() as u64,
                live_samples: reading.live_samples,
                stack: due.then(|| RawStack {
                    addresses: reading.stack.addrs().iter().map(|&a| a as u64).collect(),
                }),
                ..HeapSite::default()
            });
        }
        // Most reports resend no stack, and then need no module either.
        let modules = if sites.iter().any(|s| s.stack.is_some()) {
            let addresses = sites
                .iter()
                .filter_map(|s| s.stack.as_ref())
                .flat_map(|s| s.addresses.iter().copied());
            self.modules.modules_for(addresses)
        } else {
            Vec::new()
        };
        HeapReport {
            sites,
            modules,
            live_samples: totals.live_samples,
            samples_dropped: totals.dropped,
        }
    }
}
