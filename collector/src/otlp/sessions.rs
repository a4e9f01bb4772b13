//! The instances that report through OTLP, each held as a connection that
//! stays open while its exports keep coming.
//!
//! The registry knows instances by their probe connections: a Hello opens
//! one, snapshots arrive on it, silence past a few intervals is down. An
//! OTLP exporter has no connection, so each instance gets a session: its
//! first export is its Hello (with the interval guessed, then measured from
//! the gap between exports), every export is a snapshot on the session's
//! connection, and a session silent for longer than the registry allows is
//! closed, so the instance ends as a probe's would when its connection dies.

use std::collections::{HashMap, VecDeque};

use meshwatch_proto::v1::{HeapStats, Hello};

use crate::registry::{ConnId, MAX_INTERVAL_MS};

use super::resource::Source;

/// OTLP instances followed at once. An export from one more is refused
/// until a session closes.
pub(crate) const MAX_SESSIONS: usize = 1024;

/// The interval assumed until two exports have been seen: the
/// OpenTelemetry SDKs' default export interval (60 s), which is also the
/// longest interval the registry believes.
const FIRST_INTERVAL_MS: u32 = MAX_INTERVAL_MS;

/// Gaps between exports the interval is the median of: one long gap (a
/// stalled event loop delays its export) does not move it.
const GAPS_KEPT: usize = 5;

/// Gaps seen before the interval counts as measured.
const MEASURED_AFTER: usize = 3;

/// One OTLP instance.
#[derive(Debug)]
struct Session {
    /// The registry's connection for it; `None` until registered.
    conn: Option<ConnId>,
    /// The Hello it is registered with.
    hello: Hello,
    /// Exports received, the number of the next snapshot.
    seq: u64,
    /// When the last export came.
    last_ms: i64,
    /// The latest gaps between exports, in milliseconds.
    gaps: VecDeque<u32>,
    /// The process's CPU seconds in the last export that carried them.
    last_cpu_seconds: Option<f64>,
    /// When the SDK collected the last export; 0 when unknown.
    last_collected_ms: i64,
}

/// Why an export was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionError {
    /// [`MAX_SESSIONS`] instances are followed already.
    #[error(
        "the collector follows {0} OTLP instances already; an export from another is refused until one of them stops"
    )]
    TooMany(usize),
}

/// Where one export's snapshot goes.
#[derive(Debug, PartialEq)]
pub(crate) enum Target {
    /// On the instance's current connection.
    Registered(ConnId),
    /// On the connection registering this Hello gives: the instance is new,
    /// or its interval changed.
    Register(Hello),
}

/// What to register or record for one export.
#[derive(Debug)]
pub(crate) struct Admission {
    pub target: Target,
    /// The snapshot's number.
    pub seq: u64,
    /// The process's CPU seconds since the previous export, when both
    /// carried them.
    pub cpu_since_last: Option<f64>,
    /// How much later than its interval the SDK collected this export,
    /// once the interval is measured: a Node.js SDK collects on the event
    /// loop, so a loop held by one callback collects late by about as long.
    pub late_by_ms: Option<i64>,
}

/// What the sessions need of one export.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ExportFacts {
    /// When the process started counting (a cumulative sum's start); 0
    /// when unknown.
    pub start_ms: i64,
    /// When the SDK collected it (its points' time); 0 when unknown.
    pub collected_ms: i64,
    /// The process's CPU time, when exported.
    pub cpu_seconds: Option<f64>,
}

/// Every OTLP instance followed.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_instance: HashMap<String, Session>,
    /// The latest heap figures of exports from processes also watched from
    /// outside, by the watched instance's id, and when they came: what the
    /// watcher's snapshots of that process take from the export.
    attached: HashMap<String, (HeapStats, i64)>,
}

/// How long an attached export's heap figures stand in the watched
/// process's snapshots: two of the longest intervals believed.
const ATTACHED_FRESH_MS: i64 = 2 * MAX_INTERVAL_MS as i64;

impl Sessions {
    /// Takes an export from `source` at `now_ms`: says whether the instance
    /// must be registered (again), the snapshot's number, and what changed
    /// since the instance's previous export.
    pub fn admit(
        &mut self,
        source: &Source,
        facts: ExportFacts,
        now_ms: i64,
    ) -> Result<Admission, SessionError> {
        let full = self.by_instance.len() >= MAX_SESSIONS;
        let session = match self.by_instance.get_mut(&source.instance_id) {
            Some(session) => session,
            None if full => return Err(SessionError::TooMany(MAX_SESSIONS)),
            None => self
                .by_instance
                .entry(source.instance_id.clone())
                .or_insert_with(|| Session {
                    conn: None,
                    hello: hello(source, facts.start_ms, now_ms),
                    seq: 0,
                    last_ms: now_ms,
                    gaps: VecDeque::with_capacity(GAPS_KEPT),
                    last_cpu_seconds: None,
                    last_collected_ms: 0,
                }),
        };
        if session.seq > 0 {
            if session.gaps.len() == GAPS_KEPT {
                session.gaps.pop_front();
            }
            session
                .gaps
                .push_back(measured_interval(now_ms - session.last_ms));
        }
        let interval = median(&session.gaps).unwrap_or(FIRST_INTERVAL_MS);
        let drifted = interval.abs_diff(session.hello.interval_ms) * 4 > session.hello.interval_ms;
        if drifted {
            session.hello.interval_ms = interval;
            session.conn = None;
        }
        session.seq += 1;
        session.last_ms = now_ms;
        let cpu_since_last = match (session.last_cpu_seconds, facts.cpu_seconds) {
            (Some(before), Some(now)) => Some((now - before).max(0.0)),
            _ => None,
        };
        if facts.cpu_seconds.is_some() {
            session.last_cpu_seconds = facts.cpu_seconds;
        }
        let measured = session.gaps.len() >= MEASURED_AFTER;
        let late_by_ms = (measured && session.last_collected_ms > 0 && facts.collected_ms > 0)
            .then(|| facts.collected_ms - session.last_collected_ms - i64::from(interval));
        session.last_collected_ms = facts.collected_ms;
        let target = match session.conn {
            Some(conn) => Target::Registered(conn),
            None => Target::Register(session.hello.clone()),
        };
        Ok(Admission {
            target,
            seq: session.seq,
            cpu_since_last,
            late_by_ms,
        })
    }

    /// Attaches `instance_id`'s exports to `watched`, the same process
    /// watched from outside: its `heap` figures go into that instance's
    /// snapshots from now on, and `instance_id` is no longer registered as
    /// an instance of its own.
    pub fn attach(
        &mut self,
        instance_id: &str,
        watched: &str,
        heap: Option<HeapStats>,
        now_ms: i64,
    ) {
        if let Some(heap) = heap {
            self.attached.insert(watched.to_owned(), (heap, now_ms));
        }
        if let Some(session) = self.by_instance.get_mut(instance_id) {
            session.conn = None;
        }
    }

    /// The heap figures an attached export gave `watched`, while fresh.
    pub fn attached_heap(&self, watched: &str, now_ms: i64) -> Option<HeapStats> {
        self.attached
            .get(watched)
            .filter(|(_, at)| now_ms.saturating_sub(*at) <= ATTACHED_FRESH_MS)
            .map(|(heap, _)| *heap)
    }

    /// Notes the connection the registry gave `instance_id`'s Hello.
    pub fn registered(&mut self, instance_id: &str, conn: ConnId) {
        if let Some(session) = self.by_instance.get_mut(instance_id) {
            session.conn = Some(conn);
        }
    }

    /// Forgets an instance whose registration was refused.
    pub fn refused(&mut self, instance_id: &str) {
        self.by_instance.remove(instance_id);
    }

    /// Closes the sessions silent for longer than `missed` intervals (plus
    /// one, so the registry has marked them down first) and returns their
    /// instances and connections, to be disconnected.
    pub fn expire(&mut self, now_ms: i64, missed: u32) -> Vec<(String, ConnId)> {
        self.attached
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) <= ATTACHED_FRESH_MS);
        let mut closed = Vec::new();
        self.by_instance.retain(|id, session| {
            let allowed =
                i64::from(session.hello.interval_ms) * i64::from(missed.saturating_add(1));
            let alive = now_ms.saturating_sub(session.last_ms) <= allowed;
            if !alive && let Some(conn) = session.conn {
                closed.push((id.clone(), conn));
            }
            alive
        });
        closed
    }
}

/// The interval a gap of `gap_ms` between two exports says, within what
/// the registry believes (1 s to 60 s).
fn measured_interval(gap_ms: i64) -> u32 {
    u32::try_from(gap_ms.clamp(1_000, i64::from(MAX_INTERVAL_MS))).unwrap_or(MAX_INTERVAL_MS)
}

/// The median of `gaps`; `None` when empty.
fn median(gaps: &VecDeque<u32>) -> Option<u32> {
    let mut sorted: Vec<u32> = gaps.iter().copied().collect();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// The Hello a probe in `source`'s process would have sent.
fn hello(source: &Source, start_ms: i64, now_ms: i64) -> Hello {
    Hello {
        protocol_version: meshwatch_proto::PROTOCOL_VERSION,
        service: source.service.clone(),
        instance_id: source.instance_id.clone(),
        pid: source.pid,
        host: source.host.clone(),
        start_time_unix_ms: if start_ms > 0 { start_ms } else { now_ms },
        probe_version: format!("otlp {}", source.sdk).trim().to_owned(),
        runtime: source.runtime.clone(),
        interval_ms: FIRST_INTERVAL_MS,
        ..Hello::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Hello an admission asks to register with, if any.
    fn hello_of(admission: Admission) -> Option<Hello> {
        match admission.target {
            Target::Register(hello) => Some(hello),
            Target::Registered(_) => None,
        }
    }

    /// An export's facts, the process started at `start_ms`.
    fn facts(start_ms: i64) -> ExportFacts {
        ExportFacts {
            start_ms,
            ..ExportFacts::default()
        }
    }

    fn source(id: &str) -> Source {
        Source {
            service: "proxy".to_owned(),
            instance_id: id.to_owned(),
            pid: 42,
            host: "h".to_owned(),
            runtime: "node".to_owned(),
            sdk: "opentelemetry 2.0".to_owned(),
        }
    }

    #[test]
    fn the_first_export_registers_and_the_interval_is_measured_after() {
        let mut sessions = Sessions::default();
        let first = sessions.admit(&source("a"), facts(500), 10_000).unwrap();
        assert_eq!(first.seq, 1);
        let hello = hello_of(first).unwrap();
        assert_eq!(hello.interval_ms, FIRST_INTERVAL_MS);
        assert_eq!(hello.start_time_unix_ms, 500);
        assert_eq!(hello.runtime, "node");
        sessions.registered("a", ConnId::numbered(1));
        // Exports every 5 s: re-registered once with that interval, then
        // recorded on the connection.
        let second = sessions.admit(&source("a"), facts(500), 15_000).unwrap();
        assert_eq!(hello_of(second).unwrap().interval_ms, 5_000);
        sessions.registered("a", ConnId::numbered(2));
        let third = sessions.admit(&source("a"), facts(500), 20_100).unwrap();
        assert_eq!(third.target, Target::Registered(ConnId::numbered(2)));
        assert_eq!(third.seq, 3);
        // One late export (a stalled loop sends it late) moves nothing.
        let late = sessions.admit(&source("a"), facts(500), 35_100).unwrap();
        assert!(hello_of(late).is_none(), "the interval stays 5 s");
    }

    #[test]
    fn a_late_collection_and_the_cpu_spent_are_measured_against_the_last() {
        let mut sessions = Sessions::default();
        let export = |t: i64, cpu: f64| ExportFacts {
            start_ms: 0,
            collected_ms: t,
            cpu_seconds: Some(cpu),
        };
        for i in 0..3 {
            let admitted = sessions
                .admit(&source("a"), export(i * 1_000, 0.1 * i as f64), i * 1_000)
                .unwrap();
            assert_eq!(
                admitted.late_by_ms, None,
                "the interval is not measured yet"
            );
        }
        let on_time = sessions
            .admit(&source("a"), export(3_000, 0.3), 3_000)
            .unwrap();
        assert_eq!(on_time.late_by_ms, Some(0));
        // A callback spun 3 s: the next collection comes 3 s late, with
        // 3 CPU seconds spent.
        let late = sessions
            .admit(&source("a"), export(7_000, 3.3), 7_000)
            .unwrap();
        assert_eq!(late.late_by_ms, Some(3_000));
        assert!((late.cpu_since_last.unwrap() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn an_attached_export_lends_its_heap_while_fresh() {
        let mut sessions = Sessions::default();
        sessions.admit(&source("a"), facts(0), 0).unwrap();
        sessions.registered("a", ConnId::numbered(1));
        let heap = HeapStats {
            tracked: true,
            live_bytes: 5,
            ..HeapStats::default()
        };
        sessions.attach("a", "watched-1", Some(heap), 2_000);
        let next = sessions.admit(&source("a"), facts(0), 2_500).unwrap();
        assert!(hello_of(next).is_some(), "no longer on its own connection");
        assert_eq!(sessions.attached_heap("watched-1", 3_000), Some(heap));
        let stale = 2_000 + ATTACHED_FRESH_MS + 1;
        assert_eq!(sessions.attached_heap("watched-1", stale), None);
        sessions.expire(stale, 3);
        assert!(sessions.attached.is_empty(), "bounded");
    }

    #[test]
    fn silent_sessions_close_and_the_count_is_bounded() {
        let mut sessions = Sessions::default();
        sessions.admit(&source("a"), facts(0), 0).unwrap();
        sessions.registered("a", ConnId::numbered(1));
        sessions.admit(&source("a"), facts(0), 2_000).unwrap();
        sessions.registered("a", ConnId::numbered(2));
        assert!(sessions.expire(2_000 + 4 * 2_000, 3).is_empty());
        assert_eq!(
            sessions.expire(2_000 + 9 * 2_000, 3),
            vec![("a".to_owned(), ConnId::numbered(2))]
        );
        let back = sessions.admit(&source("a"), facts(0), 30_000).unwrap();
        assert!(hello_of(back).is_some(), "a closed session starts afresh");
        // "a" is followed again: fill the rest.
        for i in 1..MAX_SESSIONS {
            sessions
                .admit(&source(&i.to_string()), facts(0), 0)
                .unwrap();
        }
        assert_eq!(
            sessions
                .admit(&source("one more"), facts(0), 0)
                .unwrap_err(),
            SessionError::TooMany(MAX_SESSIONS)
        );
        assert!(
            sessions.admit(&source("7"), facts(0), 1_000).is_ok(),
            "known ones go on"
        );
    }
}
