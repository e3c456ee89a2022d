//! PID 1: boot the appliance, supervise, and shut down.
//!
//! Boot order: `reboot(CAD_OFF)` → mounts (+ cgroup controllers) → console on fds 0-2 → power buttons
//! → sysctl apply + verify → hostname → `before_services` hook → watchdog → services → main loop.
//! The main loop waits on signals, power buttons and a timeout (the timer) and, every turn, reaps
//! children, runs the supervisor's timers, feeds the watchdog, probes readiness and calls
//! `config_tick` once a second.
//!
//! PID 1 never stops on an error: each one is printed as `metanode: error: ...` and boot goes on,
//! since a running node with a loud error can be reached and fixed, and a dead PID 1 panics the
//! kernel. A failed sysctl policy is also flagged on the ready line (`sysctl=FAILED`).

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::constants::{
    CONFIG_TICK_INTERVAL, DATA_MOUNTS_COUNT_MAX, HOSTNAME_BYTES_MAX, LOOP_ERROR_PAUSE,
    LOOP_WAIT_MAX, READINESS_DEADLINE_DEFAULT,
};
use crate::events::{EventSource, InitEvent, LinuxEvents, SleepEvents};
use crate::mounts;
use crate::power::{self, PowerAction, PowerRequest};
use crate::readiness::{self, HttpTarget, InterfaceAddress, Readiness, ReadinessStep, ReadyInfo};
use crate::runtime::{execute, reap};
use crate::shutdown::{ShutdownReport, run_shutdown};
use crate::supervisor::{ServiceSpec, Supervisor};
use crate::sys::linux::LinuxSys;
use crate::sys::{InitSys, RebootCmd, Signal, say, say_error};
use crate::sysctl::SysctlPolicy;
use crate::watchdog::{Watchdog, WatchdogOptions};

/// What a hook returns; any error type converts (`anyhow::Error` included, via `.into()`).
pub type HookResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
/// A hook called once.
pub type OnceHook = Box<dyn FnOnce(&mut Context<'_>) -> HookResult>;
/// A hook called repeatedly.
pub type RepeatHook = Box<dyn FnMut(&mut Context<'_>) -> HookResult>;

/// The binary's code run by PID 1 at fixed points. A hook error is printed and PID 1 goes on.
pub struct Hooks {
    /// After mounts, sysctls and hostname, before the watchdog and services: mount the data
    /// partition (and `register_data_mount` it), configure the network, `set_slot`/`set_addresses`.
    pub before_services: OnceHook,
    /// The readiness probe got 200. Called before the ready line is printed, so it can still
    /// update slot and addresses (and commit a trial config).
    pub on_ready: OnceHook,
    /// The deadline passed without a 200 (a trial boot would `request_shutdown(Reboot, ..)` here).
    /// Probing goes on: if a 200 comes later, `on_ready` and the ready line still follow.
    pub on_not_ready: OnceHook,
    /// Every [`CONFIG_TICK_INTERVAL`] from the main loop (config-try expiry, address refresh).
    pub config_tick: RepeatHook,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            before_services: Box::new(|_| Ok(())),
            on_ready: Box::new(|_| Ok(())),
            on_not_ready: Box::new(|_| Ok(())),
            config_tick: Box::new(|_| Ok(())),
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hooks { .. }")
    }
}

/// The readiness probe and the API address announced on the ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessOptions {
    /// Probed every 100 ms, e.g. `http://127.0.0.1:8080/health`.
    pub target: HttpTarget,
    /// Printed as `api=` on the ready line.
    pub api_url: String,
    /// `on_not_ready` runs when no 200 came by then (counted from when services start); at most
    /// [`crate::constants::READINESS_DEADLINE_MAX`].
    pub deadline: Duration,
}

impl ReadinessOptions {
    /// `deadline` = [`READINESS_DEADLINE_DEFAULT`] (120 s).
    pub fn new(target: HttpTarget, api_url: impl Into<String>) -> Self {
        Self {
            target,
            api_url: api_url.into(),
            deadline: READINESS_DEADLINE_DEFAULT,
        }
    }
}

/// Everything PID 1 needs from the binary.
#[derive(Debug)]
pub struct Options {
    /// Printed on the ready line (`version=`).
    pub version: String,
    /// Set with sethostname(2); at most 64 bytes of `[A-Za-z0-9-]` labels separated by `.`.
    pub hostname: String,
    /// The sysctl policy text (`include_str!("appliance/sysctl.conf")`).
    pub sysctl_policy: String,
    /// The supervised services, started in this order.
    pub services: Vec<ServiceSpec>,
    pub readiness: ReadinessOptions,
    /// Default: /dev/watchdog, 30 s.
    pub watchdog: WatchdogOptions,
    /// Scanned for power buttons. Default: /dev/input.
    pub input_dir: PathBuf,
    pub hooks: Hooks,
}

impl Options {
    /// Options with the default watchdog, input directory and no-op hooks.
    pub fn new(
        version: impl Into<String>,
        hostname: impl Into<String>,
        sysctl_policy: impl Into<String>,
        services: Vec<ServiceSpec>,
        readiness: ReadinessOptions,
    ) -> Self {
        Self {
            version: version.into(),
            hostname: hostname.into(),
            sysctl_policy: sysctl_policy.into(),
            services,
            readiness,
            watchdog: WatchdogOptions::default(),
            input_dir: PathBuf::from("/dev/input"),
            hooks: Hooks::default(),
        }
    }
}

/// State the hooks can read and change.
#[derive(Debug)]
struct Shared {
    data_mounts: Vec<PathBuf>,
    slot: String,
    addresses: Vec<InterfaceAddress>,
    restart_requests: Vec<String>,
    shutdown_request: Option<PowerRequest>,
    sysctl_ok: bool,
    /// Set by a hook once the API's address is known (it comes from the node
    /// config on the data partition, which is mounted in `before_services`).
    readiness_override: Option<(HttpTarget, String)>,
}

/// What a hook gets: the kernel seam and requests to PID 1.
pub struct Context<'a> {
    sys: &'a mut dyn InitSys,
    shared: &'a mut Shared,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The kernel seam (mount the data partition through it so tests can fake it).
    pub fn sys(&mut self) -> &mut dyn InitSys {
        self.sys
    }

    /// Print `metanode: <message>`.
    pub fn log(&mut self, message: &str) {
        say(self.sys, message);
    }

    pub fn now(&self) -> Instant {
        self.sys.now()
    }

    /// Unmount `target` at shutdown (in reverse registration order, after services stopped).
    pub fn register_data_mount(&mut self, target: impl Into<PathBuf>) {
        let target = target.into();
        if self.shared.data_mounts.len() >= DATA_MOUNTS_COUNT_MAX {
            say_error(
                self.sys,
                format!(
                    "more than {DATA_MOUNTS_COUNT_MAX} data mounts; {} not registered",
                    target.display()
                ),
            );
            return;
        }
        self.shared.data_mounts.push(target);
    }

    /// The slot for the ready line (`slot=`); `unknown` until set.
    pub fn set_slot(&mut self, slot: impl Into<String>) {
        self.shared.slot = slot.into();
    }

    /// The addresses for the ready line.
    pub fn set_addresses(&mut self, addresses: Vec<InterfaceAddress>) {
        self.shared.addresses = addresses;
    }

    /// Restart a service (SIGTERM, SIGKILL after 10 s, start again at once). Handled by the main
    /// loop right after the hook returns; an unknown name is logged.
    pub fn request_restart(&mut self, service: &str) {
        self.shared.restart_requests.push(service.to_owned());
    }

    /// Shut down (ordered, see [`crate::shutdown`]) as soon as the hook returns. The first
    /// request wins.
    pub fn request_shutdown(&mut self, action: PowerAction, reason: &str) {
        if self.shared.shutdown_request.is_none() {
            self.shared.shutdown_request = Some(PowerRequest {
                action,
                reason: reason.to_owned(),
            });
        }
    }

    /// Probe `target` for readiness instead of the one in [`Options`], and
    /// print `api_url` in the ready line.
    pub fn set_readiness(&mut self, target: HttpTarget, api_url: impl Into<String>) {
        self.shared.readiness_override = Some((target, api_url.into()));
    }

    /// Whether the sysctl policy applied and verified.
    pub fn sysctl_ok(&self) -> bool {
        self.shared.sysctl_ok
    }
}

fn call_hook(
    sys: &mut dyn InitSys,
    shared: &mut Shared,
    name: &str,
    hook: impl FnOnce(&mut Context<'_>) -> HookResult,
) {
    let result = hook(&mut Context {
        sys: &mut *sys,
        shared,
    });
    if let Err(e) = result {
        say_error(sys, format!("{name}: {e}"));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("hostname `{name}` is empty or longer than {HOSTNAME_BYTES_MAX} bytes")]
    Length { name: String },
    #[error(
        "hostname `{name}` has a bad label (labels are 1-63 of A-Z a-z 0-9 -, not starting or ending with -)"
    )]
    BadLabel { name: String },
}

/// RFC 1123 host name check.
pub fn validate_hostname(name: &str) -> Result<(), HostnameError> {
    if name.is_empty() || name.len() > HOSTNAME_BYTES_MAX {
        return Err(HostnameError::Length {
            name: name.to_owned(),
        });
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(HostnameError::BadLabel {
            name: name.to_owned(),
        })
    }
}

/// Apply and verify the sysctl policy; print every problem. Returns whether all was well.
fn apply_sysctls(sys: &mut dyn InitSys, text: &str) -> bool {
    let policy = match SysctlPolicy::parse(text) {
        Ok(policy) => policy,
        Err(e) => {
            say_error(sys, e);
            return false;
        }
    };
    let mut ok = true;
    if let Err(e) = policy.apply(sys) {
        ok = false;
        for failure in &e.failures {
            say_error(sys, format!("sysctl {failure}"));
        }
    }
    match policy.verify(sys) {
        Ok(report) if ok => say(
            sys,
            format!(
                "sysctl: {} keys applied and verified",
                report.verified_count
            ),
        ),
        Ok(_) => {}
        Err(e) => {
            ok = false;
            for mismatch in &e.mismatches {
                say_error(sys, format!("sysctl {mismatch}"));
            }
        }
    }
    if !ok {
        say_error(
            sys,
            "SYSCTL POLICY NOT IN FORCE; the node runs on, and its ready line says sysctl=FAILED",
        );
    }
    ok
}

/// What `boot` needs from the options.
struct BootParams<'a> {
    version: &'a str,
    hostname: &'a str,
    sysctl_policy: &'a str,
    input_dir: &'a std::path::Path,
}

/// The boot steps before the hook; returns whether the sysctl policy is in force.
fn boot(sys: &mut dyn InitSys, events: &mut dyn EventSource, params: &BootParams<'_>) -> bool {
    // Until this, Ctrl-Alt-Del reboots at once without a clean shutdown.
    if let Err(e) = sys.reboot(RebootCmd::CadOff) {
        say_error(sys, format!("reboot(CAD_OFF): {e}"));
    }
    let mounted = mounts::mount_all(sys);
    // Before any message: fds 0-2 may not exist until /dev is mounted.
    if let Err(e) = sys.attach_console() {
        say_error(sys, format!("cannot attach the console: {e}"));
    }
    say(sys, format!("pid 1 starting, version {}", params.version));
    match mounted {
        Ok(report) if report.skipped.is_empty() => {
            say(sys, format!("mounted {} filesystems", report.mounted.len()))
        }
        Ok(report) => say(
            sys,
            format!(
                "mounted {} filesystems (skipped {})",
                report.mounted.len(),
                report.skipped.join(", ")
            ),
        ),
        Err(e) => say_error(sys, e),
    }
    match mounts::enable_cgroup_controllers(sys) {
        Ok(report) if report.missing.is_empty() => {}
        Ok(report) => say(
            sys,
            format!(
                "cgroup: controllers not offered by the kernel: {}",
                report.missing.join(" ")
            ),
        ),
        Err(e) => say_error(sys, format!("cgroup: {e}")),
    }
    match events.add_power_buttons(params.input_dir) {
        Ok(buttons) if buttons.is_empty() => say(sys, "no power button found"),
        Ok(buttons) => {
            let names: Vec<String> = buttons.iter().map(|b| b.display().to_string()).collect();
            say(sys, format!("power button: {}", names.join(", ")));
        }
        Err(e) => say_error(
            sys,
            format!(
                "scanning {} for power buttons: {e}",
                params.input_dir.display()
            ),
        ),
    }
    let sysctl_ok = apply_sysctls(sys, params.sysctl_policy);
    match validate_hostname(params.hostname) {
        Ok(()) => {
            if let Err(e) = sys.sethostname(params.hostname) {
                say_error(sys, format!("sethostname({}): {e}", params.hostname));
            }
        }
        Err(e) => say_error(sys, e),
    }
    sysctl_ok
}

/// Run PID 1 on the given kernel seam and event source. Returns after the shutdown's final
/// `reboot(2)` returned, which on a real kernel means it failed (the fake always returns).
pub fn run_with(
    sys: &mut dyn InitSys,
    events: &mut dyn EventSource,
    options: Options,
) -> ShutdownReport {
    let Options {
        version,
        hostname,
        sysctl_policy,
        services,
        readiness: readiness_options,
        watchdog: watchdog_options,
        input_dir,
        hooks:
            Hooks {
                before_services,
                on_ready,
                on_not_ready,
                mut config_tick,
            },
    } = options;
    let params = BootParams {
        version: &version,
        hostname: &hostname,
        sysctl_policy: &sysctl_policy,
        input_dir: &input_dir,
    };
    let sysctl_ok = boot(sys, events, &params);
    let mut shared = Shared {
        data_mounts: Vec::new(),
        slot: "unknown".to_owned(),
        addresses: Vec::new(),
        restart_requests: Vec::new(),
        shutdown_request: None,
        sysctl_ok,
        readiness_override: None,
    };
    let mut sup = match Supervisor::new(services) {
        Ok(sup) => sup,
        Err(e) => {
            say_error(sys, format!("services: {e}; starting none"));
            Supervisor::empty()
        }
    };

    call_hook(sys, &mut shared, "before_services", before_services);
    let mut readiness_options = readiness_options;
    if let Some((target, api_url)) = shared.readiness_override.take() {
        readiness_options.target = target;
        readiness_options.api_url = api_url;
    }
    let mut watchdog = Watchdog::off();
    if shared.shutdown_request.is_none() {
        watchdog = Watchdog::start(sys, &watchdog_options);
        let now = sys.now();
        let effects = sup.start(now);
        execute(sys, &mut sup, effects, now);
    }

    let mut readiness = Readiness::new(sys.now(), readiness_options.deadline);
    let mut on_ready = Some(on_ready);
    let mut on_not_ready = Some(on_not_ready);
    let mut next_config_tick = sys.now() + CONFIG_TICK_INTERVAL;

    let request = loop {
        if let Some(request) = shared.shutdown_request.take() {
            break request;
        }
        let now = sys.now();
        for name in std::mem::take(&mut shared.restart_requests) {
            match sup.restart(&name, now) {
                Ok(effects) => execute(sys, &mut sup, effects, now),
                Err(e) => say_error(sys, format!("restart request: {e}")),
            }
        }
        let effects = sup.tick(now);
        execute(sys, &mut sup, effects, now);
        watchdog.pet_if_due(sys);

        let target = &readiness_options.target;
        match readiness.step(now, || sys.http_get(target)) {
            ReadinessStep::Ready => {
                if let Some(hook) = on_ready.take() {
                    call_hook(sys, &mut shared, "on_ready", hook);
                }
                let line = readiness::ready_line(&ReadyInfo {
                    version: &version,
                    slot: &shared.slot,
                    addresses: &shared.addresses,
                    api_url: &readiness_options.api_url,
                    sysctl_ok: shared.sysctl_ok,
                });
                sys.console(&line);
            }
            ReadinessStep::NotReady { last } => {
                say_error(
                    sys,
                    format!(
                        "not ready after {:?} ({target}: {last})",
                        readiness_options.deadline
                    ),
                );
                if let Some(hook) = on_not_ready.take() {
                    call_hook(sys, &mut shared, "on_not_ready", hook);
                }
            }
            ReadinessStep::Idle | ReadinessStep::Pending => {}
        }

        let now = sys.now();
        if now >= next_config_tick {
            next_config_tick = now + CONFIG_TICK_INTERVAL;
            call_hook(sys, &mut shared, "config_tick", &mut config_tick);
        }
        if shared.shutdown_request.is_some() || !shared.restart_requests.is_empty() {
            continue;
        }

        let now = sys.now();
        let deadlines = [
            sup.next_deadline(),
            watchdog.next_due(),
            readiness.next_due(),
            Some(next_config_tick),
        ];
        let timeout = deadlines
            .into_iter()
            .flatten()
            .map(|d| d.saturating_duration_since(now))
            .min()
            .unwrap_or(LOOP_WAIT_MAX)
            .min(LOOP_WAIT_MAX);
        match events.wait(timeout) {
            Ok(list) => {
                for event in list {
                    handle_event(sys, &mut shared, event);
                }
            }
            Err(e) => {
                say_error(sys, format!("event wait: {e}"));
                sys.sleep(LOOP_ERROR_PAUSE);
            }
        }
        // Every turn, not only on SIGCHLD: signalfd coalesces signals, and a cheap extra
        // waitpid beats a zombie left behind.
        reap(sys, &mut sup);
    };
    run_shutdown(sys, &mut sup, &mut watchdog, &shared.data_mounts, &request)
}

fn handle_event(sys: &mut dyn InitSys, shared: &mut Shared, event: InitEvent) {
    match event {
        InitEvent::Signal(Signal::SIGCHLD) => {}
        InitEvent::Signal(signal) => match power::signal_request(signal) {
            Some(request) => {
                if shared.shutdown_request.is_none() {
                    shared.shutdown_request = Some(request);
                }
            }
            None => say(sys, format!("ignoring {}", signal.as_str())),
        },
        InitEvent::PowerKey { device } => {
            if shared.shutdown_request.is_none() {
                shared.shutdown_request = Some(PowerRequest {
                    action: PowerAction::PowerOff,
                    reason: format!("power button {}", device.display()),
                });
            }
        }
        InitEvent::Note(note) => say(sys, note),
    }
}

/// Print the panic on the console and park the thread forever.
///
/// Why not exit or abort: PID 1 exiting panics the kernel ("Attempted to kill init"), whose
/// backtrace buries our message and skips any chance to read it. Parking keeps the message on the
/// console and stops feeding the watchdog, so the NOWAYOUT watchdog reboots the node within its
/// timeout. Without a watchdog device the node stays parked until someone power-cycles it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!(
            "metanode: panic: {info}\nmetanode: PID 1 parked; the watchdog reboots the node\n"
        );
        let _ = std::io::stderr().lock().write_all(message.as_bytes());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }));
}

/// Be PID 1. Never returns. Refuses (exit status 2) when the process is not PID 1, so running it
/// by mistake on a workstation mounts and reboots nothing.
pub fn run(options: Options) -> ! {
    if std::process::id() != 1 {
        let _ = writeln!(
            std::io::stderr(),
            "metanode: error: pid1::run called in pid {}, not 1; refusing",
            std::process::id()
        );
        std::process::exit(2);
    }
    install_panic_hook();
    crate::sys::linux::reserve_std_fds();
    // Signals are blocked before anything else runs, so none is lost to the default disposition.
    let mut sys = LinuxSys::new();
    let mut linux_events;
    let mut sleep_events = SleepEvents;
    let events: &mut dyn EventSource = match LinuxEvents::new() {
        Ok(events) => {
            linux_events = events;
            &mut linux_events
        }
        Err(e) => {
            say_error(
                &mut sys,
                format!("signalfd/epoll: {e}; running without signals or power button"),
            );
            &mut sleep_events
        }
    };
    let report = run_with(&mut sys, events, options);
    say_error(
        &mut sys,
        format!(
            "reboot failed ({}); PID 1 parked, the watchdog reboots the node",
            report.reboot_error.as_deref().unwrap_or("unknown")
        ),
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::supervisor::Restart;
    use crate::sys::fake::{Call, ChildPlan, FakeSys};
    use crate::sys::{ExitStatus, MountRequest, MsFlags};

    const POLICY: &str = "kernel.sysrq = 0  # no SysRq\nkernel.panic = -1  # reboot on panic\n";

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A fake kernel with /proc/sys keys of `POLICY`, cgroup2 files, a watchdog and a data disk.
    fn fake_kernel() -> FakeSys {
        let fake = FakeSys::new();
        fake.add_file("/proc/sys/kernel/sysrq", "1\n");
        fake.add_file("/proc/sys/kernel/panic", "0\n");
        fake.add_file("/sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n");
        fake.add_file("/sys/fs/cgroup/cgroup.subtree_control", "");
        {
            let mut state = fake.state();
            state.watchdog_device = Some("/dev/watchdog".into());
            state.watchdog_timeout_s = Some(30);
            state.waits_max = 10_000;
        }
        fake
    }

    fn options(hooks: Hooks) -> Options {
        let target = HttpTarget::parse("http://127.0.0.1:8080/health").expect("url");
        let services = vec![ServiceSpec::new(
            "agent",
            vec![
                "/init".into(),
                "agent".into(),
                "--config".into(),
                "/var/lib/metanode/config.yaml".into(),
            ],
            Restart::Always,
        )];
        let mut options = Options::new(
            "0.1.0",
            "metanode-1",
            POLICY,
            services,
            ReadinessOptions::new(target, "http://10.0.2.15:8080"),
        );
        options.hooks = hooks;
        options
    }

    type Journal = Rc<RefCell<Vec<String>>>;

    /// Hooks that record when they ran; `before_services` mounts and registers a data partition
    /// and sets the slot and addresses, like the binary will.
    fn recording_hooks(journal: &Journal) -> Hooks {
        let (j1, j2, j3, j4) = (
            journal.clone(),
            journal.clone(),
            journal.clone(),
            journal.clone(),
        );
        Hooks {
            before_services: Box::new(move |ctx| {
                j1.borrow_mut().push("before_services".into());
                ctx.sys().mkdir_all("/var/lib/metanode".as_ref())?;
                ctx.sys().mount(&MountRequest {
                    source: "/dev/vda3",
                    target: "/var/lib/metanode".as_ref(),
                    fstype: "ext4",
                    flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    data: None,
                })?;
                ctx.register_data_mount("/var/lib/metanode");
                ctx.set_slot("a");
                ctx.set_addresses(vec![InterfaceAddress {
                    ip: "10.0.2.15".parse()?,
                    prefix_len: 24,
                }]);
                Ok(())
            }),
            on_ready: Box::new(move |ctx| {
                j2.borrow_mut()
                    .push(format!("on_ready sysctl_ok={}", ctx.sysctl_ok()));
                Ok(())
            }),
            on_not_ready: Box::new(move |ctx| {
                j3.borrow_mut().push("on_not_ready".into());
                ctx.request_shutdown(PowerAction::Reboot, "trial boot not ready");
                Ok(())
            }),
            config_tick: Box::new(move |_| {
                j4.borrow_mut().push("config_tick".into());
                Ok(())
            }),
        }
    }

    fn index_of(calls: &[Call], wanted: impl Fn(&Call) -> bool) -> usize {
        calls.iter().position(wanted).expect("call present")
    }

    #[test]
    fn boots_supervises_announces_and_shuts_down_in_order() {
        let mut fake = fake_kernel();
        {
            let mut state = fake.state();
            // The agent crashes after 500 ms once, then runs.
            state
                .plans
                .push_back(ChildPlan::ExitAfter(ms(500), ExitStatus::Exited(1)));
            state.http_ready_at = Some(state.start + secs(2));
            let at = state.start + secs(25);
            state
                .scripted_events
                .push((at, InitEvent::Signal(Signal::SIGTERM)));
        }
        let journal: Journal = Rc::default();
        let mut events = fake.events();
        let report = run_with(&mut fake, &mut events, options(recording_hooks(&journal)));

        let calls = fake.calls();
        // Boot order.
        assert_eq!(calls.first(), Some(&Call::Reboot(RebootCmd::CadOff)));
        let proc_mount = index_of(
            &calls,
            |c| matches!(c, Call::Mount { fstype, .. } if fstype == "proc"),
        );
        let attach = index_of(&calls, |c| *c == Call::AttachConsole);
        let sysctl = index_of(
            &calls,
            |c| matches!(c, Call::Write { path, .. } if path.starts_with("/proc/sys")),
        );
        let hostname = index_of(&calls, |c| *c == Call::Sethostname("metanode-1".into()));
        let data_mount = index_of(
            &calls,
            |c| matches!(c, Call::Mount { fstype, .. } if fstype == "ext4"),
        );
        let watchdog = index_of(&calls, |c| matches!(c, Call::WatchdogOpen { .. }));
        let first_spawn = index_of(&calls, |c| matches!(c, Call::Spawn { .. }));
        assert!(
            proc_mount < attach && attach < sysctl && sysctl < hostname,
            "{calls:#?}"
        );
        assert!(
            hostname < data_mount && data_mount < watchdog && watchdog < first_spawn,
            "{calls:#?}"
        );
        assert_eq!(fake.file("/proc/sys/kernel/panic").as_deref(), Some("-1"));
        assert_eq!(
            fake.file("/sys/fs/cgroup/cgroup.subtree_control")
                .as_deref(),
            Some("+cpu +memory +pids +io")
        );

        // The crash was logged and the agent restarted; the ready line came once, after on_ready.
        let lines = fake.console_lines();
        assert!(
            lines.contains(
                &"metanode: service agent exited (exit status 1) after 500ms; restarting in 200ms"
                    .into()
            ),
            "{lines:#?}"
        );
        let spawns: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::Spawn { .. }))
            .collect();
        assert_eq!(spawns.len(), 2);
        let ready: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("metanode: ready"))
            .collect();
        assert_eq!(
            ready,
            vec![
                "metanode: ready version=0.1.0 slot=a addresses=10.0.2.15/24 api=http://10.0.2.15:8080"
            ]
        );
        assert!(lines.contains(&"metanode: sysctl: 2 keys applied and verified".into()));
        assert!(
            lines.contains(
                &"metanode: cgroup: controllers not offered by the kernel: cpuset".into()
            )
        );
        assert!(
            lines.iter().all(|l| l.starts_with("metanode: ")),
            "{lines:#?}"
        );

        // Hooks: before_services first, on_ready once, config_tick each second until SIGTERM at 25 s.
        let journal = journal.borrow().clone();
        assert_eq!(journal.first().map(String::as_str), Some("before_services"));
        assert_eq!(
            journal
                .iter()
                .filter(|e| *e == "on_ready sysctl_ok=true")
                .count(),
            1
        );
        assert_eq!(journal.iter().filter(|e| *e == "config_tick").count(), 24);
        assert!(!journal.contains(&"on_not_ready".to_owned()));

        // Shutdown: reason, SIGTERM to the agent, unmount the data partition, reboot last.
        let shutting = index_of(&calls, |c| {
            *c == Call::Console("metanode: shutting down (SIGTERM)".into())
        });
        let term = index_of(&calls, |c| {
            *c == Call::Kill {
                pid: 101,
                signal: Signal::SIGTERM,
            }
        });
        let umount = index_of(&calls, |c| {
            *c == Call::Umount {
                target: "/var/lib/metanode".into(),
                lazy: false,
            }
        });
        assert!(shutting < term && term < umount, "{calls:#?}");
        assert_eq!(calls.last(), Some(&Call::Reboot(RebootCmd::Restart)));
        assert_eq!(report.unmounted, vec![PathBuf::from("/var/lib/metanode")]);
        // The watchdog (30 s) was fed every 10 s from the main loop.
        let start = fake.at(Duration::ZERO);
        let fed: Vec<Duration> = fake
            .state()
            .watchdog_keepalives
            .iter()
            .map(|t| *t - start)
            .collect();
        assert_eq!(fed, vec![secs(0), secs(10), secs(20)]);
        assert_eq!(fake.elapsed(), secs(25));
    }

    #[test]
    fn sysctl_failure_is_loud_flags_the_ready_line_and_not_ready_reboots() {
        let mut fake = fake_kernel();
        // The kernel ignores the sysrq write, and has no kernel.panic at all.
        fake.state()
            .sticky_files
            .insert("/proc/sys/kernel/sysrq".into(), "1\n".into());
        fake.state()
            .files
            .remove(std::path::Path::new("/proc/sys/kernel/panic"));
        let journal: Journal = Rc::default();
        let mut events = fake.events();
        let mut opts = options(recording_hooks(&journal));
        opts.readiness.deadline = secs(3);
        run_with(&mut fake, &mut events, opts);
        let lines = fake.console_lines();
        for expected in [
            "metanode: error: sysctl kernel.panic: missing in the kernel (wanted `-1`)",
            "metanode: error: sysctl kernel.sysrq: wanted `0`, got `1`",
            "metanode: error: sysctl kernel.panic: wanted `-1`, got: missing in the kernel",
            "metanode: error: SYSCTL POLICY NOT IN FORCE; the node runs on, and its ready line says sysctl=FAILED",
            "metanode: shutting down (trial boot not ready)",
        ] {
            assert!(
                lines.contains(&expected.to_owned()),
                "missing {expected:?} in {lines:#?}"
            );
        }
        let not_ready = lines
            .iter()
            .find(|l| l.contains("not ready after"))
            .expect("not-ready line");
        assert!(
            not_ready.starts_with(
                "metanode: error: not ready after 3s (http://127.0.0.1:8080/health: connect:"
            ),
            "{not_ready}"
        );
        assert_eq!(
            journal
                .borrow()
                .iter()
                .filter(|e| *e == "on_not_ready")
                .count(),
            1
        );
        assert_eq!(fake.calls().last(), Some(&Call::Reboot(RebootCmd::Restart)));
        // The ready path still works with the failure flagged (a second run, ready this time).
        let mut fake = fake_kernel();
        fake.state()
            .sticky_files
            .insert("/proc/sys/kernel/sysrq".into(), "1\n".into());
        {
            let mut state = fake.state();
            state.http_ready_at = Some(state.start);
            let at = state.start + secs(1);
            state
                .scripted_events
                .push((at, InitEvent::Signal(Signal::SIGUSR2)));
        }
        let journal: Journal = Rc::default();
        let mut events = fake.events();
        run_with(&mut fake, &mut events, options(recording_hooks(&journal)));
        let lines = fake.console_lines();
        assert!(lines.contains(
            &"metanode: ready version=0.1.0 slot=a addresses=10.0.2.15/24 api=http://10.0.2.15:8080 sysctl=FAILED"
                .to_owned()
        ));
        assert!(
            journal
                .borrow()
                .contains(&"on_ready sysctl_ok=false".to_owned())
        );
        assert_eq!(
            fake.calls().last(),
            Some(&Call::Reboot(RebootCmd::PowerOff))
        );
    }

    #[test]
    fn power_button_powers_off_and_sigusr1_halts() {
        for (event, command, reason) in [
            (
                InitEvent::PowerKey {
                    device: "/dev/input/event0".into(),
                },
                RebootCmd::PowerOff,
                "metanode: shutting down (power button /dev/input/event0)",
            ),
            (
                InitEvent::Signal(Signal::SIGUSR1),
                RebootCmd::Halt,
                "metanode: shutting down (SIGUSR1)",
            ),
            (
                InitEvent::Signal(Signal::SIGINT),
                RebootCmd::Restart,
                "metanode: shutting down (SIGINT (ctrl-alt-del))",
            ),
        ] {
            let mut fake = fake_kernel();
            {
                let mut state = fake.state();
                state.power_buttons = vec!["/dev/input/event0".into()];
                let at = state.start + ms(1500);
                state
                    .scripted_events
                    .push((at, InitEvent::Signal(Signal::SIGHUP)));
                state.scripted_events.push((at, event));
            }
            let mut events = fake.events();
            run_with(&mut fake, &mut events, options(Hooks::default()));
            let lines = fake.console_lines();
            assert!(lines.contains(&"metanode: power button: /dev/input/event0".to_owned()));
            assert!(lines.contains(&"metanode: ignoring SIGHUP".to_owned()));
            assert!(lines.contains(&reason.to_owned()), "{lines:#?}");
            assert_eq!(fake.calls().last(), Some(&Call::Reboot(command)));
        }
    }

    #[test]
    fn hook_errors_are_printed_and_restart_requests_are_served() {
        let mut fake = fake_kernel();
        {
            let mut state = fake.state();
            let at = state.start + ms(3500);
            state
                .scripted_events
                .push((at, InitEvent::Signal(Signal::SIGTERM)));
        }
        let ticks = Rc::new(RefCell::new(0u32));
        let counter = ticks.clone();
        let hooks = Hooks {
            before_services: Box::new(|_| Err("data partition /dev/vda3: no such device".into())),
            config_tick: Box::new(move |ctx| {
                *counter.borrow_mut() += 1;
                match *counter.borrow() {
                    1 => ctx.request_restart("agent"),
                    2 => ctx.request_restart("nonexistent"),
                    _ => {}
                }
                Ok(())
            }),
            ..Hooks::default()
        };
        let mut events = fake.events();
        run_with(&mut fake, &mut events, options(hooks));
        let lines = fake.console_lines();
        for expected in [
            "metanode: error: before_services: data partition /dev/vda3: no such device",
            "metanode: restarting service agent (pid 100) on request",
            "metanode: service agent exited (signal 15 (SIGTERM)); restarting as requested",
            "metanode: service agent started (pid 101)",
            "metanode: error: restart request: no service named `nonexistent`",
        ] {
            assert!(
                lines.contains(&expected.to_owned()),
                "missing {expected:?} in {lines:#?}"
            );
        }
        assert_eq!(*ticks.borrow(), 3);
    }

    #[test]
    fn shutdown_requested_before_services_starts_nothing() {
        let mut fake = fake_kernel();
        let hooks = Hooks {
            before_services: Box::new(|ctx| {
                ctx.request_shutdown(PowerAction::Reboot, "config rollback");
                Ok(())
            }),
            ..Hooks::default()
        };
        let mut events = fake.events();
        run_with(&mut fake, &mut events, options(hooks));
        let calls = fake.calls();
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::Spawn { .. } | Call::WatchdogOpen { .. }))
        );
        assert!(calls.contains(&Call::Console(
            "metanode: shutting down (config rollback)".into()
        )));
        assert_eq!(calls.last(), Some(&Call::Reboot(RebootCmd::Restart)));
    }

    #[test]
    fn hostname_validation() {
        assert_eq!(validate_hostname("metanode-1.example"), Ok(()));
        for bad in ["", "-a", "a-", "a..b", "a_b", &"x".repeat(65)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
        let mut fake = fake_kernel();
        let start = fake.at(Duration::ZERO);
        fake.state()
            .scripted_events
            .push((start, InitEvent::Signal(Signal::SIGTERM)));
        let mut opts = options(Hooks::default());
        opts.hostname = "bad_name".into();
        let mut events = fake.events();
        run_with(&mut fake, &mut events, opts);
        assert!(
            !fake
                .calls()
                .iter()
                .any(|c| matches!(c, Call::Sethostname(_)))
        );
        assert!(
            fake.console_lines()
                .iter()
                .any(|l| l.starts_with("metanode: error: hostname `bad_name` has a bad label"))
        );
    }
}
