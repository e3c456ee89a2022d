//! The IPFS data model on the agent's store: UnixFS add, CAR import and
//! export, file reads. The logic above is pure; this module only moves
//! blocks between it and [`Store`], keeping two rules:
//!
//! - A block is acknowledged (and a root pinned) only after it is durable,
//!   and the DAG is held against GC from its first block to its root's pin.
//! - A failed import pins nothing and acknowledges nothing. The blocks it
//!   already wrote stay unpinned and unreachable from any pin, so the next
//!   GC removes them. They are not deleted on the spot: a concurrent import
//!   may have found the same block already stored and be about to pin a DAG
//!   that needs it (GC's mark phase sees that; a blind delete would not).

use std::collections::HashSet;
use std::io::{Read, Write};

use bytes::Bytes;
use metanode_core::cid::{CODEC_DAG_PB, ContentId};
use metanode_core::dagpb;
use metanode_store::{GetError, PendingPuts, PutError, Store};

use crate::Block;
use crate::car::{CarReadError, CarReader, CarWriteError, CarWriter};
use crate::importer::{ImportOptions, ImportSummary, Importer};
use crate::reader::ReadError;
use crate::source::{BlockSource, SourceError};
use crate::traverse::{CarBlocks, DagScope, EntityBytes};

impl BlockSource for Store {
    /// Every read is verified against the CID by the store.
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError> {
        match self.get(cid) {
            Ok(data) => Ok(Bytes::from(data)),
            Err(GetError::NotFound(_)) => Err(SourceError::NotFound(*cid)),
            Err(e) => Err(SourceError::Other {
                cid: *cid,
                reason: e.to_string(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("reading the input at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("storing blocks: {0}")]
    Put(#[from] PutError),
    #[error("pinning root {cid}: {why}")]
    Pin { cid: ContentId, why: String },
}

/// Blocks handed to the store per call: big enough that one group commit
/// covers many of them, small enough to bound memory.
const ADD_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Batches queued at once: bounds an import's memory to about
/// `ADD_BATCH_BYTES * (ADD_BATCHES_IN_FLIGHT_MAX + 1)`.
const ADD_BATCHES_IN_FLIGHT_MAX: usize = 4;
/// Input read size: 1 MiB reads keep syscalls few; a leaf never spans two
/// reads' buffers without the importer joining them.
const ADD_READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Writes batches of blocks while the caller produces the next: up to
/// [`ADD_BATCHES_IN_FLIGHT_MAX`] batches sit in the writer queue, so hashing
/// the next batch overlaps the writes and fsyncs of the previous ones (with
/// one batch in flight an import waited on every fdatasync and ran at a
/// fraction of one core).
struct BatchWriter<'s> {
    store: &'s Store,
    in_flight: std::collections::VecDeque<PendingPuts>,
    blocks_new_count: u64,
}

impl<'s> BatchWriter<'s> {
    fn new(store: &'s Store) -> Self {
        Self {
            store,
            in_flight: std::collections::VecDeque::new(),
            blocks_new_count: 0,
        }
    }

    fn settle_oldest(&mut self) -> Result<(), PutError> {
        if let Some(p) = self.in_flight.pop_front() {
            let outcomes = p.wait()?;
            self.blocks_new_count += outcomes.iter().filter(|o| !o.existed).count() as u64;
        }
        Ok(())
    }

    /// Wait until every queued block is durable.
    fn settle(&mut self) -> Result<(), PutError> {
        let mut first_err = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.settle_oldest() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Queue `blocks` (drained), first waiting for the oldest batch when
    /// the pipeline is full.
    fn send(&mut self, blocks: &mut Vec<Block>) -> Result<(), PutError> {
        let batch: Vec<(ContentId, Bytes)> = blocks.drain(..).map(|b| (b.cid, b.data)).collect();
        while self.in_flight.len() >= ADD_BATCHES_IN_FLIGHT_MAX {
            self.settle_oldest()?;
        }
        if !batch.is_empty() {
            self.in_flight
                .push_back(self.store.put_blocks_queued(&batch, false)?);
        }
        Ok(())
    }

    /// After a failure: let queued ops finish so none is in flight when the
    /// caller sees the error.
    fn abandon(mut self) {
        let _ = self.settle();
    }
}

fn batch_bytes(blocks: &[Block]) -> usize {
    blocks.iter().map(|b| b.data.len()).sum()
}

/// Import `input` as a UnixFS file (Kubo's `ipfs add --cid-version 1`
/// layout for the given options) and, when `pin`, pin its root. `progress`
/// gets the number of input bytes consumed so far.
pub fn add_file(
    store: &Store,
    input: &mut dyn Read,
    options: ImportOptions,
    pin: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportSummary, AddError> {
    let _hold = store.gc_hold();
    let mut writer = BatchWriter::new(store);
    let result = (|| {
        let mut importer = Importer::new(options);
        let mut out: Vec<Block> = Vec::new();
        let mut offset = 0u64;
        loop {
            // A fresh buffer per read, so leaves slice it without copying.
            let mut buf = bytes::BytesMut::zeroed(ADD_READ_BUFFER_BYTES);
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(AddError::Read { offset, source }),
            };
            buf.truncate(n);
            importer.push_bytes(buf.freeze(), &mut out);
            offset += n as u64;
            progress(offset);
            if batch_bytes(&out) >= ADD_BATCH_BYTES {
                writer.send(&mut out)?;
            }
        }
        let summary = importer.finish(&mut out);
        writer.send(&mut out)?;
        writer.settle()?;
        if pin {
            store
                .set_pinned(&summary.root, true)
                .map_err(|e| AddError::Pin {
                    cid: summary.root,
                    why: e.to_string(),
                })?;
        }
        Ok(summary)
    })();
    if result.is_err() {
        writer.abandon();
    }
    result
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarImportReport {
    pub roots: Vec<ContentId>,
    /// Sections read (a block repeated in the CAR counts each time).
    pub blocks_count: u64,
    /// Blocks that were not in the store before.
    pub blocks_new_count: u64,
    pub block_bytes: u64,
    pub pinned: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CarImportError {
    #[error(transparent)]
    Car(#[from] CarReadError),
    #[error("storing blocks: {0}")]
    Put(#[from] PutError),
    #[error(
        "car is incomplete: block {missing} (linked from {parent}) is neither in the car nor in the store; nothing was imported"
    )]
    Missing {
        missing: ContentId,
        parent: ContentId,
    },
    #[error("car block {cid} is not valid dag-pb: {why}; nothing was imported")]
    BadDagPb { cid: ContentId, why: String },
    #[error("car has no roots; nothing was imported")]
    NoRoots,
    #[error("root {0} is neither in the car nor in the store; nothing was imported")]
    MissingRoot(ContentId),
    #[error("pinning root {cid}: {why}")]
    Pin { cid: ContentId, why: String },
}

/// Import a CARv1/CARv2: every block is verified against its CID (by the
/// reader, and again by the store), and unless `allow_partial` every DAG
/// under the roots must be complete (each link's block in the CAR or
/// already stored). On success the roots are pinned when `pin` (never with
/// `allow_partial`); on any
/// error nothing is pinned (see the module docs for what GC does then).
pub fn import_car(
    store: &Store,
    input: &mut dyn Read,
    pin: bool,
    allow_partial: bool,
) -> Result<CarImportReport, CarImportError> {
    // An incomplete DAG is never pinned: a pin promises the whole DAG.
    let pin = pin && !allow_partial;
    let _hold = store.gc_hold();
    let mut writer = BatchWriter::new(store);
    let result = (|| {
        let reader = CarReader::new(input)?;
        let roots = reader.roots().to_vec();
        if roots.is_empty() && !allow_partial {
            return Err(CarImportError::NoRoots);
        }
        let mut seen: HashSet<ContentId> = HashSet::new();
        // (parent, child) for every dag-pb link, checked once all is read.
        let mut links: Vec<(ContentId, ContentId)> = Vec::new();
        let mut out: Vec<Block> = Vec::new();
        let mut report = CarImportReport {
            roots: roots.clone(),
            blocks_count: 0,
            blocks_new_count: 0,
            block_bytes: 0,
            pinned: false,
        };
        for item in reader {
            let (cid, data) = item?;
            report.blocks_count += 1;
            report.block_bytes += data.len() as u64;
            if !seen.insert(cid.to_v1()) {
                continue;
            }
            if cid.codec() == CODEC_DAG_PB && !allow_partial {
                let children = dagpb::links(&data).map_err(|e| CarImportError::BadDagPb {
                    cid,
                    why: e.to_string(),
                })?;
                links.extend(children.into_iter().map(|c| (cid, c)));
            }
            out.push(Block { cid, data });
            if batch_bytes(&out) >= ADD_BATCH_BYTES {
                writer.send(&mut out)?;
            }
        }
        writer.send(&mut out)?;
        writer.settle()?;
        if !allow_partial {
            for root in &roots {
                if !seen.contains(&root.to_v1()) && !store.contains(root) {
                    return Err(CarImportError::MissingRoot(*root));
                }
            }
            for (parent, child) in &links {
                if !seen.contains(&child.to_v1()) && !store.contains(child) {
                    return Err(CarImportError::Missing {
                        missing: *child,
                        parent: *parent,
                    });
                }
            }
        }
        report.blocks_new_count = writer.blocks_new_count;
        if pin {
            for root in &roots {
                store
                    .set_pinned(root, true)
                    .map_err(|e| CarImportError::Pin {
                        cid: *root,
                        why: e.to_string(),
                    })?;
            }
            report.pinned = !roots.is_empty();
        }
        Ok(report)
    })();
    if result.is_err() {
        writer.abandon();
    }
    result
}

#[derive(Debug, thiserror::Error)]
pub enum CarExportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] CarWriteError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarExportReport {
    pub blocks_count: u64,
    pub car_bytes: u64,
}

/// Write the CARv1 a trustless gateway would send for `root` with
/// `scope` / `entity_bytes` (DFS pre-order, no duplicates).
pub fn export_car<W: Write>(
    store: &Store,
    root: ContentId,
    scope: DagScope,
    entity_bytes: Option<EntityBytes>,
    sink: W,
) -> Result<(CarExportReport, W), CarExportError> {
    let mut car = CarWriter::new(sink, &[root])?;
    let mut blocks_count = 0;
    for item in CarBlocks::new(store, root, scope, entity_bytes) {
        let (cid, data) = item?;
        car.write_block(&cid, &data)?;
        blocks_count += 1;
    }
    let car_bytes = car.bytes_written();
    let sink = car.finish()?;
    Ok((
        CarExportReport {
            blocks_count,
            car_bytes,
        },
        sink,
    ))
}
