//! `cargo xtask bench storage`: builds the harnesses, measures the machine's
//! limits, then runs every workload x size x system one after another (never
//! two at once) on the same disk, and writes the table, JSON and chart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::results::{self, Better, MetricSpec, Outcome, RunRecord, SystemInfo};
use super::systems::{Launch, SYSTEMS, Side, System};
use crate::process::{self, Outcome as ProcOutcome};
use crate::workspace_root;

/// Seed of every run: all systems get byte-identical blobs.
const SEED: u64 = 1;
const INFLIGHT: usize = 64;
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(20);
const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 8;
/// On the same disk as the checkout on a single-disk machine; --dir moves it.
pub const DEFAULT_DIR: &str = "/var/tmp/metanode-bench";

/// What a bench run leaves behind.
#[derive(Debug)]
pub struct Summary {
    pub json_path: std::path::PathBuf,
    /// Runs that failed or timed out (missing systems are not failures).
    pub failed: Vec<String>,
}

impl Summary {
    pub fn ensure_no_failures(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.failed.is_empty(),
            "{} run(s) failed (results still written to {}):\n  {}",
            self.failed.len(),
            self.json_path.display(),
            self.failed.join("\n  ")
        );
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Smoke run with small counts (a few seconds per system); writes
    /// perf/results/storage.quick.json so the committed full run stays.
    #[arg(long)]
    pub quick: bool,
    /// Bench directory on the disk under test; stores are created in it and
    /// removed after each run.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Only these systems (comma-separated; `cargo xtask bench --list`).
    #[arg(long, value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Only these workloads (comma-separated): put, get, add-large,
    /// read-large, put-during-gc, get-new-conn.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Timeout of each harness run, seconds [default: 120 quick, 900 full].
    #[arg(long)]
    pub timeout_s: Option<u64>,
    /// Use the binaries already built (skip cargo and npm).
    #[arg(long)]
    pub no_build: bool,
}

/// Counts per mode: full runs last several seconds per measurement for the
/// slower peers; quick runs only prove every path works.
#[derive(Debug, Clone)]
struct Plan {
    sizes: Vec<(usize, usize)>,
    large_bytes: u64,
    gc_size_bytes: usize,
    gc_count: usize,
    new_conn_size_bytes: usize,
    new_conn_count: usize,
    limits_seconds: f64,
    limits_file_bytes: u64,
    timeout: Duration,
}

impl Plan {
    fn new(quick: bool, timeout_s: Option<u64>) -> Self {
        const KIB: usize = 1024;
        if quick {
            Plan {
                sizes: vec![
                    (KIB, 1000),
                    (4 * KIB, 1000),
                    (16 * KIB, 500),
                    (256 * KIB, 100),
                ],
                large_bytes: 32 << 20,
                gc_size_bytes: KIB,
                gc_count: 1000,
                new_conn_size_bytes: KIB,
                new_conn_count: 500,
                limits_seconds: 1.0,
                limits_file_bytes: 64 << 20,
                timeout: Duration::from_secs(timeout_s.unwrap_or(120)),
            }
        } else {
            Plan {
                sizes: vec![
                    (KIB, 50_000),
                    (4 * KIB, 50_000),
                    (16 * KIB, 20_000),
                    (256 * KIB, 4_000),
                ],
                large_bytes: 1 << 30,
                gc_size_bytes: KIB,
                gc_count: 20_000,
                new_conn_size_bytes: KIB,
                new_conn_count: 20_000,
                limits_seconds: 3.0,
                limits_file_bytes: 512 << 20,
                timeout: Duration::from_secs(timeout_s.unwrap_or(900)),
            }
        }
    }

    fn json(&self) -> Value {
        serde_json::json!({
            "inflight": INFLIGHT,
            "seed": SEED,
            "put_get_counts": self.sizes.iter()
                .map(|(size, count)| (size_label(*size as u64), *count))
                .collect::<BTreeMap<_, _>>(),
            "large_bytes": self.large_bytes,
            "gc": {"size_bytes": self.gc_size_bytes, "count": self.gc_count,
                   "steps": "fill count, unpin half, put count more while GC runs"},
            "http_new_conn": {"size_bytes": self.new_conn_size_bytes, "count": self.new_conn_count},
            "per_run_timeout_s": self.timeout.as_secs(),
        })
    }
}

/// `1024` -> `1KiB`, `1 << 30` -> `1GiB`; other sizes in bytes.
pub fn size_label(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// One harness run and the metrics it yields.
#[derive(Debug, Clone)]
struct Job {
    system: &'static System,
    workload: &'static str,
    size_bytes: u64,
    count: usize,
    extra_args: Vec<&'static str>,
    metrics: Vec<MetricSpec>,
}

impl Job {
    fn label(&self) -> String {
        format!(
            "{} {} {}{}",
            self.system.name,
            self.workload,
            size_label(self.size_bytes),
            if self.count > 1 {
                format!(" x{}", self.count)
            } else {
                String::new()
            }
        )
    }

    fn dir_name(&self) -> String {
        format!(
            "{}-{}-{}",
            self.system.name,
            self.workload,
            size_label(self.size_bytes)
        )
    }
}

fn metric(name: String, unit: &'static str, better: Better, pick: results::Pick) -> MetricSpec {
    MetricSpec {
        name,
        unit,
        better,
        pick,
    }
}

/// Every job of the plan, ordered workload, size, system, so runs of the same
/// measurement sit close in time.
fn jobs(plan: &Plan, systems: &[&'static System]) -> Vec<Job> {
    use Better::{Higher, Lower};
    use results::Pick::{MbPerS, OpsPerS, P99Us};
    let mut jobs = Vec::new();
    let http = |s: &System| s.side == Side::OursHttp;
    for workload in ["put", "get"] {
        for &(size, count) in &plan.sizes {
            let l = size_label(size as u64);
            for &system in systems {
                let mut metrics = Vec::new();
                match (workload, http(system)) {
                    ("put", false) => {
                        metrics.push(metric(
                            format!("put_{l}_ops_per_s"),
                            "ops/s",
                            Higher,
                            OpsPerS,
                        ));
                        metrics.push(metric(format!("put_{l}_p99_us"), "us", Lower, P99Us));
                    }
                    ("put", true) => {
                        metrics.push(metric(
                            format!("http_put_{l}_req_per_s_keepalive"),
                            "req/s",
                            Higher,
                            OpsPerS,
                        ));
                        metrics.push(metric(
                            format!("http_put_{l}_p99_us_keepalive"),
                            "us",
                            Lower,
                            P99Us,
                        ));
                    }
                    (_, false) => {
                        metrics.push(metric(
                            format!("get_{l}_ops_per_s"),
                            "ops/s",
                            Higher,
                            OpsPerS,
                        ));
                    }
                    (_, true) => {
                        metrics.push(metric(
                            format!("http_get_{l}_req_per_s_keepalive"),
                            "req/s",
                            Higher,
                            OpsPerS,
                        ));
                    }
                }
                jobs.push(Job {
                    system,
                    workload,
                    size_bytes: size as u64,
                    count,
                    extra_args: Vec::new(),
                    metrics,
                });
            }
        }
    }
    let l = size_label(plan.large_bytes);
    for (workload, verb) in [("add-large", "add"), ("read-large", "read")] {
        for &system in systems.iter().filter(|s| s.large) {
            let prefix = if http(system) { "http_" } else { "" };
            jobs.push(Job {
                system,
                workload,
                size_bytes: plan.large_bytes,
                count: 1,
                extra_args: Vec::new(),
                metrics: vec![metric(
                    format!("{prefix}{verb}_{l}_MB_per_s"),
                    "MB/s",
                    Higher,
                    MbPerS,
                )],
            });
        }
    }
    let l = size_label(plan.gc_size_bytes as u64);
    for &system in systems.iter().filter(|s| s.gc) {
        jobs.push(Job {
            system,
            workload: "put-during-gc",
            size_bytes: plan.gc_size_bytes as u64,
            count: plan.gc_count,
            extra_args: Vec::new(),
            metrics: vec![
                metric(format!("put_{l}_p99_us_during_gc"), "us", Lower, P99Us),
                metric(
                    format!("put_{l}_ops_per_s_during_gc"),
                    "ops/s",
                    Higher,
                    OpsPerS,
                ),
            ],
        });
    }
    let l = size_label(plan.new_conn_size_bytes as u64);
    for &system in systems.iter().filter(|s| http(s)) {
        jobs.push(Job {
            system,
            workload: "get-new-conn",
            size_bytes: plan.new_conn_size_bytes as u64,
            count: plan.new_conn_count,
            extra_args: vec!["--new-connections"],
            metrics: vec![metric(
                format!("http_get_{l}_req_per_s_new_conn"),
                "req/s",
                Higher,
                OpsPerS,
            )],
        });
    }
    jobs
}

/// The protocol name of a job's workload (get-new-conn is `get` with
/// `--new-connections`).
fn protocol_workload(workload: &str) -> &str {
    match workload {
        "get-new-conn" => "get",
        other => other,
    }
}

/// How to start one system's harness, or why it cannot run.
#[derive(Debug, Clone)]
enum Ready {
    Command {
        program: PathBuf,
        pre_args: Vec<OsString>,
        cwd: Option<PathBuf>,
    },
    /// ours-harness against a freshly started agent.
    Http {
        harness: PathBuf,
        metanode: PathBuf,
    },
    Missing(String),
}

struct Paths {
    root: PathBuf,
    target: PathBuf,
    cache: PathBuf,
}

impl Paths {
    fn new() -> Self {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cache = std::env::var_os("METANODE_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/metanode"));
        Self {
            root,
            target,
            cache,
        }
    }

    fn release_bin(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    fn iroh_target(&self) -> PathBuf {
        self.cache.join("iroh-harness-target")
    }
}

/// Where the iroh harness is built: outside the checkout so CI can cache it.
pub fn iroh_target_dir() -> PathBuf {
    Paths::new().iroh_target()
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// What the builds produced, per system.
struct Built {
    workspace_ok: bool,
    metanode: Result<(), String>,
    iroh: Result<(), String>,
    helia: Result<(), String>,
}

fn build(paths: &Paths, args: &StorageArgs, wanted: &[&'static System]) -> anyhow::Result<Built> {
    let wants = |name: &str| wanted.iter().any(|s| s.name == name);
    if args.no_build {
        return Ok(Built {
            workspace_ok: true,
            metanode: Ok(()),
            iroh: Ok(()),
            helia: Ok(()),
        });
    }
    step("build harnesses (release): cargo build --release -p metanode-perf --bins");
    let workspace_ok = process::run_inherited(cargo(&paths.root).args([
        "build",
        "--release",
        "-p",
        "metanode-perf",
        "--bins",
    ]))?;
    anyhow::ensure!(
        workspace_ok,
        "building metanode-perf failed (see the output above)"
    );

    let metanode = if wants("ours-http") && ours_harness_source(paths) {
        step("build agent (release): cargo build --release -p metanode --bin metanode");
        let ok = process::run_inherited(cargo(&paths.root).args([
            "build",
            "--release",
            "-p",
            "metanode",
            "--bin",
            "metanode",
        ]))?;
        if ok {
            Ok(())
        } else {
            Err("building metanode failed".to_string())
        }
    } else {
        Ok(())
    };

    let iroh = if wants("iroh-blobs") {
        let target = paths.iroh_target();
        step(&format!(
            "build iroh-blobs harness (release, cached in {})",
            target.display()
        ));
        std::fs::create_dir_all(&target).with_context(|| format!("create {}", target.display()))?;
        // Not --locked: perf/iroh-harness/Cargo.lock pins the peer, but it
        // also lists metanode-perf's dependencies, which change with our
        // code; cargo adds those and keeps every existing pin.
        let ok = process::run_inherited(
            cargo(&paths.root)
                .args(["build", "--release", "--manifest-path"])
                .arg(paths.root.join("perf/iroh-harness/Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target),
        )?;
        if ok {
            Ok(())
        } else {
            Err("building perf/iroh-harness failed".to_string())
        }
    } else {
        Ok(())
    };

    let helia = if wants("helia") {
        npm_install(&paths.root.join("perf/helia"))
    } else {
        Ok(())
    };
    Ok(Built {
        workspace_ok,
        metanode,
        iroh,
        helia,
    })
}

/// `npm ci` (or `npm install` without a lock file) unless node_modules is
/// newer than both package files.
fn npm_install(dir: &Path) -> Result<(), String> {
    let package = dir.join("package.json");
    if !package.exists() {
        return Err("not installed (perf/helia/package.json does not exist yet)".into());
    }
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.package-lock.json");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (mtime(&stamp), mtime(&package), mtime(&lock)) {
        (Some(s), Some(p), l) => s >= p && l.is_none_or(|l| s >= l),
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    let verb = if lock.exists() { "ci" } else { "install" };
    step(&format!("npm {verb} in {}", dir.display()));
    let ok = process::run_inherited(
        Command::new("npm")
            .args([verb, "--no-audit", "--no-fund"])
            .current_dir(dir),
    )
    .map_err(|e| format!("npm {verb} could not start: {e:#}"))?;
    if ok {
        Ok(())
    } else {
        Err(format!("npm {verb} failed in {}", dir.display()))
    }
}

fn ours_harness_source(paths: &Paths) -> bool {
    match super::systems::OURS_HARNESS {
        Launch::WorkspaceBin { source, .. } => paths.root.join(source).exists(),
        _ => false,
    }
}

fn readiness(system: &System, paths: &Paths, built: &Built) -> Ready {
    let workspace_bin = |bin: &str, source: &str| -> Result<PathBuf, String> {
        if !paths.root.join(source).exists() {
            return Err(format!("{source} does not exist yet"));
        }
        if !built.workspace_ok {
            return Err("metanode-perf did not build".into());
        }
        let program = paths.release_bin(bin);
        if program.exists() {
            Ok(program)
        } else {
            Err(format!("{} is missing", program.display()))
        }
    };
    match system.launch {
        Launch::WorkspaceBin { bin, source } => match workspace_bin(bin, source) {
            Ok(program) => Ready::Command {
                program,
                pre_args: Vec::new(),
                cwd: None,
            },
            Err(why) => Ready::Missing(why),
        },
        Launch::IrohBin { bin } => {
            if let Err(why) = &built.iroh {
                return Ready::Missing(why.clone());
            }
            let program = paths.iroh_target().join("release").join(bin);
            if program.exists() {
                Ready::Command {
                    program,
                    pre_args: Vec::new(),
                    cwd: None,
                }
            } else {
                Ready::Missing(format!("{} is missing", program.display()))
            }
        }
        Launch::Node { dir, script } => {
            if let Err(why) = &built.helia {
                return Ready::Missing(why.clone());
            }
            let dir = paths.root.join(dir);
            if !dir.join(script).exists() {
                return Ready::Missing(format!(
                    "{} is not written yet",
                    dir.join(script).display()
                ));
            }
            if !dir.join("node_modules").exists() {
                return Ready::Missing(
                    "not installed (no node_modules; run without --no-build)".into(),
                );
            }
            Ready::Command {
                program: PathBuf::from("node"),
                pre_args: vec!["--import".into(), "./polyfill.mjs".into(), script.into()],
                cwd: Some(dir),
            }
        }
        Launch::OursHttp => {
            let Launch::WorkspaceBin { bin, source } = super::systems::OURS_HARNESS else {
                return Ready::Missing("ours-harness launch is not a workspace bin".into());
            };
            let harness = match workspace_bin(bin, source) {
                Ok(h) => h,
                Err(why) => return Ready::Missing(why),
            };
            if let Err(why) = &built.metanode {
                return Ready::Missing(why.clone());
            }
            let metanode = paths.release_bin("metanode");
            if !metanode.exists() {
                return Ready::Missing(format!("{} is missing", metanode.display()));
            }
            Ready::Http { harness, metanode }
        }
    }
}

/// The JSON line of the protocol (fields the orchestrator reads).
#[derive(Debug, Deserialize)]
pub struct HarnessLine {
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    #[serde(default)]
    pub latency_us: Option<LatencyLine>,
    pub durability: String,
    #[serde(default)]
    pub config: Value,
}

#[derive(Debug, Deserialize)]
pub struct LatencyLine {
    pub p50: f64,
    pub p99: f64,
}

fn step(title: &str) {
    eprintln!("\n==> {title}");
}

/// Runs the bench and writes its results.
pub fn run(args: &StorageArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let paths = Paths::new();
    let plan = Plan::new(args.quick, args.timeout_s);
    let selected = select_systems(&args.systems)?;
    let workload_names = [
        "put",
        "get",
        "add-large",
        "read-large",
        "put-during-gc",
        "get-new-conn",
    ];
    for w in &args.workloads {
        anyhow::ensure!(
            workload_names.contains(&w.as_str()),
            "--workloads: unknown workload {w:?} (known: {})",
            workload_names.join(", ")
        );
    }

    let built = build(&paths, args, &selected)?;
    let ready: BTreeMap<&'static str, Ready> = selected
        .iter()
        .map(|s| (s.name, readiness(s, &paths, &built)))
        .collect();

    let bench_dir = &args.dir;
    std::fs::create_dir_all(bench_dir)
        .with_context(|| format!("create bench dir {}", bench_dir.display()))?;
    let logs = bench_dir.join("logs");
    std::fs::create_dir_all(&logs)?;

    step(&format!("machine limits on {}", bench_dir.display()));
    let machine = machine_limits(&paths, bench_dir, &plan, &logs);
    eprintln!("{machine}");

    let mut all_jobs = jobs(&plan, &selected);
    if !args.workloads.is_empty() {
        all_jobs.retain(|j| args.workloads.iter().any(|w| w == j.workload));
    }
    let needs_large = all_jobs.iter().any(|j| j.workload.ends_with("-large"));
    let large = bench_dir.join("large.bin");
    if needs_large {
        step(&format!(
            "generate {} of input in {}",
            size_label(plan.large_bytes),
            large.display()
        ));
        generate_large(&paths, &large, plan.large_bytes, &logs)?;
    }

    step(&format!(
        "{} runs, one at a time, {} in flight, timeout {} s each",
        all_jobs.len(),
        INFLIGHT,
        plan.timeout.as_secs()
    ));
    let mut records = Vec::with_capacity(all_jobs.len());
    for (n, job) in all_jobs.iter().enumerate() {
        let prefix = format!("[{}/{}] {}", n + 1, all_jobs.len(), job.label());
        let record = match &ready[job.system.name] {
            Ready::Missing(why) => {
                eprintln!("{prefix}: missing ({why})");
                RunRecord::missing(
                    job.system.name,
                    job.workload,
                    job.size_bytes,
                    job.count,
                    why,
                )
            }
            ready => {
                let record = run_job(job, ready, bench_dir, &large, &logs, &plan);
                eprintln!("{prefix}: {}", record.summary());
                record
            }
        };
        records.push((job.metrics.clone(), record));
    }
    if needs_large {
        remove_quietly(&large);
    }
    for job in all_jobs.iter() {
        remove_quietly(&bench_dir.join(job.dir_name()));
    }

    let system_info: Vec<SystemInfo> = selected
        .iter()
        .map(|s| SystemInfo::from_runs(s, &ready_status(&ready[s.name]), &records))
        .collect();
    let report = results::Report::build(
        if args.quick { "quick" } else { "full" },
        machine,
        plan.json(),
        &system_info,
        &records,
    );
    println!("{}", report.table());
    let results_dir = paths.root.join("perf/results");
    std::fs::create_dir_all(&results_dir)?;
    let stem = if args.quick {
        "storage.quick"
    } else {
        "storage"
    };
    let json_path = results_dir.join(format!("{stem}.json"));
    std::fs::write(&json_path, report.to_json_pretty()? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    let png_path = results_dir.join(format!("{stem}.png"));
    match super::chart::draw(&report, &png_path) {
        Ok(()) => eprintln!("wrote {} and {}", json_path.display(), png_path.display()),
        Err(e) => eprintln!(
            "wrote {}; chart {} not drawn: {e:#}",
            json_path.display(),
            png_path.display()
        ),
    }
    eprintln!(
        "bench storage took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let failed = records
        .iter()
        .map(|(_, r)| r)
        .filter(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::TimedOut(_)))
        .map(|r| {
            format!(
                "{} {} {}: {}",
                r.system,
                r.workload,
                size_label(r.size_bytes),
                r.summary()
            )
        })
        .collect();
    Ok(Summary { json_path, failed })
}

fn ready_status(ready: &Ready) -> Result<(), String> {
    match ready {
        Ready::Missing(why) => Err(why.clone()),
        _ => Ok(()),
    }
}

fn select_systems(names: &[String]) -> anyhow::Result<Vec<&'static System>> {
    if names.is_empty() {
        return Ok(SYSTEMS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            super::systems::by_name(n).with_context(|| {
                let known: Vec<&str> = SYSTEMS.iter().map(|s| s.name).collect();
                format!(
                    "--systems: unknown system {n:?} (known: {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

fn machine_limits(paths: &Paths, bench_dir: &Path, plan: &Plan, logs: &Path) -> Value {
    let mut cmd = Command::new(paths.release_bin("machine-limits"));
    cmd.arg("--dir")
        .arg(bench_dir)
        .arg("--seconds")
        .arg(plan.limits_seconds.to_string())
        .arg("--file-bytes")
        .arg(plan.limits_file_bytes.to_string());
    let log = logs.join("machine-limits.log");
    let error = match process::run_with_timeout(&mut cmd, Duration::from_secs(120), &log) {
        Ok(ProcOutcome::Finished(f)) if f.status.success() => {
            match serde_json::from_str::<Value>(f.stdout.trim()) {
                Ok(v) => return v,
                Err(e) => format!("unparsable output: {e}"),
            }
        }
        Ok(ProcOutcome::Finished(f)) => format!("{}: {}", f.status, process::log_tail(&log, 3)),
        Ok(ProcOutcome::TimedOut(t)) => format!("timed out after {} s", t.as_secs()),
        Err(e) => format!("{e:#}"),
    };
    serde_json::json!({ "error": format!("machine-limits failed: {error}") })
}

fn generate_large(paths: &Paths, out: &Path, bytes: u64, logs: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(paths.release_bin("blob-gen"));
    cmd.arg("--out")
        .arg(out)
        .arg("--total-bytes")
        .arg(bytes.to_string())
        .arg("--seed")
        .arg(SEED.to_string());
    let log = logs.join("blob-gen.log");
    match process::run_with_timeout(&mut cmd, Duration::from_secs(300), &log)? {
        ProcOutcome::Finished(f) if f.status.success() => Ok(()),
        ProcOutcome::Finished(f) => {
            anyhow::bail!(
                "blob-gen failed ({}): {}",
                f.status,
                process::log_tail(&log, 3)
            )
        }
        ProcOutcome::TimedOut(_) => anyhow::bail!("blob-gen timed out"),
    }
}

/// Pause before a full-mode large run (see `run_job`).
const LARGE_SETTLE: Duration = Duration::from_secs(6);
/// Quick runs (32 MiB) do not need the pause.
const LARGE_SETTLE_FROM_BYTES: u64 = 256 << 20;

/// `sync(2)`: write back every dirty page on the machine before a run.
fn flush_page_cache_writeback() {
    if let Err(e) = Command::new("sync").status() {
        eprintln!("warning: sync before a run failed: {e}");
    }
}

fn remove_quietly(path: &Path) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: cannot remove {}: {e}", path.display());
    }
}

fn harness_args(job: &Job, plan: &Plan, store_dir: &Path, large: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--dir".into(),
        store_dir.into(),
        "--workload".into(),
        protocol_workload(job.workload).into(),
        "--inflight".into(),
        INFLIGHT.to_string().into(),
        "--seed".into(),
        SEED.to_string().into(),
    ];
    if job.workload.ends_with("-large") {
        a.extend([
            "--total-bytes".into(),
            plan.large_bytes.to_string().into(),
            "--input".into(),
            large.into(),
        ]);
    } else {
        a.extend([
            "--size-bytes".into(),
            job.size_bytes.to_string().into(),
            "--count".into(),
            job.count.to_string().into(),
        ]);
    }
    a.extend(job.extra_args.iter().map(OsString::from));
    a.extend(job.system.extra_args.iter().map(OsString::from));
    a
}

fn run_job(
    job: &Job,
    ready: &Ready,
    bench_dir: &Path,
    large: &Path,
    logs: &Path,
    plan: &Plan,
) -> RunRecord {
    let store_dir = bench_dir.join(job.dir_name());
    remove_quietly(&store_dir);
    let log = logs.join(format!("{}.log", job.dir_name()));
    remove_quietly(&log);
    let record = |outcome: Outcome| {
        RunRecord::new(
            job.system.name,
            job.workload,
            job.size_bytes,
            job.count,
            outcome,
            &job.metrics,
        )
    };
    if let Err(e) = std::fs::create_dir_all(&store_dir) {
        return record(Outcome::Failed(format!(
            "create {}: {e}",
            store_dir.display()
        )));
    }
    let args = harness_args(job, plan, &store_dir, large);
    // Flush the previous run's dirty pages (and the generated input file)
    // first, so no system pays for another's writeback inside its timing.
    flush_page_cache_writeback();
    if job.workload.ends_with("-large") && plan.large_bytes >= LARGE_SETTLE_FROM_BYTES {
        // ext4 frees the blocks of the previous run's deleted store and
        // commits its journal every 5 s; a 1 GiB write racing that lost up
        // to 3x in our runs, whichever system came first. Let it settle.
        std::thread::sleep(LARGE_SETTLE);
    }
    let outcome = match ready {
        Ready::Command {
            program,
            pre_args,
            cwd,
        } => {
            let mut cmd = Command::new(program);
            cmd.args(pre_args).args(&args);
            if let Some(cwd) = cwd {
                cmd.current_dir(cwd);
            }
            harness_outcome(
                process::run_with_timeout(&mut cmd, plan.timeout, &log),
                &log,
            )
        }
        Ready::Http { harness, metanode } => {
            run_http(harness, metanode, &store_dir, &args, &log, plan)
        }
        Ready::Missing(why) => Outcome::Missing(why.clone()),
    };
    // The store dir is kept until the whole bench is over: this disk is
    // mounted with `discard`, and deleting a GiB-sized store issues TRIMs
    // that slowed whichever system ran next by up to 3x (always the first of
    // the next group, i.e. ours). `run` removes all store dirs at the end.
    record(outcome)
}

/// Starts `metanode agent --dev` on a free loopback port, runs ours-harness
/// against it, stops the agent.
fn run_http(
    harness: &Path,
    metanode: &Path,
    store_dir: &Path,
    args: &[OsString],
    log: &Path,
    plan: &Plan,
) -> Outcome {
    let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => return Outcome::Failed(format!("no free loopback port: {e}")),
    };
    let listen = format!("127.0.0.1:{port}");
    let agent_log = log.with_extension("agent.log");
    let mut agent_cmd = Command::new(metanode);
    agent_cmd
        // `--dev` logs every request at debug; a deployed node logs at
        // info, and that is what we measure.
        .args(["agent", "--dev", "--log-level", "info", "--data-dir"])
        .arg(store_dir)
        .args(["--api-listen", &listen]);
    let mut agent = match process::spawn_background(&mut agent_cmd, &agent_log) {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("start agent: {e:#}")),
    };
    let waited = Instant::now();
    let ready = loop {
        if TcpStream::connect(&listen).is_ok() {
            break Ok(());
        }
        match agent.try_wait() {
            Ok(Some(status)) => {
                break Err(format!(
                    "agent exited ({status}) before listening: {}",
                    process::log_tail(&agent_log, LOG_TAIL_LINES)
                ));
            }
            Ok(None) => {}
            Err(e) => break Err(format!("wait for agent: {e}")),
        }
        if waited.elapsed() > AGENT_READY_TIMEOUT {
            break Err(format!(
                "agent did not listen on {listen} within {} s",
                AGENT_READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let outcome = match ready {
        Ok(()) => {
            let mut cmd = Command::new(harness);
            cmd.arg("--http").arg(format!("http://{listen}")).args(args);
            harness_outcome(process::run_with_timeout(&mut cmd, plan.timeout, log), log)
        }
        Err(why) => Outcome::Failed(why),
    };
    if let Err(e) = process::stop_background(agent, AGENT_STOP_GRACE) {
        eprintln!("warning: stopping the agent: {e:#}");
    }
    outcome
}

fn harness_outcome(result: anyhow::Result<ProcOutcome>, log: &Path) -> Outcome {
    match result {
        Err(e) => Outcome::Failed(format!("{e:#}")),
        Ok(ProcOutcome::TimedOut(t)) => Outcome::TimedOut(t.as_secs()),
        Ok(ProcOutcome::Finished(f)) if !f.status.success() => Outcome::Failed(format!(
            "{}: {}",
            f.status,
            process::log_tail(log, LOG_TAIL_LINES)
        )),
        Ok(ProcOutcome::Finished(f)) => {
            let Some(line) = f.stdout.lines().rev().find(|l| !l.trim().is_empty()) else {
                return Outcome::Failed("harness printed no JSON line".into());
            };
            let raw: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => return Outcome::Failed(format!("unparsable JSON line ({e}): {line}")),
            };
            match serde_json::from_value::<HarnessLine>(raw.clone()) {
                Ok(parsed) => Outcome::Ok {
                    line: parsed,
                    raw,
                    wall_seconds: f.elapsed.as_secs_f64(),
                },
                Err(e) => Outcome::Failed(format!("JSON line lacks protocol fields ({e}): {line}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels() {
        assert_eq!(size_label(1024), "1KiB");
        assert_eq!(size_label(256 * 1024), "256KiB");
        assert_eq!(size_label(1 << 30), "1GiB");
        assert_eq!(size_label(32 << 20), "32MiB");
        assert_eq!(size_label(1000), "1000B");
    }

    #[test]
    fn full_plan_names_metrics_like_the_design() {
        let plan = Plan::new(false, None);
        let all: Vec<&'static System> = SYSTEMS.iter().collect();
        let names: Vec<String> = jobs(&plan, &all)
            .iter()
            .flat_map(|j| j.metrics.iter().map(|m| m.name.clone()))
            .collect();
        for expected in [
            "put_1KiB_ops_per_s",
            "get_4KiB_ops_per_s",
            "put_256KiB_p99_us",
            "add_1GiB_MB_per_s",
            "read_1GiB_MB_per_s",
            "put_1KiB_p99_us_during_gc",
            "http_get_1KiB_req_per_s_keepalive",
            "http_get_1KiB_req_per_s_new_conn",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
    }

    #[test]
    fn systems_without_gc_get_no_gc_job() {
        let plan = Plan::new(true, None);
        let flatfs = super::super::systems::by_name("flatfs").expect("flatfs");
        let js = jobs(&plan, &[flatfs]);
        assert!(js.iter().all(|j| j.workload != "put-during-gc"));
        assert!(js.iter().all(|j| j.workload != "get-new-conn"));
        assert_eq!(
            js.iter().filter(|j| j.workload == "put").count(),
            plan.sizes.len()
        );
    }

    #[test]
    fn harness_arguments_follow_the_protocol() {
        let plan = Plan::new(true, None);
        let flatfs = super::super::systems::by_name("flatfs").expect("flatfs");
        let js = jobs(&plan, &[flatfs]);
        let read = js
            .iter()
            .find(|j| j.workload == "read-large")
            .expect("read-large job");
        let args = harness_args(read, &plan, Path::new("/b/s"), Path::new("/b/large.bin"));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--dir",
                "/b/s",
                "--workload",
                "read-large",
                "--inflight",
                "64",
                "--seed",
                "1",
                "--total-bytes",
                "33554432",
                "--input",
                "/b/large.bin"
            ]
        );
    }
}
