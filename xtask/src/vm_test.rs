//! `cargo xtask vm-test`: the appliance's system tests under QEMU. Each
//! scenario boots the image from `cargo xtask image` on a fresh qcow2
//! overlay, reads the serial log and talks to the API through a forwarded
//! port. Every wait has a timeout; a failure prints the serial log tail.
//!
//! Scenarios (issue #4 item 6):
//! - `direct`: kernel + initramfs boot to ready; no unknown kernel
//!   parameters; live sysctls equal appliance/sysctl.conf; first-boot format
//!   of the data partition; a blob put through the API survives a power
//!   button poweroff and a new boot; Ctrl-Alt-Del reboots cleanly.
//! - `uefi`: OVMF → systemd-boot → UKI from the GPT disk to ready.
//! - `secure-boot`: the same with Secure Boot on and our keys enrolled;
//!   then an unsigned and a tampered UKI are refused by the firmware.
//! - `update`: a good update switches slots; a broken one (a signed UKI
//!   whose kernel cannot start /init) rolls back by itself.
//! - `config`: a config trial that makes the API unreachable is reverted and
//!   the node answers again; a good one is committed.
//! - `docklock`: a DockLock cage on the appliance itself (kernel 6.1 from
//!   the initramfs, real cgroup v2): the static probe, uploaded as a blob and
//!   run by its CID through the API, reads the virtual clock and exits 0
//!   with cgroup v2 accounting; a fork bomb hits the cage's pids limit and
//!   the signed receipt records it.
//! - `traffic`: one node config enforces a BISO policy at XDP (generic mode
//!   on the guest's virtio NIC: the image kernel's verifier and bpffs) and
//!   in the HTTP Cage, the policy and the cage config both store blobs
//!   named by CID; the host's requests pass XDP (counted green) and reach
//!   the API through the cage with a signed receipt header. Before that, a
//!   trial of a policy that blocks the host: its packets are dropped at XDP
//!   (the API stops answering, red drops counted) and the trial reverts by
//!   itself to a config with no traffic section, which releases XDP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::http;
use crate::image::{self, initramfs, keys, uki};
use crate::vm::{self, Mode, Spec, Vm};

const READY: &str = "metanode: ready";
/// What the agent prints each time it (re)starts serving the guest API.
const SERVING_API: &str = "serving api on http://0.0.0.0:7878";
/// TCG boots take seconds; these bound a hung boot, they are not targets.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

pub const SCENARIOS: &[&str] = &[
    "direct",
    "uefi",
    "secure-boot",
    "update",
    "config",
    "docklock",
    "traffic",
];

#[derive(Debug, Args, Clone)]
pub struct VmTestArgs {
    /// Run only these scenarios (default: all).
    #[arg(long = "only", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS))]
    pub only: Vec<String>,
    /// Image directory (default target/image; built first if missing).
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// Host port for the guest API.
    #[arg(long, default_value_t = 17878)]
    pub api_port: u16,
}

/// Boot times measured along the way, for the image bench.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Timings {
    pub direct_ready_s: Option<f64>,
    pub uefi_ready_s: Option<f64>,
    pub secure_boot_ready_s: Option<f64>,
}

struct Ctx {
    image: PathBuf,
    keys: keys::Keys,
    work: PathBuf,
    port: u16,
}

impl Ctx {
    fn spec(&self, boot: Mode, name: &str, no_reboot: bool) -> anyhow::Result<Spec> {
        Spec::fresh(
            &self.image,
            boot,
            &self.keys,
            &self.work.join(name),
            self.port,
            no_reboot,
        )
    }
}

pub fn run(args: &VmTestArgs) -> anyhow::Result<Timings> {
    anyhow::ensure!(
        vm::qemu_available(),
        "qemu-system-x86_64 missing (bootstrap/test.sh installs it)"
    );
    let image = args.image.clone().unwrap_or_else(image::default_out);
    anyhow::ensure!(
        image.join("metanode.efi").exists() && image.join("disk.qcow2").exists(),
        "no image in {}: run `cargo xtask image` first",
        image.display()
    );
    let ctx = Ctx {
        image: image.clone(),
        keys: keys::ensure(&keys::default_dir())?,
        work: image.join("vm-test"),
        port: args.api_port,
    };
    let _ = std::fs::remove_dir_all(&ctx.work);
    std::fs::create_dir_all(&ctx.work)?;
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut timings = Timings::default();
    let mut failures = Vec::new();
    for name in SCENARIOS {
        if !wanted(name) {
            continue;
        }
        eprintln!("\n==> vm-test {name}");
        let started = Instant::now();
        let result = match *name {
            "direct" => direct(&ctx).map(|t| timings.direct_ready_s = Some(t)),
            "uefi" => uefi(&ctx, Mode::Uefi).map(|t| timings.uefi_ready_s = Some(t)),
            "secure-boot" => secure_boot(&ctx).map(|t| timings.secure_boot_ready_s = Some(t)),
            "update" => update(&ctx),
            "config" => config(&ctx),
            "docklock" => docklock(&ctx),
            "traffic" => traffic(&ctx),
            _ => unreachable!("scenario list and match agree"),
        };
        match result {
            Ok(()) => eprintln!(
                "<== vm-test {name}: ok in {:.0} s",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("<== vm-test {name}: FAILED: {e:#}");
                failures.push(*name);
            }
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "vm-test failed: {}",
        failures.join(", ")
    );
    Ok(timings)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The `key=value` fields of the last `metanode: ready` line.
fn ready_field(log: &str, key: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(READY))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn sysctl_policy(image: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(image.join("sysctl.conf"))?;
    image::policy::sysctls(&text, "sysctl.conf")
}

fn check_boot_log(log: &str) -> anyhow::Result<()> {
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("Unknown kernel command line parameters"))
    {
        anyhow::bail!("the kernel did not know some command line parameters: {line}");
    }
    for bad in ["Kernel panic", "metanode: error", "BUG:", "WARNING:"] {
        if let Some(line) = log.lines().find(|l| l.contains(bad)) {
            anyhow::bail!("boot log has {bad:?}: {line}");
        }
    }
    Ok(())
}

fn check_sysctls(port: u16, image: &Path) -> anyhow::Result<usize> {
    let info = http::request(port, "GET", "/api/v1/system", b"")?;
    anyhow::ensure!(
        info.status == 200,
        "GET /api/v1/system: {} {}",
        info.status,
        info.text()
    );
    let info = info.json()?;
    let live = info["sysctl"].as_object().context("sysctl map")?;
    let policy = sysctl_policy(image)?;
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut wrong = Vec::new();
    for (key, want) in &policy {
        let got = live
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("<missing>");
        if norm(got) != norm(want) {
            wrong.push(format!("{key}: policy {want}, running {got}"));
        }
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "runtime sysctls differ from the policy:\n  {}",
        wrong.join("\n  ")
    );
    Ok(policy.len())
}

fn direct(ctx: &Ctx) -> anyhow::Result<f64> {
    let spec = ctx.spec(Mode::Direct, "direct", true)?;
    let work = ctx.work.join("direct");
    let mut vm = Vm::start(&spec, &work.join("boot1"))?;
    let ready = vm.wait_for(READY, BOOT_TIMEOUT)?;
    let log = vm.log();
    eprintln!("    direct boot to ready: {:.1} s", secs(ready));
    check_boot_log(&log)?;
    anyhow::ensure!(
        log.contains("formatting the data partition"),
        "first boot did not format the data partition"
    );
    anyhow::ensure!(
        ready_field(&log, "slot").as_deref() == Some("direct"),
        "slot is not direct"
    );
    let keys = check_sysctls(ctx.port, &ctx.image)?;
    eprintln!("    {keys} sysctls equal appliance/sysctl.conf");

    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let put = http::request(ctx.port, "POST", "/api/v1/blobs", &blob)?;
    anyhow::ensure!(put.status == 201, "put: {} {}", put.status, put.text());
    let cid = put.json()?["cid"].as_str().context("cid")?.to_owned();
    vm.power_button()?;
    vm.wait_exit(SHUTDOWN_TIMEOUT)?;
    let log = vm.log();
    anyhow::ensure!(
        log.contains("metanode: shutting down (power button"),
        "no orderly shutdown after the power button:\n{}",
        vm::tail(&log, 20)
    );

    let mut vm = Vm::start(&spec, &work.join("boot2"))?;
    vm.wait_for(READY, BOOT_TIMEOUT)?;
    let log = vm.log();
    anyhow::ensure!(
        !log.contains("formatting the data partition"),
        "second boot formatted again"
    );
    let got = http::request(ctx.port, "GET", &format!("/ipfs/{cid}?format=raw"), b"")?;
    anyhow::ensure!(
        got.status == 200 && got.body == blob,
        "blob {cid} did not survive the reboot ({})",
        got.status
    );
    eprintln!("    blob {cid} survived power-off and boot");
    vm.ctrl_alt_del()?;
    vm.wait_exit(SHUTDOWN_TIMEOUT)?;
    anyhow::ensure!(
        vm.log()
            .contains("metanode: shutting down (SIGINT (ctrl-alt-del))"),
        "no orderly reboot after Ctrl-Alt-Del:\n{}",
        vm::tail(&vm.log(), 20)
    );
    Ok(secs(ready))
}

fn uefi(ctx: &Ctx, boot: Mode) -> anyhow::Result<f64> {
    let name = if boot == Mode::SecureBoot {
        "secure-boot"
    } else {
        "uefi"
    };
    let spec = ctx.spec(boot, name, true)?;
    let mut vm = Vm::start(&spec, &ctx.work.join(name).join("boot"))?;
    let ready = vm.wait_for(READY, BOOT_TIMEOUT)?;
    let log = vm.log();
    check_boot_log(&log)?;
    let slot = ready_field(&log, "slot");
    anyhow::ensure!(
        slot.as_deref() == Some("a"),
        "booted slot {slot:?}, expected a; the ready line: {:?}",
        log.lines().rev().find(|l| l.contains(READY))
    );
    if boot == Mode::SecureBoot {
        anyhow::ensure!(
            log.contains("Secure boot enabled"),
            "the kernel does not report Secure Boot as enabled"
        );
    }
    eprintln!("    {name} boot to ready: {:.1} s", secs(ready));
    vm.power_button()?;
    vm.wait_exit(SHUTDOWN_TIMEOUT)?;
    Ok(secs(ready))
}

/// The UKI file names on a disk image's ESP.
fn esp_ukis(raw: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("mdir")
        .args(["-b", "-i"])
        .arg(format!("{}@@1M", raw.display()))
        .arg("::/EFI/Linux")
        .output()
        .context("run mdir")?;
    anyhow::ensure!(
        out.status.success(),
        "mdir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter(|n| n.ends_with(".efi"))
        .map(str::to_owned)
        .collect())
}

/// A copy of the image's disk whose slot UKIs are all replaced by `uki`.
fn disk_with_uki(ctx: &Ctx, uki: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = ctx.work.join(name);
    std::fs::create_dir_all(&dir)?;
    let raw = dir.join("disk.raw");
    std::fs::copy(ctx.image.join("disk.raw"), &raw)?;
    for file in esp_ukis(&raw)? {
        let status = Command::new("mcopy")
            .args(["-o", "-i"])
            .arg(format!("{}@@1M", raw.display()))
            .arg(uki)
            .arg(format!("::/EFI/Linux/{file}"))
            .status()?;
        anyhow::ensure!(status.success(), "mcopy into the ESP failed");
    }
    // Not disk.qcow2: Ctx::spec makes that overlay in the same directory.
    let qcow = dir.join("replaced-uki.qcow2");
    let status = Command::new("qemu-img")
        .args(["convert", "-q", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()?;
    anyhow::ensure!(status.success(), "qemu-img convert failed");
    std::fs::remove_file(&raw)?;
    Ok(qcow)
}

fn unsigned_uki(ctx: &Ctx, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join("unsigned.efi");
    uki::assemble(
        &ctx.image.join("os-release"),
        &ctx.image.join("cmdline.txt"),
        &ctx.image.join("bzImage"),
        &ctx.image.join("initramfs.img"),
        &out,
    )?;
    Ok(out)
}

fn secure_boot(ctx: &Ctx) -> anyhow::Result<f64> {
    let ready = uefi(ctx, Mode::SecureBoot)?;
    // A signed UKI with one byte of its command line changed: the
    // Authenticode digest no longer matches.
    let signed = std::fs::read(ctx.image.join("metanode.efi"))?;
    // The byte is in the os-release section, so a wrongly accepted image
    // would still boot with our console and the "Linux version" check sees it.
    let needle = b"PRETTY_NAME=\"Metanode";
    let at = signed
        .windows(needle.len())
        .position(|w| w == needle)
        .context("os-release not found in the UKI")?;
    let mut tampered = signed.clone();
    tampered[at + needle.len() - 1] = b'm'; // Metanode -> Metanodm
    let dir = ctx.work.join("secure-boot");
    let tampered_path = dir.join("tampered.efi");
    std::fs::write(&tampered_path, &tampered)?;
    let unsigned = unsigned_uki(ctx, &dir)?;
    for (label, uki) in [("unsigned", unsigned), ("tampered", tampered_path)] {
        let disk = disk_with_uki(ctx, &uki, &format!("secure-boot-{label}"))?;
        let mut spec = ctx.spec(Mode::SecureBoot, &format!("secure-boot-{label}"), true)?;
        spec.disk = disk;
        let mut vm = Vm::start(&spec, &ctx.work.join(format!("secure-boot-{label}/boot")))?;
        // systemd-boot reports the firmware's refusal; the kernel never starts.
        vm.wait_for_any(
            &["Access Denied", "Security Violation", "Linux version"],
            BOOT_TIMEOUT,
        )
        .with_context(|| format!("the {label} UKI was not refused"))?;
        std::thread::sleep(Duration::from_secs(3));
        anyhow::ensure!(
            !vm.log().contains("Linux version"),
            "the {label} UKI started a kernel under Secure Boot"
        );
        eprintln!("    {label} UKI refused under Secure Boot");
        vm.kill();
    }
    Ok(ready)
}

/// Runs the operator CLI (the static binary the image was built with) and
/// returns its stdout.
fn cli(args: &[&str]) -> anyhow::Result<String> {
    let bin = crate::agent_bin::static_path(&crate::workspace_root());
    let out = Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "metanode {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_api(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http::request(port, "GET", "/health", b"")
            && r.status == 200
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "API on port {port} did not answer within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn update(ctx: &Ctx) -> anyhow::Result<()> {
    // Reboots stay inside one QEMU run: the firmware, the boot counters on
    // the ESP and PID 1 do the whole A/B dance by themselves.
    let spec = ctx.spec(Mode::Uefi, "update", false)?;
    let mut vm = Vm::start(&spec, &ctx.work.join("update/boot"))?;
    vm.wait_for(READY, BOOT_TIMEOUT)?;
    anyhow::ensure!(ready_field(&vm.log(), "slot").as_deref() == Some("a"));

    // Good update: this very image, into slot b, through the operator CLI.
    let api = format!("http://127.0.0.1:{}", ctx.port);
    let uki_path = ctx.image.join("metanode.efi");
    let out = cli(&[
        "--json",
        "system",
        "update",
        "apply",
        &uki_path.to_string_lossy(),
        "--api",
        &api,
        "--reboot",
    ])?;
    anyhow::ensure!(
        out.contains("\"slot\":\"b\""),
        "update went elsewhere: {out}"
    );
    vm.wait_for_count(READY, 2, BOOT_TIMEOUT * 2)?;
    anyhow::ensure!(
        ready_field(&vm.log(), "slot").as_deref() == Some("b"),
        "good update did not boot slot b"
    );
    let info = http::request(ctx.port, "GET", "/api/v1/system", b"")?.json()?;
    let b_state = info["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["slot"] == "b"))
        .map(|x| x["state"].clone());
    anyhow::ensure!(
        b_state == Some("good".into()),
        "slot b not marked good: {info}"
    );
    eprintln!("    good update: booted slot b and marked it good");

    // Broken update: correctly signed, but its initramfs has no working /init.
    let dir = ctx.work.join("update");
    let mut cpio = initramfs::Cpio::default();
    cpio.dir("dev", 0o755);
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, b"this is not an executable\n");
    let broken_initrd = dir.join("broken-initramfs.img");
    std::fs::write(
        &broken_initrd,
        zstd::encode_all(cpio.finish().as_slice(), 3)?,
    )?;
    let broken_unsigned = dir.join("broken.unsigned.efi");
    uki::assemble(
        &ctx.image.join("os-release"),
        &ctx.image.join("cmdline.txt"),
        &ctx.image.join("bzImage"),
        &broken_initrd,
        &broken_unsigned,
    )?;
    let broken = dir.join("broken.efi");
    keys::sign(&ctx.keys, &broken_unsigned, &broken)?;
    let r = http::request(
        ctx.port,
        "POST",
        "/api/v1/system/update",
        &std::fs::read(&broken)?,
    )?;
    anyhow::ensure!(
        r.status == 200,
        "broken update upload: {} {}",
        r.status,
        r.text()
    );
    anyhow::ensure!(
        r.json()?["slot"] == "a",
        "broken update went to {}",
        r.text()
    );
    let tries = r.json()?["tries"].as_u64().unwrap_or(0) as usize;
    let r = http::request(ctx.port, "POST", "/api/v1/system/reboot", b"")?;
    anyhow::ensure!(r.status == 202);
    // Each failed try panics ("No working init found") and reboots; after
    // the last one systemd-boot picks slot b again.
    vm.wait_for_count(READY, 3, BOOT_TIMEOUT * (tries as u32 + 2))?;
    let log = vm.log();
    let panics = log.matches("No working init found").count();
    anyhow::ensure!(
        panics == tries,
        "expected {tries} failed tries, saw {panics}"
    );
    anyhow::ensure!(
        ready_field(&log, "slot").as_deref() == Some("b"),
        "did not fall back to slot b"
    );
    let info = http::request(ctx.port, "GET", "/api/v1/system", b"")?.json()?;
    anyhow::ensure!(
        info["update_note"]
            .as_str()
            .is_some_and(|n| n.contains("rolled back")),
        "the node does not report the rollback: {info}"
    );
    eprintln!("    broken update: {panics} failed tries, then back on slot b by itself");
    vm.power_button()?;
    vm.wait_exit(SHUTDOWN_TIMEOUT)?;
    Ok(())
}

fn config(ctx: &Ctx) -> anyhow::Result<()> {
    let spec = ctx.spec(Mode::Direct, "config", true)?;
    let mut vm = Vm::start(&spec, &ctx.work.join("config/boot"))?;
    vm.wait_for(READY, BOOT_TIMEOUT)?;
    let current = http::request(ctx.port, "GET", "/api/v1/system", b"")?.json()?;
    let name = current["hostname"]
        .as_str()
        .unwrap_or("metanode")
        .to_owned();
    // The API moves to a port the host does not forward: unreachable.
    // The appliance's default config with only the API port changed: the
    // host forwards 7878, so the node becomes unreachable.
    let bad = format!(
        "node:\n  name: {name}\n  data_dir: /var/lib/metanode/node\napi:\n  listen: 0.0.0.0:7879\n\
         store:\n  segment_size_bytes_max: 67108864\nnetwork:\n  mode: dhcp\n"
    );
    let r = http::request(
        ctx.port,
        "POST",
        "/api/v1/config?mode=try&timeout_s=20",
        bad.as_bytes(),
    )?;
    anyhow::ensure!(r.status == 202, "config try: {} {}", r.status, r.text());
    // Proof the trial really runs: the restarted agent serves on 7879.
    vm.wait_for(
        "serving api on http://0.0.0.0:7879",
        Duration::from_secs(30),
    )
    .context("the trial config did not take effect")?;
    anyhow::ensure!(
        http::request(ctx.port, "GET", "/health", b"")
            .map(|r| r.status)
            .unwrap_or(0)
            != 200,
        "the API still answers on 7878 under the trial config"
    );
    wait_api(ctx.port, Duration::from_secs(60))
        .context("the node did not come back after the trial expired")?;
    let trial = http::request(ctx.port, "GET", "/api/v1/config/trial", b"")?.json()?;
    anyhow::ensure!(trial["state"] == "reverted", "trial state: {trial}");
    eprintln!("    unconfirmed config reverted; API reachable again");

    let good = format!(
        "node:\n  name: {name}\n  data_dir: /var/lib/metanode/node\napi:\n  listen: 0.0.0.0:7878\n\
         store:\n  segment_size_bytes_max: 67108864\nnetwork:\n  mode: dhcp\nlog:\n  level: debug\n"
    );
    let restarts_before = vm.log().matches(SERVING_API).count();
    // Through the operator CLI this time.
    let api = format!("http://127.0.0.1:{}", ctx.port);
    let file = ctx.work.join("config/good.yaml");
    std::fs::write(&file, &good)?;
    let file = file.to_string_lossy().into_owned();
    cli(&["config", "apply", &file, "--api", &api, "--timeout-s", "30"])?;
    // Wait for the agent restarted on the trial config before committing.
    vm.wait_for_count(SERVING_API, restarts_before + 1, Duration::from_secs(30))?;
    wait_api(ctx.port, Duration::from_secs(30))?;
    cli(&["config", "commit", "--api", &api])?;
    let trial = http::request(ctx.port, "GET", "/api/v1/config/trial", b"")?.json()?;
    anyhow::ensure!(
        trial["state"] == "committed",
        "trial state after commit: {trial}"
    );
    eprintln!("    confirmed config committed");
    vm.power_button()?;
    vm.wait_exit(SHUTDOWN_TIMEOUT)?;
    Ok(())
}

/// Starts `yaml` as a config trial that reverts after `timeout_s` unless
/// committed, and waits until the agent restarted on it serves the API
/// (counted from before the request, so the line must be a new one).
fn try_config(ctx: &Ctx, vm: &mut Vm, yaml: &str, timeout_s: u32) -> anyhow::Result<()> {
    let restarts_before = vm.log().matches(SERVING_API).count();
    let r = http::request(
        ctx.port,
        "POST",
        &format!("/api/v1/config?mode=try&timeout_s={timeout_s}"),
        yaml.as_bytes(),
    )?;
    anyhow::ensure!(r.status == 202, "config try: {} {}", r.status, r.text());
    vm.wait_for_count(SERVING_API, restarts_before + 1, Duration::from_secs(30))?;
    Ok(())
}

/// Applies `yaml` as a config trial, waits for the agent restarted on it and
/// commits it (the operator's `config apply` + `config commit`, over HTTP).
fn apply_and_commit(ctx: &Ctx, vm: &mut Vm, yaml: &str) -> anyhow::Result<()> {
    try_config(ctx, vm, yaml, 60)?;
    wait_api(ctx.port, Duration::from_secs(30))?;
    let r = http::request(ctx.port, "POST", "/api/v1/config/commit", b"")?;
    anyhow::ensure!(
        (200..300).contains(&r.status),
        "config commit: {} {}",
        r.status,
        r.text()
    );
    Ok(())
}

/// The BISO policy of the traffic scenario: QEMU's user network (the host
/// is 10.0.2.2) is one region, green, or blocked when `blocked`.
fn traffic_policy(blocked: bool) -> String {
    format!(
        "version: 1\nmode: normal\n\
         data: {{ class: General, purposes: [operations], \
         encryption: {{ in_transit: true, at_rest: true }}, retention_days_max: 30 }}\n\
         regions:\n  - {{ cidr: 10.0.2.0/24, region: qemu-host }}\n\
         unknown_region: elsewhere\n\
         blocked_regions: [{}]\n\
         yellow: {{ rate_per_s: 1000, burst: 200, sample_one_in: 0 }}\n",
        if blocked { "qemu-host" } else { "" }
    )
}

/// The value of the Prometheus sample whose line starts with `series`.
fn metric(text: &str, series: &str) -> anyhow::Result<u64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no metric {series} in:\n{text}"))
}

fn traffic(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = ctx.spec(Mode::Direct, "traffic", true)?;
    let cage_port = ctx
        .port
        .checked_add(1)
        .context("--api-port 65535 leaves no port for the cage's forward")?;
    spec.cage_port = Some(cage_port);
    let mut vm = Vm::start(&spec, &ctx.work.join("traffic/boot"))?;
    vm.wait_for(READY, BOOT_TIMEOUT)?;
    let name = http::request(ctx.port, "GET", "/api/v1/system", b"")?.json()?["hostname"]
        .as_str()
        .unwrap_or("metanode")
        .to_owned();
    // The appliance has no shell: its traffic files go in as blobs.
    let put = |what: &str, body: &str| -> anyhow::Result<String> {
        let r = http::request(ctx.port, "POST", "/api/v1/blobs", body.as_bytes())?;
        anyhow::ensure!(r.status == 201, "put {what}: {} {}", r.status, r.text());
        Ok(r.json()?["cid"].as_str().context("cid")?.to_owned())
    };
    let green = put("green policy", &traffic_policy(false))?;
    let red = put("red policy", &traffic_policy(true))?;
    let cage = put(
        "cage config",
        &format!(
            "listen: 0.0.0.0:{}\nroutes:\n  - {{ path_prefix: /, upstream: \"127.0.0.1:{}\", \
             unsigned: allow-with-receipt }}\n\
             receipts: {{ path: /var/lib/metanode/node/cage-receipts.log, response_header: true }}\n",
            vm::GUEST_CAGE_PORT,
            vm::GUEST_API_PORT
        ),
    )?;
    let config = |policy: &str| {
        format!(
            "node:\n  name: {name}\n  data_dir: /var/lib/metanode/node\napi:\n  listen: 0.0.0.0:7878\n\
             store:\n  segment_size_bytes_max: 67108864\nnetwork:\n  mode: dhcp\n\
             traffic:\n  policy: /ipfs/{policy}\n  xdp_interfaces: [eth0]\n  xdp_mode: generic\n\
             \x20 cage: /ipfs/{cage}\n"
        )
    };
    const ENFORCED: &str = "enforced at XDP on [eth0] and in the cage";
    // First a trial of a policy that blocks the host, on a node with no
    // traffic section yet: XDP drops the host's packets, so nothing can
    // commit it, and the trial reverts to a config without XDP, whose start
    // must release the pinned link the trial left (or the node would stay
    // unreachable).
    // Once the trial's agent serves, the API is up behind XDP: what the
    // probe meets is the filter.
    try_config(ctx, &mut vm, &config(&red), 30)?;
    vm.wait_for_count(ENFORCED, 1, Duration::from_secs(30))
        .context("the blocking policy did not take effect")?;
    let blocked = http::request_within(ctx.port, "GET", "/health", b"", Duration::from_secs(5));
    anyhow::ensure!(
        blocked.as_ref().map(|r| r.status).unwrap_or(0) != 200,
        "the API answered the host under a policy that blocks it: {blocked:?}"
    );
    wait_api(ctx.port, Duration::from_secs(90))
        .context("the node did not come back after the blocking trial expired")?;
    let trial = http::request(ctx.port, "GET", "/api/v1/config/trial", b"")?.json()?;
    anyhow::ensure!(trial["state"] == "reverted", "trial state: {trial}");
    eprintln!(
        "    blocking policy: the host was cut off at XDP; the trial reverted and released XDP"
    );

    // Then the green policy, committed.
    apply_and_commit(ctx, &mut vm, &config(&green))?;
    vm.wait_for_count(ENFORCED, 2, Duration::from_secs(30))?;
    // The host's request crosses XDP (green) and the cage, which forwards
    // it to the node's own API and signs a receipt for it.
    let through_cage = http::request(cage_port, "GET", "/health", b"")?;
    anyhow::ensure!(
        through_cage.status == 200 && through_cage.header("metanode-receipt").is_some(),
        "GET /health through the cage: {} (receipt header {:?}) {}",
        through_cage.status,
        through_cage.header("metanode-receipt"),
        through_cage.text()
    );
    let r = http::request(ctx.port, "GET", "/metrics/traffic", b"")?;
    anyhow::ensure!(r.status == 200, "/metrics/traffic: {}", r.status);
    let text = r.text();
    let series = |light: &str, outcome: &str| {
        metric(
            &text,
            &format!("metanode_xdp_packets_total{{light=\"{light}\",outcome=\"{outcome}\"}}"),
        )
    };
    // The counters live in the pinned maps, so the trial's drops are there.
    let (passed, dropped) = (series("green", "pass")?, series("red", "drop")?);
    let forwarded = metric(
        &text,
        "metanode_cage_requests_total{decision=\"forwarded\"}",
    )?;
    anyhow::ensure!(
        passed > 0 && dropped > 0 && forwarded > 0,
        "green packets {passed}, red drops {dropped}, forwarded requests {forwarded}"
    );
    eprintln!(
        "    policy and cage config by CID: {passed} packets green and {dropped} dropped red at XDP, \
         {forwarded} request(s) through the cage"
    );
    vm.power_button()?;
    vm.wait_exit(SHUTDOWN_TIMEOUT)?;
    Ok(())
}

fn docklock(ctx: &Ctx) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let probe = crate::bench::docklock::build_probe(root)?;
    let probe_bytes = std::fs::read(&probe).with_context(|| format!("read {}", probe.display()))?;
    let spec = ctx.spec(Mode::Direct, "docklock", true)?;
    let mut vm = Vm::start(&spec, &ctx.work.join("docklock/boot"))?;
    vm.wait_for(READY, BOOT_TIMEOUT)?;
    let put = http::request(ctx.port, "POST", "/api/v1/blobs", &probe_bytes)?;
    anyhow::ensure!(
        put.status == 201,
        "put probe: {} {}",
        put.status,
        put.text()
    );
    let cid = put.json()?["cid"].as_str().context("cid")?.to_owned();
    let name = http::request(ctx.port, "GET", "/api/v1/system", b"")?.json()?["hostname"]
        .as_str()
        .unwrap_or("metanode")
        .to_owned();
    let yaml = format!(
        "node:\n  name: {name}\n  data_dir: /var/lib/metanode/node\napi:\n  listen: 0.0.0.0:7878\n\
         store:\n  segment_size_bytes_max: 67108864\nnetwork:\n  mode: dhcp\n\
         docklock:\n  workloads_dir: /var/lib/metanode\n  executables_by_cid: true\n"
    );
    apply_and_commit(ctx, &mut vm, &yaml)?;

    let run = |args: &[&str]| -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({
            "executable_cid": cid,
            "args": args,
            "timeout_s": 60,
        });
        let r = http::request(
            ctx.port,
            "POST",
            "/api/v1/docklock/runs",
            body.to_string().as_bytes(),
        )?;
        anyhow::ensure!(
            r.status == 200,
            "docklock run {args:?}: {} {}\n{}",
            r.status,
            r.text(),
            vm::tail(&vm.log(), 30)
        );
        r.json()
    };
    let clock = run(&["clock"])?;
    eprintln!("    caged probe `clock`: {clock}");
    anyhow::ensure!(
        clock["exit"] == serde_json::json!({"code": 0}),
        "the caged probe did not exit 0: {clock}"
    );
    anyhow::ensure!(
        clock["cgroup"]["mode"] == "v2"
            && clock["cgroup"]["cpu_usage_us"].as_u64() > Some(0)
            && clock["cgroup"]["memory_peak_bytes"].as_u64() > Some(0),
        "the cage did not run in a cgroup v2 with accounting: {clock}"
    );
    let bomb = run(&["fork-bomb"])?;
    eprintln!("    caged probe `fork-bomb`: {bomb}");
    anyhow::ensure!(
        bomb["cgroup"]["pids_max_hits"].as_u64() > Some(0)
            && bomb["violations"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["kind"] == "pids_limit")),
        "the fork bomb did not hit the cgroup v2 pids limit, or the receipt misses it: {bomb}"
    );
    vm.power_button()?;
    vm.wait_exit(SHUTDOWN_TIMEOUT)?;
    Ok(())
}
