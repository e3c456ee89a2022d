//! Harness for the iroh-blobs 0.104 `FsStore` peer (store only: no endpoint,
//! so no relay, discovery or networking is involved).
//!
//! Durability, read from the 0.104 source: an add is acknowledged once its
//! metadata is written into the meta actor's open redb write transaction,
//! which commits (redb `Durability::Immediate`, i.e. fsync) only when a batch
//! closes (1000 writes, 500 ms, or a top-level command). Blobs above the 16
//! KiB inline limit are written to a temp file and renamed into `data/`
//! without any fsync. So a default add is NOT durable at ack. This harness
//! makes each put durable before counting it: after the add it calls
//! `Store::sync_db` (a top-level command, so the open transaction commits with
//! fsync before it answers) and, for blobs stored as files, fsyncs the
//! `.data`/`.obao4` files and the `data/` directory itself.
//!
//! GC: 0.104 has no "collect now"; it runs every `GcConfig::interval`. Its
//! mark phase lists tags, then temp tags, so a blob added with the usual
//! `add_bytes(..).await` (temp tag swapped for an auto tag) can be collected
//! although tagged; put-during-gc caught that on every try. Puts here
//! therefore create the tag before adding the blob (see `put`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use iroh_blobs::api::Tag;
use iroh_blobs::api::blobs::BlobStatus;
use iroh_blobs::api::blobs::EncodedItem;
use iroh_blobs::api::proto::ExportRangesItem;
use iroh_blobs::protocol::ChunkRanges;
use iroh_blobs::store::GcConfig;
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::store::fs::options::{BatchOptions, InlineOptions, Options, PathOptions};
use iroh_blobs::{Hash, HashAndFormat};
use metanode_perf::{BlobStore, ChunkSink, HarnessArgs, Workload, harness_main};

/// GC pass interval for put-during-gc: short, so passes overlap the timed
/// puts (iroh-blobs runs GC on a fixed interval; it has no "run now").
const GC_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Key {
    hash: Hash,
    tag: Tag,
    size_bytes: u64,
}

struct Iroh {
    store: FsStore,
    paths: PathOptions,
    inline: InlineOptions,
    batch: BatchOptions,
    gc: bool,
}

impl Iroh {
    async fn open(args: &HarnessArgs) -> anyhow::Result<Self> {
        let mut options = Options::new(&args.dir);
        let gc = args.workload == Workload::PutDuringGc;
        if gc {
            options.gc = Some(GcConfig {
                interval: GC_INTERVAL,
                add_protected: None,
            });
        }
        let (paths, inline, batch) = (
            options.path.clone(),
            options.inline.clone(),
            options.batch.clone(),
        );
        let store = FsStore::load_with_opts(args.dir.join("blobs.db"), options)
            .await
            .with_context(|| format!("load FsStore in {}", args.dir.display()))?;
        Ok(Self {
            store,
            paths,
            inline,
            batch,
            gc,
        })
    }

    /// What iroh-blobs leaves out of its ack: the redb commit and the fsync
    /// of owned data/outboard files (and of the directory they were renamed
    /// into).
    async fn make_durable(&self, hash: Hash, size_bytes: u64) -> anyhow::Result<()> {
        self.store.sync_db().await.context("sync_db")?;
        if size_bytes <= self.inline.max_data_inlined {
            return Ok(());
        }
        let files = [self.paths.data_path(&hash), self.paths.outboard_path(&hash)];
        let dir = self.paths.data_path.clone();
        tokio::task::spawn_blocking(move || fsync_files(&files, &dir)).await??;
        Ok(())
    }
}

fn fsync_files(files: &[PathBuf], dir: &Path) -> anyhow::Result<()> {
    for path in files {
        match std::fs::File::open(path) {
            Ok(file) => file
                .sync_all()
                .with_context(|| format!("fsync {}", path.display()))?,
            // An outboard small enough to be inlined has no file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

impl BlobStore for Iroh {
    type Key = Key;

    fn system(&self) -> String {
        "iroh-blobs".into()
    }

    fn durability(&self) -> String {
        "durable before ack, forced by the harness: add, then Store::sync_db (redb commit with \
         Durability::Immediate = fsync), then fsync of the .data/.obao4 files and data/ dir for \
         blobs over the 16 KiB inline limit. FsStore 0.104 by default acks before its redb commit \
         (batched up to 1000 writes / 500 ms) and never fsyncs data files."
            .into()
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "crate": "iroh-blobs 0.104.0 (default-features off, fs-store on)",
            "store": "FsStore::load_with_opts, store only (no endpoint, no relay, no discovery)",
            "inline_max_data_bytes": self.inline.max_data_inlined,
            "inline_max_outboard_bytes": self.inline.max_outboard_inlined,
            "batch_max_write": self.batch.max_write_batch,
            "batch_max_write_ms": self.batch.max_write_duration.as_millis() as u64,
            "put": "Tags::set(bench-<hash>, hash) then Blobs::add_bytes(..).temp_tag() + durability steps (tag first: add_bytes(..).await races with GC in 0.104)",
            "get": "<= 16 KiB: Blobs::export_ranges(hash, 0..u64::MAX); larger: Blobs::get_bytes (export_bao); the faster of the two per size",
            "read_large": "Blobs::export_bao(hash, all) leaves, streamed to the verifier",
            "add_large": "Blobs::add_path(..).await (ImportMode::Copy, auto tag; GC off) + durability steps",
            "gc": if self.gc {
                serde_json::json!({"interval_ms": GC_INTERVAL.as_millis() as u64, "unpin": "Tags::delete"})
            } else {
                serde_json::Value::Null
            },
        })
    }

    async fn put(&self, data: Bytes) -> anyhow::Result<Key> {
        let size_bytes = data.len() as u64;
        // Tag first, add second. `add_bytes(..).await` (temp tag, then an
        // auto tag, then the temp tag dropped) loses blobs to a concurrent GC
        // in 0.104: the mark phase lists tags before temp tags, so a blob
        // whose temp tag is swapped for a tag in between is collected (this
        // bench's put-during-gc caught it on every try). A tag that exists
        // before the blob does leaves no such window.
        let hash = Hash::new(&data);
        let tag = Tag::from(format!("bench-{}", hash.to_hex()).as_str());
        self.store
            .tags()
            .set(&tag, HashAndFormat::raw(hash))
            .await
            .context("set tag")?;
        let temp = self
            .store
            .add_bytes(data)
            .temp_tag()
            .await
            .context("add_bytes")?;
        anyhow::ensure!(
            temp.hash() == hash,
            "iroh-blobs stored the blob as {} but its BLAKE3 hash is {hash}",
            temp.hash()
        );
        drop(temp);
        self.make_durable(hash, size_bytes).await?;
        Ok(Key {
            hash,
            tag,
            size_bytes,
        })
    }

    async fn get(&self, key: &Key) -> anyhow::Result<Bytes> {
        // The faster export per size, measured here: export_ranges answers
        // in 1 KiB pieces (best for inlined blobs), export_bao in 16 KiB
        // leaves (best above the inline limit).
        if key.size_bytes > self.inline.max_data_inlined {
            return self.store.get_bytes(key.hash).await.context("get_bytes");
        }
        let mut items = self.store.export_ranges(key.hash, 0..u64::MAX).stream();
        let mut data = Vec::new();
        while let Some(item) = items.next().await {
            match item {
                ExportRangesItem::Size(size) => data.reserve_exact(size as usize),
                ExportRangesItem::Data(leaf) => {
                    anyhow::ensure!(
                        leaf.offset == data.len() as u64,
                        "export of {} jumped to offset {} at {}",
                        key.hash,
                        leaf.offset,
                        data.len()
                    );
                    data.extend_from_slice(&leaf.data);
                }
                ExportRangesItem::Error(e) => return Err(e).context("export_ranges"),
            }
        }
        Ok(Bytes::from(data))
    }

    async fn add_file(&self, path: &Path) -> anyhow::Result<Key> {
        let size_bytes = std::fs::metadata(path)?.len();
        // FsStore refuses relative import paths.
        let path = std::path::absolute(path)?;
        let info = self.store.add_path(&path).await.context("add_path")?;
        self.make_durable(info.hash, size_bytes).await?;
        Ok(Key {
            hash: info.hash,
            tag: info.name,
            size_bytes,
        })
    }

    async fn read_to(&self, key: &Key, sink: &mut ChunkSink) -> anyhow::Result<()> {
        // export_bao sends 16 KiB leaves; export_ranges sends 1 KiB pieces,
        // which measured several times slower for large blobs.
        let mut items = self.store.export_bao(key.hash, ChunkRanges::all()).stream();
        let mut offset = 0u64;
        while let Some(item) = items.next().await {
            match item {
                EncodedItem::Leaf(leaf) => {
                    anyhow::ensure!(
                        leaf.offset == offset,
                        "export of {} jumped to offset {} at {offset}",
                        key.hash,
                        leaf.offset
                    );
                    offset += leaf.data.len() as u64;
                    sink.push(leaf.data).await?;
                }
                EncodedItem::Size(_) | EncodedItem::Parent(_) => {}
                EncodedItem::Done => break,
                EncodedItem::Error(e) => return Err(e).context("export_bao"),
            }
        }
        Ok(())
    }

    fn supports_gc(&self) -> bool {
        self.gc
    }

    async fn unpin(&self, key: &Key) -> anyhow::Result<()> {
        self.store
            .tags()
            .delete(&key.tag)
            .await
            .context("delete tag")?;
        Ok(())
    }

    async fn gc_trigger(&self) -> anyhow::Result<()> {
        // GC already runs every GC_INTERVAL; the next pass sees the unpins.
        Ok(())
    }

    async fn is_gone(&self, key: &Key) -> anyhow::Result<bool> {
        let status = self.store.status(key.hash).await.context("status")?;
        Ok(matches!(status, BlobStatus::NotFound))
    }

    async fn close(&self) -> anyhow::Result<()> {
        self.store.shutdown().await.context("shutdown")?;
        Ok(())
    }
}

fn main() -> ExitCode {
    harness_main(|args: HarnessArgs| async move { Iroh::open(&args).await })
}
