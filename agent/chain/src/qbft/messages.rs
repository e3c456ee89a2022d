//! QBFT messages as they travel between validators.
//!
//! Following the EEA QBFT spec (and Besu's implementation of it), each message
//! is a small *signed payload* plus unsigned attachments that are checked
//! against it: a proposal carries the block whose hash its payload names and
//! its justification (signed round changes and prepares); a round change
//! carries the block it prepared and the prepares that prove it. Signing only
//! the small payload keeps justifications compact: a proposal in round r>0
//! embeds signed round-change payloads, never their blocks.
//!
//! Every signature is over `H(0x16 || chain_id || canonical payload)`, so a
//! payload of one chain or one kind never verifies as another.

use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use metanode_core::hash::{Hash32, hash_tagged};
use metanode_core::keys::{PublicKey, Signature, SigningKey, VerifyError};
use metanode_core::tags::DomainTag;

use crate::types::{Block, ChainId, Height, Round};

/// The signed part of every QBFT message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Payload {
    /// The proposer of `(height, round)` proposes the block `block_hash`.
    Proposal {
        height: Height,
        round: Round,
        block_hash: Hash32,
    },
    /// The sender accepted the proposal of `block_hash` in `(height, round)`.
    Prepare {
        height: Height,
        round: Round,
        block_hash: Hash32,
    },
    /// The sender saw a prepare quorum for `block_hash` in `(height, round)`;
    /// `seal` is its signature over
    /// [`crate::types::commit_seal_digest`]`(chain_id, height, round, block_hash)`
    /// and goes into the commit certificate.
    Commit {
        height: Height,
        round: Round,
        block_hash: Hash32,
        seal: Signature,
    },
    /// The sender wants to move to `round`; `prepared` is the latest
    /// `(round, block_hash)` it saw a prepare quorum for at this height.
    RoundChange {
        height: Height,
        round: Round,
        prepared: Option<(Round, Hash32)>,
    },
}

impl Payload {
    pub fn height(&self) -> Height {
        match self {
            Payload::Proposal { height, .. }
            | Payload::Prepare { height, .. }
            | Payload::Commit { height, .. }
            | Payload::RoundChange { height, .. } => *height,
        }
    }

    pub fn round(&self) -> Round {
        match self {
            Payload::Proposal { round, .. }
            | Payload::Prepare { round, .. }
            | Payload::Commit { round, .. }
            | Payload::RoundChange { round, .. } => *round,
        }
    }

    /// Digest the sender signs: `H(0x16 || chain_id || canonical payload)`.
    pub fn signing_digest(&self, chain_id: &ChainId) -> Hash32 {
        let bytes = self
            .to_canonical_bytes()
            .expect("payloads have no unbounded fields");
        hash_tagged(
            DomainTag::ConsensusMessage,
            &[chain_id.0.as_bytes(), &bytes],
        )
    }
}

/// A payload with its author and the author's signature.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedPayload {
    pub payload: Payload,
    pub signer: PublicKey,
    pub signature: Signature,
}

impl SignedPayload {
    pub fn sign(chain_id: &ChainId, payload: Payload, key: &SigningKey) -> Self {
        let signature = key.sign(payload.signing_digest(chain_id).as_bytes());
        SignedPayload {
            payload,
            signer: key.public_key(),
            signature,
        }
    }

    pub fn verify(&self, chain_id: &ChainId) -> Result<(), VerifyError> {
        self.signer.verify(
            self.payload.signing_digest(chain_id).as_bytes(),
            &self.signature,
        )
    }
}

/// A QBFT message on the wire.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ConsensusMessage {
    /// `proposal.payload` is `Payload::Proposal` naming `block.hash()`.
    /// For round 0 both justification lists are empty. For round r > 0,
    /// `round_changes` is a quorum of `RoundChange` payloads for `(height,
    /// r)`, and if any of them is prepared, `prepares` is a quorum of
    /// `Prepare` payloads for the highest prepared `(round, block_hash)`
    /// among them, which must be `block`'s hash.
    Proposal {
        proposal: SignedPayload,
        block: Block,
        round_changes: Vec<SignedPayload>,
        prepares: Vec<SignedPayload>,
    },
    /// `Payload::Prepare`.
    Prepare(SignedPayload),
    /// `Payload::Commit`.
    Commit(SignedPayload),
    /// `round_change.payload` is `Payload::RoundChange`. If it is prepared,
    /// `prepared_block` is that block and `prepares` a quorum of `Prepare`
    /// payloads proving it; otherwise both are empty.
    RoundChange {
        round_change: SignedPayload,
        prepared_block: Option<Block>,
        prepares: Vec<SignedPayload>,
    },
}

impl ConsensusMessage {
    /// The signed payload that names this message's kind, height and round.
    pub fn head(&self) -> &SignedPayload {
        match self {
            ConsensusMessage::Proposal { proposal, .. } => proposal,
            ConsensusMessage::Prepare(p) | ConsensusMessage::Commit(p) => p,
            ConsensusMessage::RoundChange { round_change, .. } => round_change,
        }
    }
}

// Codecs (Encode/Decode for Payload, SignedPayload, ConsensusMessage) follow;
// every list is bounded by CHAIN_VALIDATORS_COUNT_MAX.

const PAYLOAD_PROPOSAL: u8 = 0;
const PAYLOAD_PREPARE: u8 = 1;
const PAYLOAD_COMMIT: u8 = 2;
const PAYLOAD_ROUND_CHANGE: u8 = 3;

impl Encode for Payload {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(crate::types::CHAIN_ENCODING_VERSION);
        match self {
            Payload::Proposal {
                height,
                round,
                block_hash,
            } => {
                w.put_u8(PAYLOAD_PROPOSAL);
                w.put_u64(*height);
                w.put_u32(*round);
                block_hash.encode(w);
            }
            Payload::Prepare {
                height,
                round,
                block_hash,
            } => {
                w.put_u8(PAYLOAD_PREPARE);
                w.put_u64(*height);
                w.put_u32(*round);
                block_hash.encode(w);
            }
            Payload::Commit {
                height,
                round,
                block_hash,
                seal,
            } => {
                w.put_u8(PAYLOAD_COMMIT);
                w.put_u64(*height);
                w.put_u32(*round);
                block_hash.encode(w);
                seal.encode(w);
            }
            Payload::RoundChange {
                height,
                round,
                prepared,
            } => {
                w.put_u8(PAYLOAD_ROUND_CHANGE);
                w.put_u64(*height);
                w.put_u32(*round);
                match prepared {
                    None => w.put_u8(0),
                    Some((prepared_round, hash)) => {
                        w.put_u8(1);
                        w.put_u32(*prepared_round);
                        hash.encode(w);
                    }
                }
            }
        }
    }
}

impl Decode for Payload {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        metanode_core::encoding::decode_version(r, &[crate::types::CHAIN_ENCODING_VERSION])?;
        let offset = r.offset();
        let kind = r.read_u8()?;
        let height = r.read_u64()?;
        let round = r.read_u32()?;
        match kind {
            PAYLOAD_PROPOSAL => Ok(Payload::Proposal {
                height,
                round,
                block_hash: Hash32::decode(r)?,
            }),
            PAYLOAD_PREPARE => Ok(Payload::Prepare {
                height,
                round,
                block_hash: Hash32::decode(r)?,
            }),
            PAYLOAD_COMMIT => Ok(Payload::Commit {
                height,
                round,
                block_hash: Hash32::decode(r)?,
                seal: Signature::decode(r)?,
            }),
            PAYLOAD_ROUND_CHANGE => {
                let tag_offset = r.offset();
                let prepared = match r.read_u8()? {
                    0 => None,
                    1 => Some((r.read_u32()?, Hash32::decode(r)?)),
                    value => {
                        return Err(DecodeError::InvalidOptionTag {
                            value,
                            offset: tag_offset,
                        });
                    }
                };
                Ok(Payload::RoundChange {
                    height,
                    round,
                    prepared,
                })
            }
            value => Err(DecodeError::InvalidTag {
                what: "consensus payload kind",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

impl Encode for SignedPayload {
    fn encode(&self, w: &mut Writer) {
        self.payload.encode(w);
        self.signer.encode(w);
        self.signature.encode(w);
    }
}

impl Decode for SignedPayload {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedPayload {
            payload: Payload::decode(r)?,
            signer: PublicKey::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

const MESSAGE_PROPOSAL: u8 = 0;
const MESSAGE_PREPARE: u8 = 1;
const MESSAGE_COMMIT: u8 = 2;
const MESSAGE_ROUND_CHANGE: u8 = 3;
const JUSTIFICATION_COUNT_MAX: u32 = metanode_core::limits::CHAIN_VALIDATORS_COUNT_MAX;

impl Encode for ConsensusMessage {
    fn encode(&self, w: &mut Writer) {
        match self {
            ConsensusMessage::Proposal {
                proposal,
                block,
                round_changes,
                prepares,
            } => {
                w.put_u8(MESSAGE_PROPOSAL);
                proposal.encode(w);
                block.encode(w);
                w.put_seq_bounded(round_changes, JUSTIFICATION_COUNT_MAX);
                w.put_seq_bounded(prepares, JUSTIFICATION_COUNT_MAX);
            }
            ConsensusMessage::Prepare(p) => {
                w.put_u8(MESSAGE_PREPARE);
                p.encode(w);
            }
            ConsensusMessage::Commit(p) => {
                w.put_u8(MESSAGE_COMMIT);
                p.encode(w);
            }
            ConsensusMessage::RoundChange {
                round_change,
                prepared_block,
                prepares,
            } => {
                w.put_u8(MESSAGE_ROUND_CHANGE);
                round_change.encode(w);
                prepared_block.encode(w);
                w.put_seq_bounded(prepares, JUSTIFICATION_COUNT_MAX);
            }
        }
    }
}

impl Decode for ConsensusMessage {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            MESSAGE_PROPOSAL => Ok(ConsensusMessage::Proposal {
                proposal: SignedPayload::decode(r)?,
                block: Block::decode(r)?,
                round_changes: r.read_seq_bounded(JUSTIFICATION_COUNT_MAX)?,
                prepares: r.read_seq_bounded(JUSTIFICATION_COUNT_MAX)?,
            }),
            MESSAGE_PREPARE => Ok(ConsensusMessage::Prepare(SignedPayload::decode(r)?)),
            MESSAGE_COMMIT => Ok(ConsensusMessage::Commit(SignedPayload::decode(r)?)),
            MESSAGE_ROUND_CHANGE => Ok(ConsensusMessage::RoundChange {
                round_change: SignedPayload::decode(r)?,
                prepared_block: Option::<Block>::decode(r)?,
                prepares: r.read_seq_bounded(JUSTIFICATION_COUNT_MAX)?,
            }),
            value => Err(DecodeError::InvalidTag {
                what: "consensus message kind",
                value: u64::from(value),
                offset,
            }),
        }
    }
}
