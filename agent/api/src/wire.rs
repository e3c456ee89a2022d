//! JSON bodies of the HTTP API. The CLI (`metanode store … --json`) prints
//! the same shapes whether it opened the store itself or asked an agent, so a
//! script never has to care which path it took.

use metanode_core::cid::ContentId;
use metanode_store::{BlobStat, GcReport, StorageKind, VerifyReport};
use serde::{Deserialize, Serialize};

/// Every non-2xx response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` while serving, `draining` once shutdown has begun.
    pub status: String,
    pub version: String,
    /// The store's I/O backend (`io_uring` or `posix`).
    pub io: String,
}

/// `POST /api/v1/blobs` (201 new, 200 when `existed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub cid: String,
    pub size: u64,
    pub existed: bool,
}

/// Where a blob's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Packed into a segment file under `packs/`.
    Inline,
    /// Its own file (with a bao outboard) under `blobs/`.
    External,
}

/// `GET /api/v1/blobs/{cid}/stat` and one entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub cid: String,
    pub size: u64,
    pub pinned: bool,
    pub storage: Storage,
    pub compressed: bool,
}

impl BlobInfo {
    pub fn new(cid: &ContentId, stat: &BlobStat) -> Self {
        Self {
            cid: cid.to_string(),
            size: stat.size_bytes,
            pinned: stat.pinned,
            storage: match stat.storage {
                StorageKind::Inline => Storage::Inline,
                StorageKind::External => Storage::External,
            },
            compressed: stat.compressed,
        }
    }
}

/// `GET /api/v1/blobs?after=CID&limit=N`: one page, ordered by cid string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    pub blobs: Vec<BlobInfo>,
    /// Pass as `after` to fetch the next page; `None` on the last page.
    pub next: Option<String>,
}

/// `DELETE /api/v1/blobs/{cid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResponse {
    pub cid: String,
    pub removed: bool,
}

/// `POST|DELETE /api/v1/pins/{cid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinResponse {
    pub cid: String,
    pub pinned: bool,
}

/// `POST /api/v1/gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    pub blobs_removed: u64,
    pub segments_compacted: u64,
    pub bytes_reclaimed: u64,
    pub orphans_removed: u64,
    /// Segments left alone because they hold damaged live records.
    pub segments_skipped_damaged: u64,
}

impl From<GcReport> for GcResponse {
    fn from(r: GcReport) -> Self {
        Self {
            blobs_removed: r.blobs_removed,
            segments_compacted: r.segments_compacted,
            bytes_reclaimed: r.bytes_reclaimed,
            orphans_removed: r.orphans_removed,
            segments_skipped_damaged: r.segments_skipped_damaged,
        }
    }
}

/// One damaged item found by verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedBlob {
    /// `None` when the damage is not attributable to one blob (e.g. a torn
    /// segment header).
    pub cid: Option<String>,
    pub location: String,
    pub reason: String,
}

/// `POST /api/v1/verify`. Damage is a successful answer (200) — the report
/// is the result; the CLI turns a non-empty `damaged` into a failing exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<DamagedBlob>,
}

impl From<VerifyReport> for VerifyResponse {
    fn from(r: VerifyReport) -> Self {
        Self {
            blobs_checked: r.blobs_checked,
            bytes_checked: r.bytes_checked,
            damaged: r
                .damaged
                .into_iter()
                .map(|d| DamagedBlob {
                    cid: d.cid.map(|c| c.to_string()),
                    location: d.location,
                    reason: d.reason,
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/store`: what the store is and how full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub io: String,
    pub io_reason: String,
    pub blobs_count: u64,
    pub bytes_logical: u64,
    pub segments_count: u64,
    pub segment_bytes: u64,
}

/// `POST /api/v1/unixfs` (201): the file's root CID, as `ipfs add
/// --cid-version 1` with the same chunker and hash prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixfsAddResponse {
    pub cid: String,
    /// File bytes imported.
    pub size: u64,
    /// Blocks the importer produced (a repeated chunk counts each time).
    pub blocks: u64,
    pub chunk_size: u64,
    /// `sha2-256` or `blake3`.
    pub hash: String,
    pub pinned: bool,
}

/// `POST /api/v1/car` (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarImportResponse {
    pub roots: Vec<String>,
    /// Sections read from the CAR.
    pub blocks: u64,
    /// Blocks that were not stored before.
    pub blocks_new: u64,
    /// Block bytes read from the CAR.
    pub bytes: u64,
    /// Whether the roots were pinned.
    pub pinned: bool,
}

/// `GET /api/v1/system`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub version: String,
    pub hostname: String,
    /// `a` or `b` when booted from a slot; `direct` when the kernel was
    /// loaded without the boot loader (QEMU -kernel).
    pub slot: String,
    /// The boot loader entry that booted (systemd-boot's LoaderEntrySelected).
    pub boot_entry: Option<String>,
    pub slots: Vec<SlotInfo>,
    /// Human summary of the last update, e.g. that it was rolled back.
    pub update_note: Option<String>,
    pub kernel_release: String,
    pub kernel_cmdline: String,
    /// Every key of the sysctl policy with the value read live from /proc/sys.
    pub sysctl: std::collections::BTreeMap<String, String>,
    pub addresses: Vec<String>,
    pub uptime_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub slot: String,
    pub file: Option<String>,
    /// good, trial, bad or empty.
    pub state: String,
    pub tries_left: Option<u32>,
    pub booted: bool,
}

/// `POST /api/v1/system/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    pub slot: String,
    pub file: String,
    pub tries: u32,
    pub signer: String,
    pub size: u64,
    /// What happens next, for the operator.
    pub next: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    Reboot,
    Poweroff,
}

/// `POST /api/v1/system/{reboot|poweroff}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerResponse {
    pub action: PowerAction,
    pub status: String,
}

/// `POST /api/v1/config?mode=try`, `POST /api/v1/config/commit`, `GET /api/v1/config/trial`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigTryReport {
    /// none, pending, committed or reverted.
    pub state: String,
    /// Unix seconds by which a pending trial must be committed.
    pub deadline_unix_s: Option<u64>,
    pub message: String,
}
