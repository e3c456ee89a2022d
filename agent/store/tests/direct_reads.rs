//! Packed records that are not in the page cache are read with O_DIRECT;
//! cached ones, and every read on a filesystem that refuses O_DIRECT, stay
//! buffered. The bytes served and the damage reported must not depend on
//! which way a record was read.
//!
//! These tests evict segments from the page cache with
//! `posix_fadvise(DONTNEED)`, which a tmpfs ignores, so they run in the
//! target dir (a real disk) rather than in a /tmp that may be tmpfs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metanode_core::cid::ContentId;
use metanode_store::{GetError, IoMode, Store, StoreOptions};
use metanode_sys::{FileIo, PosixIo};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn blob(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn modes() -> Vec<IoMode> {
    let mut m = vec![IoMode::Posix];
    if metanode_sys::UringIo::probe().is_ok() {
        m.push(IoMode::IoUring);
    }
    m
}

fn opts(dir: &Path, io: IoMode) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.io = io;
    o.direct_reads = true;
    o
}

/// A temp dir on the target dir's filesystem (see the module comment).
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Whether the filesystem of `dir` does O_DIRECT reads, and whether
/// DONTNEED really evicts there (tmpfs keeps its pages); the tests that
/// need both say why they stop when either is missing.
fn direct_reads_work_in(dir: &Path) -> bool {
    let path = dir.join("probe");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let works = match opened {
        Ok(f) => {
            let mut buf = AlignedBuf::new(4096);
            f.read_exact_at(buf.as_mut(), 0).is_ok() && buf.as_mut()[0] == 7
        }
        Err(_) => false,
    };
    std::fs::remove_file(&path).unwrap();
    if !works {
        eprintln!(
            "skipped: {} does not do O_DIRECT reads; the direct read path is not exercised here",
            dir.display()
        );
    }
    works
}

/// 4096-aligned memory for the probe's own O_DIRECT read.
struct AlignedBuf {
    bytes: Vec<u8>,
    at: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let bytes = vec![0u8; len + 4096];
        let at = bytes.as_ptr().align_offset(4096);
        Self { bytes, at, len }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.at..self.at + self.len]
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Flush and drop every segment's pages from the page cache.
fn evict_segments(dir: &Path) {
    for seg in segment_files(dir) {
        let f = File::open(&seg).unwrap();
        f.sync_all().unwrap();
        // SAFETY: fadvise only takes the fd number and plain integers.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "fadvise DONTNEED on {}", seg.display());
    }
}

/// Where `payload` starts in the segment file (random bytes: unique).
fn payload_offset(seg: &Path, payload: &[u8]) -> u64 {
    let all = std::fs::read(seg).unwrap();
    let probe = &payload[..64];
    all.windows(probe.len())
        .position(|w| w == probe)
        .expect("payload is in the segment") as u64
}

#[test]
fn cold_records_are_read_direct_and_hot_ones_buffered() {
    for mode in modes() {
        let dir = disk_dir();
        if !direct_reads_work_in(dir.path()) {
            return;
        }
        let store = Store::open(opts(dir.path(), mode)).unwrap();
        let mut rng = StdRng::seed_from_u64(21);
        // Odd sizes put records at every alignment; the 256 KiB ones are
        // the UnixFS leaves of a real export.
        let blobs: Vec<Vec<u8>> = [0usize, 1, 100, 4096, 5000, 65_537, 256 * 1024, 256 * 1024]
            .iter()
            .map(|&len| blob(&mut rng, len))
            .collect();
        let cids: Vec<ContentId> = blobs
            .iter()
            .map(|d| store.put(d, false).unwrap().cid)
            .collect();

        // Just written: in the page cache, so read buffered.
        let mut buf = Vec::new();
        for (cid, data) in cids.iter().zip(&blobs) {
            store.get_into(cid, &mut buf).unwrap();
            assert_eq!(&buf, data, "{mode:?}");
        }
        assert_eq!(
            store.stats().direct_read_bytes_total,
            0,
            "{mode:?}: hot records went direct"
        );

        evict_segments(dir.path());
        for (cid, data) in cids.iter().zip(&blobs) {
            store.get_into(cid, &mut buf).unwrap();
            assert_eq!(&buf, data, "{mode:?}");
            // A fresh buffer each time too (nothing left from the last read).
            assert_eq!(&store.get(cid).unwrap(), data, "{mode:?}");
        }
        let direct = store.stats().direct_read_bytes_total;
        let big = 256 * 1024 * 2;
        assert!(
            direct >= big,
            "{mode:?}: only {direct} bytes read direct after eviction"
        );
    }
}

/// A buffered write that is not yet on the disk is what an O_DIRECT read
/// of the same range returns: Linux writes the range back before the read.
/// The store relies on it: the writer writes a batch's partial pages
/// through the page cache while readers may read their records direct.
#[test]
fn direct_read_sees_a_buffered_write_not_yet_flushed() {
    let dir = disk_dir();
    if !direct_reads_work_in(dir.path()) {
        return;
    }
    let path = dir.path().join("f");
    let mut rng = StdRng::seed_from_u64(22);
    let data = blob(&mut rng, 3 * 4096 + 100);
    let f = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&data, 0).unwrap();
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let mut buf = AlignedBuf::new(3 * 4096);
    direct.read_exact_at(buf.as_mut(), 0).unwrap();
    assert_eq!(buf.as_mut(), &data[..3 * 4096]);
}

/// Put, evict at once, read back through the direct path: byte-exact.
#[test]
fn a_blob_just_written_reads_back_direct() {
    for mode in modes() {
        let dir = disk_dir();
        if !direct_reads_work_in(dir.path()) {
            return;
        }
        let store = Store::open(opts(dir.path(), mode)).unwrap();
        let mut rng = StdRng::seed_from_u64(23);
        for len in [3000usize, 256 * 1024, 256 * 1024 - 7] {
            let data = blob(&mut rng, len);
            let cid = store.put(&data, false).unwrap().cid;
            // A second blob after it, so the first one's last page is below
            // the segment's durable end (the last page is read buffered).
            store.put(&blob(&mut rng, 9000), false).unwrap();
            evict_segments(dir.path());
            let before = store.stats().direct_read_bytes_total;
            assert_eq!(store.get(&cid).unwrap(), data, "{mode:?} {len}");
            assert!(
                store.stats().direct_read_bytes_total >= before + len as u64,
                "{mode:?} {len}: not read direct"
            );
        }
    }
}

/// A flipped byte on the disk is reported as damage naming the blob when
/// the record is read direct, as it is when read buffered.
#[test]
fn damage_read_direct_is_corrupt() {
    for mode in modes() {
        let dir = disk_dir();
        if !direct_reads_work_in(dir.path()) {
            return;
        }
        let store = Store::open(opts(dir.path(), mode)).unwrap();
        let mut rng = StdRng::seed_from_u64(24);
        let damaged = blob(&mut rng, 200_000);
        let intact = blob(&mut rng, 200_000);
        let d = store.put(&damaged, false).unwrap().cid;
        let i = store.put(&intact, false).unwrap().cid;
        store.put(&blob(&mut rng, 9000), false).unwrap();
        let seg = segment_files(dir.path()).pop().unwrap();
        let at = payload_offset(&seg, &damaged) + 150_000;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
        evict_segments(dir.path());

        let before = store.stats().direct_read_bytes_total;
        let mut buf = intact.clone();
        match store.get_into(&d, &mut buf) {
            Err(e @ GetError::Corrupt { .. }) => {
                let GetError::Corrupt { cid, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(*cid, d, "{mode:?}");
                assert!(e.to_string().contains(&d.to_string()), "{mode:?}: {e}");
            }
            other => panic!("{mode:?}: damaged record served: {other:?}"),
        }
        assert!(buf.is_empty(), "{mode:?}: a failed read leaves nothing");
        assert!(
            store.stats().direct_read_bytes_total > before,
            "{mode:?}: the damaged record was not read direct"
        );
        assert_eq!(store.get(&i).unwrap(), intact, "{mode:?}");
        assert!(store.stats().verify_failures_total >= 1);
    }
}

/// A segment cut short under the open store: records past the cut are
/// reported truncated, exactly as a buffered read reports them, records
/// before it still read direct, and direct reads stay on.
#[test]
fn truncated_segment_read_direct_is_corrupt_truncated() {
    for mode in modes() {
        let dir = disk_dir();
        if !direct_reads_work_in(dir.path()) {
            return;
        }
        let store = Store::open(opts(dir.path(), mode)).unwrap();
        let mut rng = StdRng::seed_from_u64(25);
        let [a, b, c] = [0; 3].map(|_| blob(&mut rng, 100_000));
        let [ca, cb, cc] = [&a, &b, &c].map(|d| store.put(d, false).unwrap().cid);
        let seg = segment_files(dir.path()).pop().unwrap();
        // Cut at an unaligned offset in the middle of b's payload.
        let cut = payload_offset(&seg, &b) + 50_001;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        evict_segments(dir.path());
        let mut buf = Vec::new();
        for cid in [cb, cc] {
            match store.get_into(&cid, &mut buf) {
                Err(GetError::Corrupt { cid: got, reason }) => {
                    assert_eq!(got, cid, "{mode:?}");
                    assert!(reason.contains("truncated"), "{mode:?}: {reason}");
                }
                other => panic!("{mode:?}: truncated record served: {other:?}"),
            }
            assert!(buf.is_empty());
        }
        evict_segments(dir.path());
        let before = store.stats().direct_read_bytes_total;
        store.get_into(&ca, &mut buf).unwrap();
        assert_eq!(buf, a, "{mode:?}");
        assert!(
            store.stats().direct_read_bytes_total > before,
            "{mode:?}: a truncated segment turned direct reads off"
        );
    }
}

/// A `FileIo` over a filesystem that opens O_DIRECT files but refuses to
/// read them (EINVAL), as some FUSE and network filesystems do.
#[derive(Debug, Default)]
struct RefusesDirectReads {
    refused: AtomicU64,
}

impl FileIo for RefusesDirectReads {
    fn name(&self) -> &'static str {
        "refuses-direct-reads"
    }

    fn write_all_at(&self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        PosixIo.write_all_at(file, offset, bufs)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        PosixIo.sync_data(file)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        PosixIo.sync_all(file)
    }

    fn read_exact_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        // SAFETY: F_GETFL only reads the status flags of the fd `file` owns.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0);
        if flags & libc::O_DIRECT != 0 {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        PosixIo.read_exact_at(file, offset, buf)
    }
}

/// Refused once, the store reads buffered from then on without asking
/// again per block, and serves the same bytes.
#[test]
fn refused_direct_reads_fall_back_to_buffered_once() {
    let dir = disk_dir();
    if !direct_reads_work_in(dir.path()) {
        return;
    }
    let io = Arc::new(RefusesDirectReads::default());
    let mut o = opts(dir.path(), IoMode::Posix);
    o.io_override = Some(io.clone() as Arc<dyn FileIo>);
    let store = Store::open(o).unwrap();
    let mut rng = StdRng::seed_from_u64(26);
    let blobs: Vec<Vec<u8>> = (0..6).map(|_| blob(&mut rng, 100_000)).collect();
    let cids: Vec<ContentId> = blobs
        .iter()
        .map(|d| store.put(d, false).unwrap().cid)
        .collect();
    evict_segments(dir.path());
    let mut buf = Vec::new();
    for (cid, data) in cids.iter().zip(&blobs) {
        store.get_into(cid, &mut buf).unwrap();
        assert_eq!(&buf, data);
    }
    assert_eq!(
        io.refused.load(Ordering::Relaxed),
        1,
        "asked again after a refusal"
    );
    assert_eq!(store.stats().direct_read_bytes_total, 0);
}

/// Direct reads are opt-in: a store opened with the defaults reads cold
/// records buffered.
#[test]
fn default_store_reads_cold_records_buffered() {
    let dir = disk_dir();
    if !direct_reads_work_in(dir.path()) {
        return;
    }
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut rng = StdRng::seed_from_u64(27);
    let data = blob(&mut rng, 256 * 1024);
    let cid = store.put(&data, false).unwrap().cid;
    store.put(&blob(&mut rng, 9000), false).unwrap();
    evict_segments(dir.path());
    assert_eq!(store.get(&cid).unwrap(), data);
    assert_eq!(store.stats().direct_read_bytes_total, 0);
}
