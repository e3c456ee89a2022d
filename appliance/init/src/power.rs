//! Power requests: which signal or key means what, and the power button on evdev.
//!
//! The kernel turns the ACPI power button into a `KEY_POWER` input event on some /dev/input/event*
//! device; there is no udev or acpid, so PID 1 finds that device itself (EVIOCGBIT on EV_KEY) and
//! reads its `input_event`s. Signals come through a signalfd (see [`crate::events`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::constants::INPUT_DEVICES_COUNT_MAX;
use crate::sys::{RebootCmd, Signal};

/// `EV_KEY` from <linux/input-event-codes.h>.
pub const EV_KEY: u16 = 0x01;
/// `KEY_POWER` from <linux/input-event-codes.h>.
pub const KEY_POWER: u16 = 116;
/// `KEY_MAX`: the EV_KEY capability bitmap has `KEY_MAX + 1` bits.
pub const KEY_MAX: u16 = 0x2ff;
/// Bytes of the EV_KEY capability bitmap, rounded up to whole `long`s as the kernel writes it.
pub const KEY_BITMAP_BYTES: usize =
    (KEY_MAX as usize + 1).div_ceil(LONG_BITS) * std::mem::size_of::<libc::c_long>();
/// Size of `struct input_event` on this target (24 bytes on x86_64).
pub const INPUT_EVENT_BYTES: usize = std::mem::size_of::<libc::input_event>();
// The parser reads the last 8 bytes of each event.
const _: () = assert!(INPUT_EVENT_BYTES >= 8);
const LONG_BITS: usize = 8 * std::mem::size_of::<libc::c_long>();
/// `input_event.value` of a key press (0 is release, 2 autorepeat).
const KEY_PRESSED: i32 = 1;

mod ioctl {
    // EVIOCGBIT(EV_KEY, len) = _IOC(_IOC_READ, 'E', 0x20 + EV_KEY, len).
    nix::ioctl_read_buf!(eviocgbit_key, b'E', 0x21, u8);
}

/// What PID 1 does at the end of a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    PowerOff,
    /// Stop the CPUs with the power on. With the NOWAYOUT watchdog armed, the watchdog then
    /// reboots the node after its timeout.
    Halt,
}

impl PowerAction {
    pub fn reboot_cmd(self) -> RebootCmd {
        match self {
            PowerAction::Reboot => RebootCmd::Restart,
            PowerAction::PowerOff => RebootCmd::PowerOff,
            PowerAction::Halt => RebootCmd::Halt,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::Reboot => "reboot",
            PowerAction::PowerOff => "poweroff",
            PowerAction::Halt => "halt",
        })
    }
}

/// A power request and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerRequest {
    pub action: PowerAction,
    pub reason: String,
}

/// What a signal to PID 1 asks for. `None` for SIGCHLD (reap) and anything else.
pub fn signal_request(signal: Signal) -> Option<PowerRequest> {
    let (action, reason) = match signal {
        // After reboot(CAD_OFF) the kernel sends SIGINT to PID 1 on Ctrl-Alt-Del.
        Signal::SIGINT => (PowerAction::Reboot, "SIGINT (ctrl-alt-del)"),
        Signal::SIGTERM => (PowerAction::Reboot, "SIGTERM"),
        Signal::SIGUSR2 => (PowerAction::PowerOff, "SIGUSR2"),
        Signal::SIGUSR1 => (PowerAction::Halt, "SIGUSR1"),
        _ => return None,
    };
    Some(PowerRequest {
        action,
        reason: reason.to_owned(),
    })
}

/// Whether an EV_KEY capability bitmap (as EVIOCGBIT writes it: an array of native `long`s) has
/// `KEY_POWER`. A short bitmap simply does not have the bit.
pub fn reports_key_power(key_bitmap: &[u8]) -> bool {
    let long_bytes = std::mem::size_of::<libc::c_long>();
    let code = usize::from(KEY_POWER);
    let start = (code / LONG_BITS) * long_bytes;
    let Some(word) = key_bitmap.get(start..start + long_bytes) else {
        return false;
    };
    let mut raw = [0u8; std::mem::size_of::<libc::c_long>()];
    raw.copy_from_slice(word);
    let word = libc::c_long::from_ne_bytes(raw);
    word & (1 << (code % LONG_BITS)) != 0
}

/// Number of `KEY_POWER` presses in a buffer of `input_event`s. Only whole events count; the
/// fields read are the last 8 bytes (`u16 type, u16 code, s32 value`), whatever the timeval size.
pub fn power_key_presses(events: &[u8]) -> usize {
    events
        .chunks_exact(INPUT_EVENT_BYTES)
        .filter_map(|event| <[u8; 8]>::try_from(event.get(INPUT_EVENT_BYTES - 8..)?).ok())
        .filter(|tail| {
            let kind = u16::from_ne_bytes([tail[0], tail[1]]);
            let code = u16::from_ne_bytes([tail[2], tail[3]]);
            let value = i32::from_ne_bytes([tail[4], tail[5], tail[6], tail[7]]);
            kind == EV_KEY && code == KEY_POWER && value == KEY_PRESSED
        })
        .count()
}

/// An opened input device that reports `KEY_POWER`.
#[derive(Debug)]
pub struct PowerButton {
    pub path: PathBuf,
    pub file: File,
}

/// Open every `event*` device in `input_dir` (non-blocking) that reports `KEY_POWER`.
/// A missing directory is no devices; a device that cannot be opened or queried is skipped.
pub fn open_power_buttons(input_dir: &Path) -> io::Result<Vec<PowerButton>> {
    let entries = match std::fs::read_dir(input_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("event"))
        })
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths.truncate(INPUT_DEVICES_COUNT_MAX);
    let mut buttons = Vec::new();
    for path in paths {
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        let mut bitmap = [0u8; KEY_BITMAP_BYTES];
        // SAFETY: the fd is an open input device; EVIOCGBIT writes at most `bitmap.len()` bytes
        // (the length is encoded in the request) into the valid buffer.
        let queried = unsafe { ioctl::eviocgbit_key(file.as_raw_fd(), &mut bitmap) };
        if queried.is_ok() && reports_key_power(&bitmap) {
            buttons.push(PowerButton { path, file });
        }
    }
    Ok(buttons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; INPUT_EVENT_BYTES - 8];
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&value.to_ne_bytes());
        bytes
    }

    #[test]
    fn counts_only_power_key_presses() {
        let mut buffer = Vec::new();
        buffer.extend(event(EV_KEY, KEY_POWER, 1));
        buffer.extend(event(0, 0, 0)); // SYN_REPORT
        buffer.extend(event(EV_KEY, KEY_POWER, 0)); // release
        buffer.extend(event(EV_KEY, KEY_POWER, 2)); // autorepeat
        buffer.extend(event(EV_KEY, 115, 1)); // KEY_VOLUMEUP
        buffer.extend(event(EV_KEY, KEY_POWER, 1));
        assert_eq!(power_key_presses(&buffer), 2);
        // A torn trailing event is not counted.
        let torn = event(EV_KEY, KEY_POWER, 1);
        buffer.extend_from_slice(&torn[..torn.len() - 1]);
        assert_eq!(power_key_presses(&buffer), 2);
    }

    #[test]
    fn capability_bitmap_bit_116() {
        let mut bitmap = [0u8; KEY_BITMAP_BYTES];
        assert!(!reports_key_power(&bitmap));
        // On a little-endian target bit 116 is byte 14, bit 4.
        let long_bytes = std::mem::size_of::<libc::c_long>();
        let word_index = usize::from(KEY_POWER) / LONG_BITS;
        let word: libc::c_long = 1 << (usize::from(KEY_POWER) % LONG_BITS);
        bitmap[word_index * long_bytes..(word_index + 1) * long_bytes]
            .copy_from_slice(&word.to_ne_bytes());
        assert!(reports_key_power(&bitmap));
        if cfg!(target_endian = "little") {
            assert_eq!(bitmap[14], 1 << 4);
        }
        assert!(
            !reports_key_power(&bitmap[..8]),
            "a short bitmap lacks the bit"
        );
    }

    #[test]
    fn signals_map_to_requests() {
        let request = |s| signal_request(s).map(|r| r.action);
        assert_eq!(request(Signal::SIGINT), Some(PowerAction::Reboot));
        assert_eq!(request(Signal::SIGTERM), Some(PowerAction::Reboot));
        assert_eq!(request(Signal::SIGUSR2), Some(PowerAction::PowerOff));
        assert_eq!(request(Signal::SIGUSR1), Some(PowerAction::Halt));
        assert_eq!(request(Signal::SIGCHLD), None);
        assert_eq!(PowerAction::Halt.reboot_cmd(), RebootCmd::Halt);
        assert_eq!(PowerAction::PowerOff.reboot_cmd(), RebootCmd::PowerOff);
        assert_eq!(PowerAction::Reboot.reboot_cmd(), RebootCmd::Restart);
    }

    #[test]
    fn missing_input_dir_is_no_buttons() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buttons = open_power_buttons(&dir.path().join("absent")).expect("scan");
        assert!(buttons.is_empty());
        // Non-device files named event* fail EVIOCGBIT and are skipped.
        std::fs::write(dir.path().join("event0"), b"").expect("write");
        assert!(open_power_buttons(dir.path()).expect("scan").is_empty());
    }
}
