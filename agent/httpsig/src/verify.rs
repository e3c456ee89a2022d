//! `verify_request`: one RFC 9421 ed25519 signature checked against a key
//! directory, a freshness policy and the replay cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use http::StatusCode;
use http::request::Parts;
use http::uri::Scheme;
use metanode_core::keys::{PublicKey, Signature};

use crate::component::{self, ComponentError, RequestView};
use crate::input::{self, SIGNATURE, SIGNATURE_INPUT};
use crate::limits::PREPARED_KEYS_COUNT_MAX;
use crate::prepared::{PreparedKey, StrictItem, verify_strict_batch};
use crate::replay::{ReplayCache, ReplayError};

/// The only signature algorithm accepted (RFC 9421 §3.3.6).
pub const ALG_ED25519: &str = "ed25519";

/// Key id → Ed25519 public key, with a fixed-base table per key that has
/// signed at least one request (see [`crate::prepared`]).
///
/// A key's table is built after its first signature verifies with plain
/// `verify_strict`, so only the key's holder can make us spend the
/// millisecond and the 370 KiB a table costs; at most
/// [`PREPARED_KEYS_COUNT_MAX`] tables are ever built per directory (clones
/// share them and the count; a replaced key's table is not refunded), and
/// keys beyond that keep verifying with `verify_strict` (same decision,
/// slower).
#[derive(Debug, Clone, Default)]
pub struct KeyDirectory {
    keys: HashMap<String, KeyHandle>,
    prepared_count: Arc<AtomicUsize>,
}

/// A directory key as a pending verification holds it: cheap to clone.
#[derive(Debug, Clone)]
pub struct KeyHandle {
    public: PublicKey,
    prepared: Arc<OnceLock<PreparedKey>>,
    prepared_count: Arc<AtomicUsize>,
}

impl KeyHandle {
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The key's table, if it has one yet.
    pub fn prepared(&self) -> Option<&PreparedKey> {
        self.prepared.get()
    }

    /// Builds the table after a verified signature, within the directory's
    /// bound. A race may build it twice; only one is kept and counted.
    fn prepare_after_success(&self) {
        if self.prepared.get().is_some() {
            return;
        }
        let reserved = self
            .prepared_count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c < PREPARED_KEYS_COUNT_MAX).then_some(c + 1)
            })
            .is_ok();
        if !reserved {
            return;
        }
        let kept = PreparedKey::new(&self.public)
            .ok()
            .is_some_and(|k| self.prepared.set(k).is_ok());
        if !kept {
            self.prepared_count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `verify_strict`'s decision, through the table when there is one.
    fn verify_strict(&self, message: &[u8], signature: &Signature) -> bool {
        match self.prepared.get() {
            Some(k) => k.verify_strict(message, signature),
            None => {
                let ok = self.public.verify(message, signature).is_ok();
                if ok {
                    self.prepare_after_success();
                }
                ok
            }
        }
    }
}

impl KeyDirectory {
    pub fn new() -> Self {
        KeyDirectory::default()
    }

    /// Adds or replaces the key for `key_id`.
    pub fn insert(&mut self, key_id: impl Into<String>, key: PublicKey) {
        let handle = KeyHandle {
            public: key,
            prepared: Arc::new(OnceLock::new()),
            prepared_count: self.prepared_count.clone(),
        };
        self.keys.insert(key_id.into(), handle);
    }

    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.get(key_id).map(|h| &h.public)
    }

    /// The key with its (shared) table cache.
    pub fn handle(&self, key_id: &str) -> Option<&KeyHandle> {
        self.keys.get(key_id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that have a fixed-base table now.
    pub fn prepared_len(&self) -> usize {
        self.prepared_count.load(Ordering::Relaxed)
    }
}

/// What a signature must satisfy beyond verifying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// A signature is too old once `now > created + max_age_s`.
    pub max_age_s: u64,
    /// How far `created` may lie in the future (the signer's clock ahead).
    pub clock_skew_s: u64,
    /// Refuse signatures without a `nonce` parameter.
    pub require_nonce: bool,
    /// Components every signature must cover.
    pub required_components: Vec<String>,
    /// Also require `content-digest` to be covered when the request
    /// declares a body (`Content-Length` other than 0, or any
    /// `Transfer-Encoding`). The body itself is checked against the
    /// `Content-Digest` header by the caller once it has read it, with
    /// [`crate::digest::verify_content_digest_headers`]: the signature
    /// binds the header, the digest binds the body.
    pub require_digest_with_body: bool,
    /// Scheme of requests whose URI has none (origin form, as a server
    /// receives them): `https` behind a TLS listener. Used for `@scheme`,
    /// `@target-uri` and the default port of `@authority`.
    pub request_scheme: Scheme,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            max_age_s: 300,
            clock_skew_s: 5,
            require_nonce: true,
            required_components: vec!["@method".into(), "@authority".into(), "@path".into()],
            require_digest_with_body: true,
            request_scheme: Scheme::HTTP,
        }
    }
}

/// A signature that verified and passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_id: String,
    pub label: String,
    pub created_unix_s: u64,
    pub expires_unix_s: Option<u64>,
    pub nonce: Option<String>,
    /// Covered component names, in signed order.
    pub covered: Vec<String>,
    pub tag: Option<String>,
}

/// Why a request's signature was refused. [`VerifyError::status`]: 400 for
/// input that is not a well-formed signature this verifier supports, 401
/// for a well-formed signature that does not authenticate the request, 500
/// / 503 for server-side conditions. [`VerifyError::code`] is a stable
/// short string for receipts, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("request has no {header} field")]
    Missing { header: &'static str },
    #[error("{header} field is malformed: {reason}")]
    Malformed {
        header: &'static str,
        reason: String,
    },
    #[error("signature-input label {label:?} has no matching signature field member")]
    NoSignatureForLabel { label: String },
    #[error("no signature names a keyid (labels: {labels})")]
    MissingKeyId { labels: String },
    #[error("unknown keyid {key_id:?}")]
    UnknownKey { key_id: String },
    #[error("signature {label:?} uses alg {alg:?}; only ed25519 is accepted")]
    UnsupportedAlg { label: String, alg: String },
    #[error("signature {label:?}: {source}")]
    Component {
        label: String,
        source: ComponentError,
    },
    #[error("signature {label:?} does not cover required component {name:?}")]
    MissingComponent { label: String, name: String },
    #[error("signature {label:?} has no created parameter")]
    MissingCreated { label: String },
    #[error(
        "signature created at {created_unix_s}, more than {clock_skew_s} s after now ({now_unix_s})"
    )]
    CreatedInFuture {
        created_unix_s: u64,
        now_unix_s: u64,
        clock_skew_s: u64,
    },
    #[error("signature created at {created_unix_s} is older than {max_age_s} s (now {now_unix_s})")]
    TooOld {
        created_unix_s: u64,
        now_unix_s: u64,
        max_age_s: u64,
    },
    #[error("signature expired at {expires_unix_s} (now {now_unix_s})")]
    Expired {
        expires_unix_s: u64,
        now_unix_s: u64,
    },
    #[error("signature {label:?} has no nonce parameter")]
    MissingNonce { label: String },
    #[error("nonce {nonce:?} was already used with key {key_id:?}")]
    ReplayedNonce { key_id: String, nonce: String },
    #[error("replay cache full ({entries_max} live nonces); retry later")]
    ReplayCacheFull { entries_max: usize },
    #[error(
        "replay cache remembers nonces {window_s} s but signatures stay acceptable {needed_s} s (max_age_s + clock_skew_s)"
    )]
    ReplayWindowTooShort { window_s: u64, needed_s: u64 },
    #[error("signature {label:?} does not verify under key {key_id:?}")]
    BadSignature { key_id: String, label: String },
}

impl VerifyError {
    pub fn status(&self) -> StatusCode {
        match self {
            VerifyError::Missing { .. }
            | VerifyError::Malformed { .. }
            | VerifyError::NoSignatureForLabel { .. }
            | VerifyError::MissingKeyId { .. } => StatusCode::BAD_REQUEST,
            VerifyError::Component { source, .. } => match source {
                ComponentError::Absent { .. } => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            },
            VerifyError::UnknownKey { .. }
            | VerifyError::UnsupportedAlg { .. }
            | VerifyError::MissingComponent { .. }
            | VerifyError::MissingCreated { .. }
            | VerifyError::CreatedInFuture { .. }
            | VerifyError::TooOld { .. }
            | VerifyError::Expired { .. }
            | VerifyError::MissingNonce { .. }
            | VerifyError::ReplayedNonce { .. }
            | VerifyError::BadSignature { .. } => StatusCode::UNAUTHORIZED,
            VerifyError::ReplayCacheFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            VerifyError::ReplayWindowTooShort { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Missing { .. } => "signature_missing",
            VerifyError::Malformed { .. } => "malformed",
            VerifyError::NoSignatureForLabel { .. } => "label_mismatch",
            VerifyError::MissingKeyId { .. } => "missing_keyid",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::UnsupportedAlg { .. } => "unsupported_alg",
            VerifyError::Component { source, .. } => match source {
                ComponentError::Absent { .. } => "component_absent",
                ComponentError::Duplicate { .. } => "duplicate_component",
                _ => "unsupported_component",
            },
            VerifyError::MissingComponent { .. } => "missing_component",
            VerifyError::MissingCreated { .. } => "missing_created",
            VerifyError::CreatedInFuture { .. } => "created_in_future",
            VerifyError::TooOld { .. } => "too_old",
            VerifyError::Expired { .. } => "expired",
            VerifyError::MissingNonce { .. } => "missing_nonce",
            VerifyError::ReplayedNonce { .. } => "replayed_nonce",
            VerifyError::ReplayCacheFull { .. } => "replay_cache_full",
            VerifyError::ReplayWindowTooShort { .. } => "replay_window_too_short",
            VerifyError::BadSignature { .. } => "bad_signature",
        }
    }
}

/// Whether the request head announces a body: `Transfer-Encoding` of any
/// value, or a `Content-Length` that is not exactly 0 (an unparsable one
/// counts as a body, the safe side).
pub fn request_declares_body(parts: &Parts) -> bool {
    if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return true;
    }
    parts
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() != b"0")
}

/// Verifies the request's RFC 9421 signature.
///
/// Label choice: `Signature-Input` members are taken in field order and the
/// first whose `keyid` is in `keys` is verified; others (say, a proxy's
/// signature with a key we do not know) are parsed for well-formedness but
/// not verified. Exactly one Ed25519 verification per request bounds the
/// CPU an attacker can make us spend. If no member names a known key the
/// error is `unknown_key` (the first keyid) or `missing_keyid`.
///
/// Order of checks (cheap before expensive, nothing stored before the
/// signature verifies): parse both fields → choose label → alg → covered
/// components and required ones → created/expires against `now_unix_s` →
/// nonce present → signature base → strict Ed25519 → replay cache.
///
/// Body: this sees only the head. With `require_digest_with_body` a
/// request that declares a body must cover `content-digest`; the caller
/// must then check the body against that header
/// ([`crate::digest::verify_content_digest_headers`]) after reading it.
///
/// The same in three steps, for callers that verify many requests at once:
/// [`prepare_request`] (everything before the crypto), [`check_batch`] or
/// [`PendingSignature::check`] (strict Ed25519), then
/// [`CheckedSignature::record_nonce`] (the replay cache).
pub fn verify_request(
    parts: &Parts,
    keys: &KeyDirectory,
    policy: &VerifyPolicy,
    replay: &ReplayCache,
    now_unix_s: u64,
) -> Result<Verified, VerifyError> {
    prepare_request(parts, keys, policy, replay, now_unix_s)?
        .check()?
        .record_nonce(replay, now_unix_s)
}

/// A request whose signature passed every check but the cryptographic one:
/// the signature base is built and the key found. Nothing is recorded yet.
#[derive(Debug)]
pub struct PendingSignature {
    key: KeyHandle,
    base: Vec<u8>,
    signature: Signature,
    verified: Verified,
}

/// A signature that verified (strict Ed25519); only [`check_batch`] and
/// [`PendingSignature::check`] make one. Its nonce is not recorded yet.
#[derive(Debug)]
pub struct CheckedSignature {
    verified: Verified,
}

impl PendingSignature {
    pub fn key_id(&self) -> &str {
        &self.verified.key_id
    }

    /// The signature base (RFC 9421 §2.5) that was signed.
    pub fn base(&self) -> &[u8] {
        &self.base
    }

    /// Strict Ed25519 verification of this one signature.
    pub fn check(self) -> Result<CheckedSignature, VerifyError> {
        if self.key.verify_strict(&self.base, &self.signature) {
            Ok(CheckedSignature {
                verified: self.verified,
            })
        } else {
            Err(self.bad_signature())
        }
    }

    fn bad_signature(&self) -> VerifyError {
        VerifyError::BadSignature {
            key_id: self.verified.key_id.clone(),
            label: self.verified.label.clone(),
        }
    }
}

/// Strict Ed25519 verification of many signatures, one decision each (in
/// order), the same as [`PendingSignature::check`] on each: a bad signature
/// fails alone. Signatures whose key has a table share the inversion of the
/// final point compression ([`crate::prepared::verify_strict_batch`]);
/// others are checked one by one.
pub fn check_batch(pending: Vec<PendingSignature>) -> Vec<Result<CheckedSignature, VerifyError>> {
    // Which items go through the tables is fixed here: a key's table may
    // appear while the others are checked one by one below.
    let tabled: Vec<Option<&PreparedKey>> = pending.iter().map(|p| p.key.prepared()).collect();
    let items: Vec<StrictItem<'_>> = pending
        .iter()
        .zip(&tabled)
        .filter_map(|(p, key)| {
            key.map(|key| StrictItem {
                key,
                message: &p.base,
                signature: &p.signature,
            })
        })
        .collect();
    let mut batched = verify_strict_batch(&items).into_iter();
    let decisions: Vec<bool> = pending
        .iter()
        .zip(&tabled)
        .map(|(p, key)| match key {
            Some(_) => batched.next().unwrap_or(false),
            None => p.key.verify_strict(&p.base, &p.signature),
        })
        .collect();
    assert!(
        batched.next().is_none(),
        "one batch decision per tabled item"
    );
    drop(items);
    drop(tabled);
    pending
        .into_iter()
        .zip(decisions)
        .map(|(p, ok)| {
            if ok {
                Ok(CheckedSignature {
                    verified: p.verified,
                })
            } else {
                Err(p.bad_signature())
            }
        })
        .collect()
}

impl CheckedSignature {
    pub fn key_id(&self) -> &str {
        &self.verified.key_id
    }

    /// Records the nonce (if any) in `replay`; the request is accepted only
    /// if this succeeds. Of two verified requests with one nonce, exactly
    /// one gets through (the cache's insert is atomic).
    pub fn record_nonce(
        self,
        replay: &ReplayCache,
        now_unix_s: u64,
    ) -> Result<Verified, VerifyError> {
        let v = self.verified;
        if let Some(nonce) = &v.nonce {
            replay
                .check_and_insert(&v.key_id, nonce, now_unix_s)
                .map_err(|e| match e {
                    ReplayError::Replayed => VerifyError::ReplayedNonce {
                        key_id: v.key_id.clone(),
                        nonce: nonce.clone(),
                    },
                    ReplayError::Full { entries_max } => {
                        VerifyError::ReplayCacheFull { entries_max }
                    }
                })?;
        }
        Ok(v)
    }
}

/// Every check of [`verify_request`] before the cryptographic one, and the
/// signature base; see there for the order.
pub fn prepare_request(
    parts: &Parts,
    keys: &KeyDirectory,
    policy: &VerifyPolicy,
    replay: &ReplayCache,
    now_unix_s: u64,
) -> Result<PendingSignature, VerifyError> {
    let inputs = input::parse_signature_inputs(&parts.headers)?;
    let signatures = input::parse_signatures(&parts.headers)?;
    let (inputs, signatures) = match (inputs, signatures) {
        (Some(i), Some(s)) => (i, s),
        (None, _) => {
            return Err(VerifyError::Missing {
                header: SIGNATURE_INPUT,
            });
        }
        (Some(_), None) => return Err(VerifyError::Missing { header: SIGNATURE }),
    };

    let found = inputs.iter().find_map(|input| {
        let key_id = input.key_id.as_deref()?;
        keys.handle(key_id).map(|key| (input, key_id, key))
    });
    let Some((chosen, key_id, key)) = found else {
        return Err(match inputs.iter().find_map(|i| i.key_id.clone()) {
            Some(key_id) => VerifyError::UnknownKey { key_id },
            None => VerifyError::MissingKeyId {
                labels: inputs
                    .iter()
                    .map(|i| i.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        });
    };
    let label = chosen.label.clone();
    let Some((_, signature_bytes)) = signatures.iter().find(|(l, _)| *l == label) else {
        return Err(VerifyError::NoSignatureForLabel { label });
    };
    let Ok(signature) = <[u8; Signature::LEN]>::try_from(signature_bytes.as_slice()) else {
        return Err(VerifyError::Malformed {
            header: SIGNATURE,
            reason: format!(
                "signature {label:?} is {} bytes; ed25519 signatures are {}",
                signature_bytes.len(),
                Signature::LEN
            ),
        });
    };

    if let Some(alg) = &chosen.alg
        && alg != ALG_ED25519
    {
        return Err(VerifyError::UnsupportedAlg {
            label,
            alg: alg.clone(),
        });
    }

    let components = chosen
        .components()
        .map_err(|source| VerifyError::Component {
            label: label.clone(),
            source,
        })?;
    let digest_required = policy.require_digest_with_body && request_declares_body(parts);
    let required = policy
        .required_components
        .iter()
        .map(String::as_str)
        .chain(digest_required.then_some("content-digest"));
    for name in required {
        if !chosen.covered.iter().any(|c| c == name) {
            return Err(VerifyError::MissingComponent {
                label,
                name: name.to_string(),
            });
        }
    }

    let Some(created_unix_s) = chosen.created_unix_s else {
        return Err(VerifyError::MissingCreated { label });
    };
    if created_unix_s > now_unix_s.saturating_add(policy.clock_skew_s) {
        return Err(VerifyError::CreatedInFuture {
            created_unix_s,
            now_unix_s,
            clock_skew_s: policy.clock_skew_s,
        });
    }
    if now_unix_s > created_unix_s.saturating_add(policy.max_age_s) {
        return Err(VerifyError::TooOld {
            created_unix_s,
            now_unix_s,
            max_age_s: policy.max_age_s,
        });
    }
    if let Some(expires_unix_s) = chosen.expires_unix_s
        && now_unix_s > expires_unix_s
    {
        return Err(VerifyError::Expired {
            expires_unix_s,
            now_unix_s,
        });
    }
    if policy.require_nonce && chosen.nonce.is_none() {
        return Err(VerifyError::MissingNonce { label });
    }
    if chosen.nonce.is_some() {
        let needed_s = policy.max_age_s.saturating_add(policy.clock_skew_s);
        if replay.window_s() < needed_s {
            return Err(VerifyError::ReplayWindowTooShort {
                window_s: replay.window_s(),
                needed_s,
            });
        }
    }

    let view = RequestView::new(parts, Some(policy.request_scheme.as_str()));
    let base = component::signature_base(&view, &components, &chosen.signature_params).map_err(
        |source| VerifyError::Component {
            label: label.clone(),
            source,
        },
    )?;
    Ok(PendingSignature {
        key: key.clone(),
        base,
        signature: Signature(signature),
        verified: Verified {
            key_id: key_id.to_string(),
            label,
            created_unix_s,
            expires_unix_s: chosen.expires_unix_s,
            nonce: chosen.nonce.clone(),
            covered: chosen.covered.clone(),
            tag: chosen.tag.clone(),
        },
    })
}
