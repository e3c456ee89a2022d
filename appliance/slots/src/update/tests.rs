use std::fs;

use super::*;
use crate::testboot::{esp_with_good_a, files, simulate_boot};
use crate::testpe::{PLAIN_OSREL, uki};
use crate::testsign::Tools;

/// A real UKI-shaped image (Debian's stub + `.osrel` via objcopy) signed by sbsign with a fresh
/// `db`-like key. Returns (signed image path, cert PEM path, key path).
fn signed_uki(
    tools: &Tools,
    dir: &Path,
) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let unsigned = tools.uki_with_osrel(dir, "metanode", PLAIN_OSREL)?;
    let (key, cert) = tools.self_signed(dir, "db");
    let signed = dir.join("metanode-signed.efi");
    tools.sbsign(&key, &cert, &unsigned, &signed);
    Some((signed, cert, key))
}

#[test]
fn verified_update_lands_in_the_inactive_slot_as_a_trial() {
    let Some(tools) = Tools::find("verified_update_lands_in_the_inactive_slot_as_a_trial") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let Some((signed, cert, _)) = signed_uki(&tools, work.path()) else {
        return;
    };
    let (_dir, esp) = esp_with_good_a();

    let report = apply_update(
        &esp,
        "metanode-1-a.efi",
        &signed,
        &fs::read(&cert).unwrap(),
        3,
    )
    .unwrap();
    assert_eq!(report.slot, Slot::B);
    assert_eq!(report.generation, 2);
    assert_eq!(report.entry, "metanode-2-b+3.efi");
    assert_eq!(report.tries, 3);
    assert_eq!(report.signer_subject, "CN=db");
    assert_eq!(report.authenticode_sha256.len(), 64);
    assert!(report.removed.is_empty());

    // The installed file is byte-identical to the verified image and still verifies with sbverify.
    let installed = esp.linux_dir().join(&report.entry);
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&signed).unwrap());
    assert!(tools.sbverify(&cert, &installed));
    // The .osrel added by objcopy is what systemd-boot lists, and the trial is next.
    let status = esp.status(Some("metanode-1-a.efi")).unwrap();
    assert!(status.slot(Slot::B).listed);
    assert_eq!(status.preferred_next, Some(Slot::B));
    assert_eq!(simulate_boot(&esp), "metanode-2-b+3.efi");
}

#[test]
fn unverified_images_are_never_written() {
    let Some(tools) = Tools::find("unverified_images_are_never_written") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let Some((signed, cert, _)) = signed_uki(&tools, work.path()) else {
        return;
    };
    let cert_pem = fs::read(&cert).unwrap();
    let (_dir, esp) = esp_with_good_a();
    let before = files(&esp);

    // Tampered after signing: flip a byte in the .osrel text.
    let mut image = fs::read(&signed).unwrap();
    let at = image.windows(8).position(|w| w == b"Metanode").unwrap();
    image[at] = b'X';
    let tampered = work.path().join("tampered.efi");
    fs::write(&tampered, &image).unwrap();
    let err = apply_update(&esp, "metanode-1-a.efi", &tampered, &cert_pem, 3).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Verify {
                source: VerifyError::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );

    // Unsigned.
    let unsigned = tools
        .uki_with_osrel(work.path(), "plain", PLAIN_OSREL)
        .unwrap();
    let err = apply_update(&esp, "metanode-1-a.efi", &unsigned, &cert_pem, 3).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Verify {
                source: VerifyError::NoSignature,
                ..
            }
        ),
        "{err}"
    );

    // Signed by a key that is not ours.
    let other = tempfile::tempdir().unwrap();
    let (other_key, other_cert) = tools.self_signed(other.path(), "mallory");
    let by_other = work.path().join("by-other.efi");
    tools.sbsign(&other_key, &other_cert, &unsigned, &by_other);
    let err = apply_update(&esp, "metanode-1-a.efi", &by_other, &cert_pem, 3).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Verify {
                source: VerifyError::UntrustedSigner { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("untrusted signer CN=mallory"),
        "{err}"
    );

    // Missing file, bad certificate.
    let err = apply_update(
        &esp,
        "metanode-1-a.efi",
        &work.path().join("nope.efi"),
        &cert_pem,
        3,
    )
    .unwrap_err();
    assert!(matches!(err, UpdateError::Read { .. }), "{err}");
    let err = apply_update(&esp, "metanode-1-a.efi", &signed, b"not a cert", 3).unwrap_err();
    assert!(matches!(err, UpdateError::TrustedCert(_)), "{err}");

    assert_eq!(files(&esp), before);
}

#[test]
fn update_is_refused_while_the_booted_slot_is_a_trial() {
    let Some(tools) = Tools::find("update_is_refused_while_the_booted_slot_is_a_trial") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let Some((signed, cert, _)) = signed_uki(&tools, work.path()) else {
        return;
    };
    let cert_pem = fs::read(&cert).unwrap();
    let (_dir, esp) = esp_with_good_a();
    apply_update(&esp, "metanode-1-a.efi", &signed, &cert_pem, 3).unwrap();
    let booted = simulate_boot(&esp);
    assert_eq!(booted, "metanode-2-b+3.efi");
    let before = files(&esp);

    // Writing slot A now would destroy the only known-good image.
    let err = apply_update(&esp, &booted, &signed, &cert_pem, 3).unwrap_err();
    match &err {
        UpdateError::BootedInTrial { slot, entry, state } => {
            assert_eq!(*slot, Slot::B);
            assert_eq!(entry, "metanode-2-b+2-1.efi");
            assert_eq!(*state, SlotState::Trial { left: 2, done: 1 });
        }
        other => panic!("expected BootedInTrial, got {other}"),
    }
    assert_eq!(files(&esp), before);

    // Once marked good, the next update goes to A.
    esp.mark_booted_good(&booted).unwrap();
    let report = apply_update(&esp, &booted, &signed, &cert_pem, 3).unwrap();
    assert_eq!(report.entry, "metanode-3-a+3.efi");
    assert_eq!(report.removed, vec!["metanode-1-a.efi"]);

    let err = apply_update(&esp, "debian.efi", &signed, &cert_pem, 3).unwrap_err();
    assert!(matches!(err, UpdateError::BootedUnknown { .. }), "{err}");
}

#[test]
fn rollback_is_reported_after_the_trial_runs_out() {
    let (_dir, esp) = esp_with_good_a();
    esp.install_bytes(Slot::B, &uki(PLAIN_OSREL), 2).unwrap();

    for _ in 0..2 {
        let booted = simulate_boot(&esp);
        assert!(booted.starts_with("metanode-2-b+"), "{booted}");
        // While the trial runs, there is nothing to report.
        assert_eq!(rollback_report(&esp.status(Some(&booted)).unwrap()), None);
    }
    let booted = simulate_boot(&esp);
    assert_eq!(booted, "metanode-1-a.efi");
    let report = rollback_report(&esp.status(Some(&booted)).unwrap()).unwrap();
    assert_eq!(
        report,
        RollbackReport {
            running_slot: Slot::A,
            running_entry: "metanode-1-a.efi".into(),
            failed_slot: Slot::B,
            failed_entry: "metanode-2-b+0-2.efi".into(),
            failed_generation: 2,
            attempts: 2,
        }
    );
    assert_eq!(
        report.to_string(),
        "the last update was rolled back: metanode-2-b+0-2.efi (generation 2, slot B) failed 2 boot attempts \
         without being marked good; running metanode-1-a.efi from slot A"
    );
    // No booted id, no report.
    assert_eq!(rollback_report(&esp.status(None).unwrap()), None);
}

#[test]
fn no_rollback_report_when_both_slots_are_good() {
    let (_dir, esp) = esp_with_good_a();
    esp.install_bytes(Slot::B, &uki(PLAIN_OSREL), 1).unwrap();
    let booted = simulate_boot(&esp);
    esp.mark_booted_good(&booted).unwrap();
    assert_eq!(rollback_report(&esp.status(Some(&booted)).unwrap()), None);
}
