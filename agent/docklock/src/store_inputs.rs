//! Declared inputs named by CID: read from a node's blob store (verified by the store's read
//! path), written to a private temporary file, and recorded in the receipt by CID rather than
//! by a digest of the file. The launcher refuses a multi-threaded caller, so the store is opened
//! read-only (no writer thread) with plain pread I/O (io_uring may add kernel worker threads to
//! this process) and closed before the cage starts.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use metanode_core::cid::{CODEC_DAG_PB, CODEC_RAW, ContentId};
use metanode_core::limits::API_READ_WINDOW_BYTES;
use metanode_store::{IoMode, Store, StoreOptions};
use metanode_unixfs::UnixFsFile;
use metanode_witness::{InputDigest, InputRef};

use crate::limits::EXECUTABLE_INPUT_SIZE_BYTES_MAX;
use crate::spec::DeclaredInput;

/// An input named `NAME=CID` on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidInput {
    pub name: String,
    pub cid: ContentId,
}

/// Why CID inputs could not be read from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreInputError {
    #[error("--input-cid {text:?}: expected NAME=CID")]
    Syntax { text: String },
    #[error("--input-cid {name}={text}: not a CID: {reason}")]
    BadCid {
        name: String,
        text: String,
        reason: String,
    },
    #[error("--input-cid needs --data-dir DIR (the store the blobs are read from)")]
    NoStore,
    #[error("data dir {} does not exist", .0.display())]
    NoDataDir(PathBuf),
    #[error("opening the store in {dir}: {reason}")]
    Open { dir: PathBuf, reason: String },
    #[error("input {name}: {cid} is not in the store in {dir}")]
    NotFound {
        name: String,
        cid: ContentId,
        dir: PathBuf,
    },
    #[error(
        "input {name}: {cid} has codec {codec:#x}; only raw blobs (0x55) and UnixFS files (dag-pb, 0x70) can be inputs"
    )]
    Codec {
        name: String,
        cid: ContentId,
        codec: u64,
    },
    #[error(
        "input {name}: {cid} is {size_bytes} bytes, more than {EXECUTABLE_INPUT_SIZE_BYTES_MAX}"
    )]
    TooLarge {
        name: String,
        cid: ContentId,
        size_bytes: u64,
    },
    #[error("input {name}: reading {cid} from the store in {dir}: {reason}")]
    Read {
        name: String,
        cid: ContentId,
        dir: PathBuf,
        reason: String,
    },
    #[error("input {name}: writing {}: {source}", path.display())]
    Write {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Parse `NAME=CID`.
pub fn parse_cid_input(text: &str) -> Result<CidInput, StoreInputError> {
    let (name, cid_text) = text
        .split_once('=')
        .ok_or_else(|| StoreInputError::Syntax {
            text: text.to_string(),
        })?;
    let cid = cid_text
        .parse::<ContentId>()
        .map_err(|e| StoreInputError::BadCid {
            name: name.to_string(),
            text: cid_text.to_string(),
            reason: e.to_string(),
        })?;
    Ok(CidInput {
        name: name.to_string(),
        cid,
    })
}

/// The receipt's record of an input named by CID.
pub fn cid_input_ref(name: &str, cid: &ContentId, size_bytes: u64) -> InputRef {
    InputRef {
        name: name.to_string(),
        digest: InputDigest::Cid(cid.to_bytes()),
        size_bytes,
    }
}

/// Read every input from the store in `data_dir` into its own file under `scratch` (a private
/// directory the caller removes after the run). Returns the inputs to copy into the cage and
/// their receipt records, in the order given. Nothing is run when any input fails.
pub fn materialize(
    data_dir: &Path,
    inputs: &[CidInput],
    scratch: &Path,
) -> Result<Vec<(DeclaredInput, InputRef)>, StoreInputError> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if !dir.is_dir() {
        return Err(StoreInputError::NoDataDir(dir));
    }
    let mut opts = StoreOptions::new(&dir);
    opts.read_only = true;
    opts.io = IoMode::Posix;
    let store = Store::open(opts).map_err(|e| StoreInputError::Open {
        dir: dir.clone(),
        reason: e.to_string(),
    })?;
    let result = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            // The index keeps two inputs apart whatever their names (names are checked later,
            // with the other declared inputs, by the spec).
            let path = scratch.join(format!("input-{index}"));
            let size_bytes = write_blob(&store, &dir, input, &path)?;
            Ok((
                DeclaredInput {
                    name: input.name.clone(),
                    source: path,
                },
                cid_input_ref(&input.name, &input.cid, size_bytes),
            ))
        })
        .collect();
    // Read-only: no writer to stop, so closing cannot lose anything.
    let _ = store.close();
    result
}

/// Write the verified bytes of `input.cid` (a raw blob, or a UnixFS file read through its DAG)
/// to a new file at `path`; returns the size. `dir` names the store in messages. Also used by the
/// agent, which reads its own open store for API runs.
pub fn write_blob(
    store: &Store,
    dir: &Path,
    input: &CidInput,
    path: &Path,
) -> Result<u64, StoreInputError> {
    let (name, cid) = (&input.name, input.cid);
    let read_error = |reason: String| StoreInputError::Read {
        name: name.clone(),
        cid,
        dir: dir.to_path_buf(),
        reason,
    };
    if !store.contains(&cid) {
        return Err(StoreInputError::NotFound {
            name: name.clone(),
            cid,
            dir: dir.to_path_buf(),
        });
    }
    let write_error = |source| StoreInputError::Write {
        name: name.clone(),
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(write_error)?;
    let too_large = |size_bytes| StoreInputError::TooLarge {
        name: name.clone(),
        cid,
        size_bytes,
    };
    match cid.codec() {
        CODEC_RAW => {
            let size = store
                .stat(&cid)
                .map_err(|e| read_error(e.to_string()))?
                .ok_or_else(|| StoreInputError::NotFound {
                    name: name.clone(),
                    cid,
                    dir: dir.to_path_buf(),
                })?
                .size_bytes;
            if size > EXECUTABLE_INPUT_SIZE_BYTES_MAX {
                return Err(too_large(size));
            }
            let mut offset = 0;
            while offset < size {
                let n = API_READ_WINDOW_BYTES.min(size - offset);
                let window = store
                    .read_range(&cid, offset, n)
                    .map_err(|e| read_error(e.to_string()))?;
                file.write_all(&window).map_err(write_error)?;
                offset += n;
            }
        }
        CODEC_DAG_PB => {
            let reader = UnixFsFile::open(store, cid).map_err(|e| read_error(e.to_string()))?;
            if reader.size_bytes() > EXECUTABLE_INPUT_SIZE_BYTES_MAX {
                return Err(too_large(reader.size_bytes()));
            }
            for piece in reader.all() {
                let piece = piece.map_err(|e| read_error(e.to_string()))?;
                file.write_all(&piece).map_err(write_error)?;
            }
        }
        codec => {
            return Err(StoreInputError::Codec {
                name: name.clone(),
                cid,
                codec,
            });
        }
    }
    file.sync_all().map_err(write_error)?;
    let size_bytes = file.metadata().map_err(write_error)?.len();
    Ok(size_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_unixfs_blobs_become_files_recorded_by_cid() {
        let _no_fork = crate::test_fork_guard();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let store = Store::open(StoreOptions::new(&data_dir)).unwrap();
        let raw = store.put(b"hello cage", true).unwrap().cid;
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let unixfs = metanode_unixfs::stored::add_file(
            &store,
            &mut &big[..],
            metanode_unixfs::ImportOptions::default(),
            true,
            &mut |_| {},
        )
        .unwrap()
        .root;
        store.close().unwrap();

        let inputs = [
            CidInput {
                name: "a".into(),
                cid: raw,
            },
            CidInput {
                name: "b".into(),
                cid: unixfs,
            },
        ];
        let got = materialize(&data_dir, &inputs, &scratch).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(std::fs::read(&got[0].0.source).unwrap(), b"hello cage");
        assert_eq!(got[0].1, cid_input_ref("a", &raw, 10));
        assert_eq!(got[0].1.digest, InputDigest::Cid(raw.to_bytes()));
        assert_eq!(std::fs::read(&got[1].0.source).unwrap(), big);
        assert_eq!(got[1].1.size_bytes, big.len() as u64);
        assert_eq!(got[1].0.name, "b");
    }

    #[test]
    fn unknown_and_unreadable_cids_are_named() {
        let _no_fork = crate::test_fork_guard();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let store = Store::open(StoreOptions::new(&data_dir)).unwrap();
        store.close().unwrap();
        let absent = metanode_core::cid::ContentId::from_key(
            CODEC_RAW,
            metanode_core::cid::BlockKey::blake3(*blake3::hash(b"absent").as_bytes()),
        );
        let err = materialize(
            &data_dir,
            &[CidInput {
                name: "x".into(),
                cid: absent,
            }],
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "input x: {absent} is not in the store in {}",
                data_dir.display()
            )
        );
        let err = materialize(
            &dir.path().join("nope"),
            &[CidInput {
                name: "x".into(),
                cid: absent,
            }],
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, StoreInputError::NoDataDir(_)), "{err}");

        assert_eq!(
            parse_cid_input("x").unwrap_err().to_string(),
            "--input-cid \"x\": expected NAME=CID"
        );
        let err = parse_cid_input("x=bafknope").unwrap_err().to_string();
        assert!(
            err.starts_with("--input-cid x=bafknope: not a CID: "),
            "{err}"
        );
        assert_eq!(
            parse_cid_input(&format!("data={absent}")).unwrap(),
            CidInput {
                name: "data".into(),
                cid: absent
            }
        );
    }
}
