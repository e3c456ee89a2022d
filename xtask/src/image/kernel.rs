//! The kernel: Debian's linux-source-6.1 configured from `allnoconfig` plus
//! appliance/kernel.fragment, built once per (source version, fragment,
//! recipe) and cached outside the checkout. A cold build takes minutes on
//! two cores because the config is small; a warm one is a file copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::policy;
use crate::process::{log_tail, spawn_background};

/// Bump when the build steps below change in a way that changes the output.
const RECIPE_VERSION: u32 = 1;
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
const SOURCE_PACKAGE: &str = "linux-source-6.1";
const PROGRESS_INTERVAL: Duration = Duration::from_secs(30);
/// A cold build here takes about 10 minutes; 60 means something is wrong.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

#[derive(Debug)]
pub struct Kernel {
    pub bzimage: PathBuf,
    pub config: PathBuf,
    pub source_version: String,
    pub cached: bool,
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("METANODE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/metanode"))
        .join("kernel")
}

fn source_version() -> anyhow::Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", SOURCE_PACKAGE])
        .output()
        .context("run dpkg-query")?;
    anyhow::ensure!(
        out.status.success() && Path::new(SOURCE_TARBALL).exists(),
        "{SOURCE_PACKAGE} is not installed (apt-get install {SOURCE_PACKAGE}; bootstrap/test.sh does this)"
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds (or reuses) the kernel for `fragment_text`.
pub fn build(fragment_text: &str) -> anyhow::Result<Kernel> {
    let fragment = policy::kconfig_fragment(fragment_text, "appliance/kernel.fragment")?;
    let clean = policy::kconfig_clean(&fragment);
    let version = source_version()?;
    let key = {
        let mut h = blake3::Hasher::new();
        h.update(format!("recipe {RECIPE_VERSION}\nsource {version}\n").as_bytes());
        h.update(clean.as_bytes());
        h.finalize().to_hex()[..16].to_owned()
    };
    let root = cache_root();
    let out_dir = root.join(format!("{version}-{key}"));
    let bzimage = out_dir.join("bzImage");
    let config = out_dir.join("kernel.config");
    if bzimage.exists() && config.exists() {
        eprintln!("    kernel: cached build {}", out_dir.display());
        return Ok(Kernel {
            bzimage,
            config,
            source_version: version,
            cached: true,
        });
    }
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    let src = unpack_source(&root, &version)?;
    let build_dir = root.join(format!("build-{version}-{key}"));
    let _ = std::fs::remove_dir_all(&build_dir);
    std::fs::create_dir_all(&build_dir)?;
    let fragment_path = build_dir.join("metanode.fragment");
    std::fs::write(&fragment_path, &clean)?;
    let log = build_dir.join("build.log");
    eprintln!(
        "    kernel: configuring {SOURCE_PACKAGE} {version} (allnoconfig + {} fragment options); log {}",
        fragment.len(),
        log.display()
    );
    make(
        &src,
        &build_dir,
        &log,
        &["allnoconfig"],
        Some(&fragment_path),
    )?;
    make(&src, &build_dir, &log, &["olddefconfig"], None)?;
    let dot = std::fs::read_to_string(build_dir.join(".config"))?;
    let mismatches = policy::kconfig_mismatches(&fragment, &policy::dot_config(&dot));
    anyhow::ensure!(
        mismatches.is_empty(),
        "the kernel config dropped or changed {} option(s) the fragment asks for \
         (a dependency is missing from appliance/kernel.fragment):\n  {}",
        mismatches.len(),
        mismatches.join("\n  ")
    );
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!("    kernel: building bzImage with {jobs} jobs (a cold build takes several minutes)");
    let started = Instant::now();
    make(
        &src,
        &build_dir,
        &log,
        &[&format!("-j{jobs}"), "bzImage"],
        None,
    )?;
    eprintln!(
        "    kernel: built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let tmp = root.join(format!(".tmp-{version}-{key}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for (from, to) in [
        ("arch/x86/boot/bzImage", "bzImage"),
        (".config", "kernel.config"),
    ] {
        std::fs::copy(build_dir.join(from), tmp.join(to))?;
        // Durable before the rename publishes it: a host crash must not leave
        // a truncated bzImage that later runs would trust.
        std::fs::File::open(tmp.join(to))?.sync_all()?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    // Publish the finished pair in one rename so a killed build never leaves
    // a half-written cache entry that a later run would trust.
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::rename(&tmp, &out_dir)?;
    std::fs::File::open(&root)?.sync_all()?;
    let _ = std::fs::remove_dir_all(&build_dir);
    Ok(Kernel {
        bzimage,
        config,
        source_version: version,
        cached: false,
    })
}

fn unpack_source(root: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(format!("src-{version}"));
    let tree = dir.join("linux-source-6.1");
    if dir.join(".unpacked").exists() {
        return Ok(tree);
    }
    eprintln!("    kernel: unpacking {SOURCE_TARBALL}");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let status = Command::new("tar")
        .args(["-xJf", SOURCE_TARBALL, "-C"])
        .arg(&dir)
        .status()
        .context("run tar")?;
    anyhow::ensure!(status.success(), "unpacking {SOURCE_TARBALL} failed");
    std::fs::write(dir.join(".unpacked"), version)?;
    Ok(tree)
}

/// Runs make in the source tree with the output in `build_dir`, logging to
/// `log` and printing a progress line every 30 s.
fn make(
    src: &Path,
    build_dir: &Path,
    log: &Path,
    args: &[&str],
    allconfig: Option<&Path>,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("make");
    cmd.current_dir(src)
        .arg(format!("O={}", build_dir.display()))
        .args(args)
        // Reproducible metadata: the same inputs give the same bzImage.
        .env("KBUILD_BUILD_TIMESTAMP", "2026-01-01")
        .env("KBUILD_BUILD_USER", "metanode")
        .env("KBUILD_BUILD_HOST", "metanode-build");
    if let Some(path) = allconfig {
        cmd.env("KCONFIG_ALLCONFIG", path);
    }
    let started = Instant::now();
    let mut child = spawn_background(&mut cmd, log)?;
    let mut last_report = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            crate::process::stop_background(child, Duration::from_secs(5))?;
            anyhow::bail!("make {} timed out; log {}", args.join(" "), log.display());
        }
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            last_report = Instant::now();
            let objects = std::fs::read_to_string(log)
                .map(|t| t.lines().filter(|l| l.starts_with("  CC ")).count())
                .unwrap_or(0);
            eprintln!(
                "    kernel: {:.0} s, {objects} files compiled",
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    anyhow::ensure!(
        status.success(),
        "make {} failed ({status}); last lines of {}:\n{}",
        args.join(" "),
        log.display(),
        log_tail(log, 30)
    );
    Ok(())
}
