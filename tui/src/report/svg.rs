//! A line chart as a small standalone SVG: axes, a few ticks, one polyline
//! per series, optional dashed markers (an incident's start and end) and a
//! legend. Written by hand: the charts are simple, and plotting crates pull
//! in font rendering and image stacks for what is here a page of text.

use std::fmt::Write;

use crate::format;
use crate::model::{Point, Unit};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 5] = ["#1f77b4", "#9467bd", "#ff7f0e", "#2ca02c", "#8c564b"];

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// Points in time order.
    pub points: Vec<Point>,
    /// Drawn dashed in red: a fitted trend rather than data.
    pub trend: bool,
}

/// A vertical marker at an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Shown at the top of the line.
    pub label: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
}

/// The chart of `series` over `[from_ms, to_ms]`, values in `unit`.
pub fn line_chart(
    title: &str,
    unit: Unit,
    series: &[Series],
    markers: &[Marker],
    from_ms: i64,
    to_ms: i64,
) -> String {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo.min(0.0), hi.max(lo + 1.0))
    } else {
        (0.0, 1.0)
    };
    let hi = if unit == Unit::Percent {
        hi.max(100.0)
    } else {
        hi * 1.05
    };
    let span = (to_ms - from_ms).max(1) as f64;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: i64| LEFT + (t - from_ms) as f64 / span * plot_w;
    let y = |v: f64| TOP + plot_h - (v - lo) / (hi - lo) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for tick in 0..=4 {
        let v = lo + (hi - lo) * f64::from(tick) / 4.0;
        let ty = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            ty + 4.0,
            escape(&unit.format(v))
        );
    }
    for tick in 0..=4 {
        let t = from_ms + (span * f64::from(tick) / 4.0) as i64;
        let label = format::utc(t);
        let mut clock = label.get(11..19).unwrap_or(&label).to_owned();
        // Ticks less than a second apart need the tenths to differ.
        if span < 4_000.0 {
            clock.push_str(&format!(".{}", t.rem_euclid(1000) / 100));
        }
        let anchor = match tick {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" fill="#555">{clock}</text>"##,
            x(t),
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">UTC</text>"##,
        WIDTH - RIGHT,
        HEIGHT - 6.0
    );
    let _ = writeln!(
        svg,
        r##"<polyline points="{LEFT},{TOP} {LEFT},{:.1} {:.1},{:.1}" fill="none" stroke="#333"/>"##,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h
    );
    // Each marker's label on the first row where it meets no other label
    // (an incident resolved seconds after it opened has its two marks side
    // by side), haloed in white to stay legible across a line of data.
    let mut rows: Vec<Vec<(f64, f64)>> = Vec::new();
    for marker in markers
        .iter()
        .filter(|m| (from_ms..=to_ms).contains(&m.at_ms))
    {
        let mx = x(marker.at_ms);
        let label_w = text_width(&marker.label, 11.0);
        // Labels near the right edge go on the left of their line.
        let (anchor, tx, span) = if mx + 3.0 + label_w > WIDTH - RIGHT {
            ("end", mx - 3.0, (mx - 3.0 - label_w, mx))
        } else {
            ("start", mx + 3.0, (mx, mx + 3.0 + label_w))
        };
        let row = rows
            .iter()
            .position(|taken| taken.iter().all(|&(a, b)| span.1 < a || b < span.0))
            .unwrap_or_else(|| {
                rows.push(Vec::new());
                rows.len() - 1
            });
        rows[row].push(span);
        let _ = writeln!(
            svg,
            r##"<line x1="{mx:.1}" y1="{TOP}" x2="{mx:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="#d62728" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"##,
            TOP + plot_h,
            TOP + 10.0 + 13.0 * row as f64,
            escape(&marker.label)
        );
    }
    // The legend follows the title, and wraps to a second row below it
    // when the lines are many or their names long.
    let legend_start = LEFT + text_width(title, 13.0) + 24.0;
    let mut legend_x = legend_start;
    let mut legend_y = 16.0;
    for (i, s) in series.iter().enumerate() {
        let (color, dash) = if s.trend {
            ("#d62728", r#" stroke-dasharray="6 4""#)
        } else {
            (COLORS[i % COLORS.len()], "")
        };
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline id="series-{i}" points="{}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>"#,
            points.join(" ")
        );
        let entry_w = 30.0 + text_width(&s.label, 11.0);
        if legend_x + entry_w > WIDTH - RIGHT && legend_x > legend_start {
            legend_x = legend_start;
            legend_y += 13.0;
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            legend_y - 4.0,
            legend_x + 18.0,
            legend_y - 4.0,
            legend_x + 22.0,
            escape(&s.label)
        );
        legend_x += entry_w;
    }
    svg.push_str("</svg>\n");
    svg
}

/// Where the data is drawn: left, top, right and bottom, in pixels.
#[cfg(test)]
pub(super) fn plot_area() -> (f32, f32, f32, f32) {
    (
        LEFT as f32,
        TOP as f32,
        (WIDTH - RIGHT) as f32,
        (HEIGHT - BOTTOM) as f32,
    )
}

/// How wide `text` is drawn in a sans-serif font of `size` pixels, a little
/// generously (0.62 em a character; DejaVu Sans averages about 0.55), to
/// keep labels apart without laying text out.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.62
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_markers_and_legend_inside_the_frame() {
        let series = [
            Series {
                label: "rss_bytes".into(),
                points: vec![(0, 1.0e6), (60_000, 2.0e6)],
                trend: false,
            },
            Series {
                label: "trend <fit>".into(),
                points: vec![(0, 1.0e6), (60_000, 2.0e6)],
                trend: true,
            },
        ];
        let svg = line_chart(
            "memory",
            Unit::Bytes,
            &series,
            &[Marker {
                label: "opened".into(),
                at_ms: 30_000,
            }],
            0,
            60_000,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 3, "axes and two lines");
        assert!(svg.contains("trend &lt;fit&gt;"));
        assert!(svg.contains("stroke-dasharray=\"6 4\""));
        assert!(svg.contains(">opened<"));
        assert!(svg.contains("00:00:30"), "time ticks");
        // The first point is at the left edge, the last at the right one.
        assert!(svg.contains(&format!("{LEFT:.1},")));
        assert!(svg.contains(&format!("{:.1},", WIDTH - RIGHT)));
    }

    #[test]
    fn close_marks_many_lines_and_a_long_title_keep_their_labels_apart() {
        let line = |label: &str, scale: f64| Series {
            label: label.into(),
            points: (0..=20)
                .map(|i| (i * 100, scale * f64::from(i as u8)))
                .collect(),
            trend: false,
        };
        let series: Vec<Series> = [
            "established",
            "CLOSE_WAIT",
            "TIME_WAIT",
            "SYN_SENT",
            "LISTEN",
        ]
        .iter()
        .zip(1..)
        .map(|(label, scale)| line(label, f64::from(scale)))
        .collect();
        let mark = |label: &str, at_ms| Marker {
            label: label.into(),
            at_ms,
        };
        let svg = line_chart(
            "sockets of checkout-payments-gateway-eu-west-1",
            Unit::Count,
            &series,
            &[
                mark("detector's window", 1_000),
                mark("opened", 1_100),
                mark("resolved", 1_300),
                mark("restarted", 1_950),
            ],
            0,
            2_000,
        );
        let picture = super::super::picture::Picture::of(&svg);
        assert_eq!(picture.problems(), Vec::<String>::new(), "{svg}");
        assert!(picture.data_span() > 0.99);
        assert!(
            picture.texts().contains(&"00:00:00.5"),
            "ticks half a second apart say so: {:?}",
            picture.texts()
        );
    }

    #[test]
    fn an_empty_chart_is_still_a_picture() {
        let svg = line_chart("cpu", Unit::Percent, &[], &[], 0, 1000);
        assert!(svg.contains("cpu") && svg.ends_with("</svg>\n"));
    }
}
