//! Network bring-up for PID 1: loopback, one NIC with a static address or a
//! DHCPv4 lease, the default route, and resolv.conf on request.
//!
//! Everything is synchronous (PID 1 is a plain poll loop, no async runtime)
//! and every wait is bounded (see [`limits`]).
//!
//! - [`NetConfig`] and its kernel-command-line syntax
//!   (`metanode.net=dhcp|off|static:10.0.2.15/24,gw=…,dns=…,if=…`),
//!   [`from_cmdline`] to find it in `/proc/cmdline`.
//! - [`configure`]: pick the interface, link up, static or DHCP, route; it
//!   returns a [`NetState`] whose `lease` [`dhcp::spawn_lease_keeper`] (or
//!   [`dhcp::LeaseKeeper::poll`] from a poll loop) keeps alive.
//! - Free functions over rtnetlink for the pieces: [`loopback_up`],
//!   [`ethernet_interfaces`], [`set_link_up`], [`add_address`],
//!   [`add_default_route`], [`flush_addresses`], [`addresses`].
//! - [`dhcp`]: the client itself (RFC 2131), usable on its own.
//!
//! The kernel is behind [`NetSystem`] (real: [`LinuxNet`]); the unit tests
//! drive configuration and lease keeping against a fake, and the DHCP
//! exchanges against a scripted server on a virtual clock. `tests/netns.rs`
//! runs the real thing as root against dnsmasq in network namespaces.
//!
//! Calls act on the network namespace of the calling thread.

pub mod cmdline;
mod configure;
pub mod dhcp;
pub mod limits;
pub mod netlink;
mod system;

use std::net::{IpAddr, Ipv4Addr};

pub use cmdline::{CmdlineError, NetConfig, NetConfigParseError, from_cmdline};
pub use configure::{
    ApplyLeaseError, ConfigureError, ConfigureOptions, ConfigureStep, NetState, apply_lease,
    apply_lease_on, configure, configure_on, configure_with, write_resolv_conf,
};
pub use netlink::{LinkInfo, NetError, Netlink, RouteOrigin};
pub use system::{LinuxNet, NetSystem};

/// Name of the loopback interface.
pub const LOOPBACK_INTERFACE: &str = "lo";

/// Set `lo` up. The kernel then gives it 127.0.0.1/8 (and ::1) by itself.
pub fn loopback_up() -> Result<(), NetError> {
    set_link_up(LOOPBACK_INTERFACE)
}

/// Names of the Ethernet interfaces (`ARPHRD_ETHER`, not loopback), sorted
/// by name with numbers compared as numbers (`eth2` before `eth10`).
pub fn ethernet_interfaces() -> Result<Vec<String>, NetError> {
    LinuxNet::open()?.ethernet_interfaces()
}

/// Set the interface up.
pub fn set_link_up(interface: &str) -> Result<(), NetError> {
    LinuxNet::open()?.set_link_up(interface)
}

/// Add `address/prefix_len` to the interface, permanently (or update it if
/// it is already there).
pub fn add_address(interface: &str, address: Ipv4Addr, prefix_len: u8) -> Result<(), NetError> {
    LinuxNet::open()?.add_address(interface, address, prefix_len, None)
}

/// Add (or replace) the IPv4 default route via `gateway` out of the
/// interface. A gateway outside the interface's subnets gets a link-scope
/// host route first.
pub fn add_default_route(interface: &str, gateway: Ipv4Addr) -> Result<(), NetError> {
    LinuxNet::open()?.add_default_route(interface, gateway, RouteOrigin::Static)
}

/// Remove every IPv4 address from the interface (IPv6 link-local
/// addresses stay; the kernel manages them).
pub fn flush_addresses(interface: &str) -> Result<(), NetError> {
    LinuxNet::open()?.flush_addresses(interface)
}

/// Every address on the interface, IPv4 and IPv6, with its prefix length,
/// in the kernel's order.
pub fn addresses(interface: &str) -> Result<Vec<(IpAddr, u8)>, NetError> {
    let mut netlink = Netlink::open()?;
    let index = netlink.link(interface)?.index;
    netlink.addresses(index, interface)
}

/// The gateway of the IPv4 default route through the interface, if any.
pub fn default_gateway(interface: &str) -> Result<Option<Ipv4Addr>, NetError> {
    let mut netlink = Netlink::open()?;
    let index = netlink.link(interface)?.index;
    netlink.default_gateway(index, interface)
}
