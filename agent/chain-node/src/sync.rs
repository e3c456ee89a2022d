//! The `blocksync` wire messages.
//!
//! `version u8 (1) | kind u8 | body`, canonical encoding:
//! - kind 0, request: `from_height u64 | max_blocks u32` — "send me finalized
//!   blocks from this height on, at most this many";
//! - kind 1, response: `count u32 | FinalizedBlock*` — consecutive blocks
//!   starting at the requested height (possibly none), bounded by
//!   [`SYNC_RESPONSE_BLOCKS_MAX`] and by bytes (see `limits.rs`).
//!
//! A response proves nothing by itself: the receiver feeds each block to
//! `NodeCore::on_synced_block`, which re-executes it and checks its
//! certificate against the validator set of its height.

use metanode_chain::types::{FinalizedBlock, Height};
use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer, decode_version};

use crate::limits::SYNC_RESPONSE_BLOCKS_MAX;

const SYNC_VERSIONS: &[u8] = &[1];
const KIND_REQUEST: u8 = 0;
const KIND_RESPONSE: u8 = 1;

/// One `blocksync` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncMessage {
    Request {
        from_height: Height,
        max_blocks: u32,
    },
    Response {
        blocks: Vec<FinalizedBlock>,
    },
}

impl Encode for SyncMessage {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(SYNC_VERSIONS[0]);
        match self {
            SyncMessage::Request {
                from_height,
                max_blocks,
            } => {
                w.put_u8(KIND_REQUEST);
                w.put_u64(*from_height);
                w.put_u32(*max_blocks);
            }
            SyncMessage::Response { blocks } => {
                w.put_u8(KIND_RESPONSE);
                w.put_seq_bounded(blocks, SYNC_RESPONSE_BLOCKS_MAX);
            }
        }
    }
}

impl Decode for SyncMessage {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, SYNC_VERSIONS)?;
        let offset = r.offset();
        match r.read_u8()? {
            KIND_REQUEST => Ok(SyncMessage::Request {
                from_height: r.read_u64()?,
                max_blocks: r.read_u32()?,
            }),
            KIND_RESPONSE => Ok(SyncMessage::Response {
                blocks: r.read_seq_bounded(SYNC_RESPONSE_BLOCKS_MAX)?,
            }),
            value => Err(DecodeError::InvalidTag {
                what: "blocksync message kind",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_rejects_bad_bytes() {
        let m = SyncMessage::Request {
            from_height: 7,
            max_blocks: 32,
        };
        let bytes = m.to_canonical_bytes().unwrap();
        assert_eq!(bytes.len(), 1 + 1 + 8 + 4);
        assert_eq!(SyncMessage::from_canonical_bytes(&bytes).unwrap(), m);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            SyncMessage::from_canonical_bytes(&trailing),
            Err(DecodeError::TrailingBytes { .. })
        ));
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(matches!(
            SyncMessage::from_canonical_bytes(&version),
            Err(DecodeError::UnknownVersion { found: 2, .. })
        ));
        let mut kind = bytes;
        kind[1] = 9;
        assert!(matches!(
            SyncMessage::from_canonical_bytes(&kind),
            Err(DecodeError::InvalidTag { value: 9, .. })
        ));
    }

    #[test]
    fn empty_response_round_trips_and_count_is_bounded() {
        let m = SyncMessage::Response { blocks: Vec::new() };
        let bytes = m.to_canonical_bytes().unwrap();
        assert_eq!(bytes, vec![1, 1, 0, 0, 0, 0]);
        assert_eq!(SyncMessage::from_canonical_bytes(&bytes).unwrap(), m);
        let mut too_many = vec![1, 1];
        too_many.extend_from_slice(&(SYNC_RESPONSE_BLOCKS_MAX + 1).to_le_bytes());
        assert!(matches!(
            SyncMessage::from_canonical_bytes(&too_many),
            Err(DecodeError::CountExceedsMax { .. })
        ));
    }
}
