//! The kernel seam: everything `configure` and the lease keeper ask of the
//! system, as one trait. [`LinuxNet`] is the real thing (rtnetlink, packet
//! and UDP sockets, the monotonic clock); the unit tests use a fake that
//! records calls, so the ordering and error reporting of configuration are
//! tested without root.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::dhcp::{self, AcquireLeaseError, Lease, RenewLeaseError, RenewOutcome, Upkeep};
use crate::netlink::{LinkInfo, NetError, Netlink, RouteOrigin};

/// What network configuration needs from the kernel.
pub trait NetSystem {
    fn now(&self) -> Instant;
    fn sleep(&mut self, duration: Duration);
    /// Ethernet interfaces, not loopback, sorted by name.
    fn ethernet_interfaces(&mut self) -> Result<Vec<String>, NetError>;
    /// Whether an interface called `name` exists.
    fn interface_exists(&mut self, name: &str) -> Result<bool, NetError>;
    fn set_link_up(&mut self, name: &str) -> Result<(), NetError>;
    /// Whether the interface is operationally up (see
    /// [`LinkInfo::is_running`]).
    fn link_running(&mut self, name: &str) -> Result<bool, NetError>;
    /// Remove every IPv4 address from the interface.
    fn flush_addresses(&mut self, name: &str) -> Result<(), NetError>;
    fn add_address(
        &mut self,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u8,
        valid_for: Option<Duration>,
    ) -> Result<(), NetError>;
    fn delete_address(
        &mut self,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError>;
    fn add_default_route(
        &mut self,
        name: &str,
        gateway: Ipv4Addr,
        origin: RouteOrigin,
    ) -> Result<(), NetError>;
    /// Run a DHCP acquisition on the interface.
    fn acquire_lease(
        &mut self,
        name: &str,
        hostname: Option<&str>,
        timeout: Duration,
    ) -> Result<Lease, AcquireLeaseError>;
    /// Renew or rebind `lease` (extended in place on ACK).
    fn renew_lease(
        &mut self,
        lease: &mut Lease,
        upkeep: Upkeep,
        hostname: Option<&str>,
        timeout: Duration,
    ) -> Result<RenewOutcome, RenewLeaseError>;
}

/// The real system: rtnetlink for links, addresses and routes; DHCP over
/// packet and UDP sockets.
#[derive(Debug)]
pub struct LinuxNet {
    netlink: Netlink,
}

impl LinuxNet {
    pub fn open() -> Result<LinuxNet, NetError> {
        Ok(LinuxNet {
            netlink: Netlink::open()?,
        })
    }

    pub fn netlink(&mut self) -> &mut Netlink {
        &mut self.netlink
    }

    fn index(&mut self, name: &str) -> Result<u32, NetError> {
        Ok(self.netlink.link(name)?.index)
    }
}

/// Sort key that puts `eth2` before `eth10`.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let digits_at = name
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (stem, digits) = name.split_at(digits_at);
    match digits.parse::<u64>() {
        Ok(number) => (stem, number, name),
        Err(_) => (name, 0, name),
    }
}

pub(crate) fn ethernet_names(links: &[LinkInfo]) -> Vec<String> {
    let mut names: Vec<&str> = links
        .iter()
        .filter(|link| link.is_ethernet && !link.is_loopback && !link.name.is_empty())
        .map(|link| link.name.as_str())
        .collect();
    names.sort_by_key(|name| natural_key(name));
    names.into_iter().map(str::to_string).collect()
}

impl NetSystem for LinuxNet {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn ethernet_interfaces(&mut self) -> Result<Vec<String>, NetError> {
        Ok(ethernet_names(&self.netlink.links()?))
    }

    fn interface_exists(&mut self, name: &str) -> Result<bool, NetError> {
        match self.netlink.link(name) {
            Ok(_) => Ok(true),
            Err(NetError::NoSuchInterface { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn set_link_up(&mut self, name: &str) -> Result<(), NetError> {
        let index = self.index(name)?;
        self.netlink.set_link_up(index, name)
    }

    fn link_running(&mut self, name: &str) -> Result<bool, NetError> {
        Ok(self.netlink.link(name)?.is_running)
    }

    fn flush_addresses(&mut self, name: &str) -> Result<(), NetError> {
        let index = self.index(name)?;
        for (address, prefix_len) in self.netlink.addresses(index, name)? {
            if address.is_ipv4() {
                self.netlink
                    .delete_address(index, name, address, prefix_len)?;
            }
        }
        Ok(())
    }

    fn add_address(
        &mut self,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u8,
        valid_for: Option<Duration>,
    ) -> Result<(), NetError> {
        let index = self.index(name)?;
        self.netlink
            .add_address(index, name, address, prefix_len, valid_for)
    }

    fn delete_address(
        &mut self,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        let index = self.index(name)?;
        self.netlink
            .delete_address(index, name, IpAddr::V4(address), prefix_len)
    }

    fn add_default_route(
        &mut self,
        name: &str,
        gateway: Ipv4Addr,
        origin: RouteOrigin,
    ) -> Result<(), NetError> {
        let index = self.index(name)?;
        self.netlink.add_default_route(index, name, gateway, origin)
    }

    fn acquire_lease(
        &mut self,
        name: &str,
        hostname: Option<&str>,
        timeout: Duration,
    ) -> Result<Lease, AcquireLeaseError> {
        dhcp::acquire(name, hostname, timeout)
    }

    fn renew_lease(
        &mut self,
        lease: &mut Lease,
        upkeep: Upkeep,
        hostname: Option<&str>,
        timeout: Duration,
    ) -> Result<RenewOutcome, RenewLeaseError> {
        dhcp::renew(lease, upkeep, hostname, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, ethernet: bool, loopback: bool) -> LinkInfo {
        LinkInfo {
            index,
            name: name.to_string(),
            mac: None,
            is_ethernet: ethernet,
            is_loopback: loopback,
            is_up: false,
            has_carrier: false,
            is_running: false,
        }
    }

    #[test]
    fn ethernet_names_skip_others_and_sort_naturally() {
        let links = [
            link(1, "lo", false, true),
            link(2, "eth10", true, false),
            link(3, "eth2", true, false),
            link(4, "wg0", false, false),
            link(5, "enp0s3", true, false),
            link(6, "eth0", true, false),
        ];
        assert_eq!(ethernet_names(&links), ["enp0s3", "eth0", "eth2", "eth10"]);
    }
}
