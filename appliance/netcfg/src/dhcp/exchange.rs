//! The client side of the DHCP exchanges (RFC 2131 §3.1, §4.4), written
//! against [`DhcpIo`] so the whole protocol logic — xid checks, the
//! retransmission schedule, NAK handling, the caller's deadline — runs in unit
//! tests against a scripted server on a virtual clock.
//!
//! Acquisition: DISCOVER (retransmitted) → first valid OFFER → REQUEST
//! (retransmitted, at most [`DHCP_REQUEST_ATTEMPTS_MAX`] times) → ACK. A NAK,
//! or a REQUEST nobody answers, starts over with a fresh xid.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::lease::Lease;
use super::message::{
    BuildError, ClientIdentity, LeaseParams, Reply, ReplyError, RequestKind, build_request,
    parse_reply,
};
use crate::limits::{
    DHCP_ACQUIRE_ROUNDS_MAX, DHCP_NAK_RESTART_DELAY, DHCP_PACKET_BUFFER_BYTES,
    DHCP_REQUEST_ATTEMPTS_MAX, DHCP_RETRANSMIT_INITIAL, DHCP_RETRANSMIT_JITTER,
    DHCP_RETRANSMIT_MAX,
};

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:67 out of the client's interface.
    Broadcast,
    /// A server's unicast address, port 67.
    Server(Ipv4Addr),
}

/// What the exchanges need from the outside world: a clock, a way to send
/// and receive DHCP payloads (the transport adds UDP/IP), and randomness.
pub trait DhcpIo {
    fn now(&self) -> Instant;
    fn send(&mut self, message: &[u8], to: Destination) -> io::Result<()>;
    /// Wait until a packet arrives (its DHCP payload is copied into
    /// `buffer`, the length returned) or `deadline` passes (`None`).
    fn recv(&mut self, buffer: &mut [u8], deadline: Instant) -> io::Result<Option<usize>>;
    /// Sleep until `deadline`.
    fn sleep_until(&mut self, deadline: Instant);
    /// A uniformly random value, for xids and retransmission jitter.
    fn random_u32(&mut self) -> u32;
}

/// Why an acquisition ended without a lease. The counters tell an operator
/// at a glance whether anything answered at all.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error(
        "no lease within {waited:?}: sent {discovers_sent} DISCOVER and {requests_sent} REQUEST, \
         got {offers_received} OFFER and {naks_received} NAK{}",
        last_ignored.as_ref().map(|r| format!(", ignored {ignored_count} other packets (last: {r})")).unwrap_or_default()
    )]
    NoLease {
        waited: Duration,
        discovers_sent: u32,
        requests_sent: u32,
        offers_received: u32,
        naks_received: u32,
        ignored_count: u32,
        last_ignored: Option<ReplyError>,
    },
    #[error("cannot send or receive dhcp packets")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Why a renewal or rebinding got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("no answer from {to} within {waited:?} ({requests_sent} REQUEST sent)")]
    NoAnswer {
        to: String,
        waited: Duration,
        requests_sent: u32,
    },
    #[error("cannot send or receive dhcp packets")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What the server said to a renewal or rebinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The lease was extended (the `Lease` given has been updated).
    Extended,
    /// The server refused: the address must go and discovery start over.
    Nak { message: Option<String> },
}

#[derive(Default)]
struct Counters {
    discovers_sent: u32,
    requests_sent: u32,
    offers_received: u32,
    naks_received: u32,
    ignored_count: u32,
    last_ignored: Option<ReplyError>,
}

/// Retransmission timeouts: 4 s doubling to 64 s, each ± up to 1 s.
struct Backoff {
    next_base: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next_base: DHCP_RETRANSMIT_INITIAL,
        }
    }

    fn next(&mut self, io: &mut impl DhcpIo) -> Duration {
        let base = self.next_base;
        self.next_base = (self.next_base * 2).min(DHCP_RETRANSMIT_MAX);
        let jitter_ms = DHCP_RETRANSMIT_JITTER.as_millis() as u64;
        let offset_ms = u64::from(io.random_u32()) % (2 * jitter_ms + 1);
        (base + Duration::from_millis(offset_ms)).saturating_sub(DHCP_RETRANSMIT_JITTER)
    }
}

/// What to do with a reply while waiting in one exchange.
enum Verdict<T> {
    Done(T),
    KeepWaiting,
}

/// One message being (re)sent until it is answered.
struct Round<'a> {
    to: Destination,
    xid: u32,
    mac: &'a [u8; 6],
    /// When the acquisition or renewal began (for the `secs` field).
    started_at: Instant,
    /// Give up after this many unanswered sends (`None`: only the deadline).
    attempts_max: Option<u32>,
    deadline: Instant,
}

/// Send the message `build(secs)` makes, retransmitting on the backoff
/// schedule, until `judge` accepts a reply, `attempts_max` messages went
/// unanswered, or the deadline passes (`Ok(None)` for both).
fn exchange<T>(
    io: &mut impl DhcpIo,
    round: &Round<'_>,
    counters: &mut Counters,
    mut build: impl FnMut(u16) -> Result<Vec<u8>, BuildError>,
    mut on_send: impl FnMut(&mut Counters),
    mut judge: impl FnMut(Reply, &mut Counters) -> Verdict<T>,
) -> Result<Option<T>, io::Error> {
    let Round {
        to,
        xid,
        mac,
        started_at,
        attempts_max,
        deadline,
    } = *round;
    let mut backoff = Backoff::new();
    let mut buffer = vec![0u8; DHCP_PACKET_BUFFER_BYTES];
    let mut attempts = 0u32;
    loop {
        let now = io.now();
        if now >= deadline || attempts_max.is_some_and(|max| attempts >= max) {
            return Ok(None);
        }
        let secs =
            u16::try_from(now.saturating_duration_since(started_at).as_secs()).unwrap_or(u16::MAX);
        let message = build(secs).map_err(|err| io::Error::other(err.to_string()))?;
        attempts += 1;
        on_send(counters);
        if let Err(err) = io.send(&message, to)
            && !is_transient(&err)
        {
            return Err(err);
        }
        let retransmit_at = now
            .checked_add(backoff.next(io))
            .map_or(deadline, |t| t.min(deadline));
        while let Some(len) = io.recv(&mut buffer, retransmit_at)? {
            let Some(payload) = buffer.get(..len) else {
                continue;
            };
            match parse_reply(payload, xid, mac) {
                Ok(reply) => {
                    if let Verdict::Done(value) = judge(reply, counters) {
                        return Ok(Some(value));
                    }
                }
                Err(ReplyError::OtherTransaction { .. }) => {}
                Err(err) => {
                    counters.ignored_count += 1;
                    counters.last_ignored = Some(err);
                }
            }
        }
    }
}

/// Errors a send may hit while the link is still coming up (no carrier
/// yet, queue full); the next retransmission tries again.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ENETDOWN | libc::ENETUNREACH | libc::ENOBUFS | libc::EAGAIN | libc::EHOSTUNREACH
        )
    ) || err.kind() == io::ErrorKind::WouldBlock
}

/// Run DISCOVER → OFFER → REQUEST → ACK until a lease is granted or
/// `deadline` passes. Returns the ACK's parameters and when the REQUEST
/// that got them was sent.
pub fn acquire(
    io: &mut impl DhcpIo,
    client: &ClientIdentity,
    deadline: Instant,
) -> Result<(LeaseParams, Instant), AcquireError> {
    let started_at = io.now();
    let mut counters = Counters::default();
    for _ in 0..DHCP_ACQUIRE_ROUNDS_MAX {
        let xid = io.random_u32();
        // SELECTING: the first valid offer wins; servers that answer later
        // see our REQUEST naming another server and release their offer.
        let discover_round = Round {
            to: Destination::Broadcast,
            xid,
            mac: &client.mac,
            started_at,
            attempts_max: None,
            deadline,
        };
        let offer = exchange(
            io,
            &discover_round,
            &mut counters,
            |secs| build_request(RequestKind::Discover, xid, secs, client),
            |c| c.discovers_sent += 1,
            |reply, c| match reply {
                Reply::Offer(params) => {
                    c.offers_received += 1;
                    Verdict::Done(params)
                }
                _ => Verdict::KeepWaiting,
            },
        )
        .map_err(AcquireError::Io)?;
        let Some(offer) = offer else {
            break;
        };

        // REQUESTING.
        let select = RequestKind::Select {
            server: offer.server,
            address: offer.address,
        };
        let request_round = Round {
            attempts_max: Some(DHCP_REQUEST_ATTEMPTS_MAX),
            ..discover_round
        };
        let sent_at = io.now();
        let answer = exchange(
            io,
            &request_round,
            &mut counters,
            |secs| build_request(select, xid, secs, client),
            |c| c.requests_sent += 1,
            |reply, c| match reply {
                Reply::Ack(params) if params.server == offer.server => Verdict::Done(Ok(params)),
                // A NAK with another server's id answers someone else's
                // offer; only the selected server may refuse ours.
                Reply::Nak { server, .. } if server.is_none_or(|s| s == offer.server) => {
                    c.naks_received += 1;
                    Verdict::Done(Err(()))
                }
                _ => Verdict::KeepWaiting,
            },
        )
        .map_err(AcquireError::Io)?;
        match answer {
            Some(Ok(params)) => {
                return Ok((params, sent_at));
            }
            Some(Err(())) => {
                let pause_until = io.now() + DHCP_NAK_RESTART_DELAY;
                io.sleep_until(pause_until.min(deadline));
            }
            None => {}
        }
        if io.now() >= deadline {
            break;
        }
    }
    let Counters {
        discovers_sent,
        requests_sent,
        offers_received,
        naks_received,
        ignored_count,
        last_ignored,
    } = counters;
    Err(AcquireError::NoLease {
        waited: io.now().saturating_duration_since(started_at),
        discovers_sent,
        requests_sent,
        offers_received,
        naks_received,
        ignored_count,
        last_ignored,
    })
}

/// Which upkeep REQUEST to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upkeep {
    /// RENEWING: unicast to the granting server.
    Renew,
    /// REBINDING: broadcast to any server.
    Rebind,
}

/// Send a renew or rebind REQUEST for `lease` and wait for the answer
/// until `deadline`. On ACK the lease is extended in place.
pub fn renew(
    io: &mut impl DhcpIo,
    lease: &mut Lease,
    upkeep: Upkeep,
    hostname: Option<&str>,
    deadline: Instant,
) -> Result<RenewOutcome, RenewError> {
    let client = ClientIdentity {
        mac: lease.mac,
        hostname: hostname.map(str::to_string),
    };
    let (kind, to) = match upkeep {
        Upkeep::Renew => (
            RequestKind::Renew {
                address: lease.address,
            },
            Destination::Server(lease.server),
        ),
        Upkeep::Rebind => (
            RequestKind::Rebind {
                address: lease.address,
            },
            Destination::Broadcast,
        ),
    };
    let xid = io.random_u32();
    let started_at = io.now();
    let mut counters = Counters::default();
    let expected_server = lease.server;
    let round = Round {
        to,
        xid,
        mac: &client.mac,
        started_at,
        attempts_max: None,
        deadline,
    };
    let answer = exchange(
        io,
        &round,
        &mut counters,
        |secs| build_request(kind, xid, secs, &client),
        |c| c.requests_sent += 1,
        |reply, _| match reply {
            // While renewing only the granting server may answer; while
            // rebinding any server may take the lease over.
            Reply::Ack(params) if upkeep == Upkeep::Rebind || params.server == expected_server => {
                Verdict::Done(Ok(params))
            }
            Reply::Nak { server, message }
                if upkeep == Upkeep::Rebind || server.is_none_or(|s| s == expected_server) =>
            {
                Verdict::Done(Err(message))
            }
            _ => Verdict::KeepWaiting,
        },
    )
    .map_err(RenewError::Io)?;
    match answer {
        Some(Ok(params)) => {
            lease.extend(&params, started_at);
            Ok(RenewOutcome::Extended)
        }
        Some(Err(message)) => Ok(RenewOutcome::Nak { message }),
        None => Err(RenewError::NoAnswer {
            to: match to {
                Destination::Broadcast => "any server (broadcast)".to_string(),
                Destination::Server(server) => format!("server {server}"),
            },
            waited: io.now().saturating_duration_since(started_at),
            requests_sent: counters.requests_sent,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::message::test_support::{MAC, server_reply};
    use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
    use dhcproto::{Decodable, Decoder};
    use std::collections::VecDeque;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    /// A scripted server on a virtual clock. `answer` sees every message the
    /// client sends (decoded) and the number of earlier sends, and returns
    /// replies with their delay after the send.
    struct FakeNet<F: FnMut(&Message, usize, Destination) -> Vec<(Duration, Vec<u8>)>> {
        now: Instant,
        answer: F,
        pending: VecDeque<(Instant, Vec<u8>)>,
        sent: Vec<(Instant, Message, Destination)>,
        random: u32,
    }

    impl<F: FnMut(&Message, usize, Destination) -> Vec<(Duration, Vec<u8>)>> FakeNet<F> {
        fn new(answer: F) -> Self {
            FakeNet {
                now: Instant::now(),
                answer,
                pending: VecDeque::new(),
                sent: Vec::new(),
                random: 0,
            }
        }
    }

    impl<F: FnMut(&Message, usize, Destination) -> Vec<(Duration, Vec<u8>)>> DhcpIo for FakeNet<F> {
        fn now(&self) -> Instant {
            self.now
        }

        fn send(&mut self, bytes: &[u8], to: Destination) -> io::Result<()> {
            let message =
                Message::decode(&mut Decoder::new(bytes)).expect("client sends valid dhcp");
            let replies = (self.answer)(&message, self.sent.len(), to);
            self.sent.push((self.now, message, to));
            for (delay, reply) in replies {
                self.pending.push_back((self.now + delay, reply));
            }
            self.pending.make_contiguous().sort_by_key(|(at, _)| *at);
            Ok(())
        }

        fn recv(&mut self, buffer: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
            match self.pending.front() {
                Some((at, _)) if *at <= deadline => {
                    let (at, reply) = self.pending.pop_front().expect("front exists");
                    self.now = self.now.max(at);
                    buffer[..reply.len()].copy_from_slice(&reply);
                    Ok(Some(reply.len()))
                }
                _ => {
                    self.now = self.now.max(deadline);
                    Ok(None)
                }
            }
        }

        fn sleep_until(&mut self, deadline: Instant) {
            self.now = self.now.max(deadline);
        }

        // Deterministic: xids 1, 2, 3, ... and jitter offsets that follow.
        fn random_u32(&mut self) -> u32 {
            self.random += 1;
            self.random
        }
    }

    fn client() -> ClientIdentity {
        ClientIdentity {
            mac: MAC,
            hostname: None,
        }
    }

    fn lease_options(lease_secs: u32) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::Router(vec![SERVER]),
            DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]),
            DhcpOption::AddressLeaseTime(lease_secs),
        ]
    }

    /// A well-behaved server like slirp's: OFFER for DISCOVER, ACK for
    /// REQUEST, 5 ms later.
    fn good_server(message: &Message, _: usize, _: Destination) -> Vec<(Duration, Vec<u8>)> {
        let reply_type = match message.opts().msg_type() {
            Some(MessageType::Discover) => MessageType::Offer,
            Some(MessageType::Request) => MessageType::Ack,
            _ => return vec![],
        };
        vec![(
            Duration::from_millis(5),
            server_reply(message.xid(), reply_type, ADDRESS, &lease_options(86_400)),
        )]
    }

    fn types(sent: &[(Instant, Message, Destination)]) -> Vec<MessageType> {
        sent.iter()
            .map(|(_, m, _)| m.opts().msg_type().expect("typed"))
            .collect()
    }

    #[test]
    fn discover_offer_request_ack() {
        let mut net = FakeNet::new(good_server);
        let t0 = net.now;
        let (params, requested_at) =
            acquire(&mut net, &client(), t0 + Duration::from_secs(30)).expect("a lease");
        assert_eq!(params.address, ADDRESS);
        assert_eq!(params.prefix_len, 24);
        assert_eq!(params.gateway, Some(SERVER));
        assert_eq!(params.lease_time, Some(Duration::from_secs(86_400)));
        assert_eq!(
            types(&net.sent),
            [MessageType::Discover, MessageType::Request]
        );
        // The REQUEST keeps the DISCOVER's xid and names the offer.
        assert_eq!(net.sent[0].1.xid(), net.sent[1].1.xid());
        let request = &net.sent[1].1;
        assert_eq!(
            request.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            request.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(ADDRESS))
        );
        assert_eq!(requested_at, net.sent[1].0);
        assert!(
            net.sent
                .iter()
                .all(|(_, _, to)| *to == Destination::Broadcast)
        );
    }

    #[test]
    fn unanswered_discovers_back_off_exponentially_within_the_deadline() {
        let mut net = FakeNet::new(|_: &Message, _, _| vec![]);
        let t0 = net.now;
        let err = acquire(&mut net, &client(), t0 + Duration::from_secs(100)).expect_err("silence");
        let offsets: Vec<u64> = net
            .sent
            .iter()
            .map(|(at, _, _)| at.duration_since(t0).as_millis() as u64)
            .collect();
        // 4 s, 8 s, 16 s, 32 s, 64 s apart, each within ±1 s.
        let gaps: Vec<u64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 4, "{offsets:?}");
        for (gap, base) in gaps.iter().zip([4000u64, 8000, 16_000, 32_000]) {
            assert!(
                gap.abs_diff(base) <= 1000,
                "gap {gap} ms vs {base} ms: {offsets:?}"
            );
        }
        assert!(*offsets.last().expect("sent") < 100_000);
        assert_eq!(net.now, t0 + Duration::from_secs(100));
        match err {
            AcquireError::NoLease {
                discovers_sent,
                offers_received,
                waited,
                ..
            } => {
                assert_eq!(discovers_sent, 5);
                assert_eq!(offers_received, 0);
                assert_eq!(waited, Duration::from_secs(100));
            }
            other => panic!("expected NoLease, got {other}"),
        }
    }

    #[test]
    fn other_transactions_and_garbage_are_ignored() {
        let mut net = FakeNet::new(|message: &Message, _, _| {
            let mut replies = vec![
                // Someone else's transaction, garbage, then ours.
                (
                    Duration::from_millis(1),
                    server_reply(
                        message.xid() ^ 1,
                        MessageType::Offer,
                        Ipv4Addr::new(10, 0, 2, 99),
                        &lease_options(600),
                    ),
                ),
                (Duration::from_millis(2), vec![0xff; 300]),
            ];
            replies.extend(good_server(message, 0, Destination::Broadcast));
            replies
        });
        let t0 = net.now;
        let (params, _) =
            acquire(&mut net, &client(), t0 + Duration::from_secs(30)).expect("a lease");
        assert_eq!(params.address, ADDRESS);
        assert_eq!(params.lease_time, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn nak_restarts_discovery_with_a_new_xid() {
        let mut net = FakeNet::new(|message: &Message, index, _| {
            if index == 1 {
                // The first REQUEST is refused.
                return vec![(
                    Duration::from_millis(5),
                    server_reply(
                        message.xid(),
                        MessageType::Nak,
                        Ipv4Addr::UNSPECIFIED,
                        &[DhcpOption::ServerIdentifier(SERVER)],
                    ),
                )];
            }
            good_server(message, index, Destination::Broadcast)
        });
        let t0 = net.now;
        let (params, _) =
            acquire(&mut net, &client(), t0 + Duration::from_secs(30)).expect("a lease");
        assert_eq!(params.address, ADDRESS);
        assert_eq!(
            types(&net.sent),
            [
                MessageType::Discover,
                MessageType::Request,
                MessageType::Discover,
                MessageType::Request
            ]
        );
        assert_ne!(net.sent[0].1.xid(), net.sent[2].1.xid());
        // The restart waited the NAK delay.
        assert!(net.sent[2].0 >= net.sent[1].0 + DHCP_NAK_RESTART_DELAY);
    }

    #[test]
    fn unanswered_request_restarts_discovery() {
        let mut net = FakeNet::new(|message: &Message, index, to| {
            // The first REQUEST round (sends 1..=4) goes unanswered.
            if (1..=DHCP_REQUEST_ATTEMPTS_MAX as usize).contains(&index) {
                return vec![];
            }
            good_server(message, index, to)
        });
        let t0 = net.now;
        let (params, _) =
            acquire(&mut net, &client(), t0 + Duration::from_secs(300)).expect("a lease");
        assert_eq!(params.address, ADDRESS);
        let sent = types(&net.sent);
        assert_eq!(
            sent.len(),
            1 + DHCP_REQUEST_ATTEMPTS_MAX as usize + 2,
            "{sent:?}"
        );
        assert_eq!(
            sent[1 + DHCP_REQUEST_ATTEMPTS_MAX as usize],
            MessageType::Discover
        );
    }

    #[test]
    fn ack_from_a_server_we_did_not_select_is_ignored() {
        let mut net = FakeNet::new(|message: &Message, _, _| match message.opts().msg_type() {
            Some(MessageType::Discover) => good_server(message, 0, Destination::Broadcast),
            _ => {
                let mut other = lease_options(600);
                other[0] = DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 250));
                vec![
                    (
                        Duration::from_millis(1),
                        server_reply(message.xid(), MessageType::Ack, ADDRESS, &other),
                    ),
                    (
                        Duration::from_millis(2),
                        server_reply(
                            message.xid(),
                            MessageType::Ack,
                            ADDRESS,
                            &lease_options(86_400),
                        ),
                    ),
                ]
            }
        });
        let t0 = net.now;
        let (params, _) =
            acquire(&mut net, &client(), t0 + Duration::from_secs(30)).expect("a lease");
        assert_eq!(params.server, SERVER);
        assert_eq!(params.lease_time, Some(Duration::from_secs(86_400)));
    }

    fn bound_lease(t0: Instant) -> Lease {
        let params = LeaseParams {
            address: ADDRESS,
            prefix_len: 24,
            gateway: Some(SERVER),
            dns: vec![],
            server: SERVER,
            lease_time: Some(Duration::from_secs(120)),
            renew_after: Some(Duration::from_secs(60)),
            rebind_after: Some(Duration::from_secs(105)),
        };
        Lease::from_ack("eth0", MAC, &params, t0)
    }

    #[test]
    fn renew_is_unicast_with_ciaddr_and_extends_the_lease() {
        let mut net = FakeNet::new(good_server);
        let t0 = net.now;
        let mut lease = bound_lease(t0);
        net.now = t0 + Duration::from_secs(60);
        let deadline = net.now + Duration::from_secs(10);
        let outcome =
            renew(&mut net, &mut lease, Upkeep::Renew, None, deadline).expect("an answer");
        assert_eq!(outcome, RenewOutcome::Extended);
        let (sent_at, request, to) = &net.sent[0];
        assert_eq!(*to, Destination::Server(SERVER));
        assert_eq!(request.ciaddr(), ADDRESS);
        assert!(!request.flags().broadcast());
        // Counted from the renewal REQUEST, with the server's new lease time.
        assert_eq!(lease.acquired_at, *sent_at);
        assert_eq!(
            lease.expires_at(),
            Some(*sent_at + Duration::from_secs(86_400))
        );
    }

    #[test]
    fn rebind_is_broadcast_and_a_nak_is_reported() {
        let mut net = FakeNet::new(|message: &Message, _, _| {
            vec![(
                Duration::from_millis(3),
                server_reply(
                    message.xid(),
                    MessageType::Nak,
                    Ipv4Addr::UNSPECIFIED,
                    &[
                        DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 9)),
                        DhcpOption::Message("address not available".to_string()),
                    ],
                ),
            )]
        });
        let t0 = net.now;
        let mut lease = bound_lease(t0);
        let before = lease.clone();
        let outcome = renew(
            &mut net,
            &mut lease,
            Upkeep::Rebind,
            None,
            t0 + Duration::from_secs(10),
        )
        .expect("an answer");
        assert_eq!(
            outcome,
            RenewOutcome::Nak {
                message: Some("address not available".to_string())
            }
        );
        assert_eq!(net.sent[0].2, Destination::Broadcast);
        assert!(net.sent[0].1.flags().broadcast());
        assert_eq!(lease, before);
    }

    #[test]
    fn unanswered_renew_reports_what_was_tried() {
        let mut net = FakeNet::new(|_: &Message, _, _| vec![]);
        let t0 = net.now;
        let mut lease = bound_lease(t0);
        let err = renew(
            &mut net,
            &mut lease,
            Upkeep::Renew,
            None,
            t0 + Duration::from_secs(10),
        )
        .expect_err("silence");
        match err {
            RenewError::NoAnswer {
                to,
                waited,
                requests_sent,
            } => {
                assert_eq!(to, "server 10.0.2.2");
                assert_eq!(waited, Duration::from_secs(10));
                // 0 s and ~4 s; the next would be at ~12 s, past the deadline.
                assert_eq!(requests_sent, 2);
            }
            other => panic!("expected NoAnswer, got {other}"),
        }
    }
}
