//! Every bound of the BISO policy engine, in one place.
//!
//! These belong in `metanode_core::limits` (one file for the whole agent);
//! they live here until the lead moves them, because this crate may not edit
//! core. Names carry the unit last; relationships are checked at compile time.

// ---- policy source (policy.rs) ----

/// Policy YAML accepted by [`crate::load_policy`]. A policy with the maximum
/// number of region entries at ~64 bytes per line is well under this.
pub const POLICY_SOURCE_LEN_BYTES_MAX: usize = 1024 * 1024;
/// Entries of the CIDR → region table. Each becomes one LPM-trie entry in
/// the XDP maps (v4 + v6 together), which the loader sizes to this bound.
pub const REGION_ENTRIES_COUNT_MAX: usize = 16 * 1024;
/// Distinct region names (table names, `unknown_region`, allowed, blocked,
/// consent keys together).
pub const REGION_NAMES_COUNT_MAX: usize = 1024;
/// A region name (`eu-west`, `us-gov-east-1`).
pub const REGION_NAME_LEN_BYTES_MAX: usize = 64;
/// Declared purposes in `data.purposes`.
pub const PURPOSES_COUNT_MAX: usize = 64;
/// One purpose name.
pub const PURPOSE_LEN_BYTES_MAX: usize = 64;
/// `data.retention_days_max`: a century; anything longer is a typo.
pub const RETENTION_DAYS_LIMIT: u32 = 36_500;
/// `yellow.rate_per_s`: 100 Mpps is above what one node's NIC delivers.
pub const YELLOW_RATE_PER_S_MAX: u32 = 100_000_000;
/// `yellow.burst`.
pub const YELLOW_BURST_MAX: u32 = 100_000_000;
/// `yellow.sample_one_in`: beyond 2^24 sampling is effectively off; say 0.
pub const YELLOW_SAMPLE_ONE_IN_MAX: u32 = 1 << 24;

// ---- compiled policy (compile.rs) ----

/// Distinct reason texts in one compiled policy: at most one per region
/// name, one for addresses outside the table, and one spare.
pub const REASONS_COUNT_MAX: usize = REGION_NAMES_COUNT_MAX + 2;

// ---- decision log (log.rs) ----

/// One framed, signed log entry. Entries hold fixed-size fields only, so
/// this is far above any real entry; a larger length prefix is corruption.
pub const LOG_ENTRY_LEN_BYTES_MAX: u32 = 4096;

const _: () = assert!(
    REASONS_COUNT_MAX <= u16::MAX as usize + 1,
    "reason_id is a u16"
);
const _: () = assert!(REGION_NAMES_COUNT_MAX <= REGION_ENTRIES_COUNT_MAX + 1);
const _: () = assert!(
    REGION_ENTRIES_COUNT_MAX * (REGION_NAME_LEN_BYTES_MAX + 48) <= 2 * POLICY_SOURCE_LEN_BYTES_MAX,
    "a maximal region table must fit a maximal source"
);
const _: () = assert!(YELLOW_BURST_MAX >= YELLOW_RATE_PER_S_MAX);
const _: () = assert!(PURPOSES_COUNT_MAX * PURPOSE_LEN_BYTES_MAX <= POLICY_SOURCE_LEN_BYTES_MAX);
