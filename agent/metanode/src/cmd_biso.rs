//! `metanode biso …`: check a traffic-light policy, ask what light an address
//! gets, verify the signed decision log. Attaching the lights to an interface
//! is `metanode xdp …` (cmd_xdp.rs); the agent does both from its config.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use metanode_biso::{CompiledPolicy, Policy, Verdict, compile, load_policy, verify_log};
use metanode_core::keys::PublicKey;
use serde_json::json;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum BisoCommand {
    /// Check a policy file and print the lights it compiles to.
    #[command(after_help = "\
Every source prefix of the region table gets a light (green pass, yellow rate-limited and
sampled, red drop) by the truth table documented in agent/biso/src/eval.rs; addresses in no
prefix get the unknown region's light. Errors name the line and field. Exit 1 when invalid.

Examples:
  metanode biso check policy/biso.example.yaml
  metanode --json biso check /var/lib/metanode/biso.yaml")]
    Check(CheckArgs),
    /// The light one or more addresses get under a policy, and why.
    #[command(after_help = "\
Example:
  metanode biso lookup policy/biso.example.yaml 10.1.2.3 203.0.113.9 2001:db8:1::7")]
    Lookup(LookupArgs),
    /// Verify a signed decision log end to end.
    #[command(after_help = "\
Checks every entry's signature (Ed25519 over H(0x1b || entry)), sequence and hash chain, and
names the first bad entry by index and byte offset. Exit 1 when the log does not verify.

Example:
  metanode biso verify-log /var/lib/metanode/biso/decisions.log --signer 3b6a…9f")]
    VerifyLog(VerifyLogArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy YAML file.
    policy: PathBuf,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The policy YAML file.
    policy: PathBuf,
    /// IPv4 or IPv6 addresses.
    #[arg(required = true)]
    addresses: Vec<IpAddr>,
}

#[derive(Debug, Args)]
pub struct VerifyLogArgs {
    /// The decision log file.
    log: PathBuf,
    /// The node's public key, 64 hex digits.
    #[arg(long, value_name = "HEX64")]
    signer: String,
}

pub fn run(cmd: BisoCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        BisoCommand::Check(args) => check(&args.policy, out),
        BisoCommand::Lookup(args) => lookup(&args.policy, &args.addresses, out),
        BisoCommand::VerifyLog(args) => verify(&args.log, &args.signer, out),
    }
}

/// Reads and validates a policy file; the error names the file, line and
/// field.
pub fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    // Bounded while it is read: the parser refuses a longer source anyway,
    // and an endless one (/dev/zero, a pipe) must not fill memory first. A
    // FIFO without a writer still blocks, as it does for `cat`.
    let yaml = crate::traffic::read_text_bounded(
        path,
        metanode_biso::limits::POLICY_SOURCE_LEN_BYTES_MAX as u64,
    )
    .context("read policy")?;
    load_policy(&yaml).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// [`read_policy`], compiled as `version`.
pub fn load_compiled(path: &Path, version: u64) -> anyhow::Result<(Policy, CompiledPolicy)> {
    let policy = read_policy(path)?;
    let compiled =
        compile(&policy, version).map_err(|e| anyhow!("compile {}: {e}", path.display()))?;
    Ok((policy, compiled))
}

fn check(path: &Path, out: &Output) -> anyhow::Result<()> {
    let (policy, compiled) = load_compiled(path, 1)?;
    let counts = compiled.verdict_counts();
    let rules: Vec<serde_json::Value> = compiled
        .v4
        .iter()
        .map(|(net, r)| (net.to_string(), r))
        .chain(compiled.v6.iter().map(|(net, r)| (net.to_string(), r)))
        .map(|(prefix, r)| {
            json!({"prefix": prefix, "light": r.verdict.name(), "reason": compiled.reason(r),
                   "rate_per_s": (r.verdict == Verdict::Yellow).then_some(r.rate.rate_per_s),
                   "burst": (r.verdict == Verdict::Yellow).then_some(r.rate.burst)})
        })
        .collect();
    let mut human = format!(
        "{}: valid; mode {}, digest {}\n",
        path.display(),
        policy.mode,
        hex::encode(compiled.policy_digest)
    );
    human.push_str(&format!("{:<26} {:<7} reason\n", "prefix", "light"));
    for r in &rules {
        human.push_str(&format!(
            "{:<26} {:<7} {}\n",
            r["prefix"].as_str().unwrap_or(""),
            r["light"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        ));
    }
    human.push_str(&format!(
        "{:<26} {:<7} {}\n{} green, {} yellow, {} red prefix rules",
        "(any other address)",
        compiled.default_rule.verdict.name(),
        compiled.reason(&compiled.default_rule),
        counts.green_count,
        counts.yellow_count,
        counts.red_count
    ));
    out.emit(
        &human,
        &json!({"policy": path.display().to_string(), "valid": true, "mode": policy.mode.name(),
                "digest": hex::encode(compiled.policy_digest), "rules": rules,
                "default": {"light": compiled.default_rule.verdict.name(),
                            "reason": compiled.reason(&compiled.default_rule)}}),
    );
    Ok(())
}

fn lookup(path: &Path, addresses: &[IpAddr], out: &Output) -> anyhow::Result<()> {
    let (policy, compiled) = load_compiled(path, 1)?;
    let mut human = String::new();
    let mut rows = Vec::new();
    for addr in addresses {
        let rule = compiled.lookup(*addr);
        let (region, covered) = metanode_biso::policy::region_of(&policy, *addr);
        // The reason names the region (and says when no entry covers it).
        human.push_str(&format!(
            "{addr:<40} {:<7} {}\n",
            rule.verdict.name(),
            compiled.reason(rule)
        ));
        rows.push(
            json!({"address": addr.to_string(), "light": rule.verdict.name(),
                         "region": region, "in_table": covered, "reason": compiled.reason(rule)}),
        );
    }
    out.emit(human.trim_end(), &json!({"lookups": rows}));
    Ok(())
}

fn verify(log: &Path, signer: &str, out: &Output) -> anyhow::Result<()> {
    let key = parse_public_key(signer)?;
    let summary = verify_log(log, &key).map_err(|e| anyhow!("{}: {e}", log.display()))?;
    let policy = summary
        .policy
        .map(|p| {
            format!(
                "policy v{} {}",
                p.policy_version,
                hex::encode(p.policy_digest)
            )
        })
        .unwrap_or_else(|| "no policy applied".into());
    out.emit(
        &format!(
            "{}: {} entries verify; last {}; {policy}; mode {}",
            log.display(),
            summary.entries_count,
            summary.last_entry_hash,
            summary.mode.map_or("unset", |m| m.name())
        ),
        &json!({"log": log.display().to_string(), "entries": summary.entries_count,
                "last_entry_hash": summary.last_entry_hash.to_string(),
                "policy_version": summary.policy.map(|p| p.policy_version),
                "policy_digest": summary.policy.map(|p| hex::encode(p.policy_digest)),
                "mode": summary.mode.map(|m| m.name())}),
    );
    Ok(())
}

pub fn parse_public_key(text: &str) -> anyhow::Result<PublicKey> {
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| anyhow!("--signer must be 64 hex digits (an Ed25519 public key)"))?;
    PublicKey::from_bytes(&bytes).map_err(|e| anyhow!("--signer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_over_the_bound_is_refused_before_it_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let bound = metanode_biso::limits::POLICY_SOURCE_LEN_BYTES_MAX;
        std::fs::write(&path, vec![b'#'; bound + 1]).unwrap();
        let e = format!("{:#}", read_policy(&path).unwrap_err());
        assert!(
            e.contains("big.yaml") && e.contains(&format!("over {bound} bytes")),
            "{e}"
        );
    }

    #[test]
    fn a_policy_file_that_is_not_text_is_refused_naming_the_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.yaml");
        std::fs::write(&path, b"mode: normal\n\xff").unwrap();
        let e = format!("{:#}", read_policy(&path).unwrap_err());
        assert!(
            e.contains("read policy")
                && e.contains("bin.yaml")
                && e.contains("not UTF-8 text (at byte offset 13)"),
            "{e}"
        );
    }

    #[test]
    fn an_endless_policy_source_stops_at_the_bound() {
        let e = format!("{:#}", read_policy(Path::new("/dev/zero")).unwrap_err());
        let bound = metanode_biso::limits::POLICY_SOURCE_LEN_BYTES_MAX;
        assert!(
            e.contains(&format!("/dev/zero is over {bound} bytes")),
            "{e}"
        );
    }

    #[test]
    fn a_missing_policy_file_names_the_path() {
        let e = format!(
            "{:#}",
            read_policy(Path::new("/nonexistent/p.yaml")).unwrap_err()
        );
        assert!(e.contains("/nonexistent/p.yaml"), "{e}");
    }
}
