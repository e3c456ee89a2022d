//! DockLock escape suite and determinism checks, through the real `metanode docklock` CLI (the
//! launcher refuses to fork from a multi-threaded process such as the test harness). Needs root;
//! without it every test prints why it skipped.
//!
//! The workload is the static `docklock-probe` (agent/docklock-probe), built once per run with a
//! nested cargo into its own target dir. Each probe tries one way out and prints one JSON line;
//! every escape probe must say "blocked", the host must be untouched, and refused syscalls must
//! appear in the signed receipt.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[path = "../../docklock/tests/support/probe.rs"]
mod probe;
use probe::probe_binary;

struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A bundle whose process runs the probe with `args`.
    fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "dev", "tmp", "sys", "out", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
        }
        std::fs::write(rootfs.join("etc/hostname"), "cage\n").expect("write");
        std::fs::copy(probe_binary(), rootfs.join("bin/docklock-probe")).expect("copy probe");
        let mut argv = vec!["/bin/docklock-probe".to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let config = serde_json::json!({
            "ociVersion": "1.2.0",
            "process": {"args": argv, "env": ["PATH=/bin", "LANG=C"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}, "noNewPrivileges": true},
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "cage",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=16m"]}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                               {"type": "mount"}, {"type": "cgroup"}, {"type": "time"}],
                "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 32}}
            }
        });
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("write config");
        Bundle { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn metanode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metanode"))
        .args(args)
        .output()
        .expect("run metanode")
}

/// Runs the probe caged and returns (the probe's JSON line, the CLI's JSON outcome).
fn run_probe(args: &[&str], extra: &[&str]) -> (Value, Value, Output) {
    let bundle = Bundle::new(args);
    let path = bundle.path().to_str().expect("utf8").to_string();
    let mut cli = vec!["--json", "docklock", "run", &path, "--timeout-s", "60"];
    cli.extend_from_slice(extra);
    let out = metanode(&cli);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    // The probe's line comes first (inherited stdout), then the CLI's JSON.
    // (A memory bomb is killed before it prints, so pick the values by their keys.)
    let values: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .collect();
    let probe = values
        .iter()
        .find(|v| v.get("probe").is_some())
        .cloned()
        .unwrap_or(Value::Null);
    let outcome = values
        .iter()
        .find(|v| v.get("exit").is_some())
        .cloned()
        .unwrap_or(Value::Null);
    (probe, outcome, out)
}

fn assert_blocked(args: &[&str]) -> Value {
    let (probe, outcome, out) = run_probe(args, &[]);
    assert_eq!(
        probe["outcome"],
        "blocked",
        "probe {args:?} was not blocked: {probe}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "probe {args:?}: {outcome}");
    outcome
}

fn skip() -> bool {
    if !is_root() {
        eprintln!("skipping: DockLock needs root");
        return true;
    }
    false
}

#[test]
fn escape_probes_are_blocked_and_refusals_recorded() {
    if skip() {
        return;
    }
    // Probes that need nothing from the host.
    for (probe, refused) in [
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
    ] {
        let outcome = assert_blocked(&[probe]);
        if let Some(name) = refused {
            let names: Vec<&str> = outcome["violations"]
                .as_array()
                .expect("violations")
                .iter()
                .filter_map(|v| v["syscall"].as_str())
                .collect();
            assert!(
                names.contains(&name),
                "probe {probe}: expected a recorded refusal of {name}, got {names:?}"
            );
        }
        assert_eq!(outcome["landlock"], "fully_enforced", "{outcome}");
    }
}

#[test]
fn host_files_processes_and_network_are_out_of_reach() {
    if skip() {
        return;
    }
    let host = tempfile::tempdir().expect("tempdir");
    let marker_path = host.path().join("host-only-marker");
    let marker = format!("host-secret-{}", std::process::id());
    std::fs::write(&marker_path, &marker).expect("write marker");
    let marker_str = marker_path.to_str().expect("utf8");
    assert_blocked(&["read-host-file", marker_str, "--marker", &marker]);
    assert_blocked(&["chroot-escape", "--host-path", marker_str]);

    // A device node shipped in the image (here /dev/zero's numbers) must not open in the cage:
    // the rootfs is mounted nodev, otherwise a block node would give raw access to a host disk.
    let bundle = Bundle::new(&["read-host-file", "/image-dev-zero"]);
    let node = std::ffi::CString::new(
        bundle
            .path()
            .join("rootfs/image-dev-zero")
            .to_str()
            .expect("utf8"),
    )
    .expect("cstring");
    // SAFETY: a valid path; makedev is a pure computation.
    let rc = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) };
    assert_eq!(rc, 0, "mknod in the test rootfs");
    let out = metanode(&[
        "--json",
        "docklock",
        "run",
        bundle.path().to_str().expect("utf8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"outcome\":\"blocked\""),
        "an image device node opened in the cage: {stdout}"
    );

    let mut sleeper = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = sleeper.id().to_string();
    assert_blocked(&["signal-host", "--host-pid", &pid]);
    assert!(
        sleeper.try_wait().expect("try_wait").is_none(),
        "the host process was signalled from inside the cage"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    assert_blocked(&["egress", "--addr", &addr]);
}

#[test]
fn limits_contain_bombs() {
    if skip() {
        return;
    }
    assert_blocked(&["fork-bomb", "--max", "5000"]);
    assert_blocked(&["disk-fill", "--max-mib", "256"]);
    // The memory bomb is OOM-killed inside the cage's cgroup (limit 64 MiB); the test survives.
    let (_, outcome, out) = run_probe(&["memory-bomb", "--max-mib", "1024"], &[]);
    assert_eq!(
        out.status.code(),
        Some(128 + 9),
        "memory bomb should die by SIGKILL: {outcome}"
    );
    assert!(
        outcome["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "no OOM kill counted: {outcome}"
    );
}

#[test]
fn randomness_comes_from_the_seed_and_clocks_from_the_logical_time() {
    if skip() {
        return;
    }
    let seed_a = "11".repeat(32);
    let seed_b = "22".repeat(32);
    let (a1, _, _) = run_probe(&["random"], &["--seed", &seed_a]);
    let (a2, _, _) = run_probe(&["random"], &["--seed", &seed_a]);
    let (b, _, _) = run_probe(&["random"], &["--seed", &seed_b]);
    assert_eq!(a1["outcome"], "ok", "{a1}");
    assert_eq!(a1["detail"], a2["detail"], "same seed, different bytes");
    assert_ne!(a1["detail"], b["detail"], "different seeds, same bytes");
    assert!(
        a1["detail"]
            .as_str()
            .unwrap_or("")
            .contains("getrandom=ENOSYS"),
        "{a1}"
    );

    let (clock, clock_outcome, _) = run_probe(&["clock"], &["--logical-time-ns", "5000000000"]);
    let detail = clock["detail"].as_str().unwrap_or("");
    let monotonic = detail
        .split("monotonic vdso=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(-1.0);
    // The wall clock is virtual (vDSO hidden, reads answered by the supervisor from the logical
    // clock): the first CLOCK_REALTIME syscall reads exactly the logical time.
    assert!(
        detail.contains("syscall=5.000000000"),
        "CLOCK_REALTIME is not the logical time: {detail}"
    );
    let (again, _, _) = run_probe(&["clock"], &["--logical-time-ns", "5000000000"]);
    let realtime = |d: &str| d.split(';').next().unwrap_or("").to_string();
    assert_eq!(
        realtime(detail),
        realtime(again["detail"].as_str().unwrap_or("")),
        "the virtual wall clock differs between two runs"
    );
    // rdtsc faults and the tracer answers it from the virtual counter, which starts at the
    // logical time and steps 1,000 per read: the same value in both runs, never the host's.
    let tsc = |d: &str| {
        d.split("rdtsc=allowed (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .and_then(|s| s.parse::<u64>().ok())
    };
    let first = tsc(detail).unwrap_or_else(|| panic!("no rdtsc reading: {detail}"));
    assert_eq!(
        Some(first),
        tsc(again["detail"].as_str().unwrap_or("")),
        "the virtual TSC differs between two runs: {detail} / {again}"
    );
    assert!(
        first >= 5_000_000_000 && (first - 5_000_000_000).is_multiple_of(1_000),
        "rdtsc read {first}, not a value of the virtual counter from 5e9: {detail}"
    );
    assert!(
        clock_outcome["tsc_reads_virtualized"].as_u64() >= Some(1),
        "the outcome does not count the answered read: {clock_outcome}"
    );
    // The workload reads it a few milliseconds after the start, at most a few seconds on a
    // loaded machine: it must be near 5 s, not the host's uptime.
    assert!(
        (5.0..65.0).contains(&monotonic),
        "CLOCK_MONOTONIC in the cage = {monotonic}: {detail}"
    );
}

/// A node key file in `dir` (from `metanode chain genesis`), for signing receipts.
fn node_key(dir: &Path) -> PathBuf {
    let keygen = metanode(&[
        "chain",
        "genesis",
        "--validators",
        "1",
        "--out",
        dir.join("net").to_str().expect("utf8"),
    ]);
    assert!(keygen.status.success(), "{keygen:?}");
    let node_key = std::fs::read_dir(dir.join("net"))
        .expect("net dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .or_else(|| find_key(&dir.join("net")));
    let node_key = node_key.expect("a key file from chain genesis");
    let key = dir.join("node.key");
    std::fs::copy(&node_key, &key).expect("copy key");
    key
}

#[test]
fn receipts_verify_and_record_violations() {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let key = node_key(work.path());
    let receipt = work.path().join("run.dlr");
    let (_, outcome, out) = run_probe(
        &["mount"],
        &[
            "--receipt",
            receipt.to_str().expect("utf8"),
            "--key",
            key.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success(), "{outcome} {out:?}");
    let verified = metanode(&[
        "--json",
        "docklock",
        "verify",
        receipt.to_str().expect("utf8"),
    ]);
    assert!(verified.status.success(), "{verified:?}");
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        text.contains("mount"),
        "receipt lacks the mount refusal: {text}"
    );

    // One flipped byte and the receipt no longer verifies.
    let mut bytes = std::fs::read(&receipt).expect("read receipt");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&receipt, bytes).expect("write");
    let tampered = metanode(&["docklock", "verify", receipt.to_str().expect("utf8")]);
    assert!(!tampered.status.success(), "a tampered receipt verified");
}

/// A cage that leaves a setuid file in /out, with a device node planted there too (a cage cannot
/// create one; a pre-existing /out can hold one): both are neutralised, listed as output
/// violations in the signed receipt (verdict "violated"), `docklock verify` shows them, and the
/// receipt verifies; a flipped byte in a recorded mode breaks it.
#[test]
fn receipts_record_output_violations() {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let key = node_key(work.path());
    let receipt = work.path().join("out.dlr");
    let payload = work.path().join("payload");
    std::fs::write(&payload, "#!/bin/sh\n").expect("payload");
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir out");
    let node = std::ffi::CString::new(out_dir.join("null").to_str().expect("utf8")).expect("path");
    // SAFETY: a valid path; a character device node with /dev/null's numbers.
    let rc = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    let node_mode = {
        use std::os::unix::fs::MetadataExt as _;
        format!(
            "{:o}",
            std::fs::symlink_metadata(out_dir.join("null"))
                .expect("stat node")
                .mode()
        )
    };
    // /out must be empty or the cage's own: hand it to the default mapping's ids (0x70000000).
    std::os::unix::fs::chown(&out_dir, Some(0x7000_0000), Some(0x7000_0000)).expect("chown");
    let out = metanode(&[
        "--json",
        "docklock",
        "exec",
        "/usr/bin/install",
        "--input",
        &format!("payload={}", payload.display()),
        "--out",
        out_dir.to_str().expect("utf8"),
        "--receipt",
        receipt.to_str().expect("utf8"),
        "--key",
        key.to_str().expect("utf8"),
        "--",
        "-m",
        "4750",
        "/in/payload",
        "/out/tool",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!out_dir.join("null").exists(), "device node left in /out");
    let verified = metanode(&[
        "--json",
        "docklock",
        "verify",
        receipt.to_str().expect("utf8"),
    ]);
    assert!(verified.status.success(), "{verified:?}");
    let json: Value = serde_json::from_slice(&verified.stdout).expect("verify JSON");
    let decision = &json["decision"];
    assert_eq!(decision["verdict"], "violated", "{json}");
    let outputs: Vec<&Value> = decision["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter(|v| v["kind"] == "output")
        .collect();
    // Sorted by name: "null" before "tool".
    assert_eq!(outputs.len(), 2, "{decision}");
    assert_eq!(outputs[0]["output"]["action"], "device_node_removed");
    assert_eq!(outputs[0]["output"]["path"], "null");
    assert_eq!(outputs[0]["output"]["mode"], node_mode.as_str());
    assert_eq!(outputs[1]["output"]["action"], "setid_bits_stripped");
    assert_eq!(outputs[1]["output"]["path"], "tool");
    assert_eq!(outputs[1]["output"]["mode"], "4750");
    let human = metanode(&["docklock", "verify", receipt.to_str().expect("utf8")]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("output violation: /out/tool (mode 4750): setid_bits_stripped")
            && human.contains(&format!(
                "output violation: /out/null (mode {node_mode}): device_node_removed"
            )),
        "{human}"
    );

    // The recorded mode is covered by the signature.
    let mut bytes = std::fs::read(&receipt).expect("read receipt");
    let mode = 0o4750u32.to_le_bytes();
    let at = bytes
        .windows(mode.len())
        .position(|w| w == mode)
        .expect("the setuid mode is in the receipt bytes");
    bytes[at] ^= 0x01;
    std::fs::write(&receipt, bytes).expect("write");
    let tampered = metanode(&["docklock", "verify", receipt.to_str().expect("utf8")]);
    assert!(
        !tampered.status.success(),
        "a receipt with a changed mode verified"
    );
}

fn find_key(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_key(&path) {
                return Some(found);
            }
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".key"))
        {
            return Some(path);
        }
    }
    None
}

#[test]
fn replay_agrees_for_a_deterministic_workload() {
    if skip() {
        return;
    }
    let bundle = Bundle::new(&["write-output", "--count", "4"]);
    let out = metanode(&[
        "docklock",
        "replay",
        bundle.path().to_str().expect("utf8"),
        "--runs",
        "3",
    ]);
    assert!(
        out.status.success(),
        "replay disagreed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad_spec = Bundle::new(&["noop"]);
    let config = bad_spec.path().join("config.json");
    let mut json: Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    json["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"});
    std::fs::write(&config, serde_json::to_vec(&json).expect("json")).expect("write");
    let refused = metanode(&["docklock", "run", bad_spec.path().to_str().expect("utf8")]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("linux.seccomp"), "{stderr}");
}

/// A bind source outside the bundle is refused by name unless `--allow-bind` covers it; the
/// flag is documented in `--help`.
#[test]
fn bind_sources_need_the_bundle_or_allow_bind() {
    if skip() {
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let source = data.path().join("set1");
    std::fs::create_dir(&source).expect("mkdir");
    let source_str = source.to_str().expect("utf8");
    let bundle = Bundle::new(&["noop"]);
    let config_path = bundle.path().join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("read config")).expect("json");
    config["mounts"].as_array_mut().expect("mounts").push(
        serde_json::json!({"destination": "/data", "type": "bind", "source": source_str,
                                 "options": ["bind", "ro"]}),
    );
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let path = bundle.path().to_str().expect("utf8");

    let refused = metanode(&["docklock", "run", path]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "ran with an unlisted bind source"
    );
    assert!(
        stderr.contains(&format!(
            "mounts[2].source {source_str}: outside the bundle directory"
        )),
        "{stderr}"
    );

    let allow = data.path().to_str().expect("utf8");
    let allowed = metanode(&["docklock", "run", path, "--allow-bind", allow]);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );

    let help = metanode(&["docklock", "run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--allow-bind <DIR>"), "{help}");
}
