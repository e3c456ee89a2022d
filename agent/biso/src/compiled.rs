//! The compiled policy: what enforcement points consume.
//!
//! This is the contract between the policy engine and the two enforcement
//! points. It is deliberately flat (prefix → rule) so that the XDP loader can
//! write it into LPM tries without interpreting policy, and the cage can look
//! up a client address with the same longest-prefix-match semantics the
//! kernel's LPM trie uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// A traffic light. The discriminants are the values the XDP program's
/// `struct biso_rule.verdict` uses (ebpf/xdp/biso.h); do not renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Verdict {
    /// Pass.
    Green = 0,
    /// Pass within a per-source token bucket; sampled for inspection.
    Yellow = 1,
    /// Drop, counted.
    Red = 2,
}

impl Verdict {
    /// Stable lower-case name for logs, metrics labels and YAML.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Green => "green",
            Verdict::Yellow => "yellow",
            Verdict::Red => "red",
        }
    }

    /// The verdict for a wire byte, if it is one.
    pub const fn from_u8(byte: u8) -> Option<Verdict> {
        match byte {
            0 => Some(Verdict::Green),
            1 => Some(Verdict::Yellow),
            2 => Some(Verdict::Red),
            _ => None,
        }
    }
}

/// A token bucket: `rate_per_s` tokens are added per second up to
/// `burst`. For XDP a token is a packet; for the cage it is a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub rate_per_s: u32,
    pub burst: u32,
}

/// What to do with traffic from one source prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub verdict: Verdict,
    /// Used when `verdict` is Yellow; ignored otherwise.
    pub rate: RateLimit,
    /// Yellow traffic: one packet in this many is copied (headers only) to
    /// user space for inspection; 0 turns sampling off.
    pub sample_one_in: u32,
    /// Index into [`CompiledPolicy::reasons`]: why this rule has this light,
    /// so a drop counter or a 403 can say which policy clause caused it.
    pub reason_id: u16,
}

/// The flat result of evaluating a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Monotonic per node; the XDP loader uses it to tell which map slot is
    /// live, and receipts name it.
    pub version: u64,
    /// BLAKE3 of the canonical policy source, so a receipt can name exactly
    /// which policy decided.
    pub policy_digest: [u8; 32],
    /// Rule for an address no prefix matches.
    pub default_rule: Rule,
    pub v4: Vec<(Ipv4Net, Rule)>,
    pub v6: Vec<(Ipv6Net, Rule)>,
    /// Human-readable reasons, indexed by `Rule::reason_id`.
    pub reasons: Vec<String>,
}

impl CompiledPolicy {
    /// The rule for `addr` by longest-prefix match, like the kernel's LPM
    /// trie; IPv4-mapped IPv6 addresses are looked up as IPv4 so a dual-stack
    /// socket cannot dodge the IPv4 rules.
    pub fn lookup(&self, addr: IpAddr) -> &Rule {
        match addr {
            IpAddr::V4(v4) => self.lookup_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.lookup_v4(v4),
                None => self.lookup_v6(v6),
            },
        }
    }

    fn lookup_v4(&self, addr: Ipv4Addr) -> &Rule {
        self.v4
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map_or(&self.default_rule, |(_, rule)| rule)
    }

    fn lookup_v6(&self, addr: Ipv6Addr) -> &Rule {
        self.v6
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map_or(&self.default_rule, |(_, rule)| rule)
    }

    /// The reason text for a rule, or a placeholder naming a bad index (a
    /// bug in the compiler, but a log line must never panic).
    pub fn reason(&self, rule: &Rule) -> &str {
        self.reasons
            .get(usize::from(rule.reason_id))
            .map_or("unknown reason", String::as_str)
    }
}

/// How many prefix rules (v4 + v6) have each light; the default rule is
/// reported separately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VerdictCounts {
    pub green_count: u32,
    pub yellow_count: u32,
    pub red_count: u32,
}

impl CompiledPolicy {
    /// Prefix rules per light, for the decision log and status output.
    pub fn verdict_counts(&self) -> VerdictCounts {
        let mut counts = VerdictCounts::default();
        let rules = self
            .v4
            .iter()
            .map(|(_, r)| r)
            .chain(self.v6.iter().map(|(_, r)| r));
        for rule in rules {
            let slot = match rule.verdict {
                Verdict::Green => &mut counts.green_count,
                Verdict::Yellow => &mut counts.yellow_count,
                Verdict::Red => &mut counts.red_count,
            };
            *slot = slot.saturating_add(1);
        }
        counts
    }
}
