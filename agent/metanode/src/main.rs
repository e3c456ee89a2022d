//! `metanode`: the agent (PID 1 in the appliance) and the operator CLI in one
//! binary. This file only parses arguments and dispatches; the work lives in
//! the library crates so it can be tested without spawning processes.

mod cmd_agent;
mod cmd_config;
mod cmd_ipfs;
mod cmd_store;
mod cmd_system;
mod output;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "metanode",
    version,
    about = "Metanode agent and operator CLI",
    long_about = "Metanode agent and operator CLI.\n\nOne binary: `metanode agent` runs a node (the appliance starts it as PID 1); the other \
                  subcommands operate on a node's store and configuration from a shell.",
    after_help = "Examples:\n  metanode agent --dev --data-dir /tmp/mn --api-listen 127.0.0.1:7878\n  metanode store put --data-dir /tmp/mn ./photo.jpg\n  metanode store get --data-dir /tmp/mn bafkr4i... -o photo.jpg\n  metanode config check node.yaml\n  metanode completions bash > /etc/bash_completion.d/metanode"
)]
struct Cli {
    /// Print machine-readable JSON instead of human text (for scripts).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground (store + HTTP API).
    Agent(cmd_agent::AgentArgs),
    /// Operate on a node's content-addressed store directly.
    #[command(subcommand)]
    Store(cmd_store::StoreCommand),
    /// Check a config file or export its schema; apply one to a node as a trial.
    #[command(subcommand)]
    Config(cmd_config::ConfigCommand),
    /// Operate an appliance node: info, A/B update, reboot, power off.
    #[command(subcommand)]
    System(cmd_system::SystemCommand),
    /// Print a shell completion script.
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

fn main() -> std::process::ExitCode {
    // In the appliance the kernel starts this binary as /init: be PID 1
    // (which starts `metanode agent` as a supervised child).
    if std::process::id() == 1 {
        metanode_system::pid1_main(env!("CARGO_PKG_VERSION"));
    }
    let cli = Cli::parse();
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Agent(args) => cmd_agent::run(args, &out),
        Command::Store(cmd) => cmd_store::run(cmd, &out),
        Command::Config(cmd) => cmd_config::run(cmd, &out),
        Command::System(cmd) => cmd_system::run(cmd, &out),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "metanode", &mut script);
            output::print_line(String::from_utf8_lossy(&script).trim_end());
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => out.fail(&err),
    }
}
