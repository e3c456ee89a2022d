//! The appliance glue between PID 1 (metanode-init), the network
//! (metanode-netcfg), the A/B slots and config trials (metanode-slots) and
//! the agent's API (the [`control::ApplianceControl`] it serves).

pub mod boot;
pub mod control;
pub mod disks;
pub mod paths;

pub use boot::pid1_main;
pub use control::ApplianceControl;
