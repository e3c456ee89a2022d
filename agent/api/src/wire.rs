//! JSON bodies of the HTTP API. The CLI (`metanode store … --json`) prints
//! the same shapes whether it opened the store itself or asked an agent, so a
//! script never has to care which path it took.

use metanode_chain::types::{
    ChainMode, CommitCertificate, FinalizedBlock, Genesis, Header, Receipt,
};
use metanode_core::cid::ContentId;
use metanode_core::encoding::{Encode, EncodeError};
use metanode_core::hash::Hash32;
use metanode_core::merkle::InclusionProof;
use metanode_store::{BlobStat, GcReport, StorageKind, VerifyReport};
use serde::{Deserialize, Serialize};

use crate::chain_control::{ChainStatus, HeadEvent, ReceiptWithProof};

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

/// `POST /api/v1/unixfs` (201): the file's root CID, as `ipfs add` with the
/// same chunker, hash and CID version prints it (`--cid-version 1` implies
/// raw leaves, 0 is plain `ipfs add`).
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
    /// 0 (`Qm…`, dag-pb leaves) or 1 (raw leaves).
    pub cid_version: u64,
    /// Whether the leaves are raw blocks (true exactly with CID version 1).
    pub raw_leaves: bool,
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

// ---- chain (`/api/v1/chain*`) ----
//
// Hashes, keys and byte strings are lower-case hex. Anything a client must
// verify (headers, certificates, receipts) is also offered in its canonical
// binary encoding, because hashes and signatures are over those bytes, never
// over this JSON.

/// `GET /api/v1/chain/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatusResponse {
    pub chain_id: String,
    pub chain_name: String,
    pub node_key: String,
    pub is_validator: bool,
    /// Last finalized block (0 before the first block).
    pub height: u64,
    pub block_hash: String,
    pub block_timestamp_ms: u64,
    pub state_root: String,
    /// Height and round being decided.
    pub consensus_height: u64,
    pub consensus_round: u32,
    pub validators: Vec<String>,
    pub mempool_txs: u64,
    pub mempool_bytes: u64,
    pub peers_connected: Vec<String>,
    pub messages_received: u64,
    pub messages_rejected: u64,
    pub last_rejection: Option<String>,
    pub frames_rejected: u64,
    pub txs_refused: u64,
    pub blocks_synced: u64,
}

impl From<&ChainStatus> for ChainStatusResponse {
    fn from(s: &ChainStatus) -> Self {
        Self {
            chain_id: s.chain_id.to_hex(),
            chain_name: s.chain_name.clone(),
            node_key: s.node_key.to_string(),
            is_validator: s.is_validator,
            height: s.height,
            block_hash: s.block_hash.to_hex(),
            block_timestamp_ms: s.block_timestamp_ms,
            state_root: s.state_root.to_hex(),
            consensus_height: s.consensus_height,
            consensus_round: s.consensus_round,
            validators: s.validators.iter().map(ToString::to_string).collect(),
            mempool_txs: s.mempool_txs as u64,
            mempool_bytes: s.mempool_bytes as u64,
            peers_connected: s.peers_connected.iter().map(ToString::to_string).collect(),
            messages_received: s.messages_received,
            messages_rejected: s.messages_rejected,
            last_rejection: s.last_rejection.clone(),
            frames_rejected: s.frames_rejected,
            txs_refused: s.txs_refused,
            blocks_synced: s.blocks_synced,
        }
    }
}

/// One funded account of a genesis document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccountInfo {
    pub public_key: String,
    pub balance: u64,
}

/// `GET /api/v1/chain/genesis` (`?format=bin` gives the canonical bytes,
/// whose hash is `chain_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisResponse {
    pub chain_id: String,
    pub chain_name: String,
    pub genesis_time_ms: u64,
    pub validators: Vec<String>,
    pub accounts: Vec<GenesisAccountInfo>,
}

impl From<&Genesis> for GenesisResponse {
    fn from(g: &Genesis) -> Self {
        Self {
            chain_id: g.chain_id().to_string(),
            chain_name: g.chain_name.clone(),
            genesis_time_ms: g.genesis_time_ms,
            validators: g
                .validators
                .validators()
                .iter()
                .map(ToString::to_string)
                .collect(),
            accounts: g
                .accounts
                .iter()
                .map(|a| GenesisAccountInfo {
                    public_key: a.key.to_string(),
                    balance: a.balance,
                })
                .collect(),
        }
    }
}

/// `POST /api/v1/chain/txs` (202): the transaction is in the mempool; it is
/// final once `GET /api/v1/chain/receipts/{tx_hash}` answers 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxSubmitResponse {
    pub tx_hash: String,
}

/// `POST /api/v1/chain/txs/batch` (200): one answer per transaction of the
/// batch, in order. The request succeeded as a whole; each transaction was
/// admitted (`status` 202) or refused with the status and reason the single
/// route would have given (422 refused, 429 mempool full: retry later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBatchSubmitResponse {
    pub accepted: u64,
    pub refused: u64,
    pub results: Vec<TxBatchItemResult>,
}

/// One transaction's answer inside a [`TxBatchSubmitResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBatchItemResult {
    pub tx_hash: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A block header, field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderInfo {
    /// `H(0x10 || canonical header)`: the block hash.
    pub hash: String,
    pub chain_id: String,
    pub height: u64,
    pub round: u32,
    pub prev_hash: String,
    pub timestamp_ms: u64,
    pub proposer: String,
    pub tx_root: String,
    pub poh_root: String,
    pub receipts_root: String,
    pub state_root: String,
    pub da_root: String,
    pub xcmp_root: String,
    pub validator_set_hash: String,
    pub next_validator_set_hash: String,
    /// normal, secure, emergency or maintenance.
    pub mode: String,
}

impl From<&Header> for HeaderInfo {
    fn from(h: &Header) -> Self {
        Self {
            hash: h.hash().to_hex(),
            chain_id: h.chain_id.to_string(),
            height: h.height,
            round: h.round,
            prev_hash: h.prev_hash.to_hex(),
            timestamp_ms: h.timestamp_ms,
            proposer: h.proposer.to_string(),
            tx_root: h.tx_root.to_hex(),
            poh_root: h.poh_root.to_hex(),
            receipts_root: h.receipts_root.to_hex(),
            state_root: h.state_root.to_hex(),
            da_root: h.da_root.to_hex(),
            xcmp_root: h.xcmp_root.to_hex(),
            validator_set_hash: h.validator_set_hash.to_hex(),
            next_validator_set_hash: h.next_validator_set_hash.to_hex(),
            mode: match h.mode {
                ChainMode::Normal => "normal",
                ChainMode::Secure => "secure",
                ChainMode::Emergency => "emergency",
                ChainMode::Maintenance => "maintenance",
            }
            .to_string(),
        }
    }
}

/// Who committed a block: the certificate without its signature bytes
/// (they are in the canonical encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub height: u64,
    /// The round whose commit quorum decided the block.
    pub round: u32,
    pub block_hash: String,
    /// Indices (in the height's validator set) of the validators that signed.
    pub signers: Vec<u64>,
    pub signatures_count: u64,
}

impl From<&CommitCertificate> for CertificateInfo {
    fn from(c: &CommitCertificate) -> Self {
        Self {
            height: c.height,
            round: c.round,
            block_hash: c.block_hash.to_hex(),
            signers: c.signers().map(|i| i as u64).collect(),
            signatures_count: c.signatures.len() as u64,
        }
    }
}

/// `GET /api/v1/chain/blocks/{height|latest}` (`?format=bin` gives the
/// canonical `FinalizedBlock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResponse {
    pub height: u64,
    pub hash: String,
    pub header: HeaderInfo,
    pub txs_count: u64,
    /// Transaction ids in block order.
    pub txs: Vec<String>,
    pub certificate: CertificateInfo,
}

impl From<&FinalizedBlock> for BlockResponse {
    fn from(b: &FinalizedBlock) -> Self {
        let header = &b.block.header;
        Self {
            height: header.height,
            hash: header.hash().to_hex(),
            header: HeaderInfo::from(header),
            txs_count: b.block.txs.len() as u64,
            txs: b.block.txs.iter().map(|tx| tx.hash().to_hex()).collect(),
            certificate: CertificateInfo::from(&b.certificate),
        }
    }
}

/// A transaction's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptInfo {
    pub tx_hash: String,
    /// 0 = success; other codes are the application's.
    pub status: u32,
    pub fee_charged: u64,
    /// Application output, hex.
    pub output: String,
}

impl From<&Receipt> for ReceiptInfo {
    fn from(r: &Receipt) -> Self {
        Self {
            tx_hash: r.tx_hash.to_hex(),
            status: r.status,
            fee_charged: r.fee_charged,
            output: hex_bytes(&r.output),
        }
    }
}

/// A Merkle inclusion proof (RFC 9162 shape) of a receipt under the
/// header's `receipts_root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofInfo {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<String>,
}

impl From<&InclusionProof> for ProofInfo {
    fn from(p: &InclusionProof) -> Self {
        Self {
            leaf_index: p.leaf_index,
            tree_size: p.tree_size,
            path: p.path.iter().map(Hash32::to_hex).collect(),
        }
    }
}

/// `GET /api/v1/chain/receipts/{tx_hash}`: everything an offline light
/// client needs to check the receipt against a header it verified (the
/// `*_bin` fields are canonical encodings, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptResponse {
    pub height: u64,
    /// Position of the transaction (and its receipt) in the block.
    pub index: u64,
    /// Transactions in the block (= the receipt tree's size).
    pub txs_count: u64,
    pub receipt: ReceiptInfo,
    pub proof: ProofInfo,
    pub header: HeaderInfo,
    pub header_bin: String,
    pub certificate_bin: String,
    pub receipt_bin: String,
}

impl ReceiptResponse {
    pub fn new(r: &ReceiptWithProof) -> Result<Self, EncodeError> {
        Ok(Self {
            height: r.height,
            index: r.index,
            txs_count: r.txs_count,
            receipt: ReceiptInfo::from(&r.receipt),
            proof: ProofInfo::from(&r.proof),
            header: HeaderInfo::from(&r.block.block.header),
            header_bin: hex_bytes(&r.block.block.header.to_canonical_bytes()?),
            certificate_bin: hex_bytes(&r.block.certificate.to_canonical_bytes()?),
            receipt_bin: hex_bytes(&r.receipt.to_canonical_bytes()?),
        })
    }
}

/// `GET /api/v1/chain/accounts/{public_key}`, as the last finalized block
/// left the account (an unknown account has balance 0 and nonce 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountResponse {
    pub public_key: String,
    pub balance: u64,
    /// The nonce the account's next transaction must carry.
    pub next_nonce: u64,
}

/// One line of `GET /api/v1/chain/heads` (NDJSON): a finalized head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadEventInfo {
    pub height: u64,
    pub block_hash: String,
    pub timestamp_ms: u64,
    pub txs_count: u64,
    pub state_root: String,
    pub round: u32,
}

impl From<&HeadEvent> for HeadEventInfo {
    fn from(e: &HeadEvent) -> Self {
        Self {
            height: e.height,
            block_hash: e.block_hash.to_hex(),
            timestamp_ms: e.timestamp_ms,
            txs_count: e.txs_count,
            state_root: e.state_root.to_hex(),
            round: e.round,
        }
    }
}

/// A line of the head stream saying `lagged` heads were skipped because the
/// client read too slowly; re-read the status (or the blocks) to catch up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsLagged {
    pub lagged: u64,
}

fn hex_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One cage audit receipt (`/api/v1/cage/receipts*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageReceiptInfo {
    /// Its sequence number in the whole receipt file.
    pub seq: u64,
    /// What its `Metanode-Receipt` response header named.
    pub receipt_hash: String,
    pub time_unix_ms: u64,
    pub client_ip: String,
    pub key_id: Option<String>,
    pub request_hash: String,
    /// `forwarded`, `signature_rejected`, … (metanode_cage::Decision).
    pub decision: String,
    pub detail: String,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub response_hash: String,
    pub policy_version: u64,
    pub policy_digest: String,
}

impl CageReceiptInfo {
    /// Receipt `r`, number `seq` in the file, whose hash (verified with its
    /// batch) is `receipt_hash`.
    pub fn new(seq: u64, receipt_hash: &Hash32, r: &metanode_cage::Receipt) -> Self {
        Self {
            seq,
            receipt_hash: receipt_hash.to_hex(),
            time_unix_ms: r.time_unix_ms,
            client_ip: r.client_ip.to_string(),
            key_id: r.key_id.clone(),
            request_hash: r.request_hash.to_hex(),
            decision: r.decision.name().to_owned(),
            detail: r.detail.clone(),
            status: r.status,
            upstream_status: r.upstream_status,
            response_hash: r.response_hash.to_hex(),
            policy_version: r.policy_version,
            policy_digest: hex_bytes(&r.policy_digest),
        }
    }
}

/// What the node key signs for a receipt batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageBatchHeaderInfo {
    pub signer: String,
    pub batch_index: u64,
    pub first_receipt_seq: u64,
    pub receipts_count: u32,
    pub receipts_root: String,
    pub prev_batch_hash: String,
    pub sealed_unix_ms: u64,
    /// The hash the signature covers.
    pub batch_hash: String,
}

impl From<&metanode_cage::receipt::BatchHeader> for CageBatchHeaderInfo {
    fn from(h: &metanode_cage::receipt::BatchHeader) -> Self {
        Self {
            signer: hex_bytes(&h.signer),
            batch_index: h.batch_index,
            first_receipt_seq: h.first_receipt_seq,
            receipts_count: h.receipts_count,
            receipts_root: h.receipts_root.to_hex(),
            prev_batch_hash: h.prev_batch_hash.to_hex(),
            sealed_unix_ms: h.sealed_unix_ms,
            batch_hash: h.hash().to_hex(),
        }
    }
}

/// `GET /api/v1/cage/receipts`: where the receipts are and who signs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageReceiptsInfo {
    /// The node key that signs every batch.
    pub signer: String,
    /// Batches written durably: numbered `0..batches_count`.
    pub batches_count: u64,
    /// The oldest batch still on disk: 0 unless old receipt log segments
    /// were deleted (`receipts.segments_kept_max`); older ones answer 410.
    pub first_batch_index: u64,
}

/// `GET /api/v1/cage/receipts/batches/{batch}[?offset=K&limit=M]`: one
/// signed batch, checked against the node key before it is served (the
/// whole batch, whichever page is asked for), with one page of its
/// receipts: `receipts[i]` is the batch's receipt `receipts_offset + i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageBatchResponse {
    /// The blob the node stores the batch as (pinned): its canonical
    /// `SignedBatch` bytes, which `?format=bin` returns.
    pub cid: String,
    /// `header.receipts_count` is the whole batch's count.
    pub header: CageBatchHeaderInfo,
    pub signature: String,
    /// Where this page starts in the batch.
    pub receipts_offset: u32,
    pub receipts: Vec<CageReceiptInfo>,
    /// The `offset=` of the next page, or null on the last one.
    pub next_offset: Option<u32>,
}

impl CageBatchResponse {
    /// The receipts `offset..offset + limit` of `b` (fewer at its end).
    pub fn page(b: &metanode_cage::StoredBatch, offset: u32, limit: u32) -> Self {
        let h = &b.batch.header;
        let end = offset.saturating_add(limit).min(h.receipts_count);
        let skip = offset as usize;
        let take = end.saturating_sub(offset) as usize;
        let receipts = (h.first_receipt_seq..)
            .zip(b.receipt_hashes.iter().zip(&b.batch.receipts))
            .skip(skip)
            .take(take)
            .map(|(seq, (hash, r))| CageReceiptInfo::new(seq, hash, r))
            .collect();
        Self {
            cid: b.cid().to_string(),
            header: CageBatchHeaderInfo::from(h),
            signature: hex_bytes(&b.batch.signature),
            receipts_offset: offset.min(h.receipts_count),
            receipts,
            next_offset: (end < h.receipts_count).then_some(end),
        }
    }
}

/// `GET /api/v1/cage/receipts/{receipt_hash}?batch=N`: a receipt with the
/// signed header of its batch and its Merkle audit path; `proof_bin` (hex)
/// is the canonical `ReceiptProof` that `metanode cage verify-receipt`
/// checks with the node's public key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageReceiptProofResponse {
    pub batch_cid: String,
    pub receipt: CageReceiptInfo,
    pub header: CageBatchHeaderInfo,
    pub signature: String,
    pub proof: ProofInfo,
    pub proof_bin: String,
}

impl CageReceiptProofResponse {
    /// The proof `p` of the receipt hashing to `receipt_hash`, in the batch
    /// stored as `batch_cid`.
    pub fn new(
        batch_cid: &ContentId,
        receipt_hash: &Hash32,
        p: &metanode_cage::ReceiptProof,
    ) -> Result<Self, EncodeError> {
        Ok(Self {
            batch_cid: batch_cid.to_string(),
            receipt: CageReceiptInfo::new(p.receipt_seq(), receipt_hash, &p.receipt),
            header: CageBatchHeaderInfo::from(&p.header),
            signature: hex_bytes(&p.signature),
            proof: ProofInfo::from(&p.proof),
            proof_bin: hex_bytes(&p.to_canonical_bytes()?),
        })
    }
}
