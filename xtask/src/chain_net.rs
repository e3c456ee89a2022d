//! A chain of `metanode agent`s in network namespaces: what `cargo xtask
//! chain-test` and `cargo xtask bench chain` run on.
//!
//! Layout. Everything lives in namespaces this process creates; nothing is
//! added to the host's network namespace, so the tests never touch (or
//! depend on) the machine's own network:
//!
//! - `mn-chain-<pid>-hub`: a bridge `br0` with 10.77.0.254/24. xtask's
//!   probes and load generators talk to the nodes from here: the thread that
//!   creates the [`Net`] moves itself into this namespace (`setns`) and back
//!   when the net is dropped, and threads it spawns meanwhile start here too.
//! - `mn-chain-<pid>-<i>`: node i with `eth0` = 10.77.0.(i+1)/24 (a veth
//!   whose other end is a port of `br0`) and loopback up. Its agent serves
//!   the API on :7878 and BPCI (QUIC over UDP) on :7900 of that address.
//!
//! Faults are nftables tables inside the node namespaces (the kernel here
//! has no `sch_netem`): `mn_loss` drops a random share of the node's
//! incoming UDP (`numgen random mod 100 < N`), `mn_part` drops everything
//! from the nodes on the other side of a partition. Probes come from the hub
//! address, which no rule names, so a partitioned node still answers them.
//!
//! Delay ([`Net::set_delay`]) has no kernel qdisc here either: while it is
//! on, each node routes the other nodes' /32s via the hub, and the hub
//! passes every forwarded packet through a userspace relay (a TUN device)
//! that holds it for its one-way delay (see `chain_relay`). Packets keep
//! their addresses, so the loss and partition tables above mean the same
//! with or without it. Off, the nodes talk directly over the bridge again.
//!
//! Cleanup. `Drop` kills the agents, anything else left in our namespaces,
//! and deletes the namespaces, also on error or panic. Namespaces left by a
//! run that was killed outright (its pid is gone) are swept at the next
//! start; namespaces of a live process are never touched.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use metanode_core::config::{ChainPeer, LogLevel, NetworkMode, NodeConfig};
use metanode_core::keys::{PublicKey, SigningKeyFile};
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::chain_relay::{self, Impairment, Relay, RelayStats};
use crate::process::{self, Outcome};
use crate::workspace_root;

/// Every namespace of ours starts with this, then the owning pid.
const NS_PREFIX: &str = "mn-chain-";
/// A /24 that exists only inside our namespaces (never routed on the host).
const SUBNET: [u8; 3] = [10, 77, 0];
/// The hub's (and so the probes') address in the subnet.
const HUB_HOST: u8 = 254;
pub const API_PORT: u16 = 7878;
pub const CHAIN_PORT: u16 = 7900;
/// Node i is 10.77.0.(i+1); the hub is .254.
pub const NODES_COUNT_MAX: usize = 16;
/// `ip`, `nft` and `ip netns exec` commands.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// `metanode chain genesis` signs nothing big, but may write many client keys.
const GENESIS_TIMEOUT: Duration = Duration::from_secs(120);
/// One probe (status, a block): a live node answers in milliseconds, so a
/// slow answer is as good as none for the checks.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body a probe reads (a canonical block of 10 000
/// transfers is about 2 MiB).
const PROBE_BODY_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Time for a started agent to answer its API.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Seed of the relay's per-packet delays (a run's schedule is this seed
/// applied to the order packets arrive in).
pub const RELAY_SEED: u64 = 0x6d6e_6465_6c61_7940;
/// Priority of the hub's `iif br0` rule: after the `local` rule (0), so
/// packets for the hub's own address are still delivered to it.
const RELAY_RULE_PRIORITY: u32 = 100;

const _: () = assert!(NODES_COUNT_MAX < HUB_HOST as usize);

/// Consensus timing written into every node's `chain:` section.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Timing {
    pub block_interval_min_ms: u64,
    pub empty_block_interval_ms: u64,
    pub round_timeout_base_ms: u64,
}

/// What to create.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Names the run directory target/chain-net/LABEL (replaced each run).
    pub label: &'static str,
    pub nodes: usize,
    /// Accounts funded at genesis for load (`--fund-clients`).
    pub clients: usize,
    pub client_balance: u64,
    pub timing: Timing,
}

/// The part of `GET /api/v1/chain/status` the harness reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub height: u64,
    pub consensus_height: u64,
    pub consensus_round: u32,
    pub validators: Vec<String>,
    pub peers_connected: Vec<String>,
    pub mempool_txs: u64,
}

#[derive(Debug)]
struct Node {
    ns: String,
    ip: Ipv4Addr,
    config: PathBuf,
    log: PathBuf,
    key: PublicKey,
    child: Option<Child>,
}

/// The running network. Dropping it tears everything down.
#[derive(Debug)]
pub struct Net {
    run_dir: PathBuf,
    bin: PathBuf,
    hub: String,
    /// Every namespace we created (or were about to), deleted on drop.
    namespaces: Vec<String>,
    nodes: Vec<Node>,
    clients: Vec<PathBuf>,
    /// The namespace this thread was in before entering the hub.
    home_ns: Option<File>,
    probe: ureq::Agent,
    commands_log: PathBuf,
    /// Started at the first [`Net::set_delay`]; then kept (idle when off).
    relay: Option<Relay>,
    /// Whether the nodes route each other via the hub (delay on).
    via_relay: bool,
}

pub fn ensure_root(what: &str) -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "{what} needs root: it creates network namespaces, veth pairs and nftables rules \
         (run it as root, e.g. sudo -E cargo xtask ...)"
    );
    Ok(())
}

fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], i as u8 + 1)
}

fn hub_ip() -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], HUB_HOST)
}

/// An HTTP client for load and streams inside the hub namespace: its own
/// connection pool, `timeout` for a whole request (None for streams, which
/// bound themselves with a per-read timeout).
pub fn http_agent(timeout: Option<Duration>, per_read: Option<Duration>) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(PROBE_TIMEOUT))
            .timeout_global(timeout)
            .timeout_per_read(per_read)
            .build(),
    )
}

impl Net {
    /// Builds the binary, writes a fresh genesis with `metanode chain
    /// genesis`, creates the namespaces, enters the hub and starts every
    /// node (without waiting for them; see [`Net::wait_all_up`]).
    pub fn create(spec: &Spec) -> anyhow::Result<Net> {
        ensure_root("the netns chain harness")?;
        ensure!(
            (1..=NODES_COUNT_MAX).contains(&spec.nodes),
            "a net has 1 to {NODES_COUNT_MAX} nodes, not {}",
            spec.nodes
        );
        let bin = crate::agent_bin::build_static(&workspace_root())?;
        let run_dir = workspace_root().join("target/chain-net").join(spec.label);
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir)
                .with_context(|| format!("remove the previous run {}", run_dir.display()))?;
        }
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("create {}", run_dir.display()))?;
        let commands_log = run_dir.join("xtask-commands.log");
        sweep_stale(&commands_log);

        let tag = format!("{NS_PREFIX}{}", std::process::id());
        let mut net = Net {
            run_dir: run_dir.clone(),
            bin,
            hub: format!("{tag}-hub"),
            namespaces: Vec::new(),
            nodes: Vec::new(),
            clients: Vec::new(),
            home_ns: None,
            probe: http_agent(Some(PROBE_TIMEOUT), None),
            commands_log,
            relay: None,
            via_relay: false,
        };
        net.write_genesis(spec)?;
        net.create_links(&tag, spec.nodes)?;
        net.enter_hub()?;
        for i in 0..net.nodes.len() {
            net.start(i)?;
        }
        Ok(net)
    }

    /// `metanode chain genesis`, then one config per node rewritten for its
    /// own address, with every other node as a peer at its address.
    fn write_genesis(&mut self, spec: &Spec) -> anyhow::Result<()> {
        let out = self.run_dir.join("genesis");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["chain", "genesis", "--validators"])
            .arg(spec.nodes.to_string())
            .arg("--out")
            .arg(&out)
            .args(["--chain-name", spec.label, "--force"]);
        if spec.clients > 0 {
            cmd.args(["--fund-clients", &spec.clients.to_string()])
                .args(["--client-balance", &spec.client_balance.to_string()]);
        }
        let log = self.run_dir.join("genesis.log");
        match process::run_with_timeout(&mut cmd, GENESIS_TIMEOUT, &log)? {
            Outcome::Finished(f) if f.status.success() => {}
            Outcome::Finished(f) => bail!(
                "metanode chain genesis failed ({}): {}",
                f.status,
                process::log_tail(&log, 20)
            ),
            Outcome::TimedOut(t) => bail!("metanode chain genesis timed out after {t:?}"),
        }
        let mut configs = Vec::new();
        for i in 0..spec.nodes {
            let path = out.join(format!("node-{i}/config.yaml"));
            let config = NodeConfig::from_file(&path)
                .with_context(|| format!("read the generated {}", path.display()))?;
            let key_path = config
                .chain_key_file_path()
                .with_context(|| format!("{} has no chain section", path.display()))?;
            let key = SigningKeyFile::new(&key_path)
                .load()
                .with_context(|| format!("load node {i}'s key {}", key_path.display()))?
                .public_key();
            configs.push((config, key));
        }
        let keys: Vec<PublicKey> = configs.iter().map(|(_, k)| *k).collect();
        for (i, (mut config, key)) in configs.into_iter().enumerate() {
            let ip = node_ip(i);
            config.api.listen = SocketAddr::new(ip.into(), API_PORT);
            config.log.level = LogLevel::Info;
            // The namespace's interface is set up here; the agent must not
            // try to configure it (it only does as the appliance's init).
            config.network.mode = NetworkMode::Off;
            let chain = config.chain.as_mut().context("chain section")?;
            chain.listen = SocketAddr::new(ip.into(), CHAIN_PORT);
            chain.peers = keys
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, k)| ChainPeer {
                    public_key: k.to_string(),
                    address: Some(format!("{}:{CHAIN_PORT}", node_ip(j))),
                })
                .collect();
            chain.block_interval_min_ms = spec.timing.block_interval_min_ms;
            chain.empty_block_interval_ms = spec.timing.empty_block_interval_ms;
            chain.round_timeout_base_ms = spec.timing.round_timeout_base_ms;
            config
                .validate()
                .with_context(|| format!("node {i}'s rewritten config"))?;
            let path = self.run_dir.join(format!("node-{i}.yaml"));
            let text = serde_saphyr::to_string(&config)
                .map_err(|e| anyhow::anyhow!("serialize node {i}'s config: {e}"))?;
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            self.nodes.push(Node {
                ns: String::new(),
                ip,
                config: path,
                log: self.run_dir.join(format!("node-{i}.log")),
                key,
                child: None,
            });
        }
        for j in 0..spec.clients {
            let path = out.join(format!("clients/client-{j}.key"));
            ensure!(
                path.is_file(),
                "metanode chain genesis wrote no {}",
                path.display()
            );
            self.clients.push(path);
        }
        Ok(())
    }

    fn create_links(&mut self, tag: &str, nodes: usize) -> anyhow::Result<()> {
        let hub = self.hub.clone();
        self.namespaces.push(hub.clone());
        self.ip(&["netns", "add", &hub])?;
        self.ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        self.ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{}/24", hub_ip()),
            "dev",
            "br0",
        ])?;
        self.ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        self.ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        for i in 0..nodes {
            let ns = format!("{tag}-{i}");
            self.namespaces.push(ns.clone());
            self.ip(&["netns", "add", &ns])?;
            let port = format!("n{i}");
            self.ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            self.ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", node_ip(i));
            self.ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            self.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            self.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            self.nodes[i].ns = ns;
        }
        Ok(())
    }

    /// Moves this thread into the hub namespace, remembering where it was.
    fn enter_hub(&mut self) -> anyhow::Result<()> {
        let home = File::open("/proc/thread-self/ns/net").context("open this thread's netns")?;
        let hub_path = format!("/run/netns/{}", self.hub);
        let hub = File::open(&hub_path).with_context(|| format!("open {hub_path}"))?;
        move_into_link_name_space(hub.as_fd(), Some(LinkNameSpaceType::Network))
            .with_context(|| format!("setns into {}", self.hub))?;
        self.home_ns = Some(home);
        Ok(())
    }

    /// Fails unless this thread is in the hub namespace, so that nothing is
    /// ever created in (or routed through) the host's own.
    fn ensure_in_hub(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        let id = |path: &str| -> anyhow::Result<(u64, u64)> {
            let m = std::fs::metadata(path).with_context(|| format!("stat {path}"))?;
            Ok((m.dev(), m.ino()))
        };
        let hub_path = format!("/run/netns/{}", self.hub);
        ensure!(
            id("/proc/thread-self/ns/net")? == id(&hub_path)?,
            "this thread is not in the hub namespace {} (only the thread that created the net is)",
            self.hub
        );
        Ok(())
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run_command(Command::new("ip").args(args), &self.commands_log)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The node whose key is `key` (hex), if any.
    pub fn node_of_key(&self, key: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.key.to_string().eq_ignore_ascii_case(key))
    }

    /// Key files of the accounts funded at genesis.
    pub fn client_key_files(&self) -> &[PathBuf] {
        &self.clients
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_running(i)).collect()
    }

    /// Starts node i's agent in its namespace (logs appended to node-i.log).
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        ensure!(node.child.is_none(), "node {i} is already running");
        append_marker(&node.log, &format!("starting node {i}"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns])
            .arg(&self.bin)
            .args(["agent", "--config"])
            .arg(&node.config);
        let child = process::spawn_background(&mut cmd, &node.log)
            .with_context(|| format!("start node {i}"))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// SIGKILL to node i's agent (no shutdown of any kind), then reaps it.
    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        let child = self.nodes[i]
            .child
            .take()
            .with_context(|| format!("node {i} is not running"))?;
        append_marker(&self.nodes[i].log, &format!("kill -9 node {i}"));
        kill_hard(child);
        Ok(())
    }

    /// Starts node i again on its existing data directory.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.start(i)
    }

    /// Peak resident set (VmHWM) of node i's agent, in bytes.
    pub fn peak_rss_bytes(&self, i: usize) -> anyhow::Result<u64> {
        let child = self.nodes[i]
            .child
            .as_ref()
            .with_context(|| format!("node {i} is not running"))?;
        let path = format!("/proc/{}/status", child.id());
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id()))?;
        // `ip netns exec` execs the agent in place; anything else means the
        // pid is not the agent and the number would be meaningless.
        ensure!(
            comm.trim() == "metanode",
            "pid {} of node {i} is {:?}, not the agent",
            child.id(),
            comm.trim()
        );
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in {path}"))?;
        Ok(kib * 1024)
    }

    /// The last lines of node i's log, for failure messages.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        process::log_tail(&self.nodes[i].log, lines)
    }

    pub fn print_log_tails(&self, lines: usize) {
        for i in 0..self.len() {
            eprintln!(
                "---- node {i} ({}) last {lines} log lines:\n{}",
                self.nodes[i].log.display(),
                self.log_tail(i, lines)
            );
        }
    }

    // ------------------------------------------------------------ faults

    /// Drops `percent` % of node i's incoming UDP (QUIC) packets; 0 clears.
    pub fn loss(&self, i: usize, percent: u8) -> anyhow::Result<()> {
        ensure!(percent <= 100, "loss of {percent} %");
        let mut script = reset_table("mn_loss");
        if percent > 0 {
            script += &format!(
                "table inet mn_loss {{\n  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
                 meta l4proto udp numgen random mod 100 < {percent} drop\n  }}\n}}\n"
            );
        }
        self.nft(i, "loss", &script)
    }

    /// Splits the nodes into `groups` (every node in exactly one): each node
    /// drops all packets from the nodes of the other groups.
    pub fn partition(&self, groups: &[&[usize]]) -> anyhow::Result<()> {
        let mut seen = vec![0usize; self.len()];
        for group in groups {
            for &i in *group {
                ensure!(i < self.len(), "partition names node {i} of {}", self.len());
                seen[i] += 1;
            }
        }
        ensure!(
            seen.iter().all(|&c| c == 1),
            "a partition must name every node exactly once: {groups:?}"
        );
        for group in groups {
            let others: Vec<String> = (0..self.len())
                .filter(|j| !group.contains(j))
                .map(|j| node_ip(j).to_string())
                .collect();
            for &i in *group {
                let mut script = reset_table("mn_part");
                if !others.is_empty() {
                    script += &format!(
                        "table inet mn_part {{\n  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
                         ip saddr {{ {} }} drop\n  }}\n}}\n",
                        others.join(", ")
                    );
                }
                self.nft(i, "partition", &script)?;
            }
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            self.nft(i, "heal", &reset_table("mn_part"))?;
        }
        Ok(())
    }

    fn nft(&self, i: usize, what: &str, script: &str) -> anyhow::Result<()> {
        let path = self.run_dir.join(format!("nft-{what}-node-{i}.nft"));
        std::fs::write(&path, script).with_context(|| format!("write {}", path.display()))?;
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.nodes[i].ns, "nft", "-f"])
                .arg(&path),
            &self.commands_log,
        )
        .with_context(|| format!("nft {what} on node {i}"))
    }

    /// Puts every node-to-node packet through the relay, which holds each
    /// for `delay ± jitter` (see `chain_relay`); None takes the relay out
    /// of the path again (packets it holds still leave on time). The first
    /// call creates the relay's TUN in the hub, turns on forwarding there
    /// and adds the hub's policy route; later calls only change the
    /// impairment and the nodes' routes. Must run on the thread that
    /// created the net (the one in the hub namespace).
    pub fn set_delay(&mut self, impairment: Option<Impairment>) -> anyhow::Result<()> {
        let Some(impairment) = impairment else {
            if self.via_relay {
                self.route_nodes_via_hub(false)?;
                self.via_relay = false;
            }
            return Ok(());
        };
        match &self.relay {
            Some(relay) => {
                ensure!(
                    relay.is_running(),
                    "the relay thread has stopped (see its warning above)"
                );
                relay.set_impairment(impairment);
            }
            None => {
                self.ensure_in_hub()?;
                let nodes = self.nodes.iter().map(|n| n.ip).collect();
                // Kept only once the hub is set up: if that fails, dropping
                // it closes the TUN and a later call starts over.
                let relay = Relay::start(nodes, impairment, RELAY_SEED)?;
                self.setup_hub_forwarding()
                    .context("set up the hub for the relay")?;
                self.relay = Some(relay);
            }
        }
        if !self.via_relay {
            self.route_nodes_via_hub(true)?;
            self.via_relay = true;
        }
        Ok(())
    }

    /// The relay's counters since the previous call (None: never started).
    pub fn take_relay_stats(&self) -> Option<RelayStats> {
        self.relay.as_ref().map(Relay::take_stats)
    }

    /// Packets the kernel dropped on their way into the relay (its TUN's tx
    /// queue was full because the relay thread did not read in time); the
    /// relay's own counters cannot see these.
    pub fn relay_kernel_dropped(&self) -> anyhow::Result<u64> {
        #[derive(Deserialize)]
        struct Link {
            stats64: Stats64,
        }
        #[derive(Deserialize)]
        struct Stats64 {
            tx: Tx,
        }
        #[derive(Deserialize)]
        struct Tx {
            dropped: u64,
        }
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.hub, "-s", "-j", "link", "show", "dev"])
            .arg(chain_relay::TUN_NAME);
        let out = match process::run_with_timeout(&mut cmd, COMMAND_TIMEOUT, &self.commands_log)? {
            Outcome::Finished(f) if f.status.success() => f.stdout,
            Outcome::Finished(f) => bail!("{cmd:?} failed ({})", f.status),
            Outcome::TimedOut(t) => bail!("{cmd:?} timed out after {t:?}"),
        };
        let links: Vec<Link> =
            serde_json::from_str(&out).with_context(|| format!("{cmd:?} printed {out:?}"))?;
        Ok(links
            .first()
            .context("no relay TUN in the hub")?
            .stats64
            .tx
            .dropped)
    }

    /// Hub side of the relay path: forward between nodes, and send what
    /// arrives on `br0` for the subnet into the relay's TUN. Reverse-path
    /// filtering is off because relayed packets come back in on the TUN
    /// with node source addresses whose route is `br0`; IPv6 is off on the
    /// TUN so the kernel's own neighbour discovery does not land in it.
    fn setup_hub_forwarding(&self) -> anyhow::Result<()> {
        let tun = chain_relay::TUN_NAME;
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.hub, "sysctl", "-q", "-w"])
                .arg("net.ipv4.ip_forward=1")
                .arg("net.ipv4.conf.all.rp_filter=0")
                .arg(format!("net.ipv4.conf.{tun}.rp_filter=0"))
                .arg(format!("net.ipv6.conf.{tun}.disable_ipv6=1")),
            &self.commands_log,
        )?;
        let hub = self.hub.as_str();
        let table = chain_relay::ROUTE_TABLE.to_string();
        let subnet = format!("{}/24", Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 0));
        // The kernel queues packets for the relay on the TUN's tx queue
        // (500 by default); a proposal burst to three peers is thousands.
        let queue = chain_relay::QUEUE_PACKETS_MAX.to_string();
        self.ip(&["-n", hub, "link", "set", tun, "txqueuelen", &queue, "up"])?;
        self.ip(&[
            "-n", hub, "route", "add", &subnet, "dev", tun, "table", &table,
        ])?;
        self.ip(&[
            "-n",
            hub,
            "rule",
            "add",
            "iif",
            "br0",
            "lookup",
            &table,
            "priority",
            &RELAY_RULE_PRIORITY.to_string(),
        ])
    }

    /// Each node reaches every other node via the hub (`on`) or on-link.
    fn route_nodes_via_hub(&self, on: bool) -> anyhow::Result<()> {
        let hub = hub_ip().to_string();
        for node in &self.nodes {
            for other in &self.nodes {
                if other.ip == node.ip {
                    continue;
                }
                let dst = format!("{}/32", other.ip);
                if on {
                    self.ip(&[
                        "-n", &node.ns, "route", "replace", &dst, "via", &hub, "dev", "eth0",
                    ])?;
                } else {
                    self.ip(&["-n", &node.ns, "route", "del", &dst])?;
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ probes

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}:{API_PORT}{path}", self.nodes[i].ip)
    }

    /// GET with the probe timeout: (status, body).
    pub fn get(&self, i: usize, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let url = self.url(i, path);
        let mut response = self
            .probe
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(PROBE_BODY_BYTES_MAX)
            .read_to_vec()
            .with_context(|| format!("read GET {url}"))?;
        Ok((status, body))
    }

    /// GET that must answer 200 with JSON.
    pub fn get_json<T: DeserializeOwned>(&self, i: usize, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.get(i, path)?;
        ensure!(
            status == 200,
            "GET {} answered {status}: {}",
            self.url(i, path),
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {} is not the expected JSON", self.url(i, path)))
    }

    /// GET that must answer 200; the raw body.
    pub fn get_bytes(&self, i: usize, path: &str) -> anyhow::Result<Vec<u8>> {
        let (status, body) = self.get(i, path)?;
        ensure!(
            status == 200,
            "GET {} answered {status}: {}",
            self.url(i, path),
            String::from_utf8_lossy(&body)
        );
        Ok(body)
    }

    /// POST bytes (application/octet-stream): (status, body).
    pub fn post(&self, i: usize, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let url = self.url(i, path);
        let mut response = self
            .probe
            .post(&url)
            .header("content-type", "application/octet-stream")
            .send(body)
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(PROBE_BODY_BYTES_MAX)
            .read_to_vec()
            .with_context(|| format!("read POST {url}"))?;
        Ok((status, body))
    }

    pub fn status(&self, i: usize) -> anyhow::Result<Status> {
        self.get_json(i, "/api/v1/chain/status")
    }

    /// Finalized height of every running node (None: down or not answering).
    pub fn heights(&self) -> Vec<Option<u64>> {
        (0..self.len())
            .map(|i| {
                if self.is_running(i) {
                    self.status(i).ok().map(|s| s.height)
                } else {
                    None
                }
            })
            .collect()
    }

    /// Hash of node i's block at `height` (None: it has no such block yet).
    pub fn block_hash(&self, i: usize, height: u64) -> anyhow::Result<Option<String>> {
        #[derive(Deserialize)]
        struct Block {
            hash: String,
        }
        let path = format!("/api/v1/chain/blocks/{height}");
        let (status, body) = self.get(i, &path)?;
        match status {
            200 => Ok(Some(
                serde_json::from_slice::<Block>(&body)
                    .with_context(|| format!("GET {} is not a block", self.url(i, &path)))?
                    .hash,
            )),
            404 => Ok(None),
            other => bail!(
                "GET {} answered {other}: {}",
                self.url(i, &path),
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Waits until every running node answers its status.
    pub fn wait_all_up(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let running = self.running();
        wait_until("every node's API to answer", timeout, || {
            let down: Vec<usize> = running
                .iter()
                .copied()
                .filter(|&i| self.status(i).is_err())
                .collect();
            Ok(down
                .is_empty()
                .then_some(())
                .ok_or_else(|| format!("nodes {down:?} do not answer /api/v1/chain/status yet")))
        })
        .inspect_err(|_| self.print_log_tails(15))?;
        Ok(started.elapsed())
    }

    /// Checks that `nodes` hold identical blocks at every height 1..=upto.
    pub fn check_same_chain(&self, nodes: &[usize], upto: u64) -> anyhow::Result<()> {
        for h in 1..=upto {
            let mut first: Option<(usize, String)> = None;
            for &i in nodes {
                let hash = self
                    .block_hash(i, h)?
                    .with_context(|| format!("node {i} has no block at height {h}"))?;
                match &first {
                    None => first = Some((i, hash)),
                    Some((j, other)) if *other != hash => {
                        bail!("FORK: node {j} has block {other} at height {h}, node {i} has {hash}")
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// The node that proposes `(height, round)`: the genesis set's
    /// round-robin `validators[(height + round) % n]` (`ValidatorSet::proposer`).
    pub fn proposer_of(&self, status: &Status, height: u64, round: u32) -> anyhow::Result<usize> {
        let n = status.validators.len() as u64;
        ensure!(n > 0, "status lists no validators");
        let index = (height.wrapping_add(u64::from(round)) % n) as usize;
        let key = &status.validators[index];
        self.node_of_key(key)
            .with_context(|| format!("validator {key} is none of our nodes"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.take() {
                kill_hard(child);
            }
        }
        for ns in &self.namespaces {
            kill_namespace_pids(ns, &self.commands_log);
        }
        // Stops its thread and closes the TUN before the hub goes away.
        drop(self.relay.take());
        if let Some(home) = self.home_ns.take()
            && let Err(e) =
                move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network))
        {
            eprintln!("warning: could not return to the original network namespace: {e}");
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = run_command(
                Command::new("ip").args(["netns", "del", ns]),
                &self.commands_log,
            ) {
                eprintln!("warning: deleting namespace {ns}: {e:#}");
            }
        }
    }
}

fn kill_hard(mut child: Child) {
    if let Some(pid) = Pid::from_raw(child.id() as i32) {
        // The agent leads its own process group (spawn_background).
        let _ = kill_process_group(pid, Signal::KILL);
    }
    let _ = child.wait();
}

fn append_marker(log: &Path, what: &str) {
    use std::io::Write as _;
    if let Ok(mut f) = File::options().create(true).append(true).open(log) {
        let _ = writeln!(f, "==== xtask {}: {what}", crate::time::now_iso8601());
    }
}

/// `add` then `delete` makes the delete succeed whether or not the table
/// exists; what follows in the same file is applied atomically with it.
fn reset_table(name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {name}");
    let _ = writeln!(s, "delete table inet {name}");
    s
}

fn run_command(cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    match process::run_with_timeout(cmd, COMMAND_TIMEOUT, log)? {
        Outcome::Finished(f) if f.status.success() => Ok(()),
        Outcome::Finished(f) => bail!(
            "{line} failed ({}): {}",
            f.status,
            process::log_tail(log, 3)
        ),
        Outcome::TimedOut(t) => bail!("{line} timed out after {t:?}"),
    }
}

fn namespace_pids(ns: &str, log: &Path) -> Vec<i32> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "pids", ns]);
    match process::run_with_timeout(&mut cmd, COMMAND_TIMEOUT, log) {
        Ok(Outcome::Finished(f)) if f.status.success() => f
            .stdout
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
        _ => Vec::new(),
    }
}

fn kill_namespace_pids(ns: &str, log: &Path) {
    let own = std::process::id() as i32;
    for pid in namespace_pids(ns, log) {
        if pid != own
            && let Some(pid) = Pid::from_raw(pid)
        {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

/// Deletes namespaces of earlier runs whose process is gone (killed before
/// its Drop ran), with whatever still runs in them.
fn sweep_stale(log: &Path) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("    removing namespace {name} left by an earlier run (pid {pid} is gone)");
        kill_namespace_pids(&name, log);
        let _ = run_command(Command::new("ip").args(["netns", "del", &name]), log);
    }
}

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
/// `Ok(Err(why))` means "not yet" (kept for the timeout message); an `Err`
/// is a probe failure, also retried (nodes restart, partitions cut).
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Result<T, String>>,
) -> anyhow::Result<T> {
    wait_until_every(what, timeout, Duration::from_millis(100), &mut check)
}

pub fn wait_until_every<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: impl FnMut() -> anyhow::Result<Result<T, String>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let mut last: String;
    loop {
        match check() {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(why)) => last = why,
            Err(e) => last = format!("{e:#}"),
        }
        if started.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_the_private_subnet() {
        assert_eq!(node_ip(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(node_ip(NODES_COUNT_MAX - 1), Ipv4Addr::new(10, 77, 0, 16));
        assert_eq!(hub_ip(), Ipv4Addr::new(10, 77, 0, 254));
    }

    #[test]
    fn table_reset_tolerates_a_missing_table() {
        assert_eq!(
            reset_table("mn_part"),
            "add table inet mn_part\ndelete table inet mn_part\n"
        );
    }

    #[test]
    fn wait_until_returns_the_value_or_names_what_it_waited_for() {
        let mut calls = 0;
        let v = wait_until_every(
            "three calls",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                calls += 1;
                Ok(if calls == 3 {
                    Ok(calls)
                } else {
                    Err(format!("call {calls}"))
                })
            },
        )
        .expect("reaches three");
        assert_eq!(v, 3);
        let err = wait_until_every::<()>("never", Duration::ZERO, Duration::ZERO, || {
            Ok(Err("still no".into()))
        })
        .expect_err("times out");
        let text = format!("{err:#}");
        assert!(
            text.contains("never") && text.contains("still no"),
            "{text}"
        );
    }
}
