//! Incidents: what the detectors found, with the evidence to act on.
//!
//! An incident is opened by a detector (the series detectors of
//! `crate::detect`, or the probes' stuck-poll events), updated while the
//! condition lasts (`last_seen_at_ms`), and resolved when it ends. The
//! [`IncidentBook`] keys them by [`IncidentKey`], so a problem reported again
//! and again is one incident, and keeps a bounded number of resolved ones
//! for the API.

use std::str::FromStr;

pub use meshwatch_api::{Evidence, Incident, IncidentKind, Severity};

/// Which incidents a query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateFilter {
    /// Only those still going on.
    Open,
    /// Only those that ended.
    Resolved,
    /// Both.
    #[default]
    All,
}

impl StateFilter {
    /// Whether `incident` passes this filter.
    pub fn matches(self, incident: &Incident) -> bool {
        match self {
            StateFilter::Open => incident.is_open(),
            StateFilter::Resolved => !incident.is_open(),
            StateFilter::All => true,
        }
    }
}

/// A `state=` value that is none of `open`, `resolved`, `all`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown incident state {0:?}: use state=open, state=resolved or state=all")]
pub struct UnknownStateFilter(String);

impl FromStr for StateFilter {
    type Err = UnknownStateFilter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(StateFilter::Open),
            "resolved" => Ok(StateFilter::Resolved),
            "all" => Ok(StateFilter::All),
            other => Err(UnknownStateFilter(other.to_owned())),
        }
    }
}

/// What identifies one ongoing problem. A detector reports the same key again
/// and again while the problem lasts; the book turns that into one incident
/// that opens, is refreshed, and resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IncidentKey {
    /// What kind of trouble.
    pub kind: IncidentKind,
    /// The service affected.
    pub service: String,
    /// The instance affected, or `None` for a service-wide problem (a crash
    /// loop, a leak followed across restarts).
    pub instance: Option<String>,
    /// Tells apart several problems of one kind on one subject, e.g. two
    /// stuck workers; empty when there can be only one.
    pub detail: String,
}

/// A detector's conclusion about one key at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// How urgent.
    pub severity: Severity,
    /// One sentence for a person: what is wrong.
    pub summary: String,
    /// Concrete evidence, typed by the incident's kind.
    pub evidence: Evidence,
}

/// Resolved incidents kept for the API; older ones are forgotten so a
/// flapping detector cannot grow the book without bound. Open incidents are
/// always kept.
const MAX_RESOLVED: usize = 1000;

/// Bytes of frame names the resolved incidents keep in all (a stuck poll's
/// evidence holds up to 128 KiB, a real one some tens): the oldest beyond
/// it are forgotten even before [`MAX_RESOLVED`], so a probe sending the
/// largest stacks it may cannot make the resolved book hold 128 MiB.
const MAX_RESOLVED_EVIDENCE_BYTES: usize = 32 * 1024 * 1024;

/// Incidents of one kind open at once for one instance (or one service,
/// for service-wide kinds), told apart by their detail: a process has a
/// few workers to be stuck at once, not thousands. Beyond it the oldest is
/// resolved (and counted), so a probe sending endless distinct stuck-poll
/// keys cannot grow the book.
const MAX_OPEN_PER_SUBJECT: usize = 16;

/// Every incident the collector knows, oldest first.
#[derive(Debug, Default)]
pub struct IncidentBook {
    incidents: Vec<Incident>,
    open: std::collections::HashMap<IncidentKey, String>,
    next_id: u64,
    /// Open incidents resolved early because their subject had
    /// [`MAX_OPEN_PER_SUBJECT`] open already.
    evicted: u64,
}

impl IncidentBook {
    #[cfg(test)]
    /// Records a new incident or, when one with the same id exists,
    /// replaces it.
    pub fn upsert(&mut self, incident: Incident) {
        match self.incidents.iter_mut().find(|i| i.id == incident.id) {
            Some(existing) => *existing = incident,
            None => self.incidents.push(incident),
        }
    }

    /// Opens an incident for `key`, or refreshes the open one with the new
    /// finding (summary, evidence, severity, `last_seen_at_ms`). Returns the
    /// incident's id.
    pub fn report(&mut self, key: &IncidentKey, finding: Finding, now_ms: i64) -> String {
        if let Some(id) = self.open.get(key)
            && let Some(existing) = self.incidents.iter_mut().find(|i| &i.id == id)
        {
            existing.severity = finding.severity;
            existing.summary = finding.summary;
            existing.evidence = finding.evidence;
            existing.last_seen_at_ms = now_ms;
            return existing.id.clone();
        }
        self.make_room_for(key, now_ms);
        self.next_id += 1;
        let id = self.next_id.to_string();
        self.incidents.push(Incident {
            id: id.clone(),
            kind: key.kind.clone(),
            severity: finding.severity,
            service: key.service.clone(),
            instance: key.instance.clone(),
            opened_at_ms: now_ms,
            last_seen_at_ms: now_ms,
            resolved_at_ms: None,
            summary: finding.summary,
            evidence: finding.evidence,
        });
        self.open.insert(key.clone(), id.clone());
        id
    }

    /// Resolves the oldest open incident of `key`'s kind and subject when
    /// [`MAX_OPEN_PER_SUBJECT`] are open, before `key`'s opens.
    fn make_room_for(&mut self, key: &IncidentKey, now_ms: i64) {
        let same_subject = |k: &IncidentKey| {
            k.kind == key.kind && k.service == key.service && k.instance == key.instance
        };
        let open: Vec<&IncidentKey> = self.open.keys().filter(|k| same_subject(k)).collect();
        if open.len() < MAX_OPEN_PER_SUBJECT {
            return;
        }
        // Ids count up: the smallest is the oldest.
        let oldest = open
            .into_iter()
            .min_by_key(|k| self.open[*k].parse::<u64>().unwrap_or(u64::MAX))
            .cloned();
        if let Some(oldest) = oldest {
            self.resolve(&oldest, now_ms);
            self.evicted += 1;
        }
    }

    /// Open incidents resolved early to keep each subject's bounded.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Resolves the open incident for `key`, if there is one. Returns whether
    /// one was resolved.
    pub fn resolve(&mut self, key: &IncidentKey, now_ms: i64) -> bool {
        let Some(id) = self.open.remove(key) else {
            return false;
        };
        if let Some(incident) = self.incidents.iter_mut().find(|i| i.id == id) {
            incident.resolved_at_ms = Some(now_ms);
        }
        self.forget_old_resolved();
        true
    }

    /// Resolves every open incident whose key passes `pred`, e.g. all those
    /// of an instance that went down. Returns how many were resolved.
    pub fn resolve_where(&mut self, pred: impl Fn(&IncidentKey) -> bool, now_ms: i64) -> usize {
        let keys: Vec<IncidentKey> = self.open.keys().filter(|k| pred(k)).cloned().collect();
        keys.iter().filter(|key| self.resolve(key, now_ms)).count()
    }

    /// The kinds with an incident open for `service`.
    pub fn open_kinds(&self, service: &str) -> Vec<IncidentKind> {
        let mut kinds: Vec<IncidentKind> = self
            .open
            .keys()
            .filter(|key| key.service == service)
            .map(|key| key.kind.clone())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }

    #[cfg(test)]
    /// The open incident for `key`, if any.
    pub fn open_incident(&self, key: &IncidentKey) -> Option<&Incident> {
        let id = self.open.get(key)?;
        self.incidents.iter().find(|i| &i.id == id)
    }

    /// The incident with `id`, open or resolved.
    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.incidents.iter().find(|i| i.id == id)
    }

    /// Forgets the oldest resolved incidents beyond [`MAX_RESOLVED`] or
    /// [`MAX_RESOLVED_EVIDENCE_BYTES`], newest kept first.
    fn forget_old_resolved(&mut self) {
        let mut kept = 0;
        let mut bytes = 0;
        let mut keep: Vec<bool> = vec![true; self.incidents.len()];
        for (i, incident) in self.incidents.iter().enumerate().rev() {
            if incident.is_open() {
                continue;
            }
            kept += 1;
            bytes += crate::stuck::evidence_frame_bytes(&incident.evidence);
            keep[i] = kept <= MAX_RESOLVED && bytes <= MAX_RESOLVED_EVIDENCE_BYTES;
        }
        let mut keep = keep.into_iter();
        self.incidents.retain(|_| keep.next().unwrap_or(true));
    }

    /// The incidents passing `filter`, oldest first.
    pub fn list(&self, filter: StateFilter) -> Vec<&Incident> {
        self.incidents
            .iter()
            .filter(|i| filter.matches(i))
            .collect()
    }

    /// The open incidents concerning one instance, for the services view:
    /// its own, and when `live`, those of its whole service (a leak followed
    /// across restarts, a crash loop), so that the instance people look at
    /// carries its service's flags too.
    pub fn open_for_instance(
        &self,
        service: &str,
        instance_id: &str,
        live: bool,
    ) -> Vec<&Incident> {
        self.incidents
            .iter()
            .filter(|i| i.is_open())
            .filter(|i| match i.instance.as_deref() {
                Some(instance) => instance == instance_id,
                None => live && i.service == service,
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn incident(id: &str, instance: &str, resolved: Option<i64>) -> Incident {
        Incident {
            id: id.to_owned(),
            kind: IncidentKind::RunawayLoop,
            severity: Severity::Critical,
            service: "svc".to_owned(),
            instance: Some(instance.to_owned()),
            opened_at_ms: 1,
            last_seen_at_ms: 2,
            resolved_at_ms: resolved,
            summary: "a loop".to_owned(),
            evidence: Evidence::Other(serde_json::json!({})),
        }
    }

    #[test]
    fn parses_filters_and_explains_bad_ones() {
        assert_eq!("open".parse(), Ok(StateFilter::Open));
        assert_eq!("resolved".parse(), Ok(StateFilter::Resolved));
        assert_eq!("all".parse(), Ok(StateFilter::All));
        let err = "closed".parse::<StateFilter>().unwrap_err().to_string();
        assert!(
            err.contains("\"closed\"") && err.contains("state=open"),
            "{err}"
        );
    }

    #[test]
    fn filters_by_state_and_instance_and_upserts_by_id() {
        let mut book = IncidentBook::default();
        book.upsert(incident("1", "i1", None));
        book.upsert(incident("2", "i2", Some(5)));
        assert_eq!(book.list(StateFilter::All).len(), 2);
        assert_eq!(book.list(StateFilter::Open)[0].id, "1");
        assert_eq!(book.list(StateFilter::Resolved)[0].id, "2");
        assert_eq!(book.open_for_instance("svc", "i1", true).len(), 1);
        assert!(book.open_for_instance("svc", "i2", true).is_empty());
        book.upsert(incident("1", "i1", Some(9)));
        assert_eq!(book.list(StateFilter::All).len(), 2);
        assert!(book.list(StateFilter::Open).is_empty());
        let json = serde_json::to_value(book.list(StateFilter::All)[0]).unwrap();
        assert_eq!(json["kind"], "runaway_loop");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["resolved_at_ms"], 9);
    }

    fn key(detail: &str) -> IncidentKey {
        IncidentKey {
            kind: IncidentKind::RunawayLoop,
            service: "svc".to_owned(),
            instance: Some("i1".to_owned()),
            detail: detail.to_owned(),
        }
    }

    fn finding(summary: &str) -> Finding {
        Finding {
            severity: Severity::Critical,
            summary: summary.to_owned(),
            evidence: Evidence::Other(serde_json::json!({"n": summary.len()})),
        }
    }

    #[test]
    fn endless_distinct_keys_keep_a_subjects_open_incidents_bounded() {
        let mut book = IncidentBook::default();
        for i in 0..1_000 {
            book.report(&key(&format!("k{i}")), finding("stuck"), i);
        }
        assert_eq!(book.list(StateFilter::Open).len(), MAX_OPEN_PER_SUBJECT);
        assert_eq!(book.evicted(), 1_000 - MAX_OPEN_PER_SUBJECT as u64);
        // The newest stay open; the oldest went first.
        assert!(book.open_incident(&key("k999")).is_some());
        assert!(book.open_incident(&key("k0")).is_none());
        assert!(book.list(StateFilter::All).len() <= MAX_OPEN_PER_SUBJECT + MAX_RESOLVED);
        // Another instance has room of its own.
        let other = IncidentKey {
            instance: Some("i2".to_owned()),
            ..key("k0")
        };
        book.report(&other, finding("stuck"), 2_000);
        assert!(book.open_incident(&other).is_some());
    }

    #[test]
    fn service_wide_incidents_show_on_the_live_instances_of_their_service() {
        let mut book = IncidentBook::default();
        let leak = IncidentKey {
            kind: IncidentKind::MemoryGrowth,
            service: "svc".to_owned(),
            instance: None,
            detail: String::new(),
        };
        book.report(&leak, finding("leak"), 1);
        assert_eq!(book.open_for_instance("svc", "i1", true).len(), 1);
        assert!(
            book.open_for_instance("svc", "i1", false).is_empty(),
            "down"
        );
        assert!(book.open_for_instance("other", "i9", true).is_empty());
    }

    #[test]
    fn report_opens_once_refreshes_and_resolve_closes() {
        let mut book = IncidentBook::default();
        let id = book.report(&key("w0"), finding("stuck"), 10);
        assert_eq!(book.report(&key("w0"), finding("still stuck"), 20), id);
        let open = book.open_incident(&key("w0")).unwrap();
        assert_eq!((open.opened_at_ms, open.last_seen_at_ms), (10, 20));
        assert_eq!(open.summary, "still stuck");
        let other = book.report(&key("w1"), finding("another"), 30);
        assert_ne!(other, id);

        assert!(book.resolve(&key("w0"), 40));
        assert!(!book.resolve(&key("w0"), 41), "already resolved");
        assert_eq!(book.get(&id).unwrap().resolved_at_ms, Some(40));
        // The same key after recovery is a new incident.
        assert_ne!(book.report(&key("w0"), finding("again"), 50), id);
        assert_eq!(
            book.resolve_where(|k| k.instance.as_deref() == Some("i1"), 60),
            2
        );
        assert!(book.list(StateFilter::Open).is_empty());
    }

    #[test]
    fn forgets_the_oldest_resolved_beyond_the_bound() {
        let mut book = IncidentBook::default();
        for n in 0..MAX_RESOLVED + 5 {
            let k = key(&n.to_string());
            book.report(&k, finding("x"), 1);
            book.resolve(&k, 2);
        }
        let open = book.report(&key("open"), finding("x"), 3);
        assert_eq!(book.list(StateFilter::Resolved).len(), MAX_RESOLVED);
        assert!(book.get("1").is_none(), "the oldest resolved is forgotten");
        assert!(book.get(&open).is_some());
    }
}
