//! Deterministic test content shared with the golden-vector generator (the
//! npm script that ran `ipfs-unixfs-importer` produced its files the same
//! way): xorshift32, each state emitted as 4 little-endian bytes.

/// Streaming xorshift32 generator.
#[derive(Debug, Clone)]
pub struct XorShift32 {
    state: u32,
}

impl XorShift32 {
    /// `seed` must be nonzero (zero is a fixed point of xorshift).
    pub fn new(seed: u32) -> Self {
        assert!(seed != 0, "xorshift32 seed must be nonzero");
        Self { state: seed }
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    /// Fill `out` with the next bytes of the stream. Callers that split a
    /// stream over several calls must use lengths that are multiples of 4
    /// for every call but the last, as the stream is made of whole words.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut words = out.chunks_exact_mut(4);
        for word in &mut words {
            word.copy_from_slice(&self.next_u32().to_le_bytes());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let last = self.next_u32().to_le_bytes();
            tail.copy_from_slice(&last[..tail.len()]);
        }
    }
}

/// `size_bytes` bytes of the xorshift32 stream seeded with `seed`.
pub fn xorshift32_bytes(seed: u32, size_bytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; size_bytes];
    XorShift32::new(seed).fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_words_of_seed_1() {
        // x = 1: x ^= x << 13 -> 0x2001; x ^= x >> 17 -> 0x2001; x ^= x << 5 -> 0x42021.
        let bytes = xorshift32_bytes(1, 6);
        assert_eq!(&bytes[..4], &0x0004_2021u32.to_le_bytes());
        let mut rng = XorShift32::new(1);
        assert_eq!(rng.next_u32(), 0x0004_2021);
        let second = rng.next_u32().to_le_bytes();
        assert_eq!(&bytes[4..], &second[..2]);
    }

    #[test]
    fn streaming_fill_equals_one_shot() {
        let whole = xorshift32_bytes(7, 1001);
        let mut rng = XorShift32::new(7);
        let mut parts = vec![0u8; 1001];
        let (a, b) = parts.split_at_mut(400);
        rng.fill(a);
        rng.fill(b);
        assert_eq!(parts, whole);
    }
}
