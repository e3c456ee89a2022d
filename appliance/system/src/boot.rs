//! What the `metanode` binary runs as PID 1: metanode-init's loop with the
//! appliance's hooks — partitions, first-boot format, node config (with its
//! trial), hostname, network, slot bookkeeping.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metanode_core::config::{NetworkMode, NodeConfig};
use metanode_init::readiness::HttpTarget;
use metanode_init::sys::MountRequest;
use metanode_init::{
    Context, HookResult, Hooks, InterfaceAddress, Options, PowerAction, ReadinessOptions, Restart,
    ServiceSpec,
};
use metanode_netcfg::NetConfig;
use metanode_slots::config_try::{self, TrialState};
use metanode_slots::esp::{EntryName, Esp};
use nix::mount::MsFlags;

use crate::disks;
use crate::paths::*;

/// The agent's service name in the supervisor.
pub const AGENT_SERVICE: &str = "agent";
/// Network setup at boot runs before the watchdog is armed.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(20);
/// Later setups run inside PID 1's loop, which must pet the watchdog (30 s
/// timeout, petted every 10 s): keep them well below that.
const NETWORK_REAPPLY_TIMEOUT: Duration = Duration::from_secs(10);
const NETWORK_RETRY_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_API_PORT: u16 = 7878;
/// Segments are preallocated; the shipped data partition is small (1 GiB),
/// so the appliance uses 64 MiB segments instead of the 256 MiB default.
const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 * 1024 * 1024;

pub fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn config_path() -> PathBuf {
    Path::new(CONFIG_DIR).join(config_try::CONFIG_FILE)
}

/// The config a fresh appliance starts with: DHCP, the API on every
/// interface (the HTTP Cage will front it), the store on the data partition.
pub fn default_config_yaml(name: &str) -> String {
    format!(
        "# Written at first boot. Change it with `metanode config apply FILE --api URL` (a trial\n\
         # that reverts unless committed); see `metanode config example` for every field.\n\
         node:\n  name: {name}\n  data_dir: {NODE_DIR}\n\
         api:\n  listen: 0.0.0.0:{DEFAULT_API_PORT}\n\
         store:\n  segment_size_bytes_max: {DEFAULT_SEGMENT_SIZE_BYTES}\n\
         network:\n  mode: dhcp\n"
    )
}

/// A stable per-machine name from the first NIC's MAC address.
fn default_node_name() -> String {
    let mac = metanode_netcfg::ethernet_interfaces()
        .ok()
        .and_then(|ifaces| ifaces.into_iter().next())
        .and_then(|iface| std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok())
        .map(|m| m.trim().replace(':', ""))
        .filter(|m| m.len() == 12);
    match mac {
        Some(m) => format!("metanode-{}", &m[6..]),
        None => "metanode".to_owned(),
    }
}

fn mount(
    ctx: &mut Context<'_>,
    source: &str,
    target: &str,
    fstype: &str,
    data: Option<&str>,
) -> std::io::Result<()> {
    ctx.sys().mkdir_all(Path::new(target))?;
    ctx.sys().mount(&MountRequest {
        source,
        target: Path::new(target),
        fstype,
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data,
    })
}

fn mount_data(ctx: &mut Context<'_>) -> HookResult {
    match disks::wait_for_partition(disks::DATA_PARTITION_NAME) {
        Some(dev) => {
            if !disks::has_ext4(&dev)? {
                ctx.log(&format!(
                    "formatting the data partition {} (first boot)",
                    dev.display()
                ));
                disks::format_ext4(&dev, disks::DATA_PARTITION_NAME)?;
            }
            mount(
                ctx,
                &dev.to_string_lossy(),
                DATA_MOUNT,
                "ext4",
                Some("errors=remount-ro"),
            )?;
            ctx.register_data_mount(DATA_MOUNT);
            ctx.log(&format!("data partition {} on {DATA_MOUNT}", dev.display()));
        }
        None => {
            ctx.log(&format!(
                "no partition named {}: the store lives in RAM and is lost at power-off",
                disks::DATA_PARTITION_NAME
            ));
            mount(ctx, "tmpfs", DATA_MOUNT, "tmpfs", Some("mode=0700"))?;
        }
    }
    Ok(())
}

fn mount_esp(ctx: &mut Context<'_>) -> Option<Esp> {
    let dev = disks::find_partition(
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        disks::ESP_PARTITION_NAME,
    )?;
    let mounted = mount(
        ctx,
        &dev.to_string_lossy(),
        ESP_MOUNT,
        "vfat",
        Some("umask=0077,shortname=mixed,utf8,errors=remount-ro"),
    );
    if let Err(e) = mounted {
        ctx.log(&format!(
            "error: mounting the EFI partition {}: {e}",
            dev.display()
        ));
        return None;
    }
    ctx.register_data_mount(ESP_MOUNT);
    match Esp::open(Path::new(ESP_MOUNT)) {
        Ok(esp) => Some(esp),
        Err(e) => {
            ctx.log(&format!(
                "error: the EFI partition has no slot directory: {e}"
            ));
            None
        }
    }
}

/// The bytes of the config to boot with: the active file, after finishing
/// any interrupted trial step and reverting a trial that expired while the
/// node was down; the first-boot default (written to disk) when there is
/// none. `on_disk` says whether the bytes are the active file's.
fn boot_config_bytes(ctx: &mut Context<'_>) -> (Vec<u8>, bool) {
    let dir = Path::new(CONFIG_DIR);
    if let Err(e) = std::fs::create_dir_all(dir) {
        ctx.log(&format!("error: creating {CONFIG_DIR}: {e}"));
    }
    if let Err(e) = config_try::recover(dir) {
        ctx.log(&format!("error: recovering the config trial state: {e}"));
    }
    if let Ok(TrialState::Expired { .. }) = config_try::check(dir, now_unix_s()) {
        match config_try::revert(dir) {
            Ok(_) => {
                ctx.log("config trial expired while the node was down: reverted");
                let _ = std::fs::write(dir.join(CONFIG_OUTCOME_FILE), "reverted\n");
            }
            Err(e) => ctx.log(&format!("error: reverting the expired config trial: {e}")),
        }
    }
    match config_try::read_active(dir) {
        Ok(Some(bytes)) => (bytes, true),
        Ok(None) => {
            let yaml = default_config_yaml(&default_node_name());
            ctx.log(&format!(
                "first boot: writing the default config to {}",
                config_path().display()
            ));
            let written = std::fs::write(config_path(), &yaml);
            if let Err(e) = &written {
                ctx.log(&format!("error: writing {}: {e}", config_path().display()));
            }
            (yaml.into_bytes(), written.is_ok())
        }
        Err(e) => {
            ctx.log(&format!("error: reading the node config: {e}"));
            (
                default_config_yaml(&default_node_name()).into_bytes(),
                false,
            )
        }
    }
}

/// The config in `bytes`, or the built-in default (with a loud error) when
/// they do not load.
fn parse_config(ctx: &mut Context<'_>, bytes: &[u8]) -> NodeConfig {
    match NodeConfig::from_yaml_bytes(bytes, &config_path().to_string_lossy()) {
        Ok(cfg) => cfg,
        Err(e) => {
            ctx.log(&format!(
                "error: {e}\nmetanode: running the built-in default config instead"
            ));
            let yaml = default_config_yaml(&default_node_name());
            // The default is generated by us and checked by a unit test.
            NodeConfig::from_yaml_str(&yaml, "built-in default")
                .unwrap_or_else(|e| panic!("built-in default config does not load: {e}"))
        }
    }
}

/// The network config: `metanode.net=` on the kernel command line wins
/// (so a console user can rescue a node), then the node config.
pub fn net_config(cfg: &NodeConfig, cmdline: &str) -> Result<NetConfig, String> {
    if let Some(over) = metanode_netcfg::from_cmdline(cmdline).map_err(|e| e.to_string())? {
        return Ok(over);
    }
    let n = &cfg.network;
    Ok(match n.mode {
        NetworkMode::Off => NetConfig::Off,
        NetworkMode::Dhcp => NetConfig::Dhcp {
            interface: n.interface.clone(),
        },
        NetworkMode::Static => {
            let (address, prefix_len) = n
                .address_and_prefix()
                .ok_or("network.address is required for static mode")?;
            NetConfig::Static {
                interface: n.interface.clone(),
                address,
                prefix_len,
                gateway: n.gateway,
                dns: n.dns.clone(),
            }
        }
    })
}

/// Live network state PID 1 keeps between config trials.
#[derive(Default)]
struct Network {
    applied: Option<NetConfig>,
    keeper: Option<metanode_netcfg::dhcp::KeeperHandle>,
    /// A config whose setup failed (no DHCP answer yet, link down): retried
    /// from the config tick so a node that booted before its router comes
    /// up gets an address without a reboot.
    failed: Option<(NetConfig, String)>,
    retry_at: Option<std::time::Instant>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("applied", &self.applied)
            .finish()
    }
}

impl Network {
    fn retry_if_due(&mut self, ctx: &mut Context<'_>) {
        let due = self.retry_at.is_some_and(|t| ctx.now() >= t);
        if let (true, Some((config, hostname))) = (due, self.failed.take()) {
            ctx.log("network: retrying the setup that failed");
            self.apply(ctx, config, &hostname, NETWORK_REAPPLY_TIMEOUT);
        }
    }

    fn apply(
        &mut self,
        ctx: &mut Context<'_>,
        config: NetConfig,
        hostname: &str,
        timeout: Duration,
    ) {
        if self.applied.as_ref() == Some(&config) {
            return;
        }
        if let Some(keeper) = self.keeper.take() {
            // Stopping joins the keeper thread, which may sit in a DHCP
            // exchange for up to a minute; PID 1's loop (watchdog, reaping,
            // power button) must not wait for that, so a helper thread does.
            std::thread::spawn(move || {
                let _ = keeper.stop();
            });
        }
        if let Some(old) = &self.applied
            && let Some(iface) = old.interface().map(str::to_owned).or_else(|| {
                metanode_netcfg::ethernet_interfaces()
                    .ok()
                    .and_then(|v| v.into_iter().next())
            })
        {
            let _ = metanode_netcfg::flush_addresses(&iface);
        }
        let mut options = metanode_netcfg::ConfigureOptions::new(timeout);
        options.resolv_conf = Some(PathBuf::from("/etc/resolv.conf"));
        options.hostname = Some(hostname.to_owned());
        match metanode_netcfg::configure_with(&config, &options) {
            Ok(Some(state)) => {
                ctx.log(&format!(
                    "network {}: {}/{}{}",
                    state.interface,
                    state.address,
                    state.prefix_len,
                    state
                        .gateway
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default()
                ));
                if let Some(lease) = state.lease.clone() {
                    let keeper = metanode_netcfg::dhcp::KeeperOptions {
                        resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
                        hostname: Some(hostname.to_owned()),
                        ..Default::default()
                    };
                    match metanode_netcfg::dhcp::spawn_lease_keeper(lease, keeper) {
                        Ok(handle) => self.keeper = Some(handle),
                        Err(e) => ctx.log(&format!("error: DHCP lease keeper: {e}")),
                    }
                }
                ctx.set_addresses(vec![InterfaceAddress {
                    ip: IpAddr::V4(state.address),
                    prefix_len: state.prefix_len,
                }]);
            }
            Ok(None) => ctx.log("network off: only loopback is up"),
            Err(e) => {
                ctx.log(&format!(
                    "error: network: {e}; retrying in {} s",
                    NETWORK_RETRY_INTERVAL.as_secs()
                ));
                self.applied = None;
                self.failed = Some((config, hostname.to_owned()));
                self.retry_at = Some(ctx.now() + NETWORK_RETRY_INTERVAL);
                return;
            }
        }
        self.applied = Some(config);
        self.failed = None;
        self.retry_at = None;
    }
}

fn readiness_target(listen: SocketAddr) -> (String, String) {
    let probe_ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let probe = SocketAddr::new(probe_ip, listen.port());
    (format!("http://{probe}/health"), format!("http://{listen}"))
}

/// The slot letter and the booted entry id from systemd-boot's variables;
/// `direct` when the kernel was started without the boot loader.
pub fn booted() -> (String, Option<String>) {
    let entry = metanode_slots::esp::booted_entry_from_efivars(Path::new(EFIVARS));
    let slot = entry
        .as_deref()
        .and_then(|id| EntryName::parse(&id.to_lowercase()))
        .map_or_else(|| "direct".to_owned(), |e| e.slot.letter().to_string());
    (slot, entry)
}

/// What a node config sets outside the agent: the hostname and the network.
fn apply_config(ctx: &mut Context<'_>, network: &mut Network, cfg: &NodeConfig, timeout: Duration) {
    if let Err(e) = ctx.sys().sethostname(&cfg.node.name) {
        ctx.log(&format!("error: hostname {}: {e}", cfg.node.name));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match net_config(cfg, &cmdline) {
        Ok(net) => network.apply(ctx, net, &cfg.node.name, timeout),
        Err(e) => ctx.log(&format!("error: network config: {e}")),
    }
}

fn before_services(
    ctx: &mut Context<'_>,
    state: &std::rc::Rc<std::cell::RefCell<Shared>>,
) -> HookResult {
    if let Err(e) = metanode_netcfg::loopback_up() {
        ctx.log(&format!("error: loopback: {e}"));
    }
    if let Err(e) = mount_data(ctx) {
        // Better a reachable node that says loudly it keeps nothing than a
        // dead one; the bound keeps the RAM store from eating the machine.
        ctx.log(&format!(
            "error: data partition: {e}\nmetanode: error: DEGRADED: nothing is persistent on this boot \
             (the store lives in a 256 MiB RAM file system)"
        ));
        if let Err(e) = mount(
            ctx,
            "tmpfs",
            DATA_MOUNT,
            "tmpfs",
            Some("mode=0700,size=256m"),
        ) {
            ctx.log(&format!("error: tmpfs on {DATA_MOUNT}: {e}"));
        }
    }
    let esp = mount_esp(ctx);
    let (slot, entry) = booted();
    ctx.set_slot(slot.clone());
    if let Some(entry) = &entry {
        ctx.log(&format!("booted slot {slot} ({entry})"));
    }
    let (bytes, on_disk) = boot_config_bytes(ctx);
    let cfg = parse_config(ctx, &bytes);
    let (probe, api_url) = readiness_target(cfg.api.listen);
    match HttpTarget::parse(&probe) {
        Ok(target) => ctx.set_readiness(target, api_url),
        Err(e) => ctx.log(&format!("error: readiness probe {probe}: {e}")),
    }
    let mut shared = state.borrow_mut();
    apply_config(ctx, &mut shared.network, &cfg, NETWORK_TIMEOUT);
    shared.esp = esp;
    shared.entry = entry;
    shared.loaded_config = on_disk.then_some(bytes);
    if let Ok(TrialState::Pending { deadline_unix_s }) =
        config_try::check(Path::new(CONFIG_DIR), now_unix_s())
    {
        shared.trial_announced = Some(deadline_unix_s);
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Shared {
    network: Network,
    esp: Option<Esp>,
    entry: Option<String>,
    /// The config file's bytes the running agent and network were set up
    /// from. A different active file (a new trial, a revert, a commit that
    /// raced the tick) means reload; comparing content rather than trial
    /// deadlines cannot miss a change.
    loaded_config: Option<Vec<u8>>,
    /// Deadline of the trial last announced on the console.
    trial_announced: Option<u64>,
    /// A revert failed: say so once, not every second.
    revert_failed: bool,
}

/// Called every second: revert a trial whose deadline passed, reload when
/// the active config file changed (restart the agent, re-apply hostname and
/// network), and retry a network setup that failed.
fn config_tick(
    ctx: &mut Context<'_>,
    state: &std::rc::Rc<std::cell::RefCell<Shared>>,
) -> HookResult {
    let dir = Path::new(CONFIG_DIR);
    let mut shared = state.borrow_mut();
    match config_try::check(dir, now_unix_s())? {
        TrialState::None => shared.trial_announced = None,
        TrialState::Pending { deadline_unix_s } => {
            if shared.trial_announced != Some(deadline_unix_s) {
                shared.trial_announced = Some(deadline_unix_s);
                let _ = std::fs::remove_file(dir.join(CONFIG_OUTCOME_FILE));
                ctx.log(&format!(
                    "config trial: applying; reverts at unix time {deadline_unix_s} unless committed"
                ));
            }
        }
        TrialState::Expired { .. } => match config_try::revert(dir) {
            Ok(_) => {
                std::fs::write(dir.join(CONFIG_OUTCOME_FILE), "reverted\n")?;
                shared.trial_announced = None;
                shared.revert_failed = false;
                ctx.log("config trial not committed in time: reverted to the previous config");
            }
            Err(e) => {
                if !shared.revert_failed {
                    shared.revert_failed = true;
                    ctx.log(&format!(
                        "error: reverting the expired config trial failed: {e}; the trial config stays \
                         live until this is fixed (console or reboot)"
                    ));
                }
                return Ok(());
            }
        },
    }
    let active = config_try::read_active(dir).ok().flatten();
    if let Some(bytes) = active.filter(|a| Some(a) != shared.loaded_config.as_ref()) {
        let cfg = parse_config(ctx, &bytes);
        shared.loaded_config = Some(bytes);
        apply_config(ctx, &mut shared.network, &cfg, NETWORK_REAPPLY_TIMEOUT);
        ctx.request_restart(AGENT_SERVICE);
    } else {
        shared.network.retry_if_due(ctx);
    }
    Ok(())
}

fn on_ready(ctx: &mut Context<'_>, state: &std::rc::Rc<std::cell::RefCell<Shared>>) -> HookResult {
    let shared = state.borrow();
    let (Some(esp), Some(entry)) = (&shared.esp, &shared.entry) else {
        return Ok(());
    };
    match esp.mark_booted_good(entry) {
        Ok(metanode_slots::esp::MarkGood::Renamed { from, to }) => {
            ctx.log(&format!("boot is good: {from} is now {to}"));
        }
        Ok(metanode_slots::esp::MarkGood::AlreadyGood { .. }) => {}
        Err(e) => ctx.log(&format!("error: marking the booted slot good: {e}")),
    }
    if let Ok(status) = esp.status(Some(entry))
        && let Some(report) = metanode_slots::update::rollback_report(&status)
    {
        ctx.log(&report.to_string());
    }
    Ok(())
}

fn on_not_ready(
    ctx: &mut Context<'_>,
    state: &std::rc::Rc<std::cell::RefCell<Shared>>,
) -> HookResult {
    let shared = state.borrow();
    let in_trial = shared
        .entry
        .as_deref()
        .and_then(|id| EntryName::parse(&id.to_lowercase()))
        .is_some_and(|e| e.counter.is_some());
    if in_trial {
        // Rebooting spends one of the trial's tries; when they run out
        // systemd-boot starts the known-good slot.
        ctx.request_shutdown(PowerAction::Reboot, "trial boot not ready");
    }
    Ok(())
}

/// Be PID 1. Never returns.
pub fn pid1_main(version: &str) -> ! {
    let agent = ServiceSpec::new(
        AGENT_SERVICE,
        vec![
            INIT.to_owned(),
            "agent".to_owned(),
            "--config".to_owned(),
            config_path().to_string_lossy().into_owned(),
            "--appliance".to_owned(),
        ],
        Restart::Always,
    )
    .with_env("PATH", "/nonexistent")
    .with_env("RUST_BACKTRACE", "1")
    // The serial console is not a colour terminal.
    .with_env("NO_COLOR", "1");
    let (probe, api_url) = readiness_target(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        DEFAULT_API_PORT,
    ));
    let target = match HttpTarget::parse(&probe) {
        Ok(t) => t,
        Err(e) => panic!("built-in readiness URL {probe} does not parse: {e}"),
    };
    let mut options = Options::new(
        version,
        "metanode",
        SYSCTL_POLICY,
        vec![agent],
        ReadinessOptions::new(target, api_url),
    );
    let state = std::rc::Rc::new(std::cell::RefCell::new(Shared::default()));
    let (s1, s2, s3, s4) = (state.clone(), state.clone(), state.clone(), state);
    options.hooks = Hooks {
        before_services: Box::new(move |ctx| before_services(ctx, &s1)),
        on_ready: Box::new(move |ctx| on_ready(ctx, &s2)),
        on_not_ready: Box::new(move |ctx| on_not_ready(ctx, &s3)),
        config_tick: Box::new(move |ctx| config_tick(ctx, &s4)),
    };
    metanode_init::run(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_loads_and_listens_everywhere() {
        let cfg = NodeConfig::from_yaml_str(&default_config_yaml("metanode-abcdef"), "t").unwrap();
        assert_eq!(cfg.node.name, "metanode-abcdef");
        assert_eq!(cfg.api.listen.port(), DEFAULT_API_PORT);
        assert!(cfg.api.listen.ip().is_unspecified());
        assert_eq!(cfg.node.data_dir, Path::new(NODE_DIR));
        assert_eq!(cfg.network.mode, NetworkMode::Dhcp);
        assert_eq!(cfg.store.segment_size_bytes_max, DEFAULT_SEGMENT_SIZE_BYTES);
    }

    #[test]
    fn readiness_probes_loopback_for_a_wildcard_listener() {
        let (probe, url) = readiness_target("0.0.0.0:7878".parse().unwrap());
        assert_eq!(probe, "http://127.0.0.1:7878/health");
        assert_eq!(url, "http://0.0.0.0:7878");
        let (probe, _) = readiness_target("10.0.2.15:9000".parse().unwrap());
        assert_eq!(probe, "http://10.0.2.15:9000/health");
    }

    #[test]
    fn the_command_line_overrides_the_config_network() {
        let cfg = NodeConfig::from_yaml_str(&default_config_yaml("n"), "t").unwrap();
        assert_eq!(
            net_config(&cfg, "console=ttyS0").unwrap(),
            NetConfig::Dhcp { interface: None }
        );
        assert_eq!(
            net_config(&cfg, "quiet metanode.net=off").unwrap(),
            NetConfig::Off
        );
        assert!(net_config(&cfg, "metanode.net=static:bogus").is_err());
    }
}
