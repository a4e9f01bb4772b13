//! Recorded history from a CSV file: one point per line,
//! `time,service,instance,metric,value`, with a header line.
//!
//! `time` is seconds or milliseconds since the Unix epoch (a number above
//! 10^11 is taken as milliseconds) or an RFC 3339 time; `metric` is one of
//! meshwatch's series names or a Prometheus name it maps
//! ([`super::mapping`]). Lines may come in any order.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{Context, bail};
use meshwatch_collector::backtest::RecordedRow;

use super::mapping::{Rows, map_name};

/// The header a file must start with.
const HEADER: &str = "time,service,instance,metric,value";

/// Reads every point of `input` (named `name` in errors) into rows.
pub fn read(input: impl BufRead, name: &str) -> anyhow::Result<Vec<RecordedRow>> {
    let mut lines = input.lines();
    let header = lines
        .next()
        .transpose()
        .with_context(|| format!("cannot read {name}"))?
        .unwrap_or_default();
    if header.trim() != HEADER {
        bail!(
            "{name}: the first line must be the header `{HEADER}`, not `{}`",
            header.trim()
        );
    }
    // Sorted first: CPU counters turn into rates point to point.
    let mut points = BTreeMap::new();
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        let line = line.with_context(|| format!("cannot read {name} at line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [time, service, instance, metric, value] = fields[..] else {
            bail!(
                "{name}:{number}: expected 5 fields ({HEADER}), found {}",
                fields.len()
            );
        };
        let t_ms = parse_time(time).with_context(|| format!("{name}:{number}: bad time"))?;
        let mapped = map_name(metric).with_context(|| {
            format!("{name}:{number}: unknown metric {metric:?}; see docs/BACKTEST.md for the names it reads")
        })?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("{name}:{number}: value {value:?} is not a number"))?;
        points.insert(
            (
                service.to_owned(),
                instance.to_owned(),
                metric.to_owned(),
                t_ms,
            ),
            (mapped, value),
        );
    }
    let mut rows = Rows::default();
    for ((service, instance, _, t_ms), (mapped, value)) in points {
        rows.add(&(service, instance), mapped, t_ms, value);
    }
    Ok(rows.into_rows())
}

/// Seconds or ms since the epoch, or an RFC 3339 time, as ms.
fn parse_time(time: &str) -> anyhow::Result<i64> {
    if let Ok(number) = time.parse::<f64>() {
        if !number.is_finite() || number < 0.0 {
            bail!("{time:?} is not a time");
        }
        return Ok(if number > 1e11 {
            number as i64
        } else {
            (number * 1000.0) as i64
        });
    }
    let at = humantime::parse_rfc3339_weak(time)
        .with_context(|| format!("{time:?} is neither a number of seconds nor an RFC 3339 time"))?;
    let since = at.duration_since(std::time::UNIX_EPOCH)?;
    Ok(i64::try_from(since.as_millis())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch_collector::Metric;

    #[test]
    fn reads_points_in_any_order_into_rows() {
        let csv = "time,service,instance,metric,value\n\
                   1700000010,proxy,p1,process_resident_memory_bytes,200\n\
                   1700000000,proxy,p1,rss_bytes,100\n\
                   2023-11-14T22:13:30Z,proxy,p1,fds_open,7\n";
        let rows = read(csv.as_bytes(), "test.csv").expect("valid CSV");
        // The RFC 3339 time is the second line's: one row of two metrics.
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].t_ms, 1_700_000_000_000);
        assert_eq!(rows[0].values, vec![(Metric::RssBytes, 100.0)]);
        assert_eq!(rows[1].t_ms, 1_700_000_010_000);
        assert_eq!(
            rows[1].values,
            vec![(Metric::FdsOpen, 7.0), (Metric::RssBytes, 200.0)]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let err = read("t,s\n".as_bytes(), "x.csv").unwrap_err().to_string();
        assert!(err.contains("header"), "{err}");
        let bad = "time,service,instance,metric,value\n1,a,b,no_such_metric,1\n";
        let err = format!("{:#}", read(bad.as_bytes(), "x.csv").unwrap_err());
        assert!(
            err.contains("x.csv:2") && err.contains("no_such_metric"),
            "{err}"
        );
        let short = "time,service,instance,metric,value\n1,a,b\n";
        let err = format!("{:#}", read(short.as_bytes(), "x.csv").unwrap_err());
        assert!(err.contains("5 fields"), "{err}");
    }
}
