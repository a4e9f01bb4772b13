//! [`SpanLayer`]: the `tracing-subscriber` layer that records, per thread,
//! the spans entered, for the watchdog's stuck-poll reports.

use std::fmt::Write as _;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::MAX_TEXT;

/// A `tracing-subscriber` layer that lets meshwatch say which request a
/// stuck poll is serving: when a worker is stuck in a loop or a blocking
/// call, the incident shows the spans active on its thread, such as
/// `request{method=GET path=/checkout id=7f3a}`.
///
/// Add it to the service's subscriber (it needs a registry, as
/// `tracing_subscriber::registry()` or `fmt()` give):
///
/// ```ignore
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer())
///     .with(meshwatch_probe::SpanLayer::new())
///     .init();
/// ```
///
/// Each span's name and fields are written once, when it is created (and
/// again when a field is recorded later), into the span's extensions. On
/// enter and exit it copies at most 256 bytes into a per-thread table that
/// the watchdog reads without a lock; it allocates nothing then. Without
/// this layer nothing of it runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanLayer {
    _private: (),
}

impl SpanLayer {
    /// The layer; add it with `.with(SpanLayer::new())`.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A span's text, kept in its extensions: `name{field=value ...}`.
struct SpanText(String);

/// Writes fields as `name=value`, strings without quotes, as a person
/// reads a request line.
struct Fields<'a> {
    text: &'a mut String,
    /// Where the fields start (after `name{`); `}` closes them when any.
    any: bool,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.separate();
        let _ = write!(self.text, "{}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.separate();
        let _ = write!(self.text, "{}={value:?}", field.name());
    }
}

impl Fields<'_> {
    fn separate(&mut self) {
        self.text.push(if self.any { ' ' } else { '{' });
        self.any = true;
    }
}

impl SpanText {
    fn new(name: &str, values: impl FnOnce(&mut dyn Visit)) -> Self {
        let mut text = name.to_owned();
        let mut fields = Fields {
            text: &mut text,
            any: false,
        };
        values(&mut fields);
        if fields.any {
            text.push('}');
        }
        Self(cut(text))
    }

    /// Adds fields recorded after the span was created.
    fn record(&mut self, values: &Record<'_>) {
        let mut text = self.0.strip_suffix('}').unwrap_or(&self.0).to_owned();
        let had_fields = text.len() < self.0.len();
        let mut fields = Fields {
            text: &mut text,
            any: had_fields,
        };
        values.record(&mut fields);
        if fields.any {
            text.push('}');
        }
        self.0 = cut(text);
    }
}

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let text = SpanText::new(attrs.metadata().name(), |visitor| attrs.record(visitor));
            span.extensions_mut().insert(text);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(text) = span.extensions_mut().get_mut::<SpanText>()
        {
            text.record(values);
            super::update(id.into_u64(), text.0.as_bytes());
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        // Every enter pushes, even of a span this layer did not see made,
        // so that exits always pop their own.
        let span = ctx.span(id);
        let extensions = span.as_ref().map(|s| s.extensions());
        let text = extensions
            .as_ref()
            .and_then(|e| e.get::<SpanText>())
            .map_or("", |t| t.0.as_str());
        super::enter(id.into_u64(), text.as_bytes());
    }

    fn on_exit(&self, _id: &Id, _ctx: Context<'_, S>) {
        super::exit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn the_spans_a_thread_is_in_read_as_their_name_and_fields() {
        let subscriber = tracing_subscriber::registry().with(SpanLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(
                "request",
                method = "GET",
                path = "/checkout",
                id = tracing::field::Empty
            );
            let _request = request.enter();
            request.record("id", 7);
            let _quiet = tracing::info_span!("price").entered();
            let tid = crate::identity::current_tid();
            assert_eq!(
                super::super::active_on(tid),
                ["request{method=GET path=/checkout id=7}", "price"]
            );
        });
        assert!(super::super::active_on(crate::identity::current_tid()).is_empty());
    }

    #[test]
    fn a_long_text_is_cut_at_a_character() {
        let cut = cut("é".repeat(MAX_TEXT));
        assert!(cut.len() <= MAX_TEXT && cut.ends_with('…'), "{cut}");
        assert_eq!(super::cut("short".to_owned()), "short");
    }
}
