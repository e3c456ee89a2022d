//! Keeping a lease alive: renew at T1, rebind at T2, and when the lease is
//! lost (NAK or expiry) remove the address and acquire a new one.
//!
//! [`LeaseKeeper::poll`] does whatever is due and says when to call again,
//! so PID 1 can drive it from its own poll loop; [`spawn_lease_keeper`] runs
//! the same thing on a thread. The timing decisions are
//! [`Lease::next_action`]'s; this module only carries them out.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::exchange::{RenewOutcome, Upkeep};
use super::lease::{Lease, LeaseAction};
use crate::configure::apply_lease_on;
use crate::limits::{
    DHCP_RENEW_EXCHANGE_TIMEOUT, KEEPER_POLL_INTERVAL, KEEPER_REACQUIRE_BACKOFF_MAX,
    KEEPER_REACQUIRE_TIMEOUT,
};
use crate::netlink::NetError;
use crate::system::{LinuxNet, NetSystem};

/// How the keeper re-applies a lease.
#[derive(Debug, Clone, Default)]
pub struct KeeperOptions {
    /// Rewrite this resolv.conf when a renewal brings DNS servers.
    pub resolv_conf: Option<PathBuf>,
    /// Host name sent with each request (option 12).
    pub hostname: Option<String>,
    /// Where to report what happened (for the log); `None` to stay silent.
    pub events: Option<mpsc::Sender<LeaseEvent>>,
}

/// Something the keeper did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A renewal or rebinding was ACKed and the lease re-applied.
    Extended { upkeep: Upkeep, lease: Lease },
    /// A renewal or rebinding got no answer; it is retried later.
    UpkeepFailed { upkeep: Upkeep, error: String },
    /// The lease is gone (NAK or expiry); its address was removed.
    Lost { address: Ipv4Addr, reason: String },
    /// A new lease after a loss.
    Acquired { lease: Lease },
    /// Re-acquisition failed; the next try is after `retry_in`.
    AcquireFailed { error: String, retry_in: Duration },
    /// The lease could not be (re-)installed on the interface.
    ApplyFailed { error: String },
}

impl fmt::Display for LeaseEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let describe = |lease: &Lease| {
            format!(
                "{}/{} on {} from {} for {}",
                lease.address,
                lease.prefix_len,
                lease.interface,
                lease.server,
                lease
                    .lease_time
                    .map_or("ever".to_string(), |t| format!("{}s", t.as_secs()))
            )
        };
        match self {
            LeaseEvent::Extended { upkeep, lease } => {
                write!(f, "dhcp {upkeep:?}: lease extended: {}", describe(lease))
            }
            LeaseEvent::UpkeepFailed { upkeep, error } => {
                write!(f, "dhcp {upkeep:?} failed, will retry: {error}")
            }
            LeaseEvent::Lost { address, reason } => {
                write!(
                    f,
                    "dhcp lease on {address} lost ({reason}); address removed"
                )
            }
            LeaseEvent::Acquired { lease } => write!(f, "dhcp lease acquired: {}", describe(lease)),
            LeaseEvent::AcquireFailed { error, retry_in } => {
                write!(
                    f,
                    "dhcp re-acquisition failed, retry in {retry_in:?}: {error}"
                )
            }
            LeaseEvent::ApplyFailed { error } => write!(f, "dhcp lease not applied: {error}"),
        }
    }
}

/// Drives one interface's lease. Owns the [`NetSystem`] it acts through.
#[derive(Debug)]
pub struct LeaseKeeper<S: NetSystem> {
    system: S,
    interface: String,
    /// `None` while the lease is lost and a new one is being sought.
    lease: Option<Lease>,
    resolv_conf: Option<PathBuf>,
    hostname: Option<String>,
    next_acquire_at: Instant,
    acquire_backoff: Duration,
}

/// Render an error with its sources, for events (which carry text so they
/// can be cloned and sent).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl<S: NetSystem> LeaseKeeper<S> {
    pub fn new(
        system: S,
        lease: Lease,
        resolv_conf: Option<PathBuf>,
        hostname: Option<String>,
    ) -> Self {
        let now = system.now();
        LeaseKeeper {
            system,
            interface: lease.interface.clone(),
            lease: Some(lease),
            resolv_conf,
            hostname,
            next_acquire_at: now,
            acquire_backoff: Duration::ZERO,
        }
    }

    /// The current lease, `None` while it is lost.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Do what is due now. Returns what happened and when to call again
    /// (`None`: never, an infinite lease).
    pub fn poll(&mut self) -> (Vec<LeaseEvent>, Option<Instant>) {
        let mut events = Vec::new();
        let now = self.system.now();
        match self.lease.as_ref().map(|lease| lease.next_action(now)) {
            None => {
                if now >= self.next_acquire_at {
                    self.reacquire(&mut events);
                }
            }
            Some(LeaseAction::Wait { .. }) => {}
            Some(LeaseAction::Renew) => self.upkeep(Upkeep::Renew, now, &mut events),
            Some(LeaseAction::Rebind) => self.upkeep(Upkeep::Rebind, now, &mut events),
            Some(LeaseAction::Expired) => {
                self.lose("lease expired".to_string(), &mut events);
            }
        }
        let now = self.system.now();
        let wake_at = match &self.lease {
            None => Some(self.next_acquire_at),
            Some(lease) => match lease.next_action(now) {
                LeaseAction::Wait { until } => until,
                _ => Some(now),
            },
        };
        (events, wake_at)
    }

    fn upkeep(&mut self, upkeep: Upkeep, now: Instant, events: &mut Vec<LeaseEvent>) {
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let before = (lease.address, lease.prefix_len);
        match self.system.renew_lease(
            lease,
            upkeep,
            self.hostname.as_deref(),
            DHCP_RENEW_EXCHANGE_TIMEOUT,
        ) {
            Ok(RenewOutcome::Extended) => {
                let lease = lease.clone();
                match apply_lease_on(
                    &mut self.system,
                    &lease,
                    self.resolv_conf.as_deref(),
                    Some(before),
                ) {
                    Ok(()) => events.push(LeaseEvent::Extended { upkeep, lease }),
                    Err(err) => events.push(LeaseEvent::ApplyFailed { error: chain(&err) }),
                }
            }
            Ok(RenewOutcome::Nak { message }) => {
                let reason = match message {
                    Some(message) => format!("server refused: {message}"),
                    None => "server refused".to_string(),
                };
                self.lose(reason, events);
            }
            Err(err) => {
                lease.record_attempt(now);
                events.push(LeaseEvent::UpkeepFailed {
                    upkeep,
                    error: chain(&err),
                });
            }
        }
    }

    /// Remove the lost lease's address and schedule discovery now.
    fn lose(&mut self, reason: String, events: &mut Vec<LeaseEvent>) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let reason =
            match self
                .system
                .delete_address(&lease.interface, lease.address, lease.prefix_len)
            {
                Ok(()) => reason,
                // The kernel removes an address whose lifetime ran out by itself.
                Err(NetError::Kernel { source, .. })
                    if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
                {
                    reason
                }
                Err(err) => format!("{reason}; removing it failed: {}", chain(&err)),
            };
        events.push(LeaseEvent::Lost {
            address: lease.address,
            reason,
        });
        self.next_acquire_at = self.system.now();
        self.acquire_backoff = Duration::ZERO;
    }

    fn reacquire(&mut self, events: &mut Vec<LeaseEvent>) {
        match self.system.acquire_lease(
            &self.interface,
            self.hostname.as_deref(),
            KEEPER_REACQUIRE_TIMEOUT,
        ) {
            Ok(lease) => {
                match apply_lease_on(&mut self.system, &lease, self.resolv_conf.as_deref(), None) {
                    Ok(()) => events.push(LeaseEvent::Acquired {
                        lease: lease.clone(),
                    }),
                    Err(err) => events.push(LeaseEvent::ApplyFailed { error: chain(&err) }),
                }
                self.lease = Some(lease);
                self.acquire_backoff = Duration::ZERO;
            }
            Err(err) => {
                self.acquire_backoff = (self.acquire_backoff * 2)
                    .max(KEEPER_POLL_INTERVAL)
                    .min(KEEPER_REACQUIRE_BACKOFF_MAX);
                self.next_acquire_at = self.system.now() + self.acquire_backoff;
                events.push(LeaseEvent::AcquireFailed {
                    error: chain(&err),
                    retry_in: self.acquire_backoff,
                });
            }
        }
    }
}

/// A running keeper thread.
#[derive(Debug)]
pub struct KeeperHandle {
    pub thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl KeeperHandle {
    /// Ask the thread to stop (within [`KEEPER_POLL_INTERVAL`], or after
    /// the exchange it is in) and wait for it.
    pub fn stop(self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join()
    }
}

/// Why [`spawn_lease_keeper`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnKeeperError {
    #[error("cannot open rtnetlink for the lease keeper")]
    Netlink(#[source] NetError),
    #[error("cannot start the lease keeper thread")]
    Thread(#[source] std::io::Error),
}

/// Keep `lease` alive on a thread of its own until stopped. The thread
/// acts in the network namespace of the caller.
pub fn spawn_lease_keeper(
    lease: Lease,
    options: KeeperOptions,
) -> Result<KeeperHandle, SpawnKeeperError> {
    let system = LinuxNet::open().map_err(SpawnKeeperError::Netlink)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_seen = Arc::clone(&stop);
    let KeeperOptions {
        resolv_conf,
        hostname,
        events,
    } = options;
    let mut keeper = LeaseKeeper::new(system, lease, resolv_conf, hostname);
    let thread = std::thread::Builder::new()
        .name("dhcp-lease".to_string())
        .spawn(move || {
            while !stop_seen.load(Ordering::Relaxed) {
                let (happened, wake_at) = keeper.poll();
                if let Some(sender) = &events {
                    for event in happened {
                        // A dropped receiver only means nobody is listening.
                        let _ = sender.send(event);
                    }
                }
                let now = Instant::now();
                let nap = wake_at
                    .map_or(KEEPER_POLL_INTERVAL, |at| at.saturating_duration_since(now))
                    .min(KEEPER_POLL_INTERVAL);
                std::thread::sleep(nap);
            }
        })
        .map_err(SpawnKeeperError::Thread)?;
    Ok(KeeperHandle { thread, stop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configure::tests::{FakeNet, test_lease};

    const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn keeper(net: FakeNet, lease_secs: u64) -> LeaseKeeper<FakeNet> {
        let lease = test_lease(ADDRESS, lease_secs, net.now);
        LeaseKeeper::new(net, lease, None, None)
    }

    #[test]
    fn bound_lease_sleeps_until_t1() {
        let net = FakeNet::new(&["eth0"]);
        let t0 = net.now;
        let mut keeper = keeper(net, 120);
        let (events, wake_at) = keeper.poll();
        assert!(events.is_empty());
        assert_eq!(wake_at, Some(t0 + Duration::from_secs(60)));
        assert!(keeper.system.log.is_empty());
    }

    #[test]
    fn renewal_at_t1_reapplies_the_extended_lease() {
        let mut net = FakeNet::new(&["eth0"]);
        let t0 = net.now;
        net.renewals.push(Ok(RenewOutcome::Extended));
        let mut keeper = keeper(net, 120);
        keeper.system.now = t0 + Duration::from_secs(60);
        let (events, wake_at) = keeper.poll();
        assert_eq!(
            keeper.system.log,
            [
                "Renew 10.0.2.15",
                "add eth0 10.0.2.15/24 120s",
                "route eth0 via 10.0.2.2 Dhcp"
            ]
        );
        assert!(
            matches!(
                &events[..],
                [LeaseEvent::Extended {
                    upkeep: Upkeep::Renew,
                    ..
                }]
            ),
            "{events:?}"
        );
        // The new lease counts from the renewal: next T1 is 60 s later.
        assert_eq!(wake_at, Some(t0 + Duration::from_secs(120)));
    }

    #[test]
    fn failed_renewal_is_retried_then_rebinds_at_t2() {
        let mut net = FakeNet::new(&["eth0"]);
        let t0 = net.now;
        net.renewals.push(Err("timeout".to_string()));
        net.renewals.push(Ok(RenewOutcome::Extended));
        let mut keeper = keeper(net, 120);
        keeper.system.now = t0 + Duration::from_secs(60);
        let (events, wake_at) = keeper.poll();
        assert!(
            matches!(
                &events[..],
                [LeaseEvent::UpkeepFailed {
                    upkeep: Upkeep::Renew,
                    ..
                }]
            ),
            "{events:?}"
        );
        // Half of 45 s is under the 60 s floor, so the retry waits for T2.
        assert_eq!(wake_at, Some(t0 + Duration::from_secs(105)));
        keeper.system.now = t0 + Duration::from_secs(105);
        let (events, _) = keeper.poll();
        assert!(
            matches!(
                &events[..],
                [LeaseEvent::Extended {
                    upkeep: Upkeep::Rebind,
                    ..
                }]
            ),
            "{events:?}"
        );
        assert_eq!(
            keeper.system.log[0..2],
            ["Renew 10.0.2.15", "Rebind 10.0.2.15"]
        );
    }

    #[test]
    fn nak_removes_the_address_and_rediscovers() {
        let mut net = FakeNet::new(&["eth0"]);
        let t0 = net.now;
        net.renewals.push(Ok(RenewOutcome::Nak {
            message: Some("wrong network".to_string()),
        }));
        net.leases
            .push(Ok(test_lease(Ipv4Addr::new(10, 0, 2, 16), 600, t0)));
        let mut keeper = keeper(net, 120);
        keeper.system.now = t0 + Duration::from_secs(60);
        let (events, wake_at) = keeper.poll();
        assert_eq!(
            events,
            [LeaseEvent::Lost {
                address: ADDRESS,
                reason: "server refused: wrong network".to_string()
            }]
        );
        assert_eq!(keeper.lease(), None);
        assert_eq!(wake_at, Some(t0 + Duration::from_secs(60)));
        let (events, _) = keeper.poll();
        assert!(
            matches!(&events[..], [LeaseEvent::Acquired { lease }] if lease.address == Ipv4Addr::new(10, 0, 2, 16)),
            "{events:?}"
        );
        assert_eq!(
            keeper.system.log,
            [
                "Renew 10.0.2.15",
                "del eth0 10.0.2.15/24",
                "dhcp eth0 within 60s",
                "add eth0 10.0.2.16/24 600s",
                "route eth0 via 10.0.2.2 Dhcp"
            ]
        );
    }

    #[test]
    fn expiry_removes_the_address_and_failed_discovery_backs_off() {
        let mut net = FakeNet::new(&["eth0"]);
        let t0 = net.now;
        net.leases.push(Err("no offer".to_string()));
        net.leases.push(Err("no offer".to_string()));
        let mut keeper = keeper(net, 120);
        keeper.system.now = t0 + Duration::from_secs(120);
        let (events, _) = keeper.poll();
        assert_eq!(
            events,
            [LeaseEvent::Lost {
                address: ADDRESS,
                reason: "lease expired".to_string()
            }]
        );
        let (events, wake_at) = keeper.poll();
        assert!(
            matches!(&events[..], [LeaseEvent::AcquireFailed { retry_in, .. }] if *retry_in == Duration::from_secs(1)),
            "{events:?}"
        );
        assert_eq!(wake_at, Some(t0 + Duration::from_secs(121)));
        // Not due yet: nothing happens.
        let (events, _) = keeper.poll();
        assert!(events.is_empty());
        keeper.system.now = t0 + Duration::from_secs(121);
        let (events, wake_at) = keeper.poll();
        assert!(
            matches!(&events[..], [LeaseEvent::AcquireFailed { retry_in, .. }] if *retry_in == Duration::from_secs(2)),
            "{events:?}"
        );
        assert_eq!(wake_at, Some(t0 + Duration::from_secs(123)));
        assert_eq!(
            keeper.system.log,
            [
                "del eth0 10.0.2.15/24",
                "dhcp eth0 within 60s",
                "dhcp eth0 within 60s"
            ]
        );
    }
}
