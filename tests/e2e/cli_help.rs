//! The `--help` of every binary, compared with the checked-in text in
//! `tests/cli/`, so that the documented flags cannot drift from the real
//! ones unnoticed. After changing a flag on purpose, rewrite the files with
//! `MESHWATCH_UPDATE_HELP=1 cargo test -p meshwatch-e2e --test e2e cli_help`.

use std::path::Path;
use std::process::Command;

use meshwatch_e2e::bin_dir;

const CASES: &[(&str, &[&str], &str)] = &[
    ("meshwatch", &["--help"], "meshwatch.txt"),
    ("meshwatch", &["status", "--help"], "meshwatch-status.txt"),
    ("meshwatch", &["demo", "--help"], "meshwatch-demo.txt"),
    ("meshwatch", &["report", "--help"], "meshwatch-report.txt"),
    ("meshwatch", &["profile", "--help"], "meshwatch-profile.txt"),
    (
        "meshwatch",
        &["backtest", "--help"],
        "meshwatch-backtest.txt",
    ),
    (
        "meshwatch-collector",
        &["--help"],
        "meshwatch-collector.txt",
    ),
    ("mesh-service", &["--help"], "mesh-service.txt"),
];

#[test]
fn help_texts_match_the_checked_in_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cli");
    let update = std::env::var_os("MESHWATCH_UPDATE_HELP").is_some();
    let mut stale = Vec::new();
    for (bin, args, file) in CASES {
        let output = Command::new(bin_dir().join(bin))
            .args(*args)
            // clap shows the values of flags' environment variables: the
            // help must not depend on the environment.
            .env_clear()
            .output()
            .unwrap();
        assert!(output.status.success(), "{bin} {args:?} failed");
        let help = String::from_utf8(output.stdout).unwrap();
        let path = dir.join(file);
        if update {
            std::fs::write(&path, &help).unwrap();
        } else if std::fs::read_to_string(&path).unwrap_or_default() != help {
            stale.push(format!("{bin} {}:\n{help}", args.join(" ")));
        }
    }
    assert!(
        stale.is_empty(),
        "help differs from tests/cli (rewrite with MESHWATCH_UPDATE_HELP=1):\n{}",
        stale.join("\n")
    );
}
