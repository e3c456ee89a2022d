/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by the BISO XDP program (biso.c) and its loader
 * (ebpf/loader/src/abi.rs mirrors every struct and enum here; the loader
 * asserts the sizes at compile time). Change both together.
 */
#ifndef METANODE_BISO_H
#define METANODE_BISO_H

#include <linux/types.h>

/* Verdict bytes: the discriminants of metanode_biso::Verdict. */
#define BISO_GREEN 0
#define BISO_YELLOW 1
#define BISO_RED 2

/* Parser bounds. Two VLAN tags cover 802.1Q and QinQ (802.1ad); a third tag
 * would hide the IP header from us, so it is dropped rather than passed. */
#define BISO_VLAN_TAGS_MAX 2
/* IPv6 extension headers walked before giving up. RFC 8200 recommends each
 * header at most once (destination options twice); 8 leaves room for that
 * plus AH and a fragment header, and bounds the verifier's work. */
#define BISO_IPV6_EXT_HDRS_MAX 8

#define BISO_NS_PER_S 1000000000ULL

/* A rule as the program reads it. The first fields mirror
 * metanode_biso::Rule; the last three are precomputed by the loader so the
 * hot path has no division:
 *   a bucket holds "credit"; it gains rate_per_s credit per nanosecond,
 *   a packet costs cost_credit = NS_PER_S * possible_cpus, and the bucket is
 *   capped at credit_max = max(burst * NS_PER_S, cost_credit), less
 *   COARSE_LAG_TICKS_MAX ticks of rate for a coarse-clock bucket. With one
 *   bucket per CPU this gives each CPU exactly rate_per_s / possible_cpus
 *   packets per second and a burst of burst / possible_cpus packets (at
 *   least one), so the node as a whole admits at most rate_per_s and burst.
 *   fill_ns is the time an empty bucket takes to fill (U64_MAX if rate 0);
 *   refilling for longer than that saturates, which keeps
 *   elapsed_ns * rate_per_s below credit_max and so free of overflow. */
/* biso_rule.flags: the bucket reads bpf_ktime_get_ns, not the coarse
 * (tick) clock. The loader sets it for a bucket that fills in fewer than
 * COARSE_FILL_TICKS_MIN ticks (ebpf/loader/src/limits.rs); a coarse bucket's
 * credit_max is two ticks of rate below the burst (RuleAbi::from_rule), so a
 * late coarse reading never lets it admit more than the burst allows. */
#define BISO_RULE_PRECISE_CLOCK 1

struct biso_rule {
	__u8 verdict;
	__u8 flags;
	__u16 reason_id;
	__u32 sample_one_in;
	__u32 rate_per_s;
	__u32 burst;
	__u64 cost_credit;
	__u64 credit_max;
	__u64 fill_ns;
};

/* One policy slot's scalar part. `loaded` is 0 until the loader has written
 * the slot completely. `generation` tags verdicts cached from this slot: the
 * loader gives every apply a generation above both slots' current ones, so a
 * verdict cached under an earlier policy never matches the live slot. 0 is
 * never used (it marks an empty per-CPU cache value). */
struct biso_slot {
	__u64 version;
	__u32 loaded;
	__u32 _pad0;
	__u64 generation;
	struct biso_rule default_rule;
};

/* The single control word: which slot packets use. Flipping it is the one
 * map update that switches policies. verdict_cache_off != 0 makes every
 * packet take the cache-miss path (LPM lookup, cache entry rewritten), so
 * benches can measure what a miss costs; 0, the state after load, is the
 * normal mode. */
struct biso_ctl {
	__u32 active_slot;
	__u32 verdict_cache_off;
};

struct biso_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct biso_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The verdict cache keys: biso_verdicts_v4 is keyed by the IPv4 source
 * address (IPv4-mapped IPv6 sources included) as 4 bytes in network order,
 * biso_verdicts_v6 by this. A 4-byte key hashes and compares faster than a
 * (family, 16-byte address) one: ~11 ns per IPv4 packet in this VM. */
struct biso_src6 {
	__u8 addr[16];
};

/* One source's per-CPU verdict cache value: the rule the tries gave it under
 * policy `generation`, and its token bucket. The bucket lives here (one
 * lookup per packet for both) and is kept when the rule is refreshed after a
 * policy swap, so a swap never hands a limited source a fresh burst; the new
 * rule's credit_max clamps it. A per-CPU value the kernel zero-filled (the
 * entry was created on another CPU) has generation 0: a miss. */
struct biso_verdict {
	__u64 generation;
	struct biso_rule rule;
	__u64 credit;
	__u64 last_ns; /* 0: bucket never used on this CPU, so full */
};

/* The front of the verdict cache: a direct-mapped per-CPU array per family
 * (biso_front_v4, biso_front_v6), 2^BITS entries. Its lookup is inlined by
 * the verifier from about kernel 6.10 (on the image's 6.1 it is a call to a
 * short function), where the LRU hash behind it is a kernel
 * call with jhash, so a hit costs a few instructions. A source's slot is the
 * top BITS bits of a multiplicative hash, which depend on every input bit:
 *   IPv4: (w * BISO_FRONT_HASH_MUL) >> (32 - BITS), w the 4 source bytes
 *         loaded as a native u32, so the sources of one /16 all differ;
 *   IPv6: ((lo * BISO_FRONT_HASH_MUL64 + hi) * BISO_FRONT_HASH_MUL64)
 *         >> (64 - BITS), lo and hi the two halves as native u64s, so
 *         addresses differing in one half never share a slot.
 * ebpf/loader/src/abi.rs mirrors the constants and the index. */
#define BISO_FRONT_V4_BITS 16
#define BISO_FRONT_V6_BITS 14
#define BISO_FRONT_HASH_MUL 0x9E3779B1u
#define BISO_FRONT_HASH_MUL64 0x9E3779B97F4A7C15ull

/* One front slot: the verdict cache value of `src` (IPv4: the first 4
 * bytes, the rest 0). v.generation 0 marks an empty slot. A used yellow
 * bucket (last_ns != 0) lives in exactly one place per CPU, its source's
 * front slot or the LRU (biso_verdicts_v4/_v6): a source losing its slot
 * puts a used bucket into the LRU, and a yellow source whose slot has no
 * used bucket takes its bucket out of the LRU. */
struct biso_front {
	struct biso_verdict v;
	__u8 src[16];
};

/* A yellow packet's headers, copied to user space. */
struct biso_sample {
	__u64 ts_ns;
	__u64 policy_version;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 packet_len;
	__u16 sport; /* host order; 0 when absent (non-first fragment, not TCP/UDP) */
	__u16 dport;
	__u16 reason_id;
	__u8 family; /* 4 or 6 */
	__u8 proto;  /* IP protocol / IPv6 upper-layer next header */
	__u8 verdict;
	__u8 passed; /* 1: within the bucket, 0: limited (dropped) */
	__u8 _pad0[2];
};

/* Counter indices into the one per-CPU counters value (an array of u64). */
enum biso_counter {
	BISO_C_GREEN_PACKETS = 0,
	BISO_C_GREEN_BYTES,
	BISO_C_YELLOW_PASS_PACKETS,
	BISO_C_YELLOW_PASS_BYTES,
	BISO_C_YELLOW_LIMITED_PACKETS,
	BISO_C_YELLOW_LIMITED_BYTES,
	BISO_C_RED_PACKETS,
	BISO_C_RED_BYTES,
	BISO_C_NON_IP_PACKETS,
	BISO_C_NO_POLICY_PACKETS,
	BISO_C_FRAGMENT_PACKETS,
	BISO_C_SAMPLES,
	BISO_C_SAMPLES_LOST,
	BISO_C_ETH_TRUNCATED,
	BISO_C_VLAN_TRUNCATED,
	BISO_C_VLAN_TOO_MANY,
	BISO_C_IPV4_TRUNCATED,
	BISO_C_IPV4_BAD_VERSION,
	BISO_C_IPV4_BAD_IHL,
	BISO_C_IPV4_BAD_TOTAL_LEN,
	BISO_C_IPV6_TRUNCATED,
	BISO_C_IPV6_BAD_VERSION,
	BISO_C_IPV6_BAD_PAYLOAD_LEN,
	BISO_C_IPV6_EXT_TRUNCATED,
	BISO_C_IPV6_EXT_TOO_MANY,
	BISO_C_BUCKETS_PARKED, /* used buckets moved to the LRU by a source taking their slot */
	BISO_C_BUCKETS_LOST,   /* ...of which the LRU refused one: it restarts full */
	BISO_C_COUNT,
};

#endif
