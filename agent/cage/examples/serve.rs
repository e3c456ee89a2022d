//! Runs the cage from a config file until Ctrl-C, with an all-green BISO
//! policy and a node key from `--key FILE` (the `metanode` key file format)
//! or a fresh one. What `metanode cage serve --config F` does, minus the
//! agent's policy and key plumbing:
//!
//! `cargo run --release -p metanode-cage --example serve -- cage.yaml [--key node.key]`

use std::path::PathBuf;

use metanode_cage::{CageConfig, PolicyHandle, allow_all_policy, render_prometheus, serve};
use metanode_core::keys::{SigningKey, parse_key_file};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config_path = PathBuf::from(args.next().ok_or("usage: serve CONFIG [--key FILE]")?);
    let key = match (args.next().as_deref(), args.next()) {
        (Some("--key"), Some(path)) => parse_key_file(&std::fs::read(path)?)?,
        (None, _) => SigningKey::generate()?,
        _ => return Err("usage: serve CONFIG [--key FILE]".into()),
    };
    let config = CageConfig::load(&config_path)?;
    eprintln!("node key {}", key.public_key());
    let report = serve(config, PolicyHandle::new(allow_all_policy()), key, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    let mut text = String::new();
    render_prometheus(&report.metrics, &mut text);
    eprintln!("{text}receipts: {:?}", report.receipts);
    Ok(())
}
