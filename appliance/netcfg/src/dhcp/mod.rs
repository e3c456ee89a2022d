//! DHCPv4 client (RFC 2131).
//!
//! - `message`: requests and replies, encoded/decoded by `dhcproto`.
//! - `lease`: a granted lease and its T1/T2/expiry timing, a pure state
//!   machine ([`Lease::next_action`]).
//! - `exchange`: the DISCOVER/OFFER/REQUEST/ACK and renew/rebind exchanges
//!   over the [`DhcpIo`] seam (retransmission, xid checks, NAK restarts).
//! - `transport`: the real sockets (packet socket before the address is
//!   configured, UDP after; the module doc says why).
//! - `keeper`: keeps a lease alive from a thread or a poll loop.
//!
//! This module only talks DHCP; installing the lease on the interface is
//! [`crate::apply_lease`].

mod exchange;
mod keeper;
mod lease;
mod message;
mod transport;

use std::io;
use std::time::Duration;

pub use exchange::{
    AcquireError, Destination, DhcpIo, RenewError, RenewOutcome, Upkeep, acquire as acquire_with,
    renew as renew_with,
};
pub use keeper::{
    KeeperHandle, KeeperOptions, LeaseEvent, LeaseKeeper, SpawnKeeperError, spawn_lease_keeper,
};
pub use lease::{Lease, LeaseAction};
pub use message::{
    BuildError, ClientIdentity, LeaseParams, Reply, ReplyError, RequestKind, build_request,
    lease_timers, mask_prefix_len, parse_reply,
};
pub use transport::{PacketIo, UdpIo};

use crate::netlink::{NetError, Netlink};

/// Why [`acquire`] got no lease.
#[derive(Debug, thiserror::Error)]
pub enum AcquireLeaseError {
    #[error("cannot look up interface {interface}")]
    Link {
        interface: String,
        #[source]
        source: NetError,
    },
    #[error("interface {interface} has no Ethernet hardware address to ask DHCP with")]
    NoHardwareAddress { interface: String },
    #[error("cannot open a packet socket on {interface}")]
    Socket {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("dhcp on {interface}")]
    Exchange {
        interface: String,
        #[source]
        source: AcquireError,
    },
}

/// Why [`renew`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RenewLeaseError {
    #[error("cannot open udp port 68 on {interface}")]
    Socket {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("dhcp {upkeep:?} of {address} on {interface}")]
    Exchange {
        interface: String,
        upkeep: Upkeep,
        address: std::net::Ipv4Addr,
        #[source]
        source: RenewError,
    },
}

/// Obtain a lease on `interface` (DISCOVER → OFFER → REQUEST → ACK) within
/// `timeout`. The interface must be up; nothing is configured on it — see
/// [`crate::apply_lease`]. `hostname` is sent as option 12 if given.
pub fn acquire(
    interface: &str,
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<Lease, AcquireLeaseError> {
    let link_error = |source| AcquireLeaseError::Link {
        interface: interface.to_string(),
        source,
    };
    let link = Netlink::open()
        .and_then(|mut netlink| netlink.link(interface))
        .map_err(link_error)?;
    let mac = link
        .mac
        .ok_or_else(|| AcquireLeaseError::NoHardwareAddress {
            interface: interface.to_string(),
        })?;
    let mut io = PacketIo::open(link.index).map_err(|source| AcquireLeaseError::Socket {
        interface: interface.to_string(),
        source,
    })?;
    let client = ClientIdentity {
        mac,
        hostname: hostname.map(str::to_string),
    };
    let deadline = io.now() + timeout;
    let (params, requested_at) =
        exchange::acquire(&mut io, &client, deadline).map_err(|source| {
            AcquireLeaseError::Exchange {
                interface: interface.to_string(),
                source,
            }
        })?;
    Ok(Lease::from_ack(interface, mac, &params, requested_at))
}

/// Renew (unicast to the granting server) or rebind (broadcast) `lease`
/// within `timeout`. On ACK the lease is extended in place; the caller must
/// then re-apply it (the kernel drops an address whose lifetime ran out).
pub fn renew(
    lease: &mut Lease,
    upkeep: Upkeep,
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<RenewOutcome, RenewLeaseError> {
    let mut io = UdpIo::open(&lease.interface).map_err(|source| RenewLeaseError::Socket {
        interface: lease.interface.clone(),
        source,
    })?;
    let deadline = io.now() + timeout;
    let interface = lease.interface.clone();
    let address = lease.address;
    exchange::renew(&mut io, lease, upkeep, hostname, deadline).map_err(|source| {
        RenewLeaseError::Exchange {
            interface,
            upkeep,
            address,
            source,
        }
    })
}
