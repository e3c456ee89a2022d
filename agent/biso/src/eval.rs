//! The truth table: what light one region gets, and why.
//!
//! Evaluation is a pure function of [`Facts`], the per-region inputs drawn
//! from the policy by [`facts`]. The table is read top to bottom and the
//! **first matching row decides** (verdict and clause). "S" means a
//! sensitive class (PII, PHI or PCI).
//!
//! | #  | condition                                             | light  | clause                        |
//! |----|-------------------------------------------------------|--------|-------------------------------|
//! | 1  | mode is emergency                                     | red    | `mode.emergency`              |
//! | 2  | region is in `blocked_regions`                        | red    | `blocked_regions`             |
//! | 3  | consent denied, class is not Public                   | red    | `consent.denied`              |
//! | 4  | consent withdrawn, class is not Public                | red    | `consent.withdrawn`           |
//! | 5  | `allowed_regions` non-empty, region not in it         | red    | `allowed_regions` (violation) |
//! | 6  | S and not encrypted in transit                        | red    | `data.encryption.in_transit` (violation) |
//! | 7  | S and no purpose declared                             | red    | `data.purposes` (violation)   |
//! | 8  | mode is secure and the address is in no table entry   | red    | `mode.secure.unknown_region`  |
//! | 9  | mode is secure, S, and no consent recorded            | red    | `mode.secure.consent_missing` |
//! | 10 | mode is maintenance                                   | yellow | `mode.maintenance`            |
//! | 11 | consent pending, class is not Public                  | yellow | `consent.pending`             |
//! | 12 | S and no consent recorded                             | yellow | `consent.missing`             |
//! | 13 | S and not encrypted at rest                           | yellow | `data.encryption.at_rest` (warning) |
//! | 14 | retention above the class maximum                     | yellow | `data.retention_days_max` (warning) |
//! | 15 | otherwise                                             | green  | `clear`                       |
//!
//! What this encodes from the spec: a blocked region always wins (only
//! Emergency, which is red too, comes first); denied or withdrawn consent is
//! red; every violation (rows 5–7) is red; pending consent is yellow; a
//! warning (rows 13–14) turns green into yellow; Emergency contains
//! everything.
//!
//! Choices made here:
//! - **Consent defaults by class.** Public data never needs consent: its
//!   consent entries are ignored (rows 3, 4, 11, 12 do not apply). General
//!   data needs none, so absent consent counts as granted, but an operator's
//!   recorded denied/withdrawn/pending still applies. For S, absent consent
//!   is treated as pending (row 12): traffic is limited until the state is
//!   recorded.
//! - **Secure** is Normal with two gaps closed: addresses outside the region
//!   table (whose origin nobody vouched for) are red, and so is S traffic
//!   from a region with no recorded consent. Recorded pending stays yellow.
//! - **Maintenance** keeps every red (blocks, refusals, violations still
//!   hold) and turns everything else yellow at the configured rate, so the
//!   node sheds load while being worked on without dropping anyone.
//! - **Emergency** is all red: the node is contained.
//! - Violations vs warnings: missing encryption in transit exposes the data
//!   on the wire and no declared purpose makes any processing unlawful
//!   (GDPR Art. 5(1)(b)), so both are violations; missing encryption at rest
//!   and over-long retention are risks to fix, not reasons to cut traffic,
//!   so they are warnings. Class maxima: [`DataClass::retention_days_max`].

use std::fmt;

use crate::compiled::Verdict;
use crate::policy::{Consent, DataClass, Mode, Policy};

/// Whether the region passes `allowed_regions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllowList {
    /// The list is empty: every region allowed.
    Unrestricted,
    /// The region is in the list.
    Listed,
    /// The list is non-empty and the region is not in it.
    NotListed,
}

/// Everything the table looks at for one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Facts {
    pub mode: Mode,
    pub class: DataClass,
    /// The address is covered by no region table entry (the default rule).
    pub unmapped: bool,
    pub blocked: bool,
    pub allowed: AllowList,
    /// `None` = no consent recorded for the region.
    pub consent: Option<Consent>,
    pub encrypted_in_transit: bool,
    pub encrypted_at_rest: bool,
    /// `data.retention_days_max` exceeds the class maximum.
    pub retention_over_max: bool,
    /// `data.purposes` is non-empty.
    pub purposes_declared: bool,
}

/// The table row that decided, named by the policy clause it enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Clause {
    Emergency,
    Blocked,
    ConsentDenied,
    ConsentWithdrawn,
    NotAllowed,
    NoEncryptionInTransit,
    NoPurpose,
    SecureUnknownRegion,
    SecureConsentMissing,
    Maintenance,
    ConsentPending,
    ConsentMissing,
    NoEncryptionAtRest,
    RetentionOverMax,
    Clear,
}

impl Clause {
    /// Stable dotted name of the policy clause (the YAML field it is about).
    pub const fn name(self) -> &'static str {
        match self {
            Clause::Emergency => "mode.emergency",
            Clause::Blocked => "blocked_regions",
            Clause::ConsentDenied => "consent.denied",
            Clause::ConsentWithdrawn => "consent.withdrawn",
            Clause::NotAllowed => "allowed_regions",
            Clause::NoEncryptionInTransit => "data.encryption.in_transit",
            Clause::NoPurpose => "data.purposes",
            Clause::SecureUnknownRegion => "mode.secure.unknown_region",
            Clause::SecureConsentMissing => "mode.secure.consent_missing",
            Clause::Maintenance => "mode.maintenance",
            Clause::ConsentPending => "consent.pending",
            Clause::ConsentMissing => "consent.missing",
            Clause::NoEncryptionAtRest => "data.encryption.at_rest",
            Clause::RetentionOverMax => "data.retention_days_max",
            Clause::Clear => "clear",
        }
    }

    /// What the clause means, for reasons shown to operators.
    pub const fn description(self) -> &'static str {
        match self {
            Clause::Emergency => "emergency mode contains all traffic",
            Clause::Blocked => "region is blocked",
            Clause::ConsentDenied => "consent denied",
            Clause::ConsentWithdrawn => "consent withdrawn",
            Clause::NotAllowed => "violation: region is not in allowed_regions",
            Clause::NoEncryptionInTransit => {
                "violation: sensitive data without encryption in transit"
            }
            Clause::NoPurpose => "violation: sensitive data with no declared purpose",
            Clause::SecureUnknownRegion => "secure mode: address is in no region table entry",
            Clause::SecureConsentMissing => "secure mode: no consent recorded for sensitive data",
            Clause::Maintenance => "maintenance mode rate-limits all traffic",
            Clause::ConsentPending => "consent pending",
            Clause::ConsentMissing => "no consent recorded for sensitive data (treated as pending)",
            Clause::NoEncryptionAtRest => "warning: sensitive data without encryption at rest",
            Clause::RetentionOverMax => "warning: retention above the data class maximum",
            Clause::Clear => "no violation, warning or limit",
        }
    }
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.description())
    }
}

/// The light for a region and the clause that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    pub verdict: Verdict,
    pub clause: Clause,
}

const fn decide(verdict: Verdict, clause: Clause) -> Decision {
    Decision { verdict, clause }
}

/// The truth table (see the module docs); first matching row wins.
pub fn evaluate(f: &Facts) -> Decision {
    use Verdict::{Green, Red, Yellow};
    let sensitive = f.class.is_sensitive();
    // Public data never needs consent, so its consent entries are ignored.
    let consent = if f.class == DataClass::Public {
        Some(Consent::Granted)
    } else {
        f.consent
    };
    let consent_missing = sensitive && consent.is_none();

    if f.mode == Mode::Emergency {
        return decide(Red, Clause::Emergency);
    }
    if f.blocked {
        return decide(Red, Clause::Blocked);
    }
    match consent {
        Some(Consent::Denied) => return decide(Red, Clause::ConsentDenied),
        Some(Consent::Withdrawn) => return decide(Red, Clause::ConsentWithdrawn),
        _ => {}
    }
    if f.allowed == AllowList::NotListed {
        return decide(Red, Clause::NotAllowed);
    }
    if sensitive && !f.encrypted_in_transit {
        return decide(Red, Clause::NoEncryptionInTransit);
    }
    if sensitive && !f.purposes_declared {
        return decide(Red, Clause::NoPurpose);
    }
    if f.mode == Mode::Secure {
        if f.unmapped {
            return decide(Red, Clause::SecureUnknownRegion);
        }
        if consent_missing {
            return decide(Red, Clause::SecureConsentMissing);
        }
    }
    if f.mode == Mode::Maintenance {
        return decide(Yellow, Clause::Maintenance);
    }
    if consent == Some(Consent::Pending) {
        return decide(Yellow, Clause::ConsentPending);
    }
    if consent_missing {
        return decide(Yellow, Clause::ConsentMissing);
    }
    if sensitive && !f.encrypted_at_rest {
        return decide(Yellow, Clause::NoEncryptionAtRest);
    }
    if f.retention_over_max {
        return decide(Yellow, Clause::RetentionOverMax);
    }
    decide(Green, Clause::Clear)
}

/// The facts for `region` under `policy`; `unmapped` says the address is in
/// no table entry (the compiled default rule).
pub fn facts(policy: &Policy, region: &str, unmapped: bool) -> Facts {
    let allowed = if policy.allowed_regions.is_empty() {
        AllowList::Unrestricted
    } else if policy.allowed_regions.contains(region) {
        AllowList::Listed
    } else {
        AllowList::NotListed
    };
    let class = policy.data.class;
    Facts {
        mode: policy.mode,
        class,
        unmapped,
        blocked: policy.blocked_regions.contains(region),
        allowed,
        consent: policy.consent.get(region).copied(),
        encrypted_in_transit: policy.data.encryption.in_transit,
        encrypted_at_rest: policy.data.encryption.at_rest,
        retention_over_max: class
            .retention_days_max()
            .is_some_and(|max| policy.data.retention_days_max > max),
        purposes_declared: !policy.data.purposes.is_empty(),
    }
}

/// [`evaluate`] of [`facts`].
pub fn evaluate_region(policy: &Policy, region: &str, unmapped: bool) -> Decision {
    evaluate(&facts(policy, region, unmapped))
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
