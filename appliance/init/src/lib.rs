//! `metanode-init`: what the `metanode` binary does when it runs as PID 1 of the appliance.
//!
//! PID 1 duties (mounts, sysctls, hostname, reaping, supervision, watchdog, power requests, ordered
//! shutdown, readiness announcement), with every kernel effect behind the [`sys::InitSys`] seam so
//! the logic is tested on [`sys::fake::FakeSys`] without root. [`pid1::run`] is the entry point;
//! the binary passes [`pid1::Options`] with hooks for the parts other crates own (data partition,
//! network, A/B slots): this crate depends on none of them.
//!
//! Every console line starts with `metanode: `.

pub mod constants;
pub mod events;
pub mod mounts;
pub mod pid1;
pub mod power;
pub mod readiness;
pub mod runtime;
pub mod shutdown;
pub mod supervisor;
pub mod sys;
pub mod sysctl;
pub mod watchdog;

pub use pid1::{Context, HookResult, Hooks, Options, ReadinessOptions, run, run_with};
pub use power::PowerAction;
pub use readiness::{HttpTarget, InterfaceAddress};
pub use supervisor::{Restart, ServiceSpec};
pub use watchdog::WatchdogOptions;
