//! Synchronous rtnetlink: links, addresses and routes of the calling thread's
//! network namespace.
//!
//! Messages are built and parsed with `netlink-packet-route` and sent over a
//! blocking `netlink-sys` socket; no async runtime, because PID 1 is a plain
//! poll loop. Every request asks for an ACK and every wait is bounded by
//! [`NETLINK_REPLY_TIMEOUT`], so a kernel error is always reported (not lost
//! as a silent success) and nothing blocks forever.
//!
//! Interfaces are looked up and listed through netlink rather than
//! `/sys/class/net`: netlink always answers for the namespace of the calling
//! thread, while sysfs shows the namespace that mounted it, which is wrong
//! for a thread that entered another namespace with `setns` (as the tests
//! do) and absent before PID 1 has mounted `/sys`.
//!
//! Writes are idempotent (`NLM_F_REPLACE`): configuring the same address or
//! default route twice (a restart, a lease renewal) updates it instead of
//! failing with `EEXIST`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressMessage, AddressScope, CacheInfo as AddressCacheInfo,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::limits::{INTERFACE_NAME_LEN_MAX, NETLINK_DUMP_MESSAGES_MAX, NETLINK_REPLY_TIMEOUT};

/// Why a netlink operation failed. `op` says what was being done, with the
/// interface and address involved (`add 10.0.2.15/24 to eth0`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidInterfaceName { name: String, reason: &'static str },
    #[error("no network interface named {name}")]
    NoSuchInterface { name: String },
    #[error("{op}: /{prefix_len} is not an IPv4 prefix length (0..=32)")]
    InvalidPrefixLen { op: String, prefix_len: u8 },
    #[error("{op}: interface {interface} has no 6-byte hardware address")]
    NoHardwareAddress { op: String, interface: String },
    #[error("{op}: netlink socket error")]
    Socket {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: the kernel refused")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: no answer from the kernel within {timeout:?}")]
    Timeout { op: String, timeout: Duration },
    #[error("{op}: malformed netlink reply: {message}")]
    Decode { op: String, message: String },
    #[error("{op}: the kernel's answer exceeded {messages_max} messages")]
    TooManyMessages { op: String, messages_max: usize },
}

/// What [`link`] reports about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// The hardware address, if the link has a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
    pub is_ethernet: bool,
    pub is_loopback: bool,
    pub is_up: bool,
    /// The driver reports carrier (`IFF_LOWER_UP`).
    pub has_carrier: bool,
    /// Operationally up (`IFF_RUNNING`): the kernel has attached the real
    /// queueing discipline, so packets sent now leave the interface.
    pub is_running: bool,
}

/// Check `name` is something the kernel could have named an interface, so a
/// typo in a config reports itself instead of a confusing `ENODEV`.
pub fn check_interface_name(name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > INTERFACE_NAME_LEN_MAX {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not interface names")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Some("contains '/', ':', whitespace or a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetError::InvalidInterfaceName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// An open rtnetlink socket. One per thread of work; requests are strictly
/// one at a time (send, then read to the ACK).
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetError> {
        let op = || "open rtnetlink socket".to_string();
        let socket_error = |source| NetError::Socket { op: op(), source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(socket_error)?;
        socket.bind_auto().map_err(socket_error)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(socket_error)?;
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(NETLINK_REPLY_TIMEOUT))
            .map_err(socket_error)?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Send `message` and collect every answer up to the ACK (or the end of
    /// a dump). A kernel error answer becomes [`NetError::Kernel`].
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);

        let socket_error = |source| NetError::Socket {
            op: op.to_string(),
            source,
        };
        let sent = loop {
            match self.socket.send(&bytes, 0) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(socket_error)?,
            }
        };
        if sent != bytes.len() {
            return Err(NetError::Socket {
                op: op.to_string(),
                source: io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {sent} of {} bytes", bytes.len()),
                ),
            });
        }

        let mut answers = Vec::new();
        let mut messages_seen = 0usize;
        loop {
            let buffer = match self.socket.recv_from_full() {
                Ok((buffer, _)) => buffer,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(NetError::Timeout {
                        op: op.to_string(),
                        timeout: NETLINK_REPLY_TIMEOUT,
                    });
                }
                Err(err) => return Err(socket_error(err)),
            };
            let mut offset = 0usize;
            while offset < buffer.len() {
                messages_seen += 1;
                if messages_seen > NETLINK_DUMP_MESSAGES_MAX {
                    return Err(NetError::TooManyMessages {
                        op: op.to_string(),
                        messages_max: NETLINK_DUMP_MESSAGES_MAX,
                    });
                }
                let rest = buffer.get(offset..).unwrap_or_default();
                let length = match rest.get(0..4) {
                    Some(len_bytes) => {
                        let mut raw = [0u8; 4];
                        raw.copy_from_slice(len_bytes);
                        u32::from_ne_bytes(raw) as usize
                    }
                    None => {
                        return Err(decode_error(op, "truncated message header"));
                    }
                };
                let Some(one) = rest.get(..length).filter(|_| length >= 16) else {
                    return Err(decode_error(
                        op,
                        &format!("message length {length} at offset {offset} is out of bounds"),
                    ));
                };
                // Messages are 4-byte aligned within a datagram.
                offset += length.div_ceil(4) * 4;
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(one)
                    .map_err(|err| decode_error(op, &err.to_string()))?;
                if parsed.header.sequence_number != sequence {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                match parsed.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(answers),
                            Some(_) => Err(NetError::Kernel {
                                op: op.to_string(),
                                source: error.to_io(),
                            }),
                        };
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(decode_error(op, "the kernel reported an overrun"));
                    }
                    _ => {}
                }
            }
        }
    }

    /// The interface called `name`.
    pub fn link(&mut self, name: &str) -> Result<LinkInfo, NetError> {
        check_interface_name(name)?;
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        let op = format!("look up interface {name}");
        let answers = match self.request(RouteNetlinkMessage::GetLink(message), 0, &op) {
            Err(NetError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                return Err(NetError::NoSuchInterface {
                    name: name.to_string(),
                });
            }
            other => other?,
        };
        answers
            .into_iter()
            .find_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(link_info(&link)),
                _ => None,
            })
            .ok_or_else(|| NetError::NoSuchInterface {
                name: name.to_string(),
            })
    }

    /// Every interface of the namespace, in index order.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>, NetError> {
        let answers = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "list interfaces",
        )?;
        let mut links: Vec<LinkInfo> = answers
            .iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(link_info(link)),
                _ => None,
            })
            .collect();
        links.sort_by_key(|link| link.index);
        Ok(links)
    }

    /// Set `IFF_UP` on the interface with `index`.
    pub fn set_link_up(&mut self, index: u32, name: &str) -> Result<(), NetError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(
            RouteNetlinkMessage::SetLink(message),
            0,
            &format!("set link {name} up"),
        )?;
        Ok(())
    }

    /// Add (or update) `address/prefix_len` on the interface. With
    /// `valid_for`, the kernel removes the address by itself when that time
    /// has passed without another call (a DHCP lease that was not renewed);
    /// without, the address is permanent.
    pub fn add_address(
        &mut self,
        index: u32,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u8,
        valid_for: Option<Duration>,
    ) -> Result<(), NetError> {
        let op = format!("add {address}/{prefix_len} to {name}");
        let message = address_message(index, address, prefix_len, valid_for, &op)?;
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            &op,
        )?;
        Ok(())
    }

    /// Remove `address/prefix_len` from the interface.
    pub fn delete_address(
        &mut self,
        index: u32,
        name: &str,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        let op = format!("remove {address}/{prefix_len} from {name}");
        let mut message = AddressMessage::default();
        message.header.family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        message.header.prefix_len = prefix_len;
        message.header.index = index;
        message.attributes.push(AddressAttribute::Local(address));
        message.attributes.push(AddressAttribute::Address(address));
        self.request(RouteNetlinkMessage::DelAddress(message), 0, &op)?;
        Ok(())
    }

    /// Every address on the interface with `index` (IPv4 and IPv6), with
    /// its prefix length.
    pub fn addresses(&mut self, index: u32, name: &str) -> Result<Vec<(IpAddr, u8)>, NetError> {
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
            &format!("list addresses of {name}"),
        )?;
        let mut out = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(message) = answer else {
                continue;
            };
            if message.header.index != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
            // peer on point-to-point links, and the only one given for IPv6.
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                out.push((ip, message.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Add (or replace) the default route via `gateway` out of the interface.
    /// A gateway outside the interface's subnets (a /32 lease, say) first
    /// gets a link-scope host route, else the kernel would refuse the
    /// default route as unreachable.
    pub fn add_default_route(
        &mut self,
        index: u32,
        name: &str,
        gateway: Ipv4Addr,
        protocol: RouteOrigin,
    ) -> Result<(), NetError> {
        let op = format!("add default route via {gateway} on {name}");
        let on_link = self.addresses(index, name)?.iter().any(|(ip, prefix_len)| {
            matches!(ip, IpAddr::V4(v4) if same_subnet(*v4, gateway, *prefix_len))
        });
        if !on_link {
            let host_route =
                route_message(index, Some((gateway, 32)), None, RouteScope::Link, protocol);
            self.request(
                RouteNetlinkMessage::NewRoute(host_route),
                NLM_F_CREATE | NLM_F_REPLACE,
                &format!("add host route to gateway {gateway} on {name}"),
            )?;
        }
        let default = route_message(index, None, Some(gateway), RouteScope::Universe, protocol);
        self.request(
            RouteNetlinkMessage::NewRoute(default),
            NLM_F_CREATE | NLM_F_REPLACE,
            &op,
        )?;
        Ok(())
    }

    /// The gateway of the IPv4 default route in the main table that leaves
    /// through the interface with `index`, if there is one.
    pub fn default_gateway(
        &mut self,
        index: u32,
        name: &str,
    ) -> Result<Option<Ipv4Addr>, NetError> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let answers = self.request(
            RouteNetlinkMessage::GetRoute(query),
            NLM_F_DUMP,
            &format!("list routes of {name}"),
        )?;
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(route) = answer else {
                continue;
            };
            let table = route
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(table) => Some(*table),
                    _ => None,
                })
                .unwrap_or(u32::from(route.header.table));
            if route.header.destination_prefix_length != 0
                || table != u32::from(RouteHeader::RT_TABLE_MAIN)
            {
                continue;
            }
            let oif = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(oif) => Some(*oif),
                _ => None,
            });
            let gateway = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
                _ => None,
            });
            if oif == Some(index)
                && let Some(gateway) = gateway
            {
                return Ok(Some(gateway));
            }
        }
        Ok(None)
    }
}

/// Who installed a route, recorded in the kernel's `protocol` field so an
/// operator reading `ip route` sees where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    Static,
    Dhcp,
}

fn decode_error(op: &str, message: &str) -> NetError {
    NetError::Decode {
        op: op.to_string(),
        message: message.to_string(),
    }
}

fn link_info(link: &LinkMessage) -> LinkInfo {
    let name = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    let flags = link.header.flags;
    LinkInfo {
        index: link.header.index,
        name,
        mac,
        is_ethernet: link.header.link_layer_type == LinkLayerType::Ether,
        is_loopback: link.header.link_layer_type == LinkLayerType::Loopback
            || flags.contains(LinkFlags::Loopback),
        is_up: flags.contains(LinkFlags::Up),
        has_carrier: flags.contains(LinkFlags::LowerUp),
        is_running: flags.contains(LinkFlags::Running),
    }
}

/// The network mask of an IPv4 prefix length, as an integer (`None` if
/// the length is over 32).
pub(crate) fn prefix_mask(prefix_len: u8) -> Option<u32> {
    match prefix_len {
        0 => Some(0),
        1..=32 => Some(u32::MAX << (32 - u32::from(prefix_len))),
        _ => None,
    }
}

pub(crate) fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    prefix_mask(prefix_len).is_some_and(|mask| u32::from(a) & mask == u32::from(b) & mask)
}

fn address_message(
    index: u32,
    address: Ipv4Addr,
    prefix_len: u8,
    valid_for: Option<Duration>,
    op: &str,
) -> Result<AddressMessage, NetError> {
    let Some(mask) = prefix_mask(prefix_len) else {
        return Err(NetError::InvalidPrefixLen {
            op: op.to_string(),
            prefix_len,
        });
    };
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix_len;
    message.header.scope = if address.is_loopback() {
        AddressScope::Host
    } else {
        AddressScope::Universe
    };
    message.header.index = index;
    message
        .attributes
        .push(AddressAttribute::Local(IpAddr::V4(address)));
    message
        .attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    // /31 and /32 have no broadcast address (RFC 3021).
    if prefix_len <= 30 {
        let broadcast = Ipv4Addr::from(u32::from(address) | !mask);
        message
            .attributes
            .push(AddressAttribute::Broadcast(broadcast));
    }
    if let Some(valid_for) = valid_for {
        // The kernel counts lifetimes in whole seconds; u32::MAX means
        // forever, so a finite lease stays just below it.
        let seconds = u32::try_from(valid_for.as_secs())
            .unwrap_or(u32::MAX - 1)
            .min(u32::MAX - 1);
        let mut lifetime = AddressCacheInfo::default();
        lifetime.ifa_preferred = seconds;
        lifetime.ifa_valid = seconds;
        message
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
    }
    Ok(message)
}

fn route_message(
    index: u32,
    destination: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
    scope: RouteScope,
    origin: RouteOrigin,
) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = match origin {
        RouteOrigin::Static => RouteProtocol::Static,
        RouteOrigin::Dhcp => RouteProtocol::Dhcp,
    };
    message.header.scope = scope;
    message.header.kind = RouteType::Unicast;
    if let Some((destination, prefix_len)) = destination {
        message.header.destination_prefix_length = prefix_len;
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(destination)));
    }
    if let Some(gateway) = gateway {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    }
    message.attributes.push(RouteAttribute::Oif(index));
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        for good in ["eth0", "lo", "enp0s3", "a", "veth-abcdefghij"] {
            check_interface_name(good).expect(good);
        }
        for bad in [
            "",
            "a/b",
            "eth0:1",
            "has space",
            ".",
            "..",
            "sixteen-chars-xx",
        ] {
            assert!(check_interface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_masks_and_subnets() {
        assert_eq!(prefix_mask(0), Some(0));
        assert_eq!(prefix_mask(24), Some(0xffff_ff00));
        assert_eq!(prefix_mask(32), Some(u32::MAX));
        assert_eq!(prefix_mask(33), None);
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert!(same_subnet(a, Ipv4Addr::new(10, 0, 2, 2), 24));
        assert!(!same_subnet(a, Ipv4Addr::new(10, 0, 3, 2), 24));
        assert!(!same_subnet(a, Ipv4Addr::new(10, 0, 2, 2), 32));
        assert!(!same_subnet(a, Ipv4Addr::new(10, 0, 2, 2), 40));
    }

    #[test]
    fn address_messages_carry_broadcast_and_lifetime() {
        let message = address_message(
            3,
            Ipv4Addr::new(10, 0, 2, 15),
            24,
            Some(Duration::from_secs(86_400)),
            "test",
        )
        .expect("valid prefix");
        assert_eq!(message.header.index, 3);
        assert_eq!(message.header.prefix_len, 24);
        assert!(
            message
                .attributes
                .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 2, 255)))
        );
        let mut lifetime = AddressCacheInfo::default();
        lifetime.ifa_preferred = 86_400;
        lifetime.ifa_valid = 86_400;
        assert!(
            message
                .attributes
                .contains(&AddressAttribute::CacheInfo(lifetime))
        );
        // The message survives the wire format it is sent in.
        let mut bytes = vec![0u8; message.buffer_len()];
        message.emit(&mut bytes);
        let parsed = AddressMessage::parse(&bytes[..]).expect("parses");
        assert_eq!(parsed, message);

        let host = address_message(1, Ipv4Addr::new(10, 0, 2, 15), 32, None, "test")
            .expect("valid prefix");
        assert!(
            !host
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Broadcast(_)))
        );
        assert!(matches!(
            address_message(1, Ipv4Addr::new(10, 0, 2, 15), 33, None, "add"),
            Err(NetError::InvalidPrefixLen { prefix_len: 33, .. })
        ));
    }
}
