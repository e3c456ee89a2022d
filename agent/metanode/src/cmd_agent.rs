//! `metanode agent`: run one node in the foreground — open the store, start
//! the chain node when the config has a `chain:` section, serve the HTTP
//! API, and shut down gracefully on SIGTERM/SIGINT (API first, then the
//! chain, then the store).

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use clap::ValueEnum;
use metanode_api::{ApiOptions, AppState};
use metanode_chain_node::{ChainNode, ChainNodeConfig};
use metanode_core::config::{self, ChainConfig, LogFormat, LogLevel, NodeConfig};
use metanode_core::keys::{Overwrite, PublicKey, SigningKey, SigningKeyFile};
use metanode_core::limits::{API_BLOCKING_THREADS_COUNT_MAX, API_SHUTDOWN_DRAIN_MS_MAX};
use metanode_store::{Compression, IoMode, Store, StoreOptions};
use tokio::sync::watch;

use crate::genesis_file;
use crate::output::Output;
use crate::stop_signals::StopSignals;

/// File in the data dir naming the URL of the agent serving it, so
/// `metanode store` can point at it when the store is locked.
pub const API_URL_FILE_NAME: &str = "api.url";

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The agent prints one line once it serves:
  metanode: serving api on http://ADDR (store: DIR, io: io_uring)
SIGTERM or SIGINT stops it gracefully: it stops accepting, lets in-flight
requests finish (bounded), and closes the store. A second signal cuts the
wait short. RUST_LOG, when set, overrides the log level.

Examples:
  metanode agent --dev
  metanode agent --dev --data-dir /tmp/mn --api-listen 127.0.0.1:7878
  metanode agent --config /etc/metanode/node.yaml
  metanode agent --config node.yaml --api-listen 0.0.0.0:7878 --log-format json")]
pub struct AgentArgs {
    /// Node config file (YAML); see `metanode config example`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "dev",
        required_unless_present = "dev"
    )]
    pub config: Option<PathBuf>,
    /// Development defaults instead of a config file: node "dev", debug logs,
    /// API on 127.0.0.1:7878, data in $TMPDIR/metanode-dev.
    #[arg(long)]
    pub dev: bool,
    /// Data directory (overrides node.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// API listen address ip:port (overrides api.listen); port 0 picks a free
    /// port, reported in the serving line.
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// Store I/O backend (overrides store.io).
    #[arg(long, value_enum, value_name = "IO")]
    pub io: Option<IoArg>,
    /// Log level (overrides log.level).
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevelArg>,
    /// Log line format on stderr (overrides log.format).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Serve the appliance routes (/api/v1/system*, /api/v1/config*): slots,
    /// updates, power and config trials. PID 1 passes this; it needs the
    /// appliance's partitions and PID 1, so leave it off elsewhere.
    #[arg(long, hide = true)]
    pub appliance: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoArg {
    Auto,
    #[value(name = "io_uring", alias = "io-uring")]
    IoUring,
    Posix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevelArg {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

pub fn run(args: AgentArgs, out: &Output) -> anyhow::Result<()> {
    let cfg = load_config(&args)?;
    init_logging(cfg.log.level, cfg.log.format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("metanode-rt")
        .max_blocking_threads(API_BLOCKING_THREADS_COUNT_MAX)
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve_node(cfg, args.appliance, out));
    // A store call still running on the blocking pool (a gc, say) must not
    // keep the process alive forever after the store is closed.
    runtime.shutdown_timeout(Duration::from_millis(API_SHUTDOWN_DRAIN_MS_MAX));
    result
}

/// The config the agent runs with: `--config FILE` or `--dev` defaults,
/// then command-line overrides, validated as a whole.
pub fn load_config(args: &AgentArgs) -> anyhow::Result<NodeConfig> {
    let mut cfg = match (&args.config, args.dev) {
        (Some(path), _) => NodeConfig::from_file(path)?,
        (None, true) => NodeConfig::dev(
            std::env::temp_dir().join("metanode-dev"),
            config::DEFAULT_API_LISTEN,
        ),
        (None, false) => anyhow::bail!("pass --config FILE, or --dev for development defaults"),
    };
    if let Some(dir) = &args.data_dir {
        // Config paths must be absolute (the appliance runs with cwd `/`);
        // on the command line a relative path means the shell's cwd.
        cfg.node.data_dir = std::path::absolute(dir)
            .with_context(|| format!("resolving --data-dir {}", dir.display()))?;
    }
    if let Some(listen) = args.api_listen {
        cfg.api.listen = listen;
    }
    if let Some(io) = args.io {
        cfg.store.io = match io {
            IoArg::Auto => config::IoMode::Auto,
            IoArg::IoUring => config::IoMode::IoUring,
            IoArg::Posix => config::IoMode::Posix,
        };
    }
    if let Some(level) = args.log_level {
        cfg.log.level = match level {
            LogLevelArg::Error => LogLevel::Error,
            LogLevelArg::Warn => LogLevel::Warn,
            LogLevelArg::Info => LogLevel::Info,
            LogLevelArg::Debug => LogLevel::Debug,
            LogLevelArg::Trace => LogLevel::Trace,
        };
    }
    if let Some(format) = args.log_format {
        cfg.log.format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    // The file itself was validated strictly by from_file; port 0 may only
    // come from --api-listen, where we report the bound port ourselves.
    cfg.validate_dev()
        .context("invalid configuration after applying command-line flags")?;
    Ok(cfg)
}

/// The store's options from the `store:` section.
pub fn store_options(cfg: &NodeConfig) -> StoreOptions {
    let mut opts = StoreOptions::new(&cfg.node.data_dir);
    let s = &cfg.store;
    opts.io = match s.io {
        config::IoMode::Auto => IoMode::Auto,
        config::IoMode::IoUring => IoMode::IoUring,
        config::IoMode::Posix => IoMode::Posix,
    };
    opts.compression = match s.compression {
        config::Compression::None => Compression::None,
        config::Compression::Zstd => Compression::Zstd {
            level: s.zstd_level,
        },
    };
    opts.inline_size_bytes_max = s.inline_size_bytes_max;
    opts.segment_size_bytes_max = s.segment_size_bytes_max;
    opts.group_commit_batch_bytes_max = s.group_commit_batch_bytes_max;
    opts.group_commit_batch_count_max = s.group_commit_batch_count_max as usize;
    opts
}

fn init_logging(level: LogLevel, format: LogFormat) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .with_context(|| format!("RUST_LOG={directives:?} is not a valid filter"))?,
        // Our crates (all named metanode*) at the configured level;
        // dependencies no chattier than info.
        _ => match level {
            LogLevel::Debug | LogLevel::Trace => {
                EnvFilter::new(format!("info,metanode={}", level.as_str()))
            }
            _ => EnvFilter::new(level.as_str()),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // NO_COLOR (no-color.org): the appliance's serial console is a
        // terminal to the kernel but a plain log file to whoever reads it.
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the logger failed: {e}"))
}

async fn serve_node(cfg: NodeConfig, appliance: bool, out: &Output) -> anyhow::Result<()> {
    let opts = store_options(&cfg);
    let data_dir = cfg.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let store = tokio::task::spawn_blocking(move || Store::open(opts))
        .await
        .context("opening the store panicked")?
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    // Right after the store took the data dir's lock (so no second agent on
    // this dir can touch the record), before a chain replay or anything
    // else that may fail: XDP links an earlier config of this node pinned
    // and this one does not list (a reverted trial's, which may block the
    // operator) stop filtering. With a traffic section a failure stops the
    // node (links pinned unrecorded could never be released); without one
    // the node must still come up.
    let (pin_dir, interfaces) = match &cfg.traffic {
        Some(t) => (t.xdp_pin_dir.clone(), t.xdp_interfaces.clone()),
        None => (metanode_core::config::default_xdp_pin_dir(), Vec::new()),
    };
    if let Err(e) = crate::traffic::reconcile_xdp_links(&data_dir, &pin_dir, &interfaces) {
        if cfg.traffic.is_some() {
            return Err(e);
        }
        tracing::error!(error = %format!("{e:#}"), "releasing this node's earlier XDP links");
    }
    let report = store.open_report();
    if report.torn_tail_bytes_truncated > 0 {
        tracing::warn!(
            bytes = report.torn_tail_bytes_truncated,
            "cut off an unacknowledged torn write at the end of the last segment"
        );
    }
    for region in &report.damaged_regions {
        tracing::error!(region = %region, "damaged region in a sealed segment; run `metanode store verify`");
    }
    tracing::info!(
        node = %cfg.node.name,
        io = store.io_name(),
        io_reason = store.io_reason(),
        segments = report.segments,
        records = report.records,
        "store open"
    );

    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("binding the api to {} (api.listen)", cfg.api.listen))?;
    let local = listener
        .local_addr()
        .context("reading the api's bound address")?;
    let url = format!("http://{local}");
    let url_file = data_dir.join(API_URL_FILE_NAME);
    if let Err(e) = std::fs::write(&url_file, format!("{url}\n")) {
        tracing::warn!(path = %url_file.display(), error = %e, "could not record the api url");
    }

    let state = AppState::new(
        store.clone(),
        ApiOptions {
            upload_size_bytes_max: cfg.api.upload_size_bytes_max,
            upload_collect_size_bytes_max: store.options().inline_size_bytes_max,
            request_timeout_ms: cfg.api.request_timeout_ms,
            connections_max: cfg.api.connections_max as usize,
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
    );
    let state = if appliance {
        state.with_system(std::sync::Arc::new(metanode_system::ApplianceControl::new(
            env!("CARGO_PKG_VERSION"),
        )))
    } else {
        state
    };
    let chain = match &cfg.chain {
        Some(section) => match start_chain(&cfg, section, out).await {
            Ok(node) => Some(node),
            Err(err) => {
                let _ = std::fs::remove_file(&url_file);
                return Err(err);
            }
        },
        None => None,
    };
    let state = match &chain {
        Some(node) => state.with_chain(node.clone()),
        None => state,
    };
    // Cage runs through the API: the agent spawns its own binary per run, never forks itself.
    let state = match &cfg.docklock {
        Some(section) => {
            match crate::docklock_service::DocklockService::start(&cfg, section, store.clone()) {
                Ok(service) => state.with_docklock(service),
                Err(err) => {
                    let _ = std::fs::remove_file(&url_file);
                    if let Some(node) = chain {
                        node.shutdown().await;
                    }
                    return Err(err);
                }
            }
        }
        None => state,
    };
    let traffic = match &cfg.traffic {
        Some(section) => match crate::traffic::start(&cfg, section, store.clone(), out).await {
            Ok(started) => Some(started),
            Err(err) => {
                let _ = std::fs::remove_file(&url_file);
                if let Some(node) = chain {
                    node.shutdown().await;
                }
                return Err(err);
            }
        },
        None => None,
    };
    let (state, traffic) = match traffic {
        Some((traffic, metrics)) => {
            let mut state = state.with_traffic_metrics(std::sync::Arc::new(metrics));
            if let Some(receipts) = traffic.cage_receipts() {
                state = state.with_cage_receipts(receipts);
            }
            (state, Some(traffic))
        }
        None => (state, None),
    };
    let (signals_tx, signals_rx) = watch::channel(0u32);
    // Installed here, before "serving" is announced: a handler installed
    // inside the spawned task could come after a SIGTERM sent right after
    // the announcement, which would then kill the agent outright.
    let handlers = StopSignals::install();
    let signals = tokio::spawn(count_signals(handlers, signals_tx));

    out.emit(
        &format!(
            "metanode: serving api on {url} (store: {}, io: {})",
            data_dir.display(),
            store.io_name()
        ),
        &serde_json::json!({
            "event": "serving",
            "api": url,
            "store": data_dir,
            "io": store.io_name(),
        }),
    );
    tracing::info!(api = %url, "serving");

    let served = metanode_api::serve(
        listener,
        state,
        signal_count(signals_rx.clone(), 1),
        signal_count(signals_rx, 2),
    )
    .await;
    signals.abort();
    let _ = std::fs::remove_file(&url_file);
    if let Some(traffic) = traffic {
        traffic.shutdown().await;
    }
    // The API is drained, so no request can reach the chain any more; stop
    // it before the store, and even when serving failed.
    if let Some(node) = chain {
        tracing::info!("stopping the chain node");
        node.shutdown().await;
    }
    let served = served.context("serving the api")?;
    if served.connections_aborted > 0 {
        tracing::warn!(
            aborted = served.connections_aborted,
            "dropped connections still busy at the end of the drain"
        );
    }
    tracing::info!(
        connections = served.connections_total,
        "api stopped; closing the store"
    );
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("closing the store panicked")?
        .context("closing the store")?;
    tracing::info!("store closed; bye");
    Ok(())
}

/// Loads the genesis and the key named by the `chain:` section, resolves
/// the peers, and starts the chain node (which replays its stored blocks
/// before it returns).
async fn start_chain(
    cfg: &NodeConfig,
    section: &ChainConfig,
    out: &Output,
) -> anyhow::Result<Arc<ChainNode>> {
    let genesis_path = section.genesis.clone();
    let genesis = tokio::task::spawn_blocking(move || genesis_file::load(&genesis_path))
        .await
        .context("loading the genesis panicked")?
        .context("loading chain.genesis")?;
    let key_path = cfg
        .chain_key_file_path()
        .context("the config has no chain section")?;
    let key = SigningKeyFile::new(&key_path)
        .load()
        .with_context(|| format!("loading the chain key {} (chain.key)", key_path.display()))?;
    let mut peers: Vec<(PublicKey, Option<SocketAddr>)> = Vec::with_capacity(section.peers.len());
    for (i, peer) in section.peers.iter().enumerate() {
        let public_key = peer
            .public_key()
            .with_context(|| format!("chain.peers.{i}.public_key"))?;
        let address = match peer.host_port() {
            None => None,
            Some(Err(message)) => anyhow::bail!("chain.peers.{i}.address: {message}"),
            Some(Ok((host, port))) => match tokio::net::lookup_host((host, port)).await {
                Ok(mut found) => found.next(),
                Err(err) => {
                    // A peer that cannot be resolved now can still dial us.
                    tracing::warn!(peer = %public_key, address = %host, error = %err,
                        "cannot resolve a chain peer's address; waiting for it to connect");
                    None
                }
            },
        };
        peers.push((public_key, address));
    }
    let chain_id = genesis.chain_id();
    let chain_name = genesis.chain_name.clone();
    let is_validator = genesis.validators.index_of(&key.public_key()).is_some();
    let mut node_cfg =
        ChainNodeConfig::new(genesis, key, cfg.chain_data_dir(), section.listen, peers);
    node_cfg.node.block_interval_min_ms = section.block_interval_min_ms;
    node_cfg.node.empty_block_interval_ms = section.empty_block_interval_ms;
    let engine = &mut node_cfg.node.engine;
    engine.round_timeout_base_ms = section.round_timeout_base_ms;
    engine.round_timeout_max_ms = engine
        .round_timeout_max_ms
        .max(section.round_timeout_base_ms);
    let node = ChainNode::start(node_cfg).await.with_context(|| {
        format!(
            "starting the chain node (data in {})",
            cfg.chain_data_dir().display()
        )
    })?;
    let role = if is_validator {
        "validator"
    } else {
        "observer"
    };
    out.emit(
        &format!(
            "metanode: chain {chain_name} ({chain_id}) on bpci {} as {role} {}",
            node.local_addr(),
            node.public_key()
        ),
        &serde_json::json!({
            "event": "chain",
            "chain_id": chain_id.to_string(),
            "chain_name": chain_name,
            "bpci": node.local_addr().to_string(),
            "node_key": node.public_key().to_string(),
            "validator": is_validator,
        }),
    );
    tracing::info!(chain = %chain_id, bpci = %node.local_addr(), role, "chain node started");
    Ok(node)
}

/// Count SIGTERM/SIGINT deliveries: the first starts a graceful shutdown,
/// the second cuts the drain short.
async fn count_signals(mut signals: StopSignals, tx: watch::Sender<u32>) {
    loop {
        let name = signals.next().await;
        let count = *tx.borrow() + 1;
        if count == 1 {
            tracing::info!(
                signal = name,
                "shutting down gracefully (send it again to stop at once)"
            );
        } else {
            tracing::warn!(
                signal = name,
                "stopping without waiting for in-flight requests"
            );
        }
        tx.send_replace(count);
    }
}

async fn signal_count(mut rx: watch::Receiver<u32>, at_least: u32) {
    // A closed channel means the signal task is gone; then only the other
    // shutdown paths remain, so wait forever rather than stop spuriously.
    if rx.wait_for(|n| *n >= at_least).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The URL a running agent recorded for `data_dir`, if any.
pub fn recorded_api_url(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(API_URL_FILE_NAME)).ok()?;
    let url = text.trim();
    (url.starts_with("http://") && url.len() < 256).then(|| url.to_string())
}

/// The node key signs the traffic decision log, the cage's receipts and
/// DockLock witness receipts. A node without one (first boot) gets a fresh
/// key, written 0600; an existing file that does not load is an error, never
/// silently replaced.
pub(crate) fn node_key(cfg: &NodeConfig) -> anyhow::Result<SigningKey> {
    let path = cfg.key_file_path();
    let file = SigningKeyFile::new(&path);
    if !path.exists() {
        let key = SigningKey::generate().map_err(|e| anyhow!("generating a node key: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        file.save(&key, Overwrite::Refuse)
            .with_context(|| format!("writing the new node key {}", path.display()))?;
        tracing::info!(key = %key.public_key(), path = %path.display(), "generated the node key");
        return Ok(key);
    }
    file.load()
        .with_context(|| format!("loading the node key {} (node.key_file)", path.display()))
}
