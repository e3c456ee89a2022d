//! The in-memory index: block key → where its current record lives.
//!
//! Sharded by the digest's first byte so readers on different keys never
//! contend and the writer thread holds one shard's lock for nanoseconds.
//! The index is derived state: it is rebuilt from the segment logs at open,
//! so it is never written to disk on its own.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use metanode_core::cid::BlockKey;
use parking_lot::RwLock;

use crate::record::{FLAG_PINNED, FLAG_ZSTD};

const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Inline,
    External,
}

/// Where a key's newest record is, and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub segment_id: u64,
    /// Offset of the record header inside the segment.
    pub offset: u64,
    /// Header + payload bytes.
    pub record_len: u32,
    pub storage: Storage,
    pub size_bytes: u64,
    pub codec: u32,
    pub flags: u8,
    /// Built at open from a record whose checksum fails (in memory only).
    /// Reads fail their hash check; a new put of the key is not "existed"
    /// but rewrites the record, which repairs it.
    pub damaged: bool,
}

impl Entry {
    pub fn pinned(&self) -> bool {
        self.flags & FLAG_PINNED != 0
    }

    pub fn compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }
}

/// Keys are already uniformly distributed digests: hashing them again with
/// SipHash would only cost time. The first 8 digest bytes are the hash.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 8 {
            self.0 ^= u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        } else {
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ *b as u64;
            }
        }
    }
}

type Shard = HashMap<BlockKey, Entry, BuildHasherDefault<DigestHasher>>;

#[derive(Debug)]
pub struct Index {
    shards: Box<[RwLock<Shard>]>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, key: &BlockKey) -> &RwLock<Shard> {
        &self.shards[key.digest[1] as usize % SHARDS]
    }

    pub fn get(&self, key: &BlockKey) -> Option<Entry> {
        self.shard(key).read().get(key).copied()
    }

    /// Insert or replace; returns the previous entry.
    pub fn insert(&self, key: BlockKey, entry: Entry) -> Option<Entry> {
        self.shard(&key).write().insert(key, entry)
    }

    pub fn remove(&self, key: &BlockKey) -> Option<Entry> {
        self.shard(key).write().remove(key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// A copy of every entry, one shard at a time (never the whole index
    /// locked at once, so puts and gets continue).
    pub fn snapshot(&self) -> Vec<(BlockKey, Entry)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            out.extend(shard.read().iter().map(|(k, e)| (*k, *e)));
        }
        out
    }
}
