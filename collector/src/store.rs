//! The persistent history: what the collector keeps across its own restarts.
//!
//! An embedded `redb` database in the data directory (`history.redb`). redb
//! commits are atomic and crash-safe (copy-on-write pages with checksums), so
//! a collector killed with SIGKILL reopens its store at the last commit,
//! never half-written.
//!
//! One row per instance per stored sample, keyed `(service, t_ms, instance)`
//! so a service's history, across its restarts, is one range scan. The value
//! holds every metric of the sample as JSON (`{"rss_bytes": 1.0, ...}`), by
//! name rather than by position so that adding a metric never misreads old
//! rows. Rows are written at most once per instance per `resolution` (the
//! in-memory rings keep the full rate for the recent past), in one
//! transaction per flush.
//!
//! A failed write (a full disk, an I/O error) leaves a redb database failed
//! for good: every later call answers `PreviousIo`. So the store closes it
//! and opens the file again, which replays redb's repair to the last commit.
//! While that fails (the disk is still full), the store is unavailable: its
//! calls answer [`StoreError::Unavailable`] at once, and it tries to reopen
//! again after a delay that doubles up to [`MAX_REOPEN_DELAY`], so a large
//! file is not re-read every second. Keeping the rows meanwhile is the
//! flusher's job ([`crate::history`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::series::{Metric, Point};

/// `(service, t_ms, instance)` → JSON object of metric values.
const HISTORY: TableDefinition<(&str, i64, &str), &[u8]> = TableDefinition::new("history_v1");

/// The page cache redb may use: the collector's memory budget is small, and
/// reads are mostly of recent pages.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// The first wait before reopening a failed store.
const FIRST_REOPEN_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to reopen a failed store.
pub(crate) const MAX_REOPEN_DELAY: Duration = Duration::from_secs(30);

/// Why the store failed. The collector keeps serving from memory when it does.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the history store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("history store failed: {0}")]
    Io(String),
    /// The store failed earlier and could not be opened again yet (a disk
    /// that is still full); it is tried again after a delay.
    #[error("the history store is unavailable since a failed write: {0}")]
    Unavailable(String),
    /// A range read would hold more rows than a query may read.
    #[error("the range holds more than {limit} stored rows")]
    RangeTooLarge {
        /// The rows a query may read.
        limit: usize,
    },
}

macro_rules! io_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(err: $t) -> Self {
                StoreError::Io(err.to_string())
            }
        }
    )*};
}
io_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// One instance's sample, as stored: what the collector writes, what it
/// reads back to refill a long view, and what a backtest replays
/// ([`crate::backtest::RecordedRow`] is this type).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// The service.
    pub service: String,
    /// The instance (a process start, or a Prometheus `instance` label).
    pub instance: String,
    /// When it was sampled, in ms since the Unix epoch.
    pub t_ms: i64,
    /// The metrics it holds.
    pub values: Vec<(Metric, f64)>,
}

/// The points of one series of one instance, from the store.
pub(crate) type StoredSeries = BTreeMap<String, Vec<Point>>;

/// The history database.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    /// `None` while failed and not yet reopened.
    db: RwLock<Option<Database>>,
    /// When a failed store is next tried, and the wait after that.
    reopen: Mutex<Reopen>,
}

/// The schedule of attempts to reopen a failed store.
#[derive(Debug)]
struct Reopen {
    at: Instant,
    delay: Duration,
    /// Why the store failed, for the answers while it is unavailable.
    reason: String,
}

/// Opens (or creates) the database at `path`, with its table.
fn create(path: &Path) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    // Create the table so that readers never meet a missing one.
    let txn = db.begin_write()?;
    txn.open_table(HISTORY)?;
    txn.commit()?;
    Ok(db)
}

impl Store {
    /// Opens (or creates) `history.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("history.redb");
        let db = create(&path)?;
        Ok(Self::holding(path, db))
    }

    /// Opens the `history.redb` of a data directory that must already hold
    /// one, to read it (a backtest of a stopped collector's history).
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("history.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(&path)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Self::holding(path, db))
    }

    fn holding(path: PathBuf, db: Database) -> Self {
        Self {
            path,
            db: RwLock::new(Some(db)),
            reopen: Mutex::new(Reopen {
                at: Instant::now(),
                delay: FIRST_REOPEN_DELAY,
                reason: String::new(),
            }),
        }
    }

    /// Whether the database is open and has not failed.
    pub fn is_available(&self) -> bool {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Runs `op` on the open database. A failure of the database itself
    /// (not a query's limit) closes it, to be reopened on a later call;
    /// a closed one is reopened first when its delay has passed.
    fn with_db<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.reopen_if_due()?;
        let result = {
            let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(db) => op(db),
                None => return Err(self.unavailable()),
            }
        };
        if let Err(StoreError::Io(reason)) = &result {
            self.close_failed(reason);
        }
        result
    }

    fn unavailable(&self) -> StoreError {
        let reopen = self.reopen.lock().unwrap_or_else(PoisonError::into_inner);
        StoreError::Unavailable(reopen.reason.clone())
    }

    /// Closes a database that failed, so that the next call after the
    /// first delay opens it again.
    fn close_failed(&self, reason: &str) {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if db.take().is_some() {
            tracing::warn!(path = %self.path.display(), "history store failed, closing it to reopen: {reason}");
            let mut reopen = self.reopen.lock().unwrap_or_else(PoisonError::into_inner);
            *reopen = Reopen {
                at: Instant::now() + FIRST_REOPEN_DELAY,
                delay: FIRST_REOPEN_DELAY,
                reason: reason.to_owned(),
            };
        }
    }

    /// Opens a closed database again if its delay has passed; doubles the
    /// delay when that fails.
    fn reopen_if_due(&self) -> Result<(), StoreError> {
        if self.is_available() {
            return Ok(());
        }
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let mut reopen = self.reopen.lock().unwrap_or_else(PoisonError::into_inner);
        if db.is_some() || Instant::now() < reopen.at {
            return Ok(());
        }
        match create(&self.path) {
            Ok(opened) => {
                tracing::info!(path = %self.path.display(), "history store reopened");
                *db = Some(opened);
                Ok(())
            }
            Err(err) => {
                reopen.delay = (reopen.delay * 2).min(MAX_REOPEN_DELAY);
                reopen.at = Instant::now() + reopen.delay;
                reopen.reason = err.to_string();
                Err(StoreError::Unavailable(reopen.reason.clone()))
            }
        }
    }

    /// Writes `rows` in one transaction: all of them or, on a crash, none.
    pub fn append(&self, rows: &[HistoryRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(HISTORY)?;
                for row in rows {
                    let values: serde_json::Map<String, serde_json::Value> = row
                        .values
                        .iter()
                        .map(|(metric, value)| (metric.name().to_owned(), (*value).into()))
                        .collect();
                    let bytes =
                        serde_json::to_vec(&values).map_err(|e| StoreError::Io(e.to_string()))?;
                    table.insert(
                        (row.service.as_str(), row.t_ms, row.instance.as_str()),
                        bytes.as_slice(),
                    )?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The points of `metric` for `service` within `[from_ms, to_ms]`, by
    /// instance, oldest first; only `instance` when given. Reads at most
    /// `max_rows` rows (each holds every metric of one instance at one
    /// time), and says so rather than read more.
    pub fn range(
        &self,
        service: &str,
        metric: Metric,
        instance: Option<&str>,
        (from_ms, to_ms): (i64, i64),
        max_rows: usize,
    ) -> Result<StoredSeries, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(HISTORY)?;
            let mut series = StoredSeries::new();
            let rows = table.range((service, from_ms, "")..=(service, to_ms, "\u{10ffff}"))?;
            for (read, entry) in rows.enumerate() {
                if read >= max_rows {
                    return Err(StoreError::RangeTooLarge { limit: max_rows });
                }
                let (key, value) = entry?;
                let (_, t_ms, row_instance) = key.value();
                if instance.is_some_and(|wanted| wanted != row_instance) {
                    continue;
                }
                // A row that does not decode (written by a future version, say)
                // is skipped, not fatal.
                let Some(values) = decode(value.value()) else {
                    continue;
                };
                if let Some(v) = values
                    .get(metric.name())
                    .and_then(serde_json::Value::as_f64)
                {
                    series
                        .entry(row_instance.to_owned())
                        .or_default()
                        .push((t_ms, v));
                }
            }
            Ok(series)
        })
    }

    /// Every row of one instance of `service` within `[from_ms, to_ms]`,
    /// oldest first: its history before the collector started, to refill
    /// its long view. Reads at most `max_rows` rows of the service, and says
    /// so rather than read more.
    pub fn rows_of(
        &self,
        service: &str,
        instance: &str,
        range: (i64, i64),
        max_rows: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.rows(Some(service), Some(instance), range, max_rows)
    }

    /// Every row within `[from_ms, to_ms]` of `service` (every service when
    /// `None`) and `instance` (every instance when `None`), by service, then
    /// time. Reads at most `max_rows` rows, and says so rather than read
    /// more.
    pub fn rows(
        &self,
        service: Option<&str>,
        instance: Option<&str>,
        (from_ms, to_ms): (i64, i64),
        max_rows: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(HISTORY)?;
            let entries = match service {
                Some(service) => {
                    table.range((service, from_ms, "")..=(service, to_ms, "\u{10ffff}"))?
                }
                None => table.iter()?,
            };
            let mut rows = Vec::new();
            for (read, entry) in entries.enumerate() {
                // A cut-off read would silently drop the newest rows.
                if read >= max_rows {
                    return Err(StoreError::RangeTooLarge { limit: max_rows });
                }
                let (key, value) = entry?;
                let (row_service, t_ms, row_instance) = key.value();
                if instance.is_some_and(|wanted| wanted != row_instance)
                    || !(from_ms..=to_ms).contains(&t_ms)
                {
                    continue;
                }
                let Some(map) = decode(value.value()) else {
                    continue;
                };
                let values = map
                    .iter()
                    .filter_map(|(name, v)| Some((Metric::from_name(name)?, v.as_f64()?)))
                    .collect();
                rows.push(HistoryRow {
                    service: row_service.to_owned(),
                    instance: row_instance.to_owned(),
                    t_ms,
                    values,
                });
            }
            Ok(rows)
        })
    }

    /// Deletes every row older than `t_ms`. Returns how many went.
    pub fn prune_before(&self, t_ms: i64) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let mut removed = 0;
            {
                let mut table = txn.open_table(HISTORY)?;
                table.retain(|(_, row_t, _), _| {
                    let keep = row_t >= t_ms;
                    if !keep {
                        removed += 1;
                    }
                    keep
                })?;
            }
            txn.commit()?;
            Ok(removed)
        })
    }
}

/// A stored row's metrics by name; `None` for a row that does not decode.
fn decode(bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, instance: &str, t_ms: i64, rss: f64) -> HistoryRow {
        HistoryRow {
            service: service.to_owned(),
            instance: instance.to_owned(),
            t_ms,
            values: vec![(Metric::RssBytes, rss), (Metric::Threads, 4.0)],
        }
    }

    #[test]
    fn appends_reads_by_service_and_instance_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .append(&[
                    row("checkout", "a", 1000, 1.0),
                    row("checkout", "b", 1500, 2.0),
                    row("checkout", "a", 2000, 3.0),
                    row("inventory", "c", 1500, 9.0),
                ])
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let all = store
            .range("checkout", Metric::RssBytes, None, (0, i64::MAX), 1000)
            .unwrap();
        assert_eq!(all["a"], vec![(1000, 1.0), (2000, 3.0)]);
        assert_eq!(all["b"], vec![(1500, 2.0)]);
        assert_eq!(all.len(), 2, "inventory is another service");
        let some = store
            .range("checkout", Metric::RssBytes, Some("a"), (1500, 2500), 1000)
            .unwrap();
        assert_eq!(
            some.into_iter().collect::<Vec<_>>(),
            vec![("a".to_owned(), vec![(2000, 3.0)])]
        );
        let absent = store
            .range("checkout", Metric::FdsOpen, None, (0, i64::MAX), 1000)
            .unwrap();
        assert!(absent.is_empty(), "a metric the rows lack has no points");
    }

    #[test]
    fn reads_back_every_metric_of_one_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .append(&[
                row("s", "a", 1000, 1.0),
                row("s", "b", 1500, 2.0),
                row("s", "a", 2000, 3.0),
            ])
            .unwrap();
        let rows = store.rows_of("s", "a", (0, 5000), 1000).unwrap();
        assert_eq!(
            rows,
            vec![row("s", "a", 1000, 1.0), row("s", "a", 2000, 3.0)]
        );
        assert!(
            matches!(
                store.rows_of("s", "a", (0, 5000), 2),
                Err(StoreError::RangeTooLarge { limit: 2 })
            ),
            "more rows than it may read is an error, not a cut"
        );
    }

    #[test]
    fn prunes_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .append(&[row("s", "a", 1000, 1.0), row("s", "a", 5000, 2.0)])
            .unwrap();
        assert_eq!(store.prune_before(3000).unwrap(), 1);
        let left = store
            .range("s", Metric::RssBytes, None, (0, i64::MAX), 1000)
            .unwrap();
        assert_eq!(left["a"], vec![(5000, 2.0)]);
    }

    #[test]
    fn a_range_read_stops_at_its_row_limit_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rows: Vec<_> = (0..10).map(|t| row("s", "a", t * 1000, 1.0)).collect();
        store.append(&rows).unwrap();
        let all = store.range("s", Metric::RssBytes, None, (0, i64::MAX), 10);
        assert_eq!(all.unwrap()["a"].len(), 10);
        let capped = store.range("s", Metric::RssBytes, None, (0, i64::MAX), 9);
        assert!(matches!(
            capped,
            Err(StoreError::RangeTooLarge { limit: 9 })
        ));
        let narrower = store.range("s", Metric::RssBytes, None, (0, 4000), 9);
        assert_eq!(narrower.unwrap()["a"].len(), 5);
    }
}
