//! The sockets under [`DhcpIo`]: a packet socket while the interface has no
//! address, a UDP socket once it has one.
//!
//! Why not UDP from the start: Linux delivers the server's broadcast OFFER
//! to a UDP socket on 0.0.0.0:68 only if reverse-path filtering lets it in,
//! and with `rp_filter=1` (the appliance's sysctl policy) or `2` it drops a
//! packet whose source the interface has no route back to — which, before
//! the interface has an address, is every server (`__fib_validate_source`).
//! Measured in a network namespace with dnsmasq: a UDP client gets the OFFER
//! with `rp_filter=0` and times out with 1 or 2. A packet socket sees frames
//! before the IP layer filters them, so acquisition (and only acquisition)
//! uses `AF_PACKET`; the IPv4/UDP headers around the DHCP payload are built
//! and parsed with `etherparse`. Renewal and rebinding happen while the
//! address is configured, so a plain UDP socket works and is what they use.

use std::io::{self, Read};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockFilter, Socket, Type};

use super::exchange::{Destination, DhcpIo};
use crate::limits::{DHCP_IP_TTL, DHCP_PACKET_BUFFER_BYTES};

const CLIENT_PORT: u16 = dhcproto::v4::CLIENT_PORT;
const SERVER_PORT: u16 = dhcproto::v4::SERVER_PORT;

/// Classic BPF run by the kernel on every IPv4 packet the interface sees:
/// keep unfragmented UDP to port 68, drop the rest, so the socket's queue
/// holds only candidate replies even on a busy link. Offsets are from the
/// IPv4 header (a `SOCK_DGRAM` packet socket strips the Ethernet header).
/// The reply is still fully checked in user space; this only saves work.
const DHCP_CLIENT_FILTER: [SockFilter; 9] = {
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LD_H_IND: u16 = 0x48; // BPF_LD | BPF_H | BPF_IND
    const LDX_B_MSH: u16 = 0xb1; // BPF_LDX | BPF_B | BPF_MSH: X = 4 * (P[k] & 0xf)
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    // Jump offsets count instructions skipped; 8 is the drop at the end.
    [
        SockFilter::new(LD_B_ABS, 0, 0, 9),    // 0: A = protocol
        SockFilter::new(JEQ_K, 0, 6, 17),      // 1: UDP? else drop
        SockFilter::new(LD_H_ABS, 0, 0, 6),    // 2: A = flags + fragment offset
        SockFilter::new(JSET_K, 4, 0, 0x1fff), // 3: a fragment? drop
        SockFilter::new(LDX_B_MSH, 0, 0, 0),   // 4: X = IP header length
        SockFilter::new(LD_H_IND, 0, 0, 2),    // 5: A = UDP destination port
        SockFilter::new(JEQ_K, 0, 1, CLIENT_PORT as u32), // 6: port 68? else drop
        SockFilter::new(RET_K, 0, 0, DHCP_PACKET_BUFFER_BYTES as u32), // 7: accept
        SockFilter::new(RET_K, 0, 0, 0),       // 8: drop
    ]
};

/// DHCP over a packet socket on one interface (acquisition).
#[derive(Debug)]
pub struct PacketIo {
    socket: Socket,
    ifindex: u32,
}

impl PacketIo {
    /// Open a packet socket on the interface with `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<PacketIo> {
        let eth_p_ip = libc::ETH_P_IP as u16;
        // Protocol 0: the socket receives nothing until bound, so no packet
        // can slip in before the filter is attached.
        let socket = Socket::new(Domain::PACKET, Type::DGRAM, None)?;
        socket.attach_filter(&DHCP_CLIENT_FILTER)?;
        // Bound to the interface and to IPv4 frames only.
        socket.bind(&link_address(ifindex, eth_p_ip, [0; 6]))?;
        Ok(PacketIo { socket, ifindex })
    }
}

/// A `sockaddr_ll` for the interface, as socket2's address type.
fn link_address(ifindex: u32, protocol: u16, mac: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of the platform's sockaddr types and fits
    // in `sockaddr_storage` (socket2 asserts the size).
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&mac);
    let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised `sockaddr_ll` with family
    // AF_PACKET, and `len` is that type's size.
    unsafe { SockAddr::new(storage, len) }
}

/// Wait for a readable packet until `deadline`: `None` when it passed.
fn read_until(socket: &Socket, buffer: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // A zero timeout means "block forever" to the kernel.
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match (&*socket).read(buffer) {
            Ok(len) => return Ok(Some(len)),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) => return Err(err),
        }
    }
}

/// The DHCP payload of an IPv4/UDP packet from a server port to the client
/// port, or `None` if the packet is anything else.
pub(crate) fn dhcp_payload(packet: &[u8]) -> Option<&[u8]> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        return None;
    };
    let header = ip.header();
    if header.is_fragmenting_payload() {
        return None;
    }
    // The IP header checksum is always computed in full by the sender. The
    // UDP checksum is not checked: on virtual links the kernel hands packet
    // sockets UDP checksums that offload never filled in (dhclient's old
    // "bad udp checksum" problem), and the Ethernet FCS already covered the
    // frame on real ones.
    if header.header_checksum() != header.to_header().calc_header_checksum() {
        return None;
    }
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        return None;
    };
    if udp.destination_port() != CLIENT_PORT || udp.source_port() != SERVER_PORT {
        return None;
    }
    Some(udp.payload())
}

/// Wrap a DHCP message in the IPv4/UDP headers of a client broadcast sent
/// before the client has an address (0.0.0.0:68 → 255.255.255.255:67).
pub(crate) fn broadcast_packet(message: &[u8]) -> io::Result<Vec<u8>> {
    let builder = PacketBuilder::ipv4(
        Ipv4Addr::UNSPECIFIED.octets(),
        Ipv4Addr::BROADCAST.octets(),
        DHCP_IP_TTL,
    )
    .udp(CLIENT_PORT, SERVER_PORT);
    let mut packet = Vec::with_capacity(builder.size(message.len()));
    builder
        .write(&mut packet, message)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))?;
    Ok(packet)
}

impl DhcpIo for PacketIo {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, message: &[u8], to: Destination) -> io::Result<()> {
        if to != Destination::Broadcast {
            // Unicast needs the server's MAC (ARP); acquisition never does.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the packet socket only broadcasts",
            ));
        }
        let packet = broadcast_packet(message)?;
        let to = link_address(self.ifindex, libc::ETH_P_IP as u16, [0xff; 6]);
        self.socket.send_to(&packet, &to)?;
        Ok(())
    }

    fn recv(&mut self, buffer: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
        let mut packet = vec![0u8; DHCP_PACKET_BUFFER_BYTES];
        loop {
            let Some(len) = read_until(&self.socket, &mut packet, deadline)? else {
                return Ok(None);
            };
            // A packet that filled the buffer may have been cut short.
            if len >= packet.len() {
                continue;
            }
            let Some(payload) = packet.get(..len).and_then(dhcp_payload) else {
                continue;
            };
            let Some(out) = buffer.get_mut(..payload.len()) else {
                continue;
            };
            out.copy_from_slice(payload);
            return Ok(Some(payload.len()));
        }
    }

    fn sleep_until(&mut self, deadline: Instant) {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }

    fn random_u32(&mut self) -> u32 {
        random_u32()
    }
}

/// DHCP over UDP port 68 on one interface (renewal and rebinding).
#[derive(Debug)]
pub struct UdpIo {
    socket: Socket,
}

impl UdpIo {
    /// Bind 0.0.0.0:68 on `interface` only (`SO_BINDTODEVICE`), allowed to
    /// broadcast, sharing the port with any other client socket.
    pub fn open(interface: &str) -> io::Result<UdpIo> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.bind(&SockAddr::from(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            CLIENT_PORT,
        )))?;
        Ok(UdpIo { socket })
    }
}

impl DhcpIo for UdpIo {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, message: &[u8], to: Destination) -> io::Result<()> {
        let address = match to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Server(server) => server,
        };
        self.socket.send_to(
            message,
            &SockAddr::from(SocketAddrV4::new(address, SERVER_PORT)),
        )?;
        Ok(())
    }

    fn recv(&mut self, buffer: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
        loop {
            let Some(len) = read_until(&self.socket, buffer, deadline)? else {
                return Ok(None);
            };
            // A datagram that filled the buffer may have been truncated.
            if len < buffer.len() {
                return Ok(Some(len));
            }
        }
    }

    fn sleep_until(&mut self, deadline: Instant) {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }

    fn random_u32(&mut self) -> u32 {
        random_u32()
    }
}

/// Random bits from the kernel. `getrandom` only fails if the syscall is
/// missing; the fallback keeps xids distinct across boots and retries,
/// which is all DHCP needs from them.
fn random_u32() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_packets_round_trip_through_the_parser() {
        let message = vec![0xabu8; 300];
        let packet = broadcast_packet(&message).expect("builds");
        assert_eq!(packet.len(), 20 + 8 + 300);
        // A client's own packet goes to port 67, so it is not a reply.
        assert_eq!(dhcp_payload(&packet), None);

        // The same packet as a server's reply: ports swapped.
        let builder = PacketBuilder::ipv4([10, 0, 2, 2], [255, 255, 255, 255], 64).udp(67, 68);
        let mut reply = Vec::new();
        builder.write(&mut reply, &message).expect("builds");
        assert_eq!(dhcp_payload(&reply), Some(&message[..]));

        // A damaged IP header is refused.
        let mut damaged = reply.clone();
        damaged[8] ^= 0x01; // TTL, covered by the header checksum
        assert_eq!(dhcp_payload(&damaged), None);

        // Ethernet padding after the IP packet is not part of the payload.
        let mut padded = reply.clone();
        padded.extend_from_slice(&[0u8; 18]);
        assert_eq!(dhcp_payload(&padded), Some(&message[..]));

        // Another UDP port, or not UDP at all.
        let builder = PacketBuilder::ipv4([10, 0, 2, 2], [255, 255, 255, 255], 64).udp(67, 69);
        let mut other_port = Vec::new();
        builder.write(&mut other_port, &message).expect("builds");
        assert_eq!(dhcp_payload(&other_port), None);
        assert_eq!(dhcp_payload(&[0x45, 0, 0]), None);
    }
}
