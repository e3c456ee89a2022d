//! Tests of the record encoding, signing, verification and receipt files.

use metanode_core::encoding::{Decode, DecodeError, Encode, EncodeError};
use metanode_core::hash::hash_tagged;
use metanode_core::keys::{PublicKey, Signature, SigningKey};
use metanode_core::merkle::empty_root;
use metanode_core::tags::DomainTag;

use crate::limits::*;
use crate::*;

/// RFC 8032 test 1 secret key, so the golden vector uses a published key.
const GOLDEN_SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

// Output of tests/vectors/record_vectors.py (an independent Python
// transcription of the format using PyPI `blake3` 1.0.x and `cryptography`).
const GOLDEN_EVENTS_ROOT_HEX: &str =
    "030651c9d8e6a87ac376e33cf8e5092c2943704ba04d5a519f72ff56c7d11fae";
const GOLDEN_RECORD_HASH_HEX: &str =
    "407ae82e112461082810c56552b9c86d55f5cf0d69fec44f476c25f366710246";
const GOLDEN_SIGNATURE_HEX: &str = "008f1d95c3913994a1c346f39cb9f95f27aed5978d486947211d5fdc5fce3bc4c383093a23912be7607b9a86dd97404cf76b6ba53413d92006be316ed84fb20d";
const GOLDEN_SIGNED_HEX: &str = concat!(
    "01d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a06000000676f6c64656e",
    "1111111111111111111111111111111111111111111111111111111111111111",
    "2222222222222222222222222222222222222222222222222222222222222222",
    "3333333333333333333333333333333333333333333333333333333333333333",
    "4444444444444444444444444444444444444444444444444444444444444444",
    "00002a36fe9c9717",
    "030651c9d8e6a87ac376e33cf8e5092c2943704ba04d5a519f72ff56c7d11fae",
    "5555555555555555555555555555555555555555555555555555555555555555",
    "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    "6666666666666666666666666666666666666666666666666666666666666666",
    "010702fe000003",
    "04000000",
    "004101000000000000030000006270660600000064656e696564",
    "010f00000077726974655f66696c65202f65746300000000",
    "020a0000006d656d6f72792e6d6178",
    "0300000000",
    "000000000000000001",
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "008f1d95c3913994a1c346f39cb9f95f27aed5978d486947211d5fdc5fce3bc4",
    "c383093a23912be7607b9a86dd97404cf76b6ba53413d92006be316ed84fb20d",
);

fn golden_key() -> SigningKey {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(GOLDEN_SEED_HEX, &mut seed).unwrap();
    SigningKey::from_seed(&seed)
}

fn decision(exit: ExitKind, violations: Vec<ViolationRecord>) -> PolicyDecision {
    let mut d = PolicyDecision {
        seccomp_digest: [0x66; 32],
        landlock_status: 1,
        landlock_abi: 7,
        cgroup_mode: 2,
        namespaces: namespaces::ALL & !namespaces::USER,
        exit,
        violations: Vec::new(),
        violations_dropped_count: 0,
        verdict: Verdict::Completed,
    };
    for v in violations {
        d.push_violation(v);
    }
    d.verdict = d.expected_verdict();
    d
}

fn record_with(key: &SigningKey, decision: PolicyDecision) -> Record {
    Record {
        header: RunHeader {
            node: key.public_key().to_bytes(),
            service: "golden".into(),
            agreement: [0x11; 32],
            input_root: [0x22; 32],
            rng_seed: [0x33; 32],
            env_root: [0x44; 32],
            logical_time_ns: 1_700_000_000_000_000_000,
        },
        roots: TraceRoots {
            events_root: decision.events_root().unwrap().to_bytes(),
            outputs_root: [0x55; 32],
            state_delta_root: empty_root().to_bytes(),
        },
        decision,
    }
}

fn golden_violations() -> Vec<ViolationRecord> {
    vec![
        ViolationRecord {
            kind: ViolationKind::Syscall {
                nr: 321,
                name: "bpf".into(),
            },
            detail: "denied".into(),
        },
        ViolationRecord {
            kind: ViolationKind::Landlock {
                access: "write_file /etc".into(),
            },
            detail: String::new(),
        },
        ViolationRecord {
            kind: ViolationKind::OomKill,
            detail: "memory.max".into(),
        },
        ViolationRecord {
            kind: ViolationKind::PidsLimit,
            detail: String::new(),
        },
    ]
}

fn golden_record() -> Record {
    let key = golden_key();
    record_with(&key, decision(ExitKind::Exited(3), golden_violations()))
}

/// Records covering every exit kind, every violation kind, the dropped
/// counter and each verdict.
fn sample_records() -> Vec<Record> {
    let key = golden_key();
    let many: Vec<ViolationRecord> = (0..VIOLATIONS_COUNT_MAX as i64 + 5)
        .map(|nr| ViolationRecord {
            kind: ViolationKind::Syscall {
                nr,
                name: format!("sys{nr}"),
            },
            detail: String::new(),
        })
        .collect();
    vec![
        golden_record(),
        record_with(&key, decision(ExitKind::Exited(0), vec![])),
        record_with(&key, decision(ExitKind::Signaled(9), golden_violations())),
        record_with(
            &key,
            decision(
                ExitKind::Failed("docklock: pivot_root failed: EINVAL".into()),
                vec![],
            ),
        ),
        record_with(&key, decision(ExitKind::Exited(1), many)),
        record_with(
            &key,
            decision(
                ExitKind::Signaled(9),
                vec![ViolationRecord {
                    kind: ViolationKind::WallTimeout,
                    detail: "wall timeout expired".into(),
                }],
            ),
        ),
        record_with(&key, decision(ExitKind::Exited(0), output_violations())),
    ]
}

/// What a cage that planted a setuid file and a device node in /out yields.
fn output_violations() -> Vec<ViolationRecord> {
    vec![
        ViolationRecord {
            kind: ViolationKind::Output {
                action: OutputAction::DeviceNodeRemoved,
                mode: 0o020666,
                path: "dev/null-copy".into(),
            },
            detail: "device node removed".into(),
        },
        ViolationRecord {
            kind: ViolationKind::Output {
                action: OutputAction::SetidBitsStripped,
                mode: 0o4755,
                path: "bin/tool".into(),
            },
            detail: "setuid/setgid bits stripped".into(),
        },
    ]
}

#[test]
fn golden_vector() {
    let key = golden_key();
    let record = golden_record();
    assert_eq!(
        hex::encode(record.roots.events_root),
        GOLDEN_EVENTS_ROOT_HEX
    );
    assert_eq!(record.hash().unwrap().to_hex(), GOLDEN_RECORD_HASH_HEX);
    let signed = record.sign(&key).unwrap();
    assert_eq!(hex::encode(signed.signature), GOLDEN_SIGNATURE_HEX);
    assert_eq!(
        hex::encode(signed.to_canonical_bytes().unwrap()),
        GOLDEN_SIGNED_HEX
    );
    signed.verify_with(&key.public_key()).unwrap();
}

#[test]
fn signature_is_over_tagged_hash_of_record_bytes() {
    let key = golden_key();
    let signed = golden_record().sign(&key).unwrap();
    let record_bytes = signed.record.to_canonical_bytes().unwrap();
    let hash = hash_tagged(DomainTag::DocklockRecord, &[&record_bytes]);
    assert_eq!(DomainTag::DocklockRecord.byte(), 0x13);
    assert_eq!(
        hash,
        blake3::hash(&[&[0x13u8][..], &record_bytes].concat()).into()
    );
    key.public_key()
        .verify(hash.as_bytes(), &Signature(signed.signature))
        .unwrap();
    // The file is record bytes, then signer, then signature.
    let all = signed.to_canonical_bytes().unwrap();
    assert_eq!(&all[..record_bytes.len()], record_bytes.as_slice());
    assert_eq!(
        &all[record_bytes.len()..record_bytes.len() + 32],
        &signed.signer
    );
    assert_eq!(&all[record_bytes.len() + 32..], &signed.signature);
}

#[test]
fn round_trips_are_byte_identical() {
    let key = golden_key();
    for record in sample_records() {
        let bytes = record.to_canonical_bytes().unwrap();
        let back = Record::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.to_canonical_bytes().unwrap(), bytes);

        let signed = record.sign(&key).unwrap();
        let signed_bytes = signed.to_canonical_bytes().unwrap();
        assert_eq!(signed_bytes.len(), bytes.len() + 96);
        let back = SignedRecord::from_canonical_bytes(&signed_bytes).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.to_canonical_bytes().unwrap(), signed_bytes);
        back.verify().unwrap();
    }
}

#[test]
fn every_truncation_and_a_trailing_byte_are_rejected() {
    let key = golden_key();
    for record in sample_records() {
        let bytes = record.sign(&key).unwrap().to_canonical_bytes().unwrap();
        for len in 0..bytes.len() {
            assert!(
                SignedRecord::from_canonical_bytes(&bytes[..len]).is_err(),
                "prefix of {len} of {} bytes decoded",
                bytes.len()
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            SignedRecord::from_canonical_bytes(&extra),
            Err(DecodeError::TrailingBytes {
                count: 1,
                offset: bytes.len()
            })
        );
    }
}

#[test]
fn every_flipped_bit_fails_decode_or_verify() {
    let key = golden_key();
    let bytes = golden_record()
        .sign(&key)
        .unwrap()
        .to_canonical_bytes()
        .unwrap();
    let mut decoded_but_rejected = 0usize;
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        if let Ok(signed) = SignedRecord::from_canonical_bytes(&bad) {
            assert!(
                signed.verify().is_err(),
                "bit {bit} (byte {}) flipped and the receipt still verifies",
                bit / 8
            );
            decoded_but_rejected += 1;
        }
    }
    // Most flips land in hashes, digests and the signature: they decode and
    // it is the signature check that catches them.
    assert!(
        decoded_but_rejected > bytes.len() * 4,
        "{decoded_but_rejected}"
    );
}

#[test]
fn wrong_or_invalid_signer_is_rejected() {
    let key = golden_key();
    let other = SigningKey::from_seed(&[9; 32]);
    let signed = golden_record().sign(&key).unwrap();
    assert_eq!(
        signed.verify_with(&other.public_key()),
        Err(VerifyError::UnexpectedSigner {
            expected: other.public_key().to_bytes(),
            found: key.public_key().to_bytes(),
        })
    );
    // Another key's signature over the same record, claimed by `key`.
    let mut swapped = golden_record().sign(&other).unwrap();
    swapped.signer = key.public_key().to_bytes();
    assert!(matches!(
        swapped.verify_with(&key.public_key()),
        Err(VerifyError::BadSignature { .. })
    ));
    // The identity point is a small-order key: refused before any check.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut weak = signed.clone();
    weak.signer = identity;
    assert!(matches!(
        weak.verify(),
        Err(VerifyError::InvalidSigner { .. })
    ));
    let err = signed.verify_with(&other.public_key()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "record was signed by {}, expected {}",
            key.public_key(),
            other.public_key()
        )
    );
}

#[test]
fn decode_rejects_unknown_versions_tags_and_bits() {
    let key = golden_key();
    let record = record_with(&key, decision(ExitKind::Exited(0), vec![]));
    let bytes = record.to_canonical_bytes().unwrap();

    let mut bad = bytes.clone();
    bad[0] = 2;
    assert!(matches!(
        Record::from_canonical_bytes(&bad),
        Err(DecodeError::UnknownVersion {
            found: 2,
            offset: 0,
            ..
        })
    ));

    // Offsets of the decision's fixed part: version, header, roots.
    let header_len = 32 + 4 + record.header.service.len() + 4 * 32 + 8;
    let decision_at = 1 + header_len + 3 * 32;
    let ns_at = decision_at + 32 + 3;
    let exit_at = ns_at + 2;
    let verdict_at = bytes.len() - 1;

    let mut bad = bytes.clone();
    bad[ns_at + 1] = 0x01; // bit 8: not defined
    assert!(matches!(
        Record::from_canonical_bytes(&bad),
        Err(DecodeError::Invalid { what: "namespaces", offset, .. }) if offset == ns_at
    ));
    let mut bad = bytes.clone();
    bad[exit_at] = 3;
    assert!(matches!(
        Record::from_canonical_bytes(&bad),
        Err(DecodeError::InvalidTag { what: "exit kind", value: 3, offset }) if offset == exit_at
    ));
    let mut bad = bytes.clone();
    bad[verdict_at] = 3;
    assert!(matches!(
        Record::from_canonical_bytes(&bad),
        Err(DecodeError::InvalidTag {
            what: "verdict",
            value: 3,
            ..
        })
    ));
    // A violation count above the bound is refused before anything is read.
    let count_at = exit_at + 2;
    let mut bad = bytes.clone();
    bad[count_at..count_at + 4].copy_from_slice(&(VIOLATIONS_COUNT_MAX + 1).to_le_bytes());
    assert!(matches!(
        Record::from_canonical_bytes(&bad),
        Err(DecodeError::CountExceedsMax { count, max: VIOLATIONS_COUNT_MAX, .. })
            if count == VIOLATIONS_COUNT_MAX + 1
    ));
    // A service-name length above its bound.
    let mut bad = bytes.clone();
    bad[33..37].copy_from_slice(&(SERVICE_NAME_LEN_BYTES_MAX + 1).to_le_bytes());
    assert!(matches!(
        Record::from_canonical_bytes(&bad),
        Err(DecodeError::LengthExceedsMax { offset: 33, .. })
    ));
}

#[test]
fn sign_refuses_inconsistent_or_oversized_records() {
    let key = golden_key();
    let good = golden_record();

    let mut r = good.clone();
    r.decision.verdict = Verdict::Completed;
    assert_eq!(
        r.sign(&key),
        Err(SignError::Inconsistent(ConsistencyError::VerdictMismatch {
            recorded: Verdict::Completed,
            expected: Verdict::Violated
        }))
    );
    let mut r = good.clone();
    r.roots.events_root = [0; 32];
    assert!(matches!(
        r.sign(&key),
        Err(SignError::Inconsistent(
            ConsistencyError::EventsRootMismatch { .. }
        ))
    ));
    let mut r = good.clone();
    r.decision.namespaces |= 1 << 12;
    assert_eq!(
        r.sign(&key),
        Err(SignError::Inconsistent(
            ConsistencyError::UnknownNamespaceBits { bits: 1 << 12 }
        ))
    );
    let mut r = good.clone();
    r.decision.violations_dropped_count = 1;
    r.roots.events_root = r.decision.events_root().unwrap().to_bytes();
    assert!(matches!(
        r.sign(&key),
        Err(SignError::Inconsistent(
            ConsistencyError::DroppedBeforeListFull {
                dropped: 1,
                listed: 4,
                ..
            }
        ))
    ));
    let mut r = good.clone();
    r.header.service = "s".repeat(SERVICE_NAME_LEN_BYTES_MAX as usize + 1);
    assert!(matches!(
        r.sign(&key),
        Err(SignError::Encode(EncodeError::LengthExceedsMax { .. }))
    ));

    // A consistent record signed, then tampered into inconsistency and
    // re-signed by hand, still fails verify.
    let mut r = good.clone();
    r.decision.verdict = Verdict::Completed;
    let hash = r.hash().unwrap();
    let forged = SignedRecord {
        signature: key.sign(hash.as_bytes()).to_bytes(),
        signer: key.public_key().to_bytes(),
        record: r,
    };
    assert!(matches!(
        forged.verify(),
        Err(VerifyError::Inconsistent(
            ConsistencyError::VerdictMismatch { .. }
        ))
    ));
}

#[test]
fn violations_beyond_the_list_are_counted_and_in_the_events() {
    let key = golden_key();
    let records = sample_records();
    let many = &records[4];
    let d = &many.decision;
    assert_eq!(d.violations.len(), VIOLATIONS_COUNT_MAX as usize);
    assert_eq!(d.violations_dropped_count, 5);
    assert_eq!(d.violations_total_count(), VIOLATIONS_COUNT_MAX as u64 + 5);
    assert_eq!(d.verdict, Verdict::Violated);
    let events = d.events();
    assert_eq!(events.len(), VIOLATIONS_COUNT_MAX as usize + 2);
    assert_eq!(
        events[VIOLATIONS_COUNT_MAX as usize],
        Event::ViolationsDropped { count: 5 }
    );
    assert_eq!(events.last(), Some(&Event::Exit(ExitKind::Exited(1))));
    many.sign(&key).unwrap().verify().unwrap();

    // Verdicts follow the outcome.
    assert_eq!(records[1].decision.verdict, Verdict::Completed);
    assert_eq!(records[2].decision.verdict, Verdict::Violated);
    assert_eq!(records[3].decision.verdict, Verdict::Failed);
}

#[test]
fn largest_record_matches_the_receipt_bound() {
    let key = golden_key();
    let s = |n: u32| "x".repeat(n as usize);
    // The output kind has the largest body (a path of up to 512 bytes).
    let violations: Vec<ViolationRecord> = (0..VIOLATIONS_COUNT_MAX)
        .map(|_| ViolationRecord {
            kind: ViolationKind::Output {
                action: OutputAction::SetidBitsStripped,
                mode: 0o6755,
                path: s(OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX),
            },
            detail: s(VIOLATION_DETAIL_LEN_BYTES_MAX),
        })
        .collect();
    let mut record = record_with(
        &key,
        decision(
            ExitKind::Failed(s(EXIT_FAILED_REASON_LEN_BYTES_MAX)),
            violations,
        ),
    );
    record.header.service = s(SERVICE_NAME_LEN_BYTES_MAX);
    let signed = record.sign(&key).unwrap();
    let bytes = signed.to_canonical_bytes().unwrap();
    assert_eq!(bytes.len() as u64, RECEIPT_FILE_SIZE_BYTES_MAX);
    assert_eq!(
        record.to_canonical_bytes().unwrap().len() as u64,
        RECORD_ENCODED_BYTES_MAX
    );
}

#[test]
fn replays_differ_only_where_runs_differ() {
    let key = golden_key();
    let a = golden_record();
    let mut b = a.clone();
    assert!(a.roots.differing(&b.roots).is_empty());
    b.roots.outputs_root[0] ^= 1;
    assert_eq!(a.roots.differing(&b.roots), vec!["outputs_root"]);
    // Another node replaying the same run signs a different record with the
    // same roots.
    let other = SigningKey::from_seed(&[5; 32]);
    let mut c = a.clone();
    c.header.node = other.public_key().to_bytes();
    assert_ne!(a.hash().unwrap(), c.hash().unwrap());
    assert!(a.roots.differing(&c.roots).is_empty());
    a.sign(&key).unwrap().verify().unwrap();
    c.sign(&other)
        .unwrap()
        .verify_with(&other.public_key())
        .unwrap();
}

#[test]
fn receipt_file_round_trips_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let key = golden_key();
    let signed = golden_record().sign(&key).unwrap();
    let path = dir.path().join(format!("run.{RECEIPT_FILE_EXTENSION}"));
    signed.write_file(&path).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        signed.to_canonical_bytes().unwrap()
    );
    let back = SignedRecord::read_file(&path).unwrap();
    assert_eq!(back, signed);
    back.verify_with(&key.public_key()).unwrap();
    // Only the receipt is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(7);
    std::fs::write(&path, &bytes).unwrap();
    let err = SignedRecord::read_file(&path).unwrap_err();
    assert!(matches!(err, ReadReceiptError::Decode { .. }));
    assert!(
        err.to_string()
            .contains("run.dlr is not a valid docklock record: trailing bytes"),
        "{err}"
    );

    std::fs::write(&path, vec![0u8; RECEIPT_FILE_SIZE_BYTES_MAX as usize + 1]).unwrap();
    assert!(matches!(
        SignedRecord::read_file(&path),
        Err(ReadReceiptError::TooLarge { size_bytes, .. }) if size_bytes == RECEIPT_FILE_SIZE_BYTES_MAX + 1
    ));
    assert!(matches!(
        SignedRecord::read_file(dir.path()),
        Err(ReadReceiptError::NotRegularFile { .. })
    ));
    assert!(matches!(
        SignedRecord::read_file(&dir.path().join("absent.dlr")),
        Err(ReadReceiptError::Io { action: "open", .. })
    ));
}

/// An output violation is part of the signed record: it makes the verdict "violated", it
/// round-trips, its JSON view names the action, mode and path, a path over the bound is refused
/// at signing, an unknown action tag at decoding, and changing its mode breaks the signature.
#[test]
fn output_violations_are_signed_shown_and_bounded() {
    let key = golden_key();
    let record = record_with(&key, decision(ExitKind::Exited(0), output_violations()));
    assert_eq!(record.decision.verdict, Verdict::Violated);
    let signed = record.sign(&key).unwrap();
    signed.verify().unwrap();
    let bytes = signed.to_canonical_bytes().unwrap();
    let back = SignedRecord::from_canonical_bytes(&bytes).unwrap();
    assert_eq!(back, signed);

    let json: serde_json::Value = serde_json::from_str(&signed.to_json_pretty()).unwrap();
    assert_eq!(
        json["decision"]["violations"][1],
        serde_json::json!({"kind": "output", "output": {"action": "setid_bits_stripped",
            "mode": "4755", "path": "bin/tool"}, "detail": "setuid/setgid bits stripped"})
    );
    assert_eq!(
        json["decision"]["violations"][0]["output"]["action"],
        "device_node_removed"
    );
    assert_eq!(json["decision"]["verdict"], "violated");

    // The second violation's mode (0o4755 LE) sits right after its tag and action bytes.
    let mut encoded_kind = Vec::new();
    encoded_kind.push(5u8);
    encoded_kind.push(0u8);
    encoded_kind.extend_from_slice(&0o4755u32.to_le_bytes());
    let at = bytes
        .windows(encoded_kind.len())
        .position(|w| w == encoded_kind.as_slice())
        .expect("the setid violation is in the signed bytes");
    let mut tampered = bytes.clone();
    tampered[at + 2] ^= 0o2000u32.to_le_bytes()[0] | 0x01;
    let tampered = SignedRecord::from_canonical_bytes(&tampered).unwrap();
    assert!(tampered.verify().is_err(), "a changed mode still verified");
    let mut bad_action = bytes.clone();
    bad_action[at + 1] = 2;
    assert!(matches!(
        SignedRecord::from_canonical_bytes(&bad_action),
        Err(DecodeError::InvalidTag { what: "output action", value: 2, offset }) if offset == at + 1
    ));

    let mut record = record_with(&key, decision(ExitKind::Exited(0), output_violations()));
    record.decision.violations[0].kind = ViolationKind::Output {
        action: OutputAction::DeviceNodeRemoved,
        mode: 0o020600,
        path: "p".repeat(OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX as usize + 1),
    };
    // The events root is computed first, over the same encoding: the bound trips there.
    assert!(matches!(
        record.sign(&key),
        Err(SignError::Inconsistent(ConsistencyError::Events(EventsError::Encode {
            index: 0,
            source: EncodeError::LengthExceedsMax { max, .. },
        }))) if max == OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX
    ));
}

#[test]
fn json_view_shows_hex_and_names() {
    let key = golden_key();
    let signed = golden_record().sign(&key).unwrap();
    let json: serde_json::Value = serde_json::from_str(&signed.to_json_pretty()).unwrap();
    assert_eq!(json["record_hash"], GOLDEN_RECORD_HASH_HEX);
    assert_eq!(json["signature"], GOLDEN_SIGNATURE_HEX);
    assert_eq!(json["signer"], key.public_key().to_string());
    assert_eq!(json["header"]["service"], "golden");
    assert_eq!(json["header"]["agreement"], "11".repeat(32));
    assert_eq!(
        json["header"]["logical_time_ns"],
        1_700_000_000_000_000_000u64
    );
    assert_eq!(json["roots"]["events_root"], GOLDEN_EVENTS_ROOT_HEX);
    let d = &json["decision"];
    assert_eq!(d["namespaces"]["mask"], 0xfe);
    assert_eq!(
        d["namespaces"]["names"],
        serde_json::json!(["mount", "pid", "ipc", "uts", "net", "cgroup", "time"])
    );
    assert_eq!(d["exit"], serde_json::json!({"kind": "exited", "code": 3}));
    assert_eq!(
        d["violations"][0],
        serde_json::json!({"kind": "syscall", "syscall_nr": 321, "syscall_name": "bpf", "detail": "denied"})
    );
    assert_eq!(
        d["violations"][1],
        serde_json::json!({"kind": "landlock", "access": "write_file /etc", "detail": ""})
    );
    assert_eq!(d["violations"][2]["kind"], "oom_kill");
    assert_eq!(d["verdict"], "violated");
}

#[test]
fn public_key_of_golden_seed_is_rfc8032() {
    // Guards the golden vector's key against a change in key derivation.
    assert_eq!(
        golden_key().public_key(),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
            .parse::<PublicKey>()
            .unwrap()
    );
}
