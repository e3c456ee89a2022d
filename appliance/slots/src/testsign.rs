//! Real signing for tests: openssl keys and sbsign signatures on Debian's systemd-boot stub.
//!
//! Tests that need these call [`Tools::find`], which prints why and returns None when a tool is
//! missing (install `sbsigntool`, `systemd-boot-efi` and `openssl`), so the test is skipped
//! rather than faked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's (bookworm) systemd stub: a real, signable PE32+ EFI application.
pub(crate) const STUB_PATH: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

pub(crate) struct Tools {
    pub(crate) stub: PathBuf,
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).output().is_ok()
}

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tools {
    pub(crate) fn find(test: &str) -> Option<Tools> {
        let missing: Vec<&str> = [
            ("sbsign", runs("sbsign", "--help")),
            ("sbverify", runs("sbverify", "--help")),
            ("openssl", runs("openssl", "version")),
            (STUB_PATH, Path::new(STUB_PATH).is_file()),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            eprintln!(
                "SKIPPED {test}: missing {missing:?} (apt-get install sbsigntool systemd-boot-efi openssl)"
            );
            return None;
        }
        Some(Tools {
            stub: PathBuf::from(STUB_PATH),
        })
    }

    /// A self-signed RSA-2048 certificate and key, as our bootstrap makes the `db` key.
    pub(crate) fn self_signed(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-sha256",
            ])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        check(out, "openssl req -x509");
        (key, cert)
    }

    /// A certificate for `name` issued by the CA (`ca_key`, `ca_cert`).
    pub(crate) fn issued(
        &self,
        dir: &Path,
        name: &str,
        ca_key: &Path,
        ca_cert: &Path,
    ) -> (PathBuf, PathBuf) {
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let cert = dir.join(format!("{name}.pem"));
        let out = Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes"])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .unwrap();
        check(out, "openssl req");
        let out = Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-days",
                "3650",
                "-sha256",
                "-set_serial",
                "7",
            ])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(ca_cert)
            .arg("-CAkey")
            .arg(ca_key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        check(out, "openssl x509 -req");
        (key, cert)
    }

    pub(crate) fn sbsign(&self, key: &Path, cert: &Path, input: &Path, output: &Path) {
        let out = Command::new("sbsign")
            .arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .arg("--output")
            .arg(output)
            .arg(input)
            .output()
            .unwrap();
        check(out, "sbsign");
    }

    /// `sbverify --cert cert image` succeeded.
    pub(crate) fn sbverify(&self, cert: &Path, image: &Path) -> bool {
        Command::new("sbverify")
            .arg("--cert")
            .arg(cert)
            .arg(image)
            .output()
            .unwrap()
            .status
            .success()
    }

    /// A UKI the way the image builder makes one: the stub with an `.osrel` section added by
    /// objcopy. None (with a printed reason) when objcopy is missing.
    pub(crate) fn uki_with_osrel(&self, dir: &Path, name: &str, osrel: &str) -> Option<PathBuf> {
        if !runs("objcopy", "--version") {
            eprintln!("SKIPPED part of a test: objcopy (binutils) is missing");
            return None;
        }
        let osrel_file = dir.join(format!("{name}.osrel"));
        std::fs::write(&osrel_file, osrel).unwrap();
        let out_path = dir.join(format!("{name}.efi"));
        // Above the stub's last section, as ukify/mkosi place it.
        let out = Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".osrel={}", osrel_file.display()))
            .args(["--change-section-vma", ".osrel=0x20000"])
            .arg(&self.stub)
            .arg(&out_path)
            .output()
            .unwrap();
        check(out, "objcopy --add-section .osrel");
        Some(out_path)
    }
}
