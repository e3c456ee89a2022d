//! DockLock runs with inputs taken from the store by CID, end to end: through a running agent's
//! API (`POST /api/v1/docklock/runs`, the agent spawning its own launcher), and through the CLI
//! (`metanode docklock exec --data-dir DIR --input-cid NAME=CID`). The receipts are checked with
//! `metanode docklock verify --inputs`, which shows the input CIDs. A program stored as a blob
//! runs by CID (`executable_cid`) only on a node whose config allows it. Needs root and user
//! namespaces; without them each test prints why it skipped.

mod common;

use std::path::{Path, PathBuf};

use common::{Agent, bin, get, request};
use metanode_core::keys::{Overwrite, SigningKey, SigningKeyFile};

const DATA: &[u8] = b"hello from the store\nsecond line\n";
/// dash builtins only: the cage holds the shell and its libraries, no coreutils.
const SCRIPT: &str = "while IFS= read -r line; do printf '%s\\n' \"$line\"; done < /in/data > /out/copy; \
                      echo done > /out/msg";

fn skip() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("DockLock needs root (cgroups, mounts)");
    }
    match std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        Ok(n) if n.trim() == "0" => {
            Some("user namespaces are disabled (user.max_user_namespaces=0)")
        }
        Err(_) => Some("this kernel has no user namespaces"),
        Ok(_) => None,
    }
}

/// A copy of the system shell in `dir`: workloads must lie beneath the configured directory,
/// and /bin/sh itself resolves elsewhere.
fn shell_in(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir workloads");
    let sh = dir.join("sh");
    std::fs::copy(std::fs::canonicalize("/bin/sh").expect("/bin/sh"), &sh).expect("copy sh");
    sh
}

/// A well-formed CID of bytes no test stores.
fn absent_cid() -> String {
    metanode_core::cid::ContentId::from_key(
        metanode_core::cid::CODEC_RAW,
        metanode_core::cid::BlockKey::blake3(*blake3::hash(b"never stored").as_bytes()),
    )
    .to_string()
}

/// Starts an agent on `tmp/data` whose `docklock:` section names `tmp/workloads` (plus the
/// `docklock_extra` lines).
fn start_node(tmp: &Path, name: &str, docklock_extra: &str) -> Agent {
    let data_dir = tmp.join("data");
    let config = tmp.join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "node:\n  name: {name}\n  data_dir: {}\ndocklock:\n  workloads_dir: {}\n  run_timeout_s_max: 120\n{docklock_extra}",
            data_dir.display(),
            tmp.join("workloads").display()
        ),
    )
    .expect("write config");
    Agent::start_args(
        &["agent", "--config", config.to_str().expect("utf-8")],
        &data_dir,
    )
}

fn post_json(agent: &Agent, path: &str, body: &serde_json::Value) -> common::Response {
    let bytes = serde_json::to_vec(body).expect("json");
    request(
        agent.addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(&bytes),
    )
}

fn raw_bytes(agent: &Agent, cid: &str) -> Vec<u8> {
    let r = get(agent.addr, &format!("/ipfs/{cid}?format=raw"));
    assert_eq!(
        r.status,
        200,
        "GET {cid}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.body
}

fn verify(receipt: &Path, inputs: &Path) -> String {
    let out = std::process::Command::new(bin())
        .args(["docklock", "verify"])
        .arg(receipt)
        .arg("--inputs")
        .arg(inputs)
        .output()
        .expect("run verify");
    assert!(out.status.success(), "verify: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_run_through_the_api_reads_inputs_by_cid_and_stores_outputs_and_receipt() {
    if let Some(reason) = skip() {
        eprintln!("skipping: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let workloads = tmp.path().join("workloads");
    let sh = shell_in(&workloads);
    let agent = start_node(tmp.path(), "docklock-api", "");

    let put = request(agent.addr, "POST", "/api/v1/blobs", &[], Some(DATA));
    assert_eq!(put.status, 201, "{:?}", String::from_utf8_lossy(&put.body));
    let input_cid = put.json()["cid"].as_str().expect("cid").to_string();

    // Refusals from the real node: a path outside the workloads dir, an unknown CID.
    let r = post_json(
        &agent,
        "/api/v1/docklock/runs",
        &serde_json::json!({"executable": "/bin/sh"}),
    );
    assert_eq!(r.status, 400, "{}", r.error());
    assert!(
        r.error()
            .starts_with("executable: /bin/sh is not beneath this node's docklock.workloads_dir"),
        "{}",
        r.error()
    );
    let absent = absent_cid();
    let r = post_json(
        &agent,
        "/api/v1/docklock/runs",
        &serde_json::json!({"executable": sh, "inputs": [{"name": "data", "cid": absent}]}),
    );
    assert_eq!(r.status, 404, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.error(),
        format!("input data: {absent} is not in the store")
    );
    let r = post_json(
        &agent,
        "/api/v1/docklock/runs",
        &serde_json::json!({"executable_cid": input_cid}),
    );
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.error(),
        "executable_cid: this node does not run executables by CID \
         (docklock.executables_by_cid is false)"
    );

    let r = post_json(
        &agent,
        "/api/v1/docklock/runs",
        &serde_json::json!({
            "executable": sh,
            "args": ["-c", SCRIPT],
            "env": ["LANG=C"],
            "inputs": [{"name": "data", "cid": input_cid}],
            "rng_seed": "07".repeat(32),
            "timeout_s": 60,
            "service": "api-e2e",
        }),
    );
    assert_eq!(
        r.status,
        200,
        "{:?}\nagent log:\n{}",
        String::from_utf8_lossy(&r.body),
        agent.log()
    );
    let answer = r.json();
    assert_eq!(answer["exit"], serde_json::json!({"code": 0}), "{answer}");
    assert_eq!(answer["verdict"], "completed", "{answer}");
    assert_eq!(answer["violations"], serde_json::json!([]), "{answer}");
    assert!(answer.get("outputs_refused").is_none(), "{answer}");
    assert!(answer.get("executable_cid").is_none(), "{answer}");
    assert_cgroup_report(&answer);
    let outputs = answer["outputs"].as_array().expect("outputs");
    let paths: Vec<&str> = outputs
        .iter()
        .map(|o| o["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["copy", "msg"], "{answer}");
    assert_eq!(outputs[0]["size_bytes"], DATA.len() as u64);
    assert_eq!(
        raw_bytes(&agent, outputs[0]["cid"].as_str().expect("cid")),
        DATA
    );
    assert_eq!(
        raw_bytes(&agent, outputs[1]["cid"].as_str().expect("cid")),
        b"done\n"
    );
    let data_input = answer["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .find(|i| i["name"] == "data")
        .expect("the data input")
        .clone();
    assert_eq!(
        data_input,
        serde_json::json!({"name": "data", "cid": input_cid, "size_bytes": DATA.len()})
    );

    // The receipt, fetched by its CID, verifies and commits to the input CID.
    let receipt = tmp.path().join("run.dlr");
    std::fs::write(
        &receipt,
        raw_bytes(&agent, answer["receipt_cid"].as_str().expect("receipt_cid")),
    )
    .expect("write receipt");
    let answer_file = tmp.path().join("answer.json");
    std::fs::write(&answer_file, r.body.clone()).expect("write answer");
    let shown = verify(&receipt, &answer_file);
    assert!(shown.contains("verdict Completed"), "{shown}");
    assert!(
        shown.contains(&format!("data: cid {input_cid} ({} bytes)", DATA.len())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "inputs match the input root {}",
            answer["input_root"].as_str().expect("root")
        )),
        "{shown}"
    );

    // Nothing of the run is left in the data dir.
    let runs: Vec<_> = std::fs::read_dir(data_dir.join("docklock-runs"))
        .expect("runs dir")
        .collect();
    assert!(runs.is_empty(), "left behind: {runs:?}");
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}

/// The launcher's measurements are in the answer; a shell loop over a short file is killed by
/// nothing and never reaches its pids limit.
fn assert_cgroup_report(answer: &serde_json::Value) {
    let cgroup = &answer["cgroup"];
    assert!(
        ["v1", "v2", "hybrid"].contains(&cgroup["mode"].as_str().expect("cgroup.mode")),
        "{answer}"
    );
    assert_eq!(cgroup["oom_kills"], 0, "{answer}");
    assert_eq!(cgroup["pids_max_hits"], 0, "{answer}");
    for key in ["memory_peak_bytes", "cpu_usage_us"] {
        assert!(cgroup[key].is_u64(), "cgroup.{key}: {answer}");
    }
    assert!(answer["tsc_reads_virtualized"].is_u64(), "{answer}");
}

/// The rootfs digest (the input `/`) of an answer.
fn rootfs_digest(answer: &serde_json::Value) -> String {
    answer["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .find(|i| i["name"] == "/")
        .and_then(|i| i["blake3"].as_str())
        .unwrap_or_else(|| panic!("no rootfs digest: {answer}"))
        .to_string()
}

#[test]
fn a_program_stored_as_a_blob_runs_by_cid_where_the_node_allows_it() {
    if let Some(reason) = skip() {
        eprintln!("skipping: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let workloads = tmp.path().join("workloads");
    let sh = shell_in(&workloads);
    // The same bytes under the name a program by CID gets: both runs must have one rootfs.
    let program = workloads.join("program");
    std::fs::copy(&sh, &program).expect("copy program");
    let agent = start_node(
        tmp.path(),
        "docklock-by-cid",
        "  executables_by_cid: true\n",
    );
    let put = |bytes: &[u8]| {
        let r = request(agent.addr, "POST", "/api/v1/blobs", &[], Some(bytes));
        assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
        r.json()["cid"].as_str().expect("cid").to_string()
    };
    let program_cid = put(&std::fs::read(&sh).expect("read sh"));
    let input_cid = put(DATA);

    let absent = absent_cid();
    let r = post_json(
        &agent,
        "/api/v1/docklock/runs",
        &serde_json::json!({"executable_cid": absent}),
    );
    assert_eq!(r.status, 404, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.error(),
        format!("executable_cid: {absent} is not in the store")
    );
    // Stored, but not a program: the launcher's refusal names the field.
    let r = post_json(
        &agent,
        "/api/v1/docklock/runs",
        &serde_json::json!({"executable_cid": input_cid}),
    );
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(
        r.error()
            .starts_with("executable_cid: the launcher refused the run"),
        "{}",
        r.error()
    );

    let run = |workload: serde_json::Value| {
        let mut body = serde_json::json!({
            "args": ["-c", SCRIPT],
            "inputs": [{"name": "data", "cid": input_cid}],
            "timeout_s": 60,
        });
        for (key, value) in workload.as_object().expect("object") {
            body[key] = value.clone();
        }
        let r = post_json(&agent, "/api/v1/docklock/runs", &body);
        assert_eq!(
            r.status,
            200,
            "{:?}\nagent log:\n{}",
            String::from_utf8_lossy(&r.body),
            agent.log()
        );
        r.json()
    };
    let by_cid = run(serde_json::json!({"executable_cid": program_cid}));
    assert_eq!(by_cid["exit"], serde_json::json!({"code": 0}), "{by_cid}");
    assert_eq!(by_cid["verdict"], "completed", "{by_cid}");
    assert_eq!(by_cid["executable_cid"], program_cid, "{by_cid}");
    assert_cgroup_report(&by_cid);
    let outputs = by_cid["outputs"].as_array().expect("outputs");
    assert_eq!(outputs[0]["path"], "copy", "{by_cid}");
    assert_eq!(
        raw_bytes(&agent, outputs[0]["cid"].as_str().expect("cid")),
        DATA
    );
    let by_path = run(serde_json::json!({"executable": program}));
    assert!(by_path.get("executable_cid").is_none(), "{by_path}");
    assert_eq!(
        rootfs_digest(&by_cid),
        rootfs_digest(&by_path),
        "the rootfs digest covers the program's bytes and name only"
    );
    assert_eq!(by_cid["input_root"], by_path["input_root"]);

    let runs: Vec<_> = std::fs::read_dir(data_dir.join("docklock-runs"))
        .expect("runs dir")
        .collect();
    assert!(runs.is_empty(), "left behind: {runs:?}");
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_cli_reads_input_cids_from_a_data_dir() {
    if let Some(reason) = skip() {
        eprintln!("skipping: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let input = tmp.path().join("input.txt");
    std::fs::write(&input, DATA).expect("write input");
    let put = common::cli_json(&[
        "store",
        "put",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
        input.to_str().expect("utf-8"),
    ]);
    let cid = put["cid"].as_str().expect("cid").to_string();
    let key = tmp.path().join("node.key");
    SigningKeyFile::new(&key)
        .save(&SigningKey::from_seed(&[7; 32]), Overwrite::Refuse)
        .expect("save key");
    let out_dir = tmp.path().join("out");
    let receipt = tmp.path().join("run.dlr");

    // An unknown CID: exit 1, the CID and the store named, nothing run.
    let absent = absent_cid();
    let refused = common::cli(
        &[
            "docklock",
            "exec",
            "/bin/sh",
            "--data-dir",
            data_dir.to_str().expect("utf-8"),
            "--input-cid",
            &format!("data={absent}"),
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--",
            "-c",
            SCRIPT,
        ],
        None,
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "input data: {absent} is not in the store in {}",
            data_dir.display()
        )),
        "{stderr}"
    );
    assert!(!out_dir.exists(), "nothing may run for an unknown input");

    let ran = common::cli(
        &[
            "--json",
            "docklock",
            "exec",
            "/bin/sh",
            "--data-dir",
            data_dir.to_str().expect("utf-8"),
            "--input-cid",
            &format!("data={cid}"),
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--receipt",
            receipt.to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
            "--",
            "-c",
            SCRIPT,
        ],
        None,
    );
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(std::fs::read(out_dir.join("copy")).expect("copy"), DATA);
    assert_eq!(std::fs::read(out_dir.join("msg")).expect("msg"), b"done\n");
    let outcome: serde_json::Value = serde_json::from_slice(
        ran.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .expect("a JSON line"),
    )
    .expect("outcome JSON");
    let inputs = outcome["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 2, "the input and the rootfs: {outcome}");
    assert_eq!(
        inputs[0],
        serde_json::json!({"name": "data", "cid": cid, "size_bytes": DATA.len()})
    );
    assert_eq!(inputs[1]["name"], "/");
    let outcome_file = tmp.path().join("outcome.json");
    std::fs::write(&outcome_file, serde_json::to_vec(&outcome).expect("json")).expect("write");
    let shown = verify(&receipt, &outcome_file);
    assert!(shown.contains(&format!("data: cid {cid}")), "{shown}");

    // A tampered list (another size) does not match the receipt's input root.
    let mut tampered = outcome.clone();
    tampered["inputs"][0]["size_bytes"] = serde_json::json!(1);
    std::fs::write(&outcome_file, serde_json::to_vec(&tampered).expect("json")).expect("write");
    let out = std::process::Command::new(bin())
        .args(["docklock", "verify"])
        .arg(&receipt)
        .arg("--inputs")
        .arg(&outcome_file)
        .output()
        .expect("run verify");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not the root of the inputs"),
        "{out:?}"
    );
}
