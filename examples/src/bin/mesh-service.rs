//! `mesh-service`: run one example service of the demo mesh.

#[global_allocator]
static ALLOC: meshwatch_probe::TrackingAllocator = meshwatch_probe::TrackingAllocator::system();

fn main() -> anyhow::Result<()> {
    meshwatch_examples::service::main()
}
