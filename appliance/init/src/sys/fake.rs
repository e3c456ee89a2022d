//! An in-memory [`InitSys`] and [`EventSource`] that record every call, with a fake clock shared by
//! both. Public so the binary's tests can drive [`crate::pid1::run_with`] too.
//!
//! Model: files and directories live in maps; a mount needs its mount point to exist; children follow
//! a [`ChildPlan`] taken in spawn order (default: run until signalled); `wait_any` reaps children whose
//! exit time has come; the event source advances the clock to the next scripted event or child exit
//! (delivered as SIGCHLD) or to the end of the wait.

use std::cell::{RefCell, RefMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::{
    ExitStatus, InitSys, MountRequest, MsFlags, Pid, RebootCmd, Signal, SpawnSpec, WaitOutcome,
    WatchdogOpen,
};
use crate::events::{EventSource, InitEvent};
use crate::readiness::{HttpTarget, ProbeError};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Console(String),
    AttachConsole,
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount {
        target: PathBuf,
        lazy: bool,
    },
    Mkdir(PathBuf),
    Read(PathBuf),
    Write {
        path: PathBuf,
        contents: String,
    },
    Sethostname(String),
    Reboot(RebootCmd),
    Kill {
        pid: i32,
        signal: Signal,
    },
    Spawn {
        argv: Vec<String>,
        pid: Option<i32>,
    },
    Sync,
    WatchdogOpen {
        path: PathBuf,
        timeout_s: u32,
    },
    WatchdogKeepalive,
    HttpGet(String),
}

/// What a spawned fake child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildPlan {
    /// Exit with `status` this long after the spawn.
    ExitAfter(Duration, ExitStatus),
    /// Run until a signal kills it; with `ignore_term`, SIGTERM does nothing.
    RunUntilSignal { ignore_term: bool },
}

/// A live fake child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChild {
    pub argv: Vec<String>,
    pub exit: Option<(Instant, ExitStatus)>,
    pub ignore_term: bool,
}

/// Everything the fake knows; tests set it up and inspect it through [`FakeSys::state`].
#[derive(Debug)]
pub struct FakeState {
    pub start: Instant,
    pub now: Instant,
    pub calls: Vec<Call>,
    pub files: BTreeMap<PathBuf, String>,
    pub dirs: BTreeSet<PathBuf>,
    /// Writes succeed but reads keep returning this (a kernel that clamps or ignores a value).
    pub sticky_files: BTreeMap<PathBuf, String>,
    pub write_errors: BTreeMap<PathBuf, Errno>,
    pub mount_errors: BTreeMap<PathBuf, Errno>,
    /// Plain unmounts of these targets fail (lazy ones succeed).
    pub umount_errors: BTreeMap<PathBuf, Errno>,
    pub mounted: Vec<PathBuf>,
    /// Spawns whose `argv[0]` is a key fail with that errno.
    pub spawn_errors: BTreeMap<String, Errno>,
    pub plans: VecDeque<ChildPlan>,
    pub children: BTreeMap<i32, FakeChild>,
    pub next_pid: i32,
    pub hostname: Option<String>,
    /// `Some(path)`: a watchdog exists at `path`, reporting `watchdog_timeout_s`.
    pub watchdog_device: Option<PathBuf>,
    pub watchdog_timeout_s: Option<u32>,
    pub watchdog_keepalives: Vec<Instant>,
    /// The readiness probe gets 200 from this time on and "connection refused" before.
    pub http_ready_at: Option<Instant>,
    pub scripted_events: Vec<(Instant, InitEvent)>,
    pub power_buttons: Vec<PathBuf>,
    pub waits_count: usize,
    /// A script that never shuts down is a test bug: the event source panics after this many waits.
    pub waits_max: usize,
}

/// The fake kernel. Cloning shares the state.
#[derive(Debug, Clone)]
pub struct FakeSys {
    state: Rc<RefCell<FakeState>>,
}

/// The fake event source, sharing the clock and children with the [`FakeSys`] it came from.
#[derive(Debug, Clone)]
pub struct FakeEvents {
    state: Rc<RefCell<FakeState>>,
}

impl Default for FakeSys {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeSys {
    pub fn new() -> Self {
        let start = Instant::now();
        let state = FakeState {
            start,
            now: start,
            calls: Vec::new(),
            files: BTreeMap::new(),
            dirs: BTreeSet::from([PathBuf::from("/")]),
            sticky_files: BTreeMap::new(),
            write_errors: BTreeMap::new(),
            mount_errors: BTreeMap::new(),
            umount_errors: BTreeMap::new(),
            mounted: Vec::new(),
            spawn_errors: BTreeMap::new(),
            plans: VecDeque::new(),
            children: BTreeMap::new(),
            next_pid: 100,
            hostname: None,
            watchdog_device: None,
            watchdog_timeout_s: None,
            watchdog_keepalives: Vec::new(),
            http_ready_at: None,
            scripted_events: Vec::new(),
            power_buttons: Vec::new(),
            waits_count: 0,
            waits_max: 100_000,
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// The event source sharing this fake's clock and children.
    pub fn events(&self) -> FakeEvents {
        FakeEvents {
            state: Rc::clone(&self.state),
        }
    }

    pub fn state(&self) -> RefMut<'_, FakeState> {
        self.state.borrow_mut()
    }

    /// `start + offset`: fake times are offsets from the fake's creation.
    pub fn at(&self, offset: Duration) -> Instant {
        self.state.borrow().start + offset
    }

    /// How far the fake clock has advanced.
    pub fn elapsed(&self) -> Duration {
        let state = self.state.borrow();
        state.now - state.start
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.borrow().calls.clone()
    }

    pub fn console_lines(&self) -> Vec<String> {
        self.state
            .borrow()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Console(line) => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// Add a file (and its parent directories).
    pub fn add_file(&self, path: impl AsRef<Path>, contents: &str) {
        let mut state = self.state.borrow_mut();
        let path = path.as_ref();
        insert_dir_all(&mut state.dirs, path.parent().unwrap_or(Path::new("/")));
        state.files.insert(path.to_path_buf(), contents.to_owned());
    }

    pub fn add_dir(&self, path: impl AsRef<Path>) {
        insert_dir_all(&mut self.state.borrow_mut().dirs, path.as_ref());
    }

    pub fn file(&self, path: impl AsRef<Path>) -> Option<String> {
        self.state.borrow().files.get(path.as_ref()).cloned()
    }

    /// A child that PID 1 did not spawn (an orphan re-parented to it) exiting at `now`.
    pub fn add_orphan_exit(&self, pid: i32, status: ExitStatus) {
        let mut state = self.state.borrow_mut();
        let now = state.now;
        state.children.insert(
            pid,
            FakeChild {
                argv: vec!["orphan".to_owned()],
                exit: Some((now, status)),
                ignore_term: false,
            },
        );
    }
}

fn insert_dir_all(dirs: &mut BTreeSet<PathBuf>, path: &Path) {
    for ancestor in path.ancestors() {
        dirs.insert(ancestor.to_path_buf());
    }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl FakeState {
    fn signal_child(&mut self, pid: i32, signal: Signal) -> bool {
        let now = self.now;
        let Some(child) = self.children.get_mut(&pid) else {
            return false;
        };
        let dies = match signal {
            Signal::SIGTERM => !child.ignore_term,
            Signal::SIGKILL | Signal::SIGINT | Signal::SIGHUP => true,
            _ => false,
        };
        let already_exiting = child.exit.is_some_and(|(at, _)| at <= now);
        if dies && !already_exiting {
            child.exit = Some((
                now,
                ExitStatus::Signaled {
                    signal: signal as i32,
                    core_dumped: false,
                },
            ));
        }
        true
    }

    fn next_child_exit(&self) -> Option<Instant> {
        self.children
            .values()
            .filter_map(|c| c.exit.map(|(at, _)| at))
            .min()
    }
}

impl InitSys for FakeSys {
    fn now(&self) -> Instant {
        self.state.borrow().now
    }

    fn sleep(&mut self, duration: Duration) {
        self.state.borrow_mut().now += duration;
    }

    fn console(&mut self, line: &str) {
        self.state
            .borrow_mut()
            .calls
            .push(Call::Console(line.to_owned()));
    }

    fn attach_console(&mut self) -> io::Result<()> {
        self.state.borrow_mut().calls.push(Call::AttachConsole);
        Ok(())
    }

    fn mount(&mut self, request: &MountRequest<'_>) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::Mount {
            source: request.source.to_owned(),
            target: request.target.to_path_buf(),
            fstype: request.fstype.to_owned(),
            flags: request.flags,
            data: request.data.map(str::to_owned),
        });
        if let Some(e) = state.mount_errors.get(request.target) {
            return Err(errno(*e));
        }
        if !state.dirs.contains(request.target) {
            return Err(errno(Errno::ENOENT));
        }
        state.mounted.push(request.target.to_path_buf());
        Ok(())
    }

    fn umount(&mut self, target: &Path, lazy: bool) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::Umount {
            target: target.to_path_buf(),
            lazy,
        });
        if !lazy && let Some(e) = state.umount_errors.get(target) {
            return Err(errno(*e));
        }
        let Some(index) = state.mounted.iter().rposition(|m| m == target) else {
            return Err(errno(Errno::EINVAL));
        };
        state.mounted.remove(index);
        Ok(())
    }

    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::Mkdir(path.to_path_buf()));
        insert_dir_all(&mut state.dirs, path);
        Ok(())
    }

    fn exists(&mut self, path: &Path) -> bool {
        let state = self.state.borrow();
        state.dirs.contains(path) || state.files.contains_key(path)
    }

    fn read_file(&mut self, path: &Path) -> io::Result<String> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::Read(path.to_path_buf()));
        if let Some(sticky) = state.sticky_files.get(path) {
            return Ok(sticky.clone());
        }
        state
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| errno(Errno::ENOENT))
    }

    fn write_file(&mut self, path: &Path, contents: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::Write {
            path: path.to_path_buf(),
            contents: contents.to_owned(),
        });
        if let Some(e) = state.write_errors.get(path) {
            return Err(errno(*e));
        }
        match state.files.get_mut(path) {
            Some(file) => {
                contents.clone_into(file);
                Ok(())
            }
            None => Err(errno(Errno::ENOENT)),
        }
    }

    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::Sethostname(name.to_owned()));
        state.hostname = Some(name.to_owned());
        Ok(())
    }

    fn reboot(&mut self, cmd: RebootCmd) -> io::Result<()> {
        self.state.borrow_mut().calls.push(Call::Reboot(cmd));
        Ok(())
    }

    fn kill(&mut self, pid: Pid, signal: Signal) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::Kill {
            pid: pid.as_raw(),
            signal,
        });
        if pid.as_raw() == -1 {
            let pids: Vec<i32> = state.children.keys().copied().collect();
            if pids.is_empty() {
                return Err(errno(Errno::ESRCH));
            }
            for child in pids {
                state.signal_child(child, signal);
            }
            return Ok(());
        }
        if state.signal_child(pid.as_raw(), signal) {
            Ok(())
        } else {
            Err(errno(Errno::ESRCH))
        }
    }

    fn spawn(&mut self, spec: &SpawnSpec<'_>) -> io::Result<Pid> {
        let mut state = self.state.borrow_mut();
        let argv = spec.argv.to_vec();
        if let Some(e) = argv
            .first()
            .and_then(|a| state.spawn_errors.get(a))
            .copied()
        {
            state.calls.push(Call::Spawn { argv, pid: None });
            return Err(errno(e));
        }
        let pid = state.next_pid;
        state.next_pid += 1;
        let now = state.now;
        let plan = state
            .plans
            .pop_front()
            .unwrap_or(ChildPlan::RunUntilSignal { ignore_term: false });
        let child = match plan {
            ChildPlan::ExitAfter(after, status) => FakeChild {
                argv: argv.clone(),
                exit: Some((now + after, status)),
                ignore_term: false,
            },
            ChildPlan::RunUntilSignal { ignore_term } => FakeChild {
                argv: argv.clone(),
                exit: None,
                ignore_term,
            },
        };
        state.children.insert(pid, child);
        state.calls.push(Call::Spawn {
            argv,
            pid: Some(pid),
        });
        Ok(Pid::from_raw(pid))
    }

    fn wait_any(&mut self) -> io::Result<WaitOutcome> {
        let mut state = self.state.borrow_mut();
        let now = state.now;
        let due = state
            .children
            .iter()
            .filter_map(|(pid, c)| {
                c.exit
                    .filter(|(at, _)| *at <= now)
                    .map(|(at, s)| (at, *pid, s))
            })
            .min_by_key(|(at, pid, _)| (*at, *pid));
        if let Some((_, pid, status)) = due {
            state.children.remove(&pid);
            return Ok(WaitOutcome::Exited {
                pid: Pid::from_raw(pid),
                status,
            });
        }
        if state.children.is_empty() {
            Ok(WaitOutcome::NoChildren)
        } else {
            Ok(WaitOutcome::Running)
        }
    }

    fn sync(&mut self) {
        self.state.borrow_mut().calls.push(Call::Sync);
    }

    fn watchdog_open(&mut self, path: &Path, timeout_s: u32) -> io::Result<WatchdogOpen> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::WatchdogOpen {
            path: path.to_path_buf(),
            timeout_s,
        });
        if state.watchdog_device.as_deref() != Some(path) {
            return Ok(WatchdogOpen::Absent);
        }
        let reported = state.watchdog_timeout_s;
        Ok(WatchdogOpen::Opened {
            timeout_s: reported,
        })
    }

    fn watchdog_keepalive(&mut self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::WatchdogKeepalive);
        let now = state.now;
        state.watchdog_keepalives.push(now);
        Ok(())
    }

    fn http_get(&mut self, target: &HttpTarget) -> Result<u16, ProbeError> {
        let mut state = self.state.borrow_mut();
        state.calls.push(Call::HttpGet(target.to_string()));
        match state.http_ready_at {
            Some(at) if at <= state.now => Ok(200),
            _ => Err(ProbeError::Connect(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            ))),
        }
    }
}

impl EventSource for FakeEvents {
    fn add_power_buttons(&mut self, _input_dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self.state.borrow().power_buttons.clone())
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Vec<InitEvent>> {
        let mut state = self.state.borrow_mut();
        state.waits_count += 1;
        assert!(
            state.waits_count <= state.waits_max,
            "FakeEvents: more than {} waits; the test script never ends",
            state.waits_max
        );
        let deadline = state.now + timeout;
        let next_event = state.scripted_events.iter().map(|(at, _)| *at).min();
        let next_exit = state.next_child_exit();
        let next = [next_event, next_exit].into_iter().flatten().min();
        match next {
            Some(at) if at <= deadline => {
                state.now = state.now.max(at);
            }
            _ => {
                state.now = deadline;
                return Ok(Vec::new());
            }
        }
        let now = state.now;
        let mut events = Vec::new();
        let mut remaining = Vec::new();
        for (at, event) in std::mem::take(&mut state.scripted_events) {
            if at <= now {
                events.push(event)
            } else {
                remaining.push((at, event))
            }
        }
        state.scripted_events = remaining;
        if state.next_child_exit().is_some_and(|at| at <= now) {
            events.push(InitEvent::Signal(Signal::SIGCHLD));
        }
        Ok(events)
    }
}
