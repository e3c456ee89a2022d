//! BISO traffic lights: the policy engine.
//!
//! A YAML policy (data classes, regions, consent, Bus BIOS mode) is evaluated
//! by the truth table into a [`compiled::CompiledPolicy`]: one rule per source
//! prefix plus a default. The same compiled value feeds both enforcement
//! points, the XDP maps (`ebpf/loader`) and the HTTP Cage (`agent/cage`), so a
//! packet and a request from the same address can never get different lights.
//!
//! - [`policy`]: YAML schema, parsing, validation with line/field errors.
//! - [`eval`]: the truth table (documented and tested row by row).
//! - [`compile()`]: policy → compiled policy; [`load_policy`].
//! - [`log`]: the signed, hash-chained decision log.

pub mod compile;
pub mod compiled;
pub mod eval;
pub mod limits;
pub mod log;
pub mod policy;

pub use compile::{CompileError, compile, load_policy};
pub use compiled::{CompiledPolicy, RateLimit, Rule, Verdict, VerdictCounts};
pub use eval::{Clause, Decision};
pub use log::{DecisionKind, DecisionLog, LogSummary, LogVerifyError, verify_log};
pub use policy::{Consent, DataClass, Mode, Policy, PolicyError};
