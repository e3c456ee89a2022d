//! The BISO policy as the cage sees it: swappable at runtime, read per
//! request without blocking writers for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metanode_biso::compiled::{CompiledPolicy, RateLimit, Rule, Verdict};
use parking_lot::RwLock;

/// Shared handle to the current [`CompiledPolicy`]; clones share it.
///
/// A request takes one snapshot (`current`) and decides with it, so a swap
/// in the middle of a request never mixes two policies; the receipt names
/// the snapshot's version and digest.
///
/// Connections keep their own snapshot and only re-read it when the
/// generation changed: one shared load per request instead of a lock and
/// two reference-count updates on a cache line every core writes.
#[derive(Clone, Debug)]
pub struct PolicyHandle(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    current: RwLock<Arc<CompiledPolicy>>,
    /// Bumped (under the write lock) after every swap.
    generation: AtomicU64,
}

impl PolicyHandle {
    pub fn new(policy: CompiledPolicy) -> Self {
        PolicyHandle(Arc::new(Shared {
            current: RwLock::new(Arc::new(policy)),
            generation: AtomicU64::new(0),
        }))
    }

    /// The policy now in force.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        self.0.current.read().clone()
    }

    /// Changes whenever [`PolicyHandle::swap`] puts a policy in force.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// `cached` refreshed if a swap happened since it was taken.
    pub fn refresh(&self, cached: &mut (u64, Arc<CompiledPolicy>)) {
        let generation = self.generation();
        if generation != cached.0 {
            // Read the policy after the generation: a swap racing with this
            // leaves an older generation beside a newer policy, which only
            // costs one more refresh.
            *cached = (generation, self.current());
        }
    }

    /// Puts `policy` in force for every later request; returns the old one.
    pub fn swap(&self, policy: CompiledPolicy) -> Arc<CompiledPolicy> {
        let mut current = self.0.current.write();
        let old = std::mem::replace(&mut *current, Arc::new(policy));
        self.0.generation.fetch_add(1, Ordering::Release);
        old
    }
}

/// A policy that lights every address green (version 0, zero digest): for a
/// cage run without a BISO policy, e.g. the proxy benchmark.
pub fn allow_all_policy() -> CompiledPolicy {
    CompiledPolicy {
        version: 0,
        policy_digest: [0; 32],
        default_rule: Rule {
            verdict: Verdict::Green,
            rate: RateLimit {
                rate_per_s: 0,
                burst: 0,
            },
            sample_one_in: 0,
            reason_id: 0,
        },
        v4: Vec::new(),
        v6: Vec::new(),
        reasons: vec!["no BISO policy configured".to_owned()],
    }
}
