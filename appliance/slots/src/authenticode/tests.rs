use std::fs;
use std::path::Path;

use object::read::pe::PeFile64;
use object::{Object, ObjectSection};

use super::*;
use crate::testsign::Tools;

fn trusted(cert: &Path) -> TrustedCert {
    TrustedCert::from_pem(&fs::read(cert).unwrap()).unwrap()
}

/// File offset of the middle of the `.text` section.
fn text_middle(image: &[u8]) -> usize {
    let pe = PeFile64::parse(image).unwrap();
    let text = pe.section_by_name(".text").unwrap();
    let (offset, size) = text.file_range().unwrap();
    (offset + size / 2) as usize
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn sbsign_signature_verifies_and_sbverify_agrees() {
    let Some(tools) = Tools::find("sbsign_signature_verifies_and_sbverify_agrees") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = tools.self_signed(dir.path(), "test");
    let signed = dir.path().join("signed.efi");
    tools.sbsign(&key, &cert, &tools.stub, &signed);
    assert!(
        tools.sbverify(&cert, &signed),
        "sbverify must accept what sbsign produced"
    );

    let v = verify_pe(&fs::read(&signed).unwrap(), &trusted(&cert)).unwrap();
    assert_eq!(v.signer_subject, "CN=test");
    assert!(v.signer_is_trusted_cert);

    // The digest covers the image only (not the checksum, the certificate directory entry or the
    // table sbsign added): it equals the Authenticode hash of the unsigned stub, zero-padded to
    // 8 bytes as sbsign pads it before appending the table.
    let mut unsigned = fs::read(&tools.stub).unwrap();
    unsigned.resize(unsigned.len().div_ceil(8) * 8, 0);
    let pe = PeFile64::parse(&*unsigned).unwrap();
    let mut h = Sha256::new();
    authenticode::authenticode_digest(&pe, &mut h).unwrap();
    let unsigned_digest: [u8; 32] = h.finalize().into();
    assert_eq!(v.authenticode_sha256, unsigned_digest);

    let via_file = verify_file(&signed, &trusted(&cert)).unwrap();
    assert_eq!(via_file, v);
}

#[test]
fn flipped_text_byte_is_a_digest_mismatch() {
    let Some(tools) = Tools::find("flipped_text_byte_is_a_digest_mismatch") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = tools.self_signed(dir.path(), "test");
    let signed = dir.path().join("signed.efi");
    tools.sbsign(&key, &cert, &tools.stub, &signed);

    let mut image = fs::read(&signed).unwrap();
    let at = text_middle(&image);
    image[at] ^= 0x01;
    let tampered = dir.path().join("tampered.efi");
    fs::write(&tampered, &image).unwrap();
    assert!(
        !tools.sbverify(&cert, &tampered),
        "sbverify must reject the tampered image"
    );

    let err = verify_pe(&image, &trusted(&cert)).unwrap_err();
    assert!(
        matches!(err, VerifyError::DigestMismatch { index: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[test]
fn signed_by_another_key_is_an_untrusted_signer() {
    let Some(tools) = Tools::find("signed_by_another_key_is_an_untrusted_signer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, cert) = tools.self_signed(dir.path(), "db");
    let (other_key, other_cert) = tools.self_signed(dir.path(), "mallory");
    let signed = dir.path().join("signed.efi");
    tools.sbsign(&other_key, &other_cert, &tools.stub, &signed);
    assert!(
        !tools.sbverify(&cert, &signed),
        "sbverify must reject a signature by another key"
    );
    assert!(tools.sbverify(&other_cert, &signed));

    let err = verify_pe(&fs::read(&signed).unwrap(), &trusted(&cert)).unwrap_err();
    match &err {
        VerifyError::UntrustedSigner {
            subject, trusted, ..
        } => {
            assert_eq!(subject, "CN=mallory");
            assert_eq!(trusted, "CN=db");
        }
        other => panic!("expected UntrustedSigner, got {other}"),
    }
}

#[test]
fn unsigned_image_has_no_signature() {
    let Some(tools) = Tools::find("unsigned_image_has_no_signature") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, cert) = tools.self_signed(dir.path(), "test");
    assert!(
        !tools.sbverify(&cert, &tools.stub),
        "sbverify must reject the unsigned stub"
    );
    let err = verify_pe(&fs::read(&tools.stub).unwrap(), &trusted(&cert)).unwrap_err();
    assert!(matches!(err, VerifyError::NoSignature), "{err}");
    assert!(err.to_string().starts_with("no signature"), "{err}");
}

#[test]
fn leaf_issued_by_the_trusted_cert_is_accepted() {
    let Some(tools) = Tools::find("leaf_issued_by_the_trusted_cert_is_accepted") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, ca_cert) = tools.self_signed(dir.path(), "db");
    let (leaf_key, leaf_cert) = tools.issued(dir.path(), "release-signer", &ca_key, &ca_cert);
    let signed = dir.path().join("signed.efi");
    tools.sbsign(&leaf_key, &leaf_cert, &tools.stub, &signed);
    assert!(
        tools.sbverify(&ca_cert, &signed),
        "sbverify accepts a chain to the CA"
    );

    let v = verify_pe(&fs::read(&signed).unwrap(), &trusted(&ca_cert)).unwrap();
    assert_eq!(v.signer_subject, "CN=release-signer");
    assert!(!v.signer_is_trusted_cert);
}

#[test]
fn issuer_name_alone_does_not_make_a_signer_trusted() {
    let Some(tools) = Tools::find("issuer_name_alone_does_not_make_a_signer_trusted") else {
        return;
    };
    let real = tempfile::tempdir().unwrap();
    let fake = tempfile::tempdir().unwrap();
    // Two CAs with the same subject "CN=db" but different keys.
    let (ca_key, ca_cert) = tools.self_signed(real.path(), "db");
    let (_, impostor_cert) = tools.self_signed(fake.path(), "db");
    let (leaf_key, leaf_cert) = tools.issued(real.path(), "leaf", &ca_key, &ca_cert);
    let signed = real.path().join("signed.efi");
    tools.sbsign(&leaf_key, &leaf_cert, &tools.stub, &signed);
    assert!(!tools.sbverify(&impostor_cert, &signed));
    let err = verify_pe(&fs::read(&signed).unwrap(), &trusted(&impostor_cert)).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedSigner { .. }), "{err}");
}

#[test]
fn tampered_rsa_signature_is_invalid() {
    let Some(tools) = Tools::find("tampered_rsa_signature_is_invalid") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = tools.self_signed(dir.path(), "test");
    let signed = dir.path().join("signed.efi");
    tools.sbsign(&key, &cert, &tools.stub, &signed);
    let mut image = fs::read(&signed).unwrap();

    let rsa_sig = {
        let pe = PeFile64::parse(&*image).unwrap();
        let mut table = AttributeCertificateIterator::new(&pe).unwrap().unwrap();
        let sig = table
            .next()
            .unwrap()
            .unwrap()
            .get_authenticode_signature()
            .unwrap();
        sig.signature().to_vec()
    };
    assert_eq!(rsa_sig.len(), 256, "RSA-2048 signature");
    let at = find(&image, &rsa_sig) + 100;
    image[at] ^= 0x80;
    let tampered = dir.path().join("tampered.efi");
    fs::write(&tampered, &image).unwrap();
    assert!(!tools.sbverify(&cert, &tampered));

    let err = verify_pe(&image, &trusted(&cert)).unwrap_err();
    assert!(
        matches!(err, VerifyError::SignatureInvalid { index: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("signature invalid"), "{err}");
}

#[test]
fn tampered_message_digest_attribute_is_reported() {
    let Some(tools) = Tools::find("tampered_message_digest_attribute_is_reported") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = tools.self_signed(dir.path(), "test");
    let signed = dir.path().join("signed.efi");
    tools.sbsign(&key, &cert, &tools.stub, &signed);
    let mut image = fs::read(&signed).unwrap();

    let content_digest = {
        let pe = PeFile64::parse(&*image).unwrap();
        let mut table = AttributeCertificateIterator::new(&pe).unwrap().unwrap();
        let sig = table
            .next()
            .unwrap()
            .unwrap()
            .get_authenticode_signature()
            .unwrap();
        Sha256::digest(sig.encapsulated_content().unwrap()).to_vec()
    };
    // The messageDigest attribute holds exactly this hash: flipping it must be noticed.
    let at = find(&image, &content_digest);
    image[at] ^= 0x01;
    let err = verify_pe(&image, &trusted(&cert)).unwrap_err();
    assert!(
        matches!(err, VerifyError::MessageDigestMismatch { index: 0 }),
        "{err}"
    );
}

#[test]
fn not_a_pe_is_reported() {
    // Any trusted cert will do; a malformed image must fail before the certificate matters.
    let Some(tools) = Tools::find("not_a_pe_is_reported") else {
        return;
    };
    let pem_free = b"this is not an executable at all, just text that is long enough to be read";
    let dir = tempfile::tempdir().unwrap();
    let (_, cert) = tools.self_signed(dir.path(), "test");
    let err = verify_pe(pem_free, &trusted(&cert)).unwrap_err();
    assert!(matches!(err, VerifyError::NotPe { .. }), "{err}");
    assert!(err.to_string().starts_with("not a PE32+ image"), "{err}");
}

#[test]
fn trusted_cert_must_be_a_pem_certificate() {
    let err =
        TrustedCert::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
    assert!(matches!(err, TrustedCertError::Parse(_)), "{err}");
    assert!(TrustedCert::from_pem(b"garbage").is_err());
}

#[test]
fn built_pe_without_certificate_table_has_no_signature() {
    // Runs everywhere (no tools): our own minimal PE has no security directory.
    let image = crate::testpe::uki(crate::testpe::PLAIN_OSREL);
    let pe = PeFile64::parse(&*image).unwrap();
    assert!(AttributeCertificateIterator::new(&pe).unwrap().is_none());
}
