//! Leader-side Proof-of-History ordering ticks.
//!
//! The proposer stamps each transaction of the block it builds with a tick
//! that chains onto the previous one, so the header's `poh_root` commits to
//! the exact order the leader chose and to each sender's own sequence. It is
//! an ordering commitment, not a verifiable delay function: one tick costs
//! two small BLAKE3 calls, and anyone holding the block recomputes the root.
//!
//! Rules (DESIGN.md "PoH", with the per-block chaining made explicit):
//!
//! - `seed` is the parent block hash: the `prev_hash` of the block being
//!   built (the genesis hash for block 1). Ticks therefore cannot be
//!   precomputed before the parent is final.
//! - Every sender has a nonce chain that starts at 32 zero bytes in each
//!   block: `NC_s := BLAKE3(NC_s || nonce_le_u64 || tx_hash)` (plain BLAKE3,
//!   72 bytes in). Folding in the transaction id makes the tick commit to
//!   the transaction itself, not only to its nonce.
//! - `tick_0 = H(0x12 || seed || NC_{sender of tx_0})` and
//!   `tick_i = H(0x12 || tick_{i−1} || NC_{sender of tx_i})`: each tick
//!   chains onto the previous one, so swapping any two transactions changes
//!   every later tick.
//! - `poh_root = merkle::root_of([leaf_hash(tick_0), leaf_hash(tick_1), …])`
//!   (RFC 9162 shape, leaf = `H(0x00 || tick bytes)`); a block without
//!   transactions has `merkle::empty_root()`.

use std::collections::HashMap;

use metanode_core::hash::{Hash32, blake3_256, hash_tagged};
use metanode_core::keys::PublicKey;
use metanode_core::merkle;
use metanode_core::tags::DomainTag;

use crate::types::SignedTx;

/// Records the ticks of one block in the order the leader includes its
/// transactions.
#[derive(Clone, Debug)]
pub struct PohRecorder {
    seed: Hash32,
    /// Per-sender nonce chains of this block. Only looked up by key, so the
    /// map's iteration order never reaches the output.
    nonce_chains: HashMap<PublicKey, Hash32>,
    ticks: Vec<Hash32>,
}

impl PohRecorder {
    /// Starts a block whose parent hash is `seed`.
    pub fn new(seed: Hash32) -> Self {
        PohRecorder {
            seed,
            nonce_chains: HashMap::new(),
            ticks: Vec::new(),
        }
    }

    /// Appends `tx` to the order and returns its tick.
    pub fn record(&mut self, tx: &SignedTx) -> Hash32 {
        let body = tx.body();
        let chain = self.nonce_chains.entry(body.sender).or_insert(Hash32::ZERO);
        let mut input = [0u8; 32 + 8 + 32];
        input[..32].copy_from_slice(chain.as_bytes());
        input[32..40].copy_from_slice(&body.nonce.to_le_bytes());
        input[40..].copy_from_slice(tx.hash().as_bytes());
        *chain = blake3_256(&input);
        let previous = self.ticks.last().copied().unwrap_or(self.seed);
        let tick = hash_tagged(DomainTag::PohTick, &[previous.as_bytes(), chain.as_bytes()]);
        self.ticks.push(tick);
        tick
    }

    /// Ticks recorded so far, in transaction order.
    pub fn ticks(&self) -> &[Hash32] {
        &self.ticks
    }

    /// Merkle root over the ticks recorded so far (the header's `poh_root`).
    pub fn root(&self) -> Hash32 {
        let leaves: Vec<Hash32> = self
            .ticks
            .iter()
            .map(|tick| merkle::leaf_hash(tick.as_bytes()))
            .collect();
        merkle::root_of(&leaves)
    }
}

/// Recomputes the PoH root of a block whose parent hash is `seed` and whose
/// transactions are `txs`, in block order (what validators and the light
/// client check against the header).
pub fn poh_root(seed: Hash32, txs: &[SignedTx]) -> Hash32 {
    let mut recorder = PohRecorder::new(seed);
    for tx in txs {
        recorder.record(tx);
    }
    recorder.root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChainId, TxBody, TxKind};
    use metanode_core::keys::SigningKey;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_seed(&[i; 32])
    }

    fn tx(from: &SigningKey, nonce: u64, amount: u64) -> SignedTx {
        TxBody {
            chain_id: ChainId(Hash32([7; 32])),
            sender: from.public_key(),
            nonce,
            fee: 1,
            kind: TxKind::Transfer {
                to: key(99).public_key(),
                amount,
            },
        }
        .sign(from)
        .unwrap()
    }

    fn nonce_step(chain: Hash32, tx: &SignedTx) -> Hash32 {
        let mut input = Vec::new();
        input.extend_from_slice(chain.as_bytes());
        input.extend_from_slice(&tx.body().nonce.to_le_bytes());
        input.extend_from_slice(tx.hash().as_bytes());
        blake3_256(&input)
    }

    #[test]
    fn empty_block_has_the_empty_root() {
        let seed = Hash32([1; 32]);
        assert_eq!(poh_root(seed, &[]), merkle::empty_root());
        let recorder = PohRecorder::new(seed);
        assert!(recorder.ticks().is_empty());
        assert_eq!(recorder.root(), merkle::empty_root());
    }

    #[test]
    fn ticks_follow_the_documented_formula() {
        let (a, b) = (key(1), key(2));
        let txs = [tx(&a, 0, 10), tx(&b, 5, 20), tx(&a, 1, 30)];
        let seed = Hash32([3; 32]);
        let mut recorder = PohRecorder::new(seed);
        let ticks: Vec<Hash32> = txs.iter().map(|t| recorder.record(t)).collect();
        assert_eq!(recorder.ticks(), ticks.as_slice());

        // Sender a's chain runs through its two transactions; b's is separate.
        let nc_a0 = nonce_step(Hash32::ZERO, &txs[0]);
        let nc_b = nonce_step(Hash32::ZERO, &txs[1]);
        let nc_a1 = nonce_step(nc_a0, &txs[2]);
        let t0 = hash_tagged(DomainTag::PohTick, &[seed.as_bytes(), nc_a0.as_bytes()]);
        let t1 = hash_tagged(DomainTag::PohTick, &[t0.as_bytes(), nc_b.as_bytes()]);
        let t2 = hash_tagged(DomainTag::PohTick, &[t1.as_bytes(), nc_a1.as_bytes()]);
        assert_eq!(ticks, vec![t0, t1, t2]);
        // The tick byte 0x12 really is the first byte hashed.
        let mut raw = vec![0x12];
        raw.extend_from_slice(seed.as_bytes());
        raw.extend_from_slice(nc_a0.as_bytes());
        assert_eq!(t0, blake3_256(&raw));

        let leaves: Vec<Hash32> = [t0, t1, t2]
            .iter()
            .map(|t| merkle::leaf_hash(t.as_bytes()))
            .collect();
        assert_eq!(recorder.root(), merkle::root_of(&leaves));
        assert_eq!(poh_root(seed, &txs), recorder.root());
    }

    #[test]
    fn order_seed_and_content_change_the_root() {
        let (a, b) = (key(1), key(2));
        let txs = vec![tx(&a, 0, 10), tx(&b, 0, 20), tx(&a, 1, 30)];
        let seed = Hash32([3; 32]);
        let root = poh_root(seed, &txs);

        let mut swapped = txs.clone();
        swapped.swap(0, 1);
        assert_ne!(poh_root(seed, &swapped), root);
        assert_ne!(poh_root(Hash32([4; 32]), &txs), root);

        // Same sender and nonce, different transaction: different tick.
        let mut changed = txs.clone();
        changed[2] = tx(&a, 1, 31);
        assert_ne!(poh_root(seed, &changed), root);

        // Deterministic.
        assert_eq!(poh_root(seed, &txs), root);
    }

    #[test]
    fn nonce_chain_is_per_sender_and_per_block() {
        // The same transaction recorded first in two blocks with the same
        // seed gets the same tick: chains restart at zero every block.
        let a = key(1);
        let t = tx(&a, 4, 1);
        let mut one = PohRecorder::new(Hash32([5; 32]));
        let mut two = PohRecorder::new(Hash32([5; 32]));
        assert_eq!(one.record(&t), two.record(&t));
        // Another sender's transaction in between does not feed a's chain:
        // a's second tick only depends on the previous tick and a's chain.
        let b = key(2);
        let tb = tx(&b, 0, 1);
        let ta = tx(&a, 5, 1);
        one.record(&tb);
        let tick = one.record(&ta);
        let nc_a = nonce_step(nonce_step(Hash32::ZERO, &t), &ta);
        let expected = hash_tagged(
            DomainTag::PohTick,
            &[one.ticks()[1].as_bytes(), nc_a.as_bytes()],
        );
        assert_eq!(tick, expected);
    }
}
