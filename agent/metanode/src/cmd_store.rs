//! `metanode store …`: operate on a node's blob store, either by opening its
//! data dir directly (`--data-dir`, only while no agent holds it) or through
//! a running agent's HTTP API (`--api`). Both paths print the same JSON
//! shapes (`metanode_api::wire`) with `--json`.

use std::fs::File;
use std::io::{self, IsTerminal as _, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use metanode_api::wire::{
    BlobInfo, ErrorBody, GcResponse, ListResponse, PinResponse, PutResponse, RemoveResponse,
    Storage, VerifyResponse,
};
use metanode_core::cid::{CODEC_DAG_PB, ContentId, HashKind};
use metanode_core::config::NodeConfig;
use metanode_core::limits::{API_LIST_PAGE_COUNT_MAX, API_READ_WINDOW_BYTES};
use metanode_store::{OpenError, Store, StoreOptions, VerifyProgress};
use serde::de::DeserializeOwned;

use crate::cmd_agent;
use crate::output::Output;

/// Transfers at least this large get a progress bar (when stderr is a TTY).
const PROGRESS_SIZE_BYTES_MIN: u64 = 8 * 1024 * 1024;
/// Copy buffer for files and HTTP bodies.
pub(crate) const COPY_BUFFER_BYTES: usize = 1024 * 1024;
/// How long to wait for an agent to accept a TCP connection.
const API_CONNECT_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Store a file (or stdin) and print its CID and size.
    #[command(after_help = "\
Prints `CID<TAB>SIZE bytes`; with --json {\"cid\",\"size\",\"existed\"}.

Examples:
  metanode store put --data-dir /var/lib/metanode ./photo.jpg
  tar c dir | metanode store put --data-dir /tmp/mn -
  metanode store put --api http://127.0.0.1:7878 --no-pin big.iso
  metanode --json store put --data-dir /tmp/mn notes.txt")]
    Put(PutArgs),
    /// Import a file as UnixFS (the IPFS file format) and print its root CID:
    /// the same CID `ipfs add --cid-version 1` prints for the same bytes, or
    /// with `--cid-version 0` the Qm… CID plain `ipfs add` prints.
    #[command(after_help = "\
Kubo's parameters: 256 KiB chunks, balanced DAG with at most 174 links per
node, sha2-256. --cid-version 1 (the default here, like `ipfs add
--cid-version 1`): CIDv1 (bafy…/bafk…), raw leaves. --cid-version 0 (what
plain `ipfs add` does, Kubo's default): CIDv0 (Qm…) for every block, leaves
are dag-pb UnixFS nodes; use it to get the same CID as someone's `ipfs add`.
CIDv0 names sha2-256 only, so --cid-version 0 --hash blake3 is refused, and
--raw-leaves must agree with the version (true for 1, false for 0).
The root is pinned (the whole DAG is kept by gc).
Directories are not imported: add files one by one, or import a CAR made by
another tool (`ipfs-car pack DIR`, `ipfs dag export`) with `store import-car`.

Prints `CID<TAB>SIZE bytes<TAB>BLOCKS blocks`; with --json
{\"cid\",\"size\",\"blocks\",\"chunk_size\",\"hash\",\"pinned\"}.

Examples:
  metanode store add --data-dir /var/lib/metanode ./video.mp4
  metanode store add --data-dir /tmp/mn --cid-version 0 ./video.mp4   # = `ipfs add`, prints Qm…
  metanode store add --api http://127.0.0.1:7878 --chunker size-1048576 big.iso
  cat log.txt | metanode store add --data-dir /tmp/mn --hash blake3 -")]
    Add(AddArgs),
    /// Import a CAR (v1 or v2): every block is checked against its CID, the
    /// DAGs under its roots must be complete, then the roots are pinned.
    #[command(after_help = "\
A bad block, a block over 2 MiB, or a link to a block that is neither in the
CAR nor already stored rejects the whole CAR (naming the block); nothing is
pinned then, and the blocks already written are removed by the next gc.

Examples:
  metanode store import-car --data-dir /tmp/mn site.car
  npx ipfs-car pack ./dir --output dir.car && metanode store import-car --api http://127.0.0.1:7878 dir.car
  metanode store import-car --data-dir /tmp/mn --allow-partial range.car")]
    ImportCar(ImportCarArgs),
    /// Write the DAG under a CID as a CARv1 (blocks in DFS order, no
    /// duplicates), as a trustless gateway would send it.
    #[command(after_help = "\
Examples:
  metanode store export-car --data-dir /tmp/mn bafybei... -o file.car
  metanode store export-car --api http://127.0.0.1:7878 bafybei... --dag-scope entity --entity-bytes 0:1048575 > head.car")]
    ExportCar(ExportCarArgs),
    /// Write a blob's bytes to a file or stdout (verified against its CID);
    /// for a UnixFS root (bafybei…), the file's bytes.
    #[command(after_help = "\
Examples:
  metanode store get --data-dir /tmp/mn bafkr4i... -o photo.jpg
  metanode store get --api http://127.0.0.1:7878 bafkr4i... > photo.jpg")]
    Get(GetArgs),
    /// Show a blob's size, pin state and where it is stored.
    #[command(after_help = "\
Examples:
  metanode store stat --data-dir /tmp/mn bafkr4i...
  metanode --json store stat --api http://127.0.0.1:7878 bafkr4i...")]
    Stat(CidArgs),
    /// Read every stored byte and check it against its hash; exits 1 and
    /// lists the damaged blobs if any.
    #[command(after_help = "\
Examples:
  metanode store verify --data-dir /var/lib/metanode
  metanode --json store verify --api http://127.0.0.1:7878")]
    Verify(TargetArgs),
    /// Remove unpinned blobs, compact segments, delete orphaned files.
    #[command(after_help = "\
Examples:
  metanode store gc --data-dir /var/lib/metanode
  metanode --json store gc --api http://127.0.0.1:7878")]
    Gc(TargetArgs),
    /// Remove a blob (it must be unpinned first).
    #[command(after_help = "\
Examples:
  metanode store unpin --data-dir /tmp/mn bafkr4i... && metanode store rm --data-dir /tmp/mn bafkr4i...
  metanode store rm --api http://127.0.0.1:7878 bafkr4i...")]
    Rm(CidArgs),
    /// Pin a blob so gc keeps it.
    #[command(after_help = "\
Examples:
  metanode store pin --data-dir /tmp/mn bafkr4i...
  metanode store pin --api http://127.0.0.1:7878 bafkr4i...")]
    Pin(CidArgs),
    /// Unpin a blob so gc may remove it.
    #[command(after_help = "\
Examples:
  metanode store unpin --data-dir /tmp/mn bafkr4i...
  metanode store unpin --api http://127.0.0.1:7878 bafkr4i...")]
    Unpin(CidArgs),
    /// List stored blobs, ordered by CID.
    #[command(after_help = "\
Prints `CID SIZE pinned|unpinned inline|external` per line; with --json
{\"blobs\": [{\"cid\",\"size\",\"pinned\",\"storage\",\"compressed\"}, ...]}.

Examples:
  metanode store ls --data-dir /var/lib/metanode
  metanode --json store ls --api http://127.0.0.1:7878")]
    Ls(TargetArgs),
}

/// Where the store is: exactly one of these.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Open the store in DIR directly (fails while an agent runs on it).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["api", "config"])]
    pub(crate) data_dir: Option<PathBuf>,
    /// Use the store of the node configured in FILE (its node.data_dir and
    /// store settings), opened directly.
    #[arg(long, value_name = "FILE", conflicts_with = "api")]
    pub(crate) config: Option<PathBuf>,
    /// Go through a running agent's HTTP API, e.g. http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    pub(crate) api: Option<String>,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub struct CidArgs {
    #[command(flatten)]
    target: Target,
    /// The blob's CID (bafkr4i… or any CIDv0/v1 spelling).
    #[arg(value_name = "CID", value_parser = parse_cid)]
    cid: ContentId,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    target: Target,
    /// File to store; `-` reads standard input.
    #[arg(value_name = "FILE")]
    input: PathBuf,
    /// Store it unpinned, so gc may remove it.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// File to import; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Chunker, as Kubo spells it: size-N with N from 1 to 1048576 bytes.
    #[arg(long, value_name = "size-N", default_value = "size-262144")]
    pub(crate) chunker: String,
    /// Multihash of every block: sha2-256 (what IPFS uses) or blake3
    /// (CIDv1 only).
    #[arg(long, value_name = "HASH", default_value = "sha2-256", value_parser = ["sha2-256", "blake3"])]
    pub(crate) hash: String,
    /// CID version: 1 (CIDv1, raw leaves, as `ipfs add --cid-version 1`) or
    /// 0 (Qm…, dag-pb leaves: the CID plain `ipfs add` prints).
    #[arg(long, value_name = "0|1", default_value = "1", value_parser = ["0", "1"])]
    pub(crate) cid_version: String,
    /// Kubo's --raw-leaves, accepted when it agrees with --cid-version
    /// (true for 1, false for 0); the version alone picks the leaves.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) raw_leaves: Option<bool>,
    /// Leave the root unpinned, so gc may remove the DAG.
    #[arg(long)]
    pub(crate) no_pin: bool,
}

#[derive(Debug, Args)]
pub struct ImportCarArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// CAR file to import; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Do not pin the roots.
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// Accept a CAR whose DAGs are incomplete (e.g. a dag-scope=entity-bytes
    /// export); its roots are then not pinned.
    #[arg(long)]
    pub(crate) allow_partial: bool,
}

#[derive(Debug, Args)]
pub struct ExportCarArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Root of the DAG.
    #[arg(value_name = "CID", value_parser = parse_cid)]
    pub(crate) cid: ContentId,
    /// Write to FILE (replaced only once complete) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// block: the root only; entity: the file (or directory node); all: the whole DAG.
    #[arg(long, value_name = "SCOPE", default_value = "all", value_parser = ["block", "entity", "all"])]
    pub(crate) dag_scope: String,
    /// Only the blocks needed for bytes FROM:TO of the file (inclusive;
    /// negative counts from the end, `*` is the end). Implies --dag-scope entity.
    #[arg(long, value_name = "FROM:TO", allow_hyphen_values = true)]
    pub(crate) entity_bytes: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    target: Target,
    /// The blob's CID.
    #[arg(value_name = "CID", value_parser = parse_cid)]
    cid: ContentId,
    /// Write to FILE (replaced only once every byte is verified) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

fn parse_cid(s: &str) -> Result<ContentId, String> {
    s.parse::<ContentId>().map_err(|e| e.to_string())
}

/// Progress bars go to stderr only when it is a terminal, and never with
/// `--json` (a script reading JSON is not watching a bar). Decided once per
/// process in [`run`].
static PROGRESS_ALLOWED: AtomicBool = AtomicBool::new(false);

fn progress_allowed() -> bool {
    PROGRESS_ALLOWED.load(Ordering::Relaxed)
}

pub fn run(cmd: StoreCommand, out: &Output) -> anyhow::Result<()> {
    PROGRESS_ALLOWED.store(
        !out.is_json() && io::stderr().is_terminal(),
        Ordering::Relaxed,
    );
    match cmd {
        StoreCommand::Put(a) => put(&a, out),
        StoreCommand::Add(a) => crate::cmd_ipfs::add(&a, out),
        StoreCommand::ImportCar(a) => crate::cmd_ipfs::import_car(&a, out),
        StoreCommand::ExportCar(a) => crate::cmd_ipfs::export_car(&a, out),
        StoreCommand::Get(a) => get(&a, out),
        StoreCommand::Stat(a) => {
            let info = Backend::open(&a.target, Access::Read)?.stat(&a.cid)?;
            let storage = match (info.storage, info.compressed) {
                (Storage::Inline, false) => "inline (packed in a segment)",
                (Storage::Inline, true) => "inline (packed in a segment, zstd)",
                (Storage::External, _) => "external (own file + bao outboard)",
            };
            let human = format!(
                "cid:     {}\nsize:    {} bytes\npinned:  {}\nstorage: {storage}",
                info.cid,
                info.size,
                if info.pinned { "yes" } else { "no" },
            );
            out.emit(&human, &json(&info)?);
            Ok(())
        }
        StoreCommand::Verify(a) => verify(&a.target, out),
        StoreCommand::Gc(a) => {
            let r = Backend::open(&a.target, Access::Write)?.gc()?;
            let mut human = format!(
                "gc: removed {} blobs, compacted {} segments, reclaimed {} bytes, removed {} orphan files",
                r.blobs_removed, r.segments_compacted, r.bytes_reclaimed, r.orphans_removed
            );
            if r.segments_skipped_damaged > 0 {
                human.push_str(&format!(
                    "; skipped {} damaged segments (run `metanode store verify`)",
                    r.segments_skipped_damaged
                ));
            }
            out.emit(&human, &json(&r)?);
            Ok(())
        }
        StoreCommand::Rm(a) => {
            let r = Backend::open(&a.target, Access::Write)?.remove(&a.cid)?;
            out.emit(&format!("removed {}", r.cid), &json(&r)?);
            Ok(())
        }
        StoreCommand::Pin(a) => {
            let r = Backend::open(&a.target, Access::Write)?.set_pinned(&a.cid, true)?;
            out.emit(&format!("pinned {}", r.cid), &json(&r)?);
            Ok(())
        }
        StoreCommand::Unpin(a) => {
            let r = Backend::open(&a.target, Access::Write)?.set_pinned(&a.cid, false)?;
            out.emit(&format!("unpinned {}", r.cid), &json(&r)?);
            Ok(())
        }
        StoreCommand::Ls(a) => {
            let blobs = Backend::open(&a.target, Access::Read)?.list()?;
            let human: Vec<String> = blobs
                .iter()
                .map(|b| {
                    format!(
                        "{} {} {} {}",
                        b.cid,
                        b.size,
                        if b.pinned { "pinned" } else { "unpinned" },
                        match b.storage {
                            Storage::Inline => "inline",
                            Storage::External => "external",
                        }
                    )
                })
                .collect();
            out.emit(&human.join("\n"), &serde_json::json!({ "blobs": blobs }));
            Ok(())
        }
    }
}

pub(crate) fn json(value: &impl serde::Serialize) -> anyhow::Result<serde_json::Value> {
    serde_json::to_value(value).context("rendering json output")
}

fn put(args: &PutArgs, out: &Output) -> anyhow::Result<()> {
    let backend = Backend::open(&args.target, Access::Write)?;
    let (reader, size): (Box<dyn Read + Send>, Option<u64>) = if args.input.as_os_str() == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let file =
            File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("reading metadata of {}", args.input.display()))?;
        if meta.is_dir() {
            bail!(
                "{} is a directory; store files (or pipe an archive into `put -`)",
                args.input.display()
            );
        }
        // Only a regular file's length is known up front (not a FIFO's).
        let size = meta.is_file().then_some(meta.len());
        (Box::new(file), size)
    };
    let progress = Progress::new(size, "uploading");
    let reader = ProgressRead {
        inner: reader,
        progress,
    };
    let r = backend.put(reader, size, !args.no_pin)?;
    let human = format!(
        "{}\t{} bytes{}",
        r.cid,
        r.size,
        if r.existed { " (already stored)" } else { "" }
    );
    out.emit(&human, &json(&r)?);
    Ok(())
}

fn get(args: &GetArgs, out: &Output) -> anyhow::Result<()> {
    let backend = Backend::open(&args.target, Access::Read)?;
    let to_file = args.output.as_ref().filter(|p| p.as_os_str() != "-");
    let Some(path) = to_file else {
        let stdout = io::stdout();
        let mut sink = io::BufWriter::with_capacity(COPY_BUFFER_BYTES, stdout.lock());
        backend.get(&args.cid, &mut sink)?;
        sink.flush().context("writing to stdout")?;
        return Ok(());
    };
    let size = write_atomically(path, |sink| backend.get(&args.cid, sink))?;
    out.emit(
        &format!("wrote {size} bytes of {} to {}", args.cid, path.display()),
        &serde_json::json!({ "cid": args.cid.to_string(), "size": size, "path": path }),
    );
    Ok(())
}

/// Write beside `path` and rename at the end, so `path` is either the old
/// content or the complete verified output, never a verified prefix.
pub(crate) fn write_atomically<T>(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("output path {} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.metanode-partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<T> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut sink = io::BufWriter::with_capacity(COPY_BUFFER_BYTES, file);
        let value = fill(&mut sink)?;
        let file = sink
            .into_inner()
            .map_err(|e| anyhow!("writing {}: {}", tmp.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn verify(target: &Target, out: &Output) -> anyhow::Result<()> {
    let r = Backend::open(target, Access::Read)?.verify()?;
    let mut human = format!(
        "verified {} blobs ({} bytes): ",
        r.blobs_checked, r.bytes_checked
    );
    if r.damaged.is_empty() {
        human.push_str("no damage found");
    } else {
        human.push_str(&format!("{} damaged", r.damaged.len()));
        for d in &r.damaged {
            human.push_str(&format!(
                "\n  {} at {}: {}",
                d.cid.as_deref().unwrap_or("(no cid)"),
                d.location,
                d.reason
            ));
        }
    }
    out.emit(&human, &json(&r)?);
    if !r.damaged.is_empty() {
        let cids: Vec<&str> = r
            .damaged
            .iter()
            .map(|d| d.cid.as_deref().unwrap_or(d.location.as_str()))
            .collect();
        bail!(
            "verify found {} damaged item(s): {}",
            r.damaged.len(),
            cids.join(", ")
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Shared lock, no writer: get, stat, ls, verify.
    Read,
    Write,
}

pub(crate) enum Backend {
    Local(Store),
    Remote(Remote),
}

impl Backend {
    pub(crate) fn open(target: &Target, access: Access) -> anyhow::Result<Backend> {
        let mut opts = match (&target.data_dir, &target.config, &target.api) {
            (_, _, Some(url)) => return Ok(Backend::Remote(Remote::new(url)?)),
            (Some(dir), _, _) => StoreOptions::new(
                std::path::absolute(dir)
                    .with_context(|| format!("resolving --data-dir {}", dir.display()))?,
            ),
            (None, Some(path), None) => cmd_agent::store_options(&NodeConfig::from_file(path)?),
            (None, None, None) => bail!(
                "say which store: --data-dir DIR (open it directly), --config FILE (the node's data dir), \
                 or --api URL (through a running agent)"
            ),
        };
        if access == Access::Read {
            // Reading must not create a store where there is none.
            if !opts.data_dir.is_dir() {
                bail!("data dir {} does not exist", opts.data_dir.display());
            }
            opts.read_only = true;
        }
        let dir = opts.data_dir.clone();
        match Store::open(opts) {
            Ok(store) => Ok(Backend::Local(store)),
            Err(err @ OpenError::Locked { .. }) => {
                let url =
                    cmd_agent::recorded_api_url(&dir).unwrap_or_else(|| "http://ADDR".to_string());
                Err(anyhow!(
                    "{err}; to go through the running agent, pass --api {url}"
                ))
            }
            Err(err) => {
                Err(anyhow::Error::new(err)
                    .context(format!("opening the store in {}", dir.display())))
            }
        }
    }

    fn stat(&self, cid: &ContentId) -> anyhow::Result<BlobInfo> {
        match self {
            Backend::Local(store) => {
                let stat = store
                    .stat(cid)?
                    .ok_or_else(|| anyhow!("{cid} is not in the store"))?;
                Ok(BlobInfo::new(cid, &stat))
            }
            Backend::Remote(r) => r.get_json(&format!("/api/v1/blobs/{cid}/stat"), "stat"),
        }
    }

    fn put(
        &self,
        mut reader: ProgressRead<Box<dyn Read + Send>>,
        size: Option<u64>,
        pin: bool,
    ) -> anyhow::Result<PutResponse> {
        let r = match self {
            Backend::Local(store) => {
                let mut writer = store.writer(pin)?;
                copy(&mut reader, &mut writer).context("storing the input")?;
                let outcome = writer.finish()?;
                PutResponse {
                    cid: outcome.cid.to_string(),
                    size: outcome.size_bytes,
                    existed: outcome.existed,
                }
            }
            Backend::Remote(r) => r.put(&mut reader, size, pin)?,
        };
        reader.progress.finish();
        Ok(r)
    }

    /// Write the verified blob to `sink`; returns its size.
    fn get(&self, cid: &ContentId, sink: &mut dyn Write) -> anyhow::Result<u64> {
        match self {
            Backend::Local(store) if cid.codec() == CODEC_DAG_PB => {
                crate::cmd_ipfs::read_file_local(store, cid, sink)
            }
            Backend::Local(store) => {
                let size = store
                    .stat(cid)?
                    .ok_or_else(|| anyhow!("{cid} is not in the store"))?
                    .size_bytes;
                let mut progress = Progress::new(Some(size), "reading");
                let mut offset = 0;
                while offset < size {
                    let n = API_READ_WINDOW_BYTES.min(size - offset);
                    let window = store.read_range(cid, offset, n)?;
                    sink.write_all(&window).context("writing the output")?;
                    offset += n;
                    progress.advance(n);
                }
                progress.finish();
                Ok(size)
            }
            Backend::Remote(r) => r.get(cid, sink),
        }
    }

    fn verify(&self) -> anyhow::Result<VerifyResponse> {
        match self {
            Backend::Local(store) => {
                let bar = tty_bar(None, "verifying");
                let report = store.verify(&|p: VerifyProgress| {
                    if let Some(bar) = &bar {
                        bar.set_length(p.blobs_total);
                        bar.set_position(p.blobs_checked);
                    }
                })?;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                Ok(report.into())
            }
            Backend::Remote(r) => r.post_json("/api/v1/verify", "verify"),
        }
    }

    fn gc(&self) -> anyhow::Result<GcResponse> {
        match self {
            Backend::Local(store) => {
                let bar = tty_bar(None, "gc");
                let report = store.gc(&|p| {
                    if let Some(bar) = &bar {
                        bar.set_message(format!("{p:?}"));
                        bar.tick();
                    }
                })?;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                Ok(report.into())
            }
            Backend::Remote(r) => r.post_json("/api/v1/gc", "gc"),
        }
    }

    fn remove(&self, cid: &ContentId) -> anyhow::Result<RemoveResponse> {
        match self {
            Backend::Local(store) => {
                if !store.remove(cid)? {
                    bail!("{cid} is not in the store");
                }
                Ok(RemoveResponse {
                    cid: cid.to_string(),
                    removed: true,
                })
            }
            Backend::Remote(r) => r.send_json("DELETE", &format!("/api/v1/blobs/{cid}"), "rm"),
        }
    }

    fn set_pinned(&self, cid: &ContentId, pinned: bool) -> anyhow::Result<PinResponse> {
        match self {
            Backend::Local(store) => {
                store.set_pinned(cid, pinned)?;
                Ok(PinResponse {
                    cid: cid.to_string(),
                    pinned,
                })
            }
            Backend::Remote(r) => {
                let method = if pinned { "POST" } else { "DELETE" };
                r.send_json(
                    method,
                    &format!("/api/v1/pins/{cid}"),
                    if pinned { "pin" } else { "unpin" },
                )
            }
        }
    }

    /// Every blob, ordered by CID string (as the API pages them).
    fn list(&self) -> anyhow::Result<Vec<BlobInfo>> {
        match self {
            Backend::Local(store) => {
                let mut all: Vec<BlobInfo> = store
                    .list()
                    .iter()
                    .map(|(cid, stat)| BlobInfo::new(cid, stat))
                    .collect();
                all.sort_unstable_by(|a, b| a.cid.cmp(&b.cid));
                Ok(all)
            }
            Backend::Remote(r) => {
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let mut path = format!("/api/v1/blobs?limit={API_LIST_PAGE_COUNT_MAX}");
                    if let Some(after) = &after {
                        path.push_str(&format!("&after={after}"));
                    }
                    let page: ListResponse = r.get_json(&path, "ls")?;
                    all.extend(page.blobs);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => return Ok(all),
                    }
                }
            }
        }
    }
}

/// A running agent, over plain HTTP. (HTTPS with client certificates comes
/// with the TLS work; until then the API is meant for loopback or a trusted
/// network.)
pub(crate) struct Remote {
    pub(crate) base: String,
    pub(crate) agent: ureq::Agent,
}

/// Error bodies are small; this only stops a misbehaving server.
const ERROR_BODY_BYTES_MAX: u64 = 64 * 1024;
/// JSON answers: a full listing page is well under this.
const JSON_BODY_BYTES_MAX: u64 = 64 * 1024 * 1024;

impl Remote {
    pub(crate) fn new(url: &str) -> anyhow::Result<Remote> {
        let base = url.trim_end_matches('/');
        if base.starts_with("https://") {
            bail!("--api {url}: https is not supported yet; use the agent's http:// address");
        }
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            bail!("--api {url}: expected an http:// URL such as http://127.0.0.1:7878");
        }
        let config = ureq::Agent::config_builder()
            // We read error bodies ourselves to show the agent's message.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_millis(API_CONNECT_TIMEOUT_MS)))
            .build();
        Ok(Remote {
            base: base.to_string(),
            agent: ureq::Agent::new_with_config(config),
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Turn a transport failure or a non-2xx answer into an error that says
    /// which agent and what it said.
    pub(crate) fn check(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut response = response.map_err(|e| {
            anyhow!(
                "{what}: cannot reach the agent at {}: {e} (is `metanode agent` running there?)",
                self.base
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_BYTES_MAX)
            .read_to_string()
            .unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        bail!(
            "{what}: the agent at {} answered {status}: {message}",
            self.base
        )
    }

    pub(crate) fn read_json<T: DeserializeOwned>(
        &self,
        what: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<T> {
        let text = response
            .body_mut()
            .with_config()
            .limit(JSON_BODY_BYTES_MAX)
            .read_to_string()
            .with_context(|| format!("{what}: reading the agent's answer"))?;
        serde_json::from_str(&text).with_context(|| {
            format!("{what}: the agent's answer is not the expected json: {text:.200}")
        })
    }

    /// A binary answer of at most `limit` bytes.
    pub(crate) fn read_bin(
        &self,
        what: &str,
        mut response: ureq::http::Response<ureq::Body>,
        limit: u64,
    ) -> anyhow::Result<Vec<u8>> {
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .with_context(|| format!("{what}: reading the node's answer from {}", self.base))
    }

    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> anyhow::Result<T> {
        let response = self.check(what, self.agent.get(self.url(path)).call())?;
        self.read_json(what, response)
    }

    pub(crate) fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> anyhow::Result<T> {
        self.send_json("POST", path, what)
    }

    fn send_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        what: &str,
    ) -> anyhow::Result<T> {
        let url = self.url(path);
        let response = match method {
            "POST" => self.agent.post(url).send_empty(),
            "DELETE" => self.agent.delete(url).call(),
            other => bail!("{what}: unsupported method {other}"),
        };
        let response = self.check(what, response)?;
        self.read_json(what, response)
    }

    fn put(
        &self,
        reader: &mut dyn Read,
        size: Option<u64>,
        pin: bool,
    ) -> anyhow::Result<PutResponse> {
        let mut request = self
            .agent
            .post(self.url(&format!("/api/v1/blobs?pin={pin}")));
        if let Some(size) = size {
            // A known length lets the agent refuse an oversize upload (413)
            // before we send it.
            request = request
                .header("content-length", size.to_string())
                .header("expect", "100-continue");
        }
        let response = request.send(ureq::SendBody::from_reader(reader));
        let response = self.check("put", response)?;
        self.read_json("put", response)
    }

    /// A raw block, hashed here against its CID; or, for a UnixFS root, the
    /// path gateway's file body, whose blocks the agent verified one by one
    /// (only the length can be checked here without the DAG).
    fn get(&self, cid: &ContentId, sink: &mut dyn Write) -> anyhow::Result<u64> {
        let unixfs = cid.codec() == CODEC_DAG_PB;
        let request = if unixfs {
            self.agent.get(self.url(&format!("/ipfs/{cid}")))
        } else {
            self.agent
                .get(self.url(&format!("/ipfs/{cid}?format=raw")))
                .header("accept", "application/vnd.ipld.raw")
        };
        let response = self.check("get", request.call())?;
        let size: Option<u64> = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = response.into_body().into_reader();
        let mut progress = Progress::new(size, "downloading");
        // Trust nothing on the wire: hash what arrives and compare with the
        // CID before declaring success.
        let mut hasher = (!unixfs).then(|| StreamHasher::new(cid.key().kind));
        let mut buf = vec![0u8; COPY_BUFFER_BYTES];
        let mut total = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(anyhow!(
                        "get: the agent's answer for {cid} broke off after {total} bytes: {e} \
                         (the agent stops mid-body when it finds damage; see its log)"
                    ));
                }
            };
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            sink.write_all(&buf[..n]).context("writing the output")?;
            total += n as u64;
            progress.advance(n as u64);
        }
        progress.finish();
        if size.is_some_and(|s| s != total) {
            bail!(
                "get: the agent announced {} bytes for {cid} but sent {total}",
                size.unwrap_or(0)
            );
        }
        if hasher.is_some_and(|h| h.finish() != cid.key().digest) {
            bail!(
                "get: the {total} bytes the agent sent do not hash to {cid}; they are not the blob"
            );
        }
        Ok(total)
    }
}

/// Incremental hash matching a CID's multihash.
enum StreamHasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl StreamHasher {
    fn new(kind: HashKind) -> Self {
        match kind {
            HashKind::Blake3 => StreamHasher::Blake3(Box::new(blake3::Hasher::new())),
            HashKind::Sha2_256 => StreamHasher::Sha256(<sha2::Sha256 as sha2::Digest>::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            StreamHasher::Blake3(h) => {
                h.update(data);
            }
            StreamHasher::Sha256(h) => sha2::Digest::update(h, data),
        }
    }

    fn finish(self) -> [u8; 32] {
        match self {
            StreamHasher::Blake3(h) => *h.finalize().as_bytes(),
            StreamHasher::Sha256(h) => sha2::Digest::finalize(h).into(),
        }
    }
}

pub(crate) fn copy(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// A progress bar on stderr, only when stderr is a terminal.
fn tty_bar(total: Option<u64>, label: &'static str) -> Option<ProgressBar> {
    if !progress_allowed() {
        return None;
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{msg:>11} [{bar:30}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(label);
    Some(bar)
}

/// Byte progress of one transfer: a bar appears once the transfer is known
/// (or turns out) to be large, and only on a terminal.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    total: Option<u64>,
    done: u64,
    tty: bool,
    label: &'static str,
}

impl Progress {
    pub(crate) fn new(total: Option<u64>, label: &'static str) -> Self {
        let mut p = Progress {
            bar: None,
            total,
            done: 0,
            tty: progress_allowed(),
            label,
        };
        if total.is_some_and(|t| t >= PROGRESS_SIZE_BYTES_MIN) {
            p.show();
        }
        p
    }

    fn show(&mut self) {
        if !self.tty || self.bar.is_some() {
            return;
        }
        let bar = match self.total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(self.label);
        bar.set_position(self.done);
        self.bar = Some(bar);
    }

    pub(crate) fn advance(&mut self, n: u64) {
        self.done += n;
        if self.bar.is_none() && self.done >= PROGRESS_SIZE_BYTES_MIN {
            self.show();
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

pub(crate) struct ProgressRead<R> {
    pub(crate) inner: R,
    pub(crate) progress: Progress,
}

impl<R: Read> Read for ProgressRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
