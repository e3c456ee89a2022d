//! Our side of the cage bench: `metanode cage serve` configs, and the
//! signed-requests-per-core measurement.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use metanode_core::keys::{SigningKey, format_key_file};
use serde_json::{Value, json};

use super::cage::{pinned, row};
use super::cage_peers::{self as peers, Server};
use super::results::{Better, Row};

/// Key id the bench client signs with.
const BENCH_KEY_ID: &str = "bench-client";
/// The signed run's body: small, so the cost is the signature and digest,
/// not bytes.
const SIGNED_BODY_BYTES: u32 = 256;

pub struct Signed<'a> {
    pub public_key_hex: &'a str,
    pub workers: u32,
}

/// Starts `metanode cage serve` on 127.0.0.1:`port` proxying everything to
/// the upstream. Unsigned requests are allowed (with a receipt) unless
/// `signed` is given, in which case only signatures by the bench key pass.
pub fn serve(
    metanode: &Path,
    dir: &Path,
    port: u16,
    upstream_port: u16,
    signed: Option<Signed<'_>>,
) -> anyhow::Result<Server> {
    let name = if signed.is_some() {
        "cage-signed"
    } else {
        "cage"
    };
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub)?;
    let (unsigned, keys, workers) = match &signed {
        None => ("allow-with-receipt", String::new(), 0),
        Some(s) => (
            "reject",
            format!(
                "keys:\n  inline: {{ {BENCH_KEY_ID}: \"{}\" }}\n",
                s.public_key_hex
            ),
            s.workers,
        ),
    };
    let config = sub.join("cage.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nworkers: {workers}\nroutes:\n  - {{ path_prefix: /, upstream: \"127.0.0.1:{upstream_port}\", unsigned: {unsigned} }}\n\
             {keys}receipts: {{ path: {} }}\n",
            sub.join("receipts.log").display()
        ),
    )?;
    let mut cmd = match &signed {
        // The signed run measures one core: the cage alone on CPU 0.
        Some(_) => pinned(0, metanode),
        None => std::process::Command::new(metanode),
    };
    cmd.args(["cage", "serve", "--config"]).arg(&config);
    Server::spawn(name, port, &mut cmd, sub.join("stderr.log"))
}

/// The cage on one core (taskset CPU 0, one worker) verifying ed25519
/// RFC 9421 signatures with Content-Digest over 256-byte POST bodies and
/// fresh nonces; http-load and the nginx upstream on CPU 1, the load
/// generator sending requests it signed before the clock started (closed
/// loop, 32 connections: the cage's verifier batches what arrives in one
/// event-loop turn; 64 connections measured no better). Ceilings from the
/// same run, pinned to the cage's core: dalek's `verify_strict`, and the
/// cage's own strict verification in batches.
pub fn signed_rps_per_core(
    metanode: &Path,
    http_load: &Path,
    dir: &Path,
    duration: Duration,
) -> anyhow::Result<(Vec<Row>, Value)> {
    let nginx = peers::ensure_tool("nginx", "nginx")?;
    let upstream_port = peers::free_port()?;
    // Everything but the cage on CPU 1, so CPU 0 is the cage's alone.
    let _upstream = peers::nginx_upstream(&nginx, &dir.join("signed"), upstream_port, Some(1))?;
    let key = SigningKey::generate().map_err(|e| anyhow::anyhow!("generate a key: {e}"))?;
    let key_file = dir.join("bench-client.key");
    std::fs::write(&key_file, format_key_file(&key).as_bytes())?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let public_hex = hex::encode(key.public_key().to_bytes());
    let port = peers::free_port()?;
    let cage = serve(
        metanode,
        dir,
        port,
        upstream_port,
        Some(Signed {
            public_key_hex: &public_hex,
            workers: 1,
        }),
    )?;
    let args = vec![
        "--connections".to_string(),
        "32".to_string(),
        "--threads".to_string(),
        "1".to_string(),
        "--method".to_string(),
        "post".to_string(),
        "--body-bytes".to_string(),
        SIGNED_BODY_BYTES.to_string(),
        "--sign-key".to_string(),
        key_file.display().to_string(),
        "--key-id".to_string(),
        BENCH_KEY_ID.to_string(),
        // Enough for 40k/s over the window: twice the target.
        "--presign".to_string(),
        (40_000 * (duration.as_secs() + 1)).to_string(),
    ];
    let result = peers::http_load(http_load, dir, cage.port, &args, duration, Some(1))
        .context("http-load against the signed cage")?;
    anyhow::ensure!(
        result.raw["presigned_exhausted"] != serde_json::Value::Bool(true),
        "the generator ran out of pre-signed requests before the window ended: {}",
        result.raw
    );
    let refused = result.requests.saturating_sub(result.ok_2xx);
    let ok_rps = result.raw["ok_rps"].as_f64().unwrap_or(0.0);
    eprintln!(
        "    signed: {:.0} req/s on one core, {} refused, {} errors",
        result.rps, refused, result.errors
    );
    anyhow::ensure!(
        result.ok_2xx > 0,
        "no signed request was accepted: {}",
        result.raw
    );
    let mut r = row(
        "signed_rps_per_core",
        "req/s",
        Some(ok_rps),
        None,
        Better::Higher,
    );
    r.ours_note = Some(format!(
        "cage on 1 core (taskset, 1 worker): strict ed25519 (batched, per-key tables) + \
         Content-Digest + nonce per request, {refused} refused, {} errors; target >= 20000",
        result.errors
    ));
    drop(cage);
    // The ceiling: strict Ed25519 verification alone on one core, pinned
    // like the cage was. Every signed request costs one.
    let verify_per_s = ed25519_verify_per_s(Duration::from_secs(2));
    let mut ceiling = row(
        "ed25519_verify_strict_per_s_one_core",
        "verifies/s",
        Some(verify_per_s),
        None,
        Better::Higher,
    );
    ceiling.ours_note = Some(
        "context: one strict ed25519 verify per signed request bounds signed_rps_per_core".into(),
    );
    eprintln!("    ed25519 verify_strict alone: {verify_per_s:.0}/s on one core");
    // The cage's own verifier: the same strict decision through per-key
    // fixed-base tables, in batches (metanode-httpsig's example, pinned
    // like the cage was).
    let prepared = prepared_verify_per_s(dir, Duration::from_secs(2))?;
    let batch_per_s = prepared["prepared_batch_per_s"].as_f64();
    let mut batch = row(
        "ed25519_prepared_batch_verify_per_s_one_core",
        "verifies/s",
        batch_per_s,
        None,
        Better::Higher,
    );
    batch.ours_note = Some(format!(
        "context: the cage's strict verification (per-key fixed-base tables, batches of {}, \
         same accept set as verify_strict); one at a time: {:.0}/s",
        prepared["batch"].as_u64().unwrap_or(0),
        prepared["prepared_per_s"].as_f64().unwrap_or(0.0)
    ));
    eprintln!(
        "    prepared-key strict verify: {:.0}/s one at a time, {:.0}/s in batches on one core",
        prepared["prepared_per_s"].as_f64().unwrap_or(0.0),
        batch_per_s.unwrap_or(0.0)
    );
    let v = json!({"phase": "signed", "result": result.raw,
                   "ed25519_verify_strict_per_s_one_core": verify_per_s,
                   "prepared_verify_one_core": prepared});
    Ok((vec![r, ceiling, batch], v))
}

/// Runs metanode-httpsig's `verify_ceiling` example pinned to CPU 0 and
/// returns its JSON (strict, prepared one at a time, prepared in batches).
fn prepared_verify_per_s(dir: &Path, window: Duration) -> anyhow::Result<Value> {
    let root = crate::workspace_root();
    let mut build =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "metanode-httpsig",
        "--example",
        "verify_ceiling",
    ]);
    anyhow::ensure!(
        crate::process::run_inherited(&mut build)?,
        "cargo build --release -p metanode-httpsig --example verify_ceiling failed"
    );
    let bin = crate::target_dir(&root).join("release/examples/verify_ceiling");
    let out = pinned(0, &bin)
        .arg(format!("{}", window.as_secs_f64()))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        bin.display(),
        out.status
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} printed no JSON", bin.display()))?;
    let _ = std::fs::write(dir.join("verify_ceiling.json"), &out.stdout);
    Ok(v)
}

/// Strict Ed25519 verifications per second on a thread of its own pinned
/// to CPU 0 (a 200-byte message, about a signature base's size); the
/// caller's affinity is untouched.
fn ed25519_verify_per_s(window: Duration) -> f64 {
    std::thread::spawn(move || {
        let mut set = rustix::thread::CpuSet::new();
        set.set(0);
        let _ = rustix::thread::sched_setaffinity(None, &set);
        let key = SigningKey::from_seed(&[7; 32]);
        let public = key.public_key();
        let message = [0x5a_u8; 200];
        let signature = key.sign(&message);
        let started = std::time::Instant::now();
        let mut count = 0u64;
        while started.elapsed() < window {
            for _ in 0..64 {
                assert!(
                    public.verify(&message, &signature).is_ok(),
                    "a valid signature must verify"
                );
            }
            count += 64;
        }
        count as f64 / started.elapsed().as_secs_f64()
    })
    .join()
    .unwrap_or(0.0)
}
