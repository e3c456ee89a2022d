//! Real cages, as root: the launcher called directly (not through the CLI).
//!
//! `run` refuses to fork from a multi-threaded process, and libtest runs every test on a thread
//! of its own, so this file has its own minimal harness (harness = false in Cargo.toml): the
//! cases run one after another on the main thread, each inside catch_unwind, and the summary
//! line is libtest's. Not root → every case is skipped with the reason printed.
//!
//! Workloads: the static `docklock-probe` (agent/docklock-probe, built once with a nested cargo
//! into target/docklock-probe so it does not wait on the outer cargo lock) for escapes, limits
//! and determinism; the host's own dynamic /bin/cat, /bin/cp and /bin/sleep through the
//! plain-executable mode for identity checks, which also exercises the ELF dependency copy.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use metanode_confine::DenialCollection;
use metanode_core::keys::SigningKey;
use metanode_docklock::cage::{
    CageExit, OutputViolation, OutputViolationKind, RunError, RunOptions, RunOutcome, run,
};
use metanode_docklock::limits::CAGE_HOST_ID_BASE;
use metanode_docklock::replay::{Disagreement, replay};
use metanode_docklock::spec::{CageMount, CagePath, MountKind};
use metanode_docklock::spec::{CageSpec, DeclaredInput, IdMapping, Namespaces};
use metanode_witness::ViolationKind;
use serde_json::{Value, json};

#[path = "support/probe.rs"]
mod probe;
use probe::{probe_binary, workspace_root};

/// A bundle directory: rootfs with the probe at /bin/docklock-probe and a runc-style config.
struct Bundle {
    dir: tempfile::TempDir,
}

/// runc's `runc spec` defaults with terminal off and without the cgroup mount (the two edits
/// DockLock needs), plus limits small enough for the bombs.
fn runc_config(args: &[&str]) -> Value {
    let mut argv = vec!["/bin/docklock-probe".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": argv,
            "env": ["PATH=/bin", "LANG=C"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "probe-cage",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "size=16m"]}
        ],
        "linux": {
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 64 * 1024 * 1024},
                "pids": {"limit": 32}
            },
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/sys"]
        }
    })
}

impl Bundle {
    fn probe(args: &[&str]) -> Bundle {
        Bundle::with_config(runc_config(args))
    }

    fn with_config(config: Value) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("docklock-test-bundle-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "proc", "dev", "tmp", "sys", "out"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("create rootfs dir");
        }
        std::fs::copy(probe_binary(), rootfs.join("bin/docklock-probe")).expect("copy probe");
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        Bundle { dir }
    }

    fn spec(&self) -> CageSpec {
        CageSpec::load(self.dir.path()).expect("bundle loads")
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}

static CAGE_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn options(scratch: &Path) -> RunOptions {
    let n = CAGE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut opts = RunOptions::new(format!("dl-test-{}-{n}", std::process::id()));
    opts.timeout = Some(Duration::from_secs(60));
    opts.stdout_file = Some(scratch.join(format!("stdout-{n}")));
    opts.stderr_file = Some(scratch.join(format!("stderr-{n}")));
    opts
}

/// Runs `spec` and returns (outcome, stdout, stderr).
fn run_captured(spec: &CageSpec, opts: &RunOptions) -> (RunOutcome, String, String) {
    let outcome = run(spec, opts).unwrap_or_else(|e| panic!("run failed: {e}"));
    let read = |p: &Option<PathBuf>| {
        std::fs::read_to_string(p.as_ref().expect("captured")).expect("read capture file")
    };
    (outcome, read(&opts.stdout_file), read(&opts.stderr_file))
}

/// The probe's one JSON line.
fn probe_line(stdout: &str, stderr: &str) -> Value {
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no probe line in stdout {stdout:?} (stderr {stderr:?})"));
    serde_json::from_str(line).expect("probe line is JSON")
}

fn run_probe(
    bundle: &Bundle,
    scratch: &Path,
    tweak: impl FnOnce(&mut RunOptions),
) -> (Value, RunOutcome) {
    let mut opts = options(scratch);
    tweak(&mut opts);
    let (outcome, stdout, stderr) = run_captured(&bundle.spec(), &opts);
    (probe_line(&stdout, &stderr), outcome)
}

fn violation_names(outcome: &RunOutcome) -> Vec<&'static str> {
    outcome.violations.iter().map(|v| v.syscall_name).collect()
}

// ------------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------------

/// Identity of a plain-executable cage seen from inside, through the host's dynamic /bin/cat.
fn executable_cage_identity(scratch: &Path) {
    let args: Vec<String> = [
        "/proc/self/status",
        "/proc/sys/kernel/hostname",
        "/proc/self/mounts",
        "/proc/timer_list",
        "/in/greeting",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let input = scratch.join("greeting.txt");
    std::fs::write(&input, "hello from the host\n").expect("write input");
    let spec = CageSpec::from_executable(
        Path::new("/bin/cat"),
        &args,
        &["LANG=C".to_owned()],
        &[DeclaredInput {
            name: "greeting".to_owned(),
            source: input,
        }],
    )
    .expect("cat becomes a cage");
    let (outcome, stdout, stderr) = run_captured(&spec, &options(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
    let status: BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    assert_eq!(
        status.get("Pid"),
        Some(&"1"),
        "the workload is PID 1: {stdout}"
    );
    assert!(
        status["Uid"].starts_with("0\t"),
        "uid 0 inside: {}",
        status["Uid"]
    );
    assert_eq!(status["CapEff"], "0000000000000000");
    assert_eq!(status["CapPrm"], "0000000000000000");
    assert_eq!(status["CapBnd"], "0000000000000000");
    assert_eq!(status["NoNewPrivs"], "1");
    assert_eq!(status["Seccomp"], "2");
    assert!(
        stdout.lines().any(|l| l == "docklock"),
        "hostname: {stdout}"
    );
    let mounts: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.len() == 6)
        .collect();
    let mount_at = |path: &str| {
        mounts
            .iter()
            .rev()
            .find(|f| f[1] == path)
            .unwrap_or_else(|| panic!("no mount at {path} in {stdout}"))
    };
    assert!(
        mount_at("/")[3].split(',').any(|o| o == "ro"),
        "root is read-only"
    );
    assert_eq!(mount_at("/tmp")[2], "tmpfs");
    assert!(mount_at("/proc/sys")[3].split(',').any(|o| o == "ro"));
    // /proc/kcore does not exist on this kernel (no CONFIG_PROC_KCORE); /proc/timer_list is
    // another of runc's masked files that does.
    assert_eq!(
        mount_at("/proc/timer_list")[2],
        "devtmpfs",
        "masked by /dev/null"
    );
    assert!(
        !stdout.contains("Timer List Version"),
        "timer_list content leaked"
    );
    assert_eq!(mount_at("/proc/acpi")[2], "tmpfs", "masked directory");
    assert!(
        stdout.contains("hello from the host"),
        "declared input visible at /in"
    );
    assert!(outcome.spawn_ns > 0 && outcome.spawn_ns <= outcome.wall_ns);
}

/// runc's default /dev layout survives: /dev/pts, /dev/shm and /dev/mqueue are inside the
/// spec's /dev tmpfs, next to DockLock's nodes.
fn runc_bundle_dev_layout(scratch: &Path) {
    let cat = CageSpec::from_executable(Path::new("/bin/cat"), &[], &[], &[]).expect("cat");
    let mut config = runc_config(&[]);
    config["process"]["args"] = json!(["/bin/cat", "/proc/self/mounts"]);
    let bundle = Bundle::with_config(config);
    // The rootfs must live inside the bundle: copy the assembled one in.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(cat.rootfs.join("."))
        .arg(bundle.rootfs())
        .status()
        .expect("run cp");
    assert!(copied.success(), "copy the cat rootfs into the bundle");
    let (outcome, stdout, stderr) = run_captured(&bundle.spec(), &options(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
    for (path, fstype) in [
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/dev/null", "devtmpfs"),
        ("/sys", "sysfs"),
    ] {
        assert!(
            stdout.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.get(1) == Some(&path) && f.get(2) == Some(&fstype)
            }),
            "{path} ({fstype}) missing from {stdout}"
        );
    }
    // One /dev, mounted before what lives inside it: a second tmpfs mounted over /dev later
    // would still be listed but would hide /dev/pts, /dev/shm and /dev/mqueue.
    let position = |path: &str| {
        stdout
            .lines()
            .position(|l| l.split(' ').nth(1) == Some(path))
            .unwrap_or_else(|| panic!("{path} missing"))
    };
    let dev_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("/dev"))
        .collect();
    assert_eq!(dev_lines.len(), 1, "{dev_lines:?}");
    for inner in ["/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/null"] {
        assert!(
            position("/dev") < position(inner),
            "{inner} mounted before /dev"
        );
    }
    let dev_line = dev_lines[0];
    assert!(
        dev_line.contains("size=65536k"),
        "the spec's /dev options: {dev_line}"
    );
}

/// Every escape probe reports "blocked"; refused syscalls are in RunOutcome.violations.
/// Every probe here is stopped before Landlock is asked: the kernel checks DAC, read-only mounts
/// and namespaces first, and Landlock only logs what it denies itself. So none of them leaves a
/// Landlock violation (egress does, see `egress_blocked`), and the audit reader proves it read
/// everything (`Complete`):
/// - read-host-file: the host's files are not in the cage's mount namespace (ENOENT);
/// - write-outside-rootfs: the rootfs is mounted read-only (EROFS) or the path does not exist;
/// - write-proc-sys: /proc/sys refuses writes by anyone but host root (sysctl permission,
///   EACCES), /sys is read-only (EROFS), /proc/sysrq-trigger is masked;
/// - overwrite-self-exe: the binary belongs to a host uid the user namespace does not map, so cage
///   root has no DAC override on it (EACCES);
/// - signal-host (`signal_host_blocked`): the host pid does not exist in the pid namespace.
fn escape_probes_blocked(scratch: &Path) {
    for (probe, refused) in [
        ("read-host-file", None),
        ("write-outside-rootfs", None),
        ("write-proc-sys", None),
        ("mount", Some("mount")),
        ("unshare-setns", Some("unshare")),
        ("ptrace-host", Some("ptrace")),
        ("raw-socket", None),
        ("io-uring", Some("io_uring_setup")),
        ("bpf", Some("bpf")),
        ("perf-event-open", Some("perf_event_open")),
        ("keyctl", Some("keyctl")),
        ("tiocsti", Some("ioctl")),
        ("open-by-handle-at", Some("open_by_handle_at")),
        ("x32", Some("x32_abi")),
        ("leaked-fd", None),
        ("overwrite-self-exe", None),
        ("disk-fill", None),
    ] {
        let bundle = Bundle::probe(&[probe]);
        let (line, outcome) = run_probe(&bundle, scratch, |_| {});
        assert_eq!(
            line["outcome"], "blocked",
            "probe {probe} was not blocked: {line}"
        );
        assert_eq!(outcome.exit, CageExit::Exited(0), "probe {probe}: {line}");
        assert_eq!(
            outcome.landlock_audit,
            DenialCollection::Complete,
            "probe {probe}"
        );
        assert!(
            outcome.landlock_denials.is_empty(),
            "probe {probe}: unexpected landlock denials {:?}",
            outcome.landlock_denials
        );
        if let Some(name) = refused {
            assert!(
                violation_names(&outcome).contains(&name),
                "probe {probe}: expected a recorded refusal of {name}, got {:?}",
                violation_names(&outcome)
            );
        }
    }
}

/// Host process untouched: a chroot-escape attempt against a marker path on the host.
fn signal_host_blocked(scratch: &Path) {
    let host_pid = std::process::id().to_string();
    let bundle = Bundle::probe(&["signal-host", "--host-pid", &host_pid]);
    let (line, outcome) = run_probe(&bundle, scratch, |_| {});
    assert_eq!(line["outcome"], "blocked", "{line}");
    // The host pid does not exist in the cage's pid namespace (ESRCH): Landlock's signal scope
    // is never reached, so nothing is logged.
    assert_eq!(outcome.landlock_audit, DenialCollection::Complete);
    assert!(
        outcome.landlock_denials.is_empty(),
        "{:?}",
        outcome.landlock_denials
    );
}

fn egress_blocked(scratch: &Path) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let addr = listener.local_addr().expect("addr").to_string();
    let bundle = Bundle::probe(&["egress", "--addr", &addr]);
    let opts = options(scratch);
    let (outcome, stdout, stderr) = run_captured(&bundle.spec(), &opts);
    let line = probe_line(&stdout, &stderr);
    assert_eq!(line["outcome"], "blocked", "{line}");
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(
        listener.accept().is_err(),
        "a connection reached the host listener"
    );
    // Landlock refused the connect (EACCES) and the audit log says so, by address.
    let access = format!("net.connect_tcp {addr}");
    assert_eq!(outcome.landlock_audit, DenialCollection::Complete);
    assert_eq!(
        outcome
            .landlock_denials
            .iter()
            .map(|d| d.access())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&access)
    );
    // The signed record lists it after the (absent) seccomp refusals, and `verify` shows it.
    let key = SigningKey::from_seed(&[7; 32]);
    let signed = metanode_docklock::witness::sign_run(
        &bundle.spec(),
        &opts,
        &outcome,
        "egress-test",
        &[],
        &key,
    )
    .expect("sign");
    let landlock: Vec<&ViolationKind> = signed
        .record
        .decision
        .violations
        .iter()
        .map(|v| &v.kind)
        .filter(|k| matches!(k, ViolationKind::Landlock { .. }))
        .collect();
    assert_eq!(
        landlock,
        [&ViolationKind::Landlock {
            access: access.clone()
        }]
    );
    let receipt = scratch.join("egress.dlr");
    signed.write_file(&receipt).expect("write receipt");
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_metanode-docklock"))
        .arg("verify")
        .arg(&receipt)
        .output()
        .expect("run metanode-docklock verify");
    let shown = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "verify failed: {verified:?}");
    assert!(
        shown.contains(&format!("landlock refused: {access}")),
        "verify output: {shown}"
    );
}

fn chroot_escape_blocked(scratch: &Path) {
    let marker = scratch.join("chroot-marker");
    std::fs::write(&marker, "host").expect("marker");
    let marker_arg = marker.to_str().expect("utf-8").to_owned();
    let bundle = Bundle::probe(&["chroot-escape", "--host-path", &marker_arg]);
    let (line, _) = run_probe(&bundle, scratch, |_| {});
    assert_eq!(line["outcome"], "blocked", "{line}");
    assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "host");
}

fn outputs_reach_the_host(scratch: &Path) {
    let out = scratch.join("out-write");
    let bundle = Bundle::probe(&["write-output", "--count", "3"]);
    let (line, outcome) = run_probe(&bundle, scratch, |o| o.out_dir = Some(out.clone()));
    assert_eq!(line["outcome"], "ok", "{line}");
    assert_eq!(outcome.exit, CageExit::Exited(0));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["out-00000.txt", "out-00001.txt", "out-00002.txt"]);
    assert_eq!(
        std::fs::read_to_string(out.join("out-00001.txt")).expect("read output"),
        "docklock-probe write-output file 1 of 3\n".repeat(2)
    );
}

fn memory_bomb_stays_in_the_cgroup(scratch: &Path) {
    let bundle = Bundle::probe(&["memory-bomb", "--max-mib", "1024"]);
    let mut opts = options(scratch);
    opts.stdout_file = Some(scratch.join("bomb-stdout"));
    let outcome = run(&bundle.spec(), &opts).expect("the run itself succeeds");
    assert!(outcome.usage.oom_kills >= 1, "usage: {:?}", outcome.usage);
    assert!(
        outcome.usage.memory_peak_bytes <= 64 * 1024 * 1024 + 4096,
        "peak {} above the limit",
        outcome.usage.memory_peak_bytes
    );
}

fn fork_bomb_hits_the_pids_limit(scratch: &Path) {
    let bundle = Bundle::probe(&["fork-bomb"]);
    let (line, outcome) = run_probe(&bundle, scratch, |_| {});
    assert_eq!(line["outcome"], "blocked", "{line}");
    assert!(
        outcome.usage.pids_max_hits >= 1,
        "usage: {:?}",
        outcome.usage
    );
    assert!(outcome.usage.pids_peak <= 32, "usage: {:?}", outcome.usage);
}

fn randomness_follows_the_seed(scratch: &Path) {
    let bundle = Bundle::probe(&["random"]);
    let detail = |seed: u8| {
        let (line, _) = run_probe(&bundle, scratch, |o| o.rng_seed = [seed; 32]);
        let detail = line["detail"].as_str().expect("detail").to_owned();
        let urandom = detail
            .split("/dev/urandom=")
            .nth(1)
            .expect("urandom part")
            .to_owned();
        assert!(
            urandom.len() >= 32 && urandom.bytes().all(|b| b.is_ascii_hexdigit()),
            "urandom read: {detail}"
        );
        urandom
    };
    let a1 = detail(1);
    let a2 = detail(1);
    let b = detail(2);
    assert_eq!(a1, a2, "same seed, same bytes");
    assert_ne!(a1, b, "different seed, different bytes");
}

fn monotonic_clock_starts_at_the_logical_time(scratch: &Path) {
    let bundle = Bundle::probe(&["clock"]);
    let logical_ns: u64 = 5_000_000_000_000;
    let (line, _) = run_probe(&bundle, scratch, |o| o.logical_time_ns = logical_ns);
    let detail = line["detail"].as_str().expect("detail");
    let monotonic = detail
        .split("; ")
        .find(|p| p.starts_with("monotonic "))
        .and_then(|p| p.split("syscall=").nth(1))
        .expect("monotonic syscall reading");
    let (secs, nanos) = monotonic.split_once('.').expect("secs.nanos");
    let reading_ns =
        secs.parse::<u64>().expect("secs") * 1_000_000_000 + nanos.parse::<u64>().expect("nanos");
    // The offset is fixed before the workload exists; what separates the two is the cage's own
    // set-up, which takes well under a minute even on a loaded CI machine.
    assert!(
        reading_ns >= logical_ns,
        "{reading_ns} < {logical_ns}: {detail}"
    );
    assert!(
        reading_ns < logical_ns + 60_000_000_000,
        "{reading_ns}: {detail}"
    );
}

fn replay_agrees_for_a_deterministic_workload(scratch: &Path) {
    let bundle = Bundle::probe(&["write-output", "--count", "4"]);
    let mut base = options(scratch);
    base.rng_seed = [7; 32];
    let work = scratch.join("replay-deterministic");
    let report = replay(&bundle.spec(), &base, 3, &work).expect("replay runs");
    assert_eq!(report.runs.len(), 3);
    assert!(report.disagreement.is_none(), "{:?}", report.disagreement);
    let root = report.runs[0].outputs.root();
    assert!(report.runs.iter().all(|r| r.outputs.root() == root));
    assert!(
        report.runs[1].perturbation.contains("cpu"),
        "{}",
        report.runs[1].perturbation
    );
}

/// /proc/self/maps holds ASLR-placed addresses: copying it to /out differs between runs, and the
/// replay names that file.
fn replay_flags_a_nondeterministic_workload(scratch: &Path) {
    let spec = CageSpec::from_executable(
        Path::new("/bin/cp"),
        &["/proc/self/maps".to_owned(), "/out/maps".to_owned()],
        &[],
        &[],
    )
    .expect("cp becomes a cage");
    let work = scratch.join("replay-nondeterministic");
    let report = replay(&spec, &options(scratch), 2, &work).expect("replay runs");
    assert!(
        report
            .runs
            .iter()
            .all(|r| r.outcome.exit == CageExit::Exited(0)),
        "cp failed: {:?}",
        report
            .runs
            .iter()
            .map(|r| r.outcome.exit)
            .collect::<Vec<_>>()
    );
    match report.disagreement {
        Some(Disagreement::Output { run, difference }) => {
            assert_eq!(run, 1);
            assert_eq!(difference.path, Path::new("maps"), "{difference}");
        }
        other => panic!("expected an output disagreement on maps, got {other:?}"),
    }
}

/// A symlink in the image pointing at a host directory must not lead a mount point (or its
/// mkdir) onto the host: the path resolves inside the rootfs instead.
fn image_symlinks_stay_inside_the_rootfs(scratch: &Path) {
    // Outside /tmp, which the cage covers with its own tmpfs.
    let host = tempfile::Builder::new()
        .prefix("docklock-test-host-")
        .tempdir_in(workspace_root().join("target"))
        .expect("host dir");
    let host_dir = host.path().to_path_buf();
    let mut config = runc_config(&["noop"]);
    let mounts = config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/data/sub", "type": "tmpfs", "source": "tmpfs"}));
    let bundle = Bundle::with_config(config);
    std::os::unix::fs::symlink(&host_dir, bundle.rootfs().join("data")).expect("symlink");
    // Dangling inside the rootfs: refused with the mount named, nothing created anywhere.
    match run(&bundle.spec(), &options(scratch)) {
        Err(RunError::Setup(message)) => assert!(
            message.starts_with("mounts[7] (tmpfs on /data/sub): resolve /data in the rootfs"),
            "{message}"
        ),
        other => panic!("expected a set-up error, got {other:?}"),
    }
    assert!(
        std::fs::read_dir(&host_dir)
            .expect("host dir")
            .next()
            .is_none(),
        "the host directory behind the image's symlink was written to"
    );
    // The same absolute target existing inside the rootfs: the mount point lands there.
    let inside = bundle
        .rootfs()
        .join(host_dir.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(&inside).expect("in-root target");
    let (outcome, _, stderr) = run_captured(&bundle.spec(), &options(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
    assert!(
        std::fs::read_dir(&host_dir)
            .expect("host dir")
            .next()
            .is_none(),
        "the host directory behind the image's symlink was written to"
    );
    assert!(
        inside.join("sub").is_dir(),
        "mount point created inside the rootfs"
    );
}

/// A cage in its own user namespace: uid 0 inside is host uid 100000, and still has no
/// capabilities left when the workload runs.
fn user_namespace_maps_ids(scratch: &Path) {
    let args: Vec<String> = [
        "/proc/self/uid_map",
        "/proc/self/gid_map",
        "/proc/self/status",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut spec = CageSpec::from_executable(Path::new("/bin/cat"), &args, &[], &[]).expect("cat");
    spec.namespaces = spec.namespaces.with(Namespaces::USER);
    let map = IdMapping {
        container_id: 0,
        host_id: 100_000,
        size: 65_536,
    };
    spec.uid_mappings = vec![map];
    spec.gid_mappings = vec![map];
    let (outcome, stdout, stderr) = run_captured(&spec, &options(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
    assert!(outcome.namespaces.contains(Namespaces::USER));
    let maps: Vec<Vec<&str>> = stdout
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        maps,
        [["0", "100000", "65536"], ["0", "100000", "65536"]],
        "{stdout}"
    );
    let status: BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    assert!(status["Uid"].starts_with("0\t"), "{}", status["Uid"]);
    assert_eq!(status["CapEff"], "0000000000000000");
    assert_eq!(status["Pid"], "1");
}

/// The escape probes again, from a cage whose root is an unprivileged host uid.
fn escape_probes_blocked_in_a_user_namespace(scratch: &Path) {
    for probe in [
        "read-host-file",
        "write-outside-rootfs",
        "write-proc-sys",
        "mount",
        "unshare-setns",
        "ptrace-host",
        "raw-socket",
        "leaked-fd",
        "overwrite-self-exe",
    ] {
        let mut config = runc_config(&[probe]);
        let namespaces = config["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces");
        namespaces.push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        config["linux"]["uidMappings"] = map.clone();
        config["linux"]["gidMappings"] = map;
        let bundle = Bundle::with_config(config);
        let (line, outcome) = run_probe(&bundle, scratch, |_| {});
        assert_eq!(
            line["outcome"], "blocked",
            "probe {probe} in a user namespace: {line}"
        );
        assert!(outcome.namespaces.contains(Namespaces::USER));
    }
}

fn setup_failures_name_the_step(scratch: &Path) {
    let mut config = runc_config(&["noop"]);
    config["process"]["cwd"] = json!("/does/not/exist");
    let bundle = Bundle::with_config(config);
    match run(&bundle.spec(), &options(scratch)) {
        Err(RunError::Setup(message)) => {
            assert!(message.starts_with("chdir /does/not/exist: "), "{message}")
        }
        other => panic!("expected a set-up error, got {other:?}"),
    }
}

fn wall_timeout_kills_the_cage(scratch: &Path) {
    let spec = CageSpec::from_executable(Path::new("/bin/sleep"), &["30".to_owned()], &[], &[])
        .expect("sleep becomes a cage");
    assert_killed_at_deadline(&spec, options(scratch), Duration::from_secs(29));
}

/// The deadline holds while the workload keeps the launcher's loop busy: `yes` keeps its stdout
/// pipe readable on most polls (relayed to /dev/null here). (It does not pin the loop every time:
/// with the deadline checked only on poll's timeout this still passed, because the pipe runs dry
/// now and then; the check after every poll is what makes the kill certain.)
fn wall_timeout_kills_a_busy_cage(scratch: &Path) {
    let spec = CageSpec::from_executable(Path::new("/usr/bin/yes"), &[], &[], &[])
        .expect("yes becomes a cage");
    let mut opts = options(scratch);
    opts.stdout_file = Some(PathBuf::from("/dev/null"));
    assert_killed_at_deadline(&spec, opts, Duration::from_secs(20));
}

/// Runs `spec` with a 500 ms timeout: it must end timed out, by SIGKILL, within `killed_within`.
fn assert_killed_at_deadline(spec: &CageSpec, mut opts: RunOptions, killed_within: Duration) {
    opts.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let outcome = run(spec, &opts).expect("run");
    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.exit, CageExit::Signaled(libc::SIGKILL));
    assert!(
        started.elapsed() < killed_within,
        "the cage was not killed at its deadline ({:?})",
        started.elapsed()
    );
}

fn refuses_a_multithreaded_caller(scratch: &Path) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || rx.recv());
    let spec = CageSpec::from_executable(Path::new("/bin/cat"), &[], &[], &[]).expect("cat");
    let result = run(&spec, &options(scratch));
    drop(tx);
    let _ = helper.join();
    match result {
        Err(RunError::MultiThreaded { threads }) => assert!(threads >= 2),
        other => panic!("expected MultiThreaded, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------------
// Review fixes: user namespace always, fd-based host paths, outputs scan, stdio pipes
// ------------------------------------------------------------------------------------------------

/// Forks a watcher (this harness is single-threaded, so fork is fine) that looks, from the host,
/// for a process whose command line is exactly `cmdline` and writes its /proc/<pid>/status
/// Uid: and Gid: lines to `result`. Returns the watcher's pid.
fn watch_status(cmdline: &[&str], result: &Path) -> libc::pid_t {
    let wanted: Vec<u8> = cmdline
        .iter()
        .flat_map(|a| a.bytes().chain(std::iter::once(0)))
        .collect();
    // SAFETY: single-threaded process (the harness runs cases on the main thread).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork the watcher");
    if pid != 0 {
        return pid;
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let dir = entry.path();
            if std::fs::read(dir.join("cmdline")).ok().as_deref() != Some(&wanted[..]) {
                continue;
            }
            if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
                let lines: Vec<&str> = status
                    .lines()
                    .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
                    .collect();
                let _ = std::fs::write(result, lines.join("\n"));
                // SAFETY: ends the forked watcher without running the harness's code.
                unsafe { libc::_exit(0) };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::_exit(1) }
}

/// Hole 1: without mappings in the spec, the running workload is the unprivileged host uid
/// CAGE_HOST_ID_BASE (seen from the host, in /proc/<pid>/status), not host root.
fn cage_root_is_an_unprivileged_host_uid(scratch: &Path) {
    let spec =
        CageSpec::from_executable(Path::new("/bin/sleep"), &["2.71828".to_owned()], &[], &[])
            .expect("sleep becomes a cage");
    assert!(
        !spec.namespaces.contains(Namespaces::USER),
        "the spec asks for no user namespace"
    );
    let result = scratch.join("watched-status");
    let watcher = watch_status(&["/bin/sleep", "2.71828"], &result);
    let outcome = run(&spec, &options(scratch)).expect("run");
    let mut status = 0;
    // SAFETY: our own child; valid out pointer.
    unsafe { libc::waitpid(watcher, &raw mut status, 0) };
    assert_eq!(outcome.exit, CageExit::Exited(0));
    assert!(outcome.namespaces.contains(Namespaces::USER));
    let seen = std::fs::read_to_string(&result).expect("the watcher saw the workload");
    let expected_uid = format!("Uid:\t{0}\t{0}\t{0}\t{0}", CAGE_HOST_ID_BASE);
    let expected_gid = format!("Gid:\t{0}\t{0}\t{0}\t{0}", CAGE_HOST_ID_BASE);
    assert!(seen.contains(&expected_uid), "{seen}");
    assert!(seen.contains(&expected_gid), "{seen}");
}

/// Mounts `host_dir` read-write at /data of a plain-executable cage.
fn with_data_bind(spec: &mut CageSpec, host_dir: &Path) {
    spec.mounts.push(CageMount {
        destination: CagePath::parse("/data").expect("cage path"),
        kind: MountKind::Bind {
            source: host_dir.to_path_buf(),
            recursive: false,
        },
        set_flags: 0,
        clear_flags: libc::MS_RDONLY,
        data: String::new(),
    });
}

/// Hole 1: cage root writing into a host-root-owned 0755 directory bound read-write gets EACCES;
/// the same directory handed to the cage's host uid is writable (the bind itself works).
fn cage_root_cannot_write_host_root_owned_binds(scratch: &Path) {
    let host_dir = scratch.join("host-owned");
    std::fs::create_dir(&host_dir).expect("mkdir");
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut spec = CageSpec::from_executable(
        Path::new("/bin/touch"),
        &["/data/planted".to_owned()],
        &[],
        &[],
    )
    .expect("touch becomes a cage");
    with_data_bind(&mut spec, &host_dir);
    let mut opts = options(scratch);
    opts.bind_allow = vec![scratch.to_path_buf()];
    let (outcome, _, stderr) = run_captured(&spec, &opts);
    assert_ne!(
        outcome.exit,
        CageExit::Exited(0),
        "touch succeeded as cage root"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        !host_dir.join("planted").exists(),
        "cage root wrote a host-root-owned directory"
    );

    std::os::unix::fs::chown(&host_dir, Some(CAGE_HOST_ID_BASE), Some(CAGE_HOST_ID_BASE))
        .expect("chown");
    let (outcome, _, stderr) = run_captured(&spec, &options_allowing(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
    let planted = std::fs::metadata(host_dir.join("planted")).expect("written by the cage");
    assert_eq!(
        planted.uid(),
        CAGE_HOST_ID_BASE,
        "owned by the cage's host uid, not root"
    );
}

fn options_allowing(scratch: &Path) -> RunOptions {
    let mut opts = options(scratch);
    opts.bind_allow = vec![scratch.to_path_buf()];
    opts
}

/// Hole 1: mappings onto host id 0 are refused, naming the field.
fn mappings_onto_host_root_are_refused(scratch: &Path) {
    let mut spec = CageSpec::from_executable(Path::new("/bin/cat"), &[], &[], &[]).expect("cat");
    spec.namespaces = spec.namespaces.with(Namespaces::USER);
    let map = IdMapping {
        container_id: 0,
        host_id: 0,
        size: 65_536,
    };
    spec.uid_mappings = vec![
        IdMapping {
            container_id: 0,
            host_id: 100_000,
            size: 1,
        },
        map,
    ];
    spec.gid_mappings = vec![IdMapping {
        container_id: 0,
        host_id: 100_000,
        size: 1,
    }];
    match run(&spec, &options(scratch)) {
        Err(e @ RunError::Spec(_)) => {
            assert!(
                e.to_string()
                    .starts_with("`linux.uidMappings[1]`: maps onto host id 0"),
                "{e}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Hole 1: setuid/setgid bits left in /out are stripped and recorded; the file stays (as an
/// output) with its content, owned by the cage's host uid.
fn setuid_outputs_are_stripped_and_recorded(scratch: &Path) {
    let input = scratch.join("payload");
    std::fs::write(&input, "#!/bin/sh\n").expect("input");
    let spec = CageSpec::from_executable(
        Path::new("/usr/bin/install"),
        &[
            "-m".into(),
            "6755".into(),
            "/in/payload".into(),
            "/out/suid".into(),
        ],
        &[],
        &[DeclaredInput {
            name: "payload".into(),
            source: input,
        }],
    )
    .expect("install becomes a cage");
    let out = scratch.join("out-suid");
    let mut opts = options(scratch);
    opts.out_dir = Some(out.clone());
    let (outcome, _, stderr) = run_captured(&spec, &opts);
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
    assert_eq!(
        outcome.output_violations,
        [OutputViolation {
            path: PathBuf::from("suid"),
            kind: OutputViolationKind::SetidBitsStripped { mode: 0o6755 },
        }]
    );
    let meta = std::fs::metadata(out.join("suid")).expect("output kept");
    assert_eq!(meta.mode() & 0o7777, 0o755);
    assert_eq!(meta.uid(), CAGE_HOST_ID_BASE);
    assert_eq!(
        std::fs::read_to_string(out.join("suid")).expect("read"),
        "#!/bin/sh\n"
    );
}

/// Hole 2: a bind source outside the bundle is refused unless an allowed directory holds it;
/// `..` and symlinks out of the bundle are refused too.
fn bind_sources_stay_in_the_bundle_or_the_allowlist(scratch: &Path) {
    let outside = scratch.join("datasets");
    std::fs::create_dir_all(outside.join("set1")).expect("mkdir");
    let outside_text = outside.join("set1").to_str().expect("utf-8").to_owned();
    let with_bind = |source: &str| {
        let mut config = runc_config(&["noop"]);
        config["mounts"].as_array_mut().expect("mounts").push(
            json!({"destination": "/data", "type": "bind", "source": source, "options": ["bind", "ro"]}),
        );
        Bundle::with_config(config)
    };
    let bundle = with_bind(&outside_text);
    match run(&bundle.spec(), &options(scratch)) {
        Err(e @ RunError::BindSource { index: 7, .. }) => assert!(
            e.to_string().starts_with(&format!(
                "mounts[7].source {outside_text}: outside the bundle"
            )),
            "{e}"
        ),
        other => panic!("expected a refused bind source, got {other:?}"),
    }
    // (`noop` prints nothing: success is its exit.)
    let mut opts = options(scratch);
    opts.bind_allow = vec![outside.clone()];
    let (outcome, _, stderr) = run_captured(&bundle.spec(), &opts);
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");

    // Lexically inside the bundle, but `..` or a symlink leads out: refused even with the
    // target's directory allowed (the bundle rule decides for paths under the bundle).
    // (The bundle and the scratch directory are both in the temp dir.)
    let dotdot = format!(
        "rootfs/../../{}/datasets",
        scratch.file_name().expect("name").to_str().expect("utf-8")
    );
    for source in [dotdot.as_str(), "link-out"] {
        let bundle = with_bind(source);
        std::os::unix::fs::symlink(&outside, bundle.dir.path().join("link-out")).expect("symlink");
        match run(&bundle.spec(), &options_allowing(scratch)) {
            Err(e @ RunError::BindSource { index: 7, .. }) => {
                assert!(e.to_string().contains("leads outside"), "{source}: {e}")
            }
            other => panic!("{source}: expected a refused bind source, got {other:?}"),
        }
    }
    // Inside the bundle: fine without any allowlist.
    let bundle = with_bind("inside");
    std::fs::create_dir(bundle.dir.path().join("inside")).expect("mkdir");
    let (outcome, _, stderr) = run_captured(&bundle.spec(), &options(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
}

/// Hole 2: root.path must resolve inside the bundle.
fn root_path_stays_in_the_bundle(scratch: &Path) {
    let elsewhere = scratch.join("elsewhere-rootfs");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let mut config = runc_config(&["noop"]);
    config["root"]["path"] = json!(elsewhere.to_str().expect("utf-8"));
    let bundle = Bundle::with_config(config);
    let error = CageSpec::load(bundle.dir.path())
        .expect_err("outside rootfs")
        .to_string();
    assert!(
        error.starts_with("`root.path`: ") && error.contains("outside the bundle"),
        "{error}"
    );

    let mut config = runc_config(&["noop"]);
    config["root"]["path"] = json!("rootlink");
    let bundle = Bundle::with_config(config);
    std::os::unix::fs::symlink(&elsewhere, bundle.dir.path().join("rootlink")).expect("symlink");
    let error = CageSpec::load(bundle.dir.path())
        .expect_err("symlinked out")
        .to_string();
    assert!(
        error.starts_with("`root.path`: ") && error.contains("leaves the bundle"),
        "{error}"
    );
}

/// Hole 2: the rootfs is used through the fd opened at load time: replacing the directory by a
/// symlink to the host's / afterwards changes nothing.
fn rootfs_swapped_after_load_is_not_used(scratch: &Path) {
    let bundle = Bundle::probe(&["read-host-file"]);
    let spec = bundle.spec();
    std::fs::rename(bundle.rootfs(), bundle.dir.path().join("rootfs-loaded")).expect("rename");
    std::os::unix::fs::symlink("/", bundle.rootfs()).expect("swap in a symlink to /");
    let (outcome, stdout, stderr) = run_captured(&spec, &options(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0), "stderr: {stderr}");
    let line = probe_line(&stdout, &stderr);
    assert_eq!(line["outcome"], "blocked", "{line}");
}

/// Hole 4a: the workload's stdout is a pipe relayed by the launcher, not the capture file.
fn workload_stdio_is_a_pipe(scratch: &Path) {
    let spec = CageSpec::from_executable(
        Path::new("/usr/bin/readlink"),
        &["/proc/self/fd/1".into(), "/proc/self/fd/2".into()],
        &[],
        &[],
    )
    .expect("readlink becomes a cage");
    let (outcome, stdout, _) = run_captured(&spec, &options(scratch));
    assert_eq!(outcome.exit, CageExit::Exited(0));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with("pipe:[")), "{stdout}");
    assert!(!outcome.stdio_truncated);
}

// ------------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------------

type Case = (&'static str, fn(&Path));

/// The launcher run by an unprivileged user (nobody, through the CLI binary): the cage maps
/// only that user, has no cgroup (the receipt's mode is "unused"), bounds tasks with
/// RLIMIT_NPROC at the pids limit, still blocks the escape probes, and refuses a memory limit
/// naming the field.
fn unprivileged_caller_gets_its_own_cage(scratch: &Path) {
    const NOBODY: u32 = 65534;
    let unprivileged_config = |args: &[&str]| {
        let mut config = runc_config(args);
        config["linux"]["resources"]
            .as_object_mut()
            .expect("resources")
            .remove("memory");
        config
    };
    // The tempdirs are root's and 0700: the caller must be able to read the bundle.
    let open_to_all = |dir: &Path| {
        for entry in walk(dir) {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
    };
    let as_nobody = |program: &Path| {
        let mut cmd = std::process::Command::new(program);
        cmd.current_dir("/");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                    || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    };
    let launcher = Path::new(env!("CARGO_BIN_EXE_metanode-docklock"));
    let run_with = |bundle: &Bundle, extra: &[&str]| {
        open_to_all(bundle.dir.path());
        let out = as_nobody(launcher)
            .arg("run")
            .arg(bundle.dir.path())
            .args(extra)
            .output()
            .expect("run the launcher as nobody");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run_as_nobody = |bundle: &Bundle| run_with(bundle, &[]);

    let bundle = Bundle::with_config(unprivileged_config(&["fork-bomb", "--max", "1000"]));
    let (status, stdout, stderr) = run_as_nobody(&bundle);
    assert!(
        status.success(),
        "fork bomb run: {status:?} {stdout} {stderr}"
    );
    let line = probe_line(&stdout, &stderr);
    assert_eq!(line["outcome"], "blocked", "{line}");
    let detail = line["detail"].as_str().unwrap_or_default();
    // 32 tasks: the probe, A (uid 0 of the cage too) and 30 children.
    assert!(detail.contains("after 30 children"), "{detail}");
    assert!(stderr.contains("cgroup Unused"), "{stderr}");

    let marker = scratch.join("host-marker");
    std::fs::write(&marker, "unprivileged-cage-marker").expect("marker");
    open_to_all(scratch);
    let marker_arg = marker.display().to_string();
    for args in [
        vec![
            "read-host-file",
            marker_arg.as_str(),
            "--marker",
            "unprivileged-cage-marker",
        ],
        vec!["mount"],
        vec!["unshare-setns"],
        vec!["write-proc-sys"],
        vec!["ptrace-host"],
    ] {
        let bundle = Bundle::with_config(unprivileged_config(&args));
        let (status, stdout, stderr) = run_as_nobody(&bundle);
        let line = probe_line(&stdout, &stderr);
        assert_eq!(line["outcome"], "blocked", "{args:?}: {line}");
        assert!(status.success(), "{args:?}: {status:?} {stderr}");
    }

    let bundle = Bundle::probe(&["noop"]);
    let (status, _, stderr) = run_as_nobody(&bundle);
    assert!(
        !status.success(),
        "a memory limit must be refused: {stderr}"
    );
    assert!(
        stderr.contains("linux.resources.memory.limit: ")
            && stderr.contains("no cgroup to enforce it"),
        "{stderr}"
    );

    // B clones the bind sources and /out itself (found again by path, same inode): a bind from
    // the bundle is visible read-only, and outputs land in an empty --out, as the caller's.
    // A bundle whose `data` directory (holding `seen`) is bound read-only at /data.
    let with_data_bind = |args: &[&str]| {
        let mut config = unprivileged_config(args);
        config["mounts"].as_array_mut().expect("mounts").push(
            json!({"destination": "/data", "type": "bind", "source": "data", "options": ["bind", "ro"]}),
        );
        let bundle = Bundle::with_config(config);
        std::fs::create_dir(bundle.dir.path().join("data")).expect("bind source");
        std::fs::write(bundle.dir.path().join("data/seen"), "bound-into-the-cage")
            .expect("bind file");
        // The mount point, made by the bundle's owner: nobody may not create it in root's rootfs.
        std::fs::create_dir(bundle.rootfs().join("data")).expect("mount point");
        bundle
    };
    let bundle = with_data_bind(&["write-output", "--count", "2"]);
    let out_new = scratch.join("out-new");
    std::fs::create_dir(&out_new).expect("out dir");
    std::os::unix::fs::chown(&out_new, Some(NOBODY), Some(NOBODY)).expect("chown out");
    let out_new_arg = out_new.display().to_string();
    let (status, stdout, stderr) = run_with(&bundle, &["--out", &out_new_arg]);
    let line = probe_line(&stdout, &stderr);
    assert!(status.success(), "bind + --out run: {status:?} {stderr}");
    assert_eq!(line["outcome"], "ok", "{line}");
    let written: Vec<_> = std::fs::read_dir(&out_new)
        .expect("read out")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    for file in &written {
        assert_eq!(
            std::fs::metadata(file).expect("output").uid(),
            NOBODY,
            "{}",
            file.display()
        );
    }
    let bundle = with_data_bind(&[
        "read-host-file",
        "/data/seen",
        "--marker",
        "bound-into-the-cage",
    ]);
    let (_, stdout, stderr) = run_as_nobody(&bundle);
    // "escaped" is the probe's word for "the marker was read": here the declared bind works.
    assert_eq!(
        probe_line(&stdout, &stderr)["outcome"],
        "escaped",
        "{stderr}"
    );

    // The workload writes as the caller: no writable rootfs, no non-empty /out.
    let mut writable = unprivileged_config(&["noop"]);
    writable["root"]["readonly"] = json!(false);
    let (status, _, stderr) = run_as_nobody(&Bundle::with_config(writable));
    assert!(
        !status.success() && stderr.contains("root.readonly: "),
        "{stderr}"
    );
    let out = scratch.join("out-not-empty");
    std::fs::create_dir(&out).expect("out dir");
    std::fs::write(out.join("keep"), "the caller's file").expect("file in out");
    std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).expect("chown out");
    std::os::unix::fs::chown(out.join("keep"), Some(NOBODY), Some(NOBODY)).expect("chown file");
    let out_arg = out.display().to_string();
    let bundle = Bundle::with_config(unprivileged_config(&["noop"]));
    let (status, _, stderr) = run_with(&bundle, &["--out", &out_arg]);
    assert!(
        !status.success() && stderr.contains("not empty"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("keep")).expect("file kept"),
        "the caller's file"
    );

    // A process of the caller's own uid on the host: out of the cage's reach (its own pid
    // namespace and session), though the credential check alone would let a signal through.
    let mut sleeper = as_nobody(Path::new("/bin/sleep"))
        .arg("60")
        .spawn()
        .expect("a sleeping host process as nobody");
    let host_pid = sleeper.id().to_string();
    let bundle = Bundle::with_config(unprivileged_config(&[
        "signal-host",
        "--host-pid",
        &host_pid,
    ]));
    let (status, stdout, stderr) = run_as_nobody(&bundle);
    let line = probe_line(&stdout, &stderr);
    let alive = sleeper.try_wait().expect("poll the sleeper").is_none();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        alive,
        "the caller's host process was killed from the cage: {line}"
    );
    assert_eq!(line["outcome"], "blocked", "{line}");
    assert!(status.success(), "{status:?} {stderr}");

    // Without a cgroup the deadline ends the cage by killing A (EXITKILL takes the rest).
    let started = Instant::now();
    let out = as_nobody(launcher)
        .args(["exec", "--timeout-s", "1", "/bin/sleep", "--", "30"])
        .output()
        .expect("run a sleeping executable as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the cage outlived its 1 s deadline by far: {:?}",
        started.elapsed()
    );
}

/// Every path below `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut at = 0;
    while at < all.len() {
        let path = all[at].clone();
        at += 1;
        if path.is_dir() && !path.is_symlink() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                all.push(entry.expect("entry").path());
            }
        }
    }
    all
}

const CASES: &[Case] = &[
    ("executable_cage_identity", executable_cage_identity),
    ("runc_bundle_dev_layout", runc_bundle_dev_layout),
    ("escape_probes_blocked", escape_probes_blocked),
    ("chroot_escape_blocked", chroot_escape_blocked),
    ("signal_host_blocked", signal_host_blocked),
    ("egress_blocked", egress_blocked),
    ("outputs_reach_the_host", outputs_reach_the_host),
    (
        "memory_bomb_stays_in_the_cgroup",
        memory_bomb_stays_in_the_cgroup,
    ),
    (
        "fork_bomb_hits_the_pids_limit",
        fork_bomb_hits_the_pids_limit,
    ),
    ("randomness_follows_the_seed", randomness_follows_the_seed),
    (
        "monotonic_clock_starts_at_the_logical_time",
        monotonic_clock_starts_at_the_logical_time,
    ),
    (
        "replay_agrees_for_a_deterministic_workload",
        replay_agrees_for_a_deterministic_workload,
    ),
    (
        "replay_flags_a_nondeterministic_workload",
        replay_flags_a_nondeterministic_workload,
    ),
    (
        "image_symlinks_stay_inside_the_rootfs",
        image_symlinks_stay_inside_the_rootfs,
    ),
    ("user_namespace_maps_ids", user_namespace_maps_ids),
    (
        "escape_probes_blocked_in_a_user_namespace",
        escape_probes_blocked_in_a_user_namespace,
    ),
    ("setup_failures_name_the_step", setup_failures_name_the_step),
    (
        "unprivileged_caller_gets_its_own_cage",
        unprivileged_caller_gets_its_own_cage,
    ),
    ("wall_timeout_kills_the_cage", wall_timeout_kills_the_cage),
    (
        "wall_timeout_kills_a_busy_cage",
        wall_timeout_kills_a_busy_cage,
    ),
    (
        "refuses_a_multithreaded_caller",
        refuses_a_multithreaded_caller,
    ),
    (
        "cage_root_is_an_unprivileged_host_uid",
        cage_root_is_an_unprivileged_host_uid,
    ),
    (
        "cage_root_cannot_write_host_root_owned_binds",
        cage_root_cannot_write_host_root_owned_binds,
    ),
    (
        "mappings_onto_host_root_are_refused",
        mappings_onto_host_root_are_refused,
    ),
    (
        "setuid_outputs_are_stripped_and_recorded",
        setuid_outputs_are_stripped_and_recorded,
    ),
    (
        "bind_sources_stay_in_the_bundle_or_the_allowlist",
        bind_sources_stay_in_the_bundle_or_the_allowlist,
    ),
    (
        "root_path_stays_in_the_bundle",
        root_path_stays_in_the_bundle,
    ),
    (
        "rootfs_swapped_after_load_is_not_used",
        rootfs_swapped_after_load_is_not_used,
    ),
    ("workload_stdio_is_a_pipe", workload_stdio_is_a_pipe),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in CASES {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let filtered_out = CASES.len() - selected.len();
    println!("\nrunning {} tests", selected.len());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let started = Instant::now();
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, case) in selected {
        if !root {
            println!("test {name} ... ignored, needs root (namespaces, cgroups, mounts)");
            ignored += 1;
            continue;
        }
        let scratch = tempfile::Builder::new()
            .prefix("docklock-test-")
            .tempdir()
            .expect("scratch dir");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| case(scratch.path())));
        match result {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                println!("test {name} ... FAILED");
                failures.push((name, message));
                failed += 1;
            }
        }
    }
    for (name, message) in &failures {
        println!("\n---- {name} ----\n{message}");
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(101);
    }
}
