//! QEMU (TCG here, KVM when /dev/kvm is usable) around the appliance image:
//! `cargo xtask vm` for a person (serial console on the terminal), and the
//! `Vm` handle the system tests drive (serial log in a file, QMP socket for
//! the power button and Ctrl-Alt-Del, host port forwarded to the API).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::image::{self, keys::Keys};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Port of the agent API inside the guest (the appliance default).
pub const GUEST_API_PORT: u16 = 7878;
/// Port the traffic scenario's HTTP Cage listens on inside the guest
/// ([`Spec::cage_port`] forwards a host port to it).
pub const GUEST_CAGE_PORT: u16 = 8080;
/// init_on_free=1 makes the kernel wipe all of RAM at boot, which under TCG costs
/// about 4.5 s per GiB; 512 MiB is plenty for the agent.
const MEMORY_MIB: u32 = 512;
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// QEMU loads bzImage + initramfs.img itself (no firmware): fastest.
    Direct,
    /// OVMF → systemd-boot → UKI from the GPT disk.
    Uefi,
    /// As uefi, with Secure Boot on and our PK/KEK/db enrolled.
    SecureBoot,
}

#[derive(Debug, Args, Clone)]
pub struct VmArgs {
    /// How to boot.
    #[arg(long, value_enum, default_value_t = Mode::Uefi)]
    pub boot: Mode,
    /// Image directory (from `cargo xtask image`).
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// Host port forwarded to the node's API (127.0.0.1 only).
    #[arg(long, default_value_t = 7878)]
    pub api_port: u16,
    /// Start from a fresh copy of the image's disk instead of the persistent
    /// one in target/image/vm/.
    #[arg(long)]
    pub fresh: bool,
}

/// Everything one boot needs.
#[derive(Debug, Clone)]
pub struct Spec {
    pub boot: Mode,
    pub image_dir: PathBuf,
    /// The qcow2 the guest writes (an overlay of the image's disk).
    pub disk: PathBuf,
    /// Writable OVMF variable store (UEFI boots).
    pub vars: Option<PathBuf>,
    pub api_port: u16,
    /// Extra kernel parameters (direct boot only; a UKI's command line is
    /// signed and fixed).
    pub append_extra: String,
    /// Exit QEMU instead of rebooting the guest.
    pub no_reboot: bool,
    /// A second forward, host port → [`GUEST_CAGE_PORT`] (the traffic
    /// scenario's cage).
    pub cage_port: Option<u16>,
}

impl Spec {
    /// A boot of `image_dir` on fresh state in `dir`: a new qcow2 overlay on
    /// the image's disk and, for UEFI boots, a new variable store (with our
    /// keys enrolled for Secure Boot).
    pub fn fresh(
        image_dir: &Path,
        boot: Mode,
        keys: &Keys,
        dir: &Path,
        api_port: u16,
        no_reboot: bool,
    ) -> anyhow::Result<Spec> {
        std::fs::create_dir_all(dir)?;
        let disk = dir.join("disk.qcow2");
        overlay(image_dir, &disk)?;
        let vars = if boot == Mode::Direct {
            None
        } else {
            let path = dir.join("vars.fd");
            vars(boot, keys, &path)?;
            Some(path)
        };
        Ok(Spec {
            boot,
            image_dir: image_dir.to_path_buf(),
            disk,
            vars,
            api_port,
            append_extra: String::new(),
            no_reboot,
            cage_port: None,
        })
    }
}

pub fn qemu_available() -> bool {
    Path::new("/usr/bin/qemu-system-x86_64").exists()
}

/// KVM only when asked (`METANODE_VM_KVM=1`): a /dev/kvm that opens is not
/// proof it works (nested setups fail with "emulation failure" mid-boot),
/// and the numbers in SPECIFICATION.md are TCG numbers.
fn kvm_usable() -> bool {
    std::env::var_os("METANODE_VM_KVM").is_some_and(|v| v == "1")
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// A qcow2 overlay on the image's disk, so the image itself stays pristine.
pub fn overlay(image_dir: &Path, path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(image_dir.join("disk.qcow2"))
        .arg(path)
        .status()
        .context("run qemu-img")?;
    anyhow::ensure!(
        status.success(),
        "qemu-img create {} failed",
        path.display()
    );
    Ok(())
}

/// A variable store: plain OVMF vars, or for Secure Boot our PK/KEK/db
/// enrolled with virt-fw-vars (PyPI virt-firmware) and Secure Boot on.
pub fn vars(boot: Mode, keys: &Keys, path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    match boot {
        Mode::Direct => Ok(()),
        Mode::Uefi => {
            std::fs::copy(OVMF_VARS, path).context("copy OVMF vars (apt-get install ovmf)")?;
            Ok(())
        }
        Mode::SecureBoot => {
            let guid = keys.owner_guid()?;
            let out = Command::new("virt-fw-vars")
                .args(["--input", OVMF_VARS, "--output"])
                .arg(path)
                .arg("--set-pk")
                .arg(&guid)
                .arg(keys.cert("PK"))
                .arg("--add-kek")
                .arg(&guid)
                .arg(keys.cert("KEK"))
                .arg("--add-db")
                .arg(&guid)
                .arg(keys.cert("db"))
                .args(["--no-microsoft", "--sb"])
                .output()
                .context("run virt-fw-vars (pip install virt-firmware)")?;
            anyhow::ensure!(
                out.status.success(),
                "virt-fw-vars failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        }
    }
}

fn qemu_command(spec: &Spec) -> anyhow::Result<Command> {
    let mut cmd = Command::new("qemu-system-x86_64");
    let machine = if spec.boot == Mode::SecureBoot {
        "q35,smm=on"
    } else {
        "q35"
    };
    cmd.args([
        "-machine",
        machine,
        "-m",
        &MEMORY_MIB.to_string(),
        "-smp",
        "2",
    ]);
    if kvm_usable() {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    cmd.args(["-nodefaults", "-no-user-config"])
        .args(["-device", "virtio-rng-pci"])
        .args(["-device", "i6300esb", "-action", "watchdog=reset"])
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{}-:{GUEST_API_PORT}{}",
            spec.api_port,
            spec.cage_port
                .map(|port| format!(",hostfwd=tcp:127.0.0.1:{port}-:{GUEST_CAGE_PORT}"))
                .unwrap_or_default()
        ))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2,cache=unsafe",
            spec.disk.display()
        ));
    if spec.no_reboot {
        cmd.arg("-no-reboot");
    }
    match spec.boot {
        Mode::Direct => {
            let cmdline = std::fs::read_to_string(spec.image_dir.join("cmdline.txt"))?;
            let append = format!("{} {}", cmdline.trim(), spec.append_extra)
                .trim()
                .to_owned();
            cmd.arg("-kernel")
                .arg(spec.image_dir.join("bzImage"))
                .arg("-initrd")
                .arg(spec.image_dir.join("initramfs.img"))
                .arg("-append")
                .arg(append);
        }
        Mode::Uefi | Mode::SecureBoot => {
            let code = if spec.boot == Mode::SecureBoot {
                cmd.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                OVMF_CODE_SECBOOT
            } else {
                OVMF_CODE
            };
            let vars = spec.vars.as_ref().context("UEFI boot needs a vars file")?;
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
    }
    Ok(cmd)
}

/// `cargo xtask vm`: boots the image with the serial console on this
/// terminal (Ctrl-A X quits QEMU; Ctrl-A C toggles the QEMU monitor).
pub fn run_interactive(args: &VmArgs) -> anyhow::Result<()> {
    let image_dir = args.image.clone().unwrap_or_else(image::default_out);
    anyhow::ensure!(
        image_dir.join("disk.qcow2").exists(),
        "no image in {}: run `cargo xtask image` first",
        image_dir.display()
    );
    anyhow::ensure!(
        qemu_available(),
        "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
    );
    let state = image_dir.join("vm");
    std::fs::create_dir_all(&state)?;
    let disk = state.join("disk.qcow2");
    if args.fresh || !disk.exists() {
        overlay(&image_dir, &disk)?;
    }
    let keys = image::keys::ensure(&image::keys::default_dir())?;
    let vars_path = state.join(format!("vars-{:?}.fd", args.boot).to_lowercase());
    if args.boot != Mode::Direct && (args.fresh || !vars_path.exists()) {
        vars(args.boot, &keys, &vars_path)?;
    }
    let spec = Spec {
        boot: args.boot,
        image_dir: image_dir.clone(),
        disk,
        vars: (args.boot != Mode::Direct).then_some(vars_path),
        api_port: args.api_port,
        append_extra: String::new(),
        no_reboot: false,
        cage_port: None,
    };
    let mut cmd = qemu_command(&spec)?;
    cmd.args(["-nographic", "-serial", "mon:stdio"]);
    eprintln!(
        "==> booting {} ({:?}); API on http://127.0.0.1:{}; Ctrl-A X quits",
        image_dir.display(),
        args.boot,
        args.api_port
    );
    let status = cmd.status().context("run qemu-system-x86_64")?;
    anyhow::ensure!(status.success(), "qemu exited with {status}");
    Ok(())
}

/// A running guest driven by a test.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    pub serial: PathBuf,
    qmp: PathBuf,
    pub started: Instant,
}

impl Vm {
    pub fn start(spec: &Spec, work: &Path) -> anyhow::Result<Vm> {
        std::fs::create_dir_all(work)?;
        let serial = work.join("serial.log");
        let qmp = work.join("qmp.sock");
        let _ = std::fs::remove_file(&serial);
        let _ = std::fs::remove_file(&qmp);
        let mut cmd = qemu_command(spec)?;
        cmd.args(["-display", "none", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("qemu.stderr"))?);
        let child = cmd.spawn().context("spawn qemu-system-x86_64")?;
        Ok(Vm {
            child,
            serial,
            qmp,
            started: Instant::now(),
        })
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.serial) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    /// Waits until the serial log holds `count` complete lines containing
    /// `needle`; returns the time since start. Fails early if QEMU exits.
    ///
    /// Only lines that have ended count: the serial file is read while the
    /// guest writes it, and a line seen half-written (`metanode: ready
    /// version=0.1.0 ` without its `slot=`) once failed a CI run.
    pub fn wait_for_count(
        &mut self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if complete_lines(&log).matches(needle).count() >= count {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "qemu exited ({status}) before {needle:?} x{count} appeared; serial log tail:\n{}",
                    tail(&log, 40)
                );
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{needle:?} x{count} did not appear within {:?}; serial log tail:\n{}",
                    timeout,
                    tail(&log, 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until any of `needles` appears; returns which one.
    pub fn wait_for_any(&mut self, needles: &[&str], timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(i) = needles.iter().position(|n| log.contains(n)) {
                return Ok(i);
            }
            if self.child.try_wait()?.is_some() || Instant::now() >= deadline {
                anyhow::bail!(
                    "none of {needles:?} appeared within {timeout:?}; serial log tail:\n{}",
                    tail(&log, 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_for_count(needle, 1, timeout)
    }

    fn qmp_execute(&self, command: &str) -> anyhow::Result<()> {
        let mut stream = UnixStream::connect(&self.qmp)
            .with_context(|| format!("connect QMP {}", self.qmp.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?; // greeting
        stream.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        stream.write_all(command.as_bytes())?;
        stream.write_all(b"\n")?;
        loop {
            line.clear();
            anyhow::ensure!(reader.read_line(&mut line)? > 0, "QMP closed");
            if line.contains("\"return\"") {
                return Ok(());
            }
            anyhow::ensure!(!line.contains("\"error\""), "QMP error: {line}");
        }
    }

    /// Presses the ACPI power button.
    pub fn power_button(&self) -> anyhow::Result<()> {
        self.qmp_execute("{\"execute\":\"system_powerdown\"}")
    }

    /// Ctrl-Alt-Del on the guest's PS/2 keyboard.
    pub fn ctrl_alt_del(&self) -> anyhow::Result<()> {
        self.qmp_execute(
            "{\"execute\":\"send-key\",\"arguments\":{\"keys\":[{\"type\":\"qcode\",\"data\":\"ctrl\"},\
             {\"type\":\"qcode\",\"data\":\"alt\"},{\"type\":\"qcode\",\"data\":\"delete\"}]}}",
        )
    }

    /// Waits for QEMU to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "qemu still running after {timeout:?}; serial log tail:\n{}",
                    tail(&self.log(), 30)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `text` up to and including its last newline: the lines the guest has
/// finished writing.
fn complete_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |end| &text[..=end])
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_counts_only_once_it_has_ended() {
        assert_eq!(complete_lines(""), "");
        assert_eq!(complete_lines("metanode: ready version=0.1.0 "), "");
        assert_eq!(
            complete_lines("boot\nmetanode: ready version=0.1.0 sl"),
            "boot\n"
        );
        assert_eq!(
            complete_lines("boot\r\nmetanode: ready slot=a\r\n"),
            "boot\r\nmetanode: ready slot=a\r\n"
        );
    }
}
