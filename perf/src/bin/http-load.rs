//! HTTP/1.1 load generator for the cage bench (issue #7): closed loop like
//! wrk (back-to-back requests per connection, keep-alive or a new connection
//! per request) and open loop like wrk2 `-R` (a fixed schedule of intended
//! send times, latency measured from the intended time so a stall is charged
//! to every request it delays). wrk2 is not packaged here, hence this tool;
//! it also sends RFC 9421-signed requests, signed before the clock starts.
//!
//! Prints one JSON object with `--json` (fields in `http_load::report::Report`),
//! otherwise a short table; progress goes to stderr unless `--json`.

#[path = "../http_load/driver.rs"]
mod driver;
#[path = "../http_load/report.rs"]
mod report;
#[path = "../http_load/request.rs"]
mod request;
#[path = "../http_load/response.rs"]
mod response;
#[cfg(test)]
#[path = "../http_load/tests.rs"]
mod tests;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use driver::RunConfig;
use report::Report;
use request::{Method, RequestSource, RequestSpec};

const CONNECTIONS_MAX: usize = 10_000;
const THREADS_MAX: usize = 64;
const DURATION_S_MAX: f64 = 3600.0;
const WARMUP_S_MAX: f64 = 600.0;
const RATE_RPS_MAX: f64 = 10_000_000.0;
const BODY_BYTES_MAX: usize = 16 << 20;
const TIMEOUT_MS_MAX: u64 = 600_000;
const PACER_TICK_US_MAX: u64 = 100_000;
/// Closed loop has no rate to size the pool by.
const PRESIGN_CLOSED_LOOP_DEFAULT: usize = 200_000;
/// Open loop signs this much more than rate × time, for requests resent
/// after errors and rounding of the schedule.
const PRESIGN_HEADROOM: f64 = 1.05;

#[derive(Debug, Parser)]
#[command(
    about = "HTTP/1.1 load generator: closed loop (wrk-like) or open loop at --rate (wrk2-like, no coordinated omission)."
)]
struct Args {
    /// Server address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    target: String,
    /// Host header (and signed @authority); defaults to --target.
    #[arg(long)]
    host: Option<String>,
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, value_enum, ignore_case = true, default_value = "get")]
    method: Method,
    /// Request body size (POST).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    #[arg(long)]
    connections: usize,
    /// Tokio worker threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured time, after the warm-up.
    #[arg(long)]
    duration_s: f64,
    #[arg(long, default_value_t = 0.0)]
    warmup_s: f64,
    /// Open loop at this many requests per second in total; without it,
    /// closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// One TCP connection per request, sending `Connection: close`.
    #[arg(long)]
    close: bool,
    /// A request without a full response after this counts as a timeout.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Open loop: minimum sleep of the pacer between wake-ups; larger costs
    /// less CPU at high rates and adds up to this much send lateness.
    #[arg(long, default_value_t = driver::PACER_TICK_DEFAULT.as_micros() as u64)]
    pacer_tick_us: u64,
    /// Metanode Ed25519 key file: send RFC 9421-signed requests.
    #[arg(long, requires = "key_id")]
    sign_key: Option<PathBuf>,
    /// keyid parameter of the signatures.
    #[arg(long, requires = "sign_key")]
    key_id: Option<String>,
    /// How many requests to sign before the clock starts (default: rate ×
    /// (warm-up + duration) with headroom, or 200000 in closed loop).
    #[arg(long, requires = "sign_key")]
    presign: Option<usize>,
    /// Print one JSON object on stdout and no progress.
    #[arg(long)]
    json: bool,
}

fn ensure_range(
    name: &str,
    value: f64,
    low_exclusive: bool,
    low: f64,
    high: f64,
) -> anyhow::Result<()> {
    let low_ok = if low_exclusive {
        value > low
    } else {
        value >= low
    };
    anyhow::ensure!(
        value.is_finite() && low_ok && value <= high,
        "{name} {value} is outside {}{low}, {high}]",
        if low_exclusive { "(" } else { "[" }
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=CONNECTIONS_MAX).contains(&args.connections),
        "--connections {} is outside 1..={CONNECTIONS_MAX}",
        args.connections
    );
    anyhow::ensure!(
        (1..=THREADS_MAX).contains(&args.threads),
        "--threads {} is outside 1..={THREADS_MAX}",
        args.threads
    );
    ensure_range("--duration-s", args.duration_s, true, 0.0, DURATION_S_MAX)?;
    ensure_range("--warmup-s", args.warmup_s, false, 0.0, WARMUP_S_MAX)?;
    if let Some(rate) = args.rate {
        ensure_range("--rate", rate, true, 0.0, RATE_RPS_MAX)?;
    }
    anyhow::ensure!(
        args.body_bytes <= BODY_BYTES_MAX,
        "--body-bytes {} is above {BODY_BYTES_MAX}",
        args.body_bytes
    );
    anyhow::ensure!(
        args.method == Method::Post || args.body_bytes == 0,
        "--body-bytes {} needs --method post",
        args.body_bytes
    );
    anyhow::ensure!(
        (1..=TIMEOUT_MS_MAX).contains(&args.timeout_ms),
        "--timeout-ms {} is outside 1..={TIMEOUT_MS_MAX}",
        args.timeout_ms
    );
    anyhow::ensure!(
        (1..=PACER_TICK_US_MAX).contains(&args.pacer_tick_us),
        "--pacer-tick-us {} is outside 1..={PACER_TICK_US_MAX}",
        args.pacer_tick_us
    );
    let target: SocketAddr = args
        .target
        .to_socket_addrs()
        .with_context(|| format!("--target {:?} is not host:port", args.target))?
        .next()
        .with_context(|| format!("--target {:?} resolves to no address", args.target))?;

    let spec = RequestSpec {
        method: args.method,
        host: args.host.clone().unwrap_or_else(|| args.target.clone()),
        path: args.path.clone(),
        body: request::body_of(args.body_bytes),
        close: args.close,
    };
    spec.validate()?;

    let source = match (&args.sign_key, &args.key_id) {
        (Some(key_path), Some(key_id)) => {
            let key = metanode_core::keys::SigningKeyFile::new(key_path)
                .load()
                .with_context(|| format!("--sign-key {}", key_path.display()))?;
            let count = match (args.presign, args.rate) {
                (Some(n), _) => n,
                (None, Some(rate)) => {
                    let wanted = rate * (args.warmup_s + args.duration_s) * PRESIGN_HEADROOM;
                    (wanted.ceil() as usize)
                        .saturating_add(args.connections)
                        .min(request::PRESIGN_COUNT_MAX)
                }
                (None, None) => PRESIGN_CLOSED_LOOP_DEFAULT,
            };
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            if !args.json {
                eprintln!("signing {count} requests on {threads} threads before the clock starts");
            }
            RequestSource::Presigned(request::presign(&spec, &key, key_id, count, threads)?)
        }
        _ => RequestSource::Fixed(spec.plain()),
    };
    let presigned = source.presigned_count();

    let config = RunConfig {
        target,
        connections: args.connections,
        threads: args.threads,
        warmup: Duration::from_secs_f64(args.warmup_s),
        duration: Duration::from_secs_f64(args.duration_s),
        rate_rps: args.rate,
        close: args.close,
        timeout: Duration::from_millis(args.timeout_ms),
        pacer_tick: Duration::from_micros(args.pacer_tick_us),
    };
    let outcome = driver::run(config, source, !args.json)?;
    let report = build_report(&args, target, presigned, &outcome);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

fn build_report(
    args: &Args,
    target: SocketAddr,
    presigned: Option<usize>,
    outcome: &driver::Outcome,
) -> Report {
    let stats = &outcome.stats;
    let elapsed_s = outcome.elapsed.as_secs_f64();
    let per_s = |n: u64| {
        if elapsed_s > 0.0 {
            n as f64 / elapsed_s
        } else {
            0.0
        }
    };
    let open = args.rate.is_some();
    Report {
        mode: if open { "open" } else { "closed" },
        target: target.to_string(),
        connections: args.connections,
        threads: args.threads,
        duration_s: args.duration_s,
        warmup_s: args.warmup_s,
        rate_rps: args.rate,
        close: args.close,
        signed: presigned.is_some(),
        requests: stats.responses(),
        ok_2xx: stats.ok_2xx,
        non_2xx_by_status: stats.non_2xx_by_status.clone(),
        errors: stats.errors(),
        errors_by_kind: stats
            .errors_by_kind
            .iter()
            .map(|(kind, &n)| (kind.name(), n))
            .collect(),
        error_examples: stats
            .error_examples
            .iter()
            .map(|(kind, example)| (kind.name(), example.clone()))
            .collect(),
        elapsed_s,
        rps: per_s(stats.responses()),
        ok_rps: per_s(stats.ok_2xx),
        latency_us: stats.latency.summary(),
        behind_schedule_us: open.then(|| stats.behind_schedule.tail()).flatten(),
        waited_for_connection_us: open.then(|| stats.waited_for_connection.tail()).flatten(),
        presigned,
        presigned_exhausted: outcome.presigned_exhausted,
    }
}
