//! Keys to intents. The only module that knows about key codes: the rest of
//! the TUI handles [`Intent`]s, so the key map is tested on its own and the
//! views are driven by intents in their tests.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What the person asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Leave meshwatch.
    Quit,
    /// Close the open detail (or help); at the top, leave.
    Back,
    /// Move the selection or scroll.
    Up,
    /// Move the selection or scroll.
    Down,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
    /// To the first row.
    Top,
    /// To the last row.
    Bottom,
    /// Open the selected row's detail.
    Open,
    /// Switch between the mesh and the incidents.
    NextTab,
    /// Show the mesh.
    ShowMesh,
    /// Show the incidents.
    ShowIncidents,
    /// Show or hide the help.
    Help,
    /// Open tokio-console on the instance shown.
    TokioConsole,
    /// Take a CPU profile of the instance shown.
    Profile,
    /// Show stacks whole, or fold their library frames again.
    Fold,
    /// Start typing a filter.
    StartFilter,
    /// A character of the filter.
    FilterChar(char),
    /// Delete the filter's last character.
    FilterBackspace,
    /// Keep the filter and stop typing.
    FilterDone,
    /// Clear the filter and stop typing.
    FilterCancel,
    /// Sort by the next column.
    NextSort,
    /// Reverse the sort order.
    ReverseSort,
    /// Show less history, in more detail.
    ZoomIn,
    /// Show more history.
    ZoomOut,
    /// Move the window into the past.
    PanBack,
    /// Move the window towards now.
    PanForward,
    /// Follow now again.
    Live,
}

/// How keys are read at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keys are commands.
    Normal,
    /// Keys are typed into the filter.
    Filtering,
}

/// The intent of `key` in `mode`, if it has one. Key releases and repeats
/// of modifiers are ignored.
pub fn intent(key: KeyEvent, mode: Mode) -> Option<Intent> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') => Some(Intent::Quit),
            KeyCode::Char('d') => Some(Intent::PageDown),
            KeyCode::Char('u') => Some(Intent::PageUp),
            _ => None,
        };
    }
    if mode == Mode::Filtering {
        return match key.code {
            KeyCode::Enter => Some(Intent::FilterDone),
            KeyCode::Esc => Some(Intent::FilterCancel),
            KeyCode::Backspace => Some(Intent::FilterBackspace),
            KeyCode::Up => Some(Intent::Up),
            KeyCode::Down => Some(Intent::Down),
            KeyCode::Char(c) => Some(Intent::FilterChar(c)),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') => Intent::Quit,
        KeyCode::Esc | KeyCode::Left | KeyCode::Char('h') | KeyCode::Backspace => Intent::Back,
        KeyCode::Up | KeyCode::Char('k') => Intent::Up,
        KeyCode::Down | KeyCode::Char('j') => Intent::Down,
        KeyCode::PageUp => Intent::PageUp,
        KeyCode::PageDown | KeyCode::Char(' ') => Intent::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Intent::Top,
        KeyCode::End | KeyCode::Char('G') => Intent::Bottom,
        KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => Intent::Open,
        KeyCode::Tab | KeyCode::BackTab => Intent::NextTab,
        KeyCode::Char('1') | KeyCode::Char('m') => Intent::ShowMesh,
        KeyCode::Char('2') | KeyCode::Char('i') => Intent::ShowIncidents,
        KeyCode::Char('?') => Intent::Help,
        KeyCode::Char('/') => Intent::StartFilter,
        KeyCode::Char('s') => Intent::NextSort,
        KeyCode::Char('S') => Intent::ReverseSort,
        KeyCode::Char('+') | KeyCode::Char('=') => Intent::ZoomIn,
        KeyCode::Char('-') => Intent::ZoomOut,
        KeyCode::Char('[') => Intent::PanBack,
        KeyCode::Char(']') => Intent::PanForward,
        KeyCode::Char('L') => Intent::Live,
        KeyCode::Char('c') => Intent::TokioConsole,
        KeyCode::Char('p') => Intent::Profile,
        KeyCode::Char('f') => Intent::Fold,
        _ => return None,
    })
}

/// The help screen's table of keys: keys, and what they do.
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  k j", "move the selection, scroll"),
    ("PgUp PgDn ^u ^d", "a page up or down"),
    ("g G  Home End", "first, last row"),
    ("Enter → l", "open the selected service or incident"),
    ("Esc ← h", "back; at the top, quit"),
    ("Tab 1 2  m i", "mesh, incidents"),
    ("/", "filter the mesh (Enter keeps, Esc clears)"),
    ("s S", "sort by the next column, reverse"),
    ("+ -", "zoom the history in, out"),
    ("[ ]", "move the history back, forward"),
    ("L", "back to live"),
    ("c", "tokio-console on the service shown"),
    ("p", "CPU profile of the service shown (5 s)"),
    ("f", "show a stack's library frames, or fold them"),
    ("?", "this help"),
    ("q ^c", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn arrows_and_vim_keys_move() {
        for (code, want) in [
            (KeyCode::Up, Intent::Up),
            (KeyCode::Char('k'), Intent::Up),
            (KeyCode::Down, Intent::Down),
            (KeyCode::Char('j'), Intent::Down),
            (KeyCode::Enter, Intent::Open),
            (KeyCode::Char('l'), Intent::Open),
            (KeyCode::Esc, Intent::Back),
            (KeyCode::Char('h'), Intent::Back),
            (KeyCode::Char('q'), Intent::Quit),
            (KeyCode::Char('?'), Intent::Help),
        ] {
            assert_eq!(intent(key(code), Mode::Normal), Some(want), "{code:?}");
        }
        assert_eq!(intent(key(KeyCode::Char('x')), Mode::Normal), None);
        assert_eq!(
            intent(
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
                Mode::Filtering
            ),
            Some(Intent::Quit)
        );
    }

    #[test]
    fn the_filter_takes_every_character() {
        assert_eq!(
            intent(key(KeyCode::Char('q')), Mode::Filtering),
            Some(Intent::FilterChar('q'))
        );
        assert_eq!(
            intent(key(KeyCode::Esc), Mode::Filtering),
            Some(Intent::FilterCancel)
        );
        assert_eq!(
            intent(key(KeyCode::Enter), Mode::Filtering),
            Some(Intent::FilterDone)
        );
    }
}
