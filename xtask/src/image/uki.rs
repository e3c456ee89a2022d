//! The Unified Kernel Image: systemd-boot's EFI stub (Debian
//! systemd-boot-efi) with the os-release, command line, kernel and
//! initramfs added as PE sections by objcopy, then signed with sbsign.
//! Section addresses follow the stub's own last section, page aligned, as
//! the UKI specification describes; overlapping sections would make the
//! firmware refuse the image.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SECTION_ALIGN: u64 = 0x1000;

/// End address (VMA + size) of the last section of a PE file, from
/// `objdump -h`.
fn sections_end(pe: &Path) -> anyhow::Result<u64> {
    let out = Command::new("objdump")
        .arg("-h")
        .arg(pe)
        .output()
        .context("run objdump")?;
    anyhow::ensure!(out.status.success(), "objdump -h {} failed", pe.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut end = 0u64;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // "Idx Name Size VMA LMA File-off Algn" rows start with a number.
        if cols.len() == 7 && cols[0].parse::<u32>().is_ok() {
            let size = u64::from_str_radix(cols[2], 16)?;
            let vma = u64::from_str_radix(cols[3], 16)?;
            end = end.max(vma + size);
        }
    }
    anyhow::ensure!(end > 0, "no sections found in {}", pe.display());
    Ok(end)
}

fn align(x: u64) -> u64 {
    x.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}

/// Assembles an unsigned UKI at `output`.
pub fn assemble(
    os_release: &Path,
    cmdline: &Path,
    kernel: &Path,
    initrd: &Path,
    output: &Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new(STUB).exists(),
        "{STUB} is missing (apt-get install systemd-boot-efi)"
    );
    let mut cmd = Command::new("objcopy");
    let mut at = align(sections_end(Path::new(STUB))?);
    for (name, file) in [
        (".osrel", os_release),
        (".cmdline", cmdline),
        (".linux", kernel),
        (".initrd", initrd),
    ] {
        let size = std::fs::metadata(file)
            .with_context(|| format!("stat {}", file.display()))?
            .len();
        cmd.arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={at:#x}"));
        at = align(at + size);
    }
    cmd.arg(STUB).arg(output);
    let out = cmd.output().context("run objcopy")?;
    anyhow::ensure!(
        out.status.success(),
        "objcopy failed to assemble the UKI: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
