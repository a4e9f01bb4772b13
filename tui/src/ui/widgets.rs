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
                label: (*metric).to_owned(),
                points: merged(data.series(&SeriesReq {
                    service: service.to_owned(),
                    metric,
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
pub fn stack(
    frames: &[StackFrame],
    is_hot: impl Fn(usize) -> bool,
    folded: bool,
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
                let mut spans = vec![
                    Span::raw(format!("{marker}{i:>3} ")),
                    Span::styled(frame.function.clone(), style),
                ];
                if let Some(location) = &frame.location {
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
