//! Which instances exist, and whether each is up, down or restarted.
//!
//! An *instance* is one process start of a *service*: the probe draws a new
//! `instance_id` at every start, so a reconnection after a network blip
//! revives the same instance, while a process that died and came back is a
//! new instance of the same service. When a new instance appears while an
//! earlier one of its service is down, the new one is `restarted` and
//! inherits the restart count plus one: that is how crash loops become
//! visible.
//!
//! This module is pure: every method takes the current time as `now_ms`
//! (milliseconds since the Unix epoch), never reads the clock, and does no
//! I/O, so every transition is unit-tested with explicit timestamps.

use std::collections::HashMap;

use meshwatch_proto::v1::{Hello, Snapshot};

/// The interval assumed for a probe that announces none.
const DEFAULT_INTERVAL_MS: u32 = 1000;
/// The longest snapshot interval believed: a probe announcing more (up to
/// `u32::MAX` ms) would hold its slot for months without going down.
pub(crate) const MAX_INTERVAL_MS: u32 = 60_000;

pub use meshwatch_api::evidence::Ending;
pub use meshwatch_api::{InstanceState, ThreadCpu};

/// Identifies one connection of an instance, so that the close of an old
/// connection cannot mark down an instance that has already reconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(u64);

#[cfg(test)]
impl ConnId {
    /// Connection number `n`, for tests that need one without a registry.
    pub(crate) const fn numbered(n: u64) -> Self {
        Self(n)
    }
}

/// The bounds and timings the registry enforces.
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    /// Intervals without a snapshot before an instance is `down`.
    pub down_after_missed: u32,
    /// How long a restarted instance shows `restarted`, in milliseconds.
    pub restarted_display_ms: i64,
    /// Down instances kept per service; older ones are forgotten, so a crash
    /// loop cannot grow the registry without bound.
    pub max_down_per_service: usize,
    /// Down instances kept in all, whatever their service: services named
    /// after their pods come and go by the thousand, and the oldest down
    /// instances beyond this are forgotten.
    pub max_down: usize,
    /// How long a down instance is kept, in milliseconds.
    pub down_retention_ms: i64,
}

/// Everything known about one instance. Read-only outside this module: the
/// registry hands out shared references only, so its invariants hold.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The service's name, shared by all its instances.
    pub service: String,
    /// Random per process start, from the probe's Hello.
    pub instance_id: String,
    /// The process id on its host.
    pub pid: u32,
    /// The host the process runs on.
    pub host: String,
    /// The service's language or runtime (`rust`, `node`, ...).
    pub runtime: String,
    /// The probe library's version.
    pub probe_version: String,
    /// Watched from outside (`--watch`) rather than by a linked probe.
    pub watched_from_outside: bool,
    /// When the process started (ms since the epoch), as the probe reported.
    pub start_time_ms: i64,
    /// The probe's secret from its Hello: only that probe may take this
    /// instance back while it is connected. Never shown.
    pub(crate) session_key: Vec<u8>,
    /// When the collector first heard of this instance.
    pub first_seen_ms: i64,
    /// When the collector last heard from it (Hello, Snapshot or Event).
    pub last_seen_ms: i64,
    /// The probe's snapshot interval, as announced (0 when it announced none).
    pub interval_ms: u32,
    /// Up, down or restarted.
    pub state: InstanceState,
    /// How many dead predecessors this instance replaces, in a chain.
    pub restarts: u32,
    /// Whether a probe connection for this instance is open now.
    pub connected: bool,
    /// The latest snapshot, `None` until the first arrives.
    pub last_snapshot: Option<Snapshot>,
    /// Process CPU use between the last two snapshots, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Per-thread CPU use between the last two snapshots.
    pub thread_cpu: Vec<ThreadCpu>,
    /// The probe said goodbye before its connection closed: the process
    /// stopped on purpose (a deploy, a Ctrl-C), which is no death.
    pub stopped: bool,
    /// How it went down, while down: a stop (after a goodbye), a lost
    /// connection, or silence. `None` while up.
    pub ending: Option<Ending>,
    restarted_until_ms: Option<i64>,
    /// A successor has already counted this instance's death.
    succeeded: bool,
    conn: ConnId,
}

impl Instance {
    /// Whether `hello` is from the probe that registered this instance:
    /// the same session key, a secret the API never shows. Between probes
    /// older than the key (both empty), the same pid, host and start time,
    /// which is weaker: the API shows those.
    pub(crate) fn is_same_probe(&self, hello: &Hello) -> bool {
        if self.session_key.is_empty() && hello.session_key.is_empty() {
            self.pid == hello.pid
                && self.host == hello.host
                && self.start_time_ms == hello.start_time_unix_ms
        } else {
            self.session_key == hello.session_key
        }
    }

    /// The snapshot interval to expect, with a default for probes that
    /// announce none.
    pub fn effective_interval_ms(&self) -> u32 {
        if self.interval_ms == 0 {
            DEFAULT_INTERVAL_MS
        } else {
            self.interval_ms.min(MAX_INTERVAL_MS)
        }
    }

    /// When the process started: the probe's figure, else first contact.
    pub fn started_at_ms(&self) -> i64 {
        if self.start_time_ms > 0 {
            self.start_time_ms
        } else {
            self.first_seen_ms
        }
    }

    /// Seconds the process has lived: up to `now_ms` while alive, up to the
    /// last contact once down.
    pub fn uptime_seconds(&self, now_ms: i64) -> u64 {
        let end = if self.state == InstanceState::Down {
            self.last_seen_ms
        } else {
            now_ms
        };
        u64::try_from(end.saturating_sub(self.started_at_ms()) / 1000).unwrap_or(0)
    }

    fn revive(&mut self, now_ms: i64) {
        self.stopped = false;
        self.ending = None;
        self.state = match self.restarted_until_ms {
            Some(until) if now_ms < until => InstanceState::Restarted,
            _ => InstanceState::Up,
        };
    }
}

/// All instances the collector knows, keyed by instance id.
#[derive(Debug)]
pub struct Registry {
    limits: RegistryLimits,
    instances: HashMap<String, Instance>,
    next_conn: u64,
}

impl Registry {
    /// An empty registry enforcing `limits`.
    pub fn new(limits: RegistryLimits) -> Self {
        Self {
            limits,
            instances: HashMap::new(),
            next_conn: 0,
        }
    }

    /// The live instance `hello` would take over though it is another
    /// probe: its id is on an open connection, and the Hello is not from
    /// the same probe ([`Instance::is_same_probe`]). A probe reconnecting
    /// before its old connection was found dead is let in.
    pub fn held_by_another(&self, hello: &Hello) -> Option<&Instance> {
        self.instances
            .get(&hello.instance_id)
            .filter(|i| i.connected && !i.is_same_probe(hello))
    }

    /// Records an accepted Hello and returns the id of this connection.
    ///
    /// A known `instance_id` is a reconnection and revives that instance. A
    /// new one replacing a dead instance of the same service is `restarted`.
    pub fn hello(&mut self, hello: &Hello, now_ms: i64) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        if let Some(instance) = self.instances.get_mut(&hello.instance_id) {
            instance.service.clone_from(&hello.service);
            instance.pid = hello.pid;
            instance.session_key.clone_from(&hello.session_key);
            instance.interval_ms = hello.interval_ms;
            instance.last_seen_ms = now_ms;
            instance.connected = true;
            instance.conn = conn;
            instance.revive(now_ms);
            return conn;
        }
        let predecessor = self
            .instances
            .values_mut()
            .filter(|i| {
                i.service == hello.service && i.state == InstanceState::Down && !i.succeeded
            })
            .max_by_key(|i| i.last_seen_ms);
        let (state, restarts, restarted_until_ms) = match predecessor {
            Some(previous) => {
                previous.succeeded = true;
                (
                    InstanceState::Restarted,
                    previous.restarts.saturating_add(1),
                    Some(now_ms.saturating_add(self.limits.restarted_display_ms)),
                )
            }
            None => (InstanceState::Up, 0, None),
        };
        self.instances.insert(
            hello.instance_id.clone(),
            Instance {
                service: hello.service.clone(),
                instance_id: hello.instance_id.clone(),
                pid: hello.pid,
                host: hello.host.clone(),
                runtime: hello.runtime.clone(),
                probe_version: hello.probe_version.clone(),
                watched_from_outside: hello.watched_from_outside,
                start_time_ms: hello.start_time_unix_ms,
                session_key: hello.session_key.clone(),
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                interval_ms: hello.interval_ms,
                state,
                restarts,
                connected: true,
                last_snapshot: None,
                cpu_percent: None,
                thread_cpu: Vec::new(),
                stopped: false,
                ending: None,
                restarted_until_ms,
                succeeded: false,
                conn,
            },
        );
        conn
    }

    /// Records a snapshot and derives CPU use from its predecessor. Returns
    /// the updated instance, or `None` when `conn` is not the instance's
    /// current connection (the snapshot is then ignored).
    pub fn snapshot(
        &mut self,
        instance_id: &str,
        conn: ConnId,
        snapshot: Snapshot,
        now_ms: i64,
    ) -> Option<&Instance> {
        let instance = self.current(instance_id, conn)?;
        instance.last_seen_ms = now_ms;
        if instance.state == InstanceState::Down {
            instance.revive(now_ms);
        }
        let (cpu_percent, thread_cpu) = cpu_use(instance.last_snapshot.as_ref(), &snapshot);
        instance.cpu_percent = cpu_percent;
        instance.thread_cpu = thread_cpu;
        instance.last_snapshot = Some(snapshot);
        Some(instance)
    }

    /// Notes that the probe on `conn` is stopping on purpose; its instance
    /// goes down when the connection closes, as a stop rather than a death.
    pub fn goodbye(&mut self, instance_id: &str, conn: ConnId) {
        if let Some(instance) = self.current(instance_id, conn) {
            instance.stopped = true;
        }
    }

    /// Notes that `conn` is alive: an event arrived, or a message that is
    /// still being prepared (its stacks named), so that the wait does not
    /// read as the probe's silence. Returns the instance, or `None` when
    /// `conn` is not its current connection.
    pub fn heard_from(
        &mut self,
        instance_id: &str,
        conn: ConnId,
        now_ms: i64,
    ) -> Option<&Instance> {
        let instance = self.current(instance_id, conn)?;
        instance.last_seen_ms = now_ms;
        Some(instance)
    }

    /// Marks an instance down because its connection closed, unless it has
    /// reconnected since on another connection.
    pub fn disconnect(&mut self, instance_id: &str, conn: ConnId) {
        if let Some(instance) = self.current(instance_id, conn) {
            instance.connected = false;
            instance.state = InstanceState::Down;
            instance.restarted_until_ms = None;
            // Silence noticed first stays the story: the connection of a
            // hung process closes later, if ever.
            let ending = if instance.stopped {
                Ending::Stopped
            } else {
                Ending::Disconnected
            };
            instance.ending.get_or_insert(ending);
        }
    }

    /// Applies the passage of time: instances silent for too many intervals
    /// go down, restarted ones settle to up, and the oldest down instances of
    /// a service beyond the limit are forgotten. Returns the ids forgotten,
    /// so their history can go too.
    pub fn tick(&mut self, now_ms: i64) -> Vec<String> {
        for instance in self.instances.values_mut() {
            let allowed = i64::from(instance.effective_interval_ms())
                * i64::from(self.limits.down_after_missed);
            match instance.state {
                InstanceState::Down => {}
                _ if now_ms.saturating_sub(instance.last_seen_ms) > allowed => {
                    instance.state = InstanceState::Down;
                    instance.restarted_until_ms = None;
                    instance.ending = Some(Ending::MissedHeartbeats);
                }
                InstanceState::Restarted => instance.revive(now_ms),
                InstanceState::Up | InstanceState::Unknown => {}
            }
        }
        self.prune(now_ms)
    }

    /// Forgets the down instances beyond the limit per service and those
    /// down for longer than the retention.
    fn prune(&mut self, now_ms: i64) -> Vec<String> {
        let mut down_by_service: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
        for instance in self.instances.values() {
            if instance.state == InstanceState::Down && !instance.connected {
                down_by_service
                    .entry(&instance.service)
                    .or_default()
                    .push((instance.last_seen_ms, &instance.instance_id));
            }
        }
        let mut forgotten = Vec::new();
        let mut kept = Vec::new();
        for mut down in down_by_service.into_values() {
            down.sort_unstable();
            let excess = down.len().saturating_sub(self.limits.max_down_per_service);
            let expired = down
                .iter()
                .take_while(|&&(last_seen, _)| {
                    now_ms.saturating_sub(last_seen) > self.limits.down_retention_ms
                })
                .count();
            let forget = excess.max(expired);
            forgotten.extend(down[..forget].iter().map(|&(_, id)| id.to_owned()));
            kept.extend_from_slice(&down[forget..]);
        }
        // Then the oldest of all services beyond the total.
        let excess = kept.len().saturating_sub(self.limits.max_down);
        if excess > 0 {
            kept.select_nth_unstable(excess - 1);
            forgotten.extend(kept[..excess].iter().map(|&(_, id)| id.to_owned()));
        }
        for id in &forgotten {
            self.instances.remove(id);
        }
        forgotten
    }

    /// How many intervals of silence take an instance down.
    pub fn down_after_missed(&self) -> u32 {
        self.limits.down_after_missed
    }

    /// The live instance watched from outside (`--watch`) that is process
    /// `pid` of `host`, and its connection: the same process reporting
    /// another way (OTLP) is that instance, not a second one.
    pub fn watched_process(&self, host: &str, pid: u32) -> Option<(&str, ConnId)> {
        self.instances
            .values()
            .find(|i| {
                i.watched_from_outside
                    && i.connected
                    && i.state != InstanceState::Down
                    && i.pid == pid
                    && i.host == host
            })
            .map(|i| (i.instance_id.as_str(), i.conn))
    }

    /// Forgets an instance at once: one found to be a second view of
    /// another.
    pub fn forget(&mut self, instance_id: &str) {
        self.instances.remove(instance_id);
    }

    /// The instance with this id, if known.
    pub fn get(&self, instance_id: &str) -> Option<&Instance> {
        self.instances.get(instance_id)
    }

    /// Every instance, sorted by service, then start time, then id: the
    /// order of the API, stable across calls.
    pub fn sorted(&self) -> Vec<&Instance> {
        let mut all: Vec<&Instance> = self.instances.values().collect();
        all.sort_by(|a, b| {
            (&a.service, a.started_at_ms(), &a.instance_id).cmp(&(
                &b.service,
                b.started_at_ms(),
                &b.instance_id,
            ))
        });
        all
    }

    fn current(&mut self, instance_id: &str, conn: ConnId) -> Option<&mut Instance> {
        self.instances
            .get_mut(instance_id)
            .filter(|instance| instance.conn == conn)
    }
}

/// Process and per-thread CPU use between two snapshots, in percent of one
/// core; `None` where there is no earlier figure or time did not advance.
fn cpu_use(previous: Option<&Snapshot>, current: &Snapshot) -> (Option<f64>, Vec<ThreadCpu>) {
    let elapsed_ms = previous
        .map(|p| current.time_unix_ms.saturating_sub(p.time_unix_ms))
        .filter(|&ms| ms > 0 && previous.is_some_and(|p| p.time_unix_ms > 0));
    let process = match (
        elapsed_ms,
        previous.and_then(|p| p.process),
        current.process,
    ) {
        (Some(ms), Some(before), Some(now))
            if now.cpu_seconds_total >= before.cpu_seconds_total =>
        {
            Some((now.cpu_seconds_total - before.cpu_seconds_total) / (ms as f64 / 1000.0) * 100.0)
        }
        _ => None,
    };
    let before: HashMap<u32, u64> = previous
        .map(|p| p.threads.iter().map(|t| (t.tid, t.cpu_ns_total)).collect())
        .unwrap_or_default();
    let threads = current
        .threads
        .iter()
        .map(|t| ThreadCpu {
            tid: t.tid,
            name: t.name.clone(),
            cpu_percent: match (elapsed_ms, before.get(&t.tid)) {
                (Some(ms), Some(&ns)) if t.cpu_ns_total >= ns => {
                    Some((t.cpu_ns_total - ns) as f64 / (ms as f64 * 1e6) * 100.0)
                }
                _ => None,
            },
        })
        .collect();
    (process, threads)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use meshwatch_proto::v1::{ProcessStats, ThreadStats};

    const LIMITS: RegistryLimits = RegistryLimits {
        down_after_missed: 3,
        restarted_display_ms: 60_000,
        max_down_per_service: 2,
        max_down: 100_000,
        down_retention_ms: 3_600_000,
    };

    fn hello(service: &str, id: &str) -> Hello {
        Hello {
            service: service.to_owned(),
            instance_id: id.to_owned(),
            interval_ms: 1000,
            start_time_unix_ms: 500,
            ..Hello::default()
        }
    }

    fn snap(t_ms: i64, cpu_s: f64, thread_ns: u64) -> Snapshot {
        Snapshot {
            time_unix_ms: t_ms,
            process: Some(ProcessStats {
                cpu_seconds_total: cpu_s,
                ..ProcessStats::default()
            }),
            threads: vec![ThreadStats {
                tid: 7,
                name: "worker".to_owned(),
                cpu_ns_total: thread_ns,
            }],
            ..Snapshot::default()
        }
    }

    fn state(reg: &Registry, id: &str) -> InstanceState {
        reg.get(id).unwrap().state
    }

    #[test]
    fn only_the_probe_holding_the_session_key_takes_a_live_instance_back() {
        let mut registry = Registry::new(LIMITS);
        let owner = Hello {
            pid: 7,
            host: "h".to_owned(),
            session_key: vec![1; 16],
            ..hello("svc", "i1")
        };
        registry.hello(&owner, 1_000);
        // Everything the API shows, copied: still another probe.
        let copycat = Hello {
            session_key: vec![2; 16],
            ..owner.clone()
        };
        assert!(registry.held_by_another(&copycat).is_some());
        let keyless = Hello {
            session_key: Vec::new(),
            ..owner.clone()
        };
        assert!(registry.held_by_another(&keyless).is_some());
        // The owner reconnecting before its old connection was found dead.
        assert!(registry.held_by_another(&owner).is_none());

        // Probes older than the key: the same pid, host and start time.
        let old = Hello {
            session_key: Vec::new(),
            ..hello("svc", "i2")
        };
        registry.hello(&old, 1_000);
        assert!(registry.held_by_another(&old).is_none());
        assert!(
            registry
                .held_by_another(&Hello {
                    pid: 8,
                    ..old.clone()
                })
                .is_some()
        );
    }

    #[test]
    fn new_instance_is_up_and_goes_down_on_disconnect() {
        let mut reg = Registry::new(LIMITS);
        let conn = reg.hello(&hello("a", "a1"), 1000);
        assert_eq!(state(&reg, "a1"), InstanceState::Up);
        reg.disconnect("a1", conn);
        assert_eq!(state(&reg, "a1"), InstanceState::Down);
        assert!(!reg.get("a1").unwrap().connected);
        assert_eq!(reg.get("a1").unwrap().ending, Some(Ending::Disconnected));
    }

    #[test]
    fn a_goodbye_makes_the_disconnect_a_stop_and_a_revival_forgets_the_ending() {
        let mut reg = Registry::new(LIMITS);
        let conn = reg.hello(&hello("a", "a1"), 1000);
        reg.goodbye("a1", conn);
        reg.disconnect("a1", conn);
        assert_eq!(reg.get("a1").unwrap().ending, Some(Ending::Stopped));
        reg.hello(&hello("a", "a1"), 2000);
        assert_eq!(reg.get("a1").unwrap().ending, None);
    }

    #[test]
    fn goes_down_after_missed_intervals_and_a_snapshot_revives_it() {
        let mut reg = Registry::new(LIMITS);
        let conn = reg.hello(&hello("a", "a1"), 1000);
        reg.tick(4000);
        assert_eq!(
            state(&reg, "a1"),
            InstanceState::Up,
            "exactly 3 intervals is not yet late"
        );
        reg.tick(4001);
        assert_eq!(state(&reg, "a1"), InstanceState::Down);
        assert_eq!(
            reg.get("a1").unwrap().ending,
            Some(Ending::MissedHeartbeats)
        );
        reg.snapshot("a1", conn, snap(5000, 1.0, 0), 5000).unwrap();
        assert_eq!(state(&reg, "a1"), InstanceState::Up);
    }

    #[test]
    fn reconnect_with_same_id_revives_and_old_connection_close_is_ignored() {
        let mut reg = Registry::new(LIMITS);
        let old = reg.hello(&hello("a", "a1"), 1000);
        let new = reg.hello(&hello("a", "a1"), 2000);
        reg.disconnect("a1", old);
        assert_eq!(state(&reg, "a1"), InstanceState::Up);
        assert!(reg.snapshot("a1", old, snap(2500, 0.0, 0), 2500).is_none());
        reg.disconnect("a1", new);
        assert_eq!(state(&reg, "a1"), InstanceState::Down);
        reg.hello(&hello("a", "a1"), 3000);
        assert_eq!(state(&reg, "a1"), InstanceState::Up);
        assert_eq!(reg.get("a1").unwrap().restarts, 0);
    }

    #[test]
    fn new_instance_after_a_death_is_restarted_then_up_and_counts_chain() {
        let mut reg = Registry::new(LIMITS);
        let c1 = reg.hello(&hello("a", "a1"), 1000);
        reg.disconnect("a1", c1);
        let c2 = reg.hello(&hello("a", "a2"), 2000);
        assert_eq!(state(&reg, "a2"), InstanceState::Restarted);
        assert_eq!(reg.get("a2").unwrap().restarts, 1);
        reg.disconnect("a2", c2);
        reg.hello(&hello("a", "a3"), 3000);
        assert_eq!(reg.get("a3").unwrap().restarts, 2);
        assert_eq!(state(&reg, "a3"), InstanceState::Restarted);

        let mut reg = Registry::new(LIMITS);
        let c1 = reg.hello(&hello("a", "a1"), 1000);
        reg.disconnect("a1", c1);
        let c2 = reg.hello(&hello("a", "a2"), 2000);
        for t in (2500..=62_000).step_by(500) {
            reg.snapshot("a2", c2, snap(t, 0.0, 0), t);
            reg.tick(t);
        }
        assert_eq!(state(&reg, "a2"), InstanceState::Up);
    }

    #[test]
    fn a_predecessor_is_counted_once_and_other_services_do_not_count() {
        let mut reg = Registry::new(LIMITS);
        let c1 = reg.hello(&hello("a", "a1"), 1000);
        reg.hello(&hello("b", "b1"), 1000);
        reg.disconnect("a1", c1);
        reg.hello(&hello("b", "b2"), 1500);
        assert_eq!(state(&reg, "b2"), InstanceState::Up);
        reg.hello(&hello("a", "a2"), 2000);
        reg.hello(&hello("a", "a3"), 2000);
        assert_eq!(state(&reg, "a2"), InstanceState::Restarted);
        assert_eq!(
            state(&reg, "a3"),
            InstanceState::Up,
            "a scale-up, not a restart"
        );
    }

    #[test]
    fn computes_process_and_thread_cpu_from_deltas() {
        let mut reg = Registry::new(LIMITS);
        let conn = reg.hello(&hello("a", "a1"), 1000);
        let first = reg.snapshot("a1", conn, snap(1000, 1.0, 0), 1000).unwrap();
        assert_eq!(first.cpu_percent, None);
        assert_eq!(first.thread_cpu[0].cpu_percent, None);
        let second = reg
            .snapshot("a1", conn, snap(3000, 2.0, 500_000_000), 3000)
            .unwrap();
        assert_eq!(second.cpu_percent, Some(50.0));
        assert_eq!(second.thread_cpu[0].cpu_percent, Some(25.0));
        let same_time = reg.snapshot("a1", conn, snap(3000, 3.0, 0), 3000).unwrap();
        assert_eq!(same_time.cpu_percent, None);
        assert_eq!(same_time.thread_cpu[0].cpu_percent, None);
    }

    #[test]
    fn prunes_the_oldest_down_instances_of_a_service() {
        let mut reg = Registry::new(LIMITS);
        let conn = reg.hello(&hello("a", "a0"), 0);
        reg.disconnect("a0", conn);
        for i in 1..=3 {
            let id = format!("a{i}");
            let conn = reg.hello(&hello("a", &id), i * 100);
            reg.disconnect(&id, conn);
        }
        let forgotten = reg.tick(1000);
        assert_eq!(forgotten, vec!["a0".to_owned(), "a1".to_owned()]);
        assert!(reg.get("a0").is_none());
        assert_eq!(reg.sorted().len(), 2);
    }

    #[test]
    fn the_oldest_down_instances_beyond_the_total_are_forgotten_whatever_their_service() {
        let mut reg = Registry::new(RegistryLimits {
            max_down: 1000,
            ..LIMITS
        });
        for i in 0..10_000 {
            let id = format!("pod-{i}");
            let conn = reg.hello(&hello(&id, &id), i);
            reg.disconnect(&id, conn);
        }
        let forgotten = reg.tick(20_000);
        assert_eq!(forgotten.len(), 9_000);
        assert!(reg.get("pod-8999").is_none(), "the oldest go");
        assert!(reg.get("pod-9000").is_some(), "the newest stay");
        assert_eq!(reg.sorted().len(), 1000);
    }

    #[test]
    fn down_instances_are_forgotten_after_the_retention_and_their_service_leaves() {
        let mut reg = Registry::new(LIMITS);
        // Ten thousand services that each came and went (a pod's name in
        // the service name), and one that stays.
        for i in 0..10_000 {
            let id = format!("pod-{i}");
            let conn = reg.hello(&hello(&id, &id), 0);
            reg.disconnect(&id, conn);
        }
        let alive = reg.hello(&hello("api", "api-1"), 0);
        reg.snapshot(
            "api-1",
            alive,
            Snapshot::default(),
            LIMITS.down_retention_ms,
        );
        assert!(
            reg.tick(LIMITS.down_retention_ms).is_empty(),
            "within the retention"
        );
        let forgotten = reg.tick(LIMITS.down_retention_ms + 1);
        assert_eq!(forgotten.len(), 10_000);
        let left: Vec<&str> = reg.sorted().iter().map(|i| i.service.as_str()).collect();
        assert_eq!(left, vec!["api"]);
    }

    #[test]
    fn sorts_by_service_then_start_time() {
        let mut reg = Registry::new(LIMITS);
        let mut late = hello("a", "late");
        late.start_time_unix_ms = 900;
        reg.hello(&late, 0);
        reg.hello(&hello("b", "b1"), 0);
        reg.hello(&hello("a", "early"), 0);
        let ids: Vec<&str> = reg
            .sorted()
            .iter()
            .map(|i| i.instance_id.as_str())
            .collect();
        assert_eq!(ids, vec!["early", "late", "b1"]);
        assert_eq!(reg.get("early").unwrap().uptime_seconds(10_500), 10);
    }
}
