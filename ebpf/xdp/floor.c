// SPDX-License-Identifier: GPL-2.0
/*
 * Floor programs for BPF_PROG_TEST_RUN measurements (not attached anywhere).
 * They show what the test-run loop itself costs per packet, so the BISO
 * numbers can be read against it:
 *   floor_pass        -> XDP_PASS, touching nothing: the harness alone
 *   floor_parse_ipv4  -> the Ethernet + IPv4 checks biso_xdp makes on its
 *                        fast path, no maps: the harness plus parsing
 * floor_parse_ipv4 drops what biso_xdp would count as malformed (truncated
 * Ethernet/IPv4 header, bad version, IHL or total length) and passes
 * everything else.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int floor_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int floor_parse_ipv4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__be16 proto = *(__be16 *)((void *)eth + __builtin_offsetof(struct ethhdr, h_proto));
	if (proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	if (ip->version != 4)
		return XDP_DROP;
	__u32 hlen = ip->ihl * 4;
	if (hlen < sizeof(*ip) || (void *)ip + hlen > data_end)
		return XDP_DROP;
	__u32 total = bpf_ntohs(ip->tot_len);
	/* Lengths, not pointers: see handle_ipv4 in biso.c (kernel 6.1). */
	__u64 avail = data_end - (void *)ip;
	if (total < hlen || total > avail)
		return XDP_DROP;
	return XDP_PASS;
}
