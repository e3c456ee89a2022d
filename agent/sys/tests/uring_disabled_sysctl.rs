//! The real fallback: with `kernel.io_uring_disabled=2` the kernel refuses
//! io_uring_setup and `select(Auto)` must pick pread/pwrite, while
//! `select(IoUring)` fails with a message naming the sysctl.
//!
//! This flips a machine-wide sysctl, so it lives alone in its own test
//! binary (cargo runs test binaries one after another) and restores the old
//! value even if an assertion fails. Needs root; skipped otherwise.

use metanode_sys::{IoMode, io_uring_disabled_sysctl, select};

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[test]
fn disabled_io_uring_falls_back_to_posix() {
    let Ok(old) = std::fs::read_to_string(SYSCTL) else {
        eprintln!("skipping: {SYSCTL} does not exist on this kernel");
        return;
    };
    if std::fs::write(SYSCTL, "2").is_err() {
        eprintln!("skipping: cannot write {SYSCTL} (not root?)");
        return;
    }
    let _restore = Restore(old.trim().to_string());
    assert_eq!(io_uring_disabled_sysctl(), Some(2));
    let auto = select(IoMode::Auto).unwrap();
    assert_eq!(auto.io.name(), "posix");
    assert!(
        auto.reason.contains("io_uring_disabled=2"),
        "{}",
        auto.reason
    );
    let err = select(IoMode::IoUring).unwrap_err().to_string();
    assert!(err.contains("io_uring_disabled=2"), "{err}");
    // The fallback really does I/O.
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("f"))
        .unwrap();
    auto.io.write_all_at_durable(&f, 0, &[b"fallback"]).unwrap();
    let mut b = [0u8; 8];
    auto.io.read_exact_at(&f, 0, &mut b).unwrap();
    assert_eq!(&b, b"fallback");
}
