//! Every refusal of `verify_request`: the right error, status and code.

use http::StatusCode;
use http::request::Parts;
use metanode_core::keys::SigningKey;
use metanode_httpsig::{
    ComponentError, KeyDirectory, ReplayCache, SignError, SignParams, VerifyError, VerifyPolicy,
    digest, sign_request, verify_request,
};

const NOW: u64 = 1_700_000_000;
const KEY_ID: &str = "client-1";
const BODY: &[u8] = b"{\"amount\": 5}";
const WITH_BODY: &[&str] = &["@method", "@authority", "@path", "content-digest"];

fn key() -> SigningKey {
    SigningKey::from_seed(&[42; 32])
}

fn keys() -> KeyDirectory {
    let mut k = KeyDirectory::new();
    k.insert(KEY_ID, key().public_key());
    k
}

fn unsigned() -> Parts {
    http::Request::builder()
        .method("POST")
        .uri("/pay?to=bob")
        .header("host", "cage.example:8443")
        .header("content-length", BODY.len().to_string())
        .header("content-digest", digest::content_digest_header(BODY))
        .body(())
        .unwrap()
        .into_parts()
        .0
}

struct Req<'a> {
    components: &'a [&'a str],
    created: u64,
    expires: Option<u64>,
    nonce: Option<&'a str>,
    key_id: &'a str,
}

impl Default for Req<'_> {
    fn default() -> Self {
        Req {
            components: WITH_BODY,
            created: NOW,
            expires: None,
            nonce: Some("n-1"),
            key_id: KEY_ID,
        }
    }
}

fn signed(r: Req<'_>) -> Parts {
    let mut p = unsigned();
    sign_request(
        &mut p,
        &key(),
        &SignParams {
            key_id: r.key_id,
            label: "sig1",
            components: r.components,
            created_unix_s: r.created,
            expires_unix_s: r.expires,
            nonce: r.nonce,
        },
    )
    .unwrap();
    p
}

fn verify(p: &Parts) -> Result<metanode_httpsig::Verified, VerifyError> {
    verify_request(
        p,
        &keys(),
        &VerifyPolicy::default(),
        &ReplayCache::new(100, 305),
        NOW,
    )
}

#[track_caller]
fn refused(p: &Parts, code: &str, status: StatusCode) -> VerifyError {
    let err = verify(p).unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    assert_eq!(err.status(), status, "{err}");
    err
}

#[test]
fn a_good_request_verifies_with_its_body() {
    let p = signed(Req::default());
    let v = verify(&p).unwrap();
    assert_eq!(v.key_id, KEY_ID);
    assert_eq!(v.nonce.as_deref(), Some("n-1"));
    assert_eq!(
        v.covered,
        WITH_BODY.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        p.headers["signature-input"],
        r#"sig1=("@method" "@authority" "@path" "content-digest");created=1700000000;keyid="client-1";nonce="n-1""#
    );
    digest::verify_content_digest_headers(&p.headers, BODY).unwrap();
}

#[test]
fn bad_signature() {
    let mut p = signed(Req::default());
    // Same signature, different path: the base changes.
    p.uri = "/pay?to=mallory".parse().unwrap();
    let p2 = p.clone();
    p.uri = "/steal?to=bob".parse().unwrap();
    let err = refused(&p, "bad_signature", StatusCode::UNAUTHORIZED);
    assert_eq!(
        err,
        VerifyError::BadSignature {
            key_id: KEY_ID.into(),
            label: "sig1".into()
        }
    );
    // The query was not covered, so changing only it still verifies.
    verify(&p2).unwrap();
    // A flipped bit in the signature itself.
    let mut p = signed(Req::default());
    let mut bytes = metanode_httpsig::parse_signatures(&p.headers)
        .unwrap()
        .unwrap()
        .remove(0)
        .1;
    bytes[7] ^= 0x10;
    set_signature(&mut p, "sig1", &bytes);
    refused(&p, "bad_signature", StatusCode::UNAUTHORIZED);
    // Another request's Signature-Input (different nonce) with this signature.
    let mut swapped = signed(Req {
        nonce: Some("n-2"),
        ..Req::default()
    });
    swapped.headers.insert(
        "signature-input",
        signed(Req::default()).headers["signature-input"].clone(),
    );
    refused(&swapped, "bad_signature", StatusCode::UNAUTHORIZED);
}

fn set_signature(p: &mut Parts, label: &str, bytes: &[u8]) {
    let mut ser = sfv::DictSerializer::new();
    let _ = ser.bare_item(sfv::KeyRef::from_str(label).unwrap(), bytes);
    p.headers
        .insert("signature", ser.finish().unwrap().parse().unwrap());
}

#[test]
fn wrong_digest_is_caught_by_the_body_check() {
    let p = signed(Req::default());
    verify(&p).unwrap();
    let err = digest::verify_content_digest_headers(&p.headers, b"{\"amount\": 5000}").unwrap_err();
    assert_eq!(err.code(), "digest_mismatch");
    // Swapping the header for one that matches another body breaks the signature.
    let mut p = signed(Req::default());
    p.headers.insert(
        "content-digest",
        digest::content_digest_header(b"{\"amount\": 5000}"),
    );
    refused(&p, "bad_signature", StatusCode::UNAUTHORIZED);
}

#[test]
fn expired_too_old_and_future() {
    let p = signed(Req {
        created: NOW - 20,
        expires: Some(NOW - 1),
        ..Req::default()
    });
    let err = refused(&p, "expired", StatusCode::UNAUTHORIZED);
    assert_eq!(
        err,
        VerifyError::Expired {
            expires_unix_s: NOW - 1,
            now_unix_s: NOW
        }
    );
    // expires == now is still valid.
    verify(&signed(Req {
        created: NOW - 20,
        expires: Some(NOW),
        ..Req::default()
    }))
    .unwrap();
    refused(
        &signed(Req {
            created: NOW - 301,
            ..Req::default()
        }),
        "too_old",
        StatusCode::UNAUTHORIZED,
    );
    verify(&signed(Req {
        created: NOW - 300,
        ..Req::default()
    }))
    .unwrap();
    refused(
        &signed(Req {
            created: NOW + 6,
            ..Req::default()
        }),
        "created_in_future",
        StatusCode::UNAUTHORIZED,
    );
    // Within the 5 s skew.
    verify(&signed(Req {
        created: NOW + 5,
        ..Req::default()
    }))
    .unwrap();
}

#[test]
fn replayed_nonce_and_full_cache() {
    let replay = ReplayCache::new(1, 305);
    let policy = VerifyPolicy::default();
    let p = signed(Req::default());
    verify_request(&p, &keys(), &policy, &replay, NOW).unwrap();
    let err = verify_request(&p, &keys(), &policy, &replay, NOW + 1).unwrap_err();
    assert_eq!(
        err,
        VerifyError::ReplayedNonce {
            key_id: KEY_ID.into(),
            nonce: "n-1".into()
        }
    );
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    // Full: a fresh nonce is refused, not let through by evicting n-1.
    let p2 = signed(Req {
        nonce: Some("n-2"),
        ..Req::default()
    });
    let err = verify_request(&p2, &keys(), &policy, &replay, NOW + 1).unwrap_err();
    assert_eq!(err, VerifyError::ReplayCacheFull { entries_max: 1 });
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.code(), "replay_cache_full");
    // A bad signature never reaches the cache.
    let mut bad = signed(Req {
        nonce: Some("n-3"),
        ..Req::default()
    });
    bad.method = http::Method::PUT;
    let cache = ReplayCache::new(1, 305);
    assert_eq!(
        verify_request(&bad, &keys(), &policy, &cache, NOW)
            .unwrap_err()
            .code(),
        "bad_signature"
    );
    assert!(cache.is_empty());
    // A window shorter than max_age + skew is a configuration error.
    let short = ReplayCache::new(10, 60);
    let err = verify_request(&p, &keys(), &policy, &short, NOW).unwrap_err();
    assert_eq!(
        err,
        VerifyError::ReplayWindowTooShort {
            window_s: 60,
            needed_s: 305
        }
    );
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn missing_nonce_and_created() {
    refused(
        &signed(Req {
            nonce: None,
            ..Req::default()
        }),
        "missing_nonce",
        StatusCode::UNAUTHORIZED,
    );
    let mut p = unsigned();
    p.headers.insert(
        "signature-input",
        r#"sig1=("@method" "@authority" "@path" "content-digest");keyid="client-1";nonce="x""#
            .parse()
            .unwrap(),
    );
    p.headers.insert(
        "signature",
        format!("sig1=:{}:", "A".repeat(86) + "==").parse().unwrap(),
    );
    refused(&p, "missing_created", StatusCode::UNAUTHORIZED);
}

#[test]
fn unknown_key_and_missing_keyid() {
    let p = signed(Req {
        key_id: "stranger",
        ..Req::default()
    });
    let err = refused(&p, "unknown_key", StatusCode::UNAUTHORIZED);
    assert_eq!(
        err,
        VerifyError::UnknownKey {
            key_id: "stranger".into()
        }
    );
    let mut p = unsigned();
    p.headers.insert(
        "signature-input",
        r#"sig1=("@method");created=1700000000"#.parse().unwrap(),
    );
    p.headers
        .insert("signature", "sig1=:AAAA:".parse().unwrap());
    refused(&p, "missing_keyid", StatusCode::BAD_REQUEST);
}

#[test]
fn missing_component() {
    let err = refused(
        &signed(Req {
            components: &["@method", "@authority", "@path"],
            ..Req::default()
        }),
        "missing_component",
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(
        err,
        VerifyError::MissingComponent {
            label: "sig1".into(),
            name: "content-digest".into()
        }
    );
    refused(
        &signed(Req {
            components: &["@method", "@path", "content-digest"],
            ..Req::default()
        }),
        "missing_component",
        StatusCode::UNAUTHORIZED,
    );
    // Without a body, content-digest is not required.
    let mut p = http::Request::builder()
        .method("GET")
        .uri("/x")
        .header("host", "h")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    sign_request(
        &mut p,
        &key(),
        &SignParams {
            key_id: KEY_ID,
            label: "s",
            components: &["@method", "@authority", "@path"],
            created_unix_s: NOW,
            expires_unix_s: None,
            nonce: Some("g"),
        },
    )
    .unwrap();
    verify(&p).unwrap();
}

#[test]
fn covered_field_absent_from_the_request() {
    let mut p = unsigned();
    p.headers.insert("x-trace", "abc".parse().unwrap());
    sign_request(
        &mut p,
        &key(),
        &SignParams {
            key_id: KEY_ID,
            label: "sig1",
            components: &[
                "@method",
                "@authority",
                "@path",
                "content-digest",
                "x-trace",
            ],
            created_unix_s: NOW,
            expires_unix_s: None,
            nonce: Some("t"),
        },
    )
    .unwrap();
    verify(&p).unwrap();
    p.headers.remove("x-trace");
    let err = refused(&p, "component_absent", StatusCode::UNAUTHORIZED);
    assert_eq!(
        err,
        VerifyError::Component {
            label: "sig1".into(),
            source: ComponentError::Absent {
                name: "x-trace".into()
            }
        }
    );
}

#[test]
fn malformed_headers_are_400() {
    let good = signed(Req::default());
    let input = good.headers["signature-input"]
        .to_str()
        .unwrap()
        .to_string();
    let sig = good.headers["signature"].to_str().unwrap().to_string();
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "not a dictionary",
            "sig1=(".into(),
            sig.clone(),
            "malformed",
        ),
        (
            "item, not inner list",
            "sig1=1".into(),
            sig.clone(),
            "malformed",
        ),
        (
            "token component",
            input.replace("\"@method\"", "method"),
            sig.clone(),
            "malformed",
        ),
        (
            "created a string",
            input.replace("created=1700000000", "created=\"1\""),
            sig.clone(),
            "malformed",
        ),
        (
            "created negative",
            input.replace("created=1700000000", "created=-1"),
            sig.clone(),
            "malformed",
        ),
        (
            "nonce an integer",
            input.replace("nonce=\"n-1\"", "nonce=1"),
            sig.clone(),
            "malformed",
        ),
        (
            "keyid a token",
            input.replace("keyid=\"client-1\"", "keyid=client-1"),
            sig.clone(),
            "malformed",
        ),
        (
            "expires before created",
            format!("{input};expires=1"),
            sig.clone(),
            "malformed",
        ),
        (
            "signature not bytes",
            input.clone(),
            "sig1=\"abc\"".into(),
            "malformed",
        ),
        (
            "signature bad base64",
            input.clone(),
            "sig1=:!!!:".into(),
            "malformed",
        ),
        (
            "signature 3 bytes",
            input.clone(),
            "sig1=:AAAA:".into(),
            "malformed",
        ),
        (
            "label mismatch",
            input.clone(),
            sig.replace("sig1=", "sig2="),
            "label_mismatch",
        ),
        (
            "sf param",
            input.replace("\"@path\"", "\"@path\";sf"),
            sig.clone(),
            "unsupported_component",
        ),
        (
            "key param",
            input.replace("\"content-digest\"", "\"content-digest\";key=\"a\""),
            sig.clone(),
            "unsupported_component",
        ),
        (
            "bs param",
            input.replace("\"content-digest\"", "\"content-digest\";bs"),
            sig.clone(),
            "unsupported_component",
        ),
        (
            "status",
            input.replace("\"@path\"", "\"@path\" \"@status\""),
            sig.clone(),
            "unsupported_component",
        ),
        (
            "upper-case",
            input.replace("\"@path\"", "\"@path\" \"Date\""),
            sig.clone(),
            "unsupported_component",
        ),
        (
            "duplicate",
            input.replace("\"@path\"", "\"@path\" \"@path\""),
            sig.clone(),
            "duplicate_component",
        ),
        (
            "too many signatures",
            (0..9)
                .map(|i| format!("s{i}=()"))
                .collect::<Vec<_>>()
                .join(", "),
            sig.clone(),
            "malformed",
        ),
        (
            "too long",
            format!("{input}, x=(\"{}\")", "a".repeat(9000)),
            sig.clone(),
            "malformed",
        ),
    ];
    for (what, i, s, code) in cases {
        let mut p = unsigned();
        p.headers.insert("signature-input", i.parse().unwrap());
        p.headers.insert("signature", s.parse().unwrap());
        let err = verify(&p).unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err}");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{what}: {err}");
    }
    // One of the two fields missing.
    let mut p = good.clone();
    p.headers.remove("signature");
    assert_eq!(
        verify(&p).unwrap_err(),
        VerifyError::Missing {
            header: "signature"
        }
    );
    let mut p = good.clone();
    p.headers.remove("signature-input");
    let err = verify(&p).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Missing {
            header: "signature-input"
        }
    );
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn alg_must_be_ed25519_if_given() {
    let good = signed(Req::default());
    let input = good.headers["signature-input"].to_str().unwrap();
    for (alg, want) in [
        ("ed25519", "bad_signature"),
        ("rsa-pss-sha512", "unsupported_alg"),
    ] {
        // Adding alg changes @signature-params, so even "ed25519" no longer
        // matches this signature; the point is which check refuses it.
        let mut p = good.clone();
        p.headers.insert(
            "signature-input",
            format!("{input};alg=\"{alg}\"").parse().unwrap(),
        );
        let err = verify(&p).unwrap_err();
        assert_eq!(err.code(), want, "{alg}");
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    }
}

#[test]
fn https_listener_and_scheme_components() {
    // A client signing @scheme / @target-uri must send an absolute URI.
    let mut p = http::Request::builder()
        .method("GET")
        .uri("https://cage.example/a?b=c")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let params = SignParams {
        key_id: KEY_ID,
        label: "s",
        components: &[
            "@method",
            "@authority",
            "@path",
            "@scheme",
            "@target-uri",
            "@query",
            "@request-target",
        ],
        created_unix_s: NOW,
        expires_unix_s: None,
        nonce: Some("h"),
    };
    sign_request(&mut p, &key(), &params).unwrap();
    // The server sees origin form plus Host, and knows its listener is TLS.
    let mut server = p.clone();
    server.uri = "/a?b=c".parse().unwrap();
    server
        .headers
        .insert("host", "cage.example".parse().unwrap());
    let tls = VerifyPolicy {
        request_scheme: http::uri::Scheme::HTTPS,
        ..VerifyPolicy::default()
    };
    // @request-target differs (absolute vs origin form), as RFC 9421 §2.2.5
    // warns; without it the same signature verifies.
    let err = verify_request(&server, &keys(), &tls, &ReplayCache::new(9, 305), NOW).unwrap_err();
    assert_eq!(err.code(), "bad_signature");

    let mut p = http::Request::builder()
        .method("GET")
        .uri("https://cage.example/a?b=c")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    sign_request(
        &mut p,
        &key(),
        &SignParams {
            components: &[
                "@method",
                "@authority",
                "@path",
                "@scheme",
                "@target-uri",
                "@query",
            ],
            ..params
        },
    )
    .unwrap();
    let mut server = p.clone();
    server.uri = "/a?b=c".parse().unwrap();
    server
        .headers
        .insert("host", "cage.example:443".parse().unwrap());
    verify_request(&server, &keys(), &tls, &ReplayCache::new(9, 305), NOW).unwrap();
    // The same request on a plain-HTTP listener: @scheme differs.
    let err = verify_request(
        &server,
        &keys(),
        &VerifyPolicy::default(),
        &ReplayCache::new(9, 305),
        NOW,
    )
    .unwrap_err();
    assert_eq!(err.code(), "bad_signature");

    // Origin-form client request: @scheme cannot be signed.
    let mut origin = unsigned();
    let err = sign_request(
        &mut origin,
        &key(),
        &SignParams {
            components: &["@scheme"],
            ..params
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        SignError::Component(ComponentError::SchemeUnknown {
            name: "@scheme".into()
        })
    );
}

#[test]
fn sign_request_refuses_bad_parameters() {
    let base = SignParams {
        key_id: KEY_ID,
        label: "sig1",
        components: &["@method"],
        created_unix_s: NOW,
        expires_unix_s: None,
        nonce: None,
    };
    let mut p = unsigned();
    for (params, want) in [
        (
            SignParams {
                label: "Sig",
                ..base
            },
            "label",
        ),
        (SignParams { label: "", ..base }, "label"),
        (
            SignParams {
                key_id: "é",
                ..base
            },
            "keyid",
        ),
        (
            SignParams {
                nonce: Some("a\nb"),
                ..base
            },
            "nonce",
        ),
        (
            SignParams {
                created_unix_s: u64::MAX,
                ..base
            },
            "created",
        ),
        (
            SignParams {
                expires_unix_s: Some(NOW - 1),
                ..base
            },
            "expires",
        ),
        (
            SignParams {
                components: &["@status"],
                ..base
            },
            "@status",
        ),
        (
            SignParams {
                components: &["x-absent"],
                ..base
            },
            "x-absent",
        ),
    ] {
        let err = sign_request(&mut p, &key(), &params).unwrap_err();
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    assert!(!p.headers.contains_key("signature"));
    sign_request(&mut p, &key(), &base).unwrap();
    assert_eq!(
        sign_request(&mut p, &key(), &base).unwrap_err(),
        SignError::DuplicateLabel {
            label: "sig1".into()
        }
    );
    // A second label is appended beside the first.
    sign_request(
        &mut p,
        &key(),
        &SignParams {
            label: "sig2",
            ..base
        },
    )
    .unwrap();
    assert_eq!(p.headers.get_all("signature").iter().count(), 2);
}
