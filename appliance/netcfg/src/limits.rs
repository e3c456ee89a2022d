//! Every bound of network bring-up in one place: retries, timeouts, message
//! and buffer sizes, list lengths. Relationships between them are checked at
//! compile time at the bottom.

use std::time::Duration;

// ---- interfaces and netlink ----

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1 for the NUL).
pub const INTERFACE_NAME_LEN_MAX: usize = 15;

/// How long one netlink request may wait for the kernel's answer. The kernel
/// answers rtnetlink requests synchronously, so hitting this means the socket
/// is broken, not that the kernel is slow.
pub const NETLINK_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most messages one netlink dump may return before it is abandoned; a
/// node has a handful of links and addresses, so this only stops a runaway.
pub const NETLINK_DUMP_MESSAGES_MAX: usize = 65_536;

/// How often `configure` looks again for an interface the kernel has not
/// registered yet (a NIC driver may still be probing when PID 1 starts).
pub const INTERFACE_WAIT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Longest wait, after setting a link up, for the kernel to report it
/// running. Until then its queue drops what is sent (the first DISCOVER
/// would be lost and the exchange would wait a 4 s retransmission); a link
/// without carrier after this is configured anyway.
pub const LINK_RUNNING_WAIT_MAX: Duration = Duration::from_secs(3);

/// How often the link state is polled during that wait.
pub const LINK_RUNNING_POLL_INTERVAL: Duration = Duration::from_millis(20);

// ---- kernel command line ----

/// Most DNS servers kept: glibc and musl read at most three `nameserver`
/// lines from resolv.conf (`MAXNS`), so a fourth would be silently unused.
pub const DNS_SERVERS_COUNT_MAX: usize = 3;

// ---- DHCP messages ----

/// Shortest DHCP message we send: BOOTP relays and old servers drop
/// anything shorter than the 300-byte BOOTP minimum (RFC 1542 §2.1).
pub const DHCP_MESSAGE_SIZE_BYTES_MIN: usize = 300;

/// Largest DHCP message (options included) accepted, and the value of the
/// Maximum DHCP Message Size option we send (RFC 2132 §9.10: it counts the
/// IP and UDP headers; 1500 is the Ethernet MTU).
pub const DHCP_MESSAGE_SIZE_BYTES_MAX: usize = 1500;

/// Receive buffer for one packet: an IPv4 header with the largest options
/// (60 bytes) + UDP header (8) + the largest message, rounded up. A packet
/// that fills it is truncated and rejected.
pub const DHCP_PACKET_BUFFER_BYTES: usize = 2048;

/// Fixed BOOTP header (236 bytes) plus the 4-byte magic cookie: no valid
/// reply is shorter.
pub const DHCP_HEADER_AND_COOKIE_BYTES: usize = 240;

/// TTL of the IP header we build for packets sent before the interface has
/// an address (RFC 1700 default).
pub const DHCP_IP_TTL: u8 = 64;

// ---- DHCP timing (RFC 2131 §4.1, §4.4.5) ----

/// First retransmission timeout of a DISCOVER or REQUEST.
pub const DHCP_RETRANSMIT_INITIAL: Duration = Duration::from_secs(4);

/// The retransmission timeout doubles up to this.
pub const DHCP_RETRANSMIT_MAX: Duration = Duration::from_secs(64);

/// Each retransmission timeout is randomized by up to this much either way,
/// so clients that booted together do not retransmit in lockstep.
pub const DHCP_RETRANSMIT_JITTER: Duration = Duration::from_secs(1);

/// Most DISCOVER → REQUEST rounds (a NAK or an unanswered REQUEST starts a
/// new round) one acquisition makes before giving up, whatever its timeout.
pub const DHCP_ACQUIRE_ROUNDS_MAX: u32 = 16;

/// A REQUEST in REQUESTING is sent this many times (4, 8, 16, 32 s apart,
/// about a minute) before the client gives up on the offer and starts over.
pub const DHCP_REQUEST_ATTEMPTS_MAX: u32 = 4;

/// Pause before starting over after a NAK, so a server that NAKs every
/// REQUEST does not get a request storm.
pub const DHCP_NAK_RESTART_DELAY: Duration = Duration::from_secs(1);

/// In RENEWING and REBINDING, the next REQUEST goes out after half the time
/// left to T2 (or to expiry), but never sooner than this (RFC 2131 §4.4.5).
pub const DHCP_RENEW_RETRY_MIN: Duration = Duration::from_secs(60);

/// Shortest lease accepted. A shorter one cannot be renewed within one
/// retransmission interval, so the node would flap between addresses.
pub const DHCP_LEASE_TIME_MIN: Duration = Duration::from_secs(10);

/// How long one renew or rebind exchange waits for the server's answer
/// (with retransmissions inside it) before the keeper schedules a retry.
pub const DHCP_RENEW_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

// ---- the lease keeper ----

/// Longest sleep of the lease keeper thread, so a stop request is seen
/// promptly.
pub const KEEPER_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Timeout of one re-acquisition after the lease expired or was NAKed.
pub const KEEPER_REACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between failed re-acquisitions grows to this.
pub const KEEPER_REACQUIRE_BACKOFF_MAX: Duration = Duration::from_secs(300);

const _: () = assert!(DHCP_RETRANSMIT_INITIAL.as_secs() <= DHCP_RETRANSMIT_MAX.as_secs());
const _: () = assert!(DHCP_RETRANSMIT_JITTER.as_millis() < DHCP_RETRANSMIT_INITIAL.as_millis());
const _: () = assert!(DHCP_MESSAGE_SIZE_BYTES_MIN < DHCP_MESSAGE_SIZE_BYTES_MAX);
const _: () = assert!(DHCP_HEADER_AND_COOKIE_BYTES < DHCP_MESSAGE_SIZE_BYTES_MIN);
// 60-byte IPv4 header with options + 8-byte UDP header + the largest message.
const _: () = assert!(60 + 8 + DHCP_MESSAGE_SIZE_BYTES_MAX <= DHCP_PACKET_BUFFER_BYTES);
// The advertised maximum must respect RFC 2132's floor of 576.
const _: () = assert!(DHCP_MESSAGE_SIZE_BYTES_MAX >= 576);
const _: () = assert!(DHCP_MESSAGE_SIZE_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(DHCP_RENEW_EXCHANGE_TIMEOUT.as_secs() < DHCP_RENEW_RETRY_MIN.as_secs());
const _: () = assert!(KEEPER_POLL_INTERVAL.as_secs() <= DHCP_LEASE_TIME_MIN.as_secs());
const _: () = assert!(DNS_SERVERS_COUNT_MAX >= 1);
