//! A/B boot slots for the Metanode appliance, and the config try/commit protocol.
//!
//! - [`esp`]: the two slots as Unified Kernel Images in `\EFI\Linux` of the EFI system partition,
//!   named so that systemd-boot 252's own ordering and boot counting give "try the update N
//!   times, then fall back to the known-good slot" with no hands on the machine.
//! - [`bootorder`]: a port of systemd-boot 252's entry comparison and default selection, so the
//!   code can predict (and tests can check) what the loader will boot.
//! - [`authenticode`]: verification of a signed UKI against our Secure Boot `db` certificate.
//! - [`update`]: verify, then install into the inactive slot as a trial.
//! - [`config_try`]: Talos-style try → commit → automatic revert for the node config file.

pub mod authenticode;
pub mod bootorder;
pub mod config_try;
pub mod esp;
mod fsutil;
pub mod limits;
pub mod uki;
pub mod update;

#[cfg(test)]
mod testboot;
#[cfg(test)]
mod testpe;
#[cfg(test)]
mod testsign;

pub use esp::{Esp, Slot, SlotState, Status};
