//! The kernel seam: every effect PID 1 has on the system goes through [`InitSys`], so the logic above it
//! (mounts, sysctls, supervision, shutdown, the main loop) is tested with [`fake::FakeSys`] without root.
//! [`linux::LinuxSys`] is the real thing.

pub mod fake;
pub mod linux;

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

pub use nix::mount::MsFlags;
pub use nix::sys::signal::Signal;
pub use nix::unistd::Pid;

use crate::readiness::{HttpTarget, ProbeError};

/// How a child ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    /// `exit(0)`; anything else is a failure for `Restart::OnFailure`.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exit status {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                let name = Signal::try_from(signal)
                    .map(Signal::as_str)
                    .unwrap_or("unknown");
                let core = if core_dumped { ", core dumped" } else { "" };
                write!(f, "signal {signal} ({name}{core})")
            }
        }
    }
}

/// One `waitpid(-1, WNOHANG)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// A child was reaped.
    Exited { pid: Pid, status: ExitStatus },
    /// Children exist but none has exited.
    Running,
    /// No children at all (`ECHILD`).
    NoChildren,
}

/// The `reboot(2)` commands PID 1 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootCmd {
    /// `LINUX_REBOOT_CMD_CAD_OFF`: Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an instant reboot.
    CadOff,
    /// `RB_AUTOBOOT`.
    Restart,
    /// `RB_POWER_OFF`.
    PowerOff,
    /// `RB_HALT_SYSTEM`: stop the CPUs, leave the power on.
    Halt,
}

/// Arguments of one `mount(2)`.
#[derive(Debug, Clone, Copy)]
pub struct MountRequest<'a> {
    pub source: &'a str,
    pub target: &'a Path,
    pub fstype: &'a str,
    pub flags: MsFlags,
    pub data: Option<&'a str>,
}

/// A process to start. `argv[0]` is an absolute path (no PATH search: PID 1 has no PATH).
/// The environment is exactly `env`; stdin, stdout and stderr are the console.
#[derive(Debug, Clone, Copy)]
pub struct SpawnSpec<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
}

/// What opening the watchdog device found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogOpen {
    /// No device node: nothing to pet.
    Absent,
    /// Opened (and so armed). `timeout_s` is the timeout the driver reports after `WDIOC_SETTIMEOUT`
    /// (drivers round), `None` if it would neither set nor report one.
    Opened { timeout_s: Option<u32> },
}

/// Every kernel effect PID 1 needs. Object safe: the main loop holds a `&mut dyn InitSys`.
pub trait InitSys {
    /// Monotonic time.
    fn now(&self) -> Instant;
    /// Block the calling thread (the fake advances its clock instead).
    fn sleep(&mut self, duration: Duration);
    /// Write one line to the console. The caller adds the `metanode: ` prefix.
    fn console(&mut self, line: &str);
    /// Make fds 0, 1 and 2 the console (the kernel leaves them closed when the initramfs
    /// had no /dev/console node; any later `open` would then land on them).
    fn attach_console(&mut self) -> io::Result<()>;
    /// `mount(2)`.
    fn mount(&mut self, request: &MountRequest<'_>) -> io::Result<()>;
    /// `umount2(2)`; `lazy` adds `MNT_DETACH`.
    fn umount(&mut self, target: &Path, lazy: bool) -> io::Result<()>;
    /// `mkdir -p` with mode 0755.
    fn mkdir_all(&mut self, path: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&mut self, path: &Path) -> bool;
    /// Read a whole (small, virtual) file such as /proc/sys/... or cgroup.controllers.
    fn read_file(&mut self, path: &Path) -> io::Result<String>;
    /// Write a whole existing file in one `write(2)` (never creates it: a missing /proc/sys key is an error).
    fn write_file(&mut self, path: &Path, contents: &str) -> io::Result<()>;
    /// `sethostname(2)`.
    fn sethostname(&mut self, name: &str) -> io::Result<()>;
    /// `reboot(2)`. Only returns on failure (the fake records it and returns `Ok`).
    fn reboot(&mut self, cmd: RebootCmd) -> io::Result<()>;
    /// `kill(2)`; `Pid::from_raw(-1)` is every process but PID 1.
    fn kill(&mut self, pid: Pid, signal: Signal) -> io::Result<()>;
    /// Start a process (fork + exec); it is reaped through [`InitSys::wait_any`].
    fn spawn(&mut self, spec: &SpawnSpec<'_>) -> io::Result<Pid>;
    /// `waitpid(-1, WNOHANG)`.
    fn wait_any(&mut self) -> io::Result<WaitOutcome>;
    /// `sync(2)`.
    fn sync(&mut self);
    /// Open and arm the watchdog at `path` with `timeout_s` (`WDIOC_SETTIMEOUT`).
    fn watchdog_open(&mut self, path: &Path, timeout_s: u32) -> io::Result<WatchdogOpen>;
    /// `WDIOC_KEEPALIVE` on the opened watchdog.
    fn watchdog_keepalive(&mut self) -> io::Result<()>;
    /// One readiness probe: `GET` the target, return the status code.
    fn http_get(&mut self, target: &HttpTarget) -> Result<u16, ProbeError>;
}

/// Print `metanode: <message>` on the console.
pub fn say(sys: &mut dyn InitSys, message: impl fmt::Display) {
    sys.console(&format!("metanode: {message}"));
}

/// Print `metanode: error: <message>` on the console.
pub fn say_error(sys: &mut dyn InitSys, message: impl fmt::Display) {
    sys.console(&format!("metanode: error: {message}"));
}
