//! Typed cage config: one YAML file.
//!
//! ```yaml
//! listen: 0.0.0.0:8443
//! workers: 0                               # threads; 0 = one per CPU
//! tls: { cert_pem: /etc/metanode/cage.crt, key_pem: /etc/metanode/cage.key }   # optional
//! routes:                                   # longest path prefix wins, on a segment boundary
//!   - { path_prefix: /api, upstream: "127.0.0.1:9000", unsigned: reject }
//!   - { path_prefix: /, upstream: "127.0.0.1:9001", unsigned: allow-with-receipt }
//! keys:
//!   inline: { client-1: "<64 hex digits: ed25519 public key>" }
//!   dir: /etc/metanode/cage-keys            # optional: file name = key id, content = hex key
//! signature: { max_age_s: 300, clock_skew_s: 5, require_nonce: true, replay_cache_entries_max: 1000000 }
//! rate_limits:
//!   per_ip: { rate_per_s: 1000, burst: 2000 }   # optional; yellow lights come from the BISO policy
//!   per_key: { rate_per_s: 500, burst: 1000 }   # optional
//!   buckets_count_max: 1000000
//! limits: { body_size_bytes_max: 1048576, response_body_size_bytes_max: 16777216,
//!           connections_count_max: 16384, upstream_idle_connections_per_host: 512 }
//! timeouts: { header_read_timeout_ms: 10000, idle_timeout_ms: 60000, body_read_timeout_ms: 30000,
//!             upstream_timeout_ms: 30000, upstream_idle_timeout_ms: 90000 }
//! receipts: { path: /var/lib/metanode/cage/receipts.log, batch_count_max: 4096,
//!             flush_interval_ms: 200, response_header: false,
//!             store_pinned_batches_max: 0,    # agent only: newest N batches pinned in the store; 0 = all
//!             segment_bytes_max: 67108864,   # new segment <path>.N past this size; 0 = one file
//!             segments_kept_max: 0,          # remove the oldest segments past N; 0 = keep all
//!             archive_dir: null }            # move removed segments here (same filesystem) instead of deleting
//! ```
//!
//! Every section but `listen`, `routes` and `receipts.path` has defaults
//! (in [`crate::limits`]). Unknown keys are errors; YAML errors carry the
//! line and column, range errors name the field path (`routes[1].upstream`).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metanode_core::keys::PublicKey;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{self, *};

/// Why a cage config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cage config {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cage config {} is larger than {size_bytes_max} bytes", .path.display())]
    TooLarge { path: PathBuf, size_bytes_max: u64 },
    #[error("cage config is not valid: {0}")]
    Yaml(String),
    #[error("cage config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole cage config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CageConfig {
    /// Address the cage listens on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Worker threads, each with its own listener (SO_REUSEPORT), runtime
    /// and upstream pool; 0 = one per CPU.
    #[serde(default)]
    pub workers: u32,
    /// Serve HTTPS (TLS 1.3, ALPN http/1.1) instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub signature: SignatureConfig,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    pub receipts: ReceiptsConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_pem: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PathBuf,
}

/// What to do with a request that carries no `Signature`/`Signature-Input`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UnsignedPolicy {
    /// 401.
    #[default]
    Reject,
    /// Forwarded; the receipt records no key.
    AllowWithReceipt,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Requests whose path starts with this prefix on a segment boundary
    /// (`/api` matches `/api` and `/api/x`, not `/apix`) go to `upstream`.
    pub path_prefix: String,
    /// `host:port` of an HTTP/1.1 upstream.
    pub upstream: String,
    #[serde(default)]
    pub unsigned: UnsignedPolicy,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// key id → ed25519 public key, 64 hex digits.
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// Directory of key files: file name = key id, content = hex key.
    /// Files whose name starts with `.` are skipped.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SignatureConfig {
    /// Oldest `created` accepted, seconds before now.
    pub max_age_s: u64,
    /// Tolerated clock difference for `created` in the future and `expires`.
    pub clock_skew_s: u64,
    /// Require a `nonce` parameter (replay protection).
    pub require_nonce: bool,
    /// Nonces remembered (for `max_age_s + clock_skew_s`).
    pub replay_cache_entries_max: u64,
}

impl Default for SignatureConfig {
    fn default() -> Self {
        SignatureConfig {
            max_age_s: DEFAULT_SIGNATURE_MAX_AGE_S,
            clock_skew_s: DEFAULT_SIGNATURE_CLOCK_SKEW_S,
            require_nonce: true,
            replay_cache_entries_max: DEFAULT_REPLAY_CACHE_ENTRIES,
        }
    }
}

/// A token bucket: `rate_per_s` requests per second, bursts up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub rate_per_s: u32,
    pub burst: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Every client address (in addition to the BISO yellow light).
    pub per_ip: Option<RateConfig>,
    /// Every verified key id.
    pub per_key: Option<RateConfig>,
    /// Buckets each limiter keeps.
    pub buckets_count_max: u64,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            per_ip: None,
            per_key: None,
            buckets_count_max: DEFAULT_RATE_BUCKETS_COUNT_MAX,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Larger request bodies get 413.
    pub body_size_bytes_max: u64,
    /// Larger upstream responses get 502.
    pub response_body_size_bytes_max: u64,
    /// Open client connections; more are closed at accept.
    pub connections_count_max: u32,
    /// Idle keep-alive connections kept to each upstream.
    pub upstream_idle_connections_per_host: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_size_bytes_max: DEFAULT_BODY_SIZE_BYTES_MAX,
            response_body_size_bytes_max: DEFAULT_RESPONSE_BODY_SIZE_BYTES_MAX,
            connections_count_max: DEFAULT_CONNECTIONS_COUNT_MAX,
            upstream_idle_connections_per_host: DEFAULT_UPSTREAM_IDLE_CONNECTIONS_PER_HOST,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// From the first byte of a request head (or from accept, for the first
    /// request) to its last header line; on expiry the connection is closed
    /// (slowloris) and a 408 receipt is written if any byte arrived.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight and no traffic for
    /// this long is closed.
    pub idle_timeout_ms: u64,
    /// Whole request body; 408 when exceeded.
    pub body_read_timeout_ms: u64,
    /// Upstream connect + response head + response body; 504 when exceeded.
    pub upstream_timeout_ms: u64,
    /// Pooled upstream connections idle this long are closed.
    pub upstream_idle_timeout_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
            upstream_timeout_ms: DEFAULT_UPSTREAM_TIMEOUT_MS,
            upstream_idle_timeout_ms: DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS,
        }
    }
}

impl TimeoutsConfig {
    pub fn header_read(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn body_read(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    pub fn upstream(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }
    pub fn upstream_idle(&self) -> Duration {
        Duration::from_millis(self.upstream_idle_timeout_ms)
    }
    /// The shortest timeout a connection waits with (the upstream idle
    /// timeout bounds pooled connections, not waits).
    pub fn shortest(&self) -> Duration {
        self.header_read()
            .min(self.idle())
            .min(self.body_read())
            .min(self.upstream())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// Append-only receipt file (created if absent; an existing file is
    /// verified and continued).
    pub path: PathBuf,
    /// Receipts per signed batch.
    #[serde(default = "default_batch_count_max")]
    pub batch_count_max: u32,
    /// A non-empty batch is sealed at least this often.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Add `Metanode-Receipt: <receipt hash>; batch=<n>` to every response.
    #[serde(default)]
    pub response_header: bool,
    /// Inside the agent, every batch is also a blob of the node's store:
    /// the newest this many stay pinned and older ones are unpinned, so the
    /// store's GC may reclaim them (the receipt file keeps every batch, and
    /// the API serves batches from it). 0 keeps every batch pinned.
    #[serde(default)]
    pub store_pinned_batches_max: u64,
    /// The receipt log starts a new segment (`<path>.1`, `<path>.2`, …)
    /// before a batch that would take the current one past this size;
    /// 0 = one file, never rotated. Segments are never renamed.
    #[serde(default = "default_segment_bytes_max")]
    pub segment_bytes_max: u64,
    /// Delete the oldest segments past this many; 0 = keep every segment.
    /// Deleted batches stay verifiable only where they were copied (the
    /// store, an archive); the log verifies from its first kept segment.
    /// Deleting happens at rotation and when the cage starts, before the
    /// store's resync, so batches of a deleted segment that never reached
    /// the store (a failing store, a crash) are gone.
    #[serde(default)]
    pub segments_kept_max: u32,
    /// Move the segments past `segments_kept_max` here instead of deleting
    /// them, under their own names, so the directory is a receipt log of
    /// its own (`metanode cage verify-receipts <dir>/<log name>`) whose tip
    /// is where the live log's first kept segment starts. An absolute path
    /// to another directory on the log's mount; created if missing. The
    /// cage refuses to start if it holds segments the live log does not
    /// continue (another log's, or with a gap).
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
}

fn default_segment_bytes_max() -> u64 {
    DEFAULT_RECEIPT_SEGMENT_BYTES_MAX
}
fn default_batch_count_max() -> u32 {
    DEFAULT_RECEIPT_BATCH_COUNT_MAX
}
fn default_flush_interval_ms() -> u64 {
    DEFAULT_RECEIPT_FLUSH_INTERVAL_MS
}

impl ReceiptsConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// The receipt log's segment policy.
    pub fn segment_policy(&self) -> crate::receipt_file::SegmentPolicy {
        crate::receipt_file::SegmentPolicy {
            segment_bytes_max: self.segment_bytes_max,
            segments_kept_max: self.segments_kept_max,
            archive_dir: self.archive_dir.clone(),
        }
    }
}

fn check_u64(field: &str, value: u64, range: &RangeInclusive<u64>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} is outside {}..={}", range.start(), range.end()),
        ))
    }
}

fn check_u32(field: &str, value: u32, range: &RangeInclusive<u32>) -> Result<(), ConfigError> {
    check_u64(
        field,
        u64::from(value),
        &(u64::from(*range.start())..=u64::from(*range.end())),
    )
}

/// A key id the cage accepts: what fits an RFC 8941 sf-string without
/// escapes, so it prints and logs unambiguously.
pub fn check_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() || key_id.len() > limits::KEY_ID_LEN_BYTES_MAX as usize {
        return Err(format!(
            "key id must be 1..={} bytes, is {}",
            limits::KEY_ID_LEN_BYTES_MAX,
            key_id.len()
        ));
    }
    match key_id
        .chars()
        .find(|c| !c.is_ascii_graphic() || *c == '"' || *c == '\\')
    {
        Some(c) => Err(format!(
            "key id {key_id:?} contains {c:?}; use printable ASCII without quotes or backslashes"
        )),
        None => Ok(()),
    }
}

/// `host:port` with an explicit port and nothing else.
fn check_upstream(field: &str, upstream: &str) -> Result<http::uri::Authority, ConfigError> {
    let authority: http::uri::Authority = upstream
        .parse()
        .map_err(|e| invalid(field, format!("{upstream:?} is not host:port: {e}")))?;
    if authority.port_u16().is_none() {
        return Err(invalid(field, format!("{upstream:?} has no port")));
    }
    if authority.as_str().contains('@') {
        return Err(invalid(
            field,
            format!("{upstream:?} must not carry user info"),
        ));
    }
    Ok(authority)
}

/// Whether `upstream` names the cage's own listener `listen` (an address
/// it listens on, or `localhost` where it listens on loopback or on all
/// addresses). Port 0 picks a free port, which no upstream can name.
fn is_own_listener(upstream: &http::uri::Authority, listen: SocketAddr) -> bool {
    if listen.port() == 0 || upstream.port_u16() != Some(listen.port()) {
        return false;
    }
    let host = upstream
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let covers = |ip: IpAddr| {
        listen.ip() == ip
            || (listen.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => covers(ip),
        Err(_) => {
            host.eq_ignore_ascii_case("localhost")
                && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
    }
}

impl CageConfig {
    /// Parses and validates YAML text.
    pub fn from_yaml_str(text: &str) -> Result<CageConfig, ConfigError> {
        let config: CageConfig = serde_saphyr::from_str(text).map_err(|e| {
            // The parser's text starts "error: "; the caller's already does.
            let message = e.to_string();
            ConfigError::Yaml(
                message
                    .strip_prefix("error: ")
                    .unwrap_or(&message)
                    .to_owned(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a YAML file.
    pub fn load(path: &Path) -> Result<CageConfig, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(CONFIG_FILE_SIZE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > CONFIG_FILE_SIZE_BYTES_MAX {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size_bytes_max: CONFIG_FILE_SIZE_BYTES_MAX,
            });
        }
        CageConfig::from_yaml_str(&text).map_err(|e| match e {
            // The parser shows its snippet as `<input>:LINE:COL`: name the file.
            ConfigError::Yaml(message) => {
                ConfigError::Yaml(message.replace("<input>", &path.display().to_string()))
            }
            other => other,
        })
    }

    /// Range and cross-field checks; each error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers > WORKERS_COUNT_MAX {
            return Err(invalid(
                "workers",
                format!("{} workers; at most {WORKERS_COUNT_MAX}", self.workers),
            ));
        }
        if self.routes.is_empty() {
            return Err(invalid("routes", "at least one route is needed"));
        }
        if self.routes.len() > ROUTES_COUNT_MAX {
            return Err(invalid(
                "routes",
                format!("{} routes; at most {ROUTES_COUNT_MAX}", self.routes.len()),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let field = format!("routes[{i}].path_prefix");
            let prefix = &route.path_prefix;
            if !prefix.starts_with('/') {
                return Err(invalid(field, format!("{prefix:?} must start with '/'")));
            }
            if prefix.len() > ROUTE_PREFIX_LEN_BYTES_MAX {
                return Err(invalid(
                    field,
                    format!("longer than {ROUTE_PREFIX_LEN_BYTES_MAX} bytes"),
                ));
            }
            if prefix.contains(['?', '#']) || prefix.chars().any(|c| !c.is_ascii_graphic()) {
                return Err(invalid(
                    field,
                    format!("{prefix:?} must be a plain path (printable ASCII, no '?' or '#')"),
                ));
            }
            if self.routes[..i].iter().any(|r| r.path_prefix == *prefix) {
                return Err(invalid(field, format!("{prefix:?} is routed twice")));
            }
            let field = format!("routes[{i}].upstream");
            let authority = check_upstream(&field, &route.upstream)?;
            if is_own_listener(&authority, self.listen) {
                return Err(invalid(
                    field,
                    format!(
                        "{:?} is this cage's own listen address ({}): every request would \
                         come back to the cage",
                        route.upstream, self.listen
                    ),
                ));
            }
        }
        for key_id in self.keys.inline.keys() {
            check_key_id(key_id)
                .map_err(|reason| invalid(format!("keys.inline.{key_id}"), reason))?;
        }
        if self.keys.inline.len() > KEYS_COUNT_MAX {
            return Err(invalid(
                "keys.inline",
                format!("{} keys; at most {KEYS_COUNT_MAX}", self.keys.inline.len()),
            ));
        }
        let s = &self.signature;
        check_u64(
            "signature.max_age_s",
            s.max_age_s,
            &SIGNATURE_MAX_AGE_S_RANGE,
        )?;
        check_u64(
            "signature.clock_skew_s",
            s.clock_skew_s,
            &SIGNATURE_CLOCK_SKEW_S_RANGE,
        )?;
        check_u64(
            "signature.replay_cache_entries_max",
            s.replay_cache_entries_max,
            &REPLAY_CACHE_ENTRIES_RANGE,
        )?;
        let r = &self.rate_limits;
        check_u64(
            "rate_limits.buckets_count_max",
            r.buckets_count_max,
            &RATE_BUCKETS_COUNT_RANGE,
        )?;
        for (name, rate) in [("per_ip", r.per_ip), ("per_key", r.per_key)] {
            if let Some(rate) = rate
                && rate.burst == 0
            {
                return Err(invalid(
                    format!("rate_limits.{name}.burst"),
                    "0 would refuse every request; remove the limit or give a burst of at least 1",
                ));
            }
        }
        let l = &self.limits;
        check_u64(
            "limits.body_size_bytes_max",
            l.body_size_bytes_max,
            &BODY_SIZE_BYTES_MAX_RANGE,
        )?;
        check_u64(
            "limits.response_body_size_bytes_max",
            l.response_body_size_bytes_max,
            &RESPONSE_BODY_SIZE_BYTES_MAX_RANGE,
        )?;
        check_u32(
            "limits.connections_count_max",
            l.connections_count_max,
            &CONNECTIONS_COUNT_MAX_RANGE,
        )?;
        check_u32(
            "limits.upstream_idle_connections_per_host",
            l.upstream_idle_connections_per_host,
            &UPSTREAM_IDLE_CONNECTIONS_PER_HOST_RANGE,
        )?;
        let t = &self.timeouts;
        for (field, value) in [
            ("timeouts.header_read_timeout_ms", t.header_read_timeout_ms),
            ("timeouts.idle_timeout_ms", t.idle_timeout_ms),
            ("timeouts.body_read_timeout_ms", t.body_read_timeout_ms),
            ("timeouts.upstream_timeout_ms", t.upstream_timeout_ms),
            (
                "timeouts.upstream_idle_timeout_ms",
                t.upstream_idle_timeout_ms,
            ),
        ] {
            check_u64(field, value, &TIMEOUT_MS_RANGE)?;
        }
        let rc = &self.receipts;
        if rc.path.as_os_str().is_empty() {
            return Err(invalid("receipts.path", "must not be empty"));
        }
        check_u32(
            "receipts.batch_count_max",
            rc.batch_count_max,
            &RECEIPT_BATCH_COUNT_RANGE,
        )?;
        check_u64(
            "receipts.flush_interval_ms",
            rc.flush_interval_ms,
            &RECEIPT_FLUSH_INTERVAL_MS_RANGE,
        )?;
        if rc.segment_bytes_max != 0 {
            check_u64(
                "receipts.segment_bytes_max",
                rc.segment_bytes_max,
                &RECEIPT_SEGMENT_BYTES_RANGE,
            )
            .map_err(|_| {
                invalid(
                    "receipts.segment_bytes_max",
                    format!(
                        "{} is outside {}..={} (or 0: never rotate)",
                        rc.segment_bytes_max,
                        RECEIPT_SEGMENT_BYTES_RANGE.start(),
                        RECEIPT_SEGMENT_BYTES_RANGE.end()
                    ),
                )
            })?;
        }
        if let Some(dir) = &rc.archive_dir {
            if dir.as_os_str().is_empty() {
                return Err(invalid("receipts.archive_dir", "must not be empty"));
            }
            if !dir.is_absolute() {
                // Not next to the log, as one might read it: relative to
                // the working directory, which for the agent is `/`.
                return Err(invalid(
                    "receipts.archive_dir",
                    format!("\"{}\" must be an absolute path", dir.display()),
                ));
            }
            if rc.segments_kept_max == 0 {
                return Err(invalid(
                    "receipts.archive_dir",
                    "takes the segments past receipts.segments_kept_max, which is 0 (keep \
                     every segment): set segments_kept_max too",
                ));
            }
            if rc.path.parent() == Some(dir.as_path()) {
                return Err(invalid(
                    "receipts.archive_dir",
                    "is the receipt log's own directory; archived segments keep their names, \
                     so they need another directory",
                ));
            }
        }
        if rc.segments_kept_max != 0 {
            check_u32(
                "receipts.segments_kept_max",
                rc.segments_kept_max,
                &RECEIPT_SEGMENTS_KEPT_RANGE,
            )
            .map_err(|_| {
                invalid(
                    "receipts.segments_kept_max",
                    format!(
                        "{} is outside {}..={} (or 0: keep every segment)",
                        rc.segments_kept_max,
                        RECEIPT_SEGMENTS_KEPT_RANGE.start(),
                        RECEIPT_SEGMENTS_KEPT_RANGE.end()
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// The upstream authority of route `index` (validated by
    /// [`CageConfig::validate`]).
    pub fn upstream_authority(&self, index: usize) -> Result<http::uri::Authority, ConfigError> {
        let field = format!("routes[{index}].upstream");
        let route = self
            .routes
            .get(index)
            .ok_or_else(|| invalid(field.clone(), "no such route"))?;
        check_upstream(&field, &route.upstream)
    }

    /// Every configured key: inline ones, then the directory's in file name
    /// order. A key id defined twice is an error naming both places.
    pub fn load_keys(&self) -> Result<Vec<(String, PublicKey)>, ConfigError> {
        let mut keys: BTreeMap<String, (String, PublicKey)> = BTreeMap::new();
        for (key_id, hex_key) in &self.keys.inline {
            let field = format!("keys.inline.{key_id}");
            check_key_id(key_id).map_err(|reason| invalid(&field, reason))?;
            let key: PublicKey = hex_key
                .trim()
                .parse()
                .map_err(|e| invalid(&field, format!("not an ed25519 public key: {e}")))?;
            keys.insert(key_id.clone(), (field, key));
        }
        if let Some(dir) = &self.keys.dir {
            let field = "keys.dir";
            let entries = std::fs::read_dir(dir)
                .map_err(|e| invalid(field, format!("cannot list {}: {e}", dir.display())))?;
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry
                    .map_err(|e| invalid(field, format!("cannot list {}: {e}", dir.display())))?;
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    return Err(invalid(
                        field,
                        format!("{} is not a UTF-8 file name", path.display()),
                    ));
                };
                if name.starts_with('.') || !path.is_file() {
                    continue;
                }
                files.push((name, path));
            }
            files.sort();
            for (key_id, path) in files {
                let place = format!("keys.dir file {}", path.display());
                check_key_id(&key_id).map_err(|reason| invalid(&place, reason))?;
                let mut text = String::new();
                std::fs::File::open(&path)
                    .and_then(|f| {
                        f.take(KEY_FILE_SIZE_BYTES_MAX + 1)
                            .read_to_string(&mut text)
                    })
                    .map_err(|e| invalid(&place, format!("cannot read: {e}")))?;
                if text.len() as u64 > KEY_FILE_SIZE_BYTES_MAX {
                    return Err(invalid(
                        &place,
                        format!("larger than {KEY_FILE_SIZE_BYTES_MAX} bytes"),
                    ));
                }
                let key: PublicKey = text
                    .trim()
                    .parse()
                    .map_err(|e| invalid(&place, format!("not an ed25519 public key: {e}")))?;
                if let Some((first, _)) = keys.get(&key_id) {
                    return Err(invalid(
                        &place,
                        format!("key id {key_id:?} is already defined by {first}"),
                    ));
                }
                keys.insert(key_id, (place, key));
            }
        }
        if keys.len() > KEYS_COUNT_MAX {
            return Err(invalid(
                "keys",
                format!("{} keys; at most {KEYS_COUNT_MAX}", keys.len()),
            ));
        }
        Ok(keys.into_iter().map(|(id, (_, key))| (id, key)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBKEY_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn minimal() -> String {
        "listen: 127.0.0.1:0\nroutes:\n  - { path_prefix: /, upstream: \"127.0.0.1:9000\" }\nreceipts: { path: /tmp/r.log }\n".to_owned()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = CageConfig::from_yaml_str(&minimal()).unwrap();
        assert_eq!(c.routes[0].unsigned, UnsignedPolicy::Reject);
        assert_eq!(
            c.timeouts.header_read_timeout_ms,
            DEFAULT_HEADER_READ_TIMEOUT_MS
        );
        assert_eq!(c.receipts.batch_count_max, DEFAULT_RECEIPT_BATCH_COUNT_MAX);
        assert!(c.signature.require_nonce);
        assert_eq!(c.upstream_authority(0).unwrap().port_u16(), Some(9000));
    }

    #[test]
    fn full_config_parses() {
        let text = format!(
            "listen: 0.0.0.0:8443\n\
             tls: {{ cert_pem: /c.pem, key_pem: /k.pem }}\n\
             routes:\n  - {{ path_prefix: /api, upstream: \"localhost:9000\", unsigned: allow-with-receipt }}\n\
             keys: {{ inline: {{ client-1: {PUBKEY_HEX} }} }}\n\
             signature: {{ max_age_s: 60, clock_skew_s: 2, require_nonce: false }}\n\
             rate_limits: {{ per_ip: {{ rate_per_s: 10, burst: 20 }} }}\n\
             limits: {{ body_size_bytes_max: 10 }}\n\
             timeouts: {{ idle_timeout_ms: 500 }}\n\
             receipts: {{ path: /r.log, batch_count_max: 8, response_header: true }}\n"
        );
        let c = CageConfig::from_yaml_str(&text).unwrap();
        assert_eq!(c.routes[0].unsigned, UnsignedPolicy::AllowWithReceipt);
        assert_eq!(c.signature.max_age_s, 60);
        assert_eq!(
            c.signature.replay_cache_entries_max,
            DEFAULT_REPLAY_CACHE_ENTRIES
        );
        assert_eq!(
            c.rate_limits.per_ip,
            Some(RateConfig {
                rate_per_s: 10,
                burst: 20
            })
        );
        assert_eq!(c.limits.body_size_bytes_max, 10);
        assert_eq!(c.timeouts.idle_timeout_ms, 500);
        assert!(c.receipts.response_header);
        let keys = c.load_keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, "client-1");
        assert_eq!(keys[0].1.to_string(), PUBKEY_HEX);
    }

    #[test]
    fn a_route_back_to_the_cage_itself_is_refused() {
        let config = |listen: &str, upstream: &str| {
            format!(
                "listen: \"{listen}\"\nroutes:\n  - {{ path_prefix: /, upstream: \"{upstream}\" }}\n\
                 receipts: {{ path: /r.log }}\n"
            )
        };
        for (listen, upstream) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "localhost:8080"),
            ("127.0.0.1:8080", "LOCALHOST:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("10.0.0.5:8080", "10.0.0.5:8080"),
        ] {
            let err = CageConfig::from_yaml_str(&config(listen, upstream))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("routes[0].upstream") && err.contains("own listen address"),
                "{listen} → {upstream}: {err}"
            );
        }
        for (listen, upstream) in [
            ("127.0.0.1:8080", "127.0.0.1:8081"),
            ("127.0.0.1:8080", "10.0.0.5:8080"),
            ("10.0.0.5:8080", "127.0.0.1:8080"),
            ("127.0.0.1:0", "127.0.0.1:9000"),
            ("0.0.0.0:8080", "backend.internal:8080"),
        ] {
            CageConfig::from_yaml_str(&config(listen, upstream))
                .unwrap_or_else(|e| panic!("{listen} → {upstream}: {e}"));
        }
    }

    #[test]
    fn a_yaml_error_in_a_file_names_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cage.yaml");
        std::fs::write(&path, minimal() + "route: 1\n").unwrap();
        let err = CageConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{}:5:1", path.display())), "{err}");
        assert!(!err.contains("<input>") && !err.contains("error:"), "{err}");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = minimal() + "bogus_field: 1\n";
        let err = CageConfig::from_yaml_str(&text).unwrap_err().to_string();
        assert!(err.contains("bogus_field"), "{err}");
    }

    #[test]
    fn range_errors_name_the_field() {
        let text = minimal() + "timeouts: { upstream_timeout_ms: 1 }\n";
        let err = CageConfig::from_yaml_str(&text).unwrap_err().to_string();
        assert!(err.contains("timeouts.upstream_timeout_ms"), "{err}");

        let text = "listen: 127.0.0.1:0\nroutes:\n  - { path_prefix: /, upstream: \"127.0.0.1\" }\nreceipts: { path: /r }\n";
        let err = CageConfig::from_yaml_str(text).unwrap_err().to_string();
        assert!(
            err.contains("routes[0].upstream") && err.contains("no port"),
            "{err}"
        );

        let text = "listen: 127.0.0.1:0\nroutes:\n  - { path_prefix: api, upstream: \"h:1\" }\nreceipts: { path: /r }\n";
        let err = CageConfig::from_yaml_str(text).unwrap_err().to_string();
        assert!(err.contains("routes[0].path_prefix"), "{err}");

        let text = minimal() + "rate_limits: { per_key: { rate_per_s: 1, burst: 0 } }\n";
        let err = CageConfig::from_yaml_str(&text).unwrap_err().to_string();
        assert!(err.contains("rate_limits.per_key.burst"), "{err}");
    }

    #[test]
    fn receipt_segments_default_to_64_mib_kept_all_and_bounds_are_named() {
        let c = CageConfig::from_yaml_str(&minimal()).unwrap();
        assert_eq!(
            c.receipts.segment_policy(),
            crate::receipt_file::SegmentPolicy {
                segment_bytes_max: 64 << 20,
                segments_kept_max: 0,
                archive_dir: None,
            }
        );
        let with = |receipts: &str| {
            let text = format!(
                "listen: 127.0.0.1:0\nroutes:\n  - {{ path_prefix: /, upstream: \"h:1\" }}\nreceipts: {receipts}\n"
            );
            CageConfig::from_yaml_str(&text)
        };
        let c = with("{ path: /r, segment_bytes_max: 0, segments_kept_max: 8 }").unwrap();
        assert_eq!(c.receipts.segment_bytes_max, 0);
        assert_eq!(c.receipts.segments_kept_max, 8);
        let err = with("{ path: /r, segment_bytes_max: 4096 }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("receipts.segment_bytes_max") && err.contains("0: never rotate"),
            "{err}"
        );
        for bad in [1, 2_000_000] {
            let err = with(&format!("{{ path: /r, segments_kept_max: {bad} }}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("receipts.segments_kept_max") && err.contains("0: keep every"),
                "{err}"
            );
        }
        let err = with("{ path: /r, segments_kept_max: -1 }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("segments_kept_max"), "{err}");
        // An archive takes what retention removes, in another directory.
        let c = with("{ path: /var/r/log, segments_kept_max: 4, archive_dir: /var/r-archive }")
            .unwrap();
        assert_eq!(
            c.receipts.segment_policy().archive_dir.as_deref(),
            Some(Path::new("/var/r-archive"))
        );
        for (bad, says) in [
            (
                "{ path: /var/r/log, archive_dir: /a }",
                "set segments_kept_max too",
            ),
            (
                "{ path: /var/r/log, segments_kept_max: 4, archive_dir: /var/r }",
                "own directory",
            ),
            (
                "{ path: /var/r/log, segments_kept_max: 4, archive_dir: \"\" }",
                "must not be empty",
            ),
            (
                "{ path: /var/r/log, segments_kept_max: 4, archive_dir: archive }",
                "must be an absolute path",
            ),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains("receipts.archive_dir") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let text = minimal() + "keys: { inline: { k1: abcd } }\n";
        let c = CageConfig::from_yaml_str(&text).unwrap();
        let err = c.load_keys().unwrap_err().to_string();
        assert!(err.contains("keys.inline.k1"), "{err}");

        let text = minimal() + "keys: { inline: { \"bad key\": abcd } }\n";
        let err = CageConfig::from_yaml_str(&text).unwrap_err().to_string();
        assert!(err.contains("keys.inline.bad key"), "{err}");
    }

    #[test]
    fn key_directory_is_read_and_duplicates_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dir-key"), format!("{PUBKEY_HEX}\n")).unwrap();
        std::fs::write(dir.path().join(".hidden"), "junk").unwrap();
        let text = minimal() + &format!("keys: {{ dir: {} }}\n", dir.path().display());
        let c = CageConfig::from_yaml_str(&text).unwrap();
        let keys = c.load_keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, "dir-key");

        let text = minimal()
            + &format!(
                "keys: {{ dir: {}, inline: {{ dir-key: {PUBKEY_HEX} }} }}\n",
                dir.path().display()
            );
        let c = CageConfig::from_yaml_str(&text).unwrap();
        let err = c.load_keys().unwrap_err().to_string();
        assert!(
            err.contains("already defined by keys.inline.dir-key"),
            "{err}"
        );
    }
}
