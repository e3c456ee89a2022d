//! Every bound of the slots crate, in one place.

/// Most boot attempts an update may be given before systemd-boot stops preferring it. Each
/// failed attempt costs a reboot (and a watchdog timeout), so more than a handful only delays
/// the fallback.
pub const TRIES_COUNT_MAX: u32 = 10;

/// Boot attempts an update gets when the caller has no opinion.
pub const TRIES_COUNT_DEFAULT: u32 = 3;

/// Largest UKI we read into memory to verify and install. A kernel plus our initramfs is well
/// under 100 MiB; the ESP is typically 512 MiB and must hold two of them plus one being written.
pub const UKI_SIZE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Largest `.osrel` section we parse (an os-release file is a few hundred bytes).
pub const OSREL_SIZE_BYTES_MAX: u64 = 64 * 1024;

/// Largest EFI variable file we read from efivarfs (an entry id is a file name: at most 255
/// UTF-16 units plus the 4-byte attribute header).
pub const EFIVAR_SIZE_BYTES_MAX: u64 = 4096;

/// Most WIN_CERTIFICATE entries we look at in one PE (sbsign writes one; sbattach can append).
pub const SIGNATURES_COUNT_MAX: usize = 8;

/// Largest node config file accepted by `config_try`.
pub const CONFIG_SIZE_BYTES_MAX: u64 = 1024 * 1024;

/// Largest trial marker file we parse (it is a small JSON object).
pub const TRIAL_MARKER_SIZE_BYTES_MAX: u64 = 16 * 1024;

/// Shortest try window: less cannot survive a reconnect of the operator's client.
pub const TRIAL_TIMEOUT_S_MIN: u64 = 10;

/// Longest try window: a trial is meant to be confirmed by a person who is watching.
pub const TRIAL_TIMEOUT_S_MAX: u64 = 24 * 60 * 60;

/// Longest `who` string recorded in the trial marker.
pub const TRIAL_WHO_BYTES_MAX: usize = 256;

const _: () = assert!(TRIES_COUNT_DEFAULT >= 1 && TRIES_COUNT_DEFAULT <= TRIES_COUNT_MAX);
// systemd-boot rejects counters above INT_MAX and treats the file as having none.
const _: () = assert!(TRIES_COUNT_MAX <= i32::MAX as u32);
const _: () = assert!(OSREL_SIZE_BYTES_MAX < UKI_SIZE_BYTES_MAX);
const _: () = assert!(TRIAL_TIMEOUT_S_MIN < TRIAL_TIMEOUT_S_MAX);
const _: () = assert!(TRIAL_WHO_BYTES_MAX as u64 * 6 < TRIAL_MARKER_SIZE_BYTES_MAX);
const _: () = assert!(UKI_SIZE_BYTES_MAX <= usize::MAX as u64);
