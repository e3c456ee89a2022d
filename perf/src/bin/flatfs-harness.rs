//! The flatfs-style baseline: one file per block, named by its BLAKE3 hash
//! under a two-hex-character shard directory, written the way go-ds-flatfs
//! does with `sync = true`: temp file, fdatasync, rename, fsync of the shard
//! directory. Blocking I/O runs on tokio's blocking pool, so K puts in flight
//! use K worker threads. It has no GC (flatfs leaves that to the layer above).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use metanode_perf::{BlobStore, ChunkSink, HarnessArgs, harness_main};

const READ_CHUNK_BYTES: usize = 1 << 20;

/// The on-disk layout and its blocking operations.
struct Blocks {
    blocks: PathBuf,
    workers: usize,
    temp_seq: AtomicU64,
}

impl Blocks {
    /// Creates the 256 shard directories up front (untimed) so puts never
    /// race on mkdir; flatfs creates them lazily, which costs the first put
    /// of each shard one more directory fsync.
    fn open(args: &HarnessArgs) -> anyhow::Result<Self> {
        let blocks = args.dir.join("blocks");
        for shard in 0..=255u8 {
            let dir = blocks.join(format!("{shard:02x}"));
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            sync_dir(&dir)?;
        }
        sync_dir(&blocks)?;
        sync_dir(&args.dir)?;
        Ok(Self {
            blocks,
            workers: args.inflight,
            temp_seq: AtomicU64::new(0),
        })
    }

    fn block_path(&self, key: &blake3::Hash) -> (PathBuf, PathBuf) {
        let hex = key.to_hex();
        let shard = self.blocks.join(&hex[..2]);
        let path = shard.join(format!("{hex}.data"));
        (shard, path)
    }

    fn temp_path(&self, shard: &Path) -> PathBuf {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        shard.join(format!(".put-{}-{seq}", std::process::id()))
    }

    /// Makes a finished temp file the block: fdatasync, rename, fsync dir.
    fn commit(&self, temp: &Path, file: &File, key: &blake3::Hash) -> io::Result<()> {
        let (shard, path) = self.block_path(key);
        file.sync_data()?;
        fs::rename(temp, &path)?;
        sync_dir(&shard)
    }

    fn put_blocking(&self, data: &[u8]) -> io::Result<blake3::Hash> {
        let key = blake3::hash(data);
        let (shard, _) = self.block_path(&key);
        let temp = self.temp_path(&shard);
        let mut file = create_new(&temp)?;
        file.write_all(data)?;
        self.commit(&temp, &file, &key)?;
        Ok(key)
    }

    fn add_file_blocking(&self, input: &Path) -> io::Result<blake3::Hash> {
        let mut source = File::open(input)?;
        let temp = self.temp_path(&self.blocks);
        let mut file = create_new(&temp)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            let n = source.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
        }
        let key = hasher.finalize();
        self.commit(&temp, &file, &key)?;
        Ok(key)
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Cheap to clone into blocking-pool closures.
#[derive(Clone)]
struct FlatFs(Arc<Blocks>);

impl BlobStore for FlatFs {
    type Key = blake3::Hash;

    fn system(&self) -> String {
        "flatfs".into()
    }

    fn durability(&self) -> String {
        "fdatasync(temp file) + rename + fsync(shard dir) before ack (go-ds-flatfs sync=true)"
            .into()
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "layout": "blocks/<first 2 hex chars of BLAKE3>/<BLAKE3 hex>.data, one file per blob",
            "put": "O_EXCL temp file in the shard dir, write, fdatasync, rename, fsync shard dir",
            "workers": self.0.workers,
            "worker_model": "tokio blocking pool, one thread per put in flight",
            "shard_dirs": "pre-created (256)",
            "hash": "BLAKE3, computed on the put path",
        })
    }

    async fn put(&self, data: Bytes) -> anyhow::Result<Self::Key> {
        let this = self.0.clone();
        blocking(move || this.put_blocking(&data)).await
    }

    async fn get(&self, key: &Self::Key) -> anyhow::Result<Bytes> {
        let (_, path) = self.0.block_path(key);
        let data = blocking(move || fs::read(&path)).await?;
        Ok(Bytes::from(data))
    }

    async fn add_file(&self, path: &Path) -> anyhow::Result<Self::Key> {
        let (this, input) = (self.0.clone(), path.to_path_buf());
        blocking(move || this.add_file_blocking(&input)).await
    }

    async fn read_to(&self, key: &Self::Key, sink: &mut ChunkSink) -> anyhow::Result<()> {
        let (_, path) = self.0.block_path(key);
        let file = Arc::new(blocking(move || File::open(path)).await?);
        let mut offset: u64 = 0;
        loop {
            let file = file.clone();
            let chunk = blocking(move || {
                let mut buf = vec![0u8; READ_CHUNK_BYTES];
                let n = file.read_at(&mut buf, offset)?;
                buf.truncate(n);
                Ok(buf)
            })
            .await?;
            if chunk.is_empty() {
                return Ok(());
            }
            offset += chunk.len() as u64;
            sink.push(Bytes::from(chunk)).await?;
        }
    }
}

fn main() -> ExitCode {
    harness_main(|args: HarnessArgs| async move { Ok(FlatFs(Arc::new(Blocks::open(&args)?))) })
}
