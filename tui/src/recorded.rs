//! Incidents recorded from real services, for the tests of the views and
//! the report: what the collector served about each, kept in
//! `tests/recorded/NAME.json` by the end-to-end test that caused it
//! (`meshwatch-e2e`'s `recorded` module says how to take them again).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use meshwatch_api::Incident;
use serde::Deserialize;

use crate::client::Range;
use crate::model::{Instance, InstanceSeries};

/// One recording: the mesh of one service as of one instant.
#[derive(Debug)]
pub struct Recording {
    /// The file's name without `.json`: what the end-to-end test called it.
    pub name: String,
    /// When it was taken: the screens' now.
    pub at_ms: i64,
    /// The incident, as `/api/v1/incidents` served it.
    pub incident: Incident,
    /// Its service's instances, as `/api/v1/services` served them.
    pub instances: Vec<Instance>,
    /// Each charted metric of the service, from well before the incident.
    series: HashMap<String, Vec<InstanceSeries>>,
}

#[derive(Deserialize)]
struct File {
    at_ms: i64,
    incident: Incident,
    instances: Vec<serde_json::Value>,
    series: HashMap<String, Vec<InstanceSeries>>,
}

impl Recording {
    /// The history of `metric` within `range`.
    ///
    /// # Panics
    ///
    /// When the recording holds no such metric: the screens chart one the
    /// recorder does not keep, and the recordings must be taken again.
    pub fn series(&self, metric: &str, range: Range) -> Vec<InstanceSeries> {
        let all = self.series.get(metric).unwrap_or_else(|| {
            panic!(
                "recording {} has no {metric}: add it to the recorder's metrics and record again",
                self.name
            )
        });
        all.iter()
            .map(|instance| InstanceSeries {
                instance_id: instance.instance_id.clone(),
                points: instance
                    .points
                    .iter()
                    .copied()
                    .filter(|(t, _)| (range.from_ms..=range.to_ms).contains(t))
                    .collect(),
            })
            .collect()
    }
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recorded")
}

/// Every recording, by name.
pub fn all() -> Vec<Recording> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tui/tests/recorded")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no recordings in {}", dir().display());
    files.iter().map(|path| read(path)).collect()
}

fn read(path: &Path) -> Recording {
    let text = std::fs::read_to_string(path).unwrap();
    let file: File =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let instances = file
        .instances
        .into_iter()
        .map(|value| Instance::from_json(value).unwrap())
        .collect();
    Recording {
        name,
        at_ms: file.at_ms,
        incident: file.incident,
        instances,
        series: file.series,
    }
}
