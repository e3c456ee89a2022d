//! The runner against an in-memory store, including stores that misbehave.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;

use crate::runner::{BlobStore, ChunkSink, WorkloadError, run_workload};
use crate::{HarnessArgs, blobgen};

#[derive(Default)]
struct MemStore {
    blobs: Mutex<HashMap<blake3::Hash, Bytes>>,
    pinned: Mutex<HashSet<blake3::Hash>>,
    corrupt_gets: bool,
    gc_removes_pinned: bool,
}

impl BlobStore for MemStore {
    type Key = blake3::Hash;

    fn system(&self) -> String {
        "mem".into()
    }
    fn durability(&self) -> String {
        "none (memory)".into()
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    async fn put(&self, data: Bytes) -> anyhow::Result<Self::Key> {
        let key = blake3::hash(&data);
        self.blobs.lock().expect("lock").insert(key, data);
        self.pinned.lock().expect("lock").insert(key);
        Ok(key)
    }
    async fn get(&self, key: &Self::Key) -> anyhow::Result<Bytes> {
        let data = self.blobs.lock().expect("lock").get(key).cloned();
        let data = data.ok_or_else(|| anyhow::anyhow!("missing {key}"))?;
        if self.corrupt_gets {
            let mut bad = data.to_vec();
            bad[0] ^= 1;
            return Ok(Bytes::from(bad));
        }
        Ok(data)
    }
    async fn add_file(&self, path: &Path) -> anyhow::Result<Self::Key> {
        self.put(Bytes::from(std::fs::read(path)?)).await
    }
    async fn read_to(&self, key: &Self::Key, sink: &mut ChunkSink) -> anyhow::Result<()> {
        let data = self.get(key).await?;
        for start in (0..data.len()).step_by(1000) {
            sink.push(data.slice(start..data.len().min(start + 1000)))
                .await?;
        }
        Ok(())
    }
    fn supports_gc(&self) -> bool {
        true
    }
    async fn unpin(&self, key: &Self::Key) -> anyhow::Result<()> {
        self.pinned.lock().expect("lock").remove(key);
        Ok(())
    }
    async fn gc_trigger(&self) -> anyhow::Result<()> {
        let pinned = self.pinned.lock().expect("lock").clone();
        let remove_pinned = self.gc_removes_pinned;
        self.blobs
            .lock()
            .expect("lock")
            .retain(|k, _| pinned.contains(k) && !remove_pinned);
        Ok(())
    }
    async fn is_gone(&self, key: &Self::Key) -> anyhow::Result<bool> {
        Ok(!self.blobs.lock().expect("lock").contains_key(key))
    }
}

fn args(extra: &[&str]) -> HarnessArgs {
    let mut argv = vec!["h", "--dir", "/nonexistent"];
    argv.extend_from_slice(extra);
    HarnessArgs::try_parse_from(argv).expect("valid arguments")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn put_reports_every_operation() {
    let store = Arc::new(MemStore::default());
    let a = args(&[
        "--workload",
        "put",
        "--count",
        "100",
        "--size-bytes",
        "64",
        "--inflight",
        "8",
    ]);
    let report = runtime()
        .block_on(run_workload(&a, store.clone()))
        .expect("put runs");
    assert_eq!(report.count, 100);
    assert_eq!(store.blobs.lock().expect("lock").len(), 100);
    assert!(report.ops_per_s > 0.0);
    assert!(report.latency_us.is_some());
}

#[test]
fn get_verifies_the_bytes() {
    let a = args(&["--workload", "get", "--count", "50", "--size-bytes", "100"]);
    let good = Arc::new(MemStore::default());
    runtime()
        .block_on(run_workload(&a, good))
        .expect("get runs");
    let bad = Arc::new(MemStore {
        corrupt_gets: true,
        ..MemStore::default()
    });
    let err = runtime()
        .block_on(run_workload(&a, bad))
        .expect_err("corrupt data is caught");
    assert!(matches!(err, WorkloadError::Verify(_)), "{err}");
}

#[test]
fn read_large_verifies_length_and_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("large.bin");
    blobgen::write_large_file(&input, 1, 10_001).expect("write input");
    let input_arg = input.to_str().expect("utf-8 path");
    let a = args(&[
        "--workload",
        "read-large",
        "--total-bytes",
        "10001",
        "--input",
        input_arg,
    ]);
    let report = runtime()
        .block_on(run_workload(&a, Arc::new(MemStore::default())))
        .expect("read-large runs");
    assert_eq!(report.size_bytes, 10_001);
    let wrong = args(&[
        "--workload",
        "add-large",
        "--total-bytes",
        "10000",
        "--input",
        input_arg,
    ]);
    let err = runtime()
        .block_on(run_workload(&wrong, Arc::new(MemStore::default())))
        .expect_err("size mismatch is caught");
    assert!(matches!(err, WorkloadError::Verify(_)), "{err}");
}

#[test]
fn put_during_gc_reports_gc_and_catches_lost_pins() {
    let a = args(&[
        "--workload",
        "put-during-gc",
        "--count",
        "40",
        "--size-bytes",
        "32",
    ]);
    let store = Arc::new(MemStore::default());
    let report = runtime()
        .block_on(run_workload(&a, store.clone()))
        .expect("put-during-gc runs");
    let gc = report.gc.expect("gc outcome");
    assert!(gc.finished);
    assert_eq!(gc.unpinned_count, 20);
    // 20 pinned fill blobs + 40 fresh ones survive.
    assert_eq!(store.blobs.lock().expect("lock").len(), 60);

    let careless = Arc::new(MemStore {
        gc_removes_pinned: true,
        ..MemStore::default()
    });
    let err = runtime()
        .block_on(run_workload(&a, careless))
        .expect_err("a gc that removes pinned blobs is caught");
    assert!(matches!(err, WorkloadError::Verify(_)), "{err}");
}
