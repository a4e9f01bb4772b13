//! The connection to the collector, as the person at the screen sees it.
//!
//! The fetcher reports each round's outcome; this state machine turns them
//! into one status line. The last data stays on screen while disconnected,
//! marked as such, so an outage does not blank the evidence.

use std::time::Duration;

/// Whether the collector answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    /// The last round of requests succeeded.
    Connected,
    /// The last round failed; the fetcher tries again after a backoff.
    Disconnected {
        /// What went wrong, in one line.
        error: String,
        /// When the next attempt is due (ms since the Unix epoch).
        retry_at_ms: i64,
        /// Failed rounds in a row.
        attempts: u32,
    },
}

impl Connection {
    /// A successful round.
    pub fn succeeded(&mut self) {
        *self = Connection::Connected;
    }

    /// A failed round; the fetcher retries in `retry_in`.
    pub fn failed(&mut self, error: String, retry_in: Duration, now_ms: i64) {
        let attempts = match self {
            Connection::Disconnected { attempts, .. } => *attempts + 1,
            _ => 1,
        };
        *self = Connection::Disconnected {
            error,
            retry_at_ms: now_ms + i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
            attempts,
        };
    }

    /// The status line: `connected`, `connecting…` or
    /// `disconnected, retrying in 2s: <why>`.
    pub fn status(&self, now_ms: i64) -> String {
        match self {
            Connection::Connecting => "connecting…".to_owned(),
            Connection::Connected => "connected".to_owned(),
            Connection::Disconnected {
                error, retry_at_ms, ..
            } => {
                let secs = ((retry_at_ms - now_ms).max(0) + 999) / 1000;
                format!("disconnected, retrying in {secs}s: {error}")
            }
        }
    }
}

/// Exponential backoff between failed rounds: 0.5 s doubling to 5 s, short
/// enough that the screen comes back soon after the collector does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);

    /// The wait before the next attempt, after one more failure.
    pub fn next(&mut self) -> Duration {
        let wait = Self::FIRST.saturating_mul(1 << self.failures.min(8));
        self.failures += 1;
        wait.min(Self::MAX)
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_disconnected_with_the_retry_and_recovers() {
        let mut conn = Connection::Connecting;
        assert_eq!(conn.status(0), "connecting…");
        conn.failed("refused".into(), Duration::from_millis(1500), 10_000);
        conn.failed("refused".into(), Duration::from_millis(1500), 10_000);
        assert_eq!(conn.status(10_000), "disconnected, retrying in 2s: refused");
        assert!(matches!(conn, Connection::Disconnected { attempts: 2, .. }));
        conn.succeeded();
        assert_eq!(conn.status(10_000), "connected");
    }

    #[test]
    fn backs_off_exponentially_to_a_cap() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..6).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next().as_millis(), 500);
    }
}
