//! Our store under the harness protocol, two ways:
//! - library (default): `metanode_store::Store` in this process, exactly what
//!   the agent embeds;
//! - `--http URL`: a running `metanode agent`, through its HTTP API with
//!   keep-alive connections (what a client of the node sees).
//!
//! Durability is the store's own: a put returns after its group commit's
//! write+fdatasync (and, for large blobs, file + outboard + directory sync).
//!
//! UnixFS (`unixfs-add`, `car-export`): the library path is
//! `metanode_unixfs::stored::add_file` (Kubo's defaults, root pinned, every
//! block durable before the root is returned) and `stored::export_car`
//! into a byte counter; the HTTP path is `POST /api/v1/unixfs` with the file
//! streamed as the body and `GET /ipfs/{root}?format=car` counted as it
//! arrives. Every export is checked, untimed, against the CAR size and root
//! the pure importer computes for the same file.

use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metanode_core::cid::ContentId;
use metanode_perf::ipfs::expected_car;
use metanode_perf::{BlobStore, CarExported, ChunkSink, HarnessArgs, UnixfsAdded, harness_main};
use metanode_store::{IoMode, Store, StoreOptions};
use metanode_unixfs::{DagScope, ImportOptions, stored};

/// Window of large reads.
const CHUNK_BYTES: usize = 4 << 20;
/// File chunks fed to the writer: small enough to stay in the CPU cache
/// between the read, the hash and the write (as the flatfs baseline does).
const ADD_CHUNK_BYTES: usize = 1 << 20;
const UNIXFS_LIB: &str = "unixfs-add: metanode_unixfs::stored::add_file from the file (1 MiB reads), Kubo defaults \
    (256 KiB fixed chunks, raw leaves, CIDv1, balanced 174 links, sha2-256), root pinned, returns once every block \
    and the pin are durable (group commit); car-export: stored::export_car dag-scope=all into a byte counter \
    (no disk write), every block read verified against its CID by the store";
const UNIXFS_HTTP: &str = "unixfs-add: POST /api/v1/unixfs with the file streamed as the body (4 MiB chunks), \
    201 after every block and the pin are durable; car-export: GET /ipfs/{root}?format=car, body bytes counted";
/// Upload chunks queued between the file reader and the HTTP body.
const UPLOAD_CHUNKS_QUEUED_MAX: usize = 4;
/// What the trustless gateway must answer a `?format=car` request with.
const CAR_MEDIA_TYPE: &str = "application/vnd.ipld.car";

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    harness: HarnessArgs,
    /// Drive a running agent over HTTP instead of the library.
    #[arg(long)]
    http: Option<String>,
    /// HTTP mode: open a new TCP connection for every request (what a
    /// client without keep-alive costs the node) instead of a keep-alive pool.
    #[arg(long, requires = "http")]
    new_connections: bool,
    /// Library mode: the store's I/O path (auto = io_uring with fallback).
    #[arg(long, default_value = "auto", value_parser = ["auto", "io_uring", "posix"])]
    io: String,
}

impl AsRef<HarnessArgs> for Args {
    fn as_ref(&self) -> &HarnessArgs {
        &self.harness
    }
}

enum Ours {
    Lib(Store),
    Http {
        base: String,
        client: Client<HttpConnector, HttpBody>,
        new_connections: bool,
    },
}

/// A request body that is either a whole buffer or a stream of chunks.
enum HttpBody {
    Full(Full<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body for HttpBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            HttpBody::Full(f) => Pin::new(f).poll_frame(cx),
            HttpBody::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("blocking task")?
}

impl Ours {
    async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: HttpBody,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let Ours::Http { base, client, .. } = self else {
            bail!("not in http mode")
        };
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .body(body)?;
        client
            .request(req)
            .await
            .with_context(|| format!("http {path}"))
    }

    /// A request whose whole answer body is wanted.
    async fn request_bytes(
        &self,
        method: hyper::Method,
        path: &str,
        body: HttpBody,
    ) -> anyhow::Result<(u16, Bytes)> {
        let resp = self.request(method, path, body).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    async fn http_put(&self, body: HttpBody) -> anyhow::Result<ContentId> {
        let (status, bytes) = self
            .request_bytes(hyper::Method::POST, "/api/v1/blobs", body)
            .await?;
        if status != 201 && status != 200 {
            bail!("put answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        let cid = v["cid"].as_str().context("no cid in put answer")?;
        Ok(cid.parse()?)
    }
}

/// Streams the file at `path` as a request body, read on the blocking pool.
/// Await the handle after the request to learn whether the read failed.
fn stream_file(path: &Path) -> (HttpBody, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let path = path.to_path_buf();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(UPLOAD_CHUNKS_QUEUED_MAX);
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if tx.blocking_send(Bytes::from(buf)).is_err() {
                bail!("upload ended early");
            }
        }
    });
    (HttpBody::Stream(rx), reader)
}

/// `POST /api/v1/unixfs` answer (agent/api's `UnixfsAddResponse`).
#[derive(Debug, serde::Deserialize)]
struct UnixfsAddAnswer {
    cid: String,
    size: u64,
    blocks: u64,
    chunk_size: u64,
    hash: String,
    pinned: bool,
}

/// Counts what a CAR export writes and drops it: the library export is
/// measured as pure read + framing speed, with no disk write.
#[derive(Debug, Default)]
struct ByteCounter {
    bytes: u64,
}

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn empty() -> HttpBody {
    HttpBody::Full(Full::new(Bytes::new()))
}

impl BlobStore for Ours {
    type Key = ContentId;

    fn system(&self) -> String {
        match self {
            Ours::Lib(_) => "ours".into(),
            Ours::Http { .. } => "ours-http".into(),
        }
    }

    fn durability(&self) -> String {
        "group commit: write + fdatasync of the segment (large: file, outboard and dir fsync) before ack".into()
    }

    fn config(&self) -> serde_json::Value {
        match self {
            Ours::Lib(store) => {
                let o = store.options();
                serde_json::json!({
                    "mode": "library (metanode-store in process)",
                    "io": store.io_name(),
                    "io_reason": store.io_reason(),
                    "inline_size_bytes_max": o.inline_size_bytes_max,
                    "segment_size_bytes_max": o.segment_size_bytes_max,
                    "group_commit_batch_bytes_max": o.group_commit_batch_bytes_max,
                    "group_commit_batch_count_max": o.group_commit_batch_count_max,
                    "compression": format!("{:?}", o.compression),
                    "hash": "BLAKE3 (CIDv1 raw)",
                    "puts": "put_async from tokio tasks",
                    "unixfs": UNIXFS_LIB,
                })
            }
            Ours::Http {
                base,
                new_connections,
                ..
            } => serde_json::json!({
                "mode": if *new_connections {
                    "HTTP to a running `metanode agent --dev --log-level info`, one new TCP connection per request"
                } else {
                    "HTTP to a running `metanode agent --dev --log-level info` (keep-alive, hyper client pool)"
                },
                "url": base,
                "hash": "BLAKE3 (CIDv1 raw)",
                "unixfs": UNIXFS_HTTP,
            }),
        }
    }

    async fn put(&self, data: Bytes) -> anyhow::Result<ContentId> {
        match self {
            Ours::Lib(store) => Ok(store.put_async(data, true).await?.cid),
            Ours::Http { .. } => self.http_put(HttpBody::Full(Full::new(data))).await,
        }
    }

    async fn get(&self, key: &ContentId) -> anyhow::Result<Bytes> {
        match self {
            Ours::Lib(store) => Ok(Bytes::from(store.get_async(key).await?)),
            Ours::Http { .. } => {
                let (status, bytes) = self
                    .request_bytes(
                        hyper::Method::GET,
                        &format!("/ipfs/{key}?format=raw"),
                        empty(),
                    )
                    .await?;
                if status != 200 {
                    bail!("get {key} answered {status}");
                }
                Ok(bytes)
            }
        }
    }

    async fn add_file(&self, path: &Path) -> anyhow::Result<ContentId> {
        let path = path.to_path_buf();
        match self {
            Ours::Lib(store) => {
                let store = store.clone();
                blocking(move || {
                    use std::io::{Read, Write};
                    let mut f = std::fs::File::open(&path)?;
                    let mut w = store.writer(true)?;
                    let mut buf = vec![0u8; ADD_CHUNK_BYTES];
                    loop {
                        let n = f.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        w.write_all(&buf[..n])?;
                    }
                    Ok(w.finish()?.cid)
                })
                .await
            }
            Ours::Http { .. } => {
                let (body, reader) = stream_file(&path);
                let cid = self.http_put(body).await?;
                reader.await??;
                Ok(cid)
            }
        }
    }

    async fn read_to(&self, key: &ContentId, sink: &mut ChunkSink) -> anyhow::Result<()> {
        match self {
            Ours::Lib(store) => {
                let size = store.stat(key)?.context("blob missing")?.size_bytes;
                let mut offset = 0u64;
                while offset < size {
                    let len = (size - offset).min(CHUNK_BYTES as u64);
                    let (store, cid) = (store.clone(), *key);
                    let chunk = blocking(move || Ok(store.read_range(&cid, offset, len)?)).await?;
                    offset += len;
                    sink.push(Bytes::from(chunk)).await?;
                }
                Ok(())
            }
            Ours::Http { .. } => {
                let resp = self
                    .request(
                        hyper::Method::GET,
                        &format!("/ipfs/{key}?format=raw"),
                        empty(),
                    )
                    .await?;
                let status = resp.status().as_u16();
                if status != 200 {
                    bail!("read {key} answered {status}");
                }
                let mut body = resp.into_body();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        sink.push(data).await?;
                    }
                }
                Ok(())
            }
        }
    }

    fn supports_gc(&self) -> bool {
        true
    }

    async fn unpin(&self, key: &ContentId) -> anyhow::Result<()> {
        match self {
            Ours::Lib(store) => {
                let (store, cid) = (store.clone(), *key);
                blocking(move || Ok(store.set_pinned(&cid, false)?)).await
            }
            Ours::Http { .. } => {
                let (status, _) = self
                    .request_bytes(
                        hyper::Method::DELETE,
                        &format!("/api/v1/pins/{key}"),
                        empty(),
                    )
                    .await?;
                if !(200..300).contains(&status) {
                    bail!("unpin {key} answered {status}");
                }
                Ok(())
            }
        }
    }

    async fn gc_trigger(&self) -> anyhow::Result<()> {
        // Start GC and return: the workload measures puts while it runs.
        match self {
            Ours::Lib(store) => {
                let store = store.clone();
                std::thread::spawn(move || {
                    if let Err(e) = store.gc(&|_| {}) {
                        eprintln!("gc failed: {e}");
                    }
                });
            }
            Ours::Http { base, client, .. } => {
                let (base, client) = (base.clone(), client.clone());
                tokio::spawn(async move {
                    let req = hyper::Request::builder()
                        .method(hyper::Method::POST)
                        .uri(format!("{base}/api/v1/gc"))
                        .body(empty())
                        .expect("static request");
                    match client.request(req).await {
                        Ok(resp) => {
                            let _ = resp.into_body().collect().await;
                        }
                        Err(e) => eprintln!("gc request failed: {e}"),
                    }
                });
            }
        }
        Ok(())
    }

    async fn is_gone(&self, key: &ContentId) -> anyhow::Result<bool> {
        match self {
            Ours::Lib(store) => Ok(!store.contains(key)),
            Ours::Http { .. } => {
                let (status, _) = self
                    .request_bytes(
                        hyper::Method::GET,
                        &format!("/api/v1/blobs/{key}/stat"),
                        empty(),
                    )
                    .await?;
                Ok(status == 404)
            }
        }
    }

    fn supports_unixfs(&self) -> bool {
        true
    }

    async fn unixfs_add(&self, path: &Path) -> anyhow::Result<UnixfsAdded> {
        match self {
            Ours::Lib(store) => {
                let (store, path) = (store.clone(), path.to_path_buf());
                let summary = blocking(move || {
                    let mut file = std::fs::File::open(&path)
                        .with_context(|| format!("open {}", path.display()))?;
                    Ok(stored::add_file(
                        &store,
                        &mut file,
                        ImportOptions::default(),
                        true,
                        &mut |_| {},
                    )?)
                })
                .await?;
                Ok(UnixfsAdded {
                    root_cid: summary.root.to_string(),
                    size_bytes: summary.size_bytes,
                    blocks_count: Some(summary.blocks_count),
                })
            }
            Ours::Http { .. } => {
                let (body, reader) = stream_file(path);
                let (status, bytes) = self
                    .request_bytes(hyper::Method::POST, "/api/v1/unixfs", body)
                    .await?;
                if status != 201 {
                    bail!(
                        "POST /api/v1/unixfs answered {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                reader.await??;
                let answer: UnixfsAddAnswer =
                    serde_json::from_slice(&bytes).with_context(|| {
                        format!(
                            "POST /api/v1/unixfs answer {}",
                            String::from_utf8_lossy(&bytes)
                        )
                    })?;
                let kubo = ImportOptions::default();
                if answer.chunk_size != kubo.chunk_size_bytes()
                    || answer.hash != kubo.hash().name()
                    || !answer.pinned
                {
                    bail!(
                        "POST /api/v1/unixfs imported with chunk_size {} hash {} pinned {}, \
                         not Kubo's defaults ({} bytes, {}, pinned)",
                        answer.chunk_size,
                        answer.hash,
                        answer.pinned,
                        kubo.chunk_size_bytes(),
                        kubo.hash().name()
                    );
                }
                Ok(UnixfsAdded {
                    root_cid: answer.cid,
                    size_bytes: answer.size,
                    blocks_count: Some(answer.blocks),
                })
            }
        }
    }

    async fn car_export(&self, root: &str) -> anyhow::Result<CarExported> {
        let cid: ContentId = root.parse().with_context(|| format!("root {root}"))?;
        match self {
            Ours::Lib(store) => {
                let store = store.clone();
                let (report, counter) = blocking(move || {
                    Ok(stored::export_car(
                        &store,
                        cid,
                        DagScope::All,
                        None,
                        ByteCounter::default(),
                    )?)
                })
                .await?;
                if counter.bytes != report.car_bytes {
                    bail!(
                        "export_car reported {} bytes but wrote {}",
                        report.car_bytes,
                        counter.bytes
                    );
                }
                Ok(CarExported {
                    car_bytes: counter.bytes,
                    blocks_count: Some(report.blocks_count),
                })
            }
            Ours::Http { .. } => {
                let path = format!("/ipfs/{cid}?format=car");
                let resp = self.request(hyper::Method::GET, &path, empty()).await?;
                let status = resp.status().as_u16();
                let content_type = resp
                    .headers()
                    .get(hyper::header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                if status != 200 {
                    let body = resp.into_body().collect().await?.to_bytes();
                    bail!(
                        "GET {path} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                if !content_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with(CAR_MEDIA_TYPE))
                {
                    bail!(
                        "GET {path} answered Content-Type {content_type:?}, not {CAR_MEDIA_TYPE}"
                    );
                }
                let mut body = resp.into_body();
                let mut car_bytes = 0u64;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame
                        .with_context(|| format!("GET {path} body"))?
                        .into_data()
                    {
                        car_bytes += data.len() as u64;
                    }
                }
                Ok(CarExported {
                    car_bytes,
                    blocks_count: None,
                })
            }
        }
    }

    async fn verify_car(
        &self,
        input: &Path,
        root: &str,
        exported: &CarExported,
    ) -> anyhow::Result<()> {
        let input = input.to_path_buf();
        let expected =
            blocking(move || Ok(expected_car(&input, ImportOptions::default())?)).await?;
        let expected_root = expected.root.to_string();
        if root != expected_root {
            bail!("root is {root}, the pure importer gives {expected_root}");
        }
        if exported.car_bytes != expected.car_bytes {
            bail!(
                "streamed {} CAR bytes, the DAG's CAR is {} bytes ({} blocks)",
                exported.car_bytes,
                expected.car_bytes,
                expected.blocks_count
            );
        }
        if let Some(n) = exported.blocks_count
            && n != expected.blocks_count
        {
            bail!("exported {n} blocks, the DAG has {}", expected.blocks_count);
        }
        Ok(())
    }

    async fn close(&self) -> anyhow::Result<()> {
        if let Ours::Lib(store) = self {
            store.clone().close()?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    harness_main(|args: Args| async move {
        match args.http {
            Some(url) => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                // No idle pool = every request dials (and closes) its own
                // connection.
                let idle = if args.new_connections {
                    0
                } else {
                    args.harness.inflight.max(1)
                };
                let client = Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(idle)
                    .build(connector);
                Ok(Ours::Http {
                    base: url.trim_end_matches('/').to_string(),
                    client,
                    new_connections: args.new_connections,
                })
            }
            None => {
                let mut opts = StoreOptions::new(args.harness.dir.join("store"));
                opts.io = match args.io.as_str() {
                    "io_uring" => IoMode::IoUring,
                    "posix" => IoMode::Posix,
                    _ => IoMode::Auto,
                };
                let store = Store::open(opts)?;
                Ok(Ours::Lib(store))
            }
        }
    })
}
