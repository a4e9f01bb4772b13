//! The incidents: open ones first (most severe, then newest), then the
//! recently resolved ones.

use meshwatch_api::Incident;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};

use super::cursor;
use super::fetch::Data;
use super::input::Intent;
use super::theme::Theme;
use crate::format;
use crate::model::{kind_name, severity_name, severity_rank};

/// The incident list's own state: its selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentList {
    selected: Option<String>,
}

/// Open incidents first, most severe then newest; then resolved, newest first.
pub fn ordered(data: &Data) -> Vec<&Incident> {
    let mut list: Vec<&Incident> = data.incidents.iter().collect();
    list.sort_by_key(|i| {
        (
            !i.is_open(),
            std::cmp::Reverse(severity_rank(i.severity)),
            std::cmp::Reverse(i.resolved_at_ms.unwrap_or(i.opened_at_ms)),
        )
    });
    list
}

impl IncidentList {
    /// Handles an intent; returns the incident to open, if any.
    pub fn handle(&mut self, intent: Intent, data: &Data) -> Option<String> {
        let list = ordered(data);
        let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
        if intent == Intent::Open {
            return cursor::current(&ids, self.selected.as_deref()).map(str::to_owned);
        }
        if let Some(id) = cursor::moved(&ids, self.selected.as_deref(), intent) {
            self.selected = Some(id.to_owned());
        }
        None
    }

    /// Keys shown in the footer.
    pub fn keys(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("↑↓", "move"),
            ("⏎", "evidence"),
            ("Tab", "mesh"),
            ("?", "help"),
            ("q", "quit"),
        ]
    }

    /// Draws the list.
    pub fn render(&self, frame: &mut Frame, area: Rect, data: &Data, now_ms: i64, theme: Theme) {
        let list = ordered(data);
        let open = list.iter().filter(|i| i.is_open()).count();
        let header =
            Row::new(["SEVERITY", "STATE", "KIND", "SERVICE", "SINCE", "SUMMARY"].map(Cell::from))
                .style(theme.heading());
        let rows = list.iter().map(|incident| {
            let state = match incident.resolved_at_ms {
                None => "open".to_owned(),
                Some(_) => "resolved".to_owned(),
            };
            let style = if incident.is_open() {
                theme.urgency(severity_rank(incident.severity))
            } else {
                theme.dim()
            };
            Row::new([
                severity_name(incident.severity).to_owned(),
                state,
                kind_name(incident).to_owned(),
                incident.service.clone(),
                format::relative(now_ms, incident.opened_at_ms),
                incident.summary.clone(),
            ])
            .style(style)
        });
        let title = Line::from(vec![Span::styled(
            format!(" incidents: {open} open, {} resolved ", list.len() - open),
            theme.heading(),
        )]);
        let widths = [
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(14),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Fill(1),
        ];
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::new().borders(Borders::TOP).title(title))
            .row_highlight_style(theme.selected());
        let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
        let mut state =
            TableState::default().with_selected(cursor::index(&ids, self.selected.as_deref()));
        frame.render_stateful_widget(table, area, &mut state);
        if list.is_empty() {
            let hint = ratatui::widgets::Paragraph::new(Span::styled(
                "  no incidents: the detectors have found nothing wrong",
                theme.dim(),
            ));
            let [_, hint_area] =
                ratatui::layout::Layout::vertical([Constraint::Length(2), Constraint::Length(1)])
                    .areas(area);
            frame.render_widget(hint, hint_area);
        }
    }
}
