//! The heap profile shows the service's memory, not the probe's: the
//! probe's own threads (sampler, exporter, watchdog) are never
//! heap-sampled, even when every allocation of the service is. Its own test
//! binary, since it installs the tracking allocator as the global one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::Duration;

use meshwatch_probe::{Probe, TrackingAllocator};
use support::FakeCollectorConn;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Holds 64 KiB the test can find among the sites.
#[inline(never)]
fn hold_buffers_in_a_distinctively_named_function() -> Vec<Vec<u8>> {
    (0..64).map(|i| vec![i as u8; 1024]).collect()
}

/// The functions at `addresses` (leaf first, callers at return addresses).
fn names(addresses: &[u64]) -> Vec<String> {
    let mut names = Vec::new();
    for (i, &address) in addresses.iter().enumerate() {
        let at = if i == 0 { address } else { address - 1 };
        backtrace::resolve(at as *mut std::ffi::c_void, |symbol| {
            if let Some(name) = symbol.name() {
                names.push(format!("{name:#}"));
            }
        });
    }
    names
}

#[test]
fn the_probes_own_threads_are_not_heap_sampled() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Every allocation sampled.
    let probe = Probe::builder()
        .service("guest")
        .collector(listener.local_addr().unwrap().to_string())
        .interval(Duration::from_millis(50))
        .heap_sample_interval(1)
        .start()
        .unwrap();
    // Past the megabyte after which a thread that allocated while sampling
    // was off looks at the sampling rate again.
    for _ in 0..32 {
        drop(std::hint::black_box(vec![0u8; 64 * 1024]));
    }
    let held = hold_buffers_in_a_distinctively_named_function();
    let (mut conn, _) = FakeCollectorConn::accept_hello(&listener);
    conn.welcome();

    // The probe's threads have sent, sampled and watched for a while.
    let mut functions = BTreeSet::new();
    for _ in 0..20 {
        let snapshot = conn.next_snapshot();
        for stack in snapshot.heap_sites.iter().filter_map(|s| s.stack.as_ref()) {
            functions.extend(names(&stack.addresses));
        }
    }
    drop(held);
    probe.shutdown();
    assert!(
        functions
            .iter()
            .any(|f| f.contains("hold_buffers_in_a_distinctively_named_function")),
        "the service's own allocation is a site: {functions:#?}"
    );
    let probes_own: Vec<&String> = functions
        .iter()
        .filter(|f| {
            ["sampler", "exporter", "watchdog", "outbox"]
                .iter()
                .any(|module| f.contains(&format!("meshwatch_probe::{module}::")))
        })
        .collect();
    assert!(probes_own.is_empty(), "{probes_own:#?}");
}
