//! `TrafficLights`: loads ebpf/xdp/biso.c, pins its maps, attaches it,
//! swaps policies and reads counters and samples.

use std::{
    collections::{BTreeMap, HashSet},
    fmt, fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, ArrayOfMaps, Map, MapData, MapError, MapType, PerCpuArray, PerCpuHashMap, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLink,
    },
};
use metanode_biso::compiled::CompiledPolicy;

use crate::{
    abi::{
        CountersAbi, CtlAbi, FRONT_V4_BITS, FRONT_V6_BITS, FrontAbi, RuleAbi, SlotAbi, VerdictAbi,
    },
    counters::Counters,
    limits::{
        COARSE_TICK_NS_FALLBACK, NS_PER_S, SAMPLES_DRAIN_MAX, SAMPLES_RING_BYTES,
        TEST_RUN_PACKET_BYTES_MAX, TEST_RUN_PACKET_BYTES_MIN, V4_PREFIXES_MAX, V6_PREFIXES_MAX,
        VERDICT_CACHE_V4_SOURCES_MAX, VERDICT_CACHE_V6_SOURCES_MAX,
    },
    sample::Sample,
    sys,
};

static BISO_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/biso.o"));

const PROGRAM: &str = "biso_xdp";
pub(crate) const MAP_CTL: &str = "biso_ctl";
pub(crate) const MAP_SLOTS: &str = "biso_slots";
pub(crate) const MAP_V4: [&str; 2] = ["biso_v4_0", "biso_v4_1"];
pub(crate) const MAP_V6: [&str; 2] = ["biso_v6_0", "biso_v6_1"];
pub(crate) const MAP_VERDICTS_V4: &str = "biso_verdicts_v4";
pub(crate) const MAP_VERDICTS_V6: &str = "biso_verdicts_v6";
pub(crate) const MAP_FRONT_V4: &str = "biso_front_v4";
pub(crate) const MAP_FRONT_V6: &str = "biso_front_v6";
pub(crate) const MAP_COUNTERS: &str = "biso_counters";
const MAP_SAMPLES: &str = "biso_samples";
const MAP_GRACE: &str = "biso_grace";
const MAP_GRACE_INNER: &str = "biso_grace_inner";

/// Maps that hold policy, cached verdicts (with the token buckets), counters
/// and samples: pinned so a new agent process (and the still-attached
/// program) share them.
const PINNED_MAPS: [&str; 12] = [
    MAP_CTL,
    MAP_SLOTS,
    MAP_V4[0],
    MAP_V4[1],
    MAP_V6[0],
    MAP_V6[1],
    MAP_FRONT_V4,
    MAP_FRONT_V6,
    MAP_VERDICTS_V4,
    MAP_VERDICTS_V6,
    MAP_COUNTERS,
    MAP_SAMPLES,
];

/// bpffs is mounted here when a pin directory below it is asked for and it
/// is not mounted yet.
const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Linux IFNAMSIZ - 1.
const IFNAME_BYTES_MAX: usize = 15;

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE); the fast path, needs driver support.
    Native,
    /// In the generic network stack (XDP_FLAGS_SKB_MODE); works everywhere.
    Generic,
}

/// What `apply` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    pub version: u64,
    /// Version that was live before, if any.
    pub previous_version: Option<u64>,
    /// The slot (0 or 1) that is now live.
    pub slot: u32,
    pub v4_prefixes_count: usize,
    pub v6_prefixes_count: usize,
    /// Prefixes of the previous contents of `slot` that were removed.
    pub stale_prefixes_removed_count: usize,
    /// CPUs the token bucket rate and burst were divided over.
    pub possible_cpus: u32,
}

/// XDP return code of a test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Unknown(u32),
}

impl XdpAction {
    pub(crate) fn from_retval(retval: u32) -> Self {
        match retval {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => XdpAction::Unknown(other),
        }
    }
}

/// Result of `test_run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The action of the last repetition.
    pub action: XdpAction,
    /// Mean kernel-measured run time per repetition.
    pub ns_per_packet: u32,
    pub repeat: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the possible CPUs from {path}")]
    PossibleCpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("pin directory {path} is not on a bpffs (only {BPFFS_ROOT} is mounted automatically)")]
    NotBpffs { path: PathBuf },
    #[error("mounting bpffs on {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checking or creating pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading the BISO object and creating or opening its maps")]
    Object {
        #[source]
        source: aya::EbpfError,
    },
    #[error("program {PROGRAM} missing from the BISO object")]
    MissingProgram,
    #[error("map {name} missing from the BISO object")]
    MissingMap { name: &'static str },
    #[error(
        "map {name} does not have the expected type or layout (a pinned map from another version?)"
    )]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "map {name} is a {found}; the program needs a {expected} (a map pinned by another version? \
         removing the pin directory's maps/ starts afresh, losing counters and buckets)"
    )]
    Layout {
        name: &'static str,
        found: MapLayout,
        expected: MapLayout,
    },
    #[error("map {name} in the BISO object has a map type this loader does not handle")]
    UnexpectedMapType { name: &'static str },
    #[error("loading program {PROGRAM} into the kernel (verifier)")]
    Program {
        #[source]
        source: ProgramError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("interface name {ifname:?} is not a valid Linux interface name")]
    BadInterfaceName { ifname: String },
    #[error("already attached to interface {ifname}")]
    AlreadyAttached { ifname: String },
    #[error("program {PROGRAM} unavailable")]
    Program {
        #[source]
        source: ProgramError,
    },
    #[error("attaching to interface {ifname} in {mode:?} mode")]
    Attach {
        ifname: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("attachment to interface {ifname} is not a bpf_link, so it cannot be pinned")]
    NotALink {
        ifname: String,
        #[source]
        source: LinkError,
    },
    #[error("pinning the link of interface {ifname} at {path}")]
    Pin {
        ifname: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("creating link pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error("not attached to interface {ifname}")]
    NotAttached { ifname: String },
    #[error("opening the pinned link of interface {ifname} at {path}")]
    OpenPin {
        ifname: String,
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("removing the pinned link of interface {ifname} at {path}")]
    Unpin {
        ifname: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "policy version {version} has {count} {family} prefixes, more than the {max} the maps hold"
    )]
    TooManyPrefixes {
        version: u64,
        family: &'static str,
        count: usize,
        max: u32,
    },
    #[error("map {name} missing")]
    MissingMap { name: &'static str },
    #[error("reading or writing map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("writing prefix {prefix} into map {name}")]
    Insert {
        name: &'static str,
        prefix: String,
        #[source]
        source: MapError,
    },
    #[error("flipping map {MAP_CTL} to slot {slot} for policy version {version}")]
    Flip {
        slot: u32,
        version: u64,
        #[source]
        source: MapError,
    },
    #[error("waiting for packets on the previous slot via map {MAP_GRACE}")]
    Grace {
        #[source]
        source: MapError,
    },
    #[error("policy generation counter in map {MAP_SLOTS} is at u64::MAX")]
    GenerationExhausted,
}

#[derive(Debug, thiserror::Error)]
pub enum VerdictCacheError {
    #[error("map {MAP_CTL} missing")]
    MissingMap,
    #[error("reading or writing map {MAP_CTL} to turn the verdict cache {}", if *enabled { "on" } else { "off" })]
    Map {
        enabled: bool,
        #[source]
        source: MapError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("map {MAP_COUNTERS} missing")]
    MissingMap,
    #[error("reading map {MAP_COUNTERS}")]
    Map {
        #[source]
        source: MapError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error("test packet of {len} bytes outside [{min}, {max}] bytes")]
    PacketLength { len: usize, min: usize, max: usize },
    #[error("program {PROGRAM} unavailable")]
    Program {
        #[source]
        source: ProgramError,
    },
    #[error("BPF_PROG_TEST_RUN of a {len}-byte packet x{repeat}")]
    Syscall {
        len: usize,
        repeat: u32,
        #[source]
        source: io::Error,
    },
}

struct Attached {
    /// Dropping it detaches, unless `pin_path` still exists in bpffs.
    _link: FdLink,
    pin_path: Option<PathBuf>,
}

/// The loaded BISO XDP program and its maps.
pub struct TrafficLights {
    ebpf: Ebpf,
    samples: RingBuf<MapData>,
    grace_inner: Array<MapData, u32>,
    pin_dir: Option<PathBuf>,
    links: BTreeMap<String, Attached>,
    possible_cpus: u32,
    /// The coarse clock's step (1/HZ): picks each yellow bucket's clock.
    coarse_tick_ns: u64,
}

/// The step of the clock bpf_ktime_get_coarse_ns reads (1/HZ), from
/// `clock_getres(CLOCK_MONOTONIC_COARSE)`; the slowest tick if it fails.
fn coarse_tick_ns() -> u64 {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes one timespec that we own.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
    let ns = u64::try_from(res.tv_sec)
        .unwrap_or(0)
        .saturating_mul(NS_PER_S)
        .saturating_add(u64::try_from(res.tv_nsec).unwrap_or(0));
    if rc != 0 || ns == 0 {
        COARSE_TICK_NS_FALLBACK
    } else {
        ns
    }
}

impl fmt::Debug for TrafficLights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrafficLights")
            .field("pin_dir", &self.pin_dir)
            .field("attached", &self.links.keys().collect::<Vec<_>>())
            .field("possible_cpus", &self.possible_cpus)
            .field("coarse_tick_ns", &self.coarse_tick_ns)
            .finish_non_exhaustive()
    }
}

/// Removes the link pinned at `pin_dir/links/IFNAME`, returning whether
/// there was one. A pinned link outlives the agent so that a restart keeps
/// filtering; the agent calls this for links it pinned under an earlier
/// config that no longer names them, so that a config trial that was
/// reverted leaves no filter behind. The kernel frees the link (detaching
/// the program) once no process holds it, from a workqueue, so packets may
/// meet it for a moment after this returns. Only a file on a bpffs is
/// removed: the pin directory comes from a config.
pub fn unpin_link(pin_dir: &Path, ifname: &str) -> Result<bool, DetachError> {
    let not_attached = || DetachError::NotAttached {
        ifname: ifname.to_owned(),
    };
    if ifname.is_empty() || ifname.contains('/') || ifname == "." || ifname == ".." {
        return Err(not_attached());
    }
    let path = pin_dir.join("links").join(ifname);
    let unpin_error = |source| DetachError::Unpin {
        ifname: ifname.to_owned(),
        path: path.clone(),
        source,
    };
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(unpin_error(io::Error::other("not a pinned object"))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(unpin_error(source)),
    }
    match sys::is_bpffs(&path) {
        Ok(true) => {}
        Ok(false) => return Err(unpin_error(io::Error::other("not on a bpffs"))),
        Err(source) => return Err(unpin_error(source)),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(unpin_error(source)),
    }
}

impl TrafficLights {
    /// Loads the program. With `pin_dir`, maps live in `pin_dir/maps/` and
    /// links in `pin_dir/links/`; maps already pinned there are reused (with
    /// their policy, buckets and counters), which is how a restarted agent
    /// picks up where the last one stopped. bpffs is mounted on /sys/fs/bpf
    /// first if `pin_dir` is below it and it is not mounted.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, LoadError> {
        let possible_cpus = aya::util::nr_cpus()
            .map_err(|(path, source)| LoadError::PossibleCpus { path, source })?;
        let possible_cpus = u32::try_from(possible_cpus).unwrap_or(u32::MAX);
        let mut loader = EbpfLoader::new();
        for name in MAP_V4 {
            loader.map_max_entries(name, V4_PREFIXES_MAX);
        }
        for name in MAP_V6 {
            loader.map_max_entries(name, V6_PREFIXES_MAX);
        }
        loader.map_max_entries(MAP_VERDICTS_V4, VERDICT_CACHE_V4_SOURCES_MAX);
        loader.map_max_entries(MAP_VERDICTS_V6, VERDICT_CACHE_V6_SOURCES_MAX);
        loader.map_max_entries(MAP_SAMPLES, SAMPLES_RING_BYTES);
        if let Some(dir) = pin_dir {
            prepare_pin_dir(dir)?;
            let maps_dir = dir.join("maps");
            fs::create_dir_all(&maps_dir).map_err(|source| LoadError::PinDir {
                path: maps_dir.clone(),
                source,
            })?;
            for name in PINNED_MAPS {
                loader.map_pin_path(name, maps_dir.join(name));
            }
        }
        let mut ebpf = loader
            .load(BISO_OBJECT)
            .map_err(|source| LoadError::Object { source })?;
        check_map_layouts(&ebpf)?;
        {
            let program: &mut Xdp = ebpf
                .program_mut(PROGRAM)
                .ok_or(LoadError::MissingProgram)?
                .try_into()
                .map_err(|source| LoadError::Program { source })?;
            program
                .load()
                .map_err(|source| LoadError::Program { source })?;
        }
        let samples_map = ebpf
            .take_map(MAP_SAMPLES)
            .ok_or(LoadError::MissingMap { name: MAP_SAMPLES })?;
        let samples = RingBuf::try_from(samples_map).map_err(|source| LoadError::Map {
            name: MAP_SAMPLES,
            source,
        })?;
        let grace_map = ebpf
            .take_map(MAP_GRACE_INNER)
            .ok_or(LoadError::MissingMap {
                name: MAP_GRACE_INNER,
            })?;
        let grace_inner = Array::try_from(grace_map).map_err(|source| LoadError::Map {
            name: MAP_GRACE_INNER,
            source,
        })?;
        Ok(TrafficLights {
            ebpf,
            samples,
            grace_inner,
            pin_dir: pin_dir.map(Path::to_path_buf),
            links: BTreeMap::new(),
            possible_cpus,
            coarse_tick_ns: coarse_tick_ns(),
        })
    }

    /// CPUs the kernel may run the program on (per-CPU buckets and counters).
    pub fn possible_cpus(&self) -> u32 {
        self.possible_cpus
    }

    /// The coarse clock's step; a yellow bucket that fills in fewer than
    /// [`crate::limits::COARSE_FILL_TICKS_MIN`] of them reads the precise
    /// clock instead.
    pub fn coarse_tick_ns(&self) -> u64 {
        self.coarse_tick_ns
    }

    /// Attaches to `ifname` (in the calling thread's network namespace).
    /// With a pin directory the link is pinned at `pin_dir/links/<ifname>`,
    /// so the program keeps enforcing after this process exits; if such a
    /// pinned link already exists (agent restart), it is atomically switched
    /// to this process's program instead, keeping its original mode.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<(), AttachError> {
        if ifname.is_empty()
            || ifname.len() > IFNAME_BYTES_MAX
            || ifname.contains(['/', '\0'])
            || ifname == "."
            || ifname == ".."
        {
            return Err(AttachError::BadInterfaceName {
                ifname: ifname.to_owned(),
            });
        }
        if self.links.contains_key(ifname) {
            return Err(AttachError::AlreadyAttached {
                ifname: ifname.to_owned(),
            });
        }
        let pin_path = match &self.pin_dir {
            Some(dir) => {
                let links_dir = dir.join("links");
                fs::create_dir_all(&links_dir).map_err(|source| AttachError::PinDir {
                    path: links_dir.clone(),
                    source,
                })?;
                Some(links_dir.join(ifname))
            }
            None => None,
        };
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or(AttachError::Program {
                source: ProgramError::NotLoaded,
            })?;
        let attach_error = |source| AttachError::Attach {
            ifname: ifname.to_owned(),
            mode,
            source,
        };

        let mut reused = false;
        let mut link_id = None;
        if let Some(path) = pin_path.as_ref().filter(|p| p.exists()) {
            // A link from an earlier process: switch it to this program.
            // If it is defunct (interface gone), drop the pin and attach anew.
            let switched = PinnedLink::from_pin(path)
                .ok()
                .map(FdLink::from)
                .and_then(|fd_link| XdpLink::try_from(fd_link).ok())
                .and_then(|xdp_link| program.attach_to_link(xdp_link).ok());
            match switched {
                Some(id) => {
                    reused = true;
                    link_id = Some(id);
                }
                None => {
                    let _ = fs::remove_file(path);
                }
            }
        }
        let link_id = match link_id {
            Some(id) => id,
            None => {
                let xdp_mode = match mode {
                    AttachMode::Native => XdpMode::Driver,
                    AttachMode::Generic => XdpMode::Skb,
                };
                program.attach(ifname, xdp_mode).map_err(attach_error)?
            }
        };
        let link = program.take_link(link_id).map_err(attach_error)?;
        let mut fd_link = FdLink::try_from(link).map_err(|source| AttachError::NotALink {
            ifname: ifname.to_owned(),
            source,
        })?;
        if let Some(path) = pin_path.as_ref().filter(|_| !reused) {
            fd_link = fd_link
                .pin(path)
                .map_err(|source| AttachError::Pin {
                    ifname: ifname.to_owned(),
                    path: path.clone(),
                    source,
                })?
                .into();
        }
        self.links.insert(
            ifname.to_owned(),
            Attached {
                _link: fd_link,
                pin_path,
            },
        );
        Ok(())
    }

    /// Detaches from `ifname`: the link this instance holds, or else a link
    /// pinned by an earlier process.
    pub fn detach(&mut self, ifname: &str) -> Result<(), DetachError> {
        if let Some(attached) = self.links.remove(ifname) {
            if let Some(path) = attached.pin_path {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(DetachError::Unpin {
                            ifname: ifname.to_owned(),
                            path,
                            source,
                        });
                    }
                }
            }
            return Ok(());
        }
        let path = self
            .pin_dir
            .as_ref()
            .map(|dir| dir.join("links").join(ifname))
            .filter(|p| p.exists() && !ifname.contains('/'))
            .ok_or_else(|| DetachError::NotAttached {
                ifname: ifname.to_owned(),
            })?;
        let pinned = PinnedLink::from_pin(&path).map_err(|source| DetachError::OpenPin {
            ifname: ifname.to_owned(),
            path: path.clone(),
            source,
        })?;
        pinned.unpin().map_err(|source| DetachError::Unpin {
            ifname: ifname.to_owned(),
            path,
            source,
        })?;
        Ok(())
    }

    /// Makes `policy` live: writes it completely into the inactive slot,
    /// flips `biso_ctl` to that slot with one map update, then waits for an
    /// RCU grace period so no packet is still reading the old slot when the
    /// next `apply` rewrites it.
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<ApplyReport, ApplyError> {
        check_count(policy.version, "ipv4", policy.v4.len(), V4_PREFIXES_MAX)?;
        check_count(policy.version, "ipv6", policy.v6.len(), V6_PREFIXES_MAX)?;
        let cpus = self.possible_cpus;
        let tick_ns = self.coarse_tick_ns;

        let ctl = {
            let map = map_ref(&self.ebpf, MAP_CTL)?;
            let array: Array<&MapData, CtlAbi> =
                Array::try_from(map).map_err(map_error(MAP_CTL))?;
            array.get(&0, 0).map_err(map_error(MAP_CTL))?
        };
        let active = ctl.active_slot & 1;
        let target = 1 - active;
        let (previous, generation) = {
            let map = map_ref(&self.ebpf, MAP_SLOTS)?;
            let array: Array<&MapData, SlotAbi> =
                Array::try_from(map).map_err(map_error(MAP_SLOTS))?;
            let previous = array.get(&active, 0).map_err(map_error(MAP_SLOTS))?;
            let inactive = array.get(&target, 0).map_err(map_error(MAP_SLOTS))?;
            // Above both slots' generations (pinned maps keep them across
            // agent restarts), so no verdict cached under any earlier policy
            // matches the new one; never 0, the empty cache value's tag.
            let generation = previous
                .generation
                .max(inactive.generation)
                .checked_add(1)
                .ok_or(ApplyError::GenerationExhausted)?;
            (previous, generation)
        };
        let slot_index = target as usize;

        let v4 = policy.v4.iter().map(|(net, rule)| {
            let net = net.trunc();
            (
                net.addr().octets(),
                u32::from(net.prefix_len()),
                RuleAbi::from_rule(rule, cpus, tick_ns),
                net.to_string(),
            )
        });
        let mut stale = write_trie(&mut self.ebpf, MAP_V4[slot_index], v4)?;
        let v6 = policy.v6.iter().map(|(net, rule)| {
            let net = net.trunc();
            (
                net.addr().octets(),
                u32::from(net.prefix_len()),
                RuleAbi::from_rule(rule, cpus, tick_ns),
                net.to_string(),
            )
        });
        stale += write_trie(&mut self.ebpf, MAP_V6[slot_index], v6)?;

        {
            let map = map_mut(&mut self.ebpf, MAP_SLOTS)?;
            let mut array: Array<&mut MapData, SlotAbi> =
                Array::try_from(map).map_err(map_error(MAP_SLOTS))?;
            let slot = SlotAbi {
                version: policy.version,
                loaded: 1,
                _pad0: 0,
                generation,
                default_rule: RuleAbi::from_rule(&policy.default_rule, cpus, tick_ns),
            };
            array.set(target, slot, 0).map_err(map_error(MAP_SLOTS))?;
        }
        {
            let map = map_mut(&mut self.ebpf, MAP_CTL)?;
            let mut array: Array<&mut MapData, CtlAbi> =
                Array::try_from(map).map_err(map_error(MAP_CTL))?;
            let flipped = CtlAbi {
                active_slot: target,
                ..ctl
            };
            array
                .set(0, flipped, 0)
                .map_err(|source| ApplyError::Flip {
                    slot: target,
                    version: policy.version,
                    source,
                })?;
        }
        {
            let map = map_mut(&mut self.ebpf, MAP_GRACE)?;
            let mut outer: ArrayOfMaps<&mut MapData, Array<MapData, u32>> =
                ArrayOfMaps::try_from(map).map_err(|source| ApplyError::Grace { source })?;
            outer
                .set(0, &self.grace_inner, 0)
                .map_err(|source| ApplyError::Grace { source })?;
        }
        Ok(ApplyReport {
            version: policy.version,
            previous_version: (previous.loaded != 0).then_some(previous.version),
            slot: target,
            v4_prefixes_count: policy.v4.len(),
            v6_prefixes_count: policy.v6.len(),
            stale_prefixes_removed_count: stale,
            possible_cpus: cpus,
        })
    }

    /// Turns the per-CPU verdict cache on (the state after `load` with fresh
    /// maps) or off. Off, every packet takes the cache-miss path: LPM-trie
    /// lookup and a rewrite of the source's cache entry (whose token bucket
    /// keeps working), so `test_run` then measures what a miss costs for a
    /// source already in the cache. Verdicts are the same either way. The
    /// switch lives in the pinned control map, so it outlives this process.
    pub fn set_verdict_cache(&mut self, enabled: bool) -> Result<(), VerdictCacheError> {
        let map_error = |source| VerdictCacheError::Map { enabled, source };
        let map = self
            .ebpf
            .map_mut(MAP_CTL)
            .ok_or(VerdictCacheError::MissingMap)?;
        let mut array: Array<&mut MapData, CtlAbi> = Array::try_from(map).map_err(map_error)?;
        let ctl = array.get(&0, 0).map_err(map_error)?;
        // Same active_slot as read: `apply` (the only other writer) needs
        // `&mut self`, so it cannot flip in between.
        let updated = CtlAbi {
            verdict_cache_off: u32::from(!enabled),
            ..ctl
        };
        array.set(0, updated, 0).map_err(map_error)
    }

    /// Counters summed over all CPUs.
    pub fn counters(&self) -> Result<Counters, CountersError> {
        let map = self
            .ebpf
            .map(MAP_COUNTERS)
            .ok_or(CountersError::MissingMap)?;
        let array: PerCpuArray<&MapData, CountersAbi> =
            PerCpuArray::try_from(map).map_err(|source| CountersError::Map { source })?;
        let per_cpu = array
            .get(&0, 0)
            .map_err(|source| CountersError::Map { source })?;
        Ok(Counters::from_per_cpu(per_cpu.iter()))
    }

    /// Up to `max` (at most `SAMPLES_DRAIN_MAX`) yellow samples, oldest first.
    pub fn drain_samples(&mut self, max: usize) -> Vec<Sample> {
        let max = max.min(SAMPLES_DRAIN_MAX);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = self.samples.next() else {
                break;
            };
            if let Some(sample) = Sample::parse(&item) {
                out.push(sample);
            }
        }
        out
    }

    /// Runs the program on `packet` `repeat` times via BPF_PROG_TEST_RUN
    /// (same maps, so counters, buckets and samples change as for real
    /// traffic). The packet must start with an Ethernet header.
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<TestRun, TestRunError> {
        if !test_packet_len_ok(packet.len()) {
            return Err(TestRunError::PacketLength {
                len: packet.len(),
                min: TEST_RUN_PACKET_BYTES_MIN,
                max: TEST_RUN_PACKET_BYTES_MAX,
            });
        }
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or(TestRunError::Program {
                source: ProgramError::NotLoaded,
            })?;
        let fd = program
            .fd()
            .map_err(|source| TestRunError::Program { source })?;
        let raw = sys::prog_test_run(fd.as_fd(), packet, repeat).map_err(|source| {
            TestRunError::Syscall {
                len: packet.len(),
                repeat,
                source,
            }
        })?;
        Ok(TestRun {
            action: XdpAction::from_retval(raw.retval),
            ns_per_packet: raw.duration_ns,
            repeat,
        })
    }

    #[cfg(test)]
    pub(crate) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// Whether BPF_PROG_TEST_RUN takes an XDP frame of `len` bytes.
pub(crate) fn test_packet_len_ok(len: usize) -> bool {
    (TEST_RUN_PACKET_BYTES_MIN..=TEST_RUN_PACKET_BYTES_MAX).contains(&len)
}

fn prepare_pin_dir(dir: &Path) -> Result<(), LoadError> {
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) {
        let mounted = sys::is_bpffs(root).map_err(|source| LoadError::PinDir {
            path: root.to_path_buf(),
            source,
        })?;
        if !mounted {
            sys::mount_bpffs(root).map_err(|source| LoadError::Mount {
                path: root.to_path_buf(),
                source,
            })?;
        }
    }
    fs::create_dir_all(dir).map_err(|source| LoadError::PinDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let on_bpffs = sys::is_bpffs(dir).map_err(|source| LoadError::PinDir {
        path: dir.to_path_buf(),
        source,
    })?;
    if !on_bpffs {
        return Err(LoadError::NotBpffs {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Typed views fail on a key/value size mismatch: catches a pinned map left
/// by a build with another layout before anything is written to it.
fn check_map_layouts(ebpf: &Ebpf) -> Result<(), LoadError> {
    fn get<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Map, LoadError> {
        ebpf.map(name).ok_or(LoadError::MissingMap { name })
    }
    let bad = |name: &'static str| move |source| LoadError::Map { name, source };
    Array::<&MapData, CtlAbi>::try_from(get(ebpf, MAP_CTL)?).map_err(bad(MAP_CTL))?;
    Array::<&MapData, SlotAbi>::try_from(get(ebpf, MAP_SLOTS)?).map_err(bad(MAP_SLOTS))?;
    for name in MAP_V4 {
        LpmTrie::<&MapData, [u8; 4], RuleAbi>::try_from(get(ebpf, name)?).map_err(bad(name))?;
    }
    for name in MAP_V6 {
        LpmTrie::<&MapData, [u8; 16], RuleAbi>::try_from(get(ebpf, name)?).map_err(bad(name))?;
    }
    PerCpuHashMap::<&MapData, [u8; 4], VerdictAbi>::try_from(get(ebpf, MAP_VERDICTS_V4)?)
        .map_err(bad(MAP_VERDICTS_V4))?;
    PerCpuHashMap::<&MapData, [u8; 16], VerdictAbi>::try_from(get(ebpf, MAP_VERDICTS_V6)?)
        .map_err(bad(MAP_VERDICTS_V6))?;
    PerCpuArray::<&MapData, CountersAbi>::try_from(get(ebpf, MAP_COUNTERS)?)
        .map_err(bad(MAP_COUNTERS))?;
    check_kernel_layouts(ebpf)
}

/// A map as the kernel holds it: what `check_kernel_layouts` compares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapLayout {
    pub map_type: MapType,
    pub key_bytes: u32,
    pub value_bytes: u32,
    pub entries: u32,
}

impl fmt::Display for MapLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} with {}-byte keys, {}-byte values and {} entries",
            self.map_type, self.key_bytes, self.value_bytes, self.entries
        )
    }
}

/// The layout the program and this loader expect of every pinned map.
fn expected_layouts() -> [(&'static str, MapLayout); PINNED_MAPS.len()] {
    const U32: u32 = size_of::<u32>() as u32;
    let layout = |map_type, key_bytes: usize, value_bytes: usize, entries| MapLayout {
        map_type,
        key_bytes: key_bytes as u32,
        value_bytes: value_bytes as u32,
        entries,
    };
    let trie = |addr_bytes: usize, entries| {
        layout(
            MapType::LpmTrie,
            U32 as usize + addr_bytes,
            size_of::<RuleAbi>(),
            entries,
        )
    };
    let front = |bits: u32| layout(MapType::PerCpuArray, 4, size_of::<FrontAbi>(), 1 << bits);
    let lru = |key_bytes, entries| {
        layout(
            MapType::LruPerCpuHash,
            key_bytes,
            size_of::<VerdictAbi>(),
            entries,
        )
    };
    [
        (MAP_CTL, layout(MapType::Array, 4, size_of::<CtlAbi>(), 1)),
        (
            MAP_SLOTS,
            layout(MapType::Array, 4, size_of::<SlotAbi>(), 2),
        ),
        (MAP_V4[0], trie(4, V4_PREFIXES_MAX)),
        (MAP_V4[1], trie(4, V4_PREFIXES_MAX)),
        (MAP_V6[0], trie(16, V6_PREFIXES_MAX)),
        (MAP_V6[1], trie(16, V6_PREFIXES_MAX)),
        (MAP_FRONT_V4, front(FRONT_V4_BITS)),
        (MAP_FRONT_V6, front(FRONT_V6_BITS)),
        (MAP_VERDICTS_V4, lru(4, VERDICT_CACHE_V4_SOURCES_MAX)),
        (MAP_VERDICTS_V6, lru(16, VERDICT_CACHE_V6_SOURCES_MAX)),
        (
            MAP_COUNTERS,
            layout(MapType::PerCpuArray, 4, size_of::<CountersAbi>(), 1),
        ),
        (
            MAP_SAMPLES,
            layout(MapType::RingBuf, 0, 0, SAMPLES_RING_BYTES),
        ),
    ]
}

/// Compares every pinned map as the kernel holds it with what the program
/// expects. aya reuses a pinned map by its path and checks typed views
/// against the ELF's definition, not the map it opened, so a map pinned by a
/// build with another layout would otherwise reach the verifier (an
/// unhelpful error) or, with larger values, go unnoticed.
fn check_kernel_layouts(ebpf: &Ebpf) -> Result<(), LoadError> {
    for (name, expected) in expected_layouts() {
        let map = ebpf.map(name).ok_or(LoadError::MissingMap { name })?;
        let data = match map {
            Map::Array(d)
            | Map::LpmTrie(d)
            | Map::PerCpuArray(d)
            | Map::PerCpuLruHashMap(d)
            | Map::RingBuf(d) => d,
            _ => {
                return Err(LoadError::UnexpectedMapType { name });
            }
        };
        let bad = |source| LoadError::Map { name, source };
        let info = data.info().map_err(bad)?;
        let found = MapLayout {
            map_type: info.map_type().map_err(bad)?,
            key_bytes: info.key_size(),
            value_bytes: info.value_size(),
            entries: info.max_entries(),
        };
        if found != expected {
            return Err(LoadError::Layout {
                name,
                found,
                expected,
            });
        }
    }
    Ok(())
}

fn check_count(
    version: u64,
    family: &'static str,
    count: usize,
    max: u32,
) -> Result<(), ApplyError> {
    if count > max as usize {
        return Err(ApplyError::TooManyPrefixes {
            version,
            family,
            count,
            max,
        });
    }
    Ok(())
}

fn map_ref<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Map, ApplyError> {
    ebpf.map(name).ok_or(ApplyError::MissingMap { name })
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, ApplyError> {
    ebpf.map_mut(name).ok_or(ApplyError::MissingMap { name })
}

fn map_error(name: &'static str) -> impl Fn(MapError) -> ApplyError {
    move |source| ApplyError::Map { name, source }
}

/// Makes the (inactive) trie `name` hold exactly `entries`: removes stale
/// prefixes first so the trie never needs more than its max_entries, then
/// inserts (a later duplicate prefix wins, as in `CompiledPolicy::lookup`).
/// Returns how many stale prefixes were removed.
fn write_trie<const N: usize>(
    ebpf: &mut Ebpf,
    name: &'static str,
    entries: impl Iterator<Item = ([u8; N], u32, RuleAbi, String)>,
) -> Result<usize, ApplyError> {
    let map = map_mut(ebpf, name)?;
    let mut trie: LpmTrie<&mut MapData, [u8; N], RuleAbi> =
        LpmTrie::try_from(map).map_err(map_error(name))?;
    let entries: Vec<_> = entries.collect();
    let wanted: HashSet<([u8; N], u32)> = entries
        .iter()
        .map(|(addr, len, _, _)| (*addr, *len))
        .collect();
    let existing = trie
        .keys()
        .collect::<Result<Vec<Key<[u8; N]>>, MapError>>()
        .map_err(map_error(name))?;
    let mut removed = 0;
    for key in existing {
        if !wanted.contains(&(key.data(), key.prefix_len())) {
            trie.remove(&key).map_err(map_error(name))?;
            removed += 1;
        }
    }
    for (addr, prefix_len, rule, prefix) in entries {
        trie.insert(&Key::new(prefix_len, addr), rule, 0)
            .map_err(|source| ApplyError::Insert {
                name,
                prefix,
                source,
            })?;
    }
    Ok(removed)
}
