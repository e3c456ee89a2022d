//! `cargo xtask bench chain`: the chain on a real network — four validators
//! (`metanode agent`) in network namespaces over QUIC (see `chain_net`) —
//! driven through the HTTP API by an open-loop Rust load generator, with
//! published figures of Besu QBFT and CometBFT as context rows.
//!
//! Phases, in order, on one chain:
//!
//! 1. Saturation: pre-signed transfers from many funded accounts, each
//!    account pinned to one node's API (so its nonces arrive in order),
//!    offered faster than the chain commits. Each load thread sends every
//!    transaction that is due when it sends in one canonical `TxBatch` to
//!    `POST /api/v1/chain/txs/batch` (at most [`SUBMIT_BATCH_TXS_MAX`]) over
//!    a keep-alive connection: a client pushing thousands of tx/s batches,
//!    and one HTTP exchange per transaction cost the 2-core machine more
//!    CPU than the chain's own work (profiled: ~20 % of all cycles at
//!    2,000 tx/s for the generator and the API together). At half load a
//!    batch is mostly one or two transactions. Submitted-but-uncommitted transactions are capped
//!    (the generator waits) so the backlog, and the drain after the phase,
//!    stays bounded; the chain always has full blocks' worth pending.
//!    `tx_per_s_4_validators` = transactions in blocks finalized during the
//!    steady window (after a warm-up), from node 0's head stream, divided by
//!    the window. Peak RSS (VmHWM) of every validator is read after it.
//! 2. Half load: open loop at 50 % of that rate; each transaction's latency
//!    runs from the moment its POST started to the moment node 0's head
//!    stream announced the block holding it (found by fetching each block's
//!    canonical bytes).
//! 3. Proposer crash on an idle chain: kill -9 the proposer of the next
//!    height right after a head, time until another node commits it.
//!    Between crash runs, and before the catch-up phase, the bench waits
//!    out the BPCI idle timeout ([`SETTLE_AFTER_RESTART`]) so one phase's
//!    restart cannot leave a stale connection that a later kill turns into
//!    a stall.
//! 4. Catch-up: one node killed while the others take half load, then
//!    restarted; blocks it synced per second from its API answering.
//! 5. Library numbers over the chain just built: light-client header
//!    verification (`LightClient::verify_header`) per header, and the PoH
//!    ordering (`PohRecorder` over each block's transactions) of the blocks
//!    of the saturation window as a share of one core.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use metanode_chain::light::{self, LightClient};
use metanode_chain::poh::PohRecorder;
use metanode_chain::types::{CHAIN_ENCODING_VERSION, ChainId, Genesis, TxBody, TxKind};
use metanode_core::encoding::Encode;
use metanode_core::hash::Hash32;
use metanode_core::keys::{SigningKey, SigningKeyFile};
use metanode_core::limits::BPCI_IDLE_TIMEOUT_MS;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chart;
use super::results::{Better, Report, Row, fmt_num, panels_from_rows, percentile};
use crate::chain_net::{self, Net, Spec, Timing, http_agent, wait_until};
use crate::chain_relay::Impairment;
use crate::chain_test::{
    LIVE_BLOCKS, crash_next_proposer, fetch_block, fetch_genesis, restart_and_catch_up,
    wait_all_progress,
};

const NODES: usize = 4;
/// Consensus timing of the bench chain: a block at most every 50 ms under
/// load, an empty heartbeat every 500 ms, a first round timeout of 1 s.
const TIMING: Timing = Timing {
    block_interval_min_ms: 50,
    empty_block_interval_ms: 500,
    round_timeout_base_ms: 1_000,
};
/// Every transfer costs fee 1 + amount 1; this funds far more than a run sends.
const CLIENT_BALANCE: u64 = 1_000_000_000_000;
const TX_FEE: u64 = 1;
const TX_AMOUNT: u64 = 1;
/// Submitted but not yet committed transactions the saturation phase allows:
/// more than a full block (10 000) so proposers never wait for
/// transactions, few enough that the drain after the phase takes seconds.
const BACKLOG_TXS_MAX: u64 = 15_000;
/// A 429 (mempool full) or 503 (node busy) is retried after this pause.
const BACKPRESSURE_PAUSE: Duration = Duration::from_millis(2);
const TRANSPORT_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Consecutive transport errors on one transaction before it is skipped.
const TRANSPORT_RETRIES_MAX: u32 = 3;
/// Transactions one load POST carries at most (the API takes up to 4,096).
const SUBMIT_BATCH_TXS_MAX: usize = 256;
/// One POST of a batch of small transactions.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heads arrive at least every empty-block interval on a healthy chain;
/// a stream silent for this long means the node (or the chain) is stuck.
/// Generous because a stall after a restart (see `wait_all_progress`) is
/// something to report, not a reason to lose the phase.
const HEADS_READ_TIMEOUT: Duration = Duration::from_secs(60);
const HEAD_LINE_BYTES_MAX: u64 = 4096;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// After a kill -9 and restart, survivors may keep writing to the dead
/// node's old QUIC connection until it idles out (seen here: the restarted
/// node hears nothing for up to ~30 s, and a second failure in that window
/// stalls the chain). Phases that kill a node start only after this long,
/// so each measures one fault, not two; the JSON records the wait.
const SETTLE_AFTER_RESTART: Duration = Duration::from_millis(BPCI_IDLE_TIMEOUT_MS + 5_000);
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Published context figures (not measured here).
const BESU_QBFT_TPS_PUBLISHED: f64 = 1_200.0;
const BESU_QBFT_SOURCE: &str = "https://wiki.hyperledger.org/display/BESU/QBFT+Performance";
const COMETBFT_QA_TPS_PUBLISHED: f64 = 400.0;
const COMETBFT_QA_SOURCE: &str = "https://docs.cometbft.com/v0.38/qa/cometbft-qa-37";
/// Targets from the issue, printed beside the numbers.
const TARGET_TX_PER_S: f64 = 5_000.0;
const TARGET_P99_MS: f64 = 1_000.0;
const TARGET_CRASH_MS: f64 = 3_000.0;
const TARGET_RSS_MB: f64 = 256.0;
const TARGET_HEADER_VERIFY_US: f64 = 500.0;
const TARGET_POH_CPU_PERCENT: f64 = 5.0;

#[derive(Debug, Args, Clone)]
pub struct ChainBenchArgs {
    /// A short smoke run (15 s saturation, short latency and catch-up
    /// phases, one crash); writes perf/results/chain.quick.json so the
    /// committed full run stays.
    #[arg(long)]
    pub quick: bool,
    /// Funded client accounts the load is spread over.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Load threads (each one keep-alive HTTP connection) per node.
    #[arg(long, default_value_t = 4)]
    pub workers_per_node: usize,
    /// Rate offered in the saturation phase, tx/s (above what the chain
    /// commits, so the chain is the bottleneck).
    #[arg(long, default_value_t = 6_000)]
    pub offered_rate: u64,
    /// Seconds node 3 stays down in the catch-up phase [default: 5 quick, 30 full].
    #[arg(long)]
    pub downtime_s: Option<u64>,
    /// One-way delay on every node-to-node link for the whole run, in ms
    /// (the userspace relay of `chain_relay`: this kernel has no netem).
    /// Results then go to chain[.quick].delay<MS>ms.{json,png}, so the
    /// undelayed ones stay.
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// Jitter of that delay, ± ms (uniform, per packet).
    #[arg(long, default_value_t = 0, requires = "delay_ms")]
    pub jitter_ms: u64,
}

impl ChainBenchArgs {
    fn impairment(&self) -> anyhow::Result<Option<Impairment>> {
        self.delay_ms
            .map(|d| {
                Impairment::new(
                    Duration::from_millis(d),
                    Duration::from_millis(self.jitter_ms),
                )
            })
            .transpose()
    }
}

/// Durations of one mode.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Plan {
    saturation_warmup_s: u64,
    saturation_window_s: u64,
    latency_warmup_s: u64,
    latency_window_s: u64,
    crash_runs: usize,
    catch_up_downtime_s: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                saturation_warmup_s: 3,
                saturation_window_s: 12,
                latency_warmup_s: 2,
                latency_window_s: 8,
                crash_runs: 1,
                catch_up_downtime_s: 5,
            }
        } else {
            Plan {
                saturation_warmup_s: 10,
                saturation_window_s: 60,
                latency_warmup_s: 3,
                latency_window_s: 30,
                crash_runs: 3,
                catch_up_downtime_s: 30,
            }
        }
    }
}

// ---------------------------------------------------------------- heads

#[derive(Debug, Clone, Copy)]
struct Head {
    height: u64,
    at: Instant,
    txs: u64,
    round: u32,
}

#[derive(Deserialize)]
struct HeadLine {
    height: Option<u64>,
    txs_count: Option<u64>,
    round: Option<u32>,
    lagged: Option<u64>,
}

/// Node `node`'s `/api/v1/chain/heads` read on its own thread: when each
/// head arrived, and a running count of committed transactions.
struct HeadsRecorder {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    handle: JoinHandle<anyhow::Result<(Vec<Head>, u64)>>,
}

impl HeadsRecorder {
    fn start(net: &Net, node: usize) -> anyhow::Result<Self> {
        let url = net.url(node, "/api/v1/chain/heads");
        let agent = http_agent(None, Some(HEADS_READ_TIMEOUT));
        let response = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        ensure!(
            response.status().as_u16() == 200,
            "GET {url} answered {}",
            response.status()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (stop2, committed2) = (stop.clone(), committed.clone());
        let handle = std::thread::spawn(move || {
            let mut reader = BufReader::new(response.into_body().into_reader());
            let mut heads = Vec::new();
            let mut lagged = 0;
            let mut line = String::new();
            while !stop2.load(Ordering::Relaxed) {
                line.clear();
                let n = (&mut reader)
                    .take(HEAD_LINE_BYTES_MAX)
                    .read_line(&mut line)
                    .with_context(|| format!("read {url}"))?;
                let at = Instant::now();
                ensure!(n > 0, "{url} ended");
                let parsed: HeadLine = serde_json::from_str(line.trim())
                    .with_context(|| format!("{url} sent {line:?}"))?;
                if let Some(l) = parsed.lagged {
                    lagged += l;
                    continue;
                }
                let (Some(height), Some(txs)) = (parsed.height, parsed.txs_count) else {
                    anyhow::bail!("{url} sent a line without height: {line:?}");
                };
                committed2.fetch_add(txs, Ordering::Relaxed);
                heads.push(Head {
                    height,
                    at,
                    txs,
                    round: parsed.round.unwrap_or(0),
                });
            }
            Ok((heads, lagged))
        });
        Ok(HeadsRecorder {
            stop,
            committed,
            handle,
        })
    }

    fn finish(self) -> anyhow::Result<(Vec<Head>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("heads reader panicked"))?
    }
}

/// How regularly blocks came: the longest gap between heads (from
/// `since`), how many were decided after round 0, the largest block.
fn heads_summary(heads: &[Head], since: Instant) -> Value {
    let mut gap_max = Duration::ZERO;
    let mut last = since;
    for h in heads {
        gap_max = gap_max.max(h.at.saturating_duration_since(last));
        last = h.at;
    }
    json!({
        "blocks": heads.len(),
        "head_gap_max_ms": gap_max.as_secs_f64() * 1e3,
        "blocks_decided_after_round_0": heads.iter().filter(|h| h.round > 0).count(),
        "round_max": heads.iter().map(|h| h.round).max(),
        "txs_per_block_max": heads.iter().map(|h| h.txs).max(),
    })
}

// ----------------------------------------------------------------- load

struct Client {
    key: SigningKey,
}

struct PreparedTx {
    hash: Hash32,
    bytes: Vec<u8>,
}

/// One load phase.
struct LoadPlan<'a> {
    targets: &'a [usize],
    workers_per_node: usize,
    rate_per_s: f64,
    duration: Duration,
    backlog_max: Option<u64>,
    /// Keep (tx, send instant) for latency.
    record: bool,
}

#[derive(Debug, Default)]
struct LoadResult {
    accepted: u64,
    backpressured: u64,
    errors: u64,
    first_error: Option<String>,
    sent: Vec<(Hash32, Instant)>,
    /// Largest delay of a send behind its open-loop schedule.
    schedule_lag_max: Duration,
    /// Sends that were due but not made because the phase ended.
    unsent_due: u64,
    /// When the first send was due (after pre-signing) and the phase ended.
    started: Option<Instant>,
    ended: Option<Instant>,
}

impl LoadResult {
    fn merge(&mut self, other: LoadResult) {
        self.accepted += other.accepted;
        self.backpressured += other.backpressured;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.sent.extend(other.sent);
        self.schedule_lag_max = self.schedule_lag_max.max(other.schedule_lag_max);
        self.unsent_due += other.unsent_due;
    }

    fn json(&self) -> Value {
        json!({
            "accepted_txs": self.accepted,
            "backpressure_answers_429_503": self.backpressured,
            "errors": self.errors,
            "first_error": self.first_error,
            "schedule_lag_max_ms": self.schedule_lag_max.as_secs_f64() * 1e3,
            "unsent_due_at_end": self.unsent_due,
        })
    }
}

/// Signs `per_client[c]` transfers for client c starting at `nonces[c]`,
/// on every core (before the clock starts).
fn presign(
    clients: &[Client],
    chain_id: ChainId,
    nonces: &[u64],
    per_client: &[usize],
) -> anyhow::Result<Vec<Vec<PreparedTx>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = clients.len().div_ceil(threads).max(1);
    let mut out: Vec<Vec<PreparedTx>> = Vec::with_capacity(clients.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients.len())
            .step_by(chunk)
            .map(|first| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for c in first..(first + chunk).min(clients.len()) {
                        let key = &clients[c].key;
                        let to = clients[(c + 1) % clients.len()].key.public_key();
                        let mut txs = Vec::with_capacity(per_client[c]);
                        for k in 0..per_client[c] as u64 {
                            let tx = TxBody {
                                chain_id,
                                sender: key.public_key(),
                                nonce: nonces[c] + k,
                                fee: TX_FEE,
                                kind: TxKind::Transfer {
                                    to,
                                    amount: TX_AMOUNT,
                                },
                            }
                            .sign(key)?;
                            txs.push(PreparedTx {
                                hash: tx.hash(),
                                bytes: tx.to_canonical_bytes()?,
                            });
                        }
                        mine.push(txs);
                    }
                    anyhow::Ok(mine)
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().map_err(|_| anyhow::anyhow!("signer panicked"))??);
        }
        anyhow::Ok(())
    })?;
    Ok(out)
}

/// Runs one load phase: every worker sends its clients' transactions in
/// nonce order, round-robin over its clients, on an open-loop schedule of
/// `rate / workers` per second (staggered across workers). Returns what was
/// sent and when.
fn run_load(
    net: &Net,
    clients: &[Client],
    chain_id: ChainId,
    nonces: &[u64],
    plan: &LoadPlan<'_>,
    committed: &AtomicU64,
) -> anyhow::Result<LoadResult> {
    let workers = plan.targets.len() * plan.workers_per_node;
    ensure!(workers > 0 && !clients.is_empty(), "no workers or clients");
    // Client c is worker (c % workers)'s; worker w posts to targets[w % n].
    let total = (plan.rate_per_s * plan.duration.as_secs_f64()).ceil() as usize + workers;
    let per_client: Vec<usize> = (0..clients.len())
        .map(|c| {
            let worker = c % workers;
            let mine = (worker..clients.len()).step_by(workers).count().max(1);
            total.div_ceil(workers).div_ceil(mine)
        })
        .collect();
    let signing = Instant::now();
    let mut signed = presign(clients, chain_id, nonces, &per_client)?;
    eprintln!(
        "    pre-signed {} transfers in {:.1} s",
        per_client.iter().sum::<usize>(),
        signing.elapsed().as_secs_f64()
    );
    // Interleave each worker's clients: tx k of client a, of client b, ...
    let mut queues: Vec<Vec<PreparedTx>> = (0..workers).map(|_| Vec::new()).collect();
    let mut per_worker: Vec<Vec<std::vec::IntoIter<PreparedTx>>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (c, txs) in signed.drain(..).enumerate() {
        per_worker[c % workers].push(txs.into_iter());
    }
    for (w, mut iters) in per_worker.into_iter().enumerate() {
        loop {
            let mut any = false;
            for it in &mut iters {
                if let Some(tx) = it.next() {
                    queues[w].push(tx);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
    }
    let accepted_total = AtomicU64::new(0);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + plan.duration;
    let interval = workers as f64 / plan.rate_per_s;
    let mut result = LoadResult {
        started: Some(start),
        ended: Some(end),
        ..LoadResult::default()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = queues
            .into_iter()
            .enumerate()
            .map(|(w, queue)| {
                let url = net.url(
                    plan.targets[w % plan.targets.len()],
                    "/api/v1/chain/txs/batch",
                );
                let accepted_total = &accepted_total;
                s.spawn(move || {
                    worker(
                        &url,
                        queue,
                        start + Duration::from_secs_f64(w as f64 / plan.rate_per_s),
                        interval,
                        end,
                        plan,
                        accepted_total,
                        committed,
                    )
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => result.merge(r),
                Err(_) => {
                    result.errors += 1;
                    result
                        .first_error
                        .get_or_insert("a load worker panicked".into());
                }
            }
        }
    });
    Ok(result)
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    status: u16,
    error: Option<String>,
}

/// The canonical `TxBatch` bytes (version, count, transactions) of `txs`,
/// from their already encoded bytes.
fn batch_body(txs: &[PreparedTx]) -> Vec<u8> {
    let len: usize = txs.iter().map(|t| t.bytes.len()).sum();
    let mut body = Vec::with_capacity(5 + len);
    body.push(CHAIN_ENCODING_VERSION);
    body.extend_from_slice(&(txs.len() as u32).to_le_bytes());
    for tx in txs {
        body.extend_from_slice(&tx.bytes);
    }
    body
}

/// One load thread: sends its transactions on the open-loop schedule, every
/// transaction that is due at the moment of sending in one
/// `POST /api/v1/chain/txs/batch` (at most [`SUBMIT_BATCH_TXS_MAX`]), so a
/// worker that fell behind catches up in one request instead of one per
/// transaction. Transactions refused with 429/503 are sent again, first,
/// after [`BACKPRESSURE_PAUSE`].
#[allow(clippy::too_many_arguments)]
fn worker(
    url: &str,
    queue: Vec<PreparedTx>,
    first_due: Instant,
    interval_s: f64,
    end: Instant,
    plan: &LoadPlan<'_>,
    accepted_total: &AtomicU64,
    committed: &AtomicU64,
) -> LoadResult {
    let agent = http_agent(Some(SUBMIT_TIMEOUT), None);
    let mut r = LoadResult::default();
    let due_of = |k: usize| first_due + Duration::from_secs_f64(k as f64 * interval_s);
    let mut queue = queue.into_iter().enumerate().peekable();
    // Refused for backpressure; sent again before anything new.
    let mut again: std::collections::VecDeque<PreparedTx> = std::collections::VecDeque::new();
    let mut transport_errors = 0;
    'send: loop {
        if again.is_empty() {
            let Some((k, _)) = queue.peek() else { break };
            let due = due_of(*k);
            if due >= end {
                break;
            }
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            } else {
                r.schedule_lag_max = r.schedule_lag_max.max(now - due);
            }
        }
        if let Some(max) = plan.backlog_max {
            while accepted_total
                .load(Ordering::Relaxed)
                .saturating_sub(committed.load(Ordering::Relaxed))
                > max
            {
                if Instant::now() >= end {
                    break 'send;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let now = Instant::now();
        if now >= end {
            r.unsent_due += again.len() as u64;
            break;
        }
        let mut batch: Vec<PreparedTx> = again.drain(..).collect();
        while batch.len() < SUBMIT_BATCH_TXS_MAX {
            match queue.peek() {
                Some((k, _)) if due_of(*k) <= now && due_of(*k) < end => {
                    if let Some((_, tx)) = queue.next() {
                        batch.push(tx);
                    }
                }
                _ => break,
            }
        }
        let sent_at = Instant::now();
        let outcome = agent
            .post(url)
            .header("content-type", "application/octet-stream")
            .send(&batch_body(&batch)[..])
            .map(|mut resp| {
                let status = resp.status().as_u16();
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                (status, body)
            });
        match outcome {
            Ok((200, body)) => {
                transport_errors = 0;
                let answer = match serde_json::from_str::<BatchAnswer>(&body) {
                    Ok(answer) if answer.results.len() == batch.len() => answer,
                    _ => {
                        r.errors += batch.len() as u64;
                        r.first_error.get_or_insert_with(|| {
                            format!("POST {url} answered an unreadable batch result: {body:.200}")
                        });
                        continue;
                    }
                };
                let mut backpressured = false;
                for (tx, item) in batch.into_iter().zip(answer.results) {
                    match item.status {
                        202 => {
                            r.accepted += 1;
                            accepted_total.fetch_add(1, Ordering::Relaxed);
                            if plan.record {
                                r.sent.push((tx.hash, sent_at));
                            }
                        }
                        429 | 503 => {
                            r.backpressured += 1;
                            backpressured = true;
                            again.push_back(tx);
                        }
                        status => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| {
                                format!(
                                    "POST {url}: a transaction was refused with {status}: {}",
                                    item.error.unwrap_or_default()
                                )
                            });
                        }
                    }
                }
                if backpressured {
                    std::thread::sleep(BACKPRESSURE_PAUSE);
                }
            }
            Ok((429 | 503, _)) => {
                r.backpressured += batch.len() as u64;
                again.extend(batch);
                std::thread::sleep(BACKPRESSURE_PAUSE);
            }
            Ok((status, body)) => {
                r.errors += batch.len() as u64;
                r.first_error
                    .get_or_insert_with(|| format!("POST {url} answered {status}: {body:.300}"));
            }
            Err(e) => {
                transport_errors += 1;
                if transport_errors > TRANSPORT_RETRIES_MAX {
                    transport_errors = 0;
                    r.errors += batch.len() as u64;
                    r.first_error
                        .get_or_insert_with(|| format!("POST {url}: {e}"));
                } else {
                    again.extend(batch);
                    std::thread::sleep(TRANSPORT_RETRY_PAUSE);
                }
            }
        }
    }
    r
}

// -------------------------------------------------------------- helpers

#[derive(Deserialize)]
struct Account {
    next_nonce: u64,
}

/// Committed next nonce of every client (ask once the mempools drained).
fn next_nonces(net: &Net, node: usize, clients: &[Client]) -> anyhow::Result<Vec<u64>> {
    clients
        .iter()
        .map(|c| {
            net.get_json::<Account>(
                node,
                &format!("/api/v1/chain/accounts/{}", c.key.public_key()),
            )
            .map(|a| a.next_nonce)
        })
        .collect()
}

/// Waits until the running nodes' mempools are empty; returns how long it
/// took, or the leftover count if they do not empty in time.
fn drain(net: &Net) -> anyhow::Result<Result<Duration, u64>> {
    let started = Instant::now();
    let running = net.running();
    let outcome = wait_until("the mempools to drain", DRAIN_TIMEOUT, || {
        let mut pending = 0;
        for &i in &running {
            pending += net.status(i)?.mempool_txs;
        }
        Ok(if pending == 0 {
            Ok(())
        } else {
            Err(format!("{pending} transactions pending"))
        })
    });
    match outcome {
        Ok(()) => Ok(Ok(started.elapsed())),
        Err(e) => {
            eprintln!("    warning: {e:#}");
            let left = running
                .iter()
                .filter_map(|&i| net.status(i).ok())
                .map(|s| s.mempool_txs)
                .sum();
            Ok(Err(left))
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// Ed25519 signs and verifies per second on one core: what bounds a chain
/// whose every transaction is verified by every validator on shared cores.
fn ed25519_rates() -> (f64, f64) {
    const N: usize = 3_000;
    let key = SigningKey::from_seed(&[7; 32]);
    let msgs: Vec<[u8; 32]> = (0..N as u64)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    let t = Instant::now();
    let sigs: Vec<_> = msgs.iter().map(|m| key.sign(m)).collect();
    let sign = N as f64 / t.elapsed().as_secs_f64();
    let public = key.public_key();
    let t = Instant::now();
    let ok = msgs
        .iter()
        .zip(&sigs)
        .filter(|(m, s)| public.verify(&m[..], s).is_ok())
        .count();
    let verify = N as f64 / t.elapsed().as_secs_f64();
    assert_eq!(ok, N, "a signature made here must verify");
    (sign, verify)
}

// ------------------------------------------------------------------ run

struct Saturation {
    tx_per_s: f64,
    window: (Instant, Instant),
    heights_in_window: (u64, u64),
    json: Value,
}

fn saturation(
    net: &Net,
    clients: &[Client],
    chain_id: ChainId,
    args: &ChainBenchArgs,
    plan: &Plan,
) -> anyhow::Result<Saturation> {
    let nonces = next_nonces(net, 0, clients)?;
    let heads = HeadsRecorder::start(net, 0)?;
    let duration = Duration::from_secs(plan.saturation_warmup_s + plan.saturation_window_s);
    let targets: Vec<usize> = (0..net.len()).collect();
    let load = run_load(
        net,
        clients,
        chain_id,
        &nonces,
        &LoadPlan {
            targets: &targets,
            workers_per_node: args.workers_per_node,
            rate_per_s: args.offered_rate as f64,
            duration,
            backlog_max: Some(BACKLOG_TXS_MAX),
            record: false,
        },
        &heads.committed,
    );
    let drained = drain(net);
    let (heads, lagged) = heads.finish()?;
    let load = load?;
    let drained = drained?;
    // The window: after the warm-up, up to the end of the load.
    let (Some(started), Some(load_end)) = (load.started, load.ended) else {
        anyhow::bail!("the load phase did not run");
    };
    let from = started + Duration::from_secs(plan.saturation_warmup_s);
    let in_window: Vec<&Head> = heads
        .iter()
        .filter(|h| h.at > from && h.at <= load_end)
        .collect();
    let window_s = (load_end - from).as_secs_f64();
    let txs: u64 = in_window.iter().map(|h| h.txs).sum();
    let tx_per_s = txs as f64 / window_s;
    let heights = (
        in_window.first().map_or(0, |h| h.height),
        in_window.last().map_or(0, |h| h.height),
    );
    let blocks = in_window.len() as f64;
    eprintln!(
        "    committed {txs} txs in {blocks} blocks over a {window_s:.1} s window: {} tx/s \
         ({} accepted, {} backpressure answers, {} errors)",
        fmt_num(tx_per_s),
        load.accepted,
        load.backpressured,
        load.errors
    );
    ensure!(
        load.errors == 0 || load.accepted > 100 * load.errors,
        "the load failed: {} errors, first: {}",
        load.errors,
        load.first_error.as_deref().unwrap_or("?")
    );
    Ok(Saturation {
        tx_per_s,
        window: (from, load_end),
        heights_in_window: heights,
        json: json!({
            "phase": "saturation",
            "offered_rate_tx_per_s": args.offered_rate,
            "backlog_txs_max": BACKLOG_TXS_MAX,
            "window_s": window_s,
            "committed_txs_in_window": txs,
            "blocks_in_window": in_window.len(),
            "txs_per_block_mean": if blocks > 0.0 { txs as f64 / blocks } else { 0.0 },
            "heights_in_window": [heights.0, heights.1],
            "heads_lagged": lagged,
            "heads": heads_summary(&heads, started),
            "drain_after_s": drained.as_ref().map(Duration::as_secs_f64).ok(),
            "left_in_mempools": drained.err(),
            "load": load.json(),
        }),
    })
}

struct Latency {
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    json: Value,
}

fn half_load(
    net: &Net,
    clients: &[Client],
    chain_id: ChainId,
    args: &ChainBenchArgs,
    plan: &Plan,
    rate: f64,
) -> anyhow::Result<Latency> {
    let nonces = next_nonces(net, 0, clients)?;
    let first_height = net.status(0)?.height + 1;
    let heads = HeadsRecorder::start(net, 0)?;
    let targets: Vec<usize> = (0..net.len()).collect();
    let load = run_load(
        net,
        clients,
        chain_id,
        &nonces,
        &LoadPlan {
            targets: &targets,
            workers_per_node: args.workers_per_node,
            rate_per_s: rate,
            duration: Duration::from_secs(plan.latency_warmup_s + plan.latency_window_s),
            backlog_max: None,
            record: true,
        },
        &heads.committed,
    );
    let drained = drain(net);
    let (heads, lagged) = heads.finish()?;
    let load = load?;
    let drained = drained?;
    let seen: HashMap<u64, Instant> = heads.iter().map(|h| (h.height, h.at)).collect();
    let last_height = heads.last().map_or(first_height, |h| h.height);
    // Which block holds each transaction: from the canonical blocks.
    let mut final_at: HashMap<Hash32, Instant> = HashMap::new();
    let mut unseen_blocks = 0;
    for h in first_height..=last_height {
        let block = fetch_block(net, 0, h)?;
        match seen.get(&h) {
            Some(at) => {
                for tx in &block.block.txs {
                    final_at.insert(tx.hash(), *at);
                }
            }
            None => unseen_blocks += 1,
        }
    }
    let started = load.started.context("the load phase did not run")?;
    let from = started + Duration::from_secs(plan.latency_warmup_s);
    let mut lat_ms: Vec<f64> = Vec::new();
    let mut missing = 0u64;
    for (hash, sent) in load.sent.iter().filter(|(_, t)| *t >= from) {
        match final_at.get(hash) {
            Some(at) => lat_ms.push(at.saturating_duration_since(*sent).as_secs_f64() * 1e3),
            None => missing += 1,
        }
    }
    lat_ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat_ms, 50.0), percentile(&lat_ms, 99.0));
    eprintln!(
        "    {} txs at {} tx/s: submit->final p50 {} ms, p99 {} ms ({missing} not found final)",
        lat_ms.len(),
        fmt_num(rate),
        p50.map_or("-".into(), fmt_num),
        p99.map_or("-".into(), fmt_num)
    );
    ensure!(
        !lat_ms.is_empty(),
        "no transaction of the half-load window was found final"
    );
    Ok(Latency {
        p50_ms: p50,
        p99_ms: p99,
        json: json!({
            "phase": "half_load",
            "rate_tx_per_s": rate,
            "window_s": plan.latency_window_s,
            "measured_txs": lat_ms.len(),
            "not_found_final": missing,
            "blocks_without_observed_head": unseen_blocks,
            "heads_lagged": lagged,
            "heads": heads_summary(&heads, started),
            "latency_ms": {
                "p50": p50, "p90": percentile(&lat_ms, 90.0), "p99": p99,
                "max": lat_ms.last(),
            },
            "drain_after_s": drained.as_ref().map(Duration::as_secs_f64).ok(),
            "left_in_mempools": drained.err(),
            "load": load.json(),
        }),
    })
}

fn settle() {
    eprintln!(
        "    waiting {} s after the last restart (BPCI idle timeout + 5 s) so stale connections are gone",
        SETTLE_AFTER_RESTART.as_secs()
    );
    std::thread::sleep(SETTLE_AFTER_RESTART);
}

fn crashes(net: &mut Net, plan: &Plan) -> anyhow::Result<(Option<f64>, Value)> {
    let mut ms = Vec::new();
    let mut runs = Vec::new();
    for run in 0..plan.crash_runs {
        if run > 0 {
            settle();
        }
        let (victim, height, took, round) = crash_next_proposer(net, PHASE_TIMEOUT)?;
        let c = restart_and_catch_up(net, victim, PHASE_TIMEOUT)?;
        let live = wait_all_progress(net, LIVE_BLOCKS, PHASE_TIMEOUT)?;
        eprintln!(
            "    killed proposer node {victim} of height {height}: committed after {} ms (round {round}); \
             restarted, caught up {} -> {} {:.1} s after its API answered; all nodes {LIVE_BLOCKS} blocks further {:.1} s later",
            took.as_millis(),
            c.from,
            c.target,
            c.caught_up.as_secs_f64(),
            live.as_secs_f64()
        );
        // Round 0 means its proposal left before the kill: not a crash on
        // the critical path, so not a sample.
        if round > 0 {
            ms.push(took.as_secs_f64() * 1e3);
        }
        runs.push(json!({
            "killed_node": victim, "height": height, "crash_to_commit_ms": took.as_secs_f64() * 1e3,
            "decided_in_round": round, "restart_to_api_s": c.up.as_secs_f64(),
            "catch_up_s": c.caught_up.as_secs_f64(), "caught_up_from": c.from, "caught_up_to": c.target,
            "all_nodes_live_again_s": live.as_secs_f64(),
        }));
    }
    Ok((
        median(ms),
        json!({
            "phase": "proposer_crash", "median_of_round_gt_0": true, "runs": runs,
            "settle_between_runs_s": SETTLE_AFTER_RESTART.as_secs_f64(),
        }),
    ))
}

fn catch_up(
    net: &mut Net,
    clients: &[Client],
    chain_id: ChainId,
    args: &ChainBenchArgs,
    plan: &Plan,
    rate: f64,
) -> anyhow::Result<(Option<f64>, Value)> {
    let victim = net.len() - 1;
    settle();
    let nonces = next_nonces(net, 0, clients)?;
    net.kill9(victim)?;
    let heads = HeadsRecorder::start(net, 0)?;
    let targets: Vec<usize> = (0..victim).collect();
    let load = run_load(
        net,
        clients,
        chain_id,
        &nonces,
        &LoadPlan {
            targets: &targets,
            workers_per_node: args.workers_per_node,
            rate_per_s: rate,
            duration: Duration::from_secs(plan.catch_up_downtime_s),
            backlog_max: Some(BACKLOG_TXS_MAX),
            record: false,
        },
        &heads.committed,
    );
    let load_end = Instant::now();
    let drained = drain(net);
    let (heads, _) = heads.finish()?;
    let load = load?;
    let drained = drained?;
    let load_start = load.started.context("the load phase did not run")?;
    let during: Vec<Head> = heads.iter().copied().filter(|h| h.at <= load_end).collect();
    let timeline: Vec<Value> = heads
        .iter()
        .map(|h| {
            json!([
                h.height,
                (h.at.saturating_duration_since(load_start).as_secs_f64() * 1e3).round(),
                h.txs,
                h.round
            ])
        })
        .collect();
    let c = restart_and_catch_up(net, victim, PHASE_TIMEOUT)?;
    let live = wait_all_progress(net, LIVE_BLOCKS, PHASE_TIMEOUT)?;
    let blocks = c.blocks();
    let per_s = c.blocks_per_s();
    let txs: u64 = heads.iter().map(|h| h.txs).sum();
    eprintln!(
        "    node {victim} missed {blocks} blocks ({txs} txs); API up {:.2} s after restart, \
         first new block {} s later, caught up {:.2} s after the API: {} blocks/s ({} once syncing)",
        c.up.as_secs_f64(),
        c.first_block
            .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64())),
        c.caught_up.as_secs_f64(),
        fmt_num(per_s),
        c.sync_blocks_per_s().map_or("-".into(), fmt_num)
    );
    Ok((
        (blocks > 0).then_some(per_s),
        json!({
            "phase": "catch_up", "node": victim, "downtime_load_tx_per_s": rate,
            "settle_before_s": SETTLE_AFTER_RESTART.as_secs_f64(),
            "blocks_missed": blocks, "txs_in_missed_blocks": txs,
            "restart_to_api_s": c.up.as_secs_f64(), "api_to_caught_up_s": c.caught_up.as_secs_f64(),
            "api_to_first_new_block_s": c.first_block.map(|d| d.as_secs_f64()),
            "all_nodes_live_again_s": live.as_secs_f64(),
            "sync_blocks_per_s_after_first": c.sync_blocks_per_s(),
            "metric": "blocks_missed / api_to_caught_up_s (connecting and discovering included)",
            "from_height": c.from, "to_height": c.target, "load": load.json(),
            "heads_during_load": heads_summary(&during, load_start),
            "heads_timeline": {"columns": ["height", "ms_since_load_start", "txs", "round"], "rows": timeline},
            "drain_before_restart_s": drained.as_ref().map(Duration::as_secs_f64).ok(),
        }),
    ))
}

/// Light-client verification of every header from genesis, and the PoH
/// recorder over the blocks of the saturation window.
fn library(
    net: &Net,
    genesis: &Genesis,
    window_heights: (u64, u64),
    window: (Instant, Instant),
) -> anyhow::Result<(f64, Option<f64>, Value)> {
    let tip = net.status(0)?.height;
    let mut client = LightClient::from_genesis(genesis);
    let mut verify = Duration::ZERO;
    let mut poh = Duration::ZERO;
    let mut poh_txs = 0usize;
    for h in 1..=tip {
        let block = fetch_block(net, 0, h)?;
        let header = &block.block.header;
        let t = Instant::now();
        client
            .verify_header(header, &block.certificate, None)
            .with_context(|| format!("light client at height {h}"))?;
        verify += t.elapsed();
        light::verify_block_body(header, &block.block.txs)
            .with_context(|| format!("block body at height {h}"))?;
        if (window_heights.0..=window_heights.1).contains(&h) && window_heights.1 > 0 {
            let t = Instant::now();
            let mut recorder = PohRecorder::new(header.prev_hash);
            for tx in &block.block.txs {
                recorder.record(tx);
            }
            let root = recorder.root();
            poh += t.elapsed();
            poh_txs += block.block.txs.len();
            ensure!(
                root == header.poh_root,
                "PoH root of block {h} recomputes to {root}, the header says {}",
                header.poh_root
            );
        }
    }
    ensure!(tip > 0, "the chain has no blocks");
    let per_header_us = verify.as_secs_f64() * 1e6 / tip as f64;
    let window_s = (window.1 - window.0).as_secs_f64();
    let poh_percent = (poh_txs > 0).then(|| poh.as_secs_f64() / window_s * 100.0);
    eprintln!(
        "    light client: {tip} headers, {} us each; PoH over {poh_txs} txs of the saturation window: {:.3} s = {}% of one core",
        fmt_num(per_header_us),
        poh.as_secs_f64(),
        poh_percent.map_or("-".into(), fmt_num)
    );
    Ok((
        per_header_us,
        poh_percent,
        json!({
            "phase": "library", "headers_verified": tip, "header_verify_total_s": verify.as_secs_f64(),
            "poh_txs": poh_txs, "poh_total_s": poh.as_secs_f64(), "poh_window_s": window_s,
            "bodies_verified": "tx root and PoH root of every block recomputed",
        }),
    ))
}

/// A row with the target check in `ours_note`.
fn row(
    metric: &str,
    unit: &'static str,
    ours: Option<f64>,
    better: Better,
    target: Option<(f64, &str)>,
) -> Row {
    let note = match (ours, target) {
        (Some(v), Some((t, text))) => {
            let met = match better {
                Better::Higher => v >= t,
                Better::Lower => v <= t,
            };
            Some(format!(
                "target {text}: {}",
                if met { "met" } else { "MISSED" }
            ))
        }
        (None, _) => Some("not measured in this run (see runs)".into()),
        (Some(_), None) => None,
    };
    Row {
        metric: metric.into(),
        unit,
        ours,
        peer: None,
        peer_value: None,
        better,
        ours_note: note,
        peer_note: None,
    }
}

pub fn run(args: &ChainBenchArgs) -> anyhow::Result<()> {
    chain_net::ensure_root("cargo xtask bench chain")?;
    ensure!(args.clients >= 1, "--clients must be at least 1");
    ensure!(
        args.workers_per_node >= 1,
        "--workers-per-node must be at least 1"
    );
    ensure!(
        args.offered_rate >= 10,
        "--offered-rate must be at least 10"
    );
    let impairment = args.impairment()?;
    let mut plan = Plan::new(args.quick);
    if let Some(s) = args.downtime_s {
        plan.catch_up_downtime_s = s;
    }
    let (sign_per_s, verify_per_s) = ed25519_rates();
    eprintln!(
        "==> setup: {NODES} validators in netns, {} funded clients",
        args.clients
    );
    let mut net = Net::create(&Spec {
        label: "bench-chain",
        nodes: NODES,
        clients: args.clients,
        client_balance: CLIENT_BALANCE,
        timing: TIMING,
    })?;
    let outcome = net
        .set_delay(impairment)
        .and_then(|()| measure(&mut net, args, &plan, sign_per_s, verify_per_s));
    if outcome.is_err() {
        net.print_log_tails(15);
    }
    drop(net);
    let report = outcome?;
    print_table(&report);
    let results = crate::workspace_root().join("perf/results");
    std::fs::create_dir_all(&results)?;
    let mut stem = if args.quick { "chain.quick" } else { "chain" }.to_owned();
    if let Some(d) = args.delay_ms {
        stem += &format!(".delay{d}ms");
    }
    let json_path = results.join(format!("{stem}.json"));
    std::fs::write(&json_path, report.to_json_pretty()? + "\n")?;
    chart::draw(&report, &results.join(format!("{stem}.png")))?;
    eprintln!("wrote {} and {stem}.png", json_path.display());
    Ok(())
}

fn measure(
    net: &mut Net,
    args: &ChainBenchArgs,
    plan: &Plan,
    sign_per_s: f64,
    verify_per_s: f64,
) -> anyhow::Result<Report> {
    net.wait_all_up(chain_net::START_TIMEOUT)?;
    wait_until("height 2 on node 0", PHASE_TIMEOUT, || {
        let h = net.status(0)?.height;
        Ok(if h >= 2 {
            Ok(())
        } else {
            Err(format!("at {h}"))
        })
    })?;
    let genesis = fetch_genesis(net, 0)?;
    let chain_id = genesis.chain_id();
    let clients = net
        .client_key_files()
        .iter()
        .map(|p| {
            SigningKeyFile::new(p)
                .load()
                .map(|key| Client { key })
                .with_context(|| format!("load {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<Client>>>()?;
    let tx_size_bytes = TxBody {
        chain_id,
        sender: clients[0].key.public_key(),
        nonce: 0,
        fee: TX_FEE,
        kind: TxKind::Transfer {
            to: clients[0].key.public_key(),
            amount: TX_AMOUNT,
        },
    }
    .sign(&clients[0].key)?
    .to_canonical_bytes()?
    .len();

    eprintln!(
        "==> saturation: offered {} tx/s for {} s (+{} s warm-up)",
        args.offered_rate, plan.saturation_window_s, plan.saturation_warmup_s
    );
    let _ = net.take_relay_stats();
    let sat = saturation(net, &clients, chain_id, args, plan)?;
    if let Some(stats) = net.take_relay_stats() {
        eprintln!(
            "    relay during saturation: {} packets, held p50 {} ms / p99 {} ms, queue peak {}; \
             dropped {} at its bound, {} by the kernel before it (TUN queue), {} writes",
            stats.forwarded_total(),
            stats.held_quantile_ms(0.5).unwrap_or(0),
            stats.held_quantile_ms(0.99).unwrap_or(0),
            stats.queue_packets_peak,
            stats.dropped_queue_full,
            net.relay_kernel_dropped()?,
            stats.dropped_write
        );
    }
    let mut rss_mb = Vec::new();
    for i in 0..net.len() {
        rss_mb.push(net.peak_rss_bytes(i)? as f64 / 1e6);
    }
    eprintln!("    peak RSS per validator: {rss_mb:.1?} MB");

    let half = (sat.tx_per_s / 2.0).max(1.0);
    eprintln!(
        "==> half load: {} tx/s for {} s (+{} s warm-up)",
        fmt_num(half),
        plan.latency_window_s,
        plan.latency_warmup_s
    );
    let lat = half_load(net, &clients, chain_id, args, plan, half)?;

    eprintln!("==> proposer crash x{} on an idle chain", plan.crash_runs);
    let (crash_ms, crash_json) = crashes(net, plan)?;

    eprintln!(
        "==> catch-up: node {} down for {} s under half load",
        net.len() - 1,
        plan.catch_up_downtime_s
    );
    let (catch_up_per_s, catch_up_json) = catch_up(net, &clients, chain_id, args, plan, half)?;

    eprintln!("==> library: light client over every header, PoH over the saturation window");
    let (header_us, poh_percent, library_json) =
        library(net, &genesis, sat.heights_in_window, sat.window)?;

    let rss_max = rss_mb.iter().copied().fold(0.0, f64::max);
    let mut tps = row(
        "tx_per_s_4_validators",
        "tx/s",
        Some(sat.tx_per_s),
        Better::Higher,
        Some((TARGET_TX_PER_S, ">= 5,000 tx/s")),
    );
    let mut rows = vec![tps.clone()];
    rows[0].peer = Some("besu-qbft-published");
    rows[0].peer_value = Some(BESU_QBFT_TPS_PUBLISHED);
    rows[0].peer_note = Some(
        "published, not measured here: 4 QBFT validators, Caliper simple-contract 'open' test, \
         2 calipers on their own nodes (520-645 TPS for ERC20 transfers)"
            .into(),
    );
    tps.peer = Some("cometbft-qa-published");
    tps.peer_value = Some(COMETBFT_QA_TPS_PUBLISHED);
    tps.peer_note = Some(
        "published, not measured here: CometBFT QA saturation point c=2 x r=200 tx/s of 1 KiB \
         on a 200-node testnet (175 validators); not a 4-validator figure"
            .into(),
    );
    rows.push(tps);
    rows.push(row(
        "submit_to_final_p50_ms_at_half_load",
        "ms",
        lat.p50_ms,
        Better::Lower,
        None,
    ));
    rows.push(row(
        "submit_to_final_p99_ms_at_half_load",
        "ms",
        lat.p99_ms,
        Better::Lower,
        Some((TARGET_P99_MS, "<= 1,000 ms")),
    ));
    rows.push(row(
        "proposer_crash_to_commit_ms",
        "ms",
        crash_ms,
        Better::Lower,
        Some((TARGET_CRASH_MS, "<= 3,000 ms")),
    ));
    rows.push(row(
        "catch_up_blocks_per_s",
        "blocks/s",
        catch_up_per_s,
        Better::Higher,
        None,
    ));
    rows.push(row(
        "light_client_header_verify_us",
        "us",
        Some(header_us),
        Better::Lower,
        Some((TARGET_HEADER_VERIFY_US, "< 500 us")),
    ));
    rows.push(row(
        "poh_ordering_cpu_percent",
        "%",
        poh_percent,
        Better::Lower,
        Some((TARGET_POH_CPU_PERCENT, "< 5 % of a core")),
    ));
    rows.push(row(
        "rss_mb_per_validator",
        "MB",
        Some(rss_max),
        Better::Lower,
        Some((TARGET_RSS_MB, "<= 256 MB")),
    ));
    let panels = panels_from_rows(&rows);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Ok(Report {
        bench: "chain",
        when: crate::time::now_iso8601(),
        mode: if args.quick { "quick" } else { "full" },
        machine: json!({
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "kernel": kernel.trim(),
            "ed25519_sign_per_s_one_core": sign_per_s,
            "ed25519_verify_per_s_one_core": verify_per_s,
            "note": "the 4 validators and the load generator share these cores; every transaction's \
                     signature is checked by every validator",
        }),
        ours: serde_json::Map::from_iter([
            (
                "system".to_owned(),
                json!(
                    "metanode agent x4 (release build), one network namespace each, BPCI over QUIC \
                       (hybrid X25519MLKEM768) on a veth bridge"
                ),
            ),
            ("timing".to_owned(), serde_json::to_value(TIMING)?),
            (
                "durability".to_owned(),
                json!(
                    "safety WAL, block log and receipt log fsynced before the node acts on them (chain-node)"
                ),
            ),
            ("rss_mb_per_node".to_owned(), json!(rss_mb)),
            (
                "targets".to_owned(),
                json!({
                    "tx_per_s_4_validators": ">= 5000", "submit_to_final_p99_ms_at_half_load": "<= 1000",
                    "proposer_crash_to_commit_ms": "<= 3000", "rss_mb_per_validator": "<= 256",
                    "light_client_header_verify_us": "< 500", "poh_ordering_cpu_percent": "< 5",
                }),
            ),
        ]),
        peers: serde_json::Map::from_iter([
            (
                "besu-qbft-published".to_owned(),
                json!({
                    "source": BESU_QBFT_SOURCE,
                    "figures": "4 QBFT validators (Forest DB): 750-1200 TPS simple contract, 520-645 TPS ERC20 transfer, Caliper, stable operation",
                    "measured_here": false,
                }),
            ),
            (
                "cometbft-qa-published".to_owned(),
                json!({
                    "source": COMETBFT_QA_SOURCE,
                    "figures": "saturation point c=2 connections x r=200 tx/s (400 tx/s of 1024-byte txs), 200-node testnet",
                    "measured_here": false,
                }),
            ),
        ]),
        workload: json!({
            "validators": NODES,
            "clients": args.clients,
            "client_pinning": "each client account posts to one node (client c -> worker c % workers -> node w % 4)",
            "workers_per_node": args.workers_per_node,
            "submit": "every transaction due at the moment of sending in one canonical TxBatch per POST /api/v1/chain/txs/batch (at most 256), HTTP/1.1 keep-alive, per-transaction 429/503 retried",
            "tx": {"kind": "transfer", "fee": TX_FEE, "amount": TX_AMOUNT, "size_bytes": tx_size_bytes},
            "pre_signed": true,
            "offered_rate_tx_per_s": args.offered_rate,
            "measured_max_tx_per_s": sat.tx_per_s,
            "half_load_tx_per_s": half,
            "committed_count_source": "node 0's /api/v1/chain/heads (txs_count per head)",
            "latency": "POST start -> node 0's head announcing the block holding the tx (open loop)",
            "plan": plan,
            "link_delay": args.delay_ms.map(|d| json!({
                "one_way_ms": d,
                "jitter_ms": args.jitter_ms,
                "mechanism": "every node-to-node packet through a userspace TUN relay in the hub namespace (no sch_netem in this kernel), uniform per-packet delay",
                "seed": chain_net::RELAY_SEED,
            })),
        }),
        rows,
        runs: vec![sat.json, lat.json, crash_json, catch_up_json, library_json],
        panels,
    })
}

fn print_table(report: &Report) {
    println!("\nchain bench ({}), {}", report.mode, report.when);
    println!(
        "{:<38} {:<9} {:>10}  {:<22} {:>10}  note",
        "metric", "unit", "ours", "peer", "peer value"
    );
    for r in &report.rows {
        println!(
            "{:<38} {:<9} {:>10}  {:<22} {:>10}  {}",
            r.metric,
            r.unit,
            r.ours.map_or("missing".into(), fmt_num),
            r.peer.unwrap_or("-"),
            r.peer_value.map_or("-".into(), fmt_num),
            r.ours_note.as_deref().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn rows_carry_the_target_verdict() {
        let met = row(
            "a",
            "ms",
            Some(900.0),
            Better::Lower,
            Some((1000.0, "<= 1,000 ms")),
        );
        assert_eq!(met.ours_note.as_deref(), Some("target <= 1,000 ms: met"));
        let missed = row(
            "b",
            "tx/s",
            Some(10.0),
            Better::Higher,
            Some((5000.0, ">= 5,000")),
        );
        assert_eq!(missed.ours_note.as_deref(), Some("target >= 5,000: MISSED"));
        let none = row("c", "x", None, Better::Higher, None);
        assert!(none.ours_note.is_some_and(|n| n.contains("not measured")));
    }

    #[test]
    fn panels_group_peers_under_their_metric() {
        let mut a = row("tps", "tx/s", Some(2.0), Better::Higher, None);
        a.peer = Some("p1");
        a.peer_value = Some(1.0);
        let mut b = a.clone();
        b.peer = Some("p2");
        b.peer_value = Some(3.0);
        let c = row("lat", "ms", Some(5.0), Better::Lower, None);
        let panels = panels_from_rows(&[a, b, c]);
        assert_eq!(panels.len(), 2);
        assert_eq!(
            panels[0].bars,
            vec![("ours", Some(2.0)), ("p1", Some(1.0)), ("p2", Some(3.0))]
        );
        assert_eq!(panels[1].bars, vec![("ours", Some(5.0))]);
    }

    #[test]
    fn presigned_transfers_chain_nonces_per_client() {
        let clients: Vec<Client> = (1..=3u8)
            .map(|i| Client {
                key: SigningKey::from_seed(&[i; 32]),
            })
            .collect();
        let chain_id = ChainId(Hash32([9; 32]));
        let signed = presign(&clients, chain_id, &[5, 0, 2], &[2, 1, 3]).expect("signs");
        assert_eq!(
            signed.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 1, 3]
        );
        for (c, txs) in signed.iter().enumerate() {
            for (k, p) in txs.iter().enumerate() {
                let tx = <metanode_chain::types::SignedTx as metanode_core::encoding::Decode>::from_canonical_bytes(&p.bytes)
                    .expect("decodes");
                assert_eq!(tx.hash(), p.hash);
                tx.verify_signature().expect("valid signature");
                assert_eq!(tx.body().sender, clients[c].key.public_key());
                assert_eq!(tx.body().nonce, [5, 0, 2][c] + k as u64);
                assert_eq!(tx.body().chain_id, chain_id);
            }
        }
    }
}
