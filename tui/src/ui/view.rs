//! The whole screen as a pure function of [`App`]: the header (tabs and the
//! connection's state), the screen in front, the footer of keys, and the
//! help over everything when asked for.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::app::{App, Detail, Tab};
use super::conn::Connection;
use super::input::KEYS;
use super::theme::Theme;
use super::widgets::key_hints;

/// Draws `app` on `frame`.
pub fn render(frame: &mut Frame, app: &App, theme: Theme) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(frame, head, app, theme);
    let (data, now) = (&app.data, app.now_ms);
    match (app.details.last(), app.tab) {
        (Some(Detail::Service(detail)), _) => {
            let profile = app.profile_of(&detail.instance_id);
            detail.render(frame, body, data, profile, now, theme);
        }
        (Some(Detail::Incident(detail)), _) => detail.render(frame, body, data, now, theme),
        (None, Tab::Mesh) => app.mesh.render(frame, body, data, theme),
        (None, Tab::Incidents) => app.incidents.render(frame, body, data, now, theme),
    }
    match &app.notice {
        Some(notice) => frame.render_widget(
            Paragraph::new(Span::styled(format!(" {notice}"), theme.urgency(2))),
            foot,
        ),
        None => frame.render_widget(Paragraph::new(key_hints(app.keys(), theme)), foot),
    }
    if app.help {
        render_help(frame, body, theme);
    }
}

fn render_header(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let open = app.data.incidents.iter().filter(|i| i.is_open()).count();
    let tab = |label: String, active: bool| {
        if active {
            Span::styled(label, theme.selected())
        } else {
            Span::raw(label)
        }
    };
    let tabs = Line::from(vec![
        Span::styled(" meshwatch ", theme.key()),
        tab(" 1 mesh ".to_owned(), app.tab == Tab::Mesh),
        Span::raw(" "),
        tab(format!(" 2 incidents ({open}) "), app.tab == Tab::Incidents),
    ]);
    let width = u16::try_from(tabs.width()).unwrap_or(u16::MAX);
    let [left, right] =
        Layout::horizontal([Constraint::Length(width), Constraint::Fill(1)]).areas(area);
    frame.render_widget(Paragraph::new(tabs), left);
    let status = match (&app.conn, app.data.unreachable.as_slice()) {
        (Connection::Connected, []) => Span::styled(
            format!("{} · {} ", app.collector, app.conn.status(app.now_ms)),
            theme.ok(),
        ),
        // Some hosts answered: their figures are live, the rest is named.
        (Connection::Connected, unreachable) => Span::styled(
            format!(
                "{} · unreachable: {} ",
                app.collector,
                unreachable
                    .iter()
                    .map(|u| u.collector.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            theme.alert(),
        ),
        (other, _) => Span::styled(format!(" {} ", other.status(app.now_ms)), theme.alert()),
    };
    frame.render_widget(Paragraph::new(Line::from(status).right_aligned()), right);
}

fn render_help(frame: &mut Frame, area: Rect, theme: Theme) {
    let key_width = KEYS
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let action_width = KEYS
        .iter()
        .map(|(_, a)| a.chars().count())
        .max()
        .unwrap_or(0);
    let width = u16::try_from(key_width + action_width + 6).unwrap_or(u16::MAX);
    let [popup] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::vertical([Constraint::Length(KEYS.len() as u16 + 4)])
        .flex(Flex::Center)
        .areas(popup);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, action)| {
            Line::from(vec![
                Span::styled(format!(" {key:<key_width$}  "), theme.key()),
                Span::raw(*action),
            ])
        })
        .collect();
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        " NO_COLOR=1 for no colour; logs: --log-file",
        theme.dim(),
    )));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" keys ", theme.heading()))),
        popup,
    );
}
