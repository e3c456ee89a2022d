//! Ed25519 node keys: signing, strict verification, and the on-disk key file.
//!
//! Consensus votes, BPCI frames, court checkpoints and DockLock receipts are
//! all Ed25519 signatures, so this module is the one place that decides how
//! keys are made, stored and checked:
//!
//! - Verification is `verify_strict` (ed25519-dalek): it rejects small-order
//!   public keys and `R` points and non-canonical `S`, so a signature has one
//!   accepted byte form and nobody can sign "for everyone" with a weak key.
//!   [`PublicKey`] construction also rejects non-points and small-order
//!   points up front, so a bad validator key fails at genesis, not at the
//!   first vote.
//! - Keys come from operating-system randomness ([`SigningKey::generate`]).
//! - The key file is a small text file, so an operator can tell at a glance
//!   what it is and which public key it holds:
//!
//!   ```text
//!   metanode-ed25519-signing-key v1
//!   seed: <64 lower-case hex digits: the RFC 8032 32-byte secret key>
//!   public: <64 lower-case hex digits: its public key>
//!   ```
//!
//!   The public line lets the loader detect a corrupted or hand-edited seed.
//!   [`SigningKeyFile::save`] writes it atomically with mode 0600 and
//!   [`SigningKeyFile::load`] refuses any file readable or writable by group
//!   or other, the way ssh refuses an exposed private key: a leaked node key
//!   is a validator anyone can impersonate.
//! - Secret bytes live in zeroizing buffers and are never printed: errors
//!   about the seed line say what is wrong, not what is there.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::Signer as _;
use rand::TryRngCore as _;
use zeroize::Zeroizing;

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::limits::KEY_FILE_SIZE_BYTES_MAX;

/// First line of a key file, before the version.
const KEY_FILE_MAGIC: &str = "metanode-ed25519-signing-key";
/// Key file versions this build reads; it writes the last one.
const KEY_FILE_VERSIONS: &[u32] = &[1];

/// Why 64 hex digits could not be read as 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("expected {expected} hex digits, got {len} bytes")]
    Length { expected: usize, len: usize },
    #[error("invalid hex digit at position {position}")]
    InvalidDigit { position: usize },
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    if s.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            len: s.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| HexError::InvalidDigit {
        position: s
            .char_indices()
            .find(|(_, c)| !c.is_ascii_hexdigit())
            .map_or(0, |(i, _)| i),
    })?;
    Ok(out)
}

/// Why 32 bytes are not an acceptable Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("public key {0} is not a valid curve point encoding")]
    NotACurvePoint(String),
    #[error("public key {0} is a small-order point and cannot be a signer")]
    SmallOrder(String),
}

/// Why a string is not a hex-encoded [`PublicKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePublicKeyError {
    #[error("public key hex: {0}")]
    Hex(#[from] HexError),
    #[error(transparent)]
    Key(#[from] PublicKeyError),
}

/// A validated Ed25519 public key (a curve point not of small order).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, PublicKeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| PublicKeyError::NotACurvePoint(hex::encode(bytes)))?;
        if key.is_weak() {
            return Err(PublicKeyError::SmallOrder(hex::encode(bytes)));
        }
        Ok(PublicKey(key))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Strict Ed25519 verification of `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), VerifyError> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| VerifyError::BadSignature {
                public_key: self.to_bytes(),
            })
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte-wise, so validator sets sort the same on every node.
impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = ParsePublicKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(PublicKey::from_bytes(&parse_hex::<32>(s)?)?)
    }
}

impl Encode for PublicKey {
    fn encode(&self, w: &mut Writer) {
        w.put_raw(self.as_bytes());
    }
}

impl Decode for PublicKey {
    const ENCODED_LEN_MIN: usize = PublicKey::LEN;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let bytes = r.read_array::<32>()?;
        PublicKey::from_bytes(&bytes).map_err(|e| DecodeError::Invalid {
            what: "public key",
            offset,
            reason: e.to_string(),
        })
    }
}

/// A 64-byte Ed25519 signature (`R || S`). Any 64 bytes parse; validity is
/// decided by [`verify`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub const LEN: usize = 64;

    pub const fn to_bytes(self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = HexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<64>(s).map(Signature)
    }
}

impl Encode for Signature {
    fn encode(&self, w: &mut Writer) {
        w.put_raw(&self.0);
    }
}

impl Decode for Signature {
    const ENCODED_LEN_MIN: usize = Signature::LEN;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_array::<64>().map(Signature)
    }
}

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature does not verify under public key {}", hex::encode(.public_key))]
    BadSignature { public_key: [u8; 32] },
}

/// Strict Ed25519 verification (see the module docs for what "strict" adds).
pub fn verify(
    public_key: &PublicKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), VerifyError> {
    public_key.verify(message, signature)
}

/// Why a fresh key could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateKeyError {
    #[error("reading operating-system randomness failed: {0}")]
    OsRandomness(rand::rand_core::OsError),
}

/// An Ed25519 signing key. The secret is zeroized on drop and never shown
/// by `Debug`.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A new key from the kernel's CSPRNG (getrandom).
    pub fn generate() -> Result<Self, GenerateKeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed[..])
            .map_err(GenerateKeyError::OsRandomness)?;
        Ok(SigningKey::from_seed(&seed))
    }

    /// The key for an RFC 8032 32-byte secret (the "seed").
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    pub fn public_key(&self) -> PublicKey {
        // A = s·B with B of prime order and the clamped s never a multiple
        // of that order, so A is a valid point of large order: no re-check.
        PublicKey(self.0.verifying_key())
    }

    /// Deterministic RFC 8032 Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Why key file bytes are not a valid key file. Never quotes the seed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("not utf-8 text")]
    NotUtf8,
    #[error("line 1 is not a '{KEY_FILE_MAGIC} v<N>' header")]
    NotAKeyFile,
    #[error("unsupported key file version v{found} (supported: v1)")]
    UnsupportedVersion { found: u32 },
    #[error("line {line} must be '{label}: <64 hex digits>'")]
    MissingLine { line: usize, label: &'static str },
    #[error("line {line} ({label}): {source}")]
    BadHex {
        line: usize,
        label: &'static str,
        source: HexError,
    },
    #[error("the file must end with a newline after line 3")]
    MissingFinalNewline,
    #[error("unexpected content after line 3")]
    TrailingContent,
    #[error("public key {in_file} does not match the seed, whose public key is {derived}")]
    PublicKeyMismatch { in_file: String, derived: String },
}

/// The key file text for `key` (see the module docs for the format).
pub fn format_key_file(key: &SigningKey) -> Zeroizing<String> {
    let version = KEY_FILE_VERSIONS[KEY_FILE_VERSIONS.len() - 1];
    let seed_hex = Zeroizing::new(hex::encode(*key.seed()));
    let mut out = Zeroizing::new(String::with_capacity(200));
    out.push_str(KEY_FILE_MAGIC);
    out.push_str(&format!(" v{version}\nseed: "));
    out.push_str(&seed_hex);
    out.push_str("\npublic: ");
    out.push_str(&key.public_key().to_string());
    out.push('\n');
    out
}

/// Parses key file bytes; strict, so a truncated or edited file is caught.
pub fn parse_key_file(bytes: &[u8]) -> Result<SigningKey, KeyParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyParseError::NotUtf8)?;
    let mut lines = text.split('\n');

    let header = lines.next().unwrap_or_default();
    let version = header
        .strip_prefix(KEY_FILE_MAGIC)
        .and_then(|rest| rest.strip_prefix(" v"))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or(KeyParseError::NotAKeyFile)?;
    if !KEY_FILE_VERSIONS.contains(&version) {
        return Err(KeyParseError::UnsupportedVersion { found: version });
    }

    let mut field = |line: usize, label: &'static str| -> Result<&str, KeyParseError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(label))
            .and_then(|l| l.strip_prefix(": "))
            .ok_or(KeyParseError::MissingLine { line, label })
    };
    let seed_hex = field(2, "seed")?;
    let public_hex = field(3, "public")?;

    match (lines.next(), lines.next()) {
        (Some(""), None) => {}
        (None, _) => return Err(KeyParseError::MissingFinalNewline),
        _ => return Err(KeyParseError::TrailingContent),
    }

    let seed =
        Zeroizing::new(
            parse_hex::<32>(seed_hex).map_err(|source| KeyParseError::BadHex {
                line: 2,
                label: "seed",
                source,
            })?,
        );
    let public = parse_hex::<32>(public_hex).map_err(|source| KeyParseError::BadHex {
        line: 3,
        label: "public",
        source,
    })?;
    let key = SigningKey::from_seed(&seed);
    let derived = key.public_key();
    if *derived.as_bytes() != public {
        return Err(KeyParseError::PublicKeyMismatch {
            in_file: hex::encode(public),
            derived: derived.to_string(),
        });
    }
    Ok(key)
}

/// Why [`SigningKeyFile::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("cannot open key file {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read key file {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("key file {} is not a regular file", .path.display())]
    NotRegularFile { path: PathBuf },
    #[error(
        "key file {} has mode {mode:04o}; it must be 0600 (run: chmod 600 {})",
        .path.display(), .path.display()
    )]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("key file {} is {size_bytes} bytes; a key file is at most {size_bytes_max} bytes", .path.display())]
    TooLarge {
        path: PathBuf,
        size_bytes: u64,
        size_bytes_max: u64,
    },
    #[error("key file {} is malformed: {source}", .path.display())]
    Malformed {
        path: PathBuf,
        source: KeyParseError,
    },
}

/// Why [`SigningKeyFile::save`] failed. On any failure the destination is
/// left as it was and the temporary file is removed.
#[derive(Debug, thiserror::Error)]
pub enum KeySaveError {
    #[error("key file {} already exists; refusing to overwrite it", .path.display())]
    AlreadyExists { path: PathBuf },
    #[error("key file path {} has no file name", .path.display())]
    NoFileName { path: PathBuf },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Whether [`SigningKeyFile::save`] may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Replace,
}

/// A signing key file at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyFile {
    path: PathBuf,
}

impl SigningKeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SigningKeyFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the key, refusing files that group or other may access.
    ///
    /// The mode is checked on the opened descriptor, not the path, so a
    /// swap between check and read cannot slip a different file in.
    pub fn load(&self) -> Result<SigningKey, KeyLoadError> {
        let path = &self.path;
        // O_NONBLOCK: opening a FIFO planted at the path must not hang the
        // boot; it is then rejected as not a regular file.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| KeyLoadError::Open {
                path: path.clone(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| KeyLoadError::Read {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(KeyLoadError::NotRegularFile { path: path.clone() });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyLoadError::InsecureMode {
                path: path.clone(),
                mode,
            });
        }
        let too_large = |size_bytes| KeyLoadError::TooLarge {
            path: path.clone(),
            size_bytes,
            size_bytes_max: KEY_FILE_SIZE_BYTES_MAX,
        };
        if meta.len() > KEY_FILE_SIZE_BYTES_MAX {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        // The file may grow after fstat; never read more than the bound.
        file.take(KEY_FILE_SIZE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| KeyLoadError::Read {
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 > KEY_FILE_SIZE_BYTES_MAX {
            return Err(too_large(bytes.len() as u64));
        }
        parse_key_file(&bytes).map_err(|source| KeyLoadError::Malformed {
            path: path.clone(),
            source,
        })
    }

    /// Writes `key` atomically with mode 0600: a temporary file in the same
    /// directory (created `O_CREAT|O_EXCL`, mode 0600), fsync, then a rename
    /// (`Overwrite::Replace`) or a hard link that fails if the destination
    /// exists (`Overwrite::Refuse`, so two racing writers cannot both win),
    /// then fsync of the directory. A crash leaves either the old file or
    /// the new one, never a partial key.
    pub fn save(&self, key: &SigningKey, overwrite: Overwrite) -> Result<(), KeySaveError> {
        let path = &self.path;
        let file_name = path
            .file_name()
            .ok_or_else(|| KeySaveError::NoFileName { path: path.clone() })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if overwrite == Overwrite::Refuse && fs::symlink_metadata(path).is_ok() {
            return Err(KeySaveError::AlreadyExists { path: path.clone() });
        }
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{:016x}",
            file_name.to_string_lossy(),
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = write_new_file(&tmp, format_key_file(key).as_bytes())
            .and_then(|()| publish(&tmp, path, overwrite));
        // After a successful rename the temp name is gone; after a link it
        // is a second name to remove. On failure it must not linger with a
        // secret in it.
        let _ = fs::remove_file(&tmp);
        result?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| KeySaveError::Io {
                action: "sync directory",
                path: dir.to_path_buf(),
                source,
            })
    }
}

fn write_new_file(tmp: &Path, contents: &[u8]) -> Result<(), KeySaveError> {
    let io_err = |action| {
        move |source| KeySaveError::Io {
            action,
            path: tmp.to_path_buf(),
            source,
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err("create temporary key file"))?;
    // The umask can only clear bits, but make the result exact regardless.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err("set mode 0600 on"))?;
    file.write_all(contents)
        .map_err(io_err("write temporary key file"))?;
    file.sync_all().map_err(io_err("sync temporary key file"))
}

fn publish(tmp: &Path, path: &Path, overwrite: Overwrite) -> Result<(), KeySaveError> {
    match overwrite {
        Overwrite::Replace => fs::rename(tmp, path).map_err(|source| KeySaveError::Io {
            action: "rename temporary key file onto",
            path: path.to_path_buf(),
            source,
        }),
        Overwrite::Refuse => fs::hard_link(tmp, path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeySaveError::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                KeySaveError::Io {
                    action: "link temporary key file to",
                    path: path.to_path_buf(),
                    source,
                }
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 §7.1, TEST 1 (empty message). Cross-checked with Python
    // `cryptography` 48.0.0 (Ed25519PrivateKey.from_private_bytes).
    const RFC8032_1_SECRET: &str =
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_1_PUBLIC: &str =
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC8032_1_SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn rfc_key() -> SigningKey {
        SigningKey::from_seed(&parse_hex::<32>(RFC8032_1_SECRET).unwrap())
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn rfc8032_test_1() {
        let key = rfc_key();
        assert_eq!(key.public_key().to_string(), RFC8032_1_PUBLIC);
        let sig = key.sign(b"");
        assert_eq!(sig.to_string(), RFC8032_1_SIGNATURE);
        let public: PublicKey = RFC8032_1_PUBLIC.parse().unwrap();
        verify(&public, b"", &sig).unwrap();
        let parsed: Signature = RFC8032_1_SIGNATURE.parse().unwrap();
        assert_eq!(parsed, sig);
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
        let sig = a.sign(b"vote for block 7");
        verify(&a.public_key(), b"vote for block 7", &sig).unwrap();
        assert_eq!(
            verify(&b.public_key(), b"vote for block 7", &sig),
            Err(VerifyError::BadSignature {
                public_key: b.public_key().to_bytes()
            })
        );
        assert!(verify(&a.public_key(), b"vote for block 8", &sig).is_err());
        let mut bad = sig;
        bad.0[10] ^= 1;
        assert!(verify(&a.public_key(), b"vote for block 7", &bad).is_err());
    }

    #[test]
    fn non_canonical_s_is_rejected() {
        let key = rfc_key();
        let mut sig = key.sign(b"m");
        // S >= group order: the same signature under a malleated S.
        sig.0[32..].copy_from_slice(&[0xff; 32]);
        assert!(verify(&key.public_key(), b"m", &sig).is_err());
    }

    #[test]
    fn weak_and_invalid_public_keys_are_rejected() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            PublicKey::from_bytes(&identity),
            Err(PublicKeyError::SmallOrder(_))
        ));
        // About half of all y values have no x on the curve.
        let mut found_invalid = false;
        for y in 2u8..=255 {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            if ed25519_dalek::VerifyingKey::from_bytes(&bytes).is_err() {
                found_invalid = true;
                assert!(matches!(
                    PublicKey::from_bytes(&bytes),
                    Err(PublicKeyError::NotACurvePoint(_))
                ));
            }
        }
        assert!(found_invalid);
        let err = "zz".parse::<PublicKey>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "public key hex: expected 64 hex digits, got 2 bytes"
        );
        let mut w = Writer::new();
        w.put_raw(&identity);
        let err = PublicKey::from_canonical_bytes(&w.finish().unwrap()).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Invalid {
                what: "public key",
                offset: 0,
                ..
            }
        ));
    }

    #[test]
    fn keys_and_signatures_encode_canonically() {
        let key = rfc_key();
        let sig = key.sign(b"x");
        let value = (key.public_key(), sig);
        let bytes = value.to_canonical_bytes().unwrap();
        assert_eq!(bytes.len(), 96);
        assert_eq!(&bytes[..32], key.public_key().as_bytes());
        assert_eq!(
            <(PublicKey, Signature)>::from_canonical_bytes(&bytes).unwrap(),
            value
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = rfc_key();
        let shown = format!("{key:?}");
        assert!(!shown.contains(RFC8032_1_SECRET));
        assert!(shown.contains(RFC8032_1_PUBLIC));
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = SigningKeyFile::new(dir.path().join("node.key"));
        let key = SigningKey::generate().unwrap();
        file.save(&key, Overwrite::Refuse).unwrap();
        assert_eq!(mode_of(file.path()), 0o600);
        let loaded = file.load().unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        assert_eq!(loaded.sign(b"m"), key.sign(b"m"));
        // Only the key file remains: no temporary left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
    }

    #[test]
    fn file_format_is_as_documented() {
        let text = format_key_file(&rfc_key());
        assert_eq!(
            text.as_str(),
            format!(
                "metanode-ed25519-signing-key v1\nseed: {RFC8032_1_SECRET}\npublic: {RFC8032_1_PUBLIC}\n"
            )
        );
    }

    #[test]
    fn save_refuses_to_overwrite_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let file = SigningKeyFile::new(dir.path().join("node.key"));
        let first = SigningKey::generate().unwrap();
        let second = SigningKey::generate().unwrap();
        file.save(&first, Overwrite::Refuse).unwrap();
        let err = file.save(&second, Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, KeySaveError::AlreadyExists { .. }));
        assert!(
            err.to_string()
                .ends_with("node.key already exists; refusing to overwrite it")
        );
        assert_eq!(file.load().unwrap().public_key(), first.public_key());

        // The link step refuses too, even when the early check is raced.
        let tmp = dir.path().join("staged");
        write_new_file(&tmp, b"x").unwrap();
        assert!(matches!(
            publish(&tmp, file.path(), Overwrite::Refuse),
            Err(KeySaveError::AlreadyExists { .. })
        ));

        file.save(&second, Overwrite::Replace).unwrap();
        assert_eq!(file.load().unwrap().public_key(), second.public_key());
        assert_eq!(mode_of(file.path()), 0o600);
    }

    #[test]
    fn save_into_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let file = SigningKeyFile::new(dir.path().join("absent/node.key"));
        let err = file.save(&rfc_key(), Overwrite::Refuse).unwrap_err();
        assert!(matches!(
            err,
            KeySaveError::Io {
                action: "create temporary key file",
                ..
            }
        ));
    }

    #[test]
    fn load_refuses_group_or_other_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let text = format_key_file(&rfc_key());
        for mode in [
            0o644,
            0o640,
            0o604,
            0o660,
            0o601,
            0o610,
            0o666,
            0o700 | 0o007,
        ] {
            write_with_mode(&path, text.as_bytes(), mode);
            let err = SigningKeyFile::new(&path).load().unwrap_err();
            match &err {
                KeyLoadError::InsecureMode { mode: m, .. } => assert_eq!(*m, mode),
                other => panic!("mode {mode:o}: expected InsecureMode, got {other}"),
            }
        }
        write_with_mode(&path, text.as_bytes(), 0o644);
        let err = SigningKeyFile::new(&path).load().unwrap_err();
        let p = path.display();
        assert_eq!(
            err.to_string(),
            format!("key file {p} has mode 0644; it must be 0600 (run: chmod 600 {p})")
        );
        // Owner-only modes are fine.
        for mode in [0o600, 0o400] {
            write_with_mode(&path, text.as_bytes(), mode);
            SigningKeyFile::new(&path).load().unwrap();
        }
    }

    #[test]
    fn load_rejects_missing_directory_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let err = SigningKeyFile::new(&missing).load().unwrap_err();
        assert!(matches!(err, KeyLoadError::Open { .. }));
        assert!(err.to_string().contains("nope.key"));

        let sub = dir.path().join("dir.key");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            SigningKeyFile::new(&sub).load(),
            Err(KeyLoadError::NotRegularFile { .. })
        ));

        let big = dir.path().join("big.key");
        write_with_mode(
            &big,
            &vec![b'a'; KEY_FILE_SIZE_BYTES_MAX as usize + 1],
            0o600,
        );
        assert!(matches!(
            SigningKeyFile::new(&big).load(),
            Err(KeyLoadError::TooLarge { size_bytes, .. }) if size_bytes == KEY_FILE_SIZE_BYTES_MAX + 1
        ));
    }

    #[test]
    fn load_rejects_malformed_files() {
        let good = format_key_file(&rfc_key()).to_string();
        let other_public = SigningKey::from_seed(&[7; 32]).public_key().to_string();
        let cases: Vec<(String, KeyParseError)> = vec![
            (String::new(), KeyParseError::NotAKeyFile),
            ("hello\n".into(), KeyParseError::NotAKeyFile),
            (
                good.replace(" v1", " v2"),
                KeyParseError::UnsupportedVersion { found: 2 },
            ),
            (good.replace(" v1", " vX"), KeyParseError::NotAKeyFile),
            (
                good.replace("seed: ", "seed "),
                KeyParseError::MissingLine {
                    line: 2,
                    label: "seed",
                },
            ),
            (
                good.replace(&format!("public: {RFC8032_1_PUBLIC}\n"), ""),
                KeyParseError::MissingLine {
                    line: 3,
                    label: "public",
                },
            ),
            (
                good.replace(RFC8032_1_SECRET, &RFC8032_1_SECRET[..62]),
                KeyParseError::BadHex {
                    line: 2,
                    label: "seed",
                    source: HexError::Length {
                        expected: 64,
                        len: 62,
                    },
                },
            ),
            (
                good.replace(RFC8032_1_SECRET, &format!("x{}", &RFC8032_1_SECRET[1..])),
                KeyParseError::BadHex {
                    line: 2,
                    label: "seed",
                    source: HexError::InvalidDigit { position: 0 },
                },
            ),
            (
                good.replace(RFC8032_1_PUBLIC, &format!("{}g", &RFC8032_1_PUBLIC[..63])),
                KeyParseError::BadHex {
                    line: 3,
                    label: "public",
                    source: HexError::InvalidDigit { position: 63 },
                },
            ),
            (
                good.trim_end().to_string(),
                KeyParseError::MissingFinalNewline,
            ),
            (format!("{good}extra\n"), KeyParseError::TrailingContent),
            (format!("{good}\n"), KeyParseError::TrailingContent),
            (
                good.replace(RFC8032_1_PUBLIC, &other_public),
                KeyParseError::PublicKeyMismatch {
                    in_file: other_public.clone(),
                    derived: RFC8032_1_PUBLIC.to_string(),
                },
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        for (text, want) in cases {
            assert_eq!(
                parse_key_file(text.as_bytes()).err(),
                Some(want.clone()),
                "{text:?}"
            );
            write_with_mode(&path, text.as_bytes(), 0o600);
            match SigningKeyFile::new(&path).load() {
                Err(KeyLoadError::Malformed { source, .. }) => assert_eq!(source, want),
                other => panic!("{text:?}: expected Malformed, got {other:?}"),
            }
        }
        assert_eq!(
            parse_key_file(&[0xff, 0xfe]).err(),
            Some(KeyParseError::NotUtf8)
        );
    }

    #[test]
    fn parse_errors_never_quote_the_seed() {
        let good = format_key_file(&rfc_key()).to_string();
        let bad = good.replace(RFC8032_1_PUBLIC, &"0".repeat(64));
        let err = parse_key_file(bad.as_bytes()).expect_err("mismatch");
        assert!(!err.to_string().contains(RFC8032_1_SECRET));
        assert!(err.to_string().contains(RFC8032_1_PUBLIC));
        let bad = good.replace(RFC8032_1_SECRET, &format!("{}!", &RFC8032_1_SECRET[..63]));
        let err = parse_key_file(bad.as_bytes()).expect_err("bad hex");
        assert!(!err.to_string().contains(&RFC8032_1_SECRET[..63]));
    }
}
