//! The BISO policy as the cage sees it: swappable at runtime, read per
//! request without blocking writers for long.

use std::sync::Arc;

use metanode_biso::compiled::{CompiledPolicy, RateLimit, Rule, Verdict};
use parking_lot::RwLock;

/// Shared handle to the current [`CompiledPolicy`]; clones share it.
///
/// A request takes one snapshot (`current`) and decides with it, so a swap
/// in the middle of a request never mixes two policies; the receipt names
/// the snapshot's version and digest.
#[derive(Clone, Debug)]
pub struct PolicyHandle(Arc<RwLock<Arc<CompiledPolicy>>>);

impl PolicyHandle {
    pub fn new(policy: CompiledPolicy) -> Self {
        PolicyHandle(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The policy now in force.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        self.0.read().clone()
    }

    /// Puts `policy` in force for every later request; returns the old one.
    pub fn swap(&self, policy: CompiledPolicy) -> Arc<CompiledPolicy> {
        std::mem::replace(&mut *self.0.write(), Arc::new(policy))
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
