//! A granted lease and the timing of its upkeep (RFC 2131 §4.4.5), as a pure
//! state machine: the caller passes the time, so every transition is unit
//! tested with made-up instants and no sleeping.
//!
//! ```text
//!   BOUND ──T1──▶ RENEWING ──T2──▶ REBINDING ──expiry──▶ (remove address, INIT)
//!     ▲              │ ACK            │ ACK
//!     └──────────────┴────────────────┘
//! ```
//!
//! In RENEWING (REBINDING) a REQUEST that got no answer is repeated after
//! half the time left until T2 (expiry), but not sooner than
//! [`DHCP_RENEW_RETRY_MIN`] and never past that boundary.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::message::LeaseParams;
use crate::limits::DHCP_RENEW_RETRY_MIN;

/// A lease granted by a DHCP server to one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub interface: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted it (option 54); renewals are unicast here.
    pub server: Ipv4Addr,
    /// `None` for an infinite lease.
    pub lease_time: Option<Duration>,
    /// T1, counted from `acquired_at`.
    pub renew_after: Option<Duration>,
    /// T2, counted from `acquired_at`.
    pub rebind_after: Option<Duration>,
    /// When the REQUEST that got this lease was sent: RFC 2131 §4.4.1
    /// counts the lease from there, not from the ACK, so a slow answer
    /// cannot make the client hold the address longer than the server.
    pub acquired_at: Instant,
    /// When the next renew/rebind REQUEST may go out after one that was not
    /// answered; `None` until the first attempt of a phase.
    next_attempt_at: Option<Instant>,
}

/// What the owner of a lease should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nothing until `until` (`None`: never, an infinite lease).
    Wait { until: Option<Instant> },
    /// RENEWING: unicast a REQUEST to the server that granted the lease.
    Renew,
    /// REBINDING: broadcast a REQUEST to any server.
    Rebind,
    /// The lease is over: remove the address and start discovery again.
    Expired,
}

impl Lease {
    /// The lease described by an ACK to a REQUEST sent at `requested_at`.
    pub fn from_ack(
        interface: &str,
        mac: [u8; 6],
        params: &LeaseParams,
        requested_at: Instant,
    ) -> Lease {
        Lease {
            interface: interface.to_string(),
            mac,
            address: params.address,
            prefix_len: params.prefix_len,
            gateway: params.gateway,
            dns: params.dns.clone(),
            server: params.server,
            lease_time: params.lease_time,
            renew_after: params.renew_after,
            rebind_after: params.rebind_after,
            acquired_at: requested_at,
            next_attempt_at: None,
        }
    }

    /// T1 as an instant (`None` for an infinite lease).
    pub fn renew_at(&self) -> Option<Instant> {
        self.at(self.renew_after)
    }

    /// T2 as an instant.
    pub fn rebind_at(&self) -> Option<Instant> {
        self.at(self.rebind_after)
    }

    /// The end of the lease.
    pub fn expires_at(&self) -> Option<Instant> {
        self.at(self.lease_time)
    }

    /// Time left at `now` until the kernel should drop the address (what
    /// the address is installed with); `None` for an infinite lease.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.expires_at()
            .map(|end| end.saturating_duration_since(now))
    }

    fn at(&self, after: Option<Duration>) -> Option<Instant> {
        // An offset too large for Instant is as good as never.
        after.and_then(|after| self.acquired_at.checked_add(after))
    }

    /// What to do at `now`.
    pub fn next_action(&self, now: Instant) -> LeaseAction {
        let (Some(t1), Some(t2), Some(end)) =
            (self.renew_at(), self.rebind_at(), self.expires_at())
        else {
            return LeaseAction::Wait { until: None };
        };
        if now >= end {
            return LeaseAction::Expired;
        }
        let (phase_start, phase_end, action) = if now >= t2 {
            (t2, end, LeaseAction::Rebind)
        } else if now >= t1 {
            (t1, t2, LeaseAction::Renew)
        } else {
            return LeaseAction::Wait { until: Some(t1) };
        };
        match self.next_attempt_at {
            // An attempt scheduled in an earlier phase does not hold back
            // the first REQUEST of this one.
            Some(next) if next > now && next > phase_start => LeaseAction::Wait {
                until: Some(next.min(phase_end)),
            },
            _ => action,
        }
    }

    /// Record that a renew or rebind REQUEST went out at `now` and got no
    /// usable answer; [`next_action`](Self::next_action) waits before the
    /// next one.
    pub fn record_attempt(&mut self, now: Instant) {
        let boundary = match (self.rebind_at(), self.expires_at()) {
            (Some(t2), Some(end)) => {
                if now >= t2 {
                    end
                } else {
                    t2
                }
            }
            _ => return,
        };
        let half_left = boundary.saturating_duration_since(now) / 2;
        let wait = half_left.max(DHCP_RENEW_RETRY_MIN);
        self.next_attempt_at = Some(now.checked_add(wait).map_or(boundary, |t| t.min(boundary)));
    }

    /// Take the server's ACK to a renew/rebind REQUEST sent at
    /// `requested_at`: new times (and possibly a new address or options).
    pub fn extend(&mut self, params: &LeaseParams, requested_at: Instant) {
        *self = Lease::from_ack(&self.interface, self.mac, params, requested_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn params(lease_secs: Option<u64>) -> LeaseParams {
        LeaseParams {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease_time: lease_secs.map(s),
            renew_after: lease_secs.map(|l| s(l / 2)),
            rebind_after: lease_secs.map(|l| s(l * 7 / 8)),
        }
    }

    fn lease(lease_secs: u64) -> (Lease, Instant) {
        let t0 = Instant::now();
        (
            Lease::from_ack("eth0", [2; 6], &params(Some(lease_secs)), t0),
            t0,
        )
    }

    #[test]
    fn bound_waits_for_t1() {
        let (lease, t0) = lease(3600);
        assert_eq!(lease.renew_at(), Some(t0 + s(1800)));
        assert_eq!(lease.rebind_at(), Some(t0 + s(3150)));
        assert_eq!(lease.expires_at(), Some(t0 + s(3600)));
        for now in [t0, t0 + s(1), t0 + s(1799)] {
            assert_eq!(
                lease.next_action(now),
                LeaseAction::Wait {
                    until: Some(t0 + s(1800))
                }
            );
        }
        assert_eq!(lease.remaining(t0 + s(600)), Some(s(3000)));
        assert_eq!(lease.remaining(t0 + s(9999)), Some(s(0)));
    }

    #[test]
    fn t1_renews_t2_rebinds_expiry_expires() {
        let (lease, t0) = lease(3600);
        assert_eq!(lease.next_action(t0 + s(1800)), LeaseAction::Renew);
        assert_eq!(lease.next_action(t0 + s(3149)), LeaseAction::Renew);
        assert_eq!(lease.next_action(t0 + s(3150)), LeaseAction::Rebind);
        assert_eq!(lease.next_action(t0 + s(3599)), LeaseAction::Rebind);
        assert_eq!(lease.next_action(t0 + s(3600)), LeaseAction::Expired);
        assert_eq!(lease.next_action(t0 + s(100_000)), LeaseAction::Expired);
    }

    #[test]
    fn unanswered_renewals_back_off_by_half_the_time_left() {
        let (mut lease, t0) = lease(3600);
        // Renew at T1 (1800): 1350 s to T2, next try 675 s later.
        lease.record_attempt(t0 + s(1800));
        assert_eq!(
            lease.next_action(t0 + s(1800)),
            LeaseAction::Wait {
                until: Some(t0 + s(2475))
            }
        );
        assert_eq!(
            lease.next_action(t0 + s(2474)),
            LeaseAction::Wait {
                until: Some(t0 + s(2475))
            }
        );
        assert_eq!(lease.next_action(t0 + s(2475)), LeaseAction::Renew);
        // Close to T2 the 60 s floor applies, clipped at T2.
        lease.record_attempt(t0 + s(3100));
        assert_eq!(
            lease.next_action(t0 + s(3100)),
            LeaseAction::Wait {
                until: Some(t0 + s(3150))
            }
        );
        // At T2 the pending renew retry does not delay rebinding.
        assert_eq!(lease.next_action(t0 + s(3150)), LeaseAction::Rebind);
        // Rebinding at T2: 450 s to expiry, next try 225 s later.
        lease.record_attempt(t0 + s(3150));
        assert_eq!(
            lease.next_action(t0 + s(3200)),
            LeaseAction::Wait {
                until: Some(t0 + s(3375))
            }
        );
        assert_eq!(lease.next_action(t0 + s(3375)), LeaseAction::Rebind);
        // 60 s floor near expiry, clipped to the expiry itself.
        lease.record_attempt(t0 + s(3560));
        assert_eq!(
            lease.next_action(t0 + s(3561)),
            LeaseAction::Wait {
                until: Some(t0 + s(3600))
            }
        );
        assert_eq!(lease.next_action(t0 + s(3600)), LeaseAction::Expired);
    }

    #[test]
    fn an_ack_restarts_the_clock_from_the_request() {
        let (mut lease, t0) = lease(3600);
        lease.record_attempt(t0 + s(1800));
        let mut renewed = params(Some(7200));
        renewed.dns = vec![Ipv4Addr::new(10, 0, 2, 4)];
        lease.extend(&renewed, t0 + s(1801));
        assert_eq!(lease.interface, "eth0");
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 4)]);
        assert_eq!(lease.acquired_at, t0 + s(1801));
        assert_eq!(
            lease.next_action(t0 + s(1802)),
            LeaseAction::Wait {
                until: Some(t0 + s(1801 + 3600))
            }
        );
        assert_eq!(lease.expires_at(), Some(t0 + s(1801 + 7200)));
    }

    #[test]
    fn infinite_leases_never_need_upkeep() {
        let t0 = Instant::now();
        let mut lease = Lease::from_ack("eth0", [2; 6], &params(None), t0);
        assert_eq!(
            lease.next_action(t0 + s(10_000_000)),
            LeaseAction::Wait { until: None }
        );
        lease.record_attempt(t0);
        assert_eq!(lease.next_action(t0), LeaseAction::Wait { until: None });
        assert_eq!(lease.remaining(t0), None);
    }
}
