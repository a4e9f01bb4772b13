//! Any evidence as fields and tables, formatted by the suffix of each
//! figure's name (`_bytes`, `_ms`, `_at_ms`, `_percent`, `_per_s`, …).

use serde_json::Value;

use crate::format;

/// One figure of the evidence, formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The JSON key, dotted for nested objects; or, from a typed view, a
    /// label a person reads.
    pub name: String,
    /// The value, formatted by the suffix of its name, or with its unit.
    pub value: String,
}

impl Field {
    /// A field labelled `name`.
    pub fn new(name: &str, value: String) -> Self {
        Self {
            name: name.to_owned(),
            value,
        }
    }
}

/// A piece of generically shown evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// Scalar figures.
    Fields(Vec<Field>),
    /// An array of objects, one row each; columns are the union of their keys.
    Table {
        /// The array's key.
        title: String,
        /// Column names.
        columns: Vec<String>,
        /// Formatted cells, one `Vec` per object.
        rows: Vec<Vec<String>>,
    },
}

/// Formats `value` by the suffix of `key`: sizes, durations, times, rates.
fn humanize(key: &str, value: &Value, now_ms: i64) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let v = n.as_f64().unwrap_or(0.0);
            humanize_number(key, v, now_ms).unwrap_or_else(|| n.to_string())
        }
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => items
            .iter()
            .map(|item| humanize(key, item, now_ms))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn humanize_number(key: &str, v: f64, now_ms: i64) -> Option<String> {
    // The innermost name decides: `close_wait_trend.per_minute` is a rate.
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let rate = leaf
        .strip_prefix("per_")
        .map(|per| ("", per))
        .or_else(|| leaf.split_once("_per_"));
    if let Some((what, per)) = rate {
        let per = match per {
            "s" | "sec" | "second" => "s",
            "min" | "minute" => "min",
            "h" | "hour" => "h",
            other => other,
        };
        let amount = if what.ends_with("bytes") {
            format::bytes_short(v)
        } else {
            format!("{v:.1}")
        };
        return Some(format!("{amount}/{per}"));
    }
    if leaf.ends_with("_at_ms") {
        return Some(format::relative(now_ms, v as i64));
    }
    if leaf.ends_with("_ms") {
        return Some(format::duration_ms(v));
    }
    if leaf.ends_with("_seconds") || leaf.ends_with("_s") {
        return Some(format::duration_ms(v * 1000.0));
    }
    if key.ends_with("bytes") {
        return Some(format::bytes(v.max(0.0) as u64));
    }
    if key.ends_with("percent") {
        return Some(format!("{v:.1}%"));
    }
    (v.fract() != 0.0).then(|| format!("{v:.3}"))
}

/// Shows any JSON: scalar fields (nested objects dotted), arrays of
/// objects as tables. Used for the evidence of kinds without a view of
/// their own, serialized from their type (so the names are the type's
/// fields), and for what a newer collector sends that this version does
/// not know.
pub fn generic(evidence: &Value, now_ms: i64) -> Vec<Section> {
    let mut fields = Vec::new();
    let mut tables = Vec::new();
    match evidence {
        Value::Object(map) => {
            for (key, value) in map {
                collect(key, value, now_ms, &mut fields, &mut tables);
            }
        }
        Value::Null => {}
        other => fields.push(Field {
            name: "evidence".to_owned(),
            value: other.to_string(),
        }),
    }
    let mut sections = Vec::new();
    if !fields.is_empty() {
        sections.push(Section::Fields(fields));
    }
    sections.extend(tables);
    sections
}

fn collect(
    key: &str,
    value: &Value,
    now_ms: i64,
    fields: &mut Vec<Field>,
    tables: &mut Vec<Section>,
) {
    match value {
        Value::Object(map) => {
            for (sub, inner) in map {
                collect(&format!("{key}.{sub}"), inner, now_ms, fields, tables);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            tables.push(table(key, items, now_ms));
        }
        Value::Null => {}
        scalar => fields.push(Field {
            name: key.to_owned(),
            value: humanize(key, scalar, now_ms),
        }),
    }
}

fn table(title: &str, items: &[Value], now_ms: i64) -> Section {
    let mut columns: Vec<String> = Vec::new();
    for item in items.iter().filter_map(Value::as_object) {
        for key in item.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let rows = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|column| humanize(column, item.get(column).unwrap_or(&Value::Null), now_ms))
                .collect()
        })
        .collect();
    Section::Table {
        title: title.to_owned(),
        columns,
        rows,
    }
}
