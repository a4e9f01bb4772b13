//! The post-mortem's text: a pure function of the incident, its evidence
//! and the pictures written beside it.

use std::fmt::Write;

use meshwatch_api::Incident;

use crate::evidence::{Evidence, Frame, LoopEvidence, MemoryEvidence, Section, StackRow, fold};
use crate::format;
use crate::model::{kind_name, severity_name};

/// A picture written beside the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Its caption.
    pub title: String,
    /// Its file name, relative to the report.
    pub file: String,
}

/// The post-mortem of `incident` as Markdown, at `now_ms`.
pub fn render(
    incident: &Incident,
    charts: &[Picture],
    flame: Option<&Picture>,
    now_ms: i64,
) -> String {
    let evidence = Evidence::of(incident);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Incident {}: {} on {}\n",
        text(&incident.id),
        code(kind_name(incident)),
        text(&incident.service)
    );
    let _ = writeln!(md, "> {}\n", text(&incident.summary));
    facts(&mut md, incident, now_ms);
    let _ = writeln!(md, "## Evidence\n");
    match &evidence {
        Evidence::Loop(l) => loop_evidence(&mut md, l),
        Evidence::Memory(m) => memory_evidence(&mut md, m),
        Evidence::Other => {}
    }
    if let Some(flame) = flame {
        let _ = writeln!(
            md,
            "### {}\n\n![{}]({})\n",
            text(&flame.title),
            text(&flame.title),
            flame.file
        );
    }
    sections(&mut md, &evidence.rest(incident, now_ms));
    if !charts.is_empty() {
        let _ = writeln!(
            md,
            "## History\n\nThe dashed lines mark when the incident opened and ended.\n"
        );
        for chart in charts {
            let _ = writeln!(md, "![{}]({})\n", text(&chart.title), chart.file);
        }
    }
    let raw = serde_json::to_string_pretty(&incident.evidence).unwrap_or_default();
    let fence = fence_for(&raw);
    let _ = writeln!(md, "## Raw evidence\n\n{fence}json\n{raw}\n{fence}");
    let _ = writeln!(
        md,
        "\n_Written by `meshwatch report` at {}._",
        format::utc(now_ms)
    );
    md
}

fn facts(md: &mut String, incident: &Incident, now_ms: i64) {
    let end = incident.resolved_at_ms.unwrap_or(now_ms);
    let rows = [
        ("severity", severity_name(incident.severity).to_owned()),
        ("service", incident.service.clone()),
        (
            "instance",
            incident
                .instance
                .clone()
                .unwrap_or_else(|| "(service-wide)".to_owned()),
        ),
        ("opened", format::utc(incident.opened_at_ms)),
        ("last seen", format::utc(incident.last_seen_at_ms)),
        (
            "resolved",
            incident.resolved_at_ms.map_or_else(
                || "still open when this report was written".to_owned(),
                format::utc,
            ),
        ),
        (
            "lasted",
            format::duration_ms((end - incident.opened_at_ms) as f64),
        ),
    ];
    let _ = writeln!(md, "| | |\n|---|---|");
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {} |", cell(&value));
    }
    md.push('\n');
}

fn loop_evidence(md: &mut String, evidence: &LoopEvidence) {
    let mut bullets: Vec<String> = evidence
        .facts()
        .into_iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    if let Some(caveat) = &evidence.caveat {
        bullets.push(format!("note: {caveat}"));
    }
    for bullet in bullets {
        let _ = writeln!(md, "- {}", text(&bullet));
    }
    let _ = writeln!(md, "\n### Stack (innermost first, ▶ marks the hot frame)\n");
    stack(md, &evidence.frames, |i| evidence.is_hot(i));
    if !evidence.hot_frames.is_empty() {
        let _ = writeln!(md, "Hottest leaf frames:\n");
        for hot in &evidence.hot_frames {
            let _ = writeln!(md, "- {}", text(&hot.describe()));
        }
        md.push('\n');
    }
    if evidence.samples.len() == 1 {
        let _ = writeln!(md, "One stack sample:\n");
        stack(md, &evidence.samples[0].frames, |_| false);
    }
}

fn memory_evidence(md: &mut String, evidence: &MemoryEvidence) {
    let _ = writeln!(md, "### Allocation sites, most suspect first\n");
    if evidence.sites.is_empty() {
        let _ = writeln!(md, "No sampled sites were reported.\n");
    }
    for (n, site) in evidence.sites.iter().enumerate() {
        let figures: Vec<String> = site
            .figures
            .iter()
            .map(|f| format!("{} {}", f.name, f.value))
            .collect();
        let _ = writeln!(
            md,
            "{}. {} — {}\n",
            n + 1,
            code(&site.label),
            text(&figures.join(", "))
        );
        if !site.frames.is_empty() {
            stack(md, &site.frames, |_| false);
        }
    }
}

/// A stack with its library, runtime and std frames folded, then, when any
/// were, the whole stack under a `<details>` a reader can open.
fn stack(md: &mut String, frames: &[Frame], is_hot: impl Fn(usize) -> bool) {
    if frames.is_empty() {
        let _ = writeln!(md, "No stack was captured.\n");
        return;
    }
    let rows = fold(frames, &is_hot);
    // Longer than any run of backticks in a frame, so no name ends the block.
    let fence = fence_for(
        &frames
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f.function,
                    f.location.as_deref().unwrap_or_default()
                )
            })
            .collect::<String>(),
    );
    let write = |md: &mut String, rows: &[StackRow]| {
        let _ = writeln!(md, "{fence}text");
        for row in rows {
            match row {
                StackRow::Frame(i) => {
                    let frame = &frames[*i];
                    let marker = if is_hot(*i) { "▶" } else { " " };
                    let location = frame
                        .location
                        .as_deref()
                        .map(|l| format!("  {l}"))
                        .unwrap_or_default();
                    let _ = writeln!(md, "{marker}{i:>3} {}{location}", frame.function);
                }
                StackRow::Folded { count, crates } => {
                    let _ = writeln!(md, "     {}", StackRow::folded_text(*count, crates));
                }
            }
        }
        let _ = writeln!(md, "{fence}\n");
    };
    write(md, &rows);
    if rows.len() < frames.len() {
        md.push_str("<details><summary>The whole stack</summary>\n\n");
        let all: Vec<StackRow> = (0..frames.len()).map(StackRow::Frame).collect();
        write(md, &all);
        md.push_str("</details>\n\n");
    }
}

fn sections(md: &mut String, sections: &[Section]) {
    for section in sections {
        match section {
            Section::Fields(fields) => {
                let _ = writeln!(md, "| figure | value |\n|---|---|");
                for field in fields {
                    let _ = writeln!(md, "| {} | {} |", code(&field.name), cell(&field.value));
                }
            }
            Section::Table {
                title,
                columns,
                rows,
            } => {
                let _ = writeln!(md, "### {}\n", text(title));
                let _ = writeln!(
                    md,
                    "| {} |",
                    columns
                        .iter()
                        .map(|c| cell(c))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                let _ = writeln!(md, "|{}", "---|".repeat(columns.len()));
                for row in rows {
                    let _ = writeln!(
                        md,
                        "| {} |",
                        row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
            }
        }
        md.push('\n');
    }
}

/// Text safe inside a Markdown table cell.
fn cell(value: &str) -> String {
    text(value)
}

/// Text from the mesh (names, summaries, figures) as Markdown prose that
/// reads as itself: every ASCII punctuation mark Markdown could take for
/// syntax (emphasis, links and images, raw HTML such as
/// `<img onerror=…>`, a table's `|`; parentheses and `!` only matter
/// around a `[`, which is escaped) escaped with a backslash, as CommonMark allows for any of them, and
/// line breaks as spaces.
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `value` as inline code: delimited by more backticks than it holds in a
/// row, so a backtick in a name cannot end it early.
fn code(value: &str) -> String {
    let value = value.replace(['\n', '\r'], " ");
    let ticks = "`".repeat(longest_backtick_run(&value) + 1);
    if ticks.len() == 1 {
        format!("`{value}`")
    } else {
        format!("{ticks} {value} {ticks}")
    }
}

/// A code fence longer than any run of backticks in `content` (at least
/// three), so the content cannot close it.
fn fence_for(content: &str) -> String {
    "`".repeat((longest_backtick_run(content) + 1).max(3))
}

fn longest_backtick_run(value: &str) -> usize {
    value.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, NOW_MS};

    #[test]
    fn names_from_the_mesh_cannot_break_out_of_their_place() {
        let mut incident = fixtures::runaway();
        incident.service = "svc<img src=x onerror=alert(1)>".to_owned();
        incident.summary = "spins in [a](javascript:x) *here*\n# not a heading".to_owned();
        if let meshwatch_api::Evidence::StuckPoll(stuck) = &mut incident.evidence {
            stuck.frames[0].function = "evil```\n<script>alert(1)</script>".to_owned();
        }
        let md = render(&incident, &[], None, NOW_MS);
        assert!(
            !md.replace("\\<img", "").contains("<img"),
            "no raw HTML: {md}"
        );
        assert!(md.contains("svc\\<img src=x onerror=alert(1)\\>"), "{md}");
        assert!(!md.contains("[a](javascript"), "{md}");
        assert!(!md.contains("\n# not a heading"), "{md}");
        // The frame stays inside its block: the fence is longer than its ```.
        let frame = md.find("evil```").expect("the frame is shown");
        let before = &md[..frame];
        let fence_start = before.rfind("````text").expect("a four-backtick fence");
        assert!(!md[fence_start..frame].contains("\n````\n"), "{md}");
        assert_eq!(code("a`b"), "`` a`b ``");
        assert_eq!(code("plain"), "`plain`");
        assert_eq!(fence_for("no ticks"), "```");
    }

    #[test]
    fn a_loop_report_has_the_facts_the_stack_and_the_pictures() {
        let flame = Picture {
            title: "Flame graph of 3 stack samples".into(),
            file: "flame.svg".into(),
        };
        let charts = [Picture {
            title: "CPU".into(),
            file: "cpu.svg".into(),
        }];
        let md = render(&fixtures::runaway(), &charts, Some(&flame), NOW_MS);
        assert!(md.starts_with("# Incident 7: `runaway_loop` on checkout\n"));
        assert!(md.contains("| severity | critical |"));
        assert!(md.contains("| resolved | still open when this report was written |"));
        assert!(md.contains("- thread CPU: 99.2%"));
        assert!(md.contains("- stuck for: 42.0s"));
        assert!(md.contains("- mesh\\_service::faults::parse\\_header (5 samples)"));
        assert!(md.contains("▶  1 mesh_service::faults::parse_header  examples/src/faults.rs:57"));
        assert!(md.contains("     … 3 frames of tokio, std\n"), "{md}");
        assert!(
            md.contains("<details><summary>The whole stack</summary>")
                && md.contains("   5 std::panicking::catch_unwind  std/src/panicking.rs:544"),
            "the whole stack, paths from their crate: {md}"
        );
        assert!(
            md.contains(
                "- inside spans: request{method=POST path=/orders id=7f3a} › parse\\_batch{bytes=31}"
            ),
            "{md}"
        );
        assert!(md.contains("- stack samples: 8"));
        assert!(md.contains("![Flame graph of 3 stack samples](flame.svg)"));
        assert!(md.contains("![CPU](cpu.svg)"));
        assert!(
            md.contains("| `worker` | 1 |"),
            "the rest is shown generically"
        );
        assert!(md.contains("```json\n{"));
    }

    #[test]
    fn memory_and_unknown_kinds_get_sites_and_tables() {
        let md = render(&fixtures::growth(), &[], None, NOW_MS);
        assert!(md.contains("1. `mesh_service::faults::SessionCache::insert` — "));
        assert!(md.contains("live 8.0 MiB"), "{md}");
        assert!(md.contains("| `limit reached in` | 2h00m |"), "{md}");
        assert!(md.contains("### instances\n\n| instance | state | started | lived | ending |"));
        let md = render(&fixtures::socket_leak(), &[], None, NOW_MS);
        assert!(md.contains("| `sockets in CLOSE_WAIT` | 120 |"), "{md}");
        assert!(md.contains("| `growth` | +24.0 sockets/min |"), "{md}");
        assert!(md.contains("| lasted | 4m58s |"));
    }
}
