//! The workloads of the harness protocol, written once against [`BlobStore`].
//!
//! A harness implements [`BlobStore`] for its system and calls
//! [`harness_main`]; everything else (argument checks, blob generation before
//! timing, K-in-flight drivers, verification, latency, the JSON line, exit
//! codes) lives here so that every system is measured the same way.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;

use crate::args::{ArgsError, HarnessArgs, Workload};
use crate::blobgen;
use crate::latency::Latency;
use crate::report::{GcOutcome, Report, rates};

/// How long `put-during-gc` waits after the timed puts for GC to finish.
pub const GC_WAIT_AFTER_PUTS_MAX: Duration = Duration::from_secs(30);
/// How often the GC progress poller looks; it checks at most one not-yet-gone
/// blob per tick so it adds little load to the store under test.
pub const GC_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Chunks queued between a large read and the verifying hasher thread.
pub const SINK_CHUNKS_QUEUED_MAX: usize = 64;

/// A system under test, as the harness protocol sees it.
///
/// `put` must return only once the blob is durable, or `durability` must say
/// which weaker mode the system ran in. Methods return `anyhow::Result`
/// because implementations live in harness binaries.
pub trait BlobStore: Send + Sync + 'static {
    /// What `put` and `add_file` return and `get` takes (e.g. a hash or CID).
    type Key: Clone + Send + Sync + 'static;

    /// The system name in the JSON line (`iroh-blobs`, `flatfs`, `ours`...).
    fn system(&self) -> String;
    /// When a put is acknowledged relative to stable storage.
    fn durability(&self) -> String;
    /// How the system was configured (workers, options, versions).
    fn config(&self) -> serde_json::Value;

    fn put(&self, data: Bytes) -> impl Future<Output = anyhow::Result<Self::Key>> + Send;
    fn get(&self, key: &Self::Key) -> impl Future<Output = anyhow::Result<Bytes>> + Send;
    /// Adds the whole file at `path` as one blob, durably.
    fn add_file(&self, path: &Path) -> impl Future<Output = anyhow::Result<Self::Key>> + Send;
    /// Streams the whole blob, in order, into `sink`.
    fn read_to(
        &self,
        key: &Self::Key,
        sink: &mut ChunkSink,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Whether `unpin`, `gc_trigger` and `is_gone` work.
    fn supports_gc(&self) -> bool {
        false
    }
    /// Drops whatever keeps the blob alive (tag, pin, reference).
    fn unpin(&self, _key: &Self::Key) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Err(anyhow::anyhow!("this system has no garbage collection")) }
    }
    /// Starts a GC pass (or does nothing when GC runs periodically).
    fn gc_trigger(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Err(anyhow::anyhow!("this system has no garbage collection")) }
    }
    /// Whether GC has removed the blob.
    fn is_gone(&self, _key: &Self::Key) -> impl Future<Output = anyhow::Result<bool>> + Send {
        async { Err(anyhow::anyhow!("this system has no garbage collection")) }
    }
    /// Whether `unixfs_add` and `car_export` work.
    fn supports_unixfs(&self) -> bool {
        false
    }
    /// Imports the file at `path` as UnixFS with Kubo's defaults (256 KiB
    /// fixed chunks, raw leaves, CIDv1, balanced layout of 174 links,
    /// sha2-256), durably, and returns its root.
    fn unixfs_add(&self, _path: &Path) -> impl Future<Output = anyhow::Result<UnixfsAdded>> + Send {
        async { Err(anyhow::anyhow!("this system has no UnixFS importer")) }
    }
    /// Streams the CARv1 of every block under `root` (a CID as
    /// `unixfs_add` returned it) into a byte counter.
    fn car_export(&self, _root: &str) -> impl Future<Output = anyhow::Result<CarExported>> + Send {
        async { Err(anyhow::anyhow!("this system has no CAR export")) }
    }
    /// After the clock stops: checks an export against what the system can
    /// compute independently for the same input (e.g. the CAR size from
    /// the pure importer). Systems without such a reference check nothing
    /// beyond the runner's own bounds.
    fn verify_car(
        &self,
        _input: &Path,
        _root: &str,
        _exported: &CarExported,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
    /// Clean shutdown after the measurement (not timed).
    fn close(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// What a UnixFS import returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixfsAdded {
    /// The root CID in the system's canonical text form (base32 CIDv1).
    pub root_cid: String,
    /// File bytes the system says it imported.
    pub size_bytes: u64,
    /// Blocks written, when the system says.
    pub blocks_count: Option<u64>,
}

/// What a CAR export streamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarExported {
    /// Bytes counted as they were produced, header included.
    pub car_bytes: u64,
    /// Blocks in the CAR, when the system says.
    pub blocks_count: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("{op} of blob {index} failed")]
    Op {
        op: &'static str,
        index: usize,
        #[source]
        source: anyhow::Error,
    },
    #[error("verification failed: {0}")]
    Verify(String),
    #[error(
        "--cold-export: cannot drop the page cache (writing 1 to /proc/sys/vm/drop_caches needs root)"
    )]
    DropCaches(#[source] std::io::Error),
    #[error("cannot read input {path}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{system} has no garbage collection, so it cannot run put-during-gc")]
    NoGc { system: String },
    #[error("{system} has no UnixFS importer and CAR export, so it cannot run {workload}")]
    NoUnixfs {
        system: String,
        workload: &'static str,
    },
    #[error("the verifying hasher thread stopped early")]
    SinkClosed,
    #[error("a worker task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Receives the chunks of a large read and hashes them with BLAKE3 on its own
/// thread, so reading and verifying overlap (as a streaming client would).
#[derive(Debug)]
pub struct ChunkSink {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    hasher: Option<std::thread::JoinHandle<(u64, blake3::Hash)>>,
}

impl ChunkSink {
    pub fn new() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(SINK_CHUNKS_QUEUED_MAX);
        let hasher = std::thread::spawn(move || {
            let mut hasher = blake3::Hasher::new();
            let mut len: u64 = 0;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                len += chunk.len() as u64;
            }
            (len, hasher.finalize())
        });
        Self {
            tx: Some(tx),
            hasher: Some(hasher),
        }
    }

    /// Appends the next chunk of the blob.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), WorkloadError> {
        let tx = self.tx.as_ref().ok_or(WorkloadError::SinkClosed)?;
        tx.send(chunk).await.map_err(|_| WorkloadError::SinkClosed)
    }

    /// Total length and BLAKE3 hash of everything pushed.
    pub async fn finish(mut self) -> Result<(u64, blake3::Hash), WorkloadError> {
        drop(self.tx.take());
        let hasher = self.hasher.take().ok_or(WorkloadError::SinkClosed)?;
        tokio::task::spawn_blocking(move || hasher.join())
            .await?
            .map_err(|_| WorkloadError::SinkClosed)
    }
}

impl Default for ChunkSink {
    fn default() -> Self {
        Self::new()
    }
}

/// What a K-in-flight drive measured.
#[derive(Debug)]
pub struct Driven<T> {
    pub elapsed: Duration,
    pub latency: Latency,
    /// `results[i]` is what operation `i` returned.
    pub results: Vec<T>,
}

/// Runs operations `0..count` with exactly `inflight` of them outstanding
/// (until the tail), timing each from submit to ack. The first failure stops
/// the other workers and is returned.
pub async fn drive<T, F, Fut>(
    count: usize,
    inflight: usize,
    op: F,
) -> Result<Driven<T>, WorkloadError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, WorkloadError>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(inflight);
    for _ in 0..inflight.min(count) {
        let (op, next, failed) = (op.clone(), next.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = Latency::new();
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || failed.load(Ordering::Relaxed) {
                    break;
                }
                let submitted = Instant::now();
                match op(i).await {
                    Ok(value) => {
                        latency.record(submitted.elapsed());
                        done.push((i, value));
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok((latency, done))
        }));
    }
    let mut latency = Latency::new();
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(count).collect();
    let mut first_error = None;
    for worker in workers {
        match worker.await? {
            Ok((worker_latency, done)) => {
                latency.merge(&worker_latency);
                for (i, value) in done {
                    slots[i] = Some(value);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let results = slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            slot.ok_or_else(|| WorkloadError::Verify(format!("operation {i} never completed")))
        })
        .collect::<Result<Vec<T>, _>>()?;
    Ok(Driven {
        elapsed,
        latency,
        results,
    })
}

/// Puts `blobs` with `inflight` outstanding.
pub async fn put_all<S: BlobStore>(
    store: &Arc<S>,
    blobs: &Arc<Vec<Bytes>>,
    inflight: usize,
) -> Result<Driven<S::Key>, WorkloadError> {
    let (store, blobs) = (store.clone(), blobs.clone());
    drive(blobs.len(), inflight, move |i| {
        let (store, data) = (store.clone(), blobs[i].clone());
        async move {
            store.put(data).await.map_err(|source| WorkloadError::Op {
                op: "put",
                index: i,
                source,
            })
        }
    })
    .await
}

/// Runs the workload of `args` against `store` and returns its JSON line.
pub async fn run_workload<S: BlobStore>(
    args: &HarnessArgs,
    store: Arc<S>,
) -> Result<Report, WorkloadError> {
    args.validate()?;
    let base = Report {
        system: store.system(),
        workload: args.workload.name().to_string(),
        size_bytes: args.size_bytes as u64,
        count: args.count as u64,
        inflight: args.inflight as u64,
        seconds: 0.0,
        ops_per_s: 0.0,
        mb_per_s: 0.0,
        latency_us: None,
        durability: store.durability(),
        config: store.config(),
        gc: None,
        root_cid: None,
        blocks_count: None,
        car_bytes: None,
    };
    if matches!(args.workload, Workload::UnixfsAdd | Workload::CarExport)
        && !store.supports_unixfs()
    {
        return Err(WorkloadError::NoUnixfs {
            system: store.system(),
            workload: args.workload.name(),
        });
    }
    match args.workload {
        Workload::Put => {
            let blobs = Arc::new(blobgen::blobs(args.seed, 0, args.count, args.size_bytes));
            let driven = put_all(&store, &blobs, args.inflight).await?;
            Ok(measured(base, &driven, args.size_bytes))
        }
        Workload::Get => {
            let blobs = Arc::new(blobgen::blobs(args.seed, 0, args.count, args.size_bytes));
            let keys = Arc::new(put_all(&store, &blobs, args.inflight).await?.results);
            let order = Arc::new(blobgen::permutation(args.count, args.seed));
            let driven = drive(args.count, args.inflight, move |j| {
                let (store, keys, blobs) = (store.clone(), keys.clone(), blobs.clone());
                let i = order[j];
                async move {
                    let got = store
                        .get(&keys[i])
                        .await
                        .map_err(|source| WorkloadError::Op {
                            op: "get",
                            index: i,
                            source,
                        })?;
                    if got != blobs[i] {
                        return Err(WorkloadError::Verify(format!(
                            "get of blob {i} returned {} bytes that differ from the {} put",
                            got.len(),
                            blobs[i].len()
                        )));
                    }
                    Ok(())
                }
            })
            .await?;
            Ok(measured(base, &driven, args.size_bytes))
        }
        Workload::AddLarge => {
            let input = large_input(args)?;
            let started = Instant::now();
            store
                .add_file(&input)
                .await
                .map_err(|source| WorkloadError::Op {
                    op: "add-large",
                    index: 0,
                    source,
                })?;
            Ok(large_measured(base, args, started.elapsed()))
        }
        Workload::ReadLarge => {
            let input = large_input(args)?;
            let expected = hash_file(&input).await?;
            let key = store
                .add_file(&input)
                .await
                .map_err(|source| WorkloadError::Op {
                    op: "add-large",
                    index: 0,
                    source,
                })?;
            let mut sink = ChunkSink::new();
            let started = Instant::now();
            store
                .read_to(&key, &mut sink)
                .await
                .map_err(|source| WorkloadError::Op {
                    op: "read-large",
                    index: 0,
                    source,
                })?;
            let (len, hash) = sink.finish().await?;
            let elapsed = started.elapsed();
            if len != args.total_bytes || hash != expected {
                return Err(WorkloadError::Verify(format!(
                    "read-large returned {len} bytes with BLAKE3 {hash}, expected {} bytes with {expected}",
                    args.total_bytes
                )));
            }
            Ok(large_measured(base, args, elapsed))
        }
        Workload::PutDuringGc => put_during_gc(args, store, base).await,
        Workload::UnixfsAdd => {
            let input = large_input(args)?;
            let started = Instant::now();
            let added = unixfs_add(&store, &input).await?;
            let elapsed = started.elapsed();
            check_added(args, &added)?;
            let mut report = large_measured(base, args, elapsed);
            report.root_cid = Some(added.root_cid);
            report.blocks_count = added.blocks_count;
            Ok(report)
        }
        Workload::CarExport => {
            let input = large_input(args)?;
            let added = unixfs_add(&store, &input).await?;
            check_added(args, &added)?;
            if args.cold_export {
                drop_page_cache()?;
            }
            let started = Instant::now();
            let exported =
                store
                    .car_export(&added.root_cid)
                    .await
                    .map_err(|source| WorkloadError::Op {
                        op: "car-export",
                        index: 0,
                        source,
                    })?;
            let elapsed = started.elapsed();
            // Every content byte is in some leaf block, and the CAR adds a
            // header and a CID per block: a CAR no larger than the file
            // cannot hold the whole DAG.
            if exported.car_bytes <= args.total_bytes {
                return Err(WorkloadError::Verify(format!(
                    "car-export of {} streamed {} bytes, not more than the {} bytes of the file",
                    added.root_cid, exported.car_bytes, args.total_bytes
                )));
            }
            store
                .verify_car(&input, &added.root_cid, &exported)
                .await
                .map_err(|e| {
                    WorkloadError::Verify(format!("car-export of {}: {e:#}", added.root_cid))
                })?;
            let mut report = large_measured(base, args, elapsed);
            (report.ops_per_s, report.mb_per_s) = rates(1, exported.car_bytes, report.seconds);
            report.root_cid = Some(added.root_cid);
            report.blocks_count = exported.blocks_count;
            report.car_bytes = Some(exported.car_bytes);
            Ok(report)
        }
    }
}

async fn unixfs_add<S: BlobStore>(
    store: &Arc<S>,
    input: &Path,
) -> Result<UnixfsAdded, WorkloadError> {
    store
        .unixfs_add(input)
        .await
        .map_err(|source| WorkloadError::Op {
            op: "unixfs-add",
            index: 0,
            source,
        })
}

/// The import covered the whole input and named a root.
fn check_added(args: &HarnessArgs, added: &UnixfsAdded) -> Result<(), WorkloadError> {
    if added.size_bytes != args.total_bytes {
        return Err(WorkloadError::Verify(format!(
            "unixfs-add imported {} bytes as {}, expected {}",
            added.size_bytes, added.root_cid, args.total_bytes
        )));
    }
    if added.root_cid.is_empty() || !added.root_cid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(WorkloadError::Verify(format!(
            "unixfs-add returned {:?}, not a multibase CID",
            added.root_cid
        )));
    }
    Ok(())
}

async fn put_during_gc<S: BlobStore>(
    args: &HarnessArgs,
    store: Arc<S>,
    base: Report,
) -> Result<Report, WorkloadError> {
    if !store.supports_gc() {
        return Err(WorkloadError::NoGc {
            system: store.system(),
        });
    }
    let fill = Arc::new(blobgen::blobs(args.seed, 0, args.count, args.size_bytes));
    let fresh = Arc::new(blobgen::blobs(
        args.seed,
        args.count as u64,
        args.count,
        args.size_bytes,
    ));
    let keys = put_all(&store, &fill, args.inflight).await?.results;
    // Even indices lose their pin; odd ones must survive GC.
    let unpinned: Arc<Vec<S::Key>> = Arc::new(keys.iter().step_by(2).cloned().collect());
    let pinned: Vec<S::Key> = keys.iter().skip(1).step_by(2).cloned().collect();
    {
        let (store, unpinned) = (store.clone(), unpinned.clone());
        drive(unpinned.len(), args.inflight, move |i| {
            let (store, unpinned) = (store.clone(), unpinned.clone());
            async move {
                store
                    .unpin(&unpinned[i])
                    .await
                    .map_err(|source| WorkloadError::Op {
                        op: "unpin",
                        index: 2 * i,
                        source,
                    })
            }
        })
        .await?;
    }
    let gc_started = Instant::now();
    store
        .gc_trigger()
        .await
        .map_err(|source| WorkloadError::Op {
            op: "gc-trigger",
            index: 0,
            source,
        })?;
    let poller = tokio::spawn(poll_gone(store.clone(), unpinned.clone(), gc_started));
    let driven = put_all(&store, &fresh, args.inflight).await?;
    let puts_ended = Instant::now();
    let gone_at = {
        let deadline = puts_ended + GC_WAIT_AFTER_PUTS_MAX;
        let mut poller = poller;
        tokio::select! {
            result = &mut poller => result??,
            _ = tokio::time::sleep_until(deadline.into()) => {
                poller.abort();
                None
            }
        }
    };
    for (n, key) in pinned.iter().enumerate() {
        if is_gone(&store, key, 2 * n + 1).await? {
            return Err(WorkloadError::Verify(format!(
                "gc removed pinned blob {}",
                2 * n + 1
            )));
        }
    }
    for (i, key) in driven.results.iter().enumerate() {
        if is_gone(&store, key, args.count + i).await? {
            return Err(WorkloadError::Verify(format!(
                "gc removed blob {} put during gc",
                args.count + i
            )));
        }
    }
    let mut report = measured(base, &driven, args.size_bytes);
    report.gc = Some(GcOutcome {
        filled_count: args.count,
        unpinned_count: unpinned.len(),
        finished_during_puts: gone_at.is_some_and(|at| at <= puts_ended),
        finished: gone_at.is_some(),
        seconds: gone_at.map(|at| (at - gc_started).as_secs_f64()),
    });
    Ok(report)
}

async fn is_gone<S: BlobStore>(
    store: &Arc<S>,
    key: &S::Key,
    index: usize,
) -> Result<bool, WorkloadError> {
    store
        .is_gone(key)
        .await
        .map_err(|source| WorkloadError::Op {
            op: "is-gone",
            index,
            source,
        })
}

/// Returns when every unpinned blob is gone. A cursor walks the keys: once a
/// key is gone it stays gone, so each tick checks at most one pending key.
async fn poll_gone<S: BlobStore>(
    store: Arc<S>,
    unpinned: Arc<Vec<S::Key>>,
    started: Instant,
) -> Result<Option<Instant>, WorkloadError> {
    let mut cursor = 0;
    let mut tick = tokio::time::interval_at((started + GC_POLL_INTERVAL).into(), GC_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while cursor < unpinned.len() && is_gone(&store, &unpinned[cursor], 2 * cursor).await? {
            cursor += 1;
        }
        if cursor == unpinned.len() {
            return Ok(Some(Instant::now()));
        }
    }
}

fn measured<T>(mut report: Report, driven: &Driven<T>, size_bytes: usize) -> Report {
    let ops = driven.results.len() as u64;
    report.seconds = driven.elapsed.as_secs_f64();
    (report.ops_per_s, report.mb_per_s) = rates(ops, ops * size_bytes as u64, report.seconds);
    report.latency_us = driven.latency.summary();
    report
}

fn large_measured(mut report: Report, args: &HarnessArgs, elapsed: Duration) -> Report {
    let mut latency = Latency::new();
    latency.record(elapsed);
    report.size_bytes = args.total_bytes;
    report.count = 1;
    report.inflight = 1;
    report.seconds = elapsed.as_secs_f64();
    (report.ops_per_s, report.mb_per_s) = rates(1, args.total_bytes, report.seconds);
    report.latency_us = latency.summary();
    report
}

fn large_input(args: &HarnessArgs) -> Result<PathBuf, WorkloadError> {
    let input = args
        .input
        .clone()
        .ok_or(ArgsError::InputMissing(args.workload.name()))?;
    let len = std::fs::metadata(&input)
        .map_err(|source| WorkloadError::Input {
            path: input.clone(),
            source,
        })?
        .len();
    if len != args.total_bytes {
        return Err(WorkloadError::Verify(format!(
            "--input {} has {len} bytes but --total-bytes is {}",
            input.display(),
            args.total_bytes
        )));
    }
    Ok(input)
}

async fn hash_file(path: &Path) -> Result<blake3::Hash, WorkloadError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        std::fs::File::open(&path)
            .and_then(|file| hasher.update_reader(file).map(|_| ()))
            .map_err(|source| WorkloadError::Input {
                path: path.clone(),
                source,
            })?;
        Ok(hasher.finalize())
    })
    .await?
}

/// The whole `main` of a harness: parses `A` (which contains the protocol's
/// [`HarnessArgs`]), opens the store with `open`, runs the workload on a
/// multi-threaded tokio runtime, prints the JSON line and maps failure to a
/// non-zero exit with the cause on stderr.
pub fn harness_main<A, S, F, Fut>(open: F) -> ExitCode
where
    A: Parser + AsRef<HarnessArgs>,
    S: BlobStore,
    F: FnOnce(A) -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
{
    let cli = A::parse();
    let args = cli.as_ref().clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome: anyhow::Result<Report> = runtime.block_on(async move {
        args.validate()?;
        let store = Arc::new(open(cli).await?);
        let report = run_workload(&args, store.clone()).await?;
        store.close().await?;
        Ok(report)
    });
    match outcome {
        Ok(report) => {
            report.emit();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `sync`, then drops the clean page cache (`echo 1 > /proc/sys/vm/drop_caches`): the next reads
/// come from the disk. Needs root.
fn drop_page_cache() -> Result<(), WorkloadError> {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").map_err(WorkloadError::DropCaches)
}
