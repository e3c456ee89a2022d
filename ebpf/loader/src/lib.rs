//! BISO XDP traffic lights: the C program's loader (aya 0.14), policy swap,
//! pinned maps, counters and samples.
//!
//! The program (ebpf/xdp/biso.c) judges every IP packet by its source address:
//! green passes, red drops, yellow passes within a per-CPU token bucket per
//! source. [`TrafficLights::apply`] swaps a `CompiledPolicy` in atomically
//! (double-buffered tries, one flip). Token buckets are per CPU: each CPU gets
//! `rate_per_s / possible_cpus` and `burst / possible_cpus` (at least one
//! packet), so the node as a whole admits at most the policy's rate and burst
//! (see `abi::RuleAbi::from_rule`). A per-CPU verdict cache sits in front of
//! the tries and also holds the buckets: a direct-mapped array per family,
//! with an LRU behind it for buckets pushed out of their slot; every `apply`
//! bumps a policy generation, so no cached verdict outlives a swap.
//! [`TrafficLights::set_verdict_cache`] switches it off to measure misses.

mod abi;
mod counters;
mod floor;
mod lights;
pub mod limits;
mod sample;
mod sys;
mod traffic_gen;

pub use counters::{Counters, MalformedCounters, render_prometheus};
pub use floor::{FloorProgram, FloorRunError, test_run_floor};
pub use lights::{
    ApplyError, ApplyReport, AttachError, AttachMode, CountersError, DetachError, LoadError,
    MapLayout, TestRun, TestRunError, TrafficLights, VerdictCacheError, XdpAction, unpin_link,
};
pub use sample::Sample;
pub use traffic_gen::{GenerateError, LiveGenerator};

#[cfg(test)]
mod lights_tests;
#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod test_packets;
