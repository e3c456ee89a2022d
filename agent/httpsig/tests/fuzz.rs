//! Deterministic mutation fuzzing that runs in `cargo test` (CI has no
//! nightly for libFuzzer; `fuzz/` holds the libFuzzer target). A seeded
//! splitmix64 drives byte mutations of the `Signature-Input`, `Signature`
//! and `Content-Digest` values of a signed request and of whole requests.
//!
//! Properties: no panic; the same input gives the same result twice; an
//! error's status is 400/401/500/503 and always the same for one code;
//! a mutated request that still verifies verified exactly what was signed;
//! a digest that still verifies really is a digest of the body; and
//! anything `sign_request` produces, `verify_request` accepts.

use std::collections::HashMap;

use http::request::Parts;
use http::{HeaderValue, StatusCode};
use metanode_core::keys::SigningKey;
use metanode_httpsig::{
    KeyDirectory, ReplayCache, SignParams, Verified, VerifyError, VerifyPolicy, digest,
    parse_signature_inputs, sign_request, signature_base, verify_request,
};

const NOW: u64 = 1_700_000_000;
const BODY: &[u8] = b"{\"hello\": \"world\"}";
const CASES_PER_TARGET: usize = 4000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Fragments that matter to the structured-field and RFC 9421 grammars.
const TOKENS: &[&[u8]] = &[
    b"(",
    b")",
    b"\"",
    b";",
    b"=",
    b",",
    b":",
    b" ",
    b"\\",
    b"*",
    b"?",
    b"?1",
    b"-",
    b".",
    b"0",
    b"-1",
    b"999999999999999",
    b"9999999999999999",
    b"1.5",
    b"@status",
    b"@query-param",
    b";sf",
    b";key=\"a\"",
    b";bs",
    b";req",
    b"created=",
    b"expires=",
    b"nonce=",
    b"keyid=",
    b"alg=\"ed25519\"",
    b"alg=\"hmac-sha256\"",
    b"\"@method\"",
    b"\"content-digest\"",
    b"sha-256=",
    b"sha-512=",
    b"md5=",
    b"==",
    b"AAAA",
    b"\t",
    b"\x80",
    b"\xff",
    b"%",
    b"@d",
    b"sig1=",
    b", sig2=()",
    b"()",
];

fn mutate(rng: &mut Rng, input: &[u8], donors: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let t = rng.pick(TOKENS);
                out.splice(i..i, t.iter().copied());
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(8)).min(len);
                out.drain(i..j);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(16)).min(len);
                let chunk = out[i..j].to_vec();
                let k = rng.below(len + 1);
                out.splice(k..k, chunk);
            }
            4 => {
                let donor = rng.pick(donors);
                if !donor.is_empty() {
                    let i = rng.below(donor.len());
                    let j = (i + 1 + rng.below(24)).min(donor.len());
                    let k = rng.below(len + 1);
                    out.splice(k..k, donor[i..j].iter().copied());
                }
            }
            5 if len > 0 => out.truncate(rng.below(len)),
            6 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            _ => {
                let i = rng.below(len + 1);
                out.insert(i, b' ');
            }
        }
    }
    out
}

fn key() -> SigningKey {
    SigningKey::from_seed(&[9; 32])
}

fn keys() -> KeyDirectory {
    let mut k = KeyDirectory::new();
    k.insert("k1", key().public_key());
    k
}

fn signed_request() -> Parts {
    let mut p = http::Request::builder()
        .method("POST")
        .uri("/a/b?c=d")
        .header("host", "example.com")
        .header("content-type", "application/json")
        .header("content-length", BODY.len().to_string())
        .header(
            "content-digest",
            digest::content_digest_header_with(
                &[digest::Algorithm::Sha256, digest::Algorithm::Sha512],
                BODY,
            ),
        )
        .body(())
        .unwrap()
        .into_parts()
        .0;
    sign_request(
        &mut p,
        &key(),
        &SignParams {
            key_id: "k1",
            label: "sig1",
            components: &[
                "@method",
                "@authority",
                "@path",
                "@query",
                "content-type",
                "content-digest",
            ],
            created_unix_s: NOW - 10,
            expires_unix_s: Some(NOW + 60),
            nonce: Some("nonce-1"),
        },
    )
    .unwrap();
    p
}

fn run(p: &Parts) -> Result<Verified, VerifyError> {
    verify_request(
        p,
        &keys(),
        &VerifyPolicy::default(),
        &ReplayCache::new(4, 305),
        NOW,
    )
}

/// Checks the properties of one verification outcome.
fn check(p: &Parts, expected: &Verified, statuses: &mut HashMap<&'static str, StatusCode>) {
    let first = run(p);
    let second = run(p);
    assert_eq!(first, second, "nondeterministic result for {p:?}");
    match first {
        Ok(v) => assert_eq!(
            &v, expected,
            "a mutated request verified something else: {p:?}"
        ),
        Err(e) => {
            let status = e.status();
            assert!(
                [400, 401, 500, 503].contains(&status.as_u16()),
                "{e}: status {status}"
            );
            assert!(!e.to_string().is_empty());
            let seen = statuses.entry(e.code()).or_insert(status);
            assert_eq!(*seen, status, "code {} with two statuses", e.code());
        }
    }
    // The public parsing entry points must not panic either.
    if let Ok(Some(inputs)) = parse_signature_inputs(&p.headers) {
        for input in &inputs {
            let _ = signature_base(p, input, Some("http"));
        }
    }
}

fn with_value(p: &Parts, name: &'static str, value: &[u8]) -> Option<Parts> {
    let v = HeaderValue::from_bytes(value).ok()?;
    let mut p = p.clone();
    p.headers.insert(name, v);
    Some(p)
}

#[test]
fn mutated_signature_headers_never_panic_and_fail_consistently() {
    let base = signed_request();
    let expected = run(&base).unwrap();
    let donors: Vec<Vec<u8>> = ["signature-input", "signature", "content-digest"]
        .iter()
        .map(|h| base.headers[*h].as_bytes().to_vec())
        .collect();
    let mut statuses = HashMap::new();
    let mut rng = Rng(0x5eed_0001);
    let mut outcomes = [0usize; 2];
    for name in ["signature-input", "signature"] {
        let original = base.headers[name].as_bytes().to_vec();
        for _ in 0..CASES_PER_TARGET {
            let value = mutate(&mut rng, &original, &donors);
            let Some(p) = with_value(&base, name, &value) else {
                continue;
            };
            check(&p, &expected, &mut statuses);
            outcomes[usize::from(run(&p).is_ok())] += 1;
        }
    }
    // The mutator must reach both outcomes, or it is not exercising much.
    assert!(outcomes[0] > CASES_PER_TARGET, "errors: {outcomes:?}");
    assert!(
        outcomes[1] > 0,
        "some whitespace-only mutations still verify: {outcomes:?}"
    );
    for code in ["malformed", "bad_signature"] {
        assert!(
            statuses.contains_key(code),
            "never produced {code}: {statuses:?}"
        );
    }
}

#[test]
fn mutated_content_digest_never_panics_and_only_true_digests_pass() {
    let base = signed_request();
    let original = base.headers["content-digest"].as_bytes().to_vec();
    let donors = vec![original.clone()];
    let mut rng = Rng(0x5eed_0002);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..CASES_PER_TARGET {
        let value = mutate(&mut rng, &original, &donors);
        let Ok(hv) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        match digest::verify_content_digest(&hv, BODY) {
            Ok(()) => {
                ok += 1;
                // Every supported member really is the body's digest.
                let members = digest::parse_content_digest(&value).unwrap();
                let mut supported = 0;
                for (alg, bytes) in members {
                    if let Some(a) = digest::Algorithm::from_key(&alg) {
                        assert_eq!(bytes, a.digest(BODY), "{}", String::from_utf8_lossy(&value));
                        supported += 1;
                    }
                }
                assert!(supported > 0);
            }
            Err(e) => {
                err += 1;
                assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                assert!(!e.code().is_empty());
            }
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}

/// Whole requests: method, target, Host and covered fields mutated too,
/// and extra field lines of the signature headers appended.
#[test]
fn mutated_whole_requests_never_panic() {
    let base = signed_request();
    let expected = run(&base).unwrap();
    let mut statuses = HashMap::new();
    let mut rng = Rng(0x5eed_0003);
    let donors: Vec<Vec<u8>> = base
        .headers
        .values()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    let names: Vec<http::HeaderName> = base.headers.keys().cloned().collect();
    for _ in 0..CASES_PER_TARGET {
        let mut p = base.clone();
        match rng.below(5) {
            0 => {
                let m = mutate(&mut rng, p.method.as_str().as_bytes(), &donors);
                if let Ok(m) = http::Method::from_bytes(&m) {
                    p.method = m;
                }
            }
            1 => {
                let t = mutate(&mut rng, b"/a/b?c=d", &donors);
                if let Ok(u) = http::Uri::try_from(t) {
                    p.uri = u;
                }
            }
            2 => {
                let name = rng.pick(&names).clone();
                let v = mutate(&mut rng, p.headers[&name].as_bytes(), &donors);
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    p.headers.append(name, v);
                }
            }
            3 => {
                let name = rng.pick(&names).clone();
                p.headers.remove(&name);
            }
            _ => {
                let name = rng.pick(&names).clone();
                let v = mutate(&mut rng, p.headers[&name].as_bytes(), &donors);
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    p.headers.insert(name, v);
                }
            }
        }
        check(&p, &expected, &mut statuses);
    }
}

/// Anything `sign_request` accepts, `verify_request` accepts (with a
/// policy requiring nothing extra): signer and verifier build one base.
#[test]
fn random_signed_requests_round_trip() {
    const COMPONENTS: &[&str] = &[
        "@method",
        "@authority",
        "@path",
        "@query",
        "@request-target",
        "@scheme",
        "@target-uri",
        "content-type",
        "x-multi",
        "x-empty",
        "content-digest",
    ];
    const URIS: &[&str] = &[
        "/",
        "/a%20b?x=%2F",
        "/p?",
        "https://Example.COM:443/x?y",
        "http://h:8080/",
        "*",
    ];
    const METHODS: &[&str] = &["GET", "POST", "DELETE", "OPTIONS", "PATCH"];
    let mut rng = Rng(0x5eed_0004);
    let (mut signed, mut refused) = (0, 0);
    for i in 0..1500 {
        let mut b = http::Request::builder()
            .method(*rng.pick(METHODS))
            .uri(*rng.pick(URIS))
            .header("x-multi", " a ")
            .header("x-multi", "b")
            .header("x-empty", "")
            .header("content-digest", digest::content_digest_header(b""));
        if rng.below(2) == 0 {
            b = b.header("host", "Example.com:80");
        }
        if rng.below(2) == 0 {
            b = b.header("content-type", "text/plain");
        }
        let mut p = b.body(()).unwrap().into_parts().0;
        let count = rng.below(6);
        let mut components: Vec<&str> = Vec::new();
        for _ in 0..count {
            let c = *rng.pick(COMPONENTS);
            if !components.contains(&c) {
                components.push(c);
            }
        }
        let nonce = format!("n{i}");
        let params = SignParams {
            key_id: "k1",
            label: "s",
            components: &components,
            created_unix_s: NOW,
            expires_unix_s: Some(NOW + rng.below(100) as u64),
            nonce: Some(&nonce),
        };
        if sign_request(&mut p, &key(), &params).is_err() {
            refused += 1;
            continue;
        }
        signed += 1;
        let policy = VerifyPolicy {
            required_components: Vec::new(),
            ..VerifyPolicy::default()
        };
        let v = verify_request(&p, &keys(), &policy, &ReplayCache::new(1, 305), NOW)
            .unwrap_or_else(|e| panic!("{components:?} on {p:?}: {e}"));
        assert_eq!(v.covered, components);
    }
    assert!(
        signed > 800 && refused > 0,
        "signed {signed}, refused {refused}"
    );
}
