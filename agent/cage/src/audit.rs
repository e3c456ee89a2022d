//! Looking receipts up and proving them.
//!
//! A response's `Metanode-Receipt: <receipt hash>; batch=N` header names a
//! receipt and the batch it goes into. [`ReceiptReader`] finds batch `N` in
//! the receipt file (through the [`BatchOffsets`] index the file's sink
//! keeps) and builds a [`ReceiptProof`]: the receipt, the batch header the
//! node key signed, and the RFC 9162 audit path from the receipt to the
//! header's Merkle root. Whoever holds the node's public key checks a proof
//! offline with [`ReceiptProof::verify`]: the node serving it is a source of
//! bytes, not of trust.
//!
//! Canonical encoding (version 1; see `receipt.rs` for the parts):
//!
//! ```text
//! ReceiptProof = version:u8(=1) BatchHeader signature[64] Receipt InclusionProof
//! ```

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use metanode_core::cid::ContentId;
use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer, decode_version};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, Signature};
use metanode_core::merkle::{InclusionProof, MerkleTree, ProofError, leaf_hash};

use crate::receipt::{
    BatchError, BatchHeader, BatchLocation, BatchOffsets, ChainTip, RawFrame, Receipt, SignedBatch,
    VerifyReceiptsError, decode_frame, read_raw_frame,
};
use crate::receipt_file::segment_path;

pub const RECEIPT_PROOF_ENCODING_VERSION: u8 = 1;
const PROOF_VERSIONS: &[u8] = &[RECEIPT_PROOF_ENCODING_VERSION];

/// Reads batches of a live receipt file while its sink appends to it.
#[derive(Clone, Debug)]
pub struct ReceiptReader {
    path: PathBuf,
    signer: PublicKey,
    offsets: BatchOffsets,
}

/// One batch as the receipt file holds it, checked against the node key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    pub batch: SignedBatch,
    /// The hash of each receipt, in order (the Merkle leaves verification
    /// computed).
    pub receipt_hashes: Vec<Hash32>,
    /// Its canonical `SignedBatch` bytes: the blob the agent stores it as.
    pub signed_batch_bytes: Vec<u8>,
    /// The receipt log segment holding it (0: the file at the log's path,
    /// N: `<path>.N`).
    pub segment: u32,
    /// Where its frame starts in that segment.
    pub offset_bytes: u64,
}

impl StoredBatch {
    /// The CID of the batch's blob in the node's content store.
    pub fn cid(&self) -> ContentId {
        ContentId::raw_blake3_of(&self.signed_batch_bytes)
    }
}

/// Why a batch or a receipt could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(
        "receipt batch {batch_index} is not in the receipt file, which holds batches 0..{batches_count}: \
         a batch is written within receipts.flush_interval_ms of its first receipt, unless the cage \
         crashed first (responses do not wait for their batch; after a crash its number is reused)"
    )]
    BatchNotWritten {
        batch_index: u64,
        batches_count: u64,
    },
    #[error(
        "receipt batch {batch_index} left the receipt log with its segment \
         (receipts.segments_kept_max: deleted, or moved to receipts.archive_dir if set); the \
         oldest batch kept is {first_batch_index}"
    )]
    BatchDeleted {
        batch_index: u64,
        first_batch_index: u64,
    },
    #[error("receipt {receipt_hash} is not in receipt batch {batch_index}")]
    ReceiptNotInBatch {
        receipt_hash: Hash32,
        batch_index: u64,
    },
    #[error("cannot read receipt batch {batch_index}: {source}")]
    Read {
        batch_index: u64,
        source: VerifyReceiptsError,
    },
    #[error(
        "receipt file {} ends inside batch {batch_index} (offset {offset}): it was cut after the batch was written",
        .path.display()
    )]
    Truncated {
        path: PathBuf,
        batch_index: u64,
        offset: u64,
    },
    #[error(
        "receipt file {}: batch {batch_index} at offset {offset} no longer verifies (changed on disk?): {source}",
        .path.display()
    )]
    Invalid {
        path: PathBuf,
        batch_index: u64,
        offset: u64,
        source: BatchError,
    },
}

impl ReceiptReader {
    /// A reader of the receipt file at `path`, signed by `signer`, whose
    /// batches `offsets` indexes (from [`crate::FileSink::batch_offsets`]).
    pub fn new(path: PathBuf, signer: PublicKey, offsets: BatchOffsets) -> ReceiptReader {
        ReceiptReader {
            path,
            signer,
            offsets,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key that signs the batches.
    pub fn signer(&self) -> PublicKey {
        self.signer
    }

    /// Batches written so far, durably: numbered `0..batches_count()`.
    pub fn batches_count(&self) -> u64 {
        self.offsets.len()
    }

    /// The oldest batch still on disk: 0 unless old segments were deleted
    /// (`receipts.segments_kept_max`).
    pub fn first_batch_index(&self) -> u64 {
        self.offsets.first()
    }

    /// Batch `batch_index`, read from the file and verified (signer,
    /// signature, index, receipt count, Merkle root) before it is returned:
    /// a batch changed on disk since it was written is reported, not served.
    /// Blocking file I/O: call it off an async runtime's workers.
    pub fn batch(&self, batch_index: u64) -> Result<StoredBatch, LookupError> {
        let deleted = || LookupError::BatchDeleted {
            batch_index,
            first_batch_index: self.offsets.first(),
        };
        if batch_index < self.offsets.first() {
            return Err(deleted());
        }
        let BatchLocation {
            segment,
            offset_bytes: offset,
        } = self.offsets.get(batch_index).ok_or_else(|| {
            // Its segment may have been deleted since the check above.
            if batch_index < self.offsets.first() {
                deleted()
            } else {
                LookupError::BatchNotWritten {
                    batch_index,
                    batches_count: self.offsets.len(),
                }
            }
        })?;
        let path = segment_path(&self.path, segment);
        let read_err = |source| LookupError::Read {
            batch_index,
            source,
        };
        let io_err = |source: io::Error| {
            read_err(VerifyReceiptsError::Io {
                path: path.clone(),
                source,
            })
        };
        let mut file = match File::open(&path) {
            Ok(file) => file,
            // Its segment was deleted since the lookup above.
            Err(_) if batch_index < self.offsets.first() => return Err(deleted()),
            Err(e) => return Err(io_err(e)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        // The stored bytes are kept (the blob's bytes) and decoded once.
        let signed_batch_bytes = match read_raw_frame(&mut file, &path, offset).map_err(read_err)? {
            RawFrame::Body(body) => body,
            RawFrame::End | RawFrame::Torn => {
                return Err(LookupError::Truncated {
                    path: path.clone(),
                    batch_index,
                    offset,
                });
            }
        };
        let batch = decode_frame(&signed_batch_bytes, &path, offset).map_err(read_err)?;
        // Its place in the chain was checked when the file was opened or
        // the batch appended; here only what one batch can show.
        let own_place = ChainTip {
            next_batch_index: batch_index,
            next_receipt_seq: batch.header.first_receipt_seq,
            prev_batch_hash: batch.header.prev_batch_hash,
        };
        let receipt_hashes = batch
            .verify_hashes(&self.signer, &own_place)
            .map_err(|source| LookupError::Invalid {
                path: path.clone(),
                batch_index,
                offset,
                source,
            })?;
        Ok(StoredBatch {
            batch,
            receipt_hashes,
            signed_batch_bytes,
            segment,
            offset_bytes: offset,
        })
    }

    /// The proof that the receipt hashing to `receipt_hash` is in batch
    /// `batch_index` (the `batch=` of its `Metanode-Receipt` header).
    pub fn prove(
        &self,
        batch_index: u64,
        receipt_hash: &Hash32,
    ) -> Result<ReceiptProof, LookupError> {
        self.batch(batch_index)?.prove(receipt_hash)
    }
}

impl StoredBatch {
    /// The proof that the receipt hashing to `receipt_hash` is in this
    /// batch.
    pub fn prove(&self, receipt_hash: &Hash32) -> Result<ReceiptProof, LookupError> {
        let batch = &self.batch;
        let not_here = || LookupError::ReceiptNotInBatch {
            receipt_hash: *receipt_hash,
            batch_index: batch.header.batch_index,
        };
        let hashes = &self.receipt_hashes;
        let position = hashes
            .iter()
            .position(|h| h == receipt_hash)
            .ok_or_else(not_here)?;
        let receipt = batch.receipts.get(position).ok_or_else(not_here)?.clone();
        let tree =
            MerkleTree::from_leaf_hashes(hashes.iter().map(|h| leaf_hash(h.as_bytes())).collect());
        let proof = tree.prove(position as u64).map_err(|_| not_here())?;
        Ok(ReceiptProof {
            header: batch.header.clone(),
            signature: batch.signature,
            receipt,
            proof,
        })
    }
}

/// A receipt, the signed header of its batch, and the audit path between
/// them: everything a client needs to check one receipt with only the
/// node's public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptProof {
    pub header: BatchHeader,
    /// The node key's signature of `header.hash()`.
    pub signature: [u8; 64],
    pub receipt: Receipt,
    /// From the receipt's leaf to `header.receipts_root`.
    pub proof: InclusionProof,
}

/// Why a [`ReceiptProof`] does not prove its receipt.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptProofError {
    #[error("the batch is signed by {found}, not by the expected node key")]
    UnexpectedSigner { found: String },
    #[error("the batch header's signature does not verify")]
    BadSignature,
    #[error("the proof is for a tree of {proof} receipts but the signed batch holds {header}")]
    TreeSize { proof: u64, header: u32 },
    #[error("the receipt breaks an encoding bound: {0}")]
    Encode(#[from] metanode_core::encoding::EncodeError),
    #[error("the receipt is not under the batch's signed Merkle root: {0}")]
    Inclusion(#[from] ProofError),
}

impl ReceiptProof {
    /// The receipt's sequence number in the whole receipt file.
    pub fn receipt_seq(&self) -> u64 {
        self.header
            .first_receipt_seq
            .saturating_add(self.proof.leaf_index)
    }

    /// Checks the proof against the node's public key: the header is signed
    /// by `signer`, the proof's tree is the header's (its size is taken from
    /// the signed header, never from the proof alone), and the receipt leads
    /// to the header's Merkle root. Returns the receipt's hash, which the
    /// caller compares with the one its `Metanode-Receipt` header named.
    pub fn verify(&self, signer: &PublicKey) -> Result<Hash32, ReceiptProofError> {
        if self.header.signer != signer.to_bytes() {
            return Err(ReceiptProofError::UnexpectedSigner {
                found: hex::encode(self.header.signer),
            });
        }
        signer
            .verify(self.header.hash().as_bytes(), &Signature(self.signature))
            .map_err(|_| ReceiptProofError::BadSignature)?;
        if self.proof.tree_size != u64::from(self.header.receipts_count) {
            return Err(ReceiptProofError::TreeSize {
                proof: self.proof.tree_size,
                header: self.header.receipts_count,
            });
        }
        let receipt_hash = self.receipt.hash()?;
        self.proof.verify_hash(
            &leaf_hash(receipt_hash.as_bytes()),
            &self.header.receipts_root,
        )?;
        Ok(receipt_hash)
    }
}

impl Encode for ReceiptProof {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(RECEIPT_PROOF_ENCODING_VERSION);
        self.header.encode(w);
        w.put_raw(&self.signature);
        self.receipt.encode(w);
        self.proof.encode(w);
    }
}

impl Decode for ReceiptProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, PROOF_VERSIONS)?;
        Ok(ReceiptProof {
            header: BatchHeader::decode(r)?,
            signature: r.read_array()?,
            receipt: Receipt::decode(r)?,
            proof: InclusionProof::decode(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use metanode_core::keys::SigningKey;

    use super::*;
    use crate::receipt::tests::sample;
    use crate::receipt::{FileSink, ReceiptSink, read_signed_batches};

    /// Batches of 1, 2, 3, 5 and 7 receipts (odd trees, a one-leaf tree),
    /// appended through a sink; returns the sink and every receipt by batch.
    fn write_batches(path: &Path, key: &SigningKey) -> (FileSink, Vec<Vec<Receipt>>) {
        let mut sink = FileSink::open(path, &key.public_key()).unwrap();
        let mut all = Vec::new();
        let mut seq = 0;
        for count in [1u64, 2, 3, 5, 7] {
            let receipts: Vec<Receipt> = (seq..seq + count).map(sample).collect();
            seq += count;
            let hashes: Vec<Hash32> = receipts.iter().map(|r| r.hash().unwrap()).collect();
            let batch = SignedBatch::seal(&sink.tip(), receipts.clone(), &hashes, key, seq);
            sink.append(&batch.to_encoded().unwrap()).unwrap();
            all.push(receipts);
        }
        (sink, all)
    }

    #[test]
    fn every_receipt_is_proven_into_its_signed_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = SigningKey::from_seed(&[3; 32]);
        let (sink, all) = write_batches(&path, &key);
        let reader = ReceiptReader::new(path.clone(), key.public_key(), sink.batch_offsets());
        assert_eq!(reader.batches_count(), 5);
        let on_disk: Vec<Vec<u8>> = read_signed_batches(&path)
            .unwrap()
            .map(|frame| frame.map(|(_, bytes)| bytes))
            .collect::<Result<_, _>>()
            .unwrap();
        let mut seq = 0;
        for (b, receipts) in all.iter().enumerate() {
            let stored = reader.batch(b as u64).unwrap();
            assert_eq!(stored.batch.receipts, *receipts);
            // The bytes the store holds, hence the same CID.
            assert_eq!(stored.signed_batch_bytes, on_disk[b]);
            assert_eq!(stored.cid(), ContentId::raw_blake3_of(&on_disk[b]));
            for r in receipts {
                let hash = r.hash().unwrap();
                let proof = reader.prove(b as u64, &hash).unwrap();
                assert_eq!(proof.verify(&key.public_key()).unwrap(), hash);
                assert_eq!(proof.receipt, *r);
                assert_eq!(proof.receipt_seq(), seq);
                seq += 1;
                let bytes = proof.to_canonical_bytes().unwrap();
                assert_eq!(ReceiptProof::from_canonical_bytes(&bytes).unwrap(), proof);
            }
        }
        // Reopening rebuilds the same index from the file's scan.
        drop(sink);
        let reopened = FileSink::open(&path, &key.public_key()).unwrap();
        let again = ReceiptReader::new(path, key.public_key(), reopened.batch_offsets());
        for b in 0..5 {
            assert_eq!(again.batch(b).unwrap(), reader.batch(b).unwrap());
        }
    }

    /// A torn last frame (a crash mid-append) is cut at reopen: the index
    /// rebuilt from the scan names the same batches, and the next batch is
    /// found where the torn one was cut.
    #[test]
    fn the_index_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = SigningKey::from_seed(&[3; 32]);
        let (sink, _) = write_batches(&path, &key);
        let before: Vec<u64> = (0..5)
            .map(|b| sink.batch_offsets().get(b).unwrap().offset_bytes)
            .collect();
        let file_len = std::fs::metadata(&path).unwrap().len();
        drop(sink);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&1_000u32.to_le_bytes()).unwrap();
        file.write_all(b"half a batch").unwrap();
        drop(file);
        let mut sink = FileSink::open(&path, &key.public_key()).unwrap();
        let offsets = sink.batch_offsets();
        assert_eq!(offsets.len(), 5);
        assert_eq!(
            (0..5)
                .map(|b| offsets.get(b).unwrap().offset_bytes)
                .collect::<Vec<_>>(),
            before
        );
        let receipts = vec![sample(99)];
        let hashes = vec![receipts[0].hash().unwrap()];
        let batch = SignedBatch::seal(&sink.tip(), receipts.clone(), &hashes, &key, 9);
        sink.append(&batch.to_encoded().unwrap()).unwrap();
        assert_eq!(offsets.get(5).unwrap().offset_bytes, file_len);
        let reader = ReceiptReader::new(path, key.public_key(), offsets);
        assert_eq!(reader.batch(5).unwrap().batch.receipts, receipts);
    }

    #[test]
    fn lookups_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = SigningKey::from_seed(&[3; 32]);
        let (sink, all) = write_batches(&path, &key);
        let reader = ReceiptReader::new(path, key.public_key(), sink.batch_offsets());
        match reader.batch(5) {
            Err(LookupError::BatchNotWritten {
                batch_index: 5,
                batches_count: 5,
            }) => {}
            other => panic!("expected BatchNotWritten, got {other:?}"),
        }
        // A receipt of batch 2 asked of batch 3.
        let hash = all[2][0].hash().unwrap();
        match reader.prove(3, &hash) {
            Err(LookupError::ReceiptNotInBatch {
                batch_index: 3,
                receipt_hash,
            }) => {
                assert_eq!(receipt_hash, hash);
            }
            other => panic!("expected ReceiptNotInBatch, got {other:?}"),
        }
        assert!(reader.prove(u64::MAX, &hash).is_err());
    }

    #[test]
    fn a_forged_or_altered_proof_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = SigningKey::from_seed(&[3; 32]);
        let (sink, all) = write_batches(&path, &key);
        let reader = ReceiptReader::new(path, key.public_key(), sink.batch_offsets());
        let good = reader.prove(4, &all[4][3].hash().unwrap()).unwrap();
        let signer = key.public_key();

        let other_key = SigningKey::from_seed(&[4; 32]).public_key();
        assert!(matches!(
            good.verify(&other_key),
            Err(ReceiptProofError::UnexpectedSigner { .. })
        ));
        // An edited receipt no longer leads to the signed root.
        let mut edited = good.clone();
        edited.receipt.status = 500;
        assert!(matches!(
            edited.verify(&signer),
            Err(ReceiptProofError::Inclusion(_))
        ));
        let mut moved = good.clone();
        moved.proof.leaf_index = 2;
        assert!(matches!(
            moved.verify(&signer),
            Err(ReceiptProofError::Inclusion(_))
        ));
        let mut resized = good.clone();
        resized.proof.tree_size = 8;
        assert!(matches!(
            resized.verify(&signer),
            Err(ReceiptProofError::TreeSize {
                proof: 8,
                header: 7
            })
        ));
        let mut header = good.clone();
        header.header.sealed_unix_ms += 1;
        assert!(matches!(
            header.verify(&signer),
            Err(ReceiptProofError::BadSignature)
        ));
        // A receipt of another batch under this batch's header.
        let mut swapped = good.clone();
        swapped.receipt = all[3][0].clone();
        assert!(swapped.verify(&signer).is_err());
        // Bad bytes are a decode error, never a panic.
        let bytes = good.to_canonical_bytes().unwrap();
        for cut in [0, 1, 50, bytes.len() - 1] {
            assert!(ReceiptProof::from_canonical_bytes(&bytes[..cut]).is_err());
        }
        let mut versioned = bytes.clone();
        versioned[0] = 9;
        assert!(ReceiptProof::from_canonical_bytes(&versioned).is_err());
    }

    #[test]
    fn a_batch_changed_or_cut_on_disk_is_reported_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = SigningKey::from_seed(&[3; 32]);
        let (sink, _) = write_batches(&path, &key);
        let offsets = sink.batch_offsets();
        let reader = ReceiptReader::new(path.clone(), key.public_key(), offsets.clone());
        // Flip the last byte of batch 1's signature.
        let end_of_1 = offsets.get(2).unwrap().offset_bytes;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[end_of_1 as usize - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        match reader.batch(1) {
            Err(LookupError::Invalid {
                batch_index: 1,
                source: BatchError::BadSignature,
                ..
            }) => {}
            other => panic!("expected Invalid(BadSignature), got {other:?}"),
        }
        assert!(reader.batch(0).is_ok());
        // Cut the file inside batch 4.
        let start_of_4 = offsets.get(4).unwrap().offset_bytes;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(start_of_4 + 10).unwrap();
        match reader.batch(4) {
            Err(LookupError::Truncated { batch_index: 4, .. }) => {}
            other => panic!("expected Truncated, got {other:?}"),
        }
        // A frame length past the bound is named, and allocates nothing.
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(start_of_4)).unwrap();
        file.write_all(&u32::MAX.to_le_bytes()).unwrap();
        match reader.batch(4) {
            Err(LookupError::Read {
                batch_index: 4,
                source: VerifyReceiptsError::FrameTooLarge { .. },
            }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }
}
