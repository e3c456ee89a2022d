//! DockLock witness records: run header, trace roots and policy decision in
//! the canonical encoding, signed with Ed25519 over `H(0x13 || record)`,
//! verified, and compared across replays.
//!
//! - [`record`]: the types, their canonical encoding (version byte 1), the
//!   record hash, [`Record::sign`], [`SignedRecord::verify`] and
//!   [`SignedRecord::verify_with`], and what belongs in the signed part;
//! - [`roots`]: [`events_root`], [`env_root`] (order-insensitive: replay
//!   shuffles the environment) and [`input_root`];
//! - [`outputs`]: [`outputs_root`] walks an outputs directory without
//!   following symlinks, and [`OutputsManifest::first_difference`] names the
//!   first output two runs disagree on;
//! - [`receipt`]: the `.dlr` file (the canonical bytes, nothing else) and
//!   the JSON view for people;
//! - [`limits`]: every bound of this crate.
//!
//! Typical flow in the runtime:
//!
//! ```
//! use metanode_core::keys::SigningKey;
//! use metanode_core::merkle::empty_root;
//! use metanode_witness::*;
//!
//! let key = SigningKey::from_seed(&[1; 32]);
//! let mut decision = PolicyDecision {
//!     seccomp_digest: [2; 32],
//!     landlock_status: 0,
//!     landlock_abi: 7,
//!     cgroup_mode: 0,
//!     namespaces: namespaces::ALL & !namespaces::USER,
//!     exit: ExitKind::Exited(0),
//!     violations: Vec::new(),
//!     violations_dropped_count: 0,
//!     verdict: Verdict::Completed,
//! };
//! decision.push_violation(ViolationRecord {
//!     kind: ViolationKind::Syscall { nr: 321, name: "bpf".into() },
//!     detail: String::new(),
//! });
//! decision.verdict = decision.expected_verdict();
//! let record = Record {
//!     header: RunHeader {
//!         node: key.public_key().to_bytes(),
//!         service: "demo".into(),
//!         agreement: [3; 32],
//!         input_root: input_root(&[]).unwrap().into(),
//!         rng_seed: [4; 32],
//!         env_root: env_root(&["PATH=/bin".to_string()]).unwrap().into(),
//!         logical_time_ns: 0,
//!     },
//!     roots: TraceRoots {
//!         events_root: decision.events_root().unwrap().into(),
//!         outputs_root: empty_root().into(),
//!         state_delta_root: empty_root().into(),
//!     },
//!     decision,
//! };
//! let signed = record.sign(&key).unwrap();
//! signed.verify_with(&key.public_key()).unwrap();
//! assert_eq!(signed.record.decision.verdict, Verdict::Violated);
//! ```

pub mod limits;
pub mod outputs;
pub mod receipt;
pub mod record;
pub mod roots;

pub use outputs::{
    Difference, EntryKind, OutputEntry, OutputsError, OutputsManifest, outputs_root,
};
pub use receipt::{RECEIPT_FILE_EXTENSION, ReadReceiptError, WriteReceiptError};
pub use record::{
    ConsistencyError, ExitKind, OutputAction, PolicyDecision, RECORD_ENCODING_VERSION, Record,
    ResourceUsage, RunHeader, SignError, SignedRecord, TraceRoots, Verdict, VerifyError,
    ViolationKind, ViolationRecord, namespaces,
};
pub use roots::{
    EnvError, Event, EventsError, InputDigest, InputRef, InputsError, env_root, events_root,
    input_root,
};

#[cfg(test)]
mod record_tests;
