//! Every bound of the witness crate, in one place.
//!
//! These belong in `metanode_core::limits` (one file for the whole agent);
//! they live here until the lead moves them, because this crate may not edit
//! core. Names carry the unit last; relationships are checked at compile time.

// ---- record fields (record.rs) ----

/// `RunHeader::service`: a service name as the agreement names it.
pub const SERVICE_NAME_LEN_BYTES_MAX: u32 = 256;
/// `ExitKind::Failed` reason: `"docklock: <step> failed: <errno text>"` with room
/// for a path in the step.
pub const EXIT_FAILED_REASON_LEN_BYTES_MAX: u32 = 1024;
/// Violations listed in one record. A workload can trigger millions (every
/// denied syscall is one), so the list keeps the first ones in order and
/// `PolicyDecision::violations_dropped_count` counts the rest.
pub const VIOLATIONS_COUNT_MAX: u32 = 64;
/// `ViolationKind::Syscall::name`: the longest x86_64 syscall name is 22 bytes.
pub const SYSCALL_NAME_LEN_BYTES_MAX: u32 = 64;
/// `ViolationKind::Landlock::access`: an access right and the cage path it
/// was denied on.
pub const LANDLOCK_ACCESS_LEN_BYTES_MAX: u32 = 256;
/// `ViolationRecord::detail`.
pub const VIOLATION_DETAIL_LEN_BYTES_MAX: u32 = 256;
/// Highest signal number Linux delivers (SIGRTMAX on x86_64).
pub const SIGNAL_NUMBER_MAX: u8 = 64;

// ---- roots (roots.rs) ----

/// Events hashed into one events root. A record's events are its listed
/// violations, at most one "dropped" marker and the exit.
pub const EVENTS_COUNT_MAX: u32 = 64 * 1024;
/// Environment entries of one run (Linux has no fixed limit; 4096 is far
/// above any real container spec).
pub const ENV_ENTRIES_COUNT_MAX: u32 = 4096;
/// One `KEY=value` entry: Linux's MAX_ARG_STRLEN (32 pages).
pub const ENV_ENTRY_LEN_BYTES_MAX: u32 = 128 * 1024;
/// Declared inputs of one run.
pub const INPUTS_COUNT_MAX: u32 = 4096;
/// `InputRef::name`.
pub const INPUT_NAME_LEN_BYTES_MAX: u32 = 1024;
/// A binary CID: version + codec + multihash code + length varints + a
/// 64-byte digest fits in well under 128 bytes.
pub const INPUT_CID_LEN_BYTES_MAX: u32 = 128;

// ---- outputs (outputs.rs) ----

/// Entries (files, directories, symlinks, others) under one outputs
/// directory. Each costs its path plus about 80 bytes in memory.
pub const OUTPUTS_ENTRIES_COUNT_MAX: u32 = 256 * 1024;
/// Relative path of one output entry (Linux PATH_MAX).
pub const OUTPUTS_PATH_LEN_BYTES_MAX: u32 = 4096;
/// Nesting depth of the outputs walk; one directory fd is open per level.
pub const OUTPUTS_DEPTH_MAX: u32 = 128;
/// `ViolationKind::Output::path` (relative to the outputs directory). Not
/// PATH_MAX: 64 violations of PATH_MAX paths would not fit a receipt in one
/// chain transaction (asserted below); longer paths are shortened by the
/// recorder, deterministically.
pub const OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX: u32 = 512;
/// A symlink target (Linux PATH_MAX).
pub const OUTPUTS_SYMLINK_TARGET_LEN_BYTES_MAX: u32 = 4096;

// ---- receipt files ----

const fn max(a: u64, b: u64) -> u64 {
    if a > b { a } else { b }
}

/// Largest canonical `ViolationRecord`: kind tag, the largest kind body, and
/// the detail string.
pub const VIOLATION_ENCODED_BYTES_MAX: u64 =
    1 + max(
        max(
            8 + 4 + SYSCALL_NAME_LEN_BYTES_MAX as u64,
            4 + LANDLOCK_ACCESS_LEN_BYTES_MAX as u64,
        ),
        1 + 4 + 4 + OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX as u64,
    ) + 4
        + VIOLATION_DETAIL_LEN_BYTES_MAX as u64;

/// Largest canonical `Record` (version byte, header, roots, decision).
pub const RECORD_ENCODED_BYTES_MAX: u64 = 1
    // header: node, service, agreement, input_root, rng_seed, env_root, logical time
    + 32 + 4 + SERVICE_NAME_LEN_BYTES_MAX as u64 + 4 * 32 + 8
    // roots
    + 3 * 32
    // decision: digest, landlock status + abi, cgroup mode, namespaces
    + 32 + 1 + 1 + 1 + 2
    // exit: tag + the largest body (the failure reason)
    + 1 + 4 + EXIT_FAILED_REASON_LEN_BYTES_MAX as u64
    // violations, dropped count, verdict
    + 4 + VIOLATIONS_COUNT_MAX as u64 * VIOLATION_ENCODED_BYTES_MAX
    + 8
    + 1;

/// Largest `.dlr` receipt file: a record plus signer and signature. The reader
/// refuses anything larger before reading it.
pub const RECEIPT_FILE_SIZE_BYTES_MAX: u64 = RECORD_ENCODED_BYTES_MAX + 32 + 64;

const _: () = assert!(VIOLATIONS_COUNT_MAX + 2 <= EVENTS_COUNT_MAX);
const _: () = assert!(SYSCALL_NAME_LEN_BYTES_MAX >= 22);
const _: () = assert!(OUTPUTS_DEPTH_MAX <= OUTPUTS_PATH_LEN_BYTES_MAX / 2);
// A receipt must fit in one chain transaction payload, so a node can put it
// on chain whole.
const _: () = assert!(
    RECEIPT_FILE_SIZE_BYTES_MAX <= metanode_core::limits::CHAIN_TX_PAYLOAD_BYTES_MAX as u64
);
const _: () =
    assert!(RECORD_ENCODED_BYTES_MAX <= metanode_core::limits::ENCODING_BYTES_LEN_MAX as u64);
