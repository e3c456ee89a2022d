//! Real filesystem faults (as root): a tiny tmpfs that fills up, and a data
//! dir remounted read-only. The FaultyIo tests in store.rs cover the same
//! paths without root; these prove the kernel's real errors map the same way.

use std::path::Path;
use std::process::Command;

use metanode_core::cid::ContentId;
use metanode_store::{IoMode, OpenError, PutError, Store, StoreOptions};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: cannot mount tmpfs (not root?)");
        return None;
    }
    Some(Mount(dir.to_path_buf()))
}

fn opts(dir: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir.join("store"));
    o.io = IoMode::Auto;
    // Small segments and batches: the tmpfs is only a few MiB.
    o.segment_size_bytes_max = 1 << 20;
    o.group_commit_batch_bytes_max = 512 * 1024;
    o
}

#[test]
fn full_disk_gives_a_clear_error_and_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_m) = mount_tmpfs(dir.path(), "4m") else {
        return;
    };
    let store = Store::open(opts(dir.path())).unwrap();
    let large = vec![3u8; 1 << 20];
    let large_cid = store.put(&large, true).unwrap().cid;
    let mut acked = vec![];
    let mut err = None;
    for i in 0u32..10_000 {
        let mut data = vec![0u8; 16 * 1024];
        data[..4].copy_from_slice(&i.to_le_bytes());
        match store.put(&data, true) {
            Ok(out) => acked.push((out.cid, data)),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("a 4 MiB tmpfs must fill up");
    assert!(matches!(err, PutError::NoSpace(_)), "{err}");
    assert!(err.to_string().contains("out of space"), "{err}");
    // A large blob fails the same way and leaves no temp file behind.
    let big = vec![7u8; 3 << 20];
    let err = store.put(&big, true).unwrap_err();
    assert!(matches!(err, PutError::NoSpace(_)), "{err}");
    let tmp_left = std::fs::read_dir(dir.path().join("store/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_left, 0, "temp files left after a failed large put");
    // Everything acknowledged reads back, now and after a restart.
    for (cid, d) in &acked {
        assert_eq!(&store.get(cid).unwrap(), d);
    }
    drop(store);
    let store = Store::open(opts(dir.path())).unwrap();
    for (cid, d) in &acked {
        assert_eq!(&store.get(cid).unwrap(), d);
    }
    assert!(store.verify(&|_| {}).unwrap().damaged.is_empty());
    // On the full disk, pin changes and deletes still work (they use the
    // segment reserve): unpin half, delete the large blob (frees its file),
    // then GC compacts and new puts fit again.
    for (cid, _) in acked.iter().take(acked.len() / 2) {
        store.set_pinned(cid, false).unwrap();
    }
    store.set_pinned(&large_cid, false).unwrap();
    assert!(store.remove(&large_cid).unwrap());
    let report = store.gc(&|_| {}).unwrap();
    assert_eq!(report.blobs_removed, (acked.len() / 2) as u64, "{report:?}");
    assert!(report.segments_compacted > 0, "{report:?}");
    store.put(b"room again", true).unwrap();
    for (cid, d) in acked.iter().skip(acked.len() / 2) {
        assert_eq!(&store.get(cid).unwrap(), d);
    }
}

#[test]
fn read_only_data_dir_is_refused_for_writing_and_readable_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_m) = mount_tmpfs(dir.path(), "16m") else {
        return;
    };
    let data = b"written before the remount".to_vec();
    {
        let store = Store::open(opts(dir.path())).unwrap();
        store.put(&data, true).unwrap();
    }
    let ok = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "remount ro");
    let err = Store::open(opts(dir.path())).unwrap_err();
    assert!(matches!(err, OpenError::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    let mut ro = opts(dir.path());
    ro.read_only = true;
    let store = Store::open(ro).unwrap();
    assert_eq!(store.get(&ContentId::raw_blake3_of(&data)).unwrap(), data);
    assert!(matches!(
        store.put(b"x", true),
        Err(PutError::OpenedReadOnly)
    ));
    assert!(store.verify(&|_| {}).unwrap().damaged.is_empty());
}
