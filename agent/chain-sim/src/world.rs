//! The simulated world: nodes, network, disks, clients and the event loop.
//!
//! Time is a simulated millisecond counter; the only source of randomness is
//! the seed. Events are ordered by (time, sequence number), so two events at
//! the same millisecond run in the order they were scheduled and a seed
//! replays exactly.

use std::cell::RefCell;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::io;
use std::rc::Rc;

use metanode_chain::app::{Application, BlockContext, LedgerApp};
use metanode_chain::node::{NodeConfig, NodeCore, NodeEffect};
use metanode_chain::qbft::{ConsensusMessage, EngineConfig, Payload, SafetyState, SignedPayload};
use metanode_chain::types::{
    ChainId, FinalizedBlock, Genesis, GenesisAccount, Height, SignedTx, TxBody, TxKind,
    ValidatorSet,
};
use metanode_chain_store::{BlockStore, ChainDisk, FakeDisk, SafetyWal};
use metanode_core::hash::{Hash32, blake3_256};
use metanode_core::keys::{PublicKey, SigningKey};

use crate::check::{Checker, SimFailure};
use crate::rng::SimRng;
use crate::scenario::{Byzantine, FaultEvent, Scenario};

/// Client accounts funded at genesis that generate the workload.
const CLIENTS_COUNT: usize = 6;
const CLIENT_BALANCE: u64 = 1_000_000_000;
/// Every node ticks at least this often (a real node has a periodic timer
/// too), which also retries block sync whose messages were lost.
const PERIODIC_TICK_MS: u64 = 250;
const CLIENT_TICK_MS: u64 = 50;
const BYZANTINE_TICK_MS: u64 = 300;
/// Blocks shipped per sync response.
const SYNC_BATCH_BLOCKS_MAX: u64 = 32;
/// A client that saw no progress for this long re-reads its nonce from a
/// node (its in-flight transactions were lost with a crashed mempool).
const CLIENT_RESYNC_MS: u64 = 3_000;
/// Old messages a replaying Byzantine node remembers.
const REPLAY_MEMORY_COUNT_MAX: usize = 512;

/// Events one seed may process; honest runs need well under a tenth.
const EVENTS_COUNT_MAX: u64 = 2_000_000;

const WAL_FILE: &str = "safety.wal";

/// A fake disk shared between a node's WAL and block store and the world,
/// which needs to crash it while the node holds it.
#[derive(Clone, Debug, Default)]
struct SharedDisk(Rc<RefCell<FakeDisk>>);

impl ChainDisk for SharedDisk {
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.0.borrow().read(name)
    }
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().append(name, bytes)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.0.borrow_mut().sync(name)
    }
    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().replace(name, bytes)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.0.borrow_mut().truncate(name, len)
    }
}

#[derive(Clone, Debug)]
enum Msg {
    // Boxed: thousands of these wait in the event queue at once.
    Consensus(Box<ConsensusMessage>),
    Tx(Box<SignedTx>),
    SyncRequest { from_height: Height },
    SyncResponse { blocks: Vec<FinalizedBlock> },
}

#[derive(Clone, Debug)]
enum EventKind {
    Deliver { to: usize, from: usize, msg: Msg },
    Wake { node: usize, incarnation: u64 },
    PeriodicTick { node: usize },
    ClientTick,
    ByzantineTick { node: usize },
    Fault(FaultEvent),
    Restart { node: usize },
    Heal,
}

impl EventKind {
    fn name(&self) -> &'static str {
        match self {
            EventKind::Deliver {
                msg: Msg::Consensus(_),
                ..
            } => "deliver_consensus",
            EventKind::Deliver {
                msg: Msg::Tx(_), ..
            } => "deliver_tx",
            EventKind::Deliver {
                msg: Msg::SyncRequest { .. },
                ..
            } => "sync_request",
            EventKind::Deliver {
                msg: Msg::SyncResponse { .. },
                ..
            } => "sync_response",
            EventKind::Wake { .. } => "wake",
            EventKind::PeriodicTick { .. } => "periodic_tick",
            EventKind::ClientTick => "client_tick",
            EventKind::ByzantineTick { .. } => "byzantine_tick",
            EventKind::Fault(_) => "fault",
            EventKind::Restart { .. } => "restart",
            EventKind::Heal => "heal",
        }
    }
}

struct Event {
    at_ms: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: invert for earliest-first.
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

struct Running {
    core: NodeCore<LedgerApp>,
    wal: SafetyWal<SharedDisk, SafetyState>,
    blocks: BlockStore<SharedDisk>,
}

struct SimNode {
    /// Validator index whose key this node uses (a twin shares it).
    validator: usize,
    key_seed: [u8; 32],
    public_key: PublicKey,
    byzantine: Option<Byzantine>,
    is_twin: bool,
    disk: SharedDisk,
    running: Option<Running>,
    /// Bumped on every crash so timers of a dead incarnation are ignored.
    incarnation: u64,
    wakes: BTreeSet<u64>,
    skew_ms: i64,
    /// Highest height a peer was seen at, and that peer: sync target.
    /// Sync target: (height seen, peer to ask, attempts so far).
    behind: Option<(Height, usize, u32)>,
    replay_memory: VecDeque<ConsensusMessage>,
}

impl SimNode {
    fn honest(&self) -> bool {
        self.byzantine.is_none() && !self.is_twin
    }
}

/// Client account generating transfers.
struct Client {
    key: SigningKey,
    next_nonce: u64,
    last_progress_ms: u64,
    last_seen_nonce: u64,
    resyncs: u64,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub scenario: String,
    /// Final height of every honest node.
    pub heights: Vec<Height>,
    pub txs_committed: u64,
    pub messages_sent: u64,
    pub messages_rejected: u64,
    pub crashes: u64,
    pub sim_ms: u64,
    /// Digest of every decision (node, height, hash, time) in order: two runs
    /// of one seed must produce the same digest.
    pub trace_digest: Hash32,
}

pub struct World {
    scenario: Scenario,
    rng: SimRng,
    net_rng: SimRng,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Event>,
    genesis: Genesis,
    chain_id: ChainId,
    validators: ValidatorSet,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    partition: Option<BTreeSet<usize>>,
    healed: bool,
    checker: Checker,
    messages_sent: u64,
    messages_rejected: u64,
    crashes: u64,
    trace: blake3::Hasher,
    verbose: bool,
}

fn validator_seed(i: usize) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    seed[8] = 0x5a;
    seed
}

fn client_seed(i: usize) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    seed[8] = 0xc1;
    seed
}

pub fn node_config(chain_id: ChainId) -> NodeConfig {
    let mut engine = EngineConfig::new(chain_id);
    engine.round_timeout_base_ms = 1_000;
    engine.round_timeout_max_ms = 8_000;
    let mut config = NodeConfig::new(engine);
    config.block_interval_min_ms = 250;
    config.empty_block_interval_ms = 1_000;
    config.timestamp_skew_allowance_ms = 2_000;
    config
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("scenario", &self.scenario)
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

impl World {
    pub fn new(scenario: Scenario) -> World {
        let mut rng = SimRng::new(scenario.seed ^ 0x5151_5151_5151_5151);
        let net_rng = rng.fork();
        let keys: Vec<SigningKey> = (0..scenario.validators_count)
            .map(|i| SigningKey::from_seed(&validator_seed(i)))
            .collect();
        let validators = ValidatorSet::new(keys.iter().map(|k| k.public_key()).collect())
            .expect("distinct generated validator keys");
        let clients: Vec<Client> = (0..CLIENTS_COUNT)
            .map(|i| Client {
                key: SigningKey::from_seed(&client_seed(i)),
                next_nonce: 0,
                last_progress_ms: 0,
                last_seen_nonce: 0,
                resyncs: 0,
            })
            .collect();
        let genesis = Genesis {
            chain_name: format!("sim-{}", scenario.seed),
            genesis_time_ms: 0,
            validators: validators.clone(),
            accounts: clients
                .iter()
                .map(|c| GenesisAccount {
                    key: c.key.public_key(),
                    balance: CLIENT_BALANCE,
                })
                .collect(),
        };
        let chain_id = genesis.chain_id();
        let mut nodes = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let byz = scenario.is_byzantine(i);
            nodes.push(SimNode {
                validator: i,
                key_seed: validator_seed(i),
                public_key: key.public_key(),
                byzantine: byz.filter(|b| *b != Byzantine::Twins),
                is_twin: byz == Some(Byzantine::Twins),
                disk: SharedDisk::default(),
                running: None,
                incarnation: 0,
                wakes: BTreeSet::new(),
                skew_ms: scenario.clock_skew_ms[i],
                behind: None,
                replay_memory: VecDeque::new(),
            });
            if byz == Some(Byzantine::Twins) {
                nodes.push(SimNode {
                    validator: i,
                    key_seed: validator_seed(i),
                    public_key: key.public_key(),
                    byzantine: None,
                    is_twin: true,
                    disk: SharedDisk::default(),
                    running: None,
                    incarnation: 0,
                    wakes: BTreeSet::new(),
                    skew_ms: -scenario.clock_skew_ms[i],
                    behind: None,
                    replay_memory: VecDeque::new(),
                });
            }
        }
        let checker = Checker::new(scenario.seed, genesis.clone());
        World {
            scenario,
            rng,
            net_rng,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            genesis,
            chain_id,
            validators,
            nodes,
            clients,
            partition: None,
            healed: false,
            checker,
            messages_sent: 0,
            messages_rejected: 0,
            crashes: 0,
            trace: blake3::Hasher::new(),
            verbose: std::env::var_os("METANODE_SIM_VERBOSE").is_some(),
        }
    }

    fn schedule(&mut self, at_ms: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Event {
            at_ms,
            seq: self.seq,
            kind,
        });
    }

    fn local_ms(&self, node: usize) -> u64 {
        (self.now_ms as i64 + self.nodes[node].skew_ms).max(0) as u64
    }

    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for node in 0..self.nodes.len() {
            self.start(node)?;
            self.schedule(PERIODIC_TICK_MS, EventKind::PeriodicTick { node });
            if self.nodes[node].byzantine.is_some() {
                self.schedule(BYZANTINE_TICK_MS, EventKind::ByzantineTick { node });
            }
        }
        if self.scenario.tx_per_s > 0 {
            self.schedule(CLIENT_TICK_MS, EventKind::ClientTick);
        }
        for fault in self.scenario.faults.clone() {
            let at = match &fault {
                FaultEvent::Partition { at_ms, .. }
                | FaultEvent::Crash { at_ms, .. }
                | FaultEvent::FsyncError { at_ms, .. } => *at_ms,
            };
            self.schedule(at, EventKind::Fault(fault));
        }
        let heal_at = self.scenario.heal_at_ms;
        self.schedule(heal_at, EventKind::Heal);
        let end_ms = heal_at + self.scenario.liveness_window_ms;
        let mut events_count: u64 = 0;
        let mut kinds: std::collections::BTreeMap<&'static str, u64> = Default::default();
        while let Some(event) = self.queue.pop() {
            if event.at_ms > end_ms {
                break;
            }
            events_count += 1;
            *kinds.entry(event.kind.name()).or_default() += 1;
            if events_count > EVENTS_COUNT_MAX {
                // A run that needs this many events is spinning (a timer or
                // message storm): a liveness bug in its own right.
                return Err(self.checker.fail(
                    event.at_ms,
                    format!(
                        "event storm: more than {EVENTS_COUNT_MAX} events by {} ms: {kinds:?}",
                        event.at_ms
                    ),
                ));
            }
            self.now_ms = event.at_ms;
            self.handle(event.kind)?;
        }
        self.now_ms = end_ms;
        self.finish()
    }

    fn start(&mut self, node: usize) -> Result<(), SimFailure> {
        let n = &mut self.nodes[node];
        let key = SigningKey::from_seed(&n.key_seed);
        let disk = n.disk.clone();
        let (wal, safety, _report) =
            SafetyWal::<SharedDisk, SafetyState>::open(disk.clone(), WAL_FILE).map_err(|e| {
                self.checker
                    .fail(self.now_ms, format!("node {node}: wal open: {e}"))
            })?;
        let (blocks, _report) = BlockStore::open(disk, self.genesis.hash()).map_err(|e| {
            self.checker
                .fail(self.now_ms, format!("node {node}: block store open: {e}"))
        })?;
        // Rebuild the application by replaying every stored block: the
        // in-memory state is never trusted across a restart.
        let replayed = crate::check::replay(&self.genesis, &blocks, None).map_err(|e| {
            self.checker
                .fail(self.now_ms, format!("node {node}: replay: {e}"))
        })?;
        let now = self.local_ms(node);
        let (core, effects) = NodeCore::new(
            node_config(self.chain_id),
            key,
            &self.genesis,
            replayed.finish(safety),
            now,
        );
        let n = &mut self.nodes[node];
        n.running = Some(Running { core, wal, blocks });
        n.wakes.clear();
        self.apply(node, effects)
    }

    fn crash(&mut self, node: usize) {
        let seed = self.rng.next_u64();
        let n = &mut self.nodes[node];
        if n.running.take().is_none() {
            return;
        }
        n.incarnation += 1;
        n.wakes.clear();
        n.behind = None;
        n.disk.0.borrow_mut().crash(seed);
        self.crashes += 1;
    }

    fn handle(&mut self, kind: EventKind) -> Result<(), SimFailure> {
        match kind {
            EventKind::Deliver { to, from, msg } => self.deliver(to, from, msg),
            EventKind::Wake { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation {
                    return Ok(());
                }
                let local = self.local_ms(node);
                self.nodes[node].wakes.retain(|t| *t > local);
                self.tick(node)
            }
            EventKind::PeriodicTick { node } => {
                if self.verbose && node == 0 && self.now_ms.is_multiple_of(1_000) {
                    self.print_status();
                }
                self.schedule(
                    self.now_ms + PERIODIC_TICK_MS,
                    EventKind::PeriodicTick { node },
                );
                if self.nodes[node].running.is_none() {
                    return Ok(());
                }
                self.request_sync(node);
                self.tick(node)
            }
            EventKind::ClientTick => {
                self.schedule(self.now_ms + CLIENT_TICK_MS, EventKind::ClientTick);
                self.client_tick();
                Ok(())
            }
            EventKind::ByzantineTick { node } => {
                self.schedule(
                    self.now_ms + BYZANTINE_TICK_MS,
                    EventKind::ByzantineTick { node },
                );
                self.byzantine_tick(node);
                Ok(())
            }
            EventKind::Fault(fault) => self.fault(fault),
            EventKind::Restart { node } => {
                if self.nodes[node].running.is_none() {
                    self.start(node)?;
                }
                Ok(())
            }
            EventKind::Heal => {
                self.healed = true;
                self.partition = None;
                let heights = self.honest_heights();
                self.checker
                    .on_heal(self.now_ms, heights.into_iter().max().unwrap_or(0));
                for node in 0..self.nodes.len() {
                    if self.nodes[node].running.is_none() {
                        self.start(node)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn fault(&mut self, fault: FaultEvent) -> Result<(), SimFailure> {
        if self.healed {
            return Ok(());
        }
        match fault {
            FaultEvent::Partition {
                until_ms, side_a, ..
            } => {
                // An empty side marks the end of a partition.
                if side_a.is_empty() {
                    self.partition = None;
                    return Ok(());
                }
                // Map validator indices to node ids so a twin stays on its
                // validator's side.
                let side: BTreeSet<usize> = (0..self.nodes.len())
                    .filter(|id| side_a.contains(&self.nodes[*id].validator))
                    .collect();
                self.partition = Some(side);
                self.schedule(
                    until_ms,
                    EventKind::Fault(FaultEvent::Partition {
                        at_ms: until_ms,
                        until_ms,
                        side_a: Vec::new(),
                    }),
                );
            }
            FaultEvent::Crash {
                node, restart_ms, ..
            } => {
                let id = self.node_id_of_validator(node);
                self.crash(id);
                self.schedule(restart_ms, EventKind::Restart { node: id });
            }
            FaultEvent::FsyncError { node, .. } => {
                let id = self.node_id_of_validator(node);
                self.nodes[id].disk.0.borrow_mut().fail_next_sync(None);
            }
        }
        Ok(())
    }

    fn node_id_of_validator(&self, validator: usize) -> usize {
        self.nodes
            .iter()
            .position(|n| n.validator == validator)
            .expect("every validator has a node")
    }

    fn tick(&mut self, node: usize) -> Result<(), SimFailure> {
        let local = self.local_ms(node);
        let Some(running) = self.nodes[node].running.as_mut() else {
            return Ok(());
        };
        let mut out = Vec::new();
        running.core.on_tick(local, &mut out);
        self.apply(node, out)
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Msg) -> Result<(), SimFailure> {
        if self.nodes[to].running.is_none() {
            return Ok(());
        }
        match msg {
            Msg::Consensus(m) => {
                if self.nodes[to].byzantine == Some(Byzantine::Replayer) {
                    let mem = &mut self.nodes[to].replay_memory;
                    if mem.len() == REPLAY_MEMORY_COUNT_MAX {
                        mem.pop_front();
                    }
                    mem.push_back((*m).clone());
                }
                let running = self.nodes[to].running.as_mut().expect("checked above");
                let mut out = Vec::new();
                running.core.on_message(*m, &mut out);
                self.apply(to, out)
            }
            Msg::Tx(tx) => {
                let running = self.nodes[to].running.as_mut().expect("checked above");
                // Rejections (duplicates, stale nonces, full pool) are normal
                // under duplication and resubmission.
                let _ = running.core.submit_tx(*tx);
                Ok(())
            }
            Msg::SyncRequest { from_height } => {
                let running = self.nodes[to].running.as_ref().expect("checked above");
                let tip = running.blocks.tip().map(|(h, _)| h).unwrap_or(0);
                if from_height > tip {
                    return Ok(());
                }
                let to_height = tip.min(from_height + SYNC_BATCH_BLOCKS_MAX - 1);
                let blocks = running
                    .blocks
                    .range(from_height, to_height, 64 * 1024 * 1024)
                    .map_err(|e| {
                        self.checker
                            .fail(self.now_ms, format!("node {to}: block read: {e}"))
                    })?;
                self.send(to, from, Msg::SyncResponse { blocks });
                Ok(())
            }
            Msg::SyncResponse { blocks } => {
                for block in blocks {
                    let Some(running) = self.nodes[to].running.as_mut() else {
                        return Ok(());
                    };
                    if block.block.header.height != running.core.tip().height + 1 {
                        continue;
                    }
                    let mut out = Vec::new();
                    if let Err(e) = running.core.on_synced_block(block, &mut out) {
                        // A sync peer serving a block we cannot accept is a
                        // fact worth a metric, not a crash.
                        self.messages_rejected += 1;
                        let _ = e;
                        self.apply(to, out)?;
                        break;
                    }
                    self.apply(to, out)?;
                }
                Ok(())
            }
        }
    }

    fn request_sync(&mut self, node: usize) {
        let Some((height, first_peer, attempts)) = self.nodes[node].behind else {
            return;
        };
        let Some(running) = self.nodes[node].running.as_ref() else {
            return;
        };
        let tip = running.core.tip().height;
        if tip >= height {
            self.nodes[node].behind = None;
            return;
        }
        // The peer that showed us the higher height first; if that did not
        // help (lost reply, peer crashed, a twin that is itself behind), ask
        // someone else each retry, as a real node rotates sync peers.
        let peer = if attempts == 0 {
            first_peer
        } else {
            let others: Vec<usize> = (0..self.nodes.len())
                .filter(|p| *p != node && self.nodes[*p].running.is_some())
                .collect();
            if others.is_empty() {
                return;
            }
            *self.rng.pick(&others)
        };
        self.nodes[node].behind = Some((height, first_peer, attempts + 1));
        self.send(
            node,
            peer,
            Msg::SyncRequest {
                from_height: tip + 1,
            },
        );
    }

    /// Executes a node's effects in order; a failed persist crashes the node
    /// before anything after it (in particular the vote it guarded) happens.
    fn apply(&mut self, node: usize, effects: Vec<NodeEffect>) -> Result<(), SimFailure> {
        for effect in effects {
            if self.nodes[node].running.is_none() {
                return Ok(());
            }
            match effect {
                NodeEffect::PersistSafety(state) => {
                    let running = self.nodes[node].running.as_mut().expect("checked");
                    if running.wal.persist(&state).is_err() {
                        self.crash_after_disk_error(node);
                        return Ok(());
                    }
                }
                NodeEffect::Broadcast(msg) => {
                    if self.nodes[node].honest() {
                        self.checker.on_signed(
                            self.now_ms,
                            self.nodes[node].validator,
                            msg.head(),
                        )?;
                    }
                    self.broadcast(node, msg);
                }
                NodeEffect::StoreBlock { block, .. } => {
                    let running = self.nodes[node].running.as_mut().expect("checked");
                    if running.blocks.append(&block).is_err() {
                        self.crash_after_disk_error(node);
                        return Ok(());
                    }
                    let hash = block.block.hash();
                    let height = block.block.header.height;
                    self.trace.update(&(node as u64).to_le_bytes());
                    self.trace.update(&height.to_le_bytes());
                    self.trace.update(hash.as_bytes());
                    self.trace.update(&self.now_ms.to_le_bytes());
                    // Every node's decision must agree, Byzantine ones
                    // included: they run honest code and only lie on the
                    // wire, so a disagreeing decision would be our bug.
                    self.checker.on_decided(self.now_ms, node, &block)?;
                }
                NodeEffect::WakeAt { at_ms } => {
                    let n = &mut self.nodes[node];
                    if n.wakes.insert(at_ms) {
                        let global = (at_ms as i64 - n.skew_ms).max(self.now_ms as i64) as u64;
                        let incarnation = n.incarnation;
                        self.schedule(global, EventKind::Wake { node, incarnation });
                    }
                }
                NodeEffect::Behind { height, peer } => {
                    // Of the nodes holding that key (twins share one), the
                    // one furthest ahead.
                    let peer_id = (0..self.nodes.len())
                        .filter(|p| self.nodes[*p].key_public() == peer)
                        .filter_map(|p| {
                            let r = self.nodes[p].running.as_ref()?;
                            Some((r.core.tip().height, p))
                        })
                        .max()
                        .map(|(_, p)| p)
                        .unwrap_or_else(|| self.rng.range(0, self.nodes.len() as u64 - 1) as usize);
                    let n = &mut self.nodes[node];
                    if n.behind.is_none_or(|(h, _, _)| height > h) {
                        n.behind = Some((height, peer_id, 0));
                        self.request_sync(node);
                    }
                }
                NodeEffect::Rejected { .. } => self.messages_rejected += 1,
            }
        }
        Ok(())
    }

    fn crash_after_disk_error(&mut self, node: usize) {
        self.crash(node);
        // The operator (or the supervisor) restarts it; before the heal the
        // restart is delayed so the fault matters, after it immediately.
        let restart = self.now_ms + if self.healed { 100 } else { 1_500 };
        self.schedule(restart, EventKind::Restart { node });
    }

    fn broadcast(&mut self, from: usize, msg: ConsensusMessage) {
        let msg = self.byzantine_rewrite(from, msg);
        let Some(msg) = msg else { return };
        for to in 0..self.nodes.len() {
            if to != from {
                self.send(from, to, Msg::Consensus(Box::new(msg.clone())));
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.messages_sent += 1;
        if let Some(side) = &self.partition
            && side.contains(&from) != side.contains(&to)
        {
            return;
        }
        let faulty = !self.healed;
        if faulty && self.net_rng.chance(self.scenario.loss_percent) {
            return;
        }
        let copies = if faulty && self.net_rng.chance(self.scenario.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if faulty {
                self.net_rng
                    .range(self.scenario.delay_ms_min, self.scenario.delay_ms_max)
            } else {
                self.net_rng.range(1, 10)
            };
            self.schedule(
                self.now_ms + delay,
                EventKind::Deliver {
                    to,
                    from,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn client_tick(&mut self) {
        let per_tick = (self.scenario.tx_per_s * CLIENT_TICK_MS).div_ceil(1000);
        for _ in 0..per_tick {
            let c = self.rng.range(0, self.clients.len() as u64 - 1) as usize;
            // Learn the committed nonce from some running honest node.
            let observed = self
                .nodes
                .iter()
                .filter(|n| n.honest())
                .find_map(|n| n.running.as_ref())
                .map(|r| r.core.app().next_nonce(&self.clients[c].key.public_key()));
            let client = &mut self.clients[c];
            if let Some(nonce) = observed {
                if nonce > client.last_seen_nonce {
                    client.last_seen_nonce = nonce;
                    client.last_progress_ms = self.now_ms;
                }
                if client.next_nonce > nonce
                    && self.now_ms.saturating_sub(client.last_progress_ms) > CLIENT_RESYNC_MS
                {
                    client.next_nonce = nonce;
                    client.resyncs += 1;
                    client.last_progress_ms = self.now_ms;
                }
                client.next_nonce = client.next_nonce.max(nonce);
            }
            let to = self.clients[(c + 1) % self.clients.len()].key.public_key();
            let client = &mut self.clients[c];
            let tx = TxBody {
                chain_id: self.chain_id,
                sender: client.key.public_key(),
                nonce: client.next_nonce,
                fee: 1 + client.resyncs,
                kind: TxKind::Transfer { to, amount: 1 },
            }
            .sign(&client.key)
            .expect("small transaction within bounds");
            client.next_nonce += 1;
            self.checker.on_submitted(&tx);
            // Gossip: the client hands the transaction to every node (each
            // copy crosses the faulty network on its own).
            for node in 0..self.nodes.len() {
                self.send_from_client(node, tx.clone());
            }
        }
    }

    fn send_from_client(&mut self, to: usize, tx: SignedTx) {
        let faulty = !self.healed;
        if faulty && self.net_rng.chance(self.scenario.loss_percent) {
            return;
        }
        let delay = self.net_rng.range(1, 30);
        // `from` is only used for sync replies; clients never get any.
        self.schedule(
            self.now_ms + delay,
            EventKind::Deliver {
                to,
                from: to,
                msg: Msg::Tx(Box::new(tx)),
            },
        );
    }

    /// One status line per simulated second with `METANODE_SIM_VERBOSE=1`:
    /// every node's height/round (or "down"), the partition and the heal.
    fn print_status(&self) {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.running {
                Some(r) => format!(
                    "v{}{}:{}/r{}",
                    n.validator,
                    if n.is_twin {
                        "t"
                    } else if n.byzantine.is_some() {
                        "b"
                    } else {
                        ""
                    },
                    r.core.engine().height(),
                    r.core.engine().round()
                ),
                None => format!("v{}:down", n.validator),
            })
            .collect();
        eprintln!(
            "{:>6} ms  {}  partition={:?} healed={}",
            self.now_ms,
            nodes.join(" "),
            self.partition,
            self.healed
        );
    }

    fn honest_heights(&self) -> Vec<Height> {
        self.nodes
            .iter()
            .filter(|n| n.honest())
            .filter_map(|n| n.running.as_ref().map(|r| r.core.tip().height))
            .collect()
    }

    fn finish(self) -> Result<SimReport, SimFailure> {
        let mut finals = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            if !n.honest() {
                continue;
            }
            let Some(r) = n.running.as_ref() else {
                return Err(self.checker.fail(
                    self.now_ms,
                    format!("honest node {id} is not running at the end"),
                ));
            };
            finals.push((
                id,
                r.core.tip().clone(),
                r.core.app().committed_state_root(),
                &r.blocks,
            ));
        }
        self.checker.finish(self.now_ms, &finals)?;
        Ok(SimReport {
            seed: self.scenario.seed,
            scenario: self.scenario.to_string(),
            heights: finals.iter().map(|(_, t, _, _)| t.height).collect(),
            txs_committed: self.checker.txs_committed(),
            messages_sent: self.messages_sent,
            messages_rejected: self.messages_rejected,
            crashes: self.crashes,
            sim_ms: self.now_ms,
            trace_digest: Hash32(*self.trace.finalize().as_bytes()),
        })
    }
}

impl SimNode {
    fn key_public(&self) -> PublicKey {
        self.public_key
    }
}

// ------------------------------------------------------------- byzantine

impl World {
    /// What a Byzantine node actually sends instead of `msg` (None = drop).
    fn byzantine_rewrite(
        &mut self,
        from: usize,
        msg: ConsensusMessage,
    ) -> Option<ConsensusMessage> {
        if self.nodes[from].byzantine.is_none() {
            return Some(msg);
        }
        let key = SigningKey::from_seed(&self.nodes[from].key_seed);
        match (self.nodes[from].byzantine, msg) {
            (Some(Byzantine::WithholdProposals), ConsensusMessage::Proposal { .. }) => None,
            (
                Some(Byzantine::InvalidProposals),
                ConsensusMessage::Proposal {
                    proposal,
                    mut block,
                    round_changes,
                    prepares,
                },
            ) if round_changes.is_empty() => {
                // Corrupt the state root and re-sign, so the proposal is
                // well-formed and only re-execution can catch it.
                block.header.state_root = blake3_256(&self.rng.next_u64().to_le_bytes());
                let Payload::Proposal { height, round, .. } = proposal.payload else {
                    return None;
                };
                let proposal = SignedPayload::sign(
                    &self.chain_id,
                    Payload::Proposal {
                        height,
                        round,
                        block_hash: block.hash(),
                    },
                    &key,
                );
                Some(ConsensusMessage::Proposal {
                    proposal,
                    block,
                    round_changes,
                    prepares,
                })
            }
            (_, msg) => Some(msg),
        }
    }

    fn byzantine_tick(&mut self, node: usize) {
        let Some(kind) = self.nodes[node].byzantine else {
            return;
        };
        let Some(running) = self.nodes[node].running.as_ref() else {
            return;
        };
        let height = running.core.engine().height();
        let round = running.core.engine().round();
        let key = SigningKey::from_seed(&self.nodes[node].key_seed);
        match kind {
            Byzantine::Replayer => {
                let mem_len = self.nodes[node].replay_memory.len();
                for _ in 0..mem_len.min(6) {
                    let i = self.rng.range(0, mem_len as u64 - 1) as usize;
                    let msg = self.nodes[node].replay_memory[i].clone();
                    for to in 0..self.nodes.len() {
                        if to != node {
                            self.send(node, to, Msg::Consensus(Box::new(msg.clone())));
                        }
                    }
                }
            }
            Byzantine::Forger => {
                let far = round + 1 + self.rng.range(0, 4) as u32;
                let fake_hash = blake3_256(&self.rng.next_u64().to_le_bytes());
                let fake_prepare = SignedPayload::sign(
                    &self.chain_id,
                    Payload::Prepare {
                        height,
                        round: far - 1,
                        block_hash: fake_hash,
                    },
                    &key,
                );
                // A "quorum" made of one signer repeated, claiming a
                // prepared block that nobody prepared.
                let rc = ConsensusMessage::RoundChange {
                    round_change: SignedPayload::sign(
                        &self.chain_id,
                        Payload::RoundChange {
                            height,
                            round: far,
                            prepared: Some((far - 1, fake_hash)),
                        },
                        &key,
                    ),
                    prepared_block: None,
                    prepares: vec![fake_prepare.clone(); self.validators.quorum()],
                };
                let commit = ConsensusMessage::Commit(SignedPayload::sign(
                    &self.chain_id,
                    Payload::Commit {
                        height,
                        round,
                        block_hash: fake_hash,
                        seal: key.sign(fake_hash.as_bytes()),
                    },
                    &key,
                ));
                let mut garbage = fake_prepare.clone();
                garbage.signature.0[0] ^= 1;
                for msg in [
                    rc,
                    commit,
                    ConsensusMessage::Prepare(fake_prepare),
                    ConsensusMessage::Prepare(garbage),
                ] {
                    for to in 0..self.nodes.len() {
                        if to != node {
                            self.send(node, to, Msg::Consensus(Box::new(msg.clone())));
                        }
                    }
                }
            }
            Byzantine::Twins | Byzantine::InvalidProposals | Byzantine::WithholdProposals => {}
        }
    }
}

/// Context for executing block `header` on top of its parent, used by the
/// replay checker and restarts.
pub fn block_context(
    chain_id: ChainId,
    block: &FinalizedBlock,
    validators: &ValidatorSet,
) -> BlockContext {
    let h = &block.block.header;
    BlockContext {
        chain_id,
        height: h.height,
        timestamp_ms: h.timestamp_ms,
        proposer: h.proposer,
        validators: validators.clone(),
    }
}
