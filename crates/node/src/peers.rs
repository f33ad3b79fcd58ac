//! When the node may start IKE toward a peer: one initiation at a time, none while the peer
//! negotiates with us, a grace period for peers behind NAT, and a hold-down after failures.
//!
//! Without the hold-down every packet toward a peer that refuses IKE would start a new
//! IKE_SA_INIT; without the NAT grace both ends of a spoke-to-spoke shortcut initiate at once,
//! and a masquerading NAT drops the unsolicited half (an EC2 Elastic IP's 1:1 NAT does not,
//! and then our own initiation after the grace succeeds).
//!
//! The hold-down is the one retry discipline for every initiation, whoever asks (data,
//! NHRP, a shortcut): exponential back-off with jitter and a cap. An NHS is not exempt — data
//! toward the hub would otherwise start a full IKE exchange per packet while its PSK is wrong
//! — but a request refused by the hold-down is remembered, and the initiation happens when the
//! hold-down ends if it is still wanted. A reload or `clear` resets it (what failed may be
//! fixed).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
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
    /// The stale IKE SA it replaces once authenticated (the peer answered as if it had lost
    /// it, an INVALID_IKE_SPI hint, or left a liveness check unanswered), if any.
    pub replaces: Option<IkeSaId>,
}

/// Why the last IKE setup toward a peer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupFailure {
    /// Authentication failed (a wrong pre-shared key, usually).
    Authentication,
    /// The peer refused the exchange (no proposal chosen, …).
    Refused,
    /// Nothing came back through every retransmission.
    Timeout,
}

impl SetupFailure {
    /// The name shown to the operator.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication_failed",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
        }
    }
}

/// The back-off state of a peer whose setups failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// No new initiation before this instant.
    pub until: Instant,
    /// Consecutive failures.
    pub failures: u32,
    /// The last failure, if the hold-down follows one.
    pub last: Option<SetupFailure>,
}

/// Per-peer initiation state, keyed by NBMA address.
#[derive(Debug, Default)]
pub struct Peers {
    connecting: HashMap<Ipv4Addr, Connecting>,
    /// Initiations held back for NATed peers: when to initiate if still needed.
    deferred: Deadlines<Ipv4Addr>,
    /// No new initiation before the instant; failures so far.
    held_down: HashMap<Ipv4Addr, Backoff>,
    /// Initiations asked for during a hold-down, due when it ends.
    retries: Deadlines<Ipv4Addr>,
    /// When each peer's last hint-started replacement went out: the next one waits a
    /// back-off interval ([`Peers::may_replace`]).
    replaced_at: HashMap<Ipv4Addr, Instant>,
    /// Size of `replaced_at` after its last pruning (as `pruned_at` for `held_down`).
    replaced_pruned_at: usize,
    /// The peer's UDP port of its last NAT-T path (its NAT's mapping of port 4500), kept
    /// when the path went so that a hub can initiate back through the same mapping.
    natt_ports: HashMap<Ipv4Addr, u16>,
    /// Spreads the hold-downs of routers that failed together (a hub restart).
    jitter_seed: u64,
    /// Size of `held_down` after its last pruning: entries whose hold-down ended long ago
    /// are dropped when the map doubles past it (peers come and go on a hub; a hostile one
    /// can fail setups from many addresses), so the map stays proportional to recent peers.
    pruned_at: usize,
}

/// Most remembered NAT-T ports ([`Peers::remember_natt_port`]).
pub const NATT_PORTS_MAX: usize = 4096;

/// Back-off state outlives its hold-down by this much (the failure count keeps doubling the
/// next one), then may be pruned.
const BACKOFF_MEMORY: Duration = Duration::from_secs(600);

impl Peers {
    /// Whether an initiation of ours toward `peer` is in flight and not yet stale.
    pub fn connecting_recently(&self, now: Instant, peer: Ipv4Addr) -> bool {
        self.connecting
            .get(&peer)
            .is_some_and(|c| now.duration_since(c.since) < CONNECT_RETRY)
    }

    /// Peers whose jitter is derived from `seed` (e.g. our own address).
    pub fn with_jitter_seed(seed: u64) -> Self {
        Self {
            jitter_seed: seed,
            ..Self::default()
        }
    }

    /// Drops back-off state that ended [`BACKOFF_MEMORY`] ago, once the map has doubled
    /// since the last pruning (amortised O(1) per insertion).
    fn prune(&mut self, now: Instant) {
        if self.held_down.len() < (2 * self.pruned_at).max(1024) {
            return;
        }
        let retries = &self.retries;
        self.held_down
            .retain(|p, b| now < b.until + BACKOFF_MEMORY || retries.contains(*p));
        self.pruned_at = self.held_down.len();
    }

    /// The wait the next failure toward `peer` would bring, before jitter.
    fn next_interval(&self, peer: Ipv4Addr) -> Duration {
        let failures = self.held_down.get(&peer).map_or(0, |b| b.failures);
        FIRST_HOLD_DOWN
            .saturating_mul(1 << failures.min(6))
            .min(MAX_HOLD_DOWN)
    }

    /// Whether an unauthenticated hint that `peer` lost our SA (RFC 7296 §2.21.4) may start
    /// a replacement IKE SA now; records it when so. At most one per peer per back-off
    /// interval (10 s, doubling with each failed setup up to a minute), none while the peer
    /// is held down or an initiation toward it is in flight: a host spoofing the peer's
    /// address makes us start one IKE SA per interval at most, and never tears anything
    /// down. The map only holds peers we had SAs with, and drops entries older than the
    /// longest interval when it has doubled since its last pruning (amortised O(1)).
    pub fn may_replace(&mut self, now: Instant, peer: Ipv4Addr) -> bool {
        if self.held_down(now, peer) || self.connecting_recently(now, peer) {
            return false;
        }
        let interval = self.next_interval(peer);
        if self
            .replaced_at
            .get(&peer)
            .is_some_and(|t| now < *t + interval)
        {
            return false;
        }
        if self.replaced_at.len() >= (2 * self.replaced_pruned_at).max(1024) {
            self.replaced_at
                .retain(|_, t| now < *t + MAX_HOLD_DOWN + BACKOFF_MEMORY);
            self.replaced_pruned_at = self.replaced_at.len();
        }
        self.replaced_at.insert(peer, now);
        true
    }

    /// Number of peers with back-off state.
    pub fn backoff_len(&self) -> usize {
        self.held_down.len()
    }

    /// Whether `peer` is held down at `now`.
    pub fn held_down(&self, now: Instant, peer: Ipv4Addr) -> bool {
        self.held_down.get(&peer).is_some_and(|b| now < b.until)
    }

    /// The back-off state of `peer`, if it has one.
    pub fn backoff(&self, peer: Ipv4Addr) -> Option<Backoff> {
        self.held_down.get(&peer).copied()
    }

    /// Every peer with back-off state.
    pub fn backoffs(&self) -> impl Iterator<Item = (Ipv4Addr, Backoff)> + '_ {
        self.held_down.iter().map(|(p, b)| (*p, *b))
    }

    /// An initiation toward `peer` was refused by its hold-down: ask again when it ends.
    pub fn retry_later(&mut self, peer: Ipv4Addr) {
        if let Some(b) = self.held_down.get(&peer) {
            self.retries.set_if_absent(peer, b.until);
        }
    }

    /// Retries whose hold-down ended at `now`, forgotten as they are returned.
    pub fn take_due_retries(&mut self, now: Instant) -> Vec<Ipv4Addr> {
        self.retries.take_due(now)
    }

    /// Forgets `peer`'s back-off (an operator's `clear`); returns whether it had one.
    pub fn reset(&mut self, peer: Ipv4Addr) -> bool {
        self.retries.remove(peer);
        self.held_down.remove(&peer).is_some()
    }

    /// Forgets every back-off (a reload may have fixed what failed); returns the peers that
    /// had one.
    pub fn reset_all(&mut self) -> Vec<Ipv4Addr> {
        self.retries.clear();
        self.held_down.drain().map(|(p, _)| p).collect()
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

    /// The earliest deferred initiation or retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.deferred.first(), self.retries.first()]
            .into_iter()
            .flatten()
            .min()
    }

    /// `peer`'s NAT-T path through `port` went: remembered for initiating back through it.
    /// Bounded: the map is emptied when it would pass [`NATT_PORTS_MAX`] (those peers fall
    /// back to port 4500).
    pub fn remember_natt_port(&mut self, peer: Ipv4Addr, port: u16) {
        if self.natt_ports.len() >= NATT_PORTS_MAX && !self.natt_ports.contains_key(&peer) {
            self.natt_ports.clear();
        }
        self.natt_ports.insert(peer, port);
    }

    /// The port of `peer`'s last NAT-T path, if remembered.
    pub fn natt_port(&self, peer: Ipv4Addr) -> Option<u16> {
        self.natt_ports.get(&peer).copied()
    }

    /// Records our initiation toward `peer`.
    pub fn initiated(&mut self, now: Instant, peer: Ipv4Addr, ike_sa: IkeSaId) {
        self.connecting.insert(
            peer,
            Connecting {
                since: now,
                ike_sa,
                replaces: None,
            },
        );
    }

    /// Records our initiation toward `peer` of an IKE SA that replaces `stale` once up.
    pub fn initiated_replacing(
        &mut self,
        now: Instant,
        peer: Ipv4Addr,
        ike_sa: IkeSaId,
        stale: IkeSaId,
    ) {
        self.connecting.insert(
            peer,
            Connecting {
                since: now,
                ike_sa,
                replaces: Some(stale),
            },
        );
    }

    /// A Child SA with `peer` is up: forgets the hold-down and the deferral, and returns our
    /// own initiation, which is redundant now.
    pub fn sa_up(&mut self, peer: Ipv4Addr) -> Option<Connecting> {
        self.natt_ports.remove(&peer);
        self.deferred.remove(peer);
        self.retries.remove(peer);
        self.held_down.remove(&peer);
        self.connecting.remove(&peer)
    }

    /// The peer's SAs are gone: nothing is in flight toward it any more.
    pub fn forget_attempt(&mut self, peer: Ipv4Addr) {
        self.connecting.remove(&peer);
        self.deferred.remove(peer);
    }

    /// A setup toward `peer` failed: the next hold-down, doubling per consecutive failure
    /// from [`FIRST_HOLD_DOWN`] up to [`MAX_HOLD_DOWN`], less up to a fifth as jitter (many
    /// spokes that lost the same hub must not come back in lockstep).
    pub fn failed(&mut self, now: Instant, peer: Ipv4Addr, why: SetupFailure) -> Duration {
        self.forget_attempt(peer);
        // The NAT mapping may be gone: the next attempt goes to port 4500.
        self.natt_ports.remove(&peer);
        self.prune(now);
        let failures = self.held_down.get(&peer).map_or(0, |b| b.failures) + 1;
        let base = FIRST_HOLD_DOWN
            .saturating_mul(1 << (failures - 1).min(6))
            .min(MAX_HOLD_DOWN);
        let mut h = DefaultHasher::new();
        (self.jitter_seed, peer, failures).hash(&mut h);
        let fifth = u64::try_from(base.as_millis() / 5)
            .unwrap_or(u64::MAX)
            .max(1);
        let wait = base - Duration::from_millis(h.finish() % fifth);
        self.held_down.insert(
            peer,
            Backoff {
                until: now + wait,
                failures,
                last: Some(why),
            },
        );
        wait
    }

    /// No initiation toward `peer` for `wait` (it may still initiate toward us); the failure
    /// count and last failure are kept.
    pub fn hold_down(&mut self, now: Instant, peer: Ipv4Addr, wait: Duration) {
        self.prune(now);
        let old = self.held_down.get(&peer).copied();
        self.held_down.insert(
            peer,
            Backoff {
                until: now + wait,
                failures: old.map_or(0, |b| b.failures),
                last: old.and_then(|b| b.last),
            },
        );
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
        let waits: Vec<Duration> = (0..5)
            .map(|_| peers.failed(t0, p, SetupFailure::Timeout))
            .collect();
        // Doubling to the cap, each less at most a fifth of jitter.
        for (w, base) in waits.iter().zip([10, 20, 40, 60, 60]) {
            let base = Duration::from_secs(base);
            assert!(*w <= base && *w > base * 4 / 5, "{w:?} vs {base:?}");
        }
        let last = *waits.last().unwrap();
        assert!(peers.held_down(t0 + last - Duration::from_millis(1), p));
        assert!(!peers.held_down(t0 + last, p));
        assert_eq!(peers.backoff(p).unwrap().last, Some(SetupFailure::Timeout));
        peers.sa_up(p);
        assert!(peers.failed(t0, p, SetupFailure::Refused) <= FIRST_HOLD_DOWN);
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

    #[test]
    fn a_refused_initiation_is_retried_when_the_hold_down_ends_and_reset_clears_it() {
        let t0 = Instant::now();
        let p = Ipv4Addr::new(198, 51, 100, 7);
        let mut peers = Peers::with_jitter_seed(9);
        let wait = peers.failed(t0, p, SetupFailure::Authentication);
        peers.retry_later(p);
        peers.retry_later(p);
        assert_eq!(peers.poll_timeout(), Some(t0 + wait));
        assert!(
            peers
                .take_due_retries(t0 + wait - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(peers.take_due_retries(t0 + wait), vec![p]);
        peers.retry_later(p);
        assert_eq!(peers.reset_all(), vec![p]);
        assert!(!peers.held_down(t0, p) && peers.poll_timeout().is_none());
        // Different routers spread their retries.
        let mut other = Peers::with_jitter_seed(10);
        let waits: std::collections::HashSet<Duration> = (0..4)
            .map(|_| other.failed(t0, p, SetupFailure::Timeout))
            .chain((0..3).map(|_| peers.failed(t0, p, SetupFailure::Timeout)))
            .collect();
        assert!(waits.len() >= 6, "{waits:?}");
    }

    #[test]
    fn hint_replacements_are_one_per_back_off_interval() {
        let t0 = Instant::now();
        let p = Ipv4Addr::new(198, 51, 100, 7);
        let mut peers = Peers::with_jitter_seed(3);
        assert!(peers.may_replace(t0, p));
        assert!(!peers.may_replace(t0 + Duration::from_secs(9), p));
        assert!(peers.may_replace(t0 + FIRST_HOLD_DOWN, p));
        // While an initiation is in flight, none.
        let t1 = t0 + FIRST_HOLD_DOWN * 3;
        peers.initiated(t1, p, IkeSaId(1));
        assert!(!peers.may_replace(t1, p));
        // After a failed setup: not during the hold-down, and the interval doubles.
        let wait = peers.failed(t1, p, SetupFailure::Timeout);
        assert!(!peers.may_replace(t1 + wait - Duration::from_millis(1), p));
        let t2 = t1 + wait;
        assert!(peers.may_replace(t2, p));
        assert!(!peers.may_replace(t2 + FIRST_HOLD_DOWN, p));
        assert!(peers.may_replace(t2 + FIRST_HOLD_DOWN * 2, p));
    }

    #[test]
    fn old_back_off_state_is_pruned() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        for i in 0..5000u32 {
            peers.failed(
                t0,
                Ipv4Addr::from_bits(0x0a00_0000 + i),
                SetupFailure::Timeout,
            );
        }
        let later = t0 + MAX_HOLD_DOWN + BACKOFF_MEMORY;
        for i in 0..4000u32 {
            peers.failed(
                later,
                Ipv4Addr::from_bits(0x0b00_0000 + i),
                SetupFailure::Timeout,
            );
        }
        // The 5,000 stale entries went when the map doubled; the recent ones stay.
        assert_eq!(peers.backoff_len(), 4000);
        assert!(peers.backoff(Ipv4Addr::from_bits(0x0b00_0000)).is_some());
    }
}
