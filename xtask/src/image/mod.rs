//! `cargo xtask image`: kernel, initramfs, signed UKI and GPT disk, written
//! to target/image/ with the exact kernel config, command line and sysctl
//! policy used, and a size report.

pub mod disk;
pub mod initramfs;
pub mod kernel;
pub mod keys;
pub mod policy;
pub mod uki;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Args;

use crate::workspace_root;

#[derive(Debug, Args, Clone)]
pub struct ImageArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Secure Boot key directory (generated if empty); default
    /// $METANODE_SECUREBOOT_DIR or ~/.config/metanode/secureboot.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Only configure and build (or find cached) the kernel, e.g. to warm
    /// the cache in the background.
    #[arg(long)]
    pub kernel_only: bool,
}

pub fn default_out() -> PathBuf {
    workspace_root().join("target/image")
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

fn os_release(version: &str) -> String {
    // No ID/IMAGE_ID: with a sort key systemd-boot would order the slots by
    // version, and both slots often carry the same version; without one the
    // file names (generation first) decide. See appliance/slots/src/esp.rs.
    format!(
        "NAME=\"Metanode\"\nVERSION_ID={version}\nVERSION=\"{version}\"\n\
         PRETTY_NAME=\"Metanode {version}\"\nHOME_URL=\"https://example.invalid/metanode\"\n"
    )
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<u64> {
    std::fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Builds the image; returns its directory.
pub fn build(args: &ImageArgs) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let out = args.out.clone().unwrap_or_else(default_out);
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let appliance = root.join("appliance");
    let read = |name: &str| {
        std::fs::read_to_string(appliance.join(name))
            .with_context(|| format!("read appliance/{name}"))
    };
    let fragment = read("kernel.fragment")?;
    let cmdline = policy::cmdline(&read("cmdline.conf")?, "appliance/cmdline.conf")?;
    let sysctl_text = read("sysctl.conf")?;
    policy::sysctls(&sysctl_text, "appliance/sysctl.conf")?;

    eprintln!("==> kernel");
    let kernel = kernel::build(&fragment)?;
    copy(&kernel.bzimage, &out.join("bzImage"))?;
    copy(&kernel.config, &out.join("kernel.config"))?;
    let kspp_items = policy::kspp(&read("kspp.conf")?, "appliance/kspp.conf")?;
    let kspp = policy::kspp_check(
        &kspp_items,
        &policy::dot_config(&std::fs::read_to_string(&kernel.config)?),
        &cmdline,
        &policy::sysctls(&sysctl_text, "appliance/sysctl.conf")?,
    )?;
    std::fs::write(out.join("kspp.json"), serde_json::to_string_pretty(&kspp)?)?;
    eprintln!(
        "    KSPP checklist: kconfig {}+{} excepted, cmdline {}+{} excepted, sysctl {}+{} excepted",
        kspp.kconfig_followed,
        kspp.kconfig_excepted,
        kspp.cmdline_followed,
        kspp.cmdline_excepted,
        kspp.sysctl_followed,
        kspp.sysctl_excepted
    );
    std::fs::write(out.join("cmdline.txt"), format!("{cmdline}\n"))?;
    std::fs::write(out.join("sysctl.conf"), &sysctl_text)?;
    if args.kernel_only {
        eprintln!(
            "kernel {} ready in {}",
            kernel.source_version,
            out.display()
        );
        return Ok(out);
    }

    let agent = crate::agent_bin::build_static(&root)?;
    let keys = keys::ensure(&args.keys.clone().unwrap_or_else(keys::default_dir))?;
    let db_cert = std::fs::read(keys.cert("db"))?;

    eprintln!("==> initramfs");
    let version = version();
    let osrel = os_release(&version);
    let (cpio, listing) = initramfs::build(&initramfs::Inputs {
        metanode: &agent,
        os_release: &osrel,
        db_cert_pem: &db_cert,
    })?;
    let compressed = zstd::encode_all(cpio.as_slice(), 19).context("zstd the initramfs")?;
    let initrd = out.join("initramfs.img");
    std::fs::write(&initrd, &compressed)?;

    eprintln!("==> UKI");
    let osrel_path = out.join("os-release");
    std::fs::write(&osrel_path, &osrel)?;
    let unsigned = out.join("metanode.unsigned.efi");
    uki::assemble(
        &osrel_path,
        &out.join("cmdline.txt"),
        &out.join("bzImage"),
        &initrd,
        &unsigned,
    )?;
    let uki_path = out.join("metanode.efi");
    keys::sign(&keys, &unsigned, &uki_path)?;
    std::fs::remove_file(&unsigned)?;
    let boot_loader = out.join("systemd-bootx64.signed.efi");
    keys::sign(
        &keys,
        Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        &boot_loader,
    )?;

    eprintln!("==> disk");
    let files = disk::esp_layout(&boot_loader, &uki_path);
    let esp = out.join("esp.img");
    disk::build_esp(&esp, &files, &metanode_slots::esp::loader_conf())?;
    let raw = out.join("disk.raw");
    disk::build_disk(&raw, &esp)?;
    std::fs::remove_file(&esp)?;
    {
        let input = std::fs::File::open(&raw)?;
        let output = std::fs::File::create(out.join("disk.raw.zst"))?;
        zstd::stream::copy_encode(input, output, 19).context("zstd the disk")?;
    }
    let qcow = out.join("disk.qcow2");
    let _ = std::fs::remove_file(&qcow);
    let status = Command::new("qemu-img")
        .args(["convert", "-q", "-c", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .context("run qemu-img (apt-get install qemu-utils)")?;
    anyhow::ensure!(status.success(), "qemu-img convert failed");

    eprintln!(
        "\nimage {} (kernel {}{}):",
        out.display(),
        kernel.source_version,
        if kernel.cached { ", cached" } else { "" }
    );
    for (name, what) in [
        ("bzImage", "kernel"),
        ("initramfs.img", "initramfs (zstd)"),
        ("metanode.efi", "signed UKI"),
        ("disk.raw", "GPT disk (raw)"),
        ("disk.raw.zst", "flashable disk: zstd -d | dd"),
        ("disk.qcow2", "disk for QEMU / clouds"),
    ] {
        eprintln!("  {:<16} {:>11}  {what}", name, mib(size(&out.join(name))));
    }
    eprintln!(
        "  initramfs contents (uncompressed {}):",
        mib(cpio.len() as u64)
    );
    for (name, bytes) in &listing {
        eprintln!("    {:<40} {:>11}", name, mib(*bytes as u64));
    }
    Ok(out)
}
