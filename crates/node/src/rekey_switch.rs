//! When a Child SA rekey's responder starts sending on the new SA.
//!
//! The responder of a CREATE_CHILD_SA rekey installs the new SA when it sends its response;
//! the initiator installs it only when that response arrives. A responder that switched its
//! outbound traffic at once would race its own response: the first packets on the new SPI
//! can reach the initiator before it can decrypt them (seen as one lost ping and one
//! `unknown_spi` drop at 100 pings/s). RFC 7296 §2.8 says nothing about when to switch, so
//! the responder keeps sending on the old SA until the initiator shows it is ready:
//! - the initiator deletes the old SA (it does so only after installing the new one), or
//! - packets arrive on the new SA (the initiator sends on it, so it has it), or
//! - `SWITCH_LIMIT` passes (an initiator that neither deletes nor sends).
//!
//! At most one switch is pending per peer: a second rekey replaces the first.
//!
//! The other end of the same race: the SA a rekey replaced is deleted by an INFORMATIONAL
//! exchange, which travels on the IKE socket while the peer's last packets on that SA may
//! still sit in the ESP socket's queue (a different socket and reader without NAT-T). So the
//! inbound half of a replaced SA lingers for `RETIRED_LINGER` before it goes.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Longest a rekey's responder keeps sending on the old SA. Long enough for a lost
/// response to be asked for again and resent (the first IKE retransmission comes after 2 s),
/// short against any Child SA lifetime (the old SA keeps its own expiry meanwhile).
pub const SWITCH_LIMIT: Duration = Duration::from_secs(5);

/// How long the inbound half of a deleted, replaced Child SA still decrypts: far longer
/// than any reordering between two sockets of one host, and short enough that a deleted
/// SA's keys do not stay in use.
pub const RETIRED_LINGER: Duration = Duration::from_secs(2);

/// Inbound SAs (by SPI) of deleted, replaced Child SAs, oldest first: every entry waits the
/// same `RETIRED_LINGER`, so the front is always the next due.
#[derive(Debug, Default)]
pub(crate) struct Retired {
    queue: VecDeque<(Instant, Ipv4Addr, u32)>,
}

impl Retired {
    /// `spi_in` of `peer` goes at `now + RETIRED_LINGER`.
    pub(crate) fn retire(&mut self, peer: Ipv4Addr, spi_in: u32, now: Instant) {
        self.queue.push_back((now + RETIRED_LINGER, peer, spi_in));
    }

    /// When the next one goes.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _, _)| *t)
    }

    /// The (peer, SPI) pairs whose time has come.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(Ipv4Addr, u32)> {
        let mut due = Vec::new();
        while let Some(&(t, peer, spi)) = self.queue.front() {
            if t > now {
                break;
            }
            due.push((peer, spi));
            self.queue.pop_front();
        }
        due
    }

    /// Every SPI still lingering for `peer` (its SAs are being removed at once).
    pub(crate) fn take_peer(&mut self, peer: Ipv4Addr) -> Vec<u32> {
        let mut taken = Vec::new();
        self.queue.retain(|&(_, p, spi)| {
            if p == peer {
                taken.push(spi);
            }
            p != peer
        });
        taken
    }
}

/// Switches that wait, per peer: the new SA's inbound SPI and the latest switch time.
#[derive(Debug, Default)]
pub(crate) struct PendingSwitches {
    by_peer: HashMap<Ipv4Addr, (u32, Instant)>,
}

impl PendingSwitches {
    /// Holds `peer`'s outbound on its current SA until the new one (inbound `spi_in`) is
    /// known to work at the peer, or `now + SWITCH_LIMIT`.
    pub(crate) fn defer(&mut self, peer: Ipv4Addr, spi_in: u32, now: Instant) {
        self.by_peer.insert(peer, (spi_in, now + SWITCH_LIMIT));
    }

    /// Forgets `peer`'s pending switch (its SAs changed otherwise); the SPI it waited for.
    pub(crate) fn cancel(&mut self, peer: Ipv4Addr) -> Option<u32> {
        self.by_peer.remove(&peer).map(|(spi, _)| spi)
    }

    /// Whether `peer` waits for inbound packets on `spi_in`.
    pub(crate) fn waits_for(&self, peer: Ipv4Addr, spi_in: u32) -> bool {
        self.by_peer.get(&peer).is_some_and(|(s, _)| *s == spi_in)
    }

    /// The earliest switch time. Only peers in the middle of a rekey are here (a handful
    /// even on a hub), so a scan is cheaper than an ordered structure.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.by_peer.values().map(|(_, t)| *t).min()
    }

    /// Peers whose switch time has come, with the SPI each waited for.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(Ipv4Addr, u32)> {
        let due: Vec<_> = self
            .by_peer
            .iter()
            .filter(|(_, (_, t))| *t <= now)
            .map(|(p, (s, _))| (*p, *s))
            .collect();
        for (p, _) in &due {
            self.by_peer.remove(p);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_waits_until_its_limit_and_a_second_rekey_replaces_it() {
        let t0 = Instant::now();
        let (a, b) = (
            Ipv4Addr::new(198, 51, 100, 2),
            Ipv4Addr::new(198, 51, 100, 3),
        );
        let mut p = PendingSwitches::default();
        assert_eq!(p.deadline(), None);
        p.defer(a, 1, t0);
        p.defer(b, 2, t0 + Duration::from_secs(1));
        assert!(p.waits_for(a, 1) && !p.waits_for(a, 2));
        assert_eq!(p.deadline(), Some(t0 + SWITCH_LIMIT));
        assert!(
            p.take_due(t0 + SWITCH_LIMIT - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(p.take_due(t0 + SWITCH_LIMIT), vec![(a, 1)]);
        p.defer(b, 3, t0 + Duration::from_secs(2));
        assert!(p.waits_for(b, 3) && !p.waits_for(b, 2));
        assert_eq!(p.cancel(b), Some(3));
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn retired_inbound_sas_go_in_order_after_the_linger_or_with_their_peer() {
        let t0 = Instant::now();
        let (a, b) = (
            Ipv4Addr::new(198, 51, 100, 2),
            Ipv4Addr::new(198, 51, 100, 3),
        );
        let mut r = Retired::default();
        r.retire(a, 10, t0);
        r.retire(b, 20, t0 + Duration::from_millis(500));
        r.retire(a, 11, t0 + Duration::from_secs(1));
        assert_eq!(r.deadline(), Some(t0 + RETIRED_LINGER));
        assert!(
            r.take_due(t0 + RETIRED_LINGER - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            r.take_due(t0 + RETIRED_LINGER + Duration::from_millis(500)),
            vec![(a, 10), (b, 20)]
        );
        assert_eq!(r.take_peer(b), Vec::<u32>::new());
        assert_eq!(r.take_peer(a), vec![11]);
        assert_eq!(r.deadline(), None);
    }
}
