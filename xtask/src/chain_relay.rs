//! Delay injection for the netns chain: what `tc qdisc ... netem delay`
//! would do, in userspace, because this kernel has no `sch_netem` (and no
//! `sch_fq`, so no EDT pacing from BPF either).
//!
//! Path. The relay owns a TUN device (`mnd0`) in the hub namespace. While a
//! delay is on, every node routes each other node's /32 via the hub
//! (10.77.0.254) instead of on-link, the hub forwards (`ip_forward`), and a
//! policy rule sends everything that arrives on `br0` for the subnet into
//! `mnd0` (table [`ROUTE_TABLE`]). The relay reads each IP packet from the
//! TUN, holds it, and writes it back unchanged; the kernel then receives it
//! on `mnd0` and forwards it out of `br0` to its destination. Nothing is
//! rewritten: the destination node sees the sender's own address and port,
//! so QUIC sees no path change and the nft loss and partition rules inside
//! the node namespaces (which match source node addresses) keep their exact
//! meaning under delay. Probes from the hub to the nodes do not cross the
//! relay (the hub's own traffic is not `iif br0`, and replies to it are
//! local), so the checks measure the chain, not the impairment.
//!
//! Scheduling ([`Scheduler`]) is netem's tfifo: each packet gets its own
//! one-way delay, uniform in `delay ± jitter` (netem's distribution without
//! a table), and leaves when that time comes, in order of departure time;
//! packets due at the same microsecond leave in arrival order. So with no
//! jitter nothing is reordered, and with jitter a later packet overtakes an
//! earlier one exactly when its sampled delay is shorter by more than the
//! gap between them, as under netem. The delay of the n-th packet is a hash
//! of (seed, n), so a schedule is reproducible from its seed and arrival
//! order. The queue is bounded ([`QUEUE_PACKETS_MAX`], drop-tail, counted),
//! and so is the delay ([`DELAY_MAX`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// The TUN device's name in the hub namespace.
pub const TUN_NAME: &str = "mnd0";
/// Routing table the hub's `iif br0` rule points at (only the TUN route).
pub const ROUTE_TABLE: u32 = 100;
/// Packets held at once; more are dropped at the tail and counted (netem's
/// default `limit` is 1,000; chain-test holds a few dozen, the bench a few
/// thousand at 40 ms).
pub const QUEUE_PACKETS_MAX: usize = 8_192;
/// Largest one-way delay (plus jitter) the relay accepts.
pub const DELAY_MAX: Duration = Duration::from_secs(2);
/// A TUN read is one IP packet; the veths' MTU is 1,500, but a full buffer
/// costs nothing and never truncates.
const PACKET_BYTES_MAX: usize = 65_536;
/// Packets read per wake-up before releasing due ones again, so a burst
/// cannot make held packets late by more than this many reads.
const READS_PER_WAKE_MAX: usize = 256;
/// Longest sleep while nothing is due: how fast the thread notices `stop`.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Held-time histogram: 1 ms buckets below the largest delay, plus one
/// for anything at or above it.
const HISTOGRAM_BUCKETS: usize = DELAY_MAX.as_millis() as usize + 1;
/// Domain of the per-packet delay hash.
const DELAY_HASH_CONTEXT: &str = "metanode xtask chain_relay 2025 per-packet delay";

/// One-way delay `delay ± jitter` per packet (uniform), as `netem delay
/// DELAY JITTER` without a distribution table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
}

impl Impairment {
    pub fn new(delay: Duration, jitter: Duration) -> anyhow::Result<Impairment> {
        ensure!(
            jitter <= delay,
            "jitter {jitter:?} exceeds the delay {delay:?} (a packet cannot leave before it arrived)"
        );
        ensure!(
            delay + jitter <= DELAY_MAX,
            "delay {delay:?} + jitter {jitter:?} exceeds the relay's bound {DELAY_MAX:?}"
        );
        Ok(Impairment { delay, jitter })
    }

    /// The shortest delay any packet gets.
    pub fn min(&self) -> Duration {
        self.delay - self.jitter
    }

    /// The one-way delay of the `seq`-th packet (from 0) under `seed`, in µs:
    /// uniform in [delay − jitter, delay + jitter].
    pub fn sample_us(&self, seed: u64, seq: u64) -> u64 {
        let delay_us = self.delay.as_micros() as u64;
        let jitter_us = self.jitter.as_micros() as u64;
        if jitter_us == 0 {
            return delay_us;
        }
        let mut hasher = blake3::Hasher::new_derive_key(DELAY_HASH_CONTEXT);
        hasher.update(&seed.to_le_bytes());
        hasher.update(&seq.to_le_bytes());
        let mut word = [0u8; 8];
        hasher.finalize_xof().fill(&mut word);
        // The modulo bias is below 2^-40 for spans under 2^24 µs.
        let offset = u64::from_le_bytes(word) % (2 * jitter_us + 1);
        delay_us - jitter_us + offset
    }
}

/// netem's tfifo: packets ordered by departure time (then arrival), a
/// bounded count held. Time is µs on any monotonic clock the caller picks.
#[derive(Debug)]
pub struct Scheduler<P> {
    impairment: Impairment,
    seed: u64,
    /// Packets accepted so far: the next packet's index in the delay hash.
    seq: u64,
    queue: BTreeMap<(u64, u64), P>,
    capacity: usize,
}

impl<P> Scheduler<P> {
    pub fn new(impairment: Impairment, seed: u64, capacity: usize) -> Scheduler<P> {
        Scheduler {
            impairment,
            seed,
            seq: 0,
            queue: BTreeMap::new(),
            capacity,
        }
    }

    /// Applies to packets pushed from now on; held ones keep their times.
    pub fn set_impairment(&mut self, impairment: Impairment) {
        self.impairment = impairment;
    }

    /// Holds `packet`, arrived at `now_us`; returns its departure time, or
    /// None when the queue is full and the packet was dropped.
    pub fn push(&mut self, now_us: u64, packet: P) -> Option<u64> {
        if self.queue.len() >= self.capacity {
            return None;
        }
        let seq = self.seq;
        self.seq += 1;
        let due_us = now_us + self.impairment.sample_us(self.seed, seq);
        let previous = self.queue.insert((due_us, seq), packet);
        assert!(previous.is_none(), "sequence numbers are unique");
        Some(due_us)
    }

    pub fn next_due_us(&self) -> Option<u64> {
        self.queue.first_key_value().map(|(&(due, _), _)| due)
    }

    /// The earliest packet if its time has come: (departure time, packet).
    pub fn pop_due(&mut self, now_us: u64) -> Option<(u64, P)> {
        if self.next_due_us()? > now_us {
            return None;
        }
        self.queue.pop_first().map(|((due, _), p)| (due, p))
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

/// What the relay did since it started or since the last [`Relay::take_stats`].
#[derive(Clone, Debug)]
pub struct RelayStats {
    /// `forwarded[src][dst]`: packets from node src to node dst released.
    pub forwarded: Vec<Vec<u64>>,
    /// Most packets held at once (after a batch of reads).
    pub queue_packets_peak: usize,
    /// Dropped because [`QUEUE_PACKETS_MAX`] packets were held.
    pub dropped_queue_full: u64,
    /// Not IPv4 between two of our nodes (nothing else is routed here).
    pub dropped_foreign: u64,
    /// Writes back into the TUN that failed.
    pub dropped_write: u64,
    /// Held time (arrival to written back) in 1 ms buckets; the last
    /// bucket counts everything at or above [`DELAY_MAX`].
    held_ms: Vec<u64>,
}

impl RelayStats {
    fn new(nodes: usize) -> RelayStats {
        RelayStats {
            forwarded: vec![vec![0; nodes]; nodes],
            queue_packets_peak: 0,
            dropped_queue_full: 0,
            dropped_foreign: 0,
            dropped_write: 0,
            held_ms: vec![0; HISTOGRAM_BUCKETS],
        }
    }

    fn record_held(&mut self, held: Duration) {
        let bucket = (held.as_millis() as usize).min(HISTOGRAM_BUCKETS - 1);
        self.held_ms[bucket] += 1;
    }

    pub fn forwarded_total(&self) -> u64 {
        self.forwarded.iter().flatten().sum()
    }

    /// Ordered node pairs (src, dst), src ≠ dst, with no packet forwarded.
    pub fn silent_links(&self) -> Vec<(usize, usize)> {
        let mut silent = Vec::new();
        for (src, row) in self.forwarded.iter().enumerate() {
            for (dst, &count) in row.iter().enumerate() {
                if src != dst && count == 0 {
                    silent.push((src, dst));
                }
            }
        }
        silent
    }

    /// The held time below which `q` (0..=1) of the packets fall, to the
    /// ms bucket (the bucket's lower edge); None before any packet.
    pub fn held_quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.held_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (ms, &count) in self.held_ms.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(ms as u64);
            }
        }
        None
    }
}

/// What the relay thread and its handle share.
#[derive(Debug)]
struct Shared {
    impairment: Mutex<Impairment>,
    stats: Mutex<RelayStats>,
    stop: AtomicBool,
}

/// The running relay thread; dropping it stops the thread and closes the
/// TUN (which removes the device).
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A packet in the queue.
#[derive(Debug)]
struct Held {
    arrived: Instant,
    src: usize,
    dst: usize,
    bytes: Vec<u8>,
}

impl Relay {
    /// Creates the TUN device [`TUN_NAME`] in the calling thread's network
    /// namespace (down, unconfigured: the caller sets it up) and starts the
    /// relay thread. Only IPv4 packets between two of `nodes` are relayed.
    pub fn start(nodes: Vec<Ipv4Addr>, impairment: Impairment, seed: u64) -> anyhow::Result<Relay> {
        let tun = open_tun(TUN_NAME)?;
        let shared = Arc::new(Shared {
            impairment: Mutex::new(impairment),
            stats: Mutex::new(RelayStats::new(nodes.len())),
            stop: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("chain-relay".into())
            .spawn(move || run(tun, &nodes, seed, &thread_shared))
            .context("spawn the relay thread")?;
        Ok(Relay {
            shared,
            thread: Some(thread),
        })
    }

    /// Applies to packets arriving from now on.
    pub fn set_impairment(&self, impairment: Impairment) {
        *lock(&self.shared.impairment) = impairment;
    }

    /// The counters so far, and starts new ones.
    pub fn take_stats(&self) -> RelayStats {
        let mut stats = lock(&self.shared.stats);
        let fresh = RelayStats::new(stats.forwarded.len());
        std::mem::replace(&mut *stats, fresh)
    }

    /// Whether the thread still runs (it stops only on a TUN error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("warning: the chain relay thread panicked");
        }
    }
}

/// Counters stay meaningful after a panic elsewhere (they are only ever
/// incremented), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run(tun: File, nodes: &[Ipv4Addr], seed: u64, shared: &Shared) {
    if let Err(e) = relay_loop(&tun, nodes, seed, shared) {
        eprintln!("warning: the chain relay stopped: {e:#}");
    }
}

fn relay_loop(tun: &File, nodes: &[Ipv4Addr], seed: u64, shared: &Shared) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let now_us = || epoch.elapsed().as_micros() as u64;
    let mut current = *lock(&shared.impairment);
    let mut scheduler: Scheduler<Held> = Scheduler::new(current, seed, QUEUE_PACKETS_MAX);
    let mut buf = vec![0u8; PACKET_BYTES_MAX];
    while !shared.stop.load(Ordering::Relaxed) {
        let wanted = *lock(&shared.impairment);
        if wanted != current {
            scheduler.set_impairment(wanted);
            current = wanted;
        }
        release_due(tun, &mut scheduler, now_us(), shared);
        let wait = match scheduler.next_due_us() {
            Some(due) => Duration::from_micros(due.saturating_sub(now_us())).min(IDLE_POLL),
            None => IDLE_POLL,
        };
        let timeout = Timespec::try_from(wait).context("poll timeout")?;
        let mut fds = [PollFd::new(tun, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => bail!("poll the TUN: {e}"),
        }
        for _ in 0..READS_PER_WAKE_MAX {
            let len = match (&*tun).read(&mut buf) {
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("read the TUN"),
            };
            let Some(packet) = buf.get(..len) else {
                bail!("the TUN returned {len} bytes into a {PACKET_BYTES_MAX}-byte buffer");
            };
            let Some((src, dst)) = endpoints(packet, nodes) else {
                lock(&shared.stats).dropped_foreign += 1;
                continue;
            };
            let held = Held {
                arrived: Instant::now(),
                src,
                dst,
                bytes: packet.to_vec(),
            };
            if scheduler.push(now_us(), held).is_none() {
                lock(&shared.stats).dropped_queue_full += 1;
            }
        }
        let mut stats = lock(&shared.stats);
        stats.queue_packets_peak = stats.queue_packets_peak.max(scheduler.len());
    }
    Ok(())
}

fn release_due(tun: &File, scheduler: &mut Scheduler<Held>, now_us: u64, shared: &Shared) {
    let mut released = Vec::new();
    while let Some((_, held)) = scheduler.pop_due(now_us) {
        let ok = (&*tun)
            .write(&held.bytes)
            .is_ok_and(|n| n == held.bytes.len());
        released.push((held, ok));
    }
    if released.is_empty() {
        return;
    }
    let mut stats = lock(&shared.stats);
    for (held, ok) in released {
        if ok {
            stats.forwarded[held.src][held.dst] += 1;
            stats.record_held(held.arrived.elapsed());
        } else {
            stats.dropped_write += 1;
        }
    }
}

/// (source node, destination node) of an IPv4 packet between two distinct
/// nodes of `nodes`; None for anything else.
fn endpoints(packet: &[u8], nodes: &[Ipv4Addr]) -> Option<(usize, usize)> {
    let version = packet.first()? >> 4;
    if version != 4 {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let src = addr(12)?;
    let dst = addr(16)?;
    let src = nodes.iter().position(|&n| n == src)?;
    let dst = nodes.iter().position(|&n| n == dst)?;
    (src != dst).then_some((src, dst))
}

/// Opens a new TUN device `name` (IFF_TUN: bare IP packets, IFF_NO_PI: no
/// extra header), non-blocking, in the calling thread's network namespace.
fn open_tun(name: &str) -> anyhow::Result<File> {
    ensure!(
        !name.is_empty() && name.len() < libc::IFNAMSIZ,
        "interface name {name:?} must have 1 to {} bytes",
        libc::IFNAMSIZ - 1
    );
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .context("open /dev/net/tun (CONFIG_TUN)")?;
    // SAFETY: `ifreq` is plain old data (arrays, integers, a union of such),
    // for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and may update) exactly one `ifreq`, which
    // lives on this stack frame for the whole call; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut request) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("TUNSETIFF {name} on /dev/net/tun"));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Pushes packets 0..arrivals.len() at the given µs times, then pops
    /// everything in time order; returns (packet, departure) in pop order.
    fn drain(s: &mut Scheduler<usize>, arrivals_us: &[u64]) -> Vec<(usize, u64)> {
        for (i, &t) in arrivals_us.iter().enumerate() {
            assert!(s.push(t, i).is_some(), "packet {i} fits the queue");
        }
        let mut out = Vec::new();
        while let Some(due) = s.next_due_us() {
            assert_eq!(
                s.pop_due(due - 1).map(|(_, p)| p),
                None,
                "nothing leaves early"
            );
            let (at, packet) = s.pop_due(due).expect("the due packet leaves");
            assert_eq!(at, due);
            out.push((packet, at));
        }
        out
    }

    #[test]
    fn each_packet_leaves_at_arrival_plus_its_seeded_sample() {
        let imp = Impairment::new(ms(40), ms(10)).expect("valid");
        let seed = 0x5eed;
        let arrivals: Vec<u64> = (0..500).map(|i| i * 700).collect();
        let mut s = Scheduler::new(imp, seed, 1_000);
        let out = drain(&mut s, &arrivals);
        assert_eq!(out.len(), arrivals.len());
        let mut samples = Vec::new();
        for &(packet, departure) in &out {
            let sample = imp.sample_us(seed, packet as u64);
            assert_eq!(departure, arrivals[packet] + sample, "packet {packet}");
            assert!((30_000..=50_000).contains(&sample), "sample {sample} µs");
            samples.push(sample);
        }
        // Departures never go backwards, and ties keep arrival order.
        for pair in out.windows(2) {
            let ((a, ta), (b, tb)) = (pair[0], pair[1]);
            assert!(ta < tb || (ta == tb && a < b), "{pair:?}");
        }
        // The samples spread over the range, not a constant.
        assert!(samples.iter().any(|&v| v < 35_000) && samples.iter().any(|&v| v > 45_000));
        // Reordering happens, and exactly where the samples say.
        let expected: Vec<usize> = {
            let mut order: Vec<usize> = (0..arrivals.len()).collect();
            order.sort_by_key(|&i| (arrivals[i] + imp.sample_us(seed, i as u64), i));
            order
        };
        let got: Vec<usize> = out.iter().map(|&(p, _)| p).collect();
        assert_eq!(got, expected);
        assert_ne!(
            got,
            (0..arrivals.len()).collect::<Vec<_>>(),
            "jitter reorders"
        );
    }

    #[test]
    fn without_jitter_nothing_is_reordered_and_ties_keep_arrival_order() {
        let imp = Impairment::new(ms(40), Duration::ZERO).expect("valid");
        let mut s = Scheduler::new(imp, 1, 100);
        // Two bursts of simultaneous arrivals.
        let arrivals = [0, 0, 0, 5, 5, 9];
        let out = drain(&mut s, &arrivals);
        assert_eq!(
            out,
            vec![
                (0, 40_000),
                (1, 40_000),
                (2, 40_000),
                (3, 40_005),
                (4, 40_005),
                (5, 40_009)
            ]
        );
    }

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let imp = Impairment::new(ms(40), ms(10)).expect("valid");
        let arrivals: Vec<u64> = (0..64).map(|i| i * 1_000).collect();
        let run = |seed| drain(&mut Scheduler::new(imp, seed, 100), &arrivals);
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn a_full_queue_drops_at_the_tail_and_counts() {
        let imp = Impairment::new(ms(1), Duration::ZERO).expect("valid");
        let mut s = Scheduler::new(imp, 0, 2);
        assert_eq!(s.push(0, 'a'), Some(1_000));
        assert_eq!(s.push(10, 'b'), Some(1_010));
        assert_eq!(s.push(20, 'c'), None);
        assert_eq!(s.len(), 2);
        assert_eq!(s.pop_due(1_000), Some((1_000, 'a')));
        // Room again: the next packet is accepted, with the next sample.
        assert_eq!(s.push(30, 'd'), Some(1_030));
        assert_eq!(s.pop_due(5_000), Some((1_010, 'b')));
        assert_eq!(s.pop_due(5_000), Some((1_030, 'd')));
        assert_eq!(s.pop_due(5_000), None);
    }

    #[test]
    fn a_new_impairment_applies_to_later_packets_only() {
        let mut s = Scheduler::new(
            Impairment::new(ms(50), Duration::ZERO).expect("valid"),
            0,
            10,
        );
        assert_eq!(s.push(0, 0), Some(50_000));
        s.set_impairment(Impairment::new(ms(10), Duration::ZERO).expect("valid"));
        assert_eq!(s.push(1_000, 1), Some(11_000));
        assert_eq!(s.pop_due(60_000), Some((11_000, 1)));
        assert_eq!(s.pop_due(60_000), Some((50_000, 0)));
    }

    #[test]
    fn impairments_are_bounded() {
        assert!(Impairment::new(ms(10), ms(11)).is_err());
        assert!(Impairment::new(DELAY_MAX, ms(1)).is_err());
        let imp = Impairment::new(ms(40), ms(10)).expect("valid");
        assert_eq!(imp.min(), ms(30));
    }

    #[test]
    fn only_ipv4_between_two_distinct_nodes_is_relayed() {
        let nodes = [Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)];
        let mut packet = [0u8; 28];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[10, 77, 0, 2]);
        packet[16..20].copy_from_slice(&[10, 77, 0, 1]);
        assert_eq!(endpoints(&packet, &nodes), Some((1, 0)));
        packet[16..20].copy_from_slice(&[10, 77, 0, 2]);
        assert_eq!(endpoints(&packet, &nodes), None, "to itself");
        packet[16..20].copy_from_slice(&[10, 77, 0, 254]);
        assert_eq!(endpoints(&packet, &nodes), None, "to the hub");
        packet[0] = 0x60;
        assert_eq!(endpoints(&packet, &nodes), None, "IPv6");
        assert_eq!(endpoints(&packet[..15], &nodes), None, "truncated");
        assert_eq!(endpoints(&[], &nodes), None, "empty");
    }

    #[test]
    fn held_quantiles_come_from_the_histogram() {
        let mut stats = RelayStats::new(2);
        assert_eq!(stats.held_quantile_ms(0.5), None);
        for v in [30, 35, 40, 41, 49] {
            stats.record_held(ms(v) + Duration::from_micros(300));
        }
        stats.record_held(DELAY_MAX * 3);
        assert_eq!(stats.held_quantile_ms(0.5), Some(40));
        assert_eq!(stats.held_quantile_ms(0.0), Some(30));
        assert_eq!(
            stats.held_quantile_ms(1.0),
            Some(HISTOGRAM_BUCKETS as u64 - 1)
        );
        stats.forwarded[0][1] = 3;
        assert_eq!(stats.silent_links(), vec![(1, 0)]);
        assert_eq!(stats.forwarded_total(), 3);
    }
}
