//! Leaks over days and swings that are not leaks (issue 12, items 3 and 4):
//! multi-day synthetic histories at the store's resolution (a row every
//! 10 s), replayed through the collector's detectors by the backtest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use meshwatch_api::evidence::Evidence;
use meshwatch_api::{Incident, IncidentKind};
use meshwatch_collector::Config;
use meshwatch_collector::Metric;
use meshwatch_collector::backtest::{BacktestOptions, RecordedRow, run};
use meshwatch_e2e::synthetic::{DAY_S, Noise, daily};

const MIB: f64 = 1024.0 * 1024.0;
const HOUR_S: f64 = 3600.0;
/// Where every synthetic history starts: a Monday at midnight UTC.
const START_MS: i64 = 1_767_571_200_000;
/// The store's resolution.
const STEP_S: i64 = 10;

/// A series as a function of seconds since the start, and the noise.
type SeriesFn<'f> = &'f dyn Fn(f64, &mut Noise) -> f64;

/// A history of one instance of `svc` over `days`, each series a function
/// of seconds since the start and the noise.
fn history(days: f64, series: &[(Metric, SeriesFn<'_>)], seed: u64) -> Vec<RecordedRow> {
    let mut noise = Noise::new(seed);
    let steps = (days * DAY_S) as i64 / STEP_S;
    (0..=steps)
        .map(|k| {
            let s = (k * STEP_S) as f64;
            RecordedRow {
                service: "proxy".to_owned(),
                instance: "proxy-1".to_owned(),
                t_ms: START_MS + k * STEP_S * 1000,
                values: series.iter().map(|(m, f)| (*m, f(s, &mut noise))).collect(),
            }
        })
        .collect()
}

/// The incidents a backtest of `rows` opens. Its passes come every five
/// minutes of recorded time, not the default minute: these leaks take
/// hours to days to show, and a debug build replays a week five times
/// faster (CI's time).
fn incidents(rows: Vec<RecordedRow>) -> Vec<Incident> {
    let options = BacktestOptions {
        step: std::time::Duration::from_secs(300),
        ..BacktestOptions::default()
    };
    run(&Config::new("unused"), options, rows)
        .expect("a backtest of a synthetic history")
        .incidents
}

/// Hours from the start of the history to the first incident of `kind`.
fn hours_to(kind: IncidentKind, found: &[Incident]) -> Option<f64> {
    found
        .iter()
        .find(|i| i.kind == kind)
        .map(|i| (i.opened_at_ms - START_MS) as f64 / 1000.0 / HOUR_S)
}

#[test]
fn ten_mib_an_hour_under_a_30_mib_daily_swing_is_flagged_within_12_hours() {
    for trough_hour in [0.0, 6.0, 12.0, 18.0] {
        let rss = move |s: f64, n: &mut Noise| {
            300.0 * MIB
                + daily(30.0 * MIB, trough_hour, s)
                + 10.0 * MIB * s / HOUR_S
                + n.sample() * 2.0 * MIB
        };
        let limit = |_: f64, _: &mut Noise| 2048.0 * MIB;
        let found = incidents(history(
            1.0,
            &[(Metric::RssBytes, &rss), (Metric::MemoryLimitBytes, &limit)],
            7,
        ));
        let hours = hours_to(IncidentKind::MemoryGrowth, &found);
        assert!(
            hours.is_some_and(|h| h <= 12.0),
            "trough at {trough_hour} h: flagged after {hours:?} h; {found:#?}"
        );
        let incident = found
            .iter()
            .find(|i| i.kind == IncidentKind::MemoryGrowth)
            .expect("the incident");
        let Evidence::MemoryGrowth(evidence) = &incident.evidence else {
            panic!("memory evidence expected: {incident:?}");
        };
        let left = evidence
            .projected_time_to_limit_seconds
            .expect("a projected time to the limit");
        // 1.7 GiB left at about 10 MiB/h is days, not hours or weeks.
        assert!((3.0 * DAY_S..12.0 * DAY_S).contains(&left), "{left} s");
        assert!(evidence.window_seconds >= 3600, "a long window decided");
    }
}

#[test]
fn two_mib_an_hour_in_a_200_mib_service_is_flagged_within_two_days() {
    let rss = |s: f64, n: &mut Noise| 200.0 * MIB + 2.0 * MIB * s / HOUR_S + n.sample() * 3.0 * MIB;
    let limit = |_: f64, _: &mut Noise| 1024.0 * MIB;
    let found = incidents(history(
        3.0,
        &[(Metric::RssBytes, &rss), (Metric::MemoryLimitBytes, &limit)],
        11,
    ));
    let hours = hours_to(IncidentKind::MemoryGrowth, &found);
    assert!(
        hours.is_some_and(|h| h <= 48.0),
        "flagged after {hours:?} h; {found:#?}"
    );
    let incident = &found[0];
    let Evidence::MemoryGrowth(evidence) = &incident.evidence else {
        panic!("memory evidence expected: {incident:?}");
    };
    assert!(evidence.projected_time_to_limit_seconds.is_some());
    assert!(
        incident.resolved_at_ms.is_none(),
        "a leak that goes on stays open"
    );
}

/// Daily swings of memory, connections, fds and tasks with traffic, over
/// a week. On an instance's first day there is no day before to compare
/// with, and a swing whose rising half is as steep and as large as a
/// leak's (from 270 to 330 MiB over 12 hours, or from 75 to 165 MiB) is
/// flagged like one; from the second day on, no swing is. A moderate swing
/// (185 to 215 MiB) is never flagged.
#[test]
fn daily_swings_over_a_week_are_not_flagged() {
    for (base, swing) in [(200.0, 30.0), (300.0, 60.0), (120.0, 90.0)] {
        let rss = move |s: f64, n: &mut Noise| {
            base * MIB + daily(swing * MIB, 4.0, s) + n.sample() * 2.0 * MIB
        };
        // Traffic swings the connections, fds and tasks with it, and the CPU.
        let load = |s: f64| 0.55 + daily(0.9, 4.0, s);
        let cpu = move |s: f64, n: &mut Noise| 40.0 * load(s) * (1.0 + 0.1 * n.sample());
        let sockets = move |s: f64, n: &mut Noise| (3.0 * load(s) + n.sample()).max(0.0).round();
        let fds = move |s: f64, n: &mut Noise| (40.0 + 600.0 * load(s) + 5.0 * n.sample()).round();
        let tasks =
            move |s: f64, n: &mut Noise| (20.0 + 2000.0 * load(s) + 20.0 * n.sample()).round();
        let found = incidents(history(
            7.0,
            &[
                (Metric::RssBytes, &rss),
                (Metric::CpuPercent, &cpu),
                (Metric::TcpCloseWait, &sockets),
                (Metric::FdsOpen, &fds),
                (Metric::TasksAlive, &tasks),
            ],
            13,
        ));
        let after_first_day: Vec<&Incident> = found
            .iter()
            .filter(|i| swing <= 30.0 || i.opened_at_ms - START_MS >= 24 * 3_600_000)
            .collect();
        assert!(
            after_first_day.is_empty(),
            "{base} MiB ± {swing}: {found:#?}"
        );
    }
}

/// Two fds an hour under a daily swing of 600: the day-wide envelope climbs
/// one step a day, and one step could be a one-off, so it takes two steps
/// (three days of history, a 72-hour window) to flag.
#[test]
fn a_slow_fd_leak_under_daily_traffic_is_flagged_within_three_days() {
    let load = |s: f64| 0.55 + daily(0.9, 4.0, s);
    let cpu = move |s: f64, n: &mut Noise| 40.0 * load(s) * (1.0 + 0.1 * n.sample());
    // Two fds an hour that never close, under a daily swing of 600.
    let fds = move |s: f64, n: &mut Noise| {
        (40.0 + 600.0 * load(s) + 2.0 * s / HOUR_S + 5.0 * n.sample()).round()
    };
    let found = incidents(history(
        3.5,
        &[(Metric::CpuPercent, &cpu), (Metric::FdsOpen, &fds)],
        17,
    ));
    let hours = hours_to(IncidentKind::FdLeak, &found);
    assert!(
        hours.is_some_and(|h| h <= 72.0),
        "flagged after {hours:?} h; {found:#?}"
    );
    assert_eq!(found.len(), 1, "{found:#?}");
}
