//! `cargo xtask chain-test`: the chain's fault matrix on a real network —
//! four `metanode agent`s in network namespaces talking QUIC (see
//! `chain_net`), each step bounded in time and printing what it checked.
//!
//! a. all four reach height 5 with identical blocks;
//! b. 10 % loss of every node's incoming packets: still progresses;
//! c. kill -9 the proposer of the next height: the other three commit it
//!    (a later round); the killed node restarts and catches up;
//! d. partition 2|2: no node finalizes anything for 10 s (halt, no fork);
//! e. partition 3|1: the three progress, the one does not;
//! f. heal: everyone progresses, the isolated node catches up; every node
//!    then holds the same block at every height (no fork anywhere);
//! g. a transfer submitted to one node gets its receipt from another, the
//!    recipient's balance moves, and a light client verifies the whole chain
//!    from genesis (certificates, PoH and tx roots) and the receipt's proof;
//! h. 40 ± 10 ms one-way delay on every node-to-node link (the relay of
//!    `chain_relay`, as there is no netem) under a steady trickle of
//!    transfers: every node gains 10 blocks, every transfer commits, every
//!    link carried relayed packets; prints the block interval p50 with and
//!    without the delay;
//! i. partition 3|1 under that delay: the relay keeps source addresses, so
//!    the nft rules still cut node 3 off (it stays, the three progress);
//!    heal: node 3 catches up through the relay;
//! j. that delay plus 10 % loss: every node gains 5 blocks; then both off,
//!    the direct path works again and no node forked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use metanode_chain::light::{self, LightClient};
use metanode_chain::types::{FinalizedBlock, Genesis, Header, Receipt, TxBody, TxKind};
use metanode_core::encoding::{Decode, Encode};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, SigningKey, SigningKeyFile};
use metanode_core::merkle::InclusionProof;
use serde::Deserialize;

use crate::chain_net::{self, Net, Spec, Timing, wait_until, wait_until_every};
use crate::chain_relay::Impairment;

const NODES: usize = 4;
/// Small timeouts so the matrix runs in a couple of minutes: blocks at most
/// every 50 ms under load, an empty heartbeat block every 500 ms, and a
/// first round timeout of 1 s (doubling per round).
pub const TIMING: Timing = Timing {
    block_interval_min_ms: 50,
    empty_block_interval_ms: 500,
    round_timeout_base_ms: 1_000,
};
/// Funded accounts: step g's sender and recipient, and the trickle sender
/// of steps h and i (which pays step g's sender, never its recipient).
const CLIENTS: usize = 3;
const CLIENT_BALANCE: u64 = 1_000_000_000;
const FIRST_HEIGHT: u64 = 5;
/// Blocks every node must gain under loss.
const LOSS_BLOCKS: u64 = 5;
const LOSS_PERCENT: u8 = 10;
/// Time for in-flight messages to land after cutting the network; a block
/// whose commit messages were already sent may still finalize in it.
const PARTITION_SETTLE: Duration = Duration::from_secs(2);
const HALT_WINDOW: Duration = Duration::from_secs(10);
const MAJORITY_BLOCKS: u64 = 3;
/// Blocks every node must gain together after a restart.
pub const LIVE_BLOCKS: u64 = 3;
const STEP_TIMEOUT: Duration = Duration::from_secs(45);
/// Round timeouts doubled during the 2|2 halt, so the majority may need a
/// few of them to agree on a round again.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries at killing a proposer before its proposal leaves (it proposes
/// 500 ms after the parent on an idle chain; we kill within milliseconds).
const CRASH_ATTEMPTS: usize = 3;
const FAST_POLL: Duration = Duration::from_millis(5);
/// Catch-up is polled every 20 ms; a sync shorter than this has no rate.
const SYNC_RATE_RESOLUTION_S: f64 = 0.1;
/// Step h's one-way delay on every node-to-node link (uniform ± jitter,
/// per packet, so packets may overtake each other as under netem).
const DELAY: Duration = Duration::from_millis(40);
const DELAY_JITTER: Duration = Duration::from_millis(10);
/// Blocks every node gains under delay; the intervals between them give
/// the p50 (the first interval may straddle the switch and is skipped).
const DELAY_BLOCKS: u64 = 10;
/// Blocks every node gains under delay and loss together.
const DELAY_LOSS_BLOCKS: u64 = 5;
/// A block needs at least a proposal to reach the others and their votes
/// to come back: two one-way trips. So under delay the median interval
/// cannot be below this many minimum one-way delays unless packets skip
/// the relay. (Without delay the interval is about the 50 ms minimum.)
const DELAY_HOPS_PER_BLOCK_MIN: u32 = 2;
/// Lets node 3 finish handling what it received before the cut; whatever
/// the relay still holds for it is dropped by the partition on arrival.
const DELAYED_PARTITION_SETTLE: Duration = Duration::from_millis(200);
/// The trickle's pause between transfers: faster than blocks come under
/// delay, so proposers always have one pending.
const TRICKLE_PAUSE: Duration = Duration::from_millis(20);
const TRICKLE_FEE: u64 = 1;
const TRICKLE_AMOUNT: u64 = 1;

/// Numbers the run measured, printed at the end.
#[derive(Debug, Default)]
struct Measured {
    lines: Vec<String>,
}

impl Measured {
    fn add(&mut self, line: String) {
        eprintln!("    {line}");
        self.lines.push(line);
    }
}

pub fn run() -> anyhow::Result<()> {
    chain_net::ensure_root("cargo xtask chain-test")?;
    let started = Instant::now();
    let spec = Spec {
        label: "chain-test",
        nodes: NODES,
        clients: CLIENTS,
        client_balance: CLIENT_BALANCE,
        timing: TIMING,
    };
    eprintln!("==> setup: genesis for {NODES} validators, {NODES} namespaces, agents");
    let mut net = Net::create(&spec)?;
    let up = net.wait_all_up(chain_net::START_TIMEOUT)?;
    eprintln!(
        "<== setup ok: {NODES} agents answer after {:.1} s (logs in {})",
        up.as_secs_f64(),
        net.run_dir().display()
    );
    let mut measured = Measured::default();
    let steps: [(&str, StepFn); 10] = [
        ("a. all nodes reach height 5 with identical blocks", step_a),
        (
            "b. 10 % packet loss on every node: still progresses",
            step_b,
        ),
        (
            "c. kill -9 the next proposer: the others commit; it restarts and catches up",
            step_c,
        ),
        ("d. partition 2|2: halt for 10 s, no fork", step_d),
        (
            "e. partition 3|1: the three progress, the one does not",
            step_e,
        ),
        (
            "f. heal: all progress, the isolated node catches up, same chain everywhere",
            step_f,
        ),
        (
            "g. transfer + receipt across nodes; light client verifies the chain",
            step_g,
        ),
        (
            "h. delay 40±10 ms one-way on every node-to-node link: every node gains 10 blocks, transfers commit",
            step_h,
        ),
        (
            "i. partition 3|1 under delay: the three progress, node 3 does not; heal: it catches up",
            step_i,
        ),
        (
            "j. delay 40±10 ms + 10 % loss: every node gains 5 blocks; then all off, no fork",
            step_j,
        ),
    ];
    for (title, step) in steps {
        eprintln!("==> {title}");
        let t = Instant::now();
        if let Err(e) = step(&mut net, &mut measured) {
            eprintln!(
                "<== FAILED after {:.1} s: {title}",
                t.elapsed().as_secs_f64()
            );
            net.print_log_tails(20);
            return Err(e.context(format!("chain-test step {title:?}")));
        }
        eprintln!("<== ok in {:.1} s", t.elapsed().as_secs_f64());
    }
    drop(net);
    eprintln!(
        "\nchain-test passed in {:.0} s:",
        started.elapsed().as_secs_f64()
    );
    for line in &measured.lines {
        eprintln!("  {line}");
    }
    Ok(())
}

type StepFn = fn(&mut Net, &mut Measured) -> anyhow::Result<()>;

fn min_height(heights: &[Option<u64>], nodes: &[usize]) -> Result<u64, String> {
    let mut min = u64::MAX;
    for &i in nodes {
        match heights[i] {
            Some(h) => min = min.min(h),
            None => return Err(format!("node {i} does not answer (heights {heights:?})")),
        }
    }
    Ok(min)
}

/// Waits until every node in `nodes` has finalized `height`.
fn wait_height(
    net: &Net,
    nodes: &[usize],
    height: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    wait_until(
        &format!("nodes {nodes:?} to reach height {height}"),
        timeout,
        || {
            let heights = net.heights();
            Ok(match min_height(&heights, nodes) {
                Ok(min) if min >= height => Ok(()),
                Ok(_) => Err(format!("heights {heights:?}")),
                Err(e) => Err(e),
            })
        },
    )?;
    Ok(started.elapsed())
}

fn all(net: &Net) -> Vec<usize> {
    (0..net.len()).collect()
}

fn step_a(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    let took = wait_height(net, &all(net), FIRST_HEIGHT, STEP_TIMEOUT)?;
    net.check_same_chain(&all(net), FIRST_HEIGHT)?;
    let status = net.status(0)?;
    ensure!(
        status.peers_connected.len() == net.len() - 1,
        "node 0 is connected to {} peers, expected {}",
        status.peers_connected.len(),
        net.len() - 1
    );
    m.add(format!(
        "height {FIRST_HEIGHT} on all nodes after {:.1} s; blocks 1..={FIRST_HEIGHT} identical on all {} nodes",
        took.as_secs_f64(),
        net.len()
    ));
    Ok(())
}

fn step_b(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    for i in 0..net.len() {
        net.loss(i, LOSS_PERCENT)?;
    }
    let result = (|| {
        let heights = net.heights();
        let start = min_height(&heights, &all(net)).map_err(anyhow::Error::msg)?;
        let took = wait_height(net, &all(net), start + LOSS_BLOCKS, STEP_TIMEOUT)?;
        anyhow::Ok((start, took))
    })();
    for i in 0..net.len() {
        net.loss(i, 0)?;
    }
    let (start, took) = result?;
    m.add(format!(
        "under {LOSS_PERCENT} % loss on every node: heights {start} -> {} in {:.1} s ({:.1} blocks/s)",
        start + LOSS_BLOCKS,
        took.as_secs_f64(),
        LOSS_BLOCKS as f64 / took.as_secs_f64()
    ));
    Ok(())
}

/// Kills the proposer of the height after the next head the observer sees;
/// returns (killed node, its height, crash-to-commit, round that decided).
pub fn crash_next_proposer(
    net: &mut Net,
    timeout: Duration,
) -> anyhow::Result<(usize, u64, Duration, u32)> {
    let observer = net.running()[0];
    let mut last = net.status(observer)?.height;
    let deadline = Instant::now() + timeout;
    // Wait for a fresh head: its successor's proposer is then still waiting
    // out the block interval.
    let (victim, height) = loop {
        ensure!(
            Instant::now() < deadline,
            "no new head on node {observer} within {timeout:?}"
        );
        let status = match net.status(observer) {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(FAST_POLL);
                continue;
            }
        };
        if status.height > last {
            last = status.height;
            let next = status.height + 1;
            let proposer = net.proposer_of(&status, next, 0)?;
            if proposer != observer && net.is_running(proposer) {
                break (proposer, next);
            }
        }
        std::thread::sleep(FAST_POLL);
    };
    net.kill9(victim)?;
    let killed = Instant::now();
    let others: Vec<usize> = net.running();
    wait_until_every(
        &format!("nodes other than the killed proposer {victim} to commit height {height}"),
        timeout,
        FAST_POLL,
        || {
            for &i in &others {
                if net.status(i).is_ok_and(|s| s.height >= height) {
                    return Ok(Ok(()));
                }
            }
            Ok(Err(format!("heights {:?}", net.heights())))
        },
    )?;
    let took = killed.elapsed();
    let round = block_round(net, others[0], height)?;
    Ok((victim, height, took, round))
}

fn block_round(net: &Net, node: usize, height: u64) -> anyhow::Result<u32> {
    #[derive(Deserialize)]
    struct Cert {
        round: u32,
    }
    #[derive(Deserialize)]
    struct Block {
        certificate: Cert,
    }
    let b: Block = wait_until(
        &format!("block {height} on node {node}"),
        STEP_TIMEOUT,
        || {
            Ok(net
                .get_json::<Block>(node, &format!("/api/v1/chain/blocks/{height}"))
                .map_err(|e| format!("{e:#}")))
        },
    )?;
    Ok(b.certificate.round)
}

/// Waits until every running node is `blocks` past the highest height any
/// of them has now: proof that all of them take part in consensus again
/// (a node its peers cannot reach does not advance).
pub fn wait_all_progress(net: &Net, blocks: u64, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let running = net.running();
    let base = net
        .heights()
        .into_iter()
        .flatten()
        .max()
        .context("no node answers")?;
    wait_height(net, &running, base + blocks, timeout)?;
    Ok(started.elapsed())
}

/// How a restarted node caught up.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    /// Restart to its API answering (includes replaying its own blocks).
    pub up: Duration,
    /// Its height when the API first answered, and the others' tip then.
    pub from: u64,
    pub target: u64,
    /// API answering to its first new block (connect, learn it is behind).
    pub first_block: Option<Duration>,
    /// API answering to holding `target`.
    pub caught_up: Duration,
}

impl CatchUp {
    pub fn blocks(&self) -> u64 {
        self.target.saturating_sub(self.from)
    }

    /// Blocks per second from the API answering to caught up.
    pub fn blocks_per_s(&self) -> f64 {
        self.blocks() as f64 / self.caught_up.as_secs_f64().max(1e-3)
    }

    /// Blocks per second once syncing had started (the first block is
    /// not counted: its time went into connecting and discovering).
    pub fn sync_blocks_per_s(&self) -> Option<f64> {
        let first = self.first_block?;
        let syncing = self.caught_up.checked_sub(first)?.as_secs_f64();
        // Below the poll interval's resolution (all blocks arrived in one
        // sync response) there is no rate to speak of.
        (self.blocks() > 1 && syncing >= SYNC_RATE_RESOLUTION_S)
            .then(|| (self.blocks() - 1) as f64 / syncing)
    }
}

/// Restarts node `i` and waits until it holds the others' tip as of the
/// moment its API answers.
pub fn restart_and_catch_up(net: &mut Net, i: usize, timeout: Duration) -> anyhow::Result<CatchUp> {
    let restarted = Instant::now();
    net.restart(i)?;
    let from = wait_until(&format!("restarted node {i} to answer"), timeout, || {
        Ok(net
            .status(i)
            .map(|s| s.height)
            .map_err(|e| format!("{e:#}")))
    })?;
    let up = restarted.elapsed();
    let others: Vec<usize> = net.running().into_iter().filter(|&j| j != i).collect();
    let target = others
        .iter()
        .filter_map(|&j| net.status(j).ok().map(|s| s.height))
        .max()
        .context("no other node answers")?;
    let t = Instant::now();
    let mut first_block = None;
    wait_until_every(
        &format!("node {i} to catch up to height {target}"),
        timeout,
        Duration::from_millis(20),
        || {
            let h = net.status(i).map(|s| s.height).unwrap_or(0);
            if h > from && first_block.is_none() {
                first_block = Some(t.elapsed());
            }
            Ok(if h >= target {
                Ok(())
            } else {
                Err(format!("node {i} at {h}"))
            })
        },
    )?;
    Ok(CatchUp {
        up,
        from,
        target,
        first_block,
        caught_up: t.elapsed(),
    })
}

fn step_c(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    let mut attempt = 0;
    let (victim, height, took, round) = loop {
        attempt += 1;
        let (victim, height, took, round) = crash_next_proposer(net, STEP_TIMEOUT)?;
        if round > 0 || attempt >= CRASH_ATTEMPTS {
            break (victim, height, took, round);
        }
        // Its proposal left before the kill: the crash was not on the
        // critical path. Bring it back and try again.
        eprintln!(
            "    height {height} was decided in round 0 (node {victim}'s proposal had left); retrying"
        );
        restart_and_catch_up(net, victim, STEP_TIMEOUT)?;
    };
    ensure!(
        round > 0,
        "in {CRASH_ATTEMPTS} attempts the killed proposer's block was always decided in round 0"
    );
    m.add(format!(
        "proposer_crash_to_commit_ms = {} (killed node {victim}, proposer of height {height}; decided in round {round})",
        took.as_millis()
    ));
    let c = restart_and_catch_up(net, victim, STEP_TIMEOUT)?;
    let live = wait_all_progress(net, LIVE_BLOCKS, RECOVERY_TIMEOUT)?;
    m.add(format!(
        "restarted node {victim}: API up in {:.1} s, then {} -> {} in {:.2} s; all 4 nodes {LIVE_BLOCKS} blocks further {:.1} s later",
        c.up.as_secs_f64(),
        c.from,
        c.target,
        c.caught_up.as_secs_f64(),
        live.as_secs_f64()
    ));
    Ok(())
}

/// Waits until all nodes are within one block of each other (so a
/// partition starts from a common tip).
fn wait_converged(net: &Net) -> anyhow::Result<()> {
    wait_until("all nodes within one block", STEP_TIMEOUT, || {
        let heights = net.heights();
        let known: Vec<u64> = heights.iter().flatten().copied().collect();
        Ok(
            match (
                known.len() == net.len(),
                known.iter().min(),
                known.iter().max(),
            ) {
                (true, Some(lo), Some(hi)) if hi - lo <= 1 => Ok(()),
                _ => Err(format!("heights {heights:?}")),
            },
        )
    })
}

fn step_d(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    wait_converged(net)?;
    net.partition(&[&[0, 1], &[2, 3]])?;
    std::thread::sleep(PARTITION_SETTLE);
    let before = net.heights();
    ensure!(
        before.iter().all(Option::is_some),
        "a node does not answer: {before:?}"
    );
    let t = Instant::now();
    while t.elapsed() < HALT_WINDOW {
        std::thread::sleep(Duration::from_millis(500));
        let now = net.heights();
        for i in 0..net.len() {
            if let (Some(a), Some(b)) = (before[i], now[i])
                && b != a
            {
                bail!(
                    "node {i} finalized height {b} (was {a}) {:.1} s into a 2|2 partition: \
                     neither half has a quorum",
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    let status = net.status(0)?;
    m.add(format!(
        "2|2 partition: heights {:?} unchanged for {} s (node 0 at round {} of height {})",
        before.iter().flatten().collect::<Vec<_>>(),
        HALT_WINDOW.as_secs(),
        status.consensus_round,
        status.consensus_height
    ));
    Ok(())
}

fn step_e(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    net.partition(&[&[0, 1, 2], &[3]])?;
    let before = net.heights();
    let start = min_height(&before, &[0, 1, 2]).map_err(anyhow::Error::msg)?;
    let lone = before[3].context("node 3 does not answer")?;
    let took = wait_height(net, &[0, 1, 2], start + MAJORITY_BLOCKS, RECOVERY_TIMEOUT)?;
    let now = net.status(3)?.height;
    ensure!(
        now == lone,
        "isolated node 3 moved from height {lone} to {now} without a quorum"
    );
    m.add(format!(
        "3|1 partition: nodes 0-2 went {start} -> {} in {:.1} s; node 3 stayed at {lone}",
        start + MAJORITY_BLOCKS,
        took.as_secs_f64()
    ));
    Ok(())
}

fn step_f(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    let before = net.heights();
    let tip = before
        .iter()
        .flatten()
        .copied()
        .max()
        .context("no heights")?;
    let lone = before[3].context("node 3 does not answer")?;
    net.heal()?;
    let healed = Instant::now();
    let mut lone_caught_up: Option<Duration> = None;
    wait_until_every(
        &format!("every node past height {tip} after healing"),
        RECOVERY_TIMEOUT,
        Duration::from_millis(20),
        || {
            let heights = net.heights();
            if lone_caught_up.is_none() && heights[3].is_some_and(|h| h >= tip) {
                lone_caught_up = Some(healed.elapsed());
            }
            Ok(match min_height(&heights, &all(net)) {
                Ok(min) if min > tip => Ok(()),
                _ => Err(format!("heights {heights:?}")),
            })
        },
    )?;
    let progress = healed.elapsed();
    let catch_up = lone_caught_up.unwrap_or(progress);
    m.add(format!(
        "heal_to_progress_ms = {} (every node past the pre-heal tip {tip})",
        progress.as_millis()
    ));
    m.add(format!(
        "isolated node 3 caught up {lone} -> {tip} in {:.2} s ({:.0} blocks/s)",
        catch_up.as_secs_f64(),
        (tip - lone) as f64 / catch_up.as_secs_f64().max(1e-3)
    ));
    let heights = net.heights();
    let common = min_height(&heights, &all(net)).map_err(anyhow::Error::msg)?;
    net.check_same_chain(&all(net), common)?;
    m.add(format!(
        "no fork: all {} nodes hold identical blocks at every height 1..={common}",
        net.len()
    ));
    Ok(())
}

#[derive(Deserialize)]
struct Account {
    balance: u64,
    next_nonce: u64,
}

#[derive(Deserialize)]
struct Submitted {
    tx_hash: String,
}

#[derive(Deserialize)]
struct ProofJson {
    leaf_index: u64,
    tree_size: u64,
    path: Vec<String>,
}

#[derive(Deserialize)]
struct ReceiptJson {
    height: u64,
    proof: ProofJson,
    header_bin: String,
    receipt_bin: String,
}

pub fn fetch_genesis(net: &Net, node: usize) -> anyhow::Result<Genesis> {
    let bytes = net.get_bytes(node, "/api/v1/chain/genesis?format=bin")?;
    Genesis::from_canonical_bytes(&bytes).context("decode the canonical genesis")
}

pub fn fetch_block(net: &Net, node: usize, height: u64) -> anyhow::Result<FinalizedBlock> {
    let bytes = net.get_bytes(node, &format!("/api/v1/chain/blocks/{height}?format=bin"))?;
    FinalizedBlock::from_canonical_bytes(&bytes)
        .with_context(|| format!("decode block {height} from node {node}"))
}

fn step_g(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    let genesis = fetch_genesis(net, 0)?;
    let clients = net.client_key_files();
    ensure!(
        clients.len() >= 2,
        "genesis funded {} clients",
        clients.len()
    );
    let sender = SigningKeyFile::new(&clients[0]).load()?;
    let recipient = SigningKeyFile::new(&clients[1]).load()?.public_key();
    let account = |node: usize, key: &str| -> anyhow::Result<Account> {
        net.get_json(node, &format!("/api/v1/chain/accounts/{key}"))
    };
    let from = account(0, &sender.public_key().to_string())?;
    let to_before = account(0, &recipient.to_string())?.balance;
    let tx = TxBody {
        chain_id: genesis.chain_id(),
        sender: sender.public_key(),
        nonce: from.next_nonce,
        fee: 1,
        kind: TxKind::Transfer {
            to: recipient,
            amount: 7,
        },
    }
    .sign(&sender)?;
    let submitted_at = Instant::now();
    let (status, body) = net.post(1, "/api/v1/chain/txs", &tx.to_canonical_bytes()?)?;
    ensure!(
        status == 202,
        "POST /api/v1/chain/txs to node 1 answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let answer: Submitted = serde_json::from_slice(&body)?;
    ensure!(
        answer.tx_hash == tx.hash().to_hex(),
        "node 1 names the transaction {}, its hash is {}",
        answer.tx_hash,
        tx.hash()
    );
    let receipt: ReceiptJson = wait_until(
        "the receipt on node 3 (submitted to node 1)",
        STEP_TIMEOUT,
        || {
            let (status, body) =
                net.get(3, &format!("/api/v1/chain/receipts/{}", answer.tx_hash))?;
            Ok(match status {
                200 => Ok(serde_json::from_slice(&body)?),
                other => Err(format!("{other}: {}", String::from_utf8_lossy(&body))),
            })
        },
    )?;
    let final_ms = submitted_at.elapsed().as_millis();
    let to_after = account(2, &recipient.to_string())?.balance;
    ensure!(
        to_after == to_before + 7,
        "recipient balance went {to_before} -> {to_after}, expected +7"
    );

    // Light client over the whole chain, from the genesis the API serves.
    // The receipt came from node 3; node 0 may be a block behind it, so wait
    // until node 0 holds the receipt's block before reading its chain.
    let tip = wait_until(
        "node 0 to hold the receipt's block",
        Duration::from_secs(30),
        || {
            let height = net.status(0)?.height;
            Ok(if height >= receipt.height {
                Ok(height)
            } else {
                Err(format!(
                    "node 0 at height {height}, receipt at {}",
                    receipt.height
                ))
            })
        },
    )?;
    let mut client = LightClient::from_genesis(&genesis);
    let mut headers: Vec<Header> = Vec::new();
    let started = Instant::now();
    for h in 1..=tip {
        let block = fetch_block(net, 0, h)?;
        client
            .verify_header(&block.block.header, &block.certificate, None)
            .with_context(|| format!("light client at height {h}"))?;
        light::verify_block_body(&block.block.header, &block.block.txs)
            .with_context(|| format!("block body at height {h}"))?;
        headers.push(block.block.header);
    }
    let verify_s = started.elapsed().as_secs_f64();
    let header = Header::from_canonical_bytes(&hex::decode(&receipt.header_bin)?)?;
    let index = receipt
        .height
        .checked_sub(1)
        .context("receipt at height 0")?;
    let verified = headers
        .get(index as usize)
        .context("receipt height beyond the verified chain")?;
    ensure!(
        header == *verified,
        "the receipt's header at height {} differs from the verified one",
        receipt.height
    );
    let r = Receipt::from_canonical_bytes(&hex::decode(&receipt.receipt_bin)?)?;
    ensure!(
        r.tx_hash == tx.hash() && r.status == 0,
        "receipt is for {} with status {}, expected {} with 0",
        r.tx_hash,
        r.status,
        tx.hash()
    );
    let proof = InclusionProof {
        leaf_index: receipt.proof.leaf_index,
        tree_size: receipt.proof.tree_size,
        path: receipt
            .proof
            .path
            .iter()
            .map(|p| p.parse::<Hash32>())
            .collect::<Result<_, _>>()?,
    };
    light::verify_receipt(verified, &r, &proof)?;
    m.add(format!(
        "transfer {} submitted to node 1 final with receipt on node 3 after {final_ms} ms (block {})",
        tx.hash(),
        receipt.height
    ));
    m.add(format!(
        "light client verified {tip} headers + bodies from genesis in {verify_s:.2} s (fetch included) and the receipt's inclusion proof"
    ));
    Ok(())
}

/// Transfers from one funded client at a steady pace, round-robin over the
/// nodes' APIs (from the hub: not through the relay), so that proposers
/// always have one pending and blocks follow each other as fast as
/// consensus allows instead of every empty-block interval.
struct Trickle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<TrickleCount>>,
    sender: PublicKey,
    first_nonce: u64,
}

#[derive(Debug, Default)]
struct TrickleCount {
    accepted: u64,
    refused: u64,
    /// The nonce the next transfer would have had.
    next_nonce: u64,
    last_refusal: Option<String>,
}

impl Trickle {
    /// Submits to the APIs of `nodes` in turn.
    fn start(
        net: &Net,
        chain_id: metanode_chain::types::ChainId,
        nodes: &[usize],
    ) -> anyhow::Result<Trickle> {
        let clients = net.client_key_files();
        ensure!(
            clients.len() >= CLIENTS,
            "genesis funded {} clients, the trickle needs {CLIENTS}",
            clients.len()
        );
        let sender: SigningKey = SigningKeyFile::new(&clients[2]).load()?;
        let recipient = SigningKeyFile::new(&clients[0]).load()?.public_key();
        let first_nonce = account(net, 0, &sender.public_key())?.next_nonce;
        ensure!(!nodes.is_empty(), "a trickle needs a node to submit to");
        let urls: Vec<String> = nodes
            .iter()
            .map(|&i| net.url(i, "/api/v1/chain/txs"))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let public = sender.public_key();
        let thread = std::thread::Builder::new()
            .name("chain-test-trickle".into())
            .spawn(move || {
                let http = chain_net::http_agent(Some(chain_net::PROBE_TIMEOUT), None);
                let mut count = TrickleCount {
                    next_nonce: first_nonce,
                    ..TrickleCount::default()
                };
                let mut k = 0usize;
                while !thread_stop.load(Ordering::Relaxed) {
                    let url = &urls[k % urls.len()];
                    k += 1;
                    match submit(&http, url, chain_id, &sender, recipient, count.next_nonce) {
                        Ok(()) => {
                            count.accepted += 1;
                            count.next_nonce += 1;
                        }
                        // The nonce stays: a gap would hold every later one.
                        Err(e) => {
                            count.refused += 1;
                            count.last_refusal = Some(format!("{e:#}"));
                        }
                    }
                    std::thread::sleep(TRICKLE_PAUSE);
                }
                count
            })
            .context("spawn the trickle thread")?;
        Ok(Trickle {
            stop,
            thread: Some(thread),
            sender: public,
            first_nonce,
        })
    }

    /// Stops submitting; then waits until node 0 has committed every
    /// accepted transfer (the sender's next nonce reaches the trickle's).
    fn finish(mut self, net: &Net, timeout: Duration) -> anyhow::Result<TrickleCount> {
        self.stop.store(true, Ordering::Relaxed);
        let count = self
            .thread
            .take()
            .context("trickle already finished")?
            .join()
            .map_err(|_| anyhow::anyhow!("the trickle thread panicked"))?;
        ensure!(
            count.accepted > 0,
            "no node accepted a trickle transfer ({} refused; last: {})",
            count.refused,
            count.last_refusal.as_deref().unwrap_or("-")
        );
        wait_until(
            &format!(
                "node 0 to commit all {} trickle transfers (sender nonce {} -> {})",
                count.accepted, self.first_nonce, count.next_nonce
            ),
            timeout,
            || {
                let next = account(net, 0, &self.sender)?.next_nonce;
                Ok(if next >= count.next_nonce {
                    Ok(())
                } else {
                    Err(format!("sender's next nonce on node 0 is {next}"))
                })
            },
        )?;
        Ok(count)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn submit(
    http: &ureq::Agent,
    url: &str,
    chain_id: metanode_chain::types::ChainId,
    sender: &SigningKey,
    to: PublicKey,
    nonce: u64,
) -> anyhow::Result<()> {
    let tx = TxBody {
        chain_id,
        sender: sender.public_key(),
        nonce,
        fee: TRICKLE_FEE,
        kind: TxKind::Transfer {
            to,
            amount: TRICKLE_AMOUNT,
        },
    }
    .sign(sender)?;
    let mut response = http
        .post(url)
        .header("content-type", "application/octet-stream")
        .send(&tx.to_canonical_bytes()?[..])
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    if status != 202 {
        let body = response.body_mut().read_to_string().unwrap_or_default();
        bail!("POST {url} answered {status}: {body}");
    }
    Ok(())
}

fn account(net: &Net, node: usize, key: &PublicKey) -> anyhow::Result<Account> {
    net.get_json(node, &format!("/api/v1/chain/accounts/{key}"))
}

/// Median of the header timestamp gaps between consecutive blocks
/// `from..=to` on node 0 (each gap: `to` − its parent), in ms.
fn block_interval_p50_ms(net: &Net, from: u64, to: u64) -> anyhow::Result<u64> {
    ensure!(to > from, "no interval between heights {from} and {to}");
    let mut stamps = Vec::new();
    for h in from..=to {
        stamps.push(fetch_block(net, 0, h)?.block.header.timestamp_ms);
    }
    let mut gaps: Vec<u64> = stamps
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    Ok(gaps[(gaps.len() - 1) / 2])
}

fn highest(net: &Net) -> anyhow::Result<u64> {
    net.heights()
        .into_iter()
        .flatten()
        .max()
        .context("no node answers")
}

fn impairment() -> anyhow::Result<Impairment> {
    Impairment::new(DELAY, DELAY_JITTER)
}

fn step_h(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    let chain_id = fetch_genesis(net, 0)?.chain_id();
    let trickle = Trickle::start(net, chain_id, &all(net))?;
    // The same load without delay first, for the comparison.
    let base_from = highest(net)? + 1;
    wait_height(net, &[0], base_from + DELAY_BLOCKS, STEP_TIMEOUT)?;
    let base_p50 = block_interval_p50_ms(net, base_from, base_from + DELAY_BLOCKS)?;

    net.set_delay(Some(impairment()?))?;
    let _ = net.take_relay_stats();
    let result = (|| {
        let start = highest(net)?;
        let took = wait_height(net, &all(net), start + DELAY_BLOCKS, STEP_TIMEOUT)?;
        let stats = net.take_relay_stats().context("the relay never started")?;
        // Skip the block that may have been half decided before the switch.
        let p50 = block_interval_p50_ms(net, start + 1, start + DELAY_BLOCKS)?;
        anyhow::Ok((start, took, stats, p50))
    })();
    net.set_delay(None)?;
    let (start, took, stats, p50) = result?;
    let count = trickle.finish(net, STEP_TIMEOUT)?;
    ensure!(
        stats.silent_links().is_empty(),
        "no packet crossed the relay on links (from, to) {:?}: the delay was not on every link",
        stats.silent_links()
    );
    ensure!(
        stats.dropped_queue_full == 0,
        "the relay dropped {} packets at its queue bound",
        stats.dropped_queue_full
    );
    let floor_ms = (impairment()?.min() * DELAY_HOPS_PER_BLOCK_MIN).as_millis() as u64;
    ensure!(
        p50 >= floor_ms,
        "block interval p50 {p50} ms under delay is below {DELAY_HOPS_PER_BLOCK_MIN} minimum \
         one-way delays ({floor_ms} ms): packets did not wait in the relay"
    );
    m.add(format!(
        "delay {}±{} ms one-way: heights {start} -> {} on all nodes in {:.1} s; block interval p50 {p50} ms (same load, no delay: {base_p50} ms)",
        DELAY.as_millis(),
        DELAY_JITTER.as_millis(),
        start + DELAY_BLOCKS,
        took.as_secs_f64()
    ));
    m.add(format!(
        "relay: {} packets on all {} links, held p50 {} ms / p99 {} ms, queue peak {} packets; dropped: {} queue, {} foreign, {} write; {} trickle transfers all committed ({} refused)",
        stats.forwarded_total(),
        net.len() * (net.len() - 1),
        stats.held_quantile_ms(0.5).unwrap_or(0),
        stats.held_quantile_ms(0.99).unwrap_or(0),
        stats.queue_packets_peak,
        stats.dropped_queue_full,
        stats.dropped_foreign,
        stats.dropped_write,
        count.accepted,
        count.refused
    ));
    Ok(())
}

fn step_i(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    let chain_id = fetch_genesis(net, 0)?.chain_id();
    // Not to node 3: its transfers could not spread, and the nonce gap
    // they leave would hold back every later one on the majority side.
    let trickle = Trickle::start(net, chain_id, &[0, 1, 2])?;
    net.set_delay(Some(impairment()?))?;
    let _ = net.take_relay_stats();
    let result = (|| {
        net.partition(&[&[0, 1, 2], &[3]])?;
        std::thread::sleep(DELAYED_PARTITION_SETTLE);
        let before = net.heights();
        let start = min_height(&before, &[0, 1, 2]).map_err(anyhow::Error::msg)?;
        let lone = before[3].context("node 3 does not answer")?;
        let took = wait_height(net, &[0, 1, 2], start + MAJORITY_BLOCKS, RECOVERY_TIMEOUT)?;
        let now = net.status(3)?.height;
        ensure!(
            now == lone,
            "isolated node 3 moved from height {lone} to {now} under delay: \
             relayed packets got past the partition"
        );
        let tip = highest(net)?;
        net.heal()?;
        let healed = Instant::now();
        wait_height(net, &[3], tip, RECOVERY_TIMEOUT)?;
        let caught_up = healed.elapsed();
        anyhow::Ok((start, lone, took, tip, caught_up))
    })();
    let stats = net.take_relay_stats();
    net.heal()?;
    net.set_delay(None)?;
    let (start, lone, took, tip, caught_up) = result?;
    let count = trickle.finish(net, STEP_TIMEOUT)?;
    m.add(format!(
        "3|1 partition under delay: nodes 0-2 went {start} -> {} in {:.1} s; node 3 stayed at {lone}; \
         healed, it caught up to {tip} in {:.2} s through the relay ({} packets relayed; {} trickle transfers committed)",
        start + MAJORITY_BLOCKS,
        took.as_secs_f64(),
        caught_up.as_secs_f64(),
        stats.map_or(0, |s| s.forwarded_total()),
        count.accepted
    ));
    Ok(())
}

fn step_j(net: &mut Net, m: &mut Measured) -> anyhow::Result<()> {
    let chain_id = fetch_genesis(net, 0)?.chain_id();
    let trickle = Trickle::start(net, chain_id, &all(net))?;
    net.set_delay(Some(impairment()?))?;
    let _ = net.take_relay_stats();
    for i in 0..net.len() {
        net.loss(i, LOSS_PERCENT)?;
    }
    let result = (|| {
        let start = highest(net)?;
        let took = wait_height(net, &all(net), start + DELAY_LOSS_BLOCKS, RECOVERY_TIMEOUT)?;
        anyhow::Ok((start, took))
    })();
    let stats = net.take_relay_stats();
    for i in 0..net.len() {
        net.loss(i, 0)?;
    }
    net.set_delay(None)?;
    let (start, took) = result?;
    let count = trickle.finish(net, STEP_TIMEOUT)?;
    m.add(format!(
        "delay {}±{} ms + {LOSS_PERCENT} % loss: heights {start} -> {} on all nodes in {:.1} s ({:.1} blocks/s); relay held {} packets; {} trickle transfers all committed",
        DELAY.as_millis(),
        DELAY_JITTER.as_millis(),
        start + DELAY_LOSS_BLOCKS,
        took.as_secs_f64(),
        DELAY_LOSS_BLOCKS as f64 / took.as_secs_f64(),
        stats.map_or(0, |s| s.forwarded_total()),
        count.accepted
    ));
    // Back on the direct path: all progress together, one chain everywhere.
    let live = wait_all_progress(net, LIVE_BLOCKS, STEP_TIMEOUT)?;
    let heights = net.heights();
    let common = min_height(&heights, &all(net)).map_err(anyhow::Error::msg)?;
    net.check_same_chain(&all(net), common)?;
    m.add(format!(
        "delay and loss off: all {} nodes {LIVE_BLOCKS} blocks further in {:.1} s; identical blocks at every height 1..={common}",
        net.len(),
        live.as_secs_f64()
    ));
    Ok(())
}
