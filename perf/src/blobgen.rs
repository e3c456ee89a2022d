//! Deterministic blob contents, reproducible in any language.
//!
//! Blob `index` of a run with `seed` is the little-endian byte stream of
//! mulberry32 words, truncated to the size, with its first 8 bytes replaced by
//! `index` as u64 little-endian. The index prefix makes the blobs of one run
//! unique however the generator's streams overlap. The generator starts from
//! `state = seed_lo ^ rotl(seed_hi, 16) ^ index_lo * 0x9E3779B9 ^ index_hi * 0x85EBCA6B`
//! (u32 wrapping arithmetic). mulberry32 is 32-bit only, so a JavaScript
//! harness reproduces it with `Math.imul` and no BigInt.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use bytes::Bytes;

/// Blob index used for the large file of add-large/read-large; no small blob
/// of a run reaches it.
pub const LARGE_INDEX: u64 = u64::MAX;
/// A multiple of 4 so that chunked generation continues the word stream.
const CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(CHUNK_BYTES.is_multiple_of(4));

/// The mulberry32 generator (Tommy Ettinger), 32-bit state.
#[derive(Clone, Debug)]
pub struct Mulberry32 {
    state: u32,
}

impl Mulberry32 {
    pub fn new(state: u32) -> Self {
        Self { state }
    }

    /// The generator for blob `index` of a run with `seed`.
    pub fn for_blob(seed: u64, index: u64) -> Self {
        let seed_mix = (seed as u32) ^ ((seed >> 32) as u32).rotate_left(16);
        let index_mix = (index as u32).wrapping_mul(0x9E37_79B9)
            ^ ((index >> 32) as u32).wrapping_mul(0x85EB_CA6B);
        Self::new(seed_mix ^ index_mix)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.state = self.state.wrapping_add(0x6D2B_79F5);
        let mut t = self.state;
        t = (t ^ (t >> 15)).wrapping_mul(t | 1);
        t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
        t ^ (t >> 14)
    }

    /// Fills `out` with the next words, little-endian. A partial last word
    /// consumes a whole word, so only the final call of a stream may pass a
    /// length that is not a multiple of 4.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut words = out.chunks_exact_mut(4);
        for word in &mut words {
            word.copy_from_slice(&self.next_u32().to_le_bytes());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let word = self.next_u32().to_le_bytes();
            tail.copy_from_slice(&word[..tail.len()]);
        }
    }

    /// A uniform index in `0..bound` (Lemire's multiply-shift; the bias is
    /// below 2^-32 * bound, irrelevant for shuffling bench orders).
    pub fn below(&mut self, bound: usize) -> usize {
        ((u64::from(self.next_u32()) * bound as u64) >> 32) as usize
    }
}

/// The contents of blob `index` of a run with `seed`.
pub fn blob(seed: u64, index: u64, size_bytes: usize) -> Bytes {
    let mut data = vec![0u8; size_bytes];
    Mulberry32::for_blob(seed, index).fill(&mut data);
    let prefix = index.to_le_bytes();
    let prefix_len = prefix.len().min(size_bytes);
    data[..prefix_len].copy_from_slice(&prefix[..prefix_len]);
    Bytes::from(data)
}

/// Blobs `first..first + count` of a run, generated before any timing starts.
pub fn blobs(seed: u64, first: u64, count: usize, size_bytes: usize) -> Vec<Bytes> {
    (0..count as u64)
        .map(|i| blob(seed, first + i, size_bytes))
        .collect()
}

/// A permutation of `0..count` (Fisher-Yates), so gets do not follow put order.
pub fn permutation(count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut rng = Mulberry32::for_blob(seed ^ 0x5EED_0F0D, 0);
    for i in (1..count).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}

/// Writes blob [`LARGE_INDEX`] of `total_bytes` to `path` (fsynced) and
/// returns its BLAKE3 hash.
pub fn write_large_file(path: &Path, seed: u64, total_bytes: u64) -> io::Result<blake3::Hash> {
    let mut file = File::create(path)?;
    let mut rng = Mulberry32::for_blob(seed, LARGE_INDEX);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut written: u64 = 0;
    while written < total_bytes {
        let len = (total_bytes - written).min(CHUNK_BYTES as u64) as usize;
        let chunk = &mut buf[..len];
        rng.fill(chunk);
        if written == 0 {
            let prefix = LARGE_INDEX.to_le_bytes();
            let prefix_len = prefix.len().min(len);
            chunk[..prefix_len].copy_from_slice(&prefix[..prefix_len]);
        }
        hasher.update(chunk);
        file.write_all(chunk)?;
        written += len as u64;
    }
    file.sync_all()?;
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulberry32_matches_the_reference_sequence() {
        // Reference: the JavaScript mulberry32 seeded with 0 yields
        // 1144304738, 1416247, 958946056 (computed with Math.imul).
        let mut rng = Mulberry32::new(0);
        assert_eq!(
            [rng.next_u32(), rng.next_u32(), rng.next_u32()],
            [1_144_304_738, 1_416_247, 958_946_056]
        );
    }

    #[test]
    fn blobs_are_deterministic_and_unique() {
        let a = blobs(7, 0, 64, 1024);
        let b = blobs(7, 0, 64, 1024);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
        assert_eq!(&a[5][..8], &5u64.to_le_bytes());
        assert_ne!(blob(8, 5, 1024), a[5]);
    }

    #[test]
    fn chunked_generation_equals_one_shot() {
        let size = CHUNK_BYTES + 13;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.bin");
        let hash = write_large_file(&path, 3, size as u64).expect("write large file");
        let on_disk = std::fs::read(&path).expect("read large file");
        let expected = blob(3, LARGE_INDEX, size);
        assert_eq!(on_disk.as_slice(), &expected[..]);
        assert_eq!(hash, blake3::hash(&expected));
    }

    #[test]
    fn permutation_is_a_permutation() {
        let order = permutation(1000, 1);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(order, (0..1000).collect::<Vec<_>>());
    }
}
