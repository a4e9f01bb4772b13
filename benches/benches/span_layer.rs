//! `SpanLayer`'s cost per span enter and exit: ns per enter/exit pair of a
//! span with three fields under a `tracing_subscriber::registry()` alone
//! (the baseline every service with spans already pays), and with
//! `meshwatch_probe::SpanLayer` added; and ns per span created (its fields
//! formatted once) in each. The variants alternate in one run and medians
//! are quoted.
//!
//! Run with `cargo bench -p meshwatch-benches --bench span_layer`.
//! Settings: `ROUNDS` (default 15) rounds of `PAIRS` (default 1 000 000)
//! enter/exit pairs and `PAIRS / 10` spans created per variant.

#![allow(clippy::expect_used)] // a benchmark that cannot start has nothing to report

use std::hint::black_box;
use std::time::Instant;

use meshwatch_benches::{env_or, median};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;

/// Nanoseconds per enter/exit pair of one span, and per span created,
/// under `dispatch`.
fn ns_per_pair_and_span(dispatch: &Dispatch, pairs: u64) -> (f64, f64) {
    tracing::dispatcher::with_default(dispatch, || {
        let span = tracing::info_span!("request", method = "GET", path = "/checkout", id = 7u64);
        let started = Instant::now();
        for _ in 0..pairs {
            let entered = black_box(&span).enter();
            drop(black_box(entered));
        }
        let per_pair = started.elapsed().as_nanos() as f64 / pairs as f64;
        let spans = (pairs / 10).max(1);
        let started = Instant::now();
        for id in 0..spans {
            let span = tracing::info_span!("request", method = "GET", path = "/checkout", id);
            drop(black_box(span));
        }
        let per_span = started.elapsed().as_nanos() as f64 / spans as f64;
        (per_pair, per_span)
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing:
    // run one short round then, to check the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, pairs) = if full {
        (env_or("ROUNDS", 15), env_or("PAIRS", 1_000_000))
    } else {
        (1, 10_000)
    };
    let registry = Dispatch::new(tracing_subscriber::registry());
    let layered =
        Dispatch::new(tracing_subscriber::registry().with(meshwatch_probe::SpanLayer::new()));
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so drift does not favour one.
        let (a, b) = if round % 2 == 0 {
            let a = ns_per_pair_and_span(&registry, pairs);
            (a, ns_per_pair_and_span(&layered, pairs))
        } else {
            let b = ns_per_pair_and_span(&layered, pairs);
            (ns_per_pair_and_span(&registry, pairs), b)
        };
        base.push(a);
        with.push(b);
    }
    let med = |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        median(&v.iter().map(pick).collect::<Vec<_>>()).expect("at least one round")
    };
    let (base_pair, with_pair) = (med(&base, |r| r.0), med(&with, |r| r.0));
    let (base_span, with_span) = (med(&base, |r| r.1), med(&with, |r| r.1));
    println!(
        "span_layer: {rounds} rounds of {pairs} enter/exit pairs and {} spans created, medians",
        (pairs / 10).max(1)
    );
    println!("| | registry only | registry + SpanLayer | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| ns per enter/exit pair | {base_pair:.1} | {with_pair:.1} | {:.2} |",
        with_pair / base_pair
    );
    println!(
        "| ns per span created (3 fields) | {base_span:.1} | {with_span:.1} | {:.2} |",
        with_span / base_span
    );
}
