//! Profiles in pprof's format (`profile.proto`, gzipped), which `go tool
//! pprof`, speedscope and Grafana Pyroscope open. The message types are the
//! `pprof` crate's, generated from that schema; this module only maps
//! meshwatch's stacks onto them.

use std::collections::HashMap;
use std::io::Write;

use meshwatch_api::Frame;
use pprof::protos::{Function, Label, Line, Location, Message, Profile, Sample, ValueType};

/// One kind of value every sample carries, as pprof names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleType {
    /// What is counted: `inuse_space`, `samples`, ...
    pub name: &'static str,
    /// Its unit: `bytes`, `count`, `nanoseconds`.
    pub unit: &'static str,
}

/// The values of a heap profile's samples, as pprof's tools expect them.
pub const HEAP_SAMPLE_TYPES: [SampleType; 2] = [
    SampleType {
        name: "inuse_objects",
        unit: "count",
    },
    SampleType {
        name: "inuse_space",
        unit: "bytes",
    },
];

/// Builds a profile: strings, functions and locations interned as pprof
/// wants them (string 0 is the empty string, ids start at 1).
#[derive(Debug, Default)]
pub struct ProfileBuilder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    locations: HashMap<(u64, u32), u64>,
}

impl ProfileBuilder {
    /// A profile whose samples carry one value per `types`, in that order.
    pub fn new(types: &[SampleType]) -> Self {
        let mut builder = Self::default();
        builder.string("");
        builder.profile.sample_type = types
            .iter()
            .map(|t| ValueType {
                ty: builder.string(t.name),
                unit: builder.string(t.unit),
            })
            .collect();
        builder
    }

    fn string(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(text.to_owned());
        self.strings.insert(text.to_owned(), index);
        index
    }

    fn location(&mut self, frame: &Frame) -> u64 {
        let name = self.string(&frame.function);
        let file = self.string(&frame.file);
        let next_function = self.profile.function.len() as u64 + 1;
        let function_id = *self.functions.entry((name, file)).or_insert(next_function);
        if function_id == next_function {
            self.profile.function.push(Function {
                id: function_id,
                name,
                system_name: name,
                filename: file,
                start_line: 0,
            });
        }
        let next_location = self.profile.location.len() as u64 + 1;
        let location_id = *self
            .locations
            .entry((function_id, frame.line))
            .or_insert(next_location);
        if location_id == next_location {
            self.profile.location.push(Location {
                id: location_id,
                line: vec![Line {
                    function_id,
                    line: i64::from(frame.line),
                }],
                ..Location::default()
            });
        }
        location_id
    }

    /// Adds a sample: its stack, innermost frame first (as pprof lists
    /// locations), one value per sample type, and string labels (`thread`).
    pub fn sample(&mut self, frames: &[Frame], values: Vec<i64>, labels: &[(&str, &str)]) {
        let location_id = frames.iter().map(|f| self.location(f)).collect();
        let label = labels
            .iter()
            .map(|(key, value)| Label {
                key: self.string(key),
                str: self.string(value),
                ..Label::default()
            })
            .collect();
        self.profile.sample.push(Sample {
            location_id,
            value: values,
            label,
        });
    }

    /// Says what one sample stands for: `period` of `kind` (for a CPU
    /// profile, the nanoseconds between samples).
    pub fn period(&mut self, kind: SampleType, period: i64) {
        self.profile.period_type = Some(ValueType {
            ty: self.string(kind.name),
            unit: self.string(kind.unit),
        });
        self.profile.period = period;
    }

    /// Sets how long the profile took, in ns.
    pub fn duration_nanos(&mut self, nanos: i64) {
        self.profile.duration_nanos = nanos;
    }

    /// Adds a comment, shown by `pprof -comments`.
    pub fn comment(&mut self, text: &str) {
        let index = self.string(text);
        self.profile.comment.push(index);
    }

    /// Sets when the profile was taken, in ns since the Unix epoch.
    pub fn time_nanos(&mut self, nanos: i64) {
        self.profile.time_nanos = nanos;
    }

    /// The profile, encoded and gzipped as `profile.pb.gz` holds it.
    ///
    /// # Errors
    ///
    /// When compressing fails (it writes to memory, so never in practice).
    pub fn gzipped(&self) -> std::io::Result<Vec<u8>> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&self.profile.encode_to_vec())?;
        gz.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn frame(function: &str, line: u32) -> Frame {
        Frame {
            function: function.to_owned(),
            file: "src/cache.rs".to_owned(),
            line,
        }
    }

    #[test]
    fn interns_strings_functions_and_locations_and_decodes_back() {
        let mut builder = ProfileBuilder::new(&HEAP_SAMPLE_TYPES);
        builder.sample(
            &[frame("alloc", 1), frame("cache::insert", 40)],
            vec![3, 300],
            &[("thread", "worker")],
        );
        builder.sample(
            &[frame("alloc", 1), frame("cache::grow", 52)],
            vec![1, 100],
            &[],
        );
        builder.comment("a test");
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(builder.gzipped().unwrap().as_slice())
            .read_to_end(&mut bytes)
            .unwrap();
        let profile = Profile::decode(bytes.as_slice()).unwrap();
        let name = |i: i64| profile.string_table[i as usize].as_str();
        assert_eq!(name(0), "");
        assert_eq!(name(profile.sample_type[1].ty), "inuse_space");
        assert_eq!(profile.function.len(), 3, "alloc is one function");
        assert_eq!(profile.location.len(), 3);
        assert_eq!(
            profile.sample[0].location_id[0],
            profile.sample[1].location_id[0]
        );
        assert_eq!(profile.sample[1].value, vec![1, 100]);
        assert_eq!(name(profile.comment[0]), "a test");
        assert_eq!(name(profile.sample[0].label[0].key), "thread");
        assert_eq!(name(profile.sample[0].label[0].str), "worker");
    }
}
