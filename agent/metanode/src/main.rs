//! `metanode`: the agent (PID 1 in the appliance) and the operator CLI in one
//! binary. This file only parses arguments and dispatches; the work lives in
//! the library crates so it can be tested without spawning processes.

mod cmd_agent;
mod cmd_biso;
mod cmd_cage;
mod cmd_chain;
mod cmd_config;
mod cmd_docklock;
mod cmd_ipfs;
mod cmd_light;
mod cmd_store;
mod cmd_system;
mod docklock_service;
mod genesis_file;
mod output;
mod stop_signals;
mod traffic;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "metanode",
    version,
    about = "Metanode agent and operator CLI",
    long_about = "Metanode agent and operator CLI.\n\nOne binary: `metanode agent` runs a node (the appliance starts it as PID 1); the other \
                  subcommands operate on a node's store and configuration from a shell.",
    after_help = "Examples:\n  metanode agent --dev --data-dir /tmp/mn --api-listen 127.0.0.1:7878\n  metanode store put --data-dir /tmp/mn ./photo.jpg\n  metanode store get --data-dir /tmp/mn bafkr4i... -o photo.jpg\n  metanode config check node.yaml\n  metanode chain genesis --validators 4 --out ./net --fund-clients 1\n  metanode chain status --api http://127.0.0.1:7878\n  metanode light verify --genesis ./net/genesis.yaml --api http://127.0.0.1:7878\n  metanode completions bash > /etc/bash_completion.d/metanode"
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
    /// Create a chain network; query a node's chain; submit transactions.
    #[command(
        subcommand,
        after_help = "A local 4-validator chain in three steps:\n  \
                      metanode chain genesis --validators 4 --out ./net --fund-clients 1\n  \
                      for i in 0 1 2 3; do metanode agent --config ./net/node-$i/config.yaml & done\n  \
                      metanode chain submit --api http://127.0.0.1:7878 --key ./net/clients/client-0.key \\\n      \
                      --to PUBKEY --amount 10 --wait\n\
                      Then follow it: metanode chain heads --api http://127.0.0.1:7879"
    )]
    Chain(cmd_chain::ChainCommand),
    /// Light client: verify headers, blocks and receipts from genesis.
    #[command(
        subcommand,
        after_help = "The light client trusts only the genesis file; the node is a source of bytes.\n\
                      Examples:\n  \
                      metanode light verify --genesis ./net/genesis.yaml --api http://127.0.0.1:7878\n  \
                      metanode light verify-receipt --genesis ./net/genesis.yaml --api http://127.0.0.1:7879 TX_HASH"
    )]
    Light(cmd_light::LightCommand),
    /// DockLock: run a bundle or executable in a determinism cage, verify receipts, replay.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
                      metanode docklock run ./bundle --out ./out --receipt run.dlr --key node.key\n  \
                      metanode docklock verify run.dlr\n  \
                      metanode docklock replay ./bundle --runs 5"
    )]
    Docklock(cmd_docklock::DocklockCommand),
    /// BISO traffic lights: check a policy, look up an address, verify the decision log.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
                      metanode biso check policy/biso.example.yaml\n  \
                      metanode biso lookup policy/biso.example.yaml 10.1.2.3 203.0.113.9\n  \
                      metanode biso verify-log /var/lib/metanode/biso/decisions.log --signer HEX64"
    )]
    Biso(cmd_biso::BisoCommand),
    /// HTTP Cage: reverse proxy verifying RFC 9421 signed requests, with signed audit receipts.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
                      metanode cage serve --config cage.yaml --policy biso.yaml --key node.key\n  \
                      metanode cage verify-receipts receipts.log --signer HEX64"
    )]
    Cage(cmd_cage::CageCommand),
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
        Command::Chain(cmd) => cmd_chain::run(cmd, &out),
        Command::Light(cmd) => cmd_light::run(cmd, &out),
        Command::Docklock(cmd) => cmd_docklock::run(cmd, &out),
        Command::Biso(cmd) => cmd_biso::run(cmd, &out),
        Command::Cage(cmd) => cmd_cage::run(cmd, &out),
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
