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

/// A change in size per some time, signed, for growth figures:
/// `+571.3 MiB`, `-2.0 KiB`, `0 B`; the caller adds `/h` or `/s`.
pub fn bytes_change(n: f64) -> String {
    let sign = if n > 0.0 {
        "+"
    } else if n < 0.0 {
        "-"
    } else {
        ""
    };
    format!("{sign}{}", bytes(n.abs().round() as u64))
}

/// A size in at most six characters, for table cells and axes: `512B`,
/// `1.5K`, `30.0M`, `2.0G`.
pub fn bytes_short(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = n;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// A duration given in milliseconds: `850ms`, `42.0s`, then as [`uptime`].
pub fn duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        uptime((ms / 1000.0) as u64)
    }
}

/// When `then_ms` was or will be, relative to `now_ms`: `42s ago`, `in 2h07m`.
pub fn relative(now_ms: i64, then_ms: i64) -> String {
    let delta = then_ms - now_ms;
    let span = uptime(delta.unsigned_abs() / 1000);
    if delta <= 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
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

/// A time as `2023-11-14 22:13:20 UTC`, from milliseconds since the Unix
/// epoch (the civil-from-days algorithm of H. Hinnant; no time zone data).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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
    fn formats_short_sizes_durations_and_relative_times() {
        assert_eq!(bytes_short(512.0), "512B");
        assert_eq!(bytes_short(31.0 * 1048576.0), "31.0M");
        assert_eq!(duration_ms(850.0), "850ms");
        assert_eq!(duration_ms(42_000.0), "42.0s");
        assert_eq!(duration_ms(303_000.0), "5m03s");
        assert_eq!(relative(100_000, 58_000), "42s ago");
        assert_eq!(relative(0, 7_620_000), "in 2h07m");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn unknowns_are_dashes() {
        assert_eq!(percent(None), "-");
        assert_eq!(percent(Some(12.345)), "12.3%");
        assert_eq!(count::<u64>(None), "-");
    }
}
