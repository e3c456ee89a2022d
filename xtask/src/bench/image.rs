//! `cargo xtask bench image`: the appliance image's sizes and boot times
//! next to Debian's cloud kernel with a busybox initramfs, booted by the same
//! QEMU (TCG, same memory and devices) in the same run, plus the published
//! sizes of Talos and Bottlerocket and the KSPP checklist counts.
//!
//! Boot time = QEMU start → the ready marker on the serial console: ours is
//! `metanode: ready` (data partition mounted, DHCP lease, agent answering
//! HTTP); the peer's is `busybox: ready` echoed by its /init. Timed boots
//! reuse a disk that has already been through its first boot (format), so
//! they show the boot an operator sees after a reboot; the first boot is
//! reported on its own row.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::chart;
use super::results::{Better, Panel, Report, Row, median};
use crate::image::{self, disk, initramfs, keys, policy, uki};
use crate::vm::{Mode, Spec, Vm};

const OURS_READY: &str = "metanode: ready";
const PEER_READY: &str = "busybox: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const PEER_PACKAGE: &str = "linux-image-cloud-amd64";
const PEER_CMDLINE: &str = "console=ttyS0,115200 panic=-1";
/// Published facts (not measured here): Talos 1.x initramfs 55-94 MB per
/// its release assets; Bottlerocket's OS image 2 GiB per its docs.
const TALOS_INITRAMFS_MB_PUBLISHED: f64 = 55.0;
const BOTTLEROCKET_IMAGE_MIB_PUBLISHED: f64 = 2048.0;

#[derive(Debug, Args, Clone)]
pub struct ImageBenchArgs {
    /// Timed boots per system and boot path (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// One timed boot each, direct boot only (a smoke run).
    #[arg(long)]
    pub quick: bool,
    /// Host port for the guest API while booting.
    #[arg(long, default_value_t = 17979)]
    pub api_port: u16,
}

/// The peer: Debian's cloud kernel (downloaded as a .deb and unpacked into
/// the cache, never installed) with a busybox initramfs, as a direct-boot
/// kernel+initrd and as a UKI on a GPT disk like ours (signed with our keys
/// for the Secure Boot row).
fn prepare_peer(cache: &Path, keys: &keys::Keys) -> anyhow::Result<PathBuf> {
    let dir = cache.join("image-peer");
    let ready = dir.join("disk.qcow2");
    if ready.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("    peer: downloading {PEER_PACKAGE}'s kernel package");
    let out = Command::new("apt-cache")
        .args(["depends", PEER_PACKAGE])
        .output()
        .context("run apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pkg = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{PEER_PACKAGE} names no kernel package"))?
        .to_owned();
    disk::run(
        Command::new("apt-get")
            .current_dir(&dir)
            .args(["download", "-q", &pkg]),
        "apt-get download",
    )?;
    let deb = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("downloaded .deb")?;
    let root = dir.join("root");
    disk::run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    )?;
    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("vmlinuz in the package")?;
    std::fs::copy(&vmlinuz, dir.join("bzImage"))?;
    std::fs::write(dir.join("package"), format!("{pkg}\n"))?;

    let busybox = std::fs::read("/bin/busybox")
        .context("read /bin/busybox (apt-get install busybox-static)")?;
    let mut cpio = initramfs::Cpio::default();
    for d in ["bin", "dev", "proc", "sys"] {
        cpio.dir(d, 0o755);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file(
        "init",
        0o755,
        format!(
            "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
             /bin/busybox echo '{PEER_READY}'\n/bin/busybox sleep 1\n/bin/busybox poweroff -f\n"
        )
        .as_bytes(),
    );
    let initrd = dir.join("initramfs.img");
    std::fs::write(&initrd, zstd::encode_all(cpio.finish().as_slice(), 19)?)?;
    std::fs::write(dir.join("cmdline.txt"), format!("{PEER_CMDLINE}\n"))?;
    std::fs::write(
        dir.join("os-release"),
        "NAME=\"Debian cloud + busybox\"\nPRETTY_NAME=\"Debian cloud kernel + busybox\"\n",
    )?;
    let unsigned = dir.join("peer.unsigned.efi");
    uki::assemble(
        &dir.join("os-release"),
        &dir.join("cmdline.txt"),
        &dir.join("bzImage"),
        &initrd,
        &unsigned,
    )?;
    let signed = dir.join("metanode.efi");
    keys::sign(keys, &unsigned, &signed)?;
    let boot_loader = dir.join("systemd-bootx64.signed.efi");
    keys::sign(
        keys,
        Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        &boot_loader,
    )?;
    // The same layout as ours, so the UEFI rows compare like with like.
    let files = disk::esp_layout(&boot_loader, &signed);
    let esp = dir.join("esp.img");
    disk::build_esp(&esp, &files, &metanode_slots::esp::loader_conf())?;
    let raw = dir.join("disk.raw");
    disk::build_disk(&raw, &esp)?;
    disk::run(
        Command::new("qemu-img")
            .args(["convert", "-q", "-O", "qcow2"])
            .arg(&raw)
            .arg(&ready),
        "qemu-img convert",
    )?;
    for f in [esp, raw, unsigned, deb] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(root);
    Ok(dir)
}

struct Booter<'a> {
    keys: &'a keys::Keys,
    work: PathBuf,
    port: u16,
}

impl Booter<'_> {
    /// Boots `image_dir` `runs` times on one disk (after an untimed first
    /// boot) and returns (first boot s, timed boots s).
    fn times(
        &self,
        image_dir: &Path,
        mode: Mode,
        label: &str,
        marker: &str,
        runs: usize,
        ours: bool,
    ) -> anyhow::Result<(f64, Vec<f64>)> {
        let dir = self.work.join(label);
        let spec = Spec::fresh(image_dir, mode, self.keys, &dir, self.port, true)?;
        let mut times = Vec::new();
        let mut first = 0.0;
        for i in 0..=runs {
            let mut machine = Vm::start(&spec, &dir.join(format!("boot{i}")))?;
            let t = machine.wait_for(marker, BOOT_TIMEOUT)?.as_secs_f64();
            if ours {
                machine.power_button()?;
            }
            machine.wait_exit(Duration::from_secs(60))?;
            if i == 0 {
                first = t;
            } else {
                times.push(t);
            }
            eprintln!(
                "    {label} boot {i}: {t:.2} s{}",
                if i == 0 { " (first boot, untimed)" } else { "" }
            );
        }
        Ok((first, times))
    }
}

fn size_mib(path: &Path) -> anyhow::Result<f64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .len() as f64
        / (1024.0 * 1024.0))
}

fn row(
    metric: &str,
    unit: &'static str,
    ours: f64,
    peer: Option<&'static str>,
    peer_value: Option<f64>,
    better: Better,
    peer_note: Option<&str>,
) -> Row {
    Row {
        metric: metric.to_owned(),
        unit,
        ours: Some(ours),
        peer,
        peer_value,
        better,
        ours_note: None,
        peer_note: peer_note.map(str::to_owned),
    }
}

pub fn run(args: &ImageBenchArgs) -> anyhow::Result<()> {
    let image_dir = image::default_out();
    if !image_dir.join("disk.qcow2").exists() {
        image::build(&image::ImageArgs {
            out: None,
            keys: None,
            kernel_only: false,
        })?;
    }
    let keys = keys::ensure(&keys::default_dir())?;
    let cache = image::kernel::cache_root()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/var/cache/metanode"));
    let peer_dir = prepare_peer(&cache, &keys)?;
    let booter = Booter {
        keys: &keys,
        work: image_dir.join("bench"),
        port: args.api_port,
    };
    let _ = std::fs::remove_dir_all(&booter.work);
    let runs = if args.quick { 1 } else { args.runs.max(1) };
    let modes: &[(Mode, &str)] = if args.quick {
        &[(Mode::Direct, "direct")]
    } else {
        &[
            (Mode::Direct, "direct"),
            (Mode::Uefi, "ovmf"),
            (Mode::SecureBoot, "secure_boot"),
        ]
    };
    let mut rows = Vec::new();
    let mut panels = Vec::new();
    let mut runs_json = Vec::new();
    for (mode, name) in modes {
        eprintln!("==> boot: {name}");
        let (ours_first, ours) = booter.times(
            &image_dir,
            *mode,
            &format!("ours-{name}"),
            OURS_READY,
            runs,
            true,
        )?;
        let (_, peer) = booter.times(
            &peer_dir,
            *mode,
            &format!("peer-{name}"),
            PEER_READY,
            runs,
            false,
        )?;
        runs_json.push(
            json!({"boot": name, "ours_s": ours, "ours_first_boot_s": ours_first, "peer_s": peer}),
        );
        let (o, p) = (median(ours).context("no timed boot")?, median(peer));
        let metric = format!("boot_to_ready_{name}_s_tcg");
        rows.push(row(
            &metric,
            "s",
            o,
            Some("debian-cloud-busybox"),
            p,
            Better::Lower,
            None,
        ));
        rows.push(row(
            &format!("first_boot_to_ready_{name}_s_tcg"),
            "s",
            ours_first,
            None,
            None,
            Better::Lower,
            None,
        ));
        panels.push(Panel {
            metric,
            unit: "s",
            better: Better::Lower,
            bars: vec![("ours", Some(o)), ("debian-cloud-busybox", p)],
        });
    }
    let uki = size_mib(&image_dir.join("metanode.efi"))?;
    let peer_uki = size_mib(&peer_dir.join("metanode.efi"))?;
    rows.push(row(
        "uki_MiB",
        "MiB",
        uki,
        Some("debian-cloud-busybox"),
        Some(peer_uki),
        Better::Lower,
        None,
    ));
    let zst = size_mib(&image_dir.join("disk.raw.zst"))?;
    rows.push(row(
        "disk_raw_zst_MiB",
        "MiB",
        zst,
        Some("bottlerocket"),
        Some(BOTTLEROCKET_IMAGE_MIB_PUBLISHED),
        Better::Lower,
        Some("published image size, not measured here"),
    ));
    let initrd = size_mib(&image_dir.join("initramfs.img"))?;
    rows.push(row(
        "initramfs_MiB",
        "MiB",
        initrd,
        Some("talos"),
        Some(TALOS_INITRAMFS_MB_PUBLISHED / 1.048_576),
        Better::Lower,
        Some("published initramfs size (55 MB, the low end of 55-94 MB), not measured here"),
    ));
    panels.push(Panel {
        metric: "uki_MiB".into(),
        unit: "MiB",
        better: Better::Lower,
        bars: vec![
            ("ours", Some(uki)),
            ("debian-cloud-busybox", Some(peer_uki)),
        ],
    });
    let kspp: policy::KsppCounts =
        serde_json::from_str(&std::fs::read_to_string(image_dir.join("kspp.json"))?)?;
    for (m, v) in [
        ("kspp_kconfig_followed_count", kspp.kconfig_followed),
        ("kspp_kconfig_excepted_count", kspp.kconfig_excepted),
        ("kspp_cmdline_followed_count", kspp.cmdline_followed),
        ("kspp_cmdline_excepted_count", kspp.cmdline_excepted),
        ("kspp_sysctl_followed_count", kspp.sysctl_followed),
        ("kspp_sysctl_excepted_count", kspp.sysctl_excepted),
    ] {
        let better = if m.ends_with("followed_count") {
            Better::Higher
        } else {
            Better::Lower
        };
        rows.push(row(m, "count", v as f64, None, None, better, None));
    }
    let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let report = Report {
        bench: "image",
        when: crate::time::now_iso8601(),
        mode: if args.quick { "quick" } else { "full" },
        machine: json!({
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "kernel": kernel_release.trim(),
            "qemu": "qemu-system-x86_64 TCG (no KVM), q35, 2 vCPU, 512 MiB, virtio-net user, virtio-blk, virtio-rng, i6300esb",
        }),
        ours: serde_json::Map::from_iter([
            ("image".to_owned(), json!(image_dir.display().to_string())),
            ("ready_marker".to_owned(), json!(OURS_READY)),
            (
                "kernel_cmdline".to_owned(),
                json!(std::fs::read_to_string(image_dir.join("cmdline.txt"))?.trim()),
            ),
        ]),
        peers: serde_json::Map::from_iter([
            (
                "debian-cloud-busybox".to_owned(),
                json!({
                    "kernel_package": std::fs::read_to_string(peer_dir.join("package"))?.trim(),
                    "initramfs": "busybox-static; /init mounts /proc and echoes the ready marker",
                    "cmdline": PEER_CMDLINE,
                    "ready_marker": PEER_READY,
                    "uefi": "the same systemd-boot and UKI layout as ours, signed with the same keys",
                }),
            ),
            (
                "talos".to_owned(),
                json!({"source": "published release asset sizes (initramfs 55-94 MB)"}),
            ),
            (
                "bottlerocket".to_owned(),
                json!({"source": "published image size (2 GiB)"}),
            ),
        ]),
        workload: json!({"runs": runs, "timed_boots": "after an untimed first boot on the same disk; median reported"}),
        rows,
        runs: runs_json,
        panels,
    };
    println!(
        "{:<40} {:>10} {:>22} {:>10}",
        "metric", "ours", "peer", "peer value"
    );
    for r in &report.rows {
        println!(
            "{:<40} {:>10.2} {:>22} {:>10}",
            r.metric,
            r.ours.unwrap_or(f64::NAN),
            r.peer.unwrap_or("-"),
            r.peer_value.map_or("-".to_owned(), |v| format!("{v:.2}"))
        );
    }
    let results = crate::workspace_root().join("perf/results");
    std::fs::create_dir_all(&results)?;
    let json_path = results.join("image.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    chart::draw(&report, &results.join("image.png"))?;
    eprintln!("wrote {} and image.png", json_path.display());
    Ok(())
}
