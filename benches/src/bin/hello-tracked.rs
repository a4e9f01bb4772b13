//! `hello-tracked`: the `probe_cost` benchmark's hello-world server with
//! meshwatch's tracking allocator installed (variants probe, probe-heap-off
//! and alloc-only). Run as `hello-tracked bare|probe`.

#[global_allocator]
static ALLOC: meshwatch_probe::TrackingAllocator = meshwatch_probe::TrackingAllocator::system();

fn main() -> std::process::ExitCode {
    meshwatch_benches::hello::main()
}
