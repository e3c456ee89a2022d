//! Keyed token buckets with a bounded number of keys, split over locked shards.
//!
//! Hand-written rather than `governor`: the yellow light's rate differs per
//! policy rule and changes when the policy is swapped at runtime, so the rate
//! is an argument of every take, not a property of the limiter; and the key
//! count must be bounded with a defined eviction order. Time is an argument
//! so the arithmetic is tested without clocks.
//!
//! Every worker thread (one per core) takes from the same limiters on every
//! request, so the buckets are split over up to
//! [`RATE_BUCKETS_SHARDS_COUNT_MAX`] shards, each behind its own lock on its
//! own cache line: workers rarely wait for each other, and no one cache line
//! moves between all cores per request. A key's shard comes from a hash keyed
//! at random per limiter, so a client cannot aim its keys at one shard to
//! evict another client's bucket with a fraction of the keys.
//!
//! Each shard is an LRU holding its exact share of `buckets_count_max`, so the
//! limiter never keeps more. A new key in a full shard evicts the shard's least
//! recently used bucket in O(1). (A single map that searched for a victim
//! scanned every bucket under one lock whenever every bucket was in use, which
//! a client with many source addresses, say an IPv6 /64, could cause on every
//! request.) The least recently used bucket loses the least state: a bucket
//! idle for burst / rate seconds is full again, and a full bucket carries
//! nothing a fresh one would not.
//!
//! An evicted bucket is forgotten: its key starts again with a full bucket, so
//! a client evicted under a flood of new keys gets a fresh burst. Refusing new
//! keys instead would let the flood lock every new client out.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use lru::LruCache;
use parking_lot::Mutex;

use crate::limits::{RATE_BUCKETS_SHARD_KEYS_MIN, RATE_BUCKETS_SHARDS_COUNT_MAX};

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

/// One lock's share of the buckets.
struct Shard<K> {
    /// Unbounded as far as `lru` knows: `LruCache::new(cap)` would allocate
    /// the whole capacity up front (about 100 MB for the default million),
    /// so the shard enforces `buckets_count_max` itself. Hashed with its own
    /// `RandomState`, independent of the shard choice: with the same hash,
    /// all keys of a shard would share their low bits and crowd into a
    /// fraction of the table's probe positions.
    buckets: LruCache<K, Bucket, RandomState>,
    buckets_count_max: usize,
}

impl<K: Hash + Eq + Clone> Shard<K> {
    fn try_take(&mut self, key: &K, rate: Rate, now: Instant) -> bool {
        // `get_mut` also marks the bucket most recently used, refused or not:
        // a client still knocking keeps its (empty) bucket.
        if let Some(bucket) = self.buckets.get_mut(key) {
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
        if self.buckets.len() >= self.buckets_count_max {
            // Evict rather than refuse new clients; the least recently used
            // bucket has had the longest to refill (see the module doc).
            self.buckets.pop_lru();
        }
        self.buckets.push(
            key.clone(),
            Bucket {
                tokens: f64::from(rate.burst) - 1.0,
                updated: now,
                burst: rate.burst,
                rate_per_s: rate.rate_per_s,
            },
        );
        assert!(
            self.buckets.len() <= self.buckets_count_max,
            "a rate limiter shard kept more buckets than its share"
        );
        true
    }
}

/// Token buckets per key, at most `buckets_count_max` of them.
pub struct KeyedBuckets<K> {
    /// Picks a key's shard. Random per limiter, so which keys share a shard
    /// differs between limiters and restarts and cannot be chosen by a client.
    shard_hasher: RandomState,
    /// A power of two long, so the shard index is a mask of the hash.
    shards: Box<[CachePadded<Mutex<Shard<K>>>]>,
    buckets_count_max: usize,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    pub fn new(buckets_count_max: usize) -> Self {
        Self::with_shards(buckets_count_max, RATE_BUCKETS_SHARDS_COUNT_MAX)
    }

    /// At most `shards_count_max` shards, rounded down to a power of two,
    /// and no more than leave each shard [`RATE_BUCKETS_SHARD_KEYS_MIN`]
    /// buckets. A shard evicts when *it* is full, so with a few buckets per
    /// shard two keys hashed to one shard would evict each other while the
    /// limiter as a whole had room; a small limiter is one shard, an exact
    /// LRU. Split out of `new` so tests can choose the shard count.
    fn with_shards(buckets_count_max: usize, shards_count_max: usize) -> Self {
        assert!(
            buckets_count_max >= 1,
            "a limiter needs room for one bucket"
        );
        let shards_limit = shards_count_max
            .min(buckets_count_max / RATE_BUCKETS_SHARD_KEYS_MIN)
            .max(1);
        let shards_count = 1usize << shards_limit.ilog2();
        // Split the capacity exactly: the floor to every shard, one more to
        // the first `remainder` shards.
        let share = buckets_count_max / shards_count;
        let remainder = buckets_count_max % shards_count;
        let shards: Box<[CachePadded<Mutex<Shard<K>>>]> = (0..shards_count)
            .map(|index| {
                let shard_buckets_count_max = share + usize::from(index < remainder);
                assert!(
                    shard_buckets_count_max >= 1,
                    "a rate limiter shard needs room for one bucket"
                );
                CachePadded::new(Mutex::new(Shard {
                    buckets: LruCache::unbounded_with_hasher(RandomState::new()),
                    buckets_count_max: shard_buckets_count_max,
                }))
            })
            .collect();
        assert!(shards.len().is_power_of_two());
        assert_eq!(
            shards
                .iter()
                .map(|shard| shard.lock().buckets_count_max)
                .sum::<usize>(),
            buckets_count_max,
            "the shards' shares must add up to the limiter's bound"
        );
        KeyedBuckets {
            shard_hasher: RandomState::new(),
            shards,
            buckets_count_max,
        }
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K>> {
        // Truncating the hash to usize keeps its low bits, which the mask
        // takes anyway; the mask keeps the index in bounds.
        let index = (self.shard_hasher.hash_one(key) as usize) & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Takes one token from `key`'s bucket (a new key starts full); false
    /// when the bucket is empty.
    pub fn try_take(&self, key: &K, rate: Rate, now: Instant) -> bool {
        self.shard(key).lock().try_take(key, rate, now)
    }

    /// Buckets currently kept. Each shard is counted under its own lock, so
    /// under concurrent takes this is a moment's count per shard, not one
    /// snapshot; it never exceeds `buckets_count_max`.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().buckets.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> fmt::Debug for KeyedBuckets<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No locks taken: Debug may be called while a shard is held.
        f.debug_struct("KeyedBuckets")
            .field("buckets_count_max", &self.buckets_count_max)
            .field("shards_count", &self.shards.len())
            .finish_non_exhaustive()
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
        // A refused new key takes no room.
        assert!(b.is_empty());
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

    #[test]
    fn capacity_split_over_shards_is_exact() {
        let t0 = Instant::now();
        let rate = Rate {
            rate_per_s: 0,
            burst: 1,
        };
        // (bound, shards expected): one shard below 2 x 1024 buckets, then
        // powers of two up to 64.
        for (buckets_count_max, shards_count) in [
            (1usize, 1usize),
            (16, 1),
            (2047, 1),
            (2048, 2),
            (5000, 4),
            (64 * 1024 + 7, 64),
            (300_000, 64),
        ] {
            let b = KeyedBuckets::new(buckets_count_max);
            let shares: Vec<usize> = b
                .shards
                .iter()
                .map(|shard| shard.lock().buckets_count_max)
                .collect();
            assert_eq!(shares.len(), shards_count, "bound {buckets_count_max}");
            assert!(shares.iter().all(|&share| share >= 1));
            assert_eq!(shares.iter().sum::<usize>(), buckets_count_max);
            // Shares differ by at most one.
            let share_min = shares.iter().min().copied().unwrap_or(0);
            let share_max = shares.iter().max().copied().unwrap_or(0);
            assert!(share_max - share_min <= 1);

            // Up to its bound, a limiter keeps every key: no shard is full
            // before the whole is (exact with one shard).
            if shards_count == 1 {
                for key in 0..buckets_count_max as u64 {
                    assert!(b.try_take(&key, rate, t0));
                }
                assert_eq!(b.len(), buckets_count_max);
            }
            // Far more keys than room, so every shard fills whatever the
            // hash (each shard expects 3x its share; missing it is below
            // 1e-100 per shard).
            let keys_count = 3 * buckets_count_max + 2000;
            for key in 0..keys_count as u64 {
                assert!(b.try_take(&(key + 1_000_000_000), rate, t0));
                if key % 997 == 0 {
                    assert!(b.len() <= buckets_count_max);
                }
            }
            assert_eq!(b.len(), buckets_count_max);
        }
    }

    #[test]
    fn least_recently_used_bucket_is_evicted_first() {
        // One shard, so the LRU order is the limiter's and the test does not
        // depend on the random shard hash.
        let b = KeyedBuckets::with_shards(4, 1);
        assert_eq!(b.shards.len(), 1);
        // `contains` does not change the LRU order.
        let kept = |key: u32| b.shards[0].lock().buckets.contains(&key);
        let t0 = Instant::now();
        // Rate 0, burst 1: a kept bucket refuses after its first take.
        let rate = Rate {
            rate_per_s: 0,
            burst: 1,
        };
        let (active, idle) = (0u32, 1u32);
        for key in [active, idle, 2, 3] {
            assert!(b.try_take(&key, rate, t0));
        }
        // `active` keeps knocking (refused) while new keys stream in: the
        // first new key evicts `idle`, and `active` outlives all of them.
        assert!(!b.try_take(&active, rate, t0));
        assert!(b.try_take(&100, rate, t0));
        assert!(!kept(idle));
        assert!(kept(active));
        for key in 101..200u32 {
            assert!(!b.try_take(&active, rate, t0));
            assert!(b.try_take(&key, rate, t0));
            assert!(kept(active));
            assert_eq!(b.len(), 4);
        }
        assert!(kept(197) && kept(198) && kept(199));
        // A kept bucket keeps its state: `active` is still empty.
        assert!(!b.try_take(&active, rate, t0));
        // An evicted bucket restarts full: `idle` gets a fresh burst.
        assert!(b.try_take(&idle, rate, t0));
        assert!(!kept(197));
    }

    #[test]
    fn eviction_when_every_bucket_is_in_use_is_constant_time() {
        // Rate 0 and burst 5: after one take no bucket is ever full again, so
        // no bucket is free to drop and every new key past the bound must
        // evict. A scan per eviction would be 10^10 steps here.
        let buckets_count_max = 100_000usize;
        let b = KeyedBuckets::new(buckets_count_max);
        let t0 = Instant::now();
        let rate = Rate {
            rate_per_s: 0,
            burst: 5,
        };
        for key in 0..2 * buckets_count_max as u64 {
            assert!(b.try_take(&key, rate, t0));
        }
        assert_eq!(b.len(), buckets_count_max);
    }

    #[test]
    fn shared_key_grants_exactly_its_burst_across_threads() {
        const THREADS_COUNT: u64 = 4;
        const TAKES_PER_THREAD: u64 = 2_000;
        let burst = 1_000u32;
        let rate = Rate {
            rate_per_s: 0,
            burst,
        };
        // Room for every key, so the shared bucket is never evicted.
        let b = KeyedBuckets::new(100_000);
        let t0 = Instant::now();
        let shared = u64::MAX;
        let granted: Vec<(u64, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS_COUNT)
                .map(|thread| {
                    let b = &b;
                    scope.spawn(move || {
                        let own = thread;
                        let (mut shared_granted, mut own_granted) = (0u64, 0u64);
                        for _ in 0..TAKES_PER_THREAD {
                            shared_granted += u64::from(b.try_take(&shared, rate, t0));
                            own_granted += u64::from(b.try_take(&own, rate, t0));
                        }
                        (shared_granted, own_granted)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("taker thread panicked"))
                .collect()
        });
        let shared_granted: u64 = granted.iter().map(|&(shared, _)| shared).sum();
        assert_eq!(shared_granted, u64::from(burst));
        // Each thread's own key granted exactly its own burst.
        for &(_, own_granted) in &granted {
            assert_eq!(own_granted, u64::from(burst));
        }
        assert_eq!(b.len(), THREADS_COUNT as usize + 1);
    }
}
