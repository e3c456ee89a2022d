//! A 4-validator chain on loopback, driven only through the CLI:
//! `chain genesis` writes the network, four `metanode agent --config`
//! processes run it (real QUIC between them), then `chain status`,
//! `chain submit --wait`, `chain receipt`, `chain account`, `light verify`
//! and `light verify-receipt` are checked against each other. Every wait is
//! bounded; agents are killed on drop if the test fails midway.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Agent, cli, cli_json};
use serde_json::Value;

/// Bound of every wait for the network to make progress.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const VALIDATORS_COUNT: u16 = 4;

/// A base port with `VALIDATORS_COUNT` consecutive free UDP ports for the
/// BPCI endpoints, starting from a spot derived from the PID so parallel
/// runs rarely probe the same range. (The APIs take kernel-chosen ports.)
fn free_udp_base() -> u16 {
    let start = 20_000 + (std::process::id() % 2_000) as u16 * 10;
    for attempt in 0..200u16 {
        let base = start.wrapping_add(attempt * 10);
        if !(1024..=65_000).contains(&base) {
            continue;
        }
        let all_free =
            (0..VALIDATORS_COUNT).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {VALIDATORS_COUNT} consecutive free udp ports found from {start}");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `metanode --json ARGS`, retried until `done` accepts the output or the
/// bound passes (the network is asynchronous; nothing here is timed).
fn poll_json(args: &[&str], what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    loop {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = cli(&all, None);
        let last = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(value) if out.status.success() => {
                if done(&value) {
                    return value;
                }
                value.to_string()
            }
            _ => String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {PROGRESS_TIMEOUT:?}; last answer: {last}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[test]
fn four_validators_finalize_transfers_a_light_client_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("net");
    let base = free_udp_base();

    // ---- the network on disk ----
    let created = cli_json(&[
        "chain",
        "genesis",
        "--validators",
        &VALIDATORS_COUNT.to_string(),
        "--out",
        path_str(&net),
        "--fund-clients",
        "1",
        "--client-balance",
        "1000000",
        "--base-port",
        &base.to_string(),
    ]);
    let chain_id = created["chain_id"].as_str().expect("chain_id").to_string();
    assert_eq!(chain_id.len(), 64);
    let nodes = created["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), usize::from(VALIDATORS_COUNT));
    let genesis = net.join("genesis.yaml");
    let genesis_text = std::fs::read_to_string(&genesis).expect("genesis.yaml");
    assert!(
        genesis_text.contains(&format!("# chain id: {chain_id}\n")),
        "{genesis_text}"
    );
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["name"], format!("node-{i}"));
        assert_eq!(node["listen"], format!("127.0.0.1:{}", base + i as u16));
        let key = PathBuf::from(node["key"].as_str().expect("key"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).expect("key file").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        assert!(genesis_text.contains(node["public_key"].as_str().expect("public key")));
    }
    let client = &created["clients"][0];
    let client_key = client["key"].as_str().expect("client key").to_string();
    // A second `genesis` into the same directory is refused.
    let again = cli(
        &[
            "chain",
            "genesis",
            "--validators",
            "4",
            "--out",
            path_str(&net),
        ],
        None,
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists; pass --force"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // ---- four agents ----
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|node| {
            let config = node["config"].as_str().expect("config");
            let data_dir = Path::new(config).parent().expect("node dir").join("data");
            Agent::start_args(&["agent", "--config", config], &data_dir)
        })
        .collect();
    let urls: Vec<&str> = agents.iter().map(|a| a.url.as_str()).collect();

    for url in &urls {
        let status = poll_json(&["chain", "status", "--api", url], "height 3", |s| {
            s["height"].as_u64().is_some_and(|h| h >= 3)
        });
        assert_eq!(status["chain_id"], chain_id.as_str());
        assert_eq!(status["is_validator"], true);
        assert_eq!(status["validators"].as_array().map(Vec::len), Some(4));
    }

    // ---- a transfer, final on every node ----
    let recipient = nodes[3]["public_key"].as_str().expect("recipient");
    let submitted = cli_json(&[
        "chain",
        "submit",
        "--api",
        urls[0],
        "--key",
        &client_key,
        "--to",
        recipient,
        "--amount",
        "250",
        "--wait",
        "--timeout-s",
        "60",
    ]);
    assert_eq!(submitted["status"], 0, "{submitted}");
    assert_eq!(submitted["nonce"], 0);
    assert_eq!(submitted["sender"], client["public_key"]);
    let tx_hash = submitted["tx_hash"].as_str().expect("tx_hash").to_string();
    let height = submitted["height"].as_u64().expect("height");
    assert!(height >= 1);

    let receipt = poll_json(
        &["chain", "receipt", &tx_hash, "--api", urls[2]],
        "receipt on node-2",
        |r| r["height"].is_u64(),
    );
    assert_eq!(receipt["height"].as_u64(), Some(height));
    assert_eq!(receipt["receipt"]["tx_hash"], tx_hash.as_str());
    assert_eq!(receipt["receipt"]["status"], 0);
    assert_eq!(receipt["receipt"]["fee_charged"], 1);
    let block = cli_json(&["chain", "block", &height.to_string(), "--api", urls[1]]);
    assert_eq!(block["hash"], receipt["header"]["hash"]);
    assert!(
        block["txs"]
            .as_array()
            .expect("txs")
            .iter()
            .any(|t| t == tx_hash.as_str()),
        "{block}"
    );

    let sender = poll_json(
        &["chain", "account", "--key", &client_key, "--api", urls[1]],
        "sender account on node-1",
        |a| a["next_nonce"] == 1,
    );
    assert_eq!(sender["balance"], 1_000_000 - 250 - 1);
    let to = poll_json(
        &["chain", "account", recipient, "--api", urls[1]],
        "recipient account on node-1",
        |a| a["balance"].as_u64().is_some_and(|b| b >= 250),
    );
    // The recipient also proposes blocks and earns their fees; the transfer
    // is the 250, the rest (if any) is the fee of our one transaction.
    assert!(to["balance"] == 250 || to["balance"] == 251, "{to}");

    // ---- the light client, trusting only genesis.yaml ----
    let verified = cli_json(&[
        "light",
        "verify",
        "--genesis",
        path_str(&genesis),
        "--api",
        urls[3],
        "--to",
        "latest",
    ]);
    let verified_height = verified["verified_height"]
        .as_u64()
        .expect("verified height");
    assert!(verified_height >= height, "{verified}");
    assert_eq!(verified["chain_id"], chain_id.as_str());
    assert_eq!(
        verified["headers_timed"].as_u64(),
        Some(verified_height),
        "{verified}"
    );
    let mean = verified["verify_header_us"]["mean"].as_f64().expect("mean");
    let max = verified["verify_header_us"]["max"].as_f64().expect("max");
    assert!(mean > 0.0 && mean <= max, "{verified}");
    // The hash it verified is the one another node serves for that height.
    let tip = cli_json(&[
        "chain",
        "block",
        &verified_height.to_string(),
        "--api",
        urls[0],
    ]);
    assert_eq!(verified["verified_hash"], tip["hash"]);

    let proven = cli_json(&[
        "light",
        "verify-receipt",
        "--genesis",
        path_str(&genesis),
        "--api",
        urls[1],
        &tx_hash,
    ]);
    assert_eq!(proven["verified"], true);
    assert_eq!(proven["height"].as_u64(), Some(height));
    assert_eq!(proven["block_hash"], block["hash"]);
    assert!(
        proven["signers"].as_u64().is_some_and(|s| s >= 3),
        "{proven}"
    );

    // A genesis of another chain is refused by name.
    let other = dir.path().join("other");
    cli_json(&[
        "chain",
        "genesis",
        "--validators",
        "1",
        "--out",
        path_str(&other),
    ]);
    let wrong = cli(
        &[
            "light",
            "verify",
            "--genesis",
            path_str(&other.join("genesis.yaml")),
            "--api",
            urls[0],
        ],
        None,
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains(&format!(
            "runs chain {chain_id}, but the genesis file is for chain"
        )),
        "{stderr}"
    );

    // ---- a clean stop: API, then chain, then store ----
    for agent in agents {
        let status = agent.stop();
        assert!(status.success(), "agent exited with {status}");
    }
}
