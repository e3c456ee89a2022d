//! RFC 9421 Appendix B test vectors (and RFC 9530's digest of the same body).
//!
//! Sources: RFC 9421 §B.1.4 (test-key-ed25519, JWK `d` =
//! n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU, `x` =
//! JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs, decoded to hex below),
//! §B.2 (the test request), §B.2.1 / §B.2.3 (signature bases; RSA-signed,
//! so only the base is checked) and §B.2.6 (ed25519: base, Signature-Input
//! and Signature).

use http::request::Parts;
use metanode_core::keys::{PublicKey, Signature, SigningKey};
use metanode_httpsig::{
    KeyDirectory, ReplayCache, SignParams, Verified, VerifyError, VerifyPolicy, digest,
    parse_signature_inputs, parse_signatures, sign_request, signature_base, verify_request,
};

const ED25519_SEED_HEX: &str = "9f8362f87a484a954e6e740c5b4c0e84229139a20aa8ab56ff66586f6a7d29c5";
const ED25519_PUBLIC_HEX: &str = "26b40b8f93fff3d897112f7ebc582b232dbd72517d082fe83cfb30ddce43d1bb";

const B26_SIGNATURE_INPUT: &str = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
const B26_SIGNATURE: &str = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
const B26_BASE: &str = concat!(
    "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
    "\"@method\": POST\n",
    "\"@path\": /foo\n",
    "\"@authority\": example.com\n",
    "\"content-type\": application/json\n",
    "\"content-length\": 18\n",
    "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"",
);
const CREATED: u64 = 1_618_884_473;
const CONTENT_DIGEST_SHA512: &str = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
const BODY: &[u8] = br#"{"hello": "world"}"#;

/// The §B.2 test request, origin form as a server receives it.
fn test_request() -> Parts {
    http::Request::builder()
        .method("POST")
        .uri("/foo?param=Value&Pet=dog")
        .header("host", "example.com")
        .header("date", "Tue, 20 Apr 2021 02:07:55 GMT")
        .header("content-type", "application/json")
        .header("content-digest", CONTENT_DIGEST_SHA512)
        .header("content-length", "18")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn with_b26_signature() -> Parts {
    let mut p = test_request();
    p.headers
        .insert("signature-input", B26_SIGNATURE_INPUT.parse().unwrap());
    p.headers
        .insert("signature", B26_SIGNATURE.parse().unwrap());
    p
}

fn rfc_key() -> SigningKey {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(ED25519_SEED_HEX, &mut seed).unwrap();
    SigningKey::from_seed(&seed)
}

fn rfc_public() -> PublicKey {
    ED25519_PUBLIC_HEX.parse().unwrap()
}

fn base_of(p: &Parts, label: &str) -> String {
    let inputs = parse_signature_inputs(&p.headers).unwrap().unwrap();
    let input = inputs.iter().find(|i| i.label == label).unwrap();
    String::from_utf8(signature_base(p, input, Some("http")).unwrap()).unwrap()
}

#[test]
fn b14_seed_derives_the_published_public_key() {
    assert_eq!(rfc_key().public_key(), rfc_public());
}

#[test]
fn b26_signature_base_is_byte_exact() {
    assert_eq!(base_of(&with_b26_signature(), "sig-b26"), B26_BASE);
}

#[test]
fn b26_signature_verifies_and_is_reproduced() {
    let sigs = parse_signatures(&with_b26_signature().headers)
        .unwrap()
        .unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].0, "sig-b26");
    let rfc_sig = Signature(<[u8; 64]>::try_from(sigs[0].1.as_slice()).unwrap());
    rfc_public().verify(B26_BASE.as_bytes(), &rfc_sig).unwrap();
    // Ed25519 is deterministic: signing the base gives the RFC's bytes.
    assert_eq!(rfc_key().sign(B26_BASE.as_bytes()), rfc_sig);
}

#[test]
fn b26_sign_request_produces_the_rfc_headers() {
    let mut p = test_request();
    sign_request(
        &mut p,
        &rfc_key(),
        &SignParams {
            key_id: "test-key-ed25519",
            label: "sig-b26",
            components: &[
                "date",
                "@method",
                "@path",
                "@authority",
                "content-type",
                "content-length",
            ],
            created_unix_s: CREATED,
            expires_unix_s: None,
            nonce: None,
        },
    )
    .unwrap();
    assert_eq!(p.headers["signature-input"], B26_SIGNATURE_INPUT);
    assert_eq!(p.headers["signature"], B26_SIGNATURE);
}

fn vector_policy() -> VerifyPolicy {
    VerifyPolicy {
        // The vector has no nonce and does not cover content-digest.
        require_nonce: false,
        require_digest_with_body: false,
        ..VerifyPolicy::default()
    }
}

fn directory() -> KeyDirectory {
    let mut keys = KeyDirectory::new();
    keys.insert("test-key-ed25519", rfc_public());
    keys
}

#[test]
fn b26_verify_request_accepts_the_vector() {
    let replay = ReplayCache::new(16, 305);
    let verified = verify_request(
        &with_b26_signature(),
        &directory(),
        &vector_policy(),
        &replay,
        CREATED + 10,
    )
    .unwrap();
    assert_eq!(
        verified,
        Verified {
            key_id: "test-key-ed25519".into(),
            label: "sig-b26".into(),
            created_unix_s: CREATED,
            expires_unix_s: None,
            nonce: None,
            covered: [
                "date",
                "@method",
                "@path",
                "@authority",
                "content-type",
                "content-length"
            ]
            .map(String::from)
            .to_vec(),
            tag: None,
        }
    );
    // Without a nonce nothing is recorded.
    assert!(replay.is_empty());
    // The body of the §B.2 request matches its RFC 9530 Content-Digest.
    digest::verify_content_digest_headers(&with_b26_signature().headers, BODY).unwrap();
}

/// The vector through the cage's path: the first success builds the key's
/// fixed-base table, later checks (one at a time and batched) use it, and
/// a one-bit change of the signature still fails under the table.
#[test]
fn b26_verifies_through_the_prepared_key_path() {
    let keys = directory();
    let replay = ReplayCache::new(16, 305);
    let now = CREATED + 10;
    let prepare = |p: &Parts| {
        metanode_httpsig::prepare_request(p, &keys, &vector_policy(), &replay, now).unwrap()
    };
    assert_eq!(keys.prepared_len(), 0);
    prepare(&with_b26_signature()).check().unwrap();
    assert_eq!(keys.prepared_len(), 1);
    let table = keys.handle("test-key-ed25519").unwrap().prepared().unwrap();
    let sigs = parse_signatures(&with_b26_signature().headers)
        .unwrap()
        .unwrap();
    let rfc_sig = Signature(<[u8; 64]>::try_from(sigs[0].1.as_slice()).unwrap());
    assert!(table.verify_strict(B26_BASE.as_bytes(), &rfc_sig));

    let mut tampered = with_b26_signature();
    let mut bad = rfc_sig;
    bad.0[40] ^= 0x01;
    set_signature_bytes(&mut tampered, &bad);
    let results = metanode_httpsig::check_batch(vec![
        prepare(&with_b26_signature()),
        prepare(&tampered),
        prepare(&with_b26_signature()),
    ]);
    let codes: Vec<_> = results
        .into_iter()
        .map(|r| r.map(|c| c.key_id().to_string()).map_err(|e| e.code()))
        .collect();
    assert_eq!(
        codes,
        vec![
            Ok("test-key-ed25519".to_string()),
            Err("bad_signature"),
            Ok("test-key-ed25519".to_string())
        ]
    );
}

fn set_signature_bytes(p: &mut Parts, sig: &Signature) {
    let value = format!("sig-b26=:{}:", base64_encode(&sig.0));
    p.headers
        .insert("signature", http::HeaderValue::from_str(&value).unwrap());
}

/// Standard base64 with padding (the RFC 8941 byte-sequence alphabet).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn b26_under_the_default_policy_needs_digest_and_nonce() {
    let replay = ReplayCache::new(16, 305);
    let err = verify_request(
        &with_b26_signature(),
        &directory(),
        &VerifyPolicy::default(),
        &replay,
        CREATED,
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::MissingComponent {
            label: "sig-b26".into(),
            name: "content-digest".into()
        }
    );
    assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
    let policy = VerifyPolicy {
        require_digest_with_body: false,
        ..VerifyPolicy::default()
    };
    let err = verify_request(
        &with_b26_signature(),
        &directory(),
        &policy,
        &replay,
        CREATED,
    )
    .unwrap_err();
    assert_eq!(err.code(), "missing_nonce");
}

#[test]
fn b21_and_b23_signature_bases_are_byte_exact() {
    let mut p = test_request();
    p.headers.insert(
        "signature-input",
        concat!(
            r#"sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd", "#,
            r#"sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss""#
        )
        .parse()
        .unwrap(),
    );
    assert_eq!(
        base_of(&p, "sig-b21"),
        r#""@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#
    );
    assert_eq!(
        base_of(&p, "sig-b23"),
        concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@method\": POST\n",
            "\"@path\": /foo\n",
            "\"@query\": ?param=Value&Pet=dog\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"content-digest\": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n",
            "\"content-length\": 18\n",
            "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@query\" \"@authority\" \"content-type\" \"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-rsa-pss\"",
        )
    );
}

#[test]
fn signature_params_are_reserialized_canonically() {
    // Optional whitespace inside the inner list and after ';' is not part
    // of the signed @signature-params (RFC 8941 serialization is).
    let mut p = test_request();
    p.headers.insert(
        "signature-input",
        r#"sig-b26=( "date"  "@method" "@path" "@authority" "content-type" "content-length" );created=1618884473; keyid="test-key-ed25519""#
            .parse()
            .unwrap(),
    );
    assert_eq!(base_of(&p, "sig-b26"), B26_BASE);
}

#[test]
fn b26_rfc_request_verifies_when_split_over_field_lines() {
    // A proxy may add its own signature as a second field line; the RFC
    // signature still verifies, and the unknown key is skipped.
    let mut p = with_b26_signature();
    p.headers.append(
        "signature-input",
        r#"proxy=("@method");created=1618884473;keyid="someone-else""#
            .parse()
            .unwrap(),
    );
    p.headers
        .append("signature", "proxy=:AAAA:".parse().unwrap());
    let v = verify_request(
        &p,
        &directory(),
        &vector_policy(),
        &ReplayCache::new(1, 305),
        CREATED,
    )
    .unwrap();
    assert_eq!(v.label, "sig-b26");
}
