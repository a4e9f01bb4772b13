//! The `tracing` spans each thread is inside, readable from another thread
//! without a lock: what lets a stuck poll's report say which request it is
//! serving (`request{method=GET path=/checkout id=7f3a}`).
//!
//! [`SpanLayer`] (feature `spans`) pushes a span's text when its thread
//! enters it and pops it on exit. Each thread writes only its own
//! [`Slot`]: a fixed array of span texts under a sequence lock, so the
//! writer never waits and a reader (the watchdog, looking at a stuck
//! thread) retries rather than blocks. A reader can never make a stuck
//! thread wait, and a thread that is stuck does not write, so reading its
//! spans succeeds at the first try.
//!
//! Slots are allocated once per concurrent thread and never freed: a thread
//! that exits gives its slot back for the next thread to take, so their
//! number is bounded by the most threads that ever ran with spans at once
//! (each slot is 4 KiB). Without the layer no slot exists and
//! [`active_on`] finds nothing.

#[cfg(feature = "spans")]
mod layer;

#[cfg(feature = "spans")]
pub use layer::SpanLayer;

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// Spans kept per thread, outermost first; deeper ones are counted.
pub(crate) const MAX_DEPTH: usize = 16;
/// Bytes kept of a span's text; longer texts are cut.
pub(crate) const MAX_TEXT: usize = 256;
const WORDS: usize = MAX_TEXT / 8;
/// Reads of a slot that keeps changing before the reader gives up.
const MAX_ATTEMPTS: usize = 64;

/// One thread's entered spans.
struct Slot {
    /// The thread using the slot, 0 when free.
    owner: AtomicU32,
    /// Odd while the owner writes.
    seq: AtomicU64,
    /// Spans entered, possibly more than [`MAX_DEPTH`].
    depth: AtomicUsize,
    /// Each entry's span id, to rewrite its text when a field is recorded.
    #[cfg(feature = "spans")]
    ids: [AtomicU64; MAX_DEPTH],
    lens: [AtomicU16; MAX_DEPTH],
    text: [[AtomicU64; WORDS]; MAX_DEPTH],
    /// The next slot of the list; set once, before the slot is published.
    next: AtomicPtr<Slot>,
}

/// The list of every slot, newest first.
static SLOTS: AtomicPtr<Slot> = AtomicPtr::new(ptr::null_mut());

impl Slot {
    #[cfg(feature = "spans")]
    fn new(owner: u32) -> Self {
        Self {
            owner: AtomicU32::new(owner),
            seq: AtomicU64::new(0),
            depth: AtomicUsize::new(0),
            ids: std::array::from_fn(|_| AtomicU64::new(0)),
            lens: std::array::from_fn(|_| AtomicU16::new(0)),
            text: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Runs `write` as the slot's one writer, inside the sequence lock.
    #[cfg(feature = "spans")]
    fn write(&self, write: impl FnOnce()) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        write();
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    #[cfg(feature = "spans")]
    fn push(&self, id: u64, text: &[u8]) {
        self.write(|| {
            let depth = self.depth.load(Ordering::Relaxed);
            self.set(depth, id, text);
            self.depth.store(depth.saturating_add(1), Ordering::Relaxed);
        });
    }

    /// Rewrites the text of span `id`, if it is entered.
    #[cfg(feature = "spans")]
    fn update(&self, id: u64, text: &[u8]) {
        let depth = self.depth.load(Ordering::Relaxed).min(MAX_DEPTH);
        if let Some(at) = self.ids[..depth]
            .iter()
            .rposition(|entry| entry.load(Ordering::Relaxed) == id)
        {
            self.write(|| self.set(at, id, text));
        }
    }

    /// Writes entry `at` (nothing past [`MAX_DEPTH`]); inside `write`.
    #[cfg(feature = "spans")]
    fn set(&self, at: usize, id: u64, text: &[u8]) {
        let (Some(entry), Some(len), Some(words)) =
            (self.ids.get(at), self.lens.get(at), self.text.get(at))
        else {
            return;
        };
        let text = &text[..text.len().min(MAX_TEXT)];
        for (word, chunk) in words.iter().zip(text.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        len.store(text.len() as u16, Ordering::Relaxed);
        entry.store(id, Ordering::Relaxed);
    }

    #[cfg(feature = "spans")]
    fn pop(&self) {
        self.write(|| {
            let depth = self.depth.load(Ordering::Relaxed);
            self.depth.store(depth.saturating_sub(1), Ordering::Relaxed);
        });
    }

    /// A consistent copy of the spans, outermost first, if one could be
    /// read within [`MAX_ATTEMPTS`].
    fn read(&self) -> Option<Vec<String>> {
        for _ in 0..MAX_ATTEMPTS {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let depth = self.depth.load(Ordering::Relaxed);
            let mut copies: Vec<Vec<u8>> = Vec::with_capacity(depth.min(MAX_DEPTH));
            for (len, words) in self.lens.iter().zip(&self.text).take(depth) {
                let len = usize::from(len.load(Ordering::Relaxed)).min(MAX_TEXT);
                let mut bytes: Vec<u8> = words
                    .iter()
                    .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
                    .collect();
                bytes.truncate(len);
                copies.push(bytes);
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            let mut spans: Vec<String> = copies
                .into_iter()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .collect();
            if depth > MAX_DEPTH {
                spans.push(format!("… {} more spans", depth - MAX_DEPTH));
            }
            return Some(spans);
        }
        None
    }
}

/// This thread's slot, taken on its first span and given back when it
/// exits.
#[cfg(feature = "spans")]
struct Owned(&'static Slot);

#[cfg(feature = "spans")]
impl Drop for Owned {
    fn drop(&mut self) {
        self.0.write(|| self.0.depth.store(0, Ordering::Relaxed));
        self.0.owner.store(0, Ordering::Release);
    }
}

#[cfg(feature = "spans")]
thread_local! {
    static MINE: Owned = Owned(claim(crate::identity::current_tid()));
}

/// A free slot for thread `tid`, or a new one added to the list.
#[cfg(feature = "spans")]
fn claim(tid: u32) -> &'static Slot {
    let mut at = SLOTS.load(Ordering::Acquire);
    // SAFETY: slots are leaked, so every pointer in the list stays valid.
    while let Some(slot) = unsafe { at.as_ref() } {
        if slot
            .owner
            .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return slot;
        }
        at = slot.next.load(Ordering::Acquire);
    }
    let slot: &'static Slot = Box::leak(Box::new(Slot::new(tid)));
    let mut head = SLOTS.load(Ordering::Acquire);
    loop {
        slot.next.store(head, Ordering::Relaxed);
        match SLOTS.compare_exchange_weak(
            head,
            ptr::from_ref(slot).cast_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return slot,
            Err(now) => head = now,
        }
    }
}

/// Records that the calling thread entered span `id`, described by
/// `text`. Does nothing while the thread is exiting.
#[cfg(feature = "spans")]
pub(crate) fn enter(id: u64, text: &[u8]) {
    let _ = MINE.try_with(|mine| mine.0.push(id, text));
}

/// Rewrites the text of span `id` if the calling thread is inside it (a
/// field was recorded after it was entered).
#[cfg(feature = "spans")]
pub(crate) fn update(id: u64, text: &[u8]) {
    let _ = MINE.try_with(|mine| mine.0.update(id, text));
}

/// Records that the calling thread left its innermost span.
#[cfg(feature = "spans")]
pub(crate) fn exit() {
    let _ = MINE.try_with(|mine| mine.0.pop());
}

/// The spans thread `tid` of this process is inside, outermost first;
/// empty when it is in none or no span is recorded (no [`SpanLayer`]).
pub(crate) fn active_on(tid: u32) -> Vec<String> {
    let mut at = SLOTS.load(Ordering::Acquire);
    // SAFETY: slots are leaked, so every pointer in the list stays valid.
    while let Some(slot) = unsafe { at.as_ref() } {
        if slot.owner.load(Ordering::Acquire) == tid {
            let spans = slot.read().unwrap_or_default();
            // The thread may have exited and its slot gone to another
            // meanwhile: then what was read is not `tid`'s.
            return if slot.owner.load(Ordering::Acquire) == tid {
                spans
            } else {
                Vec::new()
            };
        }
        at = slot.next.load(Ordering::Acquire);
    }
    Vec::new()
}

#[cfg(all(test, feature = "spans"))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn another_thread_reads_the_spans_a_thread_is_in() {
        let (inside, entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            enter(1, b"request{method=GET path=/checkout}");
            enter(1, b"db_query{table=orders}");
            enter(1, b"cache");
            exit();
            inside.send(crate::identity::current_tid()).unwrap();
            released.recv().unwrap();
            exit();
            exit();
        });
        let tid = entered.recv().unwrap();
        assert_eq!(
            active_on(tid),
            [
                "request{method=GET path=/checkout}",
                "db_query{table=orders}"
            ]
        );
        release.send(()).unwrap();
        worker.join().unwrap();
        assert!(active_on(tid).is_empty(), "the slot went with the thread");
        assert!(active_on(u32::MAX).is_empty());
    }

    #[test]
    fn long_texts_are_cut_and_deep_stacks_counted() {
        let (inside, entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let long = "x".repeat(MAX_TEXT * 2);
            enter(1, long.as_bytes());
            for _ in 0..MAX_DEPTH + 2 {
                enter(1, b"level");
            }
            inside.send(crate::identity::current_tid()).unwrap();
            released.recv().unwrap();
        });
        let tid = entered.recv().unwrap();
        let spans = active_on(tid);
        assert_eq!(spans[0].len(), MAX_TEXT);
        assert_eq!(spans.len(), MAX_DEPTH + 1);
        assert_eq!(spans[MAX_DEPTH], "… 3 more spans");
        release.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn a_reader_never_sees_a_torn_text_while_the_thread_churns() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (inside, entered) = mpsc::channel();
        let worker = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                inside.send(crate::identity::current_tid()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    enter(1, b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
                    exit();
                    enter(1, b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
                    exit();
                }
            })
        };
        let tid = entered.recv().unwrap();
        for _ in 0..10_000 {
            for span in active_on(tid) {
                assert!(
                    span.bytes().all(|b| b == b'a') || span.bytes().all(|b| b == b'b'),
                    "torn: {span}"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }
}
