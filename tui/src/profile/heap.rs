//! Heap profiles: the sampled live allocation sites the collector holds
//! for an instance (the largest 32, their live bytes and objects already
//! scaled from the samples to estimates, each with its stack named by the
//! collector), as a pprof heap profile.

use std::path::Path;

use anyhow::bail;
use meshwatch_api::InstanceView;

use super::pprof::{HEAP_SAMPLE_TYPES, ProfileBuilder};
use super::top::{table, top_functions};
use super::{TOP, print_written, short, write_files};
use crate::format;

/// The live heap an instance's probe sampled, in bytes: how `--heap`
/// picks the instance to profile.
pub(super) fn live_bytes(instance: &InstanceView) -> f64 {
    instance
        .heap_sites
        .iter()
        .map(|s| s.live_bytes)
        .sum::<u64>() as f64
}

/// Writes `instance`'s heap profile into `out` and prints its summary.
pub(super) fn run(instance: &InstanceView, out: &Path) -> anyhow::Result<()> {
    if instance.heap_sites.is_empty() {
        bail!(
            "instance {} of {} has no sampled heap sites: its probe samples allocations only with meshwatch_probe::TrackingAllocator as the global allocator and MESHWATCH_HEAP_SAMPLE_BYTES not 0, and processes watched from outside or through OTLP have none",
            instance.instance_id,
            instance.service
        );
    }
    let stacks: Vec<(Vec<crate::evidence::Frame>, u64)> = instance
        .heap_sites
        .iter()
        .map(|site| {
            (
                site.frames.iter().map(Into::into).collect(),
                site.live_bytes,
            )
        })
        .collect();
    let title = format!(
        "Live heap of {} ({})",
        instance.service,
        short(&instance.instance_id)
    );
    write_files(out, &heap_profile(instance)?, &title, "bytes", &stacks)?;
    println!(
        "heap profile of {} instance {} (pid {} on {}): {} sampled sites, {} live",
        instance.service,
        instance.instance_id,
        instance.pid,
        instance.host,
        instance.heap_sites.len(),
        format::bytes(instance.heap_sites.iter().map(|s| s.live_bytes).sum()),
    );
    let rows = top_functions(
        instance
            .heap_sites
            .iter()
            .map(|site| (&site.frames, site.live_bytes)),
        TOP,
    );
    print!("{}", table(&rows, format::bytes));
    print_written(out);
    Ok(())
}

/// The sites as a gzipped pprof heap profile.
fn heap_profile(instance: &InstanceView) -> anyhow::Result<Vec<u8>> {
    let mut builder = ProfileBuilder::new(&HEAP_SAMPLE_TYPES);
    for site in &instance.heap_sites {
        let objects = i64::try_from(site.live_objects).unwrap_or(i64::MAX);
        let bytes = i64::try_from(site.live_bytes).unwrap_or(i64::MAX);
        builder.sample(&site.frames, vec![objects, bytes], &[]);
    }
    builder.comment(&format!(
        "meshwatch heap profile of {} instance {} (pid {} on {}): the live allocation sites its probe sampled, scaled to estimates",
        instance.service, instance.instance_id, instance.pid, instance.host
    ));
    builder.time_nanos(instance.last_seen_ms.saturating_mul(1_000_000));
    Ok(builder.gzipped()?)
}
