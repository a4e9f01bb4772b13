//! Small drawing helpers shared by the screens: sparklines in a cell,
//! history charts, evidence sections, stacks, and key hints.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};

use super::theme::Theme;
use crate::client::Range;
use crate::evidence::{Frame as StackFrame, Section, StackRow, fold};
use crate::format;
use crate::model::{ChartSpec, Point, merged};

use super::fetch::{Data, SeriesReq};
use super::window::Window;

/// Eight levels of a sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The average of the points in each of `width` equal slices of `range`;
/// `None` where a slice has no point.
pub fn buckets(points: &[Point], range: Range, width: usize) -> Vec<Option<f64>> {
    let span = (range.to_ms - range.from_ms).max(1) as f64;
    let mut sums = vec![(0.0, 0u32); width];
    for &(t, v) in points
        .iter()
        .filter(|(t, _)| (range.from_ms..=range.to_ms).contains(t))
    {
        let slot = (((t - range.from_ms) as f64 / span) * width as f64) as usize;
        let slot = slot.min(width.saturating_sub(1));
        if let Some(sum) = sums.get_mut(slot) {
            sum.0 += v;
            sum.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(sum, n)| (n > 0).then(|| sum / f64::from(n)))
        .collect()
}

/// A sparkline of `values` scaled between `lo` and `hi` (or the values'
/// own range when those are `None`, so that a slow climb is visible); gaps
/// are blank.
pub fn spark(values: &[Option<f64>], lo: Option<f64>, hi: Option<f64>) -> String {
    let known = values.iter().flatten();
    let lo = lo.unwrap_or_else(|| known.clone().copied().fold(f64::INFINITY, f64::min));
    let hi = hi.unwrap_or_else(|| known.copied().fold(f64::NEG_INFINITY, f64::max));
    values
        .iter()
        .map(|value| match value {
            None => ' ',
            Some(v) if hi - lo <= f64::EPSILON => {
                if *v > 0.0 {
                    BARS[3]
                } else {
                    BARS[0]
                }
            }
            Some(v) => {
                let level = ((v - lo) / (hi - lo) * (BARS.len() - 1) as f64).round();
                BARS[(level.max(0.0) as usize).min(BARS.len() - 1)]
            }
        })
        .collect()
}

/// The scale of a trend sparkline: from the lowest value, spanning at least
/// a tenth of the highest, so a slow climb shows and noise stays flat.
pub fn trend_scale(values: &[Option<f64>]) -> Option<(f64, f64)> {
    let known = values.iter().flatten().copied();
    let lo = known.clone().reduce(f64::min)?;
    let hi = known.reduce(f64::max)?;
    Some((lo, hi.max(lo + hi.abs() * 0.1)))
}

/// One line of a chart: its label and points.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartLine {
    /// The legend's text.
    pub label: String,
    /// Points in time order.
    pub points: Vec<Point>,
}

/// What a history chart shows.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Title and unit.
    pub spec: ChartSpec,
    /// One line per metric.
    pub lines: Vec<ChartLine>,
    /// A fitted straight line (its two end points), drawn over the others.
    pub fit: Option<ChartLine>,
    /// The window's time range; the x axis shows the part of it that has
    /// data or marks ([`crate::model::shown_range`]).
    pub range: Range,
    /// Moments drawn as vertical lines: when the incident opened, where
    /// the detector's window began.
    pub marks: Vec<Mark>,
}

/// A moment marked on a chart's time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// When, in ms since the epoch.
    pub at_ms: i64,
    /// What happened then, for the legend.
    pub label: &'static str,
}

impl History {
    /// The chart of `spec` for every instance of `service` over `window`,
    /// from the fetched data; instances follow each other in time, so a
    /// restart is a drop in the same line.
    pub fn of(data: &Data, service: &str, spec: ChartSpec, window: Window, now_ms: i64) -> Self {
        let lines = spec
            .metrics
            .iter()
            .map(|metric| ChartLine {
                label: metric.label.to_owned(),
                points: merged(data.series(&SeriesReq {
                    service: service.to_owned(),
                    metric: metric.name,
                    window,
                })),
            })
            .collect();
        Self {
            spec,
            lines,
            fit: None,
            range: window.range(now_ms),
            marks: Vec::new(),
        }
    }

    /// Whether any line has a point.
    pub fn has_data(&self) -> bool {
        self.lines.iter().any(|l| !l.points.is_empty())
    }
}

/// Draws a history chart. Time runs left to right and is labelled relative
/// to `now_ms`.
pub fn chart(frame: &mut Frame, area: Rect, history: &History, now_ms: i64, theme: Theme) {
    let History {
        spec,
        lines,
        fit,
        range,
        marks,
    } = history;
    let (spec, fit) = (*spec, fit.as_ref());
    let first_point = lines
        .iter()
        .filter_map(|l| l.points.first())
        .map(|p| p.0)
        .min();
    let (from_ms, to_ms) = crate::model::shown_range(
        (range.from_ms, range.to_ms),
        first_point,
        marks.iter().map(|m| m.at_ms),
    );
    let marks: Vec<&Mark> = marks
        .iter()
        .filter(|m| (from_ms..=to_ms).contains(&m.at_ms))
        .collect();
    let to_x = |t: i64| (t - to_ms) as f64 / 1000.0;
    let series: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .chain(fit)
        .map(|line| line.points.iter().map(|&(t, v)| (to_x(t), v)).collect())
        .collect();
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.01).max(1.0);
    let (lo, hi) = if spec.unit == crate::model::Unit::Percent {
        (0.0, hi.max(100.0))
    } else {
        ((lo - pad).max(0.0), hi + pad)
    };
    let mark_lines: Vec<Vec<(f64, f64)>> = marks
        .iter()
        .map(|m| vec![(to_x(m.at_ms), lo), (to_x(m.at_ms), hi)])
        .collect();
    let datasets: Vec<Dataset<'_>> = lines
        .iter()
        .enumerate()
        .zip(&series)
        .map(|((i, line), data)| {
            Dataset::default()
                .name(line.label.clone())
                .marker(theme.marker(i))
                .graph_type(GraphType::Line)
                .style(theme.line(i))
                .data(data)
        })
        .chain(fit.zip(series.last()).map(|(line, data)| {
            Dataset::default()
                .name(line.label.clone())
                .marker(theme.marker(0))
                .graph_type(GraphType::Line)
                .style(theme.fit())
                .data(data)
        }))
        .chain(mark_lines.iter().map(|data| {
            Dataset::default()
                .marker(ratatui::symbols::Marker::Braille)
                .graph_type(GraphType::Line)
                .style(theme.dim())
                .data(data)
        }))
        .collect();
    let x_labels = vec![
        Span::raw(format!(
            "-{}",
            format::uptime(((now_ms - from_ms) / 1000) as u64)
        )),
        Span::raw(if to_ms >= now_ms {
            "now".to_owned()
        } else {
            format!("-{}", format::uptime(((now_ms - to_ms) / 1000) as u64))
        }),
    ];
    // The legend is the title line: it never covers the data.
    let mut title = vec![Span::styled(format!(" {} ", spec.title), theme.heading())];
    for (i, line) in lines.iter().enumerate() {
        let symbol = if theme.marker(i) == ratatui::symbols::Marker::Dot {
            "•"
        } else {
            "━"
        };
        title.push(Span::styled(
            format!(" {symbol} {}", line.label),
            theme.line(i),
        ));
    }
    if let Some(line) = fit {
        title.push(Span::styled(format!(" ━ {}", line.label), theme.fit()));
    }
    for mark in &marks {
        title.push(Span::styled(format!(" ┆ {}", mark.label), theme.dim()));
    }
    let title = Line::from(title);
    let widget = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .bounds([to_x(from_ms), 0.0])
                .labels(x_labels)
                .style(theme.dim()),
        )
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels(vec![
                    Span::raw(spec.unit.format(lo)),
                    Span::raw(spec.unit.format(hi)),
                ])
                .style(theme.dim()),
        )
        .legend_position(None);
    let [title_area, chart_area] = ratatui::layout::Layout::vertical([
        ratatui::layout::Constraint::Length(1),
        ratatui::layout::Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(title), title_area);
    if lines.iter().all(|l| l.points.is_empty()) {
        frame.render_widget(
            Paragraph::new(Span::styled("  no data in this window", theme.dim())),
            chart_area,
        );
    } else {
        frame.render_widget(widget, chart_area);
    }
}

/// Evidence sections as text: fields as aligned `name  value` lines,
/// tables as aligned columns under their title.
pub fn sections(sections: &[Section], theme: Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for section in sections {
        match section {
            Section::Fields(fields) => {
                let width = fields
                    .iter()
                    .map(|f| f.name.chars().count())
                    .max()
                    .unwrap_or(0);
                lines.extend(fields.iter().map(|field| {
                    Line::from(vec![
                        Span::styled(format!("  {:<width$}  ", field.name), theme.dim()),
                        Span::raw(field.value.clone()),
                    ])
                }));
            }
            Section::Table {
                title,
                columns,
                rows,
            } => {
                lines.push(Line::from(Span::styled(title.clone(), theme.heading())));
                let widths: Vec<usize> = (0..columns.len())
                    .map(|c| {
                        rows.iter()
                            .map(|row| row.get(c).map_or(0, |cell| cell.chars().count()))
                            .chain([columns[c].chars().count()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let render = |cells: &[String]| {
                    let text: Vec<String> = cells
                        .iter()
                        .zip(&widths)
                        .map(|(cell, width)| format!("{cell:<width$}"))
                        .collect();
                    format!("  {}", text.join("  ").trim_end())
                };
                lines.push(Line::from(Span::styled(render(columns), theme.dim())));
                lines.extend(rows.iter().map(|row| Line::from(render(row))));
            }
        }
        lines.push(Line::default());
    }
    lines
}

/// A stack as lines, innermost first: `is_hot` frames marked `▶` and
/// highlighted, the service's own frames in bold, and, when `folded`, each
/// run of library, runtime and std frames as one dim line.
///
/// Each frame keeps to one line of `width` columns, so the frames stay in
/// a column a person can scan: a location that does not fit loses middle
/// directories after its crate (`tokio-1.54.1/…/task/core.rs:331`) or
/// leading ones (`…/faults/blocking.rs:100`), then a function that still
/// does not fit loses its leading modules (`…::trigger::{{closure}}`).
/// The report keeps them whole.
pub fn stack(
    frames: &[StackFrame],
    is_hot: impl Fn(usize) -> bool,
    folded: bool,
    width: u16,
    theme: Theme,
) -> Vec<Line<'static>> {
    let rows = if folded {
        fold(frames, &is_hot)
    } else {
        (0..frames.len()).map(StackRow::Frame).collect()
    };
    rows.into_iter()
        .map(|row| match row {
            StackRow::Frame(i) => {
                let frame = &frames[i];
                let (marker, style) = if is_hot(i) {
                    ("▶", theme.hot())
                } else if frame.own {
                    (" ", theme.own())
                } else {
                    (" ", Style::new())
                };
                let number = format!("{marker}{i:>3} ");
                let room = usize::from(width).saturating_sub(number.chars().count());
                let (function, location) =
                    fit_frame(&frame.function, frame.location.as_deref(), room);
                let mut spans = vec![Span::raw(number), Span::styled(function, style)];
                if let Some(location) = location {
                    spans.push(Span::styled(format!("  {location}"), theme.dim()));
                }
                Line::from(spans)
            }
            StackRow::Folded { count, crates } => Line::from(Span::styled(
                format!("     {}", StackRow::folded_text(count, &crates)),
                theme.dim(),
            )),
        })
        .collect()
}

/// `function` and `location` shortened to fit `room` columns together
/// (two spaces between them): the location first, down to its file name,
/// then the function, from the left at `::` boundaries where it can.
fn fit_frame(function: &str, location: Option<&str>, room: usize) -> (String, Option<String>) {
    let width = |text: &str| text.chars().count();
    let Some(location) = location else {
        return (fit_function(function, room), None);
    };
    let gap = 2;
    let location = if width(function) + gap + width(location) <= room {
        location.to_owned()
    } else {
        shorten_location(location, room.saturating_sub(width(function) + gap))
    };
    let function = fit_function(function, room.saturating_sub(width(&location) + gap));
    (function, Some(location))
}

/// `location` within `room` columns if it can be: a path from a crate
/// keeps the crate and loses middle directories
/// (`tokio-1.54.1/…/task/core.rs:331`), an absolute one its leading
/// directories (`…/faults/blocking.rs:100`); the file name and line stay
/// whatever the room.
fn shorten_location(location: &str, room: usize) -> String {
    let width = |text: &str| text.chars().count();
    let parts: Vec<&str> = location.split('/').collect();
    let Some((&file, dirs)) = parts.split_last() else {
        return location.to_owned();
    };
    let crate_dir = match dirs.first() {
        Some(&first) if dirs.len() > 1 && !matches!(first, "" | "." | "..") => Some(first),
        _ => None,
    };
    let lead_of = |head: Option<&str>| head.map_or_else(|| "…/".to_owned(), |h| format!("{h}/…/"));
    let crate_dir = crate_dir.filter(|&h| width(&lead_of(Some(h))) + width(file) <= room);
    let lead = lead_of(crate_dir);
    let middle = &dirs[usize::from(crate_dir.is_some())..];
    let mut tail = file.to_owned();
    for (kept, dir) in middle.iter().rev().enumerate() {
        let longer = format!("{dir}/{tail}");
        if width(&lead) + width(&longer) > room {
            break;
        }
        if kept + 1 == middle.len() {
            // Every directory fits: nothing to leave out.
            return location.to_owned();
        }
        tail = longer;
    }
    format!("{lead}{tail}")
}

/// `function` within `room` columns: whole when it fits, else its end,
/// from a module boundary where one falls (`…::Searcher>::next_match`).
pub fn fit_function(function: &str, room: usize) -> String {
    cut_left(function, room, "::")
}

/// The end of `text` within `room` columns, led by `…`, starting after a
/// `separator` where one falls in the kept part; `text` itself when it fits.
fn cut_left(text: &str, room: usize, separator: &str) -> String {
    let chars = text.chars().count();
    if chars <= room {
        return text.to_owned();
    }
    let keep = room.saturating_sub(1);
    let tail: String = text.chars().skip(chars - keep).collect();
    let tail = match tail.find(separator) {
        // Start at a boundary unless that throws most of the room away.
        Some(at) if at + separator.len() < tail.len() && at < keep / 2 => &tail[at..],
        _ => tail.as_str(),
    };
    format!("…{tail}")
}

/// How many lines `text` takes in a paragraph `width` columns wide that
/// wraps at spaces, a word longer than a line on lines of its own, as
/// ratatui's word wrapping lays it out (its line count is behind an
/// unstable feature).
pub fn wrapped_height(text: &str, width: u16) -> u16 {
    let width = usize::from(width.max(1));
    let mut lines = 1_usize;
    let mut used = 0_usize;
    for word in text.split(' ') {
        let len = word.chars().count();
        let needed = if used == 0 { len } else { used + 1 + len };
        if needed <= width {
            used = needed;
        } else if len <= width {
            lines += 1;
            used = len;
        } else {
            // A word longer than a line starts a line of its own and is
            // broken across as many as it needs.
            lines += len.div_ceil(width) - usize::from(used == 0);
            used = match len % width {
                0 => width,
                partial => partial,
            };
        }
    }
    u16::try_from(lines).unwrap_or(u16::MAX)
}

/// Says that what a detail shows (`what`: `incident 7`) is gone from the
/// collector, in place of the detail.
pub fn gone(frame: &mut Frame, area: Rect, what: &str, theme: Theme) {
    let text = format!(" {what} is no longer known to the collector (Esc to go back)");
    frame.render_widget(Paragraph::new(Span::styled(text, theme.dim())), area);
}

/// The footer: `key action` pairs.
pub fn key_hints(keys: &[(&str, &str)], theme: Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for (key, action) in keys {
        spans.push(Span::styled(format!(" {key}"), theme.key()));
        spans.push(Span::raw(format!(" {action} ")));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_keeps_to_one_line_losing_directories_then_modules() {
        let fit = |function: &str, location: &str, room: usize| {
            let (function, location) = fit_frame(function, Some(location), room);
            let location = location.unwrap_or_default();
            assert!(
                function.chars().count() + 2 + location.chars().count() <= room,
                "{function}  {location} in {room}"
            );
            (function, location)
        };
        let poll = "tokio::runtime::task::core::Core<T,S>::poll";
        let core = "tokio-1.54.1/src/runtime/task/core.rs:331";
        assert_eq!(fit(poll, core, 100), (poll.to_owned(), core.to_owned()));
        assert_eq!(
            fit(poll, core, 76).1,
            "tokio-1.54.1/…/task/core.rs:331",
            "a crate's path keeps the crate"
        );
        let own = "meshwatch_examples::faults::blocking::ask_upstream_blocking";
        let file = "/work/main/examples/src/faults/blocking.rs:94";
        assert_eq!(
            fit(own, file, 90),
            (own.to_owned(), "…/src/faults/blocking.rs:94".to_owned())
        );
        // Too narrow even for the file with its crate: the function gives
        // way from the left, at a module boundary.
        let closure =
            "meshwatch_examples::faults::blocking::trigger_read::{{closure}}::{{closure}}";
        let (function, location) =
            fit(closure, "/work/main/examples/src/faults/blocking.rs:71", 75);
        assert_eq!(location, "…/blocking.rs:71");
        assert!(
            function.starts_with("…::")
                && function.ends_with("trigger_read::{{closure}}::{{closure}}"),
            "{function}"
        );
        assert_eq!(fit_frame("f", None, 10), ("f".to_owned(), None));
    }

    #[test]
    fn wrapped_height_counts_the_lines_ratatui_wraps_a_text_into() {
        let drawn_lines = |text: &str, width: u16| -> u16 {
            let mut terminal =
                ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, 20)).unwrap();
            terminal
                .draw(|frame| {
                    frame.render_widget(
                        Paragraph::new(text.to_owned())
                            .wrap(ratatui::widgets::Wrap { trim: false }),
                        frame.area(),
                    );
                })
                .unwrap();
            let buffer = terminal.backend().buffer();
            (0..20)
                .rev()
                .find(|&y| (0..width).any(|x| buffer[(x, y)].symbol() != " "))
                .map_or(1, |last| last + 1)
        };
        for (text, width) in [
            ("one two three", 13),
            ("one two three", 12),
            ("a 0123456789abcdef", 10),
            ("0123456789abcdefghij klm", 10),
            (
                " a poll on worker 1 has not returned for 3.3 s and is blocked at 0% CPU in \
                 meshwatch_examples::faults::blocking::ask_upstream_blocking::{{closure}} (blocking.rs:100)",
                80,
            ),
            (
                " heap of proxy-leaky grows 914.4 MiB/h (+22208 %/h) in instance 378700e3, steadily over \
                 the last 20 s; reaches its limit (23.5 GiB) in 22.1 h; top growing site: \
                 meshwatch_examples::faults::session_leak::SessionCache::remember_session",
                80,
            ),
        ] {
            assert_eq!(
                wrapped_height(text, width),
                drawn_lines(text, width),
                "{text:?} at {width}"
            );
        }
    }

    #[test]
    fn buckets_average_and_leave_gaps() {
        let range = Range {
            from_ms: 0,
            to_ms: 4000,
        };
        let points = [(0, 1.0), (500, 3.0), (3500, 8.0), (9000, 100.0)];
        assert_eq!(
            buckets(&points, range, 4),
            vec![Some(2.0), None, None, Some(8.0)]
        );
    }

    #[test]
    fn sparklines_scale_to_their_range_and_show_gaps() {
        let values = [Some(0.0), Some(50.0), None, Some(100.0)];
        assert_eq!(spark(&values, Some(0.0), Some(100.0)), "▁▅ █");
        assert_eq!(
            spark(&[Some(10.0), Some(11.0)], None, None),
            "▁█",
            "a climb is visible"
        );
        assert_eq!(spark(&[Some(5.0), Some(5.0)], None, None), "▄▄");
        let noisy = [Some(100.0), Some(101.0), Some(100.0)];
        let (lo, hi) = trend_scale(&noisy).unwrap();
        assert_eq!(spark(&noisy, Some(lo), Some(hi)), "▁▂▁", "noise stays low");
        let climb = [Some(100.0), Some(150.0), Some(200.0)];
        let (lo, hi) = trend_scale(&climb).unwrap();
        assert_eq!(spark(&climb, Some(lo), Some(hi)), "▁▅█");
    }
}
