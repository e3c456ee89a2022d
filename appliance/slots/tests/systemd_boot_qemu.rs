//! The slot naming against the real thing: Debian's systemd-boot 252 in OVMF under QEMU.
//!
//! Each "boot" copies our fake ESP into a GPT disk image, starts QEMU, and reads back what
//! systemd-boot did: which entry it chose (its error line when the payload — a UKI without a
//! kernel — fails to start names the loader path) and how it renamed the counter. Our prediction
//! (`Status::next_entry`, from the ported comparison) must match at every step of
//! install → 3 failed boots → fallback → next update → mark good.
//!
//! Skipped (with the reason printed) when qemu-system-x86_64, OVMF, systemd-boot-efi, mtools,
//! dosfstools, gdisk or binutils are missing. It boots eight times under TCG (~10 s each).

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use metanode_slots::esp::{self, Esp, LINUX_DIR, MarkGood, Slot, SlotState};
use metanode_slots::update::rollback_report;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const PART_MIB: u64 = 40;
/// Generous bound for one boot under TCG on a loaded 2-core CI machine; not a performance claim.
const BOOT_WAIT_MAX: Duration = Duration::from_secs(300);

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tools_missing() -> Vec<&'static str> {
    let checks: [(&'static str, bool); 9] = [
        (
            "qemu-system-x86_64",
            have("qemu-system-x86_64", "--version"),
        ),
        ("mtools", have("mcopy", "--version")),
        ("dosfstools", have("mkfs.vfat", "--help")),
        ("gdisk (sgdisk)", have("sgdisk", "--version")),
        ("binutils (objcopy)", have("objcopy", "--version")),
        (OVMF, Path::new(OVMF).is_file()),
        (SYSTEMD_BOOT, Path::new(SYSTEMD_BOOT).is_file()),
        (STUB, Path::new(STUB).is_file()),
        ("mdir", have("mdir", "--version")),
    ];
    checks
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect()
}

struct Machine {
    work: PathBuf,
    esp_root: PathBuf,
    esp: Esp,
}

impl Machine {
    fn new(work: &Path) -> Machine {
        let esp_root = work.join("esp");
        fs::create_dir_all(esp_root.join(LINUX_DIR)).unwrap();
        fs::create_dir_all(esp_root.join("EFI/BOOT")).unwrap();
        fs::create_dir_all(esp_root.join("loader")).unwrap();
        fs::copy(SYSTEMD_BOOT, esp_root.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
        fs::write(esp_root.join("loader/loader.conf"), esp::loader_conf()).unwrap();
        let esp = Esp::open(&esp_root).unwrap();
        Machine {
            work: work.to_owned(),
            esp_root,
            esp,
        }
    }

    fn linux_names(&self) -> BTreeSet<String> {
        fs::read_dir(self.esp.linux_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Powers on once; returns the entry id systemd-boot selected (LoaderEntrySelected: the
    /// name before its counter was bumped) and mirrors its rename back into our ESP directory.
    fn boot(&self) -> String {
        let part = self.work.join("part.img");
        let disk = self.work.join("disk.img");
        let serial = self.work.join("serial.log");
        for p in [&part, &disk, &serial] {
            let _ = fs::remove_file(p);
        }
        fs::File::create(&part)
            .unwrap()
            .set_len(PART_MIB << 20)
            .unwrap();
        run(Command::new("mkfs.vfat").arg("-n").arg("ESP").arg(&part));
        run(Command::new("mcopy")
            .arg("-s")
            .arg("-i")
            .arg(&part)
            .arg(self.esp_root.join("EFI"))
            .arg(self.esp_root.join("loader"))
            .arg("::/"));

        // GPT disk: 1 MiB for the primary table, the partition, 1 MiB for the backup table.
        let mut disk_file = fs::File::create(&disk).unwrap();
        disk_file.set_len((PART_MIB + 2) << 20).unwrap();
        disk_file.seek(SeekFrom::Start(1 << 20)).unwrap();
        let mut part_bytes = Vec::new();
        fs::File::open(&part)
            .unwrap()
            .read_to_end(&mut part_bytes)
            .unwrap();
        disk_file.write_all(&part_bytes).unwrap();
        drop(disk_file);
        run(Command::new("sgdisk")
            .arg(format!("-n1:2048:+{PART_MIB}M"))
            .arg("-t1:ef00")
            .arg(&disk));

        let mut qemu = Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "q35",
                "-m",
                "256",
                "-display",
                "none",
                "-net",
                "none",
                "-no-reboot",
            ])
            .arg("-bios")
            .arg(OVMF)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let loader_path = loop {
            let log = fs::read(&serial).unwrap_or_default();
            let text = String::from_utf8_lossy(&log);
            if let Some(line) = text.split('\n').find(|l| l.contains("Failed to execute")) {
                let path = line
                    .rsplit_once("(\\EFI\\Linux\\")
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map(|(p, _)| p);
                if let Some(path) = path {
                    break path.to_owned();
                }
            }
            if started.elapsed() > BOOT_WAIT_MAX || qemu.try_wait().unwrap().is_some() {
                let _ = qemu.kill();
                let tail: String = text
                    .chars()
                    .rev()
                    .take(2000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!("systemd-boot did not try an entry; serial log tail:\n{tail}");
            }
            sleep(Duration::from_millis(500));
        };
        qemu.kill().unwrap();
        qemu.wait().unwrap();

        // Mirror the loader's rename: the one name that changed.
        let out = Command::new("mdir")
            .arg("-b")
            .arg("-i")
            .arg(format!("{}@@1M", disk.display()))
            .arg("::/EFI/Linux")
            .output()
            .unwrap();
        let after: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .split('\n')
            .filter_map(|l| l.trim().strip_prefix("::/EFI/Linux/").map(str::to_owned))
            .collect();
        let before = self.linux_names();
        let gone: Vec<&String> = before.difference(&after).collect();
        let new: Vec<&String> = after.difference(&before).collect();
        match (gone.as_slice(), new.as_slice()) {
            ([], []) => loader_path,
            ([old], [renamed]) => {
                assert_eq!(
                    *renamed, &loader_path,
                    "the renamed file is the one started"
                );
                fs::rename(
                    self.esp.linux_dir().join(old),
                    self.esp.linux_dir().join(renamed),
                )
                .unwrap();
                (*old).clone()
            }
            _ => panic!("unexpected ESP change: before {before:?}, after {after:?}"),
        }
    }

    /// Boots once and checks systemd-boot chose what our port predicted.
    fn boot_as_predicted(&self) -> String {
        let predicted = self
            .esp
            .status(None)
            .unwrap()
            .next_entry
            .expect("an entry to boot");
        let booted = self.boot();
        assert_eq!(
            booted, predicted,
            "systemd-boot 252 disagrees with bootorder.rs"
        );
        booted
    }
}

fn uki(work: &Path) -> Vec<u8> {
    let osrel = work.join("osrel");
    fs::write(
        &osrel,
        "NAME=\"Metanode\"\nPRETTY_NAME=\"Metanode appliance\"\nVERSION=\"0.1.0\"\n",
    )
    .unwrap();
    let out = work.join("uki.efi");
    run(Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".osrel={}", osrel.display()))
        .args(["--change-section-vma", ".osrel=0x20000"])
        .arg(STUB)
        .arg(&out));
    fs::read(out).unwrap()
}

#[test]
fn real_systemd_boot_tries_the_update_then_falls_back() {
    let missing = tools_missing();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED real_systemd_boot_tries_the_update_then_falls_back: missing {missing:?}"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let m = Machine::new(work.path());
    let image = uki(work.path());

    // First install, first boot, marked good.
    m.esp.install_bytes(Slot::A, &image, 1).unwrap();
    let booted = m.boot_as_predicted();
    assert_eq!(booted, "metanode-1-a+1.efi");
    assert!(matches!(
        m.esp.mark_booted_good(&booted).unwrap(),
        MarkGood::Renamed { .. }
    ));

    // An update to B with 3 tries, never marked good.
    m.esp.install_bytes(Slot::B, &image, 3).unwrap();
    for want in [
        "metanode-2-b+3.efi",
        "metanode-2-b+2-1.efi",
        "metanode-2-b+1-2.efi",
    ] {
        assert_eq!(m.boot_as_predicted(), want);
    }
    // Out of tries: the loader goes back to the good slot by itself, and stays there.
    let booted = m.boot_as_predicted();
    assert_eq!(booted, "metanode-1-a.efi");
    let status = m.esp.status(Some(&booted)).unwrap();
    assert_eq!(status.slot(Slot::B).state, SlotState::Bad { done: 3 });
    assert!(rollback_report(&status).is_some());
    assert_eq!(m.boot_as_predicted(), "metanode-1-a.efi");

    // The next update replaces the bad image, is tried first, and once good is the default.
    m.esp
        .install_bytes(m.esp.inactive_slot(Slot::A), &image, 2)
        .unwrap();
    let booted = m.boot_as_predicted();
    assert_eq!(booted, "metanode-3-b+2.efi");
    m.esp.mark_booted_good(&booted).unwrap();
    assert_eq!(m.boot_as_predicted(), "metanode-3-b.efi");
}
