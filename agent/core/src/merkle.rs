//! Binary Merkle trees with the RFC 6962 / RFC 9162 shape, over BLAKE3.
//!
//! Block roots (PoH ticks, receipts, DA shards) and the court transparency
//! log all commit to lists with this one tree, so a light client or auditor
//! needs exactly one verifier. The shape is RFC 9162 §2.1.1 with HASH =
//! BLAKE3-256 and the domain bytes from [`crate::tags`]:
//!
//! - leaf: `H(0x00 || data)`;
//! - node: `H(0x01 || left || right)`;
//! - a list of `n > 1` leaves splits at `k`, the largest power of two
//!   strictly less than `n`; the left subtree is always perfect, so an odd
//!   node is promoted, never duplicated (which is what makes the
//!   duplicate-last-leaf ambiguity of Bitcoin-style trees impossible);
//! - the root of the empty list is BLAKE3 of the empty string (RFC 9162's
//!   `MTH({}) = HASH()`), see [`empty_root`].
//!
//! Inclusion proofs are RFC 9162 §2.1.3 audit paths (sibling nearest the
//! leaf first) and [`InclusionProof::verify`] is the §2.1.3.2 algorithm.
//! The golden vectors in the tests come from an independent transcription of
//! the RFC in `tests/vectors/merkle_vectors.py`.

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{Hash32, blake3_256, hash_tagged};
use crate::limits::MERKLE_PROOF_PATH_LEN_MAX;
use crate::tags::DomainTag;

/// Leaves up to this size are hashed from one stack buffer in a single BLAKE3
/// call (a leaf over a 32-byte hash is the common case: receipts, tx ids).
const LEAF_INLINE_BYTES_MAX: usize = 64;

/// `H(0x00 || data)`: the hash of one leaf.
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    if data.len() > LEAF_INLINE_BYTES_MAX {
        return hash_tagged(DomainTag::MerkleLeaf, &[data]);
    }
    // One contiguous BLAKE3 call costs about two thirds of the incremental
    // hasher's for these sizes; a tree needs a leaf and a node per entry
    // (the cage seals a batch of receipts on the proxy's cores). Same bytes,
    // same digest as `hash_tagged` (tested).
    let mut input = [0u8; 1 + LEAF_INLINE_BYTES_MAX];
    input[0] = DomainTag::MerkleLeaf.byte();
    input[1..=data.len()].copy_from_slice(data);
    blake3_256(&input[..=data.len()])
}

/// `H(0x01 || left || right)`: the hash of an interior node, from one
/// stack buffer in a single BLAKE3 call (see `leaf_hash`).
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut input = [0u8; 65];
    input[0] = DomainTag::MerkleNode.byte();
    input[1..33].copy_from_slice(left.as_bytes());
    input[33..].copy_from_slice(right.as_bytes());
    blake3_256(&input)
}

/// Root of the empty tree: BLAKE3-256 of the empty string, as RFC 9162
/// defines `MTH({}) = HASH()`. It carries no domain tag, and cannot collide
/// with a tagged leaf or node hash, whose inputs are never empty.
pub fn empty_root() -> Hash32 {
    blake3_256(b"")
}

/// Root over precomputed leaf hashes without building a tree: `O(n)` hashes,
/// no allocation, recursion depth `O(log n)`.
pub fn root_of(leaf_hashes: &[Hash32]) -> Hash32 {
    if leaf_hashes.is_empty() {
        return empty_root();
    }
    subtree_root(leaf_hashes)
}

fn subtree_root(leaves: &[Hash32]) -> Hash32 {
    match leaves {
        [single] => *single,
        _ => {
            let k = split_point(leaves.len());
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// Largest power of two strictly less than `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Number of audit-path hashes for `leaf_index` in a tree of `tree_size`.
fn path_len(leaf_index: u64, tree_size: u64) -> usize {
    let (mut index, mut width, mut len) = (leaf_index, tree_size, 0);
    while width > 1 {
        if index ^ 1 < width {
            len += 1;
        }
        index >>= 1;
        width = width.div_ceil(2);
    }
    len
}

/// A tree with every level kept, so proofs cost `O(log n)`.
///
/// Levels are built bottom-up by pairing left to right and promoting an odd
/// last node unchanged; that yields exactly the RFC 9162 recursive shape
/// (the tests check it against [`root_of`] and the RFC vectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` holds the leaf hashes, the last level the root. Empty for
    /// the empty tree.
    levels: Vec<Vec<Hash32>>,
}

impl MerkleTree {
    /// Hashes each item as a leaf (`H(0x00 || item)`) and builds the tree.
    pub fn from_leaves<T: AsRef<[u8]>>(leaves: &[T]) -> Self {
        Self::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l.as_ref())).collect())
    }

    /// Builds the tree over hashes that are already leaf hashes.
    pub fn from_leaf_hashes(leaf_hashes: Vec<Hash32>) -> Self {
        if leaf_hashes.is_empty() {
            return MerkleTree { levels: Vec::new() };
        }
        let mut levels = vec![leaf_hashes];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    // An odd last node moves up unchanged (RFC 9162 shape).
                    _ => pair[0],
                })
                .collect();
            levels.push(next);
        }
        MerkleTree { levels }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaf_hashes().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    pub fn leaf_hashes(&self) -> &[Hash32] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    pub fn root(&self) -> Hash32 {
        match self.levels.last() {
            Some(top) => top[0],
            None => empty_root(),
        }
    }

    /// The RFC 9162 audit path for leaf `leaf_index`.
    pub fn prove(&self, leaf_index: u64) -> Result<InclusionProof, ProveError> {
        let tree_size = self.len();
        if leaf_index >= tree_size {
            return Err(ProveError::IndexOutOfRange {
                leaf_index,
                tree_size,
            });
        }
        let mut path = Vec::with_capacity(path_len(leaf_index, tree_size));
        let mut index = leaf_index as usize;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(index ^ 1) {
                path.push(*sibling);
            }
            index >>= 1;
        }
        Ok(InclusionProof {
            leaf_index,
            tree_size,
            path,
        })
    }
}

/// Why [`MerkleTree::prove`] could not produce a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProveError {
    #[error("leaf index {leaf_index} is outside a tree of {tree_size} leaves")]
    IndexOutOfRange { leaf_index: u64, tree_size: u64 },
}

/// Why an inclusion proof does not prove inclusion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof leaf index {leaf_index} is outside a tree of {tree_size} leaves")]
    IndexOutOfRange { leaf_index: u64, tree_size: u64 },
    #[error(
        "proof path has {len} hashes but leaf {leaf_index} of a tree of {tree_size} leaves needs {expected}"
    )]
    PathLength {
        len: usize,
        expected: usize,
        leaf_index: u64,
        tree_size: u64,
    },
    #[error("proof leads to root {computed}, expected {expected}")]
    RootMismatch { computed: Hash32, expected: Hash32 },
}

/// An RFC 9162 inclusion proof: the sibling hashes from the leaf up to the
/// root.
///
/// A root alone does not commit to the number of leaves: a proof can verify
/// under the same root with a different `tree_size` when the path shape is
/// the same. Take `tree_size` (and the root) from the signed checkpoint or
/// header being checked, and reject a proof whose `tree_size` differs,
/// rather than trusting the size the proof carries. Encoded canonically as `leaf_index u64, tree_size u64, path
/// Vec<Hash32>` with at most [`MERKLE_PROOF_PATH_LEN_MAX`] hashes; it has no
/// version byte of its own because it is always carried inside a versioned
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<Hash32>,
}

impl InclusionProof {
    /// Checks that `leaf_data` (hashed here as a leaf) is at `leaf_index` in
    /// the tree of `tree_size` leaves whose root is `root`.
    pub fn verify(&self, leaf_data: &[u8], root: &Hash32) -> Result<(), ProofError> {
        self.verify_hash(&leaf_hash(leaf_data), root)
    }

    /// Like [`InclusionProof::verify`] for a leaf already hashed with
    /// [`leaf_hash`].
    pub fn verify_hash(&self, leaf_hash: &Hash32, root: &Hash32) -> Result<(), ProofError> {
        let computed = self.root_from(leaf_hash)?;
        if computed == *root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch {
                computed,
                expected: *root,
            })
        }
    }

    /// The root this proof implies for `leaf_hash` (RFC 9162 §2.1.3.2 steps
    /// 1–5 minus the final comparison). Fails if the path length does not
    /// fit the index and size.
    pub fn root_from(&self, leaf_hash: &Hash32) -> Result<Hash32, ProofError> {
        let length_error = || ProofError::PathLength {
            len: self.path.len(),
            expected: path_len(self.leaf_index, self.tree_size),
            leaf_index: self.leaf_index,
            tree_size: self.tree_size,
        };
        if self.leaf_index >= self.tree_size {
            return Err(ProofError::IndexOutOfRange {
                leaf_index: self.leaf_index,
                tree_size: self.tree_size,
            });
        }
        let mut f_n = self.leaf_index;
        let mut s_n = self.tree_size - 1;
        let mut r = *leaf_hash;
        for p in &self.path {
            if s_n == 0 {
                return Err(length_error());
            }
            if f_n & 1 == 1 || f_n == s_n {
                r = node_hash(p, &r);
                // Skip the levels where this subtree was promoted, not paired.
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            } else {
                r = node_hash(&r, p);
            }
            f_n >>= 1;
            s_n >>= 1;
        }
        if s_n != 0 {
            return Err(length_error());
        }
        Ok(r)
    }
}

impl Encode for InclusionProof {
    fn encode(&self, w: &mut Writer) {
        w.put_u64(self.leaf_index);
        w.put_u64(self.tree_size);
        w.put_seq_bounded(&self.path, MERKLE_PROOF_PATH_LEN_MAX);
    }
}

impl Decode for InclusionProof {
    const ENCODED_LEN_MIN: usize = 8 + 8 + 4;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(InclusionProof {
            leaf_index: r.read_u64()?,
            tree_size: r.read_u64()?,
            path: r.read_seq_bounded(MERKLE_PROOF_PATH_LEN_MAX)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_and_node_hashes_equal_the_tagged_hasher() {
        let data: Vec<u8> = (0..=200u8).collect();
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 200] {
            assert_eq!(
                leaf_hash(&data[..len]),
                hash_tagged(DomainTag::MerkleLeaf, &[&data[..len]]),
                "{len}-byte leaf"
            );
        }
        let (a, b) = (blake3_256(b"left"), blake3_256(b"right"));
        assert_eq!(
            node_hash(&a, &b),
            hash_tagged(DomainTag::MerkleNode, &[a.as_bytes(), b.as_bytes()])
        );
    }

    fn h(s: &str) -> Hash32 {
        s.parse().expect("test vector is valid hex")
    }

    fn byte_leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i as u8]).collect()
    }

    // Output of tests/vectors/merkle_vectors.py (a recursive transcription of
    // RFC 9162 §2.1.1 and §2.1.3.1 using PyPI `blake3` 1.0.11). Leaf i is the
    // single byte i.
    const ROOT_VECTORS: &[(usize, &str)] = &[
        (
            0,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ),
        (
            1,
            "1ad48f49627079d806b802c74f40c39d55fe1d78b3faf0f8017aec62cec42122",
        ),
        (
            2,
            "a7c40517c3ba6ed1c930a04047fc7d941e0c6c86dff760457784186431014629",
        ),
        (
            3,
            "b8a32224c977fedb0f8860d7bb067da5e88821ebc3a518f29bf21afeee562d43",
        ),
        (
            4,
            "1ca3d0af7d87326223a1959c3a557cf4a73eb534e3d1aed29b1e61bcbf22a086",
        ),
        (
            5,
            "667f5c8d18ce7aa303848f8a0c385849aecfcb96b12e3dc8470435cffcfa3e84",
        ),
        (
            7,
            "447242b100f0c5b345113b25b9fb2feff7448146255b57736a4c640ce68d1f93",
        ),
        (
            8,
            "ff947fdb4d6cc892e6402109c8e1b8be0f50e548d1fff152c9757e50d87ca560",
        ),
    ];

    const PROOF_VECTORS: &[(u64, u64, &[&str])] = &[
        (
            5,
            4,
            &["1ca3d0af7d87326223a1959c3a557cf4a73eb534e3d1aed29b1e61bcbf22a086"],
        ),
        (
            7,
            3,
            &[
                "0013f4c84c09ed4f906f561e31fb6cb5336107f6813206a1f8860ab1ad35f2b8",
                "a7c40517c3ba6ed1c930a04047fc7d941e0c6c86dff760457784186431014629",
                "0cca304dfafb0609336869fdb2ecaf96a88029d3f36bd17e806cbc559a683730",
            ],
        ),
        (
            8,
            0,
            &[
                "7b7015bb92cf0b318037702a6cdd81dee41224f734684c2c122cd6359cb1ee63",
                "4a3da4a12e0b5795f7e288539baae926bd41091a16785b29409bd0030b6393ba",
                "812e40834dd0244935c629a1e20369335276a2ad23ef677808e4af587bd43cae",
            ],
        ),
        (
            3,
            2,
            &["a7c40517c3ba6ed1c930a04047fc7d941e0c6c86dff760457784186431014629"],
        ),
    ];

    #[test]
    fn roots_match_rfc_vectors() {
        for &(n, want) in ROOT_VECTORS {
            let leaves = byte_leaves(n);
            let tree = MerkleTree::from_leaves(&leaves);
            assert_eq!(tree.root(), h(want), "tree of {n}");
            let hashes: Vec<Hash32> = leaves.iter().map(|l| leaf_hash(l)).collect();
            assert_eq!(root_of(&hashes), h(want), "root_of {n}");
        }
    }

    #[test]
    fn proofs_match_rfc_vectors() {
        for &(n, index, want) in PROOF_VECTORS {
            let leaves = byte_leaves(n as usize);
            let tree = MerkleTree::from_leaves(&leaves);
            let proof = tree.prove(index).expect("index in range");
            let want: Vec<Hash32> = want.iter().map(|s| h(s)).collect();
            assert_eq!(proof.path, want, "tree {n} leaf {index}");
            assert_eq!(proof.tree_size, n);
            assert_eq!(proof.leaf_index, index);
            proof
                .verify(&leaves[index as usize], &tree.root())
                .expect("vector proof verifies");
        }
    }

    #[test]
    fn empty_tree_root_is_blake3_of_nothing() {
        let tree = MerkleTree::from_leaves::<&[u8]>(&[]);
        assert!(tree.is_empty());
        assert_eq!(tree.len(), 0);
        assert_eq!(tree.root(), blake3_256(b""));
        assert_eq!(root_of(&[]), empty_root());
        assert_eq!(
            tree.prove(0),
            Err(ProveError::IndexOutOfRange {
                leaf_index: 0,
                tree_size: 0
            })
        );
    }

    #[test]
    fn level_tree_matches_recursive_definition() {
        for n in 0..=100usize {
            let hashes: Vec<Hash32> = (0..n)
                .map(|i| leaf_hash(&(i as u32).to_le_bytes()))
                .collect();
            let tree = MerkleTree::from_leaf_hashes(hashes.clone());
            assert_eq!(tree.root(), root_of(&hashes), "n = {n}");
            assert_eq!(tree.leaf_hashes(), hashes.as_slice());
        }
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1025, 1024)] {
            assert_eq!(split_point(n), k, "n = {n}");
        }
    }

    #[test]
    fn every_index_of_every_small_tree_proves_and_verifies() {
        for n in 1..=33usize {
            let leaves = byte_leaves(n);
            let tree = MerkleTree::from_leaves(&leaves);
            let root = tree.root();
            for (i, leaf) in leaves.iter().enumerate() {
                let proof = tree.prove(i as u64).expect("index in range");
                assert_eq!(proof.path.len(), path_len(i as u64, n as u64));
                assert!(proof.path.len() <= MERKLE_PROOF_PATH_LEN_MAX as usize);
                proof
                    .verify(leaf, &root)
                    .unwrap_or_else(|e| panic!("n {n} i {i}: {e}"));
                proof
                    .verify_hash(&tree.leaf_hashes()[i], &root)
                    .expect("hash form");
            }
            assert!(tree.prove(n as u64).is_err());
        }
    }

    #[test]
    fn tampering_is_detected() {
        for n in 1..=33usize {
            let leaves = byte_leaves(n);
            let tree = MerkleTree::from_leaves(&leaves);
            let root = tree.root();
            for (i, leaf) in leaves.iter().enumerate() {
                let proof = tree.prove(i as u64).expect("index in range");

                // Wrong leaf data.
                assert!(matches!(
                    proof.verify(&[0xee], &root),
                    Err(ProofError::RootMismatch { .. })
                ));
                // Leaf data presented as if it were already a leaf hash.
                assert!(proof.verify_hash(&blake3_256(leaf), &root).is_err());

                // Each path element flipped.
                for j in 0..proof.path.len() {
                    let mut bad = proof.clone();
                    bad.path[j].0[0] ^= 1;
                    assert!(bad.verify(leaf, &root).is_err(), "n {n} i {i} path {j}");
                }
                // Path element dropped or added.
                if !proof.path.is_empty() {
                    let mut bad = proof.clone();
                    bad.path.pop();
                    assert!(matches!(
                        bad.verify(leaf, &root),
                        Err(ProofError::PathLength { .. })
                    ));
                }
                let mut bad = proof.clone();
                bad.path.push(root);
                assert!(matches!(
                    bad.verify(leaf, &root),
                    Err(ProofError::PathLength { .. })
                ));

                // Every other index (with the same path) fails.
                for other in 0..n as u64 + 2 {
                    if other == i as u64 {
                        continue;
                    }
                    let mut bad = proof.clone();
                    bad.leaf_index = other;
                    assert!(bad.verify(leaf, &root).is_err(), "n {n} i {i} as {other}");
                }
                // Another size is rejected whenever it changes the shape of
                // the path. When it does not, the same hashes combine in the
                // same order and the root cannot tell; that case is covered
                // by `root_does_not_commit_to_size`.
                for size in 0..=40u64 {
                    if size == n as u64 {
                        continue;
                    }
                    let mut bad = proof.clone();
                    bad.tree_size = size;
                    if size <= i as u64 || path_len(i as u64, size) != proof.path.len() {
                        assert!(bad.verify(leaf, &root).is_err(), "n {n} i {i} size {size}");
                    }
                }
                // Wrong root.
                let mut other_root = root;
                other_root.0[31] ^= 0x80;
                assert!(proof.verify(leaf, &other_root).is_err());
            }
        }
    }

    #[test]
    fn root_does_not_commit_to_size() {
        // Leaf 0 of [0, 1, 2] has path [h(1), h(2)]. Claiming a tree of 4
        // reads h(2) as the node over leaves 2..4 and reaches the same root.
        // This is RFC 9162 behaviour, and why the documentation tells
        // callers to take tree_size from the signed checkpoint, not the proof.
        let tree = MerkleTree::from_leaves(&byte_leaves(3));
        let mut proof = tree.prove(0).unwrap();
        proof.tree_size = 4;
        assert_eq!(proof.verify(&[0], &tree.root()), Ok(()));
    }

    #[test]
    fn errors_name_the_inputs() {
        let tree = MerkleTree::from_leaves(&byte_leaves(7));
        let mut proof = tree.prove(3).unwrap();
        proof.path.pop();
        assert_eq!(
            proof.verify(&[3], &tree.root()).unwrap_err().to_string(),
            "proof path has 2 hashes but leaf 3 of a tree of 7 leaves needs 3"
        );
        proof.leaf_index = 9;
        assert_eq!(
            proof.verify(&[3], &tree.root()).unwrap_err().to_string(),
            "proof leaf index 9 is outside a tree of 7 leaves"
        );
    }

    #[test]
    fn proof_encoding_round_trips_and_is_bounded() {
        let tree = MerkleTree::from_leaves(&byte_leaves(13));
        let proof = tree.prove(6).unwrap();
        let bytes = proof.to_canonical_bytes().unwrap();
        assert_eq!(bytes.len(), 8 + 8 + 4 + 32 * proof.path.len());
        assert_eq!(&bytes[..8], &6u64.to_le_bytes());
        assert_eq!(&bytes[8..16], &13u64.to_le_bytes());
        let back = InclusionProof::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, proof);
        back.verify(&[6], &tree.root()).unwrap();

        let mut too_long = Vec::new();
        too_long.extend_from_slice(&0u64.to_le_bytes());
        too_long.extend_from_slice(&1u64.to_le_bytes());
        too_long.extend_from_slice(&(MERKLE_PROOF_PATH_LEN_MAX + 1).to_le_bytes());
        too_long.extend_from_slice(&vec![0u8; 32 * (MERKLE_PROOF_PATH_LEN_MAX as usize + 1)]);
        assert_eq!(
            InclusionProof::from_canonical_bytes(&too_long),
            Err(DecodeError::CountExceedsMax {
                count: MERKLE_PROOF_PATH_LEN_MAX + 1,
                offset: 16,
                max: MERKLE_PROOF_PATH_LEN_MAX
            })
        );
    }

    #[test]
    fn large_sizes_do_not_overflow() {
        // A forged proof claiming the largest possible tree must fail cleanly.
        let proof = InclusionProof {
            leaf_index: u64::MAX - 1,
            tree_size: u64::MAX,
            path: vec![Hash32::ZERO; 64],
        };
        assert!(proof.verify(b"x", &Hash32::ZERO).is_err());
        assert_eq!(path_len(u64::MAX - 1, u64::MAX), 63);
    }
}
