//! An incident's evidence, read for people.
//!
//! Evidence is JSON whose shape belongs to the detector that wrote it. Kinds
//! whose evidence has a shape worth a view of its own are read into a typed
//! view here ([`LoopEvidence`] for `runaway_loop` and `blocked_worker`,
//! [`MemoryEvidence`] for `memory_growth`); the reading is lenient, so a
//! missing field is just not shown. Everything else — other kinds, new
//! kinds, and the fields a typed view does not use — goes through
//! [`generic`], which turns any JSON into fields and tables and formats
//! values by the suffix of their name (`_bytes`, `_ms`, `_at_ms`,
//! `_percent`, `_per_s`, …). A new detector is therefore readable on screen
//! and in reports before anyone writes a view for it.
//!
//! Both the TUI and `meshwatch report` render from these structures.

use meshwatch_collector::incidents::Incident;
use serde_json::Value;

use crate::format;

/// One frame of a symbolized stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The demangled function, or `?` when the symbol is unknown.
    pub function: String,
    /// `file:line` when known.
    pub location: Option<String>,
}

impl Frame {
    /// Reads a frame written as a string or as `{function, file, line}`.
    fn read(value: &Value) -> Option<Frame> {
        if let Some(function) = value.as_str() {
            return Some(Frame {
                function: function.to_owned(),
                location: None,
            });
        }
        let object = value.as_object()?;
        let function = ["function", "name", "symbol"]
            .iter()
            .find_map(|key| object.get(*key).and_then(Value::as_str))
            .unwrap_or("?")
            .to_owned();
        let location = object.get("file").and_then(Value::as_str).map(|file| {
            match object.get("line").and_then(Value::as_u64) {
                Some(line) => format!("{file}:{line}"),
                None => file.to_owned(),
            }
        });
        Some(Frame { function, location })
    }
}

/// Reads a stack: an array of frames, innermost first.
fn frames(value: Option<&Value>) -> Vec<Frame> {
    value
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Frame::read).collect())
        .unwrap_or_default()
}

/// One figure of the evidence, formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The JSON key, dotted for nested objects.
    pub name: String,
    /// The value, formatted by the suffix of its name.
    pub value: String,
}

/// A piece of generically shown evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// Scalar figures.
    Fields(Vec<Field>),
    /// An array of objects, one row each; columns are the union of their keys.
    Table {
        /// The array's key.
        title: String,
        /// Column names.
        columns: Vec<String>,
        /// Formatted cells, one `Vec` per object.
        rows: Vec<Vec<String>>,
    },
}

/// Formats `value` by the suffix of `key`: sizes, durations, times, rates.
pub fn humanize(key: &str, value: &Value, now_ms: i64) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let v = n.as_f64().unwrap_or(0.0);
            humanize_number(key, v, now_ms).unwrap_or_else(|| n.to_string())
        }
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => items
            .iter()
            .map(|item| humanize(key, item, now_ms))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn humanize_number(key: &str, v: f64, now_ms: i64) -> Option<String> {
    if let Some((what, per)) = key.split_once("_per_") {
        let per = match per {
            "s" | "sec" | "second" => "s",
            "min" | "minute" => "min",
            "h" | "hour" => "h",
            other => other,
        };
        let amount = if what.ends_with("bytes") {
            format::bytes_short(v)
        } else {
            format!("{v:.1}")
        };
        return Some(format!("{amount}/{per}"));
    }
    if key.ends_with("_at_ms") {
        return Some(format::relative(now_ms, v as i64));
    }
    if key.ends_with("_ms") {
        return Some(format::duration_ms(v));
    }
    if key.ends_with("_seconds") || key.ends_with("_s") {
        return Some(format::duration_ms(v * 1000.0));
    }
    if key.ends_with("bytes") {
        return Some(format::bytes(v.max(0.0) as u64));
    }
    if key.ends_with("percent") {
        return Some(format!("{v:.1}%"));
    }
    (v.fract() != 0.0).then(|| format!("{v:.3}"))
}

/// Shows any evidence: scalar fields (nested objects dotted), arrays of
/// objects as tables. Keys in `skip` are left out: a typed view shows them.
pub fn generic(evidence: &Value, skip: &[&str], now_ms: i64) -> Vec<Section> {
    let mut fields = Vec::new();
    let mut tables = Vec::new();
    match evidence {
        Value::Object(map) => {
            for (key, value) in map.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
                collect(key, value, now_ms, &mut fields, &mut tables);
            }
        }
        Value::Null => {}
        other => fields.push(Field {
            name: "evidence".to_owned(),
            value: other.to_string(),
        }),
    }
    let mut sections = Vec::new();
    if !fields.is_empty() {
        sections.push(Section::Fields(fields));
    }
    sections.extend(tables);
    sections
}

fn collect(
    key: &str,
    value: &Value,
    now_ms: i64,
    fields: &mut Vec<Field>,
    tables: &mut Vec<Section>,
) {
    match value {
        Value::Object(map) => {
            for (sub, inner) in map {
                collect(&format!("{key}.{sub}"), inner, now_ms, fields, tables);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            tables.push(table(key, items, now_ms));
        }
        Value::Null => {}
        scalar => fields.push(Field {
            name: key.to_owned(),
            value: humanize(key, scalar, now_ms),
        }),
    }
}

fn table(title: &str, items: &[Value], now_ms: i64) -> Section {
    let mut columns: Vec<String> = Vec::new();
    for item in items.iter().filter_map(Value::as_object) {
        for key in item.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let rows = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|column| humanize(column, item.get(column).unwrap_or(&Value::Null), now_ms))
                .collect()
        })
        .collect();
    Section::Table {
        title: title.to_owned(),
        columns,
        rows,
    }
}

/// A frame the sampler found hottest, with how many samples it topped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotFrame {
    /// The frame.
    pub frame: Frame,
    /// In how many stack samples it was the leaf, when said.
    pub samples: Option<u64>,
}

impl HotFrame {
    /// `function (N samples)`.
    pub fn describe(&self) -> String {
        match self.samples {
            Some(n) => format!("{} ({n} samples)", self.frame.function),
            None => self.frame.function.clone(),
        }
    }
}

/// One stack sample and how many times it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSample {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// How many samples had exactly this stack.
    pub count: u64,
}

/// The evidence of a stuck poll: `runaway_loop` or `blocked_worker`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopEvidence {
    /// `name (tid N)` of the stuck thread.
    pub thread: Option<String>,
    /// The thread's CPU while stuck, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// How long the poll has not returned.
    pub stuck_for_ms: Option<f64>,
    /// Where the stuck task was spawned, when known.
    pub spawn_location: Option<String>,
    /// The stack (frames common to the samples), innermost first.
    pub frames: Vec<Frame>,
    /// The hottest leaf frames.
    pub hot_frames: Vec<HotFrame>,
    /// The raw samples, for a flame graph.
    pub samples: Vec<StackSample>,
    /// What the watchdog could not tell for sure.
    pub caveat: Option<String>,
}

impl LoopEvidence {
    /// The keys this view shows; the rest is shown generically.
    pub const KEYS: &[&str] = &[
        "thread",
        "cpu_percent",
        "stuck_for_ms",
        "spawn_location",
        "frames",
        "hot_frames",
        "stack_samples",
        "caveat",
    ];

    fn read(evidence: &Value) -> Self {
        let thread = evidence.get("thread").map(|thread| {
            let name = thread.get("name").and_then(Value::as_str);
            let tid = thread.get("tid").and_then(Value::as_u64);
            match (name, tid) {
                (Some(name), Some(tid)) => format!("{name} (tid {tid})"),
                (Some(name), None) => name.to_owned(),
                (None, Some(tid)) => format!("tid {tid}"),
                (None, None) => thread.to_string(),
            }
        });
        let hot_frames = evidence
            .get("hot_frames")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| {
                        Some(HotFrame {
                            frame: Frame::read(v)?,
                            samples: v
                                .get("samples")
                                .or_else(|| v.get("count"))
                                .and_then(Value::as_u64),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let samples = evidence
            .get("stack_samples")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(read_sample).collect())
            .unwrap_or_default();
        let spawn_location = evidence.get("spawn_location").and_then(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Frame::read(other).and_then(|f| f.location.or(Some(f.function))),
        });
        Self {
            thread,
            cpu_percent: evidence.get("cpu_percent").and_then(Value::as_f64),
            stuck_for_ms: evidence.get("stuck_for_ms").and_then(Value::as_f64),
            spawn_location,
            frames: frames(evidence.get("frames")),
            hot_frames,
            samples,
            caveat: evidence
                .get("caveat")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// The headline figures, as `(name, value)`: thread, its CPU, how long
    /// it has been stuck, where the task was spawned.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = Vec::new();
        facts.extend(self.thread.clone().map(|t| ("thread", t)));
        facts.extend(
            self.cpu_percent
                .map(|cpu| ("thread CPU", format!("{cpu:.1}%"))),
        );
        facts.extend(
            self.stuck_for_ms
                .map(|ms| ("stuck for", format::duration_ms(ms))),
        );
        facts.extend(self.spawn_location.clone().map(|s| ("spawned at", s)));
        facts
    }

    /// Whether `frame` is one of the hot frames. With no hot frames named,
    /// the innermost frame is the hot one.
    pub fn is_hot(&self, index: usize) -> bool {
        let Some(frame) = self.frames.get(index) else {
            return false;
        };
        if self.hot_frames.is_empty() {
            return index == 0;
        }
        self.hot_frames
            .iter()
            .any(|hot| hot.frame.function == frame.function)
    }
}

fn read_sample(value: &Value) -> Option<StackSample> {
    if value.is_array() {
        return Some(StackSample {
            frames: frames(Some(value)),
            count: 1,
        });
    }
    let stack = value.get("frames").or_else(|| value.get("stack"))?;
    Some(StackSample {
        frames: frames(Some(stack)),
        count: value
            .get("count")
            .or_else(|| value.get("samples"))
            .and_then(Value::as_u64)
            .unwrap_or(1),
    })
}

/// An allocation site whose live bytes grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The site's function (or the innermost frame of its stack).
    pub label: String,
    /// Its figures (live bytes, growth, counts), formatted.
    pub figures: Vec<Field>,
    /// Its stack, innermost first.
    pub frames: Vec<Frame>,
    /// Live bytes, for weighing the site in a flame graph.
    pub live_bytes: Option<u64>,
}

/// The evidence of `memory_growth`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEvidence {
    /// The key holding the sites, left out of the generic part.
    pub sites_key: Option<String>,
    /// Growing sites, most suspect first.
    pub sites: Vec<Site>,
    /// The detector's slope converted to bytes per millisecond, for drawing
    /// its line; `None` when the evidence has no slope in bytes per unit
    /// of time.
    pub slope_bytes_per_ms: Option<f64>,
}

impl MemoryEvidence {
    /// Keys that may hold the sites, first found wins.
    const SITE_KEYS: &[&str] = &["sites", "growing_sites", "suspects", "top_sites"];

    fn read(evidence: &Value) -> Self {
        let sites_key = Self::SITE_KEYS
            .iter()
            .find(|key| evidence.get(**key).is_some_and(Value::is_array))
            .map(|key| (*key).to_owned());
        let sites = sites_key
            .as_deref()
            .and_then(|key| evidence.get(key))
            .and_then(Value::as_array)
            .map(|list| list.iter().map(read_site).collect())
            .unwrap_or_default();
        let slope_bytes_per_ms = evidence.as_object().and_then(|map| {
            map.iter().find_map(|(key, value)| {
                let per = key.strip_prefix("slope")?.split_once("bytes_per_")?.1;
                let ms = match per {
                    "ms" => 1.0,
                    "s" | "sec" | "second" => 1000.0,
                    "min" | "minute" => 60_000.0,
                    "h" | "hour" => 3_600_000.0,
                    _ => return None,
                };
                Some(value.as_f64()? / ms)
            })
        });
        Self {
            sites_key,
            sites,
            slope_bytes_per_ms,
        }
    }
}

fn read_site(value: &Value) -> Site {
    const LABEL_KEYS: &[&str] = &["function", "site", "name", "location"];
    const STACK_KEYS: &[&str] = &["frames", "stack", "backtrace"];
    let stack = frames(STACK_KEYS.iter().find_map(|key| value.get(*key)));
    let label = LABEL_KEYS
        .iter()
        .find_map(|key| value.get(*key).and_then(Value::as_str))
        .map(str::to_owned)
        .or_else(|| stack.first().map(|f| f.function.clone()))
        .unwrap_or_else(|| "?".to_owned());
    let figures = value
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(key, v)| {
                    !LABEL_KEYS.contains(&key.as_str())
                        && !STACK_KEYS.contains(&key.as_str())
                        && !v.is_object()
                        && !v.is_array()
                })
                .map(|(key, v)| Field {
                    name: key.clone(),
                    value: humanize(key, v, 0),
                })
                .collect()
        })
        .unwrap_or_default();
    Site {
        label,
        figures,
        frames: stack,
        live_bytes: value.get("live_bytes").and_then(Value::as_u64),
    }
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
    /// Reads the evidence of `incident` by its kind.
    pub fn of(incident: &Incident) -> Self {
        match incident.kind.as_str() {
            "runaway_loop" | "blocked_worker" => {
                Evidence::Loop(LoopEvidence::read(&incident.evidence))
            }
            "memory_growth" => Evidence::Memory(MemoryEvidence::read(&incident.evidence)),
            _ => Evidence::Other,
        }
    }

    /// The evidence not shown by the typed view, as generic sections.
    pub fn rest(&self, incident: &Incident, now_ms: i64) -> Vec<Section> {
        let skip: Vec<&str> = match self {
            Evidence::Loop(_) => LoopEvidence::KEYS.to_vec(),
            Evidence::Memory(memory) => memory.sites_key.as_deref().into_iter().collect(),
            Evidence::Other => Vec::new(),
        };
        generic(&incident.evidence, &skip, now_ms)
    }

    /// Stacks with weights, for a flame graph: the loop's samples, or the
    /// growing sites weighed by their live bytes.
    pub fn weighted_stacks(&self) -> Vec<(Vec<Frame>, u64)> {
        match self {
            Evidence::Loop(l) if !l.samples.is_empty() => l
                .samples
                .iter()
                .filter(|s| !s.frames.is_empty())
                .map(|s| (s.frames.clone(), s.count))
                .collect(),
            // The probe sends the frames common to every sample and the
            // hottest leaves with their counts: each leaf on top of the
            // common path is the samples that ended there.
            Evidence::Loop(l) => l
                .hot_frames
                .iter()
                .map(|hot| {
                    let mut stack = vec![hot.frame.clone()];
                    stack.extend(
                        l.frames
                            .iter()
                            .skip_while(|f| f.function == hot.frame.function)
                            .cloned(),
                    );
                    (stack, hot.samples.unwrap_or(1).max(1))
                })
                .collect(),
            Evidence::Memory(m) => m
                .sites
                .iter()
                .filter(|s| !s.frames.is_empty())
                .map(|s| (s.frames.clone(), s.live_bytes.unwrap_or(1).max(1)))
                .collect(),
            Evidence::Other => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;
    use serde_json::json;

    #[test]
    fn loop_stacks_come_from_hot_leaves_over_the_common_frames() {
        let incident = Incident {
            evidence: json!({
                "frames": [{"function": "parse"}, {"function": "handler"}],
                "hot_frames": [{"function": "parse", "samples": 5},
                               {"function": "next_field", "samples": 3}],
                "stack_samples": 8,
            }),
            ..fixtures::runaway()
        };
        let stacks = Evidence::of(&incident).weighted_stacks();
        let names = |stack: &[Frame]| stack.iter().map(|f| f.function.clone()).collect::<Vec<_>>();
        assert_eq!(stacks.len(), 2);
        assert_eq!(names(&stacks[0].0), ["parse", "handler"]);
        assert_eq!(stacks[0].1, 5);
        assert_eq!(names(&stacks[1].0), ["next_field", "parse", "handler"]);
        assert_eq!(stacks[1].1, 3);
    }

    #[test]
    fn reads_a_runaway_loop_and_finds_the_hot_frame() {
        let Evidence::Loop(evidence) = Evidence::of(&fixtures::runaway()) else {
            panic!("a runaway loop has loop evidence");
        };
        assert_eq!(
            evidence.thread.as_deref(),
            Some("tokio-rt-worker (tid 4244)")
        );
        assert_eq!(evidence.frames.len(), 4);
        assert_eq!(
            evidence.frames[1].location.as_deref(),
            Some("examples/src/faults.rs:57")
        );
        assert!(!evidence.is_hot(0));
        assert!(evidence.is_hot(1), "parse_header is the hot frame");
        assert_eq!(evidence.samples.len(), 3);
        assert_eq!(evidence.hot_frames[0].samples, Some(5));
    }

    #[test]
    fn without_hot_frames_the_innermost_frame_is_hot() {
        let evidence = LoopEvidence::read(&json!({"frames": ["a", "b"]}));
        assert!(evidence.is_hot(0));
        assert!(!evidence.is_hot(1));
        assert!(!evidence.is_hot(9));
    }

    #[test]
    fn reads_memory_growth_sites_and_slope() {
        let Evidence::Memory(evidence) = Evidence::of(&fixtures::growth()) else {
            panic!("memory growth has memory evidence");
        };
        assert_eq!(evidence.sites.len(), 2);
        assert_eq!(
            evidence.sites[0].label,
            "mesh_service::faults::SessionCache::insert"
        );
        assert_eq!(evidence.sites[0].frames.len(), 2);
        let slope = evidence.slope_bytes_per_ms.unwrap();
        assert!((slope - 17.476).abs() < 1e-9, "{slope}");
        assert!(
            evidence.sites[0]
                .figures
                .iter()
                .any(|f| f.value == "8.0 MiB")
        );
    }

    #[test]
    fn shows_unknown_evidence_as_fields_and_tables_by_suffix() {
        let sections = generic(
            &json!({
                "close_wait": 120, "slope_per_min": 24.0, "since_at_ms": 40_000,
                "stuck_for_ms": 1500, "limit_bytes": 1048576, "nested": {"ratio": 0.5},
                "peers": [{"peer": "a", "count": 1}, {"peer": "b", "age_ms": 61_000}]
            }),
            &[],
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

    #[test]
    fn typed_views_leave_the_rest_to_the_generic_one() {
        let incident = fixtures::runaway();
        let rest = Evidence::of(&incident).rest(&incident, fixtures::NOW_MS);
        assert_eq!(
            rest,
            vec![Section::Fields(vec![Field {
                name: "worker".into(),
                value: "1".into()
            }])]
        );
    }
}
