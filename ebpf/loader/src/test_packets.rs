//! Hand-built frames for BPF_PROG_TEST_RUN tests.

use std::net::{Ipv4Addr, Ipv6Addr};

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88a8;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const NH_HOPOPTS: u8 = 0;
pub(crate) const NH_ROUTING: u8 = 43;
pub(crate) const NH_FRAGMENT: u8 = 44;
pub(crate) const NH_DSTOPTS: u8 = 60;
pub(crate) const NH_AH: u8 = 51;

/// Ethernet header with `vlans` tags (outer first) before `ethertype`.
pub(crate) fn eth(vlans: &[u16], ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in vlans.iter().enumerate() {
        frame.extend_from_slice(&tpid.to_be_bytes());
        // TCI: VLAN id 100 + i.
        frame.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

pub(crate) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    out
}

/// IPv4 header (+ `options`, a multiple of 4 bytes) and `payload`, with
/// a consistent IHL and total length and the given flags/fragment word.
pub(crate) fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag_off: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert!(
        options.len().is_multiple_of(4) && options.len() <= 40,
        "test bug: bad IPv4 options"
    );
    let hlen = 20 + options.len();
    let total = hlen + payload.len();
    let mut out = vec![0x40 | (hlen / 4) as u8, 0];
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0x12, 0x34]);
    out.extend_from_slice(&frag_off.to_be_bytes());
    out.extend_from_slice(&[64, proto, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(options);
    out.extend_from_slice(payload);
    out
}

pub(crate) fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x60, 0, 0, 0];
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&[next, 64]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(payload);
    out
}

/// A hop-by-hop / routing / destination-options header of 8 bytes
/// followed by `rest`.
pub(crate) fn ext8(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![next, 0, 1, 4, 0, 0, 0, 0];
    out.extend_from_slice(rest);
    out
}

/// An AH header of 16 bytes (hdrlen 2: (2+2)*4) followed by `rest`.
pub(crate) fn ah(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![next, 2, 0, 0];
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(rest);
    out
}

/// An IPv6 fragment header at byte `offset` (multiple of 8) followed by `rest`.
pub(crate) fn frag6(next: u8, offset: u16, more: bool, rest: &[u8]) -> Vec<u8> {
    let word = offset | u16::from(more);
    let mut out = vec![next, 0];
    out.extend_from_slice(&word.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 7]);
    out.extend_from_slice(rest);
    out
}

pub(crate) fn frame(header: Vec<u8>, l3: Vec<u8>) -> Vec<u8> {
    let mut out = header;
    out.extend_from_slice(&l3);
    out
}

pub(crate) fn udp4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    frame(
        eth(&[], ETH_P_IP),
        ipv4(src, dst, PROTO_UDP, &[], 0, &udp(4000, 53, b"hello")),
    )
}

pub(crate) fn udp6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    frame(
        eth(&[], ETH_P_IPV6),
        ipv6(src, dst, PROTO_UDP, &udp(4000, 53, b"hello")),
    )
}
