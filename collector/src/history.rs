//! The flusher: moves queued history rows from memory into the store, and
//! deletes what is past retention.
//!
//! It runs as a task, but every store call runs on the blocking pool, since
//! a commit waits for the disk. Rows are written once a second, so a
//! collector killed with SIGKILL loses at most the last second of history
//! (the store itself stays consistent: redb commits are atomic).
//!
//! Rows the store refuses (a full disk) go back to the front of the queue
//! and are written once it recovers, so an outage shorter than the queue's
//! bound loses nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::long_history::{BROAD, InstanceFloors};
use crate::state::{Shared, now_ms};
use crate::store::HistoryRow;

const FLUSH_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows of a service read back to refill one instance's long view: four
/// days at the store's 10 s resolution for a few instances.
const MAX_SEED_ROWS: usize = 500_000;

/// Flushes every second and prunes every hour until `stop` fires, then
/// flushes one last time.
pub(crate) async fn flush_until_stopped(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = flush.tick() => flush_once(&shared).await,
            _ = prune.tick() => prune_once(&shared).await,
        }
    }
    flush_once(&shared).await;
}

async fn flush_once(shared: &Arc<Shared>) {
    let (rows, overflowed): (Vec<HistoryRow>, u64) = shared.lock().take_history();
    if overflowed > 0 {
        shared.stats.history_rows_dropped.inc_by(overflowed);
        tracing::warn!(
            overflowed,
            "history queue overflowed: the store is not keeping up"
        );
    }
    if rows.is_empty() {
        return;
    }
    let store = Arc::clone(&shared.store);
    let count = rows.len();
    let written =
        tokio::task::spawn_blocking(move || store.append(&rows).map_err(|err| (err, rows)));
    match written.await {
        Ok(Ok(())) => {
            shared.stats.history_rows_written.inc_by(count as u64);
            shared.stats.history_rows_waiting.set(0);
            if shared.stats.history_store_up.set(1) == 0 {
                tracing::info!("history store takes writes again: {count} waiting rows written");
            }
        }
        Ok(Err((err, rows_back))) => {
            // Kept for the store's recovery; the queue's bound drops (and
            // counts) the oldest if it lasts.
            tracing::debug!("keeping {count} history rows until the store recovers: {err}");
            shared.stats.history_store_up.set(0);
            let mut state = shared.lock();
            state.requeue_history(rows_back);
            shared
                .stats
                .history_rows_waiting
                .set(state.history_rows_waiting() as i64);
        }
        Err(err) => tracing::error!("history flush task failed: {err}"),
    }
}

async fn prune_once(shared: &Arc<Shared>) {
    let retention_ms =
        i64::try_from(shared.config.history_retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms().saturating_sub(retention_ms);
    let store = Arc::clone(&shared.store);
    match tokio::task::spawn_blocking(move || store.prune_before(cutoff)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(removed, "pruned history past retention"),
        Ok(Err(err)) => tracing::warn!("cannot prune history: {err}"),
        Err(err) => tracing::error!("history prune task failed: {err}"),
    }
}

/// Refills the long view of an instance that was alive before the collector
/// started (a probe reconnecting after the collector's restart) from the
/// persistent history, so its long windows need not fill again for days.
/// One refill runs at a time: a collector restarted under a thousand
/// probes reads the store one instance after another, not all at once.
pub(crate) async fn seed_long_history(shared: Arc<Shared>, service: String, instance: String) {
    let Ok(_permit) = shared.seeding.acquire().await else {
        return;
    };
    let now = now_ms();
    let reach_ms = BROAD.width_ms * BROAD.capacity as i64;
    let store = Arc::clone(&shared.store);
    let (svc, inst) = (service.clone(), instance.clone());
    let rows = tokio::task::spawn_blocking(move || {
        store.rows_of(&svc, &inst, (now - reach_ms, now), MAX_SEED_ROWS)
    })
    .await;
    let rows = match rows {
        Ok(Ok(rows)) => rows,
        Ok(Err(err)) => {
            tracing::warn!(%service, %instance, "cannot read back history for the long windows: {err}");
            return;
        }
        Err(err) => {
            tracing::error!("history read-back task failed: {err}");
            return;
        }
    };
    if rows.is_empty() {
        return;
    }
    let mut floors = InstanceFloors::default();
    for row in &rows {
        floors.record(row.t_ms, |metric| {
            row.values
                .iter()
                .find(|(m, _)| *m == metric)
                .map(|&(_, v)| v)
        });
    }
    let mut state = shared.lock();
    if state.registry.get(&instance).is_some() {
        state.long.prepend(&instance, floors);
        tracing::info!(%service, %instance, rows = rows.len(), "long windows refilled from the stored history");
    }
}
