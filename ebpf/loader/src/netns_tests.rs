//! A real attach on a veth inside test-made network namespaces, with UDP
//! traffic from three source addresses in another namespace (needs root).

use std::{
    collections::BTreeMap,
    fs::File,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use metanode_biso::compiled::Verdict;

use crate::{
    AttachMode, TrafficLights,
    lights_tests::{green, policy, red, rule},
};

const RX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GREEN_SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const YELLOW_SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
const RED_SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 12);
const PORT: u16 = 9999;
const MARKER: &[u8] = b"end";
/// Safety net so a broken test fails instead of hanging; never asserted on.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair; removed (with any pin directory)
/// on drop, also when the test panics.
struct Netns {
    rx: String,
    tx: String,
    rx_if: String,
    tx_if: String,
    pin_dir: Option<PathBuf>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        let id = (std::process::id() % 100_000) * 10 + NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ns = Netns {
            rx: format!("mnbiso-rx-{id}"),
            tx: format!("mnbiso-tx-{id}"),
            rx_if: format!("mbr{id}"),
            tx_if: format!("mbt{id}"),
            pin_dir: None,
        };
        let tx_if = ns.tx_if.clone();
        ip(&["netns", "add", &ns.rx]);
        ip(&["netns", "add", &ns.tx]);
        // No IPv6 on the veths: their start-up traffic (DAD, MLD, router
        // solicitations) would be judged and counted during the tests.
        for netns in [&ns.rx, &ns.tx] {
            let out = Command::new("ip")
                .args(["netns", "exec", netns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ])
                .output()
                .expect("run sysctl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ip(&[
            "link", "add", &tx_if, "netns", &ns.tx, "type", "veth", "peer", "name", &ns.rx_if,
            "netns", &ns.rx,
        ]);
        for src in [GREEN_SRC, YELLOW_SRC, RED_SRC] {
            ip(&[
                "-n",
                &ns.tx,
                "addr",
                "add",
                &format!("{src}/24"),
                "dev",
                &tx_if,
            ]);
        }
        ip(&[
            "-n",
            &ns.rx,
            "addr",
            "add",
            &format!("{RX_ADDR}/24"),
            "dev",
            &ns.rx_if,
        ]);
        ip(&["-n", &ns.tx, "link", "set", &tx_if, "up"]);
        ip(&["-n", &ns.rx, "link", "set", &ns.rx_if, "up"]);
        ns
    }

    fn enter(name: &str) {
        let file = File::open(format!("/run/netns/{name}")).expect("open netns");
        // SAFETY: a valid namespace fd; setns only changes this thread's
        // network namespace (tests run it on a thread of their own).
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in [&self.rx, &self.tx] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
        if let Some(dir) = &self.pin_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

struct Senders {
    by_source: BTreeMap<Ipv4Addr, UdpSocket>,
    rx: UdpSocket,
}

impl Senders {
    /// Sockets of the three sources, created in the sender namespace, and
    /// the receiver's socket in the receiver namespace. Leaves the thread in
    /// the receiver namespace.
    fn new(ns: &Netns) -> Senders {
        Netns::enter(&ns.rx);
        let rx = UdpSocket::bind((RX_ADDR, PORT)).expect("bind receiver");
        rx.set_read_timeout(Some(RECV_TIMEOUT)).expect("timeout");
        Netns::enter(&ns.tx);
        let mut by_source = BTreeMap::new();
        for src in [GREEN_SRC, YELLOW_SRC, RED_SRC] {
            let socket = UdpSocket::bind((src, 0)).expect("bind sender");
            socket.connect((RX_ADDR, PORT)).expect("connect");
            by_source.insert(src, socket);
        }
        Netns::enter(&ns.rx);
        Senders { by_source, rx }
    }

    /// Sends `count` datagrams from each source, then a marker from
    /// `marker_src` (which must be passing), and counts what arrived per
    /// source until the marker (the veth keeps order).
    fn round(&self, count: u32, marker_src: Ipv4Addr) -> BTreeMap<Ipv4Addr, u32> {
        for socket in self.by_source.values() {
            for _ in 0..count {
                socket.send(b"data").expect("send");
            }
        }
        self.by_source[&marker_src]
            .send(MARKER)
            .expect("send marker");
        let mut arrived = BTreeMap::new();
        let mut buf = [0u8; 64];
        loop {
            let (len, from) = self.rx.recv_from(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "no marker from {marker_src} within {RECV_TIMEOUT:?} ({e}); \
                     arrived before it: {arrived:?}"
                )
            });
            let SocketAddr::V4(from) = from else { continue };
            if &buf[..len] == MARKER {
                return arrived;
            }
            *arrived.entry(*from.ip()).or_insert(0) += 1;
        }
    }

    fn arrived_from(map: &BTreeMap<Ipv4Addr, u32>, src: Ipv4Addr) -> u32 {
        map.get(&src).copied().unwrap_or(0)
    }
}

/// Waits until no XDP program is attached to `ifname` (in the calling
/// thread's namespace). The kernel frees a link whose last reference went
/// (its pin unlinked, its fd closed) from a workqueue, so packets sent
/// right after an unpin may still meet the program.
fn wait_xdp_detached(ifname: &str) {
    let deadline = std::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let out = Command::new("ip")
            .args(["link", "show", "dev", ifname])
            .output()
            .expect("run ip");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ip link show dev {ifname}: {text}");
        if !text.contains("xdp") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "XDP still attached to {ifname} after {RECV_TIMEOUT:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn in_thread(f: impl FnOnce() + Send + 'static) {
    // A thread of its own: setns must not move the test harness's threads.
    std::thread::spawn(f)
        .join()
        .expect("netns test thread panicked");
}

fn lights_policy(version: u64, cpus: u32, swap: bool) -> metanode_biso::compiled::CompiledPolicy {
    // Rate 0: the yellow source gets exactly its burst, 4 packets per CPU.
    let yellow = rule(Verdict::Yellow, 0, 4 * cpus, 0, 2);
    let (g, r) = if swap {
        (RED_SRC, GREEN_SRC)
    } else {
        (GREEN_SRC, RED_SRC)
    };
    policy(
        version,
        green(),
        &[
            (&format!("{g}/32"), green()),
            (&format!("{YELLOW_SRC}/32"), yellow),
            (&format!("{r}/32"), red()),
        ],
        &[],
    )
}

#[test]
fn veth_green_arrives_red_dropped_yellow_limited_and_swap_under_traffic() {
    in_thread(|| {
        let ns = Netns::new();
        let senders = Senders::new(&ns);
        let mut lights = TrafficLights::load(None).expect("load");
        let cpus = lights.possible_cpus();
        lights
            .attach(&ns.rx_if, AttachMode::Native)
            .expect("attach native XDP to veth");
        // Before any policy: everything passes (and resolves ARP).
        let warm = senders.round(0, GREEN_SRC);
        assert!(warm.is_empty());
        lights
            .apply(&lights_policy(1, cpus, false))
            .expect("apply v1");

        let before = lights.counters().expect("counters");
        let got = senders.round(50, GREEN_SRC);
        let after = lights.counters().expect("counters");
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 50, "{got:?}");
        assert_eq!(Senders::arrived_from(&got, RED_SRC), 0, "{got:?}");
        let yellow = Senders::arrived_from(&got, YELLOW_SRC);
        assert!(
            (4..=4 * cpus).contains(&yellow),
            "yellow arrived {yellow}, burst 4 per CPU"
        );
        assert_eq!(after.red_packets - before.red_packets, 50);
        assert_eq!(
            after.yellow_pass_packets - before.yellow_pass_packets,
            u64::from(yellow)
        );
        assert_eq!(
            after.yellow_limited_packets - before.yellow_limited_packets,
            50 - u64::from(yellow)
        );
        assert!(after.green_packets - before.green_packets >= 51);

        // Swap under the same attach: the green and red sources trade places.
        lights
            .apply(&lights_policy(2, cpus, true))
            .expect("apply v2");
        let got = senders.round(20, RED_SRC);
        let swapped = lights.counters().expect("counters");
        assert_eq!(Senders::arrived_from(&got, RED_SRC), 20, "{got:?}");
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 0, "{got:?}");
        assert_eq!(
            swapped.red_packets - after.red_packets,
            20,
            "counters keep counting across the swap"
        );

        // Detached: nothing is filtered any more.
        lights.detach(&ns.rx_if).expect("detach");
        let got = senders.round(10, GREEN_SRC);
        assert_eq!(Senders::arrived_from(&got, RED_SRC), 10, "{got:?}");
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 10, "{got:?}");
        assert_eq!(
            lights.counters().expect("counters").red_packets,
            swapped.red_packets
        );
    });
}

#[test]
fn pinned_program_keeps_enforcing_after_the_loader_is_dropped() {
    in_thread(|| {
        let mut ns = Netns::new();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/metanode-test-{}", ns.rx));
        ns.pin_dir = Some(pin_dir.clone());
        let senders = Senders::new(&ns);

        let mut lights = TrafficLights::load(Some(&pin_dir)).expect("load pinned");
        let cpus = lights.possible_cpus();
        lights
            .attach(&ns.rx_if, AttachMode::Native)
            .expect("attach");
        lights
            .apply(&lights_policy(1, cpus, false))
            .expect("apply v1");
        let link_pin = pin_dir.join("links").join(&ns.rx_if);
        assert!(link_pin.exists(), "link pinned at {}", link_pin.display());
        drop(lights);

        // No loader in this process any more; the pinned link still filters.
        let got = senders.round(30, GREEN_SRC);
        assert_eq!(Senders::arrived_from(&got, RED_SRC), 0, "{got:?}");
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 30, "{got:?}");

        // A new loader sees the same maps: counters and the live policy.
        let mut lights = TrafficLights::load(Some(&pin_dir)).expect("reload pinned");
        let counters = lights.counters().expect("counters");
        assert_eq!(counters.red_packets, 30);
        lights
            .attach(&ns.rx_if, AttachMode::Native)
            .expect("re-attach via pinned link");
        let report = lights
            .apply(&lights_policy(2, cpus, true))
            .expect("apply v2");
        assert_eq!(report.previous_version, Some(1));
        let got = senders.round(10, RED_SRC);
        assert_eq!(Senders::arrived_from(&got, RED_SRC), 10, "{got:?}");
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 0, "{got:?}");
        assert_eq!(lights.counters().expect("counters").red_packets, 40);

        lights.detach(&ns.rx_if).expect("detach");
        assert!(!link_pin.exists());
        wait_xdp_detached(&ns.rx_if);
        let got = senders.round(5, GREEN_SRC);
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 5, "{got:?}");
        assert!(Path::new(&pin_dir).join("maps").join("biso_ctl").exists());

        // A link pinned by an earlier process whose interface is no longer
        // wanted (a reverted config trial) is released without a loader.
        lights
            .attach(&ns.rx_if, AttachMode::Native)
            .expect("attach again");
        drop(lights);
        // Policy v2 is live: green's source is the red one now.
        let got = senders.round(5, RED_SRC);
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 0, "{got:?}");
        assert!(crate::unpin_link(&pin_dir, &ns.rx_if).expect("unpin"));
        assert!(!link_pin.exists());
        wait_xdp_detached(&ns.rx_if);
        let got = senders.round(5, GREEN_SRC);
        assert_eq!(Senders::arrived_from(&got, GREEN_SRC), 5, "{got:?}");
        assert!(!crate::unpin_link(&pin_dir, &ns.rx_if).expect("nothing left"));
        assert!(!crate::unpin_link(&pin_dir.join("absent"), &ns.rx_if).expect("absent"));
        assert!(crate::unpin_link(&pin_dir, "../maps").is_err());
        // Only bpffs objects: a plain file in a plain directory stays.
        let plain = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(plain.path().join("links")).expect("mkdir");
        std::fs::write(plain.path().join("links").join("eth9"), b"x").expect("write");
        assert!(crate::unpin_link(plain.path(), "eth9").is_err());
        assert!(plain.path().join("links").join("eth9").exists());
    });
}

#[test]
fn the_live_frames_generator_feeds_the_filter_on_the_peer() {
    use crate::{GenerateError, LiveGenerator};
    in_thread(|| {
        let ns = Netns::new();
        Netns::enter(&ns.rx);
        let mut lights = TrafficLights::load(None).expect("load");
        // Exactly the four /24s the generator cycles over are red; anything
        // else (a wrong base, count or host) would be counted green.
        lights
            .apply(&policy(1, green(), &[("100.64.0.0/22", red())], &[]))
            .expect("apply");
        lights
            .attach(&ns.rx_if, AttachMode::Native)
            .expect("attach");
        Netns::enter(&ns.tx);
        let name = std::ffi::CString::new(ns.tx_if.as_str()).expect("name");
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0);
        // Built from a green source: red counts prove the rewrite.
        let frame = crate::test_packets::udp4(GREEN_SRC, RX_ADDR);
        let base = Ipv4Addr::new(100, 64, 0, 0);
        let generator = LiveGenerator::load(ifindex, &frame, base, 4).expect("load generator");
        generator.run(640).expect("generate");
        let c = lights.counters().expect("counters");
        assert_eq!(c.green_packets, 0, "{c:?}");
        // One thread: the peer's NAPI runs on this CPU after each batch of
        // 64, so the ring should not overflow; a busy machine may still
        // lose some, so only "some, none extra" is asserted.
        assert!(c.red_packets > 0 && c.red_packets <= 640, "{c:?}");
        // Refused before anything loads or runs.
        let mut arp = crate::test_packets::eth(&[], 0x0806);
        arp.extend_from_slice(&[0; 28]);
        assert!(matches!(
            LiveGenerator::load(ifindex, &arp, base, 4),
            Err(GenerateError::NotIpv4)
        ));
        let top = Ipv4Addr::new(255, 255, 255, 0);
        for (base, count) in [(base, 0), (Ipv4Addr::new(100, 64, 0, 1), 4), (top, 2)] {
            let Err(err) = LiveGenerator::load(ifindex, &frame, base, count) else {
                panic!("{base} x {count} accepted");
            };
            assert!(err.to_string().contains("/24s from"), "{err}");
        }
        assert!(LiveGenerator::load(ifindex, &frame, top, 1).is_ok());
        assert!(generator.run(0).is_err());
    });
}
