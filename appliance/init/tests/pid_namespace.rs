//! Root-only: run the real supervisor, reaper and shutdown as PID 1 of a fresh PID namespace.
//!
//! The process unshares CLONE_NEWPID and forks; the child is PID 1 of the new namespace and
//! supervises, on the real kernel (LinuxSys + signalfd/epoll), a service that crashes at once
//! (`/bin/false`, restart=always), a shell that leaves two orphans behind, and a long sleeper. After
//! a bounded window it runs the ordered shutdown (with `reboot(2)` intercepted) and reports through
//! a pipe. The parent checks: the crasher was restarted with the 200/400/800 ms backoff (never
//! sooner), the orphans were reaped, SIGCHLD and a SIGUSR2 sent to PID 1 came through the
//! signalfd (SIGUSR2 → power off), the sleeper was stopped by SIGTERM (services must not inherit
//! PID 1's blocked signals), fd 0 was reserved, and no child is left.
//!
//! Its own `main` (harness = false): forking is only safe while the process has a single thread.

use std::io::{Read as _, Write as _};
use std::os::fd::{FromRawFd as _, IntoRawFd as _};
use std::path::Path;
use std::time::{Duration, Instant};

use metanode_init::events::{EventSource as _, LinuxEvents};
use metanode_init::power::PowerRequest;
use metanode_init::readiness::{HttpTarget, ProbeError};
use metanode_init::runtime::{execute, reap};
use metanode_init::shutdown::run_shutdown;
use metanode_init::supervisor::{Restart, ServiceSpec, Supervisor};
use metanode_init::sys::linux::LinuxSys;
use metanode_init::sys::{
    InitSys, MountRequest, Pid, RebootCmd, Signal, SpawnSpec, WaitOutcome, WatchdogOpen,
};
use metanode_init::watchdog::Watchdog;
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::ForkResult;

/// How long PID 1 supervises before shutting down: enough for restarts after 200, 400 and 800 ms.
const SUPERVISE_WINDOW: Duration = Duration::from_millis(2500);
/// The parent gives up (and kills the namespace) after this.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// LinuxSys with `reboot(2)` intercepted (a reboot in a child PID namespace would only end the
/// namespace, but a bug here must never reach the host) and spawns and console lines recorded.
struct Recorder {
    inner: LinuxSys,
    start: Instant,
    spawns: Vec<(String, Duration)>,
    lines: Vec<String>,
    reboots: Vec<RebootCmd>,
}

impl InitSys for Recorder {
    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn sleep(&mut self, duration: Duration) {
        self.inner.sleep(duration)
    }
    fn console(&mut self, line: &str) {
        println!("    [pid 1] {line}");
        self.lines.push(line.to_owned());
    }
    fn attach_console(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn mount(&mut self, request: &MountRequest<'_>) -> std::io::Result<()> {
        self.inner.mount(request)
    }
    fn umount(&mut self, target: &Path, lazy: bool) -> std::io::Result<()> {
        self.inner.umount(target, lazy)
    }
    fn mkdir_all(&mut self, path: &Path) -> std::io::Result<()> {
        self.inner.mkdir_all(path)
    }
    fn exists(&mut self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn read_file(&mut self, path: &Path) -> std::io::Result<String> {
        self.inner.read_file(path)
    }
    fn write_file(&mut self, path: &Path, contents: &str) -> std::io::Result<()> {
        self.inner.write_file(path, contents)
    }
    fn sethostname(&mut self, _name: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn reboot(&mut self, cmd: RebootCmd) -> std::io::Result<()> {
        self.reboots.push(cmd);
        Ok(())
    }
    fn kill(&mut self, pid: Pid, signal: Signal) -> std::io::Result<()> {
        self.inner.kill(pid, signal)
    }
    fn spawn(&mut self, spec: &SpawnSpec<'_>) -> std::io::Result<Pid> {
        let pid = self.inner.spawn(spec)?;
        let program = spec.argv.first().cloned().unwrap_or_default();
        self.spawns.push((program, self.start.elapsed()));
        Ok(pid)
    }
    fn wait_any(&mut self) -> std::io::Result<WaitOutcome> {
        self.inner.wait_any()
    }
    fn sync(&mut self) {
        self.inner.sync()
    }
    fn watchdog_open(&mut self, _path: &Path, _timeout_s: u32) -> std::io::Result<WatchdogOpen> {
        Ok(WatchdogOpen::Absent)
    }
    fn watchdog_keepalive(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn http_get(&mut self, target: &HttpTarget) -> Result<u16, ProbeError> {
        self.inner.http_get(target)
    }
}

/// PID 1 of the namespace. Returns the report lines for the parent.
fn namespace_init() -> Result<Vec<String>, String> {
    if std::process::id() != 1 {
        return Err(format!("expected to be pid 1, am {}", std::process::id()));
    }
    // As if the kernel had found no /dev/console: fd 0 closed. reserve_std_fds must fill it, or
    // the signalfd below would become fd 0.
    // SAFETY: fd 0 is this child's stdin, which nothing in it uses.
    unsafe { libc::close(0) };
    metanode_init::sys::linux::reserve_std_fds();
    // SAFETY: F_GETFD only reads the flags of fd 0.
    let fd0_flags = unsafe { libc::fcntl(0, libc::F_GETFD) };
    if fd0_flags < 0 || fd0_flags & libc::FD_CLOEXEC != 0 {
        return Err(format!("fd 0 not reserved (F_GETFD = {fd0_flags})"));
    }
    let mut events = LinuxEvents::new().map_err(|e| format!("LinuxEvents: {e}"))?;
    let mut sys = Recorder {
        inner: LinuxSys::inheriting_stdio(),
        start: Instant::now(),
        spawns: Vec::new(),
        lines: Vec::new(),
        reboots: Vec::new(),
    };
    let services = vec![
        ServiceSpec::new("crasher", vec!["/bin/false".into()], Restart::Always),
        ServiceSpec::new(
            "orphaner",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "/bin/sleep 0.3 & /bin/sleep 0.3 & exit 0".into(),
            ],
            Restart::Never,
        )
        .with_env("PATH", "/usr/bin:/bin"),
        ServiceSpec::new(
            "sleeper",
            vec!["/bin/sleep".into(), "1000".into()],
            Restart::Always,
        ),
    ];
    let mut sup = Supervisor::new(services).map_err(|e| e.to_string())?;
    let now = sys.now();
    let effects = sup.start(now);
    execute(&mut sys, &mut sup, effects, now);

    let mut orphans_count = 0;
    let mut sigchld_count = 0;
    let window_end = sys.now() + SUPERVISE_WINDOW;
    while sys.now() < window_end {
        let now = sys.now();
        let timeout = [sup.next_deadline(), Some(window_end)]
            .into_iter()
            .flatten()
            .map(|d| d.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::ZERO);
        let list = events.wait(timeout).map_err(|e| format!("wait: {e}"))?;
        sigchld_count += list
            .iter()
            .filter(|e| **e == metanode_init::events::InitEvent::Signal(Signal::SIGCHLD))
            .count();
        orphans_count += reap(&mut sys, &mut sup).orphans_count;
        let now = sys.now();
        let effects = sup.tick(now);
        execute(&mut sys, &mut sup, effects, now);
    }

    // A signal to PID 1 with the default disposition would be dropped by the kernel; blocked and
    // read through the signalfd, it arrives.
    nix::sys::signal::kill(Pid::this(), Signal::SIGUSR2).map_err(|e| format!("kill self: {e}"))?;
    let mut power_request = None;
    for _ in 0..10 {
        let list = events
            .wait(Duration::from_millis(100))
            .map_err(|e| format!("wait: {e}"))?;
        power_request = list.iter().find_map(|e| match e {
            metanode_init::events::InitEvent::Signal(signal) => {
                metanode_init::power::signal_request(*signal)
            }
            _ => None,
        });
        if power_request.is_some() {
            break;
        }
    }
    let power_request = power_request.ok_or("SIGUSR2 to PID 1 never came through the signalfd")?;

    let request = PowerRequest {
        reason: "test over".into(),
        ..power_request
    };
    let report = run_shutdown(&mut sys, &mut sup, &mut Watchdog::off(), &[], &request);
    let left = sys.wait_any().map_err(|e| format!("final waitpid: {e}"))?;

    let crasher_spawns_ms: Vec<String> = sys
        .spawns
        .iter()
        .filter(|(program, _)| program == "/bin/false")
        .map(|(_, at)| at.as_millis().to_string())
        .collect();
    let crasher_delays: Vec<String> = sys
        .lines
        .iter()
        .filter(|l| l.starts_with("metanode: service crasher exited (exit status 1)"))
        .filter_map(|l| l.rsplit_once("restarting in ").map(|(_, d)| d.to_owned()))
        .collect();
    let sleeper_stopped = sys
        .lines
        .iter()
        .any(|l| l == "metanode: service sleeper stopped (signal 15 (SIGTERM))");
    Ok(vec![
        format!("crasher_spawns_ms={}", crasher_spawns_ms.join(",")),
        format!("crasher_delays={}", crasher_delays.join(",")),
        format!("orphans={orphans_count}"),
        format!("sigchld={}", sigchld_count > 0),
        format!("sleeper_stopped={sleeper_stopped}"),
        format!("services_killed={}", report.services_killed),
        format!("left={left:?}"),
        format!("reboots={:?}", sys.reboots),
    ])
}

fn skip(reason: &str) {
    println!("pid_namespace: skipped: {reason}");
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root to unshare(CLONE_NEWPID)");
        return;
    }
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWPID) {
        skip(&format!("unshare(CLONE_NEWPID) failed: {e}"));
        return;
    }
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(pipe) => pipe,
        Err(e) => panic!("pipe: {e}"),
    };
    println!("pid_namespace: supervising as PID 1 of a new PID namespace for {SUPERVISE_WINDOW:?}");
    let _ = std::io::stdout().flush();
    // SAFETY: this process is single-threaded (harness = false, no thread spawned before), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(read_end);
            let (code, text) = match namespace_init() {
                Ok(lines) => (0, lines.join("\n")),
                Err(e) => (1, format!("error={e}")),
            };
            // SAFETY: the fd came from pipe() above and is owned here only.
            let mut out = unsafe { std::fs::File::from_raw_fd(write_end.into_raw_fd()) };
            let _ = out.write_all(text.as_bytes());
            drop(out);
            let _ = std::io::stdout().flush();
            // SAFETY: _exit ends the child without running the parent's atexit handlers twice.
            unsafe { libc::_exit(code) };
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let deadline = Instant::now() + CHILD_DEADLINE;
            let status = loop {
                match nix::sys::wait::waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(WaitStatus::StillAlive) => {
                        // Killing a namespace's init kills the whole namespace.
                        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                        panic!("namespace init still running after {CHILD_DEADLINE:?}; killed");
                    }
                    Ok(status) => break status,
                    Err(e) => panic!("waitpid: {e}"),
                }
            };
            // SAFETY: the fd came from pipe() above and is owned here only.
            let mut input = unsafe { std::fs::File::from_raw_fd(read_end.into_raw_fd()) };
            let mut text = String::new();
            input.read_to_string(&mut text).expect("read report");
            check(status, &text);
        }
        Err(e) => panic!("fork: {e}"),
    }
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no `{key}` in report:\n{text}"))
}

fn check(status: WaitStatus, text: &str) {
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "namespace init ended with {status:?}:\n{text}"
    );
    // The supervisor's delays, deterministic: 200 ms, then doubling.
    let delays: Vec<&str> = field(text, "crasher_delays").split(',').collect();
    assert!(delays.len() >= 3, "too few restarts: {delays:?}");
    assert_eq!(delays[..3], ["200ms", "400ms", "800ms"]);
    // On the real clock a restart never comes sooner than its delay.
    let spawns_ms: Vec<u128> = field(text, "crasher_spawns_ms")
        .split(',')
        .map(|s| s.parse().expect("ms"))
        .collect();
    assert!(spawns_ms.len() >= 4, "crasher spawned {spawns_ms:?}");
    for (i, pair) in spawns_ms.windows(2).take(3).enumerate() {
        let gap = pair[1] - pair[0];
        let wanted = 200u128 << i;
        assert!(
            gap >= wanted,
            "restart {i} came after {gap} ms, before its {wanted} ms backoff"
        );
    }
    assert_eq!(
        field(text, "orphans"),
        "2",
        "both background sleeps reaped as orphans"
    );
    assert_eq!(
        field(text, "sigchld"),
        "true",
        "SIGCHLD arrived through the signalfd"
    );
    assert_eq!(
        field(text, "sleeper_stopped"),
        "true",
        "sleeper stopped by SIGTERM"
    );
    assert_eq!(field(text, "services_killed"), "false");
    assert_eq!(field(text, "left"), "NoChildren", "no zombie left");
    assert_eq!(field(text, "reboots"), "[PowerOff]");
    println!("pid_namespace: ok (crasher restarts at {spawns_ms:?} ms)");
}
