//! `cargo xtask bench`: each bench runs our system and its peers in one run
//! on one machine and writes perf/results/NAME.json (+ a PNG beside it).

pub mod cage;
mod cage_ours;
mod cage_peers;
mod cage_xdp;
pub mod chain;
pub mod chart;
pub mod docklock;
pub mod image;
pub mod results;
pub mod storage;
pub mod systems;

/// Benches that `cargo xtask bench NAME` runs, with what they compare.
pub const BENCHES: &[(&str, &str)] = &[
    (
        "storage",
        "blob put/get (1-256 KiB, 64 in flight), 1 GiB add/read, put p99 during GC, HTTP; \
         vs iroh-blobs FsStore, Helia + blockstore-fs, flatfs-style baseline; plus machine limits",
    ),
    (
        "image",
        "appliance sizes and boot-to-ready (direct, OVMF, Secure Boot) vs Debian's cloud kernel + busybox \
         under the same QEMU; Talos/Bottlerocket published sizes; KSPP checklist counts",
    ),
    (
        "chain",
        "4 validators in netns over QUIC, HTTP load: max tx/s, submit->final p50/p99 at half load, \
         proposer crash -> commit, catch-up, light client, PoH CPU, RSS; Besu QBFT/CometBFT published",
    ),
    (
        "cage",
        "XDP ns/packet (BPF_PROG_TEST_RUN) and red drop Mpps vs nftables (trafgen over veth); \
         reverse proxy rps (wrk) and open-loop p99 vs nginx; RFC 9421 signed requests per core",
    ),
    (
        "docklock",
        "static no-op in a full cage: spawn p50/p99 vs bubblewrap (same run, interleaved), replay \
         overhead, receipts signed/verified per s; youki/runc/crun published create->delete",
    ),
];

pub fn print_list() {
    println!("benches (cargo xtask bench NAME [--quick]):");
    for (name, what) in BENCHES {
        println!("  {name:<10} {what}");
    }
    println!("storage systems:");
    for system in systems::SYSTEMS {
        println!(
            "  {:<12} {:?}{}{}",
            system.name,
            system.side,
            if system.gc { ", gc" } else { "" },
            if system.large { ", large" } else { "" }
        );
    }
}
