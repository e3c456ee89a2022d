//! `metanode cage …`: run the HTTP Cage on its own (the agent runs it from
//! the node config's `traffic.cage`), and verify its receipt file.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use metanode_cage::{
    CageConfig, PolicyHandle, allow_all_policy, read_signed_batches, verify_receipts,
};
use metanode_core::cid::ContentId;
use metanode_core::keys::{SigningKey, SigningKeyFile};
use serde_json::json;

use crate::cmd_biso::{load_compiled, parse_public_key};
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum CageCommand {
    /// Run the cage in the foreground until Ctrl-C.
    #[command(after_help = "\
Each request: BISO light of the client address (red 403, yellow rate-limited 429) → per-IP
limit → route → RFC 9421 signature (ed25519, created/expires, nonce replay cache) or the
route's unsigned policy → per-key limit → body limit and Content-Digest (RFC 9530) →
upstream. Every request, refused or not, gets an audit receipt; receipts are batched, signed
with the node key and fsynced to receipts.path.

Examples:
  metanode cage serve --config cage.yaml --policy policy/biso.example.yaml --key node.key
  metanode cage serve --config cage.yaml        # all-green policy, throwaway key

A receipts file is bound to the key that signed it: reusing receipts.path needs the same
--key (a throwaway key fits only a fresh file; the cage refuses to extend a file signed by
another key).")]
    Serve(ServeArgs),
    /// Verify a receipt file: every batch's signature, chain and Merkle root.
    #[command(after_help = "\
With --cids, also list each batch's CID: the agent stores every batch as a pinned blob
under it, so a response's `Metanode-Receipt: <hash>; batch=N` leads to
`metanode store get --data-dir DIR <CID of batch N>`.

Examples:
  metanode cage verify-receipts /var/lib/metanode/cage/receipts.log --signer 3b6a…9f
  metanode --json cage verify-receipts receipts.log --signer 3b6a…9f --cids")]
    VerifyReceipts(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The cage config YAML (listen, routes, keys, limits, timeouts, receipts).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The BISO policy whose lights apply to client addresses; without it
    /// every address is green.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The node's Ed25519 key file that signs receipt batches; without it a
    /// throwaway key is generated and its public key printed.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt file (receipts.path of the cage config).
    receipts: PathBuf,
    /// The node's public key, 64 hex digits.
    #[arg(long, value_name = "HEX64")]
    signer: String,
    /// Also print each batch's CID (the blob the agent stored it as).
    #[arg(long)]
    cids: bool,
}

pub fn run(cmd: CageCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        CageCommand::Serve(args) => serve(&args, out),
        CageCommand::VerifyReceipts(args) => verify(&args, out),
    }
}

pub fn load_key(path: Option<&Path>) -> anyhow::Result<SigningKey> {
    match path {
        Some(p) => SigningKeyFile::new(p)
            .load()
            .with_context(|| format!("load key {}", p.display())),
        None => SigningKey::generate().map_err(|e| anyhow!("generate a key: {e}")),
    }
}

fn serve(args: &ServeArgs, out: &Output) -> anyhow::Result<()> {
    let config = CageConfig::load(&args.config).map_err(|e| anyhow!("{e}"))?;
    let policy = match &args.policy {
        Some(p) => load_compiled(p, 1)?.1,
        None => allow_all_policy(),
    };
    let key = load_key(args.key.as_deref())?;
    let public = key.public_key();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        let server = metanode_cage::Server::bind(config, PolicyHandle::new(policy), key)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        out.emit(
            &format!(
                "metanode: cage listening on {} (receipts signed by {public})",
                server.local_addr()
            ),
            &json!({"event": "cage_listening", "listen": server.local_addr().to_string(),
                    "signer": public.to_string()}),
        );
        let report = server.run(stop_signal()).await;
        let r = &report.receipts;
        out.emit(
            &format!(
                "metanode: cage stopped: {} receipts in {} batches written{}",
                r.receipts_written,
                r.batches_written,
                r.error
                    .as_deref()
                    .map(|e| format!("; write error: {e}"))
                    .unwrap_or_default()
            ),
            &json!({"event": "cage_stopped", "receipts_written": r.receipts_written,
                    "batches_written": r.batches_written, "error": r.error}),
        );
        match &r.error {
            Some(e) => Err(anyhow!("receipts: {e}")),
            None => Ok(()),
        }
    })
}

/// SIGINT (Ctrl-C) or SIGTERM (a supervisor, `timeout`): drain and write
/// the last receipt batch either way.
async fn stop_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn verify(args: &VerifyArgs, out: &Output) -> anyhow::Result<()> {
    let path = &args.receipts;
    let key = parse_public_key(&args.signer)?;
    let report = verify_receipts(path, &key).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let cids = if args.cids {
        // The file verified; its batches, up to the verified length, are
        // the blobs. A batch appended since is left out.
        let mut cids = Vec::new();
        let batches =
            read_signed_batches(path).with_context(|| format!("read {}", path.display()))?;
        for (index, batch) in batches.take(report.batches_count as usize).enumerate() {
            let batch =
                batch.with_context(|| format!("read batch {index} of {}", path.display()))?;
            cids.push(ContentId::raw_blake3_of(&batch).to_string());
        }
        if !out.is_json() {
            for (index, cid) in cids.iter().enumerate() {
                crate::output::print_line(&format!("batch {index}: {cid}"));
            }
        }
        Some(cids)
    } else {
        None
    };
    out.emit(
        &format!(
            "{}: {} receipts in {} batches verify ({} bytes)",
            path.display(),
            report.receipts_count,
            report.batches_count,
            report.verified_len_bytes
        ),
        &json!({"receipts_file": path.display().to_string(), "receipts": report.receipts_count,
                "batches": report.batches_count, "bytes": report.verified_len_bytes,
                "batch_cids": cids}),
    );
    Ok(())
}
