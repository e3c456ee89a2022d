//! The initramfs: a newc cpio archive written here (no root needed for the
//! device node, and every header is deterministic: uid 0, mtime 0), then
//! zstd-compressed. Contents: /init (the static `metanode`), the directories
//! PID 1 mounts onto, /dev/console (the kernel opens it for PID 1's stdio
//! before devtmpfs exists), /etc/os-release, the Secure Boot `db`
//! certificate that updates are verified against, and mke2fs with its
//! libraries for formatting the data partition at first boot. No shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Where the bundled mke2fs lives inside the image (PID 1 runs it through
/// the bundled dynamic loader, so no library lands in a global path).
pub const MKE2FS_DIR: &str = "usr/lib/metanode/mke2fs";

#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn header(&mut self, name: &str, mode: u32, size: usize, rdev: (u32, u32)) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime: deterministic
            u32::try_from(size).expect("initramfs entries are far below 4 GiB"),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(namesize).expect("short names"),
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.header(name, S_IFDIR | perm, 0, (0, 0));
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.header(name, S_IFREG | perm, data.len(), (0, 0));
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.header(name, S_IFCHR | perm, 0, (major, minor));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, (0, 0));
        // The kernel reads the archive in 512-byte blocks like cpio(1) writes.
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

/// The shared libraries `binary` loads, as reported by ldd (absolute paths),
/// including the dynamic loader.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    anyhow::ensure!(out.status.success(), "ldd {} failed", binary.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vdso has no path.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[derive(Debug)]
pub struct Inputs<'a> {
    pub metanode: &'a Path,
    pub os_release: &'a str,
    pub db_cert_pem: &'a [u8],
}

/// Builds the uncompressed archive; returns it with a listing for the size
/// report.
/// (entry, bytes) rows of the size report.
pub type Listing = Vec<(String, usize)>;

pub fn build(inputs: &Inputs<'_>) -> anyhow::Result<(Vec<u8>, Listing)> {
    let mut cpio = Cpio::default();
    let mut listing = Vec::new();
    for (dir, perm) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("etc", 0o755),
        ("etc/metanode", 0o755),
        ("efi", 0o700),
        ("var", 0o755),
        ("var/lib", 0o755),
        ("var/lib/metanode", 0o700),
        ("usr", 0o755),
        ("usr/lib", 0o755),
        ("usr/lib/metanode", 0o755),
        (MKE2FS_DIR, 0o755),
        ("root", 0o700),
    ] {
        cpio.dir(dir, perm);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    let init = std::fs::read(inputs.metanode)
        .with_context(|| format!("read {}", inputs.metanode.display()))?;
    listing.push(("init".to_owned(), init.len()));
    cpio.file("init", 0o755, &init);
    cpio.file("etc/os-release", 0o644, inputs.os_release.as_bytes());
    cpio.file("etc/metanode/secureboot-db.pem", 0o644, inputs.db_cert_pem);
    let mke2fs = Path::new("/usr/sbin/mke2fs");
    let mut bundle_bytes = 0;
    for path in std::iter::once(mke2fs.to_path_buf()).chain(shared_libraries(mke2fs)?) {
        let data = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("library name")?;
        bundle_bytes += data.len();
        cpio.file(&format!("{MKE2FS_DIR}/{name}"), 0o755, &data);
    }
    listing.push((format!("{MKE2FS_DIR}/ (mke2fs + libraries)"), bundle_bytes));
    Ok((cpio.finish(), listing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_headers_are_what_the_kernel_and_cpio_read() {
        let mut c = Cpio::default();
        c.dir("etc", 0o755);
        c.file("etc/x", 0o644, b"hello");
        c.char_dev("dev/console", 0o600, 5, 1);
        let buf = c.finish();
        assert_eq!(buf.len() % 512, 0);
        assert_eq!(&buf[..6], b"070701");
        // Cross-check with cpio(1) when it is installed (bootstrap installs it).
        let Ok(mut child) = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("cpio(1) not installed; checked the header magic only");
            return;
        };
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 3, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" etc"));
        assert!(
            lines[1].starts_with("-rw-r--r--")
                && lines[1].contains(" 5 ")
                && lines[1].ends_with("etc/x")
        );
        assert!(
            lines[2].starts_with("crw-------")
                && lines[2].contains("5,")
                && lines[2].ends_with("dev/console")
        );
    }
}
