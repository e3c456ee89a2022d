//! Light client: follows the header chain from genesis by checking commit
//! certificates, without executing anything.
//!
//! Trust starts at the genesis document (chain id, first validator set). For
//! every next header the client checks the chain id, that the height is the
//! next one, that `prev_hash` is the header it verified last, that the
//! timestamp moves forward, that the proposer is the one of the header's
//! round, that `validator_set_hash` names the set it trusts for this height,
//! and that a quorum of that set sealed the header
//! ([`CommitCertificate::verify`]). The header's `next_validator_set_hash`
//! then tells it which set to trust next; when it changes, the caller must
//! supply that set (from the block's receipts or a peer) and its hash must
//! match. A failed check leaves the client as it was.
//!
//! With a verified header, [`verify_block_body`] checks a block body
//! against it (transaction root and PoH root recomputed), and
//! [`verify_receipt`] checks a single receipt against `receipts_root` with a
//! Merkle inclusion proof. Such a proof shows the receipt is one of the
//! block's receipts; its `leaf_index` is only meaningful to a caller who
//! knows the block's transaction count (the header does not carry it).

use metanode_core::encoding::{Encode, EncodeError};
use metanode_core::hash::Hash32;
use metanode_core::merkle::{self, InclusionProof, MerkleTree, ProofError};

use crate::app::KeyId;
use crate::poh::poh_root;
use crate::types::{
    CertificateError, ChainId, CommitCertificate, Genesis, Header, Height, Receipt, Round,
    SignedTx, ValidatorSet, tx_root,
};

/// Why a header, block body or receipt did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    #[error("header at height {height} is for chain {got}, not the trusted chain {expected}")]
    ChainId {
        height: Height,
        got: ChainId,
        expected: ChainId,
    },
    #[error("header at height {got} is not the next height {expected}")]
    Height { got: Height, expected: Height },
    #[error(
        "header at height {height} has prev_hash {got}, but the last verified header is {expected}"
    )]
    PrevHash {
        height: Height,
        got: Hash32,
        expected: Hash32,
    },
    #[error(
        "header at height {height} has timestamp {got_ms} ms, not after its parent's {parent_ms} ms"
    )]
    Timestamp {
        height: Height,
        got_ms: u64,
        parent_ms: u64,
    },
    #[error(
        "header at height {height} names validator set {got}, but the trusted set for this height is {expected}"
    )]
    ValidatorSetHash {
        height: Height,
        got: Hash32,
        expected: Hash32,
    },
    #[error(
        "header at height {height} round {round} was proposed by {got}, not by that round's proposer {expected}"
    )]
    Proposer {
        height: Height,
        round: Round,
        got: KeyId,
        expected: KeyId,
    },
    #[error("commit certificate of the header at height {height} does not verify: {source}")]
    Certificate {
        height: Height,
        #[source]
        source: Box<CertificateError>,
    },
    #[error(
        "header at height {height} hands over to validator set {expected}, which was not supplied"
    )]
    NextValidatorsMissing { height: Height, expected: Hash32 },
    #[error(
        "supplied next validator set {got} does not match the header at height {height}, which names {expected}"
    )]
    NextValidatorsMismatch {
        height: Height,
        got: Hash32,
        expected: Hash32,
    },
    #[error(
        "block body at height {height} has transaction root {computed}, the header says {expected}"
    )]
    TxRoot {
        height: Height,
        computed: Hash32,
        expected: Hash32,
    },
    #[error("block body at height {height} has PoH root {computed}, the header says {expected}")]
    PohRoot {
        height: Height,
        computed: Hash32,
        expected: Hash32,
    },
    #[error("receipt of transaction {tx} does not encode: {source}")]
    ReceiptEncoding {
        tx: Hash32,
        #[source]
        source: EncodeError,
    },
    #[error(
        "receipt of transaction {tx} is not proven under the receipts root of the header at height {height}: {source}"
    )]
    ReceiptProof {
        height: Height,
        tx: Hash32,
        #[source]
        source: ProofError,
    },
    #[error("receipt index {index} is outside a block of {count} receipts")]
    ReceiptIndex { index: u64, count: usize },
}

/// The verified tip of the header chain and the set trusted to extend it.
#[derive(Clone, Debug)]
pub struct LightClient {
    chain_id: ChainId,
    height: Height,
    last_hash: Hash32,
    last_timestamp_ms: u64,
    /// Deciding `height + 1`.
    validators: ValidatorSet,
    /// Cached `validators.hash()`: compared once per header.
    validators_hash: Hash32,
}

impl LightClient {
    /// Trusts `genesis`: height 0, last hash = genesis hash, its validators.
    pub fn from_genesis(genesis: &Genesis) -> Self {
        let hash = genesis.hash();
        LightClient {
            chain_id: ChainId(hash),
            height: 0,
            last_hash: hash,
            last_timestamp_ms: genesis.genesis_time_ms,
            validators: genesis.validators.clone(),
            validators_hash: genesis.validators.hash(),
        }
    }

    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// Height of the last verified header (0 = genesis).
    pub fn height(&self) -> Height {
        self.height
    }

    /// Hash of the last verified header (the genesis hash at height 0).
    pub fn last_hash(&self) -> Hash32 {
        self.last_hash
    }

    /// The set trusted to decide `height() + 1`.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Verifies the next header (see the module docs) and, if it passes,
    /// moves the client to it. `next_validators` must be the set named by
    /// `header.next_validator_set_hash` when it differs from the current
    /// set; `None` is allowed when it does not.
    pub fn verify_header(
        &mut self,
        header: &Header,
        certificate: &CommitCertificate,
        next_validators: Option<&ValidatorSet>,
    ) -> Result<(), LightError> {
        let height = header.height;
        if header.chain_id != self.chain_id {
            return Err(LightError::ChainId {
                height,
                got: header.chain_id,
                expected: self.chain_id,
            });
        }
        let expected_height = self.height.saturating_add(1);
        if height != expected_height {
            return Err(LightError::Height {
                got: height,
                expected: expected_height,
            });
        }
        if header.prev_hash != self.last_hash {
            return Err(LightError::PrevHash {
                height,
                got: header.prev_hash,
                expected: self.last_hash,
            });
        }
        if header.timestamp_ms <= self.last_timestamp_ms {
            return Err(LightError::Timestamp {
                height,
                got_ms: header.timestamp_ms,
                parent_ms: self.last_timestamp_ms,
            });
        }
        if header.validator_set_hash != self.validators_hash {
            return Err(LightError::ValidatorSetHash {
                height,
                got: header.validator_set_hash,
                expected: self.validators_hash,
            });
        }
        let proposer = self.validators.proposer(height, header.round);
        if header.proposer != *proposer {
            return Err(LightError::Proposer {
                height,
                round: header.round,
                got: header.proposer.into(),
                expected: proposer.into(),
            });
        }
        certificate
            .verify(&self.chain_id, header, &self.validators)
            .map_err(|source| LightError::Certificate {
                height,
                source: Box::new(source),
            })?;

        let next_hash = header.next_validator_set_hash;
        let next = match next_validators {
            Some(set) => {
                let got = set.hash();
                if got != next_hash {
                    return Err(LightError::NextValidatorsMismatch {
                        height,
                        got,
                        expected: next_hash,
                    });
                }
                Some(set)
            }
            None if next_hash == self.validators_hash => None,
            None => {
                return Err(LightError::NextValidatorsMissing {
                    height,
                    expected: next_hash,
                });
            }
        };

        // All checks passed: only now does the client move.
        self.height = height;
        // The certificate verified against this header's hash.
        self.last_hash = certificate.block_hash;
        self.last_timestamp_ms = header.timestamp_ms;
        if let Some(set) = next {
            self.validators = set.clone();
            self.validators_hash = next_hash;
        }
        Ok(())
    }
}

/// Checks a block body against its (verified) header: the transaction root
/// and the PoH root, recomputed from `txs` in order.
pub fn verify_block_body(header: &Header, txs: &[SignedTx]) -> Result<(), LightError> {
    let computed = tx_root(txs);
    if computed != header.tx_root {
        return Err(LightError::TxRoot {
            height: header.height,
            computed,
            expected: header.tx_root,
        });
    }
    let computed = poh_root(header.prev_hash, txs);
    if computed != header.poh_root {
        return Err(LightError::PohRoot {
            height: header.height,
            computed,
            expected: header.poh_root,
        });
    }
    Ok(())
}

/// Checks that `receipt` is a leaf under `header.receipts_root`.
pub fn verify_receipt(
    header: &Header,
    receipt: &Receipt,
    proof: &InclusionProof,
) -> Result<(), LightError> {
    let bytes = receipt_bytes(receipt)?;
    proof
        .verify(&bytes, &header.receipts_root)
        .map_err(|source| LightError::ReceiptProof {
            height: header.height,
            tx: receipt.tx_hash,
            source,
        })
}

/// Inclusion proof of receipt `index` among a block's `receipts` (for
/// servers answering light clients).
pub fn receipt_proof(receipts: &[Receipt], index: u64) -> Result<InclusionProof, LightError> {
    let out_of_range = || LightError::ReceiptIndex {
        index,
        count: receipts.len(),
    };
    if usize::try_from(index).map_or(true, |i| i >= receipts.len()) {
        return Err(out_of_range());
    }
    let leaves = receipts
        .iter()
        .map(|r| receipt_bytes(r).map(|b| merkle::leaf_hash(&b)))
        .collect::<Result<Vec<Hash32>, LightError>>()?;
    MerkleTree::from_leaf_hashes(leaves)
        .prove(index)
        .map_err(|_| out_of_range())
}

fn receipt_bytes(receipt: &Receipt) -> Result<Vec<u8>, LightError> {
    receipt
        .to_canonical_bytes()
        .map_err(|source| LightError::ReceiptEncoding {
            tx: receipt.tx_hash,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{
        Application, BlockContext, LedgerApp, STATUS_OK, VALIDATOR_SET_PAYLOAD_PREFIX,
    };
    use crate::types::{
        ChainMode, GenesisAccount, TxBody, TxKind, ValidatorIndex, commit_seal_digest,
        receipts_root,
    };
    use metanode_core::keys::SigningKey;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_seed(&[i; 32])
    }

    struct Block {
        header: Header,
        certificate: CommitCertificate,
        txs: Vec<SignedTx>,
        receipts: Vec<Receipt>,
        next_validators: ValidatorSet,
    }

    struct Chain {
        genesis: Genesis,
        blocks: Vec<Block>,
    }

    /// Seals `header` with `signers`, members of `set`.
    fn certify(
        chain_id: &ChainId,
        header: &Header,
        set: &ValidatorSet,
        signers: &[&SigningKey],
    ) -> CommitCertificate {
        let hash = header.hash();
        let digest = commit_seal_digest(chain_id, header.height, header.round, &hash);
        let seals: Vec<(ValidatorIndex, _)> = signers
            .iter()
            .map(|k| {
                let index = set.index_of(&k.public_key()).unwrap();
                (index, k.sign(digest.as_bytes()))
            })
            .collect();
        CommitCertificate::from_seals(header.height, header.round, hash, set.len(), &seals)
    }

    /// Three blocks by validators 1..=4; block 2 hands over to {2, 3, 4, 5}
    /// (admin key 10's payload), which certifies block 3.
    fn chain() -> Chain {
        let set1 = ValidatorSet::new((1..=4).map(|i| key(i).public_key()).collect()).unwrap();
        let set2 = ValidatorSet::new((2..=5).map(|i| key(i).public_key()).collect()).unwrap();
        let genesis = Genesis {
            chain_name: "light-test".into(),
            genesis_time_ms: 1_000,
            validators: set1.clone(),
            accounts: vec![GenesisAccount {
                key: key(10).public_key(),
                balance: 1_000,
            }],
        };
        let chain_id = genesis.chain_id();
        let mut app = LedgerApp::from_genesis(&genesis).with_validator_admin(key(10).public_key());
        let tx = |nonce: u64, kind: TxKind| {
            TxBody {
                chain_id,
                sender: key(10).public_key(),
                nonce,
                fee: 1,
                kind,
            }
            .sign(&key(10))
            .unwrap()
        };
        let transfer = |nonce: u64, amount: u64| {
            tx(
                nonce,
                TxKind::Transfer {
                    to: key(11).public_key(),
                    amount,
                },
            )
        };
        let mut change = VALIDATOR_SET_PAYLOAD_PREFIX.to_vec();
        change.extend(set2.to_canonical_bytes().unwrap());
        let bodies = vec![
            vec![transfer(0, 10), transfer(1, 20), transfer(2, 30)],
            vec![tx(3, TxKind::Payload { data: change })],
            vec![transfer(4, 40), transfer(5, 2_000)],
        ];
        let mut prev_hash = genesis.hash();
        let mut validators = set1.clone();
        let mut blocks = Vec::new();
        for (i, txs) in bodies.into_iter().enumerate() {
            let height = i as u64 + 1;
            let proposer = *validators.proposer(height, 0);
            let ctx = BlockContext {
                chain_id,
                height,
                timestamp_ms: 1_000 + 10 * height,
                proposer,
                validators: validators.clone(),
            };
            let execution = app.commit(&ctx, &txs);
            let header = Header {
                chain_id,
                height,
                round: 0,
                prev_hash,
                timestamp_ms: ctx.timestamp_ms,
                proposer,
                tx_root: tx_root(&txs),
                poh_root: poh_root(prev_hash, &txs),
                receipts_root: receipts_root(&execution.receipts),
                state_root: execution.state_root,
                da_root: merkle::empty_root(),
                xcmp_root: merkle::empty_root(),
                validator_set_hash: validators.hash(),
                next_validator_set_hash: execution.next_validators.hash(),
                mode: ChainMode::Normal,
            };
            let signer_keys: Vec<SigningKey> = validators
                .validators()
                .iter()
                .rev()
                .take(3)
                .map(|pk| (1..=5).map(key).find(|k| k.public_key() == *pk).unwrap())
                .collect();
            let signers: Vec<&SigningKey> = signer_keys.iter().collect();
            let certificate = certify(&chain_id, &header, &validators, &signers);
            prev_hash = header.hash();
            validators = execution.next_validators.clone();
            blocks.push(Block {
                header,
                certificate,
                txs,
                receipts: execution.receipts,
                next_validators: execution.next_validators,
            });
        }
        assert_eq!(blocks[1].next_validators, set2);
        Chain { genesis, blocks }
    }

    /// The certificate failure of a header check at `height`.
    fn certificate_error(result: Result<(), LightError>, height: Height) -> CertificateError {
        match result {
            Err(LightError::Certificate { height: h, source }) if h == height => *source,
            other => panic!("expected a certificate error at height {height}, got {other:?}"),
        }
    }

    fn follow(client: &mut LightClient, chain: &Chain, upto: usize) {
        for b in &chain.blocks[..upto] {
            client
                .verify_header(&b.header, &b.certificate, Some(&b.next_validators))
                .unwrap();
        }
    }

    #[test]
    fn follows_the_chain_and_the_validator_change() {
        let chain = chain();
        let mut client = LightClient::from_genesis(&chain.genesis);
        assert_eq!(client.height(), 0);
        assert_eq!(client.last_hash(), chain.genesis.hash());
        let b = &chain.blocks;
        // Block 1 keeps the set: no set needed.
        client
            .verify_header(&b[0].header, &b[0].certificate, None)
            .unwrap();
        assert_eq!(client.height(), 1);
        assert_eq!(client.last_hash(), b[0].header.hash());
        // Block 2 hands over: the set is required and must match.
        assert_eq!(
            client.verify_header(&b[1].header, &b[1].certificate, None),
            Err(LightError::NextValidatorsMissing {
                height: 2,
                expected: b[1].next_validators.hash()
            })
        );
        let wrong = chain.genesis.validators.clone();
        assert!(matches!(
            client.verify_header(&b[1].header, &b[1].certificate, Some(&wrong)),
            Err(LightError::NextValidatorsMismatch { height: 2, .. })
        ));
        assert_eq!(client.height(), 1, "failed checks leave the client alone");
        client
            .verify_header(&b[1].header, &b[1].certificate, Some(&b[1].next_validators))
            .unwrap();
        assert_eq!(client.validators(), &b[1].next_validators);
        // Block 3 is certified by the new set (validator 5 among the signers).
        assert!(b[2].certificate.signers().any(|i| i == 3));
        client
            .verify_header(&b[2].header, &b[2].certificate, None)
            .unwrap();
        assert_eq!(client.height(), 3);
        assert_eq!(client.last_hash(), b[2].header.hash());

        // After the handover the old set can no longer certify: block 3
        // sealed by validators 1..=3 fails against the new set.
        let mut replay = LightClient::from_genesis(&chain.genesis);
        follow(&mut replay, &chain, 2);
        let keys: Vec<SigningKey> = (1..=3).map(key).collect();
        let refs: Vec<&SigningKey> = keys.iter().collect();
        let old_cert = certify(
            &chain.genesis.chain_id(),
            &b[2].header,
            &chain.genesis.validators,
            &refs,
        );
        assert!(matches!(
            certificate_error(replay.verify_header(&b[2].header, &old_cert, None), 3),
            CertificateError::BadSignature { .. }
        ));
        assert_eq!(replay.height(), 2);
    }

    #[test]
    fn rejects_tampered_headers_and_certificates() {
        let chain = chain();
        let b0 = &chain.blocks[0];
        let set = &chain.genesis.validators;
        let chain_id = chain.genesis.chain_id();
        let keys: Vec<SigningKey> = (1..=4).map(key).collect();
        let three: Vec<&SigningKey> = keys.iter().take(3).collect();
        let fresh = LightClient::from_genesis(&chain.genesis);
        let check = |header: &Header, cert: &CommitCertificate| {
            let mut client = fresh.clone();
            let result = client.verify_header(header, cert, None);
            if result.is_err() {
                assert_eq!(client.height(), 0);
                assert_eq!(client.last_hash(), chain.genesis.hash());
            }
            result
        };

        // Header changed after sealing.
        let mut tampered = b0.header.clone();
        tampered.state_root = Hash32([0xee; 32]);
        assert!(matches!(
            certificate_error(check(&tampered, &b0.certificate), 1),
            CertificateError::WrongBlock { .. }
        ));
        // A forged seal.
        let mut cert = b0.certificate.clone();
        cert.signatures[1] = keys[1].sign(b"something else");
        let second_signer = cert.signers().nth(1).unwrap();
        assert!(matches!(
            certificate_error(check(&b0.header, &cert), 1),
            CertificateError::BadSignature { index, .. } if index == second_signer
        ));
        // Two of four is no quorum.
        let two = certify(&chain_id, &b0.header, set, &three[..2]);
        let err = check(&b0.header, &two).unwrap_err();
        assert_eq!(
            err,
            LightError::Certificate {
                height: 1,
                source: Box::new(CertificateError::BelowQuorum {
                    signers: 2,
                    quorum: 3
                })
            }
        );
        assert_eq!(
            err.to_string(),
            "commit certificate of the header at height 1 does not verify: 2 signers is below the quorum of 3"
        );
        // Validly sealed by the right validators, but on the wrong parent.
        let mut orphan = b0.header.clone();
        orphan.prev_hash = Hash32([1; 32]);
        let cert = certify(&chain_id, &orphan, set, &three);
        assert_eq!(
            check(&orphan, &cert),
            Err(LightError::PrevHash {
                height: 1,
                got: Hash32([1; 32]),
                expected: chain.genesis.hash()
            })
        );
        // Another chain's header, sealed for that chain.
        let mut foreign = b0.header.clone();
        foreign.chain_id = ChainId(Hash32([2; 32]));
        let cert = certify(&foreign.chain_id, &foreign, set, &three);
        assert!(matches!(
            check(&foreign, &cert),
            Err(LightError::ChainId { height: 1, .. })
        ));
        // Seals made for another chain do not count for ours.
        let cross = certify(&ChainId(Hash32([2; 32])), &b0.header, set, &three);
        assert!(matches!(
            certificate_error(check(&b0.header, &cross), 1),
            CertificateError::BadSignature { .. }
        ));
        // Skipping a height.
        let b1 = &chain.blocks[1];
        assert_eq!(
            check(&b1.header, &b1.certificate),
            Err(LightError::Height {
                got: 2,
                expected: 1
            })
        );
        // Claiming another validator set for this height.
        let mut other_set = b0.header.clone();
        other_set.validator_set_hash = b1.next_validators.hash();
        let cert = certify(&chain_id, &other_set, set, &three);
        assert!(matches!(
            check(&other_set, &cert),
            Err(LightError::ValidatorSetHash { height: 1, .. })
        ));
        // A proposer out of turn.
        let mut usurper = b0.header.clone();
        usurper.proposer = keys[3].public_key();
        assert_ne!(usurper.proposer, b0.header.proposer);
        let cert = certify(&chain_id, &usurper, set, &three);
        assert!(matches!(
            check(&usurper, &cert),
            Err(LightError::Proposer { height: 1, .. })
        ));
        // Time going backwards.
        let mut early = b0.header.clone();
        early.timestamp_ms = chain.genesis.genesis_time_ms;
        let cert = certify(&chain_id, &early, set, &three);
        assert!(matches!(
            check(&early, &cert),
            Err(LightError::Timestamp { height: 1, .. })
        ));
        // And the genuine one passes.
        assert_eq!(check(&b0.header, &b0.certificate), Ok(()));
    }

    #[test]
    fn block_bodies_are_checked_against_tx_and_poh_roots() {
        let chain = chain();
        for b in &chain.blocks {
            verify_block_body(&b.header, &b.txs).unwrap();
        }
        let b0 = &chain.blocks[0];
        let mut swapped = b0.txs.clone();
        swapped.swap(0, 2);
        assert!(matches!(
            verify_block_body(&b0.header, &swapped),
            Err(LightError::TxRoot { height: 1, .. })
        ));
        // Even with a tx root that matches the swapped order, the PoH root
        // still pins the leader's order.
        let mut header = b0.header.clone();
        header.tx_root = tx_root(&swapped);
        assert_eq!(
            verify_block_body(&header, &swapped),
            Err(LightError::PohRoot {
                height: 1,
                computed: poh_root(header.prev_hash, &swapped),
                expected: b0.header.poh_root
            })
        );
        // Dropping a transaction is caught too.
        assert!(verify_block_body(&b0.header, &b0.txs[..2]).is_err());
    }

    #[test]
    fn receipts_are_proven_under_the_header() {
        let chain = chain();
        let b2 = &chain.blocks[2];
        // The second transfer of block 3 overdraws: a failed receipt is
        // still provable.
        assert_eq!(b2.receipts[0].status, STATUS_OK);
        assert_ne!(b2.receipts[1].status, STATUS_OK);
        for b in &chain.blocks {
            for (i, receipt) in b.receipts.iter().enumerate() {
                let proof = receipt_proof(&b.receipts, i as u64).unwrap();
                assert_eq!(proof.tree_size, b.receipts.len() as u64);
                verify_receipt(&b.header, receipt, &proof).unwrap();
            }
        }
        let b0 = &chain.blocks[0];
        let proof = receipt_proof(&b0.receipts, 1).unwrap();
        let mut forged = b0.receipts[1].clone();
        forged.status = 0;
        forged.fee_charged = 0;
        assert!(matches!(
            verify_receipt(&b0.header, &forged, &proof),
            Err(LightError::ReceiptProof { height: 1, .. })
        ));
        // A genuine receipt with another receipt's proof does not verify.
        assert!(verify_receipt(&b0.header, &b0.receipts[0], &proof).is_err());
        // A genuine receipt under another block's root does not verify.
        assert!(verify_receipt(&chain.blocks[2].header, &b0.receipts[1], &proof).is_err());
        assert_eq!(
            receipt_proof(&b0.receipts, 3),
            Err(LightError::ReceiptIndex { index: 3, count: 3 })
        );
        assert_eq!(
            receipt_proof(&[], 0),
            Err(LightError::ReceiptIndex { index: 0, count: 0 })
        );
    }

    #[test]
    fn replayed_chain_roots_match_the_ledger() {
        // The headers built above carry the ledger's state roots; a fresh
        // ledger replaying the bodies reaches the same ones.
        let chain = chain();
        let mut app =
            LedgerApp::from_genesis(&chain.genesis).with_validator_admin(key(10).public_key());
        let mut validators = chain.genesis.validators.clone();
        for b in &chain.blocks {
            let ctx = BlockContext {
                chain_id: chain.genesis.chain_id(),
                height: b.header.height,
                timestamp_ms: b.header.timestamp_ms,
                proposer: b.header.proposer,
                validators: validators.clone(),
            };
            let ex = app.commit(&ctx, &b.txs);
            assert_eq!(ex.state_root, b.header.state_root);
            assert_eq!(receipts_root(&ex.receipts), b.header.receipts_root);
            validators = ex.next_validators;
        }
        assert_eq!(app.committed_height(), 3);
    }
}
