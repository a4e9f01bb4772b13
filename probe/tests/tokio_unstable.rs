//! The probe's task hooks exist only in builds with `--cfg tokio_unstable`,
//! which the ordinary `cargo test` does not use. This test builds and runs
//! the probe's own unit tests that way (in a target directory of their own,
//! so the ordinary build is not invalidated): the hooks' timing and spawn
//! site counting, and the watchdog flagging a short stuck poll exactly.

#![allow(clippy::expect_used)] // a test: a failed expectation is a failed test

use std::path::PathBuf;
use std::process::Command;

/// Runs `cargo test -p meshwatch-probe --lib` with `--cfg tokio_unstable`
/// and the given test arguments; returns its stdout.
fn cargo_test_unstable(target: &PathBuf, args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["test", "--quiet", "-p", "meshwatch-probe", "--lib", "--"])
        .args(args)
        .env("RUSTFLAGS", "--cfg tokio_unstable")
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the tokio_unstable build's tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn task_hooks_work_under_tokio_unstable() {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/tokio_unstable-HASH → target/tokio-unstable
    let target: PathBuf = exe
        .ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps")
        .join("tokio-unstable");
    let listed = cargo_test_unstable(&target, &["--list"]);
    for test in [
        "hooks::tests::times_polls_and_counts_alive_tasks_by_spawn_site",
        "watchdog::tests::task_hooks_time_a_short_stuck_poll_and_name_its_spawn_site",
    ] {
        assert!(
            listed.contains(test),
            "{test} is not in the tokio_unstable build:\n{listed}"
        );
    }
    cargo_test_unstable(&target, &["hooks", "watchdog"]);
}
