//! What wakes the main loop: signals (through a signalfd), power-button presses (evdev) and the
//! timeout, which serves as the loop's timer. Behind [`EventSource`] so the loop runs on a fake.

use std::io::{self, Read as _};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::constants::{EVENTS_PER_WAIT_MAX, INPUT_EVENTS_PER_READ_MAX};
use crate::power::{self, INPUT_EVENT_BYTES, PowerButton};
use crate::sys::Signal;

/// Something the main loop reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitEvent {
    /// A signal to PID 1 (see [`crate::power::signal_request`]; SIGCHLD means reap).
    Signal(Signal),
    /// `KEY_POWER` pressed on this device.
    PowerKey { device: PathBuf },
    /// Something the event source wants on the console (a device that went away).
    Note(String),
}

/// The main loop's wait.
pub trait EventSource {
    /// Start watching the power buttons found in `input_dir`; returns their paths.
    fn add_power_buttons(&mut self, input_dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Wait up to `timeout` for events; an empty vector means the timeout passed.
    fn wait(&mut self, timeout: Duration) -> io::Result<Vec<InitEvent>>;
}

/// The signals PID 1 handles. They are blocked and read from a signalfd.
pub const PID1_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
];

const SIGNALFD_TOKEN: u64 = 0;

/// epoll over a signalfd and the power buttons' evdev fds.
#[derive(Debug)]
pub struct LinuxEvents {
    epoll: Epoll,
    signalfd: SignalFd,
    /// Index + 1 is the epoll token; a device that failed is `None` (tokens stay stable).
    buttons: Vec<Option<PowerButton>>,
}

impl LinuxEvents {
    /// Block [`PID1_SIGNALS`] in the calling thread and open the signalfd. Call it before any thread
    /// is spawned so every thread inherits the mask (a signal sent to the process could otherwise
    /// be delivered to a thread that has it unblocked and be lost to the default disposition).
    pub fn new() -> io::Result<Self> {
        let mut mask = SigSet::empty();
        for signal in PID1_SIGNALS {
            mask.add(signal);
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(errno_to_io)?;
        let signalfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(errno_to_io)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(errno_to_io)?;
        epoll
            .add(
                signalfd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, SIGNALFD_TOKEN),
            )
            .map_err(errno_to_io)?;
        Ok(Self {
            epoll,
            signalfd,
            buttons: Vec::new(),
        })
    }

    fn read_signals(&mut self, out: &mut Vec<InitEvent>) -> io::Result<()> {
        loop {
            match self.signalfd.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
                    if let Ok(signal) = Signal::try_from(number) {
                        out.push(InitEvent::Signal(signal));
                    }
                }
                Ok(None) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno_to_io(errno)),
            }
        }
    }

    fn read_button(&mut self, index: usize, out: &mut Vec<InitEvent>) {
        let Some(Some(button)) = self.buttons.get_mut(index) else {
            return;
        };
        let mut buffer = [0u8; INPUT_EVENT_BYTES * INPUT_EVENTS_PER_READ_MAX];
        // evdev returns whole events per read; read until the device has no more.
        let failure = loop {
            match button.file.read(&mut buffer) {
                Ok(0) => break Some("end of file".to_owned()),
                Ok(read) => {
                    let presses = power::power_key_presses(buffer.get(..read).unwrap_or(&[]));
                    if presses > 0 {
                        out.push(InitEvent::PowerKey {
                            device: button.path.clone(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        if let Some(reason) = failure {
            let path = button.path.display().to_string();
            let _ = self.epoll.delete(button.file.as_fd());
            if let Some(slot) = self.buttons.get_mut(index) {
                *slot = None;
            }
            out.push(InitEvent::Note(format!(
                "power button {path} dropped: {reason}"
            )));
        }
    }
}

fn errno_to_io(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

impl EventSource for LinuxEvents {
    fn add_power_buttons(&mut self, input_dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for button in power::open_power_buttons(input_dir)? {
            let token = self.buttons.len() as u64 + 1;
            self.epoll
                .add(
                    button.file.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, token),
                )
                .map_err(errno_to_io)?;
            paths.push(button.path.clone());
            self.buttons.push(Some(button));
        }
        Ok(paths)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Vec<InitEvent>> {
        let mut ready = [EpollEvent::empty(); EVENTS_PER_WAIT_MAX];
        let timeout = EpollTimeout::try_from(timeout).unwrap_or(EpollTimeout::MAX);
        let count = match self.epoll.wait(&mut ready, timeout) {
            Ok(count) => count,
            Err(Errno::EINTR) => 0,
            Err(errno) => return Err(errno_to_io(errno)),
        };
        let mut events = Vec::new();
        for event in ready.iter().take(count) {
            match event.data() {
                SIGNALFD_TOKEN => self.read_signals(&mut events)?,
                token => self.read_button((token - 1) as usize, &mut events),
            }
        }
        Ok(events)
    }
}

/// Fallback when the signalfd or epoll cannot be set up: the loop still runs (reaping on its
/// timer, petting the watchdog), it just cannot hear signals or the power button.
#[derive(Debug, Default)]
pub struct SleepEvents;

impl EventSource for SleepEvents {
    fn add_power_buttons(&mut self, _input_dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Vec<InitEvent>> {
        std::thread::sleep(timeout);
        Ok(Vec::new())
    }
}
