//! The receipt file (`.dlr`) and its JSON view.
//!
//! A `.dlr` file is exactly the canonical bytes of a [`SignedRecord`]: no
//! header, no framing, so `BLAKE3(0x13 || file[..len - 96])` is the record
//! hash and the last 96 bytes are signer and signature. That is what
//! `metanode docklock verify RECEIPT` reads. The JSON view
//! ([`SignedRecord::to_json_pretty`]) is for people: hex for every byte
//! field, names for every code; it is never parsed back, hashed or signed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use metanode_core::encoding::{Decode, DecodeError, Encode, EncodeError};
use serde::Serialize;

use crate::limits::RECEIPT_FILE_SIZE_BYTES_MAX;
use crate::record::{ExitKind, SignedRecord, ViolationKind, namespaces};

/// File name extension of a binary receipt.
pub const RECEIPT_FILE_EXTENSION: &str = "dlr";

/// Why a receipt file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadReceiptError {
    #[error("cannot {action} receipt {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("receipt {} is not a regular file", .path.display())]
    NotRegularFile { path: PathBuf },
    #[error("receipt {} is {size_bytes} bytes; a receipt is at most {size_bytes_max} bytes", .path.display())]
    TooLarge {
        path: PathBuf,
        size_bytes: u64,
        size_bytes_max: u64,
    },
    #[error("receipt {} is not a valid docklock record: {source}", .path.display())]
    Decode { path: PathBuf, source: DecodeError },
}

/// Why a receipt file could not be written. On failure the destination is
/// untouched.
#[derive(Debug, thiserror::Error)]
pub enum WriteReceiptError {
    #[error("receipt does not fit the canonical encoding: {0}")]
    Encode(#[from] EncodeError),
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl SignedRecord {
    /// Reads and decodes a `.dlr` file. Decoding only: call
    /// [`SignedRecord::verify`] (or `verify_with`) on the result.
    pub fn read_file(path: &Path) -> Result<SignedRecord, ReadReceiptError> {
        let io_err = |action: &'static str| {
            move |source: io::Error| ReadReceiptError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = File::open(path).map_err(io_err("open"))?;
        let meta = file.metadata().map_err(io_err("stat"))?;
        if !meta.is_file() {
            return Err(ReadReceiptError::NotRegularFile {
                path: path.to_path_buf(),
            });
        }
        let too_large = |size_bytes| ReadReceiptError::TooLarge {
            path: path.to_path_buf(),
            size_bytes,
            size_bytes_max: RECEIPT_FILE_SIZE_BYTES_MAX,
        };
        if meta.len() > RECEIPT_FILE_SIZE_BYTES_MAX {
            return Err(too_large(meta.len()));
        }
        // Bounded again while reading: the file may grow after the stat.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(RECEIPT_FILE_SIZE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read"))?;
        if bytes.len() as u64 > RECEIPT_FILE_SIZE_BYTES_MAX {
            return Err(too_large(bytes.len() as u64));
        }
        SignedRecord::from_canonical_bytes(&bytes).map_err(|source| ReadReceiptError::Decode {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the canonical bytes to `path` atomically (temporary file in the
    /// same directory, fsync, rename, fsync of the directory), mode 0644:
    /// a receipt is public.
    pub fn write_file(&self, path: &Path) -> Result<(), WriteReceiptError> {
        let bytes = self.to_canonical_bytes()?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io_err = |action: &'static str, at: &Path| {
            let at = at.to_path_buf();
            move |source: io::Error| WriteReceiptError::Io {
                action,
                path: at,
                source,
            }
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".receipt-")
            .tempfile_in(&dir)
            .map_err(io_err("create a temporary file in", &dir))?;
        tmp.write_all(&bytes)
            .map_err(io_err("write temporary receipt for", path))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_err("set permissions of temporary receipt for", path))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("sync temporary receipt for", path))?;
        tmp.persist(path)
            .map_err(|e| io_err("rename temporary receipt to", path)(e.error))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", &dir))?;
        Ok(())
    }

    /// A human-readable view: hex for byte fields, names for codes, and the
    /// record hash (null if the record breaks an encoding bound).
    pub fn to_json_pretty(&self) -> String {
        let r = &self.record;
        let d = &r.decision;
        let view = SignedView {
            format: "metanode docklock record v1",
            record_hash: r.hash().ok().map(|h| h.to_hex()),
            signer: hex::encode(self.signer),
            signature: hex::encode(self.signature),
            header: HeaderView {
                node: hex::encode(r.header.node),
                service: &r.header.service,
                agreement: hex::encode(r.header.agreement),
                input_root: hex::encode(r.header.input_root),
                rng_seed: hex::encode(r.header.rng_seed),
                env_root: hex::encode(r.header.env_root),
                logical_time_ns: r.header.logical_time_ns,
            },
            roots: RootsView {
                events_root: hex::encode(r.roots.events_root),
                outputs_root: hex::encode(r.roots.outputs_root),
                state_delta_root: hex::encode(r.roots.state_delta_root),
            },
            decision: DecisionView {
                seccomp_digest: hex::encode(d.seccomp_digest),
                landlock_status: d.landlock_status,
                landlock_abi: d.landlock_abi,
                cgroup_mode: d.cgroup_mode,
                namespaces: NamespacesView {
                    mask: d.namespaces,
                    names: namespaces::names(d.namespaces),
                },
                exit: match &d.exit {
                    ExitKind::Exited(code) => ExitView::Exited { code: *code },
                    ExitKind::Signaled(signal) => ExitView::Signaled { signal: *signal },
                    ExitKind::Failed(reason) => ExitView::Failed { reason },
                },
                violations: d
                    .violations
                    .iter()
                    .map(|v| ViolationView {
                        kind: v.kind.name(),
                        syscall_nr: match &v.kind {
                            ViolationKind::Syscall { nr, .. } => Some(*nr),
                            _ => None,
                        },
                        syscall_name: match &v.kind {
                            ViolationKind::Syscall { name, .. } => Some(name),
                            _ => None,
                        },
                        access: match &v.kind {
                            ViolationKind::Landlock { access } => Some(access),
                            _ => None,
                        },
                        output: match &v.kind {
                            ViolationKind::Output { action, mode, path } => Some(OutputView {
                                action: action.name(),
                                mode: format!("{mode:o}"),
                                path,
                            }),
                            _ => None,
                        },
                        detail: &v.detail,
                    })
                    .collect(),
                violations_dropped_count: d.violations_dropped_count,
                verdict: d.verdict.name(),
            },
        };
        serde_json::to_string_pretty(&view).expect("the view has only string keys and plain values")
    }
}

#[derive(Serialize)]
struct SignedView<'a> {
    format: &'static str,
    record_hash: Option<String>,
    signer: String,
    signature: String,
    header: HeaderView<'a>,
    roots: RootsView,
    decision: DecisionView<'a>,
}

#[derive(Serialize)]
struct HeaderView<'a> {
    node: String,
    service: &'a str,
    agreement: String,
    input_root: String,
    rng_seed: String,
    env_root: String,
    logical_time_ns: u64,
}

#[derive(Serialize)]
struct RootsView {
    events_root: String,
    outputs_root: String,
    state_delta_root: String,
}

#[derive(Serialize)]
struct DecisionView<'a> {
    seccomp_digest: String,
    landlock_status: u8,
    landlock_abi: u8,
    cgroup_mode: u8,
    namespaces: NamespacesView,
    exit: ExitView<'a>,
    violations: Vec<ViolationView<'a>>,
    violations_dropped_count: u64,
    verdict: &'static str,
}

#[derive(Serialize)]
struct NamespacesView {
    mask: u16,
    names: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ExitView<'a> {
    Exited { code: u8 },
    Signaled { signal: u8 },
    Failed { reason: &'a str },
}

#[derive(Serialize)]
struct ViolationView<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    syscall_nr: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syscall_name: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<OutputView<'a>>,
    detail: &'a str,
}

#[derive(Serialize)]
struct OutputView<'a> {
    action: &'static str,
    /// Octal, as `ls -l` and chmod read it.
    mode: String,
    path: &'a String,
}
