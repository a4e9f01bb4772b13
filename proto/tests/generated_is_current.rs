//! Regenerates the Rust types from `proto/meshwatch.proto` with a pure-Rust
//! protobuf compiler (`protox`, so no system `protoc` is needed) and fails when
//! the checked-in `src/gen/meshwatch.v1.rs` differs.
//!
//! After changing the schema, run
//! `MESHWATCH_UPDATE_PROTO=1 cargo test -p meshwatch-proto --test generated_is_current`
//! to rewrite the checked-in file, and commit both.

use std::path::Path;

#[test]
fn generated_code_matches_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let descriptors = protox::compile([root.join("proto/meshwatch.proto")], [root.join("proto")])
        .expect("schema compiles");
    let out_dir = tempfile::tempdir().expect("temp dir");
    prost_build::Config::new()
        .out_dir(out_dir.path())
        .compile_fds(descriptors)
        .expect("code generation succeeds");
    let fresh = std::fs::read_to_string(out_dir.path().join("meshwatch.v1.rs"))
        .expect("generated file exists");

    let checked_in_path = root.join("src/gen/meshwatch.v1.rs");
    if std::env::var_os("MESHWATCH_UPDATE_PROTO").is_some() {
        std::fs::write(&checked_in_path, &fresh).expect("write generated code");
        return;
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is stale; regenerate it with MESHWATCH_UPDATE_PROTO=1 cargo test -p meshwatch-proto --test generated_is_current",
        checked_in_path.display()
    );
}
