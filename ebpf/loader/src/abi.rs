//! Rust mirrors of ebpf/xdp/biso.h. Sizes are asserted at compile time;
//! field order and padding must match the C structs exactly.

use metanode_biso::compiled::Rule;

use crate::limits::{COARSE_FILL_TICKS_MIN, COARSE_LAG_TICKS_MAX, NS_PER_S};

/// `BISO_RULE_PRECISE_CLOCK`: the bucket reads bpf_ktime_get_ns.
pub(crate) const RULE_PRECISE_CLOCK: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuleAbi {
    pub(crate) verdict: u8,
    /// [`RULE_PRECISE_CLOCK`] or 0.
    pub(crate) flags: u8,
    pub(crate) reason_id: u16,
    pub(crate) sample_one_in: u32,
    pub(crate) rate_per_s: u32,
    pub(crate) burst: u32,
    pub(crate) cost_credit: u64,
    pub(crate) credit_max: u64,
    pub(crate) fill_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotAbi {
    pub(crate) version: u64,
    pub(crate) loaded: u32,
    pub(crate) _pad0: u32,
    /// Tags verdicts cached from this slot; never 0 once loaded.
    pub(crate) generation: u64,
    pub(crate) default_rule: RuleAbi,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CtlAbi {
    pub(crate) active_slot: u32,
    /// Non-zero: every packet takes the verdict cache's miss path.
    pub(crate) verdict_cache_off: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VerdictAbi {
    /// 0: empty on this CPU (never filled here).
    pub(crate) generation: u64,
    pub(crate) rule: RuleAbi,
    pub(crate) credit: u64,
    pub(crate) last_ns: u64,
}

/// `struct biso_front`: one slot of the direct-mapped front of the verdict
/// cache. IPv4 sources fill `src[..4]`, the rest 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FrontAbi {
    /// `v.generation == 0`: the slot is empty on this CPU.
    pub(crate) v: VerdictAbi,
    pub(crate) src: [u8; 16],
}

/// `BISO_FRONT_V4_BITS`, `BISO_FRONT_V6_BITS`: the front arrays hold
/// `1 << bits` slots; `TrafficLights::load` refuses maps of another size,
/// since the program's index assumes these.
pub(crate) const FRONT_V4_BITS: u32 = 16;
pub(crate) const FRONT_V6_BITS: u32 = 14;
/// `BISO_FRONT_HASH_MUL`, `BISO_FRONT_HASH_MUL64`.
#[cfg(test)]
const FRONT_HASH_MUL: u32 = 0x9E37_79B1;
#[cfg(test)]
const FRONT_HASH_MUL64: u64 = 0x9E37_79B9_7F4A_7C15;

/// The front slot of an IPv4 source (IPv4-mapped IPv6 included), as the
/// program computes it: the address bytes as a native u32.
#[cfg(test)]
pub(crate) fn front_index_v4(src: [u8; 4]) -> u32 {
    u32::from_ne_bytes(src).wrapping_mul(FRONT_HASH_MUL) >> (32 - FRONT_V4_BITS)
}

/// The front slot of an IPv6 source: its halves as native u64s, mixed.
#[cfg(test)]
pub(crate) fn front_index_v6(src: [u8; 16]) -> u32 {
    let half = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&src[i..i + 8]);
        u64::from_ne_bytes(b)
    };
    let x = half(0).wrapping_mul(FRONT_HASH_MUL64).wrapping_add(half(8));
    // The shift leaves FRONT_V6_BITS (< 32) bits.
    (x.wrapping_mul(FRONT_HASH_MUL64) >> (64 - FRONT_V6_BITS)) as u32
}

pub(crate) const SAMPLE_BYTES: usize = 64;

/// `enum biso_counter`: indices into the per-CPU counters array.
pub(crate) mod counter {
    pub(crate) const GREEN_PACKETS: usize = 0;
    pub(crate) const GREEN_BYTES: usize = 1;
    pub(crate) const YELLOW_PASS_PACKETS: usize = 2;
    pub(crate) const YELLOW_PASS_BYTES: usize = 3;
    pub(crate) const YELLOW_LIMITED_PACKETS: usize = 4;
    pub(crate) const YELLOW_LIMITED_BYTES: usize = 5;
    pub(crate) const RED_PACKETS: usize = 6;
    pub(crate) const RED_BYTES: usize = 7;
    pub(crate) const NON_IP_PACKETS: usize = 8;
    pub(crate) const NO_POLICY_PACKETS: usize = 9;
    pub(crate) const FRAGMENT_PACKETS: usize = 10;
    pub(crate) const SAMPLES: usize = 11;
    pub(crate) const SAMPLES_LOST: usize = 12;
    pub(crate) const ETH_TRUNCATED: usize = 13;
    pub(crate) const VLAN_TRUNCATED: usize = 14;
    pub(crate) const VLAN_TOO_MANY: usize = 15;
    pub(crate) const IPV4_TRUNCATED: usize = 16;
    pub(crate) const IPV4_BAD_VERSION: usize = 17;
    pub(crate) const IPV4_BAD_IHL: usize = 18;
    pub(crate) const IPV4_BAD_TOTAL_LEN: usize = 19;
    pub(crate) const IPV6_TRUNCATED: usize = 20;
    pub(crate) const IPV6_BAD_VERSION: usize = 21;
    pub(crate) const IPV6_BAD_PAYLOAD_LEN: usize = 22;
    pub(crate) const IPV6_EXT_TRUNCATED: usize = 23;
    pub(crate) const IPV6_EXT_TOO_MANY: usize = 24;
    pub(crate) const BUCKETS_PARKED: usize = 25;
    pub(crate) const BUCKETS_LOST: usize = 26;
    pub(crate) const COUNT: usize = 27;
}

pub(crate) type CountersAbi = [u64; counter::COUNT];

const _: () = assert!(size_of::<RuleAbi>() == 40);
const _: () = assert!(size_of::<SlotAbi>() == 64);
const _: () = assert!(size_of::<CtlAbi>() == 8);
const _: () = assert!(size_of::<VerdictAbi>() == 64);
const _: () = assert!(size_of::<FrontAbi>() == 80);
const _: () = assert!(size_of::<CountersAbi>() == 216);

// SAFETY: repr(C) structs of integers and byte arrays whose padding is spelled
// out as fields (sizes asserted above), so every bit pattern is a valid value
// and no byte is uninitialised when aya copies them to or from the kernel.
unsafe impl aya::Pod for RuleAbi {}
// SAFETY: as for RuleAbi.
unsafe impl aya::Pod for SlotAbi {}
// SAFETY: as for RuleAbi.
unsafe impl aya::Pod for CtlAbi {}
// SAFETY: as for RuleAbi.
unsafe impl aya::Pod for VerdictAbi {}
// SAFETY: as for RuleAbi.
unsafe impl aya::Pod for FrontAbi {}

impl RuleAbi {
    /// The kernel form of a rule for a machine with `possible_cpus` CPUs.
    ///
    /// Buckets are per CPU, so each CPU must admit `1 / possible_cpus` of the
    /// policy's rate and burst. Rather than dividing (and rounding small rates
    /// to zero) the packet cost is multiplied: a packet costs
    /// `NS_PER_S * possible_cpus` credit while a bucket gains `rate_per_s`
    /// credit per nanosecond and holds at most `burst * NS_PER_S`. Each CPU
    /// thus admits exactly `rate_per_s / possible_cpus` packets per second and
    /// a burst of `burst / possible_cpus` packets, rounded up to one whole
    /// packet when `burst` is non-zero (so a burst below the CPU count still
    /// lets traffic through). `burst == 0` admits nothing.
    ///
    /// The bucket's clock: the coarse one (`coarse_tick_ns` per step, a few
    /// ns to read) when the bucket takes at least [`COARSE_FILL_TICKS_MIN`]
    /// ticks to fill, else the precise one (~20-40 ns, a TSC read).
    ///
    /// A coarse reading c lags the packet's true time t. A bucket refilled
    /// at c cannot tell whether it saturated between c and t, so keeping
    /// `last_ns = c` would grant c..t again later: up to the lag's worth of
    /// rate beyond an exact bucket. So a coarse bucket holds
    /// [`COARSE_LAG_TICKS_MAX`] ticks of rate less (`credit_max - rate *
    /// lag`); while its source stays cached and the coarse clock lags by no
    /// more than that, every window then admits at most what an exact bucket
    /// of the configured burst admits (burst + rate x window). The price, for
    /// a flow that conforms exactly to (burst, rate): up to the held-back
    /// ticks plus the lag's ticks of rate refused, i.e. about half the burst
    /// at the fill-time bound (12 ticks to fill) and ~2.4 % (HZ=250) to 6 %
    /// (HZ=100) for a burst of a second of rate; the long-run rate is exact.
    /// `fill_ns` is the same per CPU as for the node (rate and burst both
    /// divide by the CPU count), except where a burst below the CPU count
    /// rounds up to one packet per CPU, which makes the bucket larger and
    /// slower to fill.
    pub(crate) fn from_rule(rule: &Rule, possible_cpus: u32, coarse_tick_ns: u64) -> Self {
        let cost_credit = NS_PER_S * u64::from(possible_cpus.max(1));
        let burst_credit = u64::from(rule.rate.burst) * NS_PER_S;
        let credit_max = if rule.rate.burst == 0 {
            0
        } else {
            burst_credit.max(cost_credit)
        };
        let rate = u64::from(rule.rate.rate_per_s);
        // Refilling for at least fill_ns saturates the bucket, so the kernel
        // only multiplies elapsed_ns * rate_per_s below credit_max: no overflow.
        let fill_ns_of = |credit: u64| match rate {
            0 => u64::MAX,
            rate => credit.div_ceil(rate),
        };
        let lag_credit = rate.saturating_mul(COARSE_LAG_TICKS_MAX.saturating_mul(coarse_tick_ns));
        let coarse = fill_ns_of(credit_max) >= COARSE_FILL_TICKS_MIN.saturating_mul(coarse_tick_ns)
            && credit_max.saturating_sub(lag_credit) >= cost_credit;
        let (flags, credit_max) = if coarse {
            (0, credit_max - lag_credit)
        } else {
            (RULE_PRECISE_CLOCK, credit_max)
        };
        let fill_ns = fill_ns_of(credit_max);
        RuleAbi {
            verdict: rule.verdict as u8,
            flags,
            reason_id: rule.reason_id,
            sample_one_in: rule.sample_one_in,
            rate_per_s: rule.rate.rate_per_s,
            burst: rule.rate.burst,
            cost_credit,
            credit_max,
            fill_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use metanode_biso::compiled::{RateLimit, Verdict};

    use super::*;

    fn yellow(rate_per_s: u32, burst: u32) -> Rule {
        Rule {
            verdict: Verdict::Yellow,
            rate: RateLimit { rate_per_s, burst },
            sample_one_in: 0,
            reason_id: 0,
        }
    }

    const TICK_4MS: u64 = 4_000_000;

    #[test]
    fn buckets_filling_within_twelve_ticks_read_the_precise_clock() {
        // (rate, burst) -> fill time burst / rate: coarse from 12 ticks (48 ms).
        let cases = [
            ((1_000, 2_000), false),         // 2 s
            ((1, 4), false),                 // 4 s
            ((1_000, 48), false),            // 48 ms = 12 ticks
            ((1_000, 47), true),             // 47 ms
            ((1_000_000, 100), true),        // 100 us
            ((4_000_000, 4_000_000), false), // 1 s
            ((0, 10), false),                // never refills: no clock matters
        ];
        for ((rate, burst), precise) in cases {
            for cpus in [1, 2] {
                let abi = RuleAbi::from_rule(&yellow(rate, burst), cpus, TICK_4MS);
                let flags = if precise { RULE_PRECISE_CLOCK } else { 0 };
                assert_eq!(abi.flags, flags, "rate {rate} burst {burst} on {cpus} CPUs");
            }
        }
        // 7 packets over 64 CPUs round up to one per CPU (64 ms to fill),
        // but holding 12 ms of rate back would leave less than one packet.
        assert_eq!(
            RuleAbi::from_rule(&yellow(1_000, 7), 64, TICK_4MS).flags,
            RULE_PRECISE_CLOCK
        );
        // A slower tick (HZ=100) moves the bound: 48 ms is then precise.
        assert_eq!(
            RuleAbi::from_rule(&yellow(1_000, 48), 1, 10_000_000).flags,
            RULE_PRECISE_CLOCK
        );
    }

    /// A coarse bucket holds three ticks of rate less, so that no window
    /// admits more than an exact bucket of the configured burst; a precise
    /// one holds the whole burst.
    #[test]
    fn a_coarse_bucket_holds_back_three_ticks_of_rate() {
        let ns = NS_PER_S;
        // 1,000/s, burst 2,000: 12 ms of rate = 12 packets held back.
        let abi = RuleAbi::from_rule(&yellow(1_000, 2_000), 1, TICK_4MS);
        assert_eq!(abi.credit_max, 1_988 * ns);
        assert_eq!(abi.fill_ns, 1_988 * ns / 1_000);
        // At the bound (48 ms to fill) a quarter is held back.
        let abi = RuleAbi::from_rule(&yellow(1_000, 48), 2, TICK_4MS);
        assert_eq!((abi.flags, abi.credit_max), (0, 36 * ns));
        // Precise: the whole burst.
        let abi = RuleAbi::from_rule(&yellow(1_000, 47), 1, TICK_4MS);
        assert_eq!((abi.flags, abi.credit_max), (RULE_PRECISE_CLOCK, 47 * ns));
        // Rate 0: nothing refills, nothing is held back.
        let abi = RuleAbi::from_rule(&yellow(0, 10), 1, TICK_4MS);
        assert_eq!((abi.credit_max, abi.fill_ns), (10 * ns, u64::MAX));
    }
}
