//! `metanode system …` and `metanode config apply|commit|trial`: operate an
//! appliance node through its API (status, A/B updates, power, config
//! trials). The node does the work (metanode-system); this sends requests
//! and prints what came back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use metanode_api::wire::{ConfigTryReport, PowerResponse, SystemInfo, UpdateReport};
use metanode_core::config::NodeConfig;

use crate::cmd_store::Remote;
use crate::output::Output;

/// A UKI is ~10 MiB; uploading it to a VM under emulation takes a while.
const UPDATE_UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Version, booted slot, both slots' state, kernel, addresses, live sysctls.
    #[command(after_help = "Example:\n  metanode system info --api http://10.0.0.5:7878")]
    Info {
        /// The node's API, e.g. http://10.0.0.5:7878.
        #[arg(long, value_name = "URL")]
        api: String,
    },
    /// Update the node: upload a signed UKI into the inactive slot as a trial.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Reboot the node (an installed update is tried on this boot).
    Reboot {
        #[arg(long, value_name = "URL")]
        api: String,
    },
    /// Power the node off cleanly (the store is flushed first).
    Poweroff {
        #[arg(long, value_name = "URL")]
        api: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Verify-then-install FILE.efi into the inactive slot with 3 boot tries.
    #[command(
        after_help = "The node checks the Authenticode signature against its own Secure Boot db \
                            certificate before writing anything. Then reboot (`metanode system reboot` or \
                            --reboot): the new slot is tried; it becomes the default once the agent answers, \
                            and after 3 failed boots the node falls back to the old slot by itself.\n\n\
                            Example:\n  metanode system update apply target/image/metanode.efi --api http://10.0.0.5:7878 --reboot"
    )]
    Apply {
        /// The signed UKI (target/image/metanode.efi of a newer build).
        file: PathBuf,
        #[arg(long, value_name = "URL")]
        api: String,
        /// Reboot into the update right away.
        #[arg(long)]
        reboot: bool,
    },
    /// Both slots' state and whether the last update was rolled back.
    Status {
        #[arg(long, value_name = "URL")]
        api: String,
    },
}

pub fn run(cmd: SystemCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        SystemCommand::Info { api } => {
            let info: SystemInfo = Remote::new(&api)?.get_json("/api/v1/system", "system info")?;
            let mut text = format!(
                "{} {} (slot {}{})\nkernel {}\naddresses {}\n",
                info.hostname,
                info.version,
                info.slot,
                info.boot_entry
                    .as_deref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default(),
                info.kernel_release,
                info.addresses.join(", ")
            );
            text += &slots_text(&info);
            text += &format!(
                "uptime {} s; {} policy sysctls",
                info.uptime_s,
                info.sysctl.len()
            );
            out.emit(&text, &serde_json::to_value(&info)?);
            Ok(())
        }
        SystemCommand::Update(UpdateCommand::Status { api }) => {
            let info: SystemInfo =
                Remote::new(&api)?.get_json("/api/v1/system", "update status")?;
            out.emit(
                slots_text(&info).trim_end(),
                &serde_json::json!({
                    "slot": info.slot, "slots": info.slots, "update_note": info.update_note,
                }),
            );
            Ok(())
        }
        SystemCommand::Update(UpdateCommand::Apply { file, api, reboot }) => {
            let remote = Remote::new(&api)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            if !bytes.starts_with(b"MZ") {
                bail!(
                    "{} is not an EFI executable (a UKI starts with MZ)",
                    file.display()
                );
            }
            let response = remote
                .agent
                .post(remote.url("/api/v1/system/update"))
                .config()
                .timeout_global(Some(UPDATE_UPLOAD_TIMEOUT))
                .build()
                .send(&bytes[..]);
            let response = remote.check("update", response)?;
            let report: UpdateReport = remote.read_json("update", response)?;
            out.emit(
                &format!(
                    "installed {} into slot {} ({} bytes, signed by {}), {} tries\n{}",
                    report.file, report.slot, report.size, report.signer, report.tries, report.next
                ),
                &serde_json::to_value(&report)?,
            );
            if reboot {
                power(&remote, "reboot", out)?;
            }
            Ok(())
        }
        SystemCommand::Reboot { api } => power(&Remote::new(&api)?, "reboot", out),
        SystemCommand::Poweroff { api } => power(&Remote::new(&api)?, "poweroff", out),
    }
}

fn slots_text(info: &SystemInfo) -> String {
    let mut text = String::new();
    for s in &info.slots {
        text += &format!(
            "slot {}: {}{}{}{}\n",
            s.slot,
            s.state,
            s.tries_left
                .map(|t| format!(" ({t} tries left)"))
                .unwrap_or_default(),
            s.file
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default(),
            if s.booted { " [booted]" } else { "" }
        );
    }
    if let Some(note) = &info.update_note {
        text += &format!("{note}\n");
    }
    text
}

fn power(remote: &Remote, action: &str, out: &Output) -> anyhow::Result<()> {
    let r: PowerResponse = remote.post_json(&format!("/api/v1/system/{action}"), action)?;
    out.emit(&format!("{action} requested"), &serde_json::to_value(&r)?);
    Ok(())
}

/// `metanode config apply FILE --api URL [--timeout-s N]`.
pub fn config_apply(
    file: &std::path::Path,
    api: &str,
    timeout_s: u64,
    out: &Output,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // Check locally first: the same diagnostics as `config check`, before
    // the node is touched.
    NodeConfig::from_yaml_bytes(&bytes, &file.to_string_lossy())?;
    let remote = Remote::new(api)?;
    let response = remote
        .agent
        .post(remote.url(&format!("/api/v1/config?mode=try&timeout_s={timeout_s}")))
        .send(&bytes[..]);
    let response = remote.check("config apply", response)?;
    let report: ConfigTryReport = remote.read_json("config apply", response)?;
    out.emit(
        &format!(
            "config trial started: {}\ncheck the node, then: metanode config commit --api {api}",
            report.message
        ),
        &serde_json::to_value(&report)?,
    );
    Ok(())
}

pub fn config_commit(api: &str, out: &Output) -> anyhow::Result<()> {
    let report: ConfigTryReport =
        Remote::new(api)?.post_json("/api/v1/config/commit", "config commit")?;
    out.emit(&report.message, &serde_json::to_value(&report)?);
    Ok(())
}

pub fn config_trial(api: &str, out: &Output) -> anyhow::Result<()> {
    let report: ConfigTryReport =
        Remote::new(api)?.get_json("/api/v1/config/trial", "config trial")?;
    out.emit(
        &format!(
            "{}{}: {}",
            report.state,
            report
                .deadline_unix_s
                .map(|d| format!(" (deadline unix {d})"))
                .unwrap_or_default(),
            report.message
        ),
        &serde_json::to_value(&report)?,
    );
    Ok(())
}
