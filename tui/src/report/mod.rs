//! `meshwatch report INCIDENT --out DIR`: a post-mortem of one incident.
//!
//! It writes `DIR/report.md` (the facts, the evidence, the stack), an SVG
//! chart per relevant series around the incident, and, when the evidence has
//! several stack samples (or several growing sites), a flame graph of them.

pub(crate) mod flame;
mod markdown;
#[cfg(test)]
mod picture;
mod svg;

use std::path::{Path, PathBuf};

use anyhow::Context;
use meshwatch_api::Incident;

use crate::client::{ApiClient, Range};
use crate::evidence::Evidence;
use crate::model::{self, ChartSpec};

/// History shown before an incident opened, and after it ended.
const MARGIN_MS: i64 = 5 * 60_000;

/// Options of `meshwatch report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The incident's id, as listed by `/api/v1/incidents` and the TUI;
    /// over several collectors, `N:ID` as the TUI shows it (N the
    /// collector's place in the list, from 1).
    pub incident: String,
    /// The directory to write the report into; created when missing.
    #[arg(long, value_name = "DIR", default_value = "meshwatch-report")]
    pub out: PathBuf,
}

/// Writes the report and prints where it is.
///
/// # Errors
///
/// When the collector cannot be reached, knows no such incident, or the
/// files cannot be written.
pub fn run(client: &ApiClient, args: &ReportArgs) -> anyhow::Result<()> {
    let incidents = client.incidents()?;
    let incident = incidents
        .iter()
        .find(|i| i.id == args.incident)
        .with_context(|| {
            let known: Vec<&str> = incidents.iter().map(|i| i.id.as_str()).collect();
            format!(
                "the collector at {} has no incident {:?}; it knows {}",
                client.base(),
                args.incident,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
        })?;
    let mut history = |metric: &str, range: Range| -> anyhow::Result<Vec<model::Point>> {
        Ok(client
            .series(&incident.service, metric, range)?
            .map(|found| model::merged(&found))
            .unwrap_or_default())
    };
    let written = write_report(incident, &mut history, &args.out, crate::ui::now_ms())?;
    println!("{written}");
    Ok(())
}

/// Where a metric's history comes from: the service's points of `metric`
/// within the range, all instances merged.
type HistorySource<'a> = dyn FnMut(&str, Range) -> anyhow::Result<Vec<model::Point>> + 'a;

/// Writes the report of `incident` into `dir`; says what it wrote.
fn write_report(
    incident: &Incident,
    history: &mut HistorySource<'_>,
    dir: &Path,
    now_ms: i64,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let charts = write_charts(incident, history, dir, now_ms)?;
    let flame = write_flame(incident, dir)?;
    let text = markdown::render(incident, &charts, flame.as_ref(), now_ms);
    let path = dir.join("report.md");
    write(&path, &text)?;
    Ok(format!(
        "wrote {} with {} chart(s){}",
        path.display(),
        charts.len(),
        if flame.is_some() {
            " and a flame graph"
        } else {
            ""
        }
    ))
}

/// The charts of a report: CPU and memory always, plus the kind's own.
fn report_charts(incident: &Incident) -> Vec<ChartSpec> {
    let mut specs = vec![model::CPU, model::MEMORY];
    for spec in model::incident_charts(incident) {
        if !specs.contains(spec) {
            specs.push(*spec);
        }
    }
    specs
}

fn write_charts(
    incident: &Incident,
    history: &mut HistorySource<'_>,
    dir: &Path,
    now_ms: i64,
) -> anyhow::Result<Vec<markdown::Picture>> {
    let end = incident
        .resolved_at_ms
        .map_or(now_ms, |end| (end + MARGIN_MS).min(now_ms));
    let (slope, window_ms) = match Evidence::of(incident) {
        Evidence::Memory(memory) => (memory.slope_bytes_per_ms, Some(memory.window_ms())),
        _ => (None, None),
    };
    let mut markers = Vec::new();
    // A memory incident's charts reach back to the detector's window.
    let window_start = window_ms.map(|window| incident.opened_at_ms - window);
    markers.extend(window_start.map(|at_ms| svg::Marker {
        label: "detector's window".into(),
        at_ms,
    }));
    markers.push(svg::Marker {
        label: "opened".into(),
        at_ms: incident.opened_at_ms,
    });
    markers.extend(incident.resolved_at_ms.map(|at_ms| svg::Marker {
        label: "resolved".into(),
        at_ms,
    }));
    let range = Range {
        from_ms: (incident.opened_at_ms - MARGIN_MS)
            .min(window_start.map_or(i64::MAX, |at| at - 60_000)),
        to_ms: end,
    };
    let mut pictures = Vec::new();
    for spec in report_charts(incident) {
        let mut series = Vec::new();
        for metric in spec.metrics {
            let points = history(metric.name, range)?;
            if !points.is_empty() {
                series.push(svg::Series {
                    label: metric.label.to_owned(),
                    points,
                    trend: false,
                });
            }
        }
        if series.is_empty() {
            continue;
        }
        if spec == model::MEMORY && model::incident_charts(incident).contains(&model::MEMORY) {
            let last = series.last().map(|s| s.points.clone()).unwrap_or_default();
            if let Some(points) = model::fitted(&last, slope) {
                series.push(svg::Series {
                    label: "trend".into(),
                    points,
                    trend: true,
                });
            }
        }
        let file = format!("{}.svg", spec.title.replace(' ', "_"));
        let title = format!("{} of {}", spec.title, incident.service);
        // From just before the data (a young instance fills the chart).
        let first_point = series
            .iter()
            .filter_map(|s| s.points.first())
            .map(|p| p.0)
            .min();
        let (from_ms, to_ms) = model::shown_range(
            (range.from_ms, range.to_ms),
            first_point,
            markers.iter().map(|m| m.at_ms),
        );
        write(
            &dir.join(&file),
            &svg::line_chart(&title, spec.unit, &series, &markers, from_ms, to_ms),
        )?;
        pictures.push(markdown::Picture { title, file });
    }
    Ok(pictures)
}

fn write_flame(incident: &Incident, dir: &Path) -> anyhow::Result<Option<markdown::Picture>> {
    let evidence = Evidence::of(incident);
    let stacks = evidence.weighted_stacks();
    if stacks.len() < 2 {
        return Ok(None);
    }
    let (title, count_name) = match evidence {
        Evidence::Memory(_) => (
            format!(
                "Flame graph of {} growing allocation sites, by live bytes",
                stacks.len()
            ),
            "bytes",
        ),
        _ => (
            format!(
                "Flame graph of {} stack samples",
                stacks.iter().map(|(_, n)| n).sum::<u64>()
            ),
            "samples",
        ),
    };
    let svg =
        flame::flame_graph(&title, count_name, &stacks).context("cannot draw the flame graph")?;
    let file = "flame.svg".to_owned();
    write(&dir.join(&file), &svg)?;
    Ok(Some(markdown::Picture { title, file }))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::picture::Picture;
    use super::*;
    use crate::fixtures::{self, NOW_MS};
    use crate::recorded;

    /// The charts of `dir`'s report, by file name (the flame graph, drawn by
    /// inferno, is not one).
    fn charts(dir: &Path) -> Vec<(String, String)> {
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        md.lines()
            .filter(|l| l.starts_with("!["))
            .map(|l| {
                l.rsplit_once('(')
                    .unwrap()
                    .1
                    .trim_end_matches(')')
                    .to_owned()
            })
            .filter(|file| file != "flame.svg")
            .map(|file| {
                let svg = std::fs::read_to_string(dir.join(&file)).unwrap();
                (file, svg)
            })
            .collect()
    }

    /// How long the history drawn in chart `file` of `recording` lasts.
    fn lasted_ms(recording: &recorded::Recording, file: &str) -> i64 {
        let spec = model::SERVICE_CHARTS
            .iter()
            .find(|spec| format!("{}.svg", spec.title.replace(' ', "_")) == file)
            .unwrap();
        let everything = Range {
            from_ms: 0,
            to_ms: i64::MAX,
        };
        spec.metrics
            .iter()
            .map(|metric| model::merged(&recording.series(metric.name, everything)))
            .filter_map(|points| Some(points.last()?.0 - points.first()?.0))
            .max()
            .unwrap_or(0)
    }

    /// The reports of incidents recorded from real services, their charts
    /// looked at as pictures: no label runs off or onto another, every
    /// line of data shows, inside the plot, and the data fills the chart.
    /// With `MESHWATCH_REPORT_DIR` set they are kept there, to look at.
    #[test]
    fn recorded_incidents_report_charts_a_person_can_read() {
        let kept = std::env::var_os("MESHWATCH_REPORT_DIR").map(PathBuf::from);
        let temp = tempfile::tempdir().unwrap();
        let root = kept.unwrap_or_else(|| temp.path().to_path_buf());
        let mut problems = Vec::new();
        let mut looked_at = 0;
        for recording in recorded::all() {
            let dir = root.join(&recording.name);
            let mut history = |metric: &str, range: Range| -> anyhow::Result<Vec<model::Point>> {
                Ok(model::merged(&recording.series(metric, range)))
            };
            write_report(&recording.incident, &mut history, &dir, recording.at_ms).unwrap();
            let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
            // The raw evidence at the end keeps the collector's words.
            let read = md.split("## Raw evidence").next().unwrap_or_default();
            for path in ["/.cargo/registry/", "/rustc/"] {
                if read.contains(path) {
                    problems.push(format!("{}: a whole {path} path", recording.name));
                }
            }
            for (file, svg) in charts(&dir) {
                let picture = Picture::of(&svg);
                let at = format!("{} {file}", recording.name);
                problems.extend(picture.problems().into_iter().map(|p| format!("{at}: {p}")));
                // Data shorter than the narrowest zoom cannot fill it.
                let span = picture.data_span();
                if span < 0.5 && lasted_ms(&recording, &file) > model::MIN_SHOWN_MS {
                    problems.push(format!(
                        "{at}: the data fills {:.0}% of the plot",
                        span * 100.0
                    ));
                }
                if !picture.texts().contains(&"opened") {
                    problems.push(format!("{at}: the opening is not marked"));
                }
                looked_at += 1;
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(looked_at >= 8, "only {looked_at} charts were drawn");
    }

    #[test]
    fn a_picture_with_labels_over_each_other_or_off_the_edge_is_flagged() {
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" font-family="sans-serif" font-size="11">
<text x="10" y="20">opened</text><text x="20" y="22">detector's window</text>
<text x="190" y="60">resolved</text>
<polyline id="series-0" points="70,40 100,50" fill="none" stroke="#1f77b4"/>
<rect x="60" y="30" width="60" height="40" fill="white"/>
</svg>"##;
        let problems = Picture::of(svg).problems();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].contains("\"resolved\" runs off"),
            "{problems:#?}"
        );
        assert!(problems[1].contains("\"opened\" and \"detector's window\" overlap"));
        assert!(
            problems[2].contains("does not show"),
            "hidden under the rect"
        );
    }

    /// Writes the reports of the fixture incidents. With
    /// `MESHWATCH_REPORT_DIR` set they are kept there, to look at.
    #[test]
    fn writes_markdown_charts_and_a_flame_graph() {
        let kept = std::env::var_os("MESHWATCH_REPORT_DIR").map(PathBuf::from);
        let temp = tempfile::tempdir().unwrap();
        let root = kept.unwrap_or_else(|| temp.path().to_path_buf());
        for incident in [
            fixtures::runaway(),
            fixtures::growth(),
            fixtures::socket_leak(),
        ] {
            let dir = root.join(incident.kind.as_str());
            let instance = incident.instance.clone().unwrap();
            let mut history = |metric: &str, range: Range| -> anyhow::Result<Vec<model::Point>> {
                let mut points = model::merged(&fixtures::history(&instance, metric));
                points.retain(|p| (range.from_ms..=range.to_ms).contains(&p.0));
                Ok(points)
            };
            let said = write_report(&incident, &mut history, &dir, NOW_MS).unwrap();
            let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
            for line in md.lines().filter(|l| l.starts_with("![")) {
                let file = line.rsplit_once('(').unwrap().1.trim_end_matches(')');
                let svg = std::fs::read_to_string(dir.join(file)).unwrap();
                assert!(svg.contains("<svg"), "{file} is an SVG");
            }
            match incident.kind.as_str() {
                "runaway_loop" => {
                    assert!(
                        said.ends_with("with 2 chart(s) and a flame graph"),
                        "{said}"
                    );
                    let flame = std::fs::read_to_string(dir.join("flame.svg")).unwrap();
                    assert!(flame.contains("parse_header"));
                }
                "memory_growth" => {
                    assert!(
                        said.ends_with("with 2 chart(s)"),
                        "one site has a stack: {said}"
                    );
                    let memory = std::fs::read_to_string(dir.join("memory.svg")).unwrap();
                    assert!(memory.contains(">trend<"), "the trend line is drawn");
                }
                _ => assert!(said.ends_with("with 3 chart(s)"), "{said}"),
            }
        }
    }
}
