//! Every verdict and malformed case through BPF_PROG_TEST_RUN (needs root).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{PerCpuArray, PerCpuHashMap, PerCpuValues};
use metanode_biso::compiled::{CompiledPolicy, RateLimit, Rule, Verdict};

use crate::{
    AttachMode, Counters, FloorProgram, FloorRunError, TestRunError, TrafficLights, XdpAction,
    abi::{FrontAbi, SAMPLE_BYTES, VerdictAbi, front_index_v4},
    lights::{MAP_FRONT_V4, MAP_VERDICTS_V4},
    limits::{SAMPLES_RING_BYTES, V4_PREFIXES_MAX},
    render_prometheus,
    test_packets::*,
    test_run_floor,
};

pub(crate) fn rule(
    verdict: Verdict,
    rate_per_s: u32,
    burst: u32,
    sample_one_in: u32,
    reason_id: u16,
) -> Rule {
    Rule {
        verdict,
        rate: RateLimit { rate_per_s, burst },
        sample_one_in,
        reason_id,
    }
}

pub(crate) fn green() -> Rule {
    rule(Verdict::Green, 0, 0, 0, 0)
}

pub(crate) fn red() -> Rule {
    rule(Verdict::Red, 0, 0, 0, 1)
}

pub(crate) fn policy(
    version: u64,
    default_rule: Rule,
    v4: &[(&str, Rule)],
    v6: &[(&str, Rule)],
) -> CompiledPolicy {
    CompiledPolicy {
        version,
        policy_digest: [7; 32],
        default_rule,
        v4: v4
            .iter()
            .map(|(net, r)| (net.parse().expect("test prefix"), *r))
            .collect(),
        v6: v6
            .iter()
            .map(|(net, r)| (net.parse().expect("test prefix"), *r))
            .collect(),
        reasons: vec![
            "allowed".into(),
            "blocked region".into(),
            "consent pending".into(),
        ],
    }
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

/// Keeps this test thread on CPU 0 so per-CPU caches, buckets and counters
/// see every run (BPF_PROG_TEST_RUN runs on the calling CPU).
pub(crate) fn pin_to_cpu0() {
    pin_to_cpu(0);
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data, valid zeroed; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: callers pass 0 or 1, within CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "pin to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

fn run(lights: &TrafficLights, packet: &[u8]) -> XdpAction {
    lights.test_run(packet, 1).expect("test run").action
}

fn loaded(p: &CompiledPolicy) -> TrafficLights {
    let mut lights = TrafficLights::load(None).expect("load BISO XDP program (root needed)");
    lights.apply(p).expect("apply");
    lights
}

/// The standard test policy: 10/8 green, 203.0.113/24 red, 198.51.100/24
/// yellow, 2001:db8:1::/48 green, 2001:db8:bad::/48 red, default green.
fn standard(version: u64, default_rule: Rule) -> CompiledPolicy {
    policy(
        version,
        default_rule,
        &[
            ("10.0.0.0/8", green()),
            ("203.0.113.0/24", red()),
            ("198.51.100.0/24", rule(Verdict::Yellow, 0, 4, 1, 2)),
        ],
        &[("2001:db8:1::/48", green()), ("2001:db8:bad::/48", red())],
    )
}

#[test]
fn before_any_policy_ip_passes_and_is_counted() {
    let lights = TrafficLights::load(None).expect("load");
    assert_eq!(
        run(&lights, &udp4(v4("203.0.113.9"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let c = lights.counters().expect("counters");
    assert_eq!(c.no_policy_packets, 1);
    assert_eq!(c.red_packets, 0);
}

#[test]
fn green_passes_red_drops_and_counts_packets_and_bytes() {
    let lights = loaded(&standard(1, green()));
    let g = udp4(v4("10.1.2.3"), v4("10.9.9.9"));
    let r = udp4(v4("203.0.113.77"), v4("10.9.9.9"));
    assert_eq!(run(&lights, &g), XdpAction::Pass);
    assert_eq!(run(&lights, &r), XdpAction::Drop);
    assert_eq!(run(&lights, &r), XdpAction::Drop);
    let c = lights.counters().expect("counters");
    assert_eq!(c.green_packets, 1);
    assert_eq!(c.green_bytes, g.len() as u64);
    assert_eq!(c.red_packets, 2);
    assert_eq!(c.red_bytes, 2 * r.len() as u64);
    assert_eq!(c.malformed.total(), 0);
}

#[test]
fn ipv4_outside_every_prefix_gets_the_default_rule() {
    let lights = loaded(&standard(1, red()));
    assert_eq!(
        run(&lights, &udp4(v4("192.0.2.1"), v4("10.9.9.9"))),
        XdpAction::Drop
    );
    assert_eq!(
        run(&lights, &udp4(v4("10.0.0.1"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let c = lights.counters().expect("counters");
    assert_eq!((c.red_packets, c.green_packets), (1, 1));

    let lights = loaded(&standard(1, green()));
    assert_eq!(
        run(&lights, &udp4(v4("192.0.2.1"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    // Longest prefix wins: a /32 red inside the green /8.
    let lights = loaded(&policy(
        1,
        green(),
        &[("10.0.0.0/8", green()), ("10.1.1.1/32", red())],
        &[],
    ));
    assert_eq!(
        run(&lights, &udp4(v4("10.1.1.1"), v4("10.9.9.9"))),
        XdpAction::Drop
    );
    assert_eq!(
        run(&lights, &udp4(v4("10.1.1.2"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
}

#[test]
fn yellow_passes_until_the_bucket_is_empty_then_drops_and_samples() {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let cpus = lights.possible_cpus();
    // Rate 0 (no refill) makes the outcome exact: each CPU's bucket holds
    // burst / cpus = 2 packets.
    let yellow = rule(Verdict::Yellow, 0, 2 * cpus, 1, 2);
    lights
        .apply(&policy(5, green(), &[("198.51.100.0/24", yellow)], &[]))
        .expect("apply");
    let packet = udp4(v4("198.51.100.7"), v4("10.9.9.9"));
    let actions: Vec<_> = (0..5).map(|_| run(&lights, &packet)).collect();
    assert_eq!(
        actions,
        [
            XdpAction::Pass,
            XdpAction::Pass,
            XdpAction::Drop,
            XdpAction::Drop,
            XdpAction::Drop
        ]
    );
    // Another source has its own bucket.
    assert_eq!(
        run(&lights, &udp4(v4("198.51.100.8"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let c = lights.counters().expect("counters");
    assert_eq!(c.yellow_pass_packets, 3);
    assert_eq!(c.yellow_limited_packets, 3);
    assert_eq!(c.yellow_limited_bytes, 3 * packet.len() as u64);
    assert_eq!(c.samples, 6);

    let samples = lights.drain_samples(100);
    assert_eq!(samples.len(), 6);
    let passed: Vec<bool> = samples.iter().map(|s| s.passed).collect();
    assert_eq!(passed, [true, true, false, false, false, true]);
    let first = &samples[0];
    assert_eq!(first.source, IpAddr::V4(v4("198.51.100.7")));
    assert_eq!(first.destination, IpAddr::V4(v4("10.9.9.9")));
    assert_eq!((first.source_port, first.destination_port), (4000, 53));
    assert_eq!(first.protocol, PROTO_UDP);
    assert_eq!(first.verdict, Verdict::Yellow);
    assert_eq!(first.reason_id, 2);
    assert_eq!(first.policy_version, 5);
    assert_eq!(first.packet_len_bytes, packet.len() as u32);
    assert!(lights.drain_samples(100).is_empty());
}

#[test]
fn yellow_sampling_takes_one_in_n() {
    pin_to_cpu0();
    let mut lights = loaded(&policy(1, rule(Verdict::Yellow, 0, 1000, 4, 2), &[], &[]));
    let packet = udp4(v4("192.0.2.50"), v4("10.9.9.9"));
    assert_eq!(
        lights.test_run(&packet, 12).expect("run").action,
        XdpAction::Pass
    );
    assert_eq!(lights.drain_samples(100).len(), 3);
    assert_eq!(lights.counters().expect("counters").samples, 3);
}

#[test]
fn a_full_sample_ring_counts_lost_samples_and_draining_makes_room() {
    pin_to_cpu0();
    // Every yellow packet sampled, bucket never empty.
    let mut lights = loaded(&policy(
        1,
        rule(Verdict::Yellow, u32::MAX, u32::MAX, 1, 2),
        &[],
        &[],
    ));
    let packet = udp4(v4("192.0.2.60"), v4("10.9.9.9"));
    // A ring record is the 64-byte sample plus the ring's 8-byte header.
    let fit = (SAMPLES_RING_BYTES as usize / (SAMPLE_BYTES + 8)) as u64;
    let sent = fit + 100;
    let result = lights
        .test_run(&packet, u32::try_from(sent).expect("small"))
        .expect("run");
    assert_eq!(result.action, XdpAction::Pass);
    let c = lights.counters().expect("counters");
    assert_eq!(c.yellow_pass_packets, sent);
    assert_eq!(c.samples, fit);
    assert_eq!(c.samples_lost, 100);
    assert_eq!(lights.drain_samples(usize::MAX).len() as u64, fit);
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    let c = lights.counters().expect("counters");
    assert_eq!((c.samples, c.samples_lost), (fit + 1, 100));
}

#[test]
fn yellow_bucket_refills_with_elapsed_time() {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let cpus = lights.possible_cpus();
    // 1 packet/s per CPU after division; burst 1 packet per CPU.
    let yellow = rule(Verdict::Yellow, cpus, cpus, 0, 2);
    lights
        .apply(&policy(1, green(), &[("198.51.100.0/24", yellow)], &[]))
        .expect("apply");
    let packet = udp4(v4("198.51.100.9"), v4("10.9.9.9"));
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    // Instead of sleeping, age the bucket: empty, last refilled at 1 ns
    // after boot, so the next packet sees a full refill.
    let key = src4("198.51.100.9");
    let mut values = cache_entry(&mut lights, &key).expect("cached after one packet");
    for value in values.iter_mut() {
        value.credit = 0;
        value.last_ns = 1;
    }
    set_cache_entry(&mut lights, &key, values);
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    // ... and an empty bucket last touched now does not refill.
    let values = cache_entry(&mut lights, &key).expect("cached");
    assert_eq!(values[0].credit, 0, "one packet per CPU burst was taken");
    assert!(values[0].last_ns > 1);
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that we own.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn a_yellow_bucket_reads_the_coarse_clock_unless_it_fills_within_twelve_ticks() {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let tick_ns = lights.coarse_tick_ns();
    assert!(
        (1_000_000..=10_000_000).contains(&tick_ns),
        "coarse tick {tick_ns} ns (1/HZ)"
    );
    // Fills in 100 us: precise. Fills in 2 s: coarse.
    let fast = rule(Verdict::Yellow, 1_000_000, 100, 0, 2);
    let slow = rule(Verdict::Yellow, 1_000, 2_000, 0, 2);
    lights
        .apply(&policy(
            1,
            green(),
            &[("198.51.100.0/25", fast), ("198.51.100.128/25", slow)],
            &[],
        ))
        .expect("apply");
    let read = |lights: &mut TrafficLights, source: &str| {
        let values = cache_entry(lights, &src4(source)).expect("cached");
        (values[0].rule.flags, values[0].last_ns)
    };

    let (mono_before, coarse_before) = (
        clock_ns(libc::CLOCK_MONOTONIC),
        clock_ns(libc::CLOCK_MONOTONIC_COARSE),
    );
    assert_eq!(
        run(&lights, &udp4(v4("198.51.100.7"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    assert_eq!(
        run(&lights, &udp4(v4("198.51.100.200"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let (mono_after, coarse_after) = (
        clock_ns(libc::CLOCK_MONOTONIC),
        clock_ns(libc::CLOCK_MONOTONIC_COARSE),
    );
    let (flags, last_ns) = read(&mut lights, "198.51.100.7");
    assert_eq!(flags, crate::abi::RULE_PRECISE_CLOCK);
    assert!(
        (mono_before..=mono_after).contains(&last_ns),
        "precise bucket time {last_ns} outside [{mono_before}, {mono_after}]"
    );
    let (flags, last_ns) = read(&mut lights, "198.51.100.200");
    assert_eq!(flags, 0);
    assert!(
        (coarse_before..=coarse_after).contains(&last_ns),
        "coarse bucket time {last_ns} outside [{coarse_before}, {coarse_after}]"
    );

    // last_ns never moves back (a swap can move a bucket from the precise
    // clock to the coarse one, which reads earlier): a bucket last refilled
    // "in the future" gets nothing now and keeps its time, so no time is
    // granted twice.
    let key = src4("198.51.100.200");
    let mut values = cache_entry(&mut lights, &key).expect("cached");
    let ahead = clock_ns(libc::CLOCK_MONOTONIC) + 1_000_000_000;
    for v in values.iter_mut() {
        v.credit = 0;
        v.last_ns = ahead;
    }
    set_cache_entry(&mut lights, &key, values);
    assert_eq!(
        run(&lights, &udp4(v4("198.51.100.200"), v4("10.9.9.9"))),
        XdpAction::Drop
    );
    let (_, last_ns) = read(&mut lights, "198.51.100.200");
    assert_eq!(last_ns, ahead);
}

/// A coarse bucket on 1,000 packets/s per CPU with a burst of 1,000 per CPU
/// (a second to fill), for source `source` (cached after one packet on CPU
/// 0); returns the lights, the tick, and the bucket's credit_max and cost.
fn coarse_bucket(source: &str) -> (TrafficLights, u64, u64, u64) {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let cpus = lights.possible_cpus();
    let tick_ns = lights.coarse_tick_ns();
    let yellow = rule(Verdict::Yellow, 1_000 * cpus, 1_000 * cpus, 0, 2);
    lights
        .apply(&policy(1, green(), &[("198.51.100.0/24", yellow)], &[]))
        .expect("apply");
    assert_eq!(
        run(&lights, &udp4(v4(source), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let values = cache_entry(&mut lights, &src4(source)).expect("cached");
    let rule = values[0].rule;
    assert_eq!(rule.flags, 0, "a second to fill: the coarse clock");
    (lights, tick_ns, rule.credit_max, rule.cost_credit)
}

/// A fresh coarse-clock bucket admits its burst minus the ticks of rate it
/// holds back, plus at most what refills while the run lasts.
#[test]
fn a_coarse_bucket_never_admits_its_whole_burst_at_once() {
    let (mut lights, _, credit_max, cost) = coarse_bucket("198.51.100.50");
    let key = src4("198.51.100.50");
    // Full again, as a fresh source is.
    let mut values = cache_entry(&mut lights, &key).expect("cached");
    for v in values.iter_mut() {
        v.last_ns = 0;
    }
    set_cache_entry(&mut lights, &key, values);
    let before = lights.counters().expect("counters").yellow_pass_packets;
    let coarse_before = clock_ns(libc::CLOCK_MONOTONIC_COARSE);
    lights
        .test_run(&udp4(v4("198.51.100.50"), v4("10.9.9.9")), 3_000)
        .expect("run");
    let coarse_advance_ns = clock_ns(libc::CLOCK_MONOTONIC_COARSE) - coarse_before;
    let passed = lights.counters().expect("counters").yellow_pass_packets - before;
    // The program's readings lie between the two coarse readings here, so
    // the run refills at most their difference, at 1 packet per ms (not
    // wall time, which a loaded machine stretches).
    let refill_max = coarse_advance_ns.div_ceil(1_000_000);
    let held = credit_max / cost;
    assert!(held < 1_000, "credit_max {credit_max}: nothing held back");
    assert!(
        passed >= held && passed <= held + refill_max,
        "passed {passed}: holds {held}, refill at most {refill_max}"
    );
}

/// The bug a review found in the first coarse-clock version: a bucket
/// drained now but stamped with a coarse reading ticks ago gets that time
/// again at the next refill. With the hold-back, what it then admits plus
/// the burst it holds stays within the configured burst plus what the run
/// itself may refill.
#[test]
fn a_drained_bucket_stamped_late_stays_within_the_burst() {
    let (mut lights, tick_ns, credit_max, cost) = coarse_bucket("198.51.100.60");
    let key = src4("198.51.100.60");
    let stamped = clock_ns(libc::CLOCK_MONOTONIC_COARSE) - 3 * tick_ns;
    let mut values = cache_entry(&mut lights, &key).expect("cached");
    for v in values.iter_mut() {
        v.credit = 0;
        v.last_ns = stamped;
    }
    set_cache_entry(&mut lights, &key, values);
    let before = lights.counters().expect("counters").yellow_pass_packets;
    let coarse_before = clock_ns(libc::CLOCK_MONOTONIC_COARSE);
    lights
        .test_run(&udp4(v4("198.51.100.60"), v4("10.9.9.9")), 1_000)
        .expect("run");
    let coarse_advance_ns = clock_ns(libc::CLOCK_MONOTONIC_COARSE) - coarse_before;
    let passed = lights.counters().expect("counters").yellow_pass_packets - before;
    assert!(passed >= 1, "three ticks of refill admit something");
    // As above: what the run itself may refill, by the coarse clock.
    let run_refill_max = coarse_advance_ns.div_ceil(1_000_000);
    assert!(
        credit_max / cost + passed <= 1_000 + run_refill_max,
        "holds {} and then admitted {passed}: more than the burst of 1000 + {run_refill_max}",
        credit_max / cost
    );
}

/// A swap settles a cached yellow bucket at the precise time under its old
/// rule before the new rule applies, so a higher new rate never refills the
/// time the old rule's lagging coarse reading had not reached.
#[test]
fn a_swap_settles_the_bucket_at_the_precise_time() {
    let (mut lights, tick_ns, _, _) = coarse_bucket("198.51.100.70");
    let key = src4("198.51.100.70");
    let mut values = cache_entry(&mut lights, &key).expect("cached");
    for v in values.iter_mut() {
        v.credit = 0;
        v.last_ns = clock_ns(libc::CLOCK_MONOTONIC_COARSE) - 3 * tick_ns;
    }
    set_cache_entry(&mut lights, &key, values);
    let cpus = lights.possible_cpus();
    let faster = rule(Verdict::Yellow, 100_000 * cpus, 100_000 * cpus, 0, 2);
    lights
        .apply(&policy(2, green(), &[("198.51.100.0/24", faster)], &[]))
        .expect("apply");
    let before = clock_ns(libc::CLOCK_MONOTONIC);
    assert_eq!(
        run(&lights, &udp4(v4("198.51.100.70"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let values = cache_entry(&mut lights, &key).expect("cached");
    assert_eq!(values[0].rule.rate_per_s, 100_000 * cpus, "the new rule");
    assert!(
        values[0].last_ns >= before,
        "settled at {} before the precise time {before}",
        values[0].last_ns
    );
}

/// The verdict cache key of an IPv4 source.
fn src4(s: &str) -> [u8; 4] {
    v4(s).octets()
}

/// The per-CPU verdict cache values of `key` (index = CPU) in its front
/// slot, if CPU 0's slot holds it; another CPU's value is the default there
/// unless its slot holds `key` too.
fn cache_entry(lights: &mut TrafficLights, key: &[u8; 4]) -> Option<Vec<VerdictAbi>> {
    let slots = front_slot(lights, *key);
    let holds = |f: &FrontAbi| f.v.generation != 0 && f.src == front_src(*key);
    if !holds(slots.first()?) {
        return None;
    }
    Some(
        slots
            .iter()
            .map(|f| if holds(f) { f.v } else { VerdictAbi::default() })
            .collect(),
    )
}

/// Writes `values` (index = CPU) into the front slot of `key`.
fn set_cache_entry(lights: &mut TrafficLights, key: &[u8; 4], values: Vec<VerdictAbi>) {
    let map = lights.ebpf_mut().map_mut(MAP_FRONT_V4).expect("front map");
    let mut front: PerCpuArray<_, FrontAbi> = PerCpuArray::try_from(map).expect("front map type");
    let slots: Vec<FrontAbi> = values
        .into_iter()
        .map(|v| FrontAbi {
            v,
            src: front_src(*key),
        })
        .collect();
    let slots = PerCpuValues::try_from(slots).expect("per-cpu values");
    front
        .set(front_index_v4(*key), slots, 0)
        .expect("write front slot");
}

/// The per-CPU values of the front slot `key` maps to, whoever holds it.
fn front_slot(lights: &mut TrafficLights, key: [u8; 4]) -> Vec<FrontAbi> {
    let map = lights.ebpf_mut().map_mut(MAP_FRONT_V4).expect("front map");
    let front: PerCpuArray<_, FrontAbi> = PerCpuArray::try_from(map).expect("front map type");
    front
        .get(&front_index_v4(key), 0)
        .expect("read front slot")
        .to_vec()
}

fn front_src(key: [u8; 4]) -> [u8; 16] {
    let mut src = [0; 16];
    src[..4].copy_from_slice(&key);
    src
}

/// The IPv4 sources in the LRU behind the front, with CPU 0's value.
fn lru_entries(lights: &mut TrafficLights) -> Vec<([u8; 4], VerdictAbi)> {
    let map = lights
        .ebpf_mut()
        .map_mut(MAP_VERDICTS_V4)
        .expect("cache map");
    let cache: PerCpuHashMap<_, [u8; 4], VerdictAbi> =
        PerCpuHashMap::try_from(map).expect("cache map type");
    cache
        .iter()
        .map(|entry| {
            let (key, values) = entry.expect("read LRU entry");
            (key, values[0])
        })
        .collect()
}

/// The first address after `after` in `net` whose front slot is `of`'s.
/// The addresses of one /16 all map to distinct slots (the varying bytes
/// are the top 16 bits of the word, times an odd number), so `net` must be
/// wider.
fn colliding_v4(of: Ipv4Addr, net: &str, after: Ipv4Addr) -> Ipv4Addr {
    let net: ipnet::Ipv4Net = net.parse().expect("test prefix");
    let slot = front_index_v4(of.octets());
    net.hosts()
        .skip_while(|a| *a <= after)
        .find(|a| *a != of && front_index_v4(a.octets()) == slot)
        .expect("a colliding address in the prefix")
}

/// Makes the cache entry of `key` say `verdict` under its current
/// generation on every CPU: only a packet that trusts the cache sees it.
fn forge_cached_verdict(lights: &mut TrafficLights, key: &[u8; 4], verdict: Verdict) {
    let mut values = cache_entry(lights, key).expect("cached");
    for value in values.iter_mut() {
        value.rule.verdict = verdict as u8;
    }
    set_cache_entry(lights, key, values);
}

#[test]
fn a_cached_red_source_turns_green_right_after_a_swap() {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let packet = udp4(v4("10.1.2.3"), v4("10.9.9.9"));
    let packet6 = udp6(v6("2001:db8::1"), v6("2001:db8::2"));
    lights
        .apply(&policy(
            1,
            green(),
            &[("10.1.0.0/16", red())],
            &[("2001:db8::/32", red())],
        ))
        .expect("apply v1");
    for _ in 0..3 {
        assert_eq!(run(&lights, &packet), XdpAction::Drop);
        assert_eq!(run(&lights, &packet6), XdpAction::Drop);
    }
    let cached = cache_entry(&mut lights, &src4("10.1.2.3")).expect("cached");
    assert_eq!(cached[0].rule.verdict, Verdict::Red as u8);
    let first_generation = cached[0].generation;
    assert_ne!(first_generation, 0);

    lights
        .apply(&policy(
            2,
            green(),
            &[("10.1.0.0/16", green())],
            &[("2001:db8::/32", green())],
        ))
        .expect("apply v2");
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    assert_eq!(run(&lights, &packet6), XdpAction::Pass);
    let cached = cache_entry(&mut lights, &src4("10.1.2.3")).expect("cached");
    assert_eq!(cached[0].rule.verdict, Verdict::Green as u8);
    assert_eq!(cached[0].generation, first_generation + 1);
    // Back into v1's slot with v1's content: a new generation again, so the
    // green verdict cached under v2 does not survive either.
    lights
        .apply(&policy(
            1,
            green(),
            &[("10.1.0.0/16", red())],
            &[("2001:db8::/32", red())],
        ))
        .expect("apply v1 again");
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    assert_eq!(run(&lights, &packet6), XdpAction::Drop);
    let c = lights.counters().expect("counters");
    assert_eq!((c.red_packets, c.green_packets), (8, 2));
}

#[test]
fn a_source_cached_on_one_cpu_is_judged_afresh_on_another() {
    // Another CPU's front slot is its own, zero until that CPU fills it:
    // generation 0, verdict byte 0 (green). It must be a miss, not green.
    let lights = loaded(&standard(1, green()));
    if lights.possible_cpus() < 2 {
        return;
    }
    let packet = udp4(v4("203.0.113.20"), v4("10.9.9.9"));
    pin_to_cpu(0);
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    pin_to_cpu(1);
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    assert_eq!(lights.counters().expect("counters").red_packets, 2);
}

#[test]
fn hits_use_the_cache_and_switching_it_off_uses_the_tries() {
    pin_to_cpu0();
    let mut lights = loaded(&standard(1, green()));
    let packet = udp4(v4("203.0.113.30"), v4("10.9.9.9"));
    let key = src4("203.0.113.30");
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    // A hit answers from the cache without the tries: the forged entry wins.
    forge_cached_verdict(&mut lights, &key, Verdict::Green);
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    lights.set_verdict_cache(false).expect("cache off");
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    forge_cached_verdict(&mut lights, &key, Verdict::Green);
    assert_eq!(
        run(&lights, &packet),
        XdpAction::Drop,
        "off: tries every packet"
    );
    // The switch survives a policy swap.
    lights.apply(&standard(2, green())).expect("apply v2");
    forge_cached_verdict(&mut lights, &key, Verdict::Green);
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    lights.set_verdict_cache(true).expect("cache on");
    forge_cached_verdict(&mut lights, &key, Verdict::Green);
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    let c = lights.counters().expect("counters");
    assert_eq!((c.red_packets, c.green_packets), (4, 2));
}

#[test]
fn a_swap_keeps_a_limited_sources_bucket() {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let cpus = lights.possible_cpus();
    // No refill: each CPU's bucket holds 2 packets, then stays empty.
    let yellow = |burst_per_cpu: u32| rule(Verdict::Yellow, 0, burst_per_cpu * cpus, 0, 2);
    let with = |version, r| policy(version, green(), &[("198.51.100.0/24", r)], &[]);
    lights.apply(&with(1, yellow(2))).expect("apply v1");
    let packet = udp4(v4("198.51.100.40"), v4("10.9.9.9"));
    let actions: Vec<_> = (0..3).map(|_| run(&lights, &packet)).collect();
    assert_eq!(actions, [XdpAction::Pass, XdpAction::Pass, XdpAction::Drop]);
    // Same rule, new generation: no fresh burst.
    lights.apply(&with(2, yellow(2))).expect("apply v2");
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    // A larger burst raises the cap, not the credit (rate 0 refills nothing).
    lights.apply(&with(3, yellow(8))).expect("apply v3");
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    // Green for a while, then yellow again: the bucket is still the same.
    lights.apply(&with(4, green())).expect("apply v4");
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    lights.apply(&with(5, yellow(2))).expect("apply v5");
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    let c = lights.counters().expect("counters");
    assert_eq!((c.yellow_pass_packets, c.yellow_limited_packets), (2, 4));
    // A new source under the same rule starts with a full bucket.
    assert_eq!(
        run(&lights, &udp4(v4("198.51.100.41"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
}

#[test]
fn a_source_sharing_a_front_slot_never_resets_a_yellow_bucket() {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let cpus = lights.possible_cpus();
    // No refill: each CPU's bucket holds 2 packets, then stays empty.
    let yellow = rule(Verdict::Yellow, 0, 2 * cpus, 0, 2);
    lights
        .apply(&policy(1, green(), &[("10.0.0.0/8", yellow)], &[]))
        .expect("apply");
    let a = v4("10.0.0.7");
    let b = colliding_v4(a, "10.0.0.0/8", a);
    let c = colliding_v4(a, "10.0.0.0/8", b);
    let from = |s: Ipv4Addr| udp4(s, v4("192.0.2.9"));
    let actions: Vec<_> = (0..3).map(|_| run(&lights, &from(a))).collect();
    assert_eq!(actions, [XdpAction::Pass, XdpAction::Pass, XdpAction::Drop]);
    assert!(
        lru_entries(&mut lights).is_empty(),
        "a hot source stays out"
    );
    // b takes a's slot: a's drained bucket moves to the LRU...
    assert_eq!(run(&lights, &from(b)), XdpAction::Pass);
    let lru = lru_entries(&mut lights);
    assert_eq!(lru.len(), 1);
    assert_eq!((lru[0].0, lru[0].1.credit), (a.octets(), 0));
    // ...and comes back with it, drained: no fresh burst for a. Its value
    // in the LRU is emptied (on this CPU), so the bucket is in one place.
    assert_eq!(run(&lights, &from(a)), XdpAction::Drop);
    assert_eq!(
        cache_entry(&mut lights, &a.octets()).expect("a in its slot")[0].credit,
        0
    );
    let lru = lru_entries(&mut lights);
    let a_in_lru = lru.iter().find(|(k, _)| *k == a.octets()).expect("a's key");
    assert_eq!((a_in_lru.1.generation, a_in_lru.1.last_ns), (0, 0));
    // b's bucket went the same way and still holds its second packet.
    assert_eq!(run(&lights, &from(b)), XdpAction::Pass);
    assert_eq!(run(&lights, &from(b)), XdpAction::Drop);
    // A third source in the slot, then a and b again: still drained.
    assert_eq!(run(&lights, &from(c)), XdpAction::Pass);
    assert_eq!(run(&lights, &from(a)), XdpAction::Drop);
    assert_eq!(run(&lights, &from(b)), XdpAction::Drop);
    let counted = lights.counters().expect("counters");
    assert_eq!(
        (counted.yellow_pass_packets, counted.yellow_limited_packets),
        (5, 5)
    );
    // Each packet from a source not in the slot parked the one there: b,
    // a, b, c, a, b arrived that way.
    assert_eq!((counted.buckets_parked, counted.buckets_lost), (6, 0));
    // Across a swap too: the bucket in the LRU keeps its credit and takes
    // the new rule when its source returns.
    lights
        .apply(&policy(2, green(), &[("10.0.0.0/8", yellow)], &[]))
        .expect("apply v2");
    assert_eq!(run(&lights, &from(c)), XdpAction::Pass);
    assert_eq!(run(&lights, &from(a)), XdpAction::Drop);
    // a lost its slot to c with a drained bucket, comes back green (a new
    // slot entry with no bucket), then turns yellow again: the bucket in the
    // LRU is still a's.
    lights
        .apply(&policy(3, green(), &[], &[]))
        .expect("apply v3");
    assert_eq!(run(&lights, &from(c)), XdpAction::Pass);
    assert_eq!(run(&lights, &from(a)), XdpAction::Pass);
    lights
        .apply(&policy(4, green(), &[("10.0.0.0/8", yellow)], &[]))
        .expect("apply v4");
    assert_eq!(run(&lights, &from(a)), XdpAction::Drop, "no fresh burst");
}

#[test]
fn green_and_red_sources_never_enter_the_lru() {
    pin_to_cpu0();
    let mut lights = loaded(&standard(1, green()));
    // Green (10/8) and red (203.0.113/24) sources that keep taking each
    // other's slots: each packet pushes the other out.
    let red_source = v4("203.0.113.5");
    let mut sharing = vec![red_source];
    for _ in 0..3 {
        let last = *sharing.last().expect("non-empty");
        let after = if last.octets()[0] == 10 {
            last
        } else {
            v4("10.0.0.0")
        };
        sharing.push(colliding_v4(red_source, "10.0.0.0/8", after));
    }
    for _ in 0..4 {
        for source in &sharing {
            let expected = if *source == red_source {
                XdpAction::Drop
            } else {
                XdpAction::Pass
            };
            assert_eq!(run(&lights, &udp4(*source, v4("10.9.9.9"))), expected);
        }
    }
    assert!(lru_entries(&mut lights).is_empty());
    let c = lights.counters().expect("counters");
    assert_eq!((c.green_packets, c.red_packets), (12, 4));
    assert_eq!(c.buckets_parked, 0);

    // A yellow source's used bucket is parked even when the source has
    // turned green since: it was limited, and may be yellow again.
    let yellow_source = v4("198.51.100.9");
    assert_eq!(
        run(&lights, &udp4(yellow_source, v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let mut greener = standard(2, green());
    greener.v4.retain(|(_, r)| r.verdict != Verdict::Yellow);
    lights.apply(&greener).expect("apply v2");
    assert_eq!(
        run(&lights, &udp4(yellow_source, v4("10.9.9.9"))),
        XdpAction::Pass
    );
    let taker = colliding_v4(yellow_source, "10.0.0.0/8", v4("10.0.0.0"));
    assert_eq!(run(&lights, &udp4(taker, v4("10.9.9.9"))), XdpAction::Pass);
    let lru = lru_entries(&mut lights);
    assert_eq!(lru.len(), 1);
    assert_eq!(lru[0].0, yellow_source.octets());
    assert_ne!(lru[0].1.last_ns, 0, "the used bucket");
    assert_eq!(lights.counters().expect("counters").buckets_parked, 1);
}

#[test]
fn an_ipv6_source_sharing_a_front_slot_never_resets_a_yellow_bucket() {
    pin_to_cpu0();
    let mut lights = TrafficLights::load(None).expect("load");
    let cpus = lights.possible_cpus();
    let yellow = rule(Verdict::Yellow, 0, cpus, 0, 2);
    lights
        .apply(&policy(1, green(), &[], &[("2001:db8::/32", yellow)]))
        .expect("apply");
    let a = v6("2001:db8::1:0:2");
    let slot = crate::abi::front_index_v6(a.octets());
    let b = (1..1u128 << 24)
        .map(|i| Ipv6Addr::from(u128::from(v6("2001:db8:0:7::")) + i))
        .find(|b| crate::abi::front_index_v6(b.octets()) == slot)
        .expect("an address sharing a's slot");
    let from = |s: Ipv6Addr| udp6(s, v6("2001:db8::ff"));
    assert_eq!(run(&lights, &from(a)), XdpAction::Pass);
    assert_eq!(run(&lights, &from(a)), XdpAction::Drop);
    assert_eq!(run(&lights, &from(b)), XdpAction::Pass);
    assert_eq!(run(&lights, &from(a)), XdpAction::Drop, "no fresh burst");
    assert_eq!(run(&lights, &from(b)), XdpAction::Drop);
    // b, a and b each parked the bucket in the slot.
    assert_eq!(lights.counters().expect("counters").buckets_parked, 3);
}

#[test]
fn ipv6_verdicts_through_extension_headers() {
    let lights = loaded(&standard(1, green()));
    let src_red = v6("2001:db8:bad::1");
    let dst = v6("2001:db8:1::99");
    let u = udp(4000, 53, b"x");
    // hop-by-hop -> routing -> destination options -> AH -> first fragment -> UDP
    let chain = ext8(
        NH_ROUTING,
        &ext8(
            NH_DSTOPTS,
            &ext8(NH_AH, &ah(NH_FRAGMENT, &frag6(PROTO_UDP, 0, true, &u))),
        ),
    );
    let red_chain = frame(eth(&[], ETH_P_IPV6), ipv6(src_red, dst, NH_HOPOPTS, &chain));
    assert_eq!(run(&lights, &red_chain), XdpAction::Drop);
    let green_chain = frame(
        eth(&[], ETH_P_IPV6),
        ipv6(v6("2001:db8:1::5"), dst, NH_HOPOPTS, &chain),
    );
    assert_eq!(run(&lights, &green_chain), XdpAction::Pass);
    // A non-first fragment: judged by source, no upper header to find.
    let later = frame(
        eth(&[], ETH_P_IPV6),
        ipv6(
            src_red,
            dst,
            NH_FRAGMENT,
            &frag6(PROTO_UDP, 1480, false, b"payload!"),
        ),
    );
    assert_eq!(run(&lights, &later), XdpAction::Drop);
    // Plain IPv6, default rule.
    assert_eq!(
        run(&lights, &udp6(v6("2001:db8:ffff::1"), dst)),
        XdpAction::Pass
    );
    let c = lights.counters().expect("counters");
    assert_eq!(c.red_packets, 2);
    assert_eq!(c.green_packets, 2);
    assert_eq!(c.fragment_packets, 3);
    assert_eq!(c.malformed.total(), 0);
}

#[test]
fn ipv4_mapped_ipv6_source_is_judged_by_ipv4_rules() {
    let lights = loaded(&standard(1, green()));
    let mapped = v4("203.0.113.5").to_ipv6_mapped();
    assert_eq!(
        run(&lights, &udp6(mapped, v6("2001:db8:1::1"))),
        XdpAction::Drop
    );
    assert_eq!(lights.counters().expect("counters").red_packets, 1);
}

#[test]
fn too_many_or_truncated_ipv6_extension_headers_drop() {
    let lights = loaded(&standard(1, green()));
    let src = v6("2001:db8:1::1");
    let dst = v6("2001:db8:1::2");
    // 9 destination-options headers: one more than the walk's bound.
    let mut chain = udp(1, 2, b"");
    chain = ext8(PROTO_UDP, &chain);
    for _ in 0..8 {
        chain = ext8(NH_DSTOPTS, &chain);
    }
    let nine = frame(eth(&[], ETH_P_IPV6), ipv6(src, dst, NH_DSTOPTS, &chain));
    assert_eq!(run(&lights, &nine), XdpAction::Drop);
    // Exactly 8 is still fine.
    let mut chain8 = ext8(PROTO_UDP, &udp(1, 2, b""));
    for _ in 0..7 {
        chain8 = ext8(NH_DSTOPTS, &chain8);
    }
    let eight = frame(eth(&[], ETH_P_IPV6), ipv6(src, dst, NH_DSTOPTS, &chain8));
    assert_eq!(run(&lights, &eight), XdpAction::Pass);
    // An extension header that claims more bytes than the frame has.
    let mut cut = ext8(PROTO_UDP, &[]);
    cut[1] = 3; // (3+1)*8 = 32 bytes, only 8 present
    let truncated = frame(eth(&[], ETH_P_IPV6), ipv6(src, dst, NH_HOPOPTS, &cut));
    assert_eq!(run(&lights, &truncated), XdpAction::Drop);
    let c = lights.counters().expect("counters");
    assert_eq!(c.malformed.ipv6_ext_too_many, 1);
    assert_eq!(c.malformed.ipv6_ext_truncated, 1);
    assert_eq!(c.green_packets, 1);
}

#[test]
fn malformed_ipv6_headers_drop_with_their_own_counters() {
    let lights = loaded(&standard(1, green()));
    let good = ipv6(
        v6("2001:db8:1::1"),
        v6("2001:db8:1::2"),
        PROTO_UDP,
        &udp(1, 2, b"abc"),
    );
    // Truncated fixed header.
    let cut = frame(eth(&[], ETH_P_IPV6), good[..30].to_vec());
    assert_eq!(run(&lights, &cut), XdpAction::Drop);
    // Version 4 in an IPv6 ethertype.
    let mut bad_version = good.clone();
    bad_version[0] = 0x40;
    assert_eq!(
        run(&lights, &frame(eth(&[], ETH_P_IPV6), bad_version)),
        XdpAction::Drop
    );
    // Payload length beyond the frame.
    let mut long = good.clone();
    long[4..6].copy_from_slice(&500u16.to_be_bytes());
    assert_eq!(
        run(&lights, &frame(eth(&[], ETH_P_IPV6), long)),
        XdpAction::Drop
    );
    let m = lights.counters().expect("counters").malformed;
    assert_eq!(
        (m.ipv6_truncated, m.ipv6_bad_version, m.ipv6_bad_payload_len),
        (1, 1, 1)
    );
}

#[test]
fn vlan_and_qinq_are_parsed_and_three_tags_drop() {
    let lights = loaded(&standard(1, green()));
    let red_ip = ipv4(
        v4("203.0.113.1"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[],
        0,
        &udp(1, 2, b"v"),
    );
    let green_ip = ipv4(
        v4("10.0.0.2"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[],
        0,
        &udp(1, 2, b"v"),
    );
    assert_eq!(
        run(
            &lights,
            &frame(eth(&[ETH_P_8021Q], ETH_P_IP), red_ip.clone())
        ),
        XdpAction::Drop
    );
    assert_eq!(
        run(
            &lights,
            &frame(eth(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IP), red_ip.clone())
        ),
        XdpAction::Drop
    );
    assert_eq!(
        run(
            &lights,
            &frame(
                eth(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IP),
                green_ip.clone()
            )
        ),
        XdpAction::Pass
    );
    let v6_qinq = frame(
        eth(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IPV6),
        ipv6(
            v6("2001:db8:bad::2"),
            v6("2001:db8:1::1"),
            PROTO_UDP,
            &udp(1, 2, b""),
        ),
    );
    assert_eq!(run(&lights, &v6_qinq), XdpAction::Drop);
    // Three tags hide the IP header from the parser: dropped, not passed.
    let three = frame(
        eth(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q], ETH_P_IP),
        green_ip,
    );
    assert_eq!(run(&lights, &three), XdpAction::Drop);
    // A VLAN tag cut off after its TPID.
    let mut cut = eth(&[], ETH_P_8021Q);
    cut.extend_from_slice(&[0x00]);
    assert_eq!(run(&lights, &cut), XdpAction::Drop);
    let c = lights.counters().expect("counters");
    assert_eq!(c.red_packets, 3);
    assert_eq!(c.green_packets, 1);
    assert_eq!(
        (c.malformed.vlan_too_many, c.malformed.vlan_truncated),
        (1, 1)
    );
}

#[test]
fn malformed_ipv4_headers_drop_with_their_own_counters() {
    let lights = loaded(&standard(1, green()));
    let good = ipv4(
        v4("10.0.0.2"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[],
        0,
        &udp(1, 2, b"abcd"),
    );
    let e = || eth(&[], ETH_P_IP);
    // Truncated fixed header.
    assert_eq!(
        run(&lights, &frame(e(), good[..12].to_vec())),
        XdpAction::Drop
    );
    // IHL 4 (< 5).
    let mut ihl = good.clone();
    ihl[0] = 0x44;
    assert_eq!(run(&lights, &frame(e(), ihl)), XdpAction::Drop);
    // IHL 15 (60 bytes) but only 20 + 12 present.
    let mut ihl_long = good.clone();
    ihl_long[0] = 0x4f;
    assert_eq!(run(&lights, &frame(e(), ihl_long)), XdpAction::Drop);
    // Version 6 in an IPv4 ethertype.
    let mut version = good.clone();
    version[0] = 0x65;
    assert_eq!(run(&lights, &frame(e(), version)), XdpAction::Drop);
    // Total length beyond the frame, and below the header length.
    let mut long = good.clone();
    long[2..4].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(run(&lights, &frame(e(), long)), XdpAction::Drop);
    let mut short = good.clone();
    short[2..4].copy_from_slice(&16u16.to_be_bytes());
    assert_eq!(run(&lights, &frame(e(), short)), XdpAction::Drop);
    // The boundaries (compared as lengths since kernel 6.1's verifier
    // refused the pointer form): one byte past the frame, the largest
    // value, and a datagram of just its header inside a longer frame.
    let end = u16::try_from(good.len()).expect("small datagram");
    let mut past = good.clone();
    past[2..4].copy_from_slice(&(end + 1).to_be_bytes());
    assert_eq!(run(&lights, &frame(e(), past)), XdpAction::Drop);
    let mut largest = good.clone();
    largest[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(run(&lights, &frame(e(), largest)), XdpAction::Drop);
    let mut header_only = good.clone();
    header_only[2..4].copy_from_slice(&20u16.to_be_bytes());
    assert_eq!(run(&lights, &frame(e(), header_only)), XdpAction::Pass);
    // Valid: options (IHL 6) and Ethernet padding after the datagram.
    let with_options = ipv4(
        v4("10.0.0.2"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[1, 1, 1, 0],
        0,
        &udp(1, 2, b""),
    );
    assert_eq!(run(&lights, &frame(e(), with_options)), XdpAction::Pass);
    let mut padded = frame(e(), good.clone());
    padded.resize(80, 0);
    assert_eq!(run(&lights, &padded), XdpAction::Pass);
    let c = lights.counters().expect("counters");
    let m = c.malformed;
    assert_eq!(m.ipv4_truncated, 2);
    assert_eq!(m.ipv4_bad_ihl, 1);
    assert_eq!(m.ipv4_bad_version, 1);
    assert_eq!(m.ipv4_bad_total_len, 4);
    assert_eq!(c.green_packets, 3);
}

#[test]
fn ipv4_fragments_are_judged_by_source() {
    let lights = loaded(&standard(1, green()));
    let first = ipv4(
        v4("203.0.113.3"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[],
        0x2000,
        &udp(1, 2, b"12345678"),
    );
    let later = ipv4(
        v4("203.0.113.3"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[],
        185,
        b"87654321",
    );
    let later_green = ipv4(
        v4("10.3.3.3"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[],
        185,
        b"87654321",
    );
    assert_eq!(
        run(&lights, &frame(eth(&[], ETH_P_IP), first)),
        XdpAction::Drop
    );
    assert_eq!(
        run(&lights, &frame(eth(&[], ETH_P_IP), later)),
        XdpAction::Drop
    );
    assert_eq!(
        run(&lights, &frame(eth(&[], ETH_P_IP), later_green)),
        XdpAction::Pass
    );
    let c = lights.counters().expect("counters");
    assert_eq!(
        (c.fragment_packets, c.red_packets, c.green_packets),
        (3, 2, 1)
    );
}

#[test]
fn arp_and_other_non_ip_pass_unjudged() {
    let lights = loaded(&policy(1, red(), &[], &[]));
    let mut arp = eth(&[], ETH_P_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    assert_eq!(run(&lights, &arp), XdpAction::Pass);
    let mut vlan_arp = eth(&[ETH_P_8021Q], ETH_P_ARP);
    vlan_arp.extend_from_slice(&[0; 28]);
    assert_eq!(run(&lights, &vlan_arp), XdpAction::Pass);
    let c = lights.counters().expect("counters");
    assert_eq!((c.non_ip_packets, c.red_packets), (2, 0));
}

#[test]
fn frames_shorter_than_ethernet_are_refused_before_the_kernel() {
    // The kernel's BPF_PROG_TEST_RUN rejects XDP input below 14 bytes, so
    // the program's eth_truncated branch cannot be reached from a test run;
    // the loader reports the bound instead of an opaque EINVAL.
    let lights = loaded(&standard(1, green()));
    let err = lights
        .test_run(&[0u8; 13], 1)
        .expect_err("13 bytes refused");
    assert!(
        matches!(
            err,
            TestRunError::PacketLength {
                len: 13,
                min: 14,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn policy_swap_changes_verdicts_and_counters_keep_counting() {
    let mut lights = TrafficLights::load(None).expect("load");
    let packet = udp4(v4("10.1.2.3"), v4("10.9.9.9"));
    let v1 = policy(
        1,
        green(),
        &[("10.1.0.0/16", red()), ("10.2.0.0/16", red())],
        &[("2001:db8::/32", red())],
    );
    let r1 = lights.apply(&v1).expect("apply v1");
    assert_eq!((r1.version, r1.previous_version), (1, None));
    assert_eq!((r1.v4_prefixes_count, r1.v6_prefixes_count), (2, 1));
    assert_eq!(run(&lights, &packet), XdpAction::Drop);

    let v2 = policy(2, red(), &[("10.1.0.0/16", green())], &[]);
    let r2 = lights.apply(&v2).expect("apply v2");
    assert_eq!(r2.previous_version, Some(1));
    assert_ne!(r2.slot, r1.slot);
    assert_eq!(run(&lights, &packet), XdpAction::Pass);
    assert_eq!(
        run(&lights, &udp4(v4("10.2.0.1"), v4("10.9.9.9"))),
        XdpAction::Drop,
        "default red now"
    );

    // v3 goes back into v1's slot, whose three prefixes are stale.
    let v3 = policy(3, green(), &[("10.1.0.0/16", red())], &[]);
    let r3 = lights.apply(&v3).expect("apply v3");
    assert_eq!(r3.slot, r1.slot);
    assert_eq!(r3.stale_prefixes_removed_count, 2);
    assert_eq!(run(&lights, &packet), XdpAction::Drop);
    assert_eq!(
        run(&lights, &udp4(v4("10.2.0.1"), v4("10.9.9.9"))),
        XdpAction::Pass
    );
    assert_eq!(
        run(&lights, &udp6(v6("2001:db8::1"), v6("2001:db8::2"))),
        XdpAction::Pass
    );

    let c = lights.counters().expect("counters");
    assert_eq!(c.red_packets, 3);
    assert_eq!(c.green_packets, 3);
}

/// A pin directory under /sys/fs/bpf, removed when dropped.
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pins a map the way another build might have left it (bpftool, which
/// bootstrap installs).
fn bpftool_pin_map(path: &std::path::Path, kind: &str, key: u32, value: u32, entries: u32) {
    let name = path.file_name().and_then(|n| n.to_str()).expect("map name");
    let status = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(path)
        .args(["type", kind, "key", &key.to_string(), "value"])
        .args([
            &value.to_string(),
            "entries",
            &entries.to_string(),
            "name",
            name,
        ])
        .status()
        .expect("run bpftool (apt-get install bpftool)");
    assert!(status.success(), "bpftool map create {}", path.display());
}

#[test]
fn a_pinned_map_of_another_layout_is_refused_by_name() {
    let dir = PinDir(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/metanode-test-layout-{}",
        std::process::id()
    )));
    let maps = dir.0.join("maps");
    std::fs::create_dir_all(&maps).expect("pin dir on bpffs");
    // The front array with a size the program's index does not assume.
    let front = maps.join("biso_front_v4");
    bpftool_pin_map(&front, "percpu_array", 4, 80, 1024);
    let err = TrafficLights::load(Some(&dir.0)).expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(&err, crate::LoadError::Layout { name: "biso_front_v4", found, expected }
            if found.entries == 1024 && expected.entries == 65_536),
        "{text}"
    );
    assert!(
        text.contains("biso_front_v4") && text.contains("1024 entries"),
        "{text}"
    );
    // (The refused load pinned the maps it created; start again.)
    std::fs::remove_dir_all(&maps).expect("unpin");
    std::fs::create_dir_all(&maps).expect("pin dir");
    // The counters with the value size of an older build (25 counters).
    let counters = maps.join("biso_counters");
    bpftool_pin_map(&counters, "percpu_array", 4, 200, 1);
    let err = TrafficLights::load(Some(&dir.0)).expect_err("refused");
    assert!(
        matches!(&err, crate::LoadError::Layout { name: "biso_counters", found, .. }
            if found.value_bytes == 200),
        "{err}"
    );
    std::fs::remove_file(&counters).expect("unpin");
    // With it gone, the maps the refused load pinned are right.
    TrafficLights::load(Some(&dir.0)).expect("load");
}

#[test]
fn too_many_prefixes_is_refused_naming_the_family() {
    let mut lights = TrafficLights::load(None).expect("load");
    let mut p = policy(9, green(), &[], &[]);
    let net: ipnet::Ipv4Net = "10.0.0.1/32".parse().expect("prefix");
    p.v4 = vec![(net, green()); V4_PREFIXES_MAX as usize + 1];
    let err = lights.apply(&p).expect_err("too many");
    assert_eq!(
        err.to_string(),
        format!(
            "policy version 9 has {} ipv4 prefixes, more than the 65536 the maps hold",
            V4_PREFIXES_MAX + 1
        )
    );
}

#[test]
fn attach_rejects_bad_interface_names() {
    let mut lights = TrafficLights::load(None).expect("load");
    for name in ["", "a/b", "..", "sixteen-chars-xx"] {
        let err = lights
            .attach(name, AttachMode::Generic)
            .expect_err("bad name");
        assert!(
            err.to_string().contains("not a valid Linux interface name"),
            "{err}"
        );
    }
    let err = lights
        .attach("nonexistent0", AttachMode::Generic)
        .expect_err("no such interface");
    assert!(err.to_string().contains("nonexistent0"), "{err}");
}

#[test]
fn prometheus_text_names_every_counter() {
    let lights = loaded(&standard(1, green()));
    run(&lights, &udp4(v4("203.0.113.1"), v4("10.0.0.1")));
    let mut cut = eth(&[], ETH_P_8021Q);
    cut.push(0);
    run(&lights, &cut);
    let c: Counters = lights.counters().expect("counters");
    let mut text = String::new();
    render_prometheus(&c, &mut text);
    assert!(text.contains("# TYPE metanode_xdp_packets_total counter\n"));
    assert!(text.contains("metanode_xdp_packets_total{light=\"red\",outcome=\"drop\"} 1\n"));
    assert!(text.contains("metanode_xdp_packets_total{light=\"green\",outcome=\"pass\"} 0\n"));
    assert!(text.contains("metanode_xdp_malformed_packets_total{kind=\"vlan_truncated\"} 1\n"));
    assert!(text.contains(&format!(
        "metanode_xdp_bytes_total{{light=\"red\",outcome=\"drop\"}} {}\n",
        c.red_bytes
    )));
    assert!(text.contains("metanode_xdp_buckets_parked_total 0\n"));
    assert!(text.contains("metanode_xdp_buckets_lost_total 0\n"));
    let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
    assert_eq!(families, 10);
}

#[test]
fn floor_programs_pass_ip_and_the_parser_drops_malformed_ipv4() {
    let packet = udp4(v4("10.1.1.1"), v4("10.0.0.1"));
    for program in FloorProgram::ALL {
        let result = test_run_floor(program, &packet, 3).expect("floor run");
        assert_eq!(result.action, XdpAction::Pass, "{}", program.name());
        assert_eq!(result.repeat, 3);
    }
    let e = || eth(&[], ETH_P_IP);
    let good = ipv4(
        v4("10.0.0.2"),
        v4("10.0.0.1"),
        PROTO_UDP,
        &[],
        0,
        &udp(1, 2, b"abcd"),
    );
    let mut bad_version = good.clone();
    bad_version[0] = 0x65;
    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x44;
    let mut long = good.clone();
    long[2..4].copy_from_slice(&1000u16.to_be_bytes());
    for (what, l3) in [
        ("truncated", good[..12].to_vec()),
        ("version", bad_version),
        ("ihl", bad_ihl),
        ("total length", long),
    ] {
        let frame = frame(e(), l3);
        let parse = test_run_floor(FloorProgram::ParseIpv4, &frame, 1).expect("floor run");
        assert_eq!(parse.action, XdpAction::Drop, "{what}");
        let pass = test_run_floor(FloorProgram::Pass, &frame, 1).expect("floor run");
        assert_eq!(pass.action, XdpAction::Pass, "{what}");
    }
    let arp = frame(eth(&[], ETH_P_ARP), vec![0; 28]);
    let result = test_run_floor(FloorProgram::ParseIpv4, &arp, 1).expect("floor run");
    assert_eq!(result.action, XdpAction::Pass);
    let err = test_run_floor(FloorProgram::Pass, &[0u8; 13], 1).expect_err("13 bytes refused");
    assert!(
        matches!(
            err,
            FloorRunError::PacketLength {
                len: 13,
                min: 14,
                ..
            }
        ),
        "{err}"
    );
}

/// Not a timed assertion: prints the kernel-measured ns/packet for the
/// report and the bench (`cargo test -p metanode-ebpf -- --nocapture ns_per_packet`),
/// with the BPF_PROG_TEST_RUN floor on the same frame for context.
#[test]
fn ns_per_packet_green_yellow_red() {
    const REPEAT: u32 = 1_000_000;
    /// The bench frame: UDP/IPv4 padded to the Ethernet minimum.
    const FRAME_BYTES: usize = 60;
    pin_to_cpu0();
    let lights = loaded(&policy(
        1,
        green(),
        &[
            ("10.0.0.0/8", green()),
            ("203.0.113.0/24", red()),
            (
                "198.51.100.0/24",
                rule(Verdict::Yellow, u32::MAX, u32::MAX, 0, 2),
            ),
        ],
        &[],
    ));
    let frame_for = |src: &str| {
        let mut frame = udp4(v4(src), v4("10.0.0.1"));
        frame.resize(FRAME_BYTES, 0);
        frame
    };
    for program in FloorProgram::ALL {
        let result = test_run_floor(program, &frame_for("10.1.1.1"), REPEAT).expect("floor run");
        assert_eq!(result.action, XdpAction::Pass, "{}", program.name());
        println!("xdp_{}_ns {}", program.name(), result.ns_per_packet);
    }
    for (name, src, expected) in [
        ("green", "10.1.1.1", XdpAction::Pass),
        ("yellow", "198.51.100.1", XdpAction::Pass),
        ("red", "203.0.113.1", XdpAction::Drop),
    ] {
        let result = lights.test_run(&frame_for(src), REPEAT).expect("run");
        assert_eq!(result.action, expected, "{name}");
        println!("xdp_{name}_ns {}", result.ns_per_packet);
    }
}

/// The cage bench's policy (xtask `bench_policy(1024)`): `red_count` red
/// /24s in 100.64.0.0/10, a green and a yellow /24, default green, every
/// rule with a yellow budget far above what a test run sends.
fn deep_policy(red_count: u32) -> CompiledPolicy {
    let generous = |verdict, reason_id| rule(verdict, 4_000_000_000, 4_000_000_000, 0, reason_id);
    let mut prefixes: Vec<(ipnet::Ipv4Net, Rule)> = vec![
        (
            "10.201.0.0/24".parse().expect("prefix"),
            generous(Verdict::Green, 1),
        ),
        (
            "192.0.2.0/24".parse().expect("prefix"),
            generous(Verdict::Yellow, 2),
        ),
    ];
    let red_base = u32::from(v4("100.64.0.0"));
    for i in 0..red_count {
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(red_base + (i << 8)), 24).expect("/24");
        prefixes.push((net, generous(Verdict::Red, 3)));
    }
    let mut p = policy(1, generous(Verdict::Green, 0), &[], &[]);
    p.v4 = prefixes;
    p
}

/// Not a timed assertion: prints ns/packet with the bench's deep policy
/// (`cargo test -p metanode-ebpf -- --nocapture deep_policy_ns`) for a
/// cache hit (the same source repeated, as BPF_PROG_TEST_RUN repeats it), a
/// miss of a cached source (cache switched off: tries + entry rewrite, as
/// after a swap) and a cold miss (a source never seen: tries + a front slot
/// written, and for a yellow source an LRU lookup). Cold misses cannot be
/// repeated, so 256 sources run once each, then once more as (warm-entry)
/// misses with the cache off; the difference is the first packet's extra
/// cost with the per-run timer overhead cancelled: cold = miss + (mean
/// once-cold - mean once-miss).
#[test]
fn deep_policy_ns_per_packet() {
    const REPEAT: u32 = 1_000_000;
    const RED_COUNT: u32 = 1024;
    pin_to_cpu0();
    let mut lights = loaded(&deep_policy(RED_COUNT));
    let red_last_net = u32::from(v4("100.64.0.0")) + ((RED_COUNT - 1) << 8);
    let frame_for = |src: Ipv4Addr| {
        let mut frame = udp4(src, v4("10.201.0.2"));
        frame.resize(60, 0);
        frame
    };
    let lights_and_nets = [
        ("green", u32::from(v4("10.201.0.0")), XdpAction::Pass),
        ("yellow", u32::from(v4("192.0.2.0")), XdpAction::Pass),
        ("red", red_last_net, XdpAction::Drop),
    ];
    let mut once_extra_ns = Vec::new();
    for (name, net, expected) in lights_and_nets {
        let frames: Vec<_> = (0..=255u32)
            .map(|host| frame_for(Ipv4Addr::from(net + host)))
            .collect();
        let once_mean_ns = |lights: &TrafficLights, what: &str| {
            let total: u64 = frames
                .iter()
                .map(|frame| {
                    let result = lights.test_run(frame, 1).expect("run");
                    assert_eq!(result.action, expected, "{name} {what}");
                    u64::from(result.ns_per_packet)
                })
                .sum();
            total as f64 / frames.len() as f64
        };
        let cold = once_mean_ns(&lights, "cold");
        lights.set_verdict_cache(false).expect("cache off");
        let miss = once_mean_ns(&lights, "miss");
        lights.set_verdict_cache(true).expect("cache on");
        once_extra_ns.push(cold - miss);
    }
    for (cache_on, what) in [(true, "hit"), (false, "miss")] {
        lights.set_verdict_cache(cache_on).expect("switch cache");
        for (i, (name, net, expected)) in lights_and_nets.into_iter().enumerate() {
            let result = lights
                .test_run(&frame_for(Ipv4Addr::from(net + 9)), REPEAT)
                .expect("run");
            assert_eq!(result.action, expected, "{name}");
            println!("deep_xdp_{name}_{what}_ns {}", result.ns_per_packet);
            if !cache_on {
                let cold = f64::from(result.ns_per_packet) + once_extra_ns[i];
                println!("deep_xdp_{name}_cold_ns {cold:.0}");
            }
        }
    }
}
