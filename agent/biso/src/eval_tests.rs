//! The truth table of the module docs, written a second time as data (one
//! pattern per row, wildcards for "any"), checked against `evaluate` over
//! every combination of inputs; each row must decide at least one case.

use super::*;
use crate::compiled::Verdict::{Green, Red, Yellow};
use crate::policy::load_policy;

const SENSITIVE: &[DataClass] = &[DataClass::PII, DataClass::PHI, DataClass::PCI];
const NOT_PUBLIC: &[DataClass] = &[
    DataClass::PII,
    DataClass::PHI,
    DataClass::PCI,
    DataClass::General,
];

/// `None` = any value.
#[derive(Clone, Copy)]
struct Row {
    mode: Option<Mode>,
    class: Option<&'static [DataClass]>,
    unmapped: Option<bool>,
    blocked: Option<bool>,
    allowed: Option<AllowList>,
    consent: Option<Option<Consent>>,
    in_transit: Option<bool>,
    at_rest: Option<bool>,
    retention_over: Option<bool>,
    purposes: Option<bool>,
    verdict: Verdict,
    clause: Clause,
}

const ANY: Row = Row {
    mode: None,
    class: None,
    unmapped: None,
    blocked: None,
    allowed: None,
    consent: None,
    in_transit: None,
    at_rest: None,
    retention_over: None,
    purposes: None,
    verdict: Green,
    clause: Clause::Clear,
};

const TABLE: [Row; 15] = [
    Row {
        mode: Some(Mode::Emergency),
        verdict: Red,
        clause: Clause::Emergency,
        ..ANY
    },
    Row {
        blocked: Some(true),
        verdict: Red,
        clause: Clause::Blocked,
        ..ANY
    },
    Row {
        class: Some(NOT_PUBLIC),
        consent: Some(Some(Consent::Denied)),
        verdict: Red,
        clause: Clause::ConsentDenied,
        ..ANY
    },
    Row {
        class: Some(NOT_PUBLIC),
        consent: Some(Some(Consent::Withdrawn)),
        verdict: Red,
        clause: Clause::ConsentWithdrawn,
        ..ANY
    },
    Row {
        allowed: Some(AllowList::NotListed),
        verdict: Red,
        clause: Clause::NotAllowed,
        ..ANY
    },
    Row {
        class: Some(SENSITIVE),
        in_transit: Some(false),
        verdict: Red,
        clause: Clause::NoEncryptionInTransit,
        ..ANY
    },
    Row {
        class: Some(SENSITIVE),
        purposes: Some(false),
        verdict: Red,
        clause: Clause::NoPurpose,
        ..ANY
    },
    Row {
        mode: Some(Mode::Secure),
        unmapped: Some(true),
        verdict: Red,
        clause: Clause::SecureUnknownRegion,
        ..ANY
    },
    Row {
        mode: Some(Mode::Secure),
        class: Some(SENSITIVE),
        consent: Some(None),
        verdict: Red,
        clause: Clause::SecureConsentMissing,
        ..ANY
    },
    Row {
        mode: Some(Mode::Maintenance),
        verdict: Yellow,
        clause: Clause::Maintenance,
        ..ANY
    },
    Row {
        class: Some(NOT_PUBLIC),
        consent: Some(Some(Consent::Pending)),
        verdict: Yellow,
        clause: Clause::ConsentPending,
        ..ANY
    },
    Row {
        class: Some(SENSITIVE),
        consent: Some(None),
        verdict: Yellow,
        clause: Clause::ConsentMissing,
        ..ANY
    },
    Row {
        class: Some(SENSITIVE),
        at_rest: Some(false),
        verdict: Yellow,
        clause: Clause::NoEncryptionAtRest,
        ..ANY
    },
    Row {
        retention_over: Some(true),
        verdict: Yellow,
        clause: Clause::RetentionOverMax,
        ..ANY
    },
    ANY,
];

fn is<T: PartialEq>(pattern: Option<T>, value: T) -> bool {
    pattern.is_none_or(|p| p == value)
}

impl Row {
    fn matches(&self, f: &Facts) -> bool {
        is(self.mode, f.mode)
            && self.class.is_none_or(|cs| cs.contains(&f.class))
            && is(self.unmapped, f.unmapped)
            && is(self.blocked, f.blocked)
            && is(self.allowed, f.allowed)
            && is(self.consent, f.consent)
            && is(self.in_transit, f.encrypted_in_transit)
            && is(self.at_rest, f.encrypted_at_rest)
            && is(self.retention_over, f.retention_over_max)
            && is(self.purposes, f.purposes_declared)
    }
}

fn all_facts() -> Vec<Facts> {
    let bools = [false, true];
    let consents = [
        None,
        Some(Consent::Granted),
        Some(Consent::Pending),
        Some(Consent::Denied),
        Some(Consent::Withdrawn),
    ];
    let allowed = [
        AllowList::Unrestricted,
        AllowList::Listed,
        AllowList::NotListed,
    ];
    let mut out = Vec::new();
    for mode in Mode::ALL {
        for class in DataClass::ALL {
            for unmapped in bools {
                for blocked in bools {
                    for allowed in allowed {
                        for consent in consents {
                            for encrypted_in_transit in bools {
                                for encrypted_at_rest in bools {
                                    for retention_over_max in bools {
                                        for purposes_declared in bools {
                                            out.push(Facts {
                                                mode,
                                                class,
                                                unmapped,
                                                blocked,
                                                allowed,
                                                consent,
                                                encrypted_in_transit,
                                                encrypted_at_rest,
                                                retention_over_max,
                                                purposes_declared,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_combination_is_decided_by_the_first_matching_row() {
    let cases = all_facts();
    assert_eq!(cases.len(), 4 * 5 * 2 * 2 * 3 * 5 * 2 * 2 * 2 * 2);
    let mut hits = [0usize; TABLE.len()];
    for f in &cases {
        let (index, row) = TABLE
            .iter()
            .enumerate()
            .find(|(_, row)| row.matches(f))
            .expect("the last row matches everything");
        hits[index] += 1;
        let got = evaluate(f);
        assert_eq!(
            got,
            Decision {
                verdict: row.verdict,
                clause: row.clause
            },
            "row {} should decide {f:?}",
            index + 1
        );
    }
    for (index, count) in hits.iter().enumerate() {
        assert!(*count > 0, "row {} decides no case", index + 1);
    }
}

fn clean(mode: Mode, class: DataClass) -> Facts {
    Facts {
        mode,
        class,
        unmapped: false,
        blocked: false,
        allowed: AllowList::Listed,
        consent: Some(Consent::Granted),
        encrypted_in_transit: true,
        encrypted_at_rest: true,
        retention_over_max: false,
        purposes_declared: true,
    }
}

#[test]
fn spec_precedence_rules_hold_everywhere() {
    for f in all_facts() {
        let d = evaluate(&f);
        // Emergency contains everything.
        if f.mode == Mode::Emergency {
            assert_eq!(d.verdict, Red, "{f:?}");
        }
        // A blocked region always wins.
        if f.blocked {
            assert_eq!(d.verdict, Red, "{f:?}");
        }
        // Denied / withdrawn consent is red for any class that uses consent.
        if f.class != DataClass::Public
            && matches!(f.consent, Some(Consent::Denied | Consent::Withdrawn))
        {
            assert_eq!(d.verdict, Red, "{f:?}");
        }
        // Any violation is red.
        let sensitive = f.class.is_sensitive();
        if f.allowed == AllowList::NotListed
            || (sensitive && (!f.encrypted_in_transit || !f.purposes_declared))
        {
            assert_eq!(d.verdict, Red, "{f:?}");
        }
        // Pending never gets green.
        if f.class != DataClass::Public && f.consent == Some(Consent::Pending) {
            assert_ne!(d.verdict, Green, "{f:?}");
        }
        // A warning never leaves green.
        if f.retention_over_max || (sensitive && !f.encrypted_at_rest) {
            assert_ne!(d.verdict, Green, "{f:?}");
        }
        // Maintenance is never green.
        if f.mode == Mode::Maintenance {
            assert_ne!(d.verdict, Green, "{f:?}");
        }
    }
}

#[test]
fn a_warning_turns_green_into_yellow_and_nothing_else() {
    for class in DataClass::ALL {
        let base = clean(Mode::Normal, class);
        assert_eq!(
            evaluate(&base),
            Decision {
                verdict: Green,
                clause: Clause::Clear
            }
        );
        let warned = Facts {
            retention_over_max: true,
            ..base
        };
        assert_eq!(
            evaluate(&warned),
            Decision {
                verdict: Yellow,
                clause: Clause::RetentionOverMax
            }
        );
        // A warning on top of a red stays red with the red's clause.
        let red = Facts {
            retention_over_max: true,
            blocked: true,
            ..base
        };
        assert_eq!(
            evaluate(&red),
            Decision {
                verdict: Red,
                clause: Clause::Blocked
            }
        );
    }
}

#[test]
fn public_never_needs_consent_but_general_honours_a_refusal() {
    for consent in [None, Some(Consent::Pending), Some(Consent::Denied)] {
        let public = Facts {
            consent,
            ..clean(Mode::Normal, DataClass::Public)
        };
        assert_eq!(evaluate(&public).verdict, Green, "{consent:?}");
        let secure_public = Facts {
            consent,
            ..clean(Mode::Secure, DataClass::Public)
        };
        assert_eq!(evaluate(&secure_public).verdict, Green, "{consent:?}");
    }
    let general = |consent| {
        evaluate(&Facts {
            consent,
            ..clean(Mode::Normal, DataClass::General)
        })
    };
    assert_eq!(general(None).verdict, Green);
    assert_eq!(general(Some(Consent::Pending)).verdict, Yellow);
    assert_eq!(general(Some(Consent::Denied)).verdict, Red);
    assert_eq!(
        general(Some(Consent::Withdrawn)),
        Decision {
            verdict: Red,
            clause: Clause::ConsentWithdrawn
        }
    );
}

#[test]
fn secure_mode_closes_unknown_region_and_missing_consent() {
    let unmapped = Facts {
        unmapped: true,
        ..clean(Mode::Secure, DataClass::General)
    };
    assert_eq!(
        evaluate(&unmapped),
        Decision {
            verdict: Red,
            clause: Clause::SecureUnknownRegion
        }
    );
    // The same address in Normal mode is green.
    assert_eq!(
        evaluate(&Facts {
            mode: Mode::Normal,
            ..unmapped
        })
        .verdict,
        Green
    );
    let no_consent = Facts {
        consent: None,
        ..clean(Mode::Secure, DataClass::PHI)
    };
    assert_eq!(
        evaluate(&no_consent),
        Decision {
            verdict: Red,
            clause: Clause::SecureConsentMissing
        }
    );
    assert_eq!(
        evaluate(&Facts {
            mode: Mode::Normal,
            ..no_consent
        }),
        Decision {
            verdict: Yellow,
            clause: Clause::ConsentMissing
        }
    );
}

#[test]
fn maintenance_keeps_reds_and_makes_the_rest_yellow() {
    let ok = clean(Mode::Maintenance, DataClass::PII);
    assert_eq!(
        evaluate(&ok),
        Decision {
            verdict: Yellow,
            clause: Clause::Maintenance
        }
    );
    let refused = Facts {
        consent: Some(Consent::Denied),
        ..ok
    };
    assert_eq!(
        evaluate(&refused),
        Decision {
            verdict: Red,
            clause: Clause::ConsentDenied
        }
    );
    let violating = Facts {
        encrypted_in_transit: false,
        ..ok
    };
    assert_eq!(
        evaluate(&violating),
        Decision {
            verdict: Red,
            clause: Clause::NoEncryptionInTransit
        }
    );
}

const FACTS_POLICY: &str = "\
version: 1
mode: normal
data: { class: PCI, purposes: [billing], encryption: { in_transit: true, at_rest: true }, retention_days_max: 365 }
regions:
  - { cidr: 10.0.0.0/8, region: eu-west }
  - { cidr: 10.9.0.0/16, region: us-east }
unknown_region: elsewhere
allowed_regions: [eu-west, elsewhere]
blocked_regions: [us-east]
consent: { eu-west: granted }
yellow: { rate_per_s: 10, burst: 20 }
";

#[test]
fn facts_are_drawn_from_the_policy() {
    let policy = load_policy(FACTS_POLICY).unwrap();
    let eu = facts(&policy, "eu-west", false);
    assert_eq!(eu.allowed, AllowList::Listed);
    assert_eq!(eu.consent, Some(Consent::Granted));
    assert!(!eu.blocked && !eu.unmapped && !eu.retention_over_max && eu.purposes_declared);
    assert_eq!(evaluate(&eu).verdict, Green);
    let us = facts(&policy, "us-east", false);
    assert!(us.blocked);
    assert_eq!(us.allowed, AllowList::NotListed);
    assert_eq!(evaluate(&us).clause, Clause::Blocked);
    let other = facts(&policy, "elsewhere", true);
    assert!(other.unmapped);
    assert_eq!(other.consent, None);
    assert_eq!(evaluate(&other).clause, Clause::ConsentMissing);
}

#[test]
fn retention_is_over_the_max_only_above_the_class_maximum() {
    for (class, max) in [
        (DataClass::PCI, Some(365)),
        (DataClass::PII, Some(1095)),
        (DataClass::PHI, Some(2190)),
        (DataClass::General, None),
        (DataClass::Public, None),
    ] {
        assert_eq!(class.retention_days_max(), max);
        let mut policy = load_policy(FACTS_POLICY).unwrap();
        policy.data.class = class;
        policy.data.retention_days_max = max.unwrap_or(36_500);
        assert!(
            !facts(&policy, "eu-west", false).retention_over_max,
            "{class}"
        );
        if let Some(max) = max {
            policy.data.retention_days_max = max + 1;
            assert!(
                facts(&policy, "eu-west", false).retention_over_max,
                "{class}"
            );
        }
    }
}
