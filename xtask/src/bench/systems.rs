//! The systems of the storage bench. Adding a system = one entry in
//! [`SYSTEMS`]: how to launch its harness and what it supports.

/// Which column a system's numbers land in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Our store through the library: the "ours" column of every row.
    Ours,
    /// Our store through the agent's HTTP API: `http_*` metrics, no peer.
    OursHttp,
    /// A peer: one row per (metric, peer) next to "ours".
    Peer,
}

/// Where a harness binary comes from.
#[derive(Clone, Copy, Debug)]
pub enum Launch {
    /// A bin of the `metanode-perf` workspace crate (`target/release/NAME`);
    /// `source` is checked too so a stale binary of a deleted harness is not
    /// run.
    WorkspaceBin {
        bin: &'static str,
        source: &'static str,
    },
    /// A bin of the separate iroh-harness project, built into the cache dir.
    IrohBin { bin: &'static str },
    /// `node --import ./polyfill.mjs SCRIPT` in `dir` (npm dependencies).
    Node {
        dir: &'static str,
        script: &'static str,
    },
    /// `ours-harness --http URL` against a `metanode agent --dev` started
    /// for each run.
    OursHttp,
}

#[derive(Clone, Copy, Debug)]
pub struct System {
    /// Name in the table, the JSON and the harness's `system` field.
    pub name: &'static str,
    pub side: Side,
    pub launch: Launch,
    /// Runs put-during-gc (the system has garbage collection).
    pub gc: bool,
    /// Runs the large add/read workloads.
    pub large: bool,
    /// Arguments added to every run, e.g. the flag that makes a peer's puts
    /// durable so that all systems run with equal durability.
    pub extra_args: &'static [&'static str],
}

pub const OURS_HARNESS: Launch = Launch::WorkspaceBin {
    bin: "ours-harness",
    source: "perf/src/bin/ours-harness.rs",
};

pub const SYSTEMS: &[System] = &[
    System {
        name: "ours",
        side: Side::Ours,
        launch: OURS_HARNESS,
        gc: true,
        large: true,
        extra_args: &[],
    },
    System {
        name: "ours-http",
        side: Side::OursHttp,
        launch: Launch::OursHttp,
        gc: false,
        large: true,
        extra_args: &[],
    },
    System {
        name: "iroh-blobs",
        side: Side::Peer,
        launch: Launch::IrohBin {
            bin: "iroh-harness",
        },
        gc: true,
        large: true,
        extra_args: &[],
    },
    System {
        name: "helia",
        side: Side::Peer,
        launch: Launch::Node {
            dir: "perf/helia",
            script: "harness.mjs",
        },
        // Helia collects unpinned blocks with helia.gc() after pins.rm().
        gc: true,
        large: true,
        // blockstore-fs acks before any fsync; the harness adds them.
        extra_args: &["--durable"],
    },
    System {
        name: "flatfs",
        side: Side::Peer,
        launch: Launch::WorkspaceBin {
            bin: "flatfs-harness",
            source: "perf/src/bin/flatfs-harness.rs",
        },
        // flatfs is a datastore; GC lives in the layer above it.
        gc: false,
        large: true,
        extra_args: &[],
    },
];

pub fn by_name(name: &str) -> Option<&'static System> {
    SYSTEMS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_exactly_one_system_is_ours() {
        let mut names: Vec<&str> = SYSTEMS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SYSTEMS.len());
        assert_eq!(SYSTEMS.iter().filter(|s| s.side == Side::Ours).count(), 1);
        assert_eq!(by_name("flatfs").map(|s| s.side), Some(Side::Peer));
    }
}
