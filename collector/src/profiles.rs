//! CPU profiles on demand, between the API and a probe's connection.
//!
//! `POST /api/v1/profile` places an [`Order`] at the [`ProfileDesk`], which
//! knows each connected instance's line to its connection task, and
//! answers at once with a ticket. That task ([`Taker`]) sends the probe a
//! `ProfileRequest`, gathers the `ProfileData` parts it answers with, has
//! the stacks named, and hands the desk a [`CpuProfileView`], which `GET
//! /api/v1/profile/{id}` collects. No HTTP request is held open for the
//! profile's duration (a client polls), so the API's read timeout and a
//! client's own stay short.
//!
//! One profile per connection at a time; a probe that does not answer
//! within the duration and [`GRACE`] (one older than profiles ignores the
//! request) gets a clear timeout, and a connection that ends takes its
//! pending profile with it. The desk keeps [`KEPT`] profiles at most, each
//! for [`KEPT_FOR`] once done.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use meshwatch_api::{CpuProfileView, ProfileStackView, ProfileTicket};
use meshwatch_proto::v1::{Frame, Hello, Module, ProfileData, ProfileRequest, ProfileStack};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::registry::ConnId;

/// The longest profile the API takes.
pub(crate) const MAX_SECONDS: u64 = 60;
/// The highest sampling rate the API asks for.
pub(crate) const MAX_HZ: u32 = 1000;
/// Time given past the profile's duration for the probe's parts to arrive.
pub(crate) const GRACE: Duration = Duration::from_secs(15);
/// Distinct stacks kept of one profile, and addresses in all (2 MiB);
/// stacks past either are cut and their samples counted as dropped. A
/// real profile holds a few thousand stacks of a few dozen frames.
const MAX_STACKS: usize = 10_000;
const MAX_ADDRESSES: usize = 256 * 1024;
/// Profiles the desk holds, being taken or done: past it, the oldest done
/// one goes, and when all are being taken a new order is refused.
pub(crate) const KEPT: usize = 16;
/// How long a finished profile waits to be collected.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(600);

/// Why there is no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProfileError {
    #[error("no probe of instance {0:?} is connected; only a live instance can be profiled")]
    NotConnected(String),
    #[error("a profile of instance {0:?} is already being taken; try again when it ends")]
    Busy(String),
    #[error("the probe refused: {0}")]
    Refused(String),
    #[error(
        "the probe sent no profile within {0:?} (a probe older than profiles ignores the request)"
    )]
    NoAnswer(Duration),
    #[error("the instance disconnected while it was profiled")]
    Disconnected,
    #[error("{KEPT} profiles are being taken already; try again when one ends")]
    TooMany,
}

/// What `GET /api/v1/profile/{id}` finds.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    /// Still being taken.
    Running(ProfileTicket),
    /// Done: the profile, or why there is none.
    Done(Result<Arc<CpuProfileView>, ProfileError>),
}

/// A profile the desk holds.
#[derive(Debug)]
enum Entry {
    Running {
        ticket: ProfileTicket,
        answer: oneshot::Receiver<Result<CpuProfileView, ProfileError>>,
    },
    Done {
        result: Result<Arc<CpuProfileView>, ProfileError>,
        at: Instant,
    },
}

impl Entry {
    /// Moves a running profile whose answer came to done.
    fn settle(&mut self) {
        let Self::Running { answer, .. } = self else {
            return;
        };
        let result = match answer.try_recv() {
            Ok(result) => result.map(Arc::new),
            Err(oneshot::error::TryRecvError::Empty) => return,
            Err(oneshot::error::TryRecvError::Closed) => Err(ProfileError::Disconnected),
        };
        *self = Self::Done {
            result,
            at: Instant::now(),
        };
    }
}

/// The profiles the desk holds, oldest first.
#[derive(Debug, Default)]
struct Results {
    next_id: u64,
    entries: VecDeque<(String, Entry)>,
}

impl Results {
    /// Settles every entry and drops the expired ones.
    fn tidy(&mut self) {
        for (_, entry) in &mut self.entries {
            entry.settle();
        }
        self.entries
            .retain(|(_, e)| !matches!(e, Entry::Done { at, .. } if at.elapsed() >= KEPT_FOR));
    }

    /// Makes room for one more, dropping the oldest done profile if need
    /// be; false when every profile held is still being taken.
    fn make_room(&mut self) -> bool {
        self.tidy();
        if self.entries.len() < KEPT {
            return true;
        }
        let oldest_done = self
            .entries
            .iter()
            .position(|(_, e)| matches!(e, Entry::Done { .. }));
        oldest_done.and_then(|i| self.entries.remove(i)).is_some()
    }
}

/// What the API asks a connection for.
#[derive(Debug)]
pub(crate) struct Order {
    pub duration: Duration,
    pub hz: u32,
    pub reply: oneshot::Sender<Result<CpuProfileView, ProfileError>>,
}

/// Each connected instance's line to its connection task, and the
/// profiles taken through them.
#[derive(Debug, Default)]
pub(crate) struct ProfileDesk {
    lines: Mutex<HashMap<String, (ConnId, mpsc::Sender<Order>)>>,
    results: Mutex<Results>,
}

impl ProfileDesk {
    /// Opens the line of `instance`'s new connection `conn`, replacing a
    /// dead connection's.
    pub(crate) fn open(&self, instance: &str, conn: ConnId) -> mpsc::Receiver<Order> {
        let (orders, incoming) = mpsc::channel(1);
        self.lines().insert(instance.to_owned(), (conn, orders));
        incoming
    }

    /// Closes `conn`'s line, unless a newer connection of the instance
    /// holds it already.
    pub(crate) fn close(&self, instance: &str, conn: ConnId) {
        let mut lines = self.lines();
        if lines
            .get(instance)
            .is_some_and(|(holder, _)| *holder == conn)
        {
            lines.remove(instance);
        }
    }

    /// Asks `instance`'s connection for a profile; the ticket says where
    /// to collect it.
    pub(crate) fn order(
        &self,
        instance: &str,
        duration: Duration,
        hz: u32,
        now_ms: i64,
    ) -> Result<ProfileTicket, ProfileError> {
        let mut results = self.results();
        if !results.make_room() {
            return Err(ProfileError::TooMany);
        }
        let (reply, answer) = oneshot::channel();
        let order = Order {
            duration,
            hz,
            reply,
        };
        {
            let lines = self.lines();
            let (_, line) = lines
                .get(instance)
                .ok_or_else(|| ProfileError::NotConnected(instance.to_owned()))?;
            line.try_send(order).map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => ProfileError::Busy(instance.to_owned()),
                mpsc::error::TrySendError::Closed(_) => {
                    ProfileError::NotConnected(instance.to_owned())
                }
            })?;
        }
        results.next_id += 1;
        let ticket = ProfileTicket {
            id: format!("p{}", results.next_id),
            instance_id: instance.to_owned(),
            started_ms: now_ms,
            duration_ms: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX),
            frequency_hz: hz,
        };
        let entry = Entry::Running {
            ticket: ticket.clone(),
            answer,
        };
        results.entries.push_back((ticket.id.clone(), entry));
        Ok(ticket)
    }

    /// The profile `id`, if the desk holds it.
    pub(crate) fn lookup(&self, id: &str) -> Option<Lookup> {
        let mut results = self.results();
        results.tidy();
        let (_, entry) = results.entries.iter().find(|(held, _)| held == id)?;
        Some(match entry {
            Entry::Running { ticket, .. } => Lookup::Running(ticket.clone()),
            Entry::Done { result, .. } => Lookup::Done(result.clone()),
        })
    }

    fn lines(&self) -> MutexGuard<'_, HashMap<String, (ConnId, mpsc::Sender<Order>)>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn results(&self) -> MutexGuard<'_, Results> {
        self.results.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The profile a connection is taking.
#[derive(Debug)]
struct InProgress {
    request_id: u64,
    reply: oneshot::Sender<Result<CpuProfileView, ProfileError>>,
    stacks: Vec<ProfileStack>,
    /// Addresses in `stacks`.
    addresses: usize,
    cut: u64,
    started_ms: i64,
    deadline: Instant,
    waited: Duration,
}

/// A profile whose last part arrived, waiting for its names.
#[derive(Debug)]
pub(crate) struct Finished {
    reply: oneshot::Sender<Result<CpuProfileView, ProfileError>>,
    /// The last part, its stacks moved into `stacks` and its modules into
    /// `modules`.
    last: ProfileData,
    pub(crate) stacks: Vec<ProfileStack>,
    pub(crate) modules: Vec<Module>,
    cut: u64,
    started_ms: i64,
}

/// A connection's side of profiling: one profile at a time.
#[derive(Debug, Default)]
pub(crate) struct Taker {
    next_id: u64,
    current: Option<InProgress>,
}

impl Taker {
    /// Takes on `order`, returning the request to send the probe; answers
    /// `order` at once when a profile is already running.
    pub(crate) fn begin(
        &mut self,
        order: Order,
        instance: &str,
        now_ms: i64,
    ) -> Option<ProfileRequest> {
        if self.current.is_some() {
            let _ = order
                .reply
                .send(Err(ProfileError::Busy(instance.to_owned())));
            return None;
        }
        self.next_id += 1;
        let waited = order.duration + GRACE;
        self.current = Some(InProgress {
            request_id: self.next_id,
            reply: order.reply,
            stacks: Vec::new(),
            addresses: 0,
            cut: 0,
            started_ms: now_ms,
            deadline: Instant::now() + waited,
            waited,
        });
        Some(ProfileRequest {
            request_id: self.next_id,
            duration_ms: u32::try_from(order.duration.as_millis()).unwrap_or(u32::MAX),
            frequency_hz: order.hz,
        })
    }

    /// Adds a part; the whole profile once its last part is in. A part of
    /// another request (one that timed out) is dropped.
    pub(crate) fn part(&mut self, mut data: ProfileData) -> Option<Finished> {
        let current = self.current.as_mut()?;
        if current.request_id != data.request_id {
            return None;
        }
        for stack in std::mem::take(&mut data.stacks) {
            let depth = stack.stack.as_ref().map_or(0, |s| s.addresses.len());
            if current.stacks.len() >= MAX_STACKS || current.addresses + depth > MAX_ADDRESSES {
                current.cut = current.cut.saturating_add(stack.samples);
                continue;
            }
            current.addresses += depth;
            current.stacks.push(stack);
        }
        if !data.last {
            return None;
        }
        let done = self.current.take()?;
        Some(Finished {
            reply: done.reply,
            modules: std::mem::take(&mut data.modules),
            last: data,
            stacks: done.stacks,
            cut: done.cut,
            started_ms: done.started_ms,
        })
    }

    /// When the profile being taken gives up waiting, if one is.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.deadline)
    }

    /// Gives up on the profile being taken: the probe did not answer.
    pub(crate) fn expire(&mut self) {
        if let Some(current) = self.current.take() {
            let _ = current
                .reply
                .send(Err(ProfileError::NoAnswer(current.waited)));
        }
    }
}

impl Finished {
    /// Answers the API with the profile, its stacks named as `named` (in
    /// the order of `stacks`).
    pub(crate) fn answer(self, hello: &Hello, named: Vec<Vec<Frame>>) {
        let last = self.last;
        if self.stacks.is_empty() && !last.error.is_empty() {
            let _ = self.reply.send(Err(ProfileError::Refused(last.error)));
            return;
        }
        let sampled = Sampled {
            duration_ms: last.duration_ms,
            frequency_hz: last.frequency_hz,
            samples: last.samples,
            stacks: self
                .stacks
                .into_iter()
                .zip(named)
                .map(|(stack, frames)| (stack.thread_name, frames, stack.samples, stack.cpu_ns))
                .collect(),
        };
        let dropped = last.samples_dropped.saturating_add(self.cut);
        let caveat = (!last.error.is_empty()).then_some(last.error);
        let _ = self
            .reply
            .send(Ok(view(hello, self.started_ms, sampled, dropped, caveat)));
    }
}

/// A profile whose stacks are named: each distinct (thread, stack) with
/// its samples and CPU nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct Sampled {
    pub(crate) duration_ms: u32,
    pub(crate) frequency_hz: u32,
    pub(crate) samples: u64,
    pub(crate) stacks: Vec<(String, Vec<Frame>, u64, u64)>,
}

/// The API's view of a profile of `hello`'s process started at
/// `started_ms`: frames in a table, stacks heaviest first.
fn view(
    hello: &Hello,
    started_ms: i64,
    sampled: Sampled,
    samples_dropped: u64,
    caveat: Option<String>,
) -> CpuProfileView {
    let mut table = FrameTable::default();
    let mut stacks: Vec<ProfileStackView> = sampled
        .stacks
        .into_iter()
        .map(|(thread, frames, samples, cpu_ns)| ProfileStackView {
            thread,
            frames: frames.iter().map(|f| table.index(f)).collect(),
            samples,
            cpu_ns,
        })
        .collect();
    stacks.sort_by(|a, b| {
        b.cpu_ns
            .cmp(&a.cpu_ns)
            .then(b.samples.cmp(&a.samples))
            .then_with(|| a.thread.cmp(&b.thread))
    });
    CpuProfileView {
        service: hello.service.clone(),
        instance_id: hello.instance_id.clone(),
        pid: hello.pid,
        host: hello.host.clone(),
        started_ms,
        duration_ms: sampled.duration_ms,
        frequency_hz: sampled.frequency_hz,
        samples: sampled.samples,
        samples_dropped,
        caveat,
        frames: table.frames,
        stacks,
    }
}

/// Takes the profiles of a process watched from outside (`--watch`),
/// which has no probe inside to ask: the collector samples it itself
/// ([`crate::event_loops::profile_from_outside`]) on a blocking thread,
/// one profile at a time.
#[derive(Debug, Default)]
pub(crate) struct OutsideTaker {
    busy: Arc<AtomicBool>,
}

impl OutsideTaker {
    /// Starts the profile `order` asks for, or answers that one runs.
    pub(crate) fn begin(&self, order: Order, hello: &Hello, now_ms: i64) {
        if self.busy.swap(true, Ordering::AcqRel) {
            let _ = order
                .reply
                .send(Err(ProfileError::Busy(hello.instance_id.clone())));
            return;
        }
        let busy = Arc::clone(&self.busy);
        let hello = hello.clone();
        tokio::task::spawn_blocking(move || {
            let sampled =
                crate::event_loops::profile_from_outside(&hello, order.duration, order.hz);
            busy.store(false, Ordering::Release);
            let result = sampled.map(|sampled| view(&hello, now_ms, sampled, 0, None));
            let _ = order.reply.send(result);
        });
    }
}

/// Each distinct frame once, for stacks to refer to by index.
#[derive(Debug, Default)]
struct FrameTable {
    frames: Vec<meshwatch_api::Frame>,
    index: HashMap<meshwatch_api::Frame, u32>,
}

impl FrameTable {
    fn index(&mut self, frame: &Frame) -> u32 {
        let frame = crate::stuck::api_frame(frame);
        if let Some(&i) = self.index.get(&frame) {
            return i;
        }
        let i = u32::try_from(self.frames.len()).unwrap_or(u32::MAX);
        self.frames.push(frame.clone());
        self.index.insert(frame, i);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(thread: &str, samples: u64) -> ProfileStack {
        ProfileStack {
            stack: Some(meshwatch_proto::v1::RawStack {
                addresses: vec![1, 2],
            }),
            thread_name: thread.to_owned(),
            samples,
            cpu_ns: samples * 10,
        }
    }

    fn second() -> Duration {
        Duration::from_secs(1)
    }

    #[tokio::test]
    async fn a_profile_is_ordered_gathered_named_and_collected_by_its_ticket() {
        let desk = ProfileDesk::default();
        let conn = ConnId::numbered(1);
        let mut orders = desk.open("a", conn);
        let ticket = desk.order("a", second(), 99, 5).unwrap();
        assert_eq!((ticket.duration_ms, ticket.frequency_hz), (1000, 99));
        assert!(matches!(
            desk.order("a", second(), 99, 5),
            Err(ProfileError::Busy(_))
        ));
        assert!(matches!(
            desk.order("b", second(), 99, 5),
            Err(ProfileError::NotConnected(_))
        ));
        assert!(matches!(desk.lookup(&ticket.id), Some(Lookup::Running(t)) if t == ticket));
        assert!(desk.lookup("p999").is_none());

        let mut taker = Taker::default();
        let request = taker.begin(orders.recv().await.unwrap(), "a", 5).unwrap();
        assert_eq!((request.duration_ms, request.frequency_hz), (1000, 99));
        // A second order while one runs is answered at once.
        let again = desk.order("a", second(), 99, 6).unwrap();
        assert!(taker.begin(orders.recv().await.unwrap(), "a", 6).is_none());
        assert!(matches!(
            desk.lookup(&again.id),
            Some(Lookup::Done(Err(ProfileError::Busy(_))))
        ));
        // Parts gather until the last; a stale request's part is ignored.
        let part = |request_id, last, stacks| ProfileData {
            request_id,
            last,
            stacks,
            samples: 7,
            ..ProfileData::default()
        };
        assert!(
            taker
                .part(part(request.request_id + 1, true, vec![]))
                .is_none()
        );
        assert!(
            taker
                .part(part(request.request_id, false, vec![stack("w", 3)]))
                .is_none()
        );
        let finished = taker
            .part(part(request.request_id, true, vec![stack("x", 4)]))
            .unwrap();
        assert_eq!(finished.stacks.len(), 2);
        let hello = Hello {
            service: "svc".to_owned(),
            instance_id: "a".to_owned(),
            ..Hello::default()
        };
        let frame = |function: &str| Frame {
            function: function.to_owned(),
            ..Frame::default()
        };
        finished.answer(
            &hello,
            vec![
                vec![frame("f"), frame("main")],
                vec![frame("g"), frame("main")],
            ],
        );
        let Some(Lookup::Done(Ok(view))) = desk.lookup(&ticket.id) else {
            panic!("the profile is in");
        };
        assert_eq!(view.samples, 7);
        assert_eq!(view.stacks[0].thread, "x", "heaviest first");
        assert_eq!(view.frames.len(), 3, "main is in the table once");
        let named: Vec<&str> = view
            .frames_of(&view.stacks[0])
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(named, ["g", "main"]);
        assert!(taker.deadline().is_none());

        // A newer connection's line survives the old one closing.
        let _newer = desk.open("a", ConnId::numbered(2));
        desk.close("a", conn);
        assert!(desk.order("a", second(), 99, 7).is_ok());
        desk.close("a", ConnId::numbered(2));
        assert!(matches!(
            desk.order("a", second(), 99, 8),
            Err(ProfileError::NotConnected(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_desk_holds_a_bounded_number_of_profiles_for_a_while() {
        let desk = ProfileDesk::default();
        let mut lines: Vec<_> = (0..=KEPT)
            .map(|i| desk.open(&format!("i{i}"), ConnId::numbered(i as u64)))
            .collect();
        let tickets: Vec<ProfileTicket> = (0..KEPT)
            .map(|i| desk.order(&format!("i{i}"), second(), 99, 0).unwrap())
            .collect();
        assert!(matches!(
            desk.order(&format!("i{KEPT}"), second(), 99, 0),
            Err(ProfileError::TooMany)
        ));
        // The first connection goes away: its profile is done (lost), and
        // makes room for another.
        drop(lines.remove(0));
        assert!(matches!(
            desk.lookup(&tickets[0].id),
            Some(Lookup::Done(Err(ProfileError::Disconnected)))
        ));
        let last = desk.order(&format!("i{KEPT}"), second(), 99, 0).unwrap();
        assert!(
            desk.lookup(&tickets[0].id).is_none(),
            "the oldest done one went"
        );
        assert!(desk.lookup(&last.id).is_some());
        // Done profiles are dropped once they waited long enough.
        drop(lines);
        assert!(matches!(desk.lookup(&last.id), Some(Lookup::Done(_))));
        tokio::time::advance(KEPT_FOR).await;
        assert!(desk.lookup(&last.id).is_none());
    }

    #[tokio::test]
    async fn a_probe_that_refuses_or_stays_silent_gets_a_reason() {
        let mut taker = Taker::default();
        let (reply, answer) = oneshot::channel();
        let request = taker
            .begin(
                Order {
                    duration: Duration::from_secs(1),
                    hz: 99,
                    reply,
                },
                "a",
                0,
            )
            .unwrap();
        let refused = ProfileData {
            request_id: request.request_id,
            last: true,
            error: "a profile of this process is already running".to_owned(),
            ..ProfileData::default()
        };
        taker
            .part(refused)
            .unwrap()
            .answer(&Hello::default(), vec![]);
        assert!(
            matches!(answer.await.unwrap(), Err(ProfileError::Refused(r)) if r.contains("already running"))
        );

        let (reply, answer) = oneshot::channel();
        taker.begin(
            Order {
                duration: Duration::from_secs(1),
                hz: 99,
                reply,
            },
            "a",
            0,
        );
        assert!(taker.deadline().is_some());
        taker.expire();
        assert!(matches!(
            answer.await.unwrap(),
            Err(ProfileError::NoAnswer(_))
        ));
    }
}
