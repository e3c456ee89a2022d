//! TLS 1.3 for BPCI: hybrid post-quantum key exchange and pinned Ed25519
//! node identities, for rustls 0.23 on the aws-lc-rs provider.
//!
//! - Protocol: TLS 1.3 only (QUIC requires it anyway); cipher suites are the
//!   three TLS 1.3 AEADs, AES-128-GCM first because QUIC's initial packets
//!   use it.
//! - Key exchange: X25519MLKEM768 only by default, so a recorded session
//!   stays confidential against a future quantum adversary; plain X25519 is
//!   added only when [`KeyExchange::HybridOrX25519`] is asked for.
//! - Identity: each node presents a self-signed X.509 certificate carrying
//!   its Ed25519 node key, signed by that same key (rcgen builds it without a
//!   crypto backend, and the secret never leaves `metanode_core::keys`).
//!   Certificates are not trusted for their issuer, names or dates: a peer is
//!   accepted only if the Ed25519 key in its certificate is pinned (the
//!   genesis validators plus configured observers) — and, when we dial, only
//!   if it is the key of the peer we meant to reach. The handshake signature
//!   (CertificateVerify) is checked with the provider's Ed25519 verifier, so
//!   presenting a pinned key's certificate without its secret fails.
//! - Both sides require the other's certificate (mutual authentication).
//! - No session resumption or 0-RTT: every connection runs the full
//!   handshake, so every connection proves both keys afresh.

use std::sync::Arc;

use metanode_core::keys::{PublicKey, SigningKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, aws_lc_rs};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, PeerIncompatible,
    SignatureAlgorithm, SignatureScheme,
};

/// ALPN protocol id of BPCI over QUIC; a connection that does not speak it is
/// refused during the handshake.
pub const ALPN: &[u8] = b"bpci/1";

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key bytes (RFC 8410):
/// SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Which key-exchange groups a node offers and accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyExchange {
    /// X25519MLKEM768 only: a peer without post-quantum support cannot connect.
    #[default]
    HybridOnly,
    /// X25519MLKEM768 preferred, plain X25519 accepted — for a rollout where
    /// some peers cannot do the hybrid yet. Must be asked for explicitly.
    HybridOrX25519,
}

impl KeyExchange {
    pub(crate) fn groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        match self {
            KeyExchange::HybridOnly => vec![aws_lc_rs::kx_group::X25519MLKEM768],
            KeyExchange::HybridOrX25519 => vec![
                aws_lc_rs::kx_group::X25519MLKEM768,
                aws_lc_rs::kx_group::X25519,
            ],
        }
    }
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("building the node certificate failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("building the tls configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the tls configuration is unusable for quic: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The aws-lc-rs provider cut down to TLS 1.3 AEADs and `groups`.
pub(crate) fn provider(groups: Vec<&'static dyn SupportedKxGroup>) -> Arc<CryptoProvider> {
    let base = aws_lc_rs::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: groups,
        ..base
    })
}

/// The SubjectPublicKeyInfo DER of an Ed25519 key.
pub(crate) fn ed25519_spki(key: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(ED25519_SPKI_PREFIX.len() + PublicKey::LEN);
    out.extend_from_slice(&ED25519_SPKI_PREFIX);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The Ed25519 node key inside a peer's certificate. Anything else (another
/// key type, a malformed certificate, a small-order point) is an error.
pub(crate) fn node_key_of(cert: &CertificateDer<'_>) -> Result<PublicKey, rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    let spki = parsed.subject_public_key_info();
    let key_bytes = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|rest| <[u8; 32]>::try_from(rest).ok())
        .ok_or(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))?;
    PublicKey::from_bytes(&key_bytes)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// The node key a peer proved in the handshake of a quinn connection.
pub(crate) fn peer_key_of(conn: &quinn::Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_key_of(certs.first()?).ok()
}

/// Our Ed25519 key as rustls and rcgen signing keys.
#[derive(Debug, Clone)]
struct NodeKey {
    key: Arc<SigningKey>,
    public: [u8; 32],
    spki: Vec<u8>,
}

impl NodeKey {
    fn new(key: Arc<SigningKey>) -> Self {
        let public = key.public_key();
        NodeKey {
            spki: ed25519_spki(&public),
            public: public.to_bytes(),
            key,
        }
    }
}

impl rustls::sign::SigningKey for NodeKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(self.clone()) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl rustls::sign::Signer for NodeKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.key.sign(message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

impl rcgen::PublicKeyData for NodeKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for NodeKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// Our certificate and key, ready for rustls.
pub(crate) fn certified_key(key: Arc<SigningKey>) -> Result<Arc<CertifiedKey>, TlsConfigError> {
    let node = NodeKey::new(key);
    let public = node.key.public_key();
    let mut params = rcgen::CertificateParams::new(vec!["bpci.invalid".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("metanode node {public}"));
    // Without a crypto backend rcgen cannot draw a random serial; one
    // derived from the key is unique per node, which is all X.509 asks of a
    // self-signed certificate.
    let digest = metanode_core::hash::blake3_256(public.as_bytes());
    let mut serial = [0u8; 8];
    serial.copy_from_slice(&digest.as_bytes()[..8]);
    params.serial_number = Some(rcgen::SerialNumber::from(
        u64::from_le_bytes(serial) & (u64::MAX >> 1),
    ));
    let cert = params.self_signed(&node)?;
    let certified = CertifiedKey::new(vec![cert.der().clone()], Arc::new(node));
    // Catches a certificate whose key is not ours before a peer does.
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

/// Checks a peer certificate against the pinned keys and the handshake
/// signature against the certificate.
#[derive(Debug)]
struct PinnedVerifier {
    /// Keys accepted from this side's peers. For a dialing client this is
    /// the one peer it meant to reach.
    pinned: Vec<PublicKey>,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    fn check_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        // Our peers present exactly one self-signed certificate.
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        let key = node_key_of(end_entity)?;
        if self.pinned.contains(&key) {
            Ok(())
        } else {
            tracing::debug!(peer = %key, "refusing tls peer: node key is not pinned");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerIncompatible(
                PeerIncompatible::NoSignatureSchemesInCommon,
            ));
        }
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_cert(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_cert(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOfferedOrEnabled,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// rustls server config: accepts clients whose key is in `pinned`.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    pinned: Vec<PublicKey>,
) -> Result<rustls::ServerConfig, TlsConfigError> {
    let verifier = Arc::new(PinnedVerifier {
        pinned,
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(config)
}

/// rustls client config for dialing the peer whose key is `expected`.
pub(crate) fn client_config(
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    expected: PublicKey,
) -> Result<rustls::ClientConfig, TlsConfigError> {
    let verifier = Arc::new(PinnedVerifier {
        pinned: vec![expected],
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_early_data = false;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, NamedGroup, ServerConnection};

    fn key(seed: u8) -> Arc<SigningKey> {
        Arc::new(SigningKey::from_seed(&[seed; 32]))
    }

    /// Runs a TLS handshake in memory; returns both ends or the first error.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let name = ServerName::try_from("bpci.invalid")
            .map_err(|_| rustls::Error::General("name".into()))?;
        let mut c = ClientConnection::new(Arc::new(client), name)?;
        let mut s = ServerConnection::new(Arc::new(server))?;
        for _ in 0..16 {
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok((c, s));
            }
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            }
            // A failing side still wants to send its alert; deliver it so
            // the other side fails too, then report the first error.
            let server_result = s.process_new_packets().map(|_| ());
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            }
            server_result?;
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            }
            c.process_new_packets()?;
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    struct Node {
        key: Arc<SigningKey>,
        certified: Arc<CertifiedKey>,
    }

    fn node(seed: u8) -> Node {
        let key = key(seed);
        Node {
            certified: certified_key(key.clone()).unwrap(),
            key,
        }
    }

    fn configs(
        client: &Node,
        server: &Node,
        client_groups: KeyExchange,
        server_groups: KeyExchange,
    ) -> (rustls::ClientConfig, rustls::ServerConfig) {
        (
            client_config(
                provider(client_groups.groups()),
                client.certified.clone(),
                server.key.public_key(),
            )
            .unwrap(),
            server_config(
                provider(server_groups.groups()),
                server.certified.clone(),
                vec![client.key.public_key()],
            )
            .unwrap(),
        )
    }

    #[test]
    fn handshake_negotiates_x25519mlkem768_and_authenticates_both_keys() {
        let (a, b) = (node(1), node(2));
        let (cc, sc) = configs(&a, &b, KeyExchange::HybridOnly, KeyExchange::HybridOnly);
        let (c, s) = handshake(cc, sc).unwrap();
        for group in [
            c.negotiated_key_exchange_group(),
            s.negotiated_key_exchange_group(),
        ] {
            assert_eq!(group.map(|g| g.name()), Some(NamedGroup::X25519MLKEM768));
        }
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(c.alpn_protocol(), Some(ALPN));
        let server_cert = &c.peer_certificates().unwrap()[0];
        let client_cert = &s.peer_certificates().unwrap()[0];
        assert_eq!(node_key_of(server_cert).unwrap(), b.key.public_key());
        assert_eq!(node_key_of(client_cert).unwrap(), a.key.public_key());
    }

    #[test]
    fn hybrid_is_preferred_when_x25519_is_also_allowed() {
        let (a, b) = (node(1), node(2));
        let (cc, sc) = configs(
            &a,
            &b,
            KeyExchange::HybridOrX25519,
            KeyExchange::HybridOrX25519,
        );
        let (c, _) = handshake(cc, sc).unwrap();
        assert_eq!(
            c.negotiated_key_exchange_group().map(|g| g.name()),
            Some(NamedGroup::X25519MLKEM768)
        );
    }

    #[test]
    fn classical_only_client_cannot_reach_hybrid_only_server() {
        let (a, b) = (node(1), node(2));
        let (_, sc) = configs(&a, &b, KeyExchange::HybridOnly, KeyExchange::HybridOnly);
        let cc = client_config(
            provider(vec![aws_lc_rs::kx_group::X25519]),
            a.certified.clone(),
            b.key.public_key(),
        )
        .unwrap();
        let err = handshake(cc, sc).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn server_refuses_unpinned_client() {
        let (a, b, stranger) = (node(1), node(2), node(3));
        // The stranger trusts b, but b pins only a.
        let (_, sc) = configs(&a, &b, KeyExchange::HybridOnly, KeyExchange::HybridOnly);
        let (cc, _) = configs(
            &stranger,
            &b,
            KeyExchange::HybridOnly,
            KeyExchange::HybridOnly,
        );
        let err = handshake(cc, sc).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        );
    }

    #[test]
    fn client_refuses_server_with_another_key() {
        let (a, b, c) = (node(1), node(2), node(3));
        // a dials expecting b, but c answers (c pins a, so only a's check
        // can stop it).
        let cc = client_config(
            provider(KeyExchange::HybridOnly.groups()),
            a.certified.clone(),
            b.key.public_key(),
        )
        .unwrap();
        let sc = server_config(
            provider(KeyExchange::HybridOnly.groups()),
            c.certified.clone(),
            vec![a.key.public_key()],
        )
        .unwrap();
        let err = handshake(cc, sc).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        );
    }

    #[test]
    fn pinned_certificate_without_its_secret_fails_the_signature_check() {
        let (a, b, thief) = (node(1), node(2), node(3));
        // The thief presents b's certificate but signs with its own key.
        let stolen = Arc::new(CertifiedKey::new(
            b.certified.cert.clone(),
            Arc::new(NodeKey::new(thief.key.clone())),
        ));
        let cc = client_config(
            provider(KeyExchange::HybridOnly.groups()),
            a.certified.clone(),
            b.key.public_key(),
        )
        .unwrap();
        let sc = server_config(
            provider(KeyExchange::HybridOnly.groups()),
            stolen,
            vec![a.key.public_key()],
        )
        .unwrap();
        let err = handshake(cc, sc).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::BadSignature)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn certificate_carries_the_node_key() {
        let a = node(7);
        let cert = &a.certified.cert[0];
        assert_eq!(node_key_of(cert).unwrap(), a.key.public_key());
        let spki = ed25519_spki(&a.key.public_key());
        assert_eq!(spki.len(), 44);
        // The DER SPKI appears verbatim in the certificate.
        assert!(cert.as_ref().windows(44).any(|w| w == spki.as_slice()));
    }
}
