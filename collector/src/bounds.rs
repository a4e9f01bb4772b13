//! What one message from a probe may hold, at most.
//!
//! The frame decoder bounds a message's size, but within that a probe (or
//! anything that speaks the protocol to the port) could send a megabyte
//! name, a hundred thousand threads or a stack of every frame it likes, and
//! the collector keeps the latest snapshot per instance and the evidence of
//! a thousand incidents. Each
//! message is cut to these bounds as it arrives, before anything keeps it:
//! every text to [`MAX_TEXT`] bytes (at a character boundary), every list
//! to the most a real probe sends and some. What was cut is counted
//! (`meshwatch_collector_fields_cut_total`), never silently kept whole.
//!
//! The bounds are far above what the probe sends: its stacks have at most
//! 256 frames, its events 8 raw samples, its snapshots the 32 largest heap
//! sites.

use meshwatch_proto::v1::{Event, Frame, Hello, Module, ProfileData, Snapshot, StuckPoll, event};

/// Bytes of any text: names, paths, function names.
pub(crate) const MAX_TEXT: usize = 1024;
/// Threads of one snapshot.
const MAX_THREADS: usize = 4096;
/// Runtimes of one snapshot, and workers of one runtime.
const MAX_RUNTIMES: usize = 16;
const MAX_WORKERS: usize = 1024;
/// Entries of the other lists of a snapshot (spawn sites, ports, peers,
/// age buckets, socket states, listening addresses, modules).
const MAX_ENTRIES: usize = 256;
/// Heap sites of one snapshot.
const MAX_HEAP_SITES: usize = 64;
/// Frames or addresses of one stack.
const MAX_FRAMES: usize = 256;
/// Raw stack samples of one stuck-poll event.
const MAX_SAMPLES: usize = 16;
/// Bytes of a build ID (GNU build IDs are 20; some linkers write 32).
const MAX_BUILD_ID: usize = 64;
/// Bytes of a Hello's session key kept (probes send 16).
const MAX_SESSION_KEY: usize = 64;
/// Spans of a stuck thread: the probe keeps 16 and a line saying how many
/// more.
const MAX_SPANS: usize = 32;

/// Counts what was cut.
#[derive(Debug, Default)]
struct Cuts(u64);

impl Cuts {
    fn text(&mut self, text: &mut String) {
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            self.0 += 1;
        }
    }

    fn list<T>(&mut self, list: &mut Vec<T>, max: usize) {
        if list.len() > max {
            list.truncate(max);
            self.0 += 1;
        }
    }

    /// Cuts `list` to `max` entries and the text `field` picks in each.
    fn list_of_texts<T>(
        &mut self,
        list: &mut Vec<T>,
        max: usize,
        field: fn(&mut T) -> &mut String,
    ) {
        self.list(list, max);
        for item in list {
            self.text(field(item));
        }
    }

    fn frame(&mut self, frame: &mut Frame) {
        self.text(&mut frame.function);
        self.text(&mut frame.file);
    }

    fn modules(&mut self, modules: &mut Vec<Module>) {
        self.list(modules, MAX_ENTRIES);
        for module in modules {
            self.text(&mut module.path);
            self.list(&mut module.build_id, MAX_BUILD_ID);
        }
    }

    fn frames(&mut self, frames: &mut Vec<Frame>) {
        self.list(frames, MAX_FRAMES);
        for frame in frames {
            self.frame(frame);
        }
    }
}

/// Cuts the texts of `hello` the registry keeps (the service and instance
/// id are checked, and refused, before); how many were cut.
pub(crate) fn bound_hello(hello: &mut Hello) -> u64 {
    let mut cuts = Cuts::default();
    cuts.text(&mut hello.host);
    cuts.text(&mut hello.runtime);
    cuts.text(&mut hello.probe_version);
    cuts.list(&mut hello.session_key, MAX_SESSION_KEY);
    cuts.0
}

/// Cuts `snapshot` to the bounds; how many fields were cut.
pub(crate) fn bound_snapshot(snapshot: &mut Snapshot) -> u64 {
    let mut cuts = Cuts::default();
    cuts.list_of_texts(&mut snapshot.threads, MAX_THREADS, |t| &mut t.name);
    cuts.list(&mut snapshot.runtimes, MAX_RUNTIMES);
    for runtime in &mut snapshot.runtimes {
        cuts.text(&mut runtime.flavor);
        cuts.list(&mut runtime.worker, MAX_WORKERS);
        cuts.list_of_texts(&mut runtime.spawn_sites, MAX_ENTRIES, |s| &mut s.location);
    }
    cuts.list(&mut snapshot.heap_sites, MAX_HEAP_SITES);
    for site in &mut snapshot.heap_sites {
        if let Some(stack) = &mut site.stack {
            cuts.list(&mut stack.addresses, MAX_FRAMES);
        }
    }
    if let Some(sockets) = &mut snapshot.sockets {
        cuts.list_of_texts(&mut sockets.by_state, MAX_ENTRIES, |s| &mut s.state);
        cuts.list(&mut sockets.by_listen_port, MAX_ENTRIES);
        cuts.list_of_texts(&mut sockets.top_peers, MAX_ENTRIES, |p| &mut p.address);
        cuts.list(&mut sockets.ages, MAX_ENTRIES);
        cuts.list_of_texts(&mut sockets.listening, MAX_ENTRIES, |a| a);
    }
    cuts.modules(&mut snapshot.modules);
    cuts.text(&mut snapshot.tokio_console);
    cuts.0
}

/// Cuts `event` to the bounds; how many fields were cut.
pub(crate) fn bound_event(event: &mut Event) -> u64 {
    match &mut event.kind {
        Some(event::Kind::StuckPoll(stuck)) => bound_stuck_poll(stuck),
        None => 0,
    }
}

fn bound_stuck_poll(stuck: &mut StuckPoll) -> u64 {
    let mut cuts = Cuts::default();
    cuts.text(&mut stuck.key);
    cuts.text(&mut stuck.thread_name);
    cuts.text(&mut stuck.spawn_location);
    cuts.text(&mut stuck.caveat);
    cuts.frames(&mut stuck.frames);
    cuts.list(&mut stuck.hot_frames, MAX_FRAMES);
    for frame in stuck.hot_frames.iter_mut().filter_map(|h| h.frame.as_mut()) {
        cuts.frame(frame);
    }
    cuts.list(&mut stuck.samples, MAX_SAMPLES);
    for sample in &mut stuck.samples {
        cuts.list(&mut sample.addresses, MAX_FRAMES);
    }
    cuts.modules(&mut stuck.modules);
    cuts.list_of_texts(&mut stuck.spans, MAX_SPANS, |span| span);
    // The collector names the samples; what a probe puts here is not its
    // to say.
    if !stuck.named_samples.is_empty() {
        stuck.named_samples.clear();
        cuts.0 += 1;
    }
    cuts.0
}

/// Cuts a part of a CPU profile: thread names, stack depths, modules and
/// the error (how many stacks a profile keeps is the taker's to bound).
pub(crate) fn bound_profile(data: &mut ProfileData) -> u64 {
    let mut cuts = Cuts::default();
    cuts.text(&mut data.error);
    cuts.modules(&mut data.modules);
    for stack in &mut data.stacks {
        cuts.text(&mut stack.thread_name);
        if let Some(raw) = &mut stack.stack {
            cuts.list(&mut raw.addresses, MAX_FRAMES);
        }
    }
    cuts.0
}

#[cfg(test)]
mod tests {
    use meshwatch_proto::v1::{RawStack, ThreadStats};

    use super::*;

    #[test]
    fn huge_texts_and_lists_are_cut_and_counted() {
        let mut snapshot = Snapshot {
            threads: (0..10_000)
                .map(|tid| ThreadStats {
                    tid,
                    name: "é".repeat(4096),
                    ..ThreadStats::default()
                })
                .collect(),
            modules: vec![Module {
                path: "/x".repeat(1 << 19),
                ..Module::default()
            }],
            ..Snapshot::default()
        };
        assert!(bound_snapshot(&mut snapshot) > 0);
        assert_eq!(snapshot.threads.len(), MAX_THREADS);
        assert!(snapshot.threads.iter().all(|t| t.name.len() <= MAX_TEXT));
        assert!(
            snapshot.threads[0].name.chars().all(|c| c == 'é'),
            "cut between characters"
        );
        assert_eq!(snapshot.modules[0].path.len(), MAX_TEXT);
        let mut hello = Hello {
            host: "h".repeat(1 << 20),
            ..Hello::default()
        };
        assert_eq!(bound_hello(&mut hello), 1);
        assert_eq!(hello.host.len(), MAX_TEXT);
    }

    #[test]
    fn a_real_probes_message_is_untouched() {
        let mut snapshot = Snapshot {
            threads: vec![ThreadStats {
                tid: 1,
                name: "tokio-runtime-worker".to_owned(),
                ..ThreadStats::default()
            }],
            ..Snapshot::default()
        };
        let before = snapshot.clone();
        assert_eq!(bound_snapshot(&mut snapshot), 0);
        assert_eq!(snapshot, before);
        let mut event = Event {
            kind: Some(event::Kind::StuckPoll(StuckPoll {
                key: "w0-1".to_owned(),
                samples: vec![RawStack {
                    addresses: vec![1, 2, 3],
                }],
                ..StuckPoll::default()
            })),
            ..Event::default()
        };
        let before = event.clone();
        assert_eq!(bound_event(&mut event), 0);
        assert_eq!(event, before);
    }

    #[test]
    fn a_probe_cannot_name_its_own_samples() {
        let mut event = Event {
            kind: Some(event::Kind::StuckPoll(StuckPoll {
                named_samples: vec![Default::default()],
                ..StuckPoll::default()
            })),
            ..Event::default()
        };
        assert_eq!(bound_event(&mut event), 1);
        let Some(event::Kind::StuckPoll(stuck)) = &event.kind else {
            unreachable!()
        };
        assert!(stuck.named_samples.is_empty());
    }
}
