//! `metanode-docklock`: the DockLock commands of `metanode docklock …` in a small binary of their
//! own. Same code (`metanode_docklock::cli`), same flags and output; what differs is start-up:
//! the agent binary's exec, relocations and full command tree cost each spawn about a
//! millisecond that a cage launched many times a second should not pay.

use clap::Parser;
use metanode_docklock::cli::{self, DocklockCommand, Output};

#[derive(Debug, Parser)]
#[command(
    name = "metanode-docklock",
    version,
    about = "Run OCI bundles and executables in a DockLock cage (same commands as `metanode docklock`)"
)]
struct Cli {
    /// Print results and errors as JSON lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: DocklockCommand,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    match cli::run(cli.command, &out) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => out.fail(&err),
    }
}
