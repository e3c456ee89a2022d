//! The hardware watchdog: armed once at boot, fed from the main loop (and from shutdown's waits)
//! every timeout / [`WATCHDOG_PET_DIVISOR`]. The kernel is built with `WATCHDOG_NOWAYOUT`, so the
//! device is never closed with the magic `V`: once armed, only keepalives stop a reboot, which is
//! the point — a hung PID 1 reboots the node.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::constants::{
    WATCHDOG_PET_DIVISOR, WATCHDOG_PET_INTERVAL_UNKNOWN, WATCHDOG_TIMEOUT_DEFAULT,
    WATCHDOG_TIMEOUT_MAX, WATCHDOG_TIMEOUT_MIN,
};
use crate::sys::{InitSys, WatchdogOpen, say, say_error};

/// Where and how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogOptions {
    pub device: PathBuf,
    /// Clamped to [`WATCHDOG_TIMEOUT_MIN`, `WATCHDOG_TIMEOUT_MAX`].
    pub timeout: Duration,
}

impl Default for WatchdogOptions {
    fn default() -> Self {
        Self {
            device: PathBuf::from("/dev/watchdog"),
            timeout: WATCHDOG_TIMEOUT_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started, absent or failed to open: nothing to feed.
    Off,
    Armed {
        interval: Duration,
        next_due: Instant,
        failing: bool,
    },
}

/// Keepalive schedule for the (optional) watchdog device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    state: State,
}

impl Watchdog {
    /// A watchdog that feeds nothing (before `start`, or in tests).
    pub fn off() -> Self {
        Self { state: State::Off }
    }

    /// Open and arm the device. Absent device: logged once, and the node runs without one.
    pub fn start(sys: &mut dyn InitSys, options: &WatchdogOptions) -> Self {
        let timeout = options
            .timeout
            .clamp(WATCHDOG_TIMEOUT_MIN, WATCHDOG_TIMEOUT_MAX);
        let timeout_s = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
        let device = options.device.display();
        match sys.watchdog_open(&options.device, timeout_s) {
            Ok(WatchdogOpen::Absent) => {
                say(sys, format!("watchdog: no {device}; running without one"));
                Self::off()
            }
            Ok(WatchdogOpen::Opened {
                timeout_s: reported,
            }) => {
                let interval = match reported {
                    Some(t) if t > 0 => Duration::from_secs(u64::from(t)) / WATCHDOG_PET_DIVISOR,
                    _ => WATCHDOG_PET_INTERVAL_UNKNOWN,
                };
                match reported {
                    Some(t) => say(sys, format!("watchdog: {device} armed, timeout {t}s")),
                    None => say(
                        sys,
                        format!("watchdog: {device} armed, driver timeout unknown"),
                    ),
                }
                let mut watchdog = Self {
                    state: State::Armed {
                        interval,
                        next_due: sys.now(),
                        failing: false,
                    },
                };
                // Feed at once: the driver's countdown started at open, maybe with its own default.
                watchdog.pet_if_due(sys);
                watchdog
            }
            Err(e) => {
                say_error(sys, format!("watchdog: cannot open {device}: {e}"));
                Self::off()
            }
        }
    }

    /// Send a keepalive if one is due. A failure is logged once until a keepalive works again.
    pub fn pet_if_due(&mut self, sys: &mut dyn InitSys) {
        let State::Armed {
            interval,
            next_due,
            failing,
        } = &mut self.state
        else {
            return;
        };
        let now = sys.now();
        if now < *next_due {
            return;
        }
        *next_due = now + *interval;
        match sys.watchdog_keepalive() {
            Ok(()) => *failing = false,
            Err(e) => {
                if !*failing {
                    *failing = true;
                    say_error(sys, format!("watchdog keepalive failed: {e}"));
                }
            }
        }
    }

    /// When the next keepalive is due (`None` without a watchdog).
    pub fn next_due(&self) -> Option<Instant> {
        match self.state {
            State::Off => None,
            State::Armed { next_due, .. } => Some(next_due),
        }
    }

    pub fn is_armed(&self) -> bool {
        matches!(self.state, State::Armed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, FakeSys};

    #[test]
    fn absent_device_is_logged_once_and_never_fed() {
        let mut fake = FakeSys::new();
        let mut watchdog = Watchdog::start(&mut fake, &WatchdogOptions::default());
        assert!(!watchdog.is_armed());
        for _ in 0..5 {
            fake.state().now += Duration::from_secs(20);
            watchdog.pet_if_due(&mut fake);
        }
        assert_eq!(
            fake.console_lines(),
            vec!["metanode: watchdog: no /dev/watchdog; running without one"]
        );
        assert!(!fake.calls().contains(&Call::WatchdogKeepalive));
    }

    #[test]
    fn feeds_every_third_of_the_reported_timeout() {
        let mut fake = FakeSys::new();
        fake.state().watchdog_device = Some("/dev/watchdog".into());
        fake.state().watchdog_timeout_s = Some(30);
        let mut watchdog = Watchdog::start(&mut fake, &WatchdogOptions::default());
        assert!(fake.calls().contains(&Call::WatchdogOpen {
            path: "/dev/watchdog".into(),
            timeout_s: 30
        }));
        // One second steps for a minute.
        for _ in 0..60 {
            fake.state().now += Duration::from_secs(1);
            watchdog.pet_if_due(&mut fake);
        }
        let start = fake.at(Duration::ZERO);
        let offsets: Vec<u64> = fake
            .state()
            .watchdog_keepalives
            .iter()
            .map(|t| (*t - start).as_secs())
            .collect();
        assert_eq!(offsets, vec![0, 10, 20, 30, 40, 50, 60]);
        assert_eq!(
            fake.console_lines(),
            vec!["metanode: watchdog: /dev/watchdog armed, timeout 30s"]
        );
    }

    #[test]
    fn timeout_is_clamped_and_unknown_driver_timeout_feeds_every_second() {
        let mut fake = FakeSys::new();
        fake.state().watchdog_device = Some("/dev/watchdog".into());
        let options = WatchdogOptions {
            timeout: Duration::from_secs(1),
            ..WatchdogOptions::default()
        };
        let watchdog = Watchdog::start(&mut fake, &options);
        assert!(fake.calls().contains(&Call::WatchdogOpen {
            path: "/dev/watchdog".into(),
            timeout_s: WATCHDOG_TIMEOUT_MIN.as_secs() as u32
        }));
        assert_eq!(
            watchdog.next_due(),
            Some(fake.now() + WATCHDOG_PET_INTERVAL_UNKNOWN)
        );
    }
}
