//! The tracking allocator's cost: ns per alloc/free pair of the system
//! allocator alone, wrapped without sampling, and wrapped with heap
//! sampling at the default mean (512 KiB), alternating the three in one
//! run and quoting medians.
//!
//! Run with `cargo bench -p meshwatch-benches --bench alloc`.
//! Settings: `ROUNDS` (default 15) rounds of `PAIRS` (default 2 000 000)
//! alloc/free pairs per variant.

#![allow(clippy::expect_used)] // a benchmark that cannot start has nothing to report

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

use meshwatch_benches::{env_or, median};
use meshwatch_probe::{Probe, TrackingAllocator};

/// Blocks allocated before being freed, so frees are not always of the
/// block just allocated.
const BATCH: usize = 64;
/// Sizes cycled through: mostly small, as in a service.
const SIZES: [usize; 10] = [16, 24, 32, 48, 64, 96, 128, 256, 1024, 4096];

/// Nanoseconds per alloc/free pair through `alloc`.
fn ns_per_pair(alloc: &impl GlobalAlloc, pairs: usize) -> f64 {
    let layouts: Vec<Layout> = SIZES
        .iter()
        .map(|&size| Layout::from_size_align(size, 8).expect("valid layout"))
        .collect();
    let mut ptrs = [std::ptr::null_mut::<u8>(); BATCH];
    let batches = (pairs / BATCH).max(1);
    let started = Instant::now();
    for batch in 0..batches {
        for (i, ptr) in ptrs.iter_mut().enumerate() {
            // SAFETY: non-zero layouts; each pointer is freed below with
            // the layout it was allocated with.
            *ptr = unsafe { alloc.alloc(layouts[(batch + i) % layouts.len()]) };
        }
        for (i, &ptr) in ptrs.iter().enumerate() {
            // SAFETY: see above.
            unsafe { alloc.dealloc(black_box(ptr), layouts[(batch + i) % layouts.len()]) };
        }
    }
    started.elapsed().as_nanos() as f64 / (batches * BATCH) as f64
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing:
    // run one short round then, to check the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, pairs) = if full {
        (env_or("ROUNDS", 15), env_or("PAIRS", 2_000_000))
    } else {
        (1, 10_000)
    };
    let (rounds, pairs) = (rounds as usize, pairs as usize);
    let tracking = TrackingAllocator::system();
    let (mut inner, mut unsampled, mut sampled) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        inner.push(ns_per_pair(&System, pairs));
        unsampled.push(ns_per_pair(&tracking, pairs));
        // A running probe switches heap sampling on at the default mean;
        // its collector is absent, so it only retries in the background.
        let probe = Probe::builder()
            .service("alloc-bench")
            .collector("127.0.0.1:9")
            .start()
            .expect("probe starts");
        sampled.push(ns_per_pair(&tracking, pairs));
        probe.shutdown();
        eprintln!(
            "round {}: system {:.2} ns, tracking {:.2} ns, tracking+sampling {:.2} ns",
            round + 1,
            inner[round],
            unsampled[round],
            sampled[round]
        );
    }
    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    let base = m(&inner);
    println!("alloc: {rounds} rounds of {pairs} alloc/free pairs, medians, ns per pair");
    println!("  system allocator          {base:.2}");
    println!(
        "  tracking, unsampled       {:.2} (+{:.2} ns, x{:.2})",
        m(&unsampled),
        m(&unsampled) - base,
        m(&unsampled) / base
    );
    println!(
        "  tracking, 512 KiB samples {:.2} (+{:.2} ns, x{:.2})",
        m(&sampled),
        m(&sampled) - base,
        m(&sampled) / base
    );
}
