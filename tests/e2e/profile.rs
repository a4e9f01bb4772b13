//! `meshwatch profile --heap` on a real instrumented service: the pprof
//! file it writes decodes with pprof's own schema (the `pprof` crate's
//! generated types), names the service's allocating code, and comes with a
//! flame graph.

use std::io::Read;
use std::process::Command;

use meshwatch_e2e::{Collector, Service, bin_dir};
use pprof::protos::{Message, Profile};

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
    let run = Command::new(bin_dir().join("meshwatch"))
        .args([
            "profile",
            "heapy",
            "--heap",
            "--collector",
            &collector.http,
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("run meshwatch profile");
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

    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(out.path().join("profile.pb.gz")).unwrap())
        .read_to_end(&mut bytes)
        .expect("gzip");
    let profile = Profile::decode(bytes.as_slice()).expect("a pprof profile");
    let name = |i: i64| profile.string_table[usize::try_from(i).unwrap()].as_str();
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (name(t.ty), name(t.unit)))
        .collect();
    assert_eq!(
        types,
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
