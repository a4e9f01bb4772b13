//! Every type the API writes reads back as written, and what a newer
//! collector may send reads without failing.

use meshwatch_api::evidence::{
    CountTrend, CrashLoopEvidence, Ending, FdLeakEvidence, HotFrame, InstanceLife,
    MemoryGrowthEvidence, MemoryTrend, ServiceDownEvidence, SignTest, SocketLeakEvidence,
    SpawnSite, StackSample, StuckPollEvidence, SuspectSite, TaskLeakEvidence, ThreadRef,
};
use meshwatch_api::{
    Evidence, Frame, Headline, HeapSiteView, Incident, IncidentKind, IncidentsView, InstanceState,
    InstanceView, ServicesView, Severity,
};
use serde_json::json;

fn frame(function: &str, line: u32) -> Frame {
    Frame {
        function: function.to_owned(),
        file: "src/main.rs".to_owned(),
        line,
    }
}

fn trend() -> CountTrend {
    CountTrend {
        per_minute: 12.5,
        recent_per_minute: 13.0,
        growth_over_window: 150.0,
        floor_now: 420.0,
        sign_test: SignTest {
            rising: 9,
            pairs: 10,
            p_value: 0.01,
        },
        span_seconds: 600.0,
    }
}

fn life(id: &str, ending: Option<Ending>) -> InstanceLife {
    InstanceLife {
        instance_id: id.to_owned(),
        started_at_ms: 1_000,
        last_seen_at_ms: 61_000,
        state: if ending.is_some() {
            InstanceState::Down
        } else {
            InstanceState::Up
        },
        ending,
        lived_seconds: 60,
        restarts: 2,
    }
}

/// One incident of every kind, each with evidence of its type.
fn one_of_each() -> Vec<Incident> {
    let stuck = StuckPollEvidence {
        thread: ThreadRef {
            tid: 42,
            name: "tokio-rt-worker".to_owned(),
        },
        runtime_id: 1,
        worker_index: 0,
        event_loop: true,
        cpu_percent: 99.5,
        stuck_for_ms: 1500,
        spawn_location: Some("src/main.rs:10:5".to_owned()),
        frames: vec![frame("spin", 3), frame("handler", 9)],
        hot_frames: vec![HotFrame {
            frame: frame("spin", 3),
            samples: 7,
        }],
        stack_samples: 8,
        samples: vec![StackSample {
            frames: vec![frame("spin", 3), frame("handler", 9)],
            count: 8,
        }],
        caveat: Some("one stack sample so far".to_owned()),
        key: "1-0-5".to_owned(),
        spans: vec!["request{method=GET path=/ id=1}".to_owned()],
    };
    let memory = MemoryGrowthEvidence {
        instance: "i1".to_owned(),
        window_seconds: 600,
        series: "heap_live_bytes".to_owned(),
        growth_bytes_per_hour: 3.6e9,
        relative_growth_per_hour: 0.5,
        heap: Some(MemoryTrend {
            slope_bytes_per_hour: 3.6e9,
            recent_slope_bytes_per_hour: 3.5e9,
            level_bytes: 7.2e9,
            rising_pairs: 9,
            pairs: 10,
            p_value: 0.01,
        }),
        rss: None,
        rss_bytes: Some(8 << 30),
        memory_limit_bytes: Some(16 << 30),
        heap_limit_bytes: Some(4 << 30),
        projected_time_to_limit_seconds: Some(7200.0),
        suspects: vec![SuspectSite {
            site: "00000000deadbeef".to_owned(),
            function: Some("cache::insert".to_owned()),
            growing: true,
            growth_bytes_per_hour: 3.6e9,
            live_bytes: 1 << 30,
            live_objects: 1000,
            live_samples: 2048,
            allocated_bytes_per_second: Some(1e6),
            frames: vec![frame("cache::insert", 20)],
        }],
        instances: vec![life("i0", Some(Ending::Disconnected)), life("i1", None)],
    };
    let kinds: Vec<(IncidentKind, Evidence)> = vec![
        (
            IncidentKind::RunawayLoop,
            Evidence::StuckPoll(stuck.clone()),
        ),
        (IncidentKind::BlockedWorker, Evidence::StuckPoll(stuck)),
        (IncidentKind::MemoryGrowth, Evidence::MemoryGrowth(memory)),
        (
            IncidentKind::SocketLeak,
            Evidence::SocketLeak(SocketLeakEvidence {
                instance: "i1".to_owned(),
                window_seconds: 600,
                tcp_close_wait: 420,
                close_wait_trend: trend(),
                tcp_established: Some(10),
                fds_open: Some(450),
            }),
        ),
        (
            IncidentKind::FdLeak,
            Evidence::FdLeak(FdLeakEvidence {
                instance: "i1".to_owned(),
                window_seconds: 600,
                fds_open: 900,
                fds_limit: Some(1024),
                projected_time_to_limit_seconds: Some(600.0),
                fds_trend: trend(),
                tcp_sockets: Some(12),
            }),
        ),
        (
            IncidentKind::TaskLeak,
            Evidence::TaskLeak(TaskLeakEvidence {
                instance: "i1".to_owned(),
                window_seconds: 600,
                tasks_alive: 5000,
                tasks_trend: trend(),
                cpu_percent: Some(3.0),
                spawn_sites: vec![SpawnSite {
                    location: "src/main.rs:40:9".to_owned(),
                    alive: 4990,
                }],
                spawn_site_note: None,
            }),
        ),
        (
            IncidentKind::CrashLoop,
            Evidence::CrashLoop(CrashLoopEvidence {
                window_seconds: 600,
                deaths: 4,
                restarts: 4,
                median_lifetime_seconds: 30.0,
                instance_up: false,
                lives: vec![life("i0", Some(Ending::Disconnected))],
            }),
        ),
        (
            IncidentKind::ServiceDown,
            Evidence::ServiceDown(ServiceDownEvidence {
                down_since_at_ms: 61_000,
                grace_seconds: 30,
                last_instance: Some(life("i0", Some(Ending::MissedHeartbeats))),
                instances_known: 3,
            }),
        ),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(n, (kind, evidence))| Incident {
            id: format!("inc-{n}"),
            kind,
            severity: Severity::Critical,
            service: "checkout".to_owned(),
            instance: Some("i1".to_owned()),
            opened_at_ms: 1_000,
            last_seen_at_ms: 2_000,
            resolved_at_ms: None,
            summary: "something is wrong".to_owned(),
            evidence,
        })
        .collect()
}

#[test]
fn every_kind_round_trips_with_its_typed_evidence() {
    let incidents = one_of_each();
    assert_eq!(incidents.len(), IncidentKind::KNOWN.len());
    for kind in IncidentKind::KNOWN {
        assert!(incidents.iter().any(|i| i.kind == kind), "{kind} missing");
    }
    let view = IncidentsView { incidents };
    let text = serde_json::to_string(&view).unwrap();
    let read: IncidentsView = serde_json::from_str(&text).unwrap();
    assert_eq!(read, view);
    for incident in &read.incidents {
        assert!(
            !matches!(incident.evidence, Evidence::Other(_)),
            "{} read as untyped",
            incident.kind
        );
    }
}

#[test]
fn evidence_is_written_as_the_kinds_object_alone() {
    let incident = &one_of_each()[0];
    let value = serde_json::to_value(incident).unwrap();
    assert_eq!(value["kind"], "runaway_loop");
    assert_eq!(value["evidence"]["stack_samples"], 8);
    assert_eq!(value["evidence"]["samples"][0]["count"], 8);
    assert_eq!(value["evidence"]["hot_frames"][0]["function"], "spin");
    assert_eq!(value["evidence"]["hot_frames"][0]["samples"], 7);
    let memory = serde_json::to_value(&one_of_each()[2]).unwrap();
    assert!(memory["evidence"]["suspects"][0]["live_bytes"].is_u64());
}

#[test]
fn an_unknown_kind_reads_as_a_generic_incident() {
    let text = json!({"incidents": [{
        "id": "x", "kind": "gpu_leak", "severity": "warning", "service": "s",
        "instance": null, "opened_at_ms": 1, "last_seen_at_ms": 2,
        "resolved_at_ms": null, "summary": "vram climbs",
        "evidence": {"vram_bytes": 5, "new_thing": [1, 2]}
    }]});
    let read: IncidentsView = serde_json::from_value(text.clone()).unwrap();
    let incident = &read.incidents[0];
    assert_eq!(incident.kind, IncidentKind::Other("gpu_leak".to_owned()));
    assert_eq!(
        incident.evidence,
        Evidence::Other(json!({"vram_bytes": 5, "new_thing": [1, 2]}))
    );
    // And it is written back as it came.
    assert_eq!(serde_json::to_value(&read).unwrap(), text);
}

#[test]
fn unknown_fields_states_and_severities_from_a_newer_collector_read() {
    let text = json!({
        "id": "x", "kind": "crash_loop", "severity": "apocalyptic", "service": "s",
        "opened_at_ms": 1, "last_seen_at_ms": 2, "summary": "dying",
        "added_later": true,
        "evidence": {"deaths": 3, "lives": [{"instance_id": "a", "state": "hibernating",
                      "ending": "oom_killed", "brand_new": 1}]}
    });
    let incident: Incident = serde_json::from_value(text).unwrap();
    assert_eq!(incident.severity, Severity::Unknown);
    let Evidence::CrashLoop(evidence) = incident.evidence else {
        panic!("typed evidence: {:?}", incident.evidence)
    };
    assert_eq!(evidence.deaths, 3);
    assert_eq!(evidence.lives[0].state, InstanceState::Unknown);
    assert_eq!(evidence.lives[0].ending, Some(Ending::Unknown));
    assert_eq!(evidence.window_seconds, 0, "missing fields default");
}

#[test]
fn an_incident_that_does_not_read_is_left_out_of_its_list() {
    let good = serde_json::to_value(&one_of_each()[0]).unwrap();
    let text = json!({"incidents": [{"kind": "runaway_loop", "severity": 3}, good]});
    let read: IncidentsView = serde_json::from_value(text).unwrap();
    assert_eq!(read.incidents.len(), 1);
    assert_eq!(read.incidents[0].id, "inc-0");
}

#[test]
fn evidence_that_does_not_fit_its_kind_is_kept_raw() {
    let text = json!({
        "id": "x", "kind": "runaway_loop", "severity": "critical", "service": "s",
        "opened_at_ms": 1, "last_seen_at_ms": 2, "summary": "spins",
        "evidence": {"frames": "not a list"}
    });
    let incident: Incident = serde_json::from_value(text).unwrap();
    assert_eq!(
        incident.evidence,
        Evidence::Other(json!({"frames": "not a list"}))
    );
}

#[test]
fn the_services_view_round_trips() {
    let view = ServicesView {
        services: vec![InstanceView {
            service: "checkout".to_owned(),
            instance_id: "i1".to_owned(),
            pid: 7,
            host: "h".to_owned(),
            runtime: "rust".to_owned(),
            probe_version: "0.1.0".to_owned(),
            watched_from_outside: false,
            state: InstanceState::Restarted,
            started_at_ms: 1,
            last_seen_ms: 2,
            uptime_seconds: 3,
            restarts: 1,
            interval_ms: 1000,
            headline: Some(Headline {
                cpu_percent: Some(12.5),
                rss_bytes: Some(1 << 20),
                virtual_bytes: None,
                heap_live_bytes: Some(1 << 19),
                threads: Some(9),
                tasks_alive: Some(10),
                workers: Some(2),
                global_queue_depth: Some(0),
                fds_open: Some(20),
                fds_limit: Some(1024),
                memory_limit_bytes: None,
                memory_limit_source: None,
                tcp_established: Some(3),
                tcp_close_wait: Some(0),
            }),
            runtimes: Vec::new(),
            threads: Vec::new(),
            probe: None,
            sockets: None,
            heap_sites: vec![HeapSiteView {
                site: "00000000deadbeef".to_owned(),
                function: Some("cache::insert".to_owned()),
                live_bytes: 4096,
                live_objects: 4,
                frames: vec![frame("cache::insert", 20)],
            }],
            open_incidents: one_of_each(),
            ending: None,
            tokio_console: Some("127.0.0.1:6669".to_owned()),
        }],
    };
    let text = serde_json::to_string(&view).unwrap();
    assert_eq!(serde_json::from_str::<ServicesView>(&text).unwrap(), view);
}
