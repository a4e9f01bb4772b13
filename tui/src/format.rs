//! Human-readable figures: sizes, durations, percentages.

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `230.0 MiB`, `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in the two largest units: `42s`, `5m03s`, `2h07m`, `3d04h`.
pub fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A percentage with one decimal, or `-` when unknown.
pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}%"))
}

/// An optional count, or `-` when unknown.
pub fn count<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(230 * 1024 * 1024), "230.0 MiB");
    }

    #[test]
    fn formats_uptimes() {
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(303), "5m03s");
        assert_eq!(uptime(2 * 3600 + 7 * 60), "2h07m");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600), "3d04h");
    }

    #[test]
    fn unknowns_are_dashes() {
        assert_eq!(percent(None), "-");
        assert_eq!(percent(Some(12.345)), "12.3%");
        assert_eq!(count::<u64>(None), "-");
    }
}
