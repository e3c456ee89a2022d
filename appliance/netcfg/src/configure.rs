//! Bring one interface up with a [`NetConfig`]: pick the interface, set the
//! link up, then a static address or a DHCP lease, the default route, and
//! (if asked) resolv.conf.

use std::fmt;
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmdline::NetConfig;
use crate::dhcp::{AcquireLeaseError, Lease};
use crate::limits::{
    INTERFACE_WAIT_POLL_INTERVAL, LINK_RUNNING_POLL_INTERVAL, LINK_RUNNING_WAIT_MAX,
};
use crate::netlink::{NetError, RouteOrigin};
use crate::system::{LinuxNet, NetSystem};

/// The network as configured: what the `metanode: ready` line reports and
/// what the lease keeper takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetState {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The DHCP lease to keep alive (`None` for a static config).
    pub lease: Option<Lease>,
}

/// Everything [`configure_with`] may be told besides the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigureOptions {
    /// Bound on the whole configuration, including waiting for the
    /// interface to appear and the DHCP exchange.
    pub timeout: Duration,
    /// Write the DNS servers (static or from DHCP) to this resolv.conf. The
    /// file is left alone when `None` or when there are no servers.
    pub resolv_conf: Option<PathBuf>,
    /// Host name sent to the DHCP server (option 12).
    pub hostname: Option<String>,
}

impl ConfigureOptions {
    pub fn new(timeout: Duration) -> ConfigureOptions {
        ConfigureOptions {
            timeout,
            resolv_conf: None,
            hostname: None,
        }
    }
}

/// The step of configuring an interface that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigureStep {
    LinkUp,
    FlushAddresses,
    AddAddress { address: Ipv4Addr, prefix_len: u8 },
    AddDefaultRoute { gateway: Ipv4Addr },
    RemoveOldAddress { address: Ipv4Addr, prefix_len: u8 },
}

impl fmt::Display for ConfigureStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigureStep::LinkUp => f.write_str("set the link up"),
            ConfigureStep::FlushAddresses => f.write_str("remove old IPv4 addresses"),
            ConfigureStep::AddAddress {
                address,
                prefix_len,
            } => write!(f, "add address {address}/{prefix_len}"),
            ConfigureStep::AddDefaultRoute { gateway } => {
                write!(f, "add default route via {gateway}")
            }
            ConfigureStep::RemoveOldAddress {
                address,
                prefix_len,
            } => write!(f, "remove old address {address}/{prefix_len}"),
        }
    }
}

/// Why [`configure`] failed; every variant names the interface (when one
/// was chosen) and the step.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("cannot open rtnetlink")]
    Netlink(#[source] NetError),
    #[error("cannot list network interfaces")]
    ListInterfaces(#[source] NetError),
    #[error("no Ethernet interface appeared within {waited:?}")]
    NoInterface { waited: Duration },
    #[error("interface {interface} did not appear within {waited:?}")]
    InterfaceMissing { interface: String, waited: Duration },
    #[error("{interface}: cannot {step}")]
    Step {
        interface: String,
        step: ConfigureStep,
        #[source]
        source: NetError,
    },
    #[error("{interface}: no DHCP lease")]
    Dhcp {
        interface: String,
        #[source]
        source: AcquireLeaseError,
    },
    #[error("{interface}: cannot write DNS servers to {}", path.display())]
    ResolvConf {
        interface: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why [`apply_lease`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyLeaseError {
    #[error("cannot open rtnetlink")]
    Netlink(#[source] NetError),
    #[error("{interface}: cannot {step}")]
    Step {
        interface: String,
        step: ConfigureStep,
        #[source]
        source: NetError,
    },
    #[error("{interface}: cannot write DNS servers to {}", path.display())]
    ResolvConf {
        interface: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Configure the network as `config` says, within `timeout`. `Ok(None)` for
/// [`NetConfig::Off`]. Loopback is not touched: see [`crate::loopback_up`].
pub fn configure(
    config: &NetConfig,
    timeout: Duration,
) -> Result<Option<NetState>, ConfigureError> {
    configure_with(config, &ConfigureOptions::new(timeout))
}

/// [`configure`] with the options spelled out (resolv.conf, host name).
pub fn configure_with(
    config: &NetConfig,
    options: &ConfigureOptions,
) -> Result<Option<NetState>, ConfigureError> {
    if *config == NetConfig::Off {
        return Ok(None);
    }
    let mut system = LinuxNet::open().map_err(ConfigureError::Netlink)?;
    configure_on(&mut system, config, options)
}

/// [`configure_with`] against any [`NetSystem`] (the tests' fake).
pub fn configure_on(
    system: &mut impl NetSystem,
    config: &NetConfig,
    options: &ConfigureOptions,
) -> Result<Option<NetState>, ConfigureError> {
    let started_at = system.now();
    let deadline = started_at + options.timeout;
    let interface = match config {
        NetConfig::Off => return Ok(None),
        NetConfig::Dhcp { interface } | NetConfig::Static { interface, .. } => {
            wait_for_interface(system, interface.as_deref(), deadline)?
        }
    };
    let step_error = |step: ConfigureStep| {
        let interface = interface.clone();
        move |source| ConfigureError::Step {
            interface,
            step,
            source,
        }
    };
    system
        .set_link_up(&interface)
        .map_err(step_error(ConfigureStep::LinkUp))?;
    wait_until_running(system, &interface, deadline).map_err(step_error(ConfigureStep::LinkUp))?;
    // A restarted agent (or a kernel `ip=` parameter) may have left
    // addresses behind; the config describes the whole IPv4 state.
    system
        .flush_addresses(&interface)
        .map_err(step_error(ConfigureStep::FlushAddresses))?;

    match config {
        NetConfig::Off => Ok(None),
        NetConfig::Static {
            address,
            prefix_len,
            gateway,
            dns,
            ..
        } => {
            system
                .add_address(&interface, *address, *prefix_len, None)
                .map_err(step_error(ConfigureStep::AddAddress {
                    address: *address,
                    prefix_len: *prefix_len,
                }))?;
            if let Some(gateway) = gateway {
                system
                    .add_default_route(&interface, *gateway, RouteOrigin::Static)
                    .map_err(step_error(ConfigureStep::AddDefaultRoute {
                        gateway: *gateway,
                    }))?;
            }
            if let Some(path) = &options.resolv_conf
                && !dns.is_empty()
            {
                write_resolv_conf(path, dns, &format!("static config of {interface}")).map_err(
                    |source| ConfigureError::ResolvConf {
                        interface: interface.clone(),
                        path: path.clone(),
                        source,
                    },
                )?;
            }
            Ok(Some(NetState {
                interface,
                address: *address,
                prefix_len: *prefix_len,
                gateway: *gateway,
                dns: dns.clone(),
                lease: None,
            }))
        }
        NetConfig::Dhcp { .. } => {
            let left = deadline.saturating_duration_since(system.now());
            let lease = system
                .acquire_lease(&interface, options.hostname.as_deref(), left)
                .map_err(|source| ConfigureError::Dhcp {
                    interface: interface.clone(),
                    source,
                })?;
            apply_lease_on(system, &lease, options.resolv_conf.as_deref(), None).map_err(
                |err| match err {
                    ApplyLeaseError::Netlink(source) => ConfigureError::Netlink(source),
                    ApplyLeaseError::Step {
                        interface,
                        step,
                        source,
                    } => ConfigureError::Step {
                        interface,
                        step,
                        source,
                    },
                    ApplyLeaseError::ResolvConf {
                        interface,
                        path,
                        source,
                    } => ConfigureError::ResolvConf {
                        interface,
                        path,
                        source,
                    },
                },
            )?;
            Ok(Some(NetState {
                interface,
                address: lease.address,
                prefix_len: lease.prefix_len,
                gateway: lease.gateway,
                dns: lease.dns.clone(),
                lease: Some(lease),
            }))
        }
    }
}

/// The interface to configure: the named one, or the first Ethernet one,
/// waiting for it until `deadline` because a NIC driver may still be
/// probing when PID 1 starts.
fn wait_for_interface(
    system: &mut impl NetSystem,
    wanted: Option<&str>,
    deadline: std::time::Instant,
) -> Result<String, ConfigureError> {
    let started_at = system.now();
    loop {
        match wanted {
            Some(name) => {
                if system
                    .interface_exists(name)
                    .map_err(ConfigureError::ListInterfaces)?
                {
                    return Ok(name.to_string());
                }
            }
            None => {
                let found = system
                    .ethernet_interfaces()
                    .map_err(ConfigureError::ListInterfaces)?;
                if let Some(first) = found.into_iter().next() {
                    return Ok(first);
                }
            }
        }
        let now = system.now();
        if now >= deadline {
            let waited = now.saturating_duration_since(started_at);
            return Err(match wanted {
                Some(name) => ConfigureError::InterfaceMissing {
                    interface: name.to_string(),
                    waited,
                },
                None => ConfigureError::NoInterface { waited },
            });
        }
        system.sleep(INTERFACE_WAIT_POLL_INTERVAL.min(deadline - now));
    }
}

/// Wait (bounded) until the link is operationally up. Not being up in time
/// is not an error: a cable may be plugged in later, and DHCP retransmits.
fn wait_until_running(
    system: &mut impl NetSystem,
    interface: &str,
    deadline: std::time::Instant,
) -> Result<(), NetError> {
    let give_up_at = (system.now() + LINK_RUNNING_WAIT_MAX).min(deadline);
    while !system.link_running(interface)? {
        let now = system.now();
        if now >= give_up_at {
            break;
        }
        system.sleep(LINK_RUNNING_POLL_INTERVAL.min(give_up_at - now));
    }
    Ok(())
}

/// Install `lease` on its interface: the address with the lease's remaining
/// lifetime (so the kernel drops it if nobody renews it), the default
/// route through the lease's router, and the DNS servers to `resolv_conf`
/// if given. Safe to call again after every renewal.
pub fn apply_lease(lease: &Lease, resolv_conf: Option<&Path>) -> Result<(), ApplyLeaseError> {
    let mut system = LinuxNet::open().map_err(ApplyLeaseError::Netlink)?;
    apply_lease_on(&mut system, lease, resolv_conf, None)
}

/// [`apply_lease`] against any [`NetSystem`]; `previous` is the address the
/// interface had from an earlier lease, removed first if it changed.
pub fn apply_lease_on(
    system: &mut impl NetSystem,
    lease: &Lease,
    resolv_conf: Option<&Path>,
    previous: Option<(Ipv4Addr, u8)>,
) -> Result<(), ApplyLeaseError> {
    let interface = lease.interface.as_str();
    let step_error = |step: ConfigureStep| {
        move |source| ApplyLeaseError::Step {
            interface: interface.to_string(),
            step,
            source,
        }
    };
    if let Some((address, prefix_len)) = previous
        && (address, prefix_len) != (lease.address, lease.prefix_len)
    {
        system
            .delete_address(interface, address, prefix_len)
            .map_err(step_error(ConfigureStep::RemoveOldAddress {
                address,
                prefix_len,
            }))?;
    }
    let valid_for = lease.remaining(system.now());
    system
        .add_address(interface, lease.address, lease.prefix_len, valid_for)
        .map_err(step_error(ConfigureStep::AddAddress {
            address: lease.address,
            prefix_len: lease.prefix_len,
        }))?;
    if let Some(gateway) = lease.gateway {
        system
            .add_default_route(interface, gateway, RouteOrigin::Dhcp)
            .map_err(step_error(ConfigureStep::AddDefaultRoute { gateway }))?;
    }
    if let Some(path) = resolv_conf
        && !lease.dns.is_empty()
    {
        write_resolv_conf(
            path,
            &lease.dns,
            &format!("DHCP lease from {} on {interface}", lease.server),
        )
        .map_err(|source| ApplyLeaseError::ResolvConf {
            interface: interface.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Replace `path` with a resolv.conf naming `servers`, atomically (write a
/// sibling, fsync, rename): a resolver reading it concurrently sees the old
/// or the new file, never half of one.
pub fn write_resolv_conf(path: &Path, servers: &[Ipv4Addr], source: &str) -> io::Result<()> {
    let mut text = format!("# written by metanode from the {source}\n");
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(".metanode-tmp");
    let temp = path.with_file_name(temp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dhcp::{LeaseParams, RenewLeaseError, RenewOutcome, Upkeep};
    use std::time::Instant;

    /// A recorded kernel: every call is logged as text; `fail_on` makes the
    /// first call whose log line starts with it fail with EPERM.
    pub(crate) struct FakeNet {
        pub now: Instant,
        pub log: Vec<String>,
        pub interfaces: Vec<String>,
        /// Interfaces appear only after this much (virtual) time.
        pub appear_after: Duration,
        pub fail_on: Option<String>,
        /// The link reports running only after this much (virtual) time.
        pub running_after: Duration,
        pub leases: Vec<Result<Lease, String>>,
        pub renewals: Vec<Result<RenewOutcome, String>>,
        pub started: Instant,
    }

    impl FakeNet {
        pub(crate) fn new(interfaces: &[&str]) -> FakeNet {
            let now = Instant::now();
            FakeNet {
                now,
                log: Vec::new(),
                interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
                appear_after: Duration::ZERO,
                fail_on: None,
                running_after: Duration::ZERO,
                leases: Vec::new(),
                renewals: Vec::new(),
                started: now,
            }
        }

        fn call(&mut self, line: String) -> Result<(), NetError> {
            let fails = self.fail_on.as_deref().is_some_and(|f| line.starts_with(f));
            self.log.push(line.clone());
            if fails {
                self.fail_on = None;
                return Err(NetError::Kernel {
                    op: line,
                    source: io::Error::from_raw_os_error(libc::EPERM),
                });
            }
            Ok(())
        }

        fn visible(&self) -> bool {
            self.now.duration_since(self.started) >= self.appear_after
        }
    }

    impl NetSystem for FakeNet {
        fn now(&self) -> Instant {
            self.now
        }
        fn sleep(&mut self, duration: Duration) {
            self.now += duration;
        }
        fn ethernet_interfaces(&mut self) -> Result<Vec<String>, NetError> {
            Ok(if self.visible() {
                self.interfaces.clone()
            } else {
                vec![]
            })
        }
        fn interface_exists(&mut self, name: &str) -> Result<bool, NetError> {
            Ok(self.visible() && self.interfaces.iter().any(|i| i == name))
        }
        fn set_link_up(&mut self, name: &str) -> Result<(), NetError> {
            self.call(format!("up {name}"))
        }
        fn link_running(&mut self, _name: &str) -> Result<bool, NetError> {
            Ok(self.now.duration_since(self.started) >= self.running_after)
        }
        fn flush_addresses(&mut self, name: &str) -> Result<(), NetError> {
            self.call(format!("flush {name}"))
        }
        fn add_address(
            &mut self,
            name: &str,
            address: Ipv4Addr,
            prefix_len: u8,
            valid_for: Option<Duration>,
        ) -> Result<(), NetError> {
            let lifetime = valid_for.map_or("forever".to_string(), |d| format!("{}s", d.as_secs()));
            self.call(format!("add {name} {address}/{prefix_len} {lifetime}"))
        }
        fn delete_address(
            &mut self,
            name: &str,
            address: Ipv4Addr,
            prefix_len: u8,
        ) -> Result<(), NetError> {
            self.call(format!("del {name} {address}/{prefix_len}"))
        }
        fn add_default_route(
            &mut self,
            name: &str,
            gateway: Ipv4Addr,
            origin: RouteOrigin,
        ) -> Result<(), NetError> {
            self.call(format!("route {name} via {gateway} {origin:?}"))
        }
        fn acquire_lease(
            &mut self,
            name: &str,
            _hostname: Option<&str>,
            timeout: Duration,
        ) -> Result<Lease, AcquireLeaseError> {
            self.log
                .push(format!("dhcp {name} within {}s", timeout.as_secs()));
            match self.leases.remove(0) {
                Ok(mut lease) => {
                    lease.acquired_at = self.now;
                    Ok(lease)
                }
                Err(message) => Err(AcquireLeaseError::Socket {
                    interface: name.to_string(),
                    source: io::Error::other(message),
                }),
            }
        }
        fn renew_lease(
            &mut self,
            lease: &mut Lease,
            upkeep: Upkeep,
            _hostname: Option<&str>,
            _timeout: Duration,
        ) -> Result<RenewOutcome, RenewLeaseError> {
            self.log.push(format!("{upkeep:?} {}", lease.address));
            match self.renewals.remove(0) {
                Ok(RenewOutcome::Extended) => {
                    let params = test_params(lease.address, 120);
                    lease.extend(&params, self.now);
                    Ok(RenewOutcome::Extended)
                }
                Ok(other) => Ok(other),
                Err(message) => Err(RenewLeaseError::Socket {
                    interface: lease.interface.clone(),
                    source: io::Error::other(message),
                }),
            }
        }
    }

    pub(crate) fn test_params(address: Ipv4Addr, lease_secs: u64) -> LeaseParams {
        LeaseParams {
            address,
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease_time: Some(Duration::from_secs(lease_secs)),
            renew_after: Some(Duration::from_secs(lease_secs / 2)),
            rebind_after: Some(Duration::from_secs(lease_secs * 7 / 8)),
        }
    }

    pub(crate) fn test_lease(address: Ipv4Addr, lease_secs: u64, at: Instant) -> Lease {
        Lease::from_ack("eth0", [2; 6], &test_params(address, lease_secs), at)
    }

    fn static_config() -> NetConfig {
        "static:10.0.2.15/24,gw=10.0.2.2,dns=10.0.2.3"
            .parse()
            .expect("valid")
    }

    #[test]
    fn static_config_runs_every_step_in_order() {
        let mut net = FakeNet::new(&["eth0", "eth1"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        let options = ConfigureOptions {
            resolv_conf: Some(resolv.clone()),
            ..ConfigureOptions::new(Duration::from_secs(5))
        };
        let state = configure_on(&mut net, &static_config(), &options)
            .expect("configures")
            .expect("not off");
        assert_eq!(
            net.log,
            [
                "up eth0",
                "flush eth0",
                "add eth0 10.0.2.15/24 forever",
                "route eth0 via 10.0.2.2 Static"
            ]
        );
        assert_eq!(
            state,
            NetState {
                interface: "eth0".to_string(),
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                lease: None,
            }
        );
        let written = std::fs::read_to_string(&resolv).expect("resolv.conf");
        assert_eq!(
            written,
            "# written by metanode from the static config of eth0\nnameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn dhcp_applies_the_lease_with_its_lifetime() {
        let mut net = FakeNet::new(&["eth0"]);
        net.leases
            .push(Ok(test_lease(Ipv4Addr::new(10, 0, 2, 15), 86_400, net.now)));
        let state = configure_on(
            &mut net,
            &NetConfig::Dhcp { interface: None },
            &ConfigureOptions::new(Duration::from_secs(30)),
        )
        .expect("configures")
        .expect("not off");
        assert_eq!(
            net.log,
            [
                "up eth0",
                "flush eth0",
                "dhcp eth0 within 30s",
                "add eth0 10.0.2.15/24 86400s",
                "route eth0 via 10.0.2.2 Dhcp"
            ]
        );
        assert_eq!(state.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(
            state.lease.map(|l| l.server),
            Some(Ipv4Addr::new(10, 0, 2, 2))
        );
    }

    #[test]
    fn dhcp_waits_for_the_link_to_run_but_not_forever() {
        let mut net = FakeNet::new(&["eth0"]);
        net.running_after = Duration::from_millis(500);
        net.leases
            .push(Ok(test_lease(Ipv4Addr::new(10, 0, 2, 15), 600, net.now)));
        let t0 = net.now;
        configure_on(
            &mut net,
            &NetConfig::Dhcp { interface: None },
            &ConfigureOptions::new(Duration::from_secs(30)),
        )
        .expect("configures");
        // DHCP started once the link ran, with the rest of the timeout.
        assert!(
            net.log.contains(&"dhcp eth0 within 29s".to_string()),
            "{:?}",
            net.log
        );
        assert_eq!(net.now.duration_since(t0), Duration::from_millis(500));

        let mut net = FakeNet::new(&["eth0"]);
        net.running_after = Duration::from_secs(3600);
        let t0 = net.now;
        configure_on(
            &mut net,
            &static_config(),
            &ConfigureOptions::new(Duration::from_secs(30)),
        )
        .expect("configures without carrier");
        assert_eq!(net.now.duration_since(t0), LINK_RUNNING_WAIT_MAX);
        assert!(
            net.log
                .contains(&"add eth0 10.0.2.15/24 forever".to_string()),
            "{:?}",
            net.log
        );
    }

    #[test]
    fn off_touches_nothing() {
        let mut net = FakeNet::new(&["eth0"]);
        let state = configure_on(
            &mut net,
            &NetConfig::Off,
            &ConfigureOptions::new(Duration::from_secs(1)),
        )
        .expect("off is fine");
        assert_eq!(state, None);
        assert!(net.log.is_empty());
    }

    #[test]
    fn a_late_interface_is_waited_for_and_a_missing_one_named() {
        let mut net = FakeNet::new(&["eth0"]);
        net.appear_after = Duration::from_millis(450);
        let state = configure_on(
            &mut net,
            &static_config(),
            &ConfigureOptions::new(Duration::from_secs(5)),
        )
        .expect("appears in time")
        .expect("not off");
        assert_eq!(state.interface, "eth0");

        let mut net = FakeNet::new(&["eth0"]);
        let config: NetConfig = "dhcp,if=eth7".parse().expect("valid");
        let err = configure_on(
            &mut net,
            &config,
            &ConfigureOptions::new(Duration::from_secs(2)),
        )
        .expect_err("never appears");
        assert_eq!(err.to_string(), "interface eth7 did not appear within 2s");

        let mut net = FakeNet::new(&[]);
        let err = configure_on(
            &mut net,
            &NetConfig::Dhcp { interface: None },
            &ConfigureOptions::new(Duration::from_secs(1)),
        )
        .expect_err("no nic");
        assert_eq!(err.to_string(), "no Ethernet interface appeared within 1s");
    }

    #[test]
    fn errors_name_the_interface_and_the_step() {
        let cases = [
            ("up", "eth0: cannot set the link up"),
            ("flush", "eth0: cannot remove old IPv4 addresses"),
            ("add", "eth0: cannot add address 10.0.2.15/24"),
            ("route", "eth0: cannot add default route via 10.0.2.2"),
        ];
        for (fail_on, message) in cases {
            let mut net = FakeNet::new(&["eth0"]);
            net.fail_on = Some(fail_on.to_string());
            let err = configure_on(
                &mut net,
                &static_config(),
                &ConfigureOptions::new(Duration::from_secs(1)),
            )
            .expect_err(fail_on);
            assert_eq!(err.to_string(), message);
            // Nothing runs after the failed step.
            assert!(
                net.log.last().is_some_and(|l| l.starts_with(fail_on)),
                "{:?}",
                net.log
            );
        }

        let mut net = FakeNet::new(&["eth0"]);
        net.leases.push(Err("no carrier".to_string()));
        let err = configure_on(
            &mut net,
            &NetConfig::Dhcp { interface: None },
            &ConfigureOptions::new(Duration::from_secs(1)),
        )
        .expect_err("dhcp fails");
        assert_eq!(err.to_string(), "eth0: no DHCP lease");
    }

    #[test]
    fn a_changed_address_replaces_the_old_one() {
        let mut net = FakeNet::new(&["eth0"]);
        let lease = test_lease(Ipv4Addr::new(10, 0, 2, 16), 600, net.now);
        apply_lease_on(
            &mut net,
            &lease,
            None,
            Some((Ipv4Addr::new(10, 0, 2, 15), 24)),
        )
        .expect("applies");
        assert_eq!(
            net.log,
            [
                "del eth0 10.0.2.15/24",
                "add eth0 10.0.2.16/24 600s",
                "route eth0 via 10.0.2.2 Dhcp"
            ]
        );
        net.log.clear();
        apply_lease_on(
            &mut net,
            &lease,
            None,
            Some((Ipv4Addr::new(10, 0, 2, 16), 24)),
        )
        .expect("applies");
        assert_eq!(
            net.log,
            ["add eth0 10.0.2.16/24 600s", "route eth0 via 10.0.2.2 Dhcp"]
        );
    }
}
