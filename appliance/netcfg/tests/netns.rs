//! The real kernel: network namespaces joined by a veth pair, dnsmasq as
//! the DHCP server in one, our client in the other (a thread that `setns`-es
//! into it, so netlink and packet sockets act there).
//!
//! Needs root, iproute2's `ip`, and dnsmasq: CI installs Debian's
//! `dnsmasq-base` (the daemon without the system service). Without them
//! each test prints why and passes without checking anything.
//!
//! The client namespace runs with `rp_filter=1` like the appliance, which
//! is what makes a UDP-socket client miss the OFFER (see
//! `src/dhcp/transport.rs`). Addresses come from 198.18.0.0/15 (RFC 2544's
//! benchmarking range) and never leave the namespaces. Every wait is
//! bounded, and namespaces and dnsmasq are removed even when a test fails.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use metanode_netcfg::dhcp::{self, RenewOutcome, Upkeep};
use metanode_netcfg::{ConfigureError, ConfigureOptions, NetConfig, NetError};

const SERVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const POOL_START: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
const POOL_END: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 60);
const TEST_DNS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);
/// dnsmasq's shortest lease.
const LEASE_TIME: Duration = Duration::from_secs(120);
/// Bound on any external command (ip) and on dnsmasq's start.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Why this machine cannot run the tests, if it cannot.
fn skip_reason(need_dnsmasq: bool) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".to_string());
    }
    if find_tool("ip").is_none() {
        return Some("`ip` (iproute2) is not installed".to_string());
    }
    if need_dnsmasq && find_tool("dnsmasq").is_none() {
        return Some(
            "`dnsmasq` is not installed (CI installs the dnsmasq-base package)".to_string(),
        );
    }
    None
}

macro_rules! skip_unless_able {
    ($test:literal, $need_dnsmasq:expr) => {
        if let Some(reason) = skip_reason($need_dnsmasq) {
            eprintln!("skipping {}: {reason}", $test);
            return;
        }
    };
}

/// Run a command to completion within [`COMMAND_TIMEOUT`].
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let mut child = Command::new(find_tool(program).ok_or(format!("{program} not found"))?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("{program} {args:?}: {err}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(pipe) = child.stderr.take() {
                    let _ = BufReader::new(pipe).read_line(&mut stderr);
                }
                return Err(format!("{program} {args:?}: {status}: {stderr}"));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} {args:?}: still running after {COMMAND_TIMEOUT:?}"
                ));
            }
            Err(err) => return Err(format!("{program} {args:?}: {err}")),
        }
    }
}

/// A server namespace with `veth0` (198.18.0.1/24) and a client namespace
/// with `eth0` (down, no address), joined by a veth pair, plus an optional
/// dnsmasq. Dropping it kills dnsmasq and deletes both namespaces (which
/// deletes the veth pair).
struct Lab {
    server_ns: String,
    client_ns: String,
    dnsmasq: Option<Child>,
    dnsmasq_lines: Option<mpsc::Receiver<String>>,
    /// Everything dnsmasq logged so far.
    dnsmasq_log: Vec<String>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let base = format!("mnnet-{}-{id}-{tag}", std::process::id());
        let lab = Lab {
            server_ns: format!("{base}-s"),
            client_ns: format!("{base}-c"),
            dnsmasq: None,
            dnsmasq_lines: None,
            dnsmasq_log: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let (s, c) = (lab.server_ns.clone(), lab.client_ns.clone());
        let steps: [&[&str]; 6] = [
            &["netns", "add", &s],
            &["netns", "add", &c],
            &[
                "link", "add", "veth0", "netns", &s, "type", "veth", "peer", "name", "eth0",
                "netns", &c,
            ],
            &["-n", &s, "addr", "add", "198.18.0.1/24", "dev", "veth0"],
            &["-n", &s, "link", "set", "veth0", "up"],
            &["-n", &s, "link", "set", "lo", "up"],
        ];
        for step in steps {
            // On failure `lab` is dropped here, removing what was made.
            run("ip", step).expect("lab setup");
        }
        lab
    }

    /// Start dnsmasq serving 198.18.0.50-60 on the server side; returns
    /// once it reports its DHCP socket bound and the link is up on both
    /// ends. (A real server's port is up before the client boots; a veth
    /// end only gets carrier once its peer is up, and a reply sent while
    /// the kernel is still activating it is lost, costing the client a 4 s
    /// retransmission.)
    fn start_dnsmasq(&mut self, extra_args: &[&str]) {
        let dir = self.dir.path();
        let range = format!(
            "--dhcp-range={POOL_START},{POOL_END},255.255.255.0,{}s",
            LEASE_TIME.as_secs()
        );
        let args = [
            "netns".to_string(),
            "exec".to_string(),
            self.server_ns.clone(),
            find_tool("dnsmasq").expect("dnsmasq").display().to_string(),
            "--no-daemon".to_string(),
            "--conf-file=/dev/null".to_string(),
            "--port=0".to_string(),
            "--interface=veth0".to_string(),
            "--bind-interfaces".to_string(),
            range,
            format!("--dhcp-option=option:router,{SERVER_ADDRESS}"),
            format!("--dhcp-option=option:dns-server,{TEST_DNS}"),
            format!("--dhcp-leasefile={}", dir.join("leases").display()),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--dhcp-authoritative".to_string(),
            "--no-ping".to_string(),
            "--log-dhcp".to_string(),
            "--log-facility=-".to_string(),
        ]
        .into_iter()
        .chain(extra_args.iter().map(|a| a.to_string()));
        let mut child = Command::new(find_tool("ip").expect("ip"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dnsmasq");
        let stderr = child.stderr.take().expect("piped stderr");
        self.dnsmasq = Some(child);
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.dnsmasq_lines = Some(lines_rx);
        self.wait_for_dnsmasq("that its DHCP socket is bound", |log| {
            log.iter().any(|l| l.contains("DHCP, sockets bound"))
        });

        run("ip", &["-n", &self.client_ns, "link", "set", "eth0", "up"]).expect("eth0 up");
        in_netns(&self.server_ns, || {
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            while !metanode_netcfg::Netlink::open()
                .and_then(|mut netlink| netlink.link("veth0"))
                .expect("veth0")
                .is_running
            {
                assert!(
                    Instant::now() < deadline,
                    "veth0 not running after {COMMAND_TIMEOUT:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }

    /// Collect dnsmasq's log until `done` holds for it. Bounded; needed
    /// because dnsmasq logs after it has answered, so a test that just got
    /// an answer may look before the line is written.
    fn wait_for_dnsmasq(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let lines = self.dnsmasq_lines.as_ref().expect("dnsmasq started");
        while !done(&self.dnsmasq_log) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => self.dnsmasq_log.push(line),
                Err(_) => panic!(
                    "dnsmasq did not log {what} within {COMMAND_TIMEOUT:?}:\n{}",
                    self.dnsmasq_log.join("\n")
                ),
            }
        }
    }

    fn dnsmasq_count(&self, needle: &str) -> usize {
        self.dnsmasq_log
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Run `work` on a thread inside the client namespace, with the same
    /// sysctls the appliance sets for reverse-path filtering.
    fn in_client<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.client_ns, || {
            for path in [
                "/proc/sys/net/ipv4/conf/all/rp_filter",
                "/proc/sys/net/ipv4/conf/default/rp_filter",
            ] {
                std::fs::write(path, "1").expect("set rp_filter");
            }
            work()
        })
    }

    fn resolv_conf(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            if Path::new("/run/netns").join(ns).exists()
                && let Err(err) = run("ip", &["netns", "del", ns])
            {
                eprintln!("cleanup: {err}");
            }
        }
    }
}

/// Run `work` on a new thread that has joined network namespace `ns`
/// (setns affects only the calling thread).
fn in_netns<T: Send>(ns: &str, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let file = File::open(Path::new("/run/netns").join(ns)).expect("open netns");
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            work()
        });
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn v4(address: Ipv4Addr, prefix_len: u8) -> (IpAddr, u8) {
    (IpAddr::V4(address), prefix_len)
}

#[test]
fn loopback_and_interface_listing() {
    skip_unless_able!("loopback_and_interface_listing", false);
    let lab = Lab::new("lo");
    lab.in_client(|| {
        assert_eq!(
            metanode_netcfg::ethernet_interfaces().expect("list"),
            ["eth0"]
        );
        assert!(
            metanode_netcfg::addresses("lo")
                .expect("lo addresses")
                .is_empty()
        );
        metanode_netcfg::loopback_up().expect("lo up");
        let lo = metanode_netcfg::addresses("lo").expect("lo addresses");
        assert!(lo.contains(&v4(Ipv4Addr::LOCALHOST, 8)), "{lo:?}");
        if Path::new("/proc/sys/net/ipv6").exists() {
            assert!(
                lo.contains(&(IpAddr::V6(Ipv6Addr::LOCALHOST), 128)),
                "{lo:?}"
            );
        }
        // Idempotent.
        metanode_netcfg::loopback_up().expect("lo up again");

        match metanode_netcfg::set_link_up("eth9") {
            Err(NetError::NoSuchInterface { name }) => assert_eq!(name, "eth9"),
            other => panic!("expected NoSuchInterface, got {other:?}"),
        }
        assert!(matches!(
            metanode_netcfg::set_link_up("bad/name"),
            Err(NetError::InvalidInterfaceName { .. })
        ));
    });
}

#[test]
fn static_config_in_a_namespace() {
    skip_unless_able!("static_config_in_a_namespace", false);
    let lab = Lab::new("st");
    let resolv = lab.resolv_conf();
    lab.in_client(|| {
        let config: NetConfig =
            "static:198.18.0.20/24,gw=198.18.0.1,dns=198.18.0.53,dns=198.18.0.54"
                .parse()
                .expect("valid");
        let options = ConfigureOptions {
            resolv_conf: Some(resolv.clone()),
            ..ConfigureOptions::new(Duration::from_secs(5))
        };
        let state = metanode_netcfg::configure_with(&config, &options)
            .expect("configures")
            .expect("not off");
        assert_eq!(state.interface, "eth0");
        assert_eq!(state.address, Ipv4Addr::new(198, 18, 0, 20));
        assert!(state.lease.is_none());
        let addresses = metanode_netcfg::addresses("eth0").expect("addresses");
        assert!(
            addresses.contains(&v4(Ipv4Addr::new(198, 18, 0, 20), 24)),
            "{addresses:?}"
        );
        assert_eq!(
            metanode_netcfg::default_gateway("eth0").expect("routes"),
            Some(SERVER_ADDRESS)
        );
        assert_eq!(
            std::fs::read_to_string(&resolv).expect("resolv.conf"),
            "# written by metanode from the static config of eth0\n\
             nameserver 198.18.0.53\nnameserver 198.18.0.54\n"
        );

        // Configuring again replaces the address instead of adding one;
        // a /32 with a gateway outside it gets a host route to the gateway.
        let config: NetConfig = "static:198.18.0.21/32,gw=198.18.0.1,if=eth0"
            .parse()
            .expect("valid");
        metanode_netcfg::configure(&config, Duration::from_secs(5))
            .expect("reconfigures")
            .expect("not off");
        let v4_addresses: Vec<_> = metanode_netcfg::addresses("eth0")
            .expect("addresses")
            .into_iter()
            .filter(|(ip, _)| ip.is_ipv4())
            .collect();
        assert_eq!(v4_addresses, [v4(Ipv4Addr::new(198, 18, 0, 21), 32)]);
        assert_eq!(
            metanode_netcfg::default_gateway("eth0").expect("routes"),
            Some(SERVER_ADDRESS)
        );

        metanode_netcfg::flush_addresses("eth0").expect("flush");
        assert!(
            metanode_netcfg::addresses("eth0")
                .expect("addresses")
                .iter()
                .all(|(ip, _)| !ip.is_ipv4())
        );
        // With its address gone the kernel drops the routes through it.
        assert_eq!(
            metanode_netcfg::default_gateway("eth0").expect("routes"),
            None
        );

        // A named interface that never appears is reported by name, in time.
        let config: NetConfig = "dhcp,if=eth9".parse().expect("valid");
        let started = Instant::now();
        match metanode_netcfg::configure(&config, Duration::from_millis(300)) {
            Err(ConfigureError::InterfaceMissing { interface, .. }) => {
                assert_eq!(interface, "eth9")
            }
            other => panic!("expected InterfaceMissing, got {other:?}"),
        }
        assert!(started.elapsed() < COMMAND_TIMEOUT);
    });
}

#[test]
fn dhcp_lease_renew_and_rebind_against_dnsmasq() {
    skip_unless_able!("dhcp_lease_renew_and_rebind_against_dnsmasq", true);
    let mut lab = Lab::new("dh");
    lab.start_dnsmasq(&[]);
    let resolv = lab.resolv_conf();
    let mut lease = lab.in_client(|| {
        metanode_netcfg::loopback_up().expect("lo up");
        let options = ConfigureOptions {
            resolv_conf: Some(resolv.clone()),
            hostname: Some("node-1".to_string()),
            ..ConfigureOptions::new(DHCP_TIMEOUT)
        };
        let state = metanode_netcfg::configure_with(&NetConfig::Dhcp { interface: None }, &options)
            .expect("a lease")
            .expect("not off");
        assert_eq!(state.interface, "eth0");
        let octets = state.address.octets();
        assert!(
            octets[..3] == [198, 18, 0] && (50..=60).contains(&octets[3]),
            "address {} outside the pool",
            state.address
        );
        assert_eq!(state.prefix_len, 24);
        assert_eq!(state.gateway, Some(SERVER_ADDRESS));
        assert_eq!(state.dns, [TEST_DNS]);
        let lease = state.lease.expect("a dhcp lease");
        assert_eq!(lease.server, SERVER_ADDRESS);
        assert_eq!(lease.lease_time, Some(LEASE_TIME));
        assert_eq!(lease.renew_after, Some(LEASE_TIME / 2));

        // The kernel holds what the lease says.
        let addresses = metanode_netcfg::addresses("eth0").expect("addresses");
        assert!(addresses.contains(&v4(state.address, 24)), "{addresses:?}");
        assert_eq!(
            metanode_netcfg::default_gateway("eth0").expect("routes"),
            Some(SERVER_ADDRESS)
        );
        assert_eq!(
            std::fs::read_to_string(&resolv).expect("resolv.conf"),
            format!("# written by metanode from the DHCP lease from {SERVER_ADDRESS} on eth0\nnameserver {TEST_DNS}\n")
        );
        lease
    });
    let ack = format!("DHCPACK(veth0) {} ", lease.address);
    lab.wait_for_dnsmasq("the ACK with our host name", |log| {
        log.iter()
            .any(|l| l.contains(&ack) && l.ends_with("node-1"))
    });
    assert_eq!(lab.dnsmasq_count("DHCPREQUEST(veth0)"), 1);

    // Renewal (unicast to the server over UDP, as at T1) and rebinding
    // (broadcast, as at T2), called directly: dnsmasq's shortest lease is
    // two minutes, too long to wait for.
    let first_acquired_at = lease.acquired_at;
    lab.in_client(|| {
        let outcome = dhcp::renew(
            &mut lease,
            Upkeep::Renew,
            Some("node-1"),
            Duration::from_secs(10),
        )
        .expect("renew answered");
        assert_eq!(outcome, RenewOutcome::Extended);
        assert!(lease.acquired_at > first_acquired_at);
        assert_eq!(lease.lease_time, Some(LEASE_TIME));
        metanode_netcfg::apply_lease(&lease, None).expect("re-apply");

        let renewed_at = lease.acquired_at;
        let outcome = dhcp::renew(&mut lease, Upkeep::Rebind, None, Duration::from_secs(10))
            .expect("rebind answered");
        assert_eq!(outcome, RenewOutcome::Extended);
        assert!(lease.acquired_at > renewed_at);
        metanode_netcfg::apply_lease(&lease, None).expect("re-apply");
        let addresses = metanode_netcfg::addresses("eth0").expect("addresses");
        assert!(addresses.contains(&v4(lease.address, 24)), "{addresses:?}");
    });
    // One REQUEST and ACK each for the acquisition, the renewal and the
    // rebinding.
    lab.wait_for_dnsmasq("three ACKs", |log| {
        log.iter().filter(|l| l.contains("DHCPACK(veth0)")).count() >= 3
    });
    assert_eq!(lab.dnsmasq_count("DHCPREQUEST(veth0)"), 3);

    // A renewal for an address the server never gave is refused: the
    // keeper's NAK path (remove the address, rediscover) starts from this.
    let outcome = lab.in_client(|| {
        let mut stranger = lease.clone();
        stranger.address = Ipv4Addr::new(198, 18, 0, 200);
        metanode_netcfg::netlink::Netlink::open()
            .and_then(|mut netlink| {
                let index = netlink.link("eth0")?.index;
                netlink.add_address(index, "eth0", stranger.address, 24, None)
            })
            .expect("add the stranger address");
        dhcp::renew(&mut stranger, Upkeep::Renew, None, Duration::from_secs(10))
    });
    lab.wait_for_dnsmasq("the NAK", |log| {
        log.iter()
            .any(|l| l.contains("DHCPNAK(veth0) 198.18.0.200") && l.ends_with("lease not found"))
    });
    let outcome = outcome.expect("answered");
    assert!(matches!(outcome, RenewOutcome::Nak { .. }), "{outcome:?}");
}

#[test]
fn lease_keeper_renews_at_t1() {
    skip_unless_able!("lease_keeper_renews_at_t1", true);
    let mut lab = Lab::new("kp");
    // dnsmasq cannot lease for less than two minutes, but it can send a
    // short T1, which is what schedules renewals (it replaces values under
    // a few seconds with its default, so 5 s).
    lab.start_dnsmasq(&["--dhcp-option=option:T1,5", "--dhcp-option=option:T2,100"]);
    let (events, first) = lab.in_client(|| {
        let state = metanode_netcfg::configure(&NetConfig::Dhcp { interface: None }, DHCP_TIMEOUT)
            .expect("a lease")
            .expect("not off");
        let lease = state.lease.expect("a dhcp lease");
        assert_eq!(lease.renew_after, Some(Duration::from_secs(5)));
        assert_eq!(lease.rebind_after, Some(Duration::from_secs(100)));
        let (sender, events) = mpsc::channel();
        let keeper = dhcp::spawn_lease_keeper(
            lease.clone(),
            dhcp::KeeperOptions {
                events: Some(sender),
                ..dhcp::KeeperOptions::default()
            },
        )
        .expect("keeper starts");
        // T1 is 5 s away; allow for a retransmission on top.
        let event = events.recv_timeout(Duration::from_secs(20));
        keeper.stop().expect("keeper thread exits cleanly");
        (event, lease)
    });
    match events {
        Ok(dhcp::LeaseEvent::Extended { upkeep, lease }) => {
            assert_eq!(upkeep, Upkeep::Renew);
            assert_eq!(lease.address, first.address);
            assert!(lease.acquired_at >= first.acquired_at + Duration::from_secs(5));
        }
        other => panic!("expected a renewal event, got {other:?}"),
    }
    lab.wait_for_dnsmasq("the renewal", |log| {
        log.iter().filter(|l| l.contains("DHCPACK(veth0)")).count() >= 2
    });
}
