//! `mesh-service-untracked`: `mesh-service` without meshwatch's tracking
//! allocator, the baseline of the probe's memory benchmark
//! (`benches/benches/probe_memory.rs`). Run it with `MESHWATCH_DISABLE=1`
//! for a service with no meshwatch cost at all.

fn main() -> anyhow::Result<()> {
    meshwatch_examples::service::main()
}
