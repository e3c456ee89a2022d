//! The storage seam: a handful of whole-file operations, implemented on real
//! files ([`FsDisk`], used by the node) and in memory with injected faults
//! ([`FakeDisk`], used by the deterministic simulator and the tests).
//!
//! The seam is deliberately narrower than a file API: the chain store only
//! ever appends, syncs, reads, atomically replaces and cuts a torn tail, so
//! the fake only has to model what power loss and fsync failure do to those
//! few operations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Suffix of the temporary file [`ChainDisk::replace`] writes before the
/// rename; names ending with it are refused so a log can never be one.
const TMP_SUFFIX: &str = ".tmp";
/// Longest file name (Linux `NAME_MAX`, minus room for the tmp suffix).
const NAME_LEN_BYTES_MAX: usize = 255 - TMP_SUFFIX.len();

/// Durable named files, the only storage the chain store touches.
pub trait ChainDisk {
    /// Whole content of `name`, None if absent.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;

    /// Exactly `len` bytes of `name` from `offset`; `UnexpectedEof` if the
    /// file is shorter, `NotFound` if it is absent. The default reads the
    /// whole file; implementations override it with a positional read.
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let data = self.read(name)?.ok_or_else(|| not_found(name))?;
        slice_at(&data, name, offset, len).map(<[u8]>::to_vec)
    }

    /// Size of `name` in bytes, None if absent. The default reads the whole
    /// file; implementations override it with a metadata lookup.
    fn size_bytes(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.read(name)?.map(|d| d.len() as u64))
    }

    /// Appends to `name` (creating it); not durable until `sync`.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;

    /// fsync `name` (and its directory entry on first creation).
    fn sync(&mut self, name: &str) -> io::Result<()>;

    /// Replace `name` atomically and durably (write tmp, fsync, rename, fsync dir).
    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;

    /// Cut `name` to `len` bytes, durably.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
}

/// Lets a caller lend a disk to a log (`SafetyWal::open(&mut disk, ..)`)
/// and keep using it afterwards.
impl<D: ChainDisk + ?Sized> ChainDisk for &mut D {
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        (**self).read(name)
    }
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        (**self).read_at(name, offset, len)
    }
    fn size_bytes(&self, name: &str) -> io::Result<Option<u64>> {
        (**self).size_bytes(name)
    }
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        (**self).append(name, bytes)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        (**self).sync(name)
    }
    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        (**self).replace(name, bytes)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        (**self).truncate(name, len)
    }
}

/// What a disk did, for the simulator's statistics and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub appends_count: u64,
    pub appended_bytes: u64,
    /// Successful `sync` calls plus the fsyncs inside `replace`/`truncate`.
    pub syncs_count: u64,
    pub sync_failures_count: u64,
    pub replaces_count: u64,
    pub replaced_bytes: u64,
    pub truncates_count: u64,
    /// Simulated power losses ([`FakeDisk::crash`]); always 0 for [`FsDisk`].
    pub crashes_count: u64,
}

/// Names are plain file names inside the disk's directory: a name with a
/// `/` or `..` could escape it, and one ending in `.tmp` would collide with
/// `replace`'s temporary file.
fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LEN_BYTES_MAX
        && name != "."
        && name != ".."
        && !name.ends_with(TMP_SUFFIX)
        && !name.bytes().any(|b| b == b'/' || b == 0);
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid file name {name:?}: must be 1..={NAME_LEN_BYTES_MAX} bytes without '/' or NUL, not '.', '..' or ending in {TMP_SUFFIX:?}"
            ),
        ))
    }
}

fn powered_off() -> io::Error {
    io::Error::other("disk is powered off (simulated power loss)")
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("file {name} does not exist"),
    )
}

fn slice_at<'a>(data: &'a [u8], name: &str, offset: u64, len: usize) -> io::Result<&'a [u8]> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| data.get(start..start.checked_add(len)?))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {len} bytes at offset {offset} is past the end of {name} ({} bytes)",
                    data.len()
                ),
            )
        })
}

// ------------------------------------------------------------------- FsDisk

/// Real files in one directory. Append handles stay open (`O_APPEND`, so a
/// write always lands at the current end even after a truncate), and `sync`
/// is `fdatasync`: the log only grows, and `fdatasync` does include the size
/// change, which is the only metadata a reader needs.
#[derive(Debug)]
pub struct FsDisk {
    dir: PathBuf,
    /// The directory itself, kept open to fsync new and renamed entries.
    dir_file: File,
    handles: HashMap<String, File>,
    /// Files created by `append` whose directory entry is not yet durable.
    created_unsynced: HashSet<String>,
    stats: DiskStats,
}

impl FsDisk {
    /// Opens (creating with mode 0700 if needed) the directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<FsDisk> {
        let dir = dir.as_ref().to_path_buf();
        let existed = dir.is_dir();
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let dir_file = File::open(&dir)?;
        if !existed {
            // The directory's own entry must survive a crash too, or the
            // files synced inside it could vanish with it.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(FsDisk {
            dir,
            dir_file,
            handles: HashMap::new(),
            created_unsynced: HashSet::new(),
            stats: DiskStats::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.handles.contains_key(name) {
            let path = self.path(name);
            let mut options = OpenOptions::new();
            options.read(true).append(true).mode(0o600);
            let file = match options.clone().create_new(true).open(&path) {
                Ok(file) => {
                    self.created_unsynced.insert(name.to_owned());
                    file
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(&path)?,
                Err(e) => return Err(e),
            };
            self.handles.insert(name.to_owned(), file);
        }
        self.handles
            .get_mut(name)
            .ok_or_else(|| io::Error::other("append handle vanished"))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.dir_file.sync_all()?;
        self.stats.syncs_count += 1;
        Ok(())
    }

    fn counted<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        match &result {
            Ok(_) => self.stats.syncs_count += 1,
            Err(_) => self.stats.sync_failures_count += 1,
        }
        result
    }
}

impl ChainDisk for FsDisk {
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        check_name(name)?;
        match fs::read(self.path(name)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        check_name(name)?;
        let mut buf = vec![0u8; len];
        match self.handles.get(name) {
            Some(file) => file.read_exact_at(&mut buf, offset)?,
            None => File::open(self.path(name))?.read_exact_at(&mut buf, offset)?,
        }
        Ok(buf)
    }

    fn size_bytes(&self, name: &str) -> io::Result<Option<u64>> {
        check_name(name)?;
        match fs::metadata(self.path(name)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        self.handle(name)?.write_all(bytes)?;
        self.stats.appends_count += 1;
        self.stats.appended_bytes += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let result = match self.handles.get(name) {
            Some(file) => file.sync_data(),
            None => File::open(self.path(name)).and_then(|f| f.sync_data()),
        };
        self.counted(result)?;
        if self.created_unsynced.contains(name) {
            self.sync_dir()?;
            self.created_unsynced.remove(name);
        }
        Ok(())
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        // The open append handle names the inode the rename replaces; drop it
        // so later appends go to the new file.
        self.handles.remove(name);
        let tmp = self.path(&format!("{name}{TMP_SUFFIX}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        let synced = file.sync_all();
        self.counted(synced)?;
        drop(file);
        fs::rename(&tmp, self.path(name))?;
        self.sync_dir()?;
        self.created_unsynced.remove(name);
        self.stats.replaces_count += 1;
        self.stats.replaced_bytes += bytes.len() as u64;
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        check_name(name)?;
        let result = match self.handles.get(name) {
            Some(file) => file.set_len(len).and_then(|()| file.sync_all()),
            None => OpenOptions::new()
                .write(true)
                .open(self.path(name))
                .and_then(|f| f.set_len(len).and_then(|()| f.sync_all())),
        };
        self.counted(result)?;
        self.stats.truncates_count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------- SplitMix64

/// A tiny deterministic random source (Vigna's SplitMix64): the fake disk's
/// only randomness, so one seed replays a crash exactly.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough value in `0..=max` (modulo bias is irrelevant here).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

// ------------------------------------------------------------------ FakeDisk

/// One in-memory file: what reads see, and how much of it would survive a
/// power loss.
#[derive(Clone, Debug, Default)]
struct FakeFile {
    /// What reads see (the "page cache").
    data: Vec<u8>,
    /// `data[..durable_len]` survives a crash (apart from `doubt`).
    durable_len: usize,
    /// Bytes that were pending when an fsync failed. Linux may have dropped
    /// those pages and will not report it again, so even a later successful
    /// sync does not make them durable: on crash they survive or read back
    /// as zeros (a hole).
    doubt: Option<(usize, usize)>,
    /// Whether the directory entry is durable; a file created and never
    /// synced may vanish entirely.
    entry_durable: bool,
    /// The durable content before a `replace` that failed part-way: the
    /// rename may or may not have reached the disk, so a crash brings back
    /// either this or the new content.
    replaced_from: Option<Option<Vec<u8>>>,
}

/// The fake's power supply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Power {
    #[default]
    On,
    /// This many more mutating operations complete; the next is cut.
    CutAfter(u64),
    /// Every operation fails until `crash`.
    Off,
}

/// A deterministic in-memory disk that models power loss, torn writes,
/// fsync failure and bit rot. Cloning it copies everything, so a test or
/// the simulator can snapshot a disk image and replay from it.
#[derive(Clone, Debug, Default)]
pub struct FakeDisk {
    files: BTreeMap<String, FakeFile>,
    /// Armed sync failures: `Some(name)` hits that file, `None` any file.
    sync_faults: Vec<Option<String>>,
    power: Power,
    stats: DiskStats,
}

impl FakeDisk {
    pub fn new() -> Self {
        FakeDisk::default()
    }

    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// Names of the files that exist (as reads see them), in order.
    pub fn file_names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// Bytes of `name` not yet durable (written after the last successful
    /// sync), 0 if absent.
    pub fn pending_bytes(&self, name: &str) -> u64 {
        self.files
            .get(name)
            .map_or(0, |f| (f.data.len() - f.durable_len) as u64)
    }

    /// The next sync of `name` (or of any file, for `None`) fails with EIO,
    /// as does a `replace` of it (whose fsync fails).
    pub fn fail_next_sync(&mut self, name: Option<&str>) {
        self.sync_faults.push(name.map(str::to_owned));
    }

    /// Cuts the power after `ops` more mutating operations (append, sync,
    /// replace, truncate) have completed: the next one is interrupted (an
    /// append leaves its bytes pending, a replace may or may not have
    /// renamed) and it and everything after fail until [`FakeDisk::crash`].
    /// This is how a test crashes *inside* a persist, between its write and
    /// its fsync.
    pub fn power_off_after(&mut self, ops: u64) {
        self.power = Power::CutAfter(ops);
    }

    pub fn is_powered_off(&self) -> bool {
        self.power == Power::Off
    }

    /// Flips every bit of the byte at `offset` of `name`'s durable data (bit
    /// rot). Returns false if there is no durable byte there.
    pub fn corrupt(&mut self, name: &str, offset: u64) -> bool {
        let Some(file) = self.files.get_mut(name) else {
            return false;
        };
        let Some(i) = usize::try_from(offset)
            .ok()
            .filter(|i| *i < file.durable_len)
        else {
            return false;
        };
        match file.data.get_mut(i) {
            Some(byte) => {
                *byte ^= 0xFF;
                true
            }
            None => false,
        }
    }

    /// Simulates power loss and restores power. For each file, in name
    /// order, the seed decides what survives of the bytes not yet durable:
    /// none, all, or a prefix cut at a random length (a torn write); bytes
    /// in doubt after a failed fsync survive or become zeros; a file whose
    /// directory entry was never synced may vanish; a failed `replace` comes
    /// back as either the old or the new content.
    pub fn crash(&mut self, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let mut vanished = Vec::new();
        for (name, file) in &mut self.files {
            if let Some(old) = file.replaced_from.take()
                && rng.coin()
            {
                match old {
                    Some(old) => {
                        file.data = old;
                        file.durable_len = file.data.len();
                        file.doubt = None;
                    }
                    None => vanished.push(name.clone()),
                }
                continue;
            }
            let pending = (file.data.len() - file.durable_len) as u64;
            let keep = match rng.up_to(2) {
                0 => 0,
                1 => pending,
                _ => rng.up_to(pending),
            };
            file.data.truncate(file.durable_len + keep as usize);
            if let Some((start, end)) = file.doubt.take() {
                let end = end.min(file.data.len());
                if start < end && rng.coin() {
                    file.data[start..end].fill(0);
                }
            }
            file.durable_len = file.data.len();
            if !file.entry_durable {
                if rng.coin() {
                    vanished.push(name.clone());
                } else {
                    file.entry_durable = true;
                }
            }
        }
        for name in vanished {
            self.files.remove(&name);
        }
        self.power = Power::On;
        self.sync_faults.clear();
        self.stats.crashes_count += 1;
    }

    /// Counts down to the power cut: Ok(true) for the one operation the cut
    /// lands in, Err for every operation after it.
    fn power(&mut self) -> io::Result<bool> {
        match self.power {
            Power::On => Ok(false),
            Power::CutAfter(0) => {
                self.power = Power::Off;
                Ok(true)
            }
            Power::CutAfter(n) => {
                self.power = Power::CutAfter(n - 1);
                Ok(false)
            }
            Power::Off => Err(powered_off()),
        }
    }

    fn take_sync_fault(&mut self, name: &str) -> bool {
        let hit = self
            .sync_faults
            .iter()
            .position(|f| f.as_deref().is_none_or(|n| n == name));
        match hit {
            Some(i) => {
                self.sync_faults.remove(i);
                true
            }
            None => false,
        }
    }

    fn eio(name: &str) -> io::Error {
        io::Error::other(format!("injected fsync failure (EIO) on {name}"))
    }
}

impl ChainDisk for FakeDisk {
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        check_name(name)?;
        if self.is_powered_off() {
            return Err(powered_off());
        }
        Ok(self.files.get(name).map(|f| f.data.clone()))
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        check_name(name)?;
        if self.is_powered_off() {
            return Err(powered_off());
        }
        let file = self.files.get(name).ok_or_else(|| not_found(name))?;
        slice_at(&file.data, name, offset, len).map(<[u8]>::to_vec)
    }

    fn size_bytes(&self, name: &str) -> io::Result<Option<u64>> {
        check_name(name)?;
        if self.is_powered_off() {
            return Err(powered_off());
        }
        Ok(self.files.get(name).map(|f| f.data.len() as u64))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let interrupted = self.power()?;
        let file = self.files.entry(name.to_owned()).or_default();
        file.data.extend_from_slice(bytes);
        self.stats.appends_count += 1;
        self.stats.appended_bytes += bytes.len() as u64;
        if interrupted {
            // The cut lands inside this write: its bytes reached the page
            // cache, the caller never hears back.
            return Err(io::Error::other(
                "power lost during append (simulated power loss)",
            ));
        }
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        check_name(name)?;
        if self.power()? {
            return Err(io::Error::other(
                "power lost during fsync (simulated power loss)",
            ));
        }
        if !self.files.contains_key(name) {
            return Err(not_found(name));
        }
        let fault = self.take_sync_fault(name);
        let file = self.files.get_mut(name).ok_or_else(|| not_found(name))?;
        if fault {
            let (start, end) = (file.durable_len, file.data.len());
            file.doubt = Some(match file.doubt {
                Some((s, e)) => (s.min(start), e.max(end)),
                None => (start, end),
            });
            self.stats.sync_failures_count += 1;
            return Err(Self::eio(name));
        }
        file.durable_len = file.data.len();
        file.entry_durable = true;
        self.stats.syncs_count += 1;
        Ok(())
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let interrupted = self.power()?;
        let fault = !interrupted && self.take_sync_fault(name);
        let file = self.files.entry(name.to_owned()).or_default();
        let old_durable = file
            .entry_durable
            .then(|| file.data[..file.durable_len].to_vec());
        *file = FakeFile {
            data: bytes.to_vec(),
            durable_len: bytes.len(),
            doubt: None,
            entry_durable: true,
            replaced_from: None,
        };
        if interrupted || fault {
            // Whether the rename reached the disk is unknown: a crash picks.
            file.replaced_from = Some(old_durable);
            if fault {
                self.stats.sync_failures_count += 1;
                return Err(Self::eio(name));
            }
            return Err(io::Error::other(
                "power lost during replace (simulated power loss)",
            ));
        }
        self.stats.syncs_count += 2;
        self.stats.replaces_count += 1;
        self.stats.replaced_bytes += bytes.len() as u64;
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        check_name(name)?;
        if self.power()? {
            return Err(io::Error::other(
                "power lost during truncate (simulated power loss)",
            ));
        }
        let file = self.files.get_mut(name).ok_or_else(|| not_found(name))?;
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        file.data.truncate(len);
        // Truncating is durable: what is left is exactly the durable prefix
        // plus whatever was still pending below `len`, now synced.
        file.durable_len = len;
        file.doubt = file
            .doubt
            .map(|(s, e)| (s, e.min(len)))
            .filter(|(s, e)| s < e);
        file.entry_durable = true;
        self.stats.syncs_count += 1;
        self.stats.truncates_count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for bad in ["", ".", "..", "a/b", "/abs", "x.tmp", "nul\0"] {
            assert_eq!(
                check_name(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        check_name("blocks.log").unwrap();
        assert!(check_name(&"a".repeat(NAME_LEN_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn fake_crash_drops_unsynced_and_keeps_synced() {
        let mut disk = FakeDisk::new();
        disk.append("f", b"durable").unwrap();
        disk.sync("f").unwrap();
        disk.append("f", b"-pending").unwrap();
        assert_eq!(disk.pending_bytes("f"), 8);
        assert_eq!(disk.read("f").unwrap().unwrap(), b"durable-pending");
        let mut outcomes = HashSet::new();
        for seed in 0..64 {
            let mut d = disk.clone();
            d.crash(seed);
            let data = d.read("f").unwrap().unwrap();
            assert!(data.starts_with(b"durable"), "seed {seed}");
            assert!(b"durable-pending".starts_with(&data), "seed {seed}");
            assert_eq!(d.pending_bytes("f"), 0);
            outcomes.insert(data.len());
        }
        // None, all, and torn prefixes in between all occur.
        assert!(outcomes.contains(&7));
        assert!(outcomes.contains(&15));
        assert!(outcomes.iter().any(|l| (8..15).contains(l)), "{outcomes:?}");
    }

    #[test]
    fn fake_crash_is_deterministic_per_seed() {
        let mut disk = FakeDisk::new();
        for i in 0..10u8 {
            disk.append(&format!("f{i}"), &[i; 100]).unwrap();
        }
        let mut a = disk.clone();
        let mut b = disk.clone();
        a.crash(42);
        b.crash(42);
        assert_eq!(a.file_names(), b.file_names());
        for name in a.file_names() {
            assert_eq!(a.read(&name).unwrap(), b.read(&name).unwrap());
        }
    }

    #[test]
    fn fake_sync_failure_is_reported_once_and_leaves_bytes_in_doubt() {
        let mut disk = FakeDisk::new();
        disk.append("f", b"abc").unwrap();
        disk.sync("f").unwrap();
        disk.append("f", b"def").unwrap();
        disk.fail_next_sync(Some("f"));
        assert_eq!(
            disk.sync("f").unwrap_err().to_string(),
            "injected fsync failure (EIO) on f"
        );
        assert_eq!(disk.stats().sync_failures_count, 1);
        // Like Linux after fsyncgate: the retry "succeeds".
        disk.sync("f").unwrap();
        disk.append("f", b"ghi").unwrap();
        disk.sync("f").unwrap();
        let mut seen = HashSet::new();
        for seed in 0..64 {
            let mut d = disk.clone();
            d.crash(seed);
            seen.insert(d.read("f").unwrap().unwrap());
        }
        let expected: HashSet<Vec<u8>> = [b"abcdefghi".to_vec(), b"abc\0\0\0ghi".to_vec()]
            .into_iter()
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn fake_power_off_interrupts_and_fails_until_crash() {
        let mut disk = FakeDisk::new();
        disk.power_off_after(1);
        disk.append("f", b"one").unwrap();
        assert!(disk.append("f", b"two").is_err());
        assert!(disk.is_powered_off());
        assert!(disk.sync("f").is_err());
        assert!(disk.read("f").is_err());
        disk.crash(7);
        assert!(!disk.is_powered_off());
        let data = disk.read("f").unwrap().unwrap_or_default();
        assert!(b"onetwo".starts_with(&data));
    }

    #[test]
    fn fake_corrupt_flips_only_durable_bytes() {
        let mut disk = FakeDisk::new();
        disk.append("f", &[0x0F, 0x00]).unwrap();
        disk.sync("f").unwrap();
        disk.append("f", &[0x11]).unwrap();
        assert!(disk.corrupt("f", 1));
        assert!(!disk.corrupt("f", 2));
        assert!(!disk.corrupt("g", 0));
        assert_eq!(disk.read("f").unwrap().unwrap(), vec![0x0F, 0xFF, 0x11]);
    }

    #[test]
    fn fs_disk_append_sync_replace_truncate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chain");
        let mut disk = FsDisk::open(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(disk.read("a").unwrap(), None);
        assert_eq!(disk.size_bytes("a").unwrap(), None);
        disk.append("a", b"hello ").unwrap();
        disk.append("a", b"world").unwrap();
        disk.sync("a").unwrap();
        assert_eq!(disk.read("a").unwrap().unwrap(), b"hello world");
        assert_eq!(disk.read_at("a", 6, 5).unwrap(), b"world");
        assert_eq!(
            disk.read_at("a", 8, 5).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        disk.truncate("a", 5).unwrap();
        disk.append("a", b"!").unwrap();
        assert_eq!(disk.read("a").unwrap().unwrap(), b"hello!");
        disk.replace("a", b"fresh").unwrap();
        disk.append("a", b"+more").unwrap();
        disk.sync("a").unwrap();
        assert_eq!(disk.read("a").unwrap().unwrap(), b"fresh+more");
        assert_eq!(disk.size_bytes("a").unwrap(), Some(10));
        assert!(!dir.join("a.tmp").exists());
        let stats = disk.stats();
        assert_eq!(stats.appends_count, 4);
        assert_eq!(stats.appended_bytes, 17);
        assert_eq!(stats.replaces_count, 1);
        assert_eq!(stats.truncates_count, 1);
        // a's first sync also synced the directory; replace syncs file + dir.
        assert_eq!(stats.syncs_count, 2 + 1 + 2 + 1);
    }
}
