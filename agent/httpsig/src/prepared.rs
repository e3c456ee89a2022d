//! Strict Ed25519 verification with a per-key fixed-base table: the same
//! accept/reject decision as ed25519-dalek's `verify_strict`, at about half
//! its cost, and a batched form that shares the one field inversion of the
//! final point compression across many signatures.
//!
//! # Why not `ed25519_dalek::verify_batch`
//!
//! dalek 3's `verify_batch` checks one random linear combination
//! `Σ zᵢ(Rᵢ − [sᵢ]B + [kᵢ]Aᵢ) = 0` (cofactorless, 128-bit `zᵢ` derived from
//! a transcript of the batch). `verify_strict` checks each `Rᵢ = [sᵢ]B −
//! [kᵢ]Aᵢ` exactly, with `R` canonically encoded and neither `R` nor `A` of
//! small order. The two differ when `Rᵢ` has a torsion (order 2, 4 or 8)
//! component: the combination only sees `zᵢ·T` and loses it whenever the
//! order of `T` divides `zᵢ` (half the time for order 2), and several such
//! components can cancel outright. Such an `R` is made by the key's holder
//! (`R = rB + T`, `s = r + k·a`), so it is no forgery, but `verify_strict`
//! rejects it and a random-combination batch may not. Closing the gap needs
//! a torsion check per `R` (`[ℓ]R = 0`, one variable-base scalar
//! multiplication, about 30 µs here), which costs more than the batch saves
//! (dalek's batch: about 22 µs per signature; `verify_strict`: 47 µs).
//!
//! # What this does instead (exact, no randomness)
//!
//! With both bases fixed (`B`, and `A` per key), `R' = [s]B − [k]A` is two
//! fixed-base multiplications through precomputed tables ([`FixedBaseTable`]:
//! signed radix-2^w digits ([`BASEPOINT_WINDOW_BITS`], [`KEY_WINDOW_BITS`]),
//! one point addition per digit, no doublings; variable time, which is fine for public inputs and
//! is what `verify_strict` is too) instead of one double-base
//! multiplication (253 doublings). Then the signature is accepted iff
//!
//! 1. `s` is canonical (`s < ℓ`; dalek's `InternalSignature` rule),
//! 2. `A` is not of small order (checked once, when the key is prepared),
//! 3. `compress(R')` equals the signature's `R` bytes, and
//! 4. `R'` is not of small order.
//!
//! That is `verify_strict`'s decision: it decompresses `R` (refusing bytes
//! that are not a point), refuses small-order `R` and `A`, computes the same
//! `R'` with the same `k = SHA-512(R ‖ A ‖ M) mod ℓ` and accepts iff
//! `compress(R')` equals the `R` bytes. If (3) holds, the `R` bytes are the
//! canonical encoding of `R'`, so they decompress to `R'` and "`R` small
//! order" is (4); if (3) fails, strict fails too. Group arithmetic is exact,
//! so `R'` is the same point whichever algorithm computes it. The tests
//! compare both decisions on edge-case vectors (small-order `R` and `A`,
//! non-canonical `s` and `R`, `R` with a torsion component, valid).
//!
//! The batch form computes each `R'ᵢ` independently and only shares the
//! inversion of the compressions (Montgomery's trick; exact arithmetic), so
//! each signature gets its own decision: a bad signature cannot fail a good
//! one and costs what a good one costs.

use std::sync::{Arc, LazyLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity as _;
use metanode_core::keys::{PublicKey, Signature};
use sha2::{Digest as _, Sha512};

/// Bits per digit of the base point's table (one per process: 33 digits ×
/// 128 points × 160 bytes = 660 KiB). Fewer digits are fewer additions
/// (random scalars, alone: w = 6: 7.5 µs, 8: 5.8 µs, 10: 4.8 µs per
/// multiplication), but inside the cage w = 10 (2.1 MiB) measured no faster
/// than 8: the table then competes for the cache with everything else.
pub const BASEPOINT_WINDOW_BITS: u32 = 8;
/// Bits per digit of a key's table: one per prepared key, so smaller
/// (37 × 64 × 160 bytes = 370 KiB; w = 7: about 6.5 µs per multiplication).
pub const KEY_WINDOW_BITS: u32 = 7;

/// `[j · 2^(w·i)] P` for every digit position `i` and `j` in
/// `1..=2^(w−1)`: a multiplication is one addition (or subtraction) per
/// non-zero signed digit.
pub struct FixedBaseTable {
    window_bits: u32,
    /// Digits of a 256-bit integer in signed radix 2^w: one more than
    /// 256/w, so the top digit has a spare bit and absorbs the last carry.
    digits: usize,
    points: Vec<EdwardsPoint>,
}

impl std::fmt::Debug for FixedBaseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedBaseTable")
            .field("window_bits", &self.window_bits)
            .field("points", &self.points.len())
            .finish()
    }
}

impl FixedBaseTable {
    /// The table of `p` with `window_bits`-bit digits (2 to 16).
    pub fn new(p: &EdwardsPoint, window_bits: u32) -> Self {
        assert!(
            (2..=16).contains(&window_bits),
            "window of {window_bits} bits"
        );
        let digits = 256 / window_bits as usize + 1;
        assert!(digits * window_bits as usize > 256);
        let half = 1usize << (window_bits - 1);
        let mut points = Vec::with_capacity(digits * half);
        let mut base = *p;
        for _ in 0..digits {
            let mut multiple = base;
            for _ in 0..half {
                points.push(multiple);
                multiple += base;
            }
            for _ in 0..window_bits {
                base = base + base;
            }
        }
        assert_eq!(points.len(), digits * half);
        FixedBaseTable {
            window_bits,
            digits,
            points,
        }
    }

    /// `[n] P` for the 256-bit little-endian integer `n` (not reduced).
    pub fn mul(&self, n: &[u8; 32]) -> EdwardsPoint {
        let mut acc = None;
        self.mul_add(n, &mut acc);
        acc.unwrap_or_else(EdwardsPoint::identity)
    }

    /// Adds `[n] P` to `acc` (`None` is the identity). Why not `mul` and
    /// one more addition: the first digit's point is taken as it is rather
    /// than added to the identity, and two products share one accumulator,
    /// so `[s]B + [k](−A)` costs two point additions fewer (of about 70):
    /// the first table's first point, and the final sum of two products.
    pub fn mul_add(&self, n: &[u8; 32], acc: &mut Option<EdwardsPoint>) {
        let w = self.window_bits as usize;
        let half = 1i32 << (w - 1);
        let bit = |i: usize| -> i32 {
            n.get(i / 8)
                .map_or(0, |byte| i32::from((byte >> (i % 8)) & 1))
        };
        let mut carry = 0i32;
        for i in 0..self.digits {
            let mut digit = carry;
            for b in 0..w {
                digit += bit(i * w + b) << b;
            }
            // Signed digit in [−2^(w−1), 2^(w−1)).
            carry = i32::from(digit >= half);
            digit -= carry << w;
            if digit == 0 {
                continue;
            }
            let point = &self.points[i * half as usize + digit.unsigned_abs() as usize - 1];
            // In place: moving the 160-byte accumulator out and back per
            // digit cost a memcpy each (2 % of the cage's signed path).
            match (acc.as_mut(), digit > 0) {
                (None, true) => *acc = Some(*point),
                (None, false) => *acc = Some(-point),
                (Some(a), true) => *a += point,
                (Some(a), false) => *a -= point,
            }
        }
        assert_eq!(carry, 0, "the last digit absorbs every carry");
    }
}

/// The base point's table, built on first use.
static BASEPOINT_TABLE: LazyLock<FixedBaseTable> =
    LazyLock::new(|| FixedBaseTable::new(&ED25519_BASEPOINT_POINT, BASEPOINT_WINDOW_BITS));

/// A public key with the table that makes its verifications cheap
/// (about 370 KiB; building it costs about a millisecond).
pub struct PreparedKey {
    public: PublicKey,
    /// Multiples of `−A`, so one table multiplication by `k` gives `−[k]A`.
    minus_a: FixedBaseTable,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Why a key cannot be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareKeyError {
    #[error("public key is not a curve point")]
    NotAPoint,
    #[error("public key is of small order; verify_strict rejects every signature under it")]
    SmallOrder,
}

impl PreparedKey {
    pub fn new(public: &PublicKey) -> Result<Self, PrepareKeyError> {
        // The same decompression `VerifyingKey::from_bytes` does, so the
        // point is the one verify_strict uses.
        let a = CompressedEdwardsY(*public.as_bytes())
            .decompress()
            .ok_or(PrepareKeyError::NotAPoint)?;
        if a.is_small_order() {
            return Err(PrepareKeyError::SmallOrder);
        }
        Ok(PreparedKey {
            public: *public,
            minus_a: FixedBaseTable::new(&-a, KEY_WINDOW_BITS),
        })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// `R' = [s]B − [k]A`, or `None` if `s` is not canonical.
    fn expected_r(&self, message: &[u8], signature: &Signature) -> Option<EdwardsPoint> {
        let (r_bytes, s_bytes) = split(signature);
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(self.public.as_bytes());
        h.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let mut r = None;
        BASEPOINT_TABLE.mul_add(s.as_bytes(), &mut r);
        self.minus_a.mul_add(k.as_bytes(), &mut r);
        Some(r.unwrap_or_else(EdwardsPoint::identity))
    }

    /// `verify_strict`'s decision for one signature (see the module docs).
    pub fn verify_strict(&self, message: &[u8], signature: &Signature) -> bool {
        match self.expected_r(message, signature) {
            Some(r) => accept(&r, &r.compress(), signature),
            None => false,
        }
    }
}

fn split(signature: &Signature) -> ([u8; 32], [u8; 32]) {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&signature.0[..32]);
    s.copy_from_slice(&signature.0[32..]);
    (r, s)
}

fn accept(r: &EdwardsPoint, compressed: &CompressedEdwardsY, signature: &Signature) -> bool {
    compressed.as_bytes()[..] == signature.0[..32] && !r.is_small_order()
}

/// One signature of a batch: the key, the signed bytes, the signature.
#[derive(Debug)]
pub struct StrictItem<'a> {
    pub key: &'a PreparedKey,
    pub message: &'a [u8],
    pub signature: &'a Signature,
}

/// `verify_strict`'s decision for each item, in order. Each `R'` is
/// computed on its own; only the compression's field inversion is shared.
pub fn verify_strict_batch(items: &[StrictItem<'_>]) -> Vec<bool> {
    let expected: Vec<Option<EdwardsPoint>> = items
        .iter()
        .map(|it| it.key.expected_r(it.message, it.signature))
        .collect();
    let points: Vec<EdwardsPoint> = expected.iter().flatten().copied().collect();
    let mut compressed = EdwardsPoint::compress_batch_alloc(&points).into_iter();
    items
        .iter()
        .zip(&expected)
        .map(|(it, r)| match r {
            Some(r) => compressed
                .next()
                .is_some_and(|c| accept(r, &c, it.signature)),
            None => false,
        })
        .collect()
}

/// Shared handle to a prepared key.
pub type SharedPreparedKey = Arc<PreparedKey>;

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use metanode_core::keys::SigningKey;

    /// The reference decision: ed25519-dalek's verify_strict through
    /// metanode_core (which is what the crate used before).
    fn strict(public: &PublicKey, message: &[u8], sig: &Signature) -> bool {
        public.verify(message, sig).is_ok()
    }

    /// Signs like RFC 8032 but with a chosen nonce point offset `t`
    /// (`R = rB + t`), as only the key holder could: the signature the
    /// cofactored / random-combination checks may accept and strict must
    /// not.
    fn sign_with_torsion(seed: &[u8; 32], message: &[u8], t: EdwardsPoint) -> Signature {
        let expanded = Sha512::digest(seed);
        let mut a_bytes = [0u8; 32];
        a_bytes.copy_from_slice(&expanded[..32]);
        let a = Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(a_bytes));
        let public = (ED25519_BASEPOINT_POINT * a).compress();
        let r = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(&expanded[32..])
                .chain_update(message)
                .finalize()
                .into(),
        );
        let big_r = (ED25519_BASEPOINT_POINT * r + t).compress();
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(big_r.as_bytes())
                .chain_update(public.as_bytes())
                .chain_update(message)
                .finalize()
                .into(),
        );
        let s = r + k * a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(big_r.as_bytes());
        out[32..].copy_from_slice(s.as_bytes());
        Signature(out)
    }

    fn l_plus(s: &[u8; 32]) -> [u8; 32] {
        // s + ℓ as 256-bit little-endian (no overflow for s < 2^255 − ℓ).
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s[i]) + u16::from(l[i]) + carry;
            out[i] = v as u8;
            carry = v >> 8;
        }
        out
    }

    /// Every vector's decision through the prepared single path and the
    /// batch path (alone and mixed with valid ones) equals verify_strict's.
    fn check_all(cases: &[(&'static str, PublicKey, Vec<u8>, Signature, bool)]) {
        for (name, public, message, sig, expect) in cases {
            assert_eq!(strict(public, message, sig), *expect, "{name}: strict");
            let prepared = PreparedKey::new(public).unwrap();
            assert_eq!(
                prepared.verify_strict(message, sig),
                *expect,
                "{name}: prepared"
            );
            let alone = verify_strict_batch(&[StrictItem {
                key: &prepared,
                message,
                signature: sig,
            }]);
            assert_eq!(alone, vec![*expect], "{name}: batch of one");
        }
        // All in one batch, each with its own decision.
        let prepared: Vec<PreparedKey> = cases
            .iter()
            .map(|c| PreparedKey::new(&c.1).unwrap())
            .collect();
        let items: Vec<StrictItem<'_>> = cases
            .iter()
            .zip(&prepared)
            .map(|(c, k)| StrictItem {
                key: k,
                message: &c.2,
                signature: &c.3,
            })
            .collect();
        let got = verify_strict_batch(&items);
        let want: Vec<bool> = cases.iter().map(|c| c.4).collect();
        assert_eq!(got, want, "mixed batch");
    }

    #[test]
    fn table_multiplication_matches_scalar_multiplication() {
        let p = ED25519_BASEPOINT_POINT * Scalar::from(987_654_321u64) + EIGHT_TORSION[3];
        let tables: Vec<FixedBaseTable> = [2, 5, KEY_WINDOW_BITS, BASEPOINT_WINDOW_BITS, 13]
            .iter()
            .map(|w| FixedBaseTable::new(&p, *w))
            .collect();
        let mut edge = vec![[0u8; 32], [0xff; 32]];
        edge.push(Scalar::ONE.to_bytes());
        edge.push((-Scalar::ONE).to_bytes());
        let mut top = [0u8; 32];
        top[31] = 0x80;
        edge.push(top);
        // Runs of ones across digit borders (all-positive, all-negative).
        let mut ones = [0u8; 32];
        ones[..16].fill(0xff);
        edge.push(ones);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..32 {
            let mut n = [0u8; 32];
            for b in n.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            edge.push(n);
        }
        for n in edge {
            // The full 256-bit integer, not reduced, on a point with a
            // torsion component: the table must follow the group law for
            // every bit, not only modulo ℓ.
            let expected = naive_mul(&p, &n);
            for table in &tables {
                assert_eq!(table.mul(&n), expected, "{table:?} {}", hex::encode(n));
                // Into an accumulator that already holds a point.
                let mut acc = Some(p);
                table.mul_add(&n, &mut acc);
                assert_eq!(acc, Some(p + expected), "{table:?} {}", hex::encode(n));
            }
        }
    }

    /// Double-and-add over all 256 bits (the reference).
    fn naive_mul(p: &EdwardsPoint, n: &[u8; 32]) -> EdwardsPoint {
        let mut acc = EdwardsPoint::identity();
        for i in (0..256).rev() {
            acc = acc + acc;
            if (n[i / 8] >> (i % 8)) & 1 == 1 {
                acc += p;
            }
        }
        acc
    }

    #[test]
    fn prepared_and_batch_decide_exactly_like_verify_strict() {
        let seed = [9u8; 32];
        let key = SigningKey::from_seed(&seed);
        let public = key.public_key();
        let message = b"\"@method\": POST\n\"@signature-params\": (\"@method\")".to_vec();
        let valid = key.sign(&message);
        let mut cases = vec![("valid", public, message.clone(), valid, true)];

        // Wrong message, flipped bit in s, flipped bit in R.
        cases.push(("other message", public, b"x".to_vec(), valid, false));
        let mut bad_s = valid;
        bad_s.0[40] ^= 1;
        cases.push(("bit flip in s", public, message.clone(), bad_s, false));
        let mut bad_r = valid;
        bad_r.0[3] ^= 1;
        cases.push(("bit flip in R", public, message.clone(), bad_r, false));

        // Non-canonical s: s + ℓ satisfies the group equation but is
        // refused by both.
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&valid.0[32..]);
        let mut non_canonical_s = valid;
        non_canonical_s.0[32..].copy_from_slice(&l_plus(&s_bytes));
        cases.push((
            "non-canonical s",
            public,
            message.clone(),
            non_canonical_s,
            false,
        ));

        // R with a torsion component, made by the key holder: every
        // non-zero 8-torsion point (orders 2, 4, 8), and the zero one as
        // the control (a valid signature).
        for (i, t) in EIGHT_TORSION.iter().enumerate() {
            let sig = sign_with_torsion(&seed, &message, *t);
            // The vector is in the gap: the cofactored equation
            // [8]R = [8]([s]B − [k]A) holds for every one of them.
            let (r_bytes, s_bytes) = split(&sig);
            let big_r = CompressedEdwardsY(r_bytes).decompress().unwrap();
            let k = Scalar::from_bytes_mod_order_wide(
                &Sha512::new()
                    .chain_update(r_bytes)
                    .chain_update(public.as_bytes())
                    .chain_update(&message)
                    .finalize()
                    .into(),
            );
            let a_point = CompressedEdwardsY(*public.as_bytes()).decompress().unwrap();
            let s = Scalar::from_canonical_bytes(s_bytes).unwrap();
            let rhs = ED25519_BASEPOINT_POINT * s - a_point * k;
            assert_eq!(
                big_r.mul_by_cofactor(),
                rhs.mul_by_cofactor(),
                "torsion {i}"
            );
            let name: &'static str = [
                "torsion 0 (valid)",
                "torsion 1",
                "torsion 2",
                "torsion 3",
                "torsion 4",
                "torsion 5",
                "torsion 6",
                "torsion 7",
            ][i];
            cases.push((name, public, message.clone(), sig, i == 0));
        }

        // Small-order R with s = 0: [0]B − [k]A ≠ R for a real key, and
        // strict refuses small R anyway; every small-order encoding.
        for (i, t) in EIGHT_TORSION.iter().enumerate() {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(t.compress().as_bytes());
            let name: &'static str = [
                "small R 0",
                "small R 1",
                "small R 2",
                "small R 3",
                "small R 4",
                "small R 5",
                "small R 6",
                "small R 7",
            ][i];
            cases.push((name, public, message.clone(), Signature(sig), false));
        }

        // Non-canonical R encoding (y + p) of the valid signature's R where
        // that stays below 2^255: refused by strict's byte comparison.
        let mut y = [0u8; 32];
        y.copy_from_slice(&valid.0[..32]);
        let sign = y[31] & 0x80;
        y[31] &= 0x7f;
        if y.iter().skip(1).all(|b| *b == 0) && y[0] < 19 {
            let mut non_canonical_r = valid;
            non_canonical_r.0[0] = y[0] + 0xed;
            non_canonical_r.0[1..31].fill(0xff);
            non_canonical_r.0[31] = 0x7f | sign;
            cases.push((
                "non-canonical R",
                public,
                message.clone(),
                non_canonical_r,
                false,
            ));
        }
        // The 19 non-canonical y values themselves (y = p + c, c < 19) as R.
        for c in 0u8..19 {
            let mut sig = valid;
            sig.0[0] = 0xed + c;
            sig.0[1..31].fill(0xff);
            sig.0[31] = 0x7f;
            cases.push(("non-canonical y as R", public, message.clone(), sig, false));
        }
        // R bytes that are not a curve point.
        let mut not_a_point = valid;
        not_a_point.0[..32].copy_from_slice(&[2u8; 32]);
        if CompressedEdwardsY(not_a_point.0[..32].try_into().unwrap())
            .decompress()
            .is_none()
        {
            cases.push(("R not a point", public, message.clone(), not_a_point, false));
        }
        // Another key's valid signature.
        let other = SigningKey::from_seed(&[3u8; 32]);
        cases.push((
            "other key",
            public,
            message.clone(),
            other.sign(&message),
            false,
        ));
        // A second valid signature under another key in the same batch.
        cases.push((
            "valid, other key",
            other.public_key(),
            message.clone(),
            other.sign(&message),
            true,
        ));
        check_all(&cases);
    }

    #[test]
    fn keys_with_a_torsion_component_decide_like_strict() {
        // A = aB + T (mixed order) is accepted by PublicKey::from_bytes
        // (it is not small order); strict verification under it must match.
        let seed = [5u8; 32];
        let expanded = Sha512::digest(seed);
        let mut a_bytes = [0u8; 32];
        a_bytes.copy_from_slice(&expanded[..32]);
        let a = Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(a_bytes));
        let message = b"mixed-order key".to_vec();
        let mut cases = Vec::new();
        for t in EIGHT_TORSION.iter().skip(1) {
            let big_a = ED25519_BASEPOINT_POINT * a + t;
            let Ok(public) = PublicKey::from_bytes(big_a.compress().as_bytes()) else {
                continue;
            };
            // s = r + k·a with R = rB: strict checks R = [s]B − [k](aB + T)
            // = rB − [k]T, which holds only when [k]T = 0.
            let r = Scalar::from_bytes_mod_order([11u8; 32]);
            let big_r = (ED25519_BASEPOINT_POINT * r).compress();
            let k = Scalar::from_bytes_mod_order_wide(
                &Sha512::new()
                    .chain_update(big_r.as_bytes())
                    .chain_update(public.as_bytes())
                    .chain_update(&message)
                    .finalize()
                    .into(),
            );
            let s = r + k * a;
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(big_r.as_bytes());
            sig[32..].copy_from_slice(s.as_bytes());
            let sig = Signature(sig);
            let expect = strict(&public, &message, &sig);
            cases.push(("mixed-order key", public, message.clone(), sig, expect));
        }
        assert!(!cases.is_empty(), "some mixed-order key must be accepted");
        check_all(&cases);
    }
}
