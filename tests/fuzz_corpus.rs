//! Replays the fuzz targets' kept corpus (`fuzz/corpus/`) through the same
//! collector paths and properties on the stable toolchain, in every test
//! run: what the fuzzer once found interesting stays covered, and a fix for
//! a crash it found stays fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use meshwatch_collector::fuzzing::Harness;

/// The inputs kept for `target`, in a stable order.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn the_hello_corpus_is_served_without_a_panic() {
    let harness = Harness::for_target("replay-hello");
    for input in corpus("hello") {
        harness.connection(&input);
    }
}

#[test]
fn the_snapshot_corpus_reaches_the_registry_and_the_views_without_a_panic() {
    let mut harness = Harness::for_target("replay-snapshot");
    for input in corpus("snapshot_to_registry") {
        harness.admitted_probe(&input);
    }
}

#[test]
fn the_http_query_corpus_gets_documented_statuses() {
    let harness = Harness::for_target("replay-http");
    for input in corpus("http_query") {
        if let Ok(text) = std::str::from_utf8(&input) {
            harness.http_queries(text);
        }
    }
}

#[test]
fn the_otlp_metrics_corpus_gets_documented_statuses() {
    let mut harness = Harness::for_target("replay-otlp");
    for input in corpus("otlp_metrics") {
        harness.otlp_metrics(&input);
    }
}
