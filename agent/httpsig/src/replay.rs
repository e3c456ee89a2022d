//! The nonce replay cache: bounded in entries and in time.
//!
//! An entry is `(key id, nonce)` and lives `window_s` seconds from when it
//! was first accepted. `verify_request` refuses to run with a window
//! shorter than the time a signature stays acceptable
//! (`max_age_s + clock_skew_s`), so a nonce is remembered for as long as
//! its signature could be replayed.
//!
//! A full cache never lets a replay through and never forgets a live
//! nonce: inserting first drops entries whose time has passed, and if the
//! cache is still full the request is refused (`replay_cache_full`, 503)
//! instead of evicting a live entry — evicting one would reopen exactly
//! that nonce to replay. The cache frees itself as entries age out, so the
//! refusal lasts at most `window_s`; size `entries_max` for
//! `peak requests/s × window_s`.
//!
//! Only nonces of signatures that verified are inserted, so a client
//! without a directory key cannot fill the cache.

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

/// Entries are keyed by a hash of (key id, nonce): fixed size whatever the
/// client sends, and no separator ambiguity between the two strings.
type EntryId = [u8; 32];

#[derive(Debug, Default)]
struct Inner {
    /// Entry → the unix second after which it is forgotten.
    forget_after: HashMap<EntryId, u64>,
    /// The same entries ordered by that second, oldest first.
    by_time: BTreeSet<(u64, EntryId)>,
}

impl Inner {
    fn drop_expired(&mut self, now_unix_s: u64) {
        while let Some(&(t, id)) = self.by_time.first() {
            if t >= now_unix_s {
                break;
            }
            self.by_time.pop_first();
            self.forget_after.remove(&id);
        }
    }
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("nonce already used with this key")]
    Replayed,
    #[error("replay cache full ({entries_max} live nonces)")]
    Full { entries_max: usize },
}

/// Thread-safe set of recently seen `(key id, nonce)` pairs.
#[derive(Debug)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
    entries_max: usize,
    window_s: u64,
}

impl ReplayCache {
    /// At most `entries_max` live nonces, each remembered `window_s`
    /// seconds. `entries_max == 0` refuses every nonce (cache always full).
    pub fn new(entries_max: usize, window_s: u64) -> Self {
        ReplayCache {
            inner: Mutex::new(Inner::default()),
            entries_max,
            window_s,
        }
    }

    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    pub fn window_s(&self) -> u64 {
        self.window_s
    }

    /// Live entries right now (some may already be past their time and
    /// wait for the next insert to drop them).
    pub fn len(&self) -> usize {
        self.inner.lock().forget_after.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry_id(key_id: &str, nonce: &str) -> EntryId {
        let mut h = Sha256::new();
        h.update((key_id.len() as u64).to_le_bytes());
        h.update(key_id.as_bytes());
        h.update(nonce.as_bytes());
        h.finalize().into()
    }

    /// Records `nonce` for `key_id`, or says why not. Atomic: of two
    /// concurrent requests with one nonce exactly one succeeds.
    pub fn check_and_insert(
        &self,
        key_id: &str,
        nonce: &str,
        now_unix_s: u64,
    ) -> Result<(), ReplayError> {
        let id = Self::entry_id(key_id, nonce);
        let mut inner = self.inner.lock();
        inner.drop_expired(now_unix_s);
        if inner.forget_after.contains_key(&id) {
            return Err(ReplayError::Replayed);
        }
        if inner.forget_after.len() >= self.entries_max {
            return Err(ReplayError::Full {
                entries_max: self.entries_max,
            });
        }
        let until = now_unix_s.saturating_add(self.window_s);
        inner.forget_after.insert(id, until);
        inner.by_time.insert((until, id));
        assert_eq!(inner.forget_after.len(), inner.by_time.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_is_refused_until_the_window_passes() {
        let cache = ReplayCache::new(10, 60);
        cache.check_and_insert("k", "n1", 1000).unwrap();
        assert_eq!(
            cache.check_and_insert("k", "n1", 1000),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            cache.check_and_insert("k", "n1", 1060),
            Err(ReplayError::Replayed)
        );
        // Another key may use the same nonce.
        cache.check_and_insert("other", "n1", 1000).unwrap();
        // Separator ambiguity: ("k", "n1") vs ("kn", "1").
        cache.check_and_insert("kn", "1", 1000).unwrap();
        assert_eq!(cache.len(), 3);
        cache.check_and_insert("k", "n1", 1061).unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn full_cache_refuses_instead_of_evicting_live_entries() {
        let cache = ReplayCache::new(2, 60);
        cache.check_and_insert("k", "a", 1000).unwrap();
        cache.check_and_insert("k", "b", 1010).unwrap();
        assert_eq!(
            cache.check_and_insert("k", "c", 1020),
            Err(ReplayError::Full { entries_max: 2 })
        );
        // The live entries are still there: their replays are refused.
        assert_eq!(
            cache.check_and_insert("k", "a", 1020),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            cache.check_and_insert("k", "b", 1020),
            Err(ReplayError::Replayed)
        );
        // Once "a" ages out there is room again, and only "a" was dropped.
        cache.check_and_insert("k", "c", 1061).unwrap();
        assert_eq!(
            cache.check_and_insert("k", "b", 1061),
            Err(ReplayError::Replayed)
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn zero_capacity_refuses_every_nonce() {
        let cache = ReplayCache::new(0, 60);
        assert_eq!(
            cache.check_and_insert("k", "a", 1),
            Err(ReplayError::Full { entries_max: 0 })
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn concurrent_use_of_one_nonce_succeeds_once() {
        let cache = std::sync::Arc::new(ReplayCache::new(1000, 60));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|i| cache.check_and_insert("k", &i.to_string(), 5).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
        assert_eq!(cache.len(), 100);
    }
}
