use super::*;
use crate::compile::{compile, load_policy};

const EXAMPLE: &str = include_str!("../../../policy/biso.example.yaml");

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32])
}

/// A log of three entries: policy applied, mode change, policy applied.
fn write_log(path: &Path, signer: &SigningKey) -> Vec<SignedLogEntry> {
    let policy = load_policy(EXAMPLE).unwrap();
    let compiled = compile(&policy, 1).unwrap();
    let mut log = DecisionLog::open(path, &signer.public_key()).unwrap();
    let mut out = vec![
        log.append(
            signer,
            1_700_000_000,
            DecisionKind::policy_applied(&compiled, Mode::Normal),
        )
        .unwrap(),
        log.append(
            signer,
            1_700_000_060,
            DecisionKind::ModeChanged {
                from: Mode::Normal,
                to: Mode::Secure,
            },
        )
        .unwrap(),
    ];
    let mut secure = policy.clone();
    secure.mode = Mode::Secure;
    let compiled = compile(&secure, 2).unwrap();
    out.push(
        log.append(
            signer,
            1_700_000_061,
            DecisionKind::policy_applied(&compiled, Mode::Secure),
        )
        .unwrap(),
    );
    out
}

/// Byte offset of each frame in a file of `entries`.
fn frame_offsets(entries: &[SignedLogEntry]) -> Vec<u64> {
    let mut offsets = vec![0];
    for e in entries {
        let len = e.to_canonical_bytes().unwrap().len() as u64 + 4;
        offsets.push(offsets.last().unwrap() + len);
    }
    offsets
}

#[test]
fn round_trip_reopen_and_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biso.log");
    let signer = key(1);
    let entries = write_log(&path, &signer);
    let summary = verify_log(&path, &signer.public_key()).unwrap();
    assert_eq!(summary.entries_count, 3);
    assert_eq!(summary.last_entry_hash, entries[2].entry.hash().unwrap());
    assert_eq!(summary.mode, Some(Mode::Secure));
    let applied = summary.policy.unwrap();
    assert_eq!(applied.policy_version, 2);
    assert_eq!(summary.len_bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(summary.last_unix_time_s, Some(1_700_000_061));
    // The chain: seq counts up, each entry names its predecessor's hash.
    assert_eq!(entries[0].entry.prev_entry_hash, Hash32::ZERO);
    for (i, pair) in entries.windows(2).enumerate() {
        assert_eq!(pair[1].entry.seq, i as u64 + 1);
        assert_eq!(pair[1].entry.prev_entry_hash, pair[0].entry.hash().unwrap());
    }
    // Decoding the file's bytes gives back exactly the entries appended.
    let bytes = std::fs::read(&path).unwrap();
    let offsets = frame_offsets(&entries);
    for (i, e) in entries.iter().enumerate() {
        let body = &bytes[offsets[i] as usize + 4..offsets[i + 1] as usize];
        assert_eq!(SignedLogEntry::from_canonical_bytes(body).unwrap(), *e);
    }
    // Reopen continues the chain.
    let mut log = DecisionLog::open(&path, &signer.public_key()).unwrap();
    assert_eq!(log.summary(), summary);
    let next = log
        .append(
            &signer,
            1_700_000_100,
            DecisionKind::ModeChanged {
                from: Mode::Secure,
                to: Mode::Emergency,
            },
        )
        .unwrap();
    assert_eq!(next.entry.seq, 3);
    assert_eq!(next.entry.prev_entry_hash, summary.last_entry_hash);
    let summary = verify_log(&path, &signer.public_key()).unwrap();
    assert_eq!(
        (summary.entries_count, summary.mode),
        (4, Some(Mode::Emergency))
    );
}

#[test]
fn every_tampered_byte_is_named_by_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biso.log");
    let signer = key(2);
    let entries = write_log(&path, &signer);
    let offsets = frame_offsets(&entries);
    let original = std::fs::read(&path).unwrap();
    for position in 0..original.len() {
        let mut bytes = original.clone();
        bytes[position] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let index = offsets
            .iter()
            .rposition(|o| *o as usize <= position)
            .unwrap() as u64;
        match verify_log(&path, &signer.public_key()) {
            Err(LogVerifyError::BadEntry {
                index: got, offset, ..
            }) => {
                assert_eq!(
                    (got, offset),
                    (index, offsets[index as usize]),
                    "byte {position}"
                );
            }
            // A flipped length prefix may make the frame run past the end.
            Err(LogVerifyError::TornTail { index: got, .. }) => {
                assert_eq!(got, index, "byte {position}");
                assert!(
                    position < offsets[index as usize] as usize + 4,
                    "byte {position}"
                );
            }
            other => panic!("byte {position}: {other:?}"),
        }
    }
    // A flipped signature byte is reported as a bad signature of that entry.
    let mut bytes = original.clone();
    let last_sig_byte = offsets[2] as usize - 1;
    bytes[last_sig_byte] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let err = verify_log(&path, &signer.public_key()).unwrap_err();
    assert!(
        matches!(
            err,
            LogVerifyError::BadEntry {
                index: 1,
                reason: BadEntry::Signature { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("entry 1 at byte"), "{err}");
    // A flipped time byte (inside the signed entry) also fails the signature.
    let mut bytes = original.clone();
    bytes[offsets[1] as usize + 4 + 1 + 8 + 32] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = verify_log(&path, &signer.public_key()).unwrap_err();
    assert!(
        matches!(
            err,
            LogVerifyError::BadEntry {
                index: 1,
                reason: BadEntry::Signature { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn removed_or_reordered_entries_break_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biso.log");
    let signer = key(3);
    let entries = write_log(&path, &signer);
    let offsets = frame_offsets(&entries);
    let bytes = std::fs::read(&path).unwrap();
    let frame = |i: usize| &bytes[offsets[i] as usize..offsets[i + 1] as usize];
    // Drop entry 1.
    std::fs::write(&path, [frame(0), frame(2)].concat()).unwrap();
    let err = verify_log(&path, &signer.public_key()).unwrap_err();
    assert!(
        matches!(
            err,
            LogVerifyError::BadEntry {
                index: 1,
                reason: BadEntry::Seq {
                    expected: 1,
                    found: 2
                },
                ..
            }
        ),
        "{err}"
    );
    // Swap: entry 1 first.
    std::fs::write(&path, [frame(1), frame(0)].concat()).unwrap();
    let err = verify_log(&path, &signer.public_key()).unwrap_err();
    assert!(
        matches!(
            err,
            LogVerifyError::BadEntry {
                index: 0,
                reason: BadEntry::Seq { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_key_is_named_at_the_first_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biso.log");
    let signer = key(4);
    write_log(&path, &signer);
    let other = key(5).public_key();
    let err = verify_log(&path, &other).unwrap_err();
    match &err {
        LogVerifyError::BadEntry {
            index: 0,
            offset: 0,
            reason: BadEntry::Signature { public_key },
            ..
        } => {
            assert_eq!(*public_key, other.to_bytes());
        }
        _ => panic!("{err}"),
    }
    // Opening with the wrong key refuses too, and so does appending with a
    // key that is not the log's.
    assert!(matches!(
        DecisionLog::open(&path, &other),
        Err(OpenLogError::Verify(LogVerifyError::BadEntry {
            index: 0,
            ..
        }))
    ));
    let mut log = DecisionLog::open(&path, &signer.public_key()).unwrap();
    let err = log
        .append(
            &key(5),
            1,
            DecisionKind::ModeChanged {
                from: Mode::Secure,
                to: Mode::Normal,
            },
        )
        .unwrap_err();
    assert!(matches!(err, AppendError::WrongKey { .. }), "{err}");
    assert_eq!(
        verify_log(&path, &signer.public_key())
            .unwrap()
            .entries_count,
        3
    );
}

#[test]
fn truncated_tail_is_reported_refused_and_recovered_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biso.log");
    let signer = key(6);
    let entries = write_log(&path, &signer);
    let offsets = frame_offsets(&entries);
    let full = std::fs::read(&path).unwrap();
    let public = signer.public_key();
    // Every cut inside the last frame is a torn tail at entry 2.
    for cut in offsets[2] + 1..offsets[3] {
        std::fs::write(&path, &full[..cut as usize]).unwrap();
        match verify_log(&path, &public) {
            Err(LogVerifyError::TornTail {
                index: 2,
                offset,
                present_bytes,
                needed_bytes,
                ..
            }) => {
                assert_eq!(offset, offsets[2]);
                assert_eq!(present_bytes, cut - offsets[2]);
                let frame_len = offsets[3] - offsets[2];
                assert_eq!(needed_bytes, if present_bytes < 4 { 4 } else { frame_len });
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Open refuses to extend it.
    std::fs::write(&path, &full[..offsets[3] as usize - 10]).unwrap();
    assert!(matches!(
        DecisionLog::open(&path, &public),
        Err(OpenLogError::Verify(LogVerifyError::TornTail {
            index: 2,
            ..
        }))
    ));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), offsets[3] - 10);
    // Explicit recovery cuts exactly the torn bytes.
    let recovery = DecisionLog::recover_torn_tail(&path, &public).unwrap();
    assert_eq!(
        recovery,
        TailRecovery {
            entries_count: 2,
            dropped_bytes: offsets[3] - 10 - offsets[2]
        }
    );
    assert_eq!(std::fs::read(&path).unwrap(), full[..offsets[2] as usize]);
    let mut log = DecisionLog::open(&path, &public).unwrap();
    let e = log
        .append(
            &signer,
            5,
            DecisionKind::ModeChanged {
                from: Mode::Secure,
                to: Mode::Normal,
            },
        )
        .unwrap();
    assert_eq!(e.entry.seq, 2);
    assert_eq!(verify_log(&path, &public).unwrap().entries_count, 3);
    // Recovery never cuts a complete bad entry.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offsets[1] as usize + 10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        DecisionLog::recover_torn_tail(&path, &public),
        Err(OpenLogError::Verify(LogVerifyError::BadEntry {
            index: 1,
            ..
        }))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn oversized_frame_length_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biso.log");
    let signer = key(7);
    let entries = write_log(&path, &signer);
    let offsets = frame_offsets(&entries);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = offsets[1] as usize;
    bytes[at..at + 4].copy_from_slice(&(LOG_ENTRY_LEN_BYTES_MAX + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = verify_log(&path, &signer.public_key()).unwrap_err();
    assert!(
        matches!(
            err,
            LogVerifyError::BadEntry {
                index: 1,
                reason: BadEntry::FrameTooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn empty_and_missing_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biso.log");
    let signer = key(8);
    assert!(matches!(
        verify_log(&path, &signer.public_key()),
        Err(LogVerifyError::Read { .. })
    ));
    let log = DecisionLog::open(&path, &signer.public_key()).unwrap();
    assert_eq!(log.summary().entries_count, 0);
    let summary = verify_log(&path, &signer.public_key()).unwrap();
    assert_eq!(
        (summary.entries_count, summary.policy, summary.mode),
        (0, None, None)
    );
}

#[test]
fn entry_encoding_is_canonical() {
    let entry = LogEntry {
        seq: 9,
        prev_entry_hash: Hash32([7; 32]),
        unix_time_s: 1234,
        kind: DecisionKind::ModeChanged {
            from: Mode::Maintenance,
            to: Mode::Normal,
        },
    };
    let bytes = entry.to_canonical_bytes().unwrap();
    let mut want = vec![1u8];
    want.extend_from_slice(&9u64.to_le_bytes());
    want.extend_from_slice(&[7; 32]);
    want.extend_from_slice(&1234u64.to_le_bytes());
    want.extend_from_slice(&[1, 3, 0]);
    assert_eq!(bytes, want);
    assert_eq!(LogEntry::from_canonical_bytes(&bytes).unwrap(), entry);
    // Unknown mode byte and kind tag are rejected with their offsets.
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() = 9;
    assert!(matches!(
        LogEntry::from_canonical_bytes(&bad),
        Err(DecodeError::InvalidTag {
            what: "mode",
            value: 9,
            offset: 51
        })
    ));
    bad = bytes.clone();
    bad[49] = 5;
    assert!(matches!(
        LogEntry::from_canonical_bytes(&bad),
        Err(DecodeError::InvalidTag {
            what: "decision kind",
            value: 5,
            offset: 49
        })
    ));
    // The hash is H(0x1b || bytes).
    assert_eq!(
        entry.hash().unwrap(),
        metanode_core::hash::hash_tagged(DomainTag::BisoDecision, &[&bytes])
    );
}
