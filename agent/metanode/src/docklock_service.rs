//! The agent's side of `POST /api/v1/docklock/runs` ([`DocklockControl`]).
//!
//! The agent is multi-threaded (tokio), and forking a threaded process is unsafe (a child
//! inherits locks held by threads that no longer exist), so the launcher refuses such a caller.
//! Like containerd spawning runc, the agent runs each cage by spawning its own binary
//! (`/proc/self/exe docklock exec|run … --json`), single-threaded from exec on. The agent reads
//! the declared inputs from its own store (only one process may open it) into a private run
//! directory and hands them over with `--input-blob NAME=CID:PATH`; a program named by CID is
//! read the same way and run as a plain executable (the receipt's rootfs digest covers its
//! bytes). Afterwards it stores the signed receipt and the regular files of /out as blobs, and
//! answers with the receipt's account of the run plus the launcher's cgroup measurements. One
//! run at a time.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use metanode_api::{
    CageCgroupReport, CageExitStatus, CageInputRecord, CageOutput, CageRunError, CageRunRequest,
    CageRunResponse, CageViolation, CageWorkload, DocklockControl,
};
use metanode_core::cid::{CODEC_DAG_PB, CODEC_RAW, ContentId};
use metanode_core::config::{DocklockConfig, NodeConfig};
use metanode_core::limits::{
    API_DOCKLOCK_CHILD_OUTPUT_BYTES_MAX, API_DOCKLOCK_OUTPUTS_COUNT_MAX,
    API_DOCKLOCK_OUTPUTS_SIZE_BYTES_MAX,
};
use metanode_docklock::limits::ELF_SIZE_BYTES_MAX;
use metanode_docklock::store_inputs::{self, CidInput, StoreInputError};
use metanode_store::Store;
use metanode_witness::{ExitKind, InputDigest, InputRef, SignedRecord};

/// Directory under the data dir holding one private directory per run in progress.
const RUNS_DIR_NAME: &str = "docklock-runs";
/// The launcher kills the cage at the run's timeout; this much longer and the launcher itself
/// is considered stuck and killed (setting up a cage and the post-run scan take well under it).
const LAUNCHER_GRACE_S: u64 = 60;
/// How often the agent checks whether the launcher has exited.
const LAUNCHER_POLL_MS: u64 = 20;
/// Directory levels of /out walked for outputs (the witness outputs manifest's own bound).
const OUTPUTS_DEPTH_MAX: usize = metanode_witness::limits::OUTPUTS_DEPTH_MAX as usize;
/// File name of a program by CID in the run directory; the cage runs it as `/bin/program`, the
/// same name whatever the CID, so the rootfs digest depends on the program's bytes alone.
const PROGRAM_FILE_NAME: &str = "program";

/// Runs cages for the API.
#[derive(Debug)]
pub struct DocklockService {
    store: Store,
    /// Canonical: a workload must resolve beneath it.
    workloads_dir: PathBuf,
    run_timeout_s_max: u64,
    executables_by_cid: bool,
    key_file: PathBuf,
    runs_dir: PathBuf,
    /// Held for a whole run: the API admits one run at a time, this makes it an invariant.
    running: Mutex<()>,
}

impl DocklockService {
    /// Check the `docklock:` section, make sure the node key exists, and clear run directories a
    /// previous agent left behind (a crash mid-run).
    pub fn start(
        cfg: &NodeConfig,
        section: &DocklockConfig,
        store: Store,
    ) -> anyhow::Result<Arc<Self>> {
        let workloads_dir = std::fs::canonicalize(&section.workloads_dir).with_context(|| {
            format!(
                "docklock.workloads_dir {} is not an existing directory",
                section.workloads_dir.display()
            )
        })?;
        if !workloads_dir.is_dir() {
            anyhow::bail!(
                "docklock.workloads_dir {} is not a directory",
                section.workloads_dir.display()
            );
        }
        let key_file = cfg.key_file_path();
        // Generated on first boot, like the traffic lights do; the launcher signs with it.
        crate::cmd_agent::node_key(cfg)?;
        let runs_dir = cfg.node.data_dir.join(RUNS_DIR_NAME);
        if runs_dir.exists() {
            std::fs::remove_dir_all(&runs_dir)
                .with_context(|| format!("clearing old cage runs in {}", runs_dir.display()))?;
        }
        std::fs::create_dir_all(&runs_dir)
            .with_context(|| format!("creating {}", runs_dir.display()))?;
        Ok(Arc::new(Self {
            store,
            workloads_dir,
            run_timeout_s_max: section.run_timeout_s_max,
            executables_by_cid: section.executables_by_cid,
            key_file,
            runs_dir,
            running: Mutex::new(()),
        }))
    }

    /// The canonical path of a workload, refused unless it lies beneath the workloads dir.
    fn resolve(&self, field: &str, path: &Path, want_dir: bool) -> Result<PathBuf, CageRunError> {
        let bad = |reason: String| CageRunError::BadRequest {
            field: field.to_string(),
            reason,
        };
        let real =
            std::fs::canonicalize(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if !real.starts_with(&self.workloads_dir) {
            return Err(bad(format!(
                "{} is not beneath this node's docklock.workloads_dir {}",
                path.display(),
                self.workloads_dir.display()
            )));
        }
        let meta = std::fs::metadata(&real).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        match (want_dir, meta.is_dir(), meta.is_file()) {
            (true, true, _) | (false, _, true) => Ok(real),
            (true, ..) => Err(bad(format!("{} is not a directory", path.display()))),
            (false, ..) => Err(bad(format!("{} is not a regular file", path.display()))),
        }
    }

    fn run_locked(&self, request: CageRunRequest) -> Result<CageRunResponse, CageRunError> {
        // The launcher would give an unprivileged agent a weaker cage (no cgroup: no memory
        // limit, no usage accounting). An operator's CLI may choose that; the node's API, whose
        // callers cannot see it, must not fall into it because the agent lost root.
        if !metanode_docklock::cage::caller_is_root() {
            return Err(CageRunError::Failed(
                "the agent runs cages only as root (an unprivileged agent's cages would have no cgroup: no memory limit, no usage accounting)"
                    .into(),
            ));
        }
        let failed =
            |e: anyhow::Error| CageRunError::Failed(crate::output::cause_chain(&e).join(": "));
        let run_dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&self.runs_dir)
            .with_context(|| format!("creating a run directory in {}", self.runs_dir.display()))
            .map_err(failed)?;
        let in_dir = run_dir.path().join("in");
        let out_dir = run_dir.path().join("out");
        let receipt_path = run_dir.path().join("receipt.dlr");
        std::fs::create_dir(&in_dir)
            .with_context(|| format!("creating {}", in_dir.display()))
            .map_err(failed)?;

        let mut args: Vec<std::ffi::OsString> = vec!["--json".into(), "docklock".into()];
        let workload_field = match &request.workload {
            CageWorkload::Executable { path, .. } => {
                args.extend([
                    "exec".into(),
                    self.resolve("executable", path, false)?.into(),
                ]);
                "executable"
            }
            CageWorkload::ExecutableCid { cid, .. } => {
                let program = run_dir.path().join(PROGRAM_FILE_NAME);
                self.write_program(*cid, &program)?;
                args.extend(["exec".into(), program.into()]);
                "executable_cid"
            }
            CageWorkload::Bundle { dir } => {
                args.extend(["run".into(), self.resolve("bundle", dir, true)?.into()]);
                "bundle"
            }
        };
        for (i, input) in request.inputs.iter().enumerate() {
            let path = in_dir.join(format!("input-{i}"));
            let cid_input = CidInput {
                name: input.name.clone(),
                cid: input.cid,
            };
            store_inputs::write_blob(&self.store, self.store.data_dir(), &cid_input, &path)
                .map_err(|e| match e {
                    StoreInputError::NotFound { name, cid, .. } => {
                        CageRunError::InputNotFound { name, cid }
                    }
                    e @ (StoreInputError::Codec { .. } | StoreInputError::TooLarge { .. }) => {
                        CageRunError::BadRequest {
                            field: format!("inputs.{i}.cid"),
                            reason: e.to_string(),
                        }
                    }
                    e => CageRunError::Failed(e.to_string()),
                })?;
            let mut blob = std::ffi::OsString::from(format!("{}={}:", input.name, input.cid));
            blob.push(&path);
            args.extend(["--input-blob".into(), blob]);
        }
        args.extend([
            "--key".into(),
            self.key_file.clone().into_os_string(),
            "--receipt".into(),
            receipt_path.clone().into_os_string(),
            "--out".into(),
            out_dir.clone().into_os_string(),
            "--timeout-s".into(),
            request.timeout_s.to_string().into(),
            "--seed".into(),
            hex::encode(request.rng_seed).into(),
            "--service".into(),
            request.service.clone().into(),
            // The answer carries the workload's outputs (/out), not its stdio.
            "--quiet".into(),
        ]);
        if let CageWorkload::Executable {
            args: argv, env, ..
        }
        | CageWorkload::ExecutableCid {
            args: argv, env, ..
        } = &request.workload
        {
            for entry in env {
                args.extend(["--env".into(), entry.into()]);
            }
            args.push("--".into());
            args.extend(argv.iter().map(Into::into));
        }

        let child = Command::new("/proc/self/exe")
            .args(&args)
            .current_dir(run_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the docklock launcher (/proc/self/exe)")
            .map_err(failed)?;
        let finished = wait_bounded(child, request.timeout_s + LAUNCHER_GRACE_S).map_err(failed)?;
        if !receipt_path.exists() {
            // The launcher refused before running anything: a spec or executable it does not
            // accept (its message names what), or a setup failure on this host.
            let message = launcher_error(&finished.stderr);
            return Err(CageRunError::BadRequest {
                field: workload_field.to_string(),
                reason: format!("the launcher refused the run: {message}"),
            });
        }
        let outcome = launcher_outcome(&finished.stdout).map_err(failed)?;
        let mut response = self
            .answer(&receipt_path, &out_dir, outcome)
            .map_err(failed)?;
        if let CageWorkload::ExecutableCid { cid, .. } = &request.workload {
            response.executable_cid = Some(cid.to_string());
        }
        Ok(response)
    }

    /// Read the program `cid` from the store into `path` (mode 0755, in the private run
    /// directory). Its size is checked before anything is written: the launcher parses no ELF
    /// larger than [`ELF_SIZE_BYTES_MAX`], so a larger blob could never run.
    fn write_program(&self, cid: ContentId, path: &Path) -> Result<(), CageRunError> {
        let bad = |reason: String| CageRunError::BadRequest {
            field: "executable_cid".to_string(),
            reason,
        };
        let size_bytes = match cid.codec() {
            CODEC_RAW => {
                self.store
                    .stat(&cid)
                    .map_err(|e| {
                        CageRunError::Failed(format!("executable_cid: reading {cid}: {e}"))
                    })?
                    .ok_or(CageRunError::ExecutableNotFound { cid })?
                    .size_bytes
            }
            CODEC_DAG_PB if !self.store.contains(&cid) => {
                return Err(CageRunError::ExecutableNotFound { cid });
            }
            CODEC_DAG_PB => metanode_unixfs::UnixFsFile::open(&self.store, cid)
                .map_err(|e| bad(format!("{cid} is not a readable UnixFS file: {e}")))?
                .size_bytes(),
            // write_blob names the codecs a blob may have.
            _ => 0,
        };
        if size_bytes > ELF_SIZE_BYTES_MAX {
            return Err(bad(format!(
                "{cid} is {size_bytes} bytes; the largest program DockLock runs is {ELF_SIZE_BYTES_MAX}"
            )));
        }
        let input = CidInput {
            name: "executable_cid".to_string(),
            cid,
        };
        store_inputs::write_blob(&self.store, self.store.data_dir(), &input, path).map_err(
            |e| match e {
                StoreInputError::NotFound { cid, .. } => CageRunError::ExecutableNotFound { cid },
                e @ (StoreInputError::Codec { .. } | StoreInputError::TooLarge { .. }) => {
                    bad(e.to_string())
                }
                e => CageRunError::Failed(e.to_string()),
            },
        )?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| CageRunError::Failed(format!("chmod 0755 {}: {e}", path.display())))
    }

    /// Store the receipt and the outputs; describe the run from the signed receipt.
    fn answer(
        &self,
        receipt_path: &Path,
        out_dir: &Path,
        outcome: LauncherOutcome,
    ) -> anyhow::Result<CageRunResponse> {
        let inputs = outcome.inputs;
        let signed = SignedRecord::read_file(receipt_path)?;
        signed
            .verify()
            .context("the launcher's receipt does not verify")?;
        let record = &signed.record;
        let input_root = metanode_witness::input_root(&inputs)?;
        // The list we answer with must be the one the receipt commits to.
        anyhow::ensure!(
            *input_root.as_bytes() == record.header.input_root,
            "the launcher's inputs do not match the receipt's input root"
        );
        let receipt_bytes = std::fs::read(receipt_path)
            .with_context(|| format!("reading {}", receipt_path.display()))?;
        let receipt_cid = self
            .store
            .put(&receipt_bytes, true)
            .context("storing the receipt")?
            .cid;
        let (outputs, outputs_refused) = match output_files(out_dir)? {
            Listing::Files(files) => (self.store_outputs(out_dir, &files)?, None),
            Listing::Refused(reason) => (Vec::new(), Some(reason)),
        };
        let decision = &record.decision;
        Ok(CageRunResponse {
            exit: match &decision.exit {
                ExitKind::Exited(code) => CageExitStatus::Code(i32::from(*code)),
                ExitKind::Signaled(signal) => CageExitStatus::Signal(i32::from(*signal)),
                ExitKind::Failed(reason) => CageExitStatus::Failed(reason.clone()),
            },
            verdict: decision.verdict.name().to_string(),
            violations: decision
                .violations
                .iter()
                .map(|v| CageViolation {
                    kind: v.kind.name().to_string(),
                    detail: v.detail.clone(),
                })
                .collect(),
            violations_dropped_count: decision.violations_dropped_count,
            receipt_cid: receipt_cid.to_string(),
            outputs,
            outputs_refused,
            inputs: inputs.iter().map(input_record).collect(),
            input_root: hex::encode(record.header.input_root),
            outputs_root: hex::encode(record.roots.outputs_root),
            executable_cid: None,
            cgroup: outcome.cgroup,
            tsc_reads_virtualized: outcome.tsc_reads_virtualized,
        })
    }

    /// Put every listed file into the store (pinned, like an upload). On a failure the blobs
    /// stored so far are unpinned again, so nothing half-stored stays kept.
    fn store_outputs(
        &self,
        out_dir: &Path,
        files: &[(String, u64)],
    ) -> anyhow::Result<Vec<CageOutput>> {
        let mut stored: Vec<CageOutput> = Vec::with_capacity(files.len());
        let result = (|| {
            for (path, _) in files {
                let full = out_dir.join(path);
                let mut file = std::fs::File::open(&full)
                    .with_context(|| format!("opening the output {}", full.display()))?;
                let mut writer = self.store.writer(true)?;
                std::io::copy(&mut file, &mut writer)
                    .with_context(|| format!("storing the output /out/{path}"))?;
                let outcome = writer.finish()?;
                stored.push(CageOutput {
                    path: path.clone(),
                    cid: outcome.cid.to_string(),
                    size_bytes: outcome.size_bytes,
                });
            }
            Ok(())
        })();
        if let Err(err) = result {
            for output in &stored {
                if let Ok(cid) = output.cid.parse::<ContentId>() {
                    let _ = self.store.set_pinned(&cid, false);
                }
            }
            return Err(err);
        }
        Ok(stored)
    }
}

impl DocklockControl for DocklockService {
    fn run_timeout_s_max(&self) -> u64 {
        self.run_timeout_s_max
    }

    fn executables_by_cid(&self) -> bool {
        self.executables_by_cid
    }

    fn run(&self, request: CageRunRequest) -> Result<CageRunResponse, CageRunError> {
        let _running = match self.running.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return Err(CageRunError::Busy),
            // A panicked run left nothing shared behind but the lock itself.
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        self.run_locked(request)
    }
}

struct Finished {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Read a pipe keeping at most the bound, then drain the rest so the child never blocks on a
/// full pipe.
fn read_bounded(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut pipe)
            .take(API_DOCKLOCK_CHILD_OUTPUT_BYTES_MAX as u64)
            .read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        kept
    })
}

/// Wait for the launcher, killing it when it outlives `limit_s`.
fn wait_bounded(mut child: Child, limit_s: u64) -> anyhow::Result<Finished> {
    let stdout = child.stdout.take().map(read_bounded);
    let stderr = child.stderr.take().map(read_bounded);
    let deadline = Instant::now() + Duration::from_secs(limit_s);
    loop {
        if child
            .try_wait()
            .context("waiting for the launcher")?
            .is_some()
        {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the docklock launcher did not finish within {limit_s} s; killed it");
        }
        std::thread::sleep(Duration::from_millis(LAUNCHER_POLL_MS));
    }
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Finished {
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// The launcher's error: with `--json` one JSON line `{"error": …}` on stderr.
fn launcher_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .find_map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()?
                .get("error")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            let trimmed = text.trim();
            if trimmed.is_empty() {
                "it exited without a receipt or a message".to_string()
            } else {
                trimmed.to_string()
            }
        })
}

/// What the agent takes from the launcher's `--json` outcome (its last JSON line on stdout).
#[derive(Debug, PartialEq, Eq)]
struct LauncherOutcome {
    /// The declared inputs by CID and the rootfs digest as `/`.
    inputs: Vec<InputRef>,
    cgroup: CageCgroupReport,
    tsc_reads_virtualized: u64,
}

fn launcher_outcome(stdout: &[u8]) -> anyhow::Result<LauncherOutcome> {
    let text = String::from_utf8_lossy(stdout);
    let outcome: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| anyhow!("the launcher printed no JSON outcome"))?;
    let count = |key: &str| {
        outcome
            .get(key)
            .ok_or_else(|| anyhow!("the launcher's outcome has no {key}"))?
            .as_u64()
            .ok_or_else(|| anyhow!("the launcher's outcome: {key} is not a count"))
    };
    let mode_name = outcome
        .get("cgroup_mode")
        .ok_or_else(|| anyhow!("the launcher's outcome has no cgroup_mode"))?
        .as_str()
        .ok_or_else(|| anyhow!("the launcher's outcome: cgroup_mode is not a string"))?;
    Ok(LauncherOutcome {
        inputs: outcome_inputs(&outcome)?,
        cgroup: CageCgroupReport {
            mode: cgroup_mode_name(mode_name)?.to_string(),
            memory_peak_bytes: count("memory_peak_bytes")?,
            cpu_usage_us: count("cpu_usage_us")?,
            oom_kills: count("oom_kills")?,
            pids_max_hits: count("pids_max_hits")?,
        },
        tsc_reads_virtualized: count("tsc_reads_virtualized")?,
    })
}

/// The API's name of the launcher's `cgroup_mode` (the Debug name of `CgroupModeKind`).
fn cgroup_mode_name(launcher: &str) -> anyhow::Result<&'static str> {
    Ok(match launcher {
        "V1" => "v1",
        "V2" => "v2",
        "Hybrid" => "hybrid",
        "Unused" => "unused",
        other => anyhow::bail!("the launcher's outcome: unknown cgroup_mode {other:?}"),
    })
}

fn outcome_inputs(outcome: &serde_json::Value) -> anyhow::Result<Vec<InputRef>> {
    let list = outcome
        .get("inputs")
        .and_then(|v| v.as_array())
        .ok_or_else(|| anyhow!("the launcher's outcome has no inputs list"))?;
    list.iter()
        .map(|entry| {
            let record: CageInputRecord = serde_json::from_value(entry.clone())
                .context("an input in the launcher's outcome")?;
            let digest = match (&record.cid, &record.blake3) {
                (Some(cid), None) => InputDigest::Cid(cid.parse::<ContentId>()?.to_bytes()),
                (None, Some(b3)) => InputDigest::Blake3(
                    hex::decode(b3)?
                        .try_into()
                        .map_err(|_| anyhow!("input {}: blake3 is not 32 bytes", record.name))?,
                ),
                _ => anyhow::bail!("input {}: expected a cid or a blake3", record.name),
            };
            Ok(InputRef {
                name: record.name,
                digest,
                size_bytes: record.size_bytes,
            })
        })
        .collect()
}

fn input_record(input: &InputRef) -> CageInputRecord {
    let (cid, blake3) = match &input.digest {
        InputDigest::Cid(bytes) => (
            Some(
                ContentId::from_bytes(bytes)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|_| hex::encode(bytes)),
            ),
            None,
        ),
        InputDigest::Blake3(digest) => (None, Some(hex::encode(digest))),
    };
    CageInputRecord {
        name: input.name.clone(),
        cid,
        blake3,
        size_bytes: input.size_bytes,
    }
}

enum Listing {
    /// (path relative to /out, size), sorted by path.
    Files(Vec<(String, u64)>),
    /// Over a bound: nothing is stored.
    Refused(String),
}

/// The regular files under `out_dir` (symlinks are not followed; other kinds are skipped: the
/// receipt's outputs root covers them all).
fn output_files(out_dir: &Path) -> anyhow::Result<Listing> {
    let mut files = Vec::new();
    let mut total_bytes = 0u64;
    if !out_dir.is_dir() {
        return Ok(Listing::Files(files));
    }
    let mut pending = vec![(out_dir.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = pending.pop() {
        if depth > OUTPUTS_DEPTH_MAX {
            return Ok(Listing::Refused(format!(
                "/out is nested deeper than {OUTPUTS_DEPTH_MAX} levels"
            )));
        }
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            if kind.is_dir() {
                pending.push((entry.path(), rel, depth + 1));
            } else if kind.is_file() {
                let size = entry
                    .metadata()
                    .with_context(|| format!("stat {}", entry.path().display()))?
                    .len();
                total_bytes = total_bytes.saturating_add(size);
                files.push((rel, size));
                if files.len() > API_DOCKLOCK_OUTPUTS_COUNT_MAX {
                    return Ok(Listing::Refused(format!(
                        "/out holds more than {API_DOCKLOCK_OUTPUTS_COUNT_MAX} files; none were stored"
                    )));
                }
                if total_bytes > API_DOCKLOCK_OUTPUTS_SIZE_BYTES_MAX {
                    return Ok(Listing::Refused(format!(
                        "/out holds more than {API_DOCKLOCK_OUTPUTS_SIZE_BYTES_MAX} bytes of files; none were stored"
                    )));
                }
            }
        }
    }
    files.sort();
    Ok(Listing::Files(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_listed_sorted_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::create_dir_all(out.join("sub/deeper")).unwrap();
        std::fs::write(out.join("b"), b"12").unwrap();
        std::fs::write(out.join("sub/deeper/a"), b"123").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("link")).unwrap();
        let Listing::Files(files) = output_files(out).unwrap() else {
            panic!("refused");
        };
        assert_eq!(
            files,
            vec![("b".to_string(), 2), ("sub/deeper/a".to_string(), 3)]
        );
        for i in 0..=API_DOCKLOCK_OUTPUTS_COUNT_MAX {
            std::fs::write(out.join(format!("f{i}")), b"").unwrap();
        }
        let Listing::Refused(reason) = output_files(out).unwrap() else {
            panic!("not refused");
        };
        assert!(reason.contains("more than 1024 files"), "{reason}");
    }

    #[test]
    fn a_program_by_cid_is_written_from_the_store_executable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(metanode_store::StoreOptions::new(dir.path().join("data"))).unwrap();
        let service = DocklockService {
            store: store.clone(),
            workloads_dir: dir.path().to_path_buf(),
            run_timeout_s_max: 60,
            executables_by_cid: true,
            key_file: dir.path().join("node.key"),
            runs_dir: dir.path().to_path_buf(),
            running: Mutex::new(()),
        };
        let raw = store.put(b"\x7fELF raw program", true).unwrap().cid;
        // Larger than one chunk, so the UnixFS file is a DAG read through its root.
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let unixfs = metanode_unixfs::stored::add_file(
            &store,
            &mut &big[..],
            metanode_unixfs::ImportOptions::default(),
            true,
            &mut |_| {},
        )
        .unwrap()
        .root;
        for (name, cid, bytes) in [
            ("raw", raw, &b"\x7fELF raw program"[..]),
            ("unixfs", unixfs, &big[..]),
        ] {
            let path = dir.path().join(name);
            service.write_program(cid, &path).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o755, "{name}");
        }

        let absent = ContentId::from_key(
            CODEC_RAW,
            metanode_core::cid::BlockKey::blake3(*blake3::hash(b"never stored").as_bytes()),
        );
        let err = service
            .write_program(absent, &dir.path().join("absent"))
            .unwrap_err();
        assert!(
            matches!(err, CageRunError::ExecutableNotFound { cid } if cid == absent),
            "{err:?}"
        );
        let dag_cbor = ContentId::from_key(0x71, raw.key());
        let err = service
            .write_program(dag_cbor, &dir.path().join("cbor"))
            .unwrap_err();
        let CageRunError::BadRequest { field, reason } = err else {
            panic!("{err:?}");
        };
        assert_eq!(field, "executable_cid");
        assert!(reason.contains("codec 0x71"), "{reason}");
        store.close().unwrap();
    }

    #[test]
    fn launcher_messages_and_outcomes_are_read_back() {
        assert_eq!(
            launcher_error(b"noise\n{\"error\":\"spec: process.args: empty\",\"causes\":[]}\n"),
            "spec: process.args: empty"
        );
        assert_eq!(launcher_error(b"plain words\n"), "plain words");
        let cid = ContentId::from_key(
            metanode_core::cid::CODEC_RAW,
            metanode_core::cid::BlockKey::blake3(*blake3::hash(b"abc").as_bytes()),
        )
        .to_string();
        let cid = cid.as_str();
        let mut outcome = serde_json::json!({
            "exit": {"exited": 0},
            "inputs": [
                {"name": "data", "cid": cid, "size_bytes": 3},
                {"name": "/", "blake3": "ab".repeat(32), "size_bytes": 9},
            ],
            "cgroup_mode": "V2",
            "memory_peak_bytes": 4096,
            "cpu_usage_us": 77,
            "oom_kills": 1,
            "pids_max_hits": 2,
            "tsc_reads_virtualized": 8,
        });
        let stdout = |outcome: &serde_json::Value| format!("a workload's line\n{outcome}\n");
        let parsed = launcher_outcome(stdout(&outcome).as_bytes()).unwrap();
        assert_eq!(
            parsed.cgroup,
            CageCgroupReport {
                mode: "v2".into(),
                memory_peak_bytes: 4096,
                cpu_usage_us: 77,
                oom_kills: 1,
                pids_max_hits: 2,
            }
        );
        assert_eq!(parsed.tsc_reads_virtualized, 8);
        let inputs = parsed.inputs;
        assert_eq!(
            inputs,
            vec![
                InputRef {
                    name: "data".into(),
                    digest: InputDigest::Cid(cid.parse::<ContentId>().unwrap().to_bytes()),
                    size_bytes: 3,
                },
                InputRef {
                    name: "/".into(),
                    digest: InputDigest::Blake3([0xab; 32]),
                    size_bytes: 9,
                },
            ]
        );
        assert_eq!(input_record(&inputs[0]).cid.as_deref(), Some(cid));
        assert!(launcher_outcome(b"not json").is_err());

        // Every mode the launcher names maps to its own lower-case name; others are errors.
        for (launcher, api) in [
            ("V1", "v1"),
            ("V2", "v2"),
            ("Hybrid", "hybrid"),
            ("Unused", "unused"),
        ] {
            outcome["cgroup_mode"] = serde_json::json!(launcher);
            let parsed = launcher_outcome(stdout(&outcome).as_bytes()).unwrap();
            assert_eq!(parsed.cgroup.mode, api);
        }
        outcome["cgroup_mode"] = serde_json::json!("V3");
        let err = launcher_outcome(stdout(&outcome).as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the launcher's outcome: unknown cgroup_mode \"V3\""
        );
        outcome["cgroup_mode"] = serde_json::json!("V2");
        for key in [
            "cgroup_mode",
            "memory_peak_bytes",
            "cpu_usage_us",
            "oom_kills",
            "pids_max_hits",
            "tsc_reads_virtualized",
        ] {
            let mut missing = outcome.clone();
            missing.as_object_mut().unwrap().remove(key);
            let err = launcher_outcome(stdout(&missing).as_bytes()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the launcher's outcome has no {key}")
            );
        }
        outcome["oom_kills"] = serde_json::json!(-1);
        let err = launcher_outcome(stdout(&outcome).as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the launcher's outcome: oom_kills is not a count"
        );
    }
}
