//! Outstanding Resolution Requests (RFC 2332 §5.2.1), indexed so that no event walks them all
//! (issue 12): by target (the map), by retransmission time (`poll_timeout`, the retry timer)
//! and by request id (matching a Resolution Reply, §5.2.2). The fields are private to this
//! module, so the indexes change only with the entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use super::resolution::PendingResolution;

#[derive(Debug, Default)]
pub(super) struct PendingTable {
    by_target: BTreeMap<IpAddr, PendingResolution>,
    by_retry: BTreeSet<(Instant, IpAddr)>,
    by_id: BTreeSet<(u32, IpAddr)>,
}

impl PendingTable {
    pub(super) fn len(&self) -> usize {
        self.by_target.len()
    }

    pub(super) fn contains(&self, target: &IpAddr) -> bool {
        self.by_target.contains_key(target)
    }

    /// Starts (or replaces) the resolution of `target`.
    pub(super) fn insert(&mut self, target: IpAddr, p: PendingResolution) {
        self.remove(&target);
        self.by_retry.insert((p.retry_at, target));
        self.by_id.insert((p.request_id, target));
        self.by_target.insert(target, p);
    }

    pub(super) fn remove(&mut self, target: &IpAddr) -> Option<PendingResolution> {
        let p = self.by_target.remove(target)?;
        self.by_retry.remove(&(p.retry_at, *target));
        self.by_id.remove(&(p.request_id, *target));
        Some(p)
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether the resolution of `target` is outstanding with request id `id` (what a
    /// Resolution Reply must match, RFC 2332 §5.2.2).
    pub(super) fn is_outstanding(&self, id: u32, target: IpAddr) -> bool {
        self.by_id.contains(&(id, target))
    }

    /// The target of the resolution with request id `id` (the lowest target if ids collide, as
    /// a walk in target order would find; tests).
    #[cfg(test)]
    pub(super) fn target_of(&self, id: u32) -> Option<IpAddr> {
        let lowest = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        self.by_id
            .range((id, lowest)..)
            .next()
            .filter(|(i, _)| *i == id)
            .map(|(_, t)| *t)
    }

    /// The earliest retransmission time.
    pub(super) fn first_deadline(&self) -> Option<Instant> {
        self.by_retry.first().map(|(t, _)| *t)
    }

    /// Targets whose retransmission time is at or before `now`, in target order.
    pub(super) fn due(&self, now: Instant) -> Vec<IpAddr> {
        let mut due: Vec<IpAddr> = self
            .by_retry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, a)| *a)
            .collect();
        due.sort_unstable();
        due
    }

    /// Every outstanding resolution's retry time, brute force (tests).
    #[cfg(test)]
    pub(super) fn brute_deadline(&self) -> Option<Instant> {
        self.by_target.values().map(|p| p.retry_at).min()
    }
}
