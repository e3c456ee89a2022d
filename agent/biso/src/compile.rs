//! Policy → [`CompiledPolicy`]: one prefix rule per region table entry, the
//! default rule from the unknown region, deduplicated reasons.

use std::collections::HashMap;

use crate::compiled::{CompiledPolicy, RateLimit, Rule, Verdict};
use crate::eval::{Decision, evaluate_region};
use crate::limits::REASONS_COUNT_MAX;
use crate::policy::{Policy, PolicyError, load_policy as parse_policy};

/// Why [`compile`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("policy needs {count} distinct reasons, more than the {max} a compiled policy holds")]
    TooManyReasons { count: usize, max: usize },
    #[error("policy does not fit the canonical encoding its digest is taken over: {0}")]
    Digest(#[from] metanode_core::encoding::EncodeError),
}

/// Parse and validate a YAML policy (see [`crate::policy`]).
pub fn load_policy(yaml: &str) -> Result<Policy, PolicyError> {
    parse_policy(yaml)
}

struct Reasons {
    texts: Vec<String>,
    ids: HashMap<String, u16>,
}

impl Reasons {
    fn id(&mut self, text: String) -> Result<u16, CompileError> {
        if let Some(id) = self.ids.get(&text) {
            return Ok(*id);
        }
        let count = self.texts.len() + 1;
        let id = u16::try_from(self.texts.len())
            .ok()
            .filter(|_| count <= REASONS_COUNT_MAX)
            .ok_or(CompileError::TooManyReasons {
                count,
                max: REASONS_COUNT_MAX,
            })?;
        self.ids.insert(text.clone(), id);
        self.texts.push(text);
        Ok(id)
    }
}

/// The reason text for a region's decision: clause name first so counters
/// and logs can be grepped by clause, then the region, then the meaning.
pub fn reason_text(region: &str, unmapped: bool, decision: &Decision) -> String {
    let place = if unmapped {
        format!("region {region} (address in no region table entry)")
    } else {
        format!("region {region}")
    };
    format!(
        "{}: {place}: {}",
        decision.clause.name(),
        decision.clause.description()
    )
}

fn rule_for(policy: &Policy, decision: &Decision, reason_id: u16) -> Rule {
    // Green and red rules carry no bucket or sampling, so two compiled
    // policies that decide the same are equal field by field.
    let (rate, sample_one_in) = match decision.verdict {
        Verdict::Yellow => (
            RateLimit {
                rate_per_s: policy.yellow.rate_per_s,
                burst: policy.yellow.burst,
            },
            policy.yellow.sample_one_in,
        ),
        Verdict::Green | Verdict::Red => (
            RateLimit {
                rate_per_s: 0,
                burst: 0,
            },
            0,
        ),
    };
    Rule {
        verdict: decision.verdict,
        rate,
        sample_one_in,
        reason_id,
    }
}

/// Evaluate `policy` by the truth table into the flat form the XDP loader
/// and the cage consume. `version` is the node's monotonic policy version.
/// Prefix lists come out sorted by network (the policy keeps them sorted);
/// `policy_digest` is [`Policy::digest`].
pub fn compile(policy: &Policy, version: u64) -> Result<CompiledPolicy, CompileError> {
    let mut reasons = Reasons {
        texts: Vec::new(),
        ids: HashMap::new(),
    };
    let mut rule = |region: &str, unmapped: bool| -> Result<Rule, CompileError> {
        let decision = evaluate_region(policy, region, unmapped);
        let id = reasons.id(reason_text(region, unmapped, &decision))?;
        Ok(rule_for(policy, &decision, id))
    };
    let default_rule = rule(&policy.unknown_region, true)?;
    // One evaluation per region name, however many prefixes it has.
    let mut by_region: HashMap<&str, Rule> = HashMap::new();
    let names = policy
        .regions_v4
        .iter()
        .map(|(_, r)| r.as_str())
        .chain(policy.regions_v6.iter().map(|(_, r)| r.as_str()));
    for region in names {
        if !by_region.contains_key(region) {
            by_region.insert(region, rule(region, false)?);
        }
    }
    let lookup = |region: &str| {
        // Every name came from the table iterated just above.
        *by_region
            .get(region)
            .expect("every table region was evaluated")
    };
    Ok(CompiledPolicy {
        version,
        policy_digest: policy.digest()?.to_bytes(),
        default_rule,
        v4: policy
            .regions_v4
            .iter()
            .map(|(net, region)| (*net, lookup(region)))
            .collect(),
        v6: policy
            .regions_v6
            .iter()
            .map(|(net, region)| (*net, lookup(region)))
            .collect(),
        reasons: reasons.texts,
    })
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
