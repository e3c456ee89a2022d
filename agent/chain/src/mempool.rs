//! Bounded mempool: pending transactions, nonce-ordered per sender and
//! fee-prioritized across senders.
//!
//! Rules:
//!
//! - Admission ([`Mempool::insert`]) checks, cheapest first: chain id,
//!   encoded size, duplicate id, nonce not below the sender's committed next
//!   nonce (a replay of a committed transaction, even one from many heights
//!   ago, fails here), signature, then the application's `check_tx`. A
//!   transaction for another chain is refused before anything else, so a
//!   replay across chains never reaches the signature check.
//! - Nonce gaps are held, not refused: a sender may submit nonces 5, 7, 6 in
//!   any order; 7 becomes selectable once 6 is pending.
//! - Same sender and nonce, different transaction: it replaces the pending
//!   one only if its fee is strictly higher (a fee bump), otherwise
//!   [`MempoolError::FeeBumpTooLow`].
//! - Capacity: at most `txs_count_max` transactions and `bytes_max` encoded
//!   bytes in total, `per_sender_txs_count_max` per sender. When full, a new
//!   transaction evicts pending ones only if its fee is strictly higher than
//!   each evicted fee; otherwise the caller gets [`MempoolError::Full`]
//!   (backpressure: retry later or pay more). Only a sender's *last*
//!   pending transaction (highest nonce) is ever evicted, lowest fee first
//!   and the newest arrival first among equal fees, so eviction never opens
//!   a nonce gap; the new transaction's own sender is never evicted for it.
//! - Selection ([`Mempool::select`]): per sender only the contiguous nonce
//!   run starting at the committed next nonce; across senders the next
//!   transaction of each sender competes by fee, highest first, ties by
//!   arrival order. The result depends only on the pool's contents, their
//!   arrival order and the committed nonces: deterministic.
//! - After a commit ([`Mempool::remove_committed`]) the included
//!   transactions go, and so does every pending transaction of their senders
//!   whose nonce is now below the sender's next nonce.
//!
//! Every operation is `O(log n)` per transaction touched (B-trees and hash
//! maps; selection is a merge over an ordered index of each sender's first
//! pending transaction), so selecting a block from a full pool does not scan
//! the pool.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use metanode_core::encoding::Encode;
use metanode_core::hash::Hash32;
use metanode_core::keys::PublicKey;
use metanode_core::limits::CHAIN_TX_SIZE_BYTES_MAX;

use crate::app::{Application, KeyId, TxRejection};
use crate::types::{ChainId, SignedTx};

/// Default pending transactions: 20 s of the 5 000 tx/s target, enough to
/// absorb a burst across a few slow rounds; at ~200 bytes per transfer
/// about 20 MiB plus index overhead.
pub const MEMPOOL_TXS_COUNT_MAX: usize = 100_000;
/// Default encoded bytes pending: bounds memory when transactions carry
/// large payloads (about 900 maximum-size transactions).
pub const MEMPOOL_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Default pending transactions per sender: 1 % of the pool, so one client
/// cannot crowd out the rest, yet enough to pipeline several blocks' worth.
pub const MEMPOOL_SENDER_TXS_COUNT_MAX: usize = 1_000;

const _: () = assert!(MEMPOOL_SENDER_TXS_COUNT_MAX <= MEMPOOL_TXS_COUNT_MAX);
// A single transaction of the largest size must fit an empty pool.
const _: () = assert!(CHAIN_TX_SIZE_BYTES_MAX as usize <= MEMPOOL_SIZE_BYTES_MAX);

/// Mempool bounds (defaults: the `MEMPOOL_*` constants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    pub txs_count_max: usize,
    pub bytes_max: usize,
    pub per_sender_txs_count_max: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            txs_count_max: MEMPOOL_TXS_COUNT_MAX,
            bytes_max: MEMPOOL_SIZE_BYTES_MAX,
            per_sender_txs_count_max: MEMPOOL_SENDER_TXS_COUNT_MAX,
        }
    }
}

/// Why [`Mempool::insert`] refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("transaction {tx} is for chain {got}, this node runs chain {expected}")]
    WrongChain {
        tx: Hash32,
        got: ChainId,
        expected: ChainId,
    },
    #[error("transaction {tx} encodes to {size_bytes} bytes, more than the maximum {max}")]
    TooLarge {
        tx: Hash32,
        size_bytes: usize,
        max: u32,
    },
    #[error("transaction {tx} from {sender} nonce {nonce} has a bad signature")]
    BadSignature {
        tx: Hash32,
        sender: KeyId,
        nonce: u64,
    },
    #[error("transaction rejected by the application: {0}")]
    Rejected(TxRejection),
    #[error("transaction {tx} is already pending")]
    Duplicate { tx: Hash32 },
    #[error(
        "transaction {tx}: nonce {nonce} of sender {sender} is already committed (next nonce {expected})"
    )]
    NonceTooLow {
        tx: Hash32,
        sender: KeyId,
        nonce: u64,
        expected: u64,
    },
    #[error(
        "transaction {tx}: sender {sender} already has {count} pending transactions, the per-sender maximum"
    )]
    SenderFull {
        tx: Hash32,
        sender: KeyId,
        count: usize,
    },
    #[error(
        "transaction {tx}: sender {sender} nonce {nonce} is already pending with fee {pending_fee}; a replacement must pay more, got fee {fee}"
    )]
    FeeBumpTooLow {
        tx: Hash32,
        sender: KeyId,
        nonce: u64,
        fee: u64,
        pending_fee: u64,
    },
    #[error(
        "mempool is full ({txs} transactions, {bytes} bytes; limits {txs_max} and {bytes_max}): transaction {tx} with fee {fee} does not outbid enough pending transactions to fit, retry later or raise the fee"
    )]
    Full {
        tx: Hash32,
        fee: u64,
        txs: usize,
        bytes: usize,
        txs_max: usize,
        bytes_max: usize,
    },
}

impl MempoolError {
    /// Every value [`MempoolError::reason`] returns, so metrics can show
    /// each reason (at zero) before it first happens.
    pub const REASONS: [&'static str; 16] = [
        "wrong_chain_id",
        "oversized",
        "bad_signature",
        "duplicate",
        "nonce_too_low",
        "nonce_gap",
        "nonce_exhausted",
        "fee_too_low",
        "insufficient_funds",
        "balance_overflow",
        "not_validator_admin",
        "bad_validator_set",
        "sender_full",
        "fee_bump_too_low",
        "mempool_full",
        // Not a mempool refusal: the encoding itself was bad (counted by
        // whoever decoded it), listed so one label set covers both.
        "undecodable",
    ];

    /// A short stable name of the refusal: a metric label. The same reason
    /// whether the mempool or the application check found it (a stale nonce
    /// is `nonce_too_low` either way: a replay).
    pub fn reason(&self) -> &'static str {
        match self {
            MempoolError::WrongChain { .. } => "wrong_chain_id",
            MempoolError::TooLarge { .. } => "oversized",
            MempoolError::BadSignature { .. } => "bad_signature",
            MempoolError::Rejected(rejection) => rejection.reason(),
            MempoolError::Duplicate { .. } => "duplicate",
            MempoolError::NonceTooLow { .. } => "nonce_too_low",
            MempoolError::SenderFull { .. } => "sender_full",
            MempoolError::FeeBumpTooLow { .. } => "fee_bump_too_low",
            MempoolError::Full { .. } => "mempool_full",
        }
    }
}

/// A transaction whose signature has been checked (strict Ed25519 over its
/// id) for this chain. The only way to make one is [`VerifiedTx::check`], so
/// holding one is the proof: the node runtime checks signatures on other
/// threads and hands the loop these, keeping ~50 µs per transaction off the
/// thread that runs consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx(SignedTx);

impl VerifiedTx {
    /// Checks, in the mempool's order, that `tx` is for `chain_id` (first,
    /// so a replay from another chain costs no signature check) and that its
    /// signature verifies; the errors are the ones [`Mempool::insert`]
    /// would give.
    pub fn check(tx: SignedTx, chain_id: ChainId) -> Result<VerifiedTx, MempoolError> {
        let body = tx.body();
        if body.chain_id != chain_id {
            return Err(MempoolError::WrongChain {
                tx: tx.hash(),
                got: body.chain_id,
                expected: chain_id,
            });
        }
        if tx.verify_signature().is_err() {
            return Err(MempoolError::BadSignature {
                tx: tx.hash(),
                sender: body.sender.into(),
                nonce: body.nonce,
            });
        }
        Ok(VerifiedTx(tx))
    }

    pub fn tx(&self) -> &SignedTx {
        &self.0
    }

    pub fn into_inner(self) -> SignedTx {
        self.0
    }
}

/// What a successful [`Mempool::insert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsertOutcome {
    pub tx: Hash32,
    /// The pending transaction with the same sender and nonce that this one
    /// replaced (fee bump).
    pub replaced: Option<Hash32>,
    /// Lower-fee transactions dropped to make room.
    pub evicted: Vec<Hash32>,
}

#[derive(Clone, Debug)]
struct Pending {
    tx: SignedTx,
    size_bytes: usize,
    /// Arrival order, the tie-break between equal fees.
    seq: u64,
}

/// Selection order: ascending = higher fee first, then earlier arrival.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct ReadyKey {
    fee: Reverse<u64>,
    seq: u64,
    sender: PublicKey,
    nonce: u64,
}

/// Eviction order: ascending = lower fee first, then later arrival.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct EvictKey {
    fee: u64,
    seq: Reverse<u64>,
    sender: PublicKey,
    nonce: u64,
}

fn ready_key(sender: PublicKey, nonce: u64, p: &Pending) -> ReadyKey {
    ReadyKey {
        fee: Reverse(p.tx.body().fee),
        seq: p.seq,
        sender,
        nonce,
    }
}

fn evict_key(sender: PublicKey, nonce: u64, p: &Pending) -> EvictKey {
    EvictKey {
        fee: p.tx.body().fee,
        seq: Reverse(p.seq),
        sender,
        nonce,
    }
}

/// The pending transactions of one node.
#[derive(Debug)]
pub struct Mempool {
    chain_id: ChainId,
    config: MempoolConfig,
    senders: HashMap<PublicKey, BTreeMap<u64, Pending>>,
    by_hash: HashMap<Hash32, (PublicKey, u64)>,
    /// Each sender's lowest pending nonce, in selection order.
    heads: BTreeSet<ReadyKey>,
    /// Each sender's highest pending nonce, in eviction order.
    tails: BTreeSet<EvictKey>,
    bytes: usize,
    next_seq: u64,
}

impl Mempool {
    pub fn new(chain_id: ChainId, config: MempoolConfig) -> Self {
        Mempool {
            chain_id,
            config,
            senders: HashMap::new(),
            by_hash: HashMap::new(),
            heads: BTreeSet::new(),
            tails: BTreeSet::new(),
            bytes: 0,
            next_seq: 0,
        }
    }

    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// Admits `tx` (see the module docs for the checks and the eviction
    /// rule).
    pub fn insert(
        &mut self,
        tx: SignedTx,
        app: &dyn Application,
    ) -> Result<InsertOutcome, MempoolError> {
        self.insert_checked(tx, app, false)
    }

    /// [`Mempool::insert`] for a transaction whose signature was already
    /// checked (off the node's loop, see [`VerifiedTx`]): every other check
    /// runs, in the same order.
    pub fn insert_verified(
        &mut self,
        tx: VerifiedTx,
        app: &dyn Application,
    ) -> Result<InsertOutcome, MempoolError> {
        self.insert_checked(tx.0, app, true)
    }

    fn insert_checked(
        &mut self,
        tx: SignedTx,
        app: &dyn Application,
        signature_verified: bool,
    ) -> Result<InsertOutcome, MempoolError> {
        let hash = tx.hash();
        let body = tx.body();
        let (sender, nonce, fee) = (body.sender, body.nonce, body.fee);
        if body.chain_id != self.chain_id {
            return Err(MempoolError::WrongChain {
                tx: hash,
                got: body.chain_id,
                expected: self.chain_id,
            });
        }
        // A transaction that does not encode is over some bound: too large.
        let size_bytes = tx.to_canonical_bytes().map_or(usize::MAX, |b| b.len());
        if size_bytes > CHAIN_TX_SIZE_BYTES_MAX as usize {
            return Err(MempoolError::TooLarge {
                tx: hash,
                size_bytes,
                max: CHAIN_TX_SIZE_BYTES_MAX,
            });
        }
        if self.by_hash.contains_key(&hash) {
            return Err(MempoolError::Duplicate { tx: hash });
        }
        let expected = app.next_nonce(&sender);
        if nonce < expected {
            return Err(MempoolError::NonceTooLow {
                tx: hash,
                sender: sender.into(),
                nonce,
                expected,
            });
        }
        if !signature_verified && tx.verify_signature().is_err() {
            return Err(MempoolError::BadSignature {
                tx: hash,
                sender: sender.into(),
                nonce,
            });
        }
        app.check_tx(&tx).map_err(MempoolError::Rejected)?;

        let queue = self.senders.get(&sender);
        let existing = queue.and_then(|q| q.get(&nonce));
        let (txs_after, bytes_after) = match existing {
            Some(old) => {
                let pending_fee = old.tx.body().fee;
                if fee <= pending_fee {
                    return Err(MempoolError::FeeBumpTooLow {
                        tx: hash,
                        sender: sender.into(),
                        nonce,
                        fee,
                        pending_fee,
                    });
                }
                (self.len(), self.bytes - old.size_bytes + size_bytes)
            }
            None => {
                let count = queue.map_or(0, BTreeMap::len);
                if count >= self.config.per_sender_txs_count_max {
                    return Err(MempoolError::SenderFull {
                        tx: hash,
                        sender: sender.into(),
                        count,
                    });
                }
                (self.len() + 1, self.bytes.saturating_add(size_bytes))
            }
        };
        let evict = self.plan_eviction(&sender, fee, txs_after, bytes_after);
        let Some(evict) = evict else {
            return Err(MempoolError::Full {
                tx: hash,
                fee,
                txs: self.len(),
                bytes: self.bytes,
                txs_max: self.config.txs_count_max,
                bytes_max: self.config.bytes_max,
            });
        };

        let mut evicted = Vec::with_capacity(evict.len());
        for key in evict {
            if let Some(p) = self.remove_entry(&key.sender, key.nonce) {
                evicted.push(p.tx.hash());
            }
        }
        let replaced = self.remove_entry(&sender, nonce).map(|p| p.tx.hash());
        let seq = self.next_seq;
        self.next_seq += 1;
        self.add_entry(Pending {
            tx,
            size_bytes,
            seq,
        });
        Ok(InsertOutcome {
            tx: hash,
            replaced,
            evicted,
        })
    }

    /// Which tails to evict so the pool holds `txs_after` transactions and
    /// `bytes_after` bytes within bounds, all with fee below `fee` and none
    /// from `sender`; `None` if that is not possible. Nothing is changed.
    fn plan_eviction(
        &self,
        sender: &PublicKey,
        fee: u64,
        mut txs_after: usize,
        mut bytes_after: usize,
    ) -> Option<Vec<EvictKey>> {
        let fits = |txs: usize, bytes: usize| {
            txs <= self.config.txs_count_max && bytes <= self.config.bytes_max
        };
        let mut plan = Vec::new();
        for key in &self.tails {
            if fits(txs_after, bytes_after) {
                break;
            }
            if key.fee >= fee {
                // Ordered by fee: nothing further is cheaper.
                return None;
            }
            if key.sender == *sender {
                continue;
            }
            let size = self
                .senders
                .get(&key.sender)
                .and_then(|q| q.get(&key.nonce))
                .map_or(0, |p| p.size_bytes);
            txs_after -= 1;
            bytes_after -= size;
            plan.push(*key);
        }
        fits(txs_after, bytes_after).then_some(plan)
    }

    /// Up to `max_txs` transactions totalling at most `max_bytes` encoded
    /// bytes for the next block, in inclusion order.
    pub fn select(&self, max_txs: usize, max_bytes: usize, app: &dyn Application) -> Vec<SignedTx> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut heads = self.heads.iter().peekable();
        // Successors of selected transactions, competing with the heads.
        let mut successors: BinaryHeap<Reverse<ReadyKey>> = BinaryHeap::new();
        while out.len() < max_txs {
            let from_heads = match (heads.peek(), successors.peek()) {
                (Some(h), Some(Reverse(s))) => *h < s,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let key = if from_heads {
                heads.next().copied()
            } else {
                successors.pop().map(|Reverse(k)| k)
            };
            let Some(key) = key else { break };
            let Some(queue) = self.senders.get(&key.sender) else {
                continue;
            };
            if from_heads {
                let next = app.next_nonce(&key.sender);
                if key.nonce != next {
                    // Above: a gap, nothing of this sender is ready. Below:
                    // stale entries not pruned yet; the run starts at `next`.
                    if key.nonce < next
                        && let Some(p) = queue.get(&next)
                    {
                        successors.push(Reverse(ready_key(key.sender, next, p)));
                    }
                    continue;
                }
            }
            let Some(p) = queue.get(&key.nonce) else {
                continue;
            };
            let Some(total) = bytes.checked_add(p.size_bytes).filter(|t| *t <= max_bytes) else {
                // Too big for what is left: this sender's run stops here,
                // smaller transactions of other senders may still fit.
                continue;
            };
            bytes = total;
            out.push(p.tx.clone());
            if let Some(n) = key.nonce.checked_add(1)
                && let Some(next) = queue.get(&n)
            {
                successors.push(Reverse(ready_key(key.sender, n, next)));
            }
        }
        out
    }

    /// After a block commits: drops `included` and every pending transaction
    /// of their senders whose nonce is now below the sender's next nonce.
    pub fn remove_committed(&mut self, included: &[SignedTx], app: &dyn Application) {
        let mut senders: Vec<PublicKey> = Vec::with_capacity(included.len());
        for tx in included {
            if let Some(&(sender, nonce)) = self.by_hash.get(&tx.hash()) {
                self.remove_entry(&sender, nonce);
            }
            senders.push(tx.body().sender);
        }
        senders.sort_unstable();
        senders.dedup();
        for sender in senders {
            let next = app.next_nonce(&sender);
            let stale_below = self
                .senders
                .get(&sender)
                .and_then(|q| q.first_key_value())
                .is_some_and(|(first, _)| *first < next);
            if !stale_below {
                continue;
            }
            self.unindex(&sender);
            if let Some(queue) = self.senders.get_mut(&sender) {
                let keep = queue.split_off(&next);
                let stale = std::mem::replace(queue, keep);
                for p in stale.into_values() {
                    self.by_hash.remove(&p.tx.hash());
                    self.bytes -= p.size_bytes;
                }
            }
            self.index(&sender);
        }
    }

    /// Pending transactions.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Encoded bytes of the pending transactions.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, hash: &Hash32) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Removes `sender`'s head and tail from the indexes (before its queue
    /// changes).
    fn unindex(&mut self, sender: &PublicKey) {
        if let Some(queue) = self.senders.get(sender) {
            if let Some((nonce, p)) = queue.first_key_value() {
                self.heads.remove(&ready_key(*sender, *nonce, p));
            }
            if let Some((nonce, p)) = queue.last_key_value() {
                self.tails.remove(&evict_key(*sender, *nonce, p));
            }
        }
    }

    /// Re-adds `sender`'s head and tail (after its queue changed), dropping
    /// the queue if it is empty.
    fn index(&mut self, sender: &PublicKey) {
        let Some(queue) = self.senders.get(sender) else {
            return;
        };
        match (queue.first_key_value(), queue.last_key_value()) {
            (Some((first, head)), Some((last, tail))) => {
                self.heads.insert(ready_key(*sender, *first, head));
                self.tails.insert(evict_key(*sender, *last, tail));
            }
            _ => {
                self.senders.remove(sender);
            }
        }
    }

    fn remove_entry(&mut self, sender: &PublicKey, nonce: u64) -> Option<Pending> {
        self.unindex(sender);
        let removed = self.senders.get_mut(sender).and_then(|q| q.remove(&nonce));
        if let Some(p) = &removed {
            self.by_hash.remove(&p.tx.hash());
            self.bytes -= p.size_bytes;
        }
        self.index(sender);
        removed
    }

    fn add_entry(&mut self, pending: Pending) {
        let body = pending.tx.body();
        let (sender, nonce) = (body.sender, body.nonce);
        self.unindex(&sender);
        self.by_hash.insert(pending.tx.hash(), (sender, nonce));
        self.bytes += pending.size_bytes;
        self.senders
            .entry(sender)
            .or_default()
            .insert(nonce, pending);
        self.index(&sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{BlockContext, LedgerApp};
    use crate::types::{Genesis, GenesisAccount, TxBody, TxKind, ValidatorSet};
    use metanode_core::encoding::Decode;
    use metanode_core::keys::SigningKey;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_seed(&[i; 32])
    }

    fn pk(i: u8) -> PublicKey {
        key(i).public_key()
    }

    /// Every refusal has a metric label from the published list, and the
    /// labels are distinct (two reasons never share a series).
    #[test]
    fn every_refusal_reason_is_a_listed_label() {
        let tx = Hash32::ZERO;
        let sender = KeyId::from(pk(2));
        let chain = ChainId(Hash32([1; 32]));
        let app = |r| MempoolError::Rejected(r);
        let errors = [
            MempoolError::WrongChain {
                tx,
                got: chain,
                expected: chain,
            },
            MempoolError::TooLarge {
                tx,
                size_bytes: 1,
                max: 0,
            },
            MempoolError::BadSignature {
                tx,
                sender,
                nonce: 0,
            },
            MempoolError::Duplicate { tx },
            MempoolError::NonceTooLow {
                tx,
                sender,
                nonce: 0,
                expected: 1,
            },
            app(TxRejection::NonceGap {
                sender,
                nonce: 2,
                expected: 1,
            }),
            app(TxRejection::NonceExhausted {
                sender,
                nonce: u64::MAX,
            }),
            app(TxRejection::FeeTooLow {
                sender,
                nonce: 0,
                fee: 0,
                min: 1,
            }),
            app(TxRejection::InsufficientFunds {
                sender,
                nonce: 0,
                balance: 0,
                needed: 1,
            }),
            app(TxRejection::BalanceOverflow {
                to: sender,
                balance: 1,
                amount: u64::MAX,
            }),
            app(TxRejection::NotValidatorAdmin { sender, nonce: 0 }),
            app(TxRejection::BadValidatorSet {
                sender,
                nonce: 0,
                reason: "x".into(),
            }),
            MempoolError::SenderFull {
                tx,
                sender,
                count: 1,
            },
            MempoolError::FeeBumpTooLow {
                tx,
                sender,
                nonce: 0,
                fee: 1,
                pending_fee: 1,
            },
            MempoolError::Full {
                tx,
                fee: 1,
                txs: 1,
                bytes: 1,
                txs_max: 1,
                bytes_max: 1,
            },
        ];
        let reasons: Vec<&str> = errors.iter().map(MempoolError::reason).collect();
        for reason in &reasons {
            assert!(MempoolError::REASONS.contains(reason), "{reason}");
        }
        let mut distinct = reasons.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), reasons.len(), "{reasons:?}");
        // The same stale-nonce refusal from the application check.
        let replay = app(TxRejection::NonceTooLow {
            sender,
            nonce: 0,
            expected: 1,
        });
        assert_eq!(replay.reason(), "nonce_too_low");
        // All listed labels are produced, plus the decoders' "undecodable".
        assert_eq!(reasons.len() + 1, MempoolError::REASONS.len());
    }

    /// Senders 10..=30 hold 1 000 000 each; validator is key 1.
    fn setup(config: MempoolConfig) -> (Genesis, LedgerApp, Mempool) {
        let genesis = Genesis {
            chain_name: "mempool-test".into(),
            genesis_time_ms: 0,
            validators: ValidatorSet::new(vec![pk(1)]).unwrap(),
            accounts: (10..=30)
                .map(|i| GenesisAccount {
                    key: pk(i),
                    balance: 1_000_000,
                })
                .collect(),
        };
        let app = LedgerApp::from_genesis(&genesis);
        let pool = Mempool::new(genesis.chain_id(), config);
        (genesis, app, pool)
    }

    fn tx(g: &Genesis, from: u8, nonce: u64, fee: u64) -> SignedTx {
        TxBody {
            chain_id: g.chain_id(),
            sender: pk(from),
            nonce,
            fee,
            kind: TxKind::Transfer {
                to: pk(99),
                amount: 1,
            },
        }
        .sign(&key(from))
        .unwrap()
    }

    fn ids(txs: &[SignedTx]) -> Vec<(u8, u64)> {
        txs.iter()
            .map(|t| {
                let from = (10..=30u8).find(|&i| pk(i) == t.body().sender).unwrap();
                (from, t.body().nonce)
            })
            .collect()
    }

    fn commit(g: &Genesis, app: &mut LedgerApp, txs: &[SignedTx]) {
        let height = app.committed_height() + 1;
        let ctx = BlockContext {
            chain_id: g.chain_id(),
            height,
            timestamp_ms: height,
            proposer: pk(1),
            validators: g.validators.clone(),
        };
        app.commit(&ctx, txs);
    }

    #[test]
    fn verified_insert_answers_like_insert() {
        let (g, app, mut plain) = setup(MempoolConfig::default());
        let (_, _, mut verified) = setup(MempoolConfig::default());
        let good = tx(&g, 10, 0, 5);
        // Signed by the wrong key: a bad signature for sender 11.
        let mut forged_body = tx(&g, 11, 0, 5).body().clone();
        forged_body.fee = 6;
        let forged = forged_body.sign(&key(12)).unwrap();
        let other_chain = TxBody {
            chain_id: ChainId(Hash32([1; 32])),
            ..good.body().clone()
        }
        .sign(&key(10))
        .unwrap();
        for t in [good.clone(), forged, other_chain, good] {
            let expected = plain.insert(t.clone(), &app);
            let got =
                VerifiedTx::check(t, g.chain_id()).and_then(|v| verified.insert_verified(v, &app));
            assert_eq!(got, expected);
        }
        assert_eq!(plain.len(), 1);
        assert_eq!(verified.len(), 1);
        assert!(matches!(
            VerifiedTx::check(tx(&g, 13, 0, 1), ChainId(Hash32([1; 32]))),
            Err(MempoolError::WrongChain { .. })
        ));
    }

    #[test]
    fn selects_by_fee_across_senders_with_nonce_runs() {
        let (g, app, mut pool) = setup(MempoolConfig::default());
        // Inserted out of nonce order on purpose.
        for t in [
            tx(&g, 10, 1, 50),
            tx(&g, 10, 0, 5),
            tx(&g, 11, 0, 10),
            tx(&g, 11, 1, 1),
            tx(&g, 12, 0, 7),
            tx(&g, 13, 0, 7), // same fee as 12, later arrival
        ] {
            pool.insert(t, &app).unwrap();
        }
        let all = pool.select(100, usize::MAX, &app);
        assert_eq!(
            ids(&all),
            vec![(11, 0), (12, 0), (13, 0), (10, 0), (10, 1), (11, 1)]
        );
        // Count and byte limits cut the same order.
        assert_eq!(
            ids(&pool.select(2, usize::MAX, &app)),
            vec![(11, 0), (12, 0)]
        );
        let size = all[0].to_canonical_bytes().unwrap().len();
        assert_eq!(ids(&pool.select(100, 3 * size, &app)).len(), 3);
        assert_eq!(pool.select(100, size - 1, &app), Vec::<SignedTx>::new());
        // Deterministic.
        assert_eq!(pool.select(100, usize::MAX, &app), all);
        assert_eq!(pool.len(), 6);
        assert_eq!(pool.bytes(), 6 * size);
    }

    #[test]
    fn gaps_are_held_but_not_selected() {
        let (g, app, mut pool) = setup(MempoolConfig::default());
        pool.insert(tx(&g, 10, 1, 100), &app).unwrap();
        pool.insert(tx(&g, 11, 0, 1), &app).unwrap();
        pool.insert(tx(&g, 11, 2, 100), &app).unwrap();
        assert_eq!(ids(&pool.select(100, usize::MAX, &app)), vec![(11, 0)]);
        // Filling the gaps makes the whole runs selectable. Equal-fee heads
        // go by arrival (11/0 came before 10/0); once 10/0 is in, its
        // fee-100 successor outbids 11/1.
        pool.insert(tx(&g, 10, 0, 1), &app).unwrap();
        pool.insert(tx(&g, 11, 1, 1), &app).unwrap();
        assert_eq!(
            ids(&pool.select(100, usize::MAX, &app)),
            vec![(11, 0), (10, 0), (10, 1), (11, 1), (11, 2)]
        );
    }

    #[test]
    fn refuses_duplicates_replays_foreign_and_forged() {
        let (g, mut app, mut pool) = setup(MempoolConfig::default());
        let t = tx(&g, 10, 0, 3);
        let outcome = pool.insert(t.clone(), &app).unwrap();
        assert_eq!(
            outcome,
            InsertOutcome {
                tx: t.hash(),
                replaced: None,
                evicted: vec![]
            }
        );
        assert!(pool.contains(&t.hash()));
        assert_eq!(
            pool.insert(t.clone(), &app),
            Err(MempoolError::Duplicate { tx: t.hash() })
        );

        // Committed, then replayed at a later height.
        commit(&g, &mut app, std::slice::from_ref(&t));
        pool.remove_committed(std::slice::from_ref(&t), &app);
        assert!(pool.is_empty());
        assert_eq!(pool.bytes(), 0);
        let err = pool.insert(t.clone(), &app).unwrap_err();
        assert_eq!(
            err,
            MempoolError::NonceTooLow {
                tx: t.hash(),
                sender: pk(10).into(),
                nonce: 0,
                expected: 1
            }
        );
        assert!(err.to_string().contains("nonce 0"));

        // The same transaction signed for another chain.
        let foreign = TxBody {
            chain_id: ChainId(Hash32([1; 32])),
            ..t.body().clone()
        }
        .sign(&key(10))
        .unwrap();
        assert!(matches!(
            pool.insert(foreign, &app),
            Err(MempoolError::WrongChain { .. })
        ));

        // A flipped signature bit.
        let good = tx(&g, 10, 1, 3);
        let mut bytes = good.to_canonical_bytes().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let forged = SignedTx::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(
            pool.insert(forged, &app),
            Err(MempoolError::BadSignature {
                tx: good.hash(),
                sender: pk(10).into(),
                nonce: 1
            })
        );

        // Application refusal: more than the balance.
        let rich = TxBody {
            chain_id: g.chain_id(),
            sender: pk(11),
            nonce: 0,
            fee: 1,
            kind: TxKind::Transfer {
                to: pk(12),
                amount: 2_000_000,
            },
        }
        .sign(&key(11))
        .unwrap();
        assert!(matches!(
            pool.insert(rich, &app),
            Err(MempoolError::Rejected(
                TxRejection::InsufficientFunds { .. }
            ))
        ));
        assert!(pool.is_empty());
    }

    #[test]
    fn full_pool_evicts_only_for_a_strictly_higher_fee() {
        let config = MempoolConfig {
            txs_count_max: 3,
            ..MempoolConfig::default()
        };
        let (g, app, mut pool) = setup(config);
        let low = tx(&g, 10, 0, 5);
        pool.insert(low.clone(), &app).unwrap();
        pool.insert(tx(&g, 11, 0, 6), &app).unwrap();
        pool.insert(tx(&g, 12, 0, 7), &app).unwrap();
        let size = low.to_canonical_bytes().unwrap().len();
        let same = tx(&g, 13, 0, 5);
        let err = pool.insert(same.clone(), &app).unwrap_err();
        assert_eq!(
            err,
            MempoolError::Full {
                tx: same.hash(),
                fee: 5,
                txs: 3,
                bytes: 3 * size,
                txs_max: 3,
                bytes_max: MEMPOOL_SIZE_BYTES_MAX
            }
        );
        assert!(
            err.to_string()
                .starts_with("mempool is full (3 transactions")
        );
        let higher = tx(&g, 13, 0, 6);
        let outcome = pool.insert(higher.clone(), &app).unwrap();
        assert_eq!(outcome.evicted, vec![low.hash()]);
        assert!(!pool.contains(&low.hash()));
        assert!(pool.contains(&higher.hash()));
        assert_eq!(pool.len(), 3);
        // Among equal fees (11 and 13 both pay 6) the newest goes first.
        let outcome = pool.insert(tx(&g, 14, 0, 8), &app).unwrap();
        assert_eq!(outcome.evicted, vec![higher.hash()]);
        assert_eq!(
            ids(&pool.select(10, usize::MAX, &app)),
            vec![(14, 0), (12, 0), (11, 0)]
        );
    }

    #[test]
    fn eviction_takes_tails_and_spares_the_new_sender() {
        let config = MempoolConfig {
            txs_count_max: 3,
            ..MempoolConfig::default()
        };
        let (g, app, mut pool) = setup(config);
        // Sender 10 has a cheap head and a pricier tail: only the tail is
        // evictable, so evicting never strands nonce 1 behind a gap.
        pool.insert(tx(&g, 10, 0, 1), &app).unwrap();
        pool.insert(tx(&g, 10, 1, 4), &app).unwrap();
        pool.insert(tx(&g, 11, 0, 2), &app).unwrap();
        // Sender 11's next nonce may not evict its own predecessor; 10's
        // tail (fee 4) is not cheaper than 3.
        assert!(matches!(
            pool.insert(tx(&g, 11, 1, 3), &app),
            Err(MempoolError::Full { .. })
        ));
        let outcome = pool.insert(tx(&g, 12, 0, 5), &app).unwrap();
        assert_eq!(outcome.evicted, vec![tx(&g, 11, 0, 2).hash()]);
        assert_eq!(
            ids(&pool.select(10, usize::MAX, &app)),
            vec![(12, 0), (10, 0), (10, 1)]
        );
    }

    #[test]
    fn byte_bound_is_enforced() {
        let probe = {
            let (g, _, _) = setup(MempoolConfig::default());
            tx(&g, 10, 0, 1).to_canonical_bytes().unwrap().len()
        };
        let config = MempoolConfig {
            bytes_max: 2 * probe,
            ..MempoolConfig::default()
        };
        let (g, app, mut pool) = setup(config);
        pool.insert(tx(&g, 10, 0, 1), &app).unwrap();
        pool.insert(tx(&g, 11, 0, 1), &app).unwrap();
        assert!(matches!(
            pool.insert(tx(&g, 12, 0, 1), &app),
            Err(MempoolError::Full { bytes, .. }) if bytes == 2 * probe
        ));
        let outcome = pool.insert(tx(&g, 12, 0, 2), &app).unwrap();
        assert_eq!(outcome.evicted.len(), 1);
        assert_eq!(pool.bytes(), 2 * probe);
    }

    #[test]
    fn per_sender_cap_and_fee_bump() {
        let config = MempoolConfig {
            per_sender_txs_count_max: 2,
            ..MempoolConfig::default()
        };
        let (g, app, mut pool) = setup(config);
        let first = tx(&g, 10, 0, 2);
        pool.insert(first.clone(), &app).unwrap();
        pool.insert(tx(&g, 10, 1, 2), &app).unwrap();
        let third = tx(&g, 10, 2, 2);
        assert_eq!(
            pool.insert(third.clone(), &app),
            Err(MempoolError::SenderFull {
                tx: third.hash(),
                sender: pk(10).into(),
                count: 2
            })
        );
        // Replacing at the cap is allowed, but only for a strictly higher fee.
        let same_fee = tx(&g, 10, 0, 2);
        assert_eq!(same_fee.hash(), first.hash());
        let equal = TxBody {
            kind: TxKind::Payload { data: vec![7] },
            ..first.body().clone()
        }
        .sign(&key(10))
        .unwrap();
        assert_eq!(
            pool.insert(equal.clone(), &app),
            Err(MempoolError::FeeBumpTooLow {
                tx: equal.hash(),
                sender: pk(10).into(),
                nonce: 0,
                fee: 2,
                pending_fee: 2
            })
        );
        let bump = tx(&g, 10, 0, 9);
        let outcome = pool.insert(bump.clone(), &app).unwrap();
        assert_eq!(outcome.replaced, Some(first.hash()));
        assert_eq!(pool.len(), 2);
        assert!(!pool.contains(&first.hash()));
        let selected = pool.select(10, usize::MAX, &app);
        assert_eq!(selected[0], bump);
        assert_eq!(ids(&selected), vec![(10, 0), (10, 1)]);
    }

    #[test]
    fn remove_committed_drops_included_and_stale() {
        let (g, mut app, mut pool) = setup(MempoolConfig::default());
        let a0 = tx(&g, 10, 0, 1);
        let a0_bump = tx(&g, 10, 0, 5);
        pool.insert(a0_bump.clone(), &app).unwrap();
        for t in [tx(&g, 10, 1, 1), tx(&g, 10, 2, 1), tx(&g, 11, 0, 1)] {
            pool.insert(t, &app).unwrap();
        }
        // Another proposer included the original a0 and our a1.
        let block = vec![a0, tx(&g, 10, 1, 1)];
        commit(&g, &mut app, &block);
        pool.remove_committed(&block, &app);
        assert!(!pool.contains(&a0_bump.hash()), "stale nonce 0 dropped");
        assert!(!pool.contains(&tx(&g, 10, 1, 1).hash()));
        assert_eq!(pool.len(), 2);
        let size = a0_bump.to_canonical_bytes().unwrap().len();
        assert_eq!(pool.bytes(), 2 * size);
        assert_eq!(
            ids(&pool.select(10, usize::MAX, &app)),
            vec![(10, 2), (11, 0)]
        );
    }

    #[test]
    fn select_from_a_large_pool_respects_runs() {
        let (g, app, mut pool) = setup(MempoolConfig::default());
        // 21 senders × 40 nonces with varying fees.
        for nonce in 0..40u64 {
            for from in 10..=30u8 {
                let fee = 1 + (u64::from(from) * 7 + nonce * 13) % 50;
                pool.insert(tx(&g, from, nonce, fee), &app).unwrap();
            }
        }
        assert_eq!(pool.len(), 840);
        let picked = pool.select(500, usize::MAX, &app);
        assert_eq!(picked.len(), 500);
        let mut next: HashMap<PublicKey, u64> = HashMap::new();
        for t in &picked {
            let n = next.entry(t.body().sender).or_insert(0);
            assert_eq!(t.body().nonce, *n, "contiguous per sender");
            *n += 1;
        }
    }
}
