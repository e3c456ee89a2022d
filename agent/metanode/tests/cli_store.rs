//! `metanode store …` against a data dir and through a running agent, the
//! lock-conflict message, `metanode completions`, and `--help` examples.

mod common;

use std::path::Path;

use common::{Agent, cli, cli_json, cli_ok, pattern};

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn cid_of(v: &serde_json::Value) -> String {
    v["cid"].as_str().expect("cid field").to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// put (file and stdin), get (file and stdout), stat, ls, verify, pin,
/// unpin, rm, gc — with one target, all through `--json`.
fn exercise(target: &[&str], work: &Path) {
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        // Target flags go after the subcommand (they belong to it).
        all.splice(2..2, target.iter().map(|a| a.to_string()));
        all
    };
    let run_json = |args: &[&str]| {
        let all = with(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        cli_json(&refs)
    };

    let small = b"hello from the cli".to_vec();
    let large = pattern(5 * 1024 * 1024 + 17, 7);
    let small_path = work.join("small.txt");
    let large_path = work.join("large.bin");
    std::fs::write(&small_path, &small).expect("write small");
    std::fs::write(&large_path, &large).expect("write large");

    let put = run_json(&["store", "put", s(&small_path)]);
    assert_eq!(put["size"], small.len() as u64);
    assert_eq!(put["existed"], false);
    let small_cid = cid_of(&put);
    let large_cid = cid_of(&run_json(&["store", "put", "--no-pin", s(&large_path)]));

    // stdin, human output: `CID<TAB>SIZE bytes (already stored)`.
    let all = with(&["store", "put", "-"]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let human = String::from_utf8(cli_ok(&refs, Some(&small))).expect("utf-8");
    assert_eq!(
        human.trim_end(),
        format!("{small_cid}\t{} bytes (already stored)", small.len())
    );

    // get to a file and to stdout.
    let out_path = work.join("out.bin");
    let got = run_json(&["store", "get", &large_cid, "-o", s(&out_path)]);
    assert_eq!(got["size"], large.len() as u64);
    assert!(std::fs::read(&out_path).expect("read output") == large);
    let all = with(&["store", "get", &small_cid]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(cli_ok(&refs, None), small);

    let stat = run_json(&["store", "stat", &large_cid]);
    assert_eq!(stat["size"], large.len() as u64);
    assert_eq!(stat["pinned"], false);
    assert_eq!(stat["storage"], "external");
    let stat = run_json(&["store", "stat", &small_cid]);
    assert_eq!(stat["pinned"], true);
    assert_eq!(stat["storage"], "inline");

    let ls = run_json(&["store", "ls"]);
    let mut listed: Vec<String> = ls["blobs"]
        .as_array()
        .expect("blobs array")
        .iter()
        .map(cid_of)
        .collect();
    listed.sort();
    let mut want = vec![small_cid.clone(), large_cid.clone()];
    want.sort();
    assert_eq!(listed, want);

    let verify = run_json(&["store", "verify"]);
    assert_eq!(verify["blobs_checked"], 2);
    assert_eq!(verify["damaged"].as_array().map(Vec::len), Some(0));

    // A pinned blob cannot be removed; unpin, remove, then it is gone.
    let all = with(&["store", "rm", &small_cid]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = cli(&refs, None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pinned"), "{}", stderr(&out));
    assert_eq!(run_json(&["store", "unpin", &small_cid])["pinned"], false);
    assert_eq!(run_json(&["store", "pin", &small_cid])["pinned"], true);
    run_json(&["store", "unpin", &small_cid]);
    assert_eq!(run_json(&["store", "rm", &small_cid])["removed"], true);
    let out = cli(&refs, None);
    assert!(!out.status.success(), "second rm succeeded");
    assert!(stderr(&out).contains(&small_cid), "{}", stderr(&out));
    let all = with(&["store", "get", &small_cid, "-o", s(&work.join("gone.bin"))]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = cli(&refs, None);
    assert!(!out.status.success());
    assert!(
        !work.join("gone.bin").exists(),
        "a failed get left an output file"
    );

    // gc removes the unpinned large blob.
    let gc = run_json(&["store", "gc"]);
    assert_eq!(gc["blobs_removed"], 1, "{gc}");
    let ls = run_json(&["store", "ls"]);
    assert_eq!(ls["blobs"].as_array().map(Vec::len), Some(0), "{ls}");
}

#[test]
fn store_commands_on_a_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    exercise(&["--data-dir", s(&dir)], tmp.path());
}

#[test]
fn store_commands_through_a_running_agent_and_the_lock_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let agent = Agent::start(&dir);

    // The agent holds the store: opening it directly says so and points at --api.
    let out = cli(&["store", "ls", "--data-dir", s(&dir)], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(&format!("--api {}", agent.url)), "{err}");
    let out = cli(
        &["--json", "store", "put", "--data-dir", s(&dir), "-"],
        Some(b"x"),
    );
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error on stderr");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("--api")),
        "{v}"
    );

    exercise(&["--api", &agent.url], tmp.path());
    assert!(agent.stop().success());
}

#[test]
fn api_errors_reach_the_cli() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "node:\n  name: cli-test\n  data_dir: {}\napi:\n  upload_size_bytes_max: 1048576\n",
            tmp.path().join("store").display()
        ),
    )
    .expect("write config");
    let agent = Agent::start_args(
        &["agent", "--config", s(&config)],
        &tmp.path().join("store"),
    );
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, pattern(2 * 1024 * 1024, 9)).expect("write big");
    let out = cli(&["store", "put", "--api", &agent.url, s(&big)], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("413"), "{err}");
    assert!(err.contains("upload_size_bytes_max"), "{err}");

    let missing = metanode_core::cid::ContentId::raw_blake3_of(b"absent").to_string();
    let out = cli(&["store", "stat", "--api", &agent.url, &missing], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
    let url = agent.url.clone();
    assert!(agent.stop().success());

    // Nobody listening any more: the error says whom it tried.
    let out = cli(&["store", "ls", "--api", &url], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the agent"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_lists_damage_and_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let data = b"this blob will be damaged on disk".to_vec();
    // An empty stdin is the empty blob, which is a blob like any other.
    let put = cli_json(&["store", "put", "--data-dir", s(&dir), "-"]);
    assert_eq!(put["size"], 0);
    let file = tmp.path().join("victim");
    std::fs::write(&file, &data).expect("write");
    let cid = cid_of(&cli_json(&[
        "store",
        "put",
        "--data-dir",
        s(&dir),
        s(&file),
    ]));
    // Another record after it, so the damage is mid-segment rather than at
    // the tail of the active segment (which open treats as a torn write).
    let after = tmp.path().join("after");
    std::fs::write(&after, b"written after the victim").expect("write");
    cli_json(&["store", "put", "--data-dir", s(&dir), s(&after)]);

    let packs = dir.join("packs");
    let segment = std::fs::read_dir(&packs)
        .expect("packs dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            std::fs::read(p)
                .map(|b| b.windows(data.len()).any(|w| w == &data[..]))
                .unwrap_or(false)
        })
        .expect("segment holding the blob");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let at = bytes
        .windows(data.len())
        .position(|w| w == &data[..])
        .expect("blob bytes");
    bytes[at + 3] ^= 0x20;
    std::fs::write(&segment, bytes).expect("write segment");

    let out = cli(&["--json", "store", "verify", "--data-dir", s(&dir)], None);
    assert!(!out.status.success(), "verify passed over damage");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let damaged = report["damaged"].as_array().expect("damaged array");
    assert_eq!(damaged.len(), 1, "{report}");
    assert_eq!(damaged[0]["cid"], cid.as_str());
    assert!(stderr(&out).contains(&cid), "{}", stderr(&out));

    let out = cli(&["store", "verify", "--data-dir", s(&dir)], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&cid));

    let out_path = tmp.path().join("out");
    let out = cli(
        &[
            "store",
            "get",
            "--data-dir",
            s(&dir),
            &cid,
            "-o",
            s(&out_path),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert!(!out_path.exists(), "damaged bytes were written out");
}

#[test]
fn bad_arguments_are_named() {
    let out = cli(&["store", "stat", "--data-dir", "/tmp", "not-a-cid"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not-a-cid"), "{}", stderr(&out));

    let out = cli(&["store", "ls"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--data-dir"), "{}", stderr(&out));

    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nothing-here");
    let out = cli(&["store", "ls", "--data-dir", s(&missing)], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!missing.exists(), "a read created a store");

    let out = cli(&["store", "ls", "--api", "ftp://example"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("http://"), "{}", stderr(&out));
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = String::from_utf8(cli_ok(&["completions", shell], None)).expect("utf-8");
        assert!(out.contains("metanode"), "{shell}");
        // fish spells long options `-l data-dir`.
        for word in ["store", "agent", "verify", "data-dir", "api"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
}

#[test]
fn every_store_subcommand_help_has_examples() {
    for sub in [
        "put", "get", "stat", "verify", "gc", "rm", "pin", "unpin", "ls",
    ] {
        let out = String::from_utf8(cli_ok(&["store", sub, "--help"], None)).expect("utf-8");
        assert!(out.contains("Examples:"), "store {sub} --help:\n{out}");
        assert!(
            out.contains(&format!("metanode store {sub}"))
                || out.contains(&format!("store {sub} ")),
            "{out}"
        );
    }
    let out = String::from_utf8(cli_ok(&["agent", "--help"], None)).expect("utf-8");
    assert!(out.contains("Examples:") && out.contains("--dev"), "{out}");
}
