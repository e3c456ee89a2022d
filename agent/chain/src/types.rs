//! Chain data types and their canonical encodings: transactions, headers,
//! blocks, validator sets, commit certificates, receipts and genesis.
//!
//! Everything hashed or signed here goes through `metanode_core::encoding`
//! (fixed field order, little-endian integers, length-prefixed bytes) and a
//! domain tag from `metanode_core::tags`, so a transaction signature can never
//! be replayed as a consensus vote or a header hash as a receipt.

use metanode_core::encoding::decode_version;
use metanode_core::encoding::{Decode, DecodeError, Encode, EncodeError, Reader, Writer};
use metanode_core::hash::{Hash32, hash_encoded, hash_tagged};
use metanode_core::keys::{PublicKey, Signature, SigningKey, VerifyError};
use metanode_core::limits::{
    CHAIN_BLOCK_TXS_COUNT_MAX, CHAIN_GENESIS_ACCOUNTS_COUNT_MAX, CHAIN_NAME_LEN_MAX,
    CHAIN_RECEIPT_OUTPUT_BYTES_MAX, CHAIN_TX_BATCH_SIZE_BYTES_MAX, CHAIN_TX_BATCH_TXS_COUNT_MAX,
    CHAIN_TX_PAYLOAD_BYTES_MAX, CHAIN_VALIDATORS_COUNT_MAX,
};
use metanode_core::merkle;
use metanode_core::tags::DomainTag;

/// Block height; genesis is height 0 and has no block, the first block is 1.
pub type Height = u64;
/// QBFT round within a height, starting at 0.
pub type Round = u32;
/// Position of a validator in the set of the height being decided.
pub type ValidatorIndex = u16;

/// Version byte of every chain structure defined here.
pub const CHAIN_ENCODING_VERSION: u8 = 1;
const VERSIONS: &[u8] = &[CHAIN_ENCODING_VERSION];

/// Identifies one chain: the hash of its genesis document. Carried in every
/// transaction and consensus message so nothing replays across chains.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ChainId(pub Hash32);

impl Encode for ChainId {
    fn encode(&self, w: &mut Writer) {
        self.0.encode(w);
    }
}
impl Decode for ChainId {
    const ENCODED_LEN_MIN: usize = 32;
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Hash32::decode(r).map(ChainId)
    }
}
impl std::fmt::Display for ChainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

// ---------------------------------------------------------------- validators

/// Why a validator set is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("validator set is empty")]
    Empty,
    #[error("validator set has {count} members, more than the maximum {max}")]
    TooMany { count: usize, max: u32 },
    #[error("validator {} appears twice in the set (positions {first} and {second})", hex::encode(.key))]
    Duplicate {
        key: [u8; 32],
        first: usize,
        second: usize,
    },
}

/// An ordered set of equally weighted validators. The order fixes proposer
/// rotation and the bit positions of commit-certificate bitmaps, so it is
/// part of the set's hash.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ValidatorSet {
    validators: Vec<PublicKey>,
}

impl ValidatorSet {
    pub fn new(validators: Vec<PublicKey>) -> Result<Self, ValidatorSetError> {
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if validators.len() > CHAIN_VALIDATORS_COUNT_MAX as usize {
            return Err(ValidatorSetError::TooMany {
                count: validators.len(),
                max: CHAIN_VALIDATORS_COUNT_MAX,
            });
        }
        for (i, a) in validators.iter().enumerate() {
            if let Some(j) = validators[i + 1..].iter().position(|b| b == a) {
                return Err(ValidatorSetError::Duplicate {
                    key: a.to_bytes(),
                    first: i,
                    second: i + 1 + j,
                });
            }
        }
        Ok(ValidatorSet { validators })
    }

    pub fn validators(&self) -> &[PublicKey] {
        &self.validators
    }

    /// N.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// f = ⌊(N − 1) / 3⌋: the Byzantine validators the set tolerates.
    pub fn faults_tolerated(&self) -> usize {
        (self.len() - 1) / 3
    }

    /// ⌈2N / 3⌉: signatures needed for a prepare, commit or round-change
    /// quorum (the QBFT spec's quorum size; equals 2f + 1 when N = 3f + 1).
    pub fn quorum(&self) -> usize {
        (2 * self.len()).div_ceil(3)
    }

    /// f + 1: enough round changes that at least one came from an honest
    /// validator (the QBFT round-skip rule).
    pub fn weak_quorum(&self) -> usize {
        self.faults_tolerated() + 1
    }

    pub fn index_of(&self, key: &PublicKey) -> Option<ValidatorIndex> {
        self.validators
            .iter()
            .position(|k| k == key)
            .map(|i| i as ValidatorIndex)
    }

    pub fn get(&self, index: ValidatorIndex) -> Option<&PublicKey> {
        self.validators.get(usize::from(index))
    }

    /// Proposer of `(height, round)`: round-robin over the set, shifted by the
    /// height so the load rotates even when every height decides in round 0.
    pub fn proposer(&self, height: Height, round: Round) -> &PublicKey {
        let n = self.len() as u64;
        let i = (height.wrapping_add(u64::from(round))) % n;
        &self.validators[i as usize]
    }

    /// `H(0x18 || canonical set)`.
    pub fn hash(&self) -> Hash32 {
        hash_encoded(DomainTag::ValidatorSet, self).expect("validator set within encoding bounds")
    }
}

impl Encode for ValidatorSet {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        w.put_seq_bounded(&self.validators, CHAIN_VALIDATORS_COUNT_MAX);
    }
}

impl Decode for ValidatorSet {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        let offset = r.offset();
        let validators = r.read_seq_bounded::<PublicKey>(CHAIN_VALIDATORS_COUNT_MAX)?;
        ValidatorSet::new(validators).map_err(|e| DecodeError::Invalid {
            what: "validator set",
            offset,
            reason: e.to_string(),
        })
    }
}

// -------------------------------------------------------------- transactions

/// What a transaction does. The built-in application understands both;
/// bank, court and gov add their own kinds through `Payload`'s first bytes
/// until they get typed variants.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TxKind {
    /// Move `amount` base units from the sender to `to`.
    Transfer { to: PublicKey, amount: u64 },
    /// Opaque bytes recorded in the block (and in the payload store of the
    /// built-in application).
    Payload { data: Vec<u8> },
}

const TX_KIND_TRANSFER: u8 = 0;
const TX_KIND_PAYLOAD: u8 = 1;

impl Encode for TxKind {
    fn encode(&self, w: &mut Writer) {
        match self {
            TxKind::Transfer { to, amount } => {
                w.put_u8(TX_KIND_TRANSFER);
                to.encode(w);
                w.put_u64(*amount);
            }
            TxKind::Payload { data } => {
                w.put_u8(TX_KIND_PAYLOAD);
                w.put_bytes_bounded(data, CHAIN_TX_PAYLOAD_BYTES_MAX);
            }
        }
    }
}

impl Decode for TxKind {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            TX_KIND_TRANSFER => Ok(TxKind::Transfer {
                to: decode_key_cached(r)?,
                amount: r.read_u64()?,
            }),
            TX_KIND_PAYLOAD => Ok(TxKind::Payload {
                data: r.read_bytes_bounded(CHAIN_TX_PAYLOAD_BYTES_MAX)?.to_vec(),
            }),
            value => Err(DecodeError::InvalidTag {
                what: "transaction kind",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

/// The signed part of a transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TxBody {
    pub chain_id: ChainId,
    pub sender: PublicKey,
    /// Strictly sequential per sender, starting at 0: the replay guard.
    pub nonce: u64,
    /// Fee in base units offered to the chain; the mempool orders by it.
    pub fee: u64,
    pub kind: TxKind,
}

impl Encode for TxBody {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        self.chain_id.encode(w);
        self.sender.encode(w);
        w.put_u64(self.nonce);
        w.put_u64(self.fee);
        self.kind.encode(w);
    }
}

impl Decode for TxBody {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(TxBody {
            chain_id: ChainId::decode(r)?,
            sender: decode_key_cached(r)?,
            nonce: r.read_u64()?,
            fee: r.read_u64()?,
            kind: TxKind::decode(r)?,
        })
    }
}

impl TxBody {
    /// The transaction id: `H(0x15 || canonical body)`.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        hash_encoded(DomainTag::Transaction, self)
    }

    /// Signs the body's hash with `key` (which should be `sender`'s key).
    pub fn sign(self, key: &SigningKey) -> Result<SignedTx, EncodeError> {
        let hash = self.hash()?;
        let signature = key.sign(hash.as_bytes());
        Ok(SignedTx {
            body: self,
            signature,
            hash,
        })
    }
}

/// A transaction with the sender's Ed25519 signature over its id. The id is
/// computed once at construction or decoding and cached.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedTx {
    body: TxBody,
    signature: Signature,
    hash: Hash32,
}

impl SignedTx {
    pub fn body(&self) -> &TxBody {
        &self.body
    }
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    /// The transaction id, `H(0x15 || canonical body)`.
    pub fn hash(&self) -> Hash32 {
        self.hash
    }
    /// Checks the signature against the body's sender.
    pub fn verify_signature(&self) -> Result<(), VerifyError> {
        self.body
            .sender
            .verify(self.hash.as_bytes(), &self.signature)
    }
}

impl Encode for SignedTx {
    fn encode(&self, w: &mut Writer) {
        self.body.encode(w);
        self.signature.encode(w);
    }
}

impl Decode for SignedTx {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let body = TxBody::decode(r)?;
        let signature = Signature::decode(r)?;
        let hash = body.hash().map_err(|e| DecodeError::Invalid {
            what: "transaction",
            offset,
            reason: e.to_string(),
        })?;
        Ok(SignedTx {
            body,
            signature,
            hash,
        })
    }
}

/// Decoded transaction keys kept per thread (see [`decode_key_cached`]).
/// Clients and accounts repeat, so a few thousand cover a busy chain; each
/// entry is ~230 bytes, so the cache stays under 1 MiB per thread.
pub const TX_KEY_CACHE_ENTRIES_MAX: usize = 4_096;

thread_local! {
    static TX_KEY_CACHE: std::cell::RefCell<std::collections::HashMap<[u8; 32], PublicKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `PublicKey::decode`, memoized per thread. A transaction is decoded on
/// every node several times (HTTP, gossip, the proposal that carries it) and
/// each decode of a key decompresses a curve point (~5 µs, two keys per
/// transfer): profiling the 4-validator bench put that at ~8 % of all CPU.
/// Only keys that decoded successfully are kept, and a key's decoding
/// depends on its 32 bytes alone, so the answer is always the one
/// `PublicKey::decode` gives; a full cache is emptied rather than managed
/// (the bound is what matters, not the hit rate under churn).
pub fn decode_key_cached(r: &mut Reader<'_>) -> Result<PublicKey, DecodeError> {
    let offset = r.offset();
    let bytes = r.read_array::<32>()?;
    let hit = TX_KEY_CACHE.with(|cache| cache.borrow().get(&bytes).copied());
    if let Some(key) = hit {
        return Ok(key);
    }
    let key = PublicKey::from_bytes(&bytes).map_err(|e| DecodeError::Invalid {
        what: "public key",
        offset,
        reason: e.to_string(),
    })?;
    TX_KEY_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= TX_KEY_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(bytes, key);
    });
    Ok(key)
}

/// Many signed transactions in one canonical message: the payload of the
/// validators' `mempool` gossip and the body of
/// `POST /api/v1/chain/txs/batch`. One message (one frame signature, one
/// HTTP request) then covers hundreds of transactions.
///
/// Wire form: `version u8 | count u32 LE | count × SignedTx` (each
/// `SignedTx` is self-delimiting). Decoding refuses an unknown version, a
/// count above [`CHAIN_TX_BATCH_TXS_COUNT_MAX`], input longer than
/// [`CHAIN_TX_BATCH_SIZE_BYTES_MAX`], any transaction that is not canonical, and
/// trailing bytes. The batch is only a carrier: every transaction in it is
/// still admitted (or refused) on its own.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TxBatch {
    pub txs: Vec<SignedTx>,
}

impl Encode for TxBatch {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        w.put_seq_bounded(&self.txs, CHAIN_TX_BATCH_TXS_COUNT_MAX);
    }
}

impl Decode for TxBatch {
    /// A batch is always a whole message, so the bytes left in the reader
    /// are its size.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        if r.remaining() > CHAIN_TX_BATCH_SIZE_BYTES_MAX as usize {
            return Err(DecodeError::LengthExceedsMax {
                len: u32::try_from(r.remaining()).unwrap_or(u32::MAX),
                offset,
                max: CHAIN_TX_BATCH_SIZE_BYTES_MAX,
            });
        }
        decode_version(r, VERSIONS)?;
        Ok(TxBatch {
            txs: r.read_seq_bounded(CHAIN_TX_BATCH_TXS_COUNT_MAX)?,
        })
    }
}

// ------------------------------------------------------------------- headers

/// Operating mode recorded in each header (Bus BIOS modes of the BISO
/// policy; the chain itself only distinguishes Normal from the rest).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(u8)]
pub enum ChainMode {
    #[default]
    Normal = 0,
    Secure = 1,
    Emergency = 2,
    Maintenance = 3,
}

impl Encode for ChainMode {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self as u8);
    }
}

impl Decode for ChainMode {
    const ENCODED_LEN_MIN: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            0 => Ok(ChainMode::Normal),
            1 => Ok(ChainMode::Secure),
            2 => Ok(ChainMode::Emergency),
            3 => Ok(ChainMode::Maintenance),
            value => Err(DecodeError::InvalidTag {
                what: "chain mode",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

/// A block header. The fields of DESIGN.md's wire rules, plus the chain id,
/// timestamp, proposer, transaction root, application state root and the
/// hash of the next height's validator set (so a light client can follow a
/// set change from one header to the next).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    pub chain_id: ChainId,
    pub height: Height,
    /// Round in which this block was first proposed. A block re-proposed in a
    /// later round keeps its hash; the commit certificate names the round
    /// that decided it.
    pub round: Round,
    /// Hash of the header at `height − 1`; for height 1 the genesis hash.
    pub prev_hash: Hash32,
    /// Proposer's clock in ms since the Unix epoch; strictly greater than the
    /// parent's (checked by validators with a bounded allowance for skew).
    pub timestamp_ms: u64,
    pub proposer: PublicKey,
    /// Merkle root over the canonical bytes of the block's transactions.
    pub tx_root: Hash32,
    /// Merkle root over the PoH ticks of the block's transactions.
    pub poh_root: Hash32,
    /// Merkle root over the canonical bytes of the receipts, one per tx.
    pub receipts_root: Hash32,
    /// Application state root after executing this block.
    pub state_root: Hash32,
    /// Data-availability root (empty-tree root until DA shards exist).
    pub da_root: Hash32,
    /// Cross-chain message root (empty-tree root until XCMP exists).
    pub xcmp_root: Hash32,
    /// Hash of the validator set that decides this height.
    pub validator_set_hash: Hash32,
    /// Hash of the validator set that decides `height + 1`.
    pub next_validator_set_hash: Hash32,
    pub mode: ChainMode,
}

impl Header {
    /// `H(0x10 || canonical header)`: the block hash.
    pub fn hash(&self) -> Hash32 {
        hash_encoded(DomainTag::BlockHeader, self).expect("header has no variable-length fields")
    }
}

impl Encode for Header {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        self.chain_id.encode(w);
        w.put_u64(self.height);
        w.put_u32(self.round);
        self.prev_hash.encode(w);
        w.put_u64(self.timestamp_ms);
        self.proposer.encode(w);
        self.tx_root.encode(w);
        self.poh_root.encode(w);
        self.receipts_root.encode(w);
        self.state_root.encode(w);
        self.da_root.encode(w);
        self.xcmp_root.encode(w);
        self.validator_set_hash.encode(w);
        self.next_validator_set_hash.encode(w);
        self.mode.encode(w);
    }
}

impl Decode for Header {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(Header {
            chain_id: ChainId::decode(r)?,
            height: r.read_u64()?,
            round: r.read_u32()?,
            prev_hash: Hash32::decode(r)?,
            timestamp_ms: r.read_u64()?,
            proposer: PublicKey::decode(r)?,
            tx_root: Hash32::decode(r)?,
            poh_root: Hash32::decode(r)?,
            receipts_root: Hash32::decode(r)?,
            state_root: Hash32::decode(r)?,
            da_root: Hash32::decode(r)?,
            xcmp_root: Hash32::decode(r)?,
            validator_set_hash: Hash32::decode(r)?,
            next_validator_set_hash: Hash32::decode(r)?,
            mode: ChainMode::decode(r)?,
        })
    }
}

// -------------------------------------------------------------------- blocks

/// A header and the transactions it commits to, in PoH order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<SignedTx>,
}

impl Block {
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }
}

/// Merkle root over the canonical bytes of `txs` (the header's `tx_root`).
pub fn tx_root(txs: &[SignedTx]) -> Hash32 {
    let leaves: Vec<Hash32> = txs
        .iter()
        .map(|tx| {
            let bytes = tx
                .to_canonical_bytes()
                .expect("decoded or constructed transactions are within bounds");
            merkle::leaf_hash(&bytes)
        })
        .collect();
    merkle::root_of(&leaves)
}

impl Encode for Block {
    fn encode(&self, w: &mut Writer) {
        self.header.encode(w);
        w.put_seq_bounded(&self.txs, CHAIN_BLOCK_TXS_COUNT_MAX);
    }
}

impl Decode for Block {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Block {
            header: Header::decode(r)?,
            txs: r.read_seq_bounded(CHAIN_BLOCK_TXS_COUNT_MAX)?,
        })
    }
}

// -------------------------------------------------------- commit certificate

/// What a validator signs to commit `block_hash` at `(height, round)`:
/// `H(0x17 || chain_id || height || round || block_hash)`.
pub fn commit_seal_digest(
    chain_id: &ChainId,
    height: Height,
    round: Round,
    block_hash: &Hash32,
) -> Hash32 {
    hash_tagged(
        DomainTag::CommitSeal,
        &[
            chain_id.0.as_bytes(),
            &height.to_le_bytes(),
            &round.to_le_bytes(),
            block_hash.as_bytes(),
        ],
    )
}

/// Why a commit certificate does not prove a block final.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate is for block {certified}, not {expected}")]
    WrongBlock { certified: Hash32, expected: Hash32 },
    #[error("certificate is for height {certified}, not {expected}")]
    WrongHeight { certified: Height, expected: Height },
    #[error("signer bitmap has {len} bytes, a set of {validators} validators needs {expected}")]
    BitmapLength {
        len: usize,
        validators: usize,
        expected: usize,
    },
    #[error("signer bitmap marks validator {index}, beyond the set of {validators}")]
    BitmapBeyondSet { index: usize, validators: usize },
    #[error("bitmap marks {signers} signers but {signatures} signatures are present")]
    SignatureCount { signers: usize, signatures: usize },
    #[error("{signers} signers is below the quorum of {quorum}")]
    BelowQuorum { signers: usize, quorum: usize },
    #[error("signature of validator {index} ({}) does not verify", hex::encode(.key))]
    BadSignature { index: usize, key: [u8; 32] },
}

/// Proof that a quorum of the height's validators committed a block: their
/// commit seals, in validator order, with a bitmap saying who signed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommitCertificate {
    pub height: Height,
    /// The round whose commit quorum decided the block.
    pub round: Round,
    pub block_hash: Hash32,
    /// Bit `i` (byte `i / 8`, bit `i % 8`, LSB first) set = validator `i`
    /// signed. Exactly ⌈N / 8⌉ bytes; bits past N must be zero.
    pub signer_bitmap: Vec<u8>,
    /// One seal per set bit, in increasing validator index.
    pub signatures: Vec<Signature>,
}

impl CommitCertificate {
    /// Builds a certificate from `(index, seal)` pairs (any order, no
    /// duplicates) for a set of `validators_count` validators.
    pub fn from_seals(
        height: Height,
        round: Round,
        block_hash: Hash32,
        validators_count: usize,
        seals: &[(ValidatorIndex, Signature)],
    ) -> Self {
        let mut sorted: Vec<(ValidatorIndex, Signature)> = seals.to_vec();
        sorted.sort_by_key(|(i, _)| *i);
        sorted.dedup_by_key(|(i, _)| *i);
        let mut signer_bitmap = vec![0u8; validators_count.div_ceil(8)];
        for (i, _) in &sorted {
            let i = usize::from(*i);
            assert!(i < validators_count, "seal index {i} outside the set");
            signer_bitmap[i / 8] |= 1 << (i % 8);
        }
        CommitCertificate {
            height,
            round,
            block_hash,
            signer_bitmap,
            signatures: sorted.into_iter().map(|(_, s)| s).collect(),
        }
    }

    /// Indices whose bit is set, in increasing order.
    pub fn signers(&self) -> impl Iterator<Item = usize> + '_ {
        self.signer_bitmap
            .iter()
            .enumerate()
            .flat_map(|(byte_i, byte)| {
                (0..8).filter_map(move |bit| (byte & (1 << bit) != 0).then_some(byte_i * 8 + bit))
            })
    }

    /// Checks that a quorum of `validators` sealed `header` at this
    /// certificate's round. This is the one finality check used by the
    /// engine (for synced blocks), the block store and the light client.
    pub fn verify(
        &self,
        chain_id: &ChainId,
        header: &Header,
        validators: &ValidatorSet,
    ) -> Result<(), CertificateError> {
        let block_hash = header.hash();
        if self.block_hash != block_hash {
            return Err(CertificateError::WrongBlock {
                certified: self.block_hash,
                expected: block_hash,
            });
        }
        if self.height != header.height {
            return Err(CertificateError::WrongHeight {
                certified: self.height,
                expected: header.height,
            });
        }
        let n = validators.len();
        if self.signer_bitmap.len() != n.div_ceil(8) {
            return Err(CertificateError::BitmapLength {
                len: self.signer_bitmap.len(),
                validators: n,
                expected: n.div_ceil(8),
            });
        }
        let signers: Vec<usize> = self.signers().collect();
        if let Some(&index) = signers.iter().find(|&&i| i >= n) {
            return Err(CertificateError::BitmapBeyondSet {
                index,
                validators: n,
            });
        }
        if signers.len() != self.signatures.len() {
            return Err(CertificateError::SignatureCount {
                signers: signers.len(),
                signatures: self.signatures.len(),
            });
        }
        if signers.len() < validators.quorum() {
            return Err(CertificateError::BelowQuorum {
                signers: signers.len(),
                quorum: validators.quorum(),
            });
        }
        let digest = commit_seal_digest(chain_id, self.height, self.round, &block_hash);
        for (index, signature) in signers.iter().zip(&self.signatures) {
            let key = &validators.validators()[*index];
            key.verify(digest.as_bytes(), signature).map_err(|_| {
                CertificateError::BadSignature {
                    index: *index,
                    key: key.to_bytes(),
                }
            })?;
        }
        Ok(())
    }
}

impl Encode for CommitCertificate {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        w.put_u64(self.height);
        w.put_u32(self.round);
        self.block_hash.encode(w);
        w.put_bytes_bounded(&self.signer_bitmap, CHAIN_VALIDATORS_COUNT_MAX.div_ceil(8));
        w.put_seq_bounded(&self.signatures, CHAIN_VALIDATORS_COUNT_MAX);
    }
}

impl Decode for CommitCertificate {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(CommitCertificate {
            height: r.read_u64()?,
            round: r.read_u32()?,
            block_hash: Hash32::decode(r)?,
            signer_bitmap: r
                .read_bytes_bounded(CHAIN_VALIDATORS_COUNT_MAX.div_ceil(8))?
                .to_vec(),
            signatures: r.read_seq_bounded(CHAIN_VALIDATORS_COUNT_MAX)?,
        })
    }
}

/// A block together with the certificate that made it final: what the block
/// store keeps and what block sync ships.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FinalizedBlock {
    pub block: Block,
    pub certificate: CommitCertificate,
}

impl Encode for FinalizedBlock {
    fn encode(&self, w: &mut Writer) {
        self.block.encode(w);
        self.certificate.encode(w);
    }
}

impl Decode for FinalizedBlock {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(FinalizedBlock {
            block: Block::decode(r)?,
            certificate: CommitCertificate::decode(r)?,
        })
    }
}

// ------------------------------------------------------------------ receipts

/// Outcome of one transaction in a block. Failed transactions are still
/// included (their nonce is consumed and their fee charged); the status says
/// why they had no other effect.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Receipt {
    pub tx_hash: Hash32,
    /// 0 = success; other codes are defined by the application.
    pub status: u32,
    pub fee_charged: u64,
    /// Application output (bounded), e.g. an error message or a record id.
    pub output: Vec<u8>,
}

impl Encode for Receipt {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        self.tx_hash.encode(w);
        w.put_u32(self.status);
        w.put_u64(self.fee_charged);
        w.put_bytes_bounded(&self.output, CHAIN_RECEIPT_OUTPUT_BYTES_MAX);
    }
}

impl Decode for Receipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(Receipt {
            tx_hash: Hash32::decode(r)?,
            status: r.read_u32()?,
            fee_charged: r.read_u64()?,
            output: r
                .read_bytes_bounded(CHAIN_RECEIPT_OUTPUT_BYTES_MAX)?
                .to_vec(),
        })
    }
}

/// Merkle root over the canonical bytes of `receipts` (the header's
/// `receipts_root`); inclusion proofs use the same leaves.
pub fn receipts_root(receipts: &[Receipt]) -> Hash32 {
    let leaves: Vec<Hash32> = receipts
        .iter()
        .map(|r| {
            merkle::leaf_hash(
                &r.to_canonical_bytes()
                    .expect("receipt output is bounded at construction"),
            )
        })
        .collect();
    merkle::root_of(&leaves)
}

// ------------------------------------------------------------------- genesis

/// An account funded at genesis.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GenesisAccount {
    pub key: PublicKey,
    pub balance: u64,
}

impl Encode for GenesisAccount {
    fn encode(&self, w: &mut Writer) {
        self.key.encode(w);
        w.put_u64(self.balance);
    }
}

impl Decode for GenesisAccount {
    const ENCODED_LEN_MIN: usize = 40;
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(GenesisAccount {
            key: PublicKey::decode(r)?,
            balance: r.read_u64()?,
        })
    }
}

/// The document every node of a chain starts from. Its hash is the chain id
/// and the `prev_hash` of block 1.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Genesis {
    pub chain_name: String,
    pub genesis_time_ms: u64,
    pub validators: ValidatorSet,
    pub accounts: Vec<GenesisAccount>,
}

impl Genesis {
    /// `H(0x19 || canonical genesis)`.
    pub fn hash(&self) -> Hash32 {
        hash_encoded(DomainTag::Genesis, self).expect("genesis fields are bounded")
    }

    pub fn chain_id(&self) -> ChainId {
        ChainId(self.hash())
    }
}

impl Encode for Genesis {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        w.put_str_bounded(&self.chain_name, CHAIN_NAME_LEN_MAX);
        w.put_u64(self.genesis_time_ms);
        self.validators.encode(w);
        w.put_seq_bounded(&self.accounts, CHAIN_GENESIS_ACCOUNTS_COUNT_MAX);
    }
}

impl Decode for Genesis {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(Genesis {
            chain_name: r.read_str_bounded(CHAIN_NAME_LEN_MAX)?.to_owned(),
            genesis_time_ms: r.read_u64()?,
            validators: ValidatorSet::decode(r)?,
            accounts: r.read_seq_bounded(CHAIN_GENESIS_ACCOUNTS_COUNT_MAX)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_seed(&[i; 32])
    }

    fn set(n: u8) -> (Vec<SigningKey>, ValidatorSet) {
        let keys: Vec<SigningKey> = (1..=n).map(key).collect();
        let set = ValidatorSet::new(keys.iter().map(|k| k.public_key()).collect()).unwrap();
        (keys, set)
    }

    fn header(chain_id: ChainId, vs: &ValidatorSet) -> Header {
        Header {
            chain_id,
            height: 7,
            round: 2,
            prev_hash: Hash32([9; 32]),
            timestamp_ms: 1_700_000_000_000,
            proposer: *vs.proposer(7, 2),
            tx_root: tx_root(&[]),
            poh_root: merkle::empty_root(),
            receipts_root: receipts_root(&[]),
            state_root: Hash32([3; 32]),
            da_root: merkle::empty_root(),
            xcmp_root: merkle::empty_root(),
            validator_set_hash: vs.hash(),
            next_validator_set_hash: vs.hash(),
            mode: ChainMode::Normal,
        }
    }

    fn transfer(i: u8, nonce: u64) -> SignedTx {
        TxBody {
            chain_id: ChainId(Hash32([5; 32])),
            sender: key(i).public_key(),
            nonce,
            fee: 1,
            kind: TxKind::Transfer {
                to: key(i + 1).public_key(),
                amount: 3,
            },
        }
        .sign(&key(i))
        .unwrap()
    }

    #[test]
    fn tx_batch_round_trips_and_is_the_concatenation_of_its_txs() {
        let txs: Vec<SignedTx> = (0..5).map(|n| transfer(1 + (n as u8 % 3), n)).collect();
        let batch = TxBatch { txs: txs.clone() };
        let bytes = batch.to_canonical_bytes().unwrap();
        // version | count | each SignedTx's canonical bytes back to back.
        let mut expected = vec![CHAIN_ENCODING_VERSION];
        expected.extend_from_slice(&5u32.to_le_bytes());
        for tx in &txs {
            expected.extend_from_slice(&tx.to_canonical_bytes().unwrap());
        }
        assert_eq!(bytes, expected);
        let back = TxBatch::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.txs[3].hash(), txs[3].hash());
        let empty = TxBatch::default().to_canonical_bytes().unwrap();
        assert_eq!(empty, vec![CHAIN_ENCODING_VERSION, 0, 0, 0, 0]);
        assert_eq!(TxBatch::from_canonical_bytes(&empty).unwrap().txs.len(), 0);
    }

    #[test]
    fn tx_batch_refuses_bad_bytes() {
        let bytes = TxBatch {
            txs: vec![transfer(1, 0), transfer(2, 0)],
        }
        .to_canonical_bytes()
        .unwrap();
        // Unknown version.
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(
            TxBatch::from_canonical_bytes(&bad),
            Err(DecodeError::UnknownVersion { found: 9, .. })
        ));
        // Trailing byte.
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(TxBatch::from_canonical_bytes(&bad).is_err());
        // Count larger than the transactions present.
        let mut bad = bytes.clone();
        bad[1..5].copy_from_slice(&3u32.to_le_bytes());
        assert!(TxBatch::from_canonical_bytes(&bad).is_err());
        // Count above the bound, refused before anything is read.
        let mut bad = bytes.clone();
        bad[1..5].copy_from_slice(&(CHAIN_TX_BATCH_TXS_COUNT_MAX + 1).to_le_bytes());
        assert!(matches!(
            TxBatch::from_canonical_bytes(&bad),
            Err(DecodeError::CountExceedsMax {
                max: CHAIN_TX_BATCH_TXS_COUNT_MAX,
                ..
            })
        ));
        // Cut inside the second transaction.
        assert!(TxBatch::from_canonical_bytes(&bytes[..bytes.len() - 10]).is_err());
        // Input above the byte bound.
        let mut big = bytes.clone();
        big.resize(CHAIN_TX_BATCH_SIZE_BYTES_MAX as usize + 1, 0);
        assert!(matches!(
            TxBatch::from_canonical_bytes(&big),
            Err(DecodeError::LengthExceedsMax {
                max: CHAIN_TX_BATCH_SIZE_BYTES_MAX,
                ..
            })
        ));
        // A batch of more than the bound does not encode.
        let many = TxBatch {
            txs: vec![transfer(1, 0); CHAIN_TX_BATCH_TXS_COUNT_MAX as usize + 1],
        };
        assert!(many.to_canonical_bytes().is_err());
    }

    #[test]
    fn cached_key_decoding_answers_like_public_key_decode() {
        let good = key(7).public_key().to_bytes();
        // A small-order point (the identity) and a non-point.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let not_a_point = {
            // Find bytes that do not decompress (about half of all y do not).
            let mut b = [0u8; 32];
            (2u8..=255)
                .map(|y| {
                    b[0] = y;
                    b
                })
                .find(|b| PublicKey::from_bytes(b).is_err() && b != &identity)
                .unwrap()
        };
        for bytes in [good, identity, not_a_point, good, identity] {
            let mut input = vec![0xaa];
            input.extend_from_slice(&bytes);
            let mut r1 = Reader::new(&input);
            let mut r2 = Reader::new(&input);
            r1.read_u8().unwrap();
            r2.read_u8().unwrap();
            let cached = decode_key_cached(&mut r1);
            let plain = PublicKey::decode(&mut r2);
            assert_eq!(cached, plain, "bytes {}", hex::encode(bytes));
            assert_eq!(r1.offset(), r2.offset());
        }
        // Filling the cache past its bound empties it and keeps answering.
        for i in 0..(TX_KEY_CACHE_ENTRIES_MAX + 3) {
            let k = SigningKey::from_seed(&{
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                seed
            })
            .public_key();
            let b = k.to_bytes();
            assert_eq!(decode_key_cached(&mut Reader::new(&b)).unwrap(), k);
        }
        assert!(TX_KEY_CACHE.with(|c| c.borrow().len()) <= TX_KEY_CACHE_ENTRIES_MAX);
    }

    #[test]
    fn quorum_matches_qbft() {
        for (n, f, q) in [
            (1, 0, 1),
            (4, 1, 3),
            (5, 1, 4),
            (6, 1, 4),
            (7, 2, 5),
            (10, 3, 7),
        ] {
            let (_, vs) = set(n);
            assert_eq!(vs.faults_tolerated(), f, "n={n}");
            assert_eq!(vs.quorum(), q, "n={n}");
            // Two quorums always intersect in at least one honest validator.
            assert!(2 * q > vs.len() + f, "n={n}");
        }
    }

    #[test]
    fn validator_set_rejects_duplicates_and_empty() {
        let k = key(1).public_key();
        assert!(matches!(
            ValidatorSet::new(vec![k, key(2).public_key(), k]),
            Err(ValidatorSetError::Duplicate {
                first: 0,
                second: 2,
                ..
            })
        ));
        assert_eq!(ValidatorSet::new(vec![]), Err(ValidatorSetError::Empty));
    }

    #[test]
    fn round_trips_are_byte_identical() {
        let (keys, vs) = set(4);
        let genesis = Genesis {
            chain_name: "test".into(),
            genesis_time_ms: 1,
            validators: vs.clone(),
            accounts: vec![GenesisAccount {
                key: keys[0].public_key(),
                balance: 1000,
            }],
        };
        let chain_id = genesis.chain_id();
        let tx = TxBody {
            chain_id,
            sender: keys[0].public_key(),
            nonce: 0,
            fee: 1,
            kind: TxKind::Transfer {
                to: keys[1].public_key(),
                amount: 5,
            },
        }
        .sign(&keys[0])
        .unwrap();
        tx.verify_signature().unwrap();
        let mut h = header(chain_id, &vs);
        h.tx_root = tx_root(std::slice::from_ref(&tx));
        let block = Block {
            header: h.clone(),
            txs: vec![tx],
        };
        let seals: Vec<(ValidatorIndex, Signature)> = (0..3u16)
            .map(|i| {
                let d = commit_seal_digest(&chain_id, 7, 2, &h.hash());
                (i, keys[usize::from(i)].sign(d.as_bytes()))
            })
            .collect();
        let cert = CommitCertificate::from_seals(7, 2, h.hash(), 4, &seals);
        cert.verify(&chain_id, &h, &vs).unwrap();
        let fin = FinalizedBlock {
            block,
            certificate: cert,
        };
        let bytes = fin.to_canonical_bytes().unwrap();
        let back = FinalizedBlock::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, fin);
        assert_eq!(back.to_canonical_bytes().unwrap(), bytes);
        let gbytes = genesis.to_canonical_bytes().unwrap();
        assert_eq!(Genesis::from_canonical_bytes(&gbytes).unwrap(), genesis);
        // Trailing bytes and unknown versions are refused.
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(FinalizedBlock::from_canonical_bytes(&extra).is_err());
        let mut bad_version = bytes;
        bad_version[0] = 9;
        assert!(matches!(
            FinalizedBlock::from_canonical_bytes(&bad_version),
            Err(DecodeError::UnknownVersion { found: 9, .. })
        ));
    }

    #[test]
    fn certificate_rejects_short_forged_and_misdirected() {
        let (keys, vs) = set(4);
        let chain_id = ChainId(Hash32([1; 32]));
        let h = header(chain_id, &vs);
        let d = commit_seal_digest(&chain_id, 7, 2, &h.hash());
        let seal = |i: u16| (i, keys[usize::from(i)].sign(d.as_bytes()));
        let two = CommitCertificate::from_seals(7, 2, h.hash(), 4, &[seal(0), seal(1)]);
        assert_eq!(
            two.verify(&chain_id, &h, &vs),
            Err(CertificateError::BelowQuorum {
                signers: 2,
                quorum: 3
            })
        );
        // A seal for another round does not count for this one.
        let other = commit_seal_digest(&chain_id, 7, 3, &h.hash());
        let forged = CommitCertificate::from_seals(
            7,
            2,
            h.hash(),
            4,
            &[seal(0), seal(1), (2, keys[2].sign(other.as_bytes()))],
        );
        assert!(matches!(
            forged.verify(&chain_id, &h, &vs),
            Err(CertificateError::BadSignature { index: 2, .. })
        ));
        // Another chain's seals do not count either.
        let good = CommitCertificate::from_seals(7, 2, h.hash(), 4, &[seal(0), seal(1), seal(3)]);
        good.verify(&chain_id, &h, &vs).unwrap();
        let other_chain = ChainId(Hash32([2; 32]));
        assert!(good.verify(&other_chain, &h, &vs).is_err());
        let mut bits = good.clone();
        bits.signer_bitmap[0] |= 0x80;
        assert!(matches!(
            bits.verify(&chain_id, &h, &vs),
            Err(CertificateError::BitmapBeyondSet { index: 7, .. })
        ));
    }

    #[test]
    fn proposer_rotates_with_height_and_round() {
        let (_, vs) = set(4);
        let p: Vec<_> = (0..4).map(|r| *vs.proposer(1, r)).collect();
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(p[i], p[j]);
            }
        }
        assert_eq!(vs.proposer(2, 0), vs.proposer(1, 1));
    }
}
