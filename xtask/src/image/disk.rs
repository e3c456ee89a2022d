//! The GPT disk image: an EFI system partition (FAT32, systemd-boot, one
//! signed UKI per slot, loader.conf) and an empty data partition that PID 1
//! formats at first boot. Built as a plain file with sgdisk, mkfs.vfat and
//! mtools, so no loop device and no mount are needed.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

const MIB: u64 = 1024 * 1024;
/// Room for three UKIs (two slots plus an update being written) and the
/// boot loader.
pub const ESP_SIZE_MIB: u64 = 128;
/// The store's partition in the shipped image. PID 1 formats it at first
/// boot; on a bigger disk it can be grown later (see the README).
pub const DATA_SIZE_MIB: u64 = 1024;
pub const ESP_PARTITION_NAME: &str = "metanode-esp";
pub const DATA_PARTITION_NAME: &str = "metanode-data";
/// GPT needs 1 MiB in front (aligned first partition) and 33 sectors at the end.
const GPT_OVERHEAD_MIB: u64 = 2;

/// Runs a tool to completion; the error names it and carries its output.
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

/// A file to put on the ESP: path inside the FAT file system and its source.
#[derive(Debug)]
pub struct EspFile<'a> {
    pub path: String,
    pub source: &'a Path,
}

/// The ESP's contents: the signed boot loader (at the removable-media path
/// firmware boots by default, and at systemd-boot's own path) and the UKI
/// in every factory slot.
pub fn esp_layout<'a>(boot_loader: &'a Path, uki: &'a Path) -> Vec<EspFile<'a>> {
    let mut files = vec![
        EspFile {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            source: boot_loader,
        },
        EspFile {
            path: "EFI/systemd/systemd-bootx64.efi".into(),
            source: boot_loader,
        },
    ];
    for name in factory_entry_files() {
        files.push(EspFile {
            path: format!("EFI/Linux/{name}"),
            source: uki,
        });
    }
    files
}

/// Builds the ESP as a standalone FAT image.
pub fn build_esp(esp: &Path, files: &[EspFile<'_>], loader_conf: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(esp);
    let f = std::fs::File::create(esp)?;
    f.set_len(ESP_SIZE_MIB * MIB)?;
    drop(f);
    run(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "METANODE", "-i", "4d4e4f44"])
            .arg(esp),
        "mkfs.vfat (apt-get install dosfstools)",
    )?;
    let img = esp.to_string_lossy().into_owned();
    let mut dirs: Vec<String> = vec!["::/loader".into()];
    for f in files {
        let mut parts: Vec<&str> = f.path.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            let d = format!("::/{}", parts[..i].join("/"));
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs.sort_by_key(|d| d.matches('/').count());
    for d in &dirs {
        run(
            Command::new("mmd").args(["-i", &img, d]),
            "mmd (apt-get install mtools)",
        )?;
    }
    let conf = esp.with_extension("loader.conf");
    std::fs::write(&conf, loader_conf)?;
    run(
        Command::new("mcopy")
            .args(["-i", &img])
            .arg(&conf)
            .arg("::/loader/loader.conf"),
        "mcopy loader.conf",
    )?;
    std::fs::remove_file(&conf)?;
    for f in files {
        run(
            Command::new("mcopy")
                .args(["-i", &img])
                .arg(f.source)
                .arg(format!("::/{}", f.path)),
            &format!("mcopy {}", f.path),
        )?;
    }
    Ok(())
}

/// Lays the ESP image into a new GPT disk with an empty data partition.
pub fn build_disk(disk: &Path, esp: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(disk);
    let total_mib = GPT_OVERHEAD_MIB + ESP_SIZE_MIB + DATA_SIZE_MIB;
    let f = std::fs::File::create(disk)?;
    f.set_len(total_mib * MIB)?;
    drop(f);
    run(
        Command::new("sgdisk")
            .args(["--clear", "--set-alignment=2048"])
            .arg(format!("--new=1:2048:+{ESP_SIZE_MIB}M"))
            .arg("--typecode=1:ef00")
            .arg(format!("--change-name=1:{ESP_PARTITION_NAME}"))
            .arg(format!("--new=2:0:+{DATA_SIZE_MIB}M"))
            .arg("--typecode=2:8300")
            .arg(format!("--change-name=2:{DATA_PARTITION_NAME}"))
            .arg(disk),
        "sgdisk (apt-get install gdisk)",
    )?;
    // Copy the ESP into partition 1 (starts at sector 2048 = 1 MiB).
    let esp_bytes = std::fs::read(esp)?;
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(disk)?;
    f.seek(SeekFrom::Start(MIB))?;
    f.write_all(&esp_bytes)?;
    f.sync_all()?;
    Ok(())
}

/// The UKI file names of a factory image. Both slots hold the same build so
/// a damaged slot-A file still leaves a bootable slot B; A has the higher
/// generation, so systemd-boot tries it first (see appliance/slots/src/esp.rs).
pub fn factory_entry_files() -> Vec<String> {
    use metanode_slots::esp::{EntryName, Slot};
    [(2, Slot::A), (1, Slot::B)]
        .into_iter()
        .map(|(generation, slot)| {
            EntryName {
                generation,
                slot,
                counter: None,
            }
            .file_name()
        })
        .collect()
}
