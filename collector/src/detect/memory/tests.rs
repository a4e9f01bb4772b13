//! The memory detector on synthetic series: what must be flagged, what
//! must not.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::heap_sites::{SiteFrame, SitePoint};
use crate::registry::InstanceState;
use meshwatch_api::evidence::MemoryGrowthEvidence;

const MB: f64 = 1_000_000.0;
const WINDOW_S: i64 = 8 * 60;
const LIMIT: f64 = 8.0 * 1024.0 * MIB;

/// Deterministic noise in [-1, 1].
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// One point a second for `seconds` ending at `end_s`, valued `f(t)` with
/// t in seconds since the series' start.
fn series(end_s: i64, seconds: i64, mut f: impl FnMut(f64) -> f64) -> Vec<Point> {
    (0..=seconds)
        .map(|i| ((end_s - seconds + i) * 1000, f(i as f64)))
        .collect()
}

fn sawtooth(t: f64, period_s: f64, height: f64) -> f64 {
    (t % period_s) / period_s * height
}

struct Fixture {
    heap: Option<Vec<Point>>,
    heap_limit: Option<Vec<Point>>,
    rss: Vec<Point>,
    sites: Vec<SiteHistory>,
}

impl Fixture {
    fn new(heap: Option<Vec<Point>>, rss: Vec<Point>) -> Self {
        Self {
            heap,
            heap_limit: None,
            rss,
            sites: Vec::new(),
        }
    }

    fn instance<'a>(&'a self, id: &'a str, state: InstanceState) -> InstanceWindow<'a> {
        let mut series = BTreeMap::new();
        if let Some(heap) = &self.heap {
            series.insert(Metric::HeapLiveBytes, heap.clone());
        }
        if let Some(limit) = &self.heap_limit {
            series.insert(Metric::HeapLimitBytes, limit.clone());
        }
        let limit: Vec<Point> = self.rss.iter().map(|&(t, _)| (t, LIMIT)).collect();
        series.insert(Metric::RssBytes, self.rss.clone());
        series.insert(Metric::MemoryLimitBytes, limit);
        InstanceWindow {
            instance_id: id,
            started_at_ms: self.rss.first().map_or(0, |p| p.0),
            last_seen_ms: self.rss.last().map_or(0, |p| p.0),
            state,
            ending: None,
            restarts: 0,
            series,
            heap_sites: self.sites.iter().collect(),
            latest: None,
            long: None,
        }
    }
}

fn window<'a>(instances: Vec<InstanceWindow<'a>>, now_s: i64, open: bool) -> Window<'a> {
    Window {
        service: "checkout",
        now_ms: now_s * 1000,
        span_ms: WINDOW_S * 1000,
        open,
        open_kinds: Vec::new(),
        long_due: true,
        instances,
    }
}

fn detector() -> MemoryGrowth {
    MemoryGrowth::new(MemorySettings::default())
}

fn check(fixture: &Fixture, open: bool) -> Verdict {
    let end = 10_000;
    detector().check(&window(
        vec![fixture.instance("0123456789abcdef", InstanceState::Up)],
        end,
        open,
    ))
}

/// A heap series ending at t = 10 000 s, and RSS a little above it.
fn heap_and_rss(f: impl FnMut(f64) -> f64) -> Fixture {
    let heap = series(10_000, WINDOW_S, f);
    let rss = heap.iter().map(|&(t, v)| (t, v + 20.0 * MB)).collect();
    Fixture::new(Some(heap), rss)
}

fn frame(function: &str, file: &str) -> SiteFrame {
    SiteFrame {
        function: function.to_owned(),
        file: file.to_owned(),
        line: 1,
    }
}

fn site(id: u64, function: &str, live: impl Fn(f64) -> f64) -> SiteHistory {
    let points: VecDeque<SitePoint> = (0..32)
        .map(|i| {
            let t_s = 10_000 - WINDOW_S + i * 15;
            SitePoint {
                t_ms: t_s * 1000,
                live_bytes: live(i as f64 * 15.0),
                allocated_bytes_total: i as f64 * 1e6,
            }
        })
        .collect();
    SiteHistory {
        id,
        frames: vec![
            frame("<alloc::raw_vec::RawVecInner>::try_allocate_in", ""),
            frame(
                "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
                "/rustc/17067e9/library/alloc/src/vec/spec_from_elem.rs",
            ),
            frame(function, "/src/proxy/src/lib.rs"),
        ],
        points,
        live_objects: 10,
        live_samples: 10,
        last_seen_ms: 10_000_000,
    }
}

fn evidence(verdict: &Verdict) -> &MemoryGrowthEvidence {
    match verdict {
        Verdict::Unhealthy(problems) => match &problems[0].finding.evidence {
            Evidence::MemoryGrowth(evidence) => evidence,
            other => panic!("expected memory_growth evidence, got {other:?}"),
        },
        other => panic!("expected a memory_growth problem, got {other:?}"),
    }
}

#[test]
fn flags_a_linear_leak_with_noise_and_names_the_growing_site_first() {
    let mut noise = Noise(1);
    let mut fixture = heap_and_rss(|t| 40.0 * MB + MB / 60.0 * t + 1.5 * MB * noise.next());
    fixture.sites = vec![
        site(1, "cache::fill", |t| {
            30.0 * MB + sawtooth(t, 90.0, 5.0 * MB)
        }),
        site(2, "proxy::remember_session", |t| MB / 60.0 * t),
    ];
    let verdict = check(&fixture, false);
    let evidence = evidence(&verdict);
    assert_eq!(evidence.series, "heap_live_bytes");
    let rate = evidence.growth_bytes_per_hour;
    assert!((rate - 60.0 * MB).abs() < 15.0 * MB, "{rate}");
    assert_eq!(
        evidence.suspects[0].function.as_deref(),
        Some("proxy::remember_session")
    );
    assert_eq!(
        evidence.suspects[0].frames[2].function,
        "proxy::remember_session"
    );
    assert!(evidence.suspects[0].growing);
    assert!(!evidence.suspects[1].growing);
    assert!(evidence.suspects[0].live_bytes > 0);
    let trend = evidence.judged_trend().expect("the heap's trend");
    assert!((trend.slope_bytes_per_hour - rate).abs() < 1.0);
    assert!(evidence.projected_time_to_limit_seconds.unwrap() > 3600.0);
    let Verdict::Unhealthy(problems) = &verdict else {
        unreachable!()
    };
    assert_eq!(problems[0].instance, None, "a service-wide incident");
    assert_eq!(problems[0].finding.severity, Severity::Warning);
    assert!(
        problems[0]
            .finding
            .summary
            .contains("proxy::remember_session"),
        "{}",
        problems[0].finding.summary
    );
}

#[test]
fn flags_a_slow_leak_under_a_cache_sawtooth() {
    let mut noise = Noise(2);
    let fixture = heap_and_rss(|t| {
        40.0 * MB + sawtooth(t, 60.0, 30.0 * MB) + 0.5 * MB / 60.0 * t + 0.3 * MB * noise.next()
    });
    assert!(matches!(check(&fixture, false), Verdict::Unhealthy(_)));
}

#[test]
fn does_not_flag_a_cache_that_fills_and_clears() {
    for (seed, period) in [(3, 45.0), (4, 90.0), (5, 110.0)] {
        let mut noise = Noise(seed);
        let fixture =
            heap_and_rss(|t| 40.0 * MB + sawtooth(t, period, 30.0 * MB) + 0.5 * MB * noise.next());
        assert_eq!(check(&fixture, false), Verdict::Healthy, "period {period}");
    }
}

#[test]
fn does_not_flag_a_step_up_then_a_plateau() {
    for at in [0.1, 0.3, 0.45, 0.6, 0.75, 0.9] {
        let mut noise = Noise(6);
        let step_s = at * WINDOW_S as f64;
        let fixture = heap_and_rss(|t| {
            let warm = ((t - step_s) / 30.0).clamp(0.0, 1.0) * 30.0 * MB;
            40.0 * MB + warm + 0.3 * MB * noise.next()
        });
        assert_eq!(check(&fixture, false), Verdict::Healthy, "step at {at}");
    }
}

#[test]
fn does_not_flag_rss_creep_when_allocator_bytes_are_flat() {
    let mut noise = Noise(7);
    let heap = series(10_000, WINDOW_S, |_| 40.0 * MB + 0.5 * MB * noise.next());
    let rss = series(10_000, WINDOW_S, |t| 60.0 * MB + 2.0 * MB / 60.0 * t);
    let fixture = Fixture::new(Some(heap), rss);
    assert_eq!(check(&fixture, false), Verdict::Healthy);
    // The same allocator bytes under a sawtooth.
    let heap = series(10_000, WINDOW_S, |t| {
        40.0 * MB + sawtooth(t, 60.0, 20.0 * MB)
    });
    let rss = series(10_000, WINDOW_S, |t| 80.0 * MB + 2.0 * MB / 60.0 * t);
    assert_eq!(
        check(&Fixture::new(Some(heap), rss), false),
        Verdict::Healthy
    );
}

#[test]
fn without_a_tracking_allocator_rss_growth_is_flagged() {
    let rss = series(10_000, WINDOW_S, |t| 60.0 * MB + 2.0 * MB / 60.0 * t);
    let verdict = check(&Fixture::new(None, rss), false);
    assert_eq!(evidence(&verdict).series, "rss_bytes");
}

#[test]
fn slow_growth_of_a_large_heap_far_from_its_limit_is_not_flagged() {
    // 1 MB/min on 2 GiB: 3 %/h, and 100 hours to an 8 GiB limit.
    let fixture = heap_and_rss(|t| 2048.0 * MIB + MB / 60.0 * t);
    assert_eq!(check(&fixture, false), Verdict::Healthy);
    // The same growth 30 minutes from the limit is.
    let fixture = heap_and_rss(|t| LIMIT - 50.0 * MB + MB / 60.0 * t);
    let verdict = check(&fixture, false);
    let Verdict::Unhealthy(problems) = &verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(problems[0].finding.severity, Severity::Critical);
}

#[test]
fn resolves_when_growth_stops_and_stays_open_while_it_goes_on() {
    let mut noise = Noise(8);
    // Leaked for the first half of the window, flat since.
    let stopped = heap_and_rss(|t| {
        40.0 * MB + MB / 60.0 * t.min(WINDOW_S as f64 / 2.0) + 0.3 * MB * noise.next()
    });
    assert_eq!(check(&stopped, true), Verdict::Healthy);
    let going = heap_and_rss(|t| 40.0 * MB + MB / 60.0 * t + 0.3 * MB * noise.next());
    assert!(matches!(check(&going, true), Verdict::Unhealthy(_)));
}

#[test]
fn a_young_instance_is_undecided_and_a_restarted_leak_stays_one_problem() {
    let young_rss = series(10_000, 60, |t| 20.0 * MB + MB / 60.0 * t);
    let young = Fixture::new(Some(young_rss.clone()), young_rss);
    let alone = window(
        vec![young.instance("bbbbbbbb", InstanceState::Restarted)],
        10_000,
        true,
    );
    assert_eq!(detector().check(&alone), Verdict::Undecided);

    // Its predecessor leaked until it died 30 s ago.
    let dead_heap = series(9_970, WINDOW_S - 30, |t| 40.0 * MB + 2.0 * MB / 60.0 * t);
    let dead = Fixture::new(Some(dead_heap.clone()), dead_heap);
    let both = window(
        vec![
            dead.instance("aaaaaaaa", InstanceState::Down),
            young.instance("bbbbbbbb", InstanceState::Restarted),
        ],
        10_000,
        true,
    );
    let verdict = detector().check(&both);
    let evidence = evidence(&verdict);
    assert_eq!(evidence.instance, "aaaaaaaa");
    assert_eq!(evidence.instances.len(), 2);
    assert_eq!(evidence.instances[1].state, InstanceState::Restarted);
}

#[test]
fn default_settings_catch_a_one_megabyte_per_minute_leak_within_ten_minutes() {
    let mut noise = Noise(9);
    let full: Vec<Point> = series(1_200, 1_200, |t| {
        30.0 * MB + MB / 60.0 * t + 0.5 * MB * noise.next()
    });
    let caught = (10..=1_200)
        .step_by(5)
        .find(|&now_s| {
            let heap: Vec<Point> = full
                .iter()
                .copied()
                .filter(|&(t, _)| t <= now_s * 1000 && t >= (now_s - WINDOW_S) * 1000)
                .collect();
            let fixture = Fixture::new(Some(heap.clone()), heap);
            let w = window(vec![fixture.instance("i", InstanceState::Up)], now_s, false);
            matches!(detector().check(&w), Verdict::Unhealthy(_))
        })
        .unwrap();
    assert!(caught <= 600, "caught after {caught} s");
}

#[test]
fn a_heap_with_a_limit_of_its_own_projects_to_that_limit_first() {
    // A V8 heap of 100 MB growing 1 MB a minute, under a 160 MB heap limit
    // and the 8 GiB memory limit: it fails at the heap limit, in an hour.
    let mut fixture = heap_and_rss(|t| 100.0 * MB + MB / 60.0 * t);
    let heap_limit = fixture
        .rss
        .iter()
        .map(|&(t, _)| (t, 160.0 * MB))
        .collect::<Vec<_>>();
    fixture.heap_limit = Some(heap_limit);
    let verdict = check(&fixture, false);
    let evidence = evidence(&verdict);
    assert_eq!(evidence.heap_limit_bytes, Some(160_000_000));
    let hours = evidence.projected_time_to_limit_seconds.unwrap() / 3600.0;
    // 160 MB - 108 MB at the window's end, 60 MB an hour: about 52 minutes.
    assert!((0.8..0.95).contains(&hours), "{hours}");
    match &verdict {
        Verdict::Unhealthy(problems) => assert!(
            problems[0].finding.summary.contains("heap limit"),
            "{}",
            problems[0].finding.summary
        ),
        other => panic!("{other:?}"),
    }
}

/// The first time (seconds since the instance started, looked at every 5 s
/// up to `until`) at which the detector flags an instance whose heap has
/// been `heap(t)` since it started, with the window that decided.
fn first_flagged(until: i64, heap: impl FnMut(f64) -> f64) -> Option<(i64, i64)> {
    let full = series(until, until, heap);
    (10..=until).step_by(5).find_map(|now_s| {
        let heap: Vec<Point> = full
            .iter()
            .copied()
            .filter(|&(t, _)| t <= now_s * 1000)
            .collect();
        let rss = heap.iter().map(|&(t, v)| (t, v + 20.0 * MB)).collect();
        let fixture = Fixture::new(Some(heap), rss);
        let w = window(vec![fixture.instance("i", InstanceState::Up)], now_s, false);
        let verdict = detector().check(&w);
        matches!(verdict, Verdict::Unhealthy(_)).then(|| (now_s, evidence(&verdict).window_seconds))
    })
}

#[test]
fn a_fast_leak_opens_on_a_short_window_within_its_target() {
    // +2 MB a minute from a 30 MB base, from a minute after the start.
    let mut noise = Noise(3);
    let leak = |t: f64| 30.0 * MB + 2.0 * MB / 60.0 * (t - 60.0).max(0.0);
    let (at, window_s) = first_flagged(900, |t| leak(t) + 0.2 * MB * noise.next()).unwrap();
    assert!(at - 60 <= 180, "flagged {} s into the leak", at - 60);
    assert_eq!(window_s, 180, "decided by the three-minute window");

    // +1 MiB a minute under a 32 MiB cache sawtooth.
    let (at, _) = first_flagged(900, |t| {
        30.0 * MB + sawtooth(t, 60.0, 32.0 * MIB) + MIB / 60.0 * (t - 60.0).max(0.0)
    })
    .unwrap();
    assert!(at - 60 <= 360, "flagged {} s into the leak", at - 60);
}

#[test]
fn short_windows_do_not_flag_warm_ups_fills_or_sawtooths() {
    // A cache filling 48 MiB over a minute, then flat, at any time.
    for fill_at in (0..=600).step_by(30) {
        let fill =
            move |t: f64| 30.0 * MB + 48.0 * MIB * ((t - fill_at as f64) / 60.0).clamp(0.0, 1.0);
        assert_eq!(first_flagged(900, fill), None, "a fill at {fill_at} s");
    }
    // A sawtooth cache.
    assert_eq!(
        first_flagged(900, |t| 30.0 * MB + sawtooth(t, 60.0, 32.0 * MIB)),
        None
    );
    // A new instance warming up: 20 MiB over its first 90 s.
    assert_eq!(
        first_flagged(900, |t| 30.0 * MB + 20.0 * MIB * (t / 90.0).min(1.0)),
        None
    );
}

/// A 48 MiB fill over a minute, then flat, with the allocator's noise: the
/// short windows see the ramp's end, and must not call it a leak.
#[test]
fn a_noisy_cache_fill_then_flat_is_not_a_leak() {
    for seed in 1..=7 {
        let mut noise = Noise(seed);
        let fill = move |t: f64| {
            30.0 * MB + 48.0 * MIB * ((t - 300.0) / 60.0).clamp(0.0, 1.0) + 0.3 * MB * noise.next()
        };
        assert_eq!(first_flagged(900, fill), None, "seed {seed}");
    }
}
