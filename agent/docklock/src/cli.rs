//! The DockLock command line (`run`, `exec`, `verify`, `replay`), shared by `metanode docklock …`
//! and the thin `metanode-docklock` launcher, so both run exactly the same code. The launcher
//! exists for spawn latency: exec and start-up of the whole agent binary (tens of MB of
//! relocations, the full clap tree) cost a cage about a millisecond more than this binary.
//! The launcher forks, so everything here stays single-threaded (no tokio runtime).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use metanode_core::keys::{PublicKey, SigningKeyFile};
use metanode_witness::{InputDigest, InputRef, SignedRecord};

use crate::cage::{self, CageExit, RunOptions, RunOutcome};
use crate::replay::{self, Disagreement};
use crate::spec::{CageSpec, DeclaredInput};
use crate::store_inputs::{self, CidInput};

/// Print one line to stdout. A closed pipe (`… | head`) ends the process quietly instead of
/// panicking as `println!` would.
pub fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Human or JSON output, chosen once by `--json`; also the `metanode` CLI's (re-exported there).
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Print a result: `human`, or `value` as one JSON line with `--json`.
    pub fn emit(&self, human: &str, value: &serde_json::Value) {
        if self.json {
            print_line(&value.to_string());
        } else if !human.is_empty() {
            print_line(human);
        }
    }

    /// Report an error with its cause chain ([`cause_chain`]: a cause its
    /// parent already printed is not repeated, in the text or in the JSON
    /// `causes`); exit code 1.
    pub fn fail(&self, err: &anyhow::Error) -> ExitCode {
        let chain = cause_chain(err);
        if self.json {
            let value = serde_json::json!({ "error": chain.join(": "), "causes": chain });
            eprintln!("{value}");
        } else {
            eprintln!("error: {}", chain.join(": "));
        }
        ExitCode::from(1)
    }
}

/// The messages of `err` and its causes, outermost first, without a cause
/// that the message before it already ends with after a `: ` (or equals):
/// many error types print their source in their own message (`cannot open
/// key file X: No such file`) and also return it from `source()`, which
/// would say it twice.
pub fn cause_chain(err: &anyhow::Error) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let said = chain.last().is_some_and(|prev| {
            *prev == text
                || prev
                    .strip_suffix(text.as_str())
                    .is_some_and(|head| head.ends_with(": "))
        });
        if !said {
            chain.push(text);
        }
    }
    chain
}

#[derive(Debug, Subcommand)]
pub enum DocklockCommand {
    /// Run an OCI runtime-spec bundle (config.json + rootfs) caged.
    #[command(after_help = "\
The cage: new user, mount, pid, ipc, uts, net, cgroup and time namespaces; pivot_root into
the rootfs; runc's masked and read-only /proc and /sys paths; cgroup limits from
linux.resources; every capability dropped unless the spec lists it; no_new_privs; a landlock
ruleset (read+exec everywhere, write only to writable mounts, /out and /dev; no TCP; scoped
signals and abstract sockets); the reviewed seccomp allowlist, whose refusals are recorded.
/dev/urandom is a stream seeded by --seed; CLOCK_MONOTONIC starts at --logical-time-ns.
Unsupported spec fields are refused with their JSON path. Exit code = the workload's
(128 + signal when killed). A bundle takes no declared inputs (--input and --input-cid
belong to `exec`): bind-mount data from a directory given with --allow-bind.

Root or not: run by root, the cage gets a cgroup (memory, pids, CPU, I/O limits and
accounting; a memory and a pids limit by default) and its Landlock denials are read back from
the audit log. Run by any other user, the cage maps only that user (cage 0 = the caller's uid
and gid), has no cgroup (memory, CPU and I/O limits are refused by name; the pids limit
becomes RLIMIT_NPROC; always a pid namespace), and Landlock denials are not collected (reading
the audit log needs CAP_AUDIT_READ); the receipt records the cgroup mode as unused. As the
workload then writes as the caller, the rootfs must be read-only and --out empty or new; it
keeps the caller's supplementary groups (setgroups is denied in such a user namespace), and
mount points missing from the rootfs are created as the caller. The node's API runs cages only
as root.

Cage root is never host root: run by root without linux.uidMappings/gidMappings, the cage's
ids 0..65535 are host ids 1879048192.. (0x70000000..); mappings that include host id 0 are
refused. The
rootfs must be readable by that unprivileged uid (world-readable, as image layers are), and is
writable only where its files belong to the mapped ids. --out is handed to the workload's
mapped uid (it must be empty or already theirs); setuid/setgid bits found there after the run
are stripped and device nodes removed, and both are reported.

root.path must resolve inside the bundle directory (no `..` or symlink out). A bind mount's
source must resolve inside the bundle directory or inside a directory given with --allow-bind.
The workload's stdout/stderr are pipes relayed by the launcher (never the caller's terminal).

Examples:
  metanode docklock run ./bundle
  metanode docklock run ./bundle --out ./out --receipt run.dlr --key node.key
  metanode docklock run ./bundle --allow-bind /srv/datasets
  metanode --json docklock run ./bundle --seed 00…ff --timeout-s 10")]
    Run(RunArgs),
    /// Run a plain executable with declared inputs (copied to /in/NAME) in a cage.
    #[command(after_help = "\
A read-only rootfs is assembled from the executable (and its ELF interpreter and libraries),
with /tmp as tmpfs. Only the --env given reaches the workload. Libraries are copied only from
the system directories /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib64, /usr/lib64,
/lib and /usr/lib: RPATH/RUNPATH entries elsewhere ($ORIGIN included) are ignored with a
warning, an interpreter or DT_NEEDED path elsewhere is refused.

--input-cid NAME=CID reads a blob (raw, bafk…) or a UnixFS file (dag-pb, bafy…) from the
store in --data-dir, verified as it is read, and copies it to /in/NAME like --input; the
receipt records the CID instead of a BLAKE3 of the file. The store is opened read-only, so it
must not be held by a running agent (runs through an agent go through its API instead:
POST /api/v1/docklock/runs). With --json the outcome lists every input as the receipt
records it, which `docklock verify --inputs` checks against the receipt's input root.

Examples:
  metanode docklock exec ./tool --input data=./data.bin --env LANG=C -- --flag value
  metanode docklock exec ./tool --data-dir /var/lib/metanode --input-cid data=bafkr4i… --receipt run.dlr --key node.key")]
    Exec(ExecArgs),
    /// Verify a witness receipt (.dlr): signature and internal consistency.
    #[command(after_help = "\
Example:
  metanode docklock verify run.dlr --signer 3b6a…9f")]
    Verify(VerifyArgs),
    /// Re-run a bundle N times under perturbation and compare the outputs.
    #[command(after_help = "\
Run 0 is the reference; later runs change CPU pinning, ASLR, umask (when the spec fixes
none), environment order and timing before exec, with the same seed and logical time. The
outputs under /out and the exit must agree; otherwise the first differing output is named
and the command exits 1.

Example:
  metanode docklock replay ./bundle --runs 5")]
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct CageArgs {
    /// Seed of /dev/urandom in the cage, 64 hex digits (default: all zeros).
    #[arg(long, value_name = "HEX64")]
    seed: Option<String>,
    /// Value of CLOCK_MONOTONIC when the workload starts.
    #[arg(long, value_name = "NS", default_value_t = 1_000_000_000)]
    logical_time_ns: u64,
    /// Host directory mounted writable at /out (its contents make the outputs root).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Kill the cage after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout_s: Option<u64>,
    /// Write a signed witness receipt here (needs --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    receipt: Option<PathBuf>,
    /// The node's Ed25519 key file that signs the receipt.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Service name recorded in the receipt.
    #[arg(long, default_value = "docklock")]
    service: String,
    /// Discard the workload's stdout and stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct BindArgs {
    /// Allow bind-mount sources beneath this host directory, besides the bundle directory
    /// (repeatable; absolute or relative to the current directory).
    #[arg(long = "allow-bind", value_name = "DIR")]
    allow_bind: Vec<PathBuf>,
}

impl BindArgs {
    fn dirs(&self) -> anyhow::Result<Vec<PathBuf>> {
        self.allow_bind
            .iter()
            .map(|dir| {
                std::path::absolute(dir).with_context(|| format!("--allow-bind {}", dir.display()))
            })
            .collect()
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bundle directory holding config.json.
    bundle: PathBuf,
    #[command(flatten)]
    cage: CageArgs,
    #[command(flatten)]
    binds: BindArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The executable.
    program: PathBuf,
    /// Arguments after the program name.
    #[arg(last = true)]
    args: Vec<String>,
    /// Declared input NAME=PATH, copied read-only to /in/NAME (repeatable).
    #[arg(long = "input", value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// Declared input NAME=CID read from the store in --data-dir, copied read-only to /in/NAME
    /// and recorded in the receipt by its CID (repeatable).
    #[arg(long = "input-cid", value_name = "NAME=CID")]
    input_cids: Vec<String>,
    /// The node data dir whose store --input-cid reads (opened read-only).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// NAME=CID:PATH: PATH already holds the verified bytes of CID (the agent reads its own
    /// store, which only one process may open); copied to /in/NAME, recorded by CID.
    #[arg(long = "input-blob", value_name = "NAME=CID:PATH", hide = true)]
    input_blobs: Vec<String>,
    /// Environment entry KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[command(flatten)]
    cage: CageArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt file (.dlr).
    receipt: PathBuf,
    /// Require this signer (hex Ed25519 public key).
    #[arg(long, value_name = "HEX")]
    signer: Option<String>,
    /// Check the receipt's input root against these inputs: a JSON file holding the `inputs`
    /// list of a run's `--json` outcome (or that whole outcome, or the agent API's answer).
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Bundle directory holding config.json.
    bundle: PathBuf,
    /// Number of runs, the reference included.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=100))]
    runs: u64,
    /// Seed of /dev/urandom, 64 hex digits.
    #[arg(long, value_name = "HEX64")]
    seed: Option<String>,
    /// Where each run's /out goes (default: a temporary directory, removed after).
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    #[command(flatten)]
    binds: BindArgs,
}

pub fn run(cmd: DocklockCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        DocklockCommand::Run(args) => {
            let spec = CageSpec::load(&args.bundle)?;
            run_caged(&spec, &args.cage, args.binds.dirs()?, &[], out)
        }
        DocklockCommand::Exec(args) => {
            let mut inputs = args
                .inputs
                .iter()
                .map(|i| {
                    let (name, path) = i
                        .split_once('=')
                        .ok_or_else(|| anyhow!("--input {i:?}: expected NAME=PATH"))?;
                    Ok(DeclaredInput {
                        name: name.to_string(),
                        source: PathBuf::from(path),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let cid_inputs = args
                .input_cids
                .iter()
                .map(|text| store_inputs::parse_cid_input(text))
                .collect::<Result<Vec<CidInput>, _>>()?;
            let blob_inputs = args
                .input_blobs
                .iter()
                .map(|text| parse_input_blob(text))
                .collect::<anyhow::Result<Vec<_>>>()?;
            // Holds the blobs read from the store until the run is over.
            let scratch = tempfile::tempdir().context("create a directory for store inputs")?;
            let from_store = match (&args.data_dir, cid_inputs.is_empty()) {
                (_, true) => Vec::new(),
                (Some(dir), false) => store_inputs::materialize(dir, &cid_inputs, scratch.path())?,
                (None, false) => return Err(store_inputs::StoreInputError::NoStore.into()),
            };
            let mut refs = input_refs(&inputs)?;
            for (input, record) in from_store.into_iter().chain(blob_inputs) {
                inputs.push(input);
                refs.push(record);
            }
            let mut spec =
                CageSpec::from_executable(&args.program, &args.args, &args.env, &inputs)?;
            // The plain-executable mode's memory limit is a default, not the caller's request:
            // an unprivileged caller's cage has no cgroup to enforce it, so it goes, said aloud.
            if !crate::cage::caller_is_root() && spec.resources.memory_limit_bytes.take().is_some()
            {
                spec.warnings.push(
                    "no memory limit: the default one needs a cgroup, which an unprivileged caller's cage has not (run as root for it)"
                        .into(),
                );
            }
            let result = run_caged(&spec, &args.cage, Vec::new(), &refs, out);
            drop(scratch);
            result
        }
        DocklockCommand::Verify(args) => verify(&args, out),
        DocklockCommand::Replay(args) => replay_cmd(&args, out),
    }
}

fn parse_seed(seed: Option<&str>) -> anyhow::Result<[u8; 32]> {
    let Some(text) = seed else {
        return Ok([0; 32]);
    };
    let bytes = hex::decode(text).map_err(|e| anyhow!("--seed: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow!("--seed: {} bytes, expected 32 (64 hex digits)", b.len()))
}

/// `--input-blob NAME=CID:PATH` (CIDs have no `:`, so the first one ends the CID).
fn parse_input_blob(text: &str) -> anyhow::Result<(DeclaredInput, InputRef)> {
    let syntax = || anyhow!("--input-blob {text:?}: expected NAME=CID:PATH");
    let (name, rest) = text.split_once('=').ok_or_else(syntax)?;
    let (cid_text, path) = rest.split_once(':').ok_or_else(syntax)?;
    let cid = cid_text
        .parse::<metanode_core::cid::ContentId>()
        .map_err(|e| anyhow!("--input-blob {name}={cid_text}: not a CID: {e}"))?;
    let size_bytes = std::fs::metadata(path)
        .with_context(|| format!("--input-blob {name}: {path}"))?
        .len();
    Ok((
        DeclaredInput {
            name: name.to_string(),
            source: PathBuf::from(path),
        },
        store_inputs::cid_input_ref(name, &cid, size_bytes),
    ))
}

/// An input as `--json` shows it and `verify --inputs` reads it back.
fn input_json(input: &InputRef) -> serde_json::Value {
    let mut value = serde_json::json!({"name": input.name, "size_bytes": input.size_bytes});
    match &input.digest {
        InputDigest::Cid(bytes) => {
            value["cid"] = match metanode_core::cid::ContentId::from_bytes(bytes) {
                Ok(cid) => serde_json::json!(cid.to_string()),
                Err(_) => serde_json::json!(hex::encode(bytes)),
            }
        }
        InputDigest::Blake3(digest) => value["blake3"] = serde_json::json!(hex::encode(digest)),
    }
    value
}

/// The inputs of `verify --inputs FILE`: a list of [`input_json`] objects, or an object
/// holding one under `inputs`.
fn inputs_from_json(value: &serde_json::Value) -> anyhow::Result<Vec<InputRef>> {
    let list = match value {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(map) => match map.get("inputs") {
            Some(serde_json::Value::Array(list)) => list,
            _ => bail!("expected a list of inputs, or an object with an `inputs` list"),
        },
        _ => bail!("expected a list of inputs, or an object with an `inputs` list"),
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = |key: &str| entry.get(key);
            let name = field("name")
                .and_then(|v| v.as_str())
                .ok_or_else(|| anyhow!("inputs.{i}.name: missing or not a string"))?;
            let size_bytes = field("size_bytes")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| anyhow!("inputs.{i}.size_bytes: missing or not a number"))?;
            let digest = match (
                field("cid").and_then(|v| v.as_str()),
                field("blake3").and_then(|v| v.as_str()),
            ) {
                (Some(cid), None) => InputDigest::Cid(
                    cid.parse::<metanode_core::cid::ContentId>()
                        .map_err(|e| anyhow!("inputs.{i}.cid: {e}"))?
                        .to_bytes(),
                ),
                (None, Some(text)) => InputDigest::Blake3(
                    hex::decode(text)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| anyhow!("inputs.{i}.blake3: expected 64 hex digits"))?,
                ),
                _ => bail!("inputs.{i}: expected exactly one of `cid` and `blake3`"),
            };
            Ok(InputRef {
                name: name.to_string(),
                digest,
                size_bytes,
            })
        })
        .collect()
}

fn cage_id() -> String {
    format!("dl-{}", std::process::id())
}

fn input_refs(inputs: &[DeclaredInput]) -> anyhow::Result<Vec<InputRef>> {
    inputs
        .iter()
        .map(|i| {
            let bytes = std::fs::read(&i.source)
                .with_context(|| format!("read input {}", i.source.display()))?;
            Ok(InputRef {
                name: i.name.clone(),
                digest: InputDigest::Blake3(*blake3::hash(&bytes).as_bytes()),
                size_bytes: bytes.len() as u64,
            })
        })
        .collect()
}

fn exit_text(exit: CageExit) -> String {
    match exit {
        CageExit::Exited(code) => format!("exited {code}"),
        CageExit::Signaled(signal) => format!("killed by signal {signal}"),
    }
}

fn outcome_json(o: &RunOutcome) -> serde_json::Value {
    serde_json::json!({
        "exit": match o.exit { CageExit::Exited(c) => serde_json::json!({"exited": c}),
                               CageExit::Signaled(s) => serde_json::json!({"signaled": s}) },
        "violations": o.violations.iter().map(|v| serde_json::json!({
            "syscall": v.syscall_name, "nr": v.syscall_nr, "pid": v.pid })).collect::<Vec<_>>(),
        "oom_kills": o.usage.oom_kills,
        "pids_max_hits": o.usage.pids_max_hits,
        "memory_peak_bytes": o.usage.memory_peak_bytes,
        "cpu_usage_us": o.usage.cpu_usage_us,
        "landlock": o.landlock.status.as_str(),
        "landlock_abi": o.landlock.abi,
        "cgroup_mode": format!("{:?}", o.cgroup_mode.kind()),
        "seccomp_digest": hex::encode(o.seccomp_digest),
        "namespaces": o.namespaces.names(),
        "spawn_ms": o.spawn_ns as f64 / 1e6,
        "wall_ms": o.wall_ns as f64 / 1e6,
        "timed_out": o.timed_out,
        "output_violations": o.output_violations.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "output_violations_dropped": o.output_violations_dropped_count,
        "warnings": o.warnings,
        "stdio_truncated": o.stdio_truncated,
        "tsc_reads_virtualized": o.tsc_reads_count,
        "landlock_denials": o.landlock_denials.iter().map(|d| d.access()).collect::<Vec<_>>(),
        "landlock_denials_dropped": o.landlock_denials_dropped_count,
        "landlock_audit": o.landlock_audit.to_string(),
    })
}

fn run_caged(
    spec: &CageSpec,
    args: &CageArgs,
    bind_allow: Vec<PathBuf>,
    inputs: &[InputRef],
    out: &Output,
) -> anyhow::Result<()> {
    let mut opts = RunOptions::new(cage_id());
    opts.bind_allow = bind_allow;
    opts.rng_seed = parse_seed(args.seed.as_deref())?;
    opts.logical_time_ns = args.logical_time_ns;
    opts.out_dir = args.out.clone();
    opts.timeout = args.timeout_s.map(Duration::from_secs);
    opts.quiet = args.quiet;
    // The receipt needs the outputs: give the run an /out even when none was asked for.
    let scratch = if args.receipt.is_some() && opts.out_dir.is_none() {
        let dir = tempfile::tempdir().context("create a scratch /out")?;
        opts.out_dir = Some(dir.path().join("out"));
        Some(dir)
    } else {
        None
    };
    // The receipt names what went in: the rootfs tree as it was before the run (every file's
    // path, kind, size and BLAKE3, without following symlinks) joins the declared inputs.
    let mut declared = inputs.to_vec();
    if args.receipt.is_some() {
        let tree = metanode_witness::outputs_root(&spec.rootfs)
            .with_context(|| format!("digest the rootfs {}", spec.rootfs.display()))?;
        declared.push(InputRef {
            // "/" cannot clash with a declared input (their names have no slash).
            name: "/".to_string(),
            digest: InputDigest::Blake3(*tree.root().as_bytes()),
            size_bytes: tree.entries().iter().map(|e| e.size_bytes).sum(),
        });
    }
    let outcome = cage::run(spec, &opts)?;
    let mut value = outcome_json(&outcome);
    value["inputs"] = declared.iter().map(input_json).collect();
    if let (Some(path), Some(key)) = (&args.receipt, &args.key) {
        let key = SigningKeyFile::new(key).load()?;
        let signed =
            crate::witness::sign_run(spec, &opts, &outcome, &args.service, &declared, &key)?;
        signed.write_file(path)?;
        value["receipt"] = serde_json::json!(path.display().to_string());
    }
    drop(scratch);
    if out.is_json() {
        out.emit("", &value);
    } else {
        let mut text = format!(
            "docklock: {} (spawn {:.2} ms, wall {:.1} ms); landlock {} (ABI {}), cgroup {:?}, {} violation(s)",
            exit_text(outcome.exit),
            outcome.spawn_ns as f64 / 1e6,
            outcome.wall_ns as f64 / 1e6,
            outcome.landlock.status.as_str(),
            outcome.landlock.abi,
            outcome.cgroup_mode.kind(),
            outcome.violations.len()
        );
        for v in &outcome.violations {
            text.push_str(&format!("\n  refused: {} (pid {})", v.syscall_name, v.pid));
        }
        for d in &outcome.landlock_denials {
            text.push_str(&format!("\n  landlock refused: {}", d.access()));
        }
        if outcome.landlock_audit != metanode_confine::DenialCollection::Complete {
            text.push_str(&format!("\n  landlock denials {}", outcome.landlock_audit));
        }
        for v in &outcome.output_violations {
            text.push_str(&format!("\n  output violation: {v}"));
        }
        if outcome.output_violations_dropped_count > 0 {
            text.push_str(&format!(
                "\n  ... and {} more output violation(s)",
                outcome.output_violations_dropped_count
            ));
        }
        for warning in &outcome.warnings {
            text.push_str(&format!("\n  warning: {warning}"));
        }
        if outcome.stdio_truncated {
            text.push_str("\n  stdout/stderr past the relay bound were discarded");
        }
        if outcome.tsc_reads_count > 0 {
            text.push_str(&format!(
                "\n  rdtsc: {} read(s) answered from the virtual counter",
                outcome.tsc_reads_count
            ));
        }
        if outcome.usage.oom_kills > 0 {
            text.push_str("\n  memory limit: OOM kill inside the cage");
        }
        if outcome.usage.pids_max_hits > 0 {
            text.push_str("\n  pids limit reached");
        }
        if outcome.timed_out {
            text.push_str("\n  timed out: cage killed");
        }
        if let Some(path) = &args.receipt {
            text.push_str(&format!("\n  receipt: {}", path.display()));
        }
        eprintln!("{text}");
    }
    let code = outcome.exit.code();
    if code != 0 {
        // The workload's own status is the command's (like `env`/`timeout`), not an error.
        std::process::exit(code.clamp(1, 255));
    }
    Ok(())
}

fn verify(args: &VerifyArgs, out: &Output) -> anyhow::Result<()> {
    let signed = SignedRecord::read_file(&args.receipt)?;
    match &args.signer {
        Some(hex_key) => {
            let bytes: [u8; 32] = hex::decode(hex_key)
                .map_err(|e| anyhow!("--signer: {e}"))?
                .try_into()
                .map_err(|_| anyhow!("--signer: expected 32 bytes (64 hex digits)"))?;
            let key = PublicKey::from_bytes(&bytes).map_err(|e| anyhow!("--signer: {e}"))?;
            signed.verify_with(&key)?;
        }
        None => signed.verify()?,
    }
    let mut human = format!(
        "receipt {} verified: signer {}, verdict {:?}, {} violation(s)",
        args.receipt.display(),
        hex::encode(signed.signer),
        signed.record.decision.verdict,
        signed.record.decision.violations_total_count()
    );
    for v in &signed.record.decision.violations {
        match &v.kind {
            metanode_witness::ViolationKind::Output { action, mode, path } => {
                human.push_str(&format!(
                    "\n  output violation: /out/{path} (mode {mode:o}): {}",
                    action.name()
                ))
            }
            metanode_witness::ViolationKind::Landlock { access } => {
                human.push_str(&format!("\n  landlock refused: {access}"))
            }
            kind => human.push_str(&format!("\n  {}: {}", kind.name(), v.detail)),
        }
    }
    let mut json: serde_json::Value =
        serde_json::from_str(&signed.to_json_pretty()).unwrap_or(serde_json::Value::Null);
    if let Some(path) = &args.inputs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--inputs {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("--inputs {}: not JSON", path.display()))?;
        let inputs =
            inputs_from_json(&value).with_context(|| format!("--inputs {}", path.display()))?;
        let root = metanode_witness::input_root(&inputs)
            .with_context(|| format!("--inputs {}", path.display()))?;
        if *root.as_bytes() != signed.record.header.input_root {
            bail!(
                "the receipt's input root {} is not the root of the inputs in {} ({root})",
                crate::witness::root_hex(&signed.record.header.input_root),
                path.display()
            );
        }
        human.push_str(&format!("\n  inputs match the input root {root}:"));
        for input in &inputs {
            let shown = input_json(input);
            let digest = match (shown.get("cid"), shown.get("blake3")) {
                (Some(cid), _) => format!("cid {}", cid.as_str().unwrap_or_default()),
                (_, Some(b3)) => format!("blake3 {}", b3.as_str().unwrap_or_default()),
                _ => String::new(),
            };
            human.push_str(&format!(
                "\n    {}: {digest} ({} bytes)",
                input.name, input.size_bytes
            ));
        }
        json["inputs"] = inputs.iter().map(input_json).collect();
    }
    out.emit(&human, &json);
    Ok(())
}

fn replay_cmd(args: &ReplayArgs, out: &Output) -> anyhow::Result<()> {
    let spec = CageSpec::load(&args.bundle)?;
    let mut base = RunOptions::new(cage_id());
    base.bind_allow = args.binds.dirs()?;
    base.rng_seed = parse_seed(args.seed.as_deref())?;
    base.quiet = true;
    let temp;
    let work: &Path = match &args.work {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir().context("create the replay work directory")?;
            temp.path()
        }
    };
    let report = replay::replay(&spec, &base, args.runs as usize, work)?;
    let runs: Vec<serde_json::Value> = report
        .runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "perturbation": r.perturbation,
                "exit": exit_text(r.outcome.exit),
                "outputs_root": r.outputs.root().to_string(),
                "wall_ms": r.outcome.wall_ns as f64 / 1e6,
            })
        })
        .collect();
    let verdict = match &report.disagreement {
        None => format!(
            "replay: {} runs agree (outputs root {})",
            report.runs.len(),
            report.runs[0].outputs.root()
        ),
        Some(Disagreement::Exit { run, first, this }) => format!(
            "replay: NONDETERMINISTIC: run {run} {} but run 0 {}",
            exit_text(*this),
            exit_text(*first)
        ),
        Some(Disagreement::Output { run, difference }) => {
            format!("replay: NONDETERMINISTIC: run {run}: {difference}")
        }
    };
    let mut human = verdict.clone();
    for (i, r) in report.runs.iter().enumerate() {
        human.push_str(&format!(
            "\n  run {i}: {} -> {}, {}",
            r.perturbation,
            exit_text(r.outcome.exit),
            r.outputs.root()
        ));
    }
    out.emit(
        &human,
        &serde_json::json!({"agree": report.disagreement.is_none(), "verdict": verdict, "runs": runs}),
    );
    if report.disagreement.is_some() {
        bail!("the workload is not deterministic under perturbation");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open key file k: {source}")]
    struct OpenError {
        source: std::io::Error,
    }

    /// A cause printed inside its parent's message is said once; a cause
    /// the parent does not print is kept.
    #[test]
    fn a_cause_already_in_its_parent_message_is_said_once() {
        let gone = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err = anyhow::Error::new(OpenError { source: gone }).context("load key k");
        assert_eq!(
            cause_chain(&err),
            ["load key k", "cannot open key file k: gone"]
        );
        let plain = anyhow::Error::new(std::io::Error::other("disk on fire")).context("write x");
        assert_eq!(cause_chain(&plain), ["write x", "disk on fire"]);
        // The parent's wording ends like the cause, but does not print it.
        let found = anyhow::Error::new(std::io::Error::other("found")).context("key not found");
        assert_eq!(cause_chain(&found), ["key not found", "found"]);
    }
}
