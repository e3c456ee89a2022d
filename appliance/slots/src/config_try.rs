//! Try → commit → automatic revert for the node config file, shared through the data partition.
//!
//! The agent receives "apply this config, revert unless I confirm within T"; PID 1 owns the timer
//! and reverts when the deadline passes — also across reboots, because the state is files:
//!
//! | file                 | meaning                                                          |
//! |----------------------|------------------------------------------------------------------|
//! | `config.yaml`        | the config the node runs (the new one while a trial is pending) |
//! | `config.yaml.prev`   | the config before the trial (only while a trial is pending)      |
//! | `config.yaml.next`   | the new config, staged (only inside `try_apply`)                 |
//! | `config.trial.json`  | the trial marker: deadline, who, when, hashes of both configs    |
//! | `config.lock`        | `flock`ed by every operation, so PID 1 and the agent serialize   |
//!
//! The marker is the commit point of every operation. A crash at any point leaves `config.yaml`
//! holding either the old or the new config — never neither — and [`recover`] (run by every
//! operation, and by PID 1 at boot) finishes or discards the interrupted step:
//! - `try_apply`: write `prev` (copy of current), write `next`, write the marker, rename `next`
//!   over `config.yaml`. Before the marker exists, the trial never happened (stale `prev`/`next`
//!   are removed); after it, the trial is pending and a leftover `next` is rolled forward.
//! - `commit`: remove the marker (committed), then remove `prev`.
//! - `revert`: rename `prev` over `config.yaml` (or remove it if there was none), then remove the
//!   marker. A marker whose `prev` is gone means a revert was cut short; it is finished, after
//!   checking `config.yaml` is the previous config by hash.
//!
//! Times are unix seconds passed in by the caller, so the logic is pure and testable; the
//! deadline is wall-clock, as it must survive a reboot.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil::{self, ReadBoundedError};
use crate::limits::{
    CONFIG_SIZE_BYTES_MAX, TRIAL_MARKER_SIZE_BYTES_MAX, TRIAL_TIMEOUT_S_MAX, TRIAL_TIMEOUT_S_MIN,
    TRIAL_WHO_BYTES_MAX,
};

pub const CONFIG_FILE: &str = "config.yaml";
pub const PREV_FILE: &str = "config.yaml.prev";
pub const NEXT_FILE: &str = "config.yaml.next";
pub const TRIAL_FILE: &str = "config.trial.json";
pub const LOCK_FILE: &str = "config.lock";

const MARKER_VERSION: u32 = 1;

/// The trial marker, `config.trial.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub version: u32,
    pub started_unix_s: u64,
    pub deadline_unix_s: u64,
    /// Who asked for the trial (API client identity), for the audit trail and the console.
    pub who: String,
    /// Hex SHA-256 of the config being tried.
    pub new_sha256: String,
    /// Hex SHA-256 of the config before the trial; None if there was no config.
    pub prev_sha256: Option<String>,
}

/// What [`check`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialState {
    /// No trial: `config.yaml` is committed.
    None,
    /// A trial runs until `deadline_unix_s`.
    Pending { deadline_unix_s: u64 },
    /// The deadline passed without a commit: the caller (PID 1) must [`revert`].
    Expired { deadline_unix_s: u64 },
}

/// A failure reading or writing the state files; names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is larger than {max_bytes} bytes")]
    TooLarge { path: String, max_bytes: u64 },
    #[error("{path} is not a valid trial marker: {reason}")]
    BadMarker { path: String, reason: String },
    #[error(
        "{path} does not match the trial marker (sha256 {actual}, marker says {expected}); not touching it"
    )]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path} is missing although the trial marker needs it")]
    Missing { path: String },
}

/// Why [`try_apply`] refused or failed. On refusal nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error("config is {size_bytes} bytes, more than {CONFIG_SIZE_BYTES_MAX}")]
    TooLarge { size_bytes: u64 },
    #[error("timeout {timeout_s} s is outside {TRIAL_TIMEOUT_S_MIN}..={TRIAL_TIMEOUT_S_MAX} s")]
    TimeoutOutOfRange { timeout_s: u64 },
    #[error("who is {len_bytes} bytes, more than {TRIAL_WHO_BYTES_MAX}")]
    WhoTooLong { len_bytes: usize },
    #[error(
        "a trial by {who:?} is already in progress (deadline {deadline_unix_s}); commit or revert it first"
    )]
    TrialInProgress { who: String, deadline_unix_s: u64 },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why [`commit`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("no config trial to commit")]
    NoTrial,
    #[error("the trial expired at {deadline_unix_s} (now {now_unix_s}); it must be reverted")]
    Expired {
        deadline_unix_s: u64,
        now_unix_s: u64,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why [`revert`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error("no config trial to revert")]
    NoTrial,
    #[error(transparent)]
    State(#[from] StateError),
}

/// What [`revert`] restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reverted {
    pub trial: Trial,
    /// False when there was no config before the trial (it was removed).
    pub restored_previous: bool,
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Points where a test can simulate a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    TryPrevWritten,
    TryNextWritten,
    TryMarkerWritten,
    CommitMarkerRemoved,
    RevertRestored,
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path(name);
        match fsutil::read_bounded(&path, max_bytes) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(ReadBoundedError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(ReadBoundedError::Io(source)) => Err(StateError::Io {
                path: path.display().to_string(),
                source,
            }),
            Err(ReadBoundedError::TooLarge) => Err(StateError::TooLarge {
                path: path.display().to_string(),
                max_bytes,
            }),
        }
    }

    fn read_config(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.read(name, CONFIG_SIZE_BYTES_MAX)
    }

    fn marker(&self) -> Result<Option<Trial>, StateError> {
        let Some(bytes) = self.read(TRIAL_FILE, TRIAL_MARKER_SIZE_BYTES_MAX)? else {
            return Ok(None);
        };
        let path = self.path(TRIAL_FILE).display().to_string();
        let trial: Trial = serde_json::from_slice(&bytes).map_err(|e| StateError::BadMarker {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if trial.version != MARKER_VERSION {
            return Err(StateError::BadMarker {
                path,
                reason: format!("unknown version {}", trial.version),
            });
        }
        Ok(Some(trial))
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        fsutil::replace_atomically(&self.dir, name, bytes).map_err(io_err(&self.path(name)))
    }

    fn remove(&self, name: &str) -> Result<bool, StateError> {
        let path = self.path(name);
        fsutil::remove_if_exists(&path).map_err(io_err(&path))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), StateError> {
        let from = self.path(from);
        fs::rename(&from, self.path(to)).map_err(io_err(&from))
    }

    fn sync(&self) -> Result<(), StateError> {
        fsutil::fsync_dir(&self.dir).map_err(io_err(&self.dir))
    }

    fn check_hash(&self, name: &str, bytes: &[u8], expected: &str) -> Result<(), StateError> {
        let actual = hex_sha256(bytes);
        if actual != expected {
            return Err(StateError::HashMismatch {
                path: self.path(name).display().to_string(),
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    /// Serializes PID 1 and the agent; released when the returned file is dropped.
    fn lock(&self) -> Result<File, StateError> {
        let path = self.path(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.lock().map_err(io_err(&path))?;
        Ok(file)
    }

    /// See the module docs: finish or discard whatever a crash interrupted.
    fn recover(&self) -> Result<(), StateError> {
        let Some(trial) = self.marker()? else {
            // No marker: no trial ever started (or it was committed); staging files are stale.
            let removed_next = self.remove(NEXT_FILE)?;
            let removed_prev = self.remove(PREV_FILE)?;
            if removed_next || removed_prev {
                self.sync()?;
            }
            return Ok(());
        };
        if let Some(next) = self.read_config(NEXT_FILE)? {
            // try_apply stopped between the marker and the final rename: roll forward.
            self.check_hash(NEXT_FILE, &next, &trial.new_sha256)?;
            self.rename(NEXT_FILE, CONFIG_FILE)?;
            return self.sync();
        }
        let revert_was_cut = match &trial.prev_sha256 {
            Some(_) => !self.path(PREV_FILE).exists(),
            None => !self.path(CONFIG_FILE).exists(),
        };
        if revert_was_cut {
            if let Some(prev_sha256) = &trial.prev_sha256 {
                let current =
                    self.read_config(CONFIG_FILE)?
                        .ok_or_else(|| StateError::Missing {
                            path: self.path(CONFIG_FILE).display().to_string(),
                        })?;
                self.check_hash(CONFIG_FILE, &current, prev_sha256)?;
            }
            self.remove(TRIAL_FILE)?;
            self.sync()?;
        }
        Ok(())
    }
}

fn files(dir: &Path) -> Files {
    Files {
        dir: dir.to_owned(),
    }
}

/// Finishes or discards an operation a crash interrupted. PID 1 runs it at boot before reading
/// the config; every other operation runs it first too.
pub fn recover(dir: &Path) -> Result<(), StateError> {
    let f = files(dir);
    let _lock = f.lock()?;
    f.recover()
}

/// The config the node should run now (after [`recover`]); None if there is none.
pub fn read_active(dir: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let f = files(dir);
    let _lock = f.lock()?;
    f.recover()?;
    f.read_config(CONFIG_FILE)
}

/// Starts a trial: `new_yaml` becomes `config.yaml` now, the previous one is kept, and unless
/// [`commit`] is called before `now + timeout` the trial is [`TrialState::Expired`].
pub fn try_apply(
    dir: &Path,
    new_yaml: &[u8],
    timeout: Duration,
    now_unix_s: u64,
    who: &str,
) -> Result<Trial, TryError> {
    match try_apply_steps(dir, new_yaml, timeout, now_unix_s, who, None)? {
        Some(trial) => Ok(trial),
        None => unreachable!("try_apply_steps stops early only when asked to"),
    }
}

pub(crate) fn try_apply_steps(
    dir: &Path,
    new_yaml: &[u8],
    timeout: Duration,
    now_unix_s: u64,
    who: &str,
    stop_after: Option<Step>,
) -> Result<Option<Trial>, TryError> {
    if new_yaml.len() as u64 > CONFIG_SIZE_BYTES_MAX {
        return Err(TryError::TooLarge {
            size_bytes: new_yaml.len() as u64,
        });
    }
    let timeout_s = timeout.as_secs();
    if !(TRIAL_TIMEOUT_S_MIN..=TRIAL_TIMEOUT_S_MAX).contains(&timeout_s) {
        return Err(TryError::TimeoutOutOfRange { timeout_s });
    }
    if who.len() > TRIAL_WHO_BYTES_MAX {
        return Err(TryError::WhoTooLong {
            len_bytes: who.len(),
        });
    }
    let deadline_unix_s = now_unix_s
        .checked_add(timeout_s)
        .ok_or(TryError::TimeoutOutOfRange { timeout_s })?;

    let f = files(dir);
    let _lock = f.lock()?;
    f.recover()?;
    if let Some(trial) = f.marker()? {
        return Err(TryError::TrialInProgress {
            who: trial.who,
            deadline_unix_s: trial.deadline_unix_s,
        });
    }

    let current = f.read_config(CONFIG_FILE)?;
    match &current {
        Some(bytes) => f.replace(PREV_FILE, bytes)?,
        None => {
            f.remove(PREV_FILE)?;
        }
    }
    if stop_after == Some(Step::TryPrevWritten) {
        return Ok(None);
    }
    f.replace(NEXT_FILE, new_yaml)?;
    if stop_after == Some(Step::TryNextWritten) {
        return Ok(None);
    }
    let trial = Trial {
        version: MARKER_VERSION,
        started_unix_s: now_unix_s,
        deadline_unix_s,
        who: who.to_owned(),
        new_sha256: hex_sha256(new_yaml),
        prev_sha256: current.as_deref().map(hex_sha256),
    };
    let marker = serde_json::to_vec_pretty(&trial).map_err(|e| StateError::BadMarker {
        path: f.path(TRIAL_FILE).display().to_string(),
        reason: e.to_string(),
    })?;
    f.replace(TRIAL_FILE, &marker)?;
    if stop_after == Some(Step::TryMarkerWritten) {
        return Ok(None);
    }
    f.rename(NEXT_FILE, CONFIG_FILE)?;
    f.sync()?;
    Ok(Some(trial))
}

/// Where the trial stands at `now_unix_s`. Read-only.
pub fn check(dir: &Path, now_unix_s: u64) -> Result<TrialState, StateError> {
    let f = files(dir);
    let _lock = f.lock()?;
    Ok(match f.marker()? {
        None => TrialState::None,
        Some(t) if now_unix_s < t.deadline_unix_s => TrialState::Pending {
            deadline_unix_s: t.deadline_unix_s,
        },
        Some(t) => TrialState::Expired {
            deadline_unix_s: t.deadline_unix_s,
        },
    })
}

/// Makes the tried config permanent. Refused after the deadline: by then PID 1 may be reverting.
pub fn commit(dir: &Path, now_unix_s: u64) -> Result<Trial, CommitError> {
    match commit_steps(dir, now_unix_s, None)? {
        Some(trial) => Ok(trial),
        None => unreachable!("commit_steps stops early only when asked to"),
    }
}

pub(crate) fn commit_steps(
    dir: &Path,
    now_unix_s: u64,
    stop_after: Option<Step>,
) -> Result<Option<Trial>, CommitError> {
    let f = files(dir);
    let _lock = f.lock()?;
    f.recover()?;
    let trial = f.marker()?.ok_or(CommitError::NoTrial)?;
    if now_unix_s >= trial.deadline_unix_s {
        return Err(CommitError::Expired {
            deadline_unix_s: trial.deadline_unix_s,
            now_unix_s,
        });
    }
    let current = f
        .read_config(CONFIG_FILE)?
        .ok_or_else(|| StateError::Missing {
            path: f.path(CONFIG_FILE).display().to_string(),
        })?;
    f.check_hash(CONFIG_FILE, &current, &trial.new_sha256)?;
    f.remove(TRIAL_FILE)?;
    f.sync()?;
    if stop_after == Some(Step::CommitMarkerRemoved) {
        return Ok(None);
    }
    if f.remove(PREV_FILE)? {
        f.sync()?;
    }
    Ok(Some(trial))
}

/// Puts the previous config back and ends the trial (pending or expired).
pub fn revert(dir: &Path) -> Result<Reverted, RevertError> {
    match revert_steps(dir, None)? {
        Some(reverted) => Ok(reverted),
        None => unreachable!("revert_steps stops early only when asked to"),
    }
}

pub(crate) fn revert_steps(
    dir: &Path,
    stop_after: Option<Step>,
) -> Result<Option<Reverted>, RevertError> {
    let f = files(dir);
    let _lock = f.lock()?;
    f.recover()?;
    let trial = f.marker()?.ok_or(RevertError::NoTrial)?;
    match &trial.prev_sha256 {
        Some(prev_sha256) => {
            let prev = f
                .read_config(PREV_FILE)?
                .ok_or_else(|| StateError::Missing {
                    path: f.path(PREV_FILE).display().to_string(),
                })?;
            f.check_hash(PREV_FILE, &prev, prev_sha256)?;
            f.rename(PREV_FILE, CONFIG_FILE)?;
        }
        None => {
            f.remove(CONFIG_FILE)?;
        }
    }
    f.sync()?;
    if stop_after == Some(Step::RevertRestored) {
        return Ok(None);
    }
    f.remove(TRIAL_FILE)?;
    f.sync()?;
    Ok(Some(Reverted {
        restored_previous: trial.prev_sha256.is_some(),
        trial,
    }))
}

#[cfg(test)]
mod tests;
