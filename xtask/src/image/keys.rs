//! Secure Boot keys for signing the UKI and the boot loader: PK, KEK and db,
//! RSA-2048 self-signed certificates made with openssl the first time they
//! are needed. They live outside the checkout and are never committed:
//! `$METANODE_SECUREBOOT_DIR`, else `$XDG_CONFIG_HOME/metanode/secureboot`,
//! else `~/.config/metanode/secureboot`. A fleet uses one set; copy the
//! directory to the build host (and keep it secret).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct Keys {
    pub dir: PathBuf,
}

impl Keys {
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }
    /// The owner GUID recorded with our certificates in the firmware's
    /// signature lists (one per key set, generated with the keys).
    pub fn owner_guid(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("owner.guid"))?
            .trim()
            .to_owned())
    }
}

pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("METANODE_SECUREBOOT_DIR") {
        return PathBuf::from(dir);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/root/.config"));
    config.join("metanode/secureboot")
}

/// Opens the key set in `dir`, generating whatever is missing.
pub fn ensure(dir: &Path) -> anyhow::Result<Keys> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let keys = Keys {
        dir: dir.to_path_buf(),
    };
    let guid_path = dir.join("owner.guid");
    if !guid_path.exists() {
        let bytes: [u8; 16] = rand_bytes()?;
        let guid = format!(
            "{}-{}-{}-{}-{}",
            hex(&bytes[0..4]),
            hex(&bytes[4..6]),
            hex(&bytes[6..8]),
            hex(&bytes[8..10]),
            hex(&bytes[10..16])
        );
        std::fs::write(&guid_path, format!("{guid}\n"))?;
    }
    for (name, subject) in [
        ("PK", "Metanode platform key"),
        ("KEK", "Metanode key exchange key"),
        ("db", "Metanode image signing key"),
    ] {
        if keys.key(name).exists() && keys.cert(name).exists() {
            continue;
        }
        eprintln!(
            "    keys: generating Secure Boot {name} in {} (kept outside the checkout)",
            dir.display()
        );
        let status = Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            ])
            .args(["-days", "3650", "-subj"])
            .arg(format!("/CN={subject}/"))
            .arg("-keyout")
            .arg(keys.key(name))
            .arg("-out")
            .arg(keys.cert(name))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("run openssl")?;
        anyhow::ensure!(status.success(), "openssl failed to make the {name} key");
        std::fs::set_permissions(keys.key(name), std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(keys)
}

fn rand_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    use std::io::Read;
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs a PE file (UKI or boot loader) with the db key.
pub fn sign(keys: &Keys, input: &Path, output: &Path) -> anyhow::Result<()> {
    let out = Command::new("sbsign")
        .arg("--key")
        .arg(keys.key("db"))
        .arg("--cert")
        .arg(keys.cert("db"))
        .arg("--output")
        .arg(output)
        .arg(input)
        .output()
        .context("run sbsign (apt-get install sbsigntool)")?;
    anyhow::ensure!(
        out.status.success(),
        "sbsign {} failed: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
