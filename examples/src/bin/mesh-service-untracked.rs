//! `mesh-service-untracked`: `mesh-service` without meshwatch's tracking
//! allocator, the baseline of the HTTP throughput benchmark
//! (`benches/benches/http_overhead.rs`). Run it with `MESHWATCH_DISABLE=1`
//! for a service with no meshwatch cost at all.

fn main() -> anyhow::Result<()> {
    meshwatch_examples::service::main()
}
