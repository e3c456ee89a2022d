//! Applying an OS update: verify the signed UKI, then install it into the inactive slot as a
//! trial that systemd-boot tries first and abandons after `tries` failed boots.

use std::fmt;
use std::path::Path;

use crate::authenticode::{self, TrustedCert, TrustedCertError, VerifyError};
use crate::esp::{Esp, InstallError, ScanError, Slot, SlotState, Status};
use crate::fsutil::{self, ReadBoundedError};
use crate::limits::UKI_SIZE_BYTES_MAX;

/// What [`apply_update`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateReport {
    /// The slot written (the one not booted).
    pub slot: Slot,
    pub generation: u64,
    /// The new UKI's file name, e.g. `metanode-6-b+3.efi`: systemd-boot boots it next.
    pub entry: String,
    pub tries: u32,
    /// Subject of the certificate that signed the image.
    pub signer_subject: String,
    /// Hex Authenticode SHA-256 of the image.
    pub authenticode_sha256: String,
    /// Files removed from the slot (its previous UKI, stale temp files).
    pub removed: Vec<String>,
}

/// Why an update was not applied. Every variant before `Install` means nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    TrustedCert(#[from] TrustedCertError),
    #[error("cannot read the update {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the update {path} is larger than {UKI_SIZE_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("refusing the update {path}: {source}")]
    Verify { path: String, source: VerifyError },
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("booted entry {id:?} is not a metanode slot; cannot tell which slot is inactive")]
    BootedUnknown { id: String },
    #[error(
        "the booted slot {slot} ({entry}) is still in trial ({state:?}): mark it good or let it roll back before updating"
    )]
    BootedInTrial {
        slot: Slot,
        entry: String,
        state: SlotState,
    },
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// Verifies the UKI at `uki_path` against `trusted_cert_pem` and installs *those verified bytes*
/// into the slot not booted, with `tries` boot attempts. Refuses while the booted slot is itself
/// a trial: overwriting the other slot then would destroy the only known-good image.
pub fn apply_update(
    esp: &Esp,
    booted_entry_id: &str,
    uki_path: &Path,
    trusted_cert_pem: &[u8],
    tries: u32,
) -> Result<UpdateReport, UpdateError> {
    let trusted = TrustedCert::from_pem(trusted_cert_pem)?;
    let path = uki_path.display().to_string();
    let image = fsutil::read_bounded(uki_path, UKI_SIZE_BYTES_MAX).map_err(|e| match e {
        ReadBoundedError::Io(source) => UpdateError::Read {
            path: path.clone(),
            source,
        },
        ReadBoundedError::TooLarge => UpdateError::TooLarge { path: path.clone() },
    })?;
    let verified =
        authenticode::verify_pe(&image, &trusted).map_err(|source| UpdateError::Verify {
            path: path.clone(),
            source,
        })?;

    let status = esp.status(Some(booted_entry_id))?;
    let booted = status.booted.ok_or_else(|| UpdateError::BootedUnknown {
        id: booted_entry_id.to_owned(),
    })?;
    let booted_status = status.slot(booted);
    if booted_status.state != SlotState::Good {
        return Err(UpdateError::BootedInTrial {
            slot: booted,
            entry: booted_status
                .file
                .clone()
                .unwrap_or_else(|| booted_entry_id.to_owned()),
            state: booted_status.state,
        });
    }

    let installed = esp.install_bytes(esp.inactive_slot(booted), &image, tries)?;
    Ok(UpdateReport {
        slot: installed.slot,
        generation: installed.generation,
        entry: installed.file_name,
        tries,
        signer_subject: verified.signer_subject,
        authenticode_sha256: verified
            .authenticode_sha256
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        removed: installed.removed,
    })
}

/// "The last update was rolled back": the running system booted the good slot while the other
/// slot's image ran out of tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackReport {
    pub running_slot: Slot,
    pub running_entry: String,
    pub failed_slot: Slot,
    pub failed_entry: String,
    pub failed_generation: u64,
    /// Boot attempts the failed image got.
    pub attempts: u32,
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the last update was rolled back: {} (generation {}, slot {}) failed {} boot attempt{} without being \
             marked good; running {} from slot {}",
            self.failed_entry,
            self.failed_generation,
            self.failed_slot,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.running_entry,
            self.running_slot,
        )
    }
}

/// Some(report) if the booted slot is good and the other slot is bad, i.e. the last update
/// failed its boots and systemd-boot fell back.
pub fn rollback_report(status: &Status) -> Option<RollbackReport> {
    let running = status.slot(status.booted?);
    if running.state != SlotState::Good {
        return None;
    }
    let failed = status.slot(running.slot.other());
    let SlotState::Bad { done } = failed.state else {
        return None;
    };
    Some(RollbackReport {
        running_slot: running.slot,
        running_entry: running.file.clone()?,
        failed_slot: failed.slot,
        failed_entry: failed.file.clone()?,
        failed_generation: failed.generation?,
        attempts: done,
    })
}

#[cfg(test)]
mod tests;
