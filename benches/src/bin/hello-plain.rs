//! `hello-plain`: the `probe_cost` benchmark's hello-world server with the
//! system allocator (variants plain, tokio-metrics and console). Run as
//! `hello-plain bare|tokio-metrics|console`.

fn main() -> std::process::ExitCode {
    meshwatch_benches::hello::main()
}
