//! IPFS interop with software nobody here wrote (issue #8): the real agent
//! serves, and npm's `@helia/verified-fetch`, `@ipld/car`, `ipfs-car` and
//! `ipfs-unixfs-exporter` (through the scripts in hw-tests/ipfs-interop)
//! fetch, verify, read and produce the data.
//!
//! Needs `npm ci` in hw-tests/ipfs-interop (bootstrap/test.sh does it).
//! Without it these tests fail and say so: a skipped interop test would
//! hide exactly what it exists to catch.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Agent, cli_json, get, pattern, request};
use sha2::Digest;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn interop_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw-tests/ipfs-interop");
    assert!(
        dir.join("node_modules/@helia/verified-fetch").is_dir(),
        "the IPFS interop scripts are not installed: run `npm ci --prefix {}` (bootstrap/test.sh does it)",
        dir.display()
    );
    dir
}

/// Run `node --import ./polyfill.mjs SCRIPT ARGS`; return (exit code, its
/// one JSON line, stderr).
fn node(script: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let dir = interop_dir();
    let child = Command::new("node")
        .current_dir(&dir)
        .args(["--import", "./polyfill.mjs", script])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node (is nodejs installed?)");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(SCRIPT_TIMEOUT) {
        Ok(out) => out.expect("wait for node"),
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned and have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("node {script} {args:?} did not finish within {SCRIPT_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let line = stdout.lines().last().unwrap_or_default();
    let json = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("node {script} printed no json ({e}):\nstdout: {stdout}\nstderr: {stderr}")
    });
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn node_ok(script: &str, args: &[&str]) -> serde_json::Value {
    let (code, json, stderr) = node(script, args);
    assert_eq!(
        code,
        0,
        "node {script} {args:?} failed: {json}\nstderr (tail): {}",
        tail(&stderr)
    );
    assert_eq!(json["ok"], true, "{json}");
    json
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(3000)..]
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn add_unixfs(agent: &Agent, data: &[u8], query: &str) -> String {
    let r = request(
        agent.addr,
        "POST",
        &format!("/api/v1/unixfs{query}"),
        &[],
        Some(data),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["cid"].as_str().expect("cid").to_string()
}

#[test]
fn verified_fetch_reads_a_blake3_blob_and_a_multi_block_unixfs_file() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(&tmp.path().join("store"));

    let blob = pattern(100_000, 1);
    let r = request(agent.addr, "POST", "/api/v1/blobs", &[], Some(&blob));
    assert_eq!(r.status, 201);
    let blob_cid = r.json()["cid"].as_str().unwrap().to_string();
    assert!(blob_cid.starts_with("bafkr4i"), "{blob_cid}");
    let v = node_ok(
        "verified-fetch.mjs",
        &[
            "--gateway",
            &agent.url,
            "--cid",
            &blob_cid,
            "--blake3",
            "--expect-sha256",
            &sha256_hex(&blob),
        ],
    );
    assert_eq!(v["size_bytes"], blob.len() as u64);

    // 3 MiB + 5 bytes at 256 KiB chunks: 13 raw leaves under a dag-pb root.
    let file = pattern(3 * 1024 * 1024 + 5, 2);
    let root = add_unixfs(&agent, &file, "");
    assert!(root.starts_with("bafybei"), "{root}");
    let v = node_ok(
        "verified-fetch.mjs",
        &[
            "--gateway",
            &agent.url,
            "--cid",
            &root,
            "--expect-sha256",
            &sha256_hex(&file),
        ],
    );
    assert_eq!(v["size_bytes"], file.len() as u64);

    // The same file as plain `ipfs add` names it (`?cid-version=0`): a Qm…
    // root over dag-pb leaves, fetched and verified by Helia, and a CAR
    // whose every block the reference exporter checks.
    let root_v0 = add_unixfs(&agent, &file, "?cid-version=0");
    assert!(root_v0.starts_with("Qm"), "{root_v0}");
    let sha = sha256_hex(&file);
    let v = node_ok(
        "verified-fetch.mjs",
        &[
            "--gateway",
            &agent.url,
            "--cid",
            &root_v0,
            "--expect-sha256",
            &sha,
        ],
    );
    assert_eq!(v["size_bytes"], file.len() as u64);
    let v = node_ok(
        "gateway-car-check.mjs",
        &[
            "--gateway",
            &agent.url,
            "--cid",
            &root_v0,
            "--dag-scope",
            "all",
            "--expect-sha256",
            &sha,
        ],
    );
    // 13 leaves and their root.
    assert_eq!(v["blocks"], 14, "{v}");
    let v = node_ok(
        "gateway-car-check.mjs",
        &[
            "--gateway",
            &agent.url,
            "--cid",
            &root_v0,
            "--entity-bytes",
            "262140:262150",
        ],
    );
    assert_eq!(
        v["blocks"], 3,
        "root and the two leaves around byte 262144: {v}"
    );
    assert!(agent.stop().success());
}

#[test]
fn gateway_car_responses_are_complete_and_in_dfs_order() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(&tmp.path().join("store"));
    // Small chunks and a deep enough DAG (100000 / 1024 = 98 leaves).
    let file = pattern(100_000, 3);
    let root = add_unixfs(&agent, &file, "?chunker=size-1024");
    let sha = sha256_hex(&file);
    for (scope, range, via, blocks) in [
        ("all", None, "both", 99),
        ("entity", None, "format", 99),
        ("block", None, "accept", 1),
        // Bytes 2048..=4095 are leaves 2 and 3, plus the root.
        ("entity", Some("2048:4095"), "both", 3),
        // The last 10 bytes: the last leaf.
        ("entity", Some("-10:*"), "both", 2),
    ] {
        let mut args = vec![
            "--gateway",
            &agent.url,
            "--cid",
            &root,
            "--dag-scope",
            scope,
            "--via",
            via,
        ];
        if let Some(r) = range {
            args.extend(["--entity-bytes", r]);
        }
        if scope != "block" && range.is_none() {
            args.extend(["--expect-sha256", &sha]);
        }
        let v = node_ok("gateway-car-check.mjs", &args);
        assert_eq!(v["blocks"], blocks, "{scope} {range:?}: {v}");
        assert!(
            v["content_type"]
                .as_str()
                .is_some_and(|t| t.starts_with("application/vnd.ipld.car; version=1")),
            "{v}"
        );
    }
    assert!(agent.stop().success());
}

#[test]
fn an_exported_car_reads_block_by_block_with_ipld_car() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let dir = store.to_str().unwrap();
    let input = tmp.path().join("in.bin");
    std::fs::write(&input, pattern(1024 * 1024 + 17, 4)).unwrap();
    let added = cli_json(&["store", "add", "--data-dir", dir, input.to_str().unwrap()]);
    let root = added["cid"].as_str().unwrap().to_string();
    let car = tmp.path().join("out.car");
    let exported = cli_json(&[
        "store",
        "export-car",
        "--data-dir",
        dir,
        &root,
        "-o",
        car.to_str().unwrap(),
    ]);
    // 5 leaves (4 full chunks + 17 bytes) + the root.
    assert_eq!(exported["blocks"], 6);
    let v = node_ok(
        "car-read.mjs",
        &[
            "--car",
            car.to_str().unwrap(),
            "--expect-root",
            &root,
            "--expect-blocks",
            "6",
        ],
    );
    assert_eq!(v["roots"][0], root.as_str());
}

#[test]
fn a_car_made_by_ipfs_car_imports_with_the_same_root_and_serves_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.bin");
    // Over one 1 MiB chunk (ipfs-car's size), so the root is a dag-pb node.
    let data = pattern(2 * 1024 * 1024 + 333, 5);
    std::fs::write(&input, &data).unwrap();
    let car = tmp.path().join("packed.car");
    let packed = node(
        "ipfs-car-pack.mjs",
        &[
            "--input",
            input.to_str().unwrap(),
            "--output",
            car.to_str().unwrap(),
        ],
    );
    assert_eq!(packed.0, 0, "{}\n{}", packed.1, tail(&packed.2));
    let packed_root = packed.1["root"].as_str().expect("root").to_string();

    let agent = Agent::start(&tmp.path().join("store"));
    let imported = cli_json(&[
        "store",
        "import-car",
        "--api",
        &agent.url,
        car.to_str().unwrap(),
    ]);
    assert_eq!(imported["roots"][0], packed_root.as_str(), "{imported}");
    assert_eq!(imported["pinned"], true);
    // The path gateway renders the file from the imported DAG.
    let r = get(agent.addr, &format!("/ipfs/{packed_root}"));
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert!(agent.stop().success());
}

/// Find `needle` in the store's segment files.
fn find_in_segments(store: &Path, needle: &[u8]) -> Option<(PathBuf, usize)> {
    for entry in std::fs::read_dir(store.join("packs")).ok()? {
        let path = entry.ok()?.path();
        let bytes = std::fs::read(&path).ok()?;
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            return Some((path, at));
        }
    }
    None
}

#[test]
fn a_corrupt_block_is_not_served_and_the_client_rejects_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let file = pattern(600_000, 6);
    let root = {
        let agent = Agent::start(&store);
        let root = add_unixfs(&agent, &file, "");
        assert!(agent.stop().success());
        root
    };
    // Flip one byte inside the second leaf (bytes 262144..524288).
    let probe = &file[300_000..300_064];
    let (segment, at) = find_in_segments(&store, probe).expect("leaf bytes in a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[at + 10] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let agent = Agent::start(&store);
    // The path gateway never sends the damaged bytes as file content: the
    // body breaks off before them (after the status line, or before it when
    // hyper had not flushed the head yet: both are honest). Read the raw
    // connection so either shape is seen as it is.
    let raw = {
        use std::io::{Read, Write};
        let mut stream = common::connect(agent.addr);
        write!(
            stream,
            "GET /ipfs/{root} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            agent.addr
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        raw
    };
    assert!(
        raw.len() < file.len(),
        "{} bytes came back for a {}-byte file with a damaged block",
        raw.len(),
        file.len()
    );
    assert!(
        !raw.windows(64)
            .any(|w| w == &file[300_000 + 64..300_000 + 128]),
        "bytes of the damaged leaf were sent"
    );
    // verified-fetch must fail rather than return bytes.
    let (code, json, stderr) = node(
        "verified-fetch.mjs",
        &[
            "--gateway",
            &agent.url,
            "--cid",
            &root,
            "--expect-sha256",
            &sha256_hex(&file),
            "--timeout-ms",
            "30000",
        ],
    );
    assert_eq!(code, 1, "{json}\n{}", tail(&stderr));
    assert_eq!(json["ok"], false, "{json}");
    assert!(agent.stop().success());
}
