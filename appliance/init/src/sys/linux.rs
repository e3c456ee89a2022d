//! The real [`InitSys`]: syscalls through `nix`, processes through `std::process::Command`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, IntoRawFd as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MntFlags;
use nix::sys::reboot::RebootMode;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus};

use super::{
    ExitStatus, InitSys, MountRequest, Pid, RebootCmd, Signal, SpawnSpec, WaitOutcome, WatchdogOpen,
};
use crate::constants::{READINESS_CONNECT_TIMEOUT, READINESS_IO_TIMEOUT};
use crate::readiness::{self, HttpTarget, ProbeError};

mod ioctl {
    // <linux/watchdog.h>: WDIOC_KEEPALIVE = _IOR('W', 5, int), WDIOC_SETTIMEOUT = _IOWR('W', 6, int),
    // WDIOC_GETTIMEOUT = _IOR('W', 7, int).
    nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
    nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
    nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);
}

/// The console device the kernel gives PID 1.
pub const CONSOLE_PATH: &str = "/dev/console";

/// Real kernel effects. Holds the watchdog fd: closing it would not disarm the watchdog
/// (`WATCHDOG_NOWAYOUT`), so it lives as long as PID 1.
#[derive(Debug)]
pub struct LinuxSys {
    /// Where children's stdio goes; `None` means they inherit PID 1's fds.
    console_path: Option<PathBuf>,
    watchdog: Option<File>,
}

impl Default for LinuxSys {
    fn default() -> Self {
        Self::new()
    }
}

impl LinuxSys {
    /// PID 1 in the appliance: children get /dev/console as stdio.
    pub fn new() -> Self {
        Self {
            console_path: Some(PathBuf::from(CONSOLE_PATH)),
            watchdog: None,
        }
    }

    /// For tests outside the appliance: children inherit the caller's stdio (never the host console).
    pub fn inheriting_stdio() -> Self {
        Self {
            console_path: None,
            watchdog: None,
        }
    }

    fn open_console(path: &Path) -> io::Result<File> {
        // O_NOCTTY: PID 1 must never get a controlling terminal, or a Ctrl-C on the serial line
        // would reach it as SIGINT (which means "reboot").
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
    }
}

/// Make sure fds 0, 1 and 2 are open, with placeholders if needed. The kernel leaves them closed
/// when the initramfs has no /dev/console node; the signalfd or epoll fd would then become fd 0-2
/// and `attach_console` (dup2 onto 0-2) would silently close them. Call first thing in PID 1.
pub fn reserve_std_fds() {
    for _ in 0..3 {
        // Not O_CLOEXEC: if attaching the console fails later, children still get fds 0-2 and
        // their own first opens cannot land there either.
        match nix::fcntl::open("/", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) {
            Ok(fd) if fd.as_raw_fd() <= 2 => {
                // Kept open for the life of PID 1 (until dup2 replaces it).
                let _ = fd.into_raw_fd();
            }
            _ => return,
        }
    }
}

fn errno_to_io(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

impl InitSys for LinuxSys {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn console(&mut self, line: &str) {
        // `eprintln!` panics when stderr is gone; PID 1 must not. One write per line keeps lines
        // from interleaving with the children's output.
        let mut buffer = String::with_capacity(line.len() + 1);
        buffer.push_str(line);
        buffer.push('\n');
        let _ = io::stderr().lock().write_all(buffer.as_bytes());
    }

    fn attach_console(&mut self) -> io::Result<()> {
        let Some(path) = &self.console_path else {
            return Ok(());
        };
        let console = Self::open_console(path)?;
        nix::unistd::dup2_stdin(&console).map_err(errno_to_io)?;
        nix::unistd::dup2_stdout(&console).map_err(errno_to_io)?;
        nix::unistd::dup2_stderr(&console).map_err(errno_to_io)?;
        Ok(())
    }

    fn mount(&mut self, request: &MountRequest<'_>) -> io::Result<()> {
        nix::mount::mount(
            Some(request.source),
            request.target,
            Some(request.fstype),
            request.flags,
            request.data,
        )
        .map_err(errno_to_io)
    }

    fn umount(&mut self, target: &Path, lazy: bool) -> io::Result<()> {
        let flags = if lazy {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        nix::mount::umount2(target, flags).map_err(errno_to_io)
    }

    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
    }

    fn exists(&mut self, path: &Path) -> bool {
        path.exists()
    }

    fn read_file(&mut self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write_file(&mut self, path: &Path, contents: &str) -> io::Result<()> {
        // No O_CREAT: /proc/sys and cgroup files exist or the key is missing from the kernel.
        let mut file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        // The kernel parses sysctl and cgroup writes per write(2) call: one call, whole value.
        let written = file.write(contents.as_bytes())?;
        if written != contents.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", contents.len()),
            ));
        }
        Ok(())
    }

    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(errno_to_io)
    }

    fn reboot(&mut self, cmd: RebootCmd) -> io::Result<()> {
        let mode = match cmd {
            RebootCmd::CadOff => {
                return nix::sys::reboot::set_cad_enabled(false).map_err(errno_to_io);
            }
            RebootCmd::Restart => RebootMode::RB_AUTOBOOT,
            RebootCmd::PowerOff => RebootMode::RB_POWER_OFF,
            RebootCmd::Halt => RebootMode::RB_HALT_SYSTEM,
        };
        match nix::sys::reboot::reboot(mode) {
            Ok(never) => match never {},
            Err(errno) => Err(errno_to_io(errno)),
        }
    }

    fn kill(&mut self, pid: Pid, signal: Signal) -> io::Result<()> {
        nix::sys::signal::kill(pid, signal).map_err(errno_to_io)
    }

    fn spawn(&mut self, spec: &SpawnSpec<'_>) -> io::Result<Pid> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        // std does not reset the signal mask, and children inherit it: without this, services
        // would start with SIGTERM, SIGINT and SIGCHLD blocked (PID 1 blocks them for its
        // signalfd) and could never be stopped with SIGTERM.
        // SAFETY: the closure runs in the forked child before exec; it only calls sigemptyset and
        // sigprocmask, which are async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                    .map_err(errno_to_io)
            });
        }
        // A console that cannot be opened must not stop the agent from starting: the child then
        // inherits PID 1's fds, which `attach_console` made the console when it could.
        if let Some(console) = self
            .console_path
            .as_deref()
            .and_then(|p| Self::open_console(p).ok())
        {
            command
                .stdin(Stdio::from(console.try_clone()?))
                .stdout(Stdio::from(console.try_clone()?))
                .stderr(Stdio::from(console));
        } else {
            command.stdin(Stdio::null());
        }
        let child = command.spawn()?;
        let pid = i32::try_from(child.id())
            .map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
        // Dropping `Child` neither waits nor kills: the reaper's waitpid(-1) collects it.
        drop(child);
        Ok(Pid::from_raw(pid))
    }

    fn wait_any(&mut self) -> io::Result<WaitOutcome> {
        loop {
            match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    return Ok(WaitOutcome::Exited {
                        pid,
                        status: ExitStatus::Exited(code),
                    });
                }
                Ok(WaitStatus::Signaled(pid, signal, core_dumped)) => {
                    return Ok(WaitOutcome::Exited {
                        pid,
                        status: ExitStatus::Signaled {
                            signal: signal as i32,
                            core_dumped,
                        },
                    });
                }
                Ok(WaitStatus::StillAlive) => return Ok(WaitOutcome::Running),
                // Stop/continue/ptrace reports need WUNTRACED/WCONTINUED, which we never pass;
                // skip them rather than mistake them for exits.
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => return Ok(WaitOutcome::NoChildren),
                Err(errno) => return Err(errno_to_io(errno)),
            }
        }
    }

    fn sync(&mut self) {
        nix::unistd::sync();
    }

    fn watchdog_open(&mut self, path: &Path, timeout_s: u32) -> io::Result<WatchdogOpen> {
        if !path.exists() {
            return Ok(WatchdogOpen::Absent);
        }
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let fd = file.as_raw_fd();
        // Keep the fd before anything else can fail: the device is armed from the open on.
        self.watchdog = Some(file);
        let mut timeout = libc::c_int::try_from(timeout_s).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fd` is the open watchdog device held in `self.watchdog`; the ioctl reads and
        // writes one c_int through a valid pointer to a local.
        let set = unsafe { ioctl::wdioc_settimeout(fd, &mut timeout) };
        if set.is_ok() {
            return Ok(WatchdogOpen::Opened {
                timeout_s: u32::try_from(timeout).ok(),
            });
        }
        let mut current: libc::c_int = 0;
        // SAFETY: as above; the ioctl writes one c_int to a valid local.
        let get = unsafe { ioctl::wdioc_gettimeout(fd, &mut current) };
        let timeout_s = get
            .ok()
            .and_then(|_| u32::try_from(current).ok())
            .filter(|t| *t > 0);
        Ok(WatchdogOpen::Opened { timeout_s })
    }

    fn watchdog_keepalive(&mut self) -> io::Result<()> {
        let Some(file) = &self.watchdog else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "watchdog not open"));
        };
        let mut unused: libc::c_int = 0;
        // SAFETY: the fd is the open watchdog device; WDIOC_KEEPALIVE ignores its argument, which
        // points to a valid local anyway.
        unsafe { ioctl::wdioc_keepalive(file.as_raw_fd(), &mut unused) }
            .map(drop)
            .map_err(errno_to_io)
    }

    fn http_get(&mut self, target: &HttpTarget) -> Result<u16, ProbeError> {
        readiness::probe(target, READINESS_CONNECT_TIMEOUT, READINESS_IO_TIMEOUT)
    }
}
