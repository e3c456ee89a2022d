//! Typed node configuration: one YAML file, one schema.
//!
//! The serde structs below are the single source of truth. The JSON Schema is
//! derived from them (schemars), the CUE export and the commented example are
//! generated from that JSON Schema, and `config check` walks the YAML against
//! the same JSON Schema. Nothing about a field is written down twice except
//! its range checks in [`NodeConfig::validate`], whose bounds come from the
//! same `limits.rs` constants the schema attributes use.
//!
//! Loading is diagnostic-first: [`NodeConfig::from_yaml_str`] reports every
//! error in the file with its line, column and field path (unknown keys, wrong
//! types, bad enum values, out-of-range values, cross-field violations), not
//! just the first one serde would stop at; `config/check.rs` explains how.
//!
//! Defaults: every field has one except `node.name`, which names the node in
//! its fleet and so must be chosen by whoever deploys it (and
//! `chain.genesis`, once the optional `chain:` section is present: without
//! that section the node runs no chain). `node.data_dir`
//! defaults to the appliance's data partition, and the API listens on
//! loopback unless told otherwise, so a config that forgets `api.listen`
//! never exposes the API by accident. `network` defaults to DHCP on the
//! first Ethernet interface, which is what a VM (QEMU user networking, a
//! cloud) offers; the binary converts the section into
//! `metanode-netcfg`'s `NetConfig` (the crates do not depend on each other).

mod check;
mod cue;
mod example;
mod schema;
mod yaml_tree;

use std::fmt;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits;

pub use cue::json_schema_to_cue;
pub use example::example_yaml;
pub use schema::{FieldOrder, field_order, json_schema};

// ---- defaults ----

/// Where the appliance mounts its persistent data partition.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/metanode";
/// File name of the node key inside `data_dir` when `key_file` is not set.
pub const DEFAULT_KEY_FILE_NAME: &str = "node.key";
pub const DEFAULT_API_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7878));
pub const DEFAULT_API_UPLOAD_SIZE_BYTES_MAX: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_API_REQUEST_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_API_CONNECTIONS_MAX: u32 = 4096;
pub const DEFAULT_STORE_ZSTD_LEVEL: i32 = 3;
pub const DEFAULT_STORE_INLINE_SIZE_BYTES_MAX: u64 = 256 * 1024;
pub const DEFAULT_STORE_SEGMENT_SIZE_BYTES_MAX: u64 = 256 * 1024 * 1024;
pub const DEFAULT_STORE_GROUP_COMMIT_BATCH_BYTES_MAX: u64 = 8 * 1024 * 1024;
pub const DEFAULT_STORE_GROUP_COMMIT_BATCH_COUNT_MAX: u32 = 1024;

pub const DEFAULT_CHAIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7900));
pub const DEFAULT_CHAIN_BLOCK_INTERVAL_MIN_MS: u64 = 50;
pub const DEFAULT_CHAIN_EMPTY_BLOCK_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_CHAIN_ROUND_TIMEOUT_BASE_MS: u64 = 1_000;

const fn in_range_u64(value: u64, range: &RangeInclusive<u64>) -> bool {
    value >= *range.start() && value <= *range.end()
}
const fn in_range_u32(value: u32, range: &RangeInclusive<u32>) -> bool {
    value >= *range.start() && value <= *range.end()
}

// The defaults must themselves be a valid config (`default_config_validates`
// tests the whole; these catch a bad edit at compile time).
const _: () = assert!(in_range_u64(
    DEFAULT_API_UPLOAD_SIZE_BYTES_MAX,
    &limits::CONFIG_API_UPLOAD_SIZE_BYTES_MAX_RANGE
));
const _: () = assert!(in_range_u64(
    DEFAULT_API_REQUEST_TIMEOUT_MS,
    &limits::CONFIG_API_REQUEST_TIMEOUT_MS_RANGE
));
const _: () = assert!(in_range_u32(
    DEFAULT_API_CONNECTIONS_MAX,
    &limits::CONFIG_API_CONNECTIONS_MAX_RANGE
));
const _: () = assert!(
    DEFAULT_STORE_ZSTD_LEVEL >= *limits::CONFIG_STORE_ZSTD_LEVEL_RANGE.start()
        && DEFAULT_STORE_ZSTD_LEVEL <= *limits::CONFIG_STORE_ZSTD_LEVEL_RANGE.end()
);
const _: () = assert!(in_range_u64(
    DEFAULT_STORE_INLINE_SIZE_BYTES_MAX,
    &limits::CONFIG_STORE_INLINE_SIZE_BYTES_MAX_RANGE
));
const _: () = assert!(in_range_u64(
    DEFAULT_STORE_SEGMENT_SIZE_BYTES_MAX,
    &limits::CONFIG_STORE_SEGMENT_SIZE_BYTES_MAX_RANGE
));
const _: () = assert!(in_range_u64(
    DEFAULT_STORE_GROUP_COMMIT_BATCH_BYTES_MAX,
    &limits::CONFIG_STORE_GROUP_COMMIT_BATCH_BYTES_MAX_RANGE
));
const _: () = assert!(in_range_u32(
    DEFAULT_STORE_GROUP_COMMIT_BATCH_COUNT_MAX,
    &limits::CONFIG_STORE_GROUP_COMMIT_BATCH_COUNT_MAX_RANGE
));
const _: () = assert!(in_range_u64(
    DEFAULT_CHAIN_BLOCK_INTERVAL_MIN_MS,
    &limits::CONFIG_CHAIN_BLOCK_INTERVAL_MIN_MS_RANGE
));
const _: () = assert!(in_range_u64(
    DEFAULT_CHAIN_EMPTY_BLOCK_INTERVAL_MS,
    &limits::CONFIG_CHAIN_EMPTY_BLOCK_INTERVAL_MS_RANGE
));
const _: () = assert!(in_range_u64(
    DEFAULT_CHAIN_ROUND_TIMEOUT_BASE_MS,
    &limits::CONFIG_CHAIN_ROUND_TIMEOUT_BASE_MS_RANGE
));
const _: () = assert!(DEFAULT_CHAIN_BLOCK_INTERVAL_MIN_MS <= DEFAULT_CHAIN_EMPTY_BLOCK_INTERVAL_MS);
const _: () =
    assert!(DEFAULT_STORE_INLINE_SIZE_BYTES_MAX <= DEFAULT_STORE_GROUP_COMMIT_BATCH_BYTES_MAX);
const _: () =
    assert!(DEFAULT_STORE_GROUP_COMMIT_BATCH_BYTES_MAX <= DEFAULT_STORE_SEGMENT_SIZE_BYTES_MAX);

/// `node.name`: a DNS label, so the name can appear in hostnames, metric
/// labels and file names without escaping.
pub const NODE_NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

// Network bounds are facts of IPv4, the kernel and resolvers rather than
// tuning knobs, so they live here next to the section they bound.
/// `network.address` prefix lengths: a /0 interface address is meaningless.
pub const CONFIG_NETWORK_PREFIX_LEN_RANGE: RangeInclusive<u8> = 1..=32;
/// `network.dns`: resolvers read at most three `nameserver` lines (`MAXNS`).
pub const CONFIG_NETWORK_DNS_COUNT_MAX: usize = 3;
/// `network.interface`: the kernel's `IFNAMSIZ` minus the terminating NUL.
pub const CONFIG_NETWORK_INTERFACE_LEN_MAX: usize = 15;
/// `network.interface`: what the kernel accepts in a name (no '/', ':' or
/// whitespace).
pub const NETWORK_INTERFACE_PATTERN: &str = r"^[^/:\s]{1,15}$";
/// `traffic.xdp_interfaces`: a node has a handful of NICs.
pub const CONFIG_TRAFFIC_XDP_INTERFACES_COUNT_MAX: usize = 16;
/// The example `network.dns` of the generated config (QEMU's slirp DNS).
const NETWORK_DNS_EXAMPLE: [&str; 1] = ["10.0.2.3"];
/// `network.address`: dotted quad and prefix length.
pub const NETWORK_ADDRESS_PATTERN: &str = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$";
/// `chain.peers[].public_key`: an Ed25519 public key as 64 hex digits.
pub const CHAIN_PUBLIC_KEY_PATTERN: &str = "^[0-9a-fA-F]{64}$";
/// `chain.peers[].address`: `host:port`, the host an IPv4 address, a DNS
/// name or a bracketed IPv6 address.
pub const CHAIN_PEER_ADDRESS_PATTERN: &str = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$";
/// The example public key of the generated config.
const CHAIN_PUBLIC_KEY_EXAMPLE: &str =
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

// ---- the config ----

/// Configuration of one Metanode node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NodeConfig")]
pub struct NodeConfig {
    /// Identity of this node and where it keeps its data.
    pub node: NodeSection,
    /// The HTTP API (blob uploads and reads, node status).
    #[serde(default)]
    pub api: ApiConfig,
    /// The content-addressed blob store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The network interface, when the agent runs as the appliance's init.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The BPI chain this node takes part in. Without this section the node
    /// runs no chain (and its `/api/v1/chain*` routes answer 409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainConfig>,
    /// BISO traffic lights and the HTTP Cage: one policy, enforced on packets
    /// (XDP) and on requests (the cage). Without this section the node runs
    /// neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficConfig>,
    /// DockLock cage runs through the agent API (`POST /api/v1/docklock/runs`).
    /// Without this section that route answers 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docklock: Option<DocklockConfig>,
}

/// DockLock cage runs through the agent API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Docklock")]
pub struct DocklockConfig {
    /// Absolute path of the directory holding the executables and OCI
    /// bundles the API may run: a request naming anything that does not
    /// resolve beneath it (symlinks followed) is refused.
    #[schemars(regex(pattern = "^/"), example = &"/var/lib/metanode/workloads")]
    pub workloads_dir: PathBuf,
    /// Longest wall time of one run, in seconds: the timeout of a request
    /// that names none, and the largest `timeout_s` a request may ask for.
    #[serde(default = "default_docklock_run_timeout_s_max")]
    #[schemars(range(
        min = *limits::CONFIG_DOCKLOCK_RUN_TIMEOUT_S_RANGE.start(),
        max = *limits::CONFIG_DOCKLOCK_RUN_TIMEOUT_S_RANGE.end()
    ))]
    pub run_timeout_s_max: u64,
    /// Whether a request may name its program by CID (`executable_cid`):
    /// the blob is read from this node's store and run, so anyone who can
    /// store a blob through the API can run code in a cage. Off, such a
    /// request is refused with 403 and only programs beneath
    /// `workloads_dir` run.
    #[serde(default)]
    pub executables_by_cid: bool,
}

impl DocklockConfig {
    pub fn new(workloads_dir: impl Into<PathBuf>) -> Self {
        Self {
            workloads_dir: workloads_dir.into(),
            run_timeout_s_max: limits::CONFIG_DOCKLOCK_RUN_TIMEOUT_S_DEFAULT,
            executables_by_cid: false,
        }
    }
}

/// Identity of this node and where it keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Node")]
pub struct NodeSection {
    /// Name of the node in its fleet: 1 to 63 characters of a-z, 0-9 and '-',
    /// not starting or ending with '-' (a DNS label). Each node needs its
    /// own, so there is no default.
    #[schemars(
        length(min = *limits::CONFIG_NODE_NAME_LEN_RANGE.start(), max = *limits::CONFIG_NODE_NAME_LEN_RANGE.end()),
        regex(pattern = NODE_NAME_PATTERN),
        example = &"node-1"
    )]
    pub name: String,
    /// Absolute path of the directory holding the store, the node key and
    /// all other state. Must not be the filesystem root.
    #[serde(default = "default_data_dir")]
    #[schemars(regex(pattern = "^/"))]
    pub data_dir: PathBuf,
    /// Absolute path of the node's Ed25519 key file. When unset, the key is
    /// `node.key` inside `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"), example = &"/var/lib/metanode/node.key")]
    pub key_file: Option<PathBuf>,
}

/// The HTTP API (blob uploads and reads, node status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "Api")]
pub struct ApiConfig {
    /// Socket address (ip:port) the API listens on. The default is loopback
    /// only; listen on 0.0.0.0 or a public address explicitly. Port 0 is
    /// rejected: clients could not find a port the kernel picked.
    #[schemars(
        extend("format" = "socket-address"),
        regex(pattern = r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$")
    )]
    pub listen: SocketAddr,
    /// Largest blob one upload may carry, in bytes.
    #[schemars(range(
        min = *limits::CONFIG_API_UPLOAD_SIZE_BYTES_MAX_RANGE.start(),
        max = *limits::CONFIG_API_UPLOAD_SIZE_BYTES_MAX_RANGE.end()
    ))]
    pub upload_size_bytes_max: u64,
    /// Time one request may take end to end, in milliseconds, before the
    /// server aborts it.
    #[schemars(range(
        min = *limits::CONFIG_API_REQUEST_TIMEOUT_MS_RANGE.start(),
        max = *limits::CONFIG_API_REQUEST_TIMEOUT_MS_RANGE.end()
    ))]
    pub request_timeout_ms: u64,
    /// Most client connections served at once; further connections wait in
    /// the kernel's accept queue.
    #[schemars(range(
        min = *limits::CONFIG_API_CONNECTIONS_MAX_RANGE.start(),
        max = *limits::CONFIG_API_CONNECTIONS_MAX_RANGE.end()
    ))]
    pub connections_max: u32,
}

/// The content-addressed blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "Store")]
pub struct StoreConfig {
    /// How the store does disk IO.
    pub io: IoMode,
    /// Compression of blobs packed into segments.
    pub compression: Compression,
    /// zstd compression level; only used when `compression` is `zstd`.
    #[schemars(range(
        min = *limits::CONFIG_STORE_ZSTD_LEVEL_RANGE.start(),
        max = *limits::CONFIG_STORE_ZSTD_LEVEL_RANGE.end()
    ))]
    pub zstd_level: i32,
    /// Blobs up to this size, in bytes, are packed into segment files; larger
    /// blobs get their own file plus a bao outboard for verified range reads.
    /// Must not exceed `group_commit_batch_bytes_max`.
    #[schemars(range(
        min = *limits::CONFIG_STORE_INLINE_SIZE_BYTES_MAX_RANGE.start(),
        max = *limits::CONFIG_STORE_INLINE_SIZE_BYTES_MAX_RANGE.end()
    ))]
    pub inline_size_bytes_max: u64,
    /// Size at which a segment file is sealed and a new one started, in bytes.
    #[schemars(range(
        min = *limits::CONFIG_STORE_SEGMENT_SIZE_BYTES_MAX_RANGE.start(),
        max = *limits::CONFIG_STORE_SEGMENT_SIZE_BYTES_MAX_RANGE.end()
    ))]
    pub segment_size_bytes_max: u64,
    /// Most bytes written by one group commit (one fsync). Must lie between
    /// `inline_size_bytes_max` and `segment_size_bytes_max`, because a batch
    /// is appended to a single segment.
    #[schemars(range(
        min = *limits::CONFIG_STORE_GROUP_COMMIT_BATCH_BYTES_MAX_RANGE.start(),
        max = *limits::CONFIG_STORE_GROUP_COMMIT_BATCH_BYTES_MAX_RANGE.end()
    ))]
    pub group_commit_batch_bytes_max: u64,
    /// Most writes acknowledged by one group commit (one fsync).
    #[schemars(range(
        min = *limits::CONFIG_STORE_GROUP_COMMIT_BATCH_COUNT_MAX_RANGE.start(),
        max = *limits::CONFIG_STORE_GROUP_COMMIT_BATCH_COUNT_MAX_RANGE.end()
    ))]
    pub group_commit_batch_count_max: u32,
}

/// How the store does disk IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IoMode {
    /// io_uring when the kernel allows it, else posix (decided at startup).
    Auto,
    /// io_uring only; startup fails if the kernel refuses it.
    IoUring,
    /// pread/pwrite/fsync from a thread pool.
    Posix,
}

/// Compression of blobs packed into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Store bytes as they are.
    None,
    /// zstd at `zstd_level`.
    Zstd,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "Log")]
pub struct LogConfig {
    /// Least severe level that is logged.
    pub level: LogLevel,
    /// Line format on stderr (the serial console in the appliance).
    pub format: LogFormat,
}

/// Least severe level that is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Line format of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The network interface, when the agent runs as the appliance's init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "Network")]
pub struct NetworkConfig {
    /// How the interface gets its address.
    pub mode: NetworkMode,
    /// Interface to configure. When unset, the first Ethernet interface
    /// (eth0 in a VM).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = CONFIG_NETWORK_INTERFACE_LEN_MAX),
        regex(pattern = NETWORK_INTERFACE_PATTERN),
        example = &"eth0"
    )]
    pub interface: Option<String>,
    /// The interface's IPv4 address with its prefix length. Required when
    /// `mode` is `static`, not allowed otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NETWORK_ADDRESS_PATTERN), example = &"10.0.2.15/24")]
    pub address: Option<String>,
    /// IPv4 default gateway (`static` only). No default route when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"10.0.2.2")]
    pub gateway: Option<Ipv4Addr>,
    /// IPv4 DNS servers written to /etc/resolv.conf (`static` only; DHCP
    /// brings its own), at most 3.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = CONFIG_NETWORK_DNS_COUNT_MAX), example = &NETWORK_DNS_EXAMPLE)]
    pub dns: Vec<Ipv4Addr>,
}

/// How the interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Ask a DHCP server, and keep renewing the lease.
    Dhcp,
    /// Use `address`, `gateway` and `dns` from this section.
    Static,
    /// Configure no interface; only loopback comes up.
    Off,
}

/// The BPI chain this node takes part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Chain")]
pub struct ChainConfig {
    /// Absolute path of the genesis file (YAML; `metanode chain genesis`
    /// writes one). Every node of the chain needs the same document: its
    /// hash is the chain id.
    #[schemars(regex(pattern = "^/"), example = &"/var/lib/metanode/genesis.yaml")]
    pub genesis: PathBuf,
    /// Absolute path of the Ed25519 key file (mode 0600) this node signs
    /// consensus messages and BPCI frames with. When unset, the node key
    /// (`node.key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"), example = &"/var/lib/metanode/chain.key")]
    pub key: Option<PathBuf>,
    /// UDP socket address (ip:port) the BPCI transport (QUIC) listens on.
    /// Port 0 is rejected: peers could not find a port the kernel picked.
    #[serde(default = "default_chain_listen")]
    #[schemars(
        extend("format" = "socket-address"),
        regex(pattern = r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$")
    )]
    pub listen: SocketAddr,
    /// The other nodes (validators and observers) this node talks to. Only
    /// keys listed here (or in the genesis validator set) may connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::CONFIG_CHAIN_PEERS_COUNT_MAX))]
    pub peers: Vec<ChainPeer>,
    /// A proposer waits at least this long after its parent block, in
    /// milliseconds, so an idle chain does not spin through empty blocks.
    /// Must not exceed `empty_block_interval_ms`.
    #[serde(default = "default_chain_block_interval_min_ms")]
    #[schemars(range(
        min = *limits::CONFIG_CHAIN_BLOCK_INTERVAL_MIN_MS_RANGE.start(),
        max = *limits::CONFIG_CHAIN_BLOCK_INTERVAL_MIN_MS_RANGE.end()
    ))]
    pub block_interval_min_ms: u64,
    /// With no pending transactions the proposer still proposes after this
    /// long, in milliseconds: a heartbeat block that proves liveness.
    #[serde(default = "default_chain_empty_block_interval_ms")]
    #[schemars(range(
        min = *limits::CONFIG_CHAIN_EMPTY_BLOCK_INTERVAL_MS_RANGE.start(),
        max = *limits::CONFIG_CHAIN_EMPTY_BLOCK_INTERVAL_MS_RANGE.end()
    ))]
    pub empty_block_interval_ms: u64,
    /// First QBFT round timeout, in milliseconds; it doubles with every
    /// further round of the same height (capped at one minute).
    #[serde(default = "default_chain_round_timeout_base_ms")]
    #[schemars(range(
        min = *limits::CONFIG_CHAIN_ROUND_TIMEOUT_BASE_MS_RANGE.start(),
        max = *limits::CONFIG_CHAIN_ROUND_TIMEOUT_BASE_MS_RANGE.end()
    ))]
    pub round_timeout_base_ms: u64,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "XdpMode")]
pub enum XdpMode {
    /// In the driver, before an skb exists: the fast path.
    #[default]
    Native,
    /// After the skb is built: works on every interface, slower.
    Generic,
}

/// BISO traffic lights and the HTTP Cage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Traffic")]
pub struct TrafficConfig {
    /// The BISO policy (YAML: data class, regions, consent, Bus BIOS mode):
    /// an absolute path, or `/ipfs/CID` for a raw blob in this node's store
    /// (`metanode store put --api`, `POST /api/v1/blobs`), which is how an
    /// appliance with no shell gets one; the agent keeps a checked copy in
    /// `data_dir`, so the blob may be collected later. `metanode biso check
    /// FILE` shows the lights a policy gives.
    #[schemars(regex(pattern = "^/"), example = &"/var/lib/metanode/biso.yaml")]
    pub policy: PathBuf,
    /// Interfaces the XDP traffic lights are attached to. Empty: no packet
    /// filtering (the cage still applies the policy to requests). The links
    /// are pinned, so an agent restart keeps filtering, and a pinned link
    /// keeps the mode it was first attached with. The node records what it
    /// pinned (`data_dir`/biso/xdp-links), and each start releases the
    /// links its config no longer lists, also when it has no `traffic:`
    /// section: a reverted config trial leaves no filter behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = CONFIG_TRAFFIC_XDP_INTERFACES_COUNT_MAX),
        inner(regex(pattern = NETWORK_INTERFACE_PATTERN))
    )]
    pub xdp_interfaces: Vec<String>,
    /// native (in the driver) or generic (any interface, slower).
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// bpffs directory for the XDP maps and links. Pinned there, they outlive
    /// the agent, so packets stay filtered while it restarts. Two agents on
    /// one host need two directories.
    #[serde(default = "default_xdp_pin_dir")]
    #[schemars(regex(pattern = "^/"), example = &"/sys/fs/bpf/metanode")]
    pub xdp_pin_dir: PathBuf,
    /// The HTTP Cage config (listener, routes, keys, limits): an absolute
    /// path, or `/ipfs/CID` for a blob in this node's store, as for
    /// `policy`. Unset: no cage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^/"), example = &"/var/lib/metanode/cage.yaml")]
    pub cage: Option<PathBuf>,
}

/// Another node of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ChainPeer")]
pub struct ChainPeer {
    /// The peer's Ed25519 public key, 64 hex digits (as in the genesis
    /// validator list).
    #[schemars(regex(pattern = CHAIN_PUBLIC_KEY_PATTERN), example = &CHAIN_PUBLIC_KEY_EXAMPLE)]
    pub public_key: String,
    /// Where to dial the peer: host:port, the host an IP address or a DNS
    /// name. When unset, this node waits for the peer to connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = limits::CONFIG_CHAIN_PEER_ADDRESS_LEN_MAX),
        regex(pattern = CHAIN_PEER_ADDRESS_PATTERN),
        example = &"10.0.0.2:7900"
    )]
    pub address: Option<String>,
}

impl ChainConfig {
    /// A chain section with every default: `genesis` and `key` as given,
    /// no peers.
    pub fn new(genesis: impl Into<PathBuf>, key: Option<PathBuf>) -> ChainConfig {
        ChainConfig {
            genesis: genesis.into(),
            key,
            listen: DEFAULT_CHAIN_LISTEN,
            peers: Vec::new(),
            block_interval_min_ms: DEFAULT_CHAIN_BLOCK_INTERVAL_MIN_MS,
            empty_block_interval_ms: DEFAULT_CHAIN_EMPTY_BLOCK_INTERVAL_MS,
            round_timeout_base_ms: DEFAULT_CHAIN_ROUND_TIMEOUT_BASE_MS,
        }
    }

    pub fn block_interval_min(&self) -> Duration {
        Duration::from_millis(self.block_interval_min_ms)
    }

    pub fn empty_block_interval(&self) -> Duration {
        Duration::from_millis(self.empty_block_interval_ms)
    }

    pub fn round_timeout_base(&self) -> Duration {
        Duration::from_millis(self.round_timeout_base_ms)
    }
}

impl ChainPeer {
    /// The peer's key; a config that passed validation always has one.
    pub fn public_key(&self) -> Result<crate::keys::PublicKey, crate::keys::ParsePublicKeyError> {
        self.public_key.parse()
    }

    /// `address` split into host and port; `None` when unset. A config that
    /// passed validation always splits.
    pub fn host_port(&self) -> Option<Result<(&str, u16), String>> {
        self.address.as_deref().map(parse_host_port)
    }
}

/// Split `host:port` (IPv6 hosts in brackets). The error says what is
/// wrong, for a diagnostic on the field.
pub fn parse_host_port(text: &str) -> Result<(&str, u16), String> {
    let shown = yaml_tree::abbreviate(text);
    if text.len() > limits::CONFIG_CHAIN_PEER_ADDRESS_LEN_MAX {
        return Err(format!(
            "\"{shown}\" is {} bytes; an address has at most {}",
            text.len(),
            limits::CONFIG_CHAIN_PEER_ADDRESS_LEN_MAX
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "\"{shown}\" has no port; expected host:port such as 10.0.0.2:7900"
        ));
    };
    let host = match host.strip_prefix('[') {
        Some(inner) => {
            let inner = inner.strip_suffix(']').ok_or_else(|| {
                format!("\"{shown}\" opens '[' without closing it before the port")
            })?;
            if inner.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!(
                    "\"{shown}\": [{}] is not an IPv6 address",
                    yaml_tree::abbreviate(inner)
                ));
            }
            inner
        }
        None => host,
    };
    if host.is_empty() {
        return Err(format!("\"{shown}\" has no host before the port"));
    }
    if host.contains(':') && !text.starts_with('[') {
        return Err(format!(
            "\"{shown}\": write an IPv6 host in brackets, like [fd00::2]:7900"
        ));
    }
    if let Some(bad) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '[' | ']' | '@'))
    {
        return Err(format!(
            "\"{shown}\": the host contains {bad:?}, which no IP address or DNS name has"
        ));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("\"{shown}\": the port is not a number in 1..=65535"))?;
    if port == 0 {
        return Err(format!(
            "\"{shown}\": port 0 cannot be dialled; use the port the peer listens on"
        ));
    }
    Ok((host, port))
}

impl NetworkConfig {
    /// `address` as (address, prefix length), if it is set and valid.
    pub fn address_and_prefix(&self) -> Option<(Ipv4Addr, u8)> {
        self.address
            .as_deref()
            .and_then(|a| parse_ipv4_cidr(a).ok())
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: NetworkMode::Dhcp,
            interface: None,
            address: None,
            gateway: None,
            dns: Vec::new(),
        }
    }
}

/// Parse `10.0.2.15/24` as an interface address. The error says what is
/// wrong with the text, for a diagnostic on its field.
pub fn parse_ipv4_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let shown = yaml_tree::abbreviate(text);
    let Some((address, prefix)) = text.split_once('/') else {
        return Err(format!(
            "\"{shown}\" has no prefix length; expected an address like 10.0.2.15/24"
        ));
    };
    let address: Ipv4Addr = address.parse().map_err(|_| {
        format!("\"{shown}\" is not an IPv4 address with a prefix length, like 10.0.2.15/24")
    })?;
    let prefix_len: u8 = prefix.parse().map_err(|_| {
        format!("\"{shown}\" has a prefix length that is not a number, like 10.0.2.15/24")
    })?;
    if !CONFIG_NETWORK_PREFIX_LEN_RANGE.contains(&prefix_len) {
        return Err(format!(
            "prefix length {prefix_len} in \"{shown}\" is out of range {CONFIG_NETWORK_PREFIX_LEN_RANGE:?}"
        ));
    }
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
    {
        return Err(format!(
            "{address} cannot be an interface address (unspecified, loopback, multicast or broadcast)"
        ));
    }
    Ok((address, prefix_len))
}

fn interface_name_problem(name: &str) -> Option<String> {
    let shown = yaml_tree::abbreviate(name);
    if name.is_empty() || name.len() > CONFIG_NETWORK_INTERFACE_LEN_MAX {
        return Some(format!(
            "\"{shown}\" is {} bytes; an interface name has 1..={CONFIG_NETWORK_INTERFACE_LEN_MAX}",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "\"{shown}\" is not an interface name (no '/', ':', whitespace, `.` or `..`)"
        ));
    }
    None
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_docklock_run_timeout_s_max() -> u64 {
    limits::CONFIG_DOCKLOCK_RUN_TIMEOUT_S_DEFAULT
}

/// Where XDP maps and links are pinned unless `traffic.xdp_pin_dir` says.
pub fn default_xdp_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/metanode")
}

fn default_chain_listen() -> SocketAddr {
    DEFAULT_CHAIN_LISTEN
}

fn default_chain_block_interval_min_ms() -> u64 {
    DEFAULT_CHAIN_BLOCK_INTERVAL_MIN_MS
}

fn default_chain_empty_block_interval_ms() -> u64 {
    DEFAULT_CHAIN_EMPTY_BLOCK_INTERVAL_MS
}

fn default_chain_round_timeout_base_ms() -> u64 {
    DEFAULT_CHAIN_ROUND_TIMEOUT_BASE_MS
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_API_LISTEN,
            upload_size_bytes_max: DEFAULT_API_UPLOAD_SIZE_BYTES_MAX,
            request_timeout_ms: DEFAULT_API_REQUEST_TIMEOUT_MS,
            connections_max: DEFAULT_API_CONNECTIONS_MAX,
        }
    }
}

impl ApiConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            io: IoMode::Auto,
            compression: Compression::None,
            zstd_level: DEFAULT_STORE_ZSTD_LEVEL,
            inline_size_bytes_max: DEFAULT_STORE_INLINE_SIZE_BYTES_MAX,
            segment_size_bytes_max: DEFAULT_STORE_SEGMENT_SIZE_BYTES_MAX,
            group_commit_batch_bytes_max: DEFAULT_STORE_GROUP_COMMIT_BATCH_BYTES_MAX,
            group_commit_batch_count_max: DEFAULT_STORE_GROUP_COMMIT_BATCH_COUNT_MAX,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

// ---- errors ----

/// One problem in a config file, placed on the line that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted field path (`store.zstd_level`); empty for a problem with the
    /// document as a whole (a syntax error).
    pub path: String,
    pub message: String,
}

/// Every problem found in one config file, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    /// How the file is named in messages (its path, or e.g. `<stdin>`).
    pub source_name: String,
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for Diagnostics {
    /// One `file:line:col: path: message` line per error, the format editors
    /// and CI annotators already understand.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{error}", self.source_name)?;
        }
        Ok(())
    }
}

/// Why [`NodeConfig::from_yaml_str`] or [`NodeConfig::from_file`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {source_name} is larger than the {size_bytes_max}-byte limit")]
    TooLarge {
        source_name: String,
        size_bytes_max: u64,
    },
    #[error("invalid config {} ({} error{}):\n{diagnostics}",
        diagnostics.source_name,
        diagnostics.errors.len(),
        if diagnostics.errors.len() == 1 { "" } else { "s" })]
    Invalid { diagnostics: Diagnostics },
}

/// One rule of [`NodeConfig::validate`] that a config breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field the error is reported on.
    pub path: String,
    pub message: String,
    /// Other fields the rule compared against (cross-field rules). When any
    /// of them is itself malformed, `config check` drops this error: it would
    /// be comparing against a stand-in value, not what the file says.
    pub related_paths: Vec<String>,
}

/// Every rule a config breaks (see [`NodeConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node config: {}", .errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; "))]
pub struct ValidateConfigError {
    pub errors: Vec<FieldError>,
}

// ---- loading and validation ----

impl NodeConfig {
    /// A config for `metanode agent --dev`: defaults, node name `dev`, debug
    /// logging. Passes [`validate_dev`](Self::validate_dev); passes
    /// [`validate`](Self::validate) too unless `api_listen` has port 0.
    pub fn dev(data_dir: impl Into<PathBuf>, api_listen: SocketAddr) -> NodeConfig {
        NodeConfig {
            node: NodeSection {
                name: "dev".to_string(),
                data_dir: data_dir.into(),
                key_file: None,
            },
            api: ApiConfig {
                listen: api_listen,
                ..ApiConfig::default()
            },
            store: StoreConfig::default(),
            log: LogConfig {
                level: LogLevel::Debug,
                format: LogFormat::Text,
            },
            network: NetworkConfig::default(),
            chain: None,
            traffic: None,
            docklock: None,
        }
    }

    /// Parse and validate a YAML config. `source_name` names the text in
    /// diagnostics (usually its path). On error, every problem found is
    /// returned, each with line, column and field path.
    pub fn from_yaml_str(text: &str, source_name: &str) -> Result<NodeConfig, LoadConfigError> {
        if text.len() as u64 > limits::CONFIG_FILE_SIZE_BYTES_MAX {
            return Err(LoadConfigError::TooLarge {
                source_name: source_name.to_string(),
                size_bytes_max: limits::CONFIG_FILE_SIZE_BYTES_MAX,
            });
        }
        check::check(text).map_err(|errors| LoadConfigError::Invalid {
            diagnostics: Diagnostics {
                source_name: source_name.to_string(),
                errors,
            },
        })
    }

    /// Read, parse and validate the config file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<NodeConfig, LoadConfigError> {
        let path = path.as_ref();
        let read_error = |source| LoadConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let bytes = read_bounded(file).map_err(read_error)?;
        Self::from_yaml_bytes(&bytes, &path.display().to_string())
    }

    /// Parse and validate config bytes read from anywhere (a file, stdin).
    /// Bytes that are not UTF-8 are a diagnostic on the line where the first
    /// bad byte is.
    pub fn from_yaml_bytes(bytes: &[u8], source_name: &str) -> Result<NodeConfig, LoadConfigError> {
        if bytes.len() as u64 > limits::CONFIG_FILE_SIZE_BYTES_MAX {
            return Err(LoadConfigError::TooLarge {
                source_name: source_name.to_string(),
                size_bytes_max: limits::CONFIG_FILE_SIZE_BYTES_MAX,
            });
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::from_yaml_str(text, source_name),
            Err(err) => {
                let valid = &bytes[..err.valid_up_to()];
                let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let column = String::from_utf8_lossy(&valid[line_start..])
                    .chars()
                    .count()
                    + 1;
                Err(LoadConfigError::Invalid {
                    diagnostics: Diagnostics {
                        source_name: source_name.to_string(),
                        errors: vec![Diagnostic {
                            line,
                            column,
                            path: String::new(),
                            message: "the file is not valid utf-8".to_string(),
                        }],
                    },
                })
            }
        }
    }

    /// The node key file: `key_file`, or `node.key` inside `data_dir`.
    pub fn key_file_path(&self) -> PathBuf {
        self.node
            .key_file
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join(DEFAULT_KEY_FILE_NAME))
    }

    /// The key file the chain signs with: `chain.key`, or the node key.
    /// `None` when the node runs no chain.
    pub fn chain_key_file_path(&self) -> Option<PathBuf> {
        let chain = self.chain.as_ref()?;
        Some(chain.key.clone().unwrap_or_else(|| self.key_file_path()))
    }

    /// Where the chain keeps its WAL and block log: `chain` inside
    /// `data_dir`.
    pub fn chain_data_dir(&self) -> PathBuf {
        self.node.data_dir.join("chain")
    }

    /// Check every rule a config file must satisfy beyond its types: ranges,
    /// absolute paths, the node name, port 0, and cross-field rules. Returns
    /// every broken rule, not just the first.
    pub fn validate(&self) -> Result<(), ValidateConfigError> {
        self.validate_with(false)
    }

    /// [`validate`](Self::validate), except that port 0 is accepted for
    /// `api.listen`: tests and `--dev` runs may let the kernel pick a port and
    /// report the bound address themselves.
    pub fn validate_dev(&self) -> Result<(), ValidateConfigError> {
        self.validate_with(true)
    }

    fn validate_with(&self, allow_ephemeral_port: bool) -> Result<(), ValidateConfigError> {
        let mut errors = Vec::new();
        let mut error = |path: &str, message: String, related: &[&str]| {
            errors.push(FieldError {
                path: path.to_string(),
                message,
                related_paths: related.iter().map(|p| p.to_string()).collect(),
            });
        };

        if let Some(message) = node_name_problem(&self.node.name) {
            error("node.name", message, &[]);
        }
        if let Some(message) = path_problem(&self.node.data_dir) {
            error("node.data_dir", message, &[]);
        } else if self.node.data_dir.parent().is_none() {
            error(
                "node.data_dir",
                "must not be the filesystem root: the node owns everything in its data directory"
                    .to_string(),
                &[],
            );
        }
        if let Some(key_file) = &self.node.key_file {
            if let Some(message) = path_problem(key_file) {
                error("node.key_file", message, &[]);
            } else if key_file.as_os_str().to_string_lossy().ends_with('/') {
                error(
                    "node.key_file",
                    format!(
                        "\"{}\" names a directory; expected a file path",
                        shown_path(key_file)
                    ),
                    &[],
                );
            } else if key_file == &self.node.data_dir {
                error(
                    "node.key_file",
                    "must not be the data directory itself".to_string(),
                    &["node.data_dir"],
                );
            }
        }

        if self.api.listen.port() == 0 && !allow_ephemeral_port {
            error(
                "api.listen",
                format!(
                    "port 0 in {} would bind a random port that clients cannot find",
                    self.api.listen
                ),
                &[],
            );
        }
        let mut range = |path: &str, problem: Option<String>| {
            if let Some(message) = problem {
                error(path, message, &[]);
            }
        };
        range(
            "api.upload_size_bytes_max",
            out_of_range(
                self.api.upload_size_bytes_max,
                &limits::CONFIG_API_UPLOAD_SIZE_BYTES_MAX_RANGE,
            ),
        );
        range(
            "api.request_timeout_ms",
            out_of_range(
                self.api.request_timeout_ms,
                &limits::CONFIG_API_REQUEST_TIMEOUT_MS_RANGE,
            ),
        );
        range(
            "api.connections_max",
            out_of_range(
                self.api.connections_max,
                &limits::CONFIG_API_CONNECTIONS_MAX_RANGE,
            ),
        );
        let store = &self.store;
        range(
            "store.zstd_level",
            out_of_range(store.zstd_level, &limits::CONFIG_STORE_ZSTD_LEVEL_RANGE),
        );
        range(
            "store.inline_size_bytes_max",
            out_of_range(
                store.inline_size_bytes_max,
                &limits::CONFIG_STORE_INLINE_SIZE_BYTES_MAX_RANGE,
            ),
        );
        range(
            "store.segment_size_bytes_max",
            out_of_range(
                store.segment_size_bytes_max,
                &limits::CONFIG_STORE_SEGMENT_SIZE_BYTES_MAX_RANGE,
            ),
        );
        range(
            "store.group_commit_batch_bytes_max",
            out_of_range(
                store.group_commit_batch_bytes_max,
                &limits::CONFIG_STORE_GROUP_COMMIT_BATCH_BYTES_MAX_RANGE,
            ),
        );
        range(
            "store.group_commit_batch_count_max",
            out_of_range(
                store.group_commit_batch_count_max,
                &limits::CONFIG_STORE_GROUP_COMMIT_BATCH_COUNT_MAX_RANGE,
            ),
        );

        if store.inline_size_bytes_max > store.group_commit_batch_bytes_max {
            error(
                "store.inline_size_bytes_max",
                format!(
                    "{} exceeds store.group_commit_batch_bytes_max ({}): a packed blob must fit in one group commit",
                    store.inline_size_bytes_max, store.group_commit_batch_bytes_max
                ),
                &["store.group_commit_batch_bytes_max"],
            );
        }
        if store.group_commit_batch_bytes_max > store.segment_size_bytes_max {
            error(
                "store.group_commit_batch_bytes_max",
                format!(
                    "{} exceeds store.segment_size_bytes_max ({}): a group commit is appended to a single segment",
                    store.group_commit_batch_bytes_max, store.segment_size_bytes_max
                ),
                &["store.segment_size_bytes_max"],
            );
        }

        self.validate_network(&mut errors);
        self.validate_chain(&mut errors, allow_ephemeral_port);
        self.validate_traffic(&mut errors);
        self.validate_docklock(&mut errors);

        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidateConfigError { errors })
        }
    }

    fn validate_chain(&self, errors: &mut Vec<FieldError>, allow_ephemeral_port: bool) {
        let Some(chain) = &self.chain else {
            return;
        };
        let mut error = |path: String, message: String, related: &[&str]| {
            errors.push(FieldError {
                path,
                message,
                related_paths: related.iter().map(|p| p.to_string()).collect(),
            });
        };
        for (path, file) in [
            ("chain.genesis", Some(&chain.genesis)),
            ("chain.key", chain.key.as_ref()),
        ] {
            let Some(file) = file else { continue };
            if let Some(message) = path_problem(file) {
                error(path.to_string(), message, &[]);
            } else if file.as_os_str().to_string_lossy().ends_with('/') {
                error(
                    path.to_string(),
                    format!(
                        "\"{}\" names a directory; expected a file path",
                        shown_path(file)
                    ),
                    &[],
                );
            }
        }
        if chain.listen.port() == 0 && !allow_ephemeral_port {
            error(
                "chain.listen".to_string(),
                format!(
                    "port 0 in {} would bind a random port that peers cannot find",
                    chain.listen
                ),
                &[],
            );
        }
        let ranges = [
            (
                "chain.block_interval_min_ms",
                chain.block_interval_min_ms,
                &limits::CONFIG_CHAIN_BLOCK_INTERVAL_MIN_MS_RANGE,
            ),
            (
                "chain.empty_block_interval_ms",
                chain.empty_block_interval_ms,
                &limits::CONFIG_CHAIN_EMPTY_BLOCK_INTERVAL_MS_RANGE,
            ),
            (
                "chain.round_timeout_base_ms",
                chain.round_timeout_base_ms,
                &limits::CONFIG_CHAIN_ROUND_TIMEOUT_BASE_MS_RANGE,
            ),
        ];
        for (path, value, range) in ranges {
            if let Some(message) = out_of_range(value, range) {
                error(path.to_string(), message, &[]);
            }
        }
        if chain.block_interval_min_ms > chain.empty_block_interval_ms {
            error(
                "chain.block_interval_min_ms".to_string(),
                format!(
                    "{} exceeds chain.empty_block_interval_ms ({}): an idle proposer would wait longer than its heartbeat",
                    chain.block_interval_min_ms, chain.empty_block_interval_ms
                ),
                &["chain.empty_block_interval_ms"],
            );
        }
        if chain.peers.len() > limits::CONFIG_CHAIN_PEERS_COUNT_MAX {
            error(
                "chain.peers".to_string(),
                format!(
                    "{} peers; at most {}",
                    chain.peers.len(),
                    limits::CONFIG_CHAIN_PEERS_COUNT_MAX
                ),
                &[],
            );
        }
        let mut seen: std::collections::HashMap<[u8; 32], usize> = std::collections::HashMap::new();
        for (i, peer) in chain.peers.iter().enumerate() {
            match peer.public_key() {
                Err(err) => error(
                    format!("chain.peers.{i}.public_key"),
                    format!(
                        "\"{}\" is not an Ed25519 public key: {err}",
                        yaml_tree::abbreviate(&peer.public_key)
                    ),
                    &[],
                ),
                Ok(key) => match seen.entry(key.to_bytes()) {
                    std::collections::hash_map::Entry::Occupied(first) => error(
                        format!("chain.peers.{i}.public_key"),
                        format!("{key} is already listed as chain.peers.{}", first.get()),
                        &[],
                    ),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                },
            }
            if let Some(Err(message)) = peer.host_port() {
                error(format!("chain.peers.{i}.address"), message, &[]);
            }
        }
    }

    fn validate_traffic(&self, errors: &mut Vec<FieldError>) {
        let Some(traffic) = &self.traffic else {
            return;
        };
        let mut error = |path: String, message: String| {
            errors.push(FieldError {
                path,
                message,
                related_paths: Vec::new(),
            });
        };
        for (path, file) in [
            ("traffic.policy", Some(&traffic.policy)),
            ("traffic.cage", traffic.cage.as_ref()),
        ] {
            let problem = file.and_then(|f| match store_blob(f) {
                Some(cid) => cid.err(),
                None => path_problem(f),
            });
            if let Some(message) = problem {
                error(path.to_string(), message);
            }
        }
        if let Some(message) = path_problem(&traffic.xdp_pin_dir) {
            error("traffic.xdp_pin_dir".to_string(), message);
        }
        if traffic.xdp_interfaces.len() > CONFIG_TRAFFIC_XDP_INTERFACES_COUNT_MAX {
            error(
                "traffic.xdp_interfaces".to_string(),
                format!(
                    "{} interfaces; at most {CONFIG_TRAFFIC_XDP_INTERFACES_COUNT_MAX}",
                    traffic.xdp_interfaces.len()
                ),
            );
        }
        if traffic.xdp_interfaces.is_empty() && traffic.cage.is_none() {
            error(
                "traffic".to_string(),
                "enforces the policy nowhere: list traffic.xdp_interfaces, set traffic.cage, or both"
                    .to_string(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, name) in traffic.xdp_interfaces.iter().enumerate() {
            if let Some(message) = interface_name_problem(name) {
                error(format!("traffic.xdp_interfaces.{i}"), message);
            } else if !seen.insert(name.as_str()) {
                error(
                    format!("traffic.xdp_interfaces.{i}"),
                    format!("\"{name}\" is listed twice"),
                );
            }
        }
    }

    fn validate_docklock(&self, errors: &mut Vec<FieldError>) {
        let Some(docklock) = &self.docklock else {
            return;
        };
        let mut error = |path: &str, message: String| {
            errors.push(FieldError {
                path: path.to_string(),
                message,
                related_paths: Vec::new(),
            });
        };
        if let Some(message) = path_problem(&docklock.workloads_dir) {
            error("docklock.workloads_dir", message);
        }
        if let Some(message) = out_of_range(
            docklock.run_timeout_s_max,
            &limits::CONFIG_DOCKLOCK_RUN_TIMEOUT_S_RANGE,
        ) {
            error("docklock.run_timeout_s_max", message);
        }
    }

    fn validate_network(&self, errors: &mut Vec<FieldError>) {
        let network = &self.network;
        let mut error = |path: &str, message: String, related: &[&str]| {
            errors.push(FieldError {
                path: path.to_string(),
                message,
                related_paths: related.iter().map(|p| p.to_string()).collect(),
            });
        };
        let mode = match network.mode {
            NetworkMode::Dhcp => "dhcp",
            NetworkMode::Static => "static",
            NetworkMode::Off => "off",
        };
        if let Some(interface) = &network.interface {
            if network.mode == NetworkMode::Off {
                error(
                    "network.interface",
                    "not used when network.mode is off; remove it or pick a mode".to_string(),
                    &["network.mode"],
                );
            } else if let Some(message) = interface_name_problem(interface) {
                error("network.interface", message, &[]);
            }
        }
        if network.mode != NetworkMode::Static {
            let set = [
                ("network.address", network.address.is_some()),
                ("network.gateway", network.gateway.is_some()),
                ("network.dns", !network.dns.is_empty()),
            ];
            for (path, is_set) in set {
                if is_set {
                    error(
                        path,
                        format!("only used when network.mode is static (it is {mode})"),
                        &["network.mode"],
                    );
                }
            }
            return;
        }
        let address = match &network.address {
            None => {
                error(
                    "network.address",
                    "required when network.mode is static".to_string(),
                    &["network.mode"],
                );
                None
            }
            Some(text) => match parse_ipv4_cidr(text) {
                Ok((address, _)) => Some(address),
                Err(message) => {
                    error("network.address", message, &[]);
                    None
                }
            },
        };
        if let Some(gateway) = network.gateway {
            if gateway.is_unspecified() || gateway.is_broadcast() || gateway.is_multicast() {
                error(
                    "network.gateway",
                    format!("{gateway} cannot be a gateway"),
                    &[],
                );
            } else if Some(gateway) == address {
                error(
                    "network.gateway",
                    format!("{gateway} is the interface's own address"),
                    &["network.address"],
                );
            }
        }
        if network.dns.len() > CONFIG_NETWORK_DNS_COUNT_MAX {
            error(
                "network.dns",
                format!(
                    "{} servers; at most {CONFIG_NETWORK_DNS_COUNT_MAX} (resolvers ignore the rest)",
                    network.dns.len()
                ),
                &[],
            );
        }
        if let Some(bad) = network
            .dns
            .iter()
            .find(|s| s.is_unspecified() || s.is_broadcast() || s.is_multicast())
        {
            error("network.dns", format!("{bad} cannot be a DNS server"), &[]);
        }
    }
}

/// Read at most one byte past the config size limit, so an oversized input
/// is detected without trusting metadata (which lies for pipes and /proc)
/// and without reading all of it.
pub fn read_bounded(reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limits::CONFIG_FILE_SIZE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn out_of_range<T: PartialOrd + fmt::Display + fmt::Debug>(
    value: T,
    range: &RangeInclusive<T>,
) -> Option<String> {
    (!range.contains(&value)).then(|| format!("{value} is out of range {range:?}"))
}

fn node_name_problem(name: &str) -> Option<String> {
    let len_range = &limits::CONFIG_NODE_NAME_LEN_RANGE;
    let len = name.chars().count();
    if !len_range.contains(&len) {
        return Some(format!(
            "\"{}\" is {len} characters; a node name has {len_range:?}",
            yaml_tree::abbreviate(name)
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "\"{}\" contains {bad:?}; a node name uses only a-z, 0-9 and '-'",
            yaml_tree::abbreviate(name)
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(format!(
            "\"{}\" must not start or end with '-'",
            yaml_tree::abbreviate(name)
        ));
    }
    None
}

/// How a file setting names a blob of the node's own store instead of a
/// file: `/ipfs/CID`, the path IPFS gateways and mounts use for content.
pub const STORE_BLOB_PREFIX: &str = "/ipfs/";

/// `Some` when `path` names a store blob (`/ipfs/CID`, always the node's
/// store, even where an IPFS mount exists at /ipfs): its CID, or why it is
/// not a usable one (not a CID, or not a raw blob: a UnixFS root from
/// `store add` is a DAG node, not the file). `None` for an ordinary path.
pub fn store_blob(path: &Path) -> Option<Result<crate::cid::ContentId, String>> {
    let text = path.to_str()?;
    let cid = text.strip_prefix(STORE_BLOB_PREFIX)?;
    let parsed: Result<crate::cid::ContentId, String> = cid.parse().map_err(|e| {
        format!(
            "\"{}\" names a store blob, but {:?} is not a CID: {e}",
            shown_path(path),
            yaml_tree::abbreviate(cid)
        )
    });
    Some(parsed.and_then(|cid| {
        if cid.codec() == crate::cid::CODEC_RAW {
            Ok(cid)
        } else {
            Err(format!(
                "\"{}\" is not a raw blob (a UnixFS root from `store add`?): \
                 put the file with `metanode store put` and name that CID",
                shown_path(path)
            ))
        }
    }))
}

/// Config paths are absolute and normalized: the agent runs as PID 1 with
/// `/` as its working directory, so a relative path would silently mean
/// something else than the operator read, and `..` defeats reviewing where
/// data actually goes.
fn path_problem(path: &Path) -> Option<String> {
    if !path.is_absolute() {
        return Some(format!("\"{}\" must be an absolute path", shown_path(path)));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Some(format!("\"{}\" must not contain `..`", shown_path(path)));
    }
    if path.to_string_lossy().chars().any(char::is_control) {
        return Some(format!(
            "{:?} contains a control character (a tab or newline in a path is almost surely a mistake)",
            path.to_string_lossy()
        ));
    }
    None
}

fn shown_path(path: &Path) -> String {
    yaml_tree::abbreviate(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_message_matches_the_documented_format() {
        assert_eq!(
            out_of_range(25, &limits::CONFIG_STORE_ZSTD_LEVEL_RANGE).as_deref(),
            Some("25 is out of range 1..=19")
        );
        assert_eq!(
            out_of_range(3, &limits::CONFIG_STORE_ZSTD_LEVEL_RANGE),
            None
        );
    }

    #[test]
    fn node_names_follow_dns_label_rules() {
        for good in ["a", "node-1", "0", &"a".repeat(63)] {
            assert_eq!(node_name_problem(good), None, "{good}");
        }
        for bad in ["", "Node", "node_1", "-a", "a-", "nöde", &"a".repeat(64)] {
            assert!(node_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn paths_must_be_absolute_and_normalized() {
        assert_eq!(path_problem(Path::new("/var/lib/metanode")), None);
        assert!(path_problem(Path::new("var/lib")).is_some());
        assert!(path_problem(Path::new("/var/../etc")).is_some());
    }

    /// Every diagnostic of a `section:` (its YAML body given) appended to a
    /// minimal config.
    fn section_errors(section: &str, body_yaml: &str) -> Vec<(usize, String, String)> {
        let text = format!("node:\n  name: a\n{section}:\n{body_yaml}");
        match NodeConfig::from_yaml_str(&text, "node.yaml") {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(LoadConfigError::Invalid { diagnostics }) => diagnostics
                .errors
                .into_iter()
                .map(|d| (d.line, d.path, d.message))
                .collect(),
            Err(other) => panic!("expected diagnostics, got {other}"),
        }
    }

    fn network_errors(network_yaml: &str) -> Vec<(usize, String, String)> {
        section_errors("network", network_yaml)
    }

    fn traffic_errors(traffic_yaml: &str) -> Vec<(usize, String, String)> {
        section_errors("traffic", traffic_yaml)
    }

    #[test]
    fn docklock_section_is_checked_field_by_field() {
        let ok = NodeConfig::from_yaml_str(
            "node:\n  name: a\ndocklock:\n  workloads_dir: /srv/workloads\n",
            "node.yaml",
        )
        .expect("valid");
        assert_eq!(
            ok.docklock,
            Some(DocklockConfig {
                workloads_dir: PathBuf::from("/srv/workloads"),
                run_timeout_s_max: limits::CONFIG_DOCKLOCK_RUN_TIMEOUT_S_DEFAULT,
                executables_by_cid: false,
            })
        );
        let by_cid = NodeConfig::from_yaml_str(
            "node:\n  name: a\ndocklock:\n  workloads_dir: /srv/workloads\n  executables_by_cid: true\n",
            "node.yaml",
        )
        .expect("valid");
        assert!(by_cid.docklock.expect("docklock").executables_by_cid);
        let errors = section_errors(
            "docklock",
            "  workloads_dir: /srv\n  executables_by_cid: sometimes\n",
        );
        assert!(
            errors
                .iter()
                .any(|(_, path, _)| path == "docklock.executables_by_cid"),
            "{errors:?}"
        );
        let errors = section_errors(
            "docklock",
            "  workloads_dir: workloads\n  run_timeout_s_max: 0\n",
        );
        assert!(
            errors.iter().any(|(line, path, m)| *line == 4
                && path == "docklock.workloads_dir"
                && m.contains("absolute")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|(line, path, m)| *line == 5
                && path == "docklock.run_timeout_s_max"
                && m == "0 is out of range 1..=86400"),
            "{errors:?}"
        );
        let errors = section_errors("docklock", "  workloads_dir: /srv\n  timeout: 5\n");
        assert!(
            errors
                .iter()
                .any(|(_, path, m)| path.starts_with("docklock") && m.contains("timeout")),
            "{errors:?}"
        );
    }

    #[test]
    fn traffic_section_is_checked_field_by_field() {
        let ok = NodeConfig::from_yaml_str(
            "node:\n  name: a\ntraffic:\n  policy: /etc/biso.yaml\n  xdp_interfaces: [eth0]\n",
            "node.yaml",
        )
        .expect("valid");
        let traffic = ok.traffic.expect("traffic section");
        assert_eq!(traffic.xdp_mode, XdpMode::Native);
        assert_eq!(traffic.xdp_pin_dir, PathBuf::from("/sys/fs/bpf/metanode"));
        assert_eq!(traffic.cage, None);

        let errors = traffic_errors("  policy: biso.yaml\n  cage: /etc/cage.yaml\n");
        assert!(
            errors.iter().any(|(line, path, m)| *line == 4
                && path == "traffic.policy"
                && m.contains("absolute")),
            "{errors:?}"
        );
        // A store blob by CID: the CID must parse; the blob itself is read
        // (and must exist) when the agent starts.
        let cid = crate::cid::ContentId::raw_blake3_of(b"policy");
        let by_cid = NodeConfig::from_yaml_str(
            &format!("node:\n  name: a\ntraffic:\n  policy: /ipfs/{cid}\n  cage: /ipfs/{cid}\n"),
            "node.yaml",
        )
        .expect("valid");
        let traffic = by_cid.traffic.expect("traffic section");
        assert_eq!(store_blob(&traffic.policy), Some(Ok(cid)));
        assert_eq!(store_blob(Path::new("/etc/biso.yaml")), None);
        let dag_pb = crate::cid::ContentId::from_key(
            crate::cid::CODEC_DAG_PB,
            crate::cid::BlockKey::blake3([7; 32]),
        );
        let errors = traffic_errors(&format!(
            "  policy: /ipfs/{dag_pb}\n  xdp_interfaces: [eth0]\n"
        ));
        assert!(
            errors.iter().any(|(line, path, m)| *line == 4
                && path == "traffic.policy"
                && m.contains("not a raw blob")),
            "{errors:?}"
        );
        let errors = traffic_errors(
            "  policy: /etc/biso.yaml\n  xdp_interfaces: [eth0]\n  xdp_pin_dir: \"/sys/fs/bpf/a\\tb\"\n",
        );
        assert!(
            errors.iter().any(
                |(_, path, m)| path == "traffic.xdp_pin_dir" && m.contains("control character")
            ),
            "{errors:?}"
        );
        let errors = traffic_errors("  policy: /ipfs/not-a-cid\n  cage: /ipfs/\n");
        assert!(
            errors.iter().any(|(line, path, m)| *line == 4
                && path == "traffic.policy"
                && m.contains("not a CID")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|(line, path, m)| *line == 5
                && path == "traffic.cage"
                && m.contains("not a CID")),
            "{errors:?}"
        );

        let errors = traffic_errors("  policy: /etc/biso.yaml\n");
        assert!(
            errors
                .iter()
                .any(|(_, path, m)| path == "traffic" && m.contains("enforces the policy nowhere")),
            "{errors:?}"
        );
        let errors = traffic_errors("  policy: /etc/biso.yaml\n  xdp_interfaces: [eth0, eth0]\n");
        assert!(
            errors
                .iter()
                .any(|(_, path, m)| path == "traffic.xdp_interfaces.1" && m.contains("twice")),
            "{errors:?}"
        );
        let errors = traffic_errors(
            "  policy: /etc/biso.yaml\n  xdp_interfaces: [eth0]\n  xdp_mode: fast\n",
        );
        assert!(
            errors
                .iter()
                .any(|(_, path, _)| path.starts_with("traffic.xdp_mode")),
            "{errors:?}"
        );
    }

    #[test]
    fn network_defaults_to_dhcp_on_the_first_interface() {
        let config = NodeConfig::from_yaml_str("node:\n  name: a\n", "node.yaml").expect("valid");
        assert_eq!(config.network, NetworkConfig::default());
        assert_eq!(config.network.mode, NetworkMode::Dhcp);
        assert_eq!(config.network.interface, None);
    }

    #[test]
    fn static_network_parses_every_field() {
        let yaml = "node:\n  name: a\nnetwork:\n  mode: static\n  interface: eth1\n  address: 10.0.2.15/24\n  gateway: 10.0.2.2\n  dns: [10.0.2.3, 1.1.1.1]\n";
        let config = NodeConfig::from_yaml_str(yaml, "node.yaml").expect("valid");
        assert_eq!(
            config.network,
            NetworkConfig {
                mode: NetworkMode::Static,
                interface: Some("eth1".to_string()),
                address: Some("10.0.2.15/24".to_string()),
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
            }
        );
        assert_eq!(
            config.network.address_and_prefix(),
            Some((Ipv4Addr::new(10, 0, 2, 15), 24))
        );
        // Block-style lists work too, and the config round-trips.
        let yaml = "node:\n  name: a\nnetwork:\n  mode: static\n  address: 192.0.2.7/32\n  dns:\n    - 192.0.2.53\n";
        let config = NodeConfig::from_yaml_str(yaml, "node.yaml").expect("valid");
        assert_eq!(config.network.dns, [Ipv4Addr::new(192, 0, 2, 53)]);
        let text = serde_saphyr::to_string(&config).expect("serializes");
        assert_eq!(
            NodeConfig::from_yaml_str(&text, "again").expect("valid"),
            config
        );
    }

    #[test]
    fn network_errors_name_the_field_and_line() {
        let cases: [(&str, (usize, &str, &str)); 10] = [
            (
                "  mode: static\n",
                (3, "network.address", "required when network.mode is static"),
            ),
            (
                "  mode: static\n  address: 10.0.2.15\n",
                (
                    5,
                    "network.address",
                    "\"10.0.2.15\" has no prefix length; expected an address like 10.0.2.15/24",
                ),
            ),
            (
                "  mode: static\n  address: 10.0.2/24\n",
                (
                    5,
                    "network.address",
                    "\"10.0.2/24\" is not an IPv4 address with a prefix length, like 10.0.2.15/24",
                ),
            ),
            (
                "  mode: static\n  address: 10.0.2.15/33\n",
                (
                    5,
                    "network.address",
                    "prefix length 33 in \"10.0.2.15/33\" is out of range 1..=32",
                ),
            ),
            (
                "  mode: static\n  address: 10.0.2.15/24\n  gateway: 10.0.2.15\n",
                (
                    6,
                    "network.gateway",
                    "10.0.2.15 is the interface's own address",
                ),
            ),
            (
                "  mode: static\n  address: 10.0.2.15/24\n  gateway: 10.0.2\n",
                (
                    6,
                    "network.gateway",
                    "expected an IPv4 address such as 10.0.2.2, found `10.0.2`",
                ),
            ),
            (
                "  mode: static\n  address: 10.0.2.15/24\n  dns: [1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4]\n",
                (
                    6,
                    "network.dns",
                    "4 servers; at most 3 (resolvers ignore the rest)",
                ),
            ),
            (
                "  mode: dhcp\n  gateway: 10.0.2.2\n",
                (
                    5,
                    "network.gateway",
                    "only used when network.mode is static (it is dhcp)",
                ),
            ),
            (
                "  mode: off\n  interface: eth0\n",
                (
                    5,
                    "network.interface",
                    "not used when network.mode is off; remove it or pick a mode",
                ),
            ),
            (
                "  interface: eth0:1\n",
                (
                    4,
                    "network.interface",
                    "\"eth0:1\" is not an interface name (no '/', ':', whitespace, `.` or `..`)",
                ),
            ),
        ];
        for (yaml, (line, path, message)) in cases {
            assert_eq!(
                network_errors(yaml),
                [(line, path.to_string(), message.to_string())],
                "{yaml}"
            );
        }
        // A bad list entry is reported on its own line.
        let found = network_errors(
            "  mode: static\n  address: 10.0.2.15/24\n  dns:\n    - 10.0.2.3\n    - ten\n",
        );
        assert_eq!(
            found,
            [(
                8,
                "network.dns".to_string(),
                "expected an IPv4 address such as 10.0.2.2, found `ten`".to_string()
            )]
        );
        let found = network_errors("  mode: static\n  address: 10.0.2.15/24\n  dns: 10.0.2.3\n");
        assert_eq!(
            found,
            [(
                6,
                "network.dns".to_string(),
                "expected a list, found `10.0.2.3`".to_string()
            )]
        );
        let found = network_errors("  mode: dhc\n");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1.as_str()), (4, "network.mode"));
        assert!(found[0].2.contains("did you mean `dhcp`"), "{}", found[0].2);
    }

    #[test]
    fn network_schema_and_cue_export() {
        let schema = json_schema();
        let network = &schema["$defs"]["Network"];
        assert_eq!(network["properties"]["gateway"]["format"], "ipv4");
        assert_eq!(network["properties"]["dns"]["items"]["format"], "ipv4");
        assert_eq!(network["properties"]["dns"]["maxItems"], 3);
        let cue = json_schema_to_cue(&schema, &field_order());
        assert!(cue.contains("\tnetwork: #Network\n"), "{cue}");
        assert!(
            cue.contains("#NetworkMode: \"dhcp\" | \"static\" | \"off\"\n"),
            "{cue}"
        );
        assert!(cue.contains("\tmode: *\"dhcp\" | #NetworkMode\n"), "{cue}");
        assert!(cue.contains("\taddress?: "), "{cue}");
        assert!(cue.contains("\tdns?: [...string]"), "{cue}");
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_ipv4_cidr("10.0.2.15/24"),
            Ok((Ipv4Addr::new(10, 0, 2, 15), 24))
        );
        assert_eq!(
            parse_ipv4_cidr("192.0.2.1/32"),
            Ok((Ipv4Addr::new(192, 0, 2, 1), 32))
        );
        for bad in [
            "10.0.2.15",
            "10.0.2.15/0",
            "10.0.2.15/x",
            "0.0.0.0/8",
            "224.0.0.1/4",
            "/24",
            "",
        ] {
            assert!(parse_ipv4_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_file_defaults_into_the_data_dir() {
        let config = NodeConfig::dev("/tmp/mn", DEFAULT_API_LISTEN);
        assert_eq!(config.key_file_path(), PathBuf::from("/tmp/mn/node.key"));
    }
}
