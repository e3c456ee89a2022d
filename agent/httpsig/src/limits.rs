//! Every bound of this crate in one place. Requests are untrusted, so each
//! header we parse and each thing we allocate per request has a ceiling;
//! anything above it is refused as malformed before any crypto runs.

/// Combined `Signature-Input` field lines, bytes.
pub const SIGNATURE_INPUT_BYTES_MAX: usize = 8 * 1024;
/// Combined `Signature` field lines, bytes.
pub const SIGNATURE_BYTES_MAX: usize = 8 * 1024;
/// Combined `Content-Digest` field lines, bytes.
pub const CONTENT_DIGEST_BYTES_MAX: usize = 4 * 1024;
/// Signatures (labels) in one request. We verify at most one of them
/// (see the crate docs), but we parse them all.
pub const SIGNATURES_COUNT_MAX: usize = 8;
/// Covered components in one signature.
pub const COMPONENTS_COUNT_MAX: usize = 32;
/// Length of a `nonce` parameter, bytes. Also bounds replay-cache memory.
pub const NONCE_BYTES_MAX: usize = 128;
/// Length of a `keyid` parameter, bytes.
pub const KEY_ID_BYTES_MAX: usize = 256;
/// Length of a label (dictionary key), bytes.
pub const LABEL_BYTES_MAX: usize = 64;
/// Size of the signature base we build, bytes.
pub const SIGNATURE_BASE_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(
    SIGNATURES_COUNT_MAX >= 2,
    "room for a proxy's signature beside the client's"
);
const _: () = assert!(NONCE_BYTES_MAX <= SIGNATURE_INPUT_BYTES_MAX);
const _: () = assert!(KEY_ID_BYTES_MAX <= SIGNATURE_INPUT_BYTES_MAX);
const _: () = assert!(SIGNATURE_INPUT_BYTES_MAX + SIGNATURE_BYTES_MAX <= SIGNATURE_BASE_BYTES_MAX);

/// Fixed-base verification tables built per key directory (about 370 KiB
/// each, so at most about 46 MiB); keys beyond it verify with plain
/// `verify_strict` (same decision, about twice the cost).
pub const PREPARED_KEYS_COUNT_MAX: usize = 128;
