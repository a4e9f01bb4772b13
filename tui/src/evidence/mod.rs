//! An incident's evidence, read for people.
//!
//! The collector sends evidence typed by the incident's kind
//! (`meshwatch_api::Evidence`). The kinds whose evidence has a view of its
//! own are turned here into what the views show: [`LoopEvidence`] for
//! `runaway_loop` and `blocked_worker` (the stack first), [`MemoryEvidence`]
//! for `memory_growth` (the growing sites and the trend); the leaks of
//! sockets, fds and tasks read in order with labels and units ([`leaks`]),
//! and so do crash loops and outages ([`lifecycle`]).
//! Every other kind,
//! and a kind from a newer collector, goes through [`generic`], which shows
//! any JSON as fields and tables formatted by the suffix of their names: a
//! new detector is readable on screen and in reports before anyone writes a
//! view for it.
//!
//! Both the TUI and `meshwatch report` render from these structures.

mod generic;
mod leaks;
mod lifecycle;
mod memory;
mod stuck;

pub use generic::{Field, Section, generic};
pub use memory::MemoryEvidence;
pub use stuck::LoopEvidence;

use std::borrow::Cow;

use meshwatch_api::Incident;

/// One frame of a named stack, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The demangled function, or `module+0xoffset` when it could not be
    /// named.
    pub function: String,
    /// `file:line` when known.
    pub location: Option<String>,
    /// The service's own code, rather than a library's, the runtime's or
    /// the standard library's: what a person reads first.
    pub own: bool,
}

/// A stack as shown folded: the service's own frames (and those asked to
/// be kept) one by one, each run of other frames as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackRow {
    /// The frame at this index.
    Frame(usize),
    /// `count` frames of the libraries named, folded.
    Folded { count: usize, crates: Vec<String> },
}

/// The rows of `frames` with every run of two or more frames that are not
/// the service's own and not `kept` (the hot one) folded into one.
pub fn fold(frames: &[Frame], kept: impl Fn(usize) -> bool) -> Vec<StackRow> {
    let mut rows = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let flush = |run: &mut Vec<usize>, rows: &mut Vec<StackRow>| {
        if run.len() >= 2 {
            let mut crates: Vec<String> = Vec::new();
            for &i in run.iter() {
                let name = crate_of(&frames[i].function);
                if !crates.contains(&name) {
                    crates.push(name);
                }
            }
            rows.push(StackRow::Folded {
                count: run.len(),
                crates,
            });
        } else {
            rows.extend(run.iter().map(|&i| StackRow::Frame(i)));
        }
        run.clear();
    };
    for (i, frame) in frames.iter().enumerate() {
        if frame.own || kept(i) {
            flush(&mut run, &mut rows);
            rows.push(StackRow::Frame(i));
        } else {
            run.push(i);
        }
    }
    flush(&mut run, &mut rows);
    rows
}

/// The crate (or library) a function is in, as a person names it: the
/// first segment of its path (`tokio`, `std`), `v8` for V8's builtins and
/// stubs, the module of an unnamed frame (`libc.so.6`), else the function
/// itself.
fn crate_of(function: &str) -> String {
    const V8_CODE: [&str; 5] = [
        "Builtin",
        "BytecodeHandler:",
        "Stub:",
        "RegExp:",
        "Handler:",
    ];
    if V8_CODE.iter().any(|kind| function.starts_with(kind)) {
        return "v8".to_owned();
    }
    let path = function.trim_start_matches(['<', '&']);
    if let Some((module, _)) = path.rsplit_once("+0x") {
        return module.to_owned();
    }
    path.split("::").next().unwrap_or(path).to_owned()
}

impl StackRow {
    /// The folded line's text: `… 12 frames of tokio, std, core`.
    pub fn folded_text(count: usize, crates: &[String]) -> String {
        let mut names: Vec<&str> = crates.iter().take(4).map(String::as_str).collect();
        if crates.len() > 4 {
            names.push("…");
        }
        format!("… {count} frames of {}", names.join(", "))
    }
}

impl From<&meshwatch_api::Frame> for Frame {
    fn from(frame: &meshwatch_api::Frame) -> Self {
        let location = match (short_path(&frame.file).as_ref(), frame.line) {
            ("", _) => None,
            (file, 0) => Some(file.to_owned()),
            (file, line) => Some(format!("{file}:{line}")),
        };
        Frame {
            function: without_parameters(&frame.function).to_owned(),
            location,
            own: frame.is_own_code(),
        }
    }
}

/// A demangled C++ function without its parameter list and qualifiers
/// (`node::Parser::Execute`, not `node::Parser::Execute(char const*,
/// unsigned long)`), as backtraces print it: the types say little during
/// an incident and push the location off the line. Any other name (Rust,
/// JavaScript, Python, a thunk in braces) as it is.
fn without_parameters(function: &str) -> &str {
    let trimmed = function.strip_suffix(" const").unwrap_or(function);
    if !trimmed.ends_with(')') || function.starts_with('{') {
        return function;
    }
    let mut depth = 0_usize;
    for (at, c) in trimmed.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    let name = &trimmed[..at];
                    return if name.is_empty() { function } else { name };
                }
            }
            _ => {}
        }
    }
    function
}

/// A source path as a backtrace reads best: a dependency's from its crate
/// and version (`tokio-1.54.1/src/runtime/task/core.rs`, not the whole
/// path into cargo's registry), the standard library's from its crate
/// (`std/src/panicking.rs`, not `/rustc/<commit>/library/...`), a git
/// dependency's from its checkout; any other path as it is.
pub fn short_path(file: &str) -> Cow<'_, str> {
    if let Some((_, rest)) = file.split_once("/.cargo/registry/src/") {
        // `index.crates.io-<hash>/tokio-1.54.1/src/...`
        return Cow::Borrowed(rest.split_once('/').map_or(rest, |(_, in_crate)| in_crate));
    }
    if let Some((_, rest)) = file.split_once("/.cargo/git/checkouts/") {
        // `<repo>-<hash>/<commit>/src/...`
        let mut parts = rest.splitn(3, '/');
        if let (Some(checkout), Some(_commit), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        {
            let repo = checkout.rsplit_once('-').map_or(checkout, |(repo, _)| repo);
            return Cow::Owned(format!("{repo}/{path}"));
        }
    }
    if let Some(rest) = file.strip_prefix("/rustc/")
        && let Some((_, library)) = rest.split_once("/library/")
    {
        return Cow::Borrowed(library);
    }
    Cow::Borrowed(file)
}

/// A stack of the API's frames, as shown.
fn frames(frames: &[meshwatch_api::Frame]) -> Vec<Frame> {
    frames.iter().map(Frame::from).collect()
}

/// What an incident's evidence is, for the views.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// A stuck poll: the stack comes first.
    Loop(LoopEvidence),
    /// Memory growth: the trend and the growing sites.
    Memory(MemoryEvidence),
    /// Any other kind: shown generically.
    Other,
}

impl Evidence {
    /// The view of `incident`'s evidence.
    pub fn of(incident: &Incident) -> Self {
        match &incident.evidence {
            meshwatch_api::Evidence::StuckPoll(stuck) => Evidence::Loop(LoopEvidence::from(stuck)),
            meshwatch_api::Evidence::MemoryGrowth(memory) => {
                Evidence::Memory(MemoryEvidence::from(memory))
            }
            _ => Evidence::Other,
        }
    }

    /// The evidence a typed view does not show, as sections: all of it for
    /// kinds without a view.
    pub fn rest(&self, incident: &Incident, now_ms: i64) -> Vec<Section> {
        match self {
            Evidence::Loop(stuck) => stuck.rest(),
            Evidence::Memory(memory) => memory.rest(now_ms),
            Evidence::Other => leaks::sections(&incident.evidence)
                .or_else(|| lifecycle::sections(&incident.evidence, now_ms))
                .unwrap_or_else(|| generic(&incident.evidence.to_value(), now_ms)),
        }
    }

    /// Stacks with weights, for a flame graph: the loop's samples, or the
    /// growing sites weighed by their live bytes.
    pub fn weighted_stacks(&self) -> Vec<(Vec<Frame>, u64)> {
        match self {
            Evidence::Loop(stuck) => stuck.weighted_stacks(),
            Evidence::Memory(memory) => memory
                .sites
                .iter()
                .filter(|s| !s.frames.is_empty())
                .map(|s| (s.frames.clone(), s.live_bytes.max(1)))
                .collect(),
            Evidence::Other => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::json;

    fn names(stack: &[Frame]) -> Vec<&str> {
        stack.iter().map(|f| f.function.as_str()).collect()
    }

    #[test]
    fn cpp_functions_read_without_their_parameters() {
        for (demangled, shown) in [
            (
                "node::(anonymous namespace)::Parser::Execute(char const*, unsigned long)",
                "node::(anonymous namespace)::Parser::Execute",
            ),
            (
                "v8::base::Time::ToJsTime() const",
                "v8::base::Time::ToJsTime",
            ),
            (
                "std::function<void (int)>::operator()(int) const",
                "std::function<void (int)>::operator()",
            ),
            (
                "{virtual override thunk({offset(-56)}, node::Parser::OnStreamRead(long))}",
                "{virtual override thunk({offset(-56)}, node::Parser::OnStreamRead(long))}",
            ),
            ("svc::handle::{{closure}}", "svc::handle::{{closure}}"),
            ("busyFor", "busyFor"),
            ("(anonymous)", "(anonymous)"),
            ("unbalanced)", "unbalanced)"),
        ] {
            assert_eq!(without_parameters(demangled), shown, "{demangled}");
        }
    }

    #[test]
    fn runs_of_library_frames_fold_around_the_services_own_and_the_hot_one() {
        let frame = |function: &str, file: &str| {
            Frame::from(&meshwatch_api::Frame {
                function: function.to_owned(),
                file: file.to_owned(),
                line: 1,
            })
        };
        let registry = "/root/.cargo/registry/src/index.crates.io-1/tokio-1.54.1/src/x.rs";
        let frames = [
            frame(
                "core::str::next_code_point",
                "/rustc/abc/library/core/src/str.rs",
            ),
            frame("svc::parse", "src/parse.rs"),
            frame("svc::handle", "src/handle.rs"),
            frame("tokio::runtime::poll", registry),
            frame("<tokio::task::Core as X>::poll", registry),
            frame(
                "std::panicking::try",
                "/rustc/abc/library/std/src/panicking.rs",
            ),
            frame("libc.so.6+0x1a2b", ""),
        ];
        assert!(frames[1].own && !frames[0].own && !frames[6].own);
        assert_eq!(
            fold(&frames, |i| i == 0),
            [
                StackRow::Frame(0),
                StackRow::Frame(1),
                StackRow::Frame(2),
                StackRow::Folded {
                    count: 4,
                    crates: vec!["tokio".to_owned(), "std".to_owned(), "libc.so.6".to_owned()]
                },
            ]
        );
        assert_eq!(
            StackRow::folded_text(4, &["tokio".to_owned(), "std".to_owned()]),
            "… 4 frames of tokio, std"
        );
        // A lone library frame between the service's is shown, not folded.
        assert_eq!(fold(&frames[..3], |_| false).len(), 3);
    }

    #[test]
    fn dependency_and_std_paths_read_from_their_crate() {
        assert_eq!(
            short_path(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/core.rs"
            ),
            "tokio-1.54.1/src/runtime/task/core.rs"
        );
        assert_eq!(
            short_path(
                "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/panicking.rs"
            ),
            "std/src/panicking.rs"
        );
        assert_eq!(
            short_path(
                "/home/ci/.cargo/git/checkouts/hyper-0a1b2c3d/5f6e7a8/src/proto/h1/dispatch.rs"
            ),
            "hyper/src/proto/h1/dispatch.rs"
        );
        assert_eq!(
            short_path("examples/src/faults/loop_parser.rs"),
            "examples/src/faults/loop_parser.rs"
        );
        assert_eq!(short_path(""), "");
        let frame = Frame::from(&meshwatch_api::Frame {
            function: "std::panicking::try".to_owned(),
            file: "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/panicking.rs"
                .to_owned(),
            line: 581,
        });
        assert_eq!(frame.location.as_deref(), Some("std/src/panicking.rs:581"));
    }

    #[test]
    fn a_stuck_poll_weighs_its_samples_for_the_flame_graph() {
        let Evidence::Loop(stuck) = Evidence::of(&fixtures::runaway()) else {
            panic!("a runaway loop has loop evidence");
        };
        assert_eq!(stuck.thread, "tokio-rt-worker (tid 4244)");
        assert_eq!(stuck.stack_samples, 8);
        assert_eq!(
            stuck.frames[1].location.as_deref(),
            Some("examples/src/faults.rs:57")
        );
        assert!(!stuck.is_hot(0) && stuck.is_hot(1), "parse_header is hot");
        let stacks = Evidence::Loop(stuck).weighted_stacks();
        let weights: Vec<u64> = stacks.iter().map(|(_, n)| *n).collect();
        assert_eq!(weights, [5, 3]);
        assert_eq!(
            names(&stacks[1].0)[0],
            "core::str::validations::next_code_point"
        );
    }

    #[test]
    fn when_the_hottest_leaves_are_below_the_common_stack_the_innermost_own_frame_is_hot() {
        let mut incident = fixtures::runaway();
        let meshwatch_api::Evidence::StuckPoll(e) = &mut incident.evidence else {
            panic!("stuck poll evidence");
        };
        for hot in &mut e.hot_frames {
            hot.frame.function = format!("{}_leaf_below", hot.frame.function);
        }
        let marked = |incident: &Incident| -> Vec<usize> {
            let Evidence::Loop(stuck) = Evidence::of(incident) else {
                panic!("a runaway loop has loop evidence");
            };
            (0..stuck.frames.len())
                .filter(|&i| stuck.is_hot(i))
                .collect()
        };
        // Frame 0 is in core, frame 1 the service's parser.
        assert_eq!(marked(&incident), [1], "the service's innermost frame");
        let meshwatch_api::Evidence::StuckPoll(e) = &mut incident.evidence else {
            panic!("stuck poll evidence");
        };
        for frame in &mut e.frames {
            frame.function = format!("tokio::{}", frame.function);
        }
        assert_eq!(
            marked(&incident),
            [0],
            "without own frames, the deepest frame every sample shares"
        );
    }

    #[test]
    fn without_samples_the_hot_leaves_stand_on_the_common_frames() {
        let mut incident = fixtures::runaway();
        let meshwatch_api::Evidence::StuckPoll(e) = &mut incident.evidence else {
            panic!("stuck poll evidence");
        };
        e.samples.clear();
        e.frames.remove(0);
        e.hot_frames.push(meshwatch_api::evidence::HotFrame {
            frame: e.frames[0].clone(),
            samples: 3,
        });
        e.hot_frames[1].frame.function = "next_field".to_owned();
        let stacks = Evidence::of(&incident).weighted_stacks();
        assert_eq!(stacks.len(), 2);
        assert_eq!(stacks[0].1, 5);
        assert_eq!(names(&stacks[0].0)[0], "mesh_service::faults::parse_header");
        assert_eq!(
            names(&stacks[1].0)[..2],
            ["next_field", "mesh_service::faults::parse_header"]
        );
    }

    #[test]
    fn memory_growth_shows_its_sites_by_live_bytes_and_the_detectors_slope() {
        let Evidence::Memory(memory) = Evidence::of(&fixtures::growth()) else {
            panic!("memory growth has memory evidence");
        };
        assert_eq!(memory.sites.len(), 2);
        assert_eq!(
            memory.sites[0].label,
            "mesh_service::faults::SessionCache::insert"
        );
        assert_eq!(memory.sites[0].live_bytes, 8 << 20);
        assert!(memory.sites[0].figures.iter().any(|f| f.value == "8.0 MiB"));
        let slope = memory.slope_bytes_per_ms.expect("the heap's trend");
        assert!((slope - 17.476).abs() < 1e-9, "{slope}");
        let stacks = Evidence::Memory(memory).weighted_stacks();
        assert_eq!(stacks.len(), 1, "only the site with a stack");
        assert_eq!(stacks[0].1, 8 << 20);
    }

    #[test]
    fn a_kind_without_a_view_is_shown_from_its_serialized_type() {
        // As a collector newer than this build would send it.
        let mut incident = fixtures::socket_leak();
        incident.evidence = meshwatch_api::Evidence::Other(incident.evidence.to_value());
        assert_eq!(Evidence::of(&incident), Evidence::Other);
        let Section::Fields(fields) = &Evidence::Other.rest(&incident, fixtures::NOW_MS)[0] else {
            panic!("fields first");
        };
        let shown = |name: &str| {
            fields
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value.as_str())
        };
        assert_eq!(shown("tcp_close_wait"), Some("120"));
        assert_eq!(shown("close_wait_trend.per_minute"), Some("24.0/min"));
        assert_eq!(shown("window_seconds"), Some("5m00s"));
    }

    #[test]
    fn generic_formats_by_the_suffix_of_each_name() {
        let sections = generic(
            &json!({
                "close_wait": 120, "slope_per_min": 24.0, "since_at_ms": 40_000,
                "stuck_for_ms": 1500, "limit_bytes": 1048576, "nested": {"ratio": 0.5},
                "peers": [{"peer": "a", "count": 1}, {"peer": "b", "age_ms": 61_000}]
            }),
            100_000,
        );
        let Section::Fields(fields) = &sections[0] else {
            panic!("fields first")
        };
        let shown: Vec<String> = fields
            .iter()
            .map(|f| format!("{}={}", f.name, f.value))
            .collect();
        assert_eq!(
            shown,
            vec![
                "close_wait=120",
                "slope_per_min=24.0/min",
                "since_at_ms=1m00s ago",
                "stuck_for_ms=1.5s",
                "limit_bytes=1.0 MiB",
                "nested.ratio=0.500"
            ]
        );
        let Section::Table {
            title,
            columns,
            rows,
        } = &sections[1]
        else {
            panic!("then a table")
        };
        assert_eq!(title, "peers");
        assert_eq!(columns, &vec!["peer", "count", "age_ms"]);
        assert_eq!(rows[1], vec!["b", "-", "1m01s"]);
    }
}
