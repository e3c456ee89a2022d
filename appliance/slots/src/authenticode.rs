//! Authenticode verification of a signed PE (our UKIs) against one trusted certificate.
//!
//! The firmware checks the same signature against `db` at boot; checking it before writing to
//! the ESP means a bad image is refused while the machine is still up, instead of failing its
//! boot attempts (or, with Secure Boot off, booting something unsigned).
//!
//! What is checked, in this order, so the error names the first thing that is wrong:
//! 1. the file is a PE32+ image and has a certificate table (`NotPe`, `NoSignature`);
//! 2. the Authenticode SHA-256 of the image — everything except the checksum field, the
//!    certificate-table directory entry and the table itself (`authenticode` crate) — equals the
//!    digest inside `SpcIndirectDataContent` (`DigestMismatch`);
//! 3. the signed attributes' `messageDigest` equals SHA-256 of the encapsulated
//!    `SpcIndirectDataContent` (its content octets, as Authenticode defines it), and
//!    `contentType` names it (`MessageDigestMismatch`, `Malformed`);
//! 4. the RSA PKCS#1 v1.5 SHA-256 signature over the DER `SET OF` signed attributes verifies with
//!    the signer certificate's key (`SignatureInvalid`);
//! 5. the signer certificate is the trusted certificate, or is issued by it and carries a valid
//!    SHA-256/RSA signature from its key (`UntrustedSigner`).
//!
//! Validity dates are not checked: firmware has no trusted clock and does not check them either,
//! so a date check here would only refuse images the machine boots.

use authenticode::{AttributeCertificate, AttributeCertificateIterator, AuthenticodeSignature};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, DecodePem, Encode, SliceReader};
use object::read::pe::PeFile64;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::attr::Attributes;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use crate::limits::SIGNATURES_COUNT_MAX;

const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA_256_WITH_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_CE_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the trusted certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustedCertError {
    #[error("trusted certificate is not a PEM X.509 certificate: {0}")]
    Parse(der::Error),
    #[error("trusted certificate {subject} does not hold an RSA public key: {reason}")]
    NotRsa { subject: String, reason: String },
}

/// The certificate signatures must chain to (our Secure Boot `db` certificate).
#[derive(Clone, Debug)]
pub struct TrustedCert {
    cert: Certificate,
    der: Vec<u8>,
    key: RsaPublicKey,
    subject: String,
}

impl TrustedCert {
    /// Parses a PEM certificate (`-----BEGIN CERTIFICATE-----`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, TrustedCertError> {
        let cert = Certificate::from_pem(pem).map_err(TrustedCertError::Parse)?;
        Self::from_cert(cert)
    }

    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, TrustedCertError> {
        let cert = Certificate::from_der(der).map_err(TrustedCertError::Parse)?;
        Self::from_cert(cert)
    }

    fn from_cert(cert: Certificate) -> Result<Self, TrustedCertError> {
        let subject = cert.tbs_certificate.subject.to_string();
        let key = rsa_key(&cert).map_err(|reason| TrustedCertError::NotRsa {
            subject: subject.clone(),
            reason,
        })?;
        let der = cert.to_der().map_err(TrustedCertError::Parse)?;
        Ok(Self {
            cert,
            der,
            key,
            subject,
        })
    }

    /// The certificate's subject (RFC 4514).
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

fn rsa_key(cert: &Certificate) -> Result<RsaPublicKey, String> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|e| e.to_string())
}

/// A signature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The Authenticode SHA-256 of the image (what the firmware compares too).
    pub authenticode_sha256: [u8; 32],
    /// Subject of the certificate that signed.
    pub signer_subject: String,
    /// True if the signer is the trusted certificate itself (false: issued by it).
    pub signer_is_trusted_cert: bool,
}

/// Why an image did not verify. `index` is the position of the signature in the PE's
/// certificate table (0 for the usual single sbsign signature).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a PE32+ image: {reason}")]
    NotPe { reason: String },
    #[error("no signature: the PE has no Authenticode certificate table")]
    NoSignature,
    #[error("the PE certificate table is malformed: {reason}")]
    CertificateTable { reason: String },
    #[error("more than {SIGNATURES_COUNT_MAX} signatures in the certificate table")]
    TooManySignatures,
    #[error("signature {index} is malformed: {reason}")]
    Malformed { index: usize, reason: String },
    #[error("signature {index} uses {what} {oid}; only SHA-256 with RSA is accepted")]
    UnsupportedAlgorithm {
        index: usize,
        what: &'static str,
        oid: String,
    },
    #[error(
        "digest mismatch: the image hashes to {computed} but signature {index} covers {signed}"
    )]
    DigestMismatch {
        index: usize,
        computed: String,
        signed: String,
    },
    #[error(
        "signature {index}: the messageDigest attribute does not match the signed SpcIndirectDataContent"
    )]
    MessageDigestMismatch { index: usize },
    #[error("signature {index}: the signer certificate ({sid}) is not included")]
    SignerCertMissing { index: usize, sid: String },
    #[error(
        "signature {index}: signature invalid: RSA over the signed attributes does not verify with {subject}'s key"
    )]
    SignatureInvalid { index: usize, subject: String },
    #[error(
        "signature {index}: untrusted signer {subject}: neither the trusted certificate {trusted} nor issued by it"
    )]
    UntrustedSigner {
        index: usize,
        subject: String,
        trusted: String,
    },
}

/// Verifies `image` (a whole PE file) against `trusted`. With several signatures, the image is
/// accepted if any one verifies completely (as firmware does against `db`); otherwise the first
/// signature's error is returned.
pub fn verify_pe(image: &[u8], trusted: &TrustedCert) -> Result<Verified, VerifyError> {
    let pe = PeFile64::parse(image).map_err(|e| VerifyError::NotPe {
        reason: e.to_string(),
    })?;
    let table = AttributeCertificateIterator::new(&pe)
        .map_err(|e| VerifyError::CertificateTable {
            reason: e.to_string(),
        })?
        .ok_or(VerifyError::NoSignature)?;

    let mut hasher = Sha256::new();
    authenticode::authenticode_digest(&pe, &mut hasher).map_err(|e| VerifyError::NotPe {
        reason: e.to_string(),
    })?;
    let computed: [u8; 32] = hasher.finalize().into();

    let mut first_error = None;
    for (index, entry) in table.enumerate() {
        if index >= SIGNATURES_COUNT_MAX {
            return Err(first_error.unwrap_or(VerifyError::TooManySignatures));
        }
        let result = entry
            .map_err(|e| VerifyError::CertificateTable {
                reason: e.to_string(),
            })
            .and_then(|cert| verify_one(index, &cert, &computed, trusted));
        match result {
            Ok(v) => return Ok(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(VerifyError::NoSignature))
}

fn single_attr_value<'a>(
    attrs: &'a Attributes,
    oid: ObjectIdentifier,
    index: usize,
    name: &str,
) -> Result<&'a der::Any, VerifyError> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let attr = found.next().ok_or_else(|| VerifyError::Malformed {
        index,
        reason: format!("no {name} attribute"),
    })?;
    if found.next().is_some() || attr.values.len() != 1 {
        return Err(VerifyError::Malformed {
            index,
            reason: format!("{name} attribute must have exactly one value"),
        });
    }
    attr.values
        .iter()
        .next()
        .ok_or_else(|| VerifyError::Malformed {
            index,
            reason: format!("empty {name} attribute"),
        })
}

fn describe_sid(sid: &SignerIdentifier) -> String {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            format!(
                "issuer {}, serial {}",
                ias.issuer,
                hex(ias.serial_number.as_bytes())
            )
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            format!("subject key id {}", hex(ski.0.as_bytes()))
        }
    }
}

fn subject_key_id(cert: &Certificate) -> Option<SubjectKeyIdentifier> {
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == ID_CE_SUBJECT_KEY_IDENTIFIER)?;
    SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).ok()
}

fn find_signer<'a>(signed_data: &'a SignedData, sid: &SignerIdentifier) -> Option<&'a Certificate> {
    let certs = signed_data.certificates.as_ref()?;
    certs.0.iter().find_map(|choice| {
        let CertificateChoices::Certificate(cert) = choice else {
            return None;
        };
        let matches = match sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                cert.tbs_certificate.issuer == ias.issuer
                    && cert.tbs_certificate.serial_number == ias.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                subject_key_id(cert).as_ref() == Some(ski)
            }
        };
        matches.then_some(cert)
    })
}

fn verify_one(
    index: usize,
    entry: &AttributeCertificate<'_>,
    computed: &[u8; 32],
    trusted: &TrustedCert,
) -> Result<Verified, VerifyError> {
    let malformed = |reason: String| VerifyError::Malformed { index, reason };
    let sig: AuthenticodeSignature = entry
        .get_authenticode_signature()
        .map_err(|e| malformed(e.to_string()))?;

    let image_alg = &sig.digest_algorithm().oid;
    if *image_alg != ID_SHA_256 {
        return Err(VerifyError::UnsupportedAlgorithm {
            index,
            what: "image digest",
            oid: image_alg.to_string(),
        });
    }
    if sig.digest() != computed.as_slice() {
        return Err(VerifyError::DigestMismatch {
            index,
            computed: hex(computed),
            signed: hex(sig.digest()),
        });
    }

    let signer = sig.signer_info();
    if signer.digest_alg.oid != ID_SHA_256 {
        return Err(VerifyError::UnsupportedAlgorithm {
            index,
            what: "signer digest",
            oid: signer.digest_alg.oid.to_string(),
        });
    }
    let sig_alg = signer.signature_algorithm.oid;
    if sig_alg != RSA_ENCRYPTION && sig_alg != SHA_256_WITH_RSA_ENCRYPTION {
        return Err(VerifyError::UnsupportedAlgorithm {
            index,
            what: "signature",
            oid: sig_alg.to_string(),
        });
    }

    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| malformed("no signed attributes".into()))?;
    let content_type = single_attr_value(attrs, ID_CONTENT_TYPE, index, "contentType")?
        .decode_as::<ObjectIdentifier>()
        .map_err(|e| malformed(format!("contentType attribute: {e}")))?;
    if content_type != authenticode::SPC_INDIRECT_DATA_OBJID {
        return Err(malformed(format!(
            "contentType attribute is {content_type}, not SpcIndirectDataContent"
        )));
    }
    let message_digest = single_attr_value(attrs, ID_MESSAGE_DIGEST, index, "messageDigest")?
        .decode_as::<OctetString>()
        .map_err(|e| malformed(format!("messageDigest attribute: {e}")))?;
    let content = sig
        .encapsulated_content()
        .ok_or_else(|| malformed("no encapsulated content".into()))?;
    if Sha256::digest(content).as_slice() != message_digest.as_bytes() {
        return Err(VerifyError::MessageDigestMismatch { index });
    }

    // The authenticode crate keeps SignedData private (and panics on odd certificate sets), so
    // decode it again for the certificates. Trailing padding after the DER is allowed.
    let mut reader = SliceReader::new(entry.data).map_err(|e| malformed(e.to_string()))?;
    let signed_data = ContentInfo::decode(&mut reader)
        .and_then(|ci| ci.content.decode_as::<SignedData>())
        .map_err(|e| malformed(format!("SignedData: {e}")))?;
    let cert =
        find_signer(&signed_data, &signer.sid).ok_or_else(|| VerifyError::SignerCertMissing {
            index,
            sid: describe_sid(&signer.sid),
        })?;
    let subject = cert.tbs_certificate.subject.to_string();

    let key = rsa_key(cert).map_err(|reason| VerifyError::UnsupportedAlgorithm {
        index,
        what: "signer key",
        oid: format!("(not RSA: {reason})"),
    })?;
    let attrs_der = attrs
        .to_der()
        .map_err(|e| malformed(format!("re-encoding signed attributes: {e}")))?;
    key.verify(
        Pkcs1v15Sign::new::<Sha256>(),
        &Sha256::digest(&attrs_der),
        signer.signature.as_bytes(),
    )
    .map_err(|_| VerifyError::SignatureInvalid {
        index,
        subject: subject.clone(),
    })?;

    let cert_der = cert
        .to_der()
        .map_err(|e| malformed(format!("re-encoding signer certificate: {e}")))?;
    if cert_der == trusted.der {
        return Ok(Verified {
            authenticode_sha256: *computed,
            signer_subject: subject,
            signer_is_trusted_cert: true,
        });
    }
    if issued_by(cert, trusted) {
        return Ok(Verified {
            authenticode_sha256: *computed,
            signer_subject: subject,
            signer_is_trusted_cert: false,
        });
    }
    Err(VerifyError::UntrustedSigner {
        index,
        subject,
        trusted: trusted.subject.clone(),
    })
}

/// True if `cert` names `trusted` as issuer and carries a valid SHA-256/RSA signature by it.
fn issued_by(cert: &Certificate, trusted: &TrustedCert) -> bool {
    if cert.tbs_certificate.issuer != trusted.cert.tbs_certificate.subject
        || cert.signature_algorithm.oid != SHA_256_WITH_RSA_ENCRYPTION
    {
        return false;
    }
    let (Ok(tbs), Some(signature)) = (cert.tbs_certificate.to_der(), cert.signature.as_bytes())
    else {
        return false;
    };
    trusted
        .key
        .verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(&tbs),
            signature,
        )
        .is_ok()
}

/// Reads the PE at `path` (bounded) and verifies it; for callers that do not install the bytes.
pub fn verify_file(
    path: &std::path::Path,
    trusted: &TrustedCert,
) -> Result<Verified, VerifyFileError> {
    let image = crate::fsutil::read_bounded(path, crate::limits::UKI_SIZE_BYTES_MAX).map_err(
        |e| match e {
            crate::fsutil::ReadBoundedError::Io(source) => VerifyFileError::Read {
                path: path.display().to_string(),
                source,
            },
            crate::fsutil::ReadBoundedError::TooLarge => VerifyFileError::TooLarge {
                path: path.display().to_string(),
            },
        },
    )?;
    Ok(verify_pe(&image, trusted)?)
}

/// Why [`verify_file`] failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {} bytes", crate::limits::UKI_SIZE_BYTES_MAX)]
    TooLarge { path: String },
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

#[cfg(test)]
mod tests;
