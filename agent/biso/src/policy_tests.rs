use super::*;

pub(crate) const BASE: &str = "\
version: 1
mode: normal
data:
  class: PII
  purposes: [billing]
  encryption: { in_transit: true, at_rest: true }
  retention_days_max: 30
regions:
  - { cidr: 10.1.0.0/16, region: eu-west }
  - { cidr: \"2001:db8:1::/48\", region: eu-west }
  - { cidr: 203.0.113.0/24, region: xx-blocked }
unknown_region: unknown
allowed_regions: [eu-west]
blocked_regions: [xx-blocked]
consent:
  eu-west: granted
yellow: { rate_per_s: 1000, burst: 200, sample_one_in: 64 }
";

/// `BASE` with the first `from` replaced by `to`, loaded; its errors as
/// (line, field, message).
fn errors(from: &str, to: &str) -> Vec<(u64, String, String)> {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    let text = BASE.replacen(from, to, 1);
    let err = load_policy(&text).expect_err("policy should be rejected");
    err.field_errors()
        .into_iter()
        .map(|e| (e.line, e.field, e.message))
        .collect()
}

fn one_error(from: &str, to: &str) -> (u64, String, String) {
    let mut all = errors(from, to);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn base_policy_loads_normalised() {
    let p = load_policy(BASE).unwrap();
    assert_eq!(p.mode, Mode::Normal);
    assert_eq!(p.data.class, DataClass::PII);
    assert_eq!(p.data.purposes.iter().collect::<Vec<_>>(), ["billing"]);
    assert_eq!(
        p.regions_v4,
        [
            ("10.1.0.0/16".parse().unwrap(), "eu-west".to_string()),
            ("203.0.113.0/24".parse().unwrap(), "xx-blocked".to_string()),
        ]
    );
    assert_eq!(
        p.regions_v6,
        [("2001:db8:1::/48".parse().unwrap(), "eu-west".to_string())]
    );
    assert_eq!(p.consent.get("eu-west"), Some(&Consent::Granted));
    assert_eq!(
        p.yellow,
        YellowLimits {
            rate_per_s: 1000,
            burst: 200,
            sample_one_in: 64
        }
    );
    assert_eq!(
        p.region_names().into_iter().collect::<Vec<_>>(),
        ["eu-west", "unknown", "xx-blocked"]
    );
}

#[test]
fn schema_errors_name_line_and_field() {
    let cases: [(&str, &str, u64, &str, &str); 7] = [
        (
            "mode: normal",
            "mode: nromal",
            2,
            "mode",
            "unknown variant `nromal`",
        ),
        (
            "  class: PII",
            "  class: pii",
            4,
            "data.class",
            "unknown variant `pii`",
        ),
        (
            "  retention_days_max: 30",
            "  retention_days_max: thirty",
            7,
            "data.retention_days_max",
            "invalid u32",
        ),
        (
            "  retention_days_max: 30",
            "  retention_days: 30",
            7,
            "data.retention_days",
            "unknown field `retention_days`",
        ),
        (
            "yellow: { rate_per_s: 1000,",
            "yellow: { rate_per_s: -1,",
            17,
            "yellow.rate_per_s",
            "",
        ),
        (
            "  eu-west: granted",
            "  eu-west: granted\n  eu-west: denied",
            17,
            "consent",
            "duplicate mapping key",
        ),
        (
            "  eu-west: granted",
            "  eu-west: maybe",
            16,
            "consent.eu-west",
            "unknown variant `maybe`",
        ),
    ];
    for (from, to, line, field, message) in cases {
        let (got_line, got_field, got_message) = one_error(from, to);
        assert_eq!(
            (got_line, got_field.as_str()),
            (line, field),
            "{to:?}: {got_message}"
        );
        assert!(got_message.contains(message), "{to:?}: {got_message}");
    }
}

#[test]
fn semantic_errors_name_line_and_field() {
    let cases: [(&str, &str, u64, &str, &str); 12] = [
        (
            "version: 1",
            "version: 2",
            1,
            "version",
            "unsupported policy format version 2",
        ),
        (
            "cidr: 10.1.0.0/16,",
            "cidr: 10.1.2.3/16,",
            9,
            "regions[0].cidr",
            "host bits set below the /16 prefix; did you mean 10.1.0.0/16",
        ),
        (
            "cidr: 10.1.0.0/16,",
            "cidr: 10.1.0.0/33,",
            9,
            "regions[0].cidr",
            "is not a CIDR",
        ),
        (
            "  - { cidr: 203.0.113.0/24, region: xx-blocked }",
            "  - { cidr: 203.0.113.0/24, region: xx-blocked }\n  - { cidr: 10.1.0.0/16, region: xx-blocked }",
            12,
            "regions[3].cidr",
            "duplicate CIDR 10.1.0.0/16: already regions[0] on line 9",
        ),
        (
            "cidr: 10.1.0.0/16,",
            "cidr: \"::ffff:10.1.0.0/112\",",
            9,
            "regions[0].cidr",
            "inside ::ffff:0:0/96",
        ),
        (
            "region: eu-west }",
            "region: EU_West }",
            9,
            "regions[0].region",
            "must be 1 to 64 bytes",
        ),
        (
            "allowed_regions: [eu-west]",
            "allowed_regions: [eu-west, xx-blocked]",
            14,
            "blocked_regions[0]",
            "in both allowed_regions and blocked_regions",
        ),
        (
            "allowed_regions: [eu-west]",
            "allowed_regions: [eu-wset]",
            13,
            "allowed_regions[0]",
            "region \"eu-wset\" is not named",
        ),
        (
            "  eu-west: granted",
            "  eu-west: granted\n  mars: pending",
            17,
            "consent.mars",
            "is not named",
        ),
        (
            "rate_per_s: 1000",
            "rate_per_s: 0",
            17,
            "yellow.rate_per_s",
            "must be at least 1",
        ),
        (
            "burst: 200",
            "burst: 0",
            17,
            "yellow.burst",
            "must be at least 1",
        ),
        (
            "purposes: [billing]",
            "purposes: [billing, billing]",
            5,
            "data.purposes[1]",
            "listed twice",
        ),
    ];
    for (from, to, line, field, message) in cases {
        let (got_line, got_field, got_message) = one_error(from, to);
        assert_eq!(
            (got_line, got_field.as_str()),
            (line, field),
            "{to:?}: {got_message}"
        );
        assert!(got_message.contains(message), "{to:?}: {got_message}");
    }
}

#[test]
fn every_semantic_error_is_reported_sorted_by_line() {
    let text = BASE
        .replacen("version: 1", "version: 9", 1)
        .replacen("burst: 200", "burst: 0", 1)
        .replacen("cidr: 10.1.0.0/16,", "cidr: 10.1.0.1/16,", 1);
    let err = load_policy(&text).unwrap_err();
    let fields: Vec<_> = err
        .field_errors()
        .into_iter()
        .map(|e| (e.line, e.field))
        .collect();
    assert_eq!(
        fields,
        [
            (1, "version".to_string()),
            (9, "regions[0].cidr".to_string()),
            (17, "yellow.burst".to_string()),
        ]
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with("invalid policy (3 errors):\nline 1 column 10: version: "),
        "{shown}"
    );
}

#[test]
fn oversized_policy_is_refused_before_parsing() {
    let text = " ".repeat(crate::limits::POLICY_SOURCE_LEN_BYTES_MAX + 1);
    assert_eq!(
        load_policy(&text).unwrap_err(),
        PolicyError::TooLarge {
            len_bytes: crate::limits::POLICY_SOURCE_LEN_BYTES_MAX + 1,
            max_bytes: crate::limits::POLICY_SOURCE_LEN_BYTES_MAX,
        }
    );
}

#[test]
fn digest_ignores_layout_but_not_meaning() {
    let base = load_policy(BASE).unwrap();
    // Reordered table and lists, comments, different quoting: same policy.
    let reordered = BASE
        .replacen(
            "  - { cidr: 10.1.0.0/16, region: eu-west }\n",
            "# comment\n",
            1,
        )
        .replacen(
            "  - { cidr: 203.0.113.0/24, region: xx-blocked }\n",
            "  - { cidr: 203.0.113.0/24, region: xx-blocked }\n  - { cidr: '10.1.0.0/16', region: \"eu-west\" }\n",
            1,
        );
    let same = load_policy(&reordered).unwrap();
    assert_eq!(same, base);
    assert_eq!(same.digest().unwrap(), base.digest().unwrap());
    // Each meaningful change changes the digest.
    for (from, to) in [
        ("mode: normal", "mode: secure"),
        ("in_transit: true", "in_transit: false"),
        ("retention_days_max: 30", "retention_days_max: 31"),
        ("eu-west: granted", "eu-west: pending"),
        ("sample_one_in: 64", "sample_one_in: 65"),
        ("10.1.0.0/16", "10.1.0.0/17"),
    ] {
        let changed = load_policy(&BASE.replacen(from, to, 1)).unwrap();
        assert_ne!(changed.digest().unwrap(), base.digest().unwrap(), "{to}");
    }
}

#[test]
fn region_of_uses_longest_prefix_and_maps_v4_in_v6() {
    let text = BASE.replacen(
        "  - { cidr: 203.0.113.0/24, region: xx-blocked }\n",
        "  - { cidr: 203.0.113.0/24, region: xx-blocked }\n  - { cidr: 10.1.7.0/24, region: lab }\n",
        1,
    );
    let p = load_policy(&text).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(region_of(&p, ip("10.1.6.1")), ("eu-west", true));
    assert_eq!(region_of(&p, ip("10.1.7.1")), ("lab", true));
    assert_eq!(region_of(&p, ip("::ffff:10.1.7.1")), ("lab", true));
    assert_eq!(region_of(&p, ip("2001:db8:1::5")), ("eu-west", true));
    assert_eq!(region_of(&p, ip("192.0.2.1")), ("unknown", false));
    assert_eq!(region_of(&p, ip("2001:db8:2::5")), ("unknown", false));
}
