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
    files: TrafficFiles,
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
    // The XDP link record was reconciled with this config when the agent
    // opened the data dir (cmd_agent), before anything that may fail.
    let files = TrafficFiles::new(store.clone(), &cfg.node.data_dir);
    let policy = read_policy(&files, &section.policy)?;
    let compiled = record_policy(&mut log, &key, &policy)
        .with_context(|| format!("traffic.policy {}", section.policy.display()))?;
    let version = compiled.version;
    let lights = if section.xdp_interfaces.is_empty() {
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
            let mut lights =
                TrafficLights::load(Some(&pin_dir)).context("loading the XDP traffic lights")?;
            lights
                .apply(&compiled)
                .context("writing the policy into the XDP maps")?;
            for ifname in &interfaces {
                attach_retrying(&mut lights, ifname, mode).with_context(|| {
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
            let context = || format!("traffic.cage {}", path.display());
            let text = files
                .read(path, metanode_cage::limits::CONFIG_FILE_SIZE_BYTES_MAX)
                .with_context(context)?;
            let config =
                CageConfig::from_yaml_str(&text).map_err(|e| anyhow!("{}: {e}", context()))?;
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
    let mut named = vec![section.policy.as_path()];
    named.extend(section.cage.as_deref());
    files.prune(&named);
    let metrics = TrafficMetrics {
        lights: lights.clone(),
        cage: cage.as_ref().map(|c| c.metrics.clone()),
    };
    let reload = Reload {
        policy_path: section.policy.clone(),
        files: files.clone(),
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

/// How long an attach that the kernel refuses is retried (see
/// [`attach_retrying`]).
const XDP_ATTACH_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Attaches, retrying a refused attach for up to [`XDP_ATTACH_RETRY`]: a
/// link released at this start on the same interface (its pin directory
/// changed) is freed by the kernel from a workqueue, and until then the
/// interface still has a program. A real refusal (no such interface, no
/// XDP support) fails after the bound, naming the kernel's reason.
fn attach_retrying(
    lights: &mut TrafficLights,
    ifname: &str,
    mode: AttachMode,
) -> Result<(), metanode_ebpf::AttachError> {
    let deadline = std::time::Instant::now() + XDP_ATTACH_RETRY;
    loop {
        match lights.attach(ifname, mode) {
            Err(metanode_ebpf::AttachError::Attach { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Where this node pinned XDP links, one `PIN_DIR<TAB>IFNAME` per line,
/// so that any later start, whatever its config, can release those it no
/// longer names.
fn xdp_record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("biso").join("xdp-links")
}

/// Makes the links this node has pinned match `(pin_dir, wanted)`: every
/// recorded link the config does not name is unpinned (a link outlives the
/// agent so that a restart keeps filtering, but a link no config names,
/// from an interface taken off the list or a config trial that was
/// reverted, must not go on filtering with whatever policy it last had),
/// and the record is rewritten, listing `wanted` before they are attached.
/// Only links this node recorded are touched, in whichever directory. A
/// link that cannot be released is logged and stays recorded for the next
/// start; a record that cannot be written is an error, since links pinned
/// without it could not be released later.
pub fn reconcile_xdp_links(
    data_dir: &Path,
    pin_dir: &Path,
    wanted: &[String],
) -> anyhow::Result<()> {
    let record = xdp_record_path(data_dir);
    // Lenient: a damaged line is skipped (and dropped when the record is
    // rewritten) rather than stopping every start.
    let text = match std::fs::read(&record) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow!("reading {}: {e}", record.display())),
    };
    let mut keep: Vec<(PathBuf, String)> = wanted
        .iter()
        .map(|ifname| (pin_dir.to_path_buf(), ifname.clone()))
        .collect();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((dir, ifname)) = line.split_once('\t') else {
            tracing::warn!(record = %record.display(), line, "skipping a malformed XDP link record");
            continue;
        };
        let recorded = (PathBuf::from(dir), ifname.to_string());
        if keep.contains(&recorded) {
            continue;
        }
        match metanode_ebpf::unpin_link(&recorded.0, &recorded.1) {
            Ok(released) => {
                if released {
                    tracing::warn!(
                        interface = ifname,
                        pin_dir = dir,
                        "XDP detached: this config does not list the interface"
                    );
                }
            }
            Err(e) => {
                tracing::error!(
                    interface = ifname,
                    pin_dir = dir,
                    error = %crate::output::cause_chain(&anyhow::Error::new(e)).join(": "),
                    "cannot release an XDP link this config does not list; retried at the next start"
                );
                keep.push(recorded);
            }
        }
    }
    let mut out = String::new();
    for (dir, ifname) in &keep {
        // Config validation refuses control characters in paths; a name
        // with a tab or newline would break the record's lines.
        let dir = dir
            .to_str()
            .filter(|d| !d.contains(['\t', '\n']) && !ifname.contains(['\t', '\n']))
            .ok_or_else(|| {
                anyhow!(
                    "XDP link {} on {ifname:?}: not recordable (non-UTF-8, tab or newline)",
                    dir.display()
                )
            })?;
        out.push_str(&format!("{dir}\t{ifname}\n"));
    }
    if out == text {
        return Ok(());
    }
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_whole(&record, out.as_bytes())
        .with_context(|| format!("writing the XDP link record {}", record.display()))
}

/// Copies of traffic file blobs kept besides those the config names (at
/// most 1 MiB for a policy, 4 MiB for a cage config: 64 MiB at worst).
const TRAFFIC_FILE_COPIES_OTHERS_KEPT: usize = 16;

/// Reads the files the traffic section names: a path, or `/ipfs/CID` for a
/// blob of the node's store. The agent keeps a copy of each blob it read
/// under `<data_dir>/traffic-files/CID` and prefers it (after checking it
/// against the CID), so a blob unpinned and collected later does not stop
/// the next start; old copies are pruned ([`TrafficFiles::prune`]).
#[derive(Debug, Clone)]
struct TrafficFiles {
    store: Store,
    copies: PathBuf,
}

impl TrafficFiles {
    fn new(store: Store, data_dir: &Path) -> TrafficFiles {
        TrafficFiles {
            store,
            copies: data_dir.join("traffic-files"),
        }
    }

    /// The text of `path`, at most `size_bytes_max` bytes.
    fn read(&self, path: &Path, size_bytes_max: u64) -> anyhow::Result<String> {
        let bytes = match store_blob(path) {
            None => read_bounded(path, size_bytes_max)?,
            // Config validation already parsed it; this is the same parse.
            Some(cid) => self.blob(&cid.map_err(|e| anyhow!(e))?, size_bytes_max)?,
        };
        // The caller's context names the setting and the path.
        utf8_text(bytes)
    }

    fn blob(&self, cid: &ContentId, size_bytes_max: u64) -> anyhow::Result<Vec<u8>> {
        // `store_blob` refused anything but a raw blob (a `store add`
        // UnixFS root is a DAG node, not the file).
        let copy = self.copies.join(cid.to_string());
        if let Ok(bytes) = read_bounded(&copy, size_bytes_max)
            && cid.key().matches(&bytes)
        {
            return Ok(bytes);
        }
        let stat = self
            .store
            .stat(cid)
            .with_context(|| format!("looking up {cid}"))?
            .ok_or_else(|| {
                anyhow!(
                    "{cid} is not in this node's store: put the file first \
                     (`metanode store put --api URL FILE`, or POST /api/v1/blobs) \
                     and name the CID it prints"
                )
            })?;
        anyhow::ensure!(
            stat.size_bytes <= size_bytes_max,
            "{cid} is {} bytes; at most {size_bytes_max}",
            stat.size_bytes
        );
        let bytes = self
            .store
            .get(cid)
            .with_context(|| format!("reading {cid}"))?;
        // Without the copy the node still starts now; only a later start
        // after the blob was collected would miss it.
        let kept = std::fs::create_dir_all(&self.copies)
            .map_err(anyhow::Error::from)
            .and_then(|()| write_whole(&copy, &bytes));
        if let Err(e) = kept {
            tracing::warn!(copy = %copy.display(), error = %format!("{e:#}"), "cannot keep a copy of a traffic file blob");
        }
        Ok(bytes)
    }

    /// Removes old copies: those `paths` name stay, and so do the
    /// [`TRAFFIC_FILE_COPIES_OTHERS_KEPT`] newest others, since the config
    /// a trial reverts to (or an older one an operator goes back to) may
    /// name a blob collected since.
    fn prune(&self, paths: &[&Path]) {
        let named: Vec<String> = paths
            .iter()
            .filter_map(|p| store_blob(p)?.ok())
            .map(|cid| cid.to_string())
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.copies) else {
            return;
        };
        let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| !named.contains(&e.file_name().to_string_lossy().into_owned()))
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        others.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in others.into_iter().skip(TRAFFIC_FILE_COPIES_OTHERS_KEPT) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(copy = %path.display(), error = %e, "cannot remove an old traffic file copy");
            }
        }
    }
}

/// `bytes` as the whole of `path`, synced, replacing it in one rename (the
/// store CLI's `write_atomically`, which removes its partial file on error).
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::cmd_store::write_atomically(path, |sink| Ok(sink.write_all(bytes)?))
}

/// A whole file, refused (before it is read) above `size_bytes_max`.
pub(crate) fn read_bounded(path: &Path, size_bytes_max: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(size_bytes_max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= size_bytes_max,
        "{} is over {size_bytes_max} bytes",
        path.display()
    );
    Ok(bytes)
}

/// [`read_bounded`], as UTF-8 text (YAML files: policies, cage configs).
pub(crate) fn read_text_bounded(path: &Path, size_bytes_max: u64) -> anyhow::Result<String> {
    utf8_text(read_bounded(path, size_bytes_max)?).with_context(|| path.display().to_string())
}

fn utf8_text(bytes: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "not UTF-8 text (at byte offset {}): not a YAML file",
            e.utf8_error().valid_up_to()
        )
    })
}

/// The policy `traffic.policy` names: a file, or a blob of the store.
fn read_policy(files: &TrafficFiles, path: &Path) -> anyhow::Result<Policy> {
    let context = || format!("traffic.policy {}", path.display());
    let text = files
        .read(
            path,
            metanode_biso::limits::POLICY_SOURCE_LEN_BYTES_MAX as u64,
        )
        .with_context(context)?;
    load_policy(&text).map_err(|e| anyhow!("{}: {e}", context()))
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
    let policy = read_policy(&reload.files, &reload.policy_path)?;
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

    /// `/ipfs/CID` reads a blob of the node's store and keeps a checked
    /// copy, so the blob may be collected later; every way it can be wrong
    /// is an error naming the CID and what to do.
    #[test]
    fn traffic_files_can_be_store_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("store"))).unwrap();
        let files = TrafficFiles::new(store.clone(), &dir.path().join("data"));
        let text = "version: 1\nmode: emergency\ndata: { class: Public, purposes: [test], \
                    encryption: { in_transit: true, at_rest: true }, retention_days_max: 30 }\n\
                    regions: []\nunknown_region: anywhere\n\
                    yellow: { rate_per_s: 1, burst: 1, sample_one_in: 0 }\n";
        let put = store.put(text.as_bytes(), false).unwrap();
        let path = PathBuf::from(format!("/ipfs/{}", put.cid));
        assert_eq!(files.read(&path, 1024).unwrap(), text);
        let policy = read_policy(&files, &path).unwrap();
        assert_eq!(policy.mode, metanode_biso::Mode::Emergency);
        // Not pinned by the agent; collected, the copy still serves.
        assert!(!store.stat(&put.cid).unwrap().unwrap().pinned);
        store.remove(&put.cid).unwrap();
        assert_eq!(files.read(&path, 1024).unwrap(), text);
        // A copy that does not match its CID is not trusted.
        let copy = dir
            .path()
            .join("data/traffic-files")
            .join(put.cid.to_string());
        std::fs::write(&copy, b"version: 1\nmode: normal\n").unwrap();
        let e = format!("{:#}", files.read(&path, 1024).unwrap_err());
        assert!(
            e.contains("not in this node's store") && e.contains("store put"),
            "{e}"
        );

        let error = |path: &Path, max: u64| format!("{:#}", files.read(path, max).unwrap_err());
        let again = store.put(text.as_bytes(), false).unwrap();
        std::fs::remove_file(&copy).unwrap();
        let e = error(&PathBuf::from(format!("/ipfs/{}", again.cid)), 10);
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
        // Files are bounded too, and errors name the setting once.
        let file = dir.path().join("biso.yaml");
        std::fs::write(&file, text).unwrap();
        assert_eq!(files.read(&file, 1024).unwrap(), text);
        let e = error(&file, 10);
        assert!(e.contains("over 10 bytes"), "{e}");
        let bad = store.put(b"version: 2\n", false).unwrap();
        let e = format!(
            "{:#}",
            read_policy(&files, Path::new(&format!("/ipfs/{}", bad.cid))).unwrap_err()
        );
        assert!(e.starts_with("traffic.policy /ipfs/"), "{e}");

        // Old copies are pruned, the newest few kept besides the named ones.
        files.read(&path, 1024).unwrap();
        files.prune(&[file.as_path()]);
        assert!(copy.exists(), "one other copy is within the kept few");
        for i in 0..TRAFFIC_FILE_COPIES_OTHERS_KEPT + 3 {
            let other = store.put(format!("other {i}").as_bytes(), false).unwrap();
            files
                .read(Path::new(&format!("/ipfs/{}", other.cid)), 1024)
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        files.prune(&[path.as_path()]);
        let left = std::fs::read_dir(dir.path().join("data/traffic-files"))
            .unwrap()
            .count();
        assert_eq!(left, TRAFFIC_FILE_COPIES_OTHERS_KEPT + 1);
        assert!(copy.exists(), "the named copy stays");
    }

    /// The XDP link record: links this node pinned and the config no longer
    /// lists are released (here: nothing is pinned, so nothing to unpin)
    /// and dropped from the record; one that cannot be released stays
    /// recorded for the next start.
    #[test]
    fn the_xdp_link_record_follows_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let record = || std::fs::read_to_string(xdp_record_path(&data)).unwrap_or_default();
        let pins_dir = dir.path().join("pins");
        let pins = pins_dir.as_path();
        reconcile_xdp_links(&data, pins, &["eth0".into(), "eth1".into()]).unwrap();
        assert_eq!(record(), format!("{0}\teth0\n{0}\teth1\n", pins.display()));
        reconcile_xdp_links(&data, pins, &["eth1".into()]).unwrap();
        assert_eq!(record(), format!("{}\teth1\n", pins.display()));
        // A "pin" that is no bpffs object is not removed, and stays listed.
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(plain.join("links")).unwrap();
        std::fs::write(plain.join("links/eth9"), b"x").unwrap();
        std::fs::write(
            xdp_record_path(&data),
            format!("{}\teth9\nno tab here\n", plain.display()),
        )
        .unwrap();
        reconcile_xdp_links(&data, pins, &[]).unwrap();
        assert!(plain.join("links/eth9").exists());
        assert_eq!(record(), format!("{}\teth9\n", plain.display()));
    }
}
