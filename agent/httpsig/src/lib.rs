//! RFC 9421 HTTP Message Signatures (ed25519 only) and RFC 9530
//! Content-Digest, over `http` 1 request heads, for the HTTP Cage and its
//! clients.
//!
//! - [`verify_request`]: parses `Signature-Input`/`Signature` (RFC 8941
//!   dictionaries, via `sfv`), picks the first label whose `keyid` is in the
//!   [`KeyDirectory`], checks `alg`, required components, `created` /
//!   `expires` against the caller's clock, the `nonce`, rebuilds the
//!   signature base (§2.5) and verifies it with strict Ed25519; the nonce
//!   is then recorded in the [`ReplayCache`] (bounded in entries and time;
//!   a full cache refuses rather than forgets, see [`replay`]). The same in
//!   steps for batching callers: [`prepare_request`], [`check_batch`],
//!   [`CheckedSignature::record_nonce`].
//! - [`prepared`]: strict Ed25519 through per-key fixed-base tables, with
//!   exactly `verify_strict`'s decision at about half its cost (and why
//!   dalek's random-combination `verify_batch` is not used).
//! - [`digest`]: RFC 9530 `Content-Digest` (sha-256, sha-512). The
//!   signature covers the header; the caller checks the body against it
//!   after reading the body ([`digest::verify_content_digest_headers`]).
//! - [`sign_request`]: the client side, byte-compatible with the RFC's
//!   ed25519 example (B.2.6).
//!
//! Supported components: `@method`, `@target-uri`, `@authority`, `@scheme`,
//! `@request-target`, `@path`, `@query` and HTTP fields. Component
//! parameters (`;sf`, `;key`, `;bs`, `;req`, `;tr`, `;name`),
//! `@query-param` and `@status` are refused with a named error (400).
//! Responses are not signed or verified by this crate.
//!
//! Nothing here panics on request input: every header is bounded
//! ([`limits`]) and parsed with typed errors.

pub mod component;
pub mod digest;
pub mod input;
pub mod limits;
pub mod prepared;
pub mod replay;
pub mod sign;
pub mod verify;

pub use component::{Component, ComponentError};
pub use digest::DigestError;
pub use input::{LabelledSignature, SignatureInput, parse_signature_inputs, parse_signatures};
pub use replay::{ReplayCache, ReplayError};
pub use sign::{SignError, SignParams, sign_request};
pub use verify::{
    ALG_ED25519, CheckedSignature, KeyDirectory, KeyHandle, PendingSignature, Verified,
    VerifyError, VerifyPolicy, check_batch, prepare_request, request_declares_body, verify_request,
};

/// The signature base (RFC 9421 §2.5) of signature `input` over the request
/// `parts`, with `scheme` for origin-form requests. For tests, debugging a
/// client's base, and fuzzing; [`verify_request`] builds it the same way.
pub fn signature_base(
    parts: &http::request::Parts,
    input: &SignatureInput,
    scheme: Option<&str>,
) -> Result<Vec<u8>, ComponentError> {
    let components = input.components()?;
    let view = component::RequestView::new(parts, scheme);
    component::signature_base(&view, &components, &input.signature_params)
}
