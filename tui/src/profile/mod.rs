//! `meshwatch profile`: an instance's profile in pprof's format, written
//! where people's tools open it, with a flame graph and the top functions.
//!
//! Heap profiles (`--heap`) come from what the collector already holds: the
//! sampled live allocation sites each probe sends with its snapshots (the
//! largest 32, their live bytes and objects already scaled from the samples
//! to estimates, each with its stack named by the collector).

mod pprof;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use meshwatch_api::{HeapSiteView, InstanceState, InstanceView};

use crate::client::ApiClient;
use crate::format;
use pprof::{HEAP_SAMPLE_TYPES, ProfileBuilder};

/// Functions listed on the terminal, by size.
const TOP: usize = 10;

/// Options of `meshwatch profile`.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The service to profile.
    pub service: String,
    /// The instance (its id, or the start of it); default: the live
    /// instance holding the most sampled heap.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Profile the heap: the sampled live allocation sites, as a pprof heap
    /// profile (inuse_space and inuse_objects).
    #[arg(long, required = true)]
    pub heap: bool,
    /// The directory to write profile.pb.gz and flame.svg into; created
    /// when missing.
    #[arg(long, value_name = "DIR", default_value = "meshwatch-profile")]
    pub out: PathBuf,
}

/// Writes the profile and prints where it is and its top functions.
///
/// # Errors
///
/// When the collector cannot be reached, knows no such service or
/// instance, holds no heap samples for it, or the files cannot be written.
pub fn run(client: &ApiClient, args: &ProfileArgs) -> anyhow::Result<()> {
    let view = client.services()?;
    let instance = pick(&view.services, args, client.base())?;
    if instance.heap_sites.is_empty() {
        bail!(
            "instance {} of {} has no sampled heap sites: its probe samples allocations only with meshwatch_probe::TrackingAllocator as the global allocator and MESHWATCH_HEAP_SAMPLE_BYTES not 0, and processes watched from outside or through OTLP have none",
            instance.instance_id,
            instance.service
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let profile = heap_profile(instance)?;
    let pb = args.out.join("profile.pb.gz");
    std::fs::write(&pb, profile).with_context(|| format!("cannot write {}", pb.display()))?;

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
    let svg = crate::report::flame::flame_graph(&title, "bytes", &stacks)
        .context("cannot draw the flame graph")?;
    let flame = args.out.join("flame.svg");
    std::fs::write(&flame, svg).with_context(|| format!("cannot write {}", flame.display()))?;

    println!(
        "heap profile of {} instance {} (pid {} on {}): {} sampled sites, {} live",
        instance.service,
        instance.instance_id,
        instance.pid,
        instance.host,
        instance.heap_sites.len(),
        format::bytes(instance.heap_sites.iter().map(|s| s.live_bytes).sum()),
    );
    print!("{}", top_functions(&instance.heap_sites));
    println!(
        "wrote {} (go tool pprof, speedscope, Pyroscope)",
        pb.display()
    );
    println!("wrote {}", flame.display());
    Ok(())
}

/// The instance asked for, or the live one holding the most heap.
fn pick<'a>(
    instances: &'a [InstanceView],
    args: &ProfileArgs,
    base: &str,
) -> anyhow::Result<&'a InstanceView> {
    let of_service: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.service == args.service)
        .collect();
    if of_service.is_empty() {
        let mut known: Vec<&str> = instances.iter().map(|i| i.service.as_str()).collect();
        known.sort_unstable();
        known.dedup();
        bail!(
            "the collector at {base} has no service {:?}; it knows {}",
            args.service,
            if known.is_empty() {
                "none yet".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    if let Some(wanted) = &args.instance {
        let matching: Vec<&&InstanceView> = of_service
            .iter()
            .filter(|i| i.instance_id.starts_with(wanted.as_str()))
            .collect();
        return match matching.as_slice() {
            [one] => Ok(one),
            [] => bail!(
                "service {} has no instance {wanted:?}; its instances are {}",
                args.service,
                of_service
                    .iter()
                    .map(|i| short(&i.instance_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => bail!(
                "{wanted:?} is the start of several instances of {}; give more of the id",
                args.service
            ),
        };
    }
    of_service
        .into_iter()
        .filter(|i| i.state != InstanceState::Down)
        .max_by_key(|i| i.heap_sites.iter().map(|s| s.live_bytes).sum::<u64>())
        .with_context(|| format!("service {} has no live instance to profile", args.service))
}

/// The first 8 characters of an instance id, as the TUI shows it.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The sites as a gzipped pprof heap profile.
fn heap_profile(instance: &InstanceView) -> anyhow::Result<Vec<u8>> {
    let mut builder = ProfileBuilder::new(&HEAP_SAMPLE_TYPES);
    for site in &instance.heap_sites {
        let objects = i64::try_from(site.live_objects).unwrap_or(i64::MAX);
        let bytes = i64::try_from(site.live_bytes).unwrap_or(i64::MAX);
        builder.sample(&site.frames, vec![objects, bytes]);
    }
    builder.comment(&format!(
        "meshwatch heap profile of {} instance {} (pid {} on {}): the live allocation sites its probe sampled, scaled to estimates",
        instance.service, instance.instance_id, instance.pid, instance.host
    ));
    builder.time_nanos(instance.last_seen_ms.saturating_mul(1_000_000));
    Ok(builder.gzipped()?)
}

/// The functions holding the most live bytes: self (the innermost frame of
/// a site) and total (anywhere on its stack, once per site).
fn top_functions(sites: &[HeapSiteView]) -> String {
    let mut own: HashMap<&str, u64> = HashMap::new();
    let mut total: HashMap<&str, u64> = HashMap::new();
    for site in sites {
        if let Some(leaf) = site.frames.first() {
            *own.entry(&leaf.function).or_default() += site.live_bytes;
        }
        let mut seen: Vec<&str> = site.frames.iter().map(|f| f.function.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        for function in seen {
            *total.entry(function).or_default() += site.live_bytes;
        }
    }
    let mut rows: Vec<(&str, u64, u64)> = total
        .iter()
        .map(|(&function, &total)| (function, own.get(function).copied().unwrap_or(0), total))
        .collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(b.0)));
    let mut out = format!("{:>10} {:>10}  function\n", "self", "total");
    for (function, own, total) in rows.into_iter().take(TOP) {
        out.push_str(&format!(
            "{:>10} {:>10}  {function}\n",
            format::bytes(own),
            format::bytes(total)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch_api::Frame;

    fn site(bytes: u64, functions: &[&str]) -> HeapSiteView {
        HeapSiteView {
            site: "1".to_owned(),
            function: None,
            live_bytes: bytes,
            live_objects: 1,
            frames: functions
                .iter()
                .map(|f| Frame {
                    function: (*f).to_owned(),
                    file: String::new(),
                    line: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn top_functions_count_self_at_the_leaf_and_total_once_per_site() {
        let table = top_functions(&[
            site(3000, &["alloc", "cache::insert", "main"]),
            site(1000, &["alloc", "cache::insert", "cache::insert", "main"]),
            site(500, &["parse", "main"]),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].ends_with("main"), "{table}");
        assert!(
            lines[1].contains("4.4 KiB"),
            "main totals every site: {table}"
        );
        let insert = lines.iter().find(|l| l.ends_with("cache::insert")).unwrap();
        assert!(
            insert.contains("3.9 KiB"),
            "recursion counted once: {table}"
        );
        let alloc = lines.iter().find(|l| l.ends_with("alloc")).unwrap();
        assert!(
            alloc.trim_start().starts_with("3.9 KiB"),
            "alloc's own: {table}"
        );
    }
}
