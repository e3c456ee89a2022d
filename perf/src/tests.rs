//! The runner against an in-memory store, including stores that misbehave.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;

use crate::runner::{BlobStore, CarExported, ChunkSink, UnixfsAdded, WorkloadError, run_workload};
use crate::{HarnessArgs, blobgen};

#[derive(Default)]
struct MemStore {
    blobs: Mutex<HashMap<blake3::Hash, Bytes>>,
    pinned: Mutex<HashSet<blake3::Hash>>,
    corrupt_gets: bool,
    gc_removes_pinned: bool,
    /// Runs unixfs-add and car-export: a "file" is one blob, its root the
    /// BLAKE3 hex prefixed with `mem`, its CAR the file plus CAR_OVERHEAD.
    unixfs: bool,
    /// car-export claims a CAR no larger than the file.
    car_short: bool,
    /// verify_car rejects every export.
    car_rejected: bool,
}

/// Header and section framing of MemStore's pretend CAR.
const CAR_OVERHEAD_BYTES: u64 = 100;
const CHUNK_BYTES: u64 = 262_144;

impl MemStore {
    fn unixfs() -> Self {
        Self {
            unixfs: true,
            ..Self::default()
        }
    }

    fn root_of(data: &[u8]) -> String {
        format!("mem{}", blake3::hash(data).to_hex())
    }
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
    fn supports_unixfs(&self) -> bool {
        self.unixfs
    }
    async fn unixfs_add(&self, path: &Path) -> anyhow::Result<UnixfsAdded> {
        let data = std::fs::read(path)?;
        let root_cid = Self::root_of(&data);
        let size_bytes = data.len() as u64;
        self.put(Bytes::from(data)).await?;
        Ok(UnixfsAdded {
            root_cid,
            size_bytes,
            blocks_count: Some(size_bytes.div_ceil(CHUNK_BYTES) + 1),
        })
    }
    async fn car_export(&self, root: &str) -> anyhow::Result<CarExported> {
        let blobs = self.blobs.lock().expect("lock");
        let data = blobs
            .values()
            .find(|d| Self::root_of(d) == root)
            .ok_or_else(|| anyhow::anyhow!("no dag {root}"))?;
        let len = data.len() as u64;
        Ok(CarExported {
            car_bytes: if self.car_short {
                len
            } else {
                len + CAR_OVERHEAD_BYTES
            },
            blocks_count: Some(len.div_ceil(CHUNK_BYTES) + 1),
        })
    }
    async fn verify_car(
        &self,
        _input: &Path,
        root: &str,
        exported: &CarExported,
    ) -> anyhow::Result<()> {
        if self.car_rejected {
            anyhow::bail!(
                "{} bytes for {root} is not the expected size",
                exported.car_bytes
            );
        }
        Ok(())
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

fn large_input(dir: &tempfile::TempDir, size_bytes: u64) -> std::path::PathBuf {
    let input = dir.path().join("large.bin");
    blobgen::write_large_file(&input, 3, size_bytes).expect("write input");
    input
}

#[test]
fn unixfs_add_reports_the_root_and_the_file_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = large_input(&dir, 600_000);
    let a = args(&[
        "--workload",
        "unixfs-add",
        "--total-bytes",
        "600000",
        "--input",
        input.to_str().expect("utf-8 path"),
    ]);
    let report = runtime()
        .block_on(run_workload(&a, Arc::new(MemStore::unixfs())))
        .expect("unixfs-add runs");
    let data = std::fs::read(&input).expect("input");
    assert_eq!(report.workload, "unixfs-add");
    assert_eq!(report.root_cid, Some(MemStore::root_of(&data)));
    assert_eq!(report.size_bytes, 600_000);
    // Three 256 KiB chunks (the last one partial) and a root.
    assert_eq!(report.blocks_count, Some(4));
    assert_eq!(report.car_bytes, None);
    assert_eq!(report.count, 1);
    assert_eq!(report.mb_per_s, 0.6 / report.seconds.max(1e-9));
    let line: serde_json::Value = serde_json::from_str(&report.to_line()).expect("json");
    assert_eq!(line["root_cid"], MemStore::root_of(&data).as_str());
    assert_eq!(line["workload"], "unixfs-add");
}

#[test]
fn car_export_rates_the_car_bytes_and_checks_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = large_input(&dir, 300_000);
    let a = args(&[
        "--workload",
        "car-export",
        "--total-bytes",
        "300000",
        "--input",
        input.to_str().expect("utf-8 path"),
    ]);
    let report = runtime()
        .block_on(run_workload(&a, Arc::new(MemStore::unixfs())))
        .expect("car-export runs");
    let car_bytes = 300_000 + CAR_OVERHEAD_BYTES;
    assert_eq!(report.car_bytes, Some(car_bytes));
    assert_eq!(report.blocks_count, Some(3));
    assert_eq!(report.size_bytes, 300_000);
    assert_eq!(
        report.mb_per_s,
        car_bytes as f64 / 1e6 / report.seconds.max(1e-9)
    );
    let data = std::fs::read(&input).expect("input");
    assert_eq!(report.root_cid, Some(MemStore::root_of(&data)));

    let short = Arc::new(MemStore {
        car_short: true,
        ..MemStore::unixfs()
    });
    let err = runtime()
        .block_on(run_workload(&a, short))
        .expect_err("a CAR no larger than the file is caught");
    assert!(
        matches!(&err, WorkloadError::Verify(m) if m.contains("300000 bytes, not more than")),
        "{err}"
    );

    let rejected = Arc::new(MemStore {
        car_rejected: true,
        ..MemStore::unixfs()
    });
    let err = runtime()
        .block_on(run_workload(&a, rejected))
        .expect_err("the system's own check is applied");
    assert!(
        matches!(&err, WorkloadError::Verify(m) if m.contains("300100 bytes")),
        "{err}"
    );
}

#[test]
fn unixfs_workloads_need_a_system_with_unixfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = large_input(&dir, 1000);
    for workload in ["unixfs-add", "car-export"] {
        let a = args(&[
            "--workload",
            workload,
            "--total-bytes",
            "1000",
            "--input",
            input.to_str().expect("utf-8 path"),
        ]);
        let err = runtime()
            .block_on(run_workload(&a, Arc::new(MemStore::default())))
            .expect_err("no unixfs");
        assert!(
            matches!(&err, WorkloadError::NoUnixfs { system, workload: w } if system == "mem" && *w == workload),
            "{err}"
        );
    }
    let wrong_size = args(&[
        "--workload",
        "unixfs-add",
        "--total-bytes",
        "999",
        "--input",
        input.to_str().expect("utf-8 path"),
    ]);
    let err = runtime()
        .block_on(run_workload(&wrong_size, Arc::new(MemStore::unixfs())))
        .expect_err("input size mismatch");
    assert!(matches!(err, WorkloadError::Verify(_)), "{err}");
}
