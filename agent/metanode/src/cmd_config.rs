//! `metanode config`: check a config file, export its schema, print an
//! example. The logic lives in `metanode_core::config`; this only reads
//! input and prints.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use metanode_core::config::{
    LoadConfigError, NodeConfig, example_yaml, field_order, json_schema, json_schema_to_cue,
    read_bounded,
};

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file; report every error with its line, column and field path.
    #[command(after_help = "Exits with status 1 if the file has any error.\n\n\
                            Examples:\n  metanode config check /etc/metanode/node.yaml\n  \
                            metanode config example | metanode config check -\n  \
                            metanode --json config check node.yaml   # [{\"line\":..,\"column\":..,\"path\":..,\"message\":..}]")]
    Check {
        /// Config file to check; `-` reads standard input.
        file: PathBuf,
    },
    /// Print the config schema: JSON Schema, or CUE definitions generated from it.
    Schema {
        /// Output format.
        #[arg(long, value_enum, default_value_t = SchemaFormat::Json)]
        format: SchemaFormat,
    },
    /// Print a commented example config: every field with its documentation and default.
    Example,
    /// Apply a config to a running appliance as a trial: it reverts by itself
    /// unless `config commit` follows within the timeout (Talos' --mode=try).
    #[command(
        after_help = "Example:\n  metanode config apply node.yaml --api http://10.0.0.5:7878 --timeout-s 120\n  \
                            metanode config commit --api http://10.0.0.5:7878"
    )]
    Apply {
        /// The new node config (checked locally first).
        file: PathBuf,
        /// The node's API.
        #[arg(long, value_name = "URL")]
        api: String,
        /// Seconds to confirm before the node reverts (10..=3600).
        #[arg(long, default_value_t = metanode_core::limits::CONFIG_TRY_TIMEOUT_S_DEFAULT,
              value_parser = clap::value_parser!(u64).range(
                  metanode_core::limits::CONFIG_TRY_TIMEOUT_S_MIN..=metanode_core::limits::CONFIG_TRY_TIMEOUT_S_MAX))]
        timeout_s: u64,
    },
    /// Keep the config under trial.
    Commit {
        #[arg(long, value_name = "URL")]
        api: String,
    },
    /// Show the config trial state (none, pending, committed, reverted).
    Trial {
        #[arg(long, value_name = "URL")]
        api: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaFormat {
    /// JSON Schema (draft 2020-12), as derived from the config types.
    Json,
    /// CUE definitions (`#NodeConfig`), for `cue vet`.
    Cue,
}

pub fn run(cmd: ConfigCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check { file } => check(&file, out),
        ConfigCommand::Schema { format } => {
            let schema = json_schema();
            match format {
                SchemaFormat::Json => {
                    let pretty = serde_json::to_string_pretty(&schema)
                        .context("rendering the json schema")?;
                    out.emit(&pretty, &schema);
                }
                SchemaFormat::Cue => {
                    let cue = json_schema_to_cue(&schema, &field_order());
                    out.emit(
                        cue.trim_end(),
                        &serde_json::json!({ "format": "cue", "text": cue }),
                    );
                }
            }
            Ok(())
        }
        ConfigCommand::Apply {
            file,
            api,
            timeout_s,
        } => crate::cmd_system::config_apply(&file, &api, timeout_s, out),
        ConfigCommand::Commit { api } => crate::cmd_system::config_commit(&api, out),
        ConfigCommand::Trial { api } => crate::cmd_system::config_trial(&api, out),
        ConfigCommand::Example => {
            let yaml = example_yaml();
            out.emit(
                yaml.trim_end(),
                &serde_json::json!({ "format": "yaml", "text": yaml }),
            );
            Ok(())
        }
    }
}

fn check(file: &std::path::Path, out: &Output) -> anyhow::Result<()> {
    let (result, source_name) = if file.as_os_str() == "-" {
        let bytes =
            read_bounded(std::io::stdin().lock()).context("reading the config from stdin")?;
        (
            NodeConfig::from_yaml_bytes(&bytes, "<stdin>"),
            "<stdin>".to_string(),
        )
    } else {
        (NodeConfig::from_file(file), file.display().to_string())
    };
    match result {
        Ok(config) => {
            out.emit(
                &format!("{source_name}: ok (node {})", config.node.name),
                &serde_json::json!([]),
            );
            Ok(())
        }
        Err(LoadConfigError::Invalid { diagnostics }) => {
            let count = diagnostics.errors.len();
            let json =
                serde_json::to_value(&diagnostics.errors).context("rendering diagnostics")?;
            out.emit(&diagnostics.to_string(), &json);
            anyhow::bail!(
                "{}: {count} config error{}",
                diagnostics.source_name,
                if count == 1 { "" } else { "s" }
            )
        }
        Err(other) => Err(other.into()),
    }
}
