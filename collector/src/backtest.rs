//! Backtesting: the collector's detectors run over recorded history, to
//! say when each incident would have opened and resolved (issue 12).
//!
//! A team can check meshwatch against the incidents they already lived
//! through before they deploy it: the rows come from the collector's own
//! store, a CSV file or a Prometheus server (the `meshwatch backtest`
//! command reads those), and [`Backtest`] replays them through the very
//! code the collector runs: the same in-memory rings and long view, the
//! same [`DetectorSet`] with the same settings, the same incident book. The
//! only difference is the clock, which is the recorded one, advanced a
//! [`step`](BacktestOptions::step) at a time.
//!
//! What recorded history does not say is filled in plainly: an instance
//! started at its first row, and went down when its rows stopped for
//! longer than [`down_after`](BacktestOptions::down_after), an ending
//! counted as a death (history does not tell a crash from a deploy).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use meshwatch_api::Incident;
use meshwatch_api::evidence::Ending;

use crate::config::Config;
use crate::detect::{DetectorSet, Life, SeriesStores};
use crate::heap_sites::HeapSiteStore;
use crate::incidents::{IncidentBook, StateFilter};
use crate::long_history::LongHistory;
use crate::registry::InstanceState;
use crate::series::SeriesStore;

/// One recorded sample of one instance: a row of the collector's store,
/// whatever source it was read from.
pub use crate::store::HistoryRow as RecordedRow;

/// How a backtest replays history.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestOptions {
    /// How much recorded time passes between two detection passes. The
    /// collector runs them every few seconds; over days of history, a
    /// minute keeps a week's replay to seconds and times to the minute.
    pub step: Duration,
    /// An instance whose rows stop for this long is down from its last.
    pub down_after: Duration,
}

impl Default for BacktestOptions {
    fn default() -> Self {
        Self {
            step: Duration::from_secs(60),
            down_after: Duration::from_secs(60),
        }
    }
}

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum BacktestError {
    /// There was nothing to replay.
    #[error("the recorded history holds no rows")]
    NoRows,
    /// A step of zero would never advance the clock.
    #[error("the step between detection passes must be at least 1 ms")]
    ZeroStep,
    /// The data directory's history could not be read; says what to do.
    #[error("{0}")]
    Store(String),
}

/// What a backtest found: every incident that would have opened, with the
/// evidence it had when it opened, and when it resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestReport {
    /// The first and last recorded times, in ms since the Unix epoch.
    pub span_ms: (i64, i64),
    /// Rows replayed.
    pub rows: usize,
    /// Distinct instances seen.
    pub instances: usize,
    /// The incidents, in the order they opened. `resolved_at_ms` is `None`
    /// for one still open at the end of the history; `summary` and
    /// `evidence` are as they were when it opened.
    pub incidents: Vec<Incident>,
}

/// An instance's life as far as its rows tell.
#[derive(Debug)]
struct Replayed {
    service: String,
    instance: String,
    first_ms: i64,
    last_ms: i64,
    restarts: u32,
}

/// Replays rows through the detectors. Feed rows in time order with
/// [`Backtest::replay`], or use [`run`] for a whole history at once.
#[derive(Debug)]
pub struct Backtest {
    detectors: DetectorSet,
    series: SeriesStore,
    heap_sites: HeapSiteStore,
    long: LongHistory,
    lives: BTreeMap<(String, i64, String), Replayed>,
    by_instance: HashMap<String, (String, i64)>,
    book: IncidentBook,
    options: BacktestOptions,
    opened: Vec<Incident>,
    /// Where each incident still open is in `opened`.
    still_open: HashMap<String, usize>,
    next_pass_ms: Option<i64>,
    rows: usize,
    span_ms: Option<(i64, i64)>,
}

impl Backtest {
    /// A replay with the detectors and history sizes of `config`.
    ///
    /// # Errors
    ///
    /// [`BacktestError::ZeroStep`] for a step of zero.
    pub fn new(config: &Config, options: BacktestOptions) -> Result<Self, BacktestError> {
        if options.step.is_zero() {
            return Err(BacktestError::ZeroStep);
        }
        Ok(Self {
            detectors: DetectorSet::new(config),
            series: SeriesStore::new(config.series_capacity),
            heap_sites: HeapSiteStore::new(i64::MAX),
            long: LongHistory::default(),
            lives: BTreeMap::new(),
            by_instance: HashMap::new(),
            book: IncidentBook::default(),
            options,
            opened: Vec::new(),
            still_open: HashMap::new(),
            next_pass_ms: None,
            rows: 0,
            span_ms: None,
        })
    }

    /// Replays one row, running the detection passes due before it. Rows
    /// must come in time order; one older than the last is dropped, as the
    /// collector drops a sample from a clock that stepped back.
    pub fn replay(&mut self, row: RecordedRow) {
        if self.span_ms.is_some_and(|(_, last)| row.t_ms < last) {
            return;
        }
        while let Some(pass_ms) = self.next_pass_ms.filter(|&p| p <= row.t_ms) {
            self.pass(pass_ms);
        }
        self.next_pass_ms.get_or_insert(row.t_ms);
        self.span_ms = Some(
            self.span_ms
                .map_or((row.t_ms, row.t_ms), |(first, _)| (first, row.t_ms)),
        );
        self.rows += 1;
        self.note_life(&row);
        let value = |metric| {
            row.values
                .iter()
                .find(|(m, _)| *m == metric)
                .map(|&(_, v)| v)
        };
        self.series.record_values(&row.instance, row.t_ms, value);
        self.long.record(&row.instance, row.t_ms, value);
    }

    /// Runs the passes due up to the end of the history, and reports.
    ///
    /// # Errors
    ///
    /// [`BacktestError::NoRows`] when no row was replayed.
    pub fn finish(mut self) -> Result<BacktestReport, BacktestError> {
        let (first, last) = self.span_ms.ok_or(BacktestError::NoRows)?;
        while let Some(pass_ms) = self.next_pass_ms.filter(|&p| p <= last) {
            self.pass(pass_ms);
        }
        Ok(BacktestReport {
            span_ms: (first, last),
            rows: self.rows,
            instances: self.by_instance.len(),
            incidents: self.opened,
        })
    }

    fn note_life(&mut self, row: &RecordedRow) {
        if let Some((service, first_ms)) = self.by_instance.get(&row.instance)
            && let Some(life) =
                self.lives
                    .get_mut(&(service.clone(), *first_ms, row.instance.clone()))
        {
            life.last_ms = row.t_ms;
            return;
        }
        let down_after_ms = millis(self.options.down_after);
        // Its predecessors: instances of the service whose rows had stopped.
        let restarts = self
            .lives
            .values()
            .filter(|l| l.service == row.service && row.t_ms - l.last_ms > down_after_ms)
            .count();
        self.by_instance
            .insert(row.instance.clone(), (row.service.clone(), row.t_ms));
        self.lives.insert(
            (row.service.clone(), row.t_ms, row.instance.clone()),
            Replayed {
                service: row.service.clone(),
                instance: row.instance.clone(),
                first_ms: row.t_ms,
                last_ms: row.t_ms,
                restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
            },
        );
    }

    /// One detection pass at `now_ms`, as the collector's tick runs it.
    fn pass(&mut self, now_ms: i64) {
        self.next_pass_ms = Some(now_ms + millis(self.options.step));
        // No closer than the collector's own passes, and the long windows
        // once a minute, as there.
        if !self.detectors.due(now_ms) {
            return;
        }
        let down_after_ms = millis(self.options.down_after);
        let lives: Vec<Life<'_>> = self
            .lives
            .values()
            .filter(|l| l.first_ms <= now_ms)
            .map(|l| {
                let down = now_ms - l.last_ms > down_after_ms;
                Life {
                    service: &l.service,
                    instance_id: &l.instance,
                    started_at_ms: l.first_ms,
                    last_seen_ms: l.last_ms,
                    state: if down {
                        InstanceState::Down
                    } else {
                        InstanceState::Up
                    },
                    ending: down.then_some(Ending::Disconnected),
                    restarts: l.restarts,
                    last_snapshot: None,
                }
            })
            .collect();
        let stores = SeriesStores {
            series: &self.series,
            heap_sites: &self.heap_sites,
            long: &self.long,
        };
        let cuts = self.detectors.cut_lives(now_ms, &lives, stores, &self.book);
        let judged = self.detectors.check(cuts);
        DetectorSet::apply(judged, now_ms, &mut self.book);
        self.note_incidents(now_ms);
    }

    /// Keeps each incident as it opened, and when it resolved.
    fn note_incidents(&mut self, now_ms: i64) {
        let book = &self.book;
        let opened = &mut self.opened;
        self.still_open.retain(|id, &mut at| match book.get(id) {
            Some(incident) if incident.is_open() => true,
            ended => {
                opened[at].resolved_at_ms =
                    Some(ended.and_then(|i| i.resolved_at_ms).unwrap_or(now_ms));
                false
            }
        });
        for incident in book.list(StateFilter::Open) {
            if incident.opened_at_ms == now_ms && !self.still_open.contains_key(&incident.id) {
                self.still_open.insert(incident.id.clone(), opened.len());
                opened.push(incident.clone());
            }
        }
    }
}

/// Replays `rows`, in time order, through the detectors of `config`.
///
/// # Errors
///
/// [`BacktestError`] when there are no rows or the step is zero.
pub fn run(
    config: &Config,
    options: BacktestOptions,
    rows: impl IntoIterator<Item = RecordedRow>,
) -> Result<BacktestReport, BacktestError> {
    let mut backtest = Backtest::new(config, options)?;
    for row in rows {
        backtest.replay(row);
    }
    backtest.finish()
}

/// Rows a backtest reads from a data directory at most: a week of 100
/// instances at the store's 10 s resolution.
pub const MAX_STORE_ROWS: usize = 6_100_000;

/// The rows of a collector's data directory `dir` within `[from_ms, to_ms]`,
/// of `service` or of every service, in time order, ready to replay. The
/// collector must be stopped: a running one holds its store.
///
/// # Errors
///
/// [`BacktestError::Store`] when there is no store in `dir`, it is held,
/// it cannot be read, or the range holds more than [`MAX_STORE_ROWS`]
/// (narrow it with `--service` or `--since`).
pub fn read_store(
    dir: &std::path::Path,
    service: Option<&str>,
    (from_ms, to_ms): (i64, i64),
) -> Result<Vec<RecordedRow>, BacktestError> {
    let store = crate::store::Store::open_existing(dir).map_err(|e| {
        BacktestError::Store(format!(
            "{e}; a running collector holds its store: stop it, or backtest through its API (--collector)"
        ))
    })?;
    let mut rows = store
        .rows(service, None, (from_ms, to_ms), MAX_STORE_ROWS)
        .map_err(|e| BacktestError::Store(format!("{e}; narrow it with --service or --since")))?;
    rows.sort_by_key(|row| row.t_ms);
    Ok(rows)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
