//! The node's `traffic:` section at run time: one BISO policy compiled once
//! and enforced in two places, the XDP traffic lights on the configured
//! interfaces and the HTTP Cage, with every policy change signed into the
//! decision log.
//!
//! Order at start: compile the policy (a bad policy stops the node before
//! anything is enforced) → decision log → XDP (load with maps pinned under
//! `traffic.xdp_pin_dir`, apply, attach) → cage (its receipt batches also go
//! into the store as pinned blobs). The pinned maps and links outlive the
//! agent, so a restarting agent keeps enforcing the last policy until it has
//! applied the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, anyhow};
use metanode_api::TrafficMetricsSource;
use metanode_biso::{CompiledPolicy, DecisionKind, DecisionLog, Policy, compile, load_policy};
use metanode_cage::{
    BatchReplica, BatchReplicaError, CageConfig, Metrics as CageMetrics, PolicyHandle,
    ReceiptReader, ServeReport,
};
use metanode_core::cid::ContentId;
use metanode_core::config::{NodeConfig, TrafficConfig, XdpMode, store_blob};
use metanode_core::keys::SigningKey;
use metanode_ebpf::{AttachMode, TrafficLights};
use metanode_store::{PinError, Store};
use serde_json::json;
use tokio::sync::oneshot;

use crate::output::Output;

/// The cage's receipt batches, each also a pinned blob of the node's store:
/// the audit trail is content-addressed like the rest of the node's data
/// (a batch is one canonical `SignedBatch`, so its CID names it) and GC
/// never takes it. The receipt file stays the record the cage fails closed
/// on; see `metanode_cage::ReplicatedSink`.
struct StoreReplica {
    store: Store,
}

impl BatchReplica for StoreReplica {
    fn put(&mut self, signed_batch: &[u8]) -> Result<String, BatchReplicaError> {
        // Runs on the cage's receipt-store thread, which may block: the
        // receipt file and the requests never wait for it.
        let put = self.store.put(signed_batch, true)?;
        Ok(put.cid.to_string())
    }

    fn unpin(&mut self, cid: &ContentId) -> Result<(), BatchReplicaError> {
        match self.store.set_pinned(cid, false) {
            // Reclaimed by GC already, or never stored (a gap resync skips).
            Ok(()) | Err(PinError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What the agent holds while the traffic section runs.
#[derive(Debug)]
pub struct Traffic {
    lights: Option<Arc<Mutex<TrafficLights>>>,
    cage: Option<RunningCage>,
    reloader: tokio::task::JoinHandle<()>,
}

/// What a reload needs: the policy file, where the lights are, the log.
#[derive(Debug)]
struct Reload {
    policy_path: PathBuf,
    store: Store,
    key: SigningKey,
    log: DecisionLog,
    /// Digest of the policy in force (not merely logged).
    applied_digest: [u8; 32],
    lights: Option<Arc<Mutex<TrafficLights>>>,
    cage_policy: Option<PolicyHandle>,
}

#[derive(Debug)]
struct RunningCage {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<ServeReport>,
    metrics: Arc<CageMetrics>,
    policy: PolicyHandle,
    receipts: ReceiptReader,
}

/// Scrape-time rendering of the XDP counters and cage metrics.
#[derive(Debug)]
pub struct TrafficMetrics {
    lights: Option<Arc<Mutex<TrafficLights>>>,
    cage: Option<Arc<CageMetrics>>,
}

impl TrafficMetricsSource for TrafficMetrics {
    fn render(&self, out: &mut String) {
        if let Some(lights) = &self.lights {
            let counters = match lights.lock() {
                Ok(l) => l.counters(),
                Err(poisoned) => poisoned.into_inner().counters(),
            };
            match counters {
                Ok(c) => metanode_ebpf::render_prometheus(&c, out),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the XDP counters failed");
                    out.push_str(&format!("# XDP counters unavailable: {e}\n"));
                }
            }
        }
        if let Some(cage) = &self.cage {
            metanode_cage::render_prometheus(&cage.snapshot(), out);
        }
    }
}

fn decision_log_path(cfg: &NodeConfig) -> PathBuf {
    cfg.node.data_dir.join("biso").join("decisions.log")
}

/// Opens the decision log, recovering a torn tail a crash left (an entry
/// that was never acknowledged), and creating it on first use.
fn open_log(path: &Path, key: &SigningKey) -> anyhow::Result<DecisionLog> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match DecisionLog::open(path, &key.public_key()) {
        Ok(log) => Ok(log),
        Err(first) => {
            let recovered = DecisionLog::recover_torn_tail(path, &key.public_key())
                .map_err(|e| anyhow!("decision log {}: {first}; recovery: {e}", path.display()))?;
            tracing::warn!(log = %path.display(), ?recovered, "cut a torn entry off the decision log");
            DecisionLog::open(path, &key.public_key())
                .with_context(|| format!("reopening the decision log {}", path.display()))
        }
    }
}

pub async fn start(
    cfg: &NodeConfig,
    section: &TrafficConfig,
    store: Store,
    out: &Output,
) -> anyhow::Result<(Traffic, TrafficMetrics)> {
    let key = crate::cmd_agent::node_key(cfg)?;
    let log_path = decision_log_path(cfg);
    let mut log = open_log(&log_path, &key)?;
    // Registered before anything is enforced: SIGHUP's default action would
    // kill the agent, and a reload may come right after start.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP (policy reload)")?;
    let policy = read_policy(&store, &section.policy)?;
    let compiled = record_policy(&mut log, &key, &policy)
        .with_context(|| format!("traffic.policy {}", section.policy.display()))?;
    let version = compiled.version;
    let lights = if section.xdp_interfaces.is_empty() {
        release_unlisted_links(&section.xdp_pin_dir, &[])?;
        None
    } else {
        let compiled = compiled.clone();
        let interfaces = section.xdp_interfaces.clone();
        let pin_dir = section.xdp_pin_dir.clone();
        let mode = match section.xdp_mode {
            XdpMode::Native => AttachMode::Native,
            XdpMode::Generic => AttachMode::Generic,
        };
        let lights = tokio::task::spawn_blocking(move || -> anyhow::Result<TrafficLights> {
            release_unlisted_links(&pin_dir, &interfaces)?;
            let mut lights =
                TrafficLights::load(Some(&pin_dir)).context("loading the XDP traffic lights")?;
            lights
                .apply(&compiled)
                .context("writing the policy into the XDP maps")?;
            for ifname in &interfaces {
                lights.attach(ifname, mode).with_context(|| {
                    format!("attaching XDP to {ifname} (traffic.xdp_interfaces)")
                })?;
            }
            Ok(lights)
        })
        .await
        .context("starting XDP panicked")??;
        Some(Arc::new(Mutex::new(lights)))
    };

    let cage = match &section.cage {
        None => None,
        Some(path) => {
            let config = match read_store_blob(
                &store,
                path,
                metanode_cage::limits::CONFIG_FILE_SIZE_BYTES_MAX,
            ) {
                Some(text) => CageConfig::from_yaml_str(&text?),
                None => CageConfig::load(path),
            }
            .map_err(|e| anyhow!("traffic.cage {}: {e}", path.display()))?;
            let server = metanode_cage::Server::bind_with_replica(
                config,
                PolicyHandle::new(compiled.clone()),
                crate::cmd_agent::node_key(cfg)?,
                Some(Box::new(StoreReplica {
                    store: store.clone(),
                })),
            )
            .await
            .map_err(|e| anyhow!("starting the cage (traffic.cage): {e}"))?;
            let metrics = server.metrics();
            let handle = server.policy();
            let receipts = server.receipt_reader();
            let listen = server.local_addr();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(server.run(async move {
                let _ = stopped.await;
            }));
            out.emit(
                &format!("metanode: cage listening on {listen}"),
                &json!({"event": "cage_listening", "listen": listen.to_string()}),
            );
            Some(RunningCage {
                stop,
                task,
                metrics,
                policy: handle,
                receipts,
            })
        }
    };

    out.emit(
        &format!(
            "metanode: traffic policy v{version} ({}) enforced at XDP on [{}] and {}",
            hex::encode(&compiled.policy_digest[..8]),
            section.xdp_interfaces.join(", "),
            if cage.is_some() {
                "in the cage"
            } else {
                "no cage"
            }
        ),
        &json!({"event": "traffic", "policy_version": version,
                "policy_digest": hex::encode(compiled.policy_digest),
                "xdp_interfaces": section.xdp_interfaces, "cage": cage.is_some()}),
    );
    let metrics = TrafficMetrics {
        lights: lights.clone(),
        cage: cage.as_ref().map(|c| c.metrics.clone()),
    };
    let reload = Reload {
        policy_path: section.policy.clone(),
        store,
        key,
        log,
        applied_digest: compiled.policy_digest,
        lights: lights.clone(),
        cage_policy: cage.as_ref().map(|c| c.policy.clone()),
    };
    let reloader = tokio::spawn(reload_on_sighup(reload, hangups));
    Ok((
        Traffic {
            lights,
            cage,
            reloader,
        },
        metrics,
    ))
}

/// Unpins the XDP links under `pin_dir` for interfaces not in `keep`: the
/// config says where packets are filtered, so a link left by an earlier
/// config (or by a config trial that was reverted, which could otherwise
/// keep a policy that cut the operator off) stops filtering at this start.
pub fn release_unlisted_links(pin_dir: &Path, keep: &[String]) -> anyhow::Result<()> {
    let released = metanode_ebpf::unpin_links_except(pin_dir, keep)
        .context("releasing XDP links no longer in traffic.xdp_interfaces")?;
    for ifname in released {
        tracing::warn!(
            interface = %ifname,
            pin_dir = %pin_dir.display(),
            "XDP detached: the interface is not in this config's traffic.xdp_interfaces"
        );
    }
    Ok(())
}

/// The policy `traffic.policy` names: a file, or a blob of the store.
fn read_policy(store: &Store, path: &Path) -> anyhow::Result<Policy> {
    let context = || format!("traffic.policy {}", path.display());
    match read_store_blob(
        store,
        path,
        metanode_biso::limits::POLICY_SOURCE_LEN_BYTES_MAX as u64,
    ) {
        Some(text) => {
            let text = text.with_context(context)?;
            load_policy(&text).map_err(|e| anyhow!("{}: {e}", context()))
        }
        None => crate::cmd_biso::read_policy(path).with_context(context),
    }
}

/// The text of the store blob `path` names (`/ipfs/CID`), or `None` when it
/// names a file. The blob is pinned first: a policy or cage config in force
/// must survive GC, or the next start could not find it. Bounded by
/// `size_bytes_max` before it is read.
fn read_store_blob(
    store: &Store,
    path: &Path,
    size_bytes_max: u64,
) -> Option<anyhow::Result<String>> {
    let cid = store_blob(path)?;
    Some((|| {
        // Config validation already parsed it; this is the same parse.
        let cid = cid.map_err(|e| anyhow!(e))?;
        let missing = || {
            anyhow!(
                "{cid} is not in this node's store: put the file first \
                 (`metanode store put --api URL FILE`, or POST /api/v1/blobs) \
                 and name the CID it prints"
            )
        };
        // `store add` makes a UnixFS DAG, whose root block is not the file.
        anyhow::ensure!(
            cid.codec() == metanode_core::cid::CODEC_RAW,
            "{cid} is not a raw blob (a UnixFS root from `store add`?): \
             put the file with `metanode store put` and name that CID"
        );
        let stat = store
            .stat(&cid)
            .with_context(|| format!("looking up {cid}"))?
            .ok_or_else(missing)?;
        anyhow::ensure!(
            stat.size_bytes <= size_bytes_max,
            "{cid} is {} bytes; at most {size_bytes_max}",
            stat.size_bytes
        );
        match store.set_pinned(&cid, true) {
            Ok(()) => {}
            Err(PinError::NotFound(_)) => return Err(missing()),
            Err(e) => return Err(anyhow!("pinning {cid}: {e}")),
        }
        let bytes = store.get(&cid).with_context(|| format!("reading {cid}"))?;
        String::from_utf8(bytes).map_err(|e| {
            anyhow!(
                "{cid} is not UTF-8 text (byte {}): not a YAML file",
                e.utf8_error().valid_up_to()
            )
        })
    })())
}

/// Compiles `policy` with the version the decision log gives it and signs
/// it into the log when it is new: the same policy keeps its version (a
/// restart, or a reload that failed to apply and is retried) and writes no
/// entry; a different one gets the next version, and a mode change its own
/// entry. Logged before it is enforced, so the log never lacks a policy that
/// was in force.
fn record_policy(
    log: &mut DecisionLog,
    key: &SigningKey,
    policy: &Policy,
) -> anyhow::Result<CompiledPolicy> {
    let summary = log.summary();
    let digest = policy
        .digest()
        .map_err(|e| anyhow!("digest of the policy: {e}"))?;
    if let Some(last) = summary.policy
        && last.policy_digest == *digest.as_bytes()
    {
        return compile(policy, last.policy_version).map_err(|e| anyhow!("compile: {e}"));
    }
    let version = summary.policy.map_or(1, |p| p.policy_version + 1);
    let compiled = compile(policy, version).map_err(|e| anyhow!("compile: {e}"))?;
    log.append_now(key, DecisionKind::policy_applied(&compiled, policy.mode))
        .context("signing the policy into the decision log")?;
    if let Some(from) = summary.mode
        && from != policy.mode
    {
        log.append_now(
            key,
            DecisionKind::ModeChanged {
                from,
                to: policy.mode,
            },
        )
        .context("signing the mode change into the decision log")?;
    }
    Ok(compiled)
}

/// SIGHUP re-reads the policy file: a changed policy is compiled with the
/// next version, signed into the decision log, swapped into the XDP maps
/// (one flip: no packet sees half of it) and into the cage. A policy that
/// does not load or compile is logged and changes nothing; one that fails
/// to apply is retried on the next SIGHUP.
async fn reload_on_sighup(mut reload: Reload, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        let outcome = tokio::task::block_in_place(|| reload_once(&mut reload));
        match outcome {
            Ok(Some(version)) => tracing::info!(version, "traffic policy reloaded"),
            Ok(None) => tracing::info!("traffic policy unchanged"),
            Err(e) => tracing::error!(
                error = crate::output::cause_chain(&e).join(": "),
                "traffic policy reload refused"
            ),
        }
    }
}

fn reload_once(reload: &mut Reload) -> anyhow::Result<Option<u64>> {
    let policy = read_policy(&reload.store, &reload.policy_path)?;
    let digest = policy
        .digest()
        .map_err(|e| anyhow!("digest of the policy: {e}"))?;
    if *digest.as_bytes() == reload.applied_digest {
        return Ok(None);
    }
    if reload.log.is_poisoned() {
        // A failed append poisons the handle; the file itself is intact up
        // to the last good entry (a torn tail is cut on reopen).
        reload.log = open_log(reload.log.path(), &reload.key)?;
    }
    let compiled = record_policy(&mut reload.log, &reload.key, &policy)?;
    if let Some(lights) = &reload.lights {
        let mut lights = lights
            .lock()
            .map_err(|_| anyhow!("the XDP loader lock is poisoned"))?;
        lights
            .apply(&compiled)
            .context("writing the policy into the XDP maps")?;
    }
    if let Some(handle) = &reload.cage_policy {
        handle.swap(compiled.clone());
    }
    reload.applied_digest = compiled.policy_digest;
    Ok(Some(compiled.version))
}

impl Traffic {
    /// The cage's receipt file, for the API's `/api/v1/cage/receipts*`.
    pub fn cage_receipts(&self) -> Option<ReceiptReader> {
        self.cage.as_ref().map(|c| c.receipts.clone())
    }

    /// Stops the cage (draining it and writing its last receipt batch). The
    /// XDP program stays attached through its pinned link: packet policy
    /// does not lapse while the agent restarts.
    pub async fn shutdown(self) {
        self.reloader.abort();
        if let Some(cage) = self.cage {
            let _ = cage.stop.send(());
            match cage.task.await {
                Ok(report) => match report.receipts.error {
                    None => {
                        tracing::info!(receipts = report.receipts.receipts_written, "cage stopped")
                    }
                    Some(e) => tracing::error!(error = %e, "cage receipts failed"),
                },
                Err(e) => tracing::error!(error = %e, "the cage task failed"),
            }
        }
        drop(self.lights);
    }
}

#[cfg(test)]
mod tests {
    use metanode_store::StoreOptions;

    use super::*;

    /// The store side of the receipt replica: a batch goes in pinned under
    /// the CID of its bytes; unpinning leaves it for GC; unpinning a batch
    /// the store no longer has (GC took it) is not an error.
    #[test]
    fn store_replica_pins_and_unpins_by_cid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let mut replica = StoreReplica {
            store: store.clone(),
        };
        let batch = b"a canonical SignedBatch, as far as the store cares".to_vec();
        let cid = ContentId::raw_blake3_of(&batch);
        assert_eq!(replica.put(&batch).unwrap(), cid.to_string());
        assert!(store.stat(&cid).unwrap().unwrap().pinned);
        replica.unpin(&cid).unwrap();
        assert!(!store.stat(&cid).unwrap().unwrap().pinned);
        let never_stored = ContentId::raw_blake3_of(b"gone");
        replica.unpin(&never_stored).unwrap();
    }

    /// `/ipfs/CID` reads a blob of the node's store (pinning it, so GC
    /// cannot take a config in force); every way it can be wrong is an
    /// error naming the CID and what to do.
    #[test]
    fn traffic_files_can_be_store_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let text = "version: 1\nmode: emergency\ndata: { class: Public, purposes: [test], \
                    encryption: { in_transit: true, at_rest: true }, retention_days_max: 30 }\n\
                    regions: []\nunknown_region: anywhere\n\
                    yellow: { rate_per_s: 1, burst: 1, sample_one_in: 0 }\n";
        let put = store.put(text.as_bytes(), false).unwrap();
        let path = PathBuf::from(format!("/ipfs/{}", put.cid));
        assert!(!store.stat(&put.cid).unwrap().unwrap().pinned);
        assert_eq!(read_store_blob(&store, &path, 1024).unwrap().unwrap(), text);
        assert!(store.stat(&put.cid).unwrap().unwrap().pinned);
        let policy = read_policy(&store, &path).unwrap();
        assert_eq!(policy.mode, metanode_biso::Mode::Emergency);

        assert!(read_store_blob(&store, Path::new("/etc/biso.yaml"), 1024).is_none());
        let error = |path: &Path, max: u64| {
            format!(
                "{:#}",
                read_store_blob(&store, path, max).unwrap().unwrap_err()
            )
        };
        let absent = ContentId::raw_blake3_of(b"never put");
        let e = error(Path::new(&format!("/ipfs/{absent}")), 1024);
        assert!(
            e.contains("not in this node's store") && e.contains("store put"),
            "{e}"
        );
        let e = error(&path, 10);
        assert!(e.contains("at most 10"), "{e}");
        let binary = store.put(&[0xff, 0xfe, b'a'], false).unwrap();
        let e = error(Path::new(&format!("/ipfs/{}", binary.cid)), 1024);
        assert!(e.contains("not UTF-8"), "{e}");
        let dag_pb = ContentId::from_key(
            metanode_core::cid::CODEC_DAG_PB,
            metanode_core::cid::BlockKey::blake3([7; 32]),
        );
        let e = error(Path::new(&format!("/ipfs/{dag_pb}")), 1024);
        assert!(e.contains("not a raw blob"), "{e}");
        let e = error(Path::new("/ipfs/nonsense"), 1024);
        assert!(e.contains("not a CID"), "{e}");
        // A policy blob that does not load names the setting.
        let bad = store.put(b"version: 2\n", false).unwrap();
        let e = format!(
            "{:#}",
            read_policy(&store, Path::new(&format!("/ipfs/{}", bad.cid))).unwrap_err()
        );
        assert!(e.contains("traffic.policy /ipfs/"), "{e}");
    }
}
