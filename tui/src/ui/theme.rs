//! Styles, in colour or, when `NO_COLOR` is set, in bold, reverse and
//! underline only, so every distinction stays visible without colour.

use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;

/// The styles of every view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to a non-empty value (no-color.org).
    pub fn from_env() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self { color: !no_color }
    }

    /// With or without colour, for tests.
    #[cfg(test)]
    pub const fn new(color: bool) -> Self {
        Self { color }
    }

    fn pick(self, colored: Style, plain: Style) -> Style {
        if self.color { colored } else { plain }
    }

    /// By urgency (see `Instance::urgency`): 3 critical, 2 warning, 1 down.
    pub fn urgency(self, urgency: u8) -> Style {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        match urgency {
            3 => self.pick(bold.fg(Color::Red), bold),
            2 => self.pick(bold.fg(Color::Yellow), bold),
            1 => self.pick(
                Style::new().fg(Color::DarkGray),
                Style::new().add_modifier(Modifier::DIM),
            ),
            _ => Style::new(),
        }
    }

    /// Good news: connected, no incidents.
    pub fn ok(self) -> Style {
        self.pick(Style::new().fg(Color::Green), Style::new())
    }

    /// Bad news that is not an incident: disconnected.
    pub fn alert(self) -> Style {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        self.pick(
            bold.fg(Color::White).bg(Color::Red),
            bold.add_modifier(Modifier::REVERSED),
        )
    }

    /// Secondary text: file locations, units, hints.
    pub fn dim(self) -> Style {
        self.pick(Style::new().fg(Color::DarkGray), Style::new())
    }

    /// The selected row.
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// The service's own frames in a stack: what a person reads first.
    pub fn own(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// The hot frame of a stack.
    pub fn hot(self) -> Style {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        self.pick(
            bold.fg(Color::Black).bg(Color::LightRed),
            bold.add_modifier(Modifier::REVERSED),
        )
    }

    /// Table headers and section titles.
    pub fn heading(self) -> Style {
        self.pick(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
        )
    }

    /// The active tab and keys in the footer.
    pub fn key(self) -> Style {
        self.pick(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }

    /// The `index`th line of a chart.
    pub fn line(self, index: usize) -> Style {
        const COLORS: [Color; 4] = [Color::Cyan, Color::Magenta, Color::Yellow, Color::Green];
        self.pick(Style::new().fg(COLORS[index % COLORS.len()]), Style::new())
    }

    /// The marker of the `index`th line: without colour, lines differ by marker.
    pub fn marker(self, index: usize) -> Marker {
        if self.color || index == 0 {
            Marker::Braille
        } else {
            Marker::Dot
        }
    }

    /// A fitted trend line.
    pub fn fit(self) -> Style {
        self.pick(
            Style::new().fg(Color::Red),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }
}
