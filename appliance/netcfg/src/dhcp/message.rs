//! DHCPv4 messages the client sends and the replies it accepts, encoded and
//! decoded with `dhcproto`. This module only adds the client's rules on top:
//! which fields and options each request carries (RFC 2131 table 5) and what
//! makes a reply usable (table 3).

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::limits::{
    DHCP_HEADER_AND_COOKIE_BYTES, DHCP_LEASE_TIME_MIN, DHCP_MESSAGE_SIZE_BYTES_MAX,
    DHCP_MESSAGE_SIZE_BYTES_MIN, DNS_SERVERS_COUNT_MAX,
};

/// Lease time (option 51) meaning "forever" (RFC 2131 §3.3).
const LEASE_TIME_INFINITE_SECS: u32 = u32::MAX;

/// What a request is for, which decides its fields (RFC 2131 table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// INIT: find servers.
    Discover,
    /// SELECTING → REQUESTING: take `address` from `server`'s offer.
    Select { server: Ipv4Addr, address: Ipv4Addr },
    /// RENEWING: extend the lease on `address` with the server that gave it
    /// (sent unicast).
    Renew { address: Ipv4Addr },
    /// REBINDING: extend the lease on `address` with any server (broadcast).
    Rebind { address: Ipv4Addr },
}

/// Who the client is: its hardware address and, optionally, the host name
/// it asks the server to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub mac: [u8; 6],
    pub hostname: Option<String>,
}

impl ClientIdentity {
    /// Client identifier option (61): hardware type 1 (Ethernet) + MAC, the
    /// form RFC 2132 §9.14 recommends and dnsmasq/ISC key leases by.
    fn client_id(&self) -> Vec<u8> {
        let mut id = Vec::with_capacity(7);
        id.push(1);
        id.extend_from_slice(&self.mac);
        id
    }
}

/// Encode one client request. `secs` is the time since the client began
/// this acquisition or renewal (RFC 2131 §2).
pub fn build_request(
    kind: RequestKind,
    xid: u32,
    secs: u16,
    client: &ClientIdentity,
) -> Result<Vec<u8>, BuildError> {
    let mut message = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &client.mac,
    );
    message
        .set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_secs(secs);
    let message_type = match kind {
        RequestKind::Discover => MessageType::Discover,
        _ => MessageType::Request,
    };
    // Before the interface has an address the client cannot receive
    // unicast, and on RENEWING it has one. The flag asks for broadcast
    // replies exactly when they are needed.
    let broadcast = !matches!(kind, RequestKind::Renew { .. });
    message.set_flags(if broadcast {
        Flags::default().set_broadcast()
    } else {
        Flags::default()
    });
    if let RequestKind::Renew { address } | RequestKind::Rebind { address } = kind {
        message.set_ciaddr(address);
    }

    let options = message.opts_mut();
    options.insert(DhcpOption::MessageType(message_type));
    options.insert(DhcpOption::ClientIdentifier(client.client_id()));
    options.insert(DhcpOption::MaxMessageSize(
        DHCP_MESSAGE_SIZE_BYTES_MAX as u16,
    ));
    options.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    if let Some(hostname) = &client.hostname {
        options.insert(DhcpOption::Hostname(hostname.clone()));
    }
    if let RequestKind::Select { server, address } = kind {
        options.insert(DhcpOption::ServerIdentifier(server));
        options.insert(DhcpOption::RequestedIpAddress(address));
    }

    let mut bytes = Vec::with_capacity(DHCP_MESSAGE_SIZE_BYTES_MIN);
    message
        .encode(&mut Encoder::new(&mut bytes))
        .map_err(|err| BuildError {
            message: err.to_string(),
        })?;
    // Pad after the End option: zero bytes are Pad options.
    if bytes.len() < DHCP_MESSAGE_SIZE_BYTES_MIN {
        bytes.resize(DHCP_MESSAGE_SIZE_BYTES_MIN, 0);
    }
    if bytes.len() > DHCP_MESSAGE_SIZE_BYTES_MAX {
        return Err(BuildError {
            message: format!(
                "request is {} bytes, over the {DHCP_MESSAGE_SIZE_BYTES_MAX}-byte limit",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// A request could not be encoded (a host name too long for its option).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode dhcp request: {message}")]
pub struct BuildError {
    pub message: String,
}

/// The configuration an OFFER proposes or an ACK grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseParams {
    /// `yiaddr`: the address for the client.
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The first router (option 3).
    pub gateway: Option<Ipv4Addr>,
    /// Option 6, at most [`DNS_SERVERS_COUNT_MAX`].
    pub dns: Vec<Ipv4Addr>,
    /// Server identifier (option 54).
    pub server: Ipv4Addr,
    /// `None` for an infinite lease.
    pub lease_time: Option<Duration>,
    /// T1: renew after this (default half the lease).
    pub renew_after: Option<Duration>,
    /// T2: rebind after this (default 7/8 of the lease).
    pub rebind_after: Option<Duration>,
}

/// A reply for this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(LeaseParams),
    Ack(LeaseParams),
    Nak {
        server: Option<Ipv4Addr>,
        /// Option 56, the server's reason, if it gave one.
        message: Option<String>,
    },
}

/// Why a received packet is not a usable reply. The client ignores such
/// packets (they may be meant for another client) and keeps waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("{len} bytes is shorter than a dhcp header ({DHCP_HEADER_AND_COOKIE_BYTES} bytes)")]
    TooShort { len: usize },
    #[error("{len} bytes is over the {DHCP_MESSAGE_SIZE_BYTES_MAX}-byte message limit")]
    TooLong { len: usize },
    #[error("bytes 236..240 are not the dhcp magic cookie")]
    BadCookie,
    #[error("undecodable dhcp message: {message}")]
    Decode { message: String },
    #[error("op {op} is not BOOTREPLY")]
    NotAReply { op: u8 },
    #[error("xid {found:#010x} is not ours ({expected:#010x})")]
    OtherTransaction { expected: u32, found: u32 },
    #[error("chaddr is not our hardware address")]
    OtherClient,
    #[error("hardware address length {hlen} is not Ethernet's 6")]
    HardwareAddressLength { hlen: u8 },
    #[error("no message type option (53)")]
    NoMessageType,
    #[error("message type {found:?} is not OFFER, ACK or NAK")]
    UnexpectedType { found: MessageType },
    #[error("{kind} without a server identifier (option 54)")]
    NoServerId { kind: &'static str },
    #[error("{kind} without an address (yiaddr is {address})")]
    NoAddress {
        kind: &'static str,
        address: Ipv4Addr,
    },
    #[error("subnet mask {mask} is not a contiguous mask")]
    BadSubnetMask { mask: Ipv4Addr },
    #[error("{kind} without a lease time (option 51)")]
    NoLeaseTime { kind: &'static str },
    #[error("lease time {secs} s is shorter than the {min:?} minimum")]
    LeaseTooShort { secs: u32, min: Duration },
}

/// Decode `bytes` and accept it if it answers transaction `xid` of the
/// client with hardware address `mac`.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8; 6]) -> Result<Reply, ReplyError> {
    if bytes.len() < DHCP_HEADER_AND_COOKIE_BYTES {
        return Err(ReplyError::TooShort { len: bytes.len() });
    }
    if bytes.len() > DHCP_MESSAGE_SIZE_BYTES_MAX {
        return Err(ReplyError::TooLong { len: bytes.len() });
    }
    // dhcproto does not check the cookie; without it the rest is BOOTP or
    // noise, not DHCP options.
    if bytes.get(236..240) != Some(&v4::MAGIC[..]) {
        return Err(ReplyError::BadCookie);
    }
    // dhcproto's `chaddr()` slices by `hlen` and panics when it is over 16,
    // so the hardware address is checked on the raw bytes, before decoding.
    let hlen = bytes.get(2).copied().unwrap_or(0);
    if hlen != 6 {
        return Err(ReplyError::HardwareAddressLength { hlen });
    }
    if bytes.get(28..34) != Some(&mac[..]) {
        return Err(ReplyError::OtherClient);
    }
    let used = options_we_use(bytes)?;
    let message = Message::decode(&mut Decoder::new(&used)).map_err(|err| ReplyError::Decode {
        message: err.to_string(),
    })?;
    match message.opcode() {
        Opcode::BootReply => {}
        Opcode::BootRequest => return Err(ReplyError::NotAReply { op: 1 }),
        Opcode::Unknown(op) => return Err(ReplyError::NotAReply { op }),
    }
    if message.xid() != xid {
        return Err(ReplyError::OtherTransaction {
            expected: xid,
            found: message.xid(),
        });
    }
    let options = message.opts();
    let server = match options.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(server)) => Some(*server),
        _ => None,
    };
    match options.msg_type() {
        None => Err(ReplyError::NoMessageType),
        Some(MessageType::Offer) => lease_params(&message, server, "OFFER").map(Reply::Offer),
        Some(MessageType::Ack) => lease_params(&message, server, "ACK").map(Reply::Ack),
        Some(MessageType::Nak) => Ok(Reply::Nak {
            server,
            message: match options.get(OptionCode::Message) {
                Some(DhcpOption::Message(text)) => Some(text.clone()),
                _ => None,
            },
        }),
        Some(found) => Err(ReplyError::UnexpectedType { found }),
    }
}

/// Option codes a reply is read for; everything else is dropped before
/// decoding.
const USED_OPTION_CODES: [u8; 9] = [
    1,  // subnet mask
    3,  // router
    6,  // domain name servers
    51, // lease time
    53, // message type
    54, // server identifier
    56, // message
    58, // T1
    59, // T2
];

/// A copy of `bytes` whose options area holds only the options in
/// [`USED_OPTION_CODES`], each checked to lie within the packet.
///
/// dhcproto's option decoder trusts some option lengths (debug assertions
/// and `len - 1` arithmetic for options a client never needs, like rapid
/// commit or bulk leasequery), so a hostile server could make it panic in
/// a debug build. Only the bare TLV framing is walked here; the options
/// themselves are still decoded by dhcproto.
fn options_we_use(bytes: &[u8]) -> Result<Vec<u8>, ReplyError> {
    const PAD: u8 = 0;
    const END: u8 = 255;
    let truncated = |at: usize| ReplyError::Decode {
        message: format!("option at offset {at} runs past the end of the packet"),
    };
    let mut out = bytes
        .get(..DHCP_HEADER_AND_COOKIE_BYTES)
        .ok_or(ReplyError::TooShort { len: bytes.len() })?
        .to_vec();
    let mut at = DHCP_HEADER_AND_COOKIE_BYTES;
    while let Some(&code) = bytes.get(at) {
        match code {
            PAD => at += 1,
            END => break,
            _ => {
                let len = usize::from(*bytes.get(at + 1).ok_or_else(|| truncated(at))?);
                let option = bytes.get(at..at + 2 + len).ok_or_else(|| truncated(at))?;
                if USED_OPTION_CODES.contains(&code) {
                    out.extend_from_slice(option);
                }
                at += 2 + len;
            }
        }
    }
    out.push(END);
    Ok(out)
}

fn lease_params(
    message: &Message,
    server: Option<Ipv4Addr>,
    kind: &'static str,
) -> Result<LeaseParams, ReplyError> {
    let options = message.opts();
    let server = server.ok_or(ReplyError::NoServerId { kind })?;
    let address = message.yiaddr();
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return Err(ReplyError::NoAddress { kind, address });
    }
    let prefix_len = match options.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            mask_prefix_len(*mask).ok_or(ReplyError::BadSubnetMask { mask: *mask })?
        }
        // RFC 2131 §4.3.1 lets the server leave the mask out; fall back to
        // the address's class as RFC 1122 clients do.
        _ => classful_prefix_len(address),
    };
    let gateway = match options.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers
            .iter()
            .copied()
            .find(|r| !r.is_unspecified() && !r.is_broadcast() && *r != address),
        _ => None,
    };
    let dns = match options.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => servers
            .iter()
            .copied()
            .filter(|s| !s.is_unspecified() && !s.is_broadcast())
            .take(DNS_SERVERS_COUNT_MAX)
            .collect(),
        _ => Vec::new(),
    };
    let lease_secs = match options.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(secs)) => *secs,
        _ => return Err(ReplyError::NoLeaseTime { kind }),
    };
    if lease_secs == LEASE_TIME_INFINITE_SECS {
        return Ok(LeaseParams {
            address,
            prefix_len,
            gateway,
            dns,
            server,
            lease_time: None,
            renew_after: None,
            rebind_after: None,
        });
    }
    let lease_time = Duration::from_secs(u64::from(lease_secs));
    if lease_time < DHCP_LEASE_TIME_MIN {
        return Err(ReplyError::LeaseTooShort {
            secs: lease_secs,
            min: DHCP_LEASE_TIME_MIN,
        });
    }
    let t1 = match options.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(secs)) => Some(Duration::from_secs(u64::from(*secs))),
        _ => None,
    };
    let t2 = match options.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(secs)) => Some(Duration::from_secs(u64::from(*secs))),
        _ => None,
    };
    let (renew_after, rebind_after) = lease_timers(lease_time, t1, t2);
    Ok(LeaseParams {
        address,
        prefix_len,
        gateway,
        dns,
        server,
        lease_time: Some(lease_time),
        renew_after: Some(renew_after),
        rebind_after: Some(rebind_after),
    })
}

/// T1 and T2 as the server gave them when they are consistent
/// (0 < T1 < T2 < lease), else RFC 2131 §4.4.5's defaults: 0.5 and 0.875
/// of the lease.
pub fn lease_timers(
    lease_time: Duration,
    t1: Option<Duration>,
    t2: Option<Duration>,
) -> (Duration, Duration) {
    let default_t1 = lease_time / 2;
    let default_t2 = lease_time * 7 / 8;
    let t2 = t2
        .filter(|t2| !t2.is_zero() && *t2 < lease_time)
        .unwrap_or(default_t2);
    let t1 = t1
        .filter(|t1| !t1.is_zero() && *t1 < t2)
        .unwrap_or_else(|| if default_t1 < t2 { default_t1 } else { t2 / 2 });
    (t1, t2)
}

/// The prefix length of a contiguous netmask.
pub fn mask_prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

fn classful_prefix_len(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Server-side message building for the tests of this crate.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A server's reply to transaction `xid`, as a server would encode it.
    pub(crate) fn server_reply(
        xid: u32,
        message_type: MessageType,
        yiaddr: Ipv4Addr,
        extra: &[DhcpOption],
    ) -> Vec<u8> {
        let mut reply = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        reply.set_opcode(Opcode::BootReply);
        reply
            .opts_mut()
            .insert(DhcpOption::MessageType(message_type));
        for option in extra {
            reply.opts_mut().insert(option.clone());
        }
        let mut bytes = Vec::new();
        reply
            .encode(&mut Encoder::new(&mut bytes))
            .expect("encodes");
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::{MAC, server_reply};

    fn client() -> ClientIdentity {
        ClientIdentity {
            mac: MAC,
            hostname: Some("node-1".to_string()),
        }
    }

    fn decode(bytes: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(bytes)).expect("our own request decodes")
    }

    fn slirp_options() -> Vec<DhcpOption> {
        vec![
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)),
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]),
            DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]),
            DhcpOption::AddressLeaseTime(86_400),
        ]
    }

    #[test]
    fn discover_carries_the_client_and_asks_for_broadcast() {
        let bytes =
            build_request(RequestKind::Discover, 0xdead_beef, 3, &client()).expect("builds");
        assert!(bytes.len() >= DHCP_MESSAGE_SIZE_BYTES_MIN);
        let message = decode(&bytes);
        assert_eq!(message.opcode(), Opcode::BootRequest);
        assert_eq!(message.xid(), 0xdead_beef);
        assert_eq!(message.secs(), 3);
        assert!(message.flags().broadcast());
        assert_eq!(message.chaddr().get(..6), Some(&MAC[..]));
        assert_eq!(message.hlen(), 6);
        assert_eq!(message.ciaddr(), Ipv4Addr::UNSPECIFIED);
        let options = message.opts();
        assert_eq!(options.msg_type(), Some(MessageType::Discover));
        assert_eq!(
            options.get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56
            ]))
        );
        assert_eq!(
            options.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("node-1".to_string()))
        );
        assert_eq!(
            options.get(OptionCode::MaxMessageSize),
            Some(&DhcpOption::MaxMessageSize(1500))
        );
        assert!(!options.contains(OptionCode::ServerIdentifier));
        assert!(!options.contains(OptionCode::RequestedIpAddress));
    }

    #[test]
    fn requests_follow_rfc_2131_table_5() {
        let server = Ipv4Addr::new(10, 0, 2, 2);
        let address = Ipv4Addr::new(10, 0, 2, 15);

        let select = decode(
            &build_request(RequestKind::Select { server, address }, 7, 0, &client())
                .expect("builds"),
        );
        assert_eq!(select.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(select.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(select.flags().broadcast());
        assert_eq!(
            select.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(server))
        );
        assert_eq!(
            select.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(address))
        );

        let renew = decode(
            &build_request(RequestKind::Renew { address }, 8, 0, &client()).expect("builds"),
        );
        assert_eq!(renew.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(renew.ciaddr(), address);
        assert!(!renew.flags().broadcast());
        assert!(!renew.opts().contains(OptionCode::ServerIdentifier));
        assert!(!renew.opts().contains(OptionCode::RequestedIpAddress));

        let rebind = decode(
            &build_request(RequestKind::Rebind { address }, 9, 0, &client()).expect("builds"),
        );
        assert_eq!(rebind.ciaddr(), address);
        assert!(rebind.flags().broadcast());
        assert!(!rebind.opts().contains(OptionCode::ServerIdentifier));
        assert!(!rebind.opts().contains(OptionCode::RequestedIpAddress));
    }

    #[test]
    fn slirp_style_offer_and_ack_parse() {
        let offer = server_reply(
            42,
            MessageType::Offer,
            Ipv4Addr::new(10, 0, 2, 15),
            &slirp_options(),
        );
        let expected = LeaseParams {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease_time: Some(Duration::from_secs(86_400)),
            renew_after: Some(Duration::from_secs(43_200)),
            rebind_after: Some(Duration::from_secs(75_600)),
        };
        assert_eq!(
            parse_reply(&offer, 42, &MAC),
            Ok(Reply::Offer(expected.clone()))
        );
        let ack = server_reply(
            42,
            MessageType::Ack,
            Ipv4Addr::new(10, 0, 2, 15),
            &slirp_options(),
        );
        assert_eq!(parse_reply(&ack, 42, &MAC), Ok(Reply::Ack(expected)));
    }

    #[test]
    fn server_timers_are_used_when_consistent() {
        let mut options = slirp_options();
        options.push(DhcpOption::Renewal(60));
        options.push(DhcpOption::Rebinding(105));
        options.push(DhcpOption::AddressLeaseTime(120));
        let ack = server_reply(1, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 15), &options);
        let Ok(Reply::Ack(params)) = parse_reply(&ack, 1, &MAC) else {
            panic!("expected an ack");
        };
        assert_eq!(params.lease_time, Some(Duration::from_secs(120)));
        assert_eq!(params.renew_after, Some(Duration::from_secs(60)));
        assert_eq!(params.rebind_after, Some(Duration::from_secs(105)));
    }

    #[test]
    fn inconsistent_timers_fall_back_to_defaults() {
        let lease = Duration::from_secs(1000);
        let s = Duration::from_secs;
        assert_eq!(lease_timers(lease, None, None), (s(500), s(875)));
        // T2 past the lease end, T1 past T2, zeros: all replaced.
        assert_eq!(
            lease_timers(lease, Some(s(900)), Some(s(2000))),
            (s(500), s(875))
        );
        assert_eq!(
            lease_timers(lease, Some(s(0)), Some(s(0))),
            (s(500), s(875))
        );
        // A small T2 pulls the default T1 below it.
        assert_eq!(lease_timers(lease, None, Some(s(400))), (s(200), s(400)));
        assert_eq!(
            lease_timers(lease, Some(s(100)), Some(s(400))),
            (s(100), s(400))
        );
    }

    #[test]
    fn infinite_lease_has_no_timers() {
        let mut options = slirp_options();
        options.push(DhcpOption::AddressLeaseTime(u32::MAX));
        let ack = server_reply(1, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 15), &options);
        let Ok(Reply::Ack(params)) = parse_reply(&ack, 1, &MAC) else {
            panic!("expected an ack");
        };
        assert_eq!(params.lease_time, None);
        assert_eq!(params.renew_after, None);
        assert_eq!(params.rebind_after, None);
    }

    #[test]
    fn nak_carries_the_server_reason() {
        let nak = server_reply(
            5,
            MessageType::Nak,
            Ipv4Addr::UNSPECIFIED,
            &[
                DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)),
                DhcpOption::Message("wrong network".to_string()),
            ],
        );
        assert_eq!(
            parse_reply(&nak, 5, &MAC),
            Ok(Reply::Nak {
                server: Some(Ipv4Addr::new(10, 0, 2, 2)),
                message: Some("wrong network".to_string())
            })
        );
    }

    #[test]
    fn replies_for_others_and_malformed_replies_are_rejected() {
        let offer = server_reply(
            42,
            MessageType::Offer,
            Ipv4Addr::new(10, 0, 2, 15),
            &slirp_options(),
        );
        assert_eq!(
            parse_reply(&offer, 43, &MAC),
            Err(ReplyError::OtherTransaction {
                expected: 43,
                found: 42
            })
        );
        assert_eq!(
            parse_reply(&offer, 42, &[0, 1, 2, 3, 4, 5]),
            Err(ReplyError::OtherClient)
        );
        assert_eq!(
            parse_reply(&offer[..239], 42, &MAC),
            Err(ReplyError::TooShort { len: 239 })
        );
        let mut long = offer.clone();
        long.resize(DHCP_MESSAGE_SIZE_BYTES_MAX + 1, 0);
        assert_eq!(
            parse_reply(&long, 42, &MAC),
            Err(ReplyError::TooLong {
                len: DHCP_MESSAGE_SIZE_BYTES_MAX + 1
            })
        );
        let mut no_cookie = offer.clone();
        no_cookie[236] = 0;
        assert_eq!(
            parse_reply(&no_cookie, 42, &MAC),
            Err(ReplyError::BadCookie)
        );
        let mut request = offer.clone();
        request[0] = 1;
        assert_eq!(
            parse_reply(&request, 42, &MAC),
            Err(ReplyError::NotAReply { op: 1 })
        );

        let mut options = slirp_options();
        options.retain(|o| !matches!(o, DhcpOption::ServerIdentifier(_)));
        let no_server = server_reply(1, MessageType::Offer, Ipv4Addr::new(10, 0, 2, 15), &options);
        assert_eq!(
            parse_reply(&no_server, 1, &MAC),
            Err(ReplyError::NoServerId { kind: "OFFER" })
        );
        let no_address = server_reply(1, MessageType::Ack, Ipv4Addr::UNSPECIFIED, &slirp_options());
        assert_eq!(
            parse_reply(&no_address, 1, &MAC),
            Err(ReplyError::NoAddress {
                kind: "ACK",
                address: Ipv4Addr::UNSPECIFIED
            })
        );
        let mut options = slirp_options();
        options.push(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        let bad_mask = server_reply(1, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 15), &options);
        assert_eq!(
            parse_reply(&bad_mask, 1, &MAC),
            Err(ReplyError::BadSubnetMask {
                mask: Ipv4Addr::new(255, 0, 255, 0)
            })
        );
        let mut options = slirp_options();
        options.push(DhcpOption::AddressLeaseTime(5));
        let short = server_reply(1, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 15), &options);
        assert!(matches!(
            parse_reply(&short, 1, &MAC),
            Err(ReplyError::LeaseTooShort { secs: 5, .. })
        ));
        let mut options = slirp_options();
        options.retain(|o| !matches!(o, DhcpOption::AddressLeaseTime(_)));
        let no_lease = server_reply(1, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 15), &options);
        assert_eq!(
            parse_reply(&no_lease, 1, &MAC),
            Err(ReplyError::NoLeaseTime { kind: "ACK" })
        );
        let inform = server_reply(
            1,
            MessageType::Inform,
            Ipv4Addr::new(10, 0, 2, 15),
            &slirp_options(),
        );
        assert_eq!(
            parse_reply(&inform, 1, &MAC),
            Err(ReplyError::UnexpectedType {
                found: MessageType::Inform
            })
        );
    }

    #[test]
    fn inputs_that_panic_dhcproto_are_refused_or_cleaned() {
        let offer = server_reply(
            42,
            MessageType::Offer,
            Ipv4Addr::new(10, 0, 2, 15),
            &slirp_options(),
        );
        // hlen over 16 made `Message::chaddr` slice out of bounds.
        let mut long_hlen = offer.clone();
        long_hlen[2] = 43;
        assert_eq!(
            parse_reply(&long_hlen, 42, &MAC),
            Err(ReplyError::HardwareAddressLength { hlen: 43 })
        );
        // Rapid commit (80) with a length and bulk leasequery status (151)
        // with length 0 tripped dhcproto's length assumptions; they are
        // dropped, and the options around them still count.
        let end = offer.iter().rposition(|&b| b == 255).expect("end option");
        let mut odd = offer[..end].to_vec();
        odd.extend_from_slice(&[80, 2, 0, 0, 151, 0, 255]);
        assert!(matches!(parse_reply(&odd, 42, &MAC), Ok(Reply::Offer(p)) if p.prefix_len == 24));
        // An option whose length runs past the packet is refused.
        let mut cut = offer[..end].to_vec();
        cut.extend_from_slice(&[6, 8, 10, 0]);
        assert!(matches!(
            parse_reply(&cut, 42, &MAC),
            Err(ReplyError::Decode { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let offer = server_reply(
            42,
            MessageType::Offer,
            Ipv4Addr::new(10, 0, 2, 15),
            &slirp_options(),
        );
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut rejected = 0usize;
        for round in 0..20_000 {
            let mut bytes = offer.clone();
            for _ in 0..1 + round % 8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % bytes.len() as u64) as usize;
                bytes[at] = (state >> 32) as u8;
            }
            if round % 5 == 0 {
                bytes.truncate((state % bytes.len() as u64) as usize);
            }
            if parse_reply(&bytes, 42, &MAC).is_err() {
                rejected += 1;
            }
        }
        // Most mutations hit the header or an option and must be refused;
        // the point is that none of them panicked on the way.
        assert!(rejected > 0);
        assert!(parse_reply(&offer, 42, &MAC).is_ok());
    }

    #[test]
    fn masks_map_to_prefix_lengths() {
        assert_eq!(mask_prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix_len(Ipv4Addr::new(255, 255, 254, 0)), Some(23));
        assert_eq!(mask_prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(classful_prefix_len(Ipv4Addr::new(10, 0, 2, 15)), 8);
        assert_eq!(classful_prefix_len(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(classful_prefix_len(Ipv4Addr::new(192, 168, 1, 1)), 24);
    }
}
