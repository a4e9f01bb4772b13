//! Shapes for synthetic histories, shared by the table tests that replay
//! days of history through the detectors and by the detection benchmark:
//! noise that repeats for a seed, and a daily swing.

use std::f64::consts::PI;

/// Seconds in a day.
pub const DAY_S: f64 = 86_400.0;

/// Uniform noise in `[-1, 1)` from a seed (xorshift): the same history for
/// the same seed, on every machine.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// Noise from `seed` (any value; zero is moved off xorshift's fixed point).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value, in `[-1, 1)`.
    pub fn sample(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A daily swing of `peak_to_peak`, lowest at `trough_hour`, `s` seconds
/// after midnight of the first day.
pub fn daily(peak_to_peak: f64, trough_hour: f64, s: f64) -> f64 {
    -peak_to_peak / 2.0 * (2.0 * PI * (s - trough_hour * 3600.0) / DAY_S).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_repeats_per_seed_and_stays_in_range() {
        let (mut a, mut b) = (Noise::new(3), Noise::new(3));
        for _ in 0..1000 {
            let v = a.sample();
            assert_eq!(v, b.sample());
            assert!((-1.0..1.0).contains(&v));
        }
        assert!(
            (daily(30.0, 4.0, 4.0 * 3600.0) + 15.0).abs() < 1e-9,
            "lowest at the trough"
        );
    }
}
