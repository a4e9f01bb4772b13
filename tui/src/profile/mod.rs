//! `meshwatch profile`: an instance's profile in pprof's format, written
//! where people's tools open it, with a flame graph and the top functions.
//!
//! CPU profiles (the default) are taken on demand: the collector asks the
//! instance's probe, over its connection, to sample the stacks of its
//! running threads for `--seconds` at `--hz` ([`cpu`]). Heap profiles
//! (`--heap`) come from what the collector already holds: the sampled live
//! allocation sites each probe sends with its snapshots ([`heap`]).

mod cpu;
mod heap;
mod pprof;
pub mod top;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meshwatch_api::{InstanceState, InstanceView};

use crate::client::ApiClient;
use crate::evidence::Frame;

pub use cpu::{cpu_time, take_cpu_profile};

/// Functions listed on the terminal, by weight.
const TOP: usize = 10;

/// Options of `meshwatch profile`.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The service to profile.
    pub service: String,
    /// The instance (its id, or the start of it); default: the live
    /// instance using the most CPU (with --heap: holding the most sampled
    /// heap).
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// How long to sample the CPU, in seconds (1 to 60).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub seconds: u64,
    /// How often to sample each running thread, per second (1 to 1000).
    #[arg(long, value_name = "F", default_value_t = 99, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub hz: u32,
    /// Profile the heap instead: the sampled live allocation sites, as a
    /// pprof heap profile (inuse_space and inuse_objects).
    #[arg(long, conflicts_with_all = ["seconds", "hz"])]
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
/// instance, cannot get the profile, or the files cannot be written.
pub fn run(client: &ApiClient, args: &ProfileArgs) -> anyhow::Result<()> {
    let view = client.services()?;
    if args.heap {
        let instance = pick(&view.services, args, client.base(), heap::live_bytes)?;
        return heap::run(instance, &args.out);
    }
    let instance = pick(&view.services, args, client.base(), |i| {
        i.headline
            .as_ref()
            .and_then(|h| h.cpu_percent)
            .unwrap_or(0.0)
    })?;
    eprintln!(
        "profiling the CPU of {} instance {} for {} s at {} Hz...",
        instance.service,
        short(&instance.instance_id),
        args.seconds,
        args.hz
    );
    let terminal = std::io::stderr().is_terminal();
    let profile = take_cpu_profile(
        client,
        &instance.instance_id,
        args.seconds,
        args.hz,
        |waited| {
            if terminal && waited < args.seconds {
                eprint!("\rsampling: {waited} of {} s", args.seconds);
            } else if terminal {
                eprint!("\rthe collector is naming the stacks ({waited} s)   ");
            }
        },
    )?;
    if terminal {
        eprintln!();
    }
    profile.write(&args.out)?;
    print!("{}", profile.summary());
    print_written(&args.out);
    Ok(())
}

/// The instance asked for, or the live one with the highest `weight`.
fn pick<'a>(
    instances: &'a [InstanceView],
    args: &ProfileArgs,
    base: &str,
    weight: impl Fn(&InstanceView) -> f64,
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
        .max_by(|a, b| weight(a).total_cmp(&weight(b)))
        .with_context(|| format!("service {} has no live instance to profile", args.service))
}

/// The first 8 characters of an instance id, as the TUI shows it.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Writes a profile's two files into `out`, created when missing:
/// `profile.pb.gz` and `flame.svg`, the flame graph of `stacks` (innermost
/// frame first, with weights counted in `count_name`).
fn write_files(
    out: &Path,
    pprof: &[u8],
    title: &str,
    count_name: &str,
    stacks: &[(Vec<Frame>, u64)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let pb = out.join("profile.pb.gz");
    std::fs::write(&pb, pprof).with_context(|| format!("cannot write {}", pb.display()))?;
    let svg = crate::report::flame::flame_graph(title, count_name, stacks)
        .context("cannot draw the flame graph")?;
    let flame = out.join("flame.svg");
    std::fs::write(&flame, svg).with_context(|| format!("cannot write {}", flame.display()))?;
    Ok(())
}

/// Says where the files are.
fn print_written(out: &Path) {
    println!(
        "wrote {} (go tool pprof, speedscope, Pyroscope)",
        out.join("profile.pb.gz").display()
    );
    println!("wrote {}", out.join("flame.svg").display());
}
