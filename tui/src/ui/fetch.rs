//! The connection: a thread that asks the collectors for what the screens
//! need, once a second, and reports each round to the UI loop. A round
//! succeeds when at least one collector answers; those that did not are
//! named in its data, so the screen says so while the rest keeps updating.
//!
//! The UI tells the fetcher which series it wants ([`SeriesReq`]); a change
//! is fetched at once, so opening a detail does not wait for the next tick.
//! A failed round is reported with the backoff before the next attempt.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use meshwatch_api::Incident;

use super::conn::Backoff;
use super::window::Window;
use crate::collectors::{Collectors, Unreachable};
use crate::model::{ChartSpec, Instance, InstanceSeries};

/// One series a screen shows: a metric of every instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesReq {
    /// The service.
    pub service: String,
    /// The metric's API name.
    pub metric: &'static str,
    /// The history wanted.
    pub window: Window,
}

impl SeriesReq {
    /// The series behind `charts` for `service` over `window`.
    pub fn for_charts(service: &str, charts: &[ChartSpec], window: Window) -> Vec<SeriesReq> {
        charts
            .iter()
            .flat_map(|spec| spec.metrics.iter())
            .map(|metric| SeriesReq {
                service: service.to_owned(),
                metric: metric.name,
                window,
            })
            .collect()
    }
}

/// The mesh as of one round of requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Data {
    /// When the round ran (ms since the Unix epoch).
    pub at_ms: i64,
    /// Every instance.
    pub instances: Vec<Instance>,
    /// Open and resolved incidents, oldest first.
    pub incidents: Vec<Incident>,
    /// The series asked for; absent when not fetched yet or not served.
    pub series: HashMap<SeriesReq, Vec<InstanceSeries>>,
    /// The collectors that did not answer this round.
    pub unreachable: Vec<Unreachable>,
}

impl Data {
    /// The history of `req`, empty when there is none.
    pub fn series(&self, req: &SeriesReq) -> &[InstanceSeries] {
        self.series.get(req).map_or(&[], Vec::as_slice)
    }

    /// The instance with `instance_id`.
    pub fn instance(&self, instance_id: &str) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.view.instance_id == instance_id)
    }

    /// The incident with `id`.
    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.id == id)
    }
}

/// What the fetcher reports.
#[derive(Debug)]
pub enum Message {
    /// A round succeeded.
    Fetched(Box<Data>),
    /// A round failed; the next one is in `retry_in`.
    Failed {
        /// Why, in one line.
        error: String,
        /// The backoff.
        retry_in: Duration,
    },
}

/// The UI's end of the fetcher thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct Fetcher {
    wants: Sender<Vec<SeriesReq>>,
    messages: Receiver<Message>,
}

impl Fetcher {
    /// Starts fetching from `collectors` every `interval`.
    ///
    /// # Errors
    ///
    /// When the thread cannot be spawned.
    pub fn spawn(collectors: Collectors, interval: Duration) -> std::io::Result<Self> {
        let (wants_tx, wants_rx) = mpsc::channel();
        let (messages_tx, messages_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("meshwatch-fetch".to_owned())
            .spawn(move || fetch_loop(&collectors, interval, &wants_rx, &messages_tx))?;
        Ok(Self {
            wants: wants_tx,
            messages: messages_rx,
        })
    }

    /// Replaces the series wanted; fetched at once.
    pub fn want(&self, reqs: Vec<SeriesReq>) {
        // The thread only ends when this end is dropped.
        let _ = self.wants.send(reqs);
    }

    /// The next report, if one is waiting.
    pub fn try_recv(&self) -> Option<Message> {
        self.messages.try_recv().ok()
    }
}

fn fetch_loop(
    client: &Collectors,
    interval: Duration,
    wants: &Receiver<Vec<SeriesReq>>,
    messages: &Sender<Message>,
) {
    let mut reqs = Vec::new();
    let mut backoff = Backoff::default();
    loop {
        let (message, wait) = match fetch(client, &reqs, super::now_ms()) {
            Ok(data) => {
                backoff.reset();
                (Message::Fetched(Box::new(data)), interval)
            }
            Err(err) => {
                tracing::debug!("fetch failed: {err:#}");
                let retry_in = backoff.next();
                let error = format!("{:#}", err.root_cause());
                (Message::Failed { error, retry_in }, retry_in)
            }
        };
        if messages.send(message).is_err() {
            return;
        }
        match wants.recv_timeout(wait) {
            Ok(latest) => reqs = wants.try_iter().last().unwrap_or(latest),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// One round: services, incidents, then every wanted series, from every
/// collector at once.
fn fetch(collectors: &Collectors, reqs: &[SeriesReq], now_ms: i64) -> anyhow::Result<Data> {
    let instances = collectors.instances()?;
    let incidents = collectors.incidents()?;
    let mut series = HashMap::new();
    for req in reqs {
        if let Some(found) = collectors.series(&req.service, req.metric, req.window.range(now_ms)) {
            series.insert(req.clone(), found);
        }
    }
    let mut unreachable = instances.unreachable;
    for late in incidents.unreachable {
        if !unreachable.iter().any(|u| u.collector == late.collector) {
            unreachable.push(late);
        }
    }
    Ok(Data {
        at_ms: now_ms,
        instances: instances.value,
        incidents: incidents.value,
        series,
        unreachable,
    })
}
