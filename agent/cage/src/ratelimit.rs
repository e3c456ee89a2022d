//! Keyed token buckets with a bounded number of keys.
//!
//! Hand-written rather than `governor`: the yellow light's rate differs per
//! policy rule and changes when the policy is swapped at runtime, so the rate
//! is an argument of every take, not a property of the limiter; and the key
//! count must be bounded with a defined eviction order. Time is an argument
//! so the arithmetic is tested without clocks.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use parking_lot::Mutex;

/// Refill rate and capacity of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub rate_per_s: u32,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    burst: u32,
    rate_per_s: u32,
}

impl Bucket {
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed_s = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed_s * f64::from(self.rate_per_s)).min(f64::from(self.burst))
    }
}

/// Token buckets per key, at most `buckets_count_max` of them.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
    buckets_count_max: usize,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    pub fn new(buckets_count_max: usize) -> Self {
        assert!(
            buckets_count_max >= 1,
            "a limiter needs room for one bucket"
        );
        KeyedBuckets {
            buckets: Mutex::new(HashMap::new()),
            buckets_count_max,
        }
    }

    /// Takes one token from `key`'s bucket (a new key starts full); false
    /// when the bucket is empty.
    pub fn try_take(&self, key: &K, rate: Rate, now: Instant) -> bool {
        let mut buckets = self.buckets.lock();
        if let Some(bucket) = buckets.get_mut(key) {
            // A swapped policy may have changed the rate: apply it from now.
            let tokens = bucket.refilled(now);
            *bucket = Bucket {
                tokens,
                updated: now,
                burst: rate.burst,
                rate_per_s: rate.rate_per_s,
            };
            let tokens = tokens.min(f64::from(rate.burst));
            if tokens >= 1.0 {
                bucket.tokens = tokens - 1.0;
                return true;
            }
            bucket.tokens = tokens;
            return false;
        }
        if rate.burst == 0 {
            return false;
        }
        if buckets.len() >= self.buckets_count_max {
            // Full buckets carry no state a fresh bucket would not.
            buckets.retain(|_, b| b.refilled(now) < f64::from(b.burst));
            if buckets.len() >= self.buckets_count_max {
                // Every bucket is in use: drop one (hash order, so an attacker
                // cannot choose which) rather than refuse new clients.
                if let Some(victim) = buckets.keys().next().cloned() {
                    buckets.remove(&victim);
                }
            }
        }
        buckets.insert(
            key.clone(),
            Bucket {
                tokens: f64::from(rate.burst) - 1.0,
                updated: now,
                burst: rate.burst,
                rate_per_s: rate.rate_per_s,
            },
        );
        true
    }

    /// Buckets currently kept.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let b = KeyedBuckets::new(16);
        let t0 = Instant::now();
        let rate = Rate {
            rate_per_s: 10,
            burst: 3,
        };
        assert!(b.try_take(&1u32, rate, t0));
        assert!(b.try_take(&1u32, rate, t0));
        assert!(b.try_take(&1u32, rate, t0));
        assert!(!b.try_take(&1u32, rate, t0));
        // Another key has its own bucket.
        assert!(b.try_take(&2u32, rate, t0));
        // 100 ms at 10/s is one token.
        assert!(b.try_take(&1u32, rate, t0 + Duration::from_millis(100)));
        assert!(!b.try_take(&1u32, rate, t0 + Duration::from_millis(100)));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.try_take(&1u32, rate, later));
        }
        assert!(!b.try_take(&1u32, rate, later));
    }

    #[test]
    fn zero_burst_refuses_and_rate_change_applies() {
        let b = KeyedBuckets::new(16);
        let t0 = Instant::now();
        assert!(!b.try_take(
            &1u32,
            Rate {
                rate_per_s: 100,
                burst: 0
            },
            t0
        ));
        let fast = Rate {
            rate_per_s: 0,
            burst: 1,
        };
        assert!(b.try_take(&2u32, fast, t0));
        assert!(!b.try_take(&2u32, fast, t0 + Duration::from_secs(10)));
        // The policy now grants 1/s: ten seconds later the bucket is full again.
        let slow = Rate {
            rate_per_s: 1,
            burst: 1,
        };
        assert!(!b.try_take(&2u32, slow, t0 + Duration::from_secs(10)));
        assert!(b.try_take(&2u32, slow, t0 + Duration::from_secs(11)));
    }

    #[test]
    fn key_count_is_bounded() {
        let b = KeyedBuckets::new(4);
        let t0 = Instant::now();
        let rate = Rate {
            rate_per_s: 1,
            burst: 2,
        };
        for key in 0..100u32 {
            assert!(b.try_take(&key, rate, t0));
            assert!(b.len() <= 4);
        }
        assert_eq!(b.len(), 4);
    }
}
