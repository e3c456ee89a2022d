//! Scrub: read every stored byte and check it against its hash.

use std::fs::File;
use std::io::Read;

use metanode_core::cid::{ContentId, HashKind};

use crate::index::Storage;
use crate::{GetError, Store, large};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The blob that is damaged, when the damage can be tied to one.
    pub cid: Option<ContentId>,
    /// File and offset.
    pub location: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<Damaged>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProgress {
    pub blobs_checked: u64,
    pub blobs_total: u64,
    pub bytes_checked: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verify could not read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

pub(crate) fn run(
    store: &Store,
    progress: &dyn Fn(VerifyProgress),
) -> Result<VerifyReport, VerifyError> {
    let inner = store.inner();
    let mut report = VerifyReport::default();
    // Damage that no index entry points at (torn/garbled records in sealed
    // segments) is still worth reporting: it may have been a live blob whose
    // newest record was lost.
    let segments: Vec<_> = inner.segments.read().values().cloned().collect();
    for seg in &segments {
        let damaged = std::cell::RefCell::new(Vec::new());
        let res = crate::scan::for_each_record(
            &seg.path,
            |found| {
                // A framed record whose checksum fails. If the index points
                // at it, the per-blob pass below reports it; otherwise (e.g.
                // in the active segment, where such a record is not trusted)
                // report it here, naming the key its header claims.
                let indexed = inner
                    .index
                    .get(&found.header.key)
                    .is_some_and(|e| e.segment_id == seg.id && e.offset == found.offset);
                if !found.crc_ok && !indexed {
                    let h = found.header;
                    damaged.borrow_mut().push(Damaged {
                        cid: (h.kind == crate::record::RecordKind::Inline)
                            .then(|| ContentId::from_key(h.codec as u64, h.key)),
                        location: format!("{}+{}", seg.path.display(), found.offset),
                        reason: format!("{:?} record fails its checksum", h.kind),
                    });
                }
            },
            |off, why| {
                damaged.borrow_mut().push(Damaged {
                    cid: None,
                    location: format!("{}+{off}", seg.path.display()),
                    reason: why,
                })
            },
        );
        report.damaged.extend(damaged.into_inner());
        if let Err(source) = res {
            // The segment may have been compacted away while we ran.
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(VerifyError::Read {
                    path: seg.path.display().to_string(),
                    source,
                });
            }
        }
    }
    let all = inner.index.snapshot();
    let total = all.len() as u64;
    for (key, entry) in all {
        let cid = ContentId::from_key(entry.codec as u64, key);
        let outcome = match entry.storage {
            Storage::Inline => store.get(&cid).map(|_| ()),
            Storage::External => verify_external(store, &cid, entry.size_bytes),
        };
        match outcome {
            Ok(()) => {}
            Err(GetError::NotFound(_)) => continue, // deleted meanwhile
            Err(GetError::Corrupt { reason, .. }) => report.damaged.push(Damaged {
                cid: Some(cid),
                location: match entry.storage {
                    Storage::Inline => format!(
                        "{}+{}",
                        inner.dirs.segment_path(entry.segment_id).display(),
                        entry.offset
                    ),
                    Storage::External => inner.dirs.data_path(&key).display().to_string(),
                },
                reason,
            }),
            Err(other) => report.damaged.push(Damaged {
                cid: Some(cid),
                location: "read".into(),
                reason: other.to_string(),
            }),
        }
        report.blobs_checked += 1;
        report.bytes_checked += entry.size_bytes;
        if report.blobs_checked % 1024 == 0 || report.blobs_checked == total {
            progress(VerifyProgress {
                blobs_checked: report.blobs_checked,
                blobs_total: total,
                bytes_checked: report.bytes_checked,
            });
        }
    }
    Ok(report)
}

/// Stream the whole file through the hasher (no 1 GiB buffer) and check
/// the outboard is the one the data implies.
fn verify_external(store: &Store, cid: &ContentId, size_bytes: u64) -> Result<(), GetError> {
    let inner = store.inner();
    let key = cid.key();
    let corrupt = |reason: String| GetError::Corrupt { cid: *cid, reason };
    let path = inner.dirs.data_path(&key);
    let mut f =
        File::open(&path).map_err(|e| corrupt(format!("data file {}: {e}", path.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut group = large::GroupHasher::new();
    let mut sha = sha2_state(key.kind);
    loop {
        let n = f.read(&mut buf).map_err(|e| GetError::Io {
            cid: *cid,
            source: e,
        })?;
        if n == 0 {
            break;
        }
        group.update(&buf[..n]);
        if let Some(s) = sha.as_mut() {
            use sha2::Digest;
            s.update(&buf[..n]);
        }
    }
    if group.size_bytes() != size_bytes {
        return Err(corrupt(format!(
            "data file is {} bytes, expected {size_bytes}",
            group.size_bytes()
        )));
    }
    match key.kind {
        HashKind::Blake3 => {
            let (root, outboard) = group.finish();
            if root != key.digest {
                return Err(corrupt("content does not match its hash".into()));
            }
            if size_bytes > large::GROUP_BYTES as u64 {
                let ob_path = inner.dirs.outboard_path(&key);
                let stored = std::fs::read(&ob_path)
                    .map_err(|e| corrupt(format!("outboard {}: {e}", ob_path.display())))?;
                if stored != outboard {
                    return Err(corrupt(format!(
                        "outboard {} does not match the data",
                        ob_path.display()
                    )));
                }
            }
        }
        HashKind::Sha2_256 => {
            use sha2::Digest;
            let digest: [u8; 32] = sha.expect("sha state").finalize().into();
            if digest != key.digest {
                return Err(corrupt("content does not match its hash".into()));
            }
        }
    }
    Ok(())
}

fn sha2_state(kind: HashKind) -> Option<sha2::Sha256> {
    use sha2::Digest;
    (kind == HashKind::Sha2_256).then(sha2::Sha256::new)
}
