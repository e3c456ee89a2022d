//! The one registry of BLAKE3 domain-separation prefixes.
//!
//! Every hash the agent computes over structured data starts with exactly one
//! of these bytes, so a value hashed for one purpose (say, a Merkle leaf) can
//! never be presented as a value of another purpose (say, a block header) with
//! the same digest. That only holds if the bytes are unique and nobody invents
//! a tag locally, so they are all declared here, in one list, and uniqueness is
//! checked both by the compiler (enum discriminants) and by a const assertion
//! over [`DomainTag::ALL`] that also catches a future hand-written entry.
//!
//! To add a tag: add one line to the `domain_tags!` invocation below. The
//! enum, [`DomainTag::ALL`], [`DomainTag::name`] and [`DomainTag::from_byte`]
//! are generated from that line, so they cannot drift apart.

use std::fmt;

macro_rules! domain_tags {
    ($( $(#[$doc:meta])* $variant:ident = $byte:literal, $name:literal; )+) => {
        /// A one-byte domain prefix for BLAKE3 inputs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum DomainTag {
            $( $(#[$doc])* $variant = $byte, )+
        }

        impl DomainTag {
            /// Every registered tag, in declaration order.
            pub const ALL: &'static [DomainTag] = &[ $( DomainTag::$variant, )+ ];

            /// Stable lower-case name, for logs and error messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $( DomainTag::$variant => $name, )+
                }
            }

            /// The tag registered for `byte`, if any.
            pub const fn from_byte(byte: u8) -> Option<DomainTag> {
                match byte {
                    $( $byte => Some(DomainTag::$variant), )+
                    _ => None,
                }
            }
        }
    };
}

domain_tags! {
    /// RFC 9162 Merkle leaf: `H(0x00 || leaf data)`.
    MerkleLeaf = 0x00, "merkle_leaf";
    /// RFC 9162 Merkle interior node: `H(0x01 || left || right)`.
    MerkleNode = 0x01, "merkle_node";
    /// Canonically encoded block header.
    BlockHeader = 0x10, "block_header";
    /// BPCI frame header, the input to the frame signature.
    BpciFrame = 0x11, "bpci_frame";
    /// PoH ordering tick: `H(0x12 || seed || nonce chain)`.
    PohTick = 0x12, "poh_tick";
    /// DockLock witness record.
    DocklockRecord = 0x13, "docklock_record";
    /// Data-availability shard.
    DaShard = 0x14, "da_shard";
    /// Chain transaction body: its hash is the transaction id and what the
    /// sender signs.
    Transaction = 0x15, "transaction";
    /// QBFT consensus message (proposal, prepare, commit, round change), the
    /// input to the validator's signature.
    ConsensusMessage = 0x16, "consensus_message";
    /// Commit seal: what a validator signs to finalize one block in one
    /// round; commit certificates carry a quorum of these.
    CommitSeal = 0x17, "commit_seal";
    /// Canonically encoded validator set (its hash goes into headers).
    ValidatorSet = 0x18, "validator_set";
    /// Canonically encoded genesis document; its hash is the chain id.
    Genesis = 0x19, "genesis";
    /// Application state root (bank, court, gov and the built-in ledger).
    ChainState = 0x1a, "chain_state";
    /// BISO decision-log entry (a policy applied, a mode changed): what the
    /// node signs so an operator can prove which lights were in force when.
    BisoDecision = 0x1b, "biso_decision";
    /// HTTP Cage audit receipt (one per request) and the signed batch root.
    CageReceipt = 0x1c, "cage_receipt";
}

impl DomainTag {
    /// The prefix byte written before the hashed data.
    pub const fn byte(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for DomainTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.byte())
    }
}

/// True when no byte and no name appears twice in `tags`.
const fn all_unique(tags: &[DomainTag]) -> bool {
    let mut i = 0;
    while i < tags.len() {
        let mut j = i + 1;
        while j < tags.len() {
            if tags[i].byte() == tags[j].byte() || str_eq(tags[i].name(), tags[j].name()) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = assert!(
    all_unique(DomainTag::ALL),
    "domain tags must have unique bytes and names"
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn bytes_and_names_are_unique() {
        let bytes: HashSet<u8> = DomainTag::ALL.iter().map(|t| t.byte()).collect();
        let names: HashSet<&str> = DomainTag::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(bytes.len(), DomainTag::ALL.len());
        assert_eq!(names.len(), DomainTag::ALL.len());
    }

    #[test]
    fn registry_matches_the_wire_spec() {
        // The values are fixed by the wire rules in DESIGN.md; changing one
        // changes every hash on disk and on the wire.
        let expected = [
            (DomainTag::MerkleLeaf, 0x00, "merkle_leaf"),
            (DomainTag::MerkleNode, 0x01, "merkle_node"),
            (DomainTag::BlockHeader, 0x10, "block_header"),
            (DomainTag::BpciFrame, 0x11, "bpci_frame"),
            (DomainTag::PohTick, 0x12, "poh_tick"),
            (DomainTag::DocklockRecord, 0x13, "docklock_record"),
            (DomainTag::DaShard, 0x14, "da_shard"),
            (DomainTag::Transaction, 0x15, "transaction"),
            (DomainTag::ConsensusMessage, 0x16, "consensus_message"),
            (DomainTag::CommitSeal, 0x17, "commit_seal"),
            (DomainTag::ValidatorSet, 0x18, "validator_set"),
            (DomainTag::Genesis, 0x19, "genesis"),
            (DomainTag::ChainState, 0x1a, "chain_state"),
            (DomainTag::BisoDecision, 0x1b, "biso_decision"),
            (DomainTag::CageReceipt, 0x1c, "cage_receipt"),
        ];
        assert_eq!(DomainTag::ALL.len(), expected.len());
        for (tag, byte, name) in expected {
            assert_eq!(tag.byte(), byte, "{name}");
            assert_eq!(tag.name(), name);
            assert_eq!(DomainTag::from_byte(byte), Some(tag));
        }
    }

    #[test]
    fn from_byte_is_the_inverse_of_byte() {
        for b in 0..=u8::MAX {
            match DomainTag::from_byte(b) {
                Some(tag) => assert_eq!(tag.byte(), b),
                None => assert!(DomainTag::ALL.iter().all(|t| t.byte() != b)),
            }
        }
    }

    #[test]
    fn uniqueness_check_detects_duplicates() {
        // The const assertion is only worth something if the checker can fail.
        assert!(!all_unique(&[DomainTag::PohTick, DomainTag::PohTick]));
        assert!(all_unique(&[]));
        assert!(!str_eq("merkle_leaf", "merkle_node"));
        assert!(str_eq("da_shard", "da_shard"));
    }

    #[test]
    fn display_names_tag_and_byte() {
        assert_eq!(DomainTag::PohTick.to_string(), "poh_tick (0x12)");
    }
}
