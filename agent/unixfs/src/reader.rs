//! Reading UnixFS files out of a DAG: the size, and any byte range as a
//! stream of zero-copy pieces, fetching only the blocks that overlap the
//! range (subtrees are skipped by their `blocksizes`).
//!
//! Every node is checked before it is trusted: dag-pb decodes strictly, the
//! UnixFS type is File or Raw, `blocksizes` has one entry per link, `filesize`
//! (when present) equals the node's data plus its blocksizes, each child is
//! exactly as large as its parent says, and the DAG is at most
//! [`FILE_DEPTH_MAX`] deep. Hashes are not re-checked here: a
//! [`BlockSource`] verifies every block it returns.
//!
//! A raw root is read as one block, whatever its size: the store's large
//! BLAKE3 blobs (one raw block of any size) should be served with the
//! store's own verified range reads, not through this module.

use bytes::Bytes;
use metanode_core::cid::{CODEC_DAG_PB, CODEC_RAW, CidParseError, ContentId};
use metanode_core::dagpb::{self, DagPbError};

use crate::data::{DataType, UnixFsData, UnixFsError};
use crate::limits::FILE_DEPTH_MAX;
use crate::source::{BlockSource, SourceError};

/// Why a file (or a DAG under traversal) could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{cid} is a UnixFS {kind}, not a file")]
    NotAFile { cid: ContentId, kind: &'static str },
    #[error("{cid} is not valid dag-pb: {source}")]
    DagPb {
        cid: ContentId,
        #[source]
        source: Box<DagPbError>,
    },
    #[error("{cid} has invalid UnixFS data: {source}")]
    UnixFs {
        cid: ContentId,
        #[source]
        source: UnixFsError,
    },
    #[error("{cid} is a UnixFS {kind} node inside a file")]
    UnexpectedNodeType { cid: ContentId, kind: DataType },
    #[error("{cid} has {blocksizes_count} blocksizes for {links_count} links")]
    BlocksizesMismatch {
        cid: ContentId,
        blocksizes_count: usize,
        links_count: usize,
    },
    #[error("{cid} says filesize {filesize} but its data and blocksizes add up to {content_bytes}")]
    FilesizeMismatch {
        cid: ContentId,
        filesize: u64,
        content_bytes: u64,
    },
    #[error("{cid} has blocksizes whose sum overflows 64 bits")]
    SizeOverflow { cid: ContentId },
    #[error(
        "{cid} holds {actual_bytes} bytes of the file but its parent {parent} says {expected_bytes}"
    )]
    ChildSizeMismatch {
        cid: ContentId,
        parent: ContentId,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    #[error("{cid} is deeper than {depth_max} levels below the root")]
    TooDeep { cid: ContentId, depth_max: usize },
    /// The source names the link's CID bytes in hex.
    #[error("{cid} link {index} cannot be fetched: {source}")]
    UnsupportedLink {
        cid: ContentId,
        index: usize,
        #[source]
        source: CidParseError,
    },
    #[error("{cid} is a HAMT shard with fanout {fanout:?}; expected a power of two from 2 to 4096")]
    HamtFanout { cid: ContentId, fanout: Option<u64> },
    #[error("{cid} is linked as a HAMT sub-shard but is not one ({kind})")]
    HamtChild { cid: ContentId, kind: &'static str },
    #[error("byte range {from}..={to_inclusive:?} is not within the file's {size_bytes} bytes")]
    RangeInvalid {
        from: u64,
        to_inclusive: Option<u64>,
        size_bytes: u64,
    },
}

/// A validated file root: its size is known and ranges can be read.
#[derive(Debug, Clone)]
pub struct UnixFsFile<S> {
    source: S,
    root: ContentId,
    root_block: Bytes,
    size_bytes: u64,
}

impl<S: BlockSource> UnixFsFile<S> {
    /// Fetch and check the root: a raw block (a one-chunk file) or a dag-pb
    /// UnixFS File/Raw node. Directories, symlinks, HAMT shards and non-UnixFS
    /// dag-pb are [`ReadError::NotAFile`].
    pub fn open(source: S, root: ContentId) -> Result<Self, ReadError> {
        let root_block = source.block(&root)?;
        let size_bytes = match root.codec() {
            CODEC_DAG_PB => {
                let node = dagpb::decode_ref(&root_block).map_err(|source| ReadError::DagPb {
                    cid: root,
                    source: Box::new(source),
                })?;
                let unixfs = unixfs_of(root, node.data)?;
                file_node_size(root, &unixfs, node.links.len(), 0)?
            }
            _ => root_block.len() as u64,
        };
        Ok(Self {
            source,
            root,
            root_block,
            size_bytes,
        })
    }

    pub fn root(&self) -> &ContentId {
        &self.root
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Stream bytes `from..=to_inclusive` (`None`: to the end). The range
    /// must lie within the file (`from == size` is allowed with `None`, so
    /// an empty file can be read whole).
    pub fn range(self, from: u64, to_inclusive: Option<u64>) -> Result<FileRange<S>, ReadError> {
        let invalid = ReadError::RangeInvalid {
            from,
            to_inclusive,
            size_bytes: self.size_bytes,
        };
        let to_exclusive = match to_inclusive {
            None if from <= self.size_bytes => self.size_bytes,
            Some(to) if from <= to && to < self.size_bytes => to + 1,
            _ => return Err(invalid),
        };
        Ok(FileRange {
            walk: FileWalk::new(self.root, self.root_block, from, to_exclusive),
            source: self.source,
        })
    }

    /// Stream the whole file.
    pub fn all(self) -> FileRange<S> {
        let size_bytes = self.size_bytes;
        FileRange {
            walk: FileWalk::new(self.root, self.root_block, 0, size_bytes),
            source: self.source,
        }
    }
}

/// Size of the file at `root`.
pub fn file_size<S: BlockSource>(source: S, root: ContentId) -> Result<u64, ReadError> {
    Ok(UnixFsFile::open(source, root)?.size_bytes())
}

/// File bytes of a range, in order, as slices of the blocks that hold them.
#[derive(Debug)]
pub struct FileRange<S> {
    source: S,
    walk: FileWalk,
}

impl<S: BlockSource> FileRange<S> {
    /// Open `root` and stream `from..=to_inclusive` (see [`UnixFsFile::range`]).
    pub fn new(
        source: S,
        root: ContentId,
        from: u64,
        to_inclusive: Option<u64>,
    ) -> Result<Self, ReadError> {
        UnixFsFile::open(source, root)?.range(from, to_inclusive)
    }
}

impl<S: BlockSource> Iterator for FileRange<S> {
    type Item = Result<Bytes, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.walk.next(&self.source)? {
                Ok(visit) => {
                    if let Some(piece) = visit.piece {
                        return Some(Ok(piece));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The UnixFS data of a dag-pb node, or why it has none.
pub(crate) fn unixfs_of(cid: ContentId, data: Option<&[u8]>) -> Result<UnixFsData<'_>, ReadError> {
    let Some(data) = data else {
        return Err(ReadError::NotAFile {
            cid,
            kind: "dag-pb node without data",
        });
    };
    UnixFsData::decode(data).map_err(|source| ReadError::UnixFs { cid, source })
}

/// Check a File/Raw node's sizes; returns the bytes of file it stands for.
pub(crate) fn file_node_size(
    cid: ContentId,
    unixfs: &UnixFsData<'_>,
    links_count: usize,
    depth: usize,
) -> Result<u64, ReadError> {
    match unixfs.kind {
        DataType::File | DataType::Raw => {}
        kind if depth == 0 => {
            return Err(ReadError::NotAFile {
                cid,
                kind: kind.name(),
            });
        }
        kind => return Err(ReadError::UnexpectedNodeType { cid, kind }),
    }
    if unixfs.blocksizes.len() != links_count {
        return Err(ReadError::BlocksizesMismatch {
            cid,
            blocksizes_count: unixfs.blocksizes.len(),
            links_count,
        });
    }
    let content_bytes = unixfs
        .content_size_bytes()
        .ok_or(ReadError::SizeOverflow { cid })?;
    if let Some(filesize) = unixfs.filesize
        && filesize != content_bytes
    {
        return Err(ReadError::FilesizeMismatch {
            cid,
            filesize,
            content_bytes,
        });
    }
    Ok(content_bytes)
}

pub(crate) fn link_cid(
    parent: ContentId,
    index: usize,
    link: &dagpb::PbLinkRef<'_>,
) -> Result<ContentId, ReadError> {
    link.cid().map_err(|source| ReadError::UnsupportedLink {
        cid: parent,
        index,
        source,
    })
}

/// A block the walk went through, and the file bytes it contributed.
#[derive(Debug)]
pub(crate) struct Visit {
    pub cid: ContentId,
    pub block: Bytes,
    pub piece: Option<Bytes>,
}

#[derive(Debug, Clone, Copy)]
struct Child {
    cid: ContentId,
    start: u64,
    size_bytes: u64,
}

#[derive(Debug)]
struct Frame {
    cid: ContentId,
    children: Vec<Child>,
    next: usize,
}

/// Depth-first, pre-order walk over the blocks of a file that overlap
/// `[from, to_exclusive)`. Shared by [`FileRange`] (which keeps the pieces)
/// and the CAR traversal (which keeps the blocks).
#[derive(Debug)]
pub(crate) struct FileWalk {
    from: u64,
    to_exclusive: u64,
    root: Option<(ContentId, Bytes)>,
    stack: Vec<Frame>,
    failed: bool,
}

impl FileWalk {
    pub(crate) fn new(root: ContentId, root_block: Bytes, from: u64, to_exclusive: u64) -> Self {
        Self {
            from,
            to_exclusive,
            root: Some((root, root_block)),
            stack: Vec::new(),
            failed: false,
        }
    }

    pub(crate) fn next<S: BlockSource>(&mut self, source: &S) -> Option<Result<Visit, ReadError>> {
        if self.failed {
            return None;
        }
        let result = if let Some((cid, block)) = self.root.take() {
            self.visit(cid, block, 0, None)
        } else {
            let (child, parent) = loop {
                let frame = self.stack.last_mut()?;
                if let Some(child) = frame.children.get(frame.next).copied() {
                    frame.next += 1;
                    break (child, frame.cid);
                }
                self.stack.pop();
            };
            match source.block(&child.cid) {
                Ok(block) => self.visit(
                    child.cid,
                    block,
                    child.start,
                    Some((parent, child.size_bytes)),
                ),
                Err(e) => Err(e.into()),
            }
        };
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }

    /// Bytes of `[start, start + len)` that fall in the range, relative to
    /// `start`.
    fn overlap(&self, start: u64, len: u64) -> Option<(usize, usize)> {
        let end = start.saturating_add(len);
        if len == 0 || end <= self.from || start >= self.to_exclusive {
            return None;
        }
        let lo = self.from.saturating_sub(start);
        let hi = self.to_exclusive.min(end) - start;
        Some((lo as usize, hi as usize))
    }

    fn visit(
        &mut self,
        cid: ContentId,
        block: Bytes,
        start: u64,
        expected: Option<(ContentId, u64)>,
    ) -> Result<Visit, ReadError> {
        let depth = self.stack.len();
        if depth > FILE_DEPTH_MAX {
            return Err(ReadError::TooDeep {
                cid,
                depth_max: FILE_DEPTH_MAX,
            });
        }
        let check_size = |actual_bytes: u64| match expected {
            Some((parent, expected_bytes)) if expected_bytes != actual_bytes => {
                Err(ReadError::ChildSizeMismatch {
                    cid,
                    parent,
                    expected_bytes,
                    actual_bytes,
                })
            }
            _ => Ok(()),
        };
        if cid.codec() == CODEC_RAW {
            check_size(block.len() as u64)?;
            let piece = self
                .overlap(start, block.len() as u64)
                .map(|(lo, hi)| block.slice(lo..hi));
            return Ok(Visit { cid, block, piece });
        }
        let node = dagpb::decode_ref(&block).map_err(|source| ReadError::DagPb {
            cid,
            source: Box::new(source),
        })?;
        let unixfs = unixfs_of(cid, node.data)?;
        let content_bytes = file_node_size(cid, &unixfs, node.links.len(), depth)?;
        check_size(content_bytes)?;
        let own = unixfs.data.unwrap_or(&[]);
        let piece = self
            .overlap(start, own.len() as u64)
            .map(|(lo, hi)| block.slice_ref(&own[lo..hi]));
        let mut children = Vec::new();
        let mut child_start = start + own.len() as u64;
        for (index, (link, &size_bytes)) in node.links.iter().zip(&unixfs.blocksizes).enumerate() {
            if self.overlap(child_start, size_bytes).is_some() {
                children.push(Child {
                    cid: link_cid(cid, index, link)?,
                    start: child_start,
                    size_bytes,
                });
            }
            // Sizes were summed with overflow checks and the parent vouched
            // for `start + content_bytes`; saturate anyway rather than trust.
            child_start = child_start.saturating_add(size_bytes);
        }
        if !children.is_empty() {
            self.stack.push(Frame {
                cid,
                children,
                next: 0,
            });
        }
        Ok(Visit { cid, block, piece })
    }
}
