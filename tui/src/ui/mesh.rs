//! The mesh at a glance: what is wrong first, then one row per instance.
//!
//! Columns are a table of [`Column`]s (header, width, how to read a cell,
//! how to compare), so a new figure is one more entry. Figures are read by
//! their API name from the instance's headline, so a column for a figure
//! the collector does not send yet shows `-` until it does.

use std::cmp::Ordering;

use meshwatch_api::InstanceState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use super::cursor;
use super::fetch::{Data, SeriesReq};
use super::input::Intent;
use super::theme::Theme;
use super::widgets::{buckets, spark, trend_scale};
use super::window::Window;
use crate::format;
use crate::model::{Instance, kind_name, severity_rank};

/// The history behind the sparklines: two minutes, live.
pub const SPARK_WINDOW: Window = Window::live(120_000);
/// Characters of a sparkline.
const SPARK_WIDTH: usize = 7;
/// The metrics drawn as sparklines.
const SPARK_METRICS: [&str; 2] = ["cpu_percent", "rss_bytes"];

/// What a cell needs besides its instance.
struct Ctx<'a> {
    data: &'a Data,
}

impl Ctx<'_> {
    /// A sparkline of `metric`: on `scale` when given, else on the trend
    /// scale of its own values.
    fn spark(
        &self,
        instance: &Instance,
        metric: &'static str,
        scale: Option<(f64, f64)>,
    ) -> String {
        let req = SeriesReq {
            service: instance.view.service.clone(),
            metric,
            window: SPARK_WINDOW,
        };
        let points = self
            .data
            .series(&req)
            .iter()
            .find(|s| s.instance_id == instance.view.instance_id)
            .map_or(&[][..], |s| s.points.as_slice());
        // A young instance's few points fill the whole sparkline.
        let mut range = SPARK_WINDOW.range(self.data.at_ms);
        range.from_ms = range
            .from_ms
            .max(points.first().map_or(range.from_ms, |p| p.0));
        let values = buckets(points, range, SPARK_WIDTH);
        let scale = scale.or_else(|| trend_scale(&values));
        spark(&values, scale.map(|s| s.0), scale.map(|s| s.1))
    }
}

/// One column of the mesh table.
struct Column {
    header: &'static str,
    width: Constraint,
    cell: fn(&Instance, &Ctx<'_>) -> String,
    /// How rows compare when sorted by this column; `None`: not sortable.
    order: Option<fn(&Instance, &Instance) -> Ordering>,
}

fn figure(instance: &Instance, name: &str) -> String {
    instance
        .figure(name)
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn by_figure(name: &'static str) -> impl Fn(&Instance, &Instance) -> Ordering {
    move |a, b| {
        let (a, b) = (
            a.figure(name).unwrap_or(-1.0),
            b.figure(name).unwrap_or(-1.0),
        );
        b.total_cmp(&a)
    }
}

/// The short flag of an incident kind; unknown kinds show their name.
fn flag(kind: &str) -> &str {
    match kind {
        "runaway_loop" => "LOOP",
        "blocked_worker" => "BLOCKED",
        "memory_growth" => "MEM↑",
        "socket_leak" => "SOCK",
        "fd_leak" => "FD",
        "task_leak" => "TASK",
        "crash_loop" => "CRASH",
        "service_down" => "DOWN",
        other => other,
    }
}

/// The host an instance runs on: shown when the mesh spans several
/// collectors (hosts).
const HOST: Column = Column {
    header: "HOST",
    width: Constraint::Length(12),
    cell: |i, _| i.view.host.clone(),
    order: None,
};

/// The columns shown for `data`: [`COLUMNS`], with [`HOST`] after the
/// service when its instances come from more than one collector.
fn shown_columns(data: &Data) -> Vec<&'static Column> {
    let mut columns: Vec<&Column> = COLUMNS.iter().collect();
    if data.instances.iter().any(|i| i.collector > 0) {
        columns.insert(1, &HOST);
    }
    columns
}

const COLUMNS: &[Column] = &[
    Column {
        header: "SERVICE",
        width: Constraint::Min(7),
        cell: |i, _| i.view.service.clone(),
        order: Some(|a, b| a.view.service.cmp(&b.view.service)),
    },
    Column {
        header: "STATE",
        width: Constraint::Length(5),
        cell: |i, _| {
            match i.view.state {
                InstanceState::Up => "up",
                InstanceState::Down => "down",
                InstanceState::Restarted => "up↻",
                InstanceState::Unknown => "?",
            }
            .to_owned()
        },
        order: None,
    },
    Column {
        header: "CPU",
        width: Constraint::Length(13),
        cell: |i, ctx| {
            let value = i
                .figure("cpu_percent")
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}%"));
            format!(
                "{value:>5} {}",
                ctx.spark(i, SPARK_METRICS[0], Some((0.0, 100.0)))
            )
        },
        order: Some(|a, b| by_figure("cpu_percent")(a, b)),
    },
    Column {
        header: "RSS",
        width: Constraint::Length(13),
        cell: |i, ctx| {
            let value = i
                .figure("rss_bytes")
                .map_or_else(|| "-".to_owned(), format::bytes_short);
            format!("{value:>5} {}", ctx.spark(i, SPARK_METRICS[1], None))
        },
        order: Some(|a, b| by_figure("rss_bytes")(a, b)),
    },
    Column {
        header: "HEAP",
        width: Constraint::Length(6),
        cell: |i, _| {
            i.figure("heap_live_bytes")
                .map_or_else(|| "-".to_owned(), format::bytes_short)
        },
        order: Some(|a, b| by_figure("heap_live_bytes")(a, b)),
    },
    Column {
        header: "TASKS",
        width: Constraint::Length(5),
        cell: |i, _| figure(i, "tasks_alive"),
        order: Some(|a, b| by_figure("tasks_alive")(a, b)),
    },
    Column {
        header: "SOCK",
        width: Constraint::Length(7),
        // Established / CLOSE_WAIT, once the probe reports sockets.
        cell: |i, _| match (i.figure("tcp_established"), i.figure("tcp_close_wait")) {
            (None, None) => "-".to_owned(),
            (est, wait) => format!(
                "{}/{}",
                est.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
                wait.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
            ),
        },
        order: Some(|a, b| by_figure("tcp_close_wait")(a, b)),
    },
    Column {
        header: "FDS",
        width: Constraint::Length(4),
        cell: |i, _| figure(i, "fds_open"),
        order: Some(|a, b| by_figure("fds_open")(a, b)),
    },
    Column {
        header: "RST",
        width: Constraint::Length(3),
        cell: |i, _| i.view.restarts.to_string(),
        order: Some(|a, b| b.view.restarts.cmp(&a.view.restarts)),
    },
    Column {
        header: "FLAGS",
        width: Constraint::Fill(1),
        cell: |i, _| {
            let mut incidents: Vec<_> = i.view.open_incidents.iter().collect();
            incidents.sort_by_key(|inc| std::cmp::Reverse(severity_rank(inc.severity)));
            incidents
                .iter()
                .map(|inc| flag(kind_name(inc)))
                .collect::<Vec<_>>()
                .join(" ")
        },
        order: None,
    },
];

/// The sorts offered, in the order `s` cycles through them.
const SORTS: &[(&str, usize)] = &[
    ("severity", usize::MAX),
    ("name", 0),
    ("cpu", 2),
    ("rss", 3),
    ("heap", 4),
    ("tasks", 5),
    ("close_wait", 6),
    ("fds", 7),
    ("restarts", 8),
];

/// The mesh table's own state: selection, filter, sort.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshTable {
    /// The selected instance's id, so the selection follows it when rows move.
    selected: Option<String>,
    /// Rows must contain this (service, state, flags), case-insensitively.
    filter: String,
    /// Whether keys go to the filter.
    pub filtering: bool,
    /// Index into [`SORTS`].
    sort: usize,
    reverse: bool,
}

impl MeshTable {
    /// The rows shown: filtered, then sorted.
    pub fn rows<'a>(&self, data: &'a Data) -> Vec<&'a Instance> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&Instance> = data
            .instances
            .iter()
            .filter(|i| needle.is_empty() || haystack(i).contains(&needle))
            .collect();
        let severity = |a: &&Instance, b: &&Instance| {
            b.urgency()
                .cmp(&a.urgency())
                .then_with(|| a.view.service.cmp(&b.view.service))
                .then_with(|| b.view.started_at_ms.cmp(&a.view.started_at_ms))
        };
        let column = SORTS
            .get(self.sort)
            .and_then(|(_, c)| COLUMNS.get(*c))
            .and_then(|c| c.order);
        rows.sort_by(|a, b| match column {
            Some(order) => order(a, b).then_with(|| severity(a, b)),
            None => severity(a, b),
        });
        if self.reverse {
            rows.reverse();
        }
        rows
    }

    /// Handles an intent; returns the instance to open, if any.
    pub fn handle(&mut self, intent: Intent, data: &Data) -> Option<String> {
        let rows = self.rows(data);
        let ids: Vec<&str> = rows.iter().map(|i| i.view.instance_id.as_str()).collect();
        match intent {
            Intent::StartFilter => self.filtering = true,
            Intent::FilterChar(c) => self.filter.push(c),
            Intent::FilterBackspace => {
                self.filter.pop();
            }
            Intent::FilterDone => self.filtering = false,
            Intent::FilterCancel => {
                self.filter.clear();
                self.filtering = false;
            }
            Intent::NextSort => self.sort = (self.sort + 1) % SORTS.len(),
            Intent::ReverseSort => self.reverse = !self.reverse,
            Intent::Open => {
                return cursor::current(&ids, self.selected.as_deref()).map(str::to_owned);
            }
            other => {
                if let Some(id) = cursor::moved(&ids, self.selected.as_deref(), other) {
                    self.selected = Some(id.to_owned());
                }
            }
        }
        None
    }

    /// Whether a filter is set, so that Esc clears it before leaving.
    pub fn has_filter(&self) -> bool {
        !self.filter.is_empty()
    }

    /// Clears the filter.
    pub fn clear_filter(&mut self) {
        self.filter.clear();
    }

    /// The series the sparklines need.
    pub fn wants(data: &Data) -> Vec<SeriesReq> {
        let mut services: Vec<&str> = data
            .instances
            .iter()
            .map(|i| i.view.service.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        services
            .into_iter()
            .flat_map(|service| {
                SPARK_METRICS.iter().map(move |metric| SeriesReq {
                    service: service.to_owned(),
                    metric,
                    window: SPARK_WINDOW,
                })
            })
            .collect()
    }

    /// Keys shown in the footer.
    pub fn keys(&self) -> &'static [(&'static str, &'static str)] {
        if self.filtering {
            &[("Enter", "keep filter"), ("Esc", "clear"), ("↑↓", "move")]
        } else {
            &[
                ("↑↓", "move"),
                ("⏎", "service"),
                ("/", "filter"),
                ("s", "sort"),
                ("Tab", "incidents"),
                ("?", "help"),
                ("q", "quit"),
            ]
        }
    }

    /// Draws the open incidents, then the table.
    pub fn render(&self, frame: &mut Frame, area: Rect, data: &Data, theme: Theme) {
        let attention = attention(data, theme, 3);
        let [top, table_area] = Layout::vertical([
            Constraint::Length(attention.len() as u16),
            Constraint::Fill(1),
        ])
        .areas(area);
        frame.render_widget(Paragraph::new(attention), top);

        let rows = self.rows(data);
        let ctx = Ctx { data };
        let columns = shown_columns(data);
        let header = Row::new(columns.iter().map(|c| Cell::from(c.header))).style(theme.heading());
        let body = rows.iter().map(|instance| {
            Row::new(columns.iter().map(|c| Cell::from((c.cell)(instance, &ctx))))
                .style(theme.urgency(instance.urgency()))
        });
        let mut title = vec![Span::styled(
            format!(
                " mesh: {} of {} instances",
                rows.len(),
                data.instances.len()
            ),
            theme.heading(),
        )];
        let (sort_name, _) = SORTS[self.sort % SORTS.len()];
        title.push(Span::styled(
            format!(" · by {sort_name}{} ", if self.reverse { " ↑" } else { "" }),
            theme.dim(),
        ));
        if self.filtering || !self.filter.is_empty() {
            let cursor = if self.filtering { "▏" } else { "" };
            title.push(Span::styled(
                format!(" /{}{cursor} ", self.filter),
                theme.key(),
            ));
        }
        // The service column is as wide as the longest name (within reason);
        // the flags take what is left.
        let longest = rows
            .iter()
            .map(|i| i.view.service.chars().count())
            .max()
            .unwrap_or(0);
        let service_width = Constraint::Length(u16::try_from(longest.clamp(7, 24)).unwrap_or(24));
        let widths = columns
            .iter()
            .enumerate()
            .map(|(n, c)| if n == 0 { service_width } else { c.width });
        let table = Table::new(body, widths)
            .header(header)
            .block(Block::new().borders(Borders::TOP).title(Line::from(title)))
            .row_highlight_style(theme.selected());
        let ids: Vec<&str> = rows.iter().map(|i| i.view.instance_id.as_str()).collect();
        let mut state =
            TableState::default().with_selected(cursor::index(&ids, self.selected.as_deref()));
        frame.render_stateful_widget(table, table_area, &mut state);
        if data.instances.is_empty() {
            let hint = Paragraph::new(Span::styled(
                "  no services have reported to this collector yet",
                theme.dim(),
            ));
            let [_, hint_area] =
                Layout::vertical([Constraint::Length(2), Constraint::Length(1)]).areas(table_area);
            frame.render_widget(hint, hint_area);
        }
    }
}

/// What a row is searched for by the filter.
fn haystack(instance: &Instance) -> String {
    let kinds: Vec<&str> = instance.view.open_incidents.iter().map(kind_name).collect();
    format!(
        "{} {} {} {} {}",
        instance.view.service,
        instance.view.host,
        instance.view.instance_id,
        instance.view.state.as_str(),
        kinds.join(" ")
    )
    .to_lowercase()
}

/// Up to `max` lines naming the open incidents, most severe and most
/// recent first, or one line saying there are none.
pub fn attention(data: &Data, theme: Theme, max: usize) -> Vec<Line<'static>> {
    let mut open: Vec<_> = data.incidents.iter().filter(|i| i.is_open()).collect();
    if open.is_empty() {
        return vec![Line::from(Span::styled(" ✓ no open incidents", theme.ok()))];
    }
    open.sort_by_key(|i| {
        (
            std::cmp::Reverse(severity_rank(i.severity)),
            std::cmp::Reverse(i.opened_at_ms),
        )
    });
    let mut lines: Vec<Line<'static>> = open
        .iter()
        .take(max)
        .map(|incident| {
            let style = theme.urgency(severity_rank(incident.severity));
            Line::from(vec![
                Span::styled(format!(" ● {} ", flag(kind_name(incident))), style),
                Span::styled(format!("{} ", incident.service), theme.heading()),
                Span::raw(incident.summary.clone()),
            ])
        })
        .collect();
    if open.len() > max {
        lines.push(Line::from(Span::styled(
            format!("   … and {} more: Tab for incidents", open.len() - max),
            theme.dim(),
        )));
    }
    lines
}
