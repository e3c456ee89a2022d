//! Ed25519 verifications per second on the calling thread (run it pinned:
//! `taskset -c 0`), for the cage bench's ceiling rows: dalek's
//! `verify_strict`, the prepared-key path one at a time, and the prepared
//! path in batches of [`BATCH`] (what the cage's verifier does under load).
//! Prints one JSON object.
//!
//! `cargo run --release -p metanode-httpsig --example verify_ceiling -- [SECONDS]`

use std::time::{Duration, Instant};

use metanode_core::keys::{Signature, SigningKey};
use metanode_httpsig::prepared::{PreparedKey, StrictItem, verify_strict_batch};

/// Signatures per batch: the cage's `VERIFY_BATCH_COUNT_MAX`.
const BATCH: usize = 64;
/// About a signature base's size.
const MESSAGE_BYTES: usize = 200;

fn rate(window: Duration, per_round: usize, mut round: impl FnMut() -> bool) -> f64 {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < window {
        assert!(round(), "a valid signature must verify");
        count += per_round as u64;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2.0);
    let window = Duration::from_secs_f64(seconds);
    let key = SigningKey::from_seed(&[7; 32]);
    let public = key.public_key();
    let prepared = PreparedKey::new(&public).expect("a generated key is not small order");
    let messages: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            let mut m = vec![0x5a_u8; MESSAGE_BYTES];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            m
        })
        .collect();
    let signatures: Vec<Signature> = messages.iter().map(|m| key.sign(m)).collect();

    let strict = rate(window, 1, || {
        public.verify(&messages[0], &signatures[0]).is_ok()
    });
    let single = rate(window, 1, || {
        prepared.verify_strict(&messages[0], &signatures[0])
    });
    let items: Vec<StrictItem<'_>> = messages
        .iter()
        .zip(&signatures)
        .map(|(m, s)| StrictItem {
            key: &prepared,
            message: m,
            signature: s,
        })
        .collect();
    let batch = rate(window, BATCH, || {
        verify_strict_batch(&items).iter().all(|ok| *ok)
    });
    println!(
        "{{\"verify_strict_per_s\": {strict:.0}, \"prepared_per_s\": {single:.0}, \
         \"prepared_batch_per_s\": {batch:.0}, \"batch\": {BATCH}}}"
    );
}
