//! The cage bench's peers and load tools: nginx (upstream and reverse
//! proxy), wrk (closed-loop throughput), our open-loop generator
//! (`perf`'s http-load), and the netns + trafgen + nftables rig for the drop
//! rate. Kept apart from `cage.rs` so the bench's flow reads top to bottom.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

use crate::process::{self, Outcome};

/// How long a server gets to start answering.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// wrk and http-load get this much beyond their own duration.
const LOAD_SLACK: Duration = Duration::from_secs(30);

/// The upstream's one response body: short, so the proxies' own work
/// dominates (what the comparison is about).
pub const UPSTREAM_BODY: &str = "ok\n";

/// A background server (nginx, our cage) stopped when dropped.
#[derive(Debug)]
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    pub fn spawn(
        name: &'static str,
        port: u16,
        cmd: &mut Command,
        log: PathBuf,
    ) -> anyhow::Result<Server> {
        let child = process::spawn_background(cmd, &log)?;
        let mut server = Server {
            name,
            port,
            log,
            child: Some(child),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Until a GET / answers with any HTTP status line.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited during start-up ({status}); log tail:\n{}",
                    self.name,
                    process::log_tail(&self.log, 20)
                );
            }
            if http_status(self.port, "/").is_ok() {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "{} did not answer on 127.0.0.1:{} within {:?}; log tail:\n{}",
                    self.name,
                    self.port,
                    STARTUP_TIMEOUT,
                    process::log_tail(&self.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = process::stop_background(child, Duration::from_secs(5));
        }
    }
}

/// One plain HTTP/1.1 GET; the status code.
pub fn http_status(port: u16, path: &str) -> anyhow::Result<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = std::str::from_utf8(&head).context("status line is not ASCII")?;
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {text:?}"))
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

pub fn ensure_tool(binary: &str, package: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "{binary} not found: install the Debian package {package} \
         (bash bootstrap/test.sh installs it)"
    )
}

// ------------------------------------------------------------------ nginx

/// Worker processes for nginx: one per core, nginx's own `auto`, which is
/// what an operator deploying it would use.
const NGINX_WORKERS: &str = "auto";

fn nginx_conf(dir: &Path, server_block: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {NGINX_WORKERS};\nuser root;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         keepalive_requests 1000000;\n{server_block}\n}}\n"
    )
}

/// The upstream both proxies forward to: nginx answering every request
/// itself with a 3-byte body.
pub fn nginx_upstream(
    nginx: &Path,
    dir: &Path,
    port: u16,
    cpu: Option<u32>,
) -> anyhow::Result<Server> {
    let dir = dir.join("nginx-upstream");
    std::fs::create_dir_all(&dir)?;
    let server = format!(
        "  server {{ listen 127.0.0.1:{port} reuseport backlog=4096; \
         location / {{ return 200 \"{}\"; }} }}",
        UPSTREAM_BODY.escape_default()
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, &server))?;
    let mut cmd = match cpu {
        Some(cpu) => super::cage::pinned(cpu, nginx),
        None => Command::new(nginx),
    };
    cmd.arg("-p").arg(&dir).arg("-c").arg(&conf);
    Server::spawn("nginx-upstream", port, &mut cmd, dir.join("stderr.log"))
}

/// The peer: nginx as a reverse proxy to the upstream, with an upstream
/// keep-alive pool (what a tuned deployment has; without it nginx opens a
/// connection per request and loses badly, which would flatter us) and
/// `deferred` on its listener: the cage's listener always has
/// TCP_DEFER_ACCEPT, which alone is worth about 10 % to nginx on the
/// new-connection rows here, so nginx gets it too.
///
/// `name` is the instance's name in logs and its directory under `dir`: the
/// full run starts a second, identical one as the open-loop rows' control.
pub fn nginx_proxy(
    nginx: &Path,
    dir: &Path,
    port: u16,
    upstream_port: u16,
    name: &'static str,
) -> anyhow::Result<Server> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let server = format!(
        "  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}\n\
         \x20 server {{ listen 127.0.0.1:{port} reuseport deferred backlog=4096; \
         client_max_body_size 1m; client_header_timeout 10s; keepalive_timeout 60s; \
         location / {{ proxy_pass http://backend; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }}"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, &server))?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p").arg(&dir).arg("-c").arg(&conf);
    Server::spawn(name, port, &mut cmd, dir.join("stderr.log"))
}

pub fn nginx_version(nginx: &Path) -> String {
    // nginx prints its version on stderr.
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default()
}

// -------------------------------------------------------------------- wrk

/// What one wrk run measured (from the Lua `done` hook, as JSON).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub errors_connect: u64,
    pub errors_read: u64,
    pub errors_write: u64,
    pub errors_status: u64,
    pub errors_timeout: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_status
            + self.errors_timeout
    }
}

const WRK_DONE_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

#[derive(Clone, Copy, Debug)]
pub struct WrkRun {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// `Connection: close` on every request: a new TCP connection each.
    pub new_connections: bool,
}

pub fn wrk(wrk: &Path, dir: &Path, port: u16, run: WrkRun) -> anyhow::Result<WrkResult> {
    let script = dir.join("wrk-done.lua");
    std::fs::write(&script, WRK_DONE_LUA)?;
    let mut cmd = Command::new(wrk);
    cmd.arg("-t")
        .arg(run.threads.to_string())
        .arg("-c")
        .arg(run.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", run.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(&script);
    if run.new_connections {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/bench"));
    let json = run_for_json(
        "wrk",
        &mut cmd,
        run.duration + LOAD_SLACK,
        &dir.join("wrk.log"),
    )?;
    serde_json::from_value(json).context("wrk's JSON line")
}

/// Runs a load tool to completion and parses the last line of its stdout
/// that is a JSON object (the tools print their summary last).
fn run_for_json(
    tool: &str,
    cmd: &mut Command,
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<serde_json::Value> {
    let Outcome::Finished(f) = process::run_with_timeout(cmd, timeout, log)? else {
        bail!("{tool} did not finish within {timeout:?}");
    };
    ensure!(
        f.status.success(),
        "{tool} failed ({}): {}",
        f.status,
        process::log_tail(log, 10)
    );
    let line = f
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON line in {tool}'s output:\n{}", f.stdout))?;
    serde_json::from_str(line).with_context(|| format!("parse {tool} JSON {line:?}"))
}

// ---------------------------------------------------------- open-loop load

/// What `http-load --json` prints (perf/src/bin/http-load.rs); fields the
/// bench does not read are kept in the raw JSON.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug)]
pub struct LoadResult {
    pub rps: f64,
    pub requests: u64,
    pub ok_2xx: u64,
    pub errors: u64,
    pub latency_us: LoadLatency,
    pub raw: serde_json::Value,
}

pub fn build_http_load(root: &Path) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "metanode-perf",
        "--bin",
        "http-load",
    ]);
    ensure!(
        process::run_inherited(&mut cmd)?,
        "cargo build --release -p metanode-perf --bin http-load failed"
    );
    Ok(root.join("target/release/http-load"))
}

pub fn http_load(
    bin: &Path,
    dir: &Path,
    port: u16,
    args: &[String],
    duration: Duration,
    cpu: Option<u32>,
) -> anyhow::Result<LoadResult> {
    let mut cmd = match cpu {
        Some(cpu) => super::cage::pinned(cpu, bin),
        None => Command::new(bin),
    };
    cmd.arg("--target")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--path")
        .arg("/bench")
        .arg("--duration-s")
        .arg(duration.as_secs().max(1).to_string())
        .args(args)
        .arg("--json");
    let log = dir.join("http-load.log");
    // The window, pre-signing and drain all fit in twice the duration.
    let raw = run_for_json("http-load", &mut cmd, duration * 2 + LOAD_SLACK, &log)?;
    let num = |k: &str| {
        raw[k]
            .as_f64()
            .with_context(|| format!("http-load JSON has no {k}"))
    };
    Ok(LoadResult {
        rps: num("rps")?,
        requests: num("requests")? as u64,
        ok_2xx: num("ok_2xx")? as u64,
        errors: num("errors")? as u64,
        latency_us: serde_json::from_value(raw["latency_us"].clone())
            .context("http-load JSON latency_us")?,
        raw,
    })
}

// ------------------------------------------------- netns drop-rate rig

/// Two network namespaces joined by a veth pair: the generator's side
/// (`tx`) and the filtering side (`rx`), removed when dropped.
#[derive(Debug)]
pub struct DropRig {
    pub tx_ns: String,
    pub rx_ns: String,
    pub tx_if: String,
    pub rx_if: String,
    pub rx_mac: String,
}

pub const RIG_TX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const RIG_RX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);

/// Runs `cmd` to completion without stdin; an error names `what` and
/// carries the command's stderr.
fn run_ok(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_ok(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
}

impl DropRig {
    pub fn create() -> anyhow::Result<DropRig> {
        let tag = std::process::id() % 100_000;
        let rig = DropRig {
            tx_ns: format!("mncb-tx-{tag}"),
            rx_ns: format!("mncb-rx-{tag}"),
            tx_if: format!("mncbt{tag}"),
            rx_if: format!("mncbr{tag}"),
            rx_mac: String::new(),
        };
        ip(&["netns", "add", &rig.tx_ns])?;
        // From here on, Drop cleans up whatever exists.
        let mut rig = rig;
        ip(&["netns", "add", &rig.rx_ns])?;
        // One queue pair per CPU, like a NIC with RSS: the XDP generator on
        // each CPU redirects into the queue of that CPU, whose NAPI (and so
        // the filter, XDP or nftables) then runs on the same CPU. With one
        // queue every frame would meet at one NAPI on one CPU at a time.
        let queues = cpu_count().to_string();
        let q = ["numtxqueues", &queues, "numrxqueues", &queues];
        ip(&[
            &["link", "add", &rig.tx_if][..],
            &q,
            &["type", "veth", "peer", "name", &rig.rx_if],
            &q,
        ]
        .concat())?;
        ip(&["link", "set", &rig.tx_if, "netns", &rig.tx_ns])?;
        ip(&["link", "set", &rig.rx_if, "netns", &rig.rx_ns])?;
        let tx_cidr = format!("{RIG_TX_ADDR}/24");
        let rx_cidr = format!("{RIG_RX_ADDR}/24");
        ip(&["-n", &rig.tx_ns, "addr", "add", &tx_cidr, "dev", &rig.tx_if])?;
        ip(&["-n", &rig.rx_ns, "addr", "add", &rx_cidr, "dev", &rig.rx_if])?;
        for (ns, ifname) in [(&rig.tx_ns, &rig.tx_if), (&rig.rx_ns, &rig.rx_if)] {
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // A real queue on the sending side: veth with native XDP pushes back
        // (stops its queue) when the peer's ring is full, and with the
        // default noqueue that back-pressure would turn into drops before
        // either filter saw the packet.
        run_ok(
            Command::new("tc")
                .args(["-n", &rig.tx_ns, "qdisc", "replace", "dev", &rig.tx_if])
                .args(["root", "pfifo", "limit", "10000"]),
            &format!("tc qdisc replace on {}", rig.tx_if),
        )?;
        let out = Command::new("ip")
            .args(["-n", &rig.rx_ns, "-j", "link", "show", &rig.rx_if])
            .output()?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)
            .context("parse `ip -j link show` of the receiving veth")?;
        rig.rx_mac = links[0]["address"]
            .as_str()
            .context("no MAC address for the receiving veth")?
            .to_string();
        Ok(rig)
    }

    /// Runs `nft -f -` in the receiving namespace with `ruleset` on stdin.
    pub fn nft(&self, ruleset: &str) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.rx_ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(ruleset.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft rejected the rule set: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// `nft -j list ruleset` in the receiving namespace: the packets counted
    /// by the first counter of the named chain.
    pub fn nft_counter_packets(&self) -> anyhow::Result<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.rx_ns, "nft", "-j", "list", "ruleset"])
            .output()
            .context("nft list ruleset")?;
        ensure!(out.status.success(), "nft list ruleset failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let items = v["nftables"].as_array().context("nft JSON has no items")?;
        let mut packets = 0u64;
        for item in items {
            if let Some(exprs) = item["rule"]["expr"].as_array() {
                for e in exprs {
                    if let Some(p) = e["counter"]["packets"].as_u64() {
                        packets += p;
                    }
                }
            }
        }
        Ok(packets)
    }

    pub fn nft_flush(&self) -> anyhow::Result<()> {
        self.nft("flush ruleset\n")
    }

    /// Sends `packets` 60-byte UDP frames from `source` to the receiving
    /// side and returns the wall time. The generator is ours: AF_PACKET
    /// sockets bound to the sending veth, `sendmmsg` in batches, one thread
    /// per CPU, a full device queue (EAGAIN/ENOBUFS) retried, never counted
    /// as sent. (trafgen's TX_RING mode gives up on the first EAGAIN, which
    /// veth returns whenever its ring is full.)
    pub fn send(&self, sources: &[Ipv4Addr], packets: u64) -> anyhow::Result<Duration> {
        ensure!(!sources.is_empty(), "no source addresses to send from");
        let frames = sources
            .iter()
            .map(|s| ethernet_udp_frame(&self.rx_mac, *s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ns_path = format!("/var/run/netns/{}", self.tx_ns);
        let ifname = self.tx_if.clone();
        let started = Instant::now();
        let workers: Vec<_> = shares_per_cpu(packets)
            .into_iter()
            .map(|share| {
                let (ns_path, ifname, frames) = (ns_path.clone(), ifname.clone(), frames.clone());
                std::thread::spawn(move || raw_send(&ns_path, &ifname, &frames, share))
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a sender thread panicked"))??;
        }
        Ok(started.elapsed())
    }

    /// Sends `packets` frames with the XDP live-frames generator
    /// (`metanode_ebpf::LiveGenerator`): one thread pinned to each CPU in
    /// the sending namespace, sources cycling over host .9 of
    /// `sources_count` /24s from `base`. Returns the wall time from the
    /// threads' common start (generators loaded) to the last one's end.
    /// Frames reach the receiving veth as xdp_frames in the queue of the
    /// sending CPU; count what the filter saw (a full ring loses frames).
    pub fn send_live(
        &self,
        base: Ipv4Addr,
        sources_count: u32,
        packets: u64,
    ) -> anyhow::Result<Duration> {
        let frame = ethernet_udp_frame(&self.rx_mac, base)?;
        let shares = shares_per_cpu(packets);
        let start = std::sync::Arc::new(std::sync::Barrier::new(shares.len() + 1));
        let workers: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(i, share)| {
                let share = u32::try_from(share).context("more than 2^32 frames per thread")?;
                let ns_path = format!("/var/run/netns/{}", self.tx_ns);
                let (ifname, frame, start) = (self.tx_if.clone(), frame.clone(), start.clone());
                Ok(std::thread::spawn(move || -> anyhow::Result<()> {
                    // Loaded before the common start: verifying and JITing
                    // is not sending. Thread i on CPU i feeds queue i.
                    let ready = pin_to_cpu(i)
                        .and_then(|()| enter_netns(&ns_path))
                        .and_then(|()| ifindex_of(&ifname))
                        .and_then(|ifindex| {
                            metanode_ebpf::LiveGenerator::load(ifindex, &frame, base, sources_count)
                                .with_context(|| format!("load the XDP generator for {ifname}"))
                        });
                    start.wait();
                    ready?
                        .run(share)
                        .with_context(|| format!("XDP live-frames generator on {ifname}"))
                }))
            })
            .collect::<anyhow::Result<_>>()?;
        start.wait();
        let started = Instant::now();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok(started.elapsed())
    }

    /// GRO (and with it NAPI) on the receiving veth: without an XDP program
    /// there, veth accepts redirected frames only with NAPI on.
    pub fn rx_gro(&self, on: bool) -> anyhow::Result<()> {
        let state = if on { "on" } else { "off" };
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.rx_ns, "ethtool", "-K", &self.rx_if])
                .args(["gro", state]),
            &format!(
                "ethtool -K {} gro {state} (apt-get install ethtool)",
                self.rx_if
            ),
        )
    }
}

/// Ethernet + IPv4 + UDP, 60 bytes (64 on the wire with the FCS): the
/// small-packet case where per-packet cost is everything.
fn ethernet_udp_frame(dest_mac: &str, source: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
    let mac: Vec<u8> = dest_mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC address {dest_mac:?}"))?;
    ensure!(mac.len() == 6, "MAC address {dest_mac:?} is not 6 bytes");
    let mut f = super::cage_xdp::udp_frame(source, RIG_RX_ADDR);
    f[..6].copy_from_slice(&mac);
    Ok(f)
}

/// The CPUs the senders run on, one thread each.
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `packets` split over one sender thread per CPU, the first ones taking
/// the remainder.
fn shares_per_cpu(packets: u64) -> Vec<u64> {
    let threads = cpu_count() as u64;
    (0..threads)
        .map(|i| packets / threads + u64::from(i < packets % threads))
        .collect()
}

/// Moves the calling thread into the network namespace at `ns_path`
/// (network namespaces are per thread).
pub fn enter_netns(ns_path: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(ns_path).with_context(|| format!("open {ns_path}"))?;
    // SAFETY: setns(2) on a namespace fd we own; affects this thread only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(
        rc == 0,
        "setns {ns_path}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Keeps the calling thread on `cpu`.
fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data, valid zeroed; CPU_SET stays within it
    // for cpu < CPU_SETSIZE, which the caller's CPU count is.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    ensure!(
        rc == 0,
        "pin to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The index of `ifname` in the calling thread's network namespace.
fn ifindex_of(ifname: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(
        ifindex != 0,
        "no interface {ifname} in this network namespace"
    );
    Ok(ifindex)
}

/// Sends `count` frames cycling through `frames` (one source address each).
fn raw_send(ns_path: &str, ifname: &str, frames: &[Vec<u8>], count: u64) -> anyhow::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const BATCH: usize = 64;
    enter_netns(ns_path)?;
    let ifindex = ifindex_of(ifname)?;
    // Protocol 0: a send-only packet socket. With ETH_P_ALL every sender
    // thread would also receive a copy of every other thread's frames.
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    let addr_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: bind with a valid sockaddr_ll of the given length.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), addr_len) };
    ensure!(
        rc == 0,
        "bind AF_PACKET to {ifname}: {}",
        std::io::Error::last_os_error()
    );
    // One iovec per frame, one header per batch slot pointing at the frame
    // its slot cycles to; the iovecs outlive every sendmmsg call below (the
    // kernel only reads them).
    let mut iovs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let batch = BATCH.max(1);
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| {
            // SAFETY: an all-zero mmsghdr (null pointers, zero lengths) is a
            // valid value of this plain C struct.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut next_frame = 0usize;
    let mut sent = 0u64;
    let mut stalls = 0u64;
    while sent < count {
        let n = (count - sent).min(batch as u64) as u32;
        for m in msgs.iter_mut().take(n as usize) {
            m.msg_hdr.msg_iov = &raw mut iovs[next_frame];
            next_frame = (next_frame + 1) % iovs.len();
        }
        // SAFETY: msgs holds at least n initialised headers whose iov
        // pointers point into `iovs`, alive for the call.
        let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n, 0) };
        if rc > 0 {
            sent += rc as u64;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => {
                stalls += 1;
                ensure!(
                    stalls < 50_000_000,
                    "the device queue never drained ({err})"
                );
                std::thread::yield_now();
            }
            _ => return Err(err).with_context(|| format!("sendmmsg on {ifname}")),
        }
    }
    Ok(())
}

impl Drop for DropRig {
    fn drop(&mut self) {
        for ns in [&self.tx_ns, &self.rx_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
