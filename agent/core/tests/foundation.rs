//! The foundation modules used together, from outside the crate, the way a
//! service uses them: a versioned message type with a canonical encoding, a
//! domain-tagged hash of it, a signature over that hash, and a Merkle proof
//! that the message is in a batch.

use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer, decode_version};
use metanode_core::hash::{Hash32, hash_encoded};
use metanode_core::keys::{PublicKey, Signature, SigningKey, verify};
use metanode_core::merkle::{InclusionProof, MerkleTree};
use metanode_core::tags::DomainTag;

#[derive(Debug, Clone, PartialEq)]
struct Receipt {
    height: u64,
    payer: PublicKey,
    amount: u128,
    memo: String,
    parent: Option<Hash32>,
}

const RECEIPT_VERSIONS: &[u8] = &[1];
const MEMO_LEN_MAX: u32 = 64;

impl Encode for Receipt {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(1);
        self.height.encode(w);
        self.payer.encode(w);
        self.amount.encode(w);
        w.put_str_bounded(&self.memo, MEMO_LEN_MAX);
        self.parent.encode(w);
    }
}

impl Decode for Receipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, RECEIPT_VERSIONS)?;
        Ok(Receipt {
            height: u64::decode(r)?,
            payer: PublicKey::decode(r)?,
            amount: u128::decode(r)?,
            memo: r.read_str_bounded(MEMO_LEN_MAX)?.to_owned(),
            parent: Option::decode(r)?,
        })
    }
}

#[test]
fn sign_hash_and_prove_a_batch_of_receipts() {
    let key = SigningKey::generate().expect("os randomness");
    let receipts: Vec<Receipt> = (0..9u64)
        .map(|i| Receipt {
            height: 100 + i,
            payer: key.public_key(),
            amount: u128::from(i) << 70,
            memo: format!("receipt {i}"),
            parent: (i > 0).then_some(Hash32([i as u8; 32])),
        })
        .collect();

    let encoded: Vec<Vec<u8>> = receipts
        .iter()
        .map(|r| r.to_canonical_bytes().expect("within bounds"))
        .collect();
    for (receipt, bytes) in receipts.iter().zip(&encoded) {
        assert_eq!(
            &Receipt::from_canonical_bytes(bytes).expect("decodes"),
            receipt
        );
    }

    // Sign the tagged hash, ship (hash, signature) canonically, verify.
    let digest = hash_encoded(DomainTag::DocklockRecord, &receipts[3]).expect("within bounds");
    let signature = key.sign(digest.as_bytes());
    let wire = (digest, signature)
        .to_canonical_bytes()
        .expect("fixed size");
    let (digest_back, signature_back) =
        <(Hash32, Signature)>::from_canonical_bytes(&wire).expect("decodes");
    verify(&key.public_key(), digest_back.as_bytes(), &signature_back).expect("valid signature");

    // Prove receipt 3 is in the batch; the proof survives the wire.
    let tree = MerkleTree::from_leaves(&encoded);
    let proof = tree.prove(3).expect("index in range");
    let proof_wire = proof.to_canonical_bytes().expect("bounded path");
    let proof_back = InclusionProof::from_canonical_bytes(&proof_wire).expect("decodes");
    proof_back
        .verify(&encoded[3], &tree.root())
        .expect("receipt 3 is in the batch");
    assert!(proof_back.verify(&encoded[4], &tree.root()).is_err());
}

#[test]
fn oversized_field_fails_to_encode_instead_of_producing_undecodable_bytes() {
    let key = SigningKey::generate().expect("os randomness");
    let receipt = Receipt {
        height: 1,
        payer: key.public_key(),
        amount: 0,
        memo: "x".repeat(MEMO_LEN_MAX as usize + 1),
        parent: None,
    };
    let err = receipt.to_canonical_bytes().unwrap_err();
    assert_eq!(
        err.to_string(),
        "byte string of length 65 at offset 57 exceeds maximum 64"
    );
}
