//! Stacks are named by the collector, not the service: a stripped copy of
//! `mesh-service` gets function, file and line from the debug info given
//! to the collector with `--debuginfo-dir` (looked up by build ID), and
//! without it its frames say module and offset, never nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshwatch_e2e::{Collector, Service, bin_dir};
use serde_json::Value;

/// Runs a binutils tool and insists it worked.
fn run(tool: &str, args: &[&str]) -> String {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {tool} (binutils): {err}"));
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The GNU build ID of an ELF file, as `readelf -n` prints it.
fn build_id(path: &Path) -> String {
    let notes = run("readelf", &["-n", &path.display().to_string()]);
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build ID in {}:\n{notes}", path.display()))
        .trim()
        .to_owned()
}

/// A stripped copy of `mesh-service` in `dir`, and a debug-info directory
/// holding its debug info under `.build-id/`, as distributions ship it.
fn stripped_service(dir: &Path) -> (PathBuf, PathBuf) {
    let binary = dir.join("mesh-service");
    std::fs::copy(bin_dir().join("mesh-service"), &binary).unwrap();
    let id = build_id(&binary);
    let debug_dir = dir.join("debug");
    let debug_file = debug_dir
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(debug_file.parent().unwrap()).unwrap();
    let (binary_arg, debug_arg) = (
        binary.display().to_string(),
        debug_file.display().to_string(),
    );
    run("objcopy", &["--only-keep-debug", &binary_arg, &debug_arg]);
    run("strip", &["--strip-all", &binary_arg]);
    assert_eq!(build_id(&binary), id, "strip keeps the build ID");
    (binary, debug_dir)
}

/// Runs the stripped service with the loop fault against `collector`,
/// triggers the loop, and returns the incident once its frames pass `done`.
fn loop_incident(
    collector: &Collector,
    binary: &Path,
    name: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Value {
    let service = Service::start_binary(
        collector,
        &binary.display().to_string(),
        name,
        2,
        &["--fault", "loop"],
        &[],
    );
    collector.wait_for_instance(&format!("{name} reporting"), |i| {
        i["service"] == name && i["headline"]["workers"] == 2
    });
    // Let the watchdog's census map both workers before the loop starts.
    std::thread::sleep(Duration::from_millis(500));
    service.get("/fault/loop?secs=8");
    collector.wait_for_incident(
        "a runaway_loop incident with its frames",
        Duration::from_secs(20),
        |i| {
            i["kind"] == "runaway_loop"
                && i["service"] == name
                && i["evidence"]["frames"]
                    .as_array()
                    .is_some_and(|frames| !frames.is_empty() && done(frames))
        },
    )
}

fn function(frame: &Value) -> &str {
    frame["function"].as_str().unwrap_or_default()
}

#[test]
fn a_stripped_binary_is_named_from_the_debuginfo_dir_by_build_id() {
    let dir = tempfile::tempdir().unwrap();
    let (binary, debug_dir) = stripped_service(dir.path());
    let collector =
        Collector::start_with(None, &["--debuginfo-dir", &debug_dir.display().to_string()]);
    let incident = loop_incident(&collector, &binary, "stripped-named", |frames| {
        frames.iter().any(|f| function(f).contains("parse_records"))
    });
    let frames = incident["evidence"]["frames"].as_array().unwrap();
    let parser = frames
        .iter()
        .find(|f| function(f).contains("parse_records"))
        .unwrap();
    assert!(
        parser["file"].as_str().unwrap().ends_with("loop_parser.rs"),
        "{parser:#}"
    );
    // Lines come from the debug info too. The sampled instruction itself
    // may be one the compiler attributes to no line (DWARF line 0), so
    // the check is on the service's frames as a whole: its callers' call
    // sites always have one.
    assert!(
        frames.iter().any(|f| f["file"]
            .as_str()
            .is_some_and(|file| file.contains("examples/src/"))
            && f["line"].as_u64().is_some_and(|line| line > 0)),
        "{incident:#}"
    );
    // The summary names the innermost of the service's own frames: the
    // parser, or the field reader it calls over and over.
    let summary = incident["summary"].as_str().unwrap();
    assert!(
        summary.contains("parse_records") || summary.contains("next_field"),
        "{incident:#}"
    );
}

#[test]
fn without_debug_info_frames_show_module_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (binary, _debug_dir) = stripped_service(dir.path());
    let collector = Collector::start();
    let incident = loop_incident(&collector, &binary, "stripped-bare", |frames| {
        frames
            .iter()
            .any(|f| function(f).starts_with("mesh-service+0x"))
    });
    let frames = incident["evidence"]["frames"].as_array().unwrap();
    assert!(
        frames.iter().all(|f| !function(f).is_empty()),
        "no frame is empty: {frames:#?}"
    );
    assert!(
        frames
            .iter()
            .all(|f| !function(f).contains("parse_records")),
        "a stripped binary has no name for the parser: {frames:#?}"
    );
}
