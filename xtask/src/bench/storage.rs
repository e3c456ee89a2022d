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

/// The workloads of issue #8 (UnixFS import, CAR export, trustless-gateway CARs).
const IPFS_WORKLOADS: &[&str] = &["unixfs-add", "car-export", "car-http"];

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
    /// read-large, put-during-gc, get-new-conn, unixfs-add, car-export,
    /// car-http.
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
            "unixfs": {
                "input": "the large_bytes file of add-large",
                "import": "Kubo's `ipfs add --cid-version 1` defaults on every system: 256 KiB fixed chunks, raw leaves, CIDv1, balanced layout of 174 links, sha2-256",
                "unixfs_add": "timed from the first byte until the root is returned with every block durable; MB/s of file bytes",
                "car_export": if cold_export() {
                    "untimed import, page cache written back and dropped (sync; drop_caches=1, both systems), then the CARv1 of the whole DAG (dag-scope=all) counted and dropped; MB/s of CAR bytes"
                } else {
                    "untimed import, then the CARv1 of the whole DAG (dag-scope=all) counted and dropped; MB/s of CAR bytes (page cache NOT dropped: not root)"
                },
                "car_http": "car_export through the agent: GET /ipfs/{root}?format=car, body bytes counted",
                "checks": "every run prints root_cid and all must be equal; every CAR must have the same car_bytes; a mismatch fails the runs",
            },
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

/// The UnixFS/CAR jobs of issue #8: which systems run them and the metric
/// each system's run feeds. Every one of them imports the large input with
/// Kubo's parameters, so every run prints the same root CID.
struct IpfsJob {
    /// Job name (`--workloads` filter, logs).
    job: &'static str,
    /// Metric prefix per system; the metric is `{prefix}_{size}_MB_per_s`.
    metrics: &'static [(&'static str, &'static str)],
}

const IPFS_JOBS: &[IpfsJob] = &[
    IpfsJob {
        job: "unixfs-add",
        metrics: &[
            ("ours", "unixfs_add"),
            // `http_` + the library metric: a bar in the library's panel.
            ("ours-http", "http_unixfs_add"),
            ("helia", "unixfs_add"),
        ],
    },
    IpfsJob {
        job: "car-export",
        metrics: &[("ours", "car_export"), ("helia", "car_export")],
    },
    // Helia has no gateway to stream a CAR from, so this row has no peer.
    IpfsJob {
        job: "car-http",
        metrics: &[("ours-http", "car_http")],
    },
];

/// Job names whose runs must all print the same root CID.
fn is_ipfs_job(workload: &str) -> bool {
    IPFS_JOBS.iter().any(|j| j.job == workload)
}

/// Jobs whose runs stream a CAR of that DAG: all must count the same bytes.
fn is_car_job(workload: &str) -> bool {
    matches!(workload, "car-export" | "car-http")
}

/// Whether the harness reads the pre-generated large input file.
fn uses_large_input(workload: &str) -> bool {
    workload.ends_with("-large") || is_ipfs_job(workload)
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
    let l = size_label(plan.large_bytes);
    for ipfs in IPFS_JOBS {
        for &system in systems {
            let Some((_, prefix)) = ipfs.metrics.iter().find(|(name, _)| *name == system.name)
            else {
                continue;
            };
            jobs.push(Job {
                system,
                workload: ipfs.job,
                size_bytes: plan.large_bytes,
                count: 1,
                extra_args: Vec::new(),
                metrics: vec![metric(
                    format!("{prefix}_{l}_MB_per_s"),
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
/// `--new-connections`; car-http is `car-export` by ours-http, whose
/// export is the agent's `?format=car`).
fn protocol_workload(workload: &str) -> &str {
    match workload {
        "get-new-conn" => "get",
        "car-http" => "car-export",
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
        let target = crate::target_dir(&root);
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
    /// The static agent binary, when the HTTP series needs it.
    metanode: Result<Option<PathBuf>, String>,
    iroh: Result<(), String>,
    helia: Result<(), String>,
}

fn build(paths: &Paths, args: &StorageArgs, wanted: &[&'static System]) -> anyhow::Result<Built> {
    let wants = |name: &str| wanted.iter().any(|s| s.name == name);
    if args.no_build {
        return Ok(Built {
            workspace_ok: true,
            metanode: Ok(None),
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
        step("build agent: the static release binary the image ships");
        crate::agent_bin::build_static(&paths.root)
            .map(Some)
            .map_err(|e| format!("building metanode failed: {e:#}"))
    } else {
        Ok(None)
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
            let metanode = match &built.metanode {
                Ok(Some(bin)) => bin.clone(),
                Ok(None) => return Ready::Missing("the agent binary was not built".into()),
                Err(why) => return Ready::Missing(why.clone()),
            };
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
        "unixfs-add",
        "car-export",
        "car-http",
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
    let needs_large = all_jobs.iter().any(|j| uses_large_input(j.workload));
    let large = bench_dir.join("large.bin");
    if needs_large {
        step(&format!(
            "generate {} of input in {}",
            size_label(plan.large_bytes),
            large.display()
        ));
        generate_large(&paths, &large, plan.large_bytes, &logs)?;
    }
    let ceiling = all_jobs
        .iter()
        .any(|j| j.workload == "unixfs-add")
        .then(|| {
            step(&format!(
                "UnixFS import ceiling: durable write of {} and sha2-256 on {}",
                size_label(plan.large_bytes),
                bench_dir.display()
            ));
            flush_page_cache_writeback();
            let c = import_ceiling(bench_dir, &large, plan.large_bytes, plan.limits_seconds);
            eprintln!("{c}");
            c
        });

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
                eprintln!("{prefix}: {}{}", record.summary(), ipfs_suffix(&record));
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

    for line in check_ipfs_runs(&mut records) {
        eprintln!("{line}");
    }

    let system_info: Vec<SystemInfo> = selected
        .iter()
        .map(|s| SystemInfo::from_runs(s, &ready_status(&ready[s.name]), &records))
        .collect();
    let mut machine = machine;
    if let (Some(c), Some(m)) = (&ceiling, machine.as_object_mut()) {
        m.insert("unixfs_import_ceiling".into(), c.clone());
    }
    let mut report = results::Report::build(
        if args.quick { "quick" } else { "full" },
        machine,
        plan.json(),
        &system_info,
        &records,
    );
    if let Some(c) = &ceiling {
        add_ceiling_row(
            &mut report,
            &format!("unixfs_add_{}_MB_per_s", size_label(plan.large_bytes)),
            c,
        );
    }
    println!("{}", report.table());
    let results_dir = paths.root.join("perf/results");
    std::fs::create_dir_all(&results_dir)?;
    // A run of only the IPFS workloads (issue #8's rows) gets its own file, so it never
    // replaces a full run's put/get rows with nothing.
    let ipfs_only = !args.workloads.is_empty()
        && args
            .workloads
            .iter()
            .all(|w| IPFS_WORKLOADS.contains(&w.as_str()));
    let stem = match (args.quick, ipfs_only) {
        (true, _) => "storage.quick",
        (false, true) => "storage_ipfs",
        (false, false) => "storage",
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

/// `root_cid` / `car_bytes` of a finished run's JSON line.
fn line_field<'a>(record: &'a RunRecord, field: &str) -> Option<&'a Value> {
    match &record.outcome {
        Outcome::Ok { raw, .. } => raw.get(field).filter(|v| !v.is_null()),
        _ => None,
    }
}

/// What the progress log adds for a UnixFS/CAR run: its root and CAR size.
fn ipfs_suffix(record: &RunRecord) -> String {
    let mut out = String::new();
    if let Some(root) = line_field(record, "root_cid") {
        out += &format!(", root_cid {}", root.as_str().unwrap_or("(not a string)"));
    }
    if let Some(bytes) = line_field(record, "car_bytes") {
        out += &format!(", car_bytes {bytes}");
    }
    out
}

/// Which runs a cross-check covers, by job name.
type JobFilter = fn(&str) -> bool;

/// Issue #8's cross-checks: every UnixFS/CAR run imported the same input
/// with Kubo's parameters, so all must print one root CID, and every CAR
/// of that DAG must be the same size. A run that does not say, or a set
/// that disagrees, turns the runs involved into failures (their metrics
/// become errors, the bench exits non-zero) instead of numbers nobody
/// can compare. Returns the lines to log.
fn check_ipfs_runs(records: &mut [(Vec<MetricSpec>, RunRecord)]) -> Vec<String> {
    let mut log = Vec::new();
    let checks: [(&str, JobFilter); 2] = [("root_cid", is_ipfs_job), ("car_bytes", is_car_job)];
    for (field, applies) in checks {
        let runs: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| applies(r.workload) && matches!(r.outcome, Outcome::Ok { .. }))
            .map(|(i, _)| i)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let seen: Vec<(usize, Option<String>)> = runs
            .iter()
            .map(|&i| {
                let value = line_field(&records[i].1, field).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                (i, value)
            })
            .collect();
        let listing = seen
            .iter()
            .map(|(i, v)| {
                let r = &records[*i].1;
                format!(
                    "{} {}: {}",
                    r.system,
                    r.workload,
                    v.as_deref().unwrap_or("(none printed)")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let first = &seen[0].1;
        let agree = first.is_some() && seen.iter().all(|(_, v)| v == first);
        if agree {
            log.push(format!(
                "{field} agrees across {} runs: {}",
                seen.len(),
                first.as_deref().unwrap_or_default()
            ));
            continue;
        }
        let why = format!(
            "{field} check failed: the runs of the same input disagree or are silent ({listing})"
        );
        log.push(why.clone());
        for (i, _) in seen {
            let (metrics, record) = &mut records[i];
            *record = RunRecord::new(
                record.system,
                record.workload,
                record.size_bytes,
                record.count,
                Outcome::Failed(why.clone()),
                metrics,
            );
        }
    }
    log
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

/// Write size of the ceiling's durable writes: one group commit of the
/// store (`GROUP_COMMIT_BATCH_BYTES_MAX_DEFAULT`).
const CEILING_WRITE_BYTES: usize = 8 << 20;
/// Block size hashed by the ceiling's sha2-256 threads: Kubo's chunk.
const CEILING_HASH_BLOCK_BYTES: usize = 256 << 10;
/// O_DIRECT alignment of the ceiling's direct writes.
const CEILING_DIRECT_ALIGN_BYTES: usize = 4096;
/// The name the ceiling goes by in the rows and the chart.
const CEILING_PEER: &str = "machine_ceiling";

/// What a durable UnixFS import of `size_bytes` can reach on this machine
/// at best, measured on the bench disk just before the import runs: the
/// best durable sequential write of the same size (write + fdatasync,
/// through the page cache and with O_DIRECT) and sha2-256 on every core.
/// An import must do both to every byte and shares the cores between
/// them, so the smaller of the two is an upper bound, not a target.
fn import_ceiling(bench_dir: &Path, input: &Path, size_bytes: u64, seconds: f64) -> Value {
    let path = bench_dir.join("ceiling-write.bin");
    let mut pattern = vec![0u8; CEILING_WRITE_BYTES];
    // The input's own bytes: a disk that compresses or dedups zeros
    // would flatter the number.
    if let Err(e) = std::fs::File::open(input).and_then(|mut f| {
        use std::io::Read;
        let mut filled = 0;
        while filled < pattern.len() {
            match f.read(&mut pattern[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(())
    }) {
        eprintln!("warning: ceiling reads zeros, not {}: {e}", input.display());
    }
    let mut writes = serde_json::Map::new();
    let methods: [(&str, bool, bool); 2] = [
        // (name, O_DIRECT, fdatasync after every write)
        ("buffered_fdatasync_at_end", false, false),
        ("direct_fdatasync_per_8MiB", true, true),
    ];
    let mut best: Option<f64> = None;
    for (name, direct, sync_each) in methods {
        flush_page_cache_writeback();
        let measured = durable_write_mb_per_s(&path, &pattern, size_bytes, direct, sync_each);
        remove_quietly(&path);
        match measured {
            Ok(v) => {
                best = Some(best.map_or(v, |b: f64| b.max(v)));
                writes.insert(name.into(), serde_json::json!(v));
            }
            Err(e) => {
                writes.insert(name.into(), serde_json::json!(format!("failed: {e:#}")));
            }
        }
    }
    let window = Duration::from_secs_f64(seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sha_one = sha256_mb_per_s(1, window);
    let sha_all = sha256_mb_per_s(cores, window);
    let ceiling = best.map(|w| w.min(sha_all));
    serde_json::json!({
        "size_bytes": size_bytes,
        "durable_write_MB_per_s": writes,
        "sha2_256_MB_per_s_one_core": sha_one,
        "sha2_256_MB_per_s_all_cores": sha_all,
        "cores": cores,
        "ceiling_MB_per_s": ceiling,
        "method": format!(
            "durable write: the same size on the bench dir in {} MiB writes of the input's first bytes, \
             fdatasync at the end (page cache) or after every write (O_DIRECT, like one group commit); \
             sha2-256: {} KiB blocks on every core at once for {seconds} s (the importer's sha2 crate); \
             ceiling = min(best durable write, sha2-256 on all cores), an upper bound since an import does both on the same cores",
            CEILING_WRITE_BYTES >> 20,
            CEILING_HASH_BLOCK_BYTES >> 10
        ),
    })
}

/// Write `size_bytes` of `pattern` (repeated) to a new file at `path` and
/// make it durable; MB/s from open to the last fdatasync.
fn durable_write_mb_per_s(
    path: &Path,
    pattern: &[u8],
    size_bytes: u64,
    direct: bool,
    sync_each: bool,
) -> anyhow::Result<f64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    // O_DIRECT wants an aligned buffer: copy the pattern into one.
    let mut backing = vec![0u8; pattern.len() + CEILING_DIRECT_ALIGN_BYTES];
    let skew = backing.as_ptr() as usize % CEILING_DIRECT_ALIGN_BYTES;
    let at = (CEILING_DIRECT_ALIGN_BYTES - skew) % CEILING_DIRECT_ALIGN_BYTES;
    let buf = &mut backing[at..at + pattern.len()];
    buf.copy_from_slice(pattern);
    let started = Instant::now();
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(true).write(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = options
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut written = 0u64;
    while written < size_bytes {
        let n = (size_bytes - written).min(buf.len() as u64) as usize;
        file.write_all_at(&buf[..n], written)
            .with_context(|| format!("write {} at {written}", path.display()))?;
        written += n as u64;
        if sync_each {
            file.sync_data().context("fdatasync")?;
        }
    }
    if !sync_each {
        file.sync_data().context("fdatasync")?;
    }
    Ok(size_bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// sha2-256 MB/s of `threads` threads hashing 256 KiB blocks at once.
fn sha256_mb_per_s(threads: usize, window: Duration) -> f64 {
    use metanode_core::cid::HashKind;
    let started = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let block: Vec<u8> = (0..CEILING_HASH_BLOCK_BYTES)
                        .map(|i| (i * 31 + t) as u8)
                        .collect();
                    let mut bytes = 0u64;
                    let mut sink = 0u8;
                    while started.elapsed() < window {
                        sink ^= HashKind::Sha2_256.digest(&block)[0];
                        bytes += block.len() as u64;
                    }
                    std::hint::black_box(sink);
                    bytes
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    total as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// The ceiling as one more peer of `metric` (ours vs what the machine
/// allows), right after that metric's rows, and as a bar in its panel.
fn add_ceiling_row(report: &mut results::Report, metric: &str, ceiling: &Value) {
    let Some(value) = ceiling["ceiling_MB_per_s"].as_f64() else {
        return;
    };
    let Some(last) = report.rows.iter().rposition(|r| r.metric == metric) else {
        return;
    };
    let row = results::Row {
        peer: Some(CEILING_PEER),
        peer_value: Some(value),
        peer_note: Some(
            "min(durable sequential write, sha2-256 on all cores) of the same size, same disk, same run"
                .into(),
        ),
        ..report.rows[last].clone()
    };
    report.rows.insert(last + 1, row);
    if let Some(panel) = report.panels.iter_mut().find(|p| p.metric == metric) {
        panel.bars.push((CEILING_PEER, Some(value)));
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
    if uses_large_input(job.workload) {
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
    if protocol_workload(job.workload) == "car-export" && cold_export() {
        a.push("--cold-export".into());
    }
    a.extend(job.extra_args.iter().map(OsString::from));
    a.extend(job.system.extra_args.iter().map(OsString::from));
    a
}

/// Whether CAR exports start from a cold page cache (both harnesses drop it after the untimed
/// import; that needs root). Ours imports with O_DIRECT and leaves nothing cached, Helia's
/// buffered import leaves its blocks hot: only a dropped cache compares the two exports alike.
fn cold_export() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
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
    if uses_large_input(job.workload) && plan.large_bytes >= LARGE_SETTLE_FROM_BYTES {
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
    use results::Better;

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
            "unixfs_add_1GiB_MB_per_s",
            "http_unixfs_add_1GiB_MB_per_s",
            "car_export_1GiB_MB_per_s",
            "car_http_1GiB_MB_per_s",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
    }

    #[test]
    fn ipfs_jobs_run_on_the_systems_that_can() {
        for ipfs in IPFS_JOBS {
            for (name, _) in ipfs.metrics {
                assert!(
                    super::super::systems::by_name(name).is_some(),
                    "{name} is not a system"
                );
            }
        }
        let plan = Plan::new(true, None);
        let all: Vec<&'static System> = SYSTEMS.iter().collect();
        let ipfs: Vec<(String, &str, String)> = jobs(&plan, &all)
            .into_iter()
            .filter(|j| is_ipfs_job(j.workload))
            .map(|j| {
                assert_eq!(j.size_bytes, 32 << 20);
                assert_eq!(j.metrics.len(), 1);
                (
                    j.workload.to_string(),
                    j.system.name,
                    j.metrics[0].name.clone(),
                )
            })
            .collect();
        let expected = [
            ("unixfs-add", "ours", "unixfs_add_32MiB_MB_per_s"),
            ("unixfs-add", "ours-http", "http_unixfs_add_32MiB_MB_per_s"),
            ("unixfs-add", "helia", "unixfs_add_32MiB_MB_per_s"),
            ("car-export", "ours", "car_export_32MiB_MB_per_s"),
            ("car-export", "helia", "car_export_32MiB_MB_per_s"),
            ("car-http", "ours-http", "car_http_32MiB_MB_per_s"),
        ];
        let expected: Vec<(String, &str, String)> = expected
            .iter()
            .map(|(w, s, m)| (w.to_string(), *s, m.to_string()))
            .collect();
        assert_eq!(ipfs, expected);
    }

    /// The harness arguments of `system`'s quick `workload` job, store dir
    /// `/b/s`.
    fn quick_job_args(system: &str, workload: &str, large: &str) -> Vec<String> {
        let plan = Plan::new(true, None);
        let system = super::super::systems::by_name(system).expect("known system");
        let js = jobs(&plan, &[system]);
        let job = js
            .iter()
            .find(|j| j.workload == workload)
            .expect("job of that workload");
        harness_args(job, &plan, Path::new("/b/s"), Path::new(large))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn car_http_runs_the_car_export_protocol_on_the_large_input() {
        let args = quick_job_args("ours-http", "car-http", "/b/l.bin");
        let mut expected = vec![
            "--dir",
            "/b/s",
            "--workload",
            "car-export",
            "--inflight",
            "64",
            "--seed",
            "1",
            "--total-bytes",
            "33554432",
            "--input",
            "/b/l.bin",
        ];
        // Exports start from a dropped page cache when the bench may drop it.
        if cold_export() {
            expected.push("--cold-export");
        }
        assert_eq!(args, expected);
        assert!(uses_large_input("unixfs-add"));
        assert!(!uses_large_input("put"));
    }

    const ROOT: &str = "bafybeid43oh6iy2ftswwzr4yqktxulyspijullubkcwas4x66z4tm4i72u";

    fn ipfs_record(
        system: &'static str,
        workload: &'static str,
        line: Value,
    ) -> (Vec<MetricSpec>, RunRecord) {
        let metrics = vec![metric(
            format!("{workload}_{system}"),
            "MB/s",
            Better::Higher,
            results::Pick::MbPerS,
        )];
        let outcome = Outcome::Ok {
            line: serde_json::from_value(line.clone()).expect("protocol line"),
            raw: line,
            wall_seconds: 1.0,
        };
        let record = RunRecord::new(system, workload, 32 << 20, 1, outcome, &metrics);
        (metrics, record)
    }

    fn line(mb_per_s: f64, root: Option<&str>, car_bytes: Option<u64>) -> Value {
        serde_json::json!({
            "ops_per_s": 1.0, "mb_per_s": mb_per_s, "durability": "fsync",
            "root_cid": root, "car_bytes": car_bytes,
        })
    }

    fn failed(record: &RunRecord) -> Option<&str> {
        match &record.outcome {
            Outcome::Failed(why) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn equal_roots_and_car_sizes_pass() {
        let mut records = vec![
            ipfs_record("ours", "unixfs-add", line(900.0, Some(ROOT), None)),
            ipfs_record("helia", "unixfs-add", line(90.0, Some(ROOT), None)),
            ipfs_record(
                "ours",
                "car-export",
                line(2000.0, Some(ROOT), Some(33_571_913)),
            ),
            ipfs_record(
                "ours-http",
                "car-http",
                line(1500.0, Some(ROOT), Some(33_571_913)),
            ),
            ipfs_record("ours", "put", line(5.0, None, None)),
        ];
        let log = check_ipfs_runs(&mut records);
        assert_eq!(
            log,
            [
                format!("root_cid agrees across 4 runs: {ROOT}"),
                "car_bytes agrees across 2 runs: 33571913".to_string(),
            ]
        );
        assert!(records.iter().all(|(_, r)| failed(r).is_none()));
        assert_eq!(records[1].1.values[0].1, Ok(90.0));
        assert_eq!(
            ipfs_suffix(&records[2].1),
            format!(", root_cid {ROOT}, car_bytes 33571913")
        );
    }

    #[test]
    fn a_different_or_missing_root_fails_every_run_of_the_input() {
        let other = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let mut records = vec![
            ipfs_record("ours", "unixfs-add", line(900.0, Some(ROOT), None)),
            ipfs_record("helia", "unixfs-add", line(90.0, Some(other), None)),
            ipfs_record("ours", "put", line(5.0, None, None)),
        ];
        let log = check_ipfs_runs(&mut records);
        let why = format!(
            "root_cid check failed: the runs of the same input disagree or are silent \
             (ours unixfs-add: {ROOT}, helia unixfs-add: {other})"
        );
        assert_eq!(log, std::slice::from_ref(&why));
        assert_eq!(failed(&records[0].1), Some(why.as_str()));
        assert_eq!(failed(&records[1].1), Some(why.as_str()));
        assert!(failed(&records[2].1).is_none());
        // The metric is an error now, not a number.
        assert!(records[1].1.values[0].1.is_err());

        let mut silent = vec![
            ipfs_record("ours", "unixfs-add", line(900.0, Some(ROOT), None)),
            ipfs_record("helia", "unixfs-add", line(90.0, None, None)),
        ];
        check_ipfs_runs(&mut silent);
        assert!(
            failed(&silent[1].1).is_some_and(|w| w.contains("helia unixfs-add: (none printed)"))
        );
    }

    #[test]
    fn car_sizes_that_differ_fail_the_car_runs_only() {
        let mut records = vec![
            ipfs_record("ours", "unixfs-add", line(900.0, Some(ROOT), None)),
            ipfs_record("ours", "car-export", line(2000.0, Some(ROOT), Some(100))),
            ipfs_record("helia", "car-export", line(200.0, Some(ROOT), Some(101))),
        ];
        let log = check_ipfs_runs(&mut records);
        assert_eq!(log.len(), 2);
        assert!(log[0].starts_with("root_cid agrees across 3 runs"));
        assert!(failed(&records[0].1).is_none());
        assert!(failed(&records[1].1).is_some_and(|w| w.contains("helia car-export: 101")));
        assert!(failed(&records[2].1).is_some());
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
        let args = quick_job_args("flatfs", "read-large", "/b/large.bin");
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

    /// The ceiling becomes one more peer row of the UnixFS add metric,
    /// right after its real peers, and a bar in its panel.
    #[test]
    fn ceiling_row_follows_the_unixfs_rows() {
        let spec = |name: &str| {
            vec![metric(
                name.to_string(),
                "MB/s",
                Better::Higher,
                results::Pick::MbPerS,
            )]
        };
        let ok = |system: &'static str, mb: f64, name: &str| {
            let raw = line(mb, Some(ROOT), None);
            let outcome = Outcome::Ok {
                line: serde_json::from_value(raw.clone()).expect("protocol line"),
                raw,
                wall_seconds: 1.0,
            };
            let metrics = spec(name);
            let record = RunRecord::new(system, "unixfs-add", 1 << 30, 1, outcome, &metrics);
            (metrics, record)
        };
        let records = vec![
            ok("ours", 900.0, "unixfs_add_1GiB_MB_per_s"),
            ok("helia", 175.0, "unixfs_add_1GiB_MB_per_s"),
            ok("ours", 1000.0, "car_export_1GiB_MB_per_s"),
        ];
        let systems: Vec<SystemInfo> = ["ours", "helia"]
            .iter()
            .map(|n| {
                let system = super::super::systems::by_name(n).expect("system");
                SystemInfo::from_runs(system, &Ok(()), &records)
            })
            .collect();
        let mut report = results::Report::build(
            "full",
            serde_json::json!({}),
            serde_json::json!({}),
            &systems,
            &records,
        );
        let ceiling = serde_json::json!({"ceiling_MB_per_s": 1200.0});
        add_ceiling_row(&mut report, "unixfs_add_1GiB_MB_per_s", &ceiling);
        type RowView<'a> = (&'a str, Option<&'a str>, Option<f64>, Option<f64>);
        let rows: Vec<RowView<'_>> = report
            .rows
            .iter()
            .map(|r| (r.metric.as_str(), r.peer, r.ours, r.peer_value))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "unixfs_add_1GiB_MB_per_s",
                    Some("helia"),
                    Some(900.0),
                    Some(175.0)
                ),
                (
                    "unixfs_add_1GiB_MB_per_s",
                    Some(CEILING_PEER),
                    Some(900.0),
                    Some(1200.0)
                ),
                ("car_export_1GiB_MB_per_s", None, Some(1000.0), None),
            ]
        );
        let panel = report
            .panels
            .iter()
            .find(|p| p.metric == "unixfs_add_1GiB_MB_per_s")
            .expect("panel");
        assert_eq!(panel.bars.last(), Some(&(CEILING_PEER, Some(1200.0))));
        // A failed ceiling measurement adds nothing.
        let before = report.rows.len();
        add_ceiling_row(
            &mut report,
            "unixfs_add_1GiB_MB_per_s",
            &serde_json::json!({"ceiling_MB_per_s": null}),
        );
        assert_eq!(report.rows.len(), before);
    }
}
