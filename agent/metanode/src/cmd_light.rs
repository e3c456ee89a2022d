//! `metanode light …`: a light client against a node's API. It trusts only
//! the genesis file it is given: every header from height 1 up is checked
//! with `metanode_chain::light::LightClient` (chain id, height, parent hash,
//! timestamp, proposer, validator set, commit certificate), every block body
//! against its header (transaction and PoH roots), and a receipt against the
//! verified header with its Merkle proof. The node is only a source of bytes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use metanode_chain::app::VALIDATOR_SET_PAYLOAD_PREFIX;
use metanode_chain::light::{self, LightClient};
use metanode_chain::types::{
    CommitCertificate, FinalizedBlock, Genesis, Header, Height, Receipt, TxKind, ValidatorSet,
};
use metanode_core::encoding::Decode;
use metanode_core::hash::Hash32;
use metanode_core::merkle::InclusionProof;

use crate::cmd_chain::{ChainApi, status_name};
use crate::genesis_file;
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum LightCommand {
    /// Verify the header chain (and block bodies) from genesis up to a height.
    #[command(after_help = "\
Trust starts at the genesis file, so every header from 1 is verified; --from
only sets where the timing statistics start. Reports mean, p50 and max of the
time spent in the header check itself (certificate signatures included),
then the last verified height and hash. Exits 1 naming the height and the
check at the first failure.

Examples:
  metanode light verify --genesis net/genesis.yaml --api http://127.0.0.1:7878
  metanode light verify --genesis net/genesis.yaml --api http://127.0.0.1:7879 --to 100
  metanode --json light verify --genesis net/genesis.yaml --api http://127.0.0.1:7878 --from 50")]
    Verify(VerifyArgs),
    /// Verify a transaction's receipt: the header chain up to its block,
    /// then its inclusion proof.
    #[command(after_help = "\
Example:
  metanode light verify-receipt --genesis net/genesis.yaml --api http://127.0.0.1:7878 9f2c…e1")]
    VerifyReceipt(VerifyReceiptArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The genesis file (YAML) to trust.
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
    /// The node's API, e.g. http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    api: String,
    /// First height included in the timing statistics.
    #[arg(long, value_name = "HEIGHT", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    from: u64,
    /// Last height to verify: a number or `latest` (the node's tip now).
    #[arg(long, value_name = "HEIGHT|latest", default_value = "latest")]
    to: String,
}

#[derive(Debug, Args)]
pub struct VerifyReceiptArgs {
    /// The genesis file (YAML) to trust.
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
    /// The node's API, e.g. http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    api: String,
    /// The transaction id (64 hex digits).
    #[arg(value_name = "TX_HASH", value_parser = |s: &str| s.parse::<Hash32>().map_err(|e| e.to_string()))]
    tx_hash: Hash32,
}

pub fn run(cmd: LightCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        LightCommand::Verify(args) => verify(&args, out),
        LightCommand::VerifyReceipt(args) => verify_receipt(&args, out),
    }
}

/// Load the trusted genesis and check the node runs the same chain.
fn trusted(genesis: &std::path::Path, api: &ChainApi) -> anyhow::Result<Genesis> {
    let genesis = genesis_file::load(genesis)?;
    let ours = genesis.chain_id().to_string();
    let theirs = api.genesis_json()?.chain_id;
    if theirs != ours {
        bail!(
            "the node at {} runs chain {theirs}, but the genesis file is for chain {ours}",
            api.base()
        );
    }
    Ok(genesis)
}

/// Time spent in `verify_header`, per header.
#[derive(Debug, Default)]
struct Timings {
    samples: Vec<Duration>,
}

impl Timings {
    fn summary(&self) -> Option<(f64, f64, f64)> {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let us = |d: &Duration| d.as_secs_f64() * 1e6;
        let max = sorted.last().map(us)?;
        let p50 = us(&sorted[(sorted.len() - 1) / 2]);
        let mean = sorted.iter().map(us).sum::<f64>() / sorted.len() as f64;
        Some((mean, p50, max))
    }
}

/// Where a verification got to.
struct Verified {
    client: LightClient,
    /// The last verified block (None at genesis).
    last: Option<FinalizedBlock>,
    /// The set that certified the last block.
    last_set: ValidatorSet,
    timings: Timings,
}

/// Verifies headers and bodies 1..=`to` from the node, timing
/// `verify_header` from height `from` on.
fn follow(api: &ChainApi, genesis: &Genesis, to: Height, from: Height) -> anyhow::Result<Verified> {
    let mut client = LightClient::from_genesis(genesis);
    let mut last = None;
    let mut last_set = client.validators().clone();
    let mut timings = Timings::default();
    for height in 1..=to {
        let block = api.block(height)?.ok_or_else(|| {
            anyhow!(
                "height {height}: the node at {} has no block there (it should reach {to})",
                api.base()
            )
        })?;
        let header = &block.block.header;
        let set = client.validators().clone();
        let next = next_validators(&block, &set);
        let started = Instant::now();
        let checked = client.verify_header(header, &block.certificate, next.as_ref());
        let elapsed = started.elapsed();
        checked.map_err(|e| anyhow!("height {height}: header check failed: {e}"))?;
        light::verify_block_body(header, &block.block.txs)
            .map_err(|e| anyhow!("height {height}: block body check failed: {e}"))?;
        if height >= from {
            timings.samples.push(elapsed);
        }
        last_set = set;
        last = Some(block);
    }
    Ok(Verified {
        client,
        last,
        last_set,
        timings,
    })
}

/// The set the header hands over to, when it differs from `current`: the
/// admin's validator-set payload in the block whose hash the header names
/// (the header is certified, so a matching hash is all the trust needed).
/// `None` lets `verify_header` report a missing set by name.
fn next_validators(block: &FinalizedBlock, current: &ValidatorSet) -> Option<ValidatorSet> {
    let wanted = block.block.header.next_validator_set_hash;
    if wanted == current.hash() {
        return None;
    }
    block
        .block
        .txs
        .iter()
        .rev()
        .find_map(|tx| match &tx.body().kind {
            TxKind::Payload { data } => {
                let bytes = data.strip_prefix(VALIDATOR_SET_PAYLOAD_PREFIX)?;
                let set = ValidatorSet::from_canonical_bytes(bytes).ok()?;
                (set.hash() == wanted).then_some(set)
            }
            TxKind::Transfer { .. } => None,
        })
}

fn verify(args: &VerifyArgs, out: &Output) -> anyhow::Result<()> {
    let api = ChainApi::new(&args.api)?;
    let genesis = trusted(&args.genesis, &api)?;
    let to = match args.to.as_str() {
        "latest" => api.status()?.height,
        text => text
            .parse::<u64>()
            .map_err(|_| anyhow!("--to {text:?}: expected a height or latest"))?,
    };
    if to == 0 {
        bail!(
            "there is nothing to verify: the chain at {} has no block yet",
            api.base()
        );
    }
    if args.from > to {
        bail!("--from {} is above --to {to}", args.from);
    }
    let verified = follow(&api, &genesis, to, args.from)?;
    let client = &verified.client;
    let headers = verified.timings.samples.len();
    let (mean, p50, max) = verified
        .timings
        .summary()
        .ok_or_else(|| anyhow!("no header was timed"))?;
    out.emit(
        &format!(
            "verified headers and bodies 1..={to} of chain {}\n\
             last verified: height {} hash {}\n\
             verify_header over heights {}..={to} ({headers} headers): mean {mean:.1} µs, p50 {p50:.1} µs, max {max:.1} µs",
            genesis.chain_name,
            client.height(),
            client.last_hash(),
            args.from,
        ),
        &serde_json::json!({
            "chain_id": client.chain_id().to_string(),
            "verified_height": client.height(),
            "verified_hash": client.last_hash().to_hex(),
            "from": args.from,
            "to": to,
            "headers_timed": headers,
            "verify_header_us": {"mean": mean, "p50": p50, "max": max},
        }),
    );
    Ok(())
}

fn unhex(field: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text).map_err(|e| anyhow!("receipt: {field} is not hex: {e}"))
}

fn verify_receipt(args: &VerifyReceiptArgs, out: &Output) -> anyhow::Result<()> {
    let api = ChainApi::new(&args.api)?;
    let genesis = trusted(&args.genesis, &api)?;
    let tx = args.tx_hash;
    let r = api.receipt(&tx)?.ok_or_else(|| {
        anyhow!(
            "the node at {} has no receipt for {tx}: unknown or not final yet",
            api.base()
        )
    })?;
    let height = r.height;
    let header = Header::from_canonical_bytes(&unhex("header_bin", &r.header_bin)?)
        .with_context(|| format!("height {height}: the receipt's header does not decode"))?;
    let certificate =
        CommitCertificate::from_canonical_bytes(&unhex("certificate_bin", &r.certificate_bin)?)
            .with_context(|| {
                format!("height {height}: the receipt's certificate does not decode")
            })?;
    let receipt = Receipt::from_canonical_bytes(&unhex("receipt_bin", &r.receipt_bin)?)
        .with_context(|| format!("height {height}: the receipt does not decode"))?;
    let proof = InclusionProof {
        leaf_index: r.proof.leaf_index,
        tree_size: r.proof.tree_size,
        path: r
            .proof
            .path
            .iter()
            .map(|h| h.parse::<Hash32>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("height {height}: a proof hash is not hex: {e}"))?,
    };
    if height == 0 {
        bail!("the receipt claims height 0, which has no block");
    }

    let verified = follow(&api, &genesis, height, height)?;
    let block = verified
        .last
        .as_ref()
        .ok_or_else(|| anyhow!("height {height}: no block was verified"))?;
    let trusted_hash = verified.client.last_hash();
    if header.hash() != trusted_hash {
        bail!(
            "height {height}: the receipt's header {} is not the verified header {trusted_hash}",
            header.hash()
        );
    }
    certificate
        .verify(&verified.client.chain_id(), &header, &verified.last_set)
        .map_err(|e| anyhow!("height {height}: the receipt's certificate does not verify: {e}"))?;
    if receipt.tx_hash != tx {
        bail!(
            "height {height}: the node answered with the receipt of {} instead of {tx}",
            receipt.tx_hash
        );
    }
    let txs_count = block.block.txs.len() as u64;
    if proof.tree_size != txs_count {
        bail!(
            "height {height}: the proof is for a tree of {} receipts, the block has {txs_count} transactions",
            proof.tree_size
        );
    }
    light::verify_receipt(&header, &receipt, &proof)
        .map_err(|e| anyhow!("height {height}: receipt proof check failed: {e}"))?;
    let at_index = usize::try_from(proof.leaf_index)
        .ok()
        .and_then(|i| block.block.txs.get(i))
        .map(|t| t.hash());
    if at_index != Some(tx) {
        bail!(
            "height {height}: position {} of the block does not hold transaction {tx}",
            proof.leaf_index
        );
    }
    let signers = certificate.signers().count();
    out.emit(
        &format!(
            "receipt of {tx} verified: final at height {height} (block {trusted_hash}, position {} of {txs_count}), \
             certified by {signers} of {} validators; status {} ({}), fee {}\n\
             headers 1..={height} verified from genesis {}",
            proof.leaf_index,
            verified.last_set.len(),
            receipt.status,
            status_name(receipt.status),
            receipt.fee_charged,
            genesis.chain_id()
        ),
        &serde_json::json!({
            "tx_hash": tx.to_hex(),
            "height": height,
            "block_hash": trusted_hash.to_hex(),
            "index": proof.leaf_index,
            "txs_count": txs_count,
            "signers": signers,
            "validators": verified.last_set.len(),
            "status": receipt.status,
            "fee_charged": receipt.fee_charged,
            "verified": true,
        }),
    );
    Ok(())
}
