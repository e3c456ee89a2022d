//! The bytes the generator sends: one fixed request reused for every send,
//! or a pool of RFC 9421-signed requests made before the clock starts (each
//! has its own nonce, so none can be replayed and the signing cost stays on
//! the client, outside the measurement).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use metanode_core::keys::SigningKey;
use metanode_httpsig as httpsig;

/// Signature label in `Signature-Input` / `Signature`.
pub const SIGNATURE_LABEL: &str = "sig1";
/// Presigning stops here whatever was asked: each request is a few hundred
/// bytes, so this bounds the pool near 1 GiB.
pub const PRESIGN_COUNT_MAX: usize = 2_000_000;
/// Covered components without a body; `content-digest` is added with one.
pub const COVERED_COMPONENTS: &[&str] = &["@method", "@authority", "@path"];
pub const COVERED_COMPONENTS_WITH_BODY: &[&str] =
    &["@method", "@authority", "@path", "content-digest"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// What every request of a run looks like.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    /// Sent as the Host header (and signed as `@authority`).
    pub host: String,
    pub path: String,
    pub body: Vec<u8>,
    /// Ask for `Connection: close` (one TCP connection per request).
    pub close: bool,
}

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BuildRequestError {
    #[error("--path {path:?} must start with '/' and contain no spaces or control characters")]
    Path { path: String },
    #[error("--host {host:?} contains spaces or control characters")]
    Host { host: String },
    #[error("--method/--path/--host do not form an http request: {0}")]
    Http(#[from] http::Error),
    #[error("signing request {index}: {source}")]
    Sign {
        index: usize,
        source: httpsig::SignError,
    },
    #[error("presign count {count} is outside 1..={PRESIGN_COUNT_MAX}")]
    PresignCount { count: usize },
}

fn is_token_text(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

impl RequestSpec {
    pub fn validate(&self) -> Result<(), BuildRequestError> {
        if !self.path.starts_with('/') || !is_token_text(&self.path) {
            return Err(BuildRequestError::Path {
                path: self.path.clone(),
            });
        }
        if !is_token_text(&self.host) {
            return Err(BuildRequestError::Host {
                host: self.host.clone(),
            });
        }
        Ok(())
    }

    /// The unsigned request, byte for byte.
    pub fn plain(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        self.write_start(&mut out);
        self.write_framing(&mut out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Signed request number `index`: `created` and `nonce` are what make it unique.
    pub fn signed(
        &self,
        key: &SigningKey,
        key_id: &str,
        created_unix_s: u64,
        nonce: &str,
        index: usize,
    ) -> Result<Vec<u8>, BuildRequestError> {
        let mut builder = http::Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .header(http::header::HOST, self.host.as_str());
        let components = if self.body.is_empty() {
            COVERED_COMPONENTS
        } else {
            builder = builder.header(
                "content-digest",
                httpsig::digest::content_digest_header(&self.body),
            );
            COVERED_COMPONENTS_WITH_BODY
        };
        let (mut parts, ()) = builder.body(())?.into_parts();
        let params = httpsig::SignParams {
            key_id,
            label: SIGNATURE_LABEL,
            components,
            created_unix_s,
            expires_unix_s: None,
            nonce: Some(nonce),
        };
        httpsig::sign_request(&mut parts, key, &params)
            .map_err(|source| BuildRequestError::Sign { index, source })?;

        let mut out = Vec::with_capacity(512 + self.body.len());
        self.write_request_line(&mut out);
        for (name, value) in &parts.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.write_framing(&mut out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    fn write_request_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
    }

    fn write_start(&self, out: &mut Vec<u8>) {
        self.write_request_line(out);
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Headers the signature does not cover.
    fn write_framing(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"user-agent: metanode-http-load\r\n");
        if self.method == Method::Post || !self.body.is_empty() {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
            out.extend_from_slice(b"content-type: application/octet-stream\r\n");
        }
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
    }
}

/// A deterministic body: the content does not matter, only its size and
/// that the digest is computed over real bytes.
pub fn body_of(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Where each send takes its bytes from.
#[derive(Debug)]
pub enum RequestSource {
    Fixed(Vec<u8>),
    Presigned(Presigned),
}

/// Signed requests laid end to end in one buffer, handed out once each.
#[derive(Debug)]
pub struct Presigned {
    bytes: Vec<u8>,
    /// `ends[i]` is where request `i` ends in `bytes`.
    ends: Vec<usize>,
    next: AtomicUsize,
    exhausted: AtomicBool,
}

impl RequestSource {
    /// The next request to send, or `None` when the presigned pool ran out.
    pub fn next(&self) -> Option<&[u8]> {
        match self {
            RequestSource::Fixed(bytes) => Some(bytes),
            RequestSource::Presigned(p) => {
                let i = p.next.fetch_add(1, Ordering::Relaxed);
                let Some(&end) = p.ends.get(i) else {
                    p.exhausted.store(true, Ordering::Relaxed);
                    return None;
                };
                let start = match i.checked_sub(1) {
                    Some(prev) => p.ends.get(prev).copied().unwrap_or(0),
                    None => 0,
                };
                p.bytes.get(start..end)
            }
        }
    }

    pub fn presigned_count(&self) -> Option<usize> {
        match self {
            RequestSource::Fixed(_) => None,
            RequestSource::Presigned(p) => Some(p.ends.len()),
        }
    }

    pub fn exhausted(&self) -> bool {
        match self {
            RequestSource::Fixed(_) => false,
            RequestSource::Presigned(p) => p.exhausted.load(Ordering::Relaxed),
        }
    }
}

/// Signs `count` requests on `threads` threads, all with `created` = now and
/// nonces unique to this process and moment (a server's replay cache
/// outlives one run, so a counter alone would collide with the last run).
pub fn presign(
    spec: &RequestSpec,
    key: &SigningKey,
    key_id: &str,
    count: usize,
    threads: usize,
) -> Result<Presigned, BuildRequestError> {
    if count == 0 || count > PRESIGN_COUNT_MAX {
        return Err(BuildRequestError::PresignCount { count });
    }
    spec.validate()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let created_unix_s = now.as_secs();
    let run_tag = format!("{:x}-{:x}", now.as_nanos(), std::process::id());
    let threads = threads.clamp(1, count);
    let per_thread = count.div_ceil(threads);

    let parts: Vec<Result<Vec<Vec<u8>>, BuildRequestError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let run_tag = &run_tag;
                scope.spawn(move || {
                    let first = t * per_thread;
                    let last = ((t + 1) * per_thread).min(count);
                    (first..last)
                        .map(|index| {
                            let nonce = format!("{run_tag}-{index}");
                            spec.signed(key, key_id, created_unix_s, &nonce, index)
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a presign thread panicked"))
            .collect()
    });

    let mut bytes = Vec::new();
    let mut ends = Vec::with_capacity(count);
    for part in parts {
        for request in part? {
            bytes.extend_from_slice(&request);
            ends.push(bytes.len());
        }
    }
    assert_eq!(ends.len(), count, "every presign thread covers its range");
    Ok(Presigned {
        bytes,
        ends,
        next: AtomicUsize::new(0),
        exhausted: AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: Method, body: usize, close: bool) -> RequestSpec {
        RequestSpec {
            method,
            host: "example.test:8080".into(),
            path: "/a/b?c=d".into(),
            body: body_of(body),
            close,
        }
    }

    #[test]
    fn plain_get_and_post_bytes() {
        assert_eq!(
            String::from_utf8(spec(Method::Get, 0, true).plain()).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nhost: example.test:8080\r\nuser-agent: metanode-http-load\r\n\
connection: close\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8(spec(Method::Post, 3, false).plain()).unwrap(),
            "POST /a/b?c=d HTTP/1.1\r\nhost: example.test:8080\r\nuser-agent: metanode-http-load\r\n\
content-length: 3\r\ncontent-type: application/octet-stream\r\n\r\nabc"
        );
    }

    #[test]
    fn bad_path_and_host_are_refused() {
        let mut s = spec(Method::Get, 0, false);
        s.path = "no-slash".into();
        assert!(matches!(s.validate(), Err(BuildRequestError::Path { .. })));
        s.path = "/with space".into();
        assert!(matches!(s.validate(), Err(BuildRequestError::Path { .. })));
        s.path = "/".into();
        s.host = "a\r\nb".into();
        assert!(matches!(s.validate(), Err(BuildRequestError::Host { .. })));
    }

    #[test]
    fn fixed_source_never_runs_out() {
        let source = RequestSource::Fixed(b"x".to_vec());
        for _ in 0..3 {
            assert_eq!(source.next(), Some(&b"x"[..]));
        }
        assert!(!source.exhausted());
        assert_eq!(source.presigned_count(), None);
    }
}
