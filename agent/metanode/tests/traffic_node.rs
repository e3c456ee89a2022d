//! One node config, one BISO policy, enforced in two places: the agent
//! attaches the XDP traffic lights to a veth and runs the HTTP Cage, both
//! from its `traffic:` section. Traffic comes from a network namespace this
//! test creates, from a green, a red and a yellow source address. Needs root
//! (XDP, namespaces); without it the test prints why it skipped.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Agent, get};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

const GREEN: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 2);
const RED: Ipv4Addr = Ipv4Addr::new(10, 78, 2, 2);
const YELLOW: Ipv4Addr = Ipv4Addr::new(10, 78, 3, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// A loopback source the policy blocks: loopback has no XDP program, so
/// only the cage can refuse it (the cage's own red light).
const RED_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// A loopback source in the pending region: yellow in the cage.
const YELLOW_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace joined to the host by a veth pair; removed on drop (which
/// also removes the host end and anything attached to it).
struct Netns {
    name: String,
    host_if: String,
    pin_dir: PathBuf,
}

impl Netns {
    fn create() -> Netns {
        let tag = std::process::id() % 100_000;
        let name = format!("mntraffic-{tag}");
        let host_if = format!("mnth{tag}");
        // Leftovers of a killed earlier run with the same tag go first.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &host_if])
            .stderr(std::process::Stdio::null())
            .status();
        // The guard exists before anything is created, so a failing step
        // still removes what the earlier ones made.
        let ns = Netns {
            name,
            host_if,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/metanode-test-{tag}")),
        };
        let peer = format!("mntp{tag}");
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{HOST}/16"), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        for a in [GREEN, RED, YELLOW] {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{a}/16"),
                "dev",
                &peer,
            ]);
        }
        ip(&["-n", &ns.name, "link", "set", &peer, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that has entered the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace fd we own, affecting only this
            // thread (network namespaces are per thread).
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// One GET through the cage from `source`; the status, or None when no
/// connection could be made (the SYN was dropped).
fn get_from(source: Ipv4Addr, to: SocketAddr) -> Option<u16> {
    let text = get_hello(socket2_connect(source, to)?)?;
    text.get(9..12)?.parse().ok()
}

/// `GET /hello` on `s` (the connection closes after it); the whole answer.
fn get_hello(mut s: TcpStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /hello HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// One GET through the cage over loopback; its `Metanode-Receipt` header.
fn receipt_header_of_get(to: SocketAddr) -> String {
    let text = get_hello(TcpStream::connect(to).expect("connect to the cage"))
        .expect("an answer from the cage");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("metanode-receipt: ")
                .or_else(|| l.strip_prefix("Metanode-Receipt: "))
        })
        .unwrap_or_else(|| panic!("no Metanode-Receipt header in:\n{text}"))
        .trim()
        .to_string()
}

/// connect() from a bound source address with a bounded wait.
fn socket2_connect(source: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    // std has no bind-before-connect; do it with libc.
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned by the TcpStream below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh socket we own; from_raw_fd takes ownership.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = sockaddr(SocketAddrV4::new(source, 0));
    let SocketAddr::V4(remote) = to else {
        panic!("ipv4 only")
    };
    let remote = sockaddr(remote);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid sockaddr_in of the given length for our socket.
    let rc = unsafe { libc::bind(fd, (&raw const local).cast(), len) };
    assert_eq!(rc, 0, "bind {source}: {}", std::io::Error::last_os_error());
    // A dropped SYN would retry for minutes: bound the connect with
    // TCP_SYNCNT (1 retry: about 3 s) instead of a non-blocking dance.
    let syn_count: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int value on our socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&raw const syn_count).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // SAFETY: as for bind.
    let rc = unsafe { libc::connect(fd, (&raw const remote).cast(), len) };
    (rc == 0).then_some(stream)
}

/// A one-line HTTP upstream on loopback: answers every request "ok".
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn write_files(dir: &Path, ns: &Netns, cage_port: u16, upstream: SocketAddr) -> PathBuf {
    let policy = dir.join("biso.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nmode: normal\n\
             data: {{ class: General, purposes: [test], encryption: {{ in_transit: true, at_rest: true }}, retention_days_max: 30 }}\n\
             regions:\n\
             \x20 - {{ cidr: 10.78.0.0/24, region: host }}\n\
             \x20 - {{ cidr: 10.78.1.0/24, region: green-land }}\n\
             \x20 - {{ cidr: 10.78.2.0/24, region: blocked-land }}\n\
             \x20 - {{ cidr: 10.78.3.0/24, region: pending-land }}\n\
             \x20 - {{ cidr: 127.0.0.0/8, region: host }}\n\
             \x20 - {{ cidr: {RED_LOOPBACK}/32, region: blocked-land }}\n\
             \x20 - {{ cidr: {YELLOW_LOOPBACK}/32, region: pending-land }}\n\
             unknown_region: unknown\n\
             blocked_regions: [blocked-land]\n\
             consent: {{ pending-land: pending }}\n\
             yellow: {{ rate_per_s: 1, burst: 2, sample_one_in: 1 }}\n"
        ),
    )
    .expect("write policy");
    let cage = dir.join("cage.yaml");
    std::fs::write(
        &cage,
        format!(
            "listen: 0.0.0.0:{cage_port}\nroutes:\n  - {{ path_prefix: /, upstream: \"{upstream}\", unsigned: allow-with-receipt }}\n\
             receipts: {{ path: {}, response_header: true }}\n",
            dir.join("receipts.log").display()
        ),
    )
    .expect("write cage config");
    // The cage config goes in as a blob of the node's store, named by CID
    // (how an appliance with no shell gets one); the policy stays a file,
    // which the SIGHUP reload below rewrites.
    let put = common::cli(
        &[
            "--json",
            "store",
            "put",
            "--data-dir",
            dir.join("data").to_str().expect("utf-8"),
            cage.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(put.status.success(), "store put: {put:?}");
    let put: serde_json::Value = serde_json::from_slice(&put.stdout).expect("store put JSON");
    let cage = format!("/ipfs/{}", put["cid"].as_str().expect("cid"));
    let config = dir.join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "node:\n  name: traffic-test\n  data_dir: {}\n\
             traffic:\n  policy: {}\n  xdp_interfaces: [{}]\n  xdp_mode: native\n  xdp_pin_dir: {}\n  cage: {}\n",
            dir.join("data").display(),
            policy.display(),
            ns.host_if,
            ns.pin_dir.display(),
            cage
        ),
    )
    .expect("write node config");
    config
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start:?} in:\n{text}"))
}

#[test]
fn one_policy_enforced_at_xdp_and_in_the_cage() {
    if !is_root() {
        eprintln!("skipped: needs root (XDP and network namespaces)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ns = Netns::create();
    let cage_port = free_port();
    let config = write_files(tmp.path(), &ns, cage_port, upstream());
    let config_arg = config.to_str().expect("utf-8").to_string();
    let agent = Agent::start_args(
        &["agent", "--config", &config_arg],
        &tmp.path().join("data"),
    );
    let cage = SocketAddr::from((HOST, cage_port));

    // Green: through XDP and the cage to the upstream.
    let status = ns.run(move || get_from(GREEN, cage));
    assert_eq!(status, Some(200), "green source; log:\n{}", agent.log());
    // Red at XDP: the SYN never arrives, so no connection at all.
    let status = ns.run(move || get_from(RED, cage));
    assert_eq!(status, None, "red source must not connect");
    // Red in the cage: loopback has no XDP, the cage's light refuses.
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, cage_port));
    assert_eq!(get_from(RED_LOOPBACK, loopback), Some(403));
    assert_eq!(get_from(Ipv4Addr::LOCALHOST, loopback), Some(200));
    // Yellow at XDP: 1 packet/s, burst 2 per source. 20 UDP datagrams
    // sent back to back: most are limited.
    ns.run(move || {
        // Buckets are per CPU: one CPU, one bucket, a known budget.
        // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes in
        // bounds; sched_setaffinity(0, …) affects this thread only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let s = UdpSocket::bind((YELLOW, 0)).expect("bind yellow");
        for _ in 0..20 {
            let _ = s.send_to(b"yellow", (HOST, 9));
        }
    });

    let r = get(agent.addr, "/metrics/traffic");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("utf-8");
    assert!(
        metric(
            &text,
            "metanode_xdp_packets_total{light=\"red\",outcome=\"drop\"}"
        ) >= 1,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "metanode_xdp_packets_total{light=\"green\",outcome=\"pass\"}"
        ) >= 3,
        "{text}"
    );
    let limited = metric(
        &text,
        "metanode_xdp_packets_total{light=\"yellow\",outcome=\"limited\"}",
    );
    let passed = metric(
        &text,
        "metanode_xdp_packets_total{light=\"yellow\",outcome=\"pass\"}",
    );
    assert_eq!(limited + passed, 20, "{text}");
    assert!(limited >= 20 - 2, "limited {limited}: {text}");
    assert!(
        metric(
            &text,
            "metanode_cage_requests_total{decision=\"forwarded\"}"
        ) >= 2,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "metanode_cage_requests_total{decision=\"red_light\"}"
        ) >= 1,
        "{text}"
    );

    // The node generated its key; the decision log holds the signed policy.
    let key_file = tmp.path().join("data/node.key");
    let key = metanode_core::keys::SigningKeyFile::new(&key_file)
        .load()
        .expect("the node generated its key");
    let signer = key.public_key().to_string();
    let log = tmp.path().join("data/biso/decisions.log");
    // None while the agent is mid-append (a torn tail fails verification).
    let entries = |log: &Path| {
        let out = common::cli(
            &[
                "--json",
                "biso",
                "verify-log",
                log.to_str().expect("utf-8"),
                "--signer",
                &signer,
            ],
            None,
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["entries"].as_u64())
    };
    assert_eq!(entries(&log), Some(1));

    // A client holding a response's Metanode-Receipt header gets the proof
    // from the node's API and checks it with the node key alone.
    let header = receipt_header_of_get(loopback);
    let api = format!("http://{}", agent.addr);
    let proof_file = tmp.path().join("receipt.proof");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let verified = loop {
        // The batch is written within flush_interval_ms (200) of the
        // request; until then the API answers 404 and the CLI fails.
        let out = common::cli(
            &[
                "--json",
                "cage",
                "verify-receipt",
                "--api",
                &api,
                "--signer",
                &signer,
                &header,
                "--save",
                proof_file.to_str().expect("utf-8"),
            ],
            None,
        );
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "verify-receipt kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let receipt_hash = header.split(';').next().expect("hash").trim();
    assert_eq!(verified["receipt_hash"], receipt_hash, "{verified}");
    assert_eq!(verified["decision"], "forwarded", "{verified}");
    assert_eq!(verified["status"], 200, "{verified}");
    assert_eq!(verified["client_ip"], "127.0.0.1", "{verified}");
    // The JSON route names the batch's blob, and the saved proof checks
    // offline; with another key it does not.
    let batch_index = verified["batch_index"].as_u64().expect("batch_index");
    let r = get(
        agent.addr,
        &format!("/api/v1/cage/receipts/{receipt_hash}?batch={batch_index}"),
    );
    assert_eq!(r.status, 200);
    let shown: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let proof_batch_cid = shown["batch_cid"].as_str().expect("batch_cid").to_string();
    let offline = |signer: &str| {
        common::cli(
            &[
                "cage",
                "verify-receipt",
                "--proof",
                proof_file.to_str().expect("utf-8"),
                "--signer",
                signer,
                &header,
            ],
            None,
        )
    };
    assert!(offline(&signer).status.success());
    let stranger = metanode_core::keys::SigningKey::from_seed(&[9; 32])
        .public_key()
        .to_string();
    let refused = offline(&stranger);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not by the expected node key"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Before the reload, the pending region is yellow in the cage: served
    // (or 429 once its 2-request burst is spent), never 403.
    let before = get_from(YELLOW_LOOPBACK, loopback);
    assert!(matches!(before, Some(200 | 429)), "{before:?}");

    // SIGHUP with a changed policy: pending-land is now blocked. The new
    // policy is signed into the log and swapped into XDP and the cage.
    let policy = tmp.path().join("biso.yaml");
    let text = std::fs::read_to_string(&policy).expect("read policy");
    std::fs::write(
        &policy,
        text.replace(
            "blocked_regions: [blocked-land]",
            "blocked_regions: [blocked-land, pending-land]",
        ),
    )
    .expect("rewrite policy");
    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while entries(&log).unwrap_or(0) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged; agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The entry is written just before the maps and the cage are swapped:
    // poll for the swap's effects, bounded.
    let red_drops = || {
        let r = get(agent.addr, "/metrics/traffic");
        metric(
            &String::from_utf8(r.body).expect("utf-8"),
            "metanode_xdp_packets_total{light=\"red\",outcome=\"drop\"}",
        )
    };
    loop {
        let red_before = red_drops();
        ns.run(move || {
            let s = UdpSocket::bind((YELLOW, 0)).expect("bind yellow");
            for _ in 0..5 {
                let _ = s.send_to(b"now red", (HOST, 9));
            }
        });
        if red_drops() >= red_before + 5 && get_from(YELLOW_LOOPBACK, loopback) == Some(403) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reloaded policy did not reach XDP and the cage; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = ns.run(move || get_from(GREEN, cage));
    assert_eq!(status, Some(200), "green is untouched by the reload");
    assert!(agent.stop().success());

    // Every receipt batch of the cage is also a pinned blob of the node's
    // store, byte for byte the signed batch of the receipt file.
    let receipts = std::fs::read(tmp.path().join("receipts.log")).expect("receipt file");
    let data_dir = tmp.path().join("data");
    let blobs = common::cli_json(&[
        "store",
        "ls",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
    ]);
    let pinned: std::collections::HashSet<String> = blobs["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .filter(|b| b["pinned"].as_bool() == Some(true))
        .filter_map(|b| b["cid"].as_str().map(str::to_string))
        .collect();
    let mut at = 8;
    let mut batches = 0;
    let mut batch_cids: Vec<String> = Vec::new();
    while at < receipts.len() {
        let len = u32::from_le_bytes(receipts[at..at + 4].try_into().expect("4 bytes")) as usize;
        let signed_batch = &receipts[at + 4..at + 4 + len];
        let cid = metanode_core::cid::ContentId::raw_blake3_of(signed_batch).to_string();
        assert!(
            pinned.contains(&cid),
            "receipt batch {batches} ({cid}) is not a pinned blob; blobs: {blobs}"
        );
        let stored = common::cli_ok(
            &[
                "store",
                "get",
                "--data-dir",
                data_dir.to_str().expect("utf-8"),
                &cid,
            ],
            None,
        );
        assert!(
            stored == signed_batch,
            "blob {cid} differs from batch {batches}"
        );
        batch_cids.push(cid);
        at += 4 + len;
        batches += 1;
    }
    assert!(batches >= 1, "the cage wrote no receipt batch");
    // The CLI lists the same CIDs, batch by batch, after verifying the file.
    let listed = common::cli_json(&[
        "cage",
        "verify-receipts",
        tmp.path().join("receipts.log").to_str().expect("utf-8"),
        "--signer",
        &signer,
        "--cids",
    ]);
    let listed: Vec<String> = listed["batch_cids"]
        .as_array()
        .expect("batch_cids")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, batch_cids);
    assert!(
        batch_cids.contains(&proof_batch_cid),
        "the API's batch_cid {proof_batch_cid} is not a batch of the file"
    );

    // The agent is gone, the pinned XDP link is not: red is still dropped.
    let l = TcpListener::bind((HOST, 0)).expect("bind host listener");
    let after = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            drop(c);
        }
    });
    assert!(
        ns.run(move || socket2_connect(RED, after)).is_none(),
        "red must stay dropped after the agent exits"
    );
    assert!(
        ns.run(move || socket2_connect(GREEN, after)).is_some(),
        "green still passes"
    );

    // The node starts again on a config without `traffic:` (a reverted
    // trial's, say): it releases the link it recorded, and red connects.
    let plain = tmp.path().join("node-plain.yaml");
    std::fs::write(
        &plain,
        format!(
            "node:\n  name: traffic-test\n  data_dir: {}\n",
            data_dir.display()
        ),
    )
    .expect("write plain config");
    let agent = Agent::start_args(
        &["agent", "--config", plain.to_str().expect("utf-8")],
        &data_dir,
    );
    // The kernel frees an unpinned link from a workqueue: poll, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ns.run(move || socket2_connect(RED, after)).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "red is still dropped under a config without XDP; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!ns.pin_dir.join("links").join(&ns.host_if).exists());
    let record = std::fs::read_to_string(data_dir.join("biso/xdp-links")).unwrap_or_default();
    assert_eq!(record, "", "the record still lists links");
    let log = agent.log();
    let status = agent.stop();
    assert!(status.success(), "{status:?}; log:\n{log}");
}

/// A listed interface that does not exist stops the node with an error
/// naming it (after the bounded attach retry), and nothing is left pinned.
#[test]
fn an_interface_that_does_not_exist_is_named() {
    if !is_root() {
        eprintln!("skipped: needs root (bpffs)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = tmp.path().join("biso.yaml");
    std::fs::write(
        &policy,
        "version: 1\nmode: normal\n\
         data: { class: General, purposes: [test], encryption: { in_transit: true, at_rest: true }, retention_days_max: 30 }\n\
         regions: []\nunknown_region: anywhere\n\
         yellow: { rate_per_s: 1, burst: 1, sample_one_in: 0 }\n",
    )
    .expect("write policy");
    let pin_dir = format!("/sys/fs/bpf/metanode-test-noif-{}", std::process::id());
    let config = tmp.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "node:\n  name: noif\n  data_dir: {}\n\
             traffic:\n  policy: {}\n  xdp_interfaces: [mnt-no-such0]\n  xdp_pin_dir: {pin_dir}\n",
            tmp.path().join("data").display(),
            policy.display()
        ),
    )
    .expect("write config");
    let out = common::cli(
        &[
            "agent",
            "--config",
            config.to_str().expect("utf-8"),
            "--api-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the node started: {stderr}");
    assert!(
        stderr.contains("attaching XDP to mnt-no-such0 (traffic.xdp_interfaces)"),
        "{stderr}"
    );
    assert!(!Path::new(&pin_dir).join("links/mnt-no-such0").exists());
    let _ = std::fs::remove_dir_all(&pin_dir);
}
