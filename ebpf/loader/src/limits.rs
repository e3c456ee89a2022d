//! Every bound of the XDP traffic lights in one place. The C program's map
//! sizes are placeholders; `TrafficLights::load` sets them from here.

/// IPv4 prefixes per policy slot (each of the two v4 LPM tries).
pub const V4_PREFIXES_MAX: u32 = 65_536;
/// IPv6 prefixes per policy slot.
pub const V6_PREFIXES_MAX: u32 = 65_536;
/// IPv4 yellow buckets in the LRU behind the verdict cache's front array
/// (buckets whose source lost its front slot to another); the least
/// recently used is evicted beyond, and restarts full. Memory: about entries
/// x possible CPUs x 64 bytes (per-CPU values), i.e. 4 MiB per possible CPU.
/// The front arrays are sized in biso.h (`BISO_FRONT_V4_BITS`, 2^16 slots of
/// 80 bytes: 5 MiB per possible CPU; `BISO_FRONT_V6_BITS`, 2^14: 1.25 MiB),
/// since the program's index depends on them; abi.rs mirrors them and
/// `TrafficLights::load` checks the maps.
pub const VERDICT_CACHE_V4_SOURCES_MAX: u32 = 65_536;
/// IPv6 yellow buckets in their own LRU, so a flood of spoofed IPv6 sources
/// cannot evict IPv4 buckets. Memory as for IPv4.
pub const VERDICT_CACHE_V6_SOURCES_MAX: u32 = 65_536;
/// Ring buffer for yellow samples (a power of two, a multiple of the page).
pub const SAMPLES_RING_BYTES: u32 = 256 * 1024;
/// Samples returned by one `drain_samples` call at most.
pub const SAMPLES_DRAIN_MAX: usize = 65_536;
/// BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
pub const TEST_RUN_PACKET_BYTES_MIN: usize = 14;
/// 4 KiB page - XDP headroom (256) - skb_shared_info (320): the kernel's
/// bound for BPF_PROG_TEST_RUN XDP input on x86_64.
pub const TEST_RUN_PACKET_BYTES_MAX: usize = 3_520;
/// Nanoseconds per second: a token costs this much credit per CPU.
pub const NS_PER_S: u64 = 1_000_000_000;
/// A yellow bucket reads the coarse (tick) clock only if it takes at least
/// this many coarse ticks to fill from empty; faster buckets read the
/// precise clock (`BISO_RULE_PRECISE_CLOCK`). With
/// [`COARSE_LAG_TICKS_MAX`] this bounds what a coarse bucket gives up.
pub const COARSE_FILL_TICKS_MIN: u64 = 12;
/// Ticks of rate a coarse bucket holds back from its capacity: the coarse
/// clock's lag it stays within the burst for. Timekeeping advances in whole
/// tick intervals, so right after an update the coarse time may already lag
/// by up to a tick and it ages one more before the next: about two ticks in
/// normal operation, with no margin. The third covers a late timekeeping CPU
/// (NO_HZ hand-over, a vCPU the host did not run); a lag beyond it lets the
/// bucket admit rate x (lag - 3 ticks) more. See `RuleAbi::from_rule`.
pub const COARSE_LAG_TICKS_MAX: u64 = 3;
/// The coarse clock's step when `clock_getres(CLOCK_MONOTONIC_COARSE)` does
/// not answer: 10 ms, the tick of the slowest kernel config (HZ=100).
pub const COARSE_TICK_NS_FALLBACK: u64 = 10_000_000;

const _: () = assert!(SAMPLES_RING_BYTES.is_power_of_two());
const _: () = assert!(SAMPLES_RING_BYTES.is_multiple_of(4096));
const _: () = assert!(TEST_RUN_PACKET_BYTES_MIN < TEST_RUN_PACKET_BYTES_MAX);
