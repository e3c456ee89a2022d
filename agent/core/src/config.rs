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
//! its fleet and so must be chosen by whoever deploys it. `node.data_dir`
//! defaults to the appliance's data partition, and the API listens on
//! loopback unless told otherwise, so a config that forgets `api.listen`
//! never exposes the API by accident.

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
const _: () =
    assert!(DEFAULT_STORE_INLINE_SIZE_BYTES_MAX <= DEFAULT_STORE_GROUP_COMMIT_BATCH_BYTES_MAX);
const _: () =
    assert!(DEFAULT_STORE_GROUP_COMMIT_BATCH_BYTES_MAX <= DEFAULT_STORE_SEGMENT_SIZE_BYTES_MAX);

/// `node.name`: a DNS label, so the name can appear in hostnames, metric
/// labels and file names without escaping.
pub const NODE_NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

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

        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidateConfigError { errors })
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

    #[test]
    fn key_file_defaults_into_the_data_dir() {
        let config = NodeConfig::dev("/tmp/mn", DEFAULT_API_LISTEN);
        assert_eq!(config.key_file_path(), PathBuf::from("/tmp/mn/node.key"));
    }
}
