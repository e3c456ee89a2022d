//! [`ChainNode`]: start, shutdown, and the [`ChainControl`] the API serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use metanode_api::{
    AccountInfo, BoxFuture, BpciMetrics, ChainControl, ChainError, ChainMetrics, ChainStatus,
    HeadEvent, LabeledCount, ReceiptWithProof,
};
use metanode_bpci::{Endpoint, Metrics, Rejections, ServiceId, TransportConfig};
use metanode_chain::light::receipt_proof;
use metanode_chain::mempool::{MempoolError, VerifiedTx};
use metanode_chain::types::{ChainId, FinalizedBlock, Genesis, Height, SignedTx};
use metanode_core::encoding::{Encode, EncodeError};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, SigningKey, format_key_file, parse_key_file};
use metanode_core::limits::CHAIN_TX_SIZE_BYTES_MAX;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::{ChainNodeConfig, StartError};
use crate::limits::{HEADS_CHANNEL_COUNT_MAX, SUBMIT_BATCH_TXS_COUNT_MAX, SUBMIT_QUEUE_COUNT_MAX};
use crate::recover::{Recovered, recover};
use crate::runtime::{Command, LoopParts, Net, run_thread};
use crate::shared::{Counters, MESSAGE_REJECT_REASONS, Shared, Snapshot, TxSource};

/// A running chain node. Share it as `Arc<ChainNode>` (also as
/// `Arc<dyn ChainControl>` for the API).
pub struct ChainNode {
    genesis: Genesis,
    chain_id: ChainId,
    node_key: PublicKey,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    commands: mpsc::Sender<Command>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Serializes shutdowns; true once one completed.
    shut_down: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for ChainNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainNode")
            .field("chain", &self.genesis.chain_name)
            .field("node_key", &self.node_key)
            .field("local_addr", &self.local_addr)
            .field("height", &self.shared.snapshot.read().tip.height)
            .finish_non_exhaustive()
    }
}

/// A second copy of `key`: the engine and the transport each own one, and
/// `SigningKey` is deliberately not `Clone`. The key-file text round trip
/// is the public way to copy it (the text is zeroized on drop).
fn duplicate_key(key: &SigningKey) -> Result<SigningKey, StartError> {
    let text = format_key_file(key);
    parse_key_file(text.as_bytes()).map_err(|e| StartError::Key(e.to_string()))
}

impl ChainNode {
    /// Opens the disk state (WAL, block store, receipt log), replays the
    /// stored blocks through a fresh `LedgerApp::from_genesis` (checking
    /// each certificate and root), binds the QUIC endpoint and starts the
    /// node loop. Must be called inside a tokio multi-thread runtime (the
    /// endpoint's tasks run on it).
    pub async fn start(config: ChainNodeConfig) -> Result<Arc<ChainNode>, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(StartError::NoRuntime);
        }
        let ChainNodeConfig {
            genesis,
            key,
            data_dir,
            listen,
            peers,
            node: node_config,
            key_exchange,
        } = config;
        let chain_id = genesis.chain_id();
        if node_config.engine.chain_id != chain_id {
            return Err(StartError::ChainIdMismatch {
                configured: node_config.engine.chain_id,
                genesis: chain_id,
            });
        }
        let node_key = key.public_key();

        // Replay reads and executes every stored block: blocking work.
        let recovered = {
            let genesis = genesis.clone();
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || recover(&genesis, &dir))
                .await
                .map_err(|e| StartError::ThreadEnded(format!("replay task: {e}")))??
        };
        let Recovered {
            lock,
            wal,
            stores,
            start,
            accounts,
            receipts_rebuilt,
        } = recovered;
        let tip = start.tip.clone();

        let mut transport =
            TransportConfig::new(listen, duplicate_key(&key)?, chain_id.0, peers.clone());
        transport.key_exchange = key_exchange;
        // Proposals and votes go ahead of mempool gossip on each connection:
        // under load gossip keeps megabytes buffered, and a round only has
        // its timeout to get a proposal out and the votes back.
        transport.urgent_services = vec![ServiceId::named(crate::runtime::SERVICE_QBFT)];
        let endpoint = Arc::new(
            Endpoint::bind(transport).map_err(|source| StartError::Transport { listen, source })?,
        );
        let local_addr = endpoint.local_addr();

        let mut peer_keys: Vec<PublicKey> = Vec::new();
        for (peer, _) in &peers {
            if *peer != node_key && !peer_keys.contains(peer) {
                peer_keys.push(*peer);
            }
        }
        let (heads, _) = broadcast::channel(HEADS_CHANNEL_COUNT_MAX);
        let validators = start.validators.validators().to_vec();
        let shared = Arc::new(Shared {
            stores: Mutex::new(stores),
            accounts: RwLock::new(accounts),
            snapshot: RwLock::new(Snapshot {
                tip: tip.clone(),
                consensus_height: tip.height + 1,
                consensus_round: 0,
                is_validator: validators.contains(&node_key),
                validators,
                mempool_txs: 0,
                mempool_bytes: 0,
                engine_stats: Default::default(),
                sync_target_height: 0,
            }),
            counters: Counters::default(),
            last_rejection: Mutex::new(None),
            heads,
            fatal: Mutex::new(None),
            dir_lock: Mutex::new(Some(lock)),
            peer_keys,
        });
        let (commands_tx, commands_rx) = mpsc::channel(SUBMIT_QUEUE_COUNT_MAX);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let parts = LoopParts {
            node_config,
            key,
            genesis: genesis.clone(),
            start,
            wal,
            shared: shared.clone(),
            net: Net::new(endpoint.clone(), runtime),
            commands: commands_rx,
            stop: stop_rx,
            ready: ready_tx,
        };
        let thread = std::thread::Builder::new()
            .name("chain-node".into())
            .spawn(move || run_thread(parts));
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                endpoint.close().await;
                return Err(StartError::Thread(e));
            }
        };
        // `None`: the thread ended (panicked) before answering.
        let ready = ready_rx.await.ok();
        if !matches!(ready, Some(Ok(()))) {
            endpoint.close().await;
            // Joined first: a panic's reason is recorded as the thread ends.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            let reason = match ready {
                Some(Err(reason)) => reason,
                _ => shared
                    .fatal
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "the node thread ended without a reason".into()),
            };
            return Err(StartError::ThreadEnded(reason));
        }
        tracing::info!(
            chain = %genesis.chain_name,
            chain_id = %chain_id,
            node = %node_key,
            height = tip.height,
            block = %tip.hash,
            receipts_rebuilt,
            listen = %local_addr,
            "chain node started (stored blocks replayed)"
        );
        Ok(Arc::new(ChainNode {
            chain_id,
            genesis,
            node_key,
            local_addr,
            shared,
            endpoint,
            commands: commands_tx,
            stop: stop_tx,
            thread: Mutex::new(Some(thread)),
            shut_down: tokio::sync::Mutex::new(false),
        }))
    }

    /// The UDP address the BPCI endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn public_key(&self) -> PublicKey {
        self.node_key
    }

    /// Why the loop stopped on its own (a failed write or fsync), if it did.
    /// The node then refuses submissions; reads still work.
    pub fn fatal_error(&self) -> Option<String> {
        self.shared.fatal.lock().clone()
    }

    /// The transport's counters (frames, connections, refused handshakes).
    pub fn transport_metrics(&self) -> Metrics {
        self.endpoint.metrics()
    }

    /// Stops the loop (waiting for the step in progress, so nothing is left
    /// half-written), closes the endpoint (queued frames get a bounded time
    /// to drain) and releases the data directory. Every append was already
    /// fsynced when it was acknowledged, so there is nothing left to sync.
    /// Idempotent; concurrent calls wait for the first.
    pub async fn shutdown(&self) {
        let mut shut_down = self.shut_down.lock().await;
        if *shut_down {
            return;
        }
        self.stop.send_replace(true);
        let thread = self.thread.lock().take();
        if let Some(thread) = thread
            && let Ok(Err(_)) = tokio::task::spawn_blocking(move || thread.join()).await
        {
            tracing::error!("the chain node thread panicked");
        }
        self.endpoint.close().await;
        // The loop, the only writer, is gone: another node may now open the
        // directory (reads through this one stay possible).
        self.shared.dir_lock.lock().take();
        *shut_down = true;
        tracing::info!(node = %self.node_key, "chain node shut down");
    }

    fn unavailable(&self) -> ChainError {
        match self.fatal_error() {
            Some(reason) => ChainError::Unavailable(reason),
            None => ChainError::Unavailable("the node is shutting down".into()),
        }
    }
}

impl Drop for ChainNode {
    fn drop(&mut self) {
        // Without a shutdown the loop still ends; the endpoint's own Drop
        // closes its connections.
        self.stop.send_replace(true);
    }
}

/// The transport's frame rejections as metric series (reason labels).
fn rejection_counts(r: &Rejections) -> Vec<LabeledCount> {
    vec![
        ("malformed", r.malformed),
        ("payload_too_large", r.payload_too_large),
        ("unknown_node", r.unknown_node),
        ("source_mismatch", r.source_mismatch),
        ("wrong_chain_id", r.wrong_cluster),
        ("bad_signature", r.bad_signature),
        ("digest_mismatch", r.digest_mismatch),
        ("replayed", r.replayed),
        ("too_many_services", r.too_many_services),
    ]
}

/// The canonical bytes of `tx` if they are within the transaction bound.
fn encode_tx(tx: &SignedTx) -> Result<Vec<u8>, MempoolError> {
    let too_large = |size_bytes: usize| MempoolError::TooLarge {
        tx: tx.hash(),
        size_bytes,
        max: CHAIN_TX_SIZE_BYTES_MAX,
    };
    match tx.to_canonical_bytes() {
        Ok(bytes) if bytes.len() <= CHAIN_TX_SIZE_BYTES_MAX as usize => Ok(bytes),
        Ok(bytes) => Err(too_large(bytes.len())),
        Err(EncodeError::LengthExceedsMax { len, .. }) => Err(too_large(len)),
        Err(EncodeError::CountExceedsMax { count, .. }) => Err(too_large(count)),
    }
}

impl ChainControl for ChainNode {
    fn status(&self) -> ChainStatus {
        let snapshot = self.shared.snapshot.read().clone();
        let counters = &self.shared.counters;
        let peers_connected = snapshot
            .validators
            .iter()
            .filter(|v| **v != self.node_key && self.endpoint.is_connected(v))
            .copied()
            .collect();
        ChainStatus {
            chain_id: self.genesis.hash(),
            chain_name: self.genesis.chain_name.clone(),
            node_key: self.node_key,
            is_validator: snapshot.is_validator,
            height: snapshot.tip.height,
            block_hash: snapshot.tip.hash,
            block_timestamp_ms: snapshot.tip.timestamp_ms,
            state_root: snapshot.tip.state_root,
            consensus_height: snapshot.consensus_height,
            consensus_round: snapshot.consensus_round,
            validators: snapshot.validators,
            mempool_txs: snapshot.mempool_txs,
            mempool_bytes: snapshot.mempool_bytes,
            peers_connected,
            messages_received: Counters::get(&counters.messages_received),
            messages_rejected: Counters::get(&counters.messages_rejected),
            last_rejection: self.shared.last_rejection.lock().clone(),
            frames_rejected: self.endpoint.metrics().frames_rejected.total(),
            txs_refused: Counters::get(&counters.txs_refused),
            blocks_synced: Counters::get(&counters.blocks_synced),
        }
    }

    fn metrics(&self) -> ChainMetrics {
        let snapshot = self.shared.snapshot.read().clone();
        let c = &self.shared.counters;
        let t = self.endpoint.metrics();
        let stats = snapshot.engine_stats;
        let txs_rejected = [
            ("client", &c.txs_rejected_client),
            ("gossip", &c.txs_rejected_gossip),
        ]
        .into_iter()
        .flat_map(|(source, by)| {
            by.snapshot(&MempoolError::REASONS)
                .into_iter()
                .map(move |(reason, n)| (source, reason, n))
        })
        .collect();
        ChainMetrics {
            height: snapshot.tip.height,
            consensus_height: snapshot.consensus_height,
            consensus_round: snapshot.consensus_round,
            mempool_txs: snapshot.mempool_txs,
            mempool_bytes: snapshot.mempool_bytes,
            blocks_decided: Counters::get(&c.blocks_decided),
            blocks_synced: Counters::get(&c.blocks_synced),
            txs_committed: Counters::get(&c.txs_committed),
            round_timeouts: stats.round_timeouts,
            round_skips: stats.round_skips,
            round_changes_sent: stats.round_changes_sent,
            messages_received: Counters::get(&c.messages_received),
            messages_rejected: c.messages_rejected_by.snapshot(&MESSAGE_REJECT_REASONS),
            txs_rejected,
            sync_requests_sent: Counters::get(&c.sync_requests_sent),
            sync_requests_served: Counters::get(&c.sync_requests_served),
            sync_target_height: snapshot.sync_target_height,
            bpci: BpciMetrics {
                frames_sent: t.frames_sent,
                frames_received: t.frames_received,
                payload_bytes_sent: t.payload_bytes_sent,
                payload_bytes_received: t.payload_bytes_received,
                frames_rejected: rejection_counts(&t.frames_rejected),
                frames_lost: t.frames_lost,
                frames_refused_queue_full: t.frames_refused_queue_full,
                connections_dialed: t.connections_dialed,
                connections_accepted: t.connections_accepted,
                connections_superseded: t.connections_superseded,
                dial_failures: t.dial_failures,
                handshakes_refused: t.handshakes_refused,
                peers: self
                    .shared
                    .peer_keys
                    .iter()
                    .map(|p| (*p, self.endpoint.is_connected(p)))
                    .collect(),
            },
        }
    }

    fn genesis(&self) -> Genesis {
        self.genesis.clone()
    }

    fn submit(&self, tx: SignedTx) -> BoxFuture<'_, Result<Hash32, ChainError>> {
        Box::pin(async move {
            let refused = |e: MempoolError| {
                self.shared.counters.reject_tx(TxSource::Client, &e);
                ChainError::Refused(e)
            };
            let bytes = encode_tx(&tx).map_err(refused)?;
            // One signature check (~50 µs) on this task rather than on the
            // node loop, which runs consensus.
            let tx = Box::new(VerifiedTx::check(tx, self.chain_id).map_err(refused)?);
            let (reply, answer) = oneshot::channel();
            match self.commands.try_send(Command::Submit { tx, bytes, reply }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(ChainError::Unavailable(format!(
                        "busy: {SUBMIT_QUEUE_COUNT_MAX} submissions are already waiting; retry later"
                    )));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.unavailable()),
            }
            match answer.await {
                Ok(result) => result.map_err(ChainError::Refused),
                Err(_) => Err(self.unavailable()),
            }
        })
    }

    fn submit_batch(
        &self,
        txs: Vec<SignedTx>,
    ) -> BoxFuture<'_, Result<Vec<Result<Hash32, ChainError>>, ChainError>> {
        Box::pin(async move {
            if txs.len() > SUBMIT_BATCH_TXS_COUNT_MAX {
                return Err(ChainError::Unavailable(format!(
                    "busy: a batch of {} transactions is more than the {SUBMIT_BATCH_TXS_COUNT_MAX} \
                     one submission may carry; split it",
                    txs.len()
                )));
            }
            // Size and signature are checked on the blocking pool (a batch
            // is up to thousands of signature checks: neither the node
            // loop nor an async worker should run them); refusals are
            // answered here, the rest go to the loop in one command and
            // their answers are slotted back in order.
            let chain_id = self.chain_id;
            let checked = tokio::task::spawn_blocking(move || {
                txs.into_iter()
                    .map(|tx| {
                        let bytes = encode_tx(&tx)?;
                        Ok((VerifiedTx::check(tx, chain_id)?, bytes))
                    })
                    .collect::<Vec<Result<(VerifiedTx, Vec<u8>), MempoolError>>>()
            })
            .await
            .map_err(|e| ChainError::Unavailable(format!("checking the batch failed: {e}")))?;
            let mut results: Vec<Option<Result<Hash32, ChainError>>> =
                Vec::with_capacity(checked.len());
            let mut to_loop = Vec::with_capacity(checked.len());
            for item in checked {
                match item {
                    Ok(ok) => {
                        results.push(None);
                        to_loop.push(ok);
                    }
                    Err(e) => {
                        self.shared.counters.reject_tx(TxSource::Client, &e);
                        results.push(Some(Err(ChainError::Refused(e))));
                    }
                }
            }
            let answers = if to_loop.is_empty() {
                Vec::new()
            } else {
                let (reply, answer) = oneshot::channel();
                match self.commands.try_send(Command::SubmitBatch {
                    txs: to_loop,
                    reply,
                }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        return Err(ChainError::Unavailable(format!(
                            "busy: {SUBMIT_QUEUE_COUNT_MAX} submissions are already waiting; retry later"
                        )));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.unavailable()),
                }
                answer.await.map_err(|_| self.unavailable())?
            };
            let mut answers = answers.into_iter();
            let mut out = Vec::with_capacity(results.len());
            for slot in results {
                match slot {
                    Some(done) => out.push(done),
                    None => match answers.next() {
                        Some(answer) => out.push(answer.map_err(ChainError::Refused)),
                        None => {
                            return Err(ChainError::Unavailable(
                                "the node loop answered fewer transactions than it was given"
                                    .into(),
                            ));
                        }
                    },
                }
            }
            Ok(out)
        })
    }

    fn block(&self, height: Height) -> Result<Option<FinalizedBlock>, ChainError> {
        self.shared
            .stores
            .lock()
            .blocks
            .get(height)
            .map_err(|e| ChainError::Storage(e.to_string()))
    }

    fn receipt(&self, tx_hash: &Hash32) -> Result<Option<ReceiptWithProof>, ChainError> {
        let storage = |what: String| ChainError::Storage(what);
        let (location, block, stored) = {
            let stores = self.shared.stores.lock();
            let Some(location) = stores.tx_index.get(tx_hash).copied() else {
                return Ok(None);
            };
            let height = location.height;
            let block = stores
                .blocks
                .get(height)
                .map_err(|e| storage(e.to_string()))?
                .ok_or_else(|| storage(format!("block {height} of tx {tx_hash} is not stored")))?;
            let stored = stores
                .receipts
                .get(height)
                .map_err(|e| storage(e.to_string()))?
                .ok_or_else(|| {
                    storage(format!(
                        "receipts of block {height} (tx {tx_hash}) are not stored"
                    ))
                })?;
            (location, block, stored)
        };
        let height = location.height;
        let index = u64::from(location.index);
        let receipt = stored
            .receipts
            .get(location.index as usize)
            .cloned()
            .ok_or_else(|| {
                storage(format!(
                    "block {height} has {} receipts, tx {tx_hash} is indexed at {index}",
                    stored.receipts.len()
                ))
            })?;
        if receipt.tx_hash != *tx_hash || stored.block_hash != block.block.hash() {
            return Err(storage(format!(
                "receipt {index} of block {height} is for tx {} of block {}, expected tx {tx_hash} of block {}",
                receipt.tx_hash,
                stored.block_hash,
                block.block.hash()
            )));
        }
        let proof = receipt_proof(&stored.receipts, index).map_err(|e| storage(e.to_string()))?;
        Ok(Some(ReceiptWithProof {
            height,
            index,
            txs_count: stored.receipts.len() as u64,
            receipt,
            proof,
            block,
        }))
    }

    fn account(&self, key: &PublicKey) -> AccountInfo {
        self.shared
            .accounts
            .read()
            .get(key)
            .copied()
            .unwrap_or(AccountInfo {
                balance: 0,
                next_nonce: 0,
            })
    }

    fn heads(&self) -> broadcast::Receiver<HeadEvent> {
        self.shared.heads.subscribe()
    }
}
