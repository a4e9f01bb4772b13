//! Robust trend statistics shared by the detectors: the lower envelope of
//! a series, the Theil–Sen slope, and the Cox–Stuart sign test.
//!
//! Why these: a service's memory is a sum of what it keeps (a leak grows
//! this part) and what it holds for a while (request buffers, caches that
//! fill and clear). The *lower envelope*, the least value over a trailing
//! stretch, removes the second part whenever it is shorter than the stretch,
//! so a sawtooth becomes its floor. The *Theil–Sen* slope, the median of the
//! slopes between every pair of points, ignores the odd outlier that sways a
//! least-squares fit. The *Cox–Stuart* test pairs each point of the first
//! half with its counterpart in the second half and asks whether "later is
//! higher" happens more often than chance: a monotonicity test that does
//! not care how big the rises are, the kind clinic.js doctor applies to
//! handle counts.

use crate::series::Point;

/// The lower envelope of `points` (sorted by time): at `samples` evenly
/// spaced instants from `width_ms` after the first point to the last, the
/// least value over the `width_ms` before each. Instants without a point in
/// their stretch are skipped. Times are returned in seconds since the first
/// point.
pub fn lower_envelope(points: &[Point], width_ms: i64, samples: usize) -> Vec<(f64, f64)> {
    let (Some(&(first, _)), Some(&(last, _))) = (points.first(), points.last()) else {
        return Vec::new();
    };
    let start = (first + width_ms).min(last);
    let steps = samples.max(2) - 1;
    let mut out = Vec::with_capacity(samples);
    let mut lo = 0;
    for k in 0..=steps {
        let at = start + (last - start) * k as i64 / steps as i64;
        while lo < points.len() && points[lo].0 <= at - width_ms {
            lo += 1;
        }
        let min = points[lo..]
            .iter()
            .take_while(|&&(t, _)| t <= at)
            .map(|&(_, v)| v)
            .fold(f64::INFINITY, f64::min);
        if min.is_finite() {
            out.push(((at - first) as f64 / 1000.0, min));
        }
    }
    out
}

/// The Theil–Sen slope of `points`: the median of the slopes of every pair
/// with distinct times. `None` with fewer than two distinct times.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, &(t1, v1)) in points.iter().enumerate() {
        for &(t2, v2) in &points[i + 1..] {
            if t2 != t1 {
                slopes.push((v2 - v1) / (t2 - t1));
            }
        }
    }
    median(&mut slopes)
}

/// The median, averaging the middle two of an even count; `None` if empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// The outcome of a Cox–Stuart test for an upward trend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignTest {
    /// Pairs (first half, second half) where the later value is higher.
    pub rising: usize,
    /// Pairs compared.
    pub pairs: usize,
    /// The chance of at least `rising` rises out of `pairs` if up and down
    /// were equally likely. Ties count as "not rising", which makes the test
    /// conservative on plateaus.
    pub p_value: f64,
}

/// The Cox–Stuart test for an upward trend in `values` (in time order).
pub fn cox_stuart(values: &[f64]) -> SignTest {
    let half = values.len() / 2;
    let offset = values.len() - half;
    let rising = (0..half)
        .filter(|&i| values[i + offset] > values[i])
        .count();
    SignTest {
        rising,
        pairs: half,
        p_value: binomial_tail(half, rising),
    }
}

/// P(X ≥ k) for X binomial with `n` trials of probability one half.
pub fn binomial_tail(n: usize, k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // Sum the coefficients C(n, j) for j ≥ k in floating point: n is a few
    // dozen at most here.
    let mut coefficient = 1.0f64; // C(n, 0)
    let mut tail = 0.0;
    for j in 0..=n {
        if j >= k {
            tail += coefficient;
        }
        coefficient = coefficient * (n - j) as f64 / (j + 1) as f64;
    }
    tail / 2f64.powi(i32::try_from(n).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let mut points: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 2.0 * f64::from(i)))
            .collect();
        points[5].1 = 1000.0;
        assert_eq!(theil_sen(&points), Some(2.0));
        assert_eq!(theil_sen(&[(1.0, 1.0)]), None);
    }

    #[test]
    fn envelope_flattens_a_sawtooth_shorter_than_its_width() {
        // Fills 0..=9 over ten seconds, then clears; over two minutes.
        let points: Vec<Point> = (0..120).map(|s| (s * 1000, (s % 10) as f64)).collect();
        let envelope = lower_envelope(&points, 20_000, 8);
        assert_eq!(envelope.len(), 8);
        assert!(envelope.iter().all(|&(_, v)| v == 0.0), "{envelope:?}");
        assert_eq!(envelope[0].0, 20.0);
        assert_eq!(envelope[7].0, 119.0);
    }

    #[test]
    fn sign_test_and_binomial_tail() {
        assert!((binomial_tail(8, 8) - 1.0 / 256.0).abs() < 1e-12);
        assert!((binomial_tail(8, 7) - 9.0 / 256.0).abs() < 1e-12);
        assert_eq!(binomial_tail(8, 0), 1.0);
        let rising: Vec<f64> = (0..16).map(f64::from).collect();
        let test = cox_stuart(&rising);
        assert_eq!((test.rising, test.pairs), (8, 8));
        let flat = vec![1.0; 16];
        assert_eq!(cox_stuart(&flat).rising, 0);
        assert_eq!(cox_stuart(&flat).p_value, 1.0);
    }
}
