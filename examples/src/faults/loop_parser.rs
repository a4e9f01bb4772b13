//! Fault `loop`: a record parser whose cursor does not advance past a
//! malformed field, so one bad input spins a tokio worker at 100 % CPU.
//!
//! `GET /fault/loop[?secs=N]` spawns a task that parses a batch containing
//! a malformed field. The loop's only exit is the parse deadline (`secs`),
//! which a real service might have added as a safety net; without it the
//! task never returns.

use std::time::Instant;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use tracing::Instrument as _;

/// A batch as a client might send it: the third field lacks its `=`.
const BATCH: &str = "id=7;name=widget;colour;size=9;";

pub(super) fn routes() -> Router {
    Router::new().route("/fault/loop", get(trigger).post(trigger))
}

async fn trigger(Query(params): Query<super::Duration>) -> String {
    let deadline = params.get().map(|d| Instant::now() + d);
    tokio::spawn(
        async move {
            let fields = tracing::info_span!("parse_batch", bytes = BATCH.len())
                .in_scope(|| parse_records(BATCH, deadline));
            tracing::info!(fields = fields.len(), "loop fault: parser gave up");
        }
        .in_current_span(),
    );
    "loop fault started\n".to_owned()
}

/// Parses `key=value;` fields. The bug: when a field is malformed,
/// `next_field` returns `None` and the cursor stays where it was, so the
/// loop tries the same field again, forever (or until `deadline`).
#[inline(never)]
pub fn parse_records(input: &str, deadline: Option<Instant>) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut cursor = 0;
    while cursor < input.len() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match next_field(&input[cursor..]) {
            Some((key, value, used)) => {
                fields.push((key.to_owned(), value.to_owned()));
                cursor += used;
            }
            // Should skip to the next `;`; does not.
            None => continue,
        }
    }
    fields
}

/// One `key=value;` field at the start of `rest`, and the bytes it used.
#[inline(never)]
fn next_field(rest: &str) -> Option<(&str, &str, usize)> {
    let end = rest.find(';')?;
    let (key, value) = rest[..end].split_once('=')?;
    Some((key, value, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_well_formed_fields() {
        let fields = parse_records("a=1;b=2;", None);
        assert_eq!(fields, [("a".into(), "1".into()), ("b".into(), "2".into())]);
    }

    #[test]
    fn spins_on_a_malformed_field_until_the_deadline() {
        let started = Instant::now();
        let fields = parse_records(BATCH, Some(started + Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(fields.len(), 2, "stuck at the third field");
    }
}
