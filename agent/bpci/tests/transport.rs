//! BPCI endpoints talking over loopback QUIC, through the public API only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use metanode_bpci::{Endpoint, Inbound, KeyExchange, SendError, ServiceId, TransportConfig};
use metanode_core::hash::{Hash32, blake3_256};
use metanode_core::keys::{PublicKey, SigningKey};
use metanode_core::limits::{
    BPCI_FRAME_PAYLOAD_BYTES_MAX, BPCI_OUTBOUND_QUEUE_BYTES_MAX, BPCI_OUTBOUND_QUEUE_FRAMES_MAX,
};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32])
}

fn pk(seed: u8) -> PublicKey {
    key(seed).public_key()
}

fn cluster() -> Hash32 {
    blake3_256(b"bpci-transport-test")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn bind(seed: u8, peers: Vec<(PublicKey, Option<SocketAddr>)>) -> Endpoint {
    Endpoint::bind(TransportConfig::new(
        loopback(),
        key(seed),
        cluster(),
        peers,
    ))
    .unwrap()
}

fn services() -> [ServiceId; 3] {
    [
        ServiceId::named("qbft"),
        ServiceId::named("blocksync"),
        ServiceId::named("mempool"),
    ]
}

/// Liveness bound for network steps in tests; never an assertion on speed.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("did not happen within the test bound: {what}"),
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

async fn recv_n(ep: &Endpoint, n: usize) -> Vec<Inbound> {
    let mut out = Vec::with_capacity(n);
    within("frames arrive", async {
        while out.len() < n {
            out.push(ep.recv().await.expect("endpoint open"));
        }
    })
    .await;
    out
}

/// Payload `i` of `name`'s sequence on a service: "name:service-index:i".
fn payload(name: &str, service: usize, i: usize) -> Vec<u8> {
    format!("{name}:{service}:{i}").into_bytes()
}

/// Checks that `got` holds, per (sender, service), exactly the sequence
/// 0..per_service in order with increasing nonces.
fn check_in_order(got: &[Inbound], senders: &[(PublicKey, &str)], per_service: usize) {
    let mut by_stream: HashMap<(PublicKey, ServiceId), Vec<&Inbound>> = HashMap::new();
    for m in got {
        by_stream.entry((m.from, m.service)).or_default().push(m);
    }
    assert_eq!(by_stream.len(), senders.len() * services().len());
    for (from, name) in senders {
        for (si, svc) in services().into_iter().enumerate() {
            let seq = &by_stream[&(*from, svc)];
            let payloads: Vec<Vec<u8>> = seq.iter().map(|m| m.payload.clone()).collect();
            let expected: Vec<Vec<u8>> = (0..per_service).map(|i| payload(name, si, i)).collect();
            assert_eq!(payloads, expected, "stream {name} / service {si}");
            assert!(seq.windows(2).all(|w| w[0].nonce < w[1].nonce));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_exchange_frames_on_several_services_in_order() {
    // b knows no address for a: it answers over the connection a opens.
    let b = bind(2, vec![(pk(1), None)]);
    let a = bind(1, vec![(pk(2), Some(b.local_addr()))]);
    a.set_poh_tick(Hash32([7; 32]));
    let n = 40;
    for i in 0..n {
        for (si, svc) in services().into_iter().enumerate() {
            a.send(&pk(2), svc, payload("a", si, i)).unwrap();
        }
    }
    let got = recv_n(&b, n * 3).await;
    check_in_order(&got, &[(pk(1), "a")], n);
    assert!(got.iter().all(|m| m.poh_tick == Hash32([7; 32])));

    for i in 0..n {
        for (si, svc) in services().into_iter().enumerate() {
            b.send(&pk(1), svc, payload("b", si, i)).unwrap();
        }
    }
    let got = recv_n(&a, n * 3).await;
    check_in_order(&got, &[(pk(2), "b")], n);
    assert!(got.iter().all(|m| m.poh_tick == Hash32::ZERO));

    let (ma, mb) = (a.metrics(), b.metrics());
    assert_eq!((ma.frames_sent, ma.frames_received), (120, 120));
    assert_eq!((mb.frames_sent, mb.frames_received), (120, 120));
    // One connection, dialed by a, carries both directions.
    assert_eq!((ma.connections_dialed, mb.connections_dialed), (1, 0));
    assert_eq!(mb.connections_accepted, 1);
    assert_eq!(ma.frames_rejected.total() + mb.frames_rejected.total(), 0);
    assert_eq!(ma.frames_lost + mb.frames_lost, 0);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_endpoints_full_mesh() {
    // c listens only; a and b dial it; a and b dial each other.
    let c = bind(3, vec![(pk(1), None), (pk(2), None)]);
    let b = bind(2, vec![(pk(1), None), (pk(3), Some(c.local_addr()))]);
    let a = bind(
        1,
        vec![(pk(2), Some(b.local_addr())), (pk(3), Some(c.local_addr()))],
    );
    let eps = [(&a, pk(1), "a"), (&b, pk(2), "b"), (&c, pk(3), "c")];
    // c can only answer once a and b have connected to it.
    let n = 25;
    for (ep, from, name) in &eps[..2] {
        for (_, to, _) in eps.iter().filter(|(_, to, _)| to != from) {
            for i in 0..n {
                for (si, svc) in services().into_iter().enumerate() {
                    ep.send(to, svc, payload(name, si, i)).unwrap();
                }
            }
        }
    }
    eventually("c connected to a and b", || {
        c.is_connected(&pk(1)) && c.is_connected(&pk(2))
    })
    .await;
    for to in [pk(1), pk(2)] {
        for i in 0..n {
            for (si, svc) in services().into_iter().enumerate() {
                c.send(&to, svc, payload("c", si, i)).unwrap();
            }
        }
    }
    for (ep, me, _) in &eps {
        let got = recv_n(ep, 2 * n * 3).await;
        let senders: Vec<(PublicKey, &str)> = eps
            .iter()
            .filter(|(_, k, _)| k != me)
            .map(|(_, k, name)| (*k, *name))
            .collect();
        check_in_order(&got, &senders, n);
    }
    for (ep, _, _) in &eps {
        let m = ep.metrics();
        assert_eq!(m.frames_received, 2 * n as u64 * 3);
        assert_eq!(m.frames_rejected.total(), 0);
        ep.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_cannot_connect_as_client() {
    let a = bind(1, vec![(pk(2), None)]);
    // The stranger (9) pins a and dials it, but a does not pin the stranger.
    let stranger = bind(9, vec![(pk(1), Some(a.local_addr()))]);
    stranger
        .send(&pk(1), ServiceId::named("qbft"), b"let me in".to_vec())
        .unwrap();
    eventually("a refused the handshake", || {
        a.metrics().handshakes_refused >= 1
    })
    .await;
    eventually("the stranger saw its dial fail", || {
        stranger.metrics().dial_failures >= 1
    })
    .await;
    let (ma, ms) = (a.metrics(), stranger.metrics());
    assert_eq!(ma.connections_accepted, 0);
    assert_eq!(ma.frames_received, 0);
    assert_eq!((ms.connections_dialed, ms.frames_sent), (0, 0));
    assert!(!a.is_connected(&pk(2)));
    // a has no notion of the stranger at all.
    assert_eq!(
        a.send(&pk(9), ServiceId::named("qbft"), vec![]),
        Err(SendError::UnknownPeer { peer: pk(9).into() })
    );
    stranger.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_cannot_pose_as_a_server() {
    // The stranger pins a (so only a's check can stop the connection) and
    // sits at the address a believes is b's.
    let stranger = bind(9, vec![(pk(1), None)]);
    let a = bind(1, vec![(pk(2), Some(stranger.local_addr()))]);
    a.send(&pk(2), ServiceId::named("qbft"), b"for b only".to_vec())
        .unwrap();
    eventually("a's dial failed", || a.metrics().dial_failures >= 1).await;
    let ma = a.metrics();
    assert_eq!((ma.connections_dialed, ma.frames_sent), (0, 0));
    assert!(!a.is_connected(&pk(2)));
    assert_eq!(stranger.metrics().frames_received, 0);
    assert_eq!(stranger.metrics().connections_accepted, 0);
    a.close().await;
    stranger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_backpressure_then_drain() {
    // a knows no address for b, so frames for b wait until b connects.
    let a = bind(1, vec![(pk(2), None)]);
    let svc = ServiceId::named("mempool");
    for i in 0..BPCI_OUTBOUND_QUEUE_FRAMES_MAX {
        a.send(&pk(2), svc, i.to_le_bytes().to_vec()).unwrap();
    }
    let err = a.send(&pk(2), svc, b"one more".to_vec()).unwrap_err();
    assert_eq!(
        err,
        SendError::QueueFull {
            peer: pk(2).into(),
            service: svc,
            frames_queued: BPCI_OUTBOUND_QUEUE_FRAMES_MAX,
            bytes_queued: 8 * BPCI_OUTBOUND_QUEUE_FRAMES_MAX as u64,
        }
    );
    assert!(err.to_string().contains("outbound queue to peer"), "{err}");
    assert_eq!(a.metrics().frames_refused_queue_full, 1);

    // The byte budget is per peer across services: big frames fill it.
    let big = BPCI_FRAME_PAYLOAD_BYTES_MAX as usize;
    let fits = (BPCI_OUTBOUND_QUEUE_BYTES_MAX as usize - 8 * BPCI_OUTBOUND_QUEUE_FRAMES_MAX) / big;
    let sync = ServiceId::named("blocksync");
    for _ in 0..fits {
        a.send(&pk(2), sync, vec![0u8; big]).unwrap();
    }
    assert!(matches!(
        a.send(&pk(2), sync, vec![0u8; big]),
        Err(SendError::QueueFull { frames_queued, .. }) if frames_queued == fits
    ));
    assert_eq!(a.metrics().frames_refused_queue_full, 2);

    // b connects (it has a's address and something to say): everything
    // queued drains to it in order.
    let b = bind(2, vec![(pk(1), Some(a.local_addr()))]);
    b.send(&pk(1), svc, b"hello".to_vec()).unwrap();
    let got = recv_n(&b, BPCI_OUTBOUND_QUEUE_FRAMES_MAX + fits).await;
    let small: Vec<&Inbound> = got.iter().filter(|m| m.service == svc).collect();
    assert_eq!(small.len(), BPCI_OUTBOUND_QUEUE_FRAMES_MAX);
    for (i, m) in small.iter().enumerate() {
        assert_eq!(m.payload, i.to_le_bytes().to_vec());
    }
    let large: Vec<&Inbound> = got.iter().filter(|m| m.service == sync).collect();
    assert_eq!(large.len(), fits);
    assert!(large.iter().all(|m| m.payload.len() == big));
    let hello = recv_n(&a, 1).await;
    assert_eq!(hello[0].payload, b"hello");
    // With the queue drained, sending works again.
    a.send(&pk(2), svc, b"again".to_vec()).unwrap();
    assert_eq!(recv_n(&b, 1).await[0].payload, b"again");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_payload_is_refused_with_a_clear_error() {
    let a = bind(1, vec![(pk(2), None)]);
    let svc = ServiceId::named("blocksync");
    let len = BPCI_FRAME_PAYLOAD_BYTES_MAX as usize + 1;
    let err = a.send(&pk(2), svc, vec![0u8; len]).unwrap_err();
    assert_eq!(
        err,
        SendError::PayloadTooLarge {
            peer: pk(2).into(),
            service: svc,
            len,
            max: BPCI_FRAME_PAYLOAD_BYTES_MAX
        }
    );
    let text = err.to_string();
    assert!(text.contains("payload of 34603009 bytes"), "{text}");
    assert!(
        text.contains("exceeds the frame maximum of 34603008 bytes"),
        "{text}"
    );
    assert!(text.contains(&pk(2).to_string()), "{text}");
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_sender_with_higher_nonce_base_is_accepted() {
    let a = bind(1, vec![(pk(2), None)]);
    let svc = ServiceId::named("qbft");
    let start = |base: u64| {
        let mut config = TransportConfig::new(
            loopback(),
            key(2),
            cluster(),
            vec![(pk(1), Some(a.local_addr()))],
        );
        config.nonce_base = base;
        Endpoint::bind(config).unwrap()
    };

    let b = start(1_000);
    b.send(&pk(1), svc, b"first run".to_vec()).unwrap();
    b.send(&pk(1), svc, b"first run 2".to_vec()).unwrap();
    let got = recv_n(&a, 2).await;
    assert_eq!((got[0].nonce, got[1].nonce), (1_000, 1_001));
    b.close().await;
    drop(b);

    let b = start(5_000);
    b.send(&pk(1), svc, b"second run".to_vec()).unwrap();
    let got = recv_n(&a, 1).await;
    assert_eq!(
        (got[0].nonce, got[0].payload.as_slice()),
        (5_000, &b"second run"[..])
    );
    b.close().await;
    drop(b);

    // A restart that reuses old nonces (clock stepped back) is refused as replay.
    let b = start(1_002);
    b.send(&pk(1), svc, b"stale run".to_vec()).unwrap();
    eventually("stale frame rejected", || {
        a.metrics().frames_rejected.replayed == 1
    })
    .await;
    assert_eq!(a.metrics().frames_received, 3);
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_delivers_queued_frames_then_refuses() {
    let b = bind(2, vec![(pk(1), None)]);
    let a = bind(1, vec![(pk(2), Some(b.local_addr()))]);
    let svc = ServiceId::named("qbft");
    for i in 0..200u32 {
        a.send(&pk(2), svc, i.to_le_bytes().to_vec()).unwrap();
    }
    a.close().await;
    assert_eq!(a.send(&pk(2), svc, vec![]), Err(SendError::Closed));
    let got = recv_n(&b, 200).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.payload, (i as u32).to_le_bytes().to_vec());
    }
    assert_eq!(a.metrics().frames_sent, 200);
    // A closed endpoint's recv ends instead of hanging.
    assert_eq!(within("recv ends", a.recv()).await, None);
    b.close().await;
    assert_eq!(within("recv ends", b.recv()).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_or_x25519_endpoint_interoperates_with_hybrid_only() {
    let b = bind(2, vec![(pk(1), None)]);
    let mut config = TransportConfig::new(
        loopback(),
        key(1),
        cluster(),
        vec![(pk(2), Some(b.local_addr()))],
    );
    config.key_exchange = KeyExchange::HybridOrX25519;
    let a = Endpoint::bind(config).unwrap();
    a.send(&pk(2), ServiceId::named("qbft"), b"pq".to_vec())
        .unwrap();
    assert_eq!(recv_n(&b, 1).await[0].payload, b"pq");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frame_crosses_intact() {
    let b = bind(2, vec![(pk(1), None)]);
    let a = bind(1, vec![(pk(2), Some(b.local_addr()))]);
    let block: Vec<u8> = (0..BPCI_FRAME_PAYLOAD_BYTES_MAX)
        .map(|i| (i % 251) as u8)
        .collect();
    let digest = blake3_256(&block);
    a.send(&pk(2), ServiceId::named("blocksync"), block)
        .unwrap();
    a.send(&pk(2), ServiceId::named("qbft"), b"vote".to_vec())
        .unwrap();
    let got = recv_n(&b, 2).await;
    let big = got
        .iter()
        .find(|m| m.service == ServiceId::named("blocksync"))
        .unwrap();
    assert_eq!(big.payload.len(), BPCI_FRAME_PAYLOAD_BYTES_MAX as usize);
    assert_eq!(blake3_256(&big.payload), digest);
    assert!(got.iter().any(|m| m.payload == b"vote"));
    a.close().await;
    b.close().await;
}

/// A free UDP port on loopback (bound and released), for an endpoint that
/// must be dialable before it exists and come back on the same address.
fn free_udp_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind(loopback()).unwrap();
    socket.local_addr().unwrap()
}

/// `from` sends an "after N" frame to seed 2 every 50 ms until `to` receives
/// one; gives up after 15 s (the restart tests' bound on reaching a
/// restarted peer).
async fn send_until_received(
    from: &Endpoint,
    to: &Endpoint,
    svc: ServiceId,
) -> Result<Inbound, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut i = 0u32;
        loop {
            let _ = from.send(&pk(2), svc, format!("after {i}").into_bytes());
            i += 1;
            let got = tokio::time::timeout(Duration::from_millis(50), to.recv()).await;
            if let Ok(Some(m)) = got
                && m.payload.starts_with(b"after")
            {
                return m;
            }
        }
    })
    .await
}

/// Binds `seed`'s endpoint on `addr` (retried while the previous socket on
/// it is being released) within `runtime`.
async fn bind_at(
    runtime: &tokio::runtime::Handle,
    seed: u8,
    addr: SocketAddr,
    peers: Vec<(PublicKey, Option<SocketAddr>)>,
) -> Endpoint {
    within("the endpoint binds its old address", async {
        loop {
            let _entered = runtime.enter();
            match Endpoint::bind(TransportConfig::new(
                addr,
                key(seed),
                cluster(),
                peers.clone(),
            )) {
                Ok(ep) => return ep,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// kill -9 and restart of a peer: the dead process sends no CONNECTION_CLOSE,
/// so the survivor's connection to it looks alive (and, being the one the
/// survivor dialed, is the one it writes to) until QUIC's idle timeout.
/// Once the restarted peer connects again with the same pinned key, the
/// survivor must drop the dead connection and reach it at once: before the
/// fix this took up to the idle timeout (~29 s seen in the chain bench).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_is_reached_without_waiting_for_the_dead_connection() {
    let svc = ServiceId::named("qbft");
    let b_addr = free_udp_addr();
    let a = bind(1, vec![(pk(2), Some(b_addr))]);
    let a_addr = a.local_addr();
    let b_peers = vec![(pk(1), Some(a_addr))];

    // b runs on a runtime of its own, so it can die without closing.
    let b_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b = bind_at(b_runtime.handle(), 2, b_addr, b_peers.clone()).await;
    // a dials b; b answers on that connection.
    a.send(&pk(2), svc, b"before".to_vec()).unwrap();
    assert_eq!(recv_n(&b, 1).await[0].payload, b"before");
    b.send(&pk(1), svc, b"ack".to_vec()).unwrap();
    assert_eq!(recv_n(&a, 1).await[0].payload, b"ack");

    // kill -9: b's tasks (QUIC driver included) vanish without a close
    // frame, then its socket goes. a keeps sending meanwhile, as consensus
    // does, which also backs its retransmission timer off.
    b_runtime.shutdown_background();
    drop(b);
    for i in 0..10 {
        let _ = a.send(&pk(2), svc, format!("while dead {i}").into_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The hard case is a still holding the dead connection. Usually it
    // does; but when b's endpoint outlives its connection state for a
    // moment (runtime shutdown drops tasks in no set order, which a loaded
    // machine shows), b answers a's packets with a stateless reset and a
    // learns of the death early. The restart must be reached at once either
    // way, so that is what is checked below; a failed precondition here
    // made CI fail on timing alone.
    if !a.is_connected(&pk(2)) {
        println!("a noticed b's death before the restart (stateless reset): the easy case");
    }

    // b restarts with the same key on the same address; it dials a at start.
    let accepted_before = a.metrics().connections_accepted;
    let restarted = std::time::Instant::now();
    let b = bind_at(&tokio::runtime::Handle::current(), 2, b_addr, b_peers).await;
    b.send(&pk(1), svc, b"back".to_vec()).unwrap();
    let got = recv_n(&a, 1).await;
    assert_eq!(got[0].payload, b"back");

    // a's frames reach the new b: every 50 ms a sends one until one lands.
    let reached = send_until_received(&a, &b, svc).await;
    let elapsed = restarted.elapsed();
    println!("restarted peer reached by the survivor after {elapsed:?}");
    let m = reached.unwrap_or_else(|_| {
        panic!("the survivor still writes to the dead connection {elapsed:?} after the restart")
    });
    assert_eq!(m.from, pk(1));
    assert_eq!(a.metrics().connections_accepted, accepted_before + 1);
    b.close().await;
    a.close().await;
}

/// The same kill -9 and restart, but the restarted peer never dials (it has
/// no address for the survivor): only QUIC's stateless reset can tell the
/// survivor its connection is dead. The restarted process answers the old
/// connection's packets with a reset the survivor accepts (reset key and
/// connection-id key both derived from the node key), the survivor drops
/// the connection and dials again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_that_does_not_dial_resets_the_dead_connection() {
    let svc = ServiceId::named("qbft");
    let b_addr = free_udp_addr();
    let a = bind(1, vec![(pk(2), Some(b_addr))]);
    let b_peers = vec![(pk(1), None)];
    let b_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b = bind_at(b_runtime.handle(), 2, b_addr, b_peers.clone()).await;
    a.send(&pk(2), svc, b"before".to_vec()).unwrap();
    assert_eq!(recv_n(&b, 1).await[0].payload, b"before");

    b_runtime.shutdown_background();
    drop(b);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let restarted = std::time::Instant::now();
    let b = bind_at(&tokio::runtime::Handle::current(), 2, b_addr, b_peers).await;
    let reached = send_until_received(&a, &b, svc).await;
    let elapsed = restarted.elapsed();
    println!("restarted peer reached through a stateless reset after {elapsed:?}");
    let m = reached.unwrap_or_else(|_| {
        panic!("the survivor still writes to the dead connection {elapsed:?} after the restart")
    });
    assert_eq!(m.from, pk(1));
    // The old connection was reset, not superseded: b never dialed.
    let metrics = a.metrics();
    assert_eq!(metrics.connections_superseded, 0);
    assert_eq!(metrics.connections_dialed, 2);
    assert_eq!(b.metrics().connections_accepted, 1);
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_service_delivers_in_order_beside_bulk_and_path_stats_name_the_peer() {
    let b = bind(2, vec![(pk(1), None)]);
    let mut config = TransportConfig::new(
        loopback(),
        key(1),
        cluster(),
        vec![(pk(2), Some(b.local_addr()))],
    );
    let [qbft, _, mempool] = services();
    config.urgent_services = vec![qbft];
    let a = Endpoint::bind(config).unwrap();
    // Bulk frames queued first; the urgent stream's frames must still all
    // arrive, each service in its own order.
    let bulk = vec![0xab; 256 * 1024];
    let n = 8;
    for i in 0..n {
        let mut frame = bulk.clone();
        frame[0] = i as u8;
        a.send(&pk(2), mempool, frame).unwrap();
        a.send(&pk(2), qbft, payload("a", 0, i)).unwrap();
    }
    let got = recv_n(&b, n * 2).await;
    let urgent: Vec<&Inbound> = got.iter().filter(|m| m.service == qbft).collect();
    let bulk_got: Vec<&Inbound> = got.iter().filter(|m| m.service == mempool).collect();
    assert_eq!(urgent.len(), n);
    assert_eq!(bulk_got.len(), n);
    for (i, m) in urgent.iter().enumerate() {
        assert_eq!(m.payload, payload("a", 0, i));
    }
    for (i, m) in bulk_got.iter().enumerate() {
        assert_eq!(m.payload.len(), bulk.len());
        assert_eq!(m.payload[0], i as u8);
    }
    let stats = a.path_stats();
    assert_eq!(stats.len(), 1);
    let (peer, path) = stats[0];
    assert_eq!(peer, pk(2));
    assert!(path.rtt_ms > 0.0);
    assert!(path.cwnd_bytes > 0);
    // 8 × 256 KiB crossed this path in packets of at most ~1.5 KB.
    assert!(path.sent_packets > (n as u64 * 256 * 1024) / 1500);
    a.close().await;
    b.close().await;
}
