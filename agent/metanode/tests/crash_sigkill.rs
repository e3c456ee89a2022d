//! Crash safety of the real agent: a put storm over HTTP, SIGKILL at a
//! seeded random moment, restart, and every acknowledged blob must read back
//! intact — many times over, with GC compacting in the middle of it.
//!
//! The seed is printed; `METANODE_CRASH_SEED=<n>` replays a run and
//! `METANODE_CRASH_CYCLES=<n>` changes how many kills it does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

const CLIENTS: u64 = 6;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// The caller owns the child and waits for it after killing it.
#[allow(clippy::zombie_processes)]
fn start_agent(dir: &Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metanode"))
        .args(["agent", "--dev", "--data-dir"])
        .arg(dir)
        .args(["--api-listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn metanode agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http(port, "GET", "/health", &[]) {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent did not become healthy in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Minimal HTTP/1.1 client (one request per connection) so the test needs
/// nothing but std and sees exactly what the agent acknowledged.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut len: Option<usize> = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("eof in headers"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok();
        }
    }
    let mut body = vec![];
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok((status, body))
}

fn blob_for(seed: u64, n: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // Mostly small packed blobs, some that go to their own file.
    let len = match rng.random_range(0..100) {
        0..=84 => rng.random_range(1..8192),
        85..=94 => rng.random_range(8192..200_000),
        _ => rng.random_range(300_000..1_500_000),
    };
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn cid_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("json body");
    v["cid"].as_str().expect("cid field").to_string()
}

#[test]
fn sigkill_during_put_storm_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("METANODE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let cycles: u64 = std::env::var("METANODE_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("crash test seed {seed} ({cycles} cycles): replay with METANODE_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    // (blob number, cid) of every pinned put the agent acknowledged.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let mut next_blob = 0u64;
    for cycle in 0..cycles {
        let port = free_port();
        let mut agent = start_agent(dir.path(), port);
        // Everything acknowledged before any earlier kill must be here.
        for (n, cid) in acked.lock().unwrap().iter() {
            let (status, body) = http(port, "GET", &format!("/ipfs/{cid}?format=raw"), &[])
                .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: get {cid}: {e}"));
            assert_eq!(
                status, 200,
                "seed {seed} cycle {cycle}: acknowledged blob {cid} missing"
            );
            assert!(
                body == blob_for(seed, *n),
                "seed {seed} cycle {cycle}: blob {cid} came back different"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let base = next_blob;
        next_blob += 1_000_000;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (acked, stop) = (acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let n = base + c * 100_000 + i;
                        i += 1;
                        let data = blob_for(seed, n);
                        // Every third put is unpinned churn for GC to collect.
                        let pinned = !n.is_multiple_of(3);
                        let path = if pinned {
                            "/api/v1/blobs"
                        } else {
                            "/api/v1/blobs?pin=false"
                        };
                        match http(port, "POST", path, &data) {
                            Ok((status, body)) if status == 201 || status == 200 => {
                                if pinned {
                                    acked.lock().unwrap().push((n, cid_of(&body)));
                                }
                            }
                            // Killed mid-request: not acknowledged, nothing promised.
                            Ok(_) | Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        let gc = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(60));
                    if http(port, "POST", "/api/v1/gc", &[]).is_err() {
                        break;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        // SAFETY: kill(2) with a pid we spawned and still own (not reaped).
        let rc = unsafe { libc::kill(agent.id() as i32, libc::SIGKILL) };
        assert_eq!(rc, 0);
        agent.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        gc.join().unwrap();
    }
    // Final check with a clean scrub through the CLI.
    let port = free_port();
    let mut agent = start_agent(dir.path(), port);
    let total = acked.lock().unwrap().len();
    assert!(
        total > 50,
        "seed {seed}: only {total} puts acknowledged; the storm did not run"
    );
    for (n, cid) in acked.lock().unwrap().iter() {
        let (status, body) = http(port, "GET", &format!("/ipfs/{cid}?format=raw"), &[]).unwrap();
        assert_eq!(status, 200, "seed {seed}: {cid} missing at the end");
        assert!(
            body == blob_for(seed, *n),
            "seed {seed}: {cid} differs at the end"
        );
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_metanode"))
        .args(["--json", "store", "verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seed {seed}: verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("crash test seed {seed}: {total} acknowledged blobs survived {cycles} SIGKILLs");
}
