//! Feeds arbitrary bytes to the Signature-Input / Signature parser, the
//! signature base builder, `verify_request` and the Content-Digest check.
//!
//! Input layout: fields separated by `\n` — Signature-Input, Signature,
//! Content-Digest, request target, Host, then extra `name: value` lines.
//! Anything `http` refuses as a header value or URI is skipped (hyper
//! refuses it before we would see it).
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use metanode_core::keys::SigningKey;
use metanode_httpsig::{
    KeyDirectory, ReplayCache, VerifyPolicy, digest, parse_signature_inputs, signature_base,
    verify_request,
};

const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|b| *b == b'\n');
    let mut req = http::Request::builder().method("POST");
    let target = |f: Option<&[u8]>| f.and_then(|t| http::Uri::try_from(t).ok());
    let sig_input = fields.next().unwrap_or_default();
    let sig = fields.next().unwrap_or_default();
    let content_digest = fields.next().unwrap_or_default();
    if let Some(uri) = target(fields.next()) {
        req = req.uri(uri);
    }
    let Ok(mut parts) = req.body(()).map(|r| r.into_parts().0) else {
        return;
    };
    if let Some(host) = fields.next().and_then(|h| HeaderValue::from_bytes(h).ok()) {
        parts.headers.insert(http::header::HOST, host);
    }
    for (name, value) in [
        ("signature-input", sig_input),
        ("signature", sig),
        ("content-digest", content_digest),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            parts.headers.insert(name, v);
        }
    }
    for line in fields {
        if let Some(i) = line.iter().position(|b| *b == b':')
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(&line[..i]),
                HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
            )
        {
            parts.headers.append(n, v);
        }
    }

    if let Ok(Some(inputs)) = parse_signature_inputs(&parts.headers) {
        for input in &inputs {
            let _ = signature_base(&parts, input, Some("https"));
        }
    }
    let mut keys = KeyDirectory::new();
    keys.insert("k1", SigningKey::from_seed(&[9; 32]).public_key());
    let replay = ReplayCache::new(8, 305);
    if let Err(e) = verify_request(&parts, &keys, &VerifyPolicy::default(), &replay, NOW) {
        assert!(matches!(e.status().as_u16(), 400 | 401 | 500 | 503));
        assert!(!e.code().is_empty());
    }
    let _ = digest::verify_content_digest_headers(&parts.headers, data);
});
