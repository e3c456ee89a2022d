use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::*;
use crate::eval::Clause;
use crate::policy::{Consent, Mode, region_of};

const EXAMPLE: &str = include_str!("../../../policy/biso.example.yaml");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn example_policy_loads_and_compiles_to_the_documented_lights() {
    let policy = load_policy(EXAMPLE).unwrap();
    let compiled = compile(&policy, 7).unwrap();
    assert_eq!(compiled.version, 7);
    assert_eq!(compiled.policy_digest, policy.digest().unwrap().to_bytes());
    assert_eq!(compiled.v4.len(), 4);
    assert_eq!(compiled.v6.len(), 3);
    let light = |addr: &str| {
        let rule = compiled.lookup(ip(addr));
        (rule.verdict, compiled.reason(rule).to_string())
    };
    assert_eq!(
        light("10.1.2.3"),
        (
            Verdict::Green,
            "clear: region eu-west: no violation, warning or limit".into()
        )
    );
    assert_eq!(light("2001:db8:1::1").0, Verdict::Green);
    assert_eq!(
        light("10.2.0.1"),
        (
            Verdict::Yellow,
            "consent.pending: region eu-central: consent pending".into()
        )
    );
    assert_eq!(
        light("10.2.99.1"),
        (
            Verdict::Red,
            "consent.withdrawn: region eu-central-lab: consent withdrawn".into()
        )
    );
    assert_eq!(
        light("203.0.113.9"),
        (
            Verdict::Red,
            "blocked_regions: region xx-blocked: region is blocked".into()
        )
    );
    assert_eq!(light("2001:db8:dead::1").0, Verdict::Red);
    assert_eq!(
        light("192.0.2.1"),
        (
            Verdict::Red,
            "allowed_regions: region unknown (address in no region table entry): violation: region is not in allowed_regions".into()
        )
    );
    // One reason per distinct (region, clause): eu-west's two prefixes share one.
    assert_eq!(compiled.reasons.len(), 5);
    let eu_west_v4 = compiled.lookup(ip("10.1.0.1")).reason_id;
    assert_eq!(compiled.lookup(ip("2001:db8:1::1")).reason_id, eu_west_v4);
    // Yellow rules carry the bucket and sampling; others carry none.
    assert_eq!(
        *compiled.lookup(ip("10.2.0.1")),
        Rule {
            verdict: Verdict::Yellow,
            rate: RateLimit {
                rate_per_s: 1000,
                burst: 200
            },
            sample_one_in: 64,
            reason_id: compiled.lookup(ip("10.2.0.1")).reason_id,
        }
    );
    let green = compiled.lookup(ip("10.1.0.1"));
    assert_eq!(
        (green.rate, green.sample_one_in),
        (
            RateLimit {
                rate_per_s: 0,
                burst: 0
            },
            0
        )
    );
    assert_eq!(
        compiled.verdict_counts(),
        crate::VerdictCounts {
            green_count: 2,
            yellow_count: 2,
            red_count: 3
        }
    );
}

#[test]
fn mode_changes_recompile_every_rule() {
    let mut policy = load_policy(EXAMPLE).unwrap();
    policy.mode = Mode::Emergency;
    let compiled = compile(&policy, 1).unwrap();
    for rule in compiled
        .v4
        .iter()
        .map(|(_, r)| r)
        .chain(compiled.v6.iter().map(|(_, r)| r))
        .chain(std::iter::once(&compiled.default_rule))
    {
        assert_eq!(rule.verdict, Verdict::Red);
        assert!(compiled.reason(rule).starts_with(Clause::Emergency.name()));
    }
    assert_eq!(compiled.reasons.len(), 5, "{:?}", compiled.reasons);

    policy.mode = Mode::Maintenance;
    let compiled = compile(&policy, 2).unwrap();
    assert_eq!(compiled.lookup(ip("10.1.0.1")).verdict, Verdict::Yellow);
    assert_eq!(compiled.lookup(ip("203.0.113.1")).verdict, Verdict::Red);
}

/// xorshift64*: deterministic, so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const REGIONS: [&str; 6] = ["r0", "r1", "r2", "r3", "r4", "elsewhere"];

/// A random valid policy whose prefixes nest (so longest-prefix matters):
/// each prefix is either fresh under 10/8 or 2001:db8::/32, or a longer
/// prefix inside an earlier one.
fn random_policy(rng: &mut Rng) -> String {
    let mut v4: Vec<Ipv4Net> = Vec::new();
    let mut v6: Vec<Ipv6Net> = Vec::new();
    // Every region has one fixed entry so every name is defined.
    let mut lines: String = (0..5)
        .map(|i| format!("  - {{ cidr: 172.16.{i}.0/24, region: r{i} }}\n"))
        .collect();
    for _ in 0..(1 + rng.below(12)) {
        let region = rng.pick(&REGIONS[..5]);
        if rng.below(2) == 0 {
            let net = if !v4.is_empty() && rng.below(2) == 0 {
                let parent = *rng.pick(&v4);
                let len = (parent.prefix_len() + 1 + rng.below(8) as u8).min(32);
                let addr = u32::from(parent.network())
                    | (rng.next() as u32
                        & !u32::MAX
                            .checked_shl(32 - u32::from(parent.prefix_len()))
                            .unwrap_or(0));
                Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc()
            } else {
                let len = 8 + rng.below(17) as u8;
                let addr = 0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff);
                Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc()
            };
            if !v4.contains(&net) {
                v4.push(net);
                lines.push_str(&format!("  - {{ cidr: {net}, region: {region} }}\n"));
            }
        } else {
            let net = if !v6.is_empty() && rng.below(2) == 0 {
                let parent = *rng.pick(&v6);
                let len = (parent.prefix_len() + 1 + rng.below(40) as u8).min(128);
                let host = (u128::from(rng.next()) << 64 | u128::from(rng.next()))
                    & !u128::MAX
                        .checked_shl(128 - u32::from(parent.prefix_len()))
                        .unwrap_or(0);
                Ipv6Net::new(Ipv6Addr::from(u128::from(parent.network()) | host), len)
                    .unwrap()
                    .trunc()
            } else {
                let len = 32 + rng.below(33) as u8;
                let addr = (0x2001_0db8u128 << 96) | (u128::from(rng.next()) << 32);
                Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc()
            };
            if !v6.contains(&net) {
                v6.push(net);
                lines.push_str(&format!("  - {{ cidr: \"{net}\", region: {region} }}\n"));
            }
        }
    }
    let consents = ["granted", "pending", "denied", "withdrawn"];
    let mut consent = String::new();
    for region in REGIONS {
        if rng.below(3) != 0 {
            consent.push_str(&format!("  {region}: {}\n", rng.pick(&consents)));
        }
    }
    let blocked = if rng.below(3) == 0 { "[r4]" } else { "[]" };
    let allowed = if rng.below(3) == 0 {
        "[r0, r1, elsewhere]"
    } else {
        "[]"
    };
    format!(
        "version: 1\nmode: {}\ndata: {{ class: {}, purposes: [x], encryption: {{ in_transit: true, at_rest: {} }}, retention_days_max: {} }}\nregions:\n{lines}unknown_region: elsewhere\nallowed_regions: {allowed}\nblocked_regions: {blocked}\nconsent:\n{consent}yellow: {{ rate_per_s: 5, burst: 9, sample_one_in: 3 }}\n",
        rng.pick(&["normal", "secure", "maintenance", "normal"]),
        rng.pick(&["PII", "PHI", "PCI", "General", "Public"]),
        rng.pick(&["true", "false"]),
        rng.pick(&[30, 400, 5000]),
    )
}

fn expected(policy: &Policy, addr: IpAddr) -> (Verdict, String) {
    let (region, covered) = region_of(policy, addr);
    let decision = evaluate_region(policy, region, !covered);
    (decision.verdict, reason_text(region, !covered, &decision))
}

#[test]
fn lookup_inside_each_region_cidr_gives_that_regions_light() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0usize;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let text = random_policy(&mut rng);
        let policy = load_policy(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let compiled = compile(&policy, 1).unwrap();
        let check = |addr: IpAddr, region: Option<&str>| {
            let rule = compiled.lookup(addr);
            let want = expected(&policy, addr);
            assert_eq!(
                (rule.verdict, compiled.reason(rule).to_string()),
                want,
                "{addr}\n{text}"
            );
            if let Some(region) = region {
                // The entry's own region decides unless a longer entry covers it.
                if region_of(&policy, addr).0 == region {
                    assert_eq!(want, {
                        let d = evaluate_region(&policy, region, false);
                        (d.verdict, reason_text(region, false, &d))
                    });
                }
            }
        };
        for (net, region) in &policy.regions_v4 {
            for addr in [
                net.network(),
                net.broadcast(),
                Ipv4Addr::from(
                    u32::from(net.network()) | (rng.next() as u32 & !u32::from(net.netmask())),
                ),
            ] {
                check(IpAddr::V4(addr), Some(region));
                // The same address as IPv4-mapped IPv6 gets the same light.
                let mapped = compiled.lookup(IpAddr::V6(addr.to_ipv6_mapped()));
                assert_eq!(mapped, compiled.lookup(IpAddr::V4(addr)));
                checked += 1;
            }
        }
        for (net, region) in &policy.regions_v6 {
            let host = (u128::from(rng.next()) << 64 | u128::from(rng.next()))
                & !u128::from(net.netmask());
            for addr in [
                net.network(),
                net.broadcast(),
                Ipv6Addr::from(u128::from(net.network()) | host),
            ] {
                check(IpAddr::V6(addr), Some(region));
                checked += 1;
            }
        }
        // Addresses outside every entry get the default rule.
        check(ip("192.0.2.1"), None);
        check(ip("2001:db9::1"), None);
        assert_eq!(*compiled.lookup(ip("192.0.2.1")), compiled.default_rule);
        seen.extend(compiled.v4.iter().map(|(_, r)| r.verdict));
        seen.extend(compiled.v6.iter().map(|(_, r)| r.verdict));
        // No two reasons are equal.
        let mut sorted = compiled.reasons.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), compiled.reasons.len());
    }
    assert!(checked > 2000, "only {checked} addresses checked");
    assert_eq!(
        seen.len(),
        3,
        "the random policies must produce every light"
    );
}

#[test]
fn consent_states_compile_to_their_lights() {
    for (state, verdict) in [
        (Consent::Granted, Verdict::Green),
        (Consent::Pending, Verdict::Yellow),
        (Consent::Denied, Verdict::Red),
        (Consent::Withdrawn, Verdict::Red),
    ] {
        let mut policy = load_policy(EXAMPLE).unwrap();
        policy.consent.insert("eu-west".into(), state);
        let compiled = compile(&policy, 1).unwrap();
        assert_eq!(compiled.lookup(ip("10.1.0.1")).verdict, verdict, "{state}");
    }
}
