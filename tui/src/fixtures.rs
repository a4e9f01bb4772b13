//! Fixed data for the tests of the views and the report, built from the
//! API's types: what they hold has the shapes the collector sends.
#![allow(clippy::unwrap_used)]

use meshwatch_api::evidence::{
    CountTrend, HotFrame, InstanceLife, MemoryGrowthEvidence, MemoryTrend, SignTest,
    SocketLeakEvidence, StackSample, StuckPollEvidence, SuspectSite, ThreadRef,
};
use meshwatch_api::{
    AgeBucketView, Evidence, Frame, Headline, HeapSiteView, Incident, IncidentKind, InstanceSeries,
    InstanceState, InstanceView, NamedCount, ProbeView, RuntimeView, Severity, SocketsView,
    ThreadCpu,
};
use serde_json::json;

use crate::model::Instance;

/// The instant the fixtures are "now".
pub const NOW_MS: i64 = 1_700_000_600_000;

fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.to_owned(),
        file: file.to_owned(),
        line,
    }
}

fn incident(
    id: &str,
    kind: IncidentKind,
    service: &str,
    instance: &str,
    evidence: Evidence,
) -> Incident {
    Incident {
        id: id.to_owned(),
        kind,
        severity: Severity::Warning,
        service: service.to_owned(),
        instance: Some(instance.to_owned()),
        opened_at_ms: NOW_MS - 120_000,
        last_seen_at_ms: NOW_MS - 1_000,
        resolved_at_ms: None,
        summary: String::new(),
        evidence,
    }
}

/// A runaway loop on checkout, as the watchdog reports it.
pub fn runaway() -> Incident {
    let parse = frame(
        "mesh_service::faults::parse_header",
        "examples/src/faults.rs",
        57,
    );
    let handle = frame(
        "mesh_service::faults::handle_loop::{{closure}}",
        "examples/src/faults.rs",
        31,
    );
    let next = frame(
        "core::str::validations::next_code_point",
        "core/src/str/validations.rs",
        36,
    );
    let poll = frame(
        "tokio::runtime::task::core::Core<T,S>::poll",
        "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/core.rs",
        331,
    );
    let harness = frame(
        "tokio::runtime::task::harness::poll_future",
        "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/harness.rs",
        473,
    );
    let unwind = frame(
        "std::panicking::catch_unwind",
        "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/panicking.rs",
        544,
    );
    let evidence = StuckPollEvidence {
        thread: ThreadRef {
            tid: 4244,
            name: "tokio-rt-worker".to_owned(),
        },
        runtime_id: 0,
        worker_index: 1,
        event_loop: false,
        cpu_percent: 99.2,
        stuck_for_ms: 42_000,
        spawn_location: Some("examples/src/service.rs:88:5".to_owned()),
        frames: vec![
            next.clone(),
            parse.clone(),
            handle.clone(),
            poll.clone(),
            harness,
            unwind,
        ],
        hot_frames: vec![HotFrame {
            frame: parse.clone(),
            samples: 5,
        }],
        stack_samples: 8,
        samples: vec![
            StackSample {
                frames: vec![parse.clone(), handle.clone(), poll.clone()],
                count: 5,
            },
            StackSample {
                frames: vec![next, parse, handle, poll],
                count: 3,
            },
        ],
        caveat: None,
        key: "0-1-1".to_owned(),
        spans: vec![
            "request{method=POST path=/orders id=7f3a}".to_owned(),
            "parse_batch{bytes=31}".to_owned(),
        ],
    };
    Incident {
        severity: Severity::Critical,
        opened_at_ms: NOW_MS - 42_000,
        summary: "worker 1 of checkout has been stuck in one poll for 42.0s at 99% CPU".to_owned(),
        ..incident(
            "7",
            IncidentKind::RunawayLoop,
            "checkout",
            "c0ffee00aaaabbbbccccddddeeeeffff",
            Evidence::StuckPoll(evidence),
        )
    }
}

/// Memory climbing on inventory, as the growth detector reports it.
pub fn growth() -> Incident {
    let slope = 17_476.0 * 3600.0;
    let evidence = MemoryGrowthEvidence {
        instance: "1234567890abcdef1234567890abcdef".to_owned(),
        window_seconds: 300,
        series: "heap_live_bytes".to_owned(),
        growth_bytes_per_hour: slope,
        relative_growth_per_hour: 1.5,
        heap: Some(MemoryTrend {
            slope_bytes_per_hour: slope,
            recent_slope_bytes_per_hour: slope,
            level_bytes: 42.0 * 1048576.0,
            rising_pairs: 14,
            pairs: 15,
            p_value: 0.001,
        }),
        rss: None,
        rss_bytes: Some(96 << 20),
        memory_limit_bytes: Some(2 << 30),
        heap_limit_bytes: None,
        projected_time_to_limit_seconds: Some(7200.0),
        suspects: vec![
            SuspectSite {
                site: "614825e15975a783".to_owned(),
                function: Some("mesh_service::faults::SessionCache::insert".to_owned()),
                growing: true,
                growth_bytes_per_hour: 16_000.0 * 3600.0,
                live_bytes: 8 << 20,
                live_objects: 2048,
                live_samples: 16,
                allocated_bytes_per_second: Some(16_000.0),
                frames: vec![
                    frame("alloc::vec::Vec<T>::push", "alloc/src/vec/mod.rs", 1900),
                    frame(
                        "mesh_service::faults::SessionCache::insert",
                        "examples/src/faults.rs",
                        120,
                    ),
                ],
            },
            SuspectSite {
                site: "0badc0ffee000001".to_owned(),
                function: Some("hyper::proto::h1::Conn::read".to_owned()),
                live_bytes: 65_536,
                live_objects: 8,
                live_samples: 1,
                ..SuspectSite::default()
            },
        ],
        instances: vec![InstanceLife {
            instance_id: "1234567890abcdef1234567890abcdef".to_owned(),
            started_at_ms: NOW_MS - 300_000,
            last_seen_at_ms: NOW_MS - 500,
            state: InstanceState::Up,
            ending: None,
            lived_seconds: 299,
            restarts: 0,
        }],
    };
    Incident {
        summary: "inventory's heap grows 1.0 MiB/min; the limit is reached in about 2h".to_owned(),
        ..incident(
            "8",
            IncidentKind::MemoryGrowth,
            "inventory",
            "1234567890abcdef1234567890abcdef",
            Evidence::MemoryGrowth(evidence),
        )
    }
}

/// A socket leak: 120 sockets in CLOSE_WAIT, 24 more a minute.
pub fn socket_leak() -> Incident {
    let evidence = SocketLeakEvidence {
        instance: "fedcba9876543210fedcba9876543210".to_owned(),
        window_seconds: 300,
        tcp_close_wait: 120,
        close_wait_trend: CountTrend {
            per_minute: 24.0,
            recent_per_minute: 24.0,
            growth_over_window: 120.0,
            floor_now: 120.0,
            sign_test: SignTest {
                rising: 9,
                pairs: 10,
                p_value: 0.01,
            },
            span_seconds: 300.0,
        },
        tcp_established: Some(12),
        fds_open: Some(140),
    };
    Incident {
        opened_at_ms: NOW_MS - 300_000,
        last_seen_at_ms: NOW_MS - 2_000,
        resolved_at_ms: Some(NOW_MS - 2_000),
        summary: "gateway leaks sockets: 120 in CLOSE_WAIT, +24.0/min".to_owned(),
        ..incident(
            "9",
            IncidentKind::SocketLeak,
            "gateway",
            "fedcba9876543210fedcba9876543210",
            Evidence::SocketLeak(evidence),
        )
    }
}

/// A headline with these figures and the fixtures' usual others.
pub fn headline(cpu: f64, rss: u64, heap: u64, tasks: u64) -> Headline {
    Headline {
        cpu_percent: Some(cpu),
        rss_bytes: Some(rss),
        virtual_bytes: Some(1),
        heap_live_bytes: Some(heap),
        threads: Some(9),
        tasks_alive: Some(tasks),
        workers: Some(2),
        global_queue_depth: Some(0),
        fds_open: Some(17),
        fds_limit: Some(1024),
        memory_limit_bytes: Some(2 << 30),
        memory_limit_source: Some("host".to_owned()),
        tcp_established: None,
        tcp_close_wait: None,
    }
}

/// An instance of `service` with the fixtures' usual figures and no headline.
pub fn view(
    service: &str,
    id: &str,
    state: InstanceState,
    incidents: Vec<Incident>,
) -> InstanceView {
    let thread = |tid, name: &str, cpu| ThreadCpu {
        tid,
        name: name.to_owned(),
        cpu_percent: Some(cpu),
    };
    InstanceView {
        service: service.to_owned(),
        instance_id: id.to_owned(),
        pid: 4242,
        host: "demo-host".to_owned(),
        runtime: "rust".to_owned(),
        probe_version: "0.1.0".to_owned(),
        watched_from_outside: false,
        state,
        started_at_ms: NOW_MS - 300_000,
        last_seen_ms: NOW_MS - 500,
        uptime_seconds: 300,
        restarts: 0,
        interval_ms: 1000,
        headline: None,
        runtimes: vec![RuntimeView {
            runtime_id: 0,
            flavor: "multi_thread".to_owned(),
            workers: 2,
            tasks_alive: 12,
            global_queue_depth: 0,
            spawn_sites: Vec::new(),
            worker_tids: vec![4245, 4244],
        }],
        threads: vec![
            thread(4243, "main", 0.0),
            thread(4244, "tokio-rt-worker", 99.2),
            thread(4245, "tokio-rt-worker", 0.4),
            thread(4246, "meshwatch-sampler", 0.1),
        ],
        probe: Some(ProbeView {
            snapshots_dropped_total: 0,
            events_dropped_total: 0,
            connects_total: 1,
            sample_duration_ns: 150_000,
            sample_errors_total: 0,
        }),
        sockets: None,
        heap_sites: Vec::new(),
        open_incidents: incidents,
        ending: None,
        tokio_console: None,
    }
}

/// A count under a name.
pub fn named(name: &str, count: u32) -> NamedCount {
    NamedCount {
        name: name.to_owned(),
        count,
    }
}

/// The demo mesh: one service looping, one leaking, one healthy, one down.
pub fn mesh() -> Vec<Instance> {
    let mut gateway = view(
        "gateway",
        "fedcba9876543210fedcba9876543210",
        InstanceState::Up,
        vec![],
    );
    gateway.headline = Some(Headline {
        tcp_established: Some(12),
        tcp_close_wait: Some(3),
        ..headline(3.5, 20 << 20, 1 << 20, 30)
    });
    let ages = [
        (Some(1), 1),
        (Some(10), 2),
        (Some(60), 4),
        (Some(600), 5),
        (Some(3600), 3),
        (None, 0),
    ];
    gateway.sockets = Some(SocketsView {
        total: 16,
        by_state: vec![
            named("ESTABLISHED", 12),
            named("CLOSE_WAIT", 3),
            named("LISTEN", 1),
        ],
        by_listen_port: vec![named("8080", 15)],
        top_peers: vec![named("10.0.0.7", 9), named("10.0.0.9", 6)],
        ages: ages
            .into_iter()
            .map(|(le_seconds, count)| AgeBucketView { le_seconds, count })
            .collect(),
        rx_queue_bytes: 0,
        tx_queue_bytes: 512,
        scan_duration_ns: 41_000,
        listening: vec!["0.0.0.0:8080".to_owned()],
    });
    gateway.heap_sites = vec![
        HeapSiteView {
            site: "614825e15975a783".to_owned(),
            function: Some("gateway::SessionCache::remember_session".to_owned()),
            live_bytes: 9_474_096,
            live_objects: 2442,
            frames: Vec::new(),
        },
        HeapSiteView {
            site: "0badc0ffee000001".to_owned(),
            function: None,
            live_bytes: 65_536,
            live_objects: 12,
            frames: Vec::new(),
        },
    ];
    let mut checkout = view(
        "checkout",
        "c0ffee00aaaabbbbccccddddeeeeffff",
        InstanceState::Up,
        vec![runaway()],
    );
    checkout.headline = Some(headline(101.3, 31 << 20, 2 << 20, 12));
    let mut inventory = view(
        "inventory",
        "1234567890abcdef1234567890abcdef",
        InstanceState::Up,
        vec![growth()],
    );
    inventory.headline = Some(headline(4.0, 96 << 20, 60 << 20, 14));
    let mut down = view(
        "billing",
        "0000111122223333444455556666777",
        InstanceState::Down,
        vec![],
    );
    down.restarts = 2;
    // A section from a newer collector, shown generically.
    let mut gateway = serde_json::to_value(gateway).unwrap();
    gateway["gpu"] = json!({"utilization_percent": 40.0});
    [gateway]
        .into_iter()
        .chain([checkout, inventory, down].map(|v| serde_json::to_value(v).unwrap()))
        .map(|value| Instance::from_json(value).unwrap())
        .collect()
}

/// A minute of history for `metric` on one instance, one point a second.
pub fn history(instance_id: &str, metric: &str) -> Vec<InstanceSeries> {
    let value = |t: i64| -> f64 {
        let t = t as f64;
        match metric {
            "cpu_percent" => 50.0 + 45.0 * (t / 7.0).sin(),
            "rss_bytes" => 80.0 * 1048576.0 + t * 200_000.0,
            "heap_live_bytes" => 40.0 * 1048576.0 + t * 17_476.0 + 300_000.0 * (t / 3.0).sin(),
            _ => 10.0 + (t % 5.0),
        }
    };
    vec![InstanceSeries {
        instance_id: instance_id.to_owned(),
        points: (0..120)
            .map(|t| (NOW_MS - 120_000 + t * 1000, value(t)))
            .collect(),
    }]
}
