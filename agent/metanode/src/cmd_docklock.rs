//! `metanode docklock …`: run an OCI bundle or a plain executable in a DockLock cage, verify a
//! witness receipt, replay a workload under perturbation. The commands live in
//! `metanode_docklock::cli`, shared with the thin `metanode-docklock` launcher (same code, less
//! start-up per spawn). The launcher forks, so everything here stays single-threaded (no tokio
//! runtime).

pub use metanode_docklock::cli::DocklockCommand;

use crate::output::Output;

pub fn run(cmd: DocklockCommand, out: &Output) -> anyhow::Result<()> {
    metanode_docklock::cli::run(cmd, out)
}
