//! One incident with its evidence: for a stuck poll the stack with the hot
//! frame highlighted, the thread's CPU and how long it has been stuck; for
//! memory growth the chart with the trend line, the projection and the
//! growing sites with their stacks; for any other kind its charts and its
//! evidence shown generically.

use meshwatch_api::Incident;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::cursor;
use super::fetch::{Data, SeriesReq};
use super::input::Intent;
use super::theme::Theme;
use super::widgets::{self, ChartLine, History, Mark};
use super::window::{DETAIL_KEYS, Window};
use crate::evidence::{Evidence, LoopEvidence, MemoryEvidence};
use crate::format;
use crate::model::{incident_charts, kind_name, severity_name, severity_rank};

/// History shown around an incident by default.
const SPAN_MS: i64 = 600_000;

/// The incident detail's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentDetail {
    /// The incident shown.
    pub id: String,
    scroll: u16,
    window: Window,
    /// Stacks shown whole, library and runtime frames included.
    unfolded: bool,
}

impl IncidentDetail {
    /// The detail of `incident`: live while it is open or just ended, else
    /// the history up to a minute after it ended.
    pub fn new(incident: &Incident, now_ms: i64) -> Self {
        let window = match incident.resolved_at_ms {
            Some(end) if end + 60_000 < now_ms => Window {
                span_ms: SPAN_MS,
                end_ms: Some(end + 60_000),
            },
            _ => Window::live(SPAN_MS),
        };
        Self {
            id: incident.id.clone(),
            scroll: 0,
            window,
            unfolded: false,
        }
    }

    /// Scrolls and moves the time window.
    pub fn handle(&mut self, intent: Intent, now_ms: i64) {
        if intent == Intent::Fold {
            self.unfolded = !self.unfolded;
            return;
        }
        match self.window.steer(intent, now_ms) {
            Some(window) => self.window = window,
            None => self.scroll = cursor::scrolled(self.scroll, intent),
        }
    }

    /// The series its charts need.
    pub fn wants(&self, data: &Data) -> Vec<SeriesReq> {
        let Some(incident) = data.incident(&self.id) else {
            return Vec::new();
        };
        SeriesReq::for_charts(&incident.service, incident_charts(incident), self.window)
    }

    /// Keys shown in the footer.
    pub fn keys(&self) -> &'static [(&'static str, &'static str)] {
        &DETAIL_KEYS[1..]
    }

    /// Draws the incident.
    pub fn render(&self, frame: &mut Frame, area: Rect, data: &Data, now_ms: i64, theme: Theme) {
        let Some(incident) = data.incident(&self.id) else {
            widgets::gone(frame, area, &format!("incident {}", self.id), theme);
            return;
        };
        let evidence = Evidence::of(incident);
        let histories: Vec<History> = incident_charts(incident)
            .iter()
            .map(|spec| {
                let mut history = History::of(data, &incident.service, *spec, self.window, now_ms);
                history.marks.push(Mark {
                    at_ms: incident.opened_at_ms,
                    label: "opened",
                });
                if let Evidence::Memory(memory) = &evidence {
                    history.fit = trend(&history, memory);
                    history.marks.insert(
                        0,
                        Mark {
                            at_ms: incident.opened_at_ms - memory.window_ms(),
                            label: "detector's window",
                        },
                    );
                }
                history
            })
            .collect();
        let chart_height = if histories.is_empty() {
            0
        } else {
            (area.height / 3).clamp(6, 12)
        };
        // The summary says what is wrong and where: it is shown whole.
        let summary_height = widgets::wrapped_height(&format!(" {}", incident.summary), area.width);
        let [head, charts, body] = Layout::vertical([
            Constraint::Length(1 + summary_height.min(MAX_SUMMARY_LINES)),
            Constraint::Length(chart_height),
            Constraint::Fill(1),
        ])
        .areas(area);
        frame.render_widget(
            Paragraph::new(header(incident, now_ms, theme)).wrap(Wrap { trim: false }),
            head,
        );
        let chart_areas =
            Layout::horizontal(histories.iter().map(|_| Constraint::Fill(1))).split(charts);
        for (history, chart_area) in histories.iter().zip(chart_areas.iter()) {
            widgets::chart(frame, *chart_area, history, now_ms, theme);
        }
        let mut lines = match &evidence {
            Evidence::Loop(evidence) => loop_lines(evidence, !self.unfolded, body.width, theme),
            Evidence::Memory(memory) => memory_lines(memory, !self.unfolded, body.width, theme),
            Evidence::Other => Vec::new(),
        };
        lines.extend(widgets::sections(&evidence.rest(incident, now_ms), theme));
        if !histories.is_empty() {
            lines.push(Line::from(Span::styled(
                format!("history: {}", self.window.describe(now_ms)),
                theme.dim(),
            )));
        }
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .scroll((self.scroll, 0)),
            body,
        );
    }
}

/// The most lines the summary takes before the charts and the evidence.
const MAX_SUMMARY_LINES: u16 = 5;

/// The incident's headline: severity, kind, where, since when, and its summary.
fn header(incident: &Incident, now_ms: i64, theme: Theme) -> Vec<Line<'static>> {
    let instance = incident
        .instance
        .as_deref()
        .map(|id| format!(" {}", id.chars().take(8).collect::<String>()))
        .unwrap_or_default();
    let when = match incident.resolved_at_ms {
        None => format!(
            "open since {}, seen {}",
            format::relative(now_ms, incident.opened_at_ms),
            format::relative(now_ms, incident.last_seen_at_ms)
        ),
        Some(end) => format!(
            "resolved {} after {}",
            format::relative(now_ms, end),
            format::duration_ms((end - incident.opened_at_ms) as f64)
        ),
    };
    vec![
        Line::from(vec![
            Span::styled(
                format!(
                    " ● {} {} ",
                    severity_name(incident.severity),
                    kind_name(incident)
                ),
                theme.urgency(severity_rank(incident.severity)),
            ),
            Span::styled(format!("{}{instance} ", incident.service), theme.heading()),
            Span::styled(format!("#{} · {when}", incident.id), theme.dim()),
        ]),
        Line::from(format!(" {}", incident.summary)),
    ]
}

fn loop_lines(
    evidence: &LoopEvidence,
    folded: bool,
    width: u16,
    theme: Theme,
) -> Vec<Line<'static>> {
    let facts: Vec<String> = evidence
        .facts()
        .into_iter()
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    let mut lines = vec![Line::from(facts.join(" · "))];
    if let Some(caveat) = &evidence.caveat {
        lines.push(Line::from(Span::styled(
            format!("note: {caveat}"),
            theme.urgency(2),
        )));
    }
    lines.push(Line::from(vec![
        Span::styled("stack, innermost first (▶ hot)", theme.heading()),
        Span::styled(
            if folded {
                "  f shows library frames"
            } else {
                "  f folds library frames"
            },
            theme.dim(),
        ),
    ]));
    if evidence.frames.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no stack was captured",
            theme.dim(),
        )));
    }
    lines.extend(widgets::stack(
        &evidence.frames,
        |i| evidence.is_hot(i),
        folded,
        width,
        theme,
    ));
    if !evidence.hot_frames.is_empty() {
        lines.push(Line::from(Span::styled(
            "hottest leaves, by samples",
            theme.dim(),
        )));
        for hot in &evidence.hot_frames {
            let count = format!("{:>5}  ", hot.samples);
            let room = usize::from(width).saturating_sub(count.len());
            lines.push(Line::from(vec![
                Span::styled(count, theme.dim()),
                Span::raw(widgets::fit_function(&hot.frame.function, room)),
            ]));
        }
    }
    if evidence.samples.len() > 1 {
        lines.push(Line::from(Span::styled(
            format!(
                "{} distinct stacks among the samples; `meshwatch report` draws them as a flame graph",
                evidence.samples.len()
            ),
            theme.dim(),
        )));
    }
    lines.push(Line::default());
    lines
}

fn memory_lines(
    memory: &MemoryEvidence,
    folded: bool,
    width: u16,
    theme: Theme,
) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(Span::styled(
        "allocation sites, most suspect first",
        theme.heading(),
    ))];
    if memory.sites.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no sampled sites (is the tracking allocator installed?)",
            theme.dim(),
        )));
    }
    for (n, site) in memory.sites.iter().enumerate() {
        let figures: Vec<String> = site
            .figures
            .iter()
            .map(|f| format!("{} {}", f.name, f.value))
            .collect();
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:>2}. {}", n + 1, site.label),
                theme.urgency(if n == 0 { 2 } else { 0 }),
            ),
            Span::styled(format!("  {}", figures.join(" · ")), theme.dim()),
        ]));
        lines.extend(widgets::stack(
            &site.frames,
            |_| false,
            folded,
            width,
            theme,
        ));
    }
    lines.push(Line::default());
    lines
}

/// The trend line over the allocator's bytes (else RSS): the detector's
/// slope when it gives one in bytes per time, else a least-squares fit.
fn trend(history: &History, memory: &MemoryEvidence) -> Option<ChartLine> {
    let line = history.lines.iter().rev().find(|l| !l.points.is_empty())?;
    let (label, slope) = match memory.slope_bytes_per_ms {
        Some(slope) => ("detector's slope", Some(slope)),
        None => ("least-squares trend", None),
    };
    Some(ChartLine {
        label: label.to_owned(),
        points: crate::model::fitted(&line.points, slope)?,
    })
}
