//! How fast the trend detectors flag leaks, and how often they flag what
//! is not one: synthetic histories, each run with several noise seeds,
//! replayed through the collector's detectors at default settings by the
//! backtest (the same code the collector runs, at the collector's own
//! pace: one sample a second and a pass every 5 s for the fast faults, the
//! store's 10 s and a pass a minute for the slow ones).
//!
//! `cargo bench --bench detection` prints the tables of
//! `docs/DETECTION.md`. `SEEDS=N` sets the runs per case (default 7).
#![allow(clippy::expect_used)] // a benchmark that cannot replay has nothing to report

use std::time::Duration;

use meshwatch_api::IncidentKind;
use meshwatch_collector::backtest::{BacktestOptions, RecordedRow, run};
use meshwatch_collector::{Config, Metric};
use meshwatch_e2e::synthetic::{DAY_S, Noise, daily};

const MIB: f64 = 1024.0 * 1024.0;
const MB: f64 = 1_000_000.0;
const START_MS: i64 = 1_767_571_200_000;

/// A series as a function of seconds since its instance started.
type SeriesFn<'a> = Box<dyn Fn(f64, &mut Noise) -> f64 + 'a>;

/// One instance's series.
type Series<'a> = Vec<(Metric, SeriesFn<'a>)>;

/// An instance: its id, when it starts and stops (seconds into the
/// history), and its series.
struct Life<'a> {
    id: &'static str,
    from_s: f64,
    to_s: f64,
    series: Series<'a>,
}

/// A history: its instances, its length, its resolution.
struct History<'a> {
    lives: Vec<Life<'a>>,
    step_s: f64,
    /// When the fault begins, seconds in; `None` for a must-not-flag one.
    fault_at_s: Option<f64>,
}

impl History<'_> {
    fn rows(&self, seed: u64) -> Vec<RecordedRow> {
        let mut noise = Noise::new(seed * 7919 + 1);
        let mut rows = Vec::new();
        for life in &self.lives {
            let mut s = life.from_s;
            while s <= life.to_s {
                rows.push(RecordedRow {
                    service: "svc".to_owned(),
                    instance: life.id.to_owned(),
                    t_ms: START_MS + (s * 1000.0) as i64,
                    values: life
                        .series
                        .iter()
                        .map(|(m, f)| (*m, f(s - life.from_s, &mut noise)))
                        .collect(),
                });
                s += self.step_s;
            }
        }
        rows.sort_by_key(|r| r.t_ms);
        rows
    }

    /// The seconds from the fault to the first incident of `kind`, and the
    /// count of incidents of any other kind (or before the fault).
    fn judge(&self, kind: &IncidentKind, seed: u64) -> (Option<f64>, usize) {
        let options = if self.step_s >= 10.0 {
            BacktestOptions::default()
        } else {
            BacktestOptions {
                step: Duration::from_secs(5),
                down_after: Duration::from_secs(5),
            }
        };
        let report = run(&Config::new("unused"), options, self.rows(seed)).expect("a backtest");
        let fault_ms = self.fault_at_s.map(|s| START_MS + (s * 1000.0) as i64);
        let mut flagged = None;
        let mut false_flags = 0;
        for incident in &report.incidents {
            match fault_ms {
                Some(at) if incident.kind == *kind && incident.opened_at_ms >= at => {
                    if flagged.is_none() {
                        flagged = Some((incident.opened_at_ms - at) as f64 / 1000.0);
                    }
                }
                _ => false_flags += 1,
            }
        }
        (flagged, false_flags)
    }
}

/// Load, as a CPU percent: flat with a little noise.
fn flat_cpu<'a>() -> (Metric, SeriesFn<'a>) {
    (Metric::CpuPercent, Box::new(|_, n| 20.0 + 2.0 * n.sample()))
}

/// A count flat at `base` with noise, rising by `per_s` from `fault_s`.
fn count_leak<'a>(
    metric: Metric,
    base: f64,
    noise: f64,
    per_s: f64,
    fault_s: f64,
) -> (Metric, SeriesFn<'a>) {
    (
        metric,
        Box::new(move |s, n| {
            (base + noise * n.sample() + per_s * (s - fault_s).max(0.0))
                .round()
                .max(0.0)
        }),
    )
}

/// A fast fault: one instance, 15 minutes at 1 Hz, the fault from minute 5.
fn fast(series: Series<'_>) -> History<'_> {
    History {
        lives: vec![Life {
            id: "a",
            from_s: 0.0,
            to_s: 900.0,
            series,
        }],
        step_s: 1.0,
        fault_at_s: Some(300.0),
    }
}

/// The heap (and an RSS above it) of a service with a 30 MB base.
fn heap<'a>(f: impl Fn(f64, &mut Noise) -> f64 + Copy + 'a) -> Series<'a> {
    vec![
        (Metric::HeapLiveBytes, Box::new(f)),
        (Metric::RssBytes, Box::new(move |s, n| f(s, n) + 20.0 * MIB)),
        flat_cpu(),
    ]
}

/// A cache sawtooth: filling to `peak` over each `period_s`, then flushed.
fn sawtooth(peak: f64, period_s: f64, s: f64) -> f64 {
    peak * (s % period_s) / period_s
}

struct Case<'a> {
    detector: &'static str,
    fault: String,
    target: &'static str,
    kind: IncidentKind,
    history: History<'a>,
}

fn leak_cases() -> Vec<Case<'static>> {
    let mut cases = Vec::new();
    // Each count: its detector, series, unit, base and noise, the rates
    // tried, and the one with a target.
    let counts = [
        (
            "socket_leak",
            IncidentKind::SocketLeak,
            Metric::TcpCloseWait,
            "CLOSE_WAIT",
            (2.0, 1.0),
            [1.0, 5.0, 20.0],
            (5.0, "60 s"),
        ),
        (
            "fd_leak",
            IncidentKind::FdLeak,
            Metric::FdsOpen,
            "fds",
            (50.0, 3.0),
            [1.0, 5.0, 20.0],
            (5.0, "90 s"),
        ),
        (
            "task_leak",
            IncidentKind::TaskLeak,
            Metric::TasksAlive,
            "idle tasks",
            (100.0, 5.0),
            [2.0, 10.0, 50.0],
            (10.0, "60 s"),
        ),
    ];
    for (detector, kind, metric, unit, (base, noise), rates, (targeted, target)) in counts {
        for rate in rates {
            cases.push(Case {
                detector,
                fault: format!("+{rate} {unit}/s"),
                target: if rate == targeted { target } else { "" },
                kind: kind.clone(),
                history: fast(vec![
                    count_leak(metric, base, noise, rate, 300.0),
                    flat_cpu(),
                ]),
            });
        }
    }
    // Memory: the fault, the rates tried and the one with a target, and the
    // history at a rate.
    type Shape = fn(f64) -> History<'static>;
    type Faults = (&'static str, [f64; 3], (f64, &'static str), Shape);
    let memory: [Faults; 4] = [
        (
            "heap +{} MB/min from 30 MB",
            [0.5, 2.0, 8.0],
            (2.0, "3 min"),
            |rate| {
                fast(heap(move |s, n| {
                    30.0 * MB + 0.3 * MB * n.sample() + rate * MB / 60.0 * (s - 300.0).max(0.0)
                }))
            },
        ),
        (
            "heap +{} MiB/min under a 32 MiB sawtooth",
            [0.5, 1.0, 4.0],
            (1.0, "6 min"),
            |rate| {
                fast(heap(move |s, n| {
                    30.0 * MIB
                        + sawtooth(32.0 * MIB, 60.0, s)
                        + 0.3 * MB * n.sample()
                        + rate * MIB / 60.0 * (s - 300.0).max(0.0)
                }))
            },
        ),
        (
            "RSS +{} MiB/h under a 30 MiB daily swing, 300 MiB base",
            [5.0, 10.0, 20.0],
            (10.0, "12 h"),
            |rate| {
                rss_days(2.0, move |s, n| {
                    300.0 * MIB
                        + daily(30.0 * MIB, 4.0, s)
                        + rate * MIB * s / 3600.0
                        + 2.0 * MIB * n.sample()
                })
            },
        ),
        (
            "RSS +{} MiB/h in a 200 MiB service",
            [1.0, 2.0, 4.0],
            (2.0, "2 days"),
            |rate| {
                rss_days(3.0, move |s, n| {
                    200.0 * MIB + rate * MIB * s / 3600.0 + 3.0 * MIB * n.sample()
                })
            },
        ),
    ];
    for (fault, rates, (targeted, target), shape) in memory {
        for rate in rates {
            cases.push(Case {
                detector: "memory_growth",
                fault: fault.replace("{}", &rate.to_string()),
                target: if rate == targeted { target } else { "" },
                kind: IncidentKind::MemoryGrowth,
                history: shape(rate),
            });
        }
    }
    cases
}

/// An RSS leaking from the start, over `n` days at the store's 10 s.
fn rss_days(n: f64, rss: impl Fn(f64, &mut Noise) -> f64 + 'static) -> History<'static> {
    days(n, vec![(Metric::RssBytes, Box::new(rss))], Some(0.0))
}

/// One instance over `n` days at the store's 10 s.
fn days(n: f64, series: Series<'_>, fault_at_s: Option<f64>) -> History<'_> {
    History {
        lives: vec![Life {
            id: "a",
            from_s: 0.0,
            to_s: n * DAY_S,
            series,
        }],
        step_s: 10.0,
        fault_at_s,
    }
}

/// A count warming from 0 to `to` over the first minute of its life.
fn warming(to: f64, s: f64) -> f64 {
    (to * (s / 60.0).min(1.0)).round()
}

fn must_not_flag() -> Vec<(&'static str, History<'static>)> {
    let quiet = |series: Series<'static>| History {
        lives: vec![Life {
            id: "a",
            from_s: 0.0,
            to_s: 900.0,
            series,
        }],
        step_s: 1.0,
        fault_at_s: None,
    };
    // Traffic ten times higher from minute 5 to minute 7.
    let load = |s: f64| {
        if (300.0..420.0).contains(&s) {
            10.0
        } else {
            1.0
        }
    };
    let warm_up = |_: ()| -> Series<'static> {
        vec![
            (
                Metric::FdsOpen,
                Box::new(|s, n| warming(200.0, s) + 20.0 + 2.0 * n.sample()),
            ),
            (
                Metric::TasksAlive,
                Box::new(|s, n| warming(200.0, s) + 30.0 + 3.0 * n.sample()),
            ),
            (
                Metric::HeapLiveBytes,
                Box::new(|s, n| {
                    20.0 * MIB + 48.0 * MIB * (s / 60.0).min(1.0) + 0.3 * MB * n.sample()
                }),
            ),
            flat_cpu(),
        ]
    };
    vec![
        (
            "a connection pool warming from 0 to 200 over a minute, then flat",
            quiet(vec![
                (
                    Metric::FdsOpen,
                    Box::new(|s, n| warming(200.0, s) + 20.0 + 2.0 * n.sample()),
                ),
                (
                    Metric::TasksAlive,
                    Box::new(|s, n| warming(200.0, s) + 30.0 + 3.0 * n.sample()),
                ),
                flat_cpu(),
            ]),
        ),
        (
            "a cache filling 48 MiB over a minute (minute 5), then flat",
            quiet(heap(|s, n| {
                30.0 * MIB
                    + 48.0 * MIB * ((s - 300.0) / 60.0).clamp(0.0, 1.0)
                    + 0.3 * MB * n.sample()
            })),
        ),
        (
            "a 32 MiB cache sawtooth, a minute a tooth",
            quiet(heap(|s, n| {
                30.0 * MIB + sawtooth(32.0 * MIB, 60.0, s) + 0.3 * MB * n.sample()
            })),
        ),
        (
            "a step in load: 10x traffic for 2 minutes, with its sockets, fds and tasks",
            quiet(vec![
                (
                    Metric::CpuPercent,
                    Box::new(move |s, n| 10.0 * load(s) + 2.0 * n.sample()),
                ),
                (
                    Metric::TcpCloseWait,
                    Box::new(move |s, n| (2.0 * load(s) + n.sample()).round().max(0.0)),
                ),
                (
                    Metric::FdsOpen,
                    Box::new(move |s, n| (50.0 * load(s) + 3.0 * n.sample()).round()),
                ),
                (
                    Metric::TasksAlive,
                    Box::new(move |s, n| (100.0 * load(s) + 5.0 * n.sample()).round()),
                ),
            ]),
        ),
        (
            "a restart whose new instance warms up (pool and 48 MiB of cache)",
            History {
                lives: vec![
                    Life {
                        id: "old",
                        from_s: 0.0,
                        to_s: 480.0,
                        series: warm_up(()),
                    },
                    Life {
                        id: "new",
                        from_s: 490.0,
                        to_s: 1300.0,
                        series: warm_up(()),
                    },
                ],
                step_s: 1.0,
                fault_at_s: None,
            },
        ),
        (
            "daily traffic swings over a week (memory 185-215 MiB, fds, tasks, sockets, CPU)",
            days(
                7.0,
                {
                    let traffic = |s: f64| 0.55 + daily(0.9, 4.0, s);
                    vec![
                        (
                            Metric::RssBytes,
                            Box::new(|s, n| {
                                200.0 * MIB + daily(30.0 * MIB, 4.0, s) + 2.0 * MIB * n.sample()
                            }),
                        ),
                        (
                            Metric::CpuPercent,
                            Box::new(move |s, n| 40.0 * traffic(s) * (1.0 + 0.1 * n.sample())),
                        ),
                        (
                            Metric::TcpCloseWait,
                            Box::new(move |s, n| (3.0 * traffic(s) + n.sample()).round().max(0.0)),
                        ),
                        (
                            Metric::FdsOpen,
                            Box::new(move |s, n| {
                                (40.0 + 600.0 * traffic(s) + 5.0 * n.sample()).round()
                            }),
                        ),
                        (
                            Metric::TasksAlive,
                            Box::new(move |s, n| {
                                (20.0 + 2000.0 * traffic(s) + 20.0 * n.sample()).round()
                            }),
                        ),
                    ]
                },
                None,
            ),
        ),
    ]
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    })
}

fn human(seconds: f64) -> String {
    if seconds >= 2.0 * 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 180.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.0} s")
    }
}

fn main() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("Runs per case: {seeds} (noise seeds 1..={seeds}).\n");
    println!("| detector | fault | target | median time to flag | flagged runs | false flags |");
    println!("|---|---|---|---|---|---|");
    for case in leak_cases() {
        let mut times = Vec::new();
        let mut false_flags = 0;
        for seed in 1..=seeds {
            let (flagged, wrong) = case.history.judge(&case.kind, seed);
            times.extend(flagged);
            false_flags += wrong;
        }
        let flagged_runs = times.len();
        println!(
            "| {} | {} | {} | {} | {flagged_runs}/{seeds} | {false_flags} |",
            case.detector,
            case.fault,
            if case.target.is_empty() {
                "-"
            } else {
                case.target
            },
            median(times).map_or_else(|| "not flagged".to_owned(), human),
        );
    }
    println!("\n| must not flag | runs | incidents opened |");
    println!("|---|---|---|");
    for (name, history) in must_not_flag() {
        let opened: usize = (1..=seeds)
            .map(|seed| history.judge(&IncidentKind::Other(String::new()), seed).1)
            .sum();
        println!("| {name} | {seeds} | {opened} |");
    }
}
