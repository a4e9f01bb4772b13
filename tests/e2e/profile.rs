//! `meshwatch profile` on a real instrumented service: the pprof files it
//! writes (a CPU profile taken on demand by the probe, and `--heap`)
//! decode with pprof's own schema (the `pprof` crate's generated types),
//! name the service's code, and come with a flame graph.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use meshwatch_e2e::load::Load;
use std::time::Duration;

use meshwatch_e2e::{Collector, Service, bin_dir, wait_for};
use pprof::protos::{Message, Profile};

/// Runs `meshwatch profile ARGS --collector ... --out OUT`.
pub(crate) fn profile(collector: &Collector, args: &[&str], out: &Path) -> Output {
    Command::new(bin_dir().join("meshwatch"))
        .arg("profile")
        .args(args)
        .args(["--collector", &collector.http, "--out"])
        .arg(out)
        .output()
        .expect("run meshwatch profile")
}

/// The profile written into `out`, decoded.
pub(crate) fn decode(out: &Path) -> Profile {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(out.join("profile.pb.gz")).unwrap())
        .read_to_end(&mut bytes)
        .expect("gzip");
    Profile::decode(bytes.as_slice()).expect("a pprof profile")
}

/// The CPU time of each function in `profile`, wherever it is on a stack
/// (once per sample).
pub(crate) fn cpu_by_function(profile: &Profile) -> std::collections::HashMap<String, i64> {
    let mut totals = std::collections::HashMap::new();
    for sample in &profile.sample {
        let mut functions = functions_of(profile, sample);
        functions.sort_unstable();
        functions.dedup();
        for function in functions {
            *totals.entry(function).or_default() += sample.value[1];
        }
    }
    totals
}

/// The names of `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// What `profile`'s samples count, as (type, unit) pairs.
fn sample_types(profile: &Profile) -> Vec<(&str, &str)> {
    let name = |i: i64| profile.string_table[usize::try_from(i).unwrap()].as_str();
    profile
        .sample_type
        .iter()
        .map(|t| (name(t.ty), name(t.unit)))
        .collect()
}

/// The functions of `sample`'s stack, innermost first.
fn functions_of(profile: &Profile, sample: &pprof::protos::Sample) -> Vec<String> {
    let name = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
    sample
        .location_id
        .iter()
        .flat_map(|id| &profile.location.iter().find(|l| l.id == *id).unwrap().line)
        .map(|line| {
            let function = profile.function.iter().find(|f| f.id == line.function_id);
            name(function.unwrap().name)
        })
        .collect()
}

/// The CPU time of each function of the service's own code where it is
/// the innermost of the service's frames: where its own code spends the
/// time, whatever library it calls.
fn cpu_by_own_function(profile: &Profile) -> std::collections::HashMap<String, i64> {
    let mut totals = std::collections::HashMap::new();
    for sample in &profile.sample {
        if let Some(own) = functions_of(profile, sample)
            .into_iter()
            .find(|f| f.starts_with("meshwatch_examples::"))
        {
            *totals.entry(own).or_default() += sample.value[1];
        }
    }
    totals
}

#[test]
fn a_cpu_profile_taken_on_demand_names_the_hot_function_and_a_spinning_poll() {
    let collector = Collector::start();
    let service = Service::start_with(&collector, "hot", 2, &["--fault", "loop"], &[]);
    collector.wait_for_instance("hot connected", |i| i["service"] == "hot");
    let profiler = |pid| {
        thread_names(pid)
            .iter()
            .any(|n| n.starts_with("meshwatch-profi"))
    };
    assert!(
        !profiler(service.process.pid()),
        "no profiler before a profile"
    );

    // Busy: every request spins in the /work handler for 5 to 10 ms.
    let load = Load::start(&service.http, 2, 1);
    let out = tempfile::tempdir().unwrap();
    let run = profile(&collector, &["hot", "--seconds", "3"], out.path());
    let served = load.stop();
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "meshwatch profile failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(served.ok > 0, "{served:?}");
    assert!(printed.contains("CPU profile of hot"), "{printed}");
    assert!(
        printed.contains("self") && printed.contains("total"),
        "{printed}"
    );

    let cpu = decode(out.path());
    let name = |i: i64| cpu.string_table[usize::try_from(i).unwrap()].as_str();
    assert_eq!(
        sample_types(&cpu),
        [("samples", "count"), ("cpu", "nanoseconds")]
    );
    let period = cpu.period_type.as_ref().expect("a period type");
    assert_eq!((name(period.ty), name(period.unit)), ("cpu", "nanoseconds"));
    assert_eq!(cpu.period, 1_000_000_000 / 99);
    assert!(
        cpu.duration_nanos >= 3_000_000_000,
        "{}",
        cpu.duration_nanos
    );
    assert!(
        cpu.sample
            .iter()
            .all(|s| s.value[0] > 0 && s.label.iter().any(|l| name(l.key) == "thread")),
        "every sample is counted and names its thread"
    );
    let handler = "meshwatch_examples::service::work";
    let (hottest_own, _) = cpu_by_own_function(&cpu)
        .into_iter()
        .max_by_key(|(_, ns)| *ns)
        .expect("the service's own code is in the profile");
    assert!(
        hottest_own.starts_with(handler),
        "the busy handler is the service's hottest code: {hottest_own}"
    );
    let flame = std::fs::read_to_string(out.path().join("flame.svg")).unwrap();
    assert!(flame.contains("<svg") && flame.contains(handler));
    wait_for("the profiler thread gone", Duration::from_secs(5), || {
        (!profiler(service.process.pid())).then_some(())
    });

    // A worker spinning in a poll that never yields is profiled too: the
    // probe's watchdog samples the same thread meanwhile.
    service.get("/fault/loop?secs=8");
    let stuck = tempfile::tempdir().unwrap();
    let run = profile(
        &collector,
        &["hot", "--seconds", "2", "--hz", "200"],
        stuck.path(),
    );
    assert!(
        run.status.success(),
        "profile of a stuck worker: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let spinning = cpu_by_function(&decode(stuck.path()));
    assert!(
        spinning.keys().any(|f| f.contains("loop_parser")),
        "the spinning parser is named: {:?}",
        spinning
            .keys()
            .filter(|f| f.contains("meshwatch_examples"))
            .collect::<Vec<_>>()
    );

    // An instance that is not there is an error naming the ones that are.
    let missing = profile(&collector, &["hot", "--instance", "nope"], out.path());
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no instance"));
}

#[test]
fn a_heap_profile_of_a_busy_service_opens_in_pprofs_schema_and_names_its_code() {
    let collector = Collector::start();
    let _service = Service::start_with(
        &collector,
        "heapy",
        1,
        &["--sessions-per-sec", "200"],
        &[("MESHWATCH_HEAP_SAMPLE_BYTES", "65536")],
    );
    collector.wait_for_instance("heap sites sampled", |i| {
        i["service"] == "heapy" && i["heap_sites"].as_array().is_some_and(|s| s.len() >= 2)
    });

    let out = tempfile::tempdir().unwrap();
    let run = profile(&collector, &["heapy", "--heap"], out.path());
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "meshwatch profile failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        printed.contains("self") && printed.contains("total"),
        "{printed}"
    );

    let profile = decode(out.path());
    let name = |i: i64| profile.string_table[usize::try_from(i).unwrap()].as_str();
    assert_eq!(
        sample_types(&profile),
        [("inuse_objects", "count"), ("inuse_space", "bytes")]
    );
    assert!(
        profile.sample.len() >= 2,
        "{} samples",
        profile.sample.len()
    );
    for sample in &profile.sample {
        assert!(sample.value[1] > 0, "live bytes in every sample");
        for id in &sample.location_id {
            assert!(
                profile.location.iter().any(|l| l.id == *id),
                "location {id} is defined"
            );
        }
    }
    let functions: Vec<&str> = profile.function.iter().map(|f| name(f.name)).collect();
    assert!(
        functions.iter().any(|f| f.contains("meshwatch_examples")),
        "the service's own code is named: {functions:?}"
    );
    let flame = std::fs::read_to_string(out.path().join("flame.svg")).unwrap();
    assert!(flame.contains("<svg") && flame.contains("meshwatch_examples"));

    // A service that does not exist is an error that says what exists.
    let missing = Command::new(bin_dir().join("meshwatch"))
        .args(["profile", "nope", "--heap", "--collector", &collector.http])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("heapy"),
        "lists the services it knows"
    );
}
