//! `metanode cage …`: run the HTTP Cage on its own (the agent runs it from
//! the node config's `traffic.cage`), and verify its receipt file.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use metanode_cage::{
    CageConfig, PolicyHandle, ReceiptProof, allow_all_policy, read_signed_batches, verify_receipts,
    verify_receipts_with_progress,
};
use metanode_core::cid::ContentId;
use metanode_core::encoding::Decode as _;
use metanode_core::hash::Hash32;
use metanode_core::keys::PublicKey;
use metanode_core::keys::{SigningKey, SigningKeyFile};
use serde_json::json;

use crate::cmd_biso::{load_compiled, parse_public_key};
use crate::cmd_store::Remote;
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

A log whose oldest segments were removed (receipts.segments_kept_max) verifies from its first
kept segment and names the batch hash that segment continues. With receipts.archive_dir the
removed segments are a log of their own, under the same file name in that directory: --archive
DIR verifies it too, and that the live log continues it, as one chain.

Examples:
  metanode cage verify-receipts /var/lib/metanode/cage/receipts.log --signer 3b6a…9f
  metanode cage verify-receipts /var/lib/metanode/cage/receipts.log --signer 3b6a…9f \\
      --archive /var/lib/metanode/cage-archive
  metanode --json cage verify-receipts receipts.log --signer 3b6a…9f --cids")]
    VerifyReceipts(VerifyArgs),
    /// Verify one receipt from a `Metanode-Receipt` response header: fetch
    /// its proof from the node and check it with the node's public key.
    #[command(after_help = "\
The node answers with the receipt, its batch's header and the Merkle path between them
(GET /api/v1/cage/receipts/HASH?batch=N&format=bin). Only --signer is trusted: the header
must be signed by it, and the receipt must lead to the header's Merkle root. The node
is a source of bytes. --save keeps the proof; --proof checks a saved one offline.

Examples:
  metanode cage verify-receipt --api http://127.0.0.1:7878 --signer 3b6a…9f '5d0e…c1; batch=12'
  metanode cage verify-receipt --api http://127.0.0.1:7878 --signer 3b6a…9f 5d0e…c1 --batch 12 \\
      --save receipt.proof
  metanode --json cage verify-receipt --proof receipt.proof --signer 3b6a…9f 5d0e…c1")]
    VerifyReceipt(VerifyReceiptArgs),
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
    /// The receipt log (receipts.path of the cage config); its segments
    /// `<path>.1`, `<path>.2`, … are verified with it, as one chain.
    receipts: PathBuf,
    /// The node's public key, 64 hex digits.
    #[arg(long, value_name = "HEX64")]
    signer: String,
    /// Also print each batch's CID (the blob the agent stored it as; the
    /// receipt log's batches, not the archive's).
    #[arg(long)]
    cids: bool,
    /// The cage's receipts.archive_dir: also verify the archived log there
    /// (`DIR/<the log's file name>`) and that the receipt log continues it,
    /// so the two verify as one chain.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["api", "proof"])))]
pub struct VerifyReceiptArgs {
    /// The receipt: the `Metanode-Receipt` header's value (`HASH; batch=N`),
    /// or its hash alone with --batch.
    #[arg(value_name = "RECEIPT")]
    receipt: String,
    /// The receipt's batch (the header's `batch=`).
    #[arg(long, value_name = "N")]
    batch: Option<u64>,
    /// The node's API to fetch the proof from, e.g. http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// A proof saved earlier with --save (its canonical bytes), checked
    /// offline.
    #[arg(long, value_name = "FILE")]
    proof: Option<PathBuf>,
    /// The node's public key, 64 hex digits: the only thing trusted.
    #[arg(long, value_name = "HEX64")]
    signer: String,
    /// Also write the fetched proof's canonical bytes to FILE.
    #[arg(long, value_name = "FILE", requires = "api")]
    save: Option<PathBuf>,
}

pub fn run(cmd: CageCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        CageCommand::Serve(args) => serve(&args, out),
        CageCommand::VerifyReceipts(args) => verify(&args, out),
        CageCommand::VerifyReceipt(args) => verify_one(&args, out),
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
        let stop = stop_signal();
        out.emit(
            &format!(
                "metanode: cage listening on {} (receipts signed by {public})",
                server.local_addr()
            ),
            &json!({"event": "cage_listening", "listen": server.local_addr().to_string(),
                    "signer": public.to_string()}),
        );
        let report = server.run(stop).await;
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
/// Installs the SIGTERM and SIGINT handlers now (before "listening" is
/// announced) and returns what waits for either.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    let mut signals = crate::stop_signals::StopSignals::install();
    async move {
        signals.next().await;
    }
}

/// Whether the live receipt log continues the archived one: its first kept
/// segment starts exactly where the archive ends. An empty archive is
/// continued by anything.
fn joins_archive(
    archive: &metanode_cage::VerifyReport,
    live: &metanode_cage::VerifyReport,
) -> Result<(), String> {
    if archive.segments_count == 0 || archive.tip == live.start {
        return Ok(());
    }
    if live.first_batch_index == 0 {
        return Err(format!(
            "it starts from genesis, so the archive's batches {}..{} are another log's",
            archive.first_batch_index, archive.tip.next_batch_index
        ));
    }
    if archive.tip.next_batch_index > live.start.next_batch_index {
        return Err(format!(
            "the cage archived segments while they were verified (the archive now ends at batch \
             {}, past the log's start at {}): run it again",
            archive.tip.next_batch_index, live.start.next_batch_index
        ));
    }
    Err(format!(
        "it does not continue the archive: the archive ends at batch {} (hash {}), the log \
         starts at batch {} after hash {}",
        archive.tip.next_batch_index,
        archive.tip.prev_batch_hash.to_hex(),
        live.start.next_batch_index,
        live.start.prev_batch_hash.to_hex()
    ))
}

/// What a rotated log's report adds to the summary line: its segments and
/// batch range, and, when the oldest segments were deleted, that the chain
/// is checked from an anchored start, so the count is not read as the
/// whole history. Empty for a log that never rotated.
fn report_span(report: &metanode_cage::VerifyReport) -> String {
    if report.segments_count <= 1 && report.first_batch_index == 0 {
        return String::new();
    }
    format!(
        ", {} segments, batches {}..{}{}",
        report.segments_count,
        report.first_batch_index,
        report.tip.next_batch_index,
        if report.first_batch_index > 0 {
            format!(
                " (older segments removed; the chain is checked from the first kept one, which \
                 continues batch hash {})",
                report.start.prev_batch_hash.to_hex()
            )
        } else {
            String::new()
        }
    )
}

fn verify(args: &VerifyArgs, out: &Output) -> anyhow::Result<()> {
    let path = &args.receipts;
    let key = parse_public_key(&args.signer)?;
    // A byte bar on a terminal: a log of many 64 MiB segments takes a while.
    let bar = (!out.is_json() && std::io::stderr().is_terminal()).then(|| {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        )
    });
    if let Some(bar) = &bar {
        bar.set_message("verifying");
    }
    let verified = verify_receipts_with_progress(path, &key, &mut |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = verified.map_err(|e| anyhow!("{}: {e}", path.display()))?;
    // After the live log: segments the cage archives meanwhile are then in
    // the archive when it is read (and named as an overlap, not a gap).
    let archived = match &args.archive {
        Some(dir) => {
            let base = dir.join(path.file_name().unwrap_or_default());
            let archive = verify_receipts(&base, &key)
                .map_err(|e| anyhow!("archive {}: {e}", base.display()))?;
            joins_archive(&archive, &report).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            Some((base, archive))
        }
        None => None,
    };
    let cids = if args.cids {
        // The file verified; its batches, up to the verified length, are
        // the blobs. A batch appended since is left out.
        let mut cids = Vec::new();
        let batches =
            read_signed_batches(path).with_context(|| format!("read {}", path.display()))?;
        // The verified range only: a live log may have rotated or deleted
        // segments since.
        let verified = report.first_batch_index..report.tip.next_batch_index;
        for frame in batches {
            let (index, batch) =
                frame.with_context(|| format!("read the batches of {}", path.display()))?;
            if index >= verified.end {
                break;
            }
            if index < verified.start {
                continue;
            }
            let cid = ContentId::raw_blake3_of(&batch).to_string();
            if !out.is_json() {
                crate::output::print_line(&format!("batch {index}: {cid}"));
            }
            cids.push(cid);
        }
        // Segments the cage deleted between the two reads take their
        // batches with them: say so rather than list fewer.
        if cids.len() as u64 != report.batches_count {
            bail!(
                "{}: {} of the {} verified batches were still there to list; the cage removed \
                 old segments meanwhile (receipts.segments_kept_max): run it again",
                path.display(),
                cids.len(),
                report.batches_count
            );
        }
        Some(cids)
    } else {
        None
    };
    let span = report_span(&report);
    let mut human = format!(
        "{}: {} receipts in {} batches verify ({} bytes{span})",
        path.display(),
        report.receipts_count,
        report.batches_count,
        report.verified_len_bytes
    );
    let archive_json = archived.as_ref().map(|(base, a)| {
        human = format!(
            "{}: {} receipts in {} batches verify ({} bytes{})\n{human}\none chain: batches \
             {}..{}, {} receipts",
            base.display(),
            a.receipts_count,
            a.batches_count,
            a.verified_len_bytes,
            report_span(a),
            a.first_batch_index,
            report.tip.next_batch_index,
            a.receipts_count + report.receipts_count
        );
        json!({"receipts_file": base.display().to_string(), "receipts": a.receipts_count,
               "batches": a.batches_count, "bytes": a.verified_len_bytes,
               "segments": a.segments_count, "first_batch": a.first_batch_index,
               "last_batch_hash": a.tip.prev_batch_hash.to_hex()})
    });
    out.emit(
        &human,
        &json!({"receipts_file": path.display().to_string(), "receipts": report.receipts_count,
                "batches": report.batches_count, "bytes": report.verified_len_bytes,
                "segments": report.segments_count, "first_batch": report.first_batch_index,
                // null for a log from genesis (it continues no batch).
                "continues_batch_hash": (report.first_batch_index > 0)
                    .then(|| report.start.prev_batch_hash.to_hex()),
                "last_batch_hash": report.tip.prev_batch_hash.to_hex(),
                "batch_cids": cids, "archive": archive_json}),
    );
    Ok(())
}

/// A proof's canonical bytes are about 1.5 KiB; this only stops a
/// misbehaving server or a wrong file.
const RECEIPT_PROOF_BYTES_MAX: u64 = 64 * 1024;

/// `HASH` or `HASH; batch=N` (a `Metanode-Receipt` header value), and
/// `--batch`; the two must agree when both are given.
fn parse_receipt_ref(text: &str, batch: Option<u64>) -> anyhow::Result<(Hash32, Option<u64>)> {
    let mut parts = text.split(';').map(str::trim);
    let hash_text = parts.next().unwrap_or_default();
    let hash: Hash32 = hash_text.parse().map_err(|e| {
        anyhow!(
            "receipt {hash_text:?} is not 64 hex digits (the first part of a Metanode-Receipt \
             header): {e}"
        )
    })?;
    let mut from_header = None;
    for param in parts {
        let value = param
            .strip_prefix("batch=")
            .ok_or_else(|| anyhow!("receipt: unexpected {param:?}; expected `HASH; batch=N`"))?;
        from_header = Some(
            value
                .parse::<u64>()
                .map_err(|_| anyhow!("receipt: batch={value:?} is not a batch number"))?,
        );
    }
    match (from_header, batch) {
        (Some(a), Some(b)) if a != b => {
            bail!("receipt names batch {a} but --batch is {b}")
        }
        (a, b) => Ok((hash, a.or(b))),
    }
}

fn verify_one(args: &VerifyReceiptArgs, out: &Output) -> anyhow::Result<()> {
    let signer = parse_public_key(&args.signer)?;
    let (receipt_hash, batch) = parse_receipt_ref(&args.receipt, args.batch)?;
    let (bytes, source) = match (&args.api, &args.proof) {
        (Some(api), _) => {
            let batch = batch.ok_or_else(|| {
                anyhow!("the receipt's batch is missing: pass `HASH; batch=N` or --batch N")
            })?;
            let remote = Remote::new(api)?;
            let what = format!("receipt {receipt_hash} of batch {batch}");
            let response = remote.check(
                &what,
                remote
                    .agent
                    .get(remote.url(&format!(
                        "/api/v1/cage/receipts/{receipt_hash}?batch={batch}&format=bin"
                    )))
                    .call(),
            )?;
            let bytes = remote.read_bin(&what, response, RECEIPT_PROOF_BYTES_MAX)?;
            (bytes, remote.base.clone())
        }
        (None, Some(path)) => {
            let len = std::fs::metadata(path)
                .with_context(|| format!("--proof {}", path.display()))?
                .len();
            if len > RECEIPT_PROOF_BYTES_MAX {
                bail!(
                    "--proof {}: {len} bytes is not a receipt proof (they are a few KiB)",
                    path.display()
                );
            }
            let bytes =
                std::fs::read(path).with_context(|| format!("--proof {}", path.display()))?;
            (bytes, path.display().to_string())
        }
        (None, None) => bail!("pass --api URL (fetch the proof) or --proof FILE (a saved one)"),
    };
    let proof = check_proof(&bytes, &source, &signer, &receipt_hash, batch)?;
    // Only a proof that checks is kept: a saved file is evidence.
    if let Some(path) = &args.save {
        std::fs::write(path, &bytes).with_context(|| format!("--save {}", path.display()))?;
    }
    let r = &proof.receipt;
    out.emit(
        &format!(
            "receipt {receipt_hash} verifies: #{} in batch {} signed by {signer}\n  \
             {} {} from {}{}: status {}{}, policy v{}",
            proof.receipt_seq(),
            proof.header.batch_index,
            format_unix_ms(r.time_unix_ms),
            r.decision.name(),
            r.client_ip,
            r.key_id
                .as_deref()
                .map(|k| format!(" (key {k})"))
                .unwrap_or_default(),
            r.status,
            r.upstream_status
                .map(|u| format!(", upstream {u}"))
                .unwrap_or_default(),
            r.policy_version,
        ),
        &json!({"receipt_hash": receipt_hash.to_hex(), "verified": true,
                "receipt_seq": proof.receipt_seq(), "batch_index": proof.header.batch_index,
                "signer": signer.to_string(), "time_unix_ms": r.time_unix_ms,
                "client_ip": r.client_ip.to_string(), "key_id": r.key_id,
                "decision": r.decision.name(), "detail": r.detail, "status": r.status,
                "upstream_status": r.upstream_status,
                "request_hash": r.request_hash.to_hex(),
                "response_hash": r.response_hash.to_hex(),
                "policy_version": r.policy_version,
                "policy_digest": hex::encode(r.policy_digest)}),
    );
    Ok(())
}

/// The proof in `bytes` (from `source`, for messages), checked: canonical,
/// signed by `signer`, leading to the signed root, for `receipt_hash` and
/// (when given) in `batch`.
fn check_proof(
    bytes: &[u8],
    source: &str,
    signer: &PublicKey,
    receipt_hash: &Hash32,
    batch: Option<u64>,
) -> anyhow::Result<ReceiptProof> {
    let proof = ReceiptProof::from_canonical_bytes(bytes)
        .map_err(|e| anyhow!("{source}: not a receipt proof: {e}"))?;
    let proven = proof
        .verify(signer)
        .map_err(|e| anyhow!("receipt {receipt_hash}: does not verify: {e}"))?;
    if proven != *receipt_hash {
        bail!("{source}: the proof is for receipt {proven}, not {receipt_hash}");
    }
    if let Some(batch) = batch
        && proof.header.batch_index != batch
    {
        bail!(
            "{source}: the proof puts receipt {receipt_hash} in batch {}, not {batch}",
            proof.header.batch_index
        );
    }
    Ok(proof)
}

/// Unix ms of 9999-12-31T23:59:59Z + 1 s: the HTTP date format ends there.
const HTTP_DATE_UNIX_MS_END: u64 = 253_402_300_800_000;

/// `Wed, 02 Dec 2026 13:05:00 GMT` for a Unix time in milliseconds; past
/// the year 9999 (a broken clock signed into a receipt) the number itself.
fn format_unix_ms(ms: u64) -> String {
    if ms >= HTTP_DATE_UNIX_MS_END {
        return format!("unix time {ms} ms");
    }
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use metanode_cage::receipt::request_hash;
    use metanode_cage::{
        Decision, FileSink, Receipt, ReceiptReader, ReceiptSink as _, SignedBatch, verify_receipts,
    };
    use metanode_core::encoding::Encode as _;

    use super::*;

    #[test]
    fn a_receipt_is_named_by_its_header_value_or_hash_and_batch() {
        let hash = Hash32::from_bytes([7; 32]);
        let hex = hash.to_hex();
        assert_eq!(parse_receipt_ref(&hex, None).unwrap(), (hash, None));
        assert_eq!(parse_receipt_ref(&hex, Some(3)).unwrap(), (hash, Some(3)));
        assert_eq!(
            parse_receipt_ref(&format!("{hex}; batch=12"), None).unwrap(),
            (hash, Some(12))
        );
        assert_eq!(
            parse_receipt_ref(&format!(" {hex};batch=12 "), Some(12)).unwrap(),
            (hash, Some(12))
        );
        for (bad, says) in [
            (format!("{hex}; batch=12"), "--batch is 13"),
            ("abc; batch=1".to_string(), "not 64 hex digits"),
            (format!("{hex}; batch=x"), "not a batch number"),
            (format!("{hex}; seq=4"), "expected `HASH; batch=N`"),
        ] {
            let err = parse_receipt_ref(&bad, Some(13).filter(|_| says.contains("13")))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn receipt(i: u64) -> Receipt {
        Receipt {
            time_unix_ms: 1_700_000_000_000 + i,
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            key_id: None,
            request_hash: request_hash("GET", "node", &format!("/{i}"), None),
            decision: Decision::Forwarded,
            detail: String::new(),
            status: 200,
            upstream_status: Some(200),
            response_hash: Hash32::ZERO,
            policy_version: 1,
            policy_digest: [0; 32],
        }
    }

    /// A good proof passes; the same proof for another receipt or batch,
    /// under another key, or cut short, is refused by name.
    #[test]
    fn a_proof_is_checked_against_the_receipt_batch_and_key_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = SigningKey::from_seed(&[2; 32]);
        let mut sink = FileSink::open(&path, &key.public_key()).unwrap();
        let receipts: Vec<Receipt> = (0..3).map(receipt).collect();
        let hashes: Vec<Hash32> = receipts.iter().map(|r| r.hash().unwrap()).collect();
        let batch = SignedBatch::seal(&sink.tip(), receipts, &hashes, &key, 1);
        sink.append(&batch.to_encoded().unwrap()).unwrap();
        let reader = ReceiptReader::new(path, key.public_key(), sink.batch_offsets());
        let bytes = reader
            .prove(0, &hashes[1])
            .unwrap()
            .to_canonical_bytes()
            .unwrap();
        let signer = key.public_key();
        let ok = check_proof(&bytes, "test", &signer, &hashes[1], Some(0)).unwrap();
        assert_eq!(
            ok.receipt.request_hash,
            request_hash("GET", "node", "/1", None)
        );
        let refused = |bytes: &[u8], signer: &PublicKey, hash: &Hash32, batch| {
            check_proof(bytes, "test", signer, hash, batch)
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&bytes, &signer, &hashes[2], Some(0)).contains("is for receipt"));
        assert!(refused(&bytes, &signer, &hashes[1], Some(1)).contains("not 1"));
        let stranger = SigningKey::from_seed(&[3; 32]).public_key();
        assert!(refused(&bytes, &stranger, &hashes[1], None).contains("does not verify"));
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                refused(&bytes[..cut], &signer, &hashes[1], None).contains("not a receipt proof")
            );
        }
    }

    #[test]
    fn a_rotated_log_reports_its_segments_and_an_anchored_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = SigningKey::from_seed(&[4; 32]);
        let policy = metanode_cage::SegmentPolicy {
            segment_bytes_max: 2_000,
            segments_kept_max: 0,
            archive_dir: None,
        };
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), policy).unwrap();
        let one_file = |sink: &FileSink| {
            report_span(&verify_receipts(sink.path(), &key.public_key()).unwrap())
        };
        assert_eq!(one_file(&sink), "");
        for b in 0..12u64 {
            let receipts: Vec<_> = (2 * b..2 * b + 2).map(receipt).collect();
            let hashes: Vec<_> = receipts.iter().map(|r| r.hash().unwrap()).collect();
            let batch = SignedBatch::seal(&sink.tip(), receipts, &hashes, &key, b);
            sink.append(&batch.to_encoded().unwrap()).unwrap();
        }
        let segments = sink.segment() + 1;
        assert!(segments > 2);
        assert_eq!(
            one_file(&sink),
            format!(", {segments} segments, batches 0..12")
        );
        std::fs::remove_file(&path).unwrap();
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert!(report.first_batch_index > 0);
        assert_ne!(report.start.prev_batch_hash, Hash32::ZERO);
        assert_eq!(
            report_span(&report),
            format!(
                ", {} segments, batches {}..12 (older segments removed; the chain is checked from \
                 the first kept one, which continues batch hash {})",
                segments - 1,
                report.first_batch_index,
                report.start.prev_batch_hash.to_hex()
            )
        );
    }

    /// `--archive`: a log whose removed segments went to the archive
    /// continues it; another chain, a log from genesis, and an archive that
    /// grew past the log's start while it was read are each named.
    #[test]
    fn the_live_log_joins_its_archive_or_the_break_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live").join("receipts.log");
        let archive_dir = dir.path().join("archive");
        let key = SigningKey::from_seed(&[4; 32]);
        let policy = metanode_cage::SegmentPolicy {
            segment_bytes_max: 2_000,
            segments_kept_max: 2,
            archive_dir: Some(archive_dir.clone()),
        };
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), policy).unwrap();
        for b in 0..12u64 {
            let receipts: Vec<_> = (2 * b..2 * b + 2).map(receipt).collect();
            let hashes: Vec<_> = receipts.iter().map(|r| r.hash().unwrap()).collect();
            let batch = SignedBatch::seal(&sink.tip(), receipts, &hashes, &key, b);
            sink.append(&batch.to_encoded().unwrap()).unwrap();
        }
        let live = verify_receipts(&path, &key.public_key()).unwrap();
        let archive =
            verify_receipts(&archive_dir.join("receipts.log"), &key.public_key()).unwrap();
        assert!(live.first_batch_index > 0 && archive.segments_count > 0);
        assert_eq!(joins_archive(&archive, &live), Ok(()));
        let empty = metanode_cage::VerifyReport {
            segments_count: 0,
            ..archive.clone()
        };
        assert_eq!(joins_archive(&empty, &live), Ok(()));

        let mut other = archive.clone();
        other.tip.prev_batch_hash = Hash32::from_bytes([9; 32]);
        let err = joins_archive(&other, &live).unwrap_err();
        assert!(err.contains("does not continue the archive"), "{err}");
        let genesis = metanode_cage::VerifyReport {
            first_batch_index: 0,
            start: metanode_cage::receipt::ChainTip::GENESIS,
            ..live.clone()
        };
        let err = joins_archive(&archive, &genesis).unwrap_err();
        assert!(err.contains("another log's"), "{err}");
        let mut grown = archive.clone();
        grown.tip.next_batch_index = live.start.next_batch_index + 3;
        let err = joins_archive(&grown, &live).unwrap_err();
        assert!(err.contains("run it again"), "{err}");
    }

    #[test]
    fn dates_past_the_year_9999_are_printed_as_numbers() {
        assert_eq!(format_unix_ms(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            format_unix_ms(HTTP_DATE_UNIX_MS_END - 1),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            format_unix_ms(u64::MAX),
            format!("unix time {} ms", u64::MAX)
        );
    }
}
