//! Finding the appliance's partitions by GPT name (there is no udev, so no
//! /dev/disk/by-partlabel) and formatting the data partition at first boot
//! with the mke2fs bundled in the initramfs.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// GPT partition names the image builder writes (xtask image/disk.rs).
pub const ESP_PARTITION_NAME: &str = "metanode-esp";
pub const DATA_PARTITION_NAME: &str = "metanode-data";
/// Where the bundled mke2fs and its libraries live in the initramfs.
pub const MKE2FS_DIR: &str = "/usr/lib/metanode/mke2fs";
/// Block devices appear while the kernel probes; wait at most this long.
pub const PARTITION_WAIT: Duration = Duration::from_secs(5);
/// ext4's superblock starts at byte 1024; its magic 0xEF53 sits at offset 56.
const EXT4_MAGIC_OFFSET: u64 = 1024 + 56;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading {dev}: {err}")]
    Read { dev: PathBuf, err: std::io::Error },
    #[error("running the bundled mke2fs on {dev}: {err}")]
    Spawn { dev: PathBuf, err: std::io::Error },
    #[error("mke2fs on {dev} failed ({status}): {stderr}")]
    Failed {
        dev: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The device node of the partition whose GPT name is `name`, from the
/// `PARTNAME=` line of /sys/class/block/*/uevent.
pub fn find_partition(sys_class_block: &Path, dev_dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys_class_block).ok()?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let uevent = std::fs::read_to_string(entry.path().join("uevent")).ok()?;
            let mut devname = None;
            let mut partname = None;
            for line in uevent.lines() {
                if let Some(v) = line.strip_prefix("DEVNAME=") {
                    devname = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("PARTNAME=") {
                    partname = Some(v.to_owned());
                }
            }
            (partname.as_deref() == Some(name))
                .then(|| devname.map(|d| dev_dir.join(d)))
                .flatten()
        })
        .collect();
    // Two disks flashed with the same image: take the first by name so the
    // choice is at least stable, and the caller logs which one.
    found.sort();
    found.into_iter().next()
}

/// Waits up to [`PARTITION_WAIT`] for the partition to show up.
pub fn wait_for_partition(name: &str) -> Option<PathBuf> {
    let deadline = Instant::now() + PARTITION_WAIT;
    loop {
        let found = find_partition(Path::new("/sys/class/block"), Path::new("/dev"), name);
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `dev` carries an ext2/3/4 superblock.
pub fn has_ext4(dev: &Path) -> Result<bool, FormatError> {
    let read = || -> std::io::Result<[u8; 2]> {
        let mut f = std::fs::File::open(dev)?;
        f.seek(SeekFrom::Start(EXT4_MAGIC_OFFSET))?;
        let mut magic = [0u8; 2];
        f.read_exact(&mut magic)?;
        Ok(magic)
    };
    let magic = read().map_err(|err| FormatError::Read {
        dev: dev.to_path_buf(),
        err,
    })?;
    Ok(magic == [0x53, 0xEF])
}

/// Formats `dev` as ext4 with the bundled mke2fs, run through the bundled
/// dynamic loader so no library lands in a global path.
pub fn format_ext4(dev: &Path, label: &str) -> Result<(), FormatError> {
    let dir = Path::new(MKE2FS_DIR);
    let out = Command::new(dir.join("ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(dir)
        .arg(dir.join("mke2fs"))
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        // No lazy init: the store's first writes should not race a
        // background inode-table zeroing thread on a small VM.
        .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(dev)
        .env_clear()
        .output()
        .map_err(|err| FormatError::Spawn {
            dev: dev.to_path_buf(),
            err,
        })?;
    if !out.status.success() {
        return Err(FormatError::Failed {
            dev: dev.to_path_buf(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_partitions_by_gpt_name() {
        let dir = tempfile::tempdir().unwrap();
        for (dev, uevent) in [
            ("vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n"),
            (
                "vda1",
                "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=metanode-esp\n",
            ),
            (
                "vda2",
                "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=metanode-data\n",
            ),
        ] {
            std::fs::create_dir(dir.path().join(dev)).unwrap();
            std::fs::write(dir.path().join(dev).join("uevent"), uevent).unwrap();
        }
        let dev = Path::new("/dev");
        assert_eq!(
            find_partition(dir.path(), dev, DATA_PARTITION_NAME),
            Some(PathBuf::from("/dev/vda2"))
        );
        assert_eq!(
            find_partition(dir.path(), dev, ESP_PARTITION_NAME),
            Some(PathBuf::from("/dev/vda1"))
        );
        assert_eq!(find_partition(dir.path(), dev, "other"), None);
    }

    #[test]
    fn recognizes_an_ext4_superblock() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        assert!(!has_ext4(&img).unwrap());
        let mut bytes = vec![0u8; 4096];
        bytes[1080] = 0x53;
        bytes[1081] = 0xEF;
        std::fs::write(&img, &bytes).unwrap();
        assert!(has_ext4(&img).unwrap());
        assert!(has_ext4(&dir.path().join("missing")).is_err());
        // A real mke2fs (the host's, when installed) writes what we look for.
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(8 * 1024 * 1024).unwrap();
        drop(f);
        if let Ok(out) = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&img)
            .output()
            && out.status.success()
        {
            assert!(has_ext4(&img).unwrap());
        }
    }
}
