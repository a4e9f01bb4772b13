//! The tokio canary, run by `cargo test`: the watchdog's tests against the
//! oldest and the newest tokio the probe's manifest accepts
//! (`scripts/tokio-canary.sh`, which says why). It resolves tokio from the
//! registry in a scratch workspace, so it needs the registry, as the build
//! itself does.

#![allow(clippy::expect_used)] // a test: a failed expectation is a failed test

use std::path::Path;
use std::process::Command;

#[test]
fn the_stuck_poll_rule_holds_across_the_supported_tokio_range() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tokio-canary.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run scripts/tokio-canary.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the tokio canary failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout
            .matches("tokio-canary: the watchdog's tests against tokio")
            .count(),
        2,
        "the oldest and the newest: {stdout}"
    );
}
