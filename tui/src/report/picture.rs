//! The report's charts checked as pictures, the way a person would look at
//! them: laid out with a real font, where every label lands and whether two
//! collide or run off the edge, and rasterized, whether each line of data
//! shows and how much of the plot it fills.
//!
//! The text must be laid out with the font a viewer uses for `sans-serif`;
//! the checks load DejaVu Sans (`fonts-dejavu-core`, which `.ci/run`
//! installs), the usual one on Linux.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg::{self, Group, Node, Paint, Rect, Tree};

use super::svg;

/// The fonts the text is laid out with.
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
];

/// Slack for anti-aliased glyph edges, in pixels.
const SLACK: f32 = 0.5;

/// A chart as laid out: its size, its labels' boxes, its data lines.
pub struct Picture {
    width: f32,
    height: f32,
    labels: Vec<Label>,
    lines: Vec<DataLine>,
    pixels: Pixmap,
}

struct Label {
    text: String,
    bounds: Rect,
}

struct DataLine {
    color: (u8, u8, u8),
    bounds: Rect,
}

impl Picture {
    /// Lays `svg` out and draws it.
    ///
    /// # Panics
    ///
    /// When the SVG does not parse, the fonts are missing, or a text was
    /// not laid out.
    pub fn of(source: &str) -> Self {
        let options = usvg::Options {
            fontdb: Arc::clone(fonts()),
            ..usvg::Options::default()
        };
        let tree = Tree::from_str(source, &options).expect("the chart parses as SVG");
        let mut labels = Vec::new();
        let mut lines = Vec::new();
        collect(tree.root(), &mut labels, &mut lines);
        assert_eq!(
            labels.len(),
            source.matches("<text").count(),
            "every text is laid out"
        );
        let size = tree.size();
        let mut pixels = Pixmap::new(size.width().ceil() as u32, size.height().ceil() as u32)
            .expect("a chart has a size");
        resvg::render(&tree, Transform::identity(), &mut pixels.as_mut());
        Self {
            width: size.width(),
            height: size.height(),
            labels,
            lines,
            pixels,
        }
    }

    /// What a person would find wrong with the picture, one sentence each;
    /// empty when nothing.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for label in &self.labels {
            let b = label.bounds;
            if b.left() < -SLACK
                || b.top() < -SLACK
                || b.right() > self.width + SLACK
                || b.bottom() > self.height + SLACK
            {
                problems.push(format!("{:?} runs off the picture", label.text));
            }
        }
        for (i, a) in self.labels.iter().enumerate() {
            for b in &self.labels[i + 1..] {
                if overlap(a.bounds, b.bounds) {
                    problems.push(format!("{:?} and {:?} overlap", a.text, b.text));
                }
                if a.text == b.text {
                    problems.push(format!("{:?} is written twice", a.text));
                }
            }
        }
        let plot = svg::plot_area();
        for line in &self.lines {
            let b = line.bounds;
            if b.left() < plot.0 - SLACK
                || b.right() > plot.2 + SLACK
                || b.top() < plot.1 - SLACK
                || b.bottom() > plot.3 + SLACK
            {
                problems.push(format!("a line of {:?} leaves the plot", line.color));
            }
            if self.pixels_of(line.color) == 0 {
                problems.push(format!("the line of {:?} does not show", line.color));
            }
        }
        problems
    }

    /// How much of the plot's width the data spans, from 0 to 1.
    pub fn data_span(&self) -> f32 {
        let (left, _, right, _) = svg::plot_area();
        let from = self
            .lines
            .iter()
            .map(|l| l.bounds.left())
            .fold(right, f32::min);
        let to = self
            .lines
            .iter()
            .map(|l| l.bounds.right())
            .fold(left, f32::max);
        ((to - from) / (right - left)).max(0.0)
    }

    /// The labels, for checks on what the picture says.
    pub fn texts(&self) -> Vec<&str> {
        self.labels.iter().map(|l| l.text.as_str()).collect()
    }

    /// How many pixels show `color` (within a small tolerance for blending).
    fn pixels_of(&self, (r, g, b): (u8, u8, u8)) -> usize {
        let close = |a: u8, b: u8| a.abs_diff(b) <= 8;
        self.pixels
            .pixels()
            .iter()
            .filter(|p| {
                let p = p.demultiply();
                p.alpha() > 200 && close(p.red(), r) && close(p.green(), g) && close(p.blue(), b)
            })
            .count()
    }
}

/// The fonts, read once for every picture of the test run.
fn fonts() -> &'static Arc<usvg::fontdb::Database> {
    static FONT_DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONT_DB.get_or_init(|| {
        let mut fonts = usvg::fontdb::Database::new();
        for path in FONTS {
            let data = std::fs::read(path).unwrap_or_else(|err| {
                panic!("{path}: {err}; install fonts-dejavu-core (./.ci/run does)")
            });
            fonts.load_font_data(data);
        }
        fonts.set_sans_serif_family("DejaVu Sans");
        Arc::new(fonts)
    })
}

fn overlap(a: Rect, b: Rect) -> bool {
    a.left() + SLACK < b.right()
        && b.left() + SLACK < a.right()
        && a.top() + SLACK < b.bottom()
        && b.top() + SLACK < a.bottom()
}

/// Gathers every text with the box of its glyphs, and every data line (the
/// chart names each `series-N`).
fn collect(group: &Group, labels: &mut Vec<Label>, lines: &mut Vec<DataLine>) {
    for node in group.children() {
        match node {
            Node::Group(inner) => collect(inner, labels, lines),
            Node::Text(text) => labels.push(Label {
                text: text
                    .chunks()
                    .iter()
                    .map(|chunk| chunk.text())
                    .collect::<String>(),
                bounds: text.flattened().abs_bounding_box(),
            }),
            Node::Path(path) => {
                let Some(stroke) = path.stroke() else {
                    continue;
                };
                let Paint::Color(color) = stroke.paint() else {
                    continue;
                };
                if path.id().starts_with("series-") {
                    lines.push(DataLine {
                        color: (color.red, color.green, color.blue),
                        bounds: path.abs_bounding_box(),
                    });
                }
            }
            Node::Image(_) => {}
        }
    }
}
