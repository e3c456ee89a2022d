//! Counters summed over CPUs, and their Prometheus text rendering.

use std::fmt::Write as _;

use crate::abi::{CountersAbi, counter};

/// Malformed packets by kind; every one of them was dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MalformedCounters {
    /// Shorter than an Ethernet header.
    pub eth_truncated: u64,
    /// A VLAN tag cut off.
    pub vlan_truncated: u64,
    /// More than `BISO_VLAN_TAGS_MAX` (2) VLAN tags.
    pub vlan_too_many: u64,
    /// IPv4 header (or its options) cut off.
    pub ipv4_truncated: u64,
    pub ipv4_bad_version: u64,
    /// IHL below 5.
    pub ipv4_bad_ihl: u64,
    /// Total length below the header length or beyond the frame.
    pub ipv4_bad_total_len: u64,
    pub ipv6_truncated: u64,
    pub ipv6_bad_version: u64,
    /// Payload length beyond the frame.
    pub ipv6_bad_payload_len: u64,
    /// An extension header cut off.
    pub ipv6_ext_truncated: u64,
    /// More than `BISO_IPV6_EXT_HDRS_MAX` (8) extension headers.
    pub ipv6_ext_too_many: u64,
}

impl MalformedCounters {
    /// (Prometheus label, value) per kind.
    pub fn by_kind(&self) -> [(&'static str, u64); 12] {
        [
            ("eth_truncated", self.eth_truncated),
            ("vlan_truncated", self.vlan_truncated),
            ("vlan_too_many", self.vlan_too_many),
            ("ipv4_truncated", self.ipv4_truncated),
            ("ipv4_bad_version", self.ipv4_bad_version),
            ("ipv4_bad_ihl", self.ipv4_bad_ihl),
            ("ipv4_bad_total_len", self.ipv4_bad_total_len),
            ("ipv6_truncated", self.ipv6_truncated),
            ("ipv6_bad_version", self.ipv6_bad_version),
            ("ipv6_bad_payload_len", self.ipv6_bad_payload_len),
            ("ipv6_ext_truncated", self.ipv6_ext_truncated),
            ("ipv6_ext_too_many", self.ipv6_ext_too_many),
        ]
    }

    /// All malformed packets.
    pub fn total(&self) -> u64 {
        self.by_kind()
            .iter()
            .fold(0u64, |sum, (_, n)| sum.wrapping_add(*n))
    }
}

/// The XDP program's counters since its maps were created, summed over CPUs.
/// Pinned maps survive agent restarts, so these do too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub green_packets: u64,
    pub green_bytes: u64,
    /// Yellow packets within their source's token bucket (passed).
    pub yellow_pass_packets: u64,
    pub yellow_pass_bytes: u64,
    /// Yellow packets over their source's bucket (dropped).
    pub yellow_limited_packets: u64,
    pub yellow_limited_bytes: u64,
    pub red_packets: u64,
    pub red_bytes: u64,
    /// ARP and other non-IP ethertypes (passed).
    pub non_ip_packets: u64,
    /// IP packets seen before the first policy was applied (passed).
    pub no_policy_packets: u64,
    /// IPv4 or IPv6 fragments (judged by source like other packets).
    pub fragment_packets: u64,
    /// Yellow samples written to the ring buffer.
    pub samples: u64,
    /// Yellow samples lost because the ring buffer was full.
    pub samples_lost: u64,
    /// Used token buckets moved from the verdict cache's front array to the
    /// LRU behind it, because another source took their slot.
    pub buckets_parked: u64,
    /// Buckets the LRU refused while being parked; each restarts full.
    pub buckets_lost: u64,
    pub malformed: MalformedCounters,
}

impl Counters {
    pub(crate) fn from_per_cpu<'a>(per_cpu: impl IntoIterator<Item = &'a CountersAbi>) -> Self {
        let mut sum: CountersAbi = [0; counter::COUNT];
        for cpu in per_cpu {
            for (total, value) in sum.iter_mut().zip(cpu.iter()) {
                *total = total.wrapping_add(*value);
            }
        }
        use counter as c;
        Counters {
            green_packets: sum[c::GREEN_PACKETS],
            green_bytes: sum[c::GREEN_BYTES],
            yellow_pass_packets: sum[c::YELLOW_PASS_PACKETS],
            yellow_pass_bytes: sum[c::YELLOW_PASS_BYTES],
            yellow_limited_packets: sum[c::YELLOW_LIMITED_PACKETS],
            yellow_limited_bytes: sum[c::YELLOW_LIMITED_BYTES],
            red_packets: sum[c::RED_PACKETS],
            red_bytes: sum[c::RED_BYTES],
            non_ip_packets: sum[c::NON_IP_PACKETS],
            no_policy_packets: sum[c::NO_POLICY_PACKETS],
            fragment_packets: sum[c::FRAGMENT_PACKETS],
            samples: sum[c::SAMPLES],
            samples_lost: sum[c::SAMPLES_LOST],
            buckets_parked: sum[c::BUCKETS_PARKED],
            buckets_lost: sum[c::BUCKETS_LOST],
            malformed: MalformedCounters {
                eth_truncated: sum[c::ETH_TRUNCATED],
                vlan_truncated: sum[c::VLAN_TRUNCATED],
                vlan_too_many: sum[c::VLAN_TOO_MANY],
                ipv4_truncated: sum[c::IPV4_TRUNCATED],
                ipv4_bad_version: sum[c::IPV4_BAD_VERSION],
                ipv4_bad_ihl: sum[c::IPV4_BAD_IHL],
                ipv4_bad_total_len: sum[c::IPV4_BAD_TOTAL_LEN],
                ipv6_truncated: sum[c::IPV6_TRUNCATED],
                ipv6_bad_version: sum[c::IPV6_BAD_VERSION],
                ipv6_bad_payload_len: sum[c::IPV6_BAD_PAYLOAD_LEN],
                ipv6_ext_truncated: sum[c::IPV6_EXT_TRUNCATED],
                ipv6_ext_too_many: sum[c::IPV6_EXT_TOO_MANY],
            },
        }
    }
}

/// Appends `counters` to `out` in the Prometheus text exposition format
/// (version 0.0.4): one `# HELP`/`# TYPE` pair per family, labels for the
/// light and outcome.
pub fn render_prometheus(counters: &Counters, out: &mut String) {
    let lights = [
        (
            "green",
            "pass",
            counters.green_packets,
            counters.green_bytes,
        ),
        (
            "yellow",
            "pass",
            counters.yellow_pass_packets,
            counters.yellow_pass_bytes,
        ),
        (
            "yellow",
            "limited",
            counters.yellow_limited_packets,
            counters.yellow_limited_bytes,
        ),
        ("red", "drop", counters.red_packets, counters.red_bytes),
    ];
    family(
        out,
        "metanode_xdp_packets_total",
        "Packets judged by the BISO XDP traffic lights.",
    );
    for (light, outcome, packets, _) in lights {
        let _ = writeln!(
            out,
            "metanode_xdp_packets_total{{light=\"{light}\",outcome=\"{outcome}\"}} {packets}"
        );
    }
    family(
        out,
        "metanode_xdp_bytes_total",
        "Bytes judged by the BISO XDP traffic lights.",
    );
    for (light, outcome, _, bytes) in lights {
        let _ = writeln!(
            out,
            "metanode_xdp_bytes_total{{light=\"{light}\",outcome=\"{outcome}\"}} {bytes}"
        );
    }
    family(
        out,
        "metanode_xdp_malformed_packets_total",
        "Malformed packets dropped by the BISO XDP program, by kind.",
    );
    for (kind, n) in counters.malformed.by_kind() {
        let _ = writeln!(
            out,
            "metanode_xdp_malformed_packets_total{{kind=\"{kind}\"}} {n}"
        );
    }
    let singles = [
        (
            "metanode_xdp_non_ip_packets_total",
            "Non-IP packets (ARP, ...) passed unjudged.",
            counters.non_ip_packets,
        ),
        (
            "metanode_xdp_no_policy_packets_total",
            "IP packets passed before the first policy was applied.",
            counters.no_policy_packets,
        ),
        (
            "metanode_xdp_fragment_packets_total",
            "IP fragments judged by source address.",
            counters.fragment_packets,
        ),
        (
            "metanode_xdp_samples_total",
            "Yellow packet samples written to the ring buffer.",
            counters.samples,
        ),
        (
            "metanode_xdp_samples_lost_total",
            "Yellow packet samples lost to a full ring buffer.",
            counters.samples_lost,
        ),
        (
            "metanode_xdp_buckets_parked_total",
            "Used yellow token buckets moved from the per-CPU front cache to the LRU behind it (their slot taken by another source).",
            counters.buckets_parked,
        ),
        (
            "metanode_xdp_buckets_lost_total",
            "Yellow token buckets the LRU refused while being parked; each restarted full.",
            counters.buckets_lost,
        ),
    ];
    for (name, help, value) in singles {
        family(out, name, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}
