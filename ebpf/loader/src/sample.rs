//! Yellow packet samples as read from the ring buffer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use metanode_biso::compiled::Verdict;

use crate::abi::SAMPLE_BYTES;

/// Headers of one sampled yellow packet (`struct biso_sample`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) when the packet was judged.
    pub timestamp_ns: u64,
    /// Version of the policy that judged it.
    pub policy_version: u64,
    pub source: IpAddr,
    pub destination: IpAddr,
    /// Frame length including the Ethernet header.
    pub packet_len_bytes: u32,
    /// 0 when absent (non-first fragment, not TCP/UDP/UDP-Lite/SCTP).
    pub source_port: u16,
    pub destination_port: u16,
    /// IPv4 protocol or IPv6 upper-layer next header.
    pub protocol: u8,
    pub verdict: Verdict,
    /// Within the token bucket (passed) or over it (dropped).
    pub passed: bool,
    pub reason_id: u16,
}

impl Sample {
    /// Decodes a ring buffer record; None if it is not a whole sample with
    /// a known family and verdict (the program never writes one).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Sample> {
        let bytes: &[u8; SAMPLE_BYTES] = bytes.get(..SAMPLE_BYTES)?.try_into().ok()?;
        let u64_at = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
        };
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
        };
        let u16_at = |at: usize| {
            bytes
                .get(at..at + 2)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_ne_bytes)
        };
        let addr16 = |at: usize| -> Option<[u8; 16]> { bytes.get(at..at + 16)?.try_into().ok() };
        let family = *bytes.get(58)?;
        let (saddr, daddr) = (addr16(16)?, addr16(32)?);
        let (source, destination) = match family {
            4 => (
                IpAddr::V4(Ipv4Addr::new(saddr[0], saddr[1], saddr[2], saddr[3])),
                IpAddr::V4(Ipv4Addr::new(daddr[0], daddr[1], daddr[2], daddr[3])),
            ),
            6 => (
                IpAddr::V6(Ipv6Addr::from(saddr)),
                IpAddr::V6(Ipv6Addr::from(daddr)),
            ),
            _ => return None,
        };
        Some(Sample {
            timestamp_ns: u64_at(0)?,
            policy_version: u64_at(8)?,
            source,
            destination,
            packet_len_bytes: u32_at(48)?,
            source_port: u16_at(52)?,
            destination_port: u16_at(54)?,
            reason_id: u16_at(56)?,
            protocol: *bytes.get(59)?,
            verdict: Verdict::from_u8(*bytes.get(60)?)?,
            passed: *bytes.get(61)? != 0,
        })
    }
}
