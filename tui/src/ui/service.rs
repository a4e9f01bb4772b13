//! One instance in depth: its figures, open incidents, threads with their
//! CPU, runtimes, TCP sockets by state, port, peer and age, whatever else the
//! collector reports about it (shown generically), and history charts over a
//! time window that zooms, pans and returns to live.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::cursor;
use super::fetch::{Data, SeriesReq};
use super::input::Intent;
use super::profiling::{self, ProfilePanel};
use super::theme::Theme;
use super::widgets::{self, History};
use super::window::{SERVICE_KEYS, Window};
use crate::evidence;
use crate::format;
use crate::model::{Instance, SERVICE_CHARTS, kind_name, severity_rank};
use crate::profile::cpu_time;
use meshwatch_api::{HeapSiteView, NamedCount, SocketsView};

/// History shown by default.
const SPAN_MS: i64 = 300_000;
/// The smallest useful chart.
const MIN_CHART_HEIGHT: u16 = 6;

/// The service detail's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDetail {
    /// The instance shown.
    pub instance_id: String,
    service: String,
    scroll: u16,
    window: Window,
}

impl ServiceDetail {
    /// The detail of `instance`, live.
    pub fn new(instance: &Instance) -> Self {
        Self {
            instance_id: instance.view.instance_id.clone(),
            service: instance.view.service.clone(),
            scroll: 0,
            window: Window::live(SPAN_MS),
        }
    }

    /// Scrolls, moves the window; Enter opens the most severe open incident.
    pub fn handle(&mut self, intent: Intent, data: &Data, now_ms: i64) -> Option<String> {
        if let Some(window) = self.window.steer(intent, now_ms) {
            self.window = window;
        } else if intent == Intent::Open {
            let instance = data.instance(&self.instance_id)?;
            return instance
                .view
                .open_incidents
                .iter()
                .max_by_key(|i| severity_rank(i.severity))
                .map(|i| i.id.clone());
        } else {
            self.scroll = cursor::scrolled(self.scroll, intent);
        }
        None
    }

    /// The service of the instance shown.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The series its charts need.
    pub fn wants(&self) -> Vec<SeriesReq> {
        SeriesReq::for_charts(&self.service, SERVICE_CHARTS, self.window)
    }

    /// Keys shown in the footer.
    pub fn keys(&self) -> &'static [(&'static str, &'static str)] {
        SERVICE_KEYS
    }

    /// Draws the instance, with its CPU profile when one was taken.
    pub fn render(
        &self,
        frame: &mut Frame,
        area: Rect,
        data: &Data,
        profile: Option<&ProfilePanel>,
        now_ms: i64,
        theme: Theme,
    ) {
        let Some(instance) = data.instance(&self.instance_id) else {
            widgets::gone(
                frame,
                area,
                &format!("instance {}", self.instance_id),
                theme,
            );
            return;
        };
        let head = header(instance, theme);
        let width = usize::from(area.width.max(1));
        let head_height: usize = head
            .iter()
            .map(|line| line.width().max(1).div_ceil(width))
            .sum();
        let [head_area, left, right] = {
            let [head_area, rest] = Layout::vertical([
                Constraint::Length(u16::try_from(head_height).unwrap_or(u16::MAX)),
                Constraint::Fill(1),
            ])
            .areas(area);
            let [left, right] =
                Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
                    .areas(rest);
            [head_area, left, right]
        };
        frame.render_widget(Paragraph::new(head).wrap(Wrap { trim: false }), head_area);
        frame.render_widget(
            Paragraph::new(details(instance, profile, left.width, now_ms, theme))
                .wrap(Wrap { trim: false })
                .scroll((self.scroll, 0)),
            left,
        );
        self.render_charts(frame, right, data, now_ms, theme);
    }

    fn render_charts(&self, frame: &mut Frame, area: Rect, data: &Data, now_ms: i64, theme: Theme) {
        let [label, area] =
            Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
        frame.render_widget(
            Paragraph::new(Span::styled(
                format!("history: {}", self.window.describe(now_ms)),
                theme.dim(),
            )),
            label,
        );
        let all: Vec<History> = SERVICE_CHARTS
            .iter()
            .map(|spec| History::of(data, &self.service, *spec, self.window, now_ms))
            .collect();
        // Charts of metrics the collector serves; the first two even when
        // empty, so a quiet window still says "no data".
        let shown: Vec<&History> = all
            .iter()
            .enumerate()
            .filter(|(i, h)| *i < 2 || h.has_data())
            .map(|(_, h)| h)
            .take(usize::from((area.height / MIN_CHART_HEIGHT).max(1)))
            .collect();
        let areas = Layout::vertical(shown.iter().map(|_| Constraint::Fill(1))).split(area);
        for (history, chart_area) in shown.iter().zip(areas.iter()) {
            widgets::chart(frame, *chart_area, history, now_ms, theme);
        }
    }
}

fn header(instance: &Instance, theme: Theme) -> Vec<Line<'static>> {
    let view = &instance.view;
    let figure = |name: &str, unit: fn(f64) -> String| {
        instance.figure(name).map_or_else(|| "-".to_owned(), unit)
    };
    let count = |v: f64| format!("{v:.0}");
    let limit = match (
        instance.figure("memory_limit_bytes"),
        view.headline
            .as_ref()
            .and_then(|h| h.memory_limit_source.clone()),
    ) {
        (Some(bytes), Some(source)) => {
            format!(" · limit {} ({source})", format::bytes_short(bytes))
        }
        (Some(bytes), None) => format!(" · limit {}", format::bytes_short(bytes)),
        _ => String::new(),
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!(" {} ", view.service), theme.heading()),
            Span::raw(format!(
                "{} · {} · pid {} on {} · {} {} · restarts {}",
                instance.short_id(),
                view.runtime,
                view.pid,
                view.host,
                view.state.as_str(),
                format::uptime(view.uptime_seconds),
                view.restarts,
            )),
        ]),
        Line::from(format!(
            " CPU {} · RSS {} · heap {} · threads {} · tasks {} · fds {}/{}{limit}",
            figure("cpu_percent", |v| format!("{v:.1}%")),
            figure("rss_bytes", format::bytes_short),
            figure("heap_live_bytes", format::bytes_short),
            figure("threads", count),
            figure("tasks_alive", count),
            figure("fds_open", count),
            figure("fds_limit", count),
        )),
    ];
    for incident in &view.open_incidents {
        lines.push(Line::from(vec![
            Span::styled(
                format!(" ● {} ", kind_name(incident)),
                theme.urgency(severity_rank(incident.severity)),
            ),
            Span::raw(incident.summary.clone()),
        ]));
    }
    lines
}

/// Threads by CPU, runtimes, the probe's health, then unknown sections.
fn details(
    instance: &Instance,
    profile: Option<&ProfilePanel>,
    width: u16,
    now_ms: i64,
    theme: Theme,
) -> Vec<Line<'static>> {
    let view = &instance.view;
    let mut lines = profile
        .map(|panel| profile_lines(panel, width, theme))
        .unwrap_or_default();
    lines.push(Line::from(Span::styled(
        " THREAD                TID    CPU",
        theme.heading(),
    )));
    let mut threads: Vec<_> = view.threads.iter().collect();
    threads.sort_by(|a, b| {
        b.cpu_percent
            .unwrap_or(-1.0)
            .total_cmp(&a.cpu_percent.unwrap_or(-1.0))
    });
    for thread in threads {
        let name: String = match worker_of(view, thread.tid) {
            Some(worker) => {
                let short: String = thread.name.chars().take(18 - worker.len() - 1).collect();
                format!("{short} {worker}")
            }
            None => thread.name.chars().take(18).collect(),
        };
        let cpu = format::percent(thread.cpu_percent);
        let style = if thread.cpu_percent.unwrap_or(0.0) >= 80.0 {
            theme.urgency(3)
        } else {
            Default::default()
        };
        lines.push(Line::from(Span::styled(
            format!(" {name:<18} {:>7} {cpu:>6}", thread.tid),
            style,
        )));
    }
    lines.push(Line::default());
    for runtime in &view.runtimes {
        lines.push(Line::from(format!(
            " runtime {} ({}): {} workers, {} tasks, queue {}",
            runtime.runtime_id,
            runtime.flavor,
            runtime.workers,
            runtime.tasks_alive,
            runtime.global_queue_depth
        )));
    }
    if let Some(probe) = &view.probe {
        lines.push(Line::from(Span::styled(
            format!(
                " {} {} {}: {} snapshots and {} events dropped, {} connects",
                view.runtime,
                if view.watched_from_outside {
                    "watched from outside by meshwatch"
                } else {
                    "probe"
                },
                view.probe_version,
                probe.snapshots_dropped_total,
                probe.events_dropped_total,
                probe.connects_total
            ),
            theme.dim(),
        )));
    }
    if let Some(console) = &view.tokio_console {
        lines.push(Line::from(vec![
            Span::raw(format!(" tokio-console at {console}: ")),
            Span::styled("press c", theme.key()),
        ]));
    }
    lines.push(Line::default());
    if let Some(sockets) = &view.sockets {
        lines.extend(socket_lines(sockets, theme));
        lines.push(Line::default());
    }
    if !view.heap_sites.is_empty() {
        lines.extend(heap_site_lines(&view.heap_sites, theme));
        lines.push(Line::default());
    }
    for (key, value) in &instance.extra {
        let wrapped = serde_json::json!({ key.as_str(): value });
        lines.extend(widgets::sections(
            &evidence::generic(&wrapped, now_ms),
            theme,
        ));
    }
    lines
}

/// The CPU profile taken from this view: how far it got, or its top
/// functions (each on one line of `width`) and where its files are.
fn profile_lines(panel: &ProfilePanel, width: u16, theme: Theme) -> Vec<Line<'static>> {
    let mut lines = match panel {
        ProfilePanel::Sampling { waited } if *waited < profiling::SECONDS => {
            vec![Line::from(format!(
                " CPU profile: sampling, {waited} of {} s",
                profiling::SECONDS
            ))]
        }
        ProfilePanel::Sampling { waited } => vec![Line::from(format!(
            " CPU profile: the collector is naming the stacks ({waited} s)"
        ))],
        ProfilePanel::Failed(reason) => vec![Line::from(Span::styled(
            format!(" CPU profile failed: {reason}"),
            theme.urgency(3),
        ))],
        ProfilePanel::Done {
            summary,
            notes,
            top,
            dir,
        } => {
            let mut lines = vec![
                Line::from(Span::styled(" CPU PROFILE", theme.heading())),
                Line::from(format!(" {summary}")),
            ];
            lines.extend(
                notes
                    .iter()
                    .map(|n| Line::from(Span::styled(format!(" {n}"), theme.dim()))),
            );
            lines.push(Line::from(Span::styled(
                "     self    total  function",
                theme.dim(),
            )));
            let name_width = usize::from(width).saturating_sub(20).max(12);
            lines.extend(top.iter().map(|row| {
                Line::from(format!(
                    " {:>8} {:>8}  {}",
                    cpu_time(row.own),
                    cpu_time(row.total),
                    tail(&row.function, name_width)
                ))
            }));
            lines.push(Line::from(Span::styled(
                format!(" written to {}/ (profile.pb.gz, flame.svg)", dir.display()),
                theme.dim(),
            )));
            lines
        }
    };
    lines.push(Line::default());
    lines
}

/// The end of `name` in at most `width` characters, `…` marking a cut:
/// the end of a Rust path is its most specific part.
fn tail(name: &str, width: usize) -> String {
    let count = name.chars().count();
    if count <= width {
        return name.to_owned();
    }
    let kept: String = name.chars().skip(count + 1 - width).collect();
    format!("…{kept}")
}

/// Which worker runs on thread `tid`, as `w1` (`r2w1` in a second
/// runtime), when the probe has mapped it.
fn worker_of(view: &meshwatch_api::InstanceView, tid: u32) -> Option<String> {
    view.runtimes.iter().find_map(|runtime| {
        let index = runtime
            .worker_tids
            .iter()
            .position(|&t| t == tid && t != 0)?;
        Some(if runtime.runtime_id == 0 {
            format!("w{index}")
        } else {
            format!("r{}w{index}", runtime.runtime_id)
        })
    })
}

/// The TCP sockets: counts by state (CLOSE_WAIT stands out: the service did
/// not close after its peer hung up), by listening port, by peer, and the
/// ages of the connections.
fn socket_lines(sockets: &SocketsView, theme: Theme) -> Vec<Line<'static>> {
    let counts = |items: &[NamedCount]| {
        items
            .iter()
            .map(|c| format!("{} {}", c.name, c.count))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![Line::from(Span::styled(
        format!(" SOCKETS  {} TCP", sockets.total),
        theme.heading(),
    ))];
    let close_wait = sockets
        .by_state
        .iter()
        .any(|c| c.name == "CLOSE_WAIT" && c.count > 0);
    let style = if close_wait {
        theme.urgency(2)
    } else {
        Default::default()
    };
    lines.push(Line::from(Span::styled(
        format!(" by state: {}", counts(&sockets.by_state)),
        style,
    )));
    if !sockets.by_listen_port.is_empty() {
        lines.push(Line::from(format!(
            " by port:  {}",
            counts(&sockets.by_listen_port)
        )));
    }
    if !sockets.top_peers.is_empty() {
        lines.push(Line::from(format!(
            " peers:    {}",
            counts(&sockets.top_peers)
        )));
    }
    let ages: Vec<String> = sockets
        .ages
        .iter()
        .map(|b| match b.le_seconds {
            Some(le) => format!("<{} {}", age_bound(le), b.count),
            None => format!("older {}", b.count),
        })
        .collect();
    lines.push(Line::from(format!(" ages:     {}", ages.join(", "))));
    lines
}

/// The allocation sites holding the most live memory, with the function of
/// the service's own code that allocated it.
fn heap_site_lines(sites: &[HeapSiteView], theme: Theme) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(Span::styled(
        " HEAP SITES       LIVE  OBJECTS  FUNCTION",
        theme.heading(),
    ))];
    for site in sites {
        let function = site.function.as_deref().unwrap_or("?");
        lines.push(Line::from(format!(
            " {:<12} {:>8} {:>8}  {function}",
            &site.site[..site.site.len().min(12)],
            format::bytes(site.live_bytes),
            site.live_objects
        )));
    }
    lines
}

/// An age bucket's bound in its largest whole unit: `10s`, `1m`, `1h`.
fn age_bound(seconds: u64) -> String {
    if seconds >= 3600 && seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}
