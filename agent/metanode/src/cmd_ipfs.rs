//! `metanode store add | import-car | export-car` and UnixFS reads for
//! `store get`: the IPFS data model, on a local store or through an agent.

use std::fs::File;
use std::io::{self, Read, Write};

use anyhow::{Context as _, anyhow, bail};
use metanode_api::wire::{CarImportResponse, UnixfsAddResponse};
use metanode_core::cid::ContentId;
use metanode_store::Store;
use metanode_unixfs::importer::{ImportOptions, ImportOptionsError, KuboAddFlags};
use metanode_unixfs::stored::{self, CarImportReport};
use metanode_unixfs::{DagScope, EntityBytes, UnixFsFile, parse_dag_scope};

use crate::cmd_store::{
    Access, AddArgs, Backend, COPY_BUFFER_BYTES, ExportCarArgs, ImportCarArgs, Progress,
    ProgressRead, Remote, copy, json, write_atomically,
};
use crate::output::Output;

/// A file or stdin, with its length when it is a regular file.
fn open_input(path: &std::path::Path) -> anyhow::Result<(Box<dyn Read + Send>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    if meta.is_dir() {
        bail!(
            "{} is a directory; UnixFS directories are not imported (add files one by one, or pack the directory \
             into a CAR with `ipfs-car pack` and use `store import-car`)",
            path.display()
        );
    }
    Ok((Box::new(file), meta.is_file().then_some(meta.len())))
}

pub fn add(args: &AddArgs, out: &Output) -> anyhow::Result<()> {
    let options = ImportOptions::from_kubo_flags(&KuboAddFlags {
        chunker: Some(&args.chunker),
        hash: Some(&args.hash),
        cid_version: Some(&args.cid_version),
        raw_leaves: args.raw_leaves,
    })
    .map_err(|e| {
        let flag = match e {
            ImportOptionsError::ChunkSize { .. } | ImportOptionsError::Chunker { .. } => {
                "--chunker"
            }
            ImportOptionsError::Hash { .. } => "--hash",
            ImportOptionsError::RawLeaves { .. } => "--raw-leaves",
            ImportOptionsError::CidVersion { .. } | ImportOptionsError::CidV0Hash { .. } => {
                "--cid-version"
            }
            // Not a flag here: links per node is always Kubo's 174.
            ImportOptionsError::LinksPerNode { .. } => "links per node",
        };
        anyhow!("{flag}: {e}")
    })?;
    let backend = Backend::open(&args.target, Access::Write)?;
    let (input, size) = open_input(&args.input)?;
    let mut reader = ProgressRead {
        inner: input,
        progress: Progress::new(size, "adding"),
    };
    let pin = !args.no_pin;
    let r = match &backend {
        Backend::Local(store) => {
            let summary = stored::add_file(store, &mut reader, options, pin, &mut |_| {})?;
            UnixfsAddResponse {
                cid: summary.root.to_string(),
                size: summary.size_bytes,
                blocks: summary.blocks_count,
                chunk_size: options.chunk_size_bytes(),
                hash: options.hash().name().to_string(),
                cid_version: options.cid_version().number(),
                raw_leaves: options.raw_leaves(),
                pinned: pin,
            }
        }
        Backend::Remote(remote) => {
            let path = format!(
                "/api/v1/unixfs?chunker=size-{}&hash={}&cid-version={}&pin={pin}",
                options.chunk_size_bytes(),
                options.hash().name(),
                options.cid_version().number()
            );
            post_stream(remote, &path, &mut reader, size, "add")?
        }
    };
    reader.progress.finish();
    let human = format!("{}\t{} bytes\t{} blocks", r.cid, r.size, r.blocks);
    out.emit(&human, &json(&r)?);
    Ok(())
}

fn post_stream<T: serde::de::DeserializeOwned>(
    remote: &Remote,
    path: &str,
    reader: &mut dyn Read,
    size: Option<u64>,
    what: &str,
) -> anyhow::Result<T> {
    let mut request = remote.agent.post(remote.url(path));
    if let Some(size) = size {
        request = request
            .header("content-length", size.to_string())
            .header("expect", "100-continue");
    }
    let response = request.send(ureq::SendBody::from_reader(reader));
    let response = remote.check(what, response)?;
    remote.read_json(what, response)
}

pub fn import_car(args: &ImportCarArgs, out: &Output) -> anyhow::Result<()> {
    let backend = Backend::open(&args.target, Access::Write)?;
    let (input, size) = open_input(&args.input)?;
    let mut reader = ProgressRead {
        inner: input,
        progress: Progress::new(size, "importing"),
    };
    let pin = !args.no_pin && !args.allow_partial;
    let r = match &backend {
        Backend::Local(store) => {
            let report: CarImportReport =
                stored::import_car(store, &mut reader, pin, args.allow_partial)
                    .with_context(|| format!("importing {}", args.input.display()))?;
            CarImportResponse {
                roots: report.roots.iter().map(ToString::to_string).collect(),
                blocks: report.blocks_count,
                blocks_new: report.blocks_new_count,
                bytes: report.block_bytes,
                pinned: report.pinned,
            }
        }
        Backend::Remote(remote) => {
            let path = format!("/api/v1/car?pin={pin}&allow-partial={}", args.allow_partial);
            post_stream(remote, &path, &mut reader, size, "import-car")?
        }
    };
    reader.progress.finish();
    let human = format!(
        "imported {} blocks ({} new, {} bytes); roots {}{}",
        r.blocks,
        r.blocks_new,
        r.bytes,
        r.roots.join(" "),
        if r.pinned { " (pinned)" } else { "" }
    );
    out.emit(&human, &json(&r)?);
    Ok(())
}

pub fn export_car(args: &ExportCarArgs, out: &Output) -> anyhow::Result<()> {
    let scope = parse_dag_scope(&args.dag_scope).map_err(|e| anyhow!("--dag-scope: {e}"))?;
    let entity_bytes = args
        .entity_bytes
        .as_deref()
        .map(EntityBytes::parse)
        .transpose()
        .map_err(|e| anyhow!("--entity-bytes: {e}"))?;
    let scope = if entity_bytes.is_some() {
        // The default scope (all) gives way to entity; block cannot.
        if scope == DagScope::Block {
            bail!("--entity-bytes applies to --dag-scope entity only");
        }
        DagScope::Entity
    } else {
        scope
    };
    let backend = Backend::open(&args.target, Access::Read)?;
    let write = |sink: &mut dyn Write| -> anyhow::Result<(u64, Option<u64>)> {
        match &backend {
            Backend::Local(store) => {
                let (report, _) = stored::export_car(store, args.cid, scope, entity_bytes, sink)?;
                Ok((report.car_bytes, Some(report.blocks_count)))
            }
            Backend::Remote(remote) => {
                let mut path = format!("/ipfs/{}?format=car&dag-scope={scope}", args.cid);
                if let Some(EntityBytes { from, to }) = entity_bytes {
                    let to = to.map_or_else(|| "*".to_string(), |t| t.to_string());
                    path.push_str(&format!("&entity-bytes={from}:{to}"));
                }
                let response = remote
                    .agent
                    .get(remote.url(&path))
                    .header("accept", "application/vnd.ipld.car; version=1")
                    .call();
                let response = remote.check("export-car", response)?;
                let mut body = response.into_body().into_reader();
                let n = copy(&mut body, sink).context(
                    "export-car: the agent's CAR broke off (it stops mid-body when it finds a damaged or missing block; see its log)",
                )?;
                Ok((n, None))
            }
        }
    };
    let to_file = args.output.as_ref().filter(|p| p.as_os_str() != "-");
    let (bytes, blocks) = match to_file {
        Some(path) => write_atomically(path, write)?,
        None => {
            let stdout = io::stdout();
            let mut sink = io::BufWriter::with_capacity(COPY_BUFFER_BYTES, stdout.lock());
            let r = write(&mut sink)?;
            sink.flush().context("writing to stdout")?;
            r
        }
    };
    // The human line goes to stderr when the CAR itself is on stdout.
    let human = match (blocks, to_file) {
        (Some(b), Some(p)) => format!(
            "wrote {bytes} bytes ({b} blocks) of {} to {}",
            args.cid,
            p.display()
        ),
        (None, Some(p)) => format!("wrote {bytes} bytes of {} to {}", args.cid, p.display()),
        _ => String::new(),
    };
    if to_file.is_some() || out.is_json() {
        out.emit(
            &human,
            &serde_json::json!({
                "cid": args.cid.to_string(),
                "bytes": bytes,
                "blocks": blocks,
                "path": to_file,
                "dag_scope": scope.as_str(),
            }),
        );
    }
    Ok(())
}

/// `store get` of a UnixFS root on a local store: the file's bytes, each
/// block verified by the store as it is read.
pub fn read_file_local(
    store: &Store,
    cid: &ContentId,
    sink: &mut dyn Write,
) -> anyhow::Result<u64> {
    let file = UnixFsFile::open(store.clone(), *cid)?;
    let size = file.size_bytes();
    let mut progress = Progress::new(Some(size), "reading");
    for piece in file.all() {
        let piece = piece?;
        sink.write_all(&piece).context("writing the output")?;
        progress.advance(piece.len() as u64);
    }
    progress.finish();
    Ok(size)
}
