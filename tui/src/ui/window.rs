//! The time window of history charts: how much history, ending when.

use super::input::Intent;
use crate::client::Range;
use crate::format;

/// The narrowest window: a minute of one-second points.
const MIN_SPAN_MS: i64 = 60_000;
/// The widest window: an hour.
const MAX_SPAN_MS: i64 = 3_600_000;

/// The footer of a detail with a time window: Enter (opens what the detail
/// links to) first, so a detail without a link shows `&DETAIL_KEYS[1..]`.
pub const DETAIL_KEYS: &[(&str, &str)] = &[
    ("⏎", "incident"),
    ("↑↓", "scroll"),
    ("+-", "zoom"),
    ("[]", "pan"),
    ("L", "live"),
    ("f", "fold"),
    ("Esc", "back"),
    ("?", "help"),
];

/// A service detail's keys: a detail's, and tokio-console.
pub const SERVICE_KEYS: &[(&str, &str)] = &[
    ("⏎", "incident"),
    ("↑↓", "scroll"),
    ("+-", "zoom"),
    ("[]", "pan"),
    ("L", "live"),
    ("c", "console"),
    ("p", "profile"),
    ("Esc", "back"),
    ("?", "help"),
];

/// A span of history ending now (live) or at a fixed instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// How much history, in milliseconds.
    pub span_ms: i64,
    /// The last instant shown; `None` follows now.
    pub end_ms: Option<i64>,
}

impl Window {
    /// The last `span_ms` up to now, following now.
    pub const fn live(span_ms: i64) -> Self {
        Self {
            span_ms,
            end_ms: None,
        }
    }

    /// The absolute range the window covers at `now_ms`.
    pub fn range(self, now_ms: i64) -> Range {
        let to_ms = self.end_ms.unwrap_or(now_ms);
        Range {
            from_ms: to_ms - self.span_ms,
            to_ms,
        }
    }

    /// Half the span, same end.
    pub fn zoom_in(self) -> Self {
        Self {
            span_ms: (self.span_ms / 2).max(MIN_SPAN_MS),
            ..self
        }
    }

    /// Twice the span, same end.
    pub fn zoom_out(self) -> Self {
        Self {
            span_ms: (self.span_ms * 2).min(MAX_SPAN_MS),
            ..self
        }
    }

    /// Half a span further into the past; leaves live.
    pub fn pan_back(self, now_ms: i64) -> Self {
        let end = self.end_ms.unwrap_or(now_ms);
        Self {
            end_ms: Some(end - self.span_ms / 2),
            ..self
        }
    }

    /// Half a span towards now; back to live on reaching it.
    pub fn pan_forward(self, now_ms: i64) -> Self {
        let end = self.end_ms.map(|end| end + self.span_ms / 2);
        Self {
            end_ms: end.filter(|end| *end < now_ms),
            ..self
        }
    }

    /// The same span, following now again.
    pub fn live_again(self) -> Self {
        Self::live(self.span_ms)
    }

    /// The window after `intent`, when it is one of the window's (zoom,
    /// pan, live); `None` for any other intent.
    pub fn steer(self, intent: Intent, now_ms: i64) -> Option<Self> {
        Some(match intent {
            Intent::ZoomIn => self.zoom_in(),
            Intent::ZoomOut => self.zoom_out(),
            Intent::PanBack => self.pan_back(now_ms),
            Intent::PanForward => self.pan_forward(now_ms),
            Intent::Live => self.live_again(),
            _ => return None,
        })
    }

    /// A label for the window: `last 5m00s (live)` or `5m00s ending 2m00s ago`.
    pub fn describe(self, now_ms: i64) -> String {
        let span = format::uptime((self.span_ms / 1000) as u64);
        match self.end_ms {
            None => format!("last {span}, live"),
            Some(end) => format!("{span} ending {}", format::relative(now_ms, end)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zooms_within_bounds_and_pans_back_to_live() {
        let live = Window::live(300_000);
        assert_eq!(live.range(1_000_000).from_ms, 700_000);
        assert_eq!(live.zoom_in().span_ms, 150_000);
        assert_eq!(Window::live(MIN_SPAN_MS).zoom_in().span_ms, MIN_SPAN_MS);
        assert_eq!(Window::live(MAX_SPAN_MS).zoom_out().span_ms, MAX_SPAN_MS);
        let past = live.pan_back(1_000_000);
        assert_eq!(past.end_ms, Some(850_000));
        assert_eq!(past.describe(1_000_000), "5m00s ending 2m30s ago");
        assert_eq!(
            past.pan_forward(1_000_000).end_ms,
            None,
            "reaching now is live"
        );
        assert_eq!(past.pan_back(1_000_000).pan_forward(1_000_000), past);
        assert_eq!(past.live_again(), live);
        assert_eq!(live.describe(0), "last 5m00s, live");
    }
}
