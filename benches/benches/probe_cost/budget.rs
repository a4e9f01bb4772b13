//! Issue 9's budget for the probe's cost, as ratios to `plain`.

/// p99 latency at most this times plain's.
pub const P99_MAX: f64 = 1.10;
/// CPU per request at most this times plain's.
pub const CPU_PER_REQUEST_MAX: f64 = 1.03;
/// Throughput at least this times plain's.
pub const THROUGHPUT_MIN: f64 = 0.98;
/// Under connection churn, RSS at the end within this of the start.
pub const CHURN_RSS_GROWTH_MAX_MIB: f64 = 4.0;
/// Under connection churn, throughput at least this times plain's.
pub const CHURN_THROUGHPUT_MIN: f64 = 0.95;

/// `value <= limit`, false when either is NaN: a figure that could not be
/// measured does not meet the budget.
fn at_most(value: f64, limit: f64) -> bool {
    value <= limit
}

/// The steady-state budget's breaches, given the median per-round ratios
/// to plain; empty when it holds.
pub fn steady_breaches(throughput: f64, p99: f64, cpu_per_request: f64) -> Vec<String> {
    let mut breaches = Vec::new();
    if !at_most(p99, P99_MAX) {
        breaches.push(format!("p99 x{p99:.2} > x{P99_MAX:.2}"));
    }
    if !at_most(cpu_per_request, CPU_PER_REQUEST_MAX) {
        breaches.push(format!(
            "CPU/req x{cpu_per_request:.2} > x{CPU_PER_REQUEST_MAX:.2}"
        ));
    }
    if !at_most(THROUGHPUT_MIN, throughput) {
        breaches.push(format!("req/s x{throughput:.3} < x{THROUGHPUT_MIN:.2}"));
    }
    breaches
}

/// The churn budget's breaches; empty when it holds.
pub fn churn_breaches(rss_growth_mib: f64, throughput: f64) -> Vec<String> {
    let mut breaches = Vec::new();
    if !at_most(rss_growth_mib.abs(), CHURN_RSS_GROWTH_MAX_MIB) {
        breaches.push(format!(
            "RSS {rss_growth_mib:+.1} MiB, beyond ±{CHURN_RSS_GROWTH_MAX_MIB} MiB"
        ));
    }
    if !at_most(CHURN_THROUGHPUT_MIN, throughput) {
        breaches.push(format!(
            "req/s x{throughput:.3} < x{CHURN_THROUGHPUT_MIN:.2}"
        ));
    }
    breaches
}

/// "holds" or "FAILS (why, why)".
pub fn verdict(breaches: &[String]) -> String {
    if breaches.is_empty() {
        "budget holds".to_owned()
    } else {
        format!("budget FAILS ({})", breaches.join("; "))
    }
}
