//! Detectors: pure functions from a window of a service's history to a
//! verdict, and the runner that turns verdicts into incidents.
//!
//! A [`Detector`] says which series it reads and how far back ([`Needs`]);
//! the runner cuts that [`Window`] out of the stores for each service and
//! asks the detector to [`check`](Detector::check) it. The detector does no
//! I/O and reads no clock (the window carries `now_ms`), so it is
//! table-tested on synthetic series. Its [`Verdict`] is:
//!
//! - [`Verdict::Unhealthy`]: these problems are going on; each opens or
//!   refreshes the incident with key `(kind, service, instance, detail)`;
//!   open incidents of that kind and service that are not listed resolve;
//! - [`Verdict::Healthy`]: every open incident of that kind and service
//!   resolves;
//! - [`Verdict::Undecided`]: not enough data (a process just restarted, a
//!   window not yet full); open incidents stay as they are.
//!
//! The runner is called from the collector's periodic tick and runs the
//! detectors every [`Config::detect_interval`](crate::Config), not on every
//! snapshot, so their cost is bounded by the number of services, not by
//! the rate of snapshots.

pub mod crash_loop;
pub mod fd_leak;
pub mod leaks;
pub mod memory;
pub mod scale;
pub mod service_down;
pub mod socket_leak;
pub mod task_leak;
#[cfg(test)]
mod testing;
pub mod trend;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use meshwatch_proto::v1::Snapshot;

use crate::config::Config;
use crate::heap_sites::{HeapSiteStore, SiteHistory};
use crate::incidents::{Finding, IncidentBook, IncidentKey, IncidentKind};
use crate::long_history::{InstanceFloors, LongHistory};
use crate::registry::{Ending, Instance, InstanceState, Registry};
use crate::series::{Metric, Point, SeriesStore};
use meshwatch_api::evidence::InstanceLife;
pub use scale::{Scale, ScaleKind, due_scales};

/// What a detector needs cut out of the stores.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The series it reads.
    pub metrics: &'static [Metric],
    /// How far back from now.
    pub span: Duration,
    /// Whether it reads the instances' allocation sites.
    pub heap_sites: bool,
    /// Whether it reads the instances' latest snapshots.
    pub latest_snapshot: bool,
}

/// One kind of trouble, judged from a window of a service's history.
pub trait Detector: Send + Sync + std::fmt::Debug {
    /// The kind of incident it opens.
    fn kind(&self) -> IncidentKind;
    /// What the window must hold.
    fn needs(&self) -> Needs;
    /// Judges one service. Pure: everything it may use is in `window`.
    fn check(&self, window: &Window<'_>) -> Verdict;
}

/// A detector's conclusion about one service.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough data to tell; open incidents are left as they are.
    Undecided,
    /// Nothing wrong; open incidents of this kind resolve.
    Healthy,
    /// These problems are going on now.
    Unhealthy(Vec<Problem>),
}

/// One problem a detector found.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The instance concerned, or `None` for the service as a whole (a leak
    /// followed across restarts is one problem of the service).
    pub instance: Option<String>,
    /// Tells apart several problems of one kind on one subject; often empty.
    pub detail: String,
    /// Severity, summary and evidence.
    pub finding: Finding,
}

/// A service's recent history, as one detector asked for it.
#[derive(Debug, Clone)]
pub struct Window<'a> {
    /// The service judged.
    pub service: &'a str,
    /// The present, in ms since the Unix epoch.
    pub now_ms: i64,
    /// How far back the series reach, in ms.
    pub span_ms: i64,
    /// Whether an incident of the detector's kind is open for this service,
    /// so a detector can demand more to open one than to keep it (and not
    /// flap on the edge).
    pub open: bool,
    /// The kinds with an incident open for this service now, so that one
    /// detector can stand back for a more telling one (`service_down` for
    /// `crash_loop`).
    pub open_kinds: Vec<IncidentKind>,
    /// Whether this pass judges the long windows, which read the long view
    /// and change at most once a minute (a bucket): once a minute, not at
    /// every pass. On the other passes a detector that finds nothing on its
    /// shorter windows leaves an open incident as it is (`Undecided`)
    /// rather than resolve what a long window opened.
    pub long_due: bool,
    /// Every instance of the service the collector still knows, oldest
    /// start first, with the series of those that have points in the span.
    pub instances: Vec<InstanceWindow<'a>>,
}

/// One instance within a [`Window`].
#[derive(Debug, Clone)]
pub struct InstanceWindow<'a> {
    /// Random per process start.
    pub instance_id: &'a str,
    /// When the process started.
    pub started_at_ms: i64,
    /// When the collector last heard from it.
    pub last_seen_ms: i64,
    /// Up, down or restarted.
    pub state: InstanceState,
    /// How it went down, while down: a stop (its probe said goodbye) is no
    /// death.
    pub ending: Option<Ending>,
    /// Dead predecessors it replaces.
    pub restarts: u32,
    /// The points of each series asked for, within the span, oldest first.
    pub series: BTreeMap<Metric, Vec<Point>>,
    /// Its allocation sites, when asked for.
    pub heap_sites: Vec<&'a SiteHistory>,
    /// Its latest snapshot, for evidence a series does not hold (the spawn
    /// sites of alive tasks, say).
    pub latest: Option<&'a Snapshot>,
    /// Its long view, for windows longer than the rings hold: `None` when
    /// it has none (or its series are not in the span).
    pub long: Option<Arc<InstanceFloors>>,
}

impl InstanceWindow<'_> {
    /// The points of `metric` in the window; empty when not asked for or
    /// not recorded.
    pub fn points(&self, metric: Metric) -> &[Point] {
        self.series.get(&metric).map_or(&[], Vec::as_slice)
    }

    /// The points of `metric` in the trailing `window_ms` before `now_ms`.
    pub fn trailing(&self, metric: Metric, window_ms: i64, now_ms: i64) -> &[Point] {
        let all = self.points(metric);
        &all[all.partition_point(|&(t, _)| t < now_ms - window_ms)..]
    }

    /// Whether this instance may be judged on `scale` at `now_ms`: always on
    /// the detector's own window; on a short one only once it had lived
    /// `warm_up` before the part of the window a trend needs (80 %), so a
    /// process warming up (a pool filling, caches loading), which rises as
    /// steadily as a leak while it does, is done by then.
    pub fn past_warm_up(&self, scale: Scale, now_ms: i64, warm_up: Duration) -> bool {
        let covered_from = now_ms - scale.window_ms * 4 / 5;
        scale.kind != ScaleKind::Short
            || self.started_at_ms + warm_up.as_millis() as i64 <= covered_from
    }

    /// The latest value of `metric` in the window.
    pub fn latest(&self, metric: Metric) -> Option<f64> {
        self.points(metric).last().map(|&(_, v)| v)
    }

    /// The latest value of a count in the window, as a whole number.
    pub fn latest_count(&self, metric: Metric) -> Option<u64> {
        self.latest(metric).map(|v| v.max(0.0).round() as u64)
    }

    /// Whether it is down because it died, not because it stopped.
    pub fn died(&self) -> bool {
        self.state == InstanceState::Down && self.ending.is_none_or(Ending::is_death)
    }

    /// Its life, for evidence.
    pub fn life(&self) -> InstanceLife {
        InstanceLife {
            instance_id: self.instance_id.to_owned(),
            started_at_ms: self.started_at_ms,
            last_seen_at_ms: self.last_seen_ms,
            state: self.state,
            ending: self.ending,
            lived_seconds: (self.last_seen_ms - self.started_at_ms).max(0) / 1000,
            restarts: self.restarts,
        }
    }
}

/// The stores a detection pass reads.
#[derive(Debug, Clone, Copy)]
pub struct Stores<'a> {
    /// Which instances exist.
    pub registry: &'a Registry,
    /// Their series.
    pub series: &'a SeriesStore,
    /// Their allocation sites.
    pub heap_sites: &'a HeapSiteStore,
    /// Their long views.
    pub long: &'a LongHistory,
}

/// What a detection pass needs to know of an instance besides its series:
/// its life, from the registry or, in a backtest, from recorded history.
#[derive(Debug, Clone)]
pub struct Life<'a> {
    /// Its service.
    pub service: &'a str,
    /// Random per process start.
    pub instance_id: &'a str,
    /// When the process started.
    pub started_at_ms: i64,
    /// When it was last heard from.
    pub last_seen_ms: i64,
    /// Up, down or restarted.
    pub state: InstanceState,
    /// How it went down, while down.
    pub ending: Option<Ending>,
    /// Dead predecessors it replaces.
    pub restarts: u32,
    /// Its latest snapshot, when it has one.
    pub last_snapshot: Option<&'a Snapshot>,
}

impl<'a> From<&'a Instance> for Life<'a> {
    fn from(instance: &'a Instance) -> Self {
        Self {
            service: &instance.service,
            instance_id: &instance.instance_id,
            started_at_ms: instance.started_at_ms(),
            last_seen_ms: instance.last_seen_ms,
            state: instance.state,
            ending: instance.ending,
            restarts: instance.restarts,
            last_snapshot: instance.last_snapshot.as_ref(),
        }
    }
}

/// The series of a pass, wherever they are kept.
#[derive(Debug, Clone, Copy)]
pub struct SeriesStores<'a> {
    /// The full-rate rings.
    pub series: &'a SeriesStore,
    /// The allocation sites.
    pub heap_sites: &'a HeapSiteStore,
    /// The long views.
    pub long: &'a LongHistory,
}

/// The collector's detectors and when they last ran.
#[derive(Debug)]
pub struct DetectorSet {
    detectors: Vec<Box<dyn Detector>>,
    every_ms: i64,
    last_run_ms: Option<i64>,
    /// When the last pass that judged the long windows ran.
    last_long_ms: Option<i64>,
    /// Whether the pass counted by the last [`due`](Self::due) judges them.
    long_due: bool,
}

/// How often a pass judges the long windows: the long view's finest bucket.
const LONG_EVERY_MS: i64 = 60_000;

impl DetectorSet {
    /// Every detector, set up from `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            detectors: vec![
                Box::new(memory::MemoryGrowth::new(config.memory.clone())),
                Box::new(socket_leak::SocketLeak::new(config.leaks.clone())),
                Box::new(fd_leak::FdLeak::new(config.leaks.clone())),
                Box::new(task_leak::TaskLeak::new(config.leaks.clone())),
                Box::new(crash_loop::CrashLoop::new(config.leaks.clone())),
                Box::new(service_down::ServiceDown::new(
                    config.leaks.service_down_grace,
                )),
            ],
            every_ms: i64::try_from(config.detect_interval.as_millis()).unwrap_or(i64::MAX),
            last_run_ms: None,
            last_long_ms: None,
            long_due: true,
        }
    }

    /// Whether a detection pass is due at `now_ms`; if so, the pass is
    /// counted as run, and judges the long windows when a minute has passed
    /// since the last that did.
    pub fn due(&mut self, now_ms: i64) -> bool {
        if self
            .last_run_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < self.every_ms)
        {
            return false;
        }
        self.last_run_ms = Some(now_ms);
        self.long_due = self
            .last_long_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= LONG_EVERY_MS);
        if self.long_due {
            self.last_long_ms = Some(now_ms);
        }
        true
    }

    /// Copies out of the stores what every detector needs of the next
    /// batch of services of the pass `pass` (whole services, at least
    /// [`BATCH_INSTANCES`] instances unless the pass ends first): called
    /// under the collector's lock, which it holds only for the copying. The
    /// judging ([`check`](Self::check)) runs without it.
    ///
    /// A pass goes in batches because the windows copied out are large (a
    /// detector's minutes of points for each instance): all of a thousand
    /// instances' at once was a transient 200 MiB or more, which the
    /// allocator then kept as the collector's RSS.
    pub fn cut(
        &self,
        now_ms: i64,
        stores: Stores<'_>,
        incidents: &IncidentBook,
        pass: &mut Pass,
    ) -> Vec<Cut> {
        let lives: Vec<Life<'_>> = stores
            .registry
            .sorted()
            .into_iter()
            .filter(|i| pass.after.as_ref().is_none_or(|after| i.service > *after))
            .map(Life::from)
            .collect();
        let mut end = 0;
        for group in lives.chunk_by(|a, b| a.service == b.service) {
            if end >= BATCH_INSTANCES {
                break;
            }
            end += group.len();
        }
        let batch = &lives[..end];
        pass.after = batch.last().map(|l| l.service.to_owned());
        pass.done = end == lives.len();
        let series = SeriesStores {
            series: stores.series,
            heap_sites: stores.heap_sites,
            long: stores.long,
        };
        self.cut_lives(now_ms, batch, series, incidents)
    }

    /// Copies out what every detector needs of every service of `lives`,
    /// which are sorted by service.
    pub fn cut_lives(
        &self,
        now_ms: i64,
        lives: &[Life<'_>],
        stores: SeriesStores<'_>,
        incidents: &IncidentBook,
    ) -> Vec<Cut> {
        let mut cuts = Vec::new();
        for group in lives.chunk_by(|a, b| a.service == b.service) {
            let service = group[0].service;
            let open_kinds = incidents.open_kinds(service);
            for (detector, d) in self.detectors.iter().enumerate() {
                cuts.push(Cut::of(
                    detector,
                    d.kind(),
                    d.needs(),
                    group,
                    (now_ms, self.long_due),
                    stores,
                    open_kinds.clone(),
                ));
            }
        }
        cuts
    }

    /// Judges every cut: pure, and free of the collector's lock. A
    /// service's cuts are judged in the detectors' order, and each verdict
    /// updates the open kinds the later detectors of that service see, as
    /// if each verdict were applied before the next detector ran (so
    /// `service_down` stands back in the very pass `crash_loop` opens).
    pub fn check(&self, cuts: Vec<Cut>) -> Vec<Judged> {
        let mut judged = Vec::with_capacity(cuts.len());
        let mut open: Option<(String, Vec<IncidentKind>)> = None;
        for mut cut in cuts {
            let Some(detector) = self.detectors.get(cut.detector) else {
                continue;
            };
            match &open {
                Some((service, kinds)) if *service == cut.service => {
                    cut.open_kinds.clone_from(kinds)
                }
                _ => open = Some((cut.service.clone(), cut.open_kinds.clone())),
            }
            let verdict = detector.check(&cut.window());
            if let Some((_, kinds)) = &mut open {
                match &verdict {
                    Verdict::Unhealthy(problems) if !problems.is_empty() => {
                        if !kinds.contains(&cut.kind) {
                            kinds.push(cut.kind.clone());
                        }
                    }
                    Verdict::Unhealthy(_) | Verdict::Healthy => kinds.retain(|k| *k != cut.kind),
                    Verdict::Undecided => {}
                }
            }
            judged.push(Judged {
                kind: cut.kind,
                service: cut.service,
                verdict,
            });
        }
        judged
    }

    /// Applies the verdicts to `incidents`, under the lock again.
    pub fn apply(judged: Vec<Judged>, now_ms: i64, incidents: &mut IncidentBook) {
        for j in judged {
            apply(j.verdict, j.kind, &j.service, now_ms, incidents);
        }
    }
}

/// Instances whose windows one batch of a detection pass copies out: a few
/// MiB of points at most.
pub const BATCH_INSTANCES: usize = 64;

/// How far a detection pass has gone: the services are cut and judged in
/// batches, in order of name.
#[derive(Debug, Default)]
pub struct Pass {
    /// The last service of the last batch.
    after: Option<String>,
    done: bool,
}

impl Pass {
    /// Whether every service has been cut.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// What one detector needs of one service, copied out of the stores.
#[derive(Debug)]
pub struct Cut {
    detector: usize,
    kind: IncidentKind,
    service: String,
    now_ms: i64,
    long_due: bool,
    span_ms: i64,
    open_kinds: Vec<IncidentKind>,
    instances: Vec<CutInstance>,
}

/// One instance within a [`Cut`]: what [`InstanceWindow`] borrows.
#[derive(Debug)]
struct CutInstance {
    instance_id: String,
    started_at_ms: i64,
    last_seen_ms: i64,
    state: InstanceState,
    ending: Option<Ending>,
    restarts: u32,
    series: BTreeMap<Metric, Vec<Point>>,
    heap_sites: Vec<SiteHistory>,
    latest: Option<Snapshot>,
    long: Option<Arc<InstanceFloors>>,
}

/// A detector's verdict on one service, to apply.
#[derive(Debug)]
pub struct Judged {
    kind: IncidentKind,
    service: String,
    verdict: Verdict,
}

impl Cut {
    fn of(
        detector: usize,
        kind: IncidentKind,
        needs: Needs,
        group: &[Life<'_>],
        (now_ms, long_due): (i64, bool),
        stores: SeriesStores<'_>,
        open_kinds: Vec<IncidentKind>,
    ) -> Self {
        let span_ms = i64::try_from(needs.span.as_millis()).unwrap_or(i64::MAX);
        let from = now_ms.saturating_sub(span_ms);
        let mut instances: Vec<CutInstance> = group
            .iter()
            .map(|life| {
                let recent = life.last_seen_ms >= from;
                let series = needs
                    .metrics
                    .iter()
                    .filter(|_| recent)
                    .map(|&metric| {
                        let points =
                            stores
                                .series
                                .range(life.instance_id, metric, Some(from), None);
                        (metric, points)
                    })
                    .collect();
                let heap_sites = if needs.heap_sites && recent {
                    stores.heap_sites.sites(life.instance_id).cloned().collect()
                } else {
                    Vec::new()
                };
                CutInstance {
                    instance_id: life.instance_id.to_owned(),
                    started_at_ms: life.started_at_ms,
                    last_seen_ms: life.last_seen_ms,
                    state: life.state,
                    ending: life.ending,
                    restarts: life.restarts,
                    series,
                    heap_sites,
                    latest: needs
                        .latest_snapshot
                        .then(|| life.last_snapshot.cloned())
                        .flatten(),
                    long: recent.then(|| stores.long.get(life.instance_id)).flatten(),
                }
            })
            .collect();
        instances.sort_by(|a, b| {
            (a.started_at_ms, &a.instance_id).cmp(&(b.started_at_ms, &b.instance_id))
        });
        Self {
            detector,
            kind,
            service: group
                .first()
                .map_or_else(String::new, |l| l.service.to_owned()),
            now_ms,
            long_due,
            span_ms,
            open_kinds,
            instances,
        }
    }

    /// The window the detector judges, borrowed from the cut (its series
    /// moved into it: a cut is judged once).
    fn window(&mut self) -> Window<'_> {
        Window {
            service: &self.service,
            now_ms: self.now_ms,
            span_ms: self.span_ms,
            open: self.open_kinds.contains(&self.kind),
            open_kinds: self.open_kinds.clone(),
            long_due: self.long_due,
            instances: self
                .instances
                .iter_mut()
                .map(|i| InstanceWindow {
                    series: std::mem::take(&mut i.series),
                    instance_id: &i.instance_id,
                    started_at_ms: i.started_at_ms,
                    last_seen_ms: i.last_seen_ms,
                    state: i.state,
                    ending: i.ending,
                    restarts: i.restarts,
                    heap_sites: i.heap_sites.iter().collect(),
                    latest: i.latest.as_ref(),
                    long: i.long.clone(),
                })
                .collect(),
        }
    }
}

fn apply(
    verdict: Verdict,
    kind: IncidentKind,
    service: &str,
    now_ms: i64,
    incidents: &mut IncidentBook,
) {
    let problems = match verdict {
        Verdict::Undecided => return,
        Verdict::Healthy => Vec::new(),
        Verdict::Unhealthy(problems) => problems,
    };
    let mut reported = HashSet::new();
    for problem in problems {
        let key = IncidentKey {
            kind: kind.clone(),
            service: service.to_owned(),
            instance: problem.instance,
            detail: problem.detail,
        };
        incidents.report(&key, problem.finding, now_ms);
        reported.insert(key);
    }
    incidents.resolve_where(
        |key| key.kind == kind && key.service == service && !reported.contains(key),
        now_ms,
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use meshwatch_proto::v1::Hello;

    use super::*;
    use crate::incidents::{Severity, StateFilter};
    use crate::registry::RegistryLimits;

    /// Answers whatever the test put in, and records what it was shown.
    #[derive(Debug, Default)]
    struct Scripted {
        verdict: Mutex<Option<Verdict>>,
        seen: Mutex<Vec<(String, bool, usize)>>,
    }

    impl Detector for &'static Scripted {
        fn kind(&self) -> IncidentKind {
            IncidentKind::FdLeak
        }
        fn needs(&self) -> Needs {
            Needs {
                metrics: &[Metric::FdsOpen],
                span: Duration::from_secs(60),
                heap_sites: false,
                latest_snapshot: false,
            }
        }
        fn check(&self, window: &Window<'_>) -> Verdict {
            self.seen.lock().unwrap().push((
                window.service.to_owned(),
                window.open,
                window.instances.len(),
            ));
            self.verdict
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(Verdict::Undecided)
        }
    }

    /// One tick of the runner, as the collector's ticker runs it.
    fn tick(set: &mut DetectorSet, now_ms: i64, stores: Stores<'_>, book: &mut IncidentBook) {
        if set.due(now_ms) {
            let mut pass = Pass::default();
            while !pass.done() {
                let judged = set.check(set.cut(now_ms, stores, book, &mut pass));
                DetectorSet::apply(judged, now_ms, book);
            }
        }
    }

    fn problem(detail: &str) -> Problem {
        Problem {
            instance: None,
            detail: detail.to_owned(),
            finding: Finding {
                severity: Severity::Warning,
                summary: detail.to_owned(),
                evidence: crate::incidents::Evidence::Other(serde_json::Value::Null),
            },
        }
    }

    fn registry() -> Registry {
        Registry::new(RegistryLimits {
            down_after_missed: 3,
            restarted_display_ms: 1000,
            max_down_per_service: 2,
            max_down: 1000,
            down_retention_ms: i64::MAX,
        })
    }

    /// Always finds one problem of its kind.
    #[derive(Debug)]
    struct Always(IncidentKind);

    impl Detector for Always {
        fn kind(&self) -> IncidentKind {
            self.0.clone()
        }
        fn needs(&self) -> Needs {
            Needs {
                metrics: &[],
                span: Duration::from_secs(60),
                heap_sites: false,
                latest_snapshot: false,
            }
        }
        fn check(&self, _: &Window<'_>) -> Verdict {
            Verdict::Unhealthy(vec![problem("always")])
        }
    }

    #[test]
    fn a_later_detector_sees_what_an_earlier_one_opened_in_the_same_pass() {
        let mut set = DetectorSet {
            detectors: vec![
                Box::new(Always(IncidentKind::CrashLoop)),
                Box::new(service_down::ServiceDown::new(Duration::from_secs(1))),
            ],
            every_ms: 1000,
            last_run_ms: None,
            last_long_ms: None,
            long_due: true,
        };
        let mut registry = registry();
        let conn = registry.hello(
            &Hello {
                service: "dying".to_owned(),
                instance_id: "d1".to_owned(),
                ..Hello::default()
            },
            0,
        );
        registry.disconnect("d1", conn);
        let (series, sites) = (SeriesStore::new(10), HeapSiteStore::new(0));
        let long = LongHistory::default();
        let stores = Stores {
            registry: &registry,
            series: &series,
            heap_sites: &sites,
            long: &long,
        };
        let mut book = IncidentBook::default();
        tick(&mut set, 60_000, stores, &mut book);
        let kinds: Vec<IncidentKind> = book
            .list(StateFilter::Open)
            .into_iter()
            .map(|i| i.kind.clone())
            .collect();
        assert_eq!(
            kinds,
            [IncidentKind::CrashLoop],
            "one dying service, one incident"
        );
    }

    /// A set of one [`Scripted`] detector, due every second.
    fn scripted_set() -> (&'static Scripted, DetectorSet) {
        let scripted: &'static Scripted = Box::leak(Box::default());
        let set = DetectorSet {
            detectors: vec![Box::new(scripted)],
            every_ms: 1000,
            last_run_ms: None,
            last_long_ms: None,
            long_due: true,
        };
        (scripted, set)
    }

    #[test]
    fn a_pass_goes_in_batches_of_whole_services_and_judges_each_once() {
        let (scripted, set) = scripted_set();
        let mut registry = registry();
        // 50 services of 3 instances: 150, more than two batches.
        for service in 0..50 {
            for instance in 0..3 {
                registry.hello(
                    &Hello {
                        service: format!("s{service:02}"),
                        instance_id: format!("s{service:02}-{instance}"),
                        ..Hello::default()
                    },
                    0,
                );
            }
        }
        let (series, sites, long) = (
            SeriesStore::new(10),
            HeapSiteStore::new(0),
            LongHistory::default(),
        );
        let stores = Stores {
            registry: &registry,
            series: &series,
            heap_sites: &sites,
            long: &long,
        };
        let book = IncidentBook::default();
        let mut pass = Pass::default();
        let mut batches = Vec::new();
        while !pass.done() {
            let cuts = set.cut(1000, stores, &book, &mut pass);
            let instances: usize = cuts.iter().map(|c| c.instances.len()).sum();
            assert!(
                instances <= BATCH_INSTANCES + 2,
                "a batch stops at the first whole service past {BATCH_INSTANCES}: {instances}"
            );
            batches.push(instances);
            set.check(cuts);
        }
        assert_eq!(batches.iter().sum::<usize>(), 150, "{batches:?}");
        assert!(batches.len() >= 3, "{batches:?}");
        let seen = scripted.seen.lock().unwrap();
        let services: Vec<&str> = seen.iter().map(|(s, _, _)| s.as_str()).collect();
        let expected: Vec<String> = (0..50).map(|s| format!("s{s:02}")).collect();
        assert_eq!(services, expected, "each service once, in order");
        assert!(
            seen.iter().all(|(_, _, n)| *n == 3),
            "never split: {seen:?}"
        );
    }

    #[test]
    fn runs_when_due_per_service_and_applies_verdicts() {
        let (scripted, mut set) = scripted_set();
        let mut registry = registry();
        for (service, id) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
            registry.hello(
                &Hello {
                    service: service.to_owned(),
                    instance_id: id.to_owned(),
                    ..Hello::default()
                },
                0,
            );
        }
        let series = SeriesStore::new(10);
        let sites = HeapSiteStore::new(0);
        let long = LongHistory::default();
        let stores = Stores {
            registry: &registry,
            series: &series,
            heap_sites: &sites,
            long: &long,
        };
        let mut book = IncidentBook::default();
        let open = |book: &IncidentBook| book.list(StateFilter::Open).len();

        *scripted.verdict.lock().unwrap() =
            Some(Verdict::Unhealthy(vec![problem("x"), problem("y")]));
        tick(&mut set, 1000, stores, &mut book);
        assert_eq!(open(&book), 4, "two problems in each of two services");
        tick(&mut set, 1500, stores, &mut book);
        assert_eq!(scripted.seen.lock().unwrap().len(), 2, "not due again yet");

        *scripted.verdict.lock().unwrap() = Some(Verdict::Unhealthy(vec![problem("x")]));
        tick(&mut set, 2000, stores, &mut book);
        assert_eq!(open(&book), 2, "y resolved in both services");
        *scripted.verdict.lock().unwrap() = Some(Verdict::Undecided);
        tick(&mut set, 3000, stores, &mut book);
        assert_eq!(open(&book), 2, "undecided leaves them open");
        *scripted.verdict.lock().unwrap() = Some(Verdict::Healthy);
        tick(&mut set, 4000, stores, &mut book);
        assert_eq!(open(&book), 0);

        let seen = scripted.seen.lock().unwrap();
        assert_eq!(seen[0], ("a".to_owned(), false, 2));
        assert_eq!(seen[1], ("b".to_owned(), false, 1));
        assert_eq!(
            seen[2],
            ("a".to_owned(), true, 2),
            "told an incident is open"
        );
    }
}
