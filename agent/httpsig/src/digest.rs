//! RFC 9530 `Content-Digest`: a structured-field dictionary of algorithm →
//! `:base64 digest:` of the message content.
//!
//! Verification accepts `sha-256` and `sha-512` (the two "standard"
//! algorithms of the IANA registry). Every supported member present must
//! match the body; members with other algorithms (including the registry's
//! insecure `md5`, `sha`, `unixsum`, `unixcksum`, `adler`, `crc32c`) are
//! ignored, and a field with no supported member is refused — a digest we
//! cannot check binds nothing.
//!
//! Split of work with `verify_request`: the signature covers the
//! `Content-Digest` header; the caller reads the body (bounded) and then
//! calls [`verify_content_digest_headers`] so the header is known to match
//! the bytes actually received.

use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest as _, Sha256, Sha512};

use crate::limits::CONTENT_DIGEST_BYTES_MAX;

/// The field name, lower-case as HTTP/2 and `http` want it.
pub const CONTENT_DIGEST: &str = "content-digest";

/// A digest algorithm this crate computes and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The registry key (`sha-256`, `sha-512`).
    pub fn key(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha-256",
            Algorithm::Sha512 => "sha-512",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "sha-256" => Some(Algorithm::Sha256),
            "sha-512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn digest_len_bytes(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    pub fn digest(self, body: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Sha256 => Sha256::digest(body).to_vec(),
            Algorithm::Sha512 => Sha512::digest(body).to_vec(),
        }
    }
}

/// Why a `Content-Digest` field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("content-digest field is malformed: {reason}")]
    Malformed { reason: String },
    #[error("content-digest has no sha-256 or sha-512 member (found: {found})")]
    NoSupportedAlgorithm { found: String },
    #[error("content-digest {algorithm} is {len_bytes} bytes; it must be {expected_bytes}")]
    WrongLength {
        algorithm: &'static str,
        len_bytes: usize,
        expected_bytes: usize,
    },
    #[error("content-digest {algorithm} does not match the body")]
    Mismatch { algorithm: &'static str },
}

impl DigestError {
    /// 400 for all: the client sent a header that is malformed or does not
    /// describe its own body. (The cage answers 401 instead when the header
    /// was signed, since then the signature no longer binds the body.)
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    pub fn code(&self) -> &'static str {
        match self {
            DigestError::Malformed { .. } => "digest_malformed",
            DigestError::NoSupportedAlgorithm { .. } => "digest_unsupported",
            DigestError::WrongLength { .. } => "digest_malformed",
            DigestError::Mismatch { .. } => "digest_mismatch",
        }
    }
}

/// `Content-Digest` value for `body` with sha-256.
pub fn content_digest_header(body: &[u8]) -> HeaderValue {
    content_digest_header_with(&[Algorithm::Sha256], body)
}

/// `Content-Digest` value for `body` with each of `algorithms`, in order
/// (an empty slice means sha-256).
pub fn content_digest_header_with(algorithms: &[Algorithm], body: &[u8]) -> HeaderValue {
    let algorithms = if algorithms.is_empty() {
        &[Algorithm::Sha256][..]
    } else {
        algorithms
    };
    let mut out = String::with_capacity(112 * algorithms.len());
    {
        let mut dict = sfv::DictSerializer::with_buffer(&mut out);
        for a in algorithms {
            let _ = dict.bare_item(sfv::key_ref(a.key()), &a.digest(body)[..]);
        }
        let _ = dict.finish();
    }
    // Keys, '=', ':', ", " and base64: always a valid header value.
    HeaderValue::try_from(out).expect("sf dictionary of byte sequences is visible ASCII")
}

/// Parses a `Content-Digest` value into (algorithm key, digest bytes) in
/// field order. Members that are not byte sequences are malformed.
pub fn parse_content_digest(value: &[u8]) -> Result<Vec<(String, Vec<u8>)>, DigestError> {
    if value.len() > CONTENT_DIGEST_BYTES_MAX {
        return Err(DigestError::Malformed {
            reason: format!("longer than {CONTENT_DIGEST_BYTES_MAX} bytes"),
        });
    }
    let dict: sfv::Dictionary = sfv::Parser::new(value)
        .with_version(sfv::Version::Rfc8941)
        .parse()
        .map_err(|e| DigestError::Malformed {
            reason: format!("not a structured-field dictionary: {e}"),
        })?;
    let mut out = Vec::with_capacity(dict.len());
    for (key, entry) in &dict {
        let bytes = match entry {
            sfv::ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
            sfv::ListEntry::InnerList(_) => None,
        };
        let Some(bytes) = bytes else {
            return Err(DigestError::Malformed {
                reason: format!("member {:?} is not a byte sequence", key.as_str()),
            });
        };
        out.push((key.as_str().to_string(), bytes.to_vec()));
    }
    Ok(out)
}

fn verify_parsed(members: &[(String, Vec<u8>)], body: &[u8]) -> Result<(), DigestError> {
    let mut checked = 0usize;
    for (key, digest) in members {
        let Some(algorithm) = Algorithm::from_key(key) else {
            continue;
        };
        if digest.len() != algorithm.digest_len_bytes() {
            return Err(DigestError::WrongLength {
                algorithm: algorithm.key(),
                len_bytes: digest.len(),
                expected_bytes: algorithm.digest_len_bytes(),
            });
        }
        if algorithm.digest(body) != *digest {
            return Err(DigestError::Mismatch {
                algorithm: algorithm.key(),
            });
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(DigestError::NoSupportedAlgorithm {
            found: if members.is_empty() {
                "nothing".to_string()
            } else {
                members
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    Ok(())
}

/// Checks one `Content-Digest` field line against `body`.
pub fn verify_content_digest(header: &HeaderValue, body: &[u8]) -> Result<(), DigestError> {
    verify_parsed(&parse_content_digest(header.as_bytes())?, body)
}

/// Checks all `Content-Digest` field lines of `headers` (combined with
/// ", " as HTTP combines them, and as the signature base covers them)
/// against `body`. Prefer this over [`verify_content_digest`] on a
/// request: a second field line is part of what was signed and must match
/// too. An absent field is `NoSupportedAlgorithm`.
pub fn verify_content_digest_headers(headers: &HeaderMap, body: &[u8]) -> Result<(), DigestError> {
    let mut combined = Vec::new();
    for (i, line) in headers.get_all(CONTENT_DIGEST).iter().enumerate() {
        if i > 0 {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(line.as_bytes());
        if combined.len() > CONTENT_DIGEST_BYTES_MAX {
            return Err(DigestError::Malformed {
                reason: format!("longer than {CONTENT_DIGEST_BYTES_MAX} bytes"),
            });
        }
    }
    if combined.is_empty() {
        return Err(DigestError::NoSupportedAlgorithm {
            found: "nothing".to_string(),
        });
    }
    verify_parsed(&parse_content_digest(&combined)?, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9530 §2 / Appendix B: the content `{"hello": "world"}`.
    const HELLO: &[u8] = br#"{"hello": "world"}"#;
    const HELLO_SHA256: &str = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
    const HELLO_SHA512: &str = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";

    #[test]
    fn rfc_9530_examples_are_produced_and_verified() {
        assert_eq!(content_digest_header(HELLO), HELLO_SHA256);
        assert_eq!(
            content_digest_header_with(&[Algorithm::Sha512], HELLO),
            HELLO_SHA512
        );
        assert_eq!(
            content_digest_header_with(&[Algorithm::Sha256, Algorithm::Sha512], HELLO),
            format!("{HELLO_SHA256}, {HELLO_SHA512}").as_str()
        );
        for value in [
            HELLO_SHA256.to_string(),
            HELLO_SHA512.to_string(),
            // RFC 9530 Appendix B.? style: several algorithms, and optional
            // whitespace around members.
            format!("{HELLO_SHA512},  {HELLO_SHA256}"),
            // An unknown algorithm beside a supported one is ignored.
            format!("unixsum=:AAAA:, {HELLO_SHA256}"),
        ] {
            verify_content_digest(&HeaderValue::try_from(value.as_str()).unwrap(), HELLO)
                .unwrap_or_else(|e| panic!("{value}: {e}"));
        }
        // Empty content (RFC 9530 §B.2 uses sha-256 of nothing).
        let empty = content_digest_header(b"");
        assert_eq!(
            empty,
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
        );
        verify_content_digest(&empty, b"").unwrap();
    }

    #[test]
    fn wrong_or_unusable_digests_are_refused() {
        let hv = |s: &str| HeaderValue::try_from(s).unwrap();
        assert_eq!(
            verify_content_digest(&hv(HELLO_SHA256), b"{\"hello\": \"World\"}"),
            Err(DigestError::Mismatch {
                algorithm: "sha-256"
            })
        );
        // One matching and one wrong member: refused.
        let bad512 = content_digest_header_with(&[Algorithm::Sha512], b"other");
        let both = format!("{HELLO_SHA256}, {}", bad512.to_str().unwrap());
        assert_eq!(
            verify_content_digest(&hv(&both), HELLO),
            Err(DigestError::Mismatch {
                algorithm: "sha-512"
            })
        );
        assert_eq!(
            verify_content_digest(&hv("md5=:AAAAAAAAAAAAAAAAAAAAAA==:"), HELLO),
            Err(DigestError::NoSupportedAlgorithm {
                found: "md5".into()
            })
        );
        assert_eq!(
            verify_content_digest(&hv("sha-256=:AAAA:"), HELLO),
            Err(DigestError::WrongLength {
                algorithm: "sha-256",
                len_bytes: 3,
                expected_bytes: 32
            })
        );
        for malformed in [
            "sha-256",
            "sha-256=abc",
            "sha-256=:!!:",
            "SHA-256=:AA==:",
            "sha-256=(:AA==:)",
        ] {
            let err = verify_content_digest(&hv(malformed), HELLO).unwrap_err();
            assert!(
                matches!(err, DigestError::Malformed { .. }),
                "{malformed:?}: {err:?}"
            );
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.code(), "digest_malformed");
        }
    }

    #[test]
    fn empty_field_is_an_empty_dictionary_with_nothing_to_check() {
        assert_eq!(
            verify_content_digest(&HeaderValue::from_static(""), HELLO),
            Err(DigestError::NoSupportedAlgorithm {
                found: "nothing".into()
            })
        );
    }

    #[test]
    fn all_field_lines_are_checked() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            verify_content_digest_headers(&headers, HELLO),
            Err(DigestError::NoSupportedAlgorithm { .. })
        ));
        headers.append(CONTENT_DIGEST, HeaderValue::from_static(HELLO_SHA256));
        verify_content_digest_headers(&headers, HELLO).unwrap();
        headers.append(
            CONTENT_DIGEST,
            content_digest_header_with(&[Algorithm::Sha512], b"not the body"),
        );
        // The first line alone matches; the second does not.
        verify_content_digest(headers.get(CONTENT_DIGEST).unwrap(), HELLO).unwrap();
        assert_eq!(
            verify_content_digest_headers(&headers, HELLO),
            Err(DigestError::Mismatch {
                algorithm: "sha-512"
            })
        );
    }
}
