//! Every bound PID 1 keeps, in one place, with the relationships between them checked at compile time.

use std::time::Duration;

/// First restart delay after a service dies.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Restart delays double up to this cap so a crash loop costs at most one spawn per 30 s.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A service that stayed up this long before dying starts again from `BACKOFF_INITIAL`.
pub const BACKOFF_RESET_AFTER_UPTIME: Duration = Duration::from_secs(60);

/// How long a service gets between SIGTERM and SIGKILL (at shutdown and on a requested restart).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for processes to disappear after SIGKILL; a process stuck in
/// uninterruptible sleep must not hold the power-off hostage.
pub const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long orphans (processes nobody supervises) get between SIGTERM and SIGKILL at shutdown.
pub const ORPHAN_TERM_WAIT: Duration = Duration::from_secs(2);
/// How often shutdown polls for exited children while it waits.
pub const SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The readiness probe interval.
pub const READINESS_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Default time the agent gets to answer `/health` with 200 before `on_not_ready` runs.
pub const READINESS_DEADLINE_DEFAULT: Duration = Duration::from_secs(120);
/// Longest readiness deadline accepted (larger values are clamped): `on_not_ready` exists to roll
/// back a bad trial boot, which must not wait forever.
pub const READINESS_DEADLINE_MAX: Duration = Duration::from_secs(3600);
/// Connect timeout of one probe (loopback: a refused or accepted connection is immediate).
pub const READINESS_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Read/write timeout of one probe; the probe runs on the main loop, so this bounds how long
/// a hung agent can delay reaping and watchdog keepalives.
pub const READINESS_IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest response head the probe reads before giving up.
pub const READINESS_RESPONSE_BYTES_MAX: usize = 8 * 1024;
/// Headers the probe's parser accepts in a response.
pub const READINESS_HEADERS_COUNT_MAX: usize = 32;

/// Default hardware watchdog timeout.
pub const WATCHDOG_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Smallest watchdog timeout accepted: one probe plus one loop wait must fit in a third of it.
pub const WATCHDOG_TIMEOUT_MIN: Duration = Duration::from_secs(12);
/// Largest watchdog timeout accepted (the i6300esb counts to about 20 minutes; keep hangs short).
pub const WATCHDOG_TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// Keepalives go out every timeout / this divisor.
pub const WATCHDOG_PET_DIVISOR: u32 = 3;
/// Keepalive interval when the driver would not tell its timeout.
pub const WATCHDOG_PET_INTERVAL_UNKNOWN: Duration = Duration::from_secs(1);

/// `config_tick` hook period.
pub const CONFIG_TICK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest the main loop sleeps without looking at its timers.
pub const LOOP_WAIT_MAX: Duration = Duration::from_secs(1);
/// Pause after the event source failed, so a broken epoll cannot spin PID 1 at 100 % CPU.
pub const LOOP_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Epoll events read per wait.
pub const EVENTS_PER_WAIT_MAX: usize = 64;
/// `input_event`s read per device per wakeup.
pub const INPUT_EVENTS_PER_READ_MAX: usize = 64;
/// `/dev/input/event*` devices scanned for a power key.
pub const INPUT_DEVICES_COUNT_MAX: usize = 64;

/// Children reaped per call before the main loop gets control back.
pub const REAP_BATCH_MAX: usize = 1024;
/// Supervised services.
pub const SERVICES_COUNT_MAX: usize = 32;
/// Effects executed per batch: spawns and their follow-ups cannot chain without bound.
pub const EFFECTS_PER_BATCH_MAX: usize = 16 * SERVICES_COUNT_MAX;

/// Lines in a sysctl policy.
pub const SYSCTL_LINES_MAX: usize = 4096;
/// Length of a sysctl key.
pub const SYSCTL_KEY_BYTES_MAX: usize = 255;
/// Length of a sysctl value.
pub const SYSCTL_VALUE_BYTES_MAX: usize = 4096;

/// HOST_NAME_MAX on Linux.
pub const HOSTNAME_BYTES_MAX: usize = 64;
/// Data mounts the caller may register for unmounting at shutdown.
pub const DATA_MOUNTS_COUNT_MAX: usize = 16;

const _: () = assert!(BACKOFF_INITIAL.as_millis() < BACKOFF_MAX.as_millis());
const _: () = assert!(BACKOFF_MAX.as_millis() < BACKOFF_RESET_AFTER_UPTIME.as_millis());
const _: () = assert!(WATCHDOG_TIMEOUT_MIN.as_millis() <= WATCHDOG_TIMEOUT_DEFAULT.as_millis());
const _: () = assert!(WATCHDOG_TIMEOUT_DEFAULT.as_millis() <= WATCHDOG_TIMEOUT_MAX.as_millis());
// The main loop may be busy for one probe plus one wait between two keepalives.
const _: () = assert!(
    READINESS_CONNECT_TIMEOUT.as_millis()
        + 2 * READINESS_IO_TIMEOUT.as_millis()
        + LOOP_WAIT_MAX.as_millis()
        < WATCHDOG_TIMEOUT_MIN.as_millis() / WATCHDOG_PET_DIVISOR as u128
);
const _: () = assert!(WATCHDOG_PET_INTERVAL_UNKNOWN.as_millis() <= LOOP_WAIT_MAX.as_millis());
// Shutdown pets the watchdog while it waits; its waits must be able to keep it fed.
const _: () =
    assert!(SHUTDOWN_POLL_INTERVAL.as_millis() < WATCHDOG_PET_INTERVAL_UNKNOWN.as_millis());
const _: () = assert!(READINESS_POLL_INTERVAL.as_millis() <= LOOP_WAIT_MAX.as_millis());
const _: () = assert!(READINESS_DEADLINE_DEFAULT.as_millis() <= READINESS_DEADLINE_MAX.as_millis());
const _: () = assert!(CONFIG_TICK_INTERVAL.as_millis() >= LOOP_WAIT_MAX.as_millis());
