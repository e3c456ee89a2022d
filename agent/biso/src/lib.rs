//! BISO traffic lights: the policy engine.
//!
//! A YAML policy (data classes, regions, consent, Bus BIOS mode) is evaluated
//! by the truth table into a [`compiled::CompiledPolicy`]: one rule per source
//! prefix plus a default. The same compiled value feeds both enforcement
//! points, the XDP maps (`ebpf/loader`) and the HTTP Cage (`agent/cage`), so a
//! packet and a request from the same address can never get different lights.

pub mod compiled;

pub use compiled::{CompiledPolicy, RateLimit, Rule, Verdict};
