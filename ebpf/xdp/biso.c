// SPDX-License-Identifier: GPL-2.0
/*
 * BISO traffic lights at XDP: per-source-address verdicts from a
 * double-buffered pair of LPM tries.
 *
 *   green  -> XDP_PASS
 *   yellow -> XDP_PASS within a per-CPU token bucket for the source address,
 *             else XDP_DROP; 1 in sample_one_in yellow packets is copied
 *             (headers only) to the biso_samples ring buffer
 *   red    -> XDP_DROP, counted
 *
 * Policy swap: the loader writes the inactive slot (tries + biso_slots entry)
 * completely, then flips biso_ctl.active_slot with one map update. A packet
 * reads active_slot once and uses only that slot, so it sees either the old
 * or the new policy, never a mix. The loader then waits an RCU grace period
 * (see biso_grace) before it may touch the old slot again.
 *
 * Malformed input is never passed through unparsed: each kind of malformed
 * IP packet is dropped and counted under its own counter. Non-IP ethertypes
 * (ARP, LLDP, ...) pass: the traffic lights judge IP sources only.
 *
 * Map sizes here are placeholders; the loader sets every max_entries from
 * ebpf/loader/src/limits.rs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "biso.h"

char LICENSE[] SEC("license") = "GPL";

struct biso_counters {
	__u64 c[BISO_C_COUNT];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct biso_ctl);
} biso_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct biso_slot);
} biso_slots SEC(".maps");

#define BISO_LPM(name, keytype)                                                \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                           \
		__uint(max_entries, 1);                                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, keytype);                                          \
		__type(value, struct biso_rule);                               \
	} name SEC(".maps")

BISO_LPM(biso_v4_0, struct biso_lpm_v4);
BISO_LPM(biso_v4_1, struct biso_lpm_v4);
BISO_LPM(biso_v6_0, struct biso_lpm_v6);
BISO_LPM(biso_v6_1, struct biso_lpm_v6);

/* Per-CPU verdict caches in front of the tries (and the yellow buckets),
 * one pair per family. A deep policy makes the LPM lookup the costliest step
 * (a few ns per trie level); the front array answers for every source seen
 * before under the live policy generation in a few instructions. Separate
 * maps per family keep a flood of spoofed IPv6 sources from evicting IPv4
 * entries.
 *
 * The front (biso.h: struct biso_front) is direct-mapped, so two sources
 * can share a slot; the one that arrives takes the slot. An entry pushed
 * out whose bucket was never used (green and red sources, fresh yellow ones)
 * is simply dropped: the next packet re-reads the tries. A used bucket
 * (yellow now, or before a swap) moves to the LRU hash behind it and moves
 * back when its source is yellow in the slot again, so sharing a slot never
 * resets a bucket. Only such buckets enter the LRU, one per source pushed
 * out: new green or red sources never do, however many, though a flood that
 * lands on slots of yellow sources does push their buckets there, and the LRU
 * evicts once more of them are out than it holds. The front is sized here
 * (not by the loader) because its index is computed from BISO_FRONT_*_BITS. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << BISO_FRONT_V4_BITS);
	__type(key, __u32);
	__type(value, struct biso_front);
} biso_front_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << BISO_FRONT_V6_BITS);
	__type(key, __u32);
	__type(value, struct biso_front);
} biso_front_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct biso_verdict);
} biso_verdicts_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 1);
	__type(key, struct biso_src6);
	__type(value, struct biso_verdict);
} biso_verdicts_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct biso_counters);
} biso_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} biso_samples SEC(".maps");

/*
 * Not used by the program. Updating a map-of-maps from user space makes the
 * kernel wait for an RCU grace period (maybe_wait_bpf_programs), i.e. until
 * every XDP invocation that might still be reading the previous slot has
 * finished. The loader updates biso_grace after each flip so the next apply
 * never rewrites a slot a packet is still using.
 */
struct biso_grace_inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} biso_grace_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct biso_grace_inner_map);
} biso_grace SEC(".maps");

struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

#define IPV4_MF 0x2000
#define IPV4_OFFSET_MASK 0x1fff
#define IPV6_FRAG_OFFSET_MASK 0xfff8

static __always_inline int malformed(struct biso_counters *cnt, __u32 idx)
{
	if (idx < BISO_C_COUNT)
		cnt->c[idx] += 1;
	return XDP_DROP;
}

static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_FRAGMENT ||
	       nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH;
}

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
	       proto == IPPROTO_SCTP;
}

/* What the parser hands to the judge: scalars and copies only, no packet
 * pointers, so the out-of-line biso_judge is verified once on its own. On
 * the inlined IPv4 path clang keeps these fields in registers. */
struct pkt_meta {
	__u64 bytes;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family; /* 4 or 6: saddr/daddr hold 4 or 16 bytes */
	__u8 proto;
	__u8 v4_mapped; /* IPv6 source ::ffff:a.b.c.d: judged by the IPv4 rules */
	__u8 _pad0;
};

/* A biso_samples record as bpf_ringbuf_reserve accounts it: the sample plus
 * the ring's 8-byte record header, rounded up to 8 bytes. */
#define BISO_SAMPLE_RECORD_BYTES ((sizeof(struct biso_sample) + 8 + 7) & ~7ULL)

static __always_inline void sample(struct biso_counters *cnt, const struct pkt_meta *m,
				   const struct biso_rule *rule, __u64 version, int passed)
{
	/* A full ring (user space not draining, e.g. during a flood) would
	 * make bpf_ringbuf_reserve fail anyway, but only after taking the
	 * ring's spinlock with interrupts off; two lock-free reads of its
	 * positions settle that case first. A consumer freeing space in
	 * between only turns this sample into a lost one, as a reserve that
	 * ran a moment earlier would have. */
	__u64 used_bytes = bpf_ringbuf_query(&biso_samples, BPF_RB_AVAIL_DATA);
	__u64 ring_bytes = bpf_ringbuf_query(&biso_samples, BPF_RB_RING_SIZE);
	if (used_bytes + BISO_SAMPLE_RECORD_BYTES > ring_bytes) {
		cnt->c[BISO_C_SAMPLES_LOST] += 1;
		return;
	}
	struct biso_sample *s = bpf_ringbuf_reserve(&biso_samples, sizeof(*s), 0);
	if (!s) {
		cnt->c[BISO_C_SAMPLES_LOST] += 1;
		return;
	}
	/* The precise clock whichever the bucket reads: only sampled packets
	 * pay for it. */
	s->ts_ns = bpf_ktime_get_ns();
	s->policy_version = version;
	__builtin_memcpy(s->saddr, m->saddr, 16);
	__builtin_memcpy(s->daddr, m->daddr, 16);
	s->packet_len = m->bytes;
	s->sport = m->sport;
	s->dport = m->dport;
	s->reason_id = rule->reason_id;
	s->family = m->family;
	s->proto = m->proto;
	s->verdict = rule->verdict;
	s->passed = passed;
	s->_pad0[0] = 0;
	s->_pad0[1] = 0;
	bpf_ringbuf_submit(s, 0);
	cnt->c[BISO_C_SAMPLES] += 1;
}

/* A cache value's (map value or a not yet inserted stack copy) bucket
 * credit at `now` under its current rule; nothing is stored. */
static __always_inline __u64 bucket_credit(const struct biso_verdict *v, __u64 now)
{
	const struct biso_rule *rule = &v->rule;
	if (v->last_ns == 0)
		return rule->credit_max;
	__u64 last = v->last_ns;
	__u64 elapsed = now > last ? now - last : 0;
	__u64 credit = v->credit;
	if (elapsed >= rule->fill_ns)
		credit = rule->credit_max;
	else
		credit += elapsed * rule->rate_per_s;
	/* Also clamps a bucket filled under a larger earlier rule. */
	if (credit > rule->credit_max)
		credit = rule->credit_max;
	return credit;
}

/* Brings the bucket up to `now` under its current rule. Never backwards: a
 * rule swap can move a bucket from the precise to the coarse clock, which
 * reads earlier; moving last_ns back would grant the same time twice. */
static __always_inline void bucket_advance(struct biso_verdict *v, __u64 now)
{
	v->credit = bucket_credit(v, now);
	if (now > v->last_ns)
		v->last_ns = now;
}

/* The token bucket on this CPU; returns 1 if the packet fits. */
static __always_inline int bucket_take(struct biso_verdict *v, __u64 now)
{
	bucket_advance(v, now);
	int pass = v->credit >= v->rule.cost_credit;
	if (pass)
		v->credit -= v->rule.cost_credit;
	return pass;
}

/* Before a cached yellow bucket takes a new rule (a policy swap): bring it
 * up to the precise time under the rule it was filled with. Otherwise the
 * new rule's rate would apply to the time between the old rule's last
 * coarse reading and now, which the old rule's hold-back was sized for, not
 * the new one's. Once per source and swap, so the precise clock is cheap
 * here. */
static __always_inline void bucket_settle(struct biso_verdict *v)
{
	if (v->rule.verdict != BISO_YELLOW || v->last_ns == 0)
		return;
	bucket_advance(v, bpf_ktime_get_ns());
}

static __always_inline int judge_yellow(struct biso_counters *cnt, const struct pkt_meta *m,
					struct biso_verdict *v, __u64 version)
{
	/* The coarse (tick) clock costs a few ns, the precise one ~20-40 ns
	 * (a TSC read). A coarse reading lags, so a bucket refilled at it
	 * cannot tell whether it saturated since; the loader gives coarse
	 * buckets a credit_max three ticks of rate below the burst, which keeps
	 * every window within what the burst allows, and uses the coarse clock
	 * only for buckets that take 12+ ticks to fill (ebpf/README.md). */
	__u64 now = (v->rule.flags & BISO_RULE_PRECISE_CLOCK) ? bpf_ktime_get_ns()
							       : bpf_ktime_get_coarse_ns();
	int passed = bucket_take(v, now);
	if (passed) {
		cnt->c[BISO_C_YELLOW_PASS_PACKETS] += 1;
		cnt->c[BISO_C_YELLOW_PASS_BYTES] += m->bytes;
	} else {
		cnt->c[BISO_C_YELLOW_LIMITED_PACKETS] += 1;
		cnt->c[BISO_C_YELLOW_LIMITED_BYTES] += m->bytes;
	}
	__u32 one_in = v->rule.sample_one_in;
	if (one_in) {
		__u64 seen = cnt->c[BISO_C_YELLOW_PASS_PACKETS] +
			     cnt->c[BISO_C_YELLOW_LIMITED_PACKETS];
		/* Same remainder, but a 32-bit division (several times
		 * cheaper than a 64-bit one on x86) until this CPU has seen
		 * 2^32 yellow packets. */
		__u32 rest = (seen >> 32) ? (__u32)(seen % one_in) : (__u32)seen % one_in;
		if (rest == 0)
			sample(cnt, m, &v->rule, version, passed);
	}
	return passed ? XDP_PASS : XDP_DROP;
}

/* The rule for the packet's source from the slot's tries (longest prefix),
 * else the slot's default. */
static __always_inline const struct biso_rule *trie_rule(const struct pkt_meta *m, __u32 slot,
							  const struct biso_slot *s)
{
	struct biso_rule *rule;
	if (m->family == 4 || m->v4_mapped) {
		struct biso_lpm_v4 key = { .prefixlen = 32 };
		__builtin_memcpy(key.addr, m->v4_mapped ? &m->saddr[12] : m->saddr, 4);
		rule = slot ? bpf_map_lookup_elem(&biso_v4_1, &key)
			    : bpf_map_lookup_elem(&biso_v4_0, &key);
	} else {
		struct biso_lpm_v6 key = { .prefixlen = 128 };
		__builtin_memcpy(key.addr, m->saddr, 16);
		rule = slot ? bpf_map_lookup_elem(&biso_v6_1, &key)
			    : bpf_map_lookup_elem(&biso_v6_0, &key);
	}
	return rule ? rule : &s->default_rule;
}

/* The source's front slot (biso.h explains the index). */
static __always_inline struct biso_front *front_slot(int v4, const __u8 *src)
{
	__u32 idx;
	if (v4) {
		__u32 w;
		__builtin_memcpy(&w, src, 4);
		idx = (w * BISO_FRONT_HASH_MUL) >> (32 - BISO_FRONT_V4_BITS);
		return bpf_map_lookup_elem(&biso_front_v4, &idx);
	}
	__u64 lo, hi;
	__builtin_memcpy(&lo, src, 8);
	__builtin_memcpy(&hi, &src[8], 8);
	idx = ((lo * BISO_FRONT_HASH_MUL64 + hi) * BISO_FRONT_HASH_MUL64) >> (64 - BISO_FRONT_V6_BITS);
	return bpf_map_lookup_elem(&biso_front_v6, &idx);
}

/* This CPU's LRU value of the source, if the key exists. */
static __always_inline struct biso_verdict *lru_value(int v4, const __u8 *src)
{
	if (v4) {
		__u32 k;
		__builtin_memcpy(&k, src, 4);
		return bpf_map_lookup_elem(&biso_verdicts_v4, &k);
	}
	struct biso_src6 k;
	__builtin_memcpy(k.addr, src, 16);
	return bpf_map_lookup_elem(&biso_verdicts_v6, &k);
}

/* An empty value: no generation, no used bucket (as a new entry starts). */
static __always_inline void verdict_clear(struct biso_verdict *v)
{
	v->generation = 0;
	v->credit = 0;
	v->last_ns = 0;
}

/* A used bucket (last_ns != 0: yellow now or before a swap) moves from a
 * value (a front slot being taken, or the stack copy of the fallback) to the
 * LRU; unused ones (full, as a new entry starts) go nowhere. An existing key
 * (its value on this CPU emptied when the bucket moved out) is written in
 * place: an update would take a free element first, and once the LRU is
 * full that evicts another source's bucket even though the key exists. */
static __always_inline void bucket_to_lru(struct biso_counters *cnt, int v4, const __u8 *src,
					  const struct biso_verdict *v)
{
	if (v->last_ns == 0)
		return;
	struct biso_verdict *lv = lru_value(v4, src);
	long rc = 0;
	if (lv) {
		*lv = *v;
	} else if (v4) {
		__u32 k;
		__builtin_memcpy(&k, src, 4);
		rc = bpf_map_update_elem(&biso_verdicts_v4, &k, v, BPF_ANY);
	} else {
		struct biso_src6 k;
		__builtin_memcpy(k.addr, src, 16);
		rc = bpf_map_update_elem(&biso_verdicts_v6, &k, v, BPF_ANY);
	}
	cnt->c[BISO_C_BUCKETS_PARKED] += 1;
	if (rc)
		cnt->c[BISO_C_BUCKETS_LOST] += 1;
}

/* Moves the source's entry on this CPU out of the LRU into `out`; 0 if it
 * has none (a value another CPU's update zero-filled is none: generation 0,
 * last_ns 0, as a new entry). */
static __always_inline int bucket_from_lru(int v4, const __u8 *src, struct biso_verdict *out)
{
	struct biso_verdict *lv = lru_value(v4, src);
	if (!lv || lv->generation == 0)
		return 0;
	*out = *lv;
	/* Emptied on this CPU, not deleted: a delete would take every CPU's
	 * value of the key with it. */
	verdict_clear(lv);
	return 1;
}

/* The verdict for one parsed IP packet. Inlined into the untagged IPv4 fast
 * path; every other shape goes through the out-of-line biso_judge. */
static __always_inline int judge(struct biso_counters *cnt, const struct pkt_meta *m)
{
	__u32 zero = 0;
	struct biso_ctl *ctl = bpf_map_lookup_elem(&biso_ctl, &zero);
	if (!ctl)
		return XDP_PASS;
	/* Read once: every lookup below uses this slot, never a re-read. */
	__u32 slot = *(volatile __u32 *)&ctl->active_slot & 1;
	struct biso_slot *s = bpf_map_lookup_elem(&biso_slots, &slot);
	if (!s || !s->loaded) {
		cnt->c[BISO_C_NO_POLICY_PACKETS] += 1;
		return XDP_PASS;
	}
	/* The slot's generation, not a re-read of biso_ctl: a verdict cached
	 * by this packet is tagged with the policy it was computed from even
	 * if a swap happens meanwhile. */
	__u64 generation = s->generation;

	int v4 = m->family == 4 || m->v4_mapped;
	/* The cache key: 4 bytes and 12 zeros for IPv4, the front's layout. */
	__u8 src[16] = {};
	if (v4)
		__builtin_memcpy(src, m->v4_mapped ? &m->saddr[12] : m->saddr, 4);
	else
		__builtin_memcpy(src, m->saddr, 16);
	__u64 src_lo, src_hi;
	__builtin_memcpy(&src_lo, src, 8);
	__builtin_memcpy(&src_hi, &src[8], 8);

	struct biso_front *f = front_slot(v4, src);
	struct biso_verdict fresh;
	struct biso_verdict *v;
	int fallback = 0;
	if (f) {
		/* Keeps clang from forming &f->v before the null check, which
		 * the verifier rejects. */
		asm volatile("" : "+r"(f));
		__u64 f_lo, f_hi;
		__builtin_memcpy(&f_lo, f->src, 8);
		__builtin_memcpy(&f_hi, &f->src[8], 8);
		if (f->v.generation != 0 && (f_lo != src_lo || f_hi != src_hi)) {
			/* Another source's slot: this one takes it. */
			bucket_to_lru(cnt, v4, f->src, &f->v);
			f->v.generation = 0;
		}
		v = &f->v;
	} else {
		/* Unreachable (the index is below the array's size, which the
		 * loader checks); judged correctly anyway, through the LRU. */
		v = &fresh;
		fallback = 1;
	}
	if (fallback || v->generation == 0) {
		/* New to the slot. */
		verdict_clear(v);
		if (f)
			__builtin_memcpy(f->src, src, 16);
	}
	if (v->generation != generation || ctl->verdict_cache_off) {
		/* A new entry, or one cached under another policy: the tries
		 * decide. */
		const struct biso_rule *rule = trie_rule(m, slot, s);
		/* A yellow source with no used bucket here may have left one
		 * in the LRU when it lost its slot, maybe while it was green or
		 * red: it comes back. Only yellow sources pay for this lookup,
		 * so a flood of new green or red sources never touches the
		 * LRU. */
		if (rule->verdict == BISO_YELLOW && v->last_ns == 0)
			bucket_from_lru(v4, src, v);
		/* The bucket (credit, last_ns) stays: a swap is no reason for a
		 * fresh burst. It is settled only when the policy changed: with
		 * the cache switched off the same rule is re-read each packet. */
		if (v->generation != 0 && v->generation != generation)
			bucket_settle(v);
		v->rule = *rule;
		v->generation = generation;
	}

	int action;
	__u8 verdict = v->rule.verdict;
	if (verdict == BISO_GREEN) {
		cnt->c[BISO_C_GREEN_PACKETS] += 1;
		cnt->c[BISO_C_GREEN_BYTES] += m->bytes;
		action = XDP_PASS;
	} else if (verdict == BISO_YELLOW) {
		action = judge_yellow(cnt, m, v, s->version);
	} else {
		/* Red, and any verdict byte the loader would never write:
		 * fail closed. */
		cnt->c[BISO_C_RED_PACKETS] += 1;
		cnt->c[BISO_C_RED_BYTES] += m->bytes;
		action = XDP_DROP;
	}
	/* Without a front slot the entry goes back where it came from, after
	 * the bucket took this packet. */
	if (fallback)
		bucket_to_lru(cnt, v4, src, v);
	return action;
}

/*
 * Global (not static) and noinline on purpose: the verifier checks a global
 * function once, independently of its callers, instead of once per parser
 * path (VLAN count x IPv6 extension chain shapes), which otherwise exceeds
 * the 1M-instruction verification budget. Only the rarer shapes (VLAN tags,
 * IPv6) pay for the call; untagged IPv4 inlines judge().
 */
__attribute__((noinline)) int biso_judge(struct pkt_meta *m, struct biso_counters *cnt)
{
	if (!m || !cnt)
		return XDP_DROP;
	return judge(cnt, m);
}

/* `inline_judge` is a compile-time constant at each call site: 1 only for
 * the untagged IPv4 fast path. */
static __always_inline int handle_ipv4(struct xdp_md *ctx, struct biso_counters *cnt,
				       void *cur, __u64 bytes, int inline_judge)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = cur;
	if ((void *)(ip + 1) > data_end)
		return malformed(cnt, BISO_C_IPV4_TRUNCATED);
	if (ip->version != 4)
		return malformed(cnt, BISO_C_IPV4_BAD_VERSION);
	__u32 hlen = ip->ihl * 4;
	if (hlen < sizeof(*ip))
		return malformed(cnt, BISO_C_IPV4_BAD_IHL);
	if (cur + hlen > data_end)
		return malformed(cnt, BISO_C_IPV4_TRUNCATED);
	__u32 total = bpf_ntohs(ip->tot_len);
	/* Shorter than the frame is fine (Ethernet pads to 60 bytes); longer
	 * means a truncated or lying packet. Compared as lengths, not as
	 * `cur + total > data_end`: the image's kernel (6.1) keeps no bounds
	 * through a byte swap and refuses pointer arithmetic with the result
	 * ("math between pkt pointer and register with unbounded min value");
	 * newer verifiers track them, so only a 6.1 boot caught it. */
	__u64 avail = data_end - cur;
	if (total < hlen || total > avail)
		return malformed(cnt, BISO_C_IPV4_BAD_TOTAL_LEN);

	struct pkt_meta m = { .bytes = bytes, .family = 4, .proto = ip->protocol };
	__builtin_memcpy(m.saddr, &ip->saddr, 4);
	__builtin_memcpy(m.daddr, &ip->daddr, 4);
	__u16 frag = bpf_ntohs(ip->frag_off);
	int has_l4 = 1;
	if (frag & (IPV4_MF | IPV4_OFFSET_MASK)) {
		cnt->c[BISO_C_FRAGMENT_PACKETS] += 1;
		/* Judged by source like any packet; only the first fragment
		 * carries ports, which matter for samples only. */
		has_l4 = (frag & IPV4_OFFSET_MASK) == 0;
	}
	if (has_l4 && has_ports(m.proto)) {
		__be16 *ports = cur + hlen;
		if ((void *)(ports + 2) <= data_end) {
			m.sport = bpf_ntohs(ports[0]);
			m.dport = bpf_ntohs(ports[1]);
		}
	}
	if (inline_judge)
		return judge(cnt, &m);
	return biso_judge(&m, cnt);
}

static __always_inline int handle_ipv6(struct xdp_md *ctx, struct biso_counters *cnt,
				       void *cur, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = cur;
	if ((void *)(ip6 + 1) > data_end)
		return malformed(cnt, BISO_C_IPV6_TRUNCATED);
	if (ip6->version != 6)
		return malformed(cnt, BISO_C_IPV6_BAD_VERSION);
	__u32 payload = bpf_ntohs(ip6->payload_len);
	/* Offsets from here on are scalars read through bpf_xdp_load_bytes:
	 * the verifier need not track a packet pointer per chain shape. */
	__u32 off = (void *)(ip6 + 1) - data;
	__u32 frame_len = data_end - data;
	/* payload_len 0 is a jumbogram (RFC 2675): judged by source like
	 * anything else. */
	if (payload != 0 && off + payload > frame_len)
		return malformed(cnt, BISO_C_IPV6_BAD_PAYLOAD_LEN);

	struct pkt_meta m = { .bytes = bytes, .family = 6 };
	__builtin_memcpy(m.saddr, &ip6->saddr, 16);
	__builtin_memcpy(m.daddr, &ip6->daddr, 16);
	__u8 nh = ip6->nexthdr;
	int upper_found = 0;
	int fragment = 0;
	int later_fragment = 0;
	for (int i = 0; i < BISO_IPV6_EXT_HDRS_MAX; i++) {
		if (!is_ipv6_ext(nh)) {
			upper_found = 1;
			break;
		}
		if (nh == IPPROTO_FRAGMENT) {
			struct ipv6_frag fh;
			if (bpf_xdp_load_bytes(ctx, off, &fh, sizeof(fh)) < 0)
				return malformed(cnt, BISO_C_IPV6_EXT_TRUNCATED);
			fragment = 1;
			nh = fh.nexthdr;
			off += sizeof(fh);
			if (bpf_ntohs(fh.frag_off) & IPV6_FRAG_OFFSET_MASK) {
				/* The rest of the chain is in the first fragment. */
				later_fragment = 1;
				upper_found = 1;
				break;
			}
			continue;
		}
		struct ext_hdr eh;
		if (bpf_xdp_load_bytes(ctx, off, &eh, sizeof(eh)) < 0)
			return malformed(cnt, BISO_C_IPV6_EXT_TRUNCATED);
		__u32 len = nh == IPPROTO_AH ? ((__u32)eh.hdrlen + 2) * 4
					     : ((__u32)eh.hdrlen + 1) * 8;
		if (off + len > frame_len)
			return malformed(cnt, BISO_C_IPV6_EXT_TRUNCATED);
		nh = eh.nexthdr;
		off += len;
	}
	if (!upper_found && is_ipv6_ext(nh))
		return malformed(cnt, BISO_C_IPV6_EXT_TOO_MANY);
	if (fragment)
		cnt->c[BISO_C_FRAGMENT_PACKETS] += 1;
	m.proto = nh;
	if (!later_fragment && has_ports(nh)) {
		__be16 ports[2];
		if (bpf_xdp_load_bytes(ctx, off, ports, sizeof(ports)) == 0) {
			m.sport = bpf_ntohs(ports[0]);
			m.dport = bpf_ntohs(ports[1]);
		}
	}

	/* IPv4-mapped sources (::ffff:a.b.c.d) are judged by the IPv4 rules,
	 * as metanode_biso::CompiledPolicy::lookup does. */
	if (ip6->saddr.in6_u.u6_addr32[0] == 0 && ip6->saddr.in6_u.u6_addr32[1] == 0 &&
	    ip6->saddr.in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff))
		m.v4_mapped = 1;
	return biso_judge(&m, cnt);
}

SEC("xdp")
int biso_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct biso_counters *cnt = bpf_map_lookup_elem(&biso_counters, &zero);
	if (!cnt)
		return XDP_PASS; /* index 0 of a 1-entry array: cannot miss */
	__u64 bytes = data_end - data;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return malformed(cnt, BISO_C_ETH_TRUNCATED);
	/* One 16-bit load: struct ethhdr is packed, so eth->h_proto would be
	 * read a byte at a time. */
	__be16 proto = *(__be16 *)((void *)eth + __builtin_offsetof(struct ethhdr, h_proto));
	void *cur = eth + 1;
	/* The common case first, with the judge inlined (no call). */
	if (proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(ctx, cnt, cur, bytes, 1);
#pragma unroll
	for (int i = 0; i < BISO_VLAN_TAGS_MAX; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_tag *tag = cur;
		if ((void *)(tag + 1) > data_end)
			return malformed(cnt, BISO_C_VLAN_TRUNCATED);
		proto = tag->encapsulated_proto;
		cur = tag + 1;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return malformed(cnt, BISO_C_VLAN_TOO_MANY);
	if (proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(ctx, cnt, cur, bytes, 0);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle_ipv6(ctx, cnt, cur, bytes);
	cnt->c[BISO_C_NON_IP_PACKETS] += 1;
	return XDP_PASS;
}
