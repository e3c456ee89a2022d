//! Per-operation latency (submit to ack) in microseconds, on HdrHistogram.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One hour: anything slower is clamped (and the run would have timed out).
const LATENCY_US_MAX: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The latency summary of the protocol's JSON line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyUs {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    pub fn record(&mut self, elapsed: Duration) {
        let us = (elapsed.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        self.histogram.saturating_record(us);
    }

    /// Adds another worker's samples (same bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Latency) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with equal bounds merge");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// `None` when nothing was recorded: never print an unmeasured number.
    pub fn summary(&self) -> Option<LatencyUs> {
        if self.histogram.is_empty() {
            return None;
        }
        Some(LatencyUs {
            p50: self.histogram.value_at_quantile(0.50),
            p99: self.histogram.value_at_quantile(0.99),
            max: self.histogram.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(Latency::new().summary(), None);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for us in 1..=100u64 {
            let target = if us % 2 == 0 { &mut a } else { &mut b };
            target.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(
            a.summary(),
            Some(LatencyUs {
                p50: 50,
                p99: 99,
                max: 100
            })
        );
    }

    #[test]
    fn sub_microsecond_samples_count_as_one() {
        let mut l = Latency::new();
        l.record(Duration::from_nanos(10));
        assert_eq!(l.summary().map(|s| s.max), Some(1));
    }
}
