//! When the node may start IKE toward a peer: one initiation at a time, none while the peer
//! negotiates with us, a grace period for peers behind NAT, and a hold-down after failures.
//!
//! Without the hold-down every packet toward a peer that refuses IKE would start a new
//! IKE_SA_INIT; without the NAT grace both ends of a spoke-to-spoke shortcut initiate at once,
//! and a masquerading NAT drops the unsolicited half (an EC2 Elastic IP's 1:1 NAT does not,
//! and then our own initiation after the grace succeeds).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dmvpn_ike::IkeSaId;

use crate::deadlines::Deadlines;

/// A pending initiation older than this is retried when more traffic asks for the peer.
pub const CONNECT_RETRY: Duration = Duration::from_secs(30);
/// First hold-down after a failed IKE setup toward a peer; it doubles per failure up to
/// [`MAX_HOLD_DOWN`].
pub const FIRST_HOLD_DOWN: Duration = Duration::from_secs(10);
/// Longest hold-down between IKE attempts toward a peer that keeps failing.
pub const MAX_HOLD_DOWN: Duration = Duration::from_secs(60);
/// How long a peer that NHRP knows to be behind NAT is left to initiate toward us first.
pub const NATED_PEER_GRACE: Duration = Duration::from_secs(3);

/// An IKE SA we initiated toward a peer that has no Child SA yet.
#[derive(Debug, Clone, Copy)]
pub struct Connecting {
    /// When we sent the IKE_SA_INIT.
    pub since: Instant,
    /// The half-open SA.
    pub ike_sa: IkeSaId,
}

/// Per-peer initiation state, keyed by NBMA address.
#[derive(Debug, Default)]
pub struct Peers {
    connecting: HashMap<Ipv4Addr, Connecting>,
    /// Initiations held back for NATed peers: when to initiate if still needed.
    deferred: Deadlines<Ipv4Addr>,
    /// No new initiation before the instant; failures so far.
    held_down: HashMap<Ipv4Addr, (Instant, u32)>,
}

impl Peers {
    /// Whether an initiation of ours toward `peer` is in flight and not yet stale.
    pub fn connecting_recently(&self, now: Instant, peer: Ipv4Addr) -> bool {
        self.connecting
            .get(&peer)
            .is_some_and(|c| now.duration_since(c.since) < CONNECT_RETRY)
    }

    /// Whether `peer` is held down at `now`.
    pub fn held_down(&self, now: Instant, peer: Ipv4Addr) -> bool {
        self.held_down
            .get(&peer)
            .is_some_and(|(until, _)| now < *until)
    }

    /// Holds our initiation toward a NATed `peer` back once; returns false if it was held
    /// back already (then the caller initiates).
    pub fn defer(&mut self, now: Instant, peer: Ipv4Addr) {
        self.deferred.set_if_absent(peer, now + NATED_PEER_GRACE);
    }

    /// Deferred initiations due at `now`, forgotten as they are returned.
    pub fn take_due_deferred(&mut self, now: Instant) -> Vec<Ipv4Addr> {
        self.deferred.take_due(now)
    }

    /// The earliest deferred initiation.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deferred.first()
    }

    /// Records our initiation toward `peer`.
    pub fn initiated(&mut self, now: Instant, peer: Ipv4Addr, ike_sa: IkeSaId) {
        self.connecting
            .insert(peer, Connecting { since: now, ike_sa });
    }

    /// A Child SA with `peer` is up: forgets the hold-down and the deferral, and returns our
    /// own initiation, which is redundant now.
    pub fn sa_up(&mut self, peer: Ipv4Addr) -> Option<Connecting> {
        self.deferred.remove(peer);
        self.held_down.remove(&peer);
        self.connecting.remove(&peer)
    }

    /// The peer's SAs are gone: nothing is in flight toward it any more.
    pub fn forget_attempt(&mut self, peer: Ipv4Addr) {
        self.connecting.remove(&peer);
        self.deferred.remove(peer);
    }

    /// A setup toward `peer` failed: the next hold-down, doubling per consecutive failure
    /// from [`FIRST_HOLD_DOWN`] up to [`MAX_HOLD_DOWN`].
    pub fn failed(&mut self, now: Instant, peer: Ipv4Addr) -> Duration {
        self.forget_attempt(peer);
        let failures = self.held_down.get(&peer).map_or(0, |(_, n)| *n) + 1;
        let wait = FIRST_HOLD_DOWN
            .saturating_mul(1 << (failures - 1).min(6))
            .min(MAX_HOLD_DOWN);
        self.held_down.insert(peer, (now + wait, failures));
        wait
    }

    /// No initiation toward `peer` for `wait` (it may still initiate toward us); the failure
    /// count is kept.
    pub fn hold_down(&mut self, now: Instant, peer: Ipv4Addr, wait: Duration) {
        let failures = self.held_down.get(&peer).map_or(0, |(_, n)| *n);
        self.held_down.insert(peer, (now + wait, failures));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_down_doubles_to_the_cap_and_clears_on_success() {
        let t0 = Instant::now();
        let p = Ipv4Addr::new(198, 51, 100, 7);
        let mut peers = Peers::default();
        let waits: Vec<u64> = (0..5).map(|_| peers.failed(t0, p).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        assert!(peers.held_down(t0 + Duration::from_secs(59), p));
        assert!(!peers.held_down(t0 + Duration::from_secs(60), p));
        peers.sa_up(p);
        assert_eq!(peers.failed(t0, p), FIRST_HOLD_DOWN);
    }

    #[test]
    fn deferral_is_once_per_peer() {
        let t0 = Instant::now();
        let p = Ipv4Addr::new(198, 51, 100, 7);
        let mut peers = Peers::default();
        peers.defer(t0, p);
        peers.defer(t0 + Duration::from_secs(2), p);
        assert_eq!(peers.poll_timeout(), Some(t0 + NATED_PEER_GRACE));
        assert!(peers.take_due_deferred(t0).is_empty());
        assert_eq!(peers.take_due_deferred(t0 + NATED_PEER_GRACE), vec![p]);
        assert_eq!(peers.poll_timeout(), None);
    }
}
