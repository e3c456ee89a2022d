// SPDX-License-Identifier: GPL-2.0
/*
 * A packet generator for the drop-rate bench (never attached): run by
 * BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES), the
 * way xdp-tools' xdp-trafficgen works. For each frame it writes the IPv4
 * source of the next of `gen_sources_count` /24s from `gen_source_base`
 * (host x.y.z.9, as the bench's red_sources), fixes the header checksum, and
 * redirects it out of `gen_ifindex`: a veth whose peer runs the filter under
 * test. Redirected frames reach the peer as xdp_frames, so an XDP program
 * there judges them before any skb exists, as it would behind a NIC driver;
 * without one (nftables) the peer builds an skb first. The AF_PACKET
 * generator instead hands veth an skb with little headroom, which veth
 * copies into a fresh page before XDP may see it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader (metanode_ebpf::LiveGenerator) before load. */
volatile const __u32 gen_ifindex = 0;
volatile const __u32 gen_source_base = 0; /* host order, low byte 0 */
volatile const __u32 gen_sources_count = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

SEC("xdp")
int gen_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return XDP_ABORTED;
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	if (!seq)
		return XDP_ABORTED;
	__u32 count = gen_sources_count;
	__u32 i = count ? (__u32)*seq % count : 0;
	*seq += 1;
	ip->saddr = bpf_htonl(gen_source_base + (i << 8) + 9);
	ip->check = 0;
	__u32 sum = 0;
	__u16 *w = (void *)ip;
#pragma unroll
	for (int k = 0; k < 10; k++)
		sum += w[k];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = (__u16)~sum;
	return bpf_redirect(gen_ifindex, 0);
}
