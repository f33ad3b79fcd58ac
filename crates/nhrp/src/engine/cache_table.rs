//! The cache as a table with indexes (issue 12: a hub with 10,000 spokes must not walk every
//! entry on every event). [`CacheTable`] owns the entries (RFC 2332 §5.2.3 registrations,
//! §5.2.2 resolved shortcuts and requesters learned from resolution requests) and keeps, exact
//! on every change:
//!
//! - a deadline index: each entry's earliest timer, `min(expires, refresh_at)`, so
//!   `poll_timeout` reads the first and `handle_timeout` visits only what is due;
//! - an index by protocol next hop (`lookup_nbma`, `mapping`, purges);
//! - an index by effective NBMA address (post-NAT when known; `peer_dead`, `next_hops_at`);
//! - an index of NATed entries by their post-NAT address (`is_nated_peer`);
//! - the hub's multicast membership: the effective NBMA addresses of registered dynamic
//!   entries, reference counted, with the net joins and leaves since the last look;
//! - the next hops whose mapping may have changed since the last look.
//!
//! The fields are private to this module: every change goes through [`CacheTable::insert`],
//! [`CacheTable::remove`] or [`CacheTable::modify`], which reindex, so no caller can change an
//! indexed field and leave an index stale.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use crate::cache::{CacheEntry, EntryKind};

/// A cache key: (network prefix, prefix length). Prefixes are masked to their length and
/// IPv4 lengths are at most 32 (every insert goes through `mask` and `host_len`).
pub(super) type Key = (IpAddr, u8);

/// The indexed projection of an entry: what the indexes and the change records depend on.
/// Computed before and after every change, so an index is touched only when its field moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Indexed {
    kind: EntryKind,
    next_hop: IpAddr,
    nbma: IpAddr,
    post_nat_nbma: Option<IpAddr>,
    expires: Option<Instant>,
    deadline: Option<Instant>,
    /// Counts towards the hub's multicast set (registered dynamic entry).
    member: bool,
}

impl Indexed {
    fn of(e: &CacheEntry) -> Self {
        Self {
            kind: e.kind,
            next_hop: e.next_hop,
            nbma: e.nbma,
            post_nat_nbma: e.post_nat_nbma,
            expires: e.expires,
            deadline: [e.expires, e.refresh_at].into_iter().flatten().min(),
            member: e.kind == EntryKind::Dynamic && e.flags.registered,
        }
    }

    fn effective_nbma(&self) -> IpAddr {
        self.post_nat_nbma.unwrap_or(self.nbma)
    }

    /// The post-NAT address of an entry whose claimed NBMA differs from it.
    fn nated(&self) -> Option<IpAddr> {
        self.post_nat_nbma.filter(|p| *p != self.nbma)
    }

    fn is_live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }

    /// Whether what a mapping reader sees (`Engine::mapping`, `lookup_nbma`) can differ
    /// between `self` and `other` at `now`.
    fn same_mapping(&self, other: &Self, now: Instant) -> bool {
        self.kind == other.kind
            && self.next_hop == other.next_hop
            && self.nbma == other.nbma
            && self.post_nat_nbma == other.post_nat_nbma
            && self.is_live(now) == other.is_live(now)
    }
}

/// The cache entries and their indexes (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct CacheTable {
    entries: BTreeMap<Key, CacheEntry>,
    by_deadline: BTreeSet<(Instant, Key)>,
    by_next_hop: BTreeSet<(IpAddr, Key)>,
    by_nbma: BTreeSet<(IpAddr, Key)>,
    nated: BTreeSet<(IpAddr, Key)>,
    /// Effective NBMA → number of registered dynamic entries there.
    multicast: BTreeMap<IpAddr, usize>,
    /// Net membership changes since the last `take_multicast_changes`: `true` joined, `false`
    /// left. An address that joined and left again in between is absent.
    multicast_changes: BTreeMap<IpAddr, bool>,
    /// Next hops whose mapping may have changed since the last `take_mapping_changes`.
    changed: BTreeSet<IpAddr>,
}

impl CacheTable {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn get(&self, key: &Key) -> Option<&CacheEntry> {
        self.entries.get(key)
    }

    /// Every entry in key order: for the operator's views and commands that touch everything
    /// (`show`, `clear`, shutdown), never for a per-event path.
    pub(super) fn values(&self) -> impl Iterator<Item = &CacheEntry> {
        self.entries.values()
    }

    /// Every key in order (see [`CacheTable::values`]).
    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.keys()
    }

    /// Inserts or replaces the entry at `key`; returns the one it replaced.
    pub(super) fn insert(
        &mut self,
        now: Instant,
        key: Key,
        entry: CacheEntry,
    ) -> Option<CacheEntry> {
        let new = Indexed::of(&entry);
        let old = self.entries.insert(key, entry);
        let before = old.as_ref().map(Indexed::of);
        if before == Some(new) {
            return old;
        }
        self.reindex(key, before.as_ref(), Some(&new));
        match before {
            Some(b) if b.same_mapping(&new, now) => {}
            Some(b) => {
                self.changed.insert(b.next_hop);
                self.changed.insert(new.next_hop);
            }
            None => {
                self.changed.insert(new.next_hop);
            }
        }
        old
    }

    /// Removes the entry at `key`.
    pub(super) fn remove(&mut self, key: &Key) -> Option<CacheEntry> {
        let old = self.entries.remove(key)?;
        let b = Indexed::of(&old);
        self.unindex(*key, &b);
        self.changed.insert(b.next_hop);
        Some(old)
    }

    /// Changes the entry at `key` through `f` and reindexes what `f` changed; `None` when
    /// there is no such entry. The key itself stays.
    pub(super) fn modify<R>(
        &mut self,
        now: Instant,
        key: &Key,
        f: impl FnOnce(&mut CacheEntry) -> R,
    ) -> Option<R> {
        let e = self.entries.get_mut(key)?;
        let before = Indexed::of(e);
        let r = f(e);
        let after = Indexed::of(e);
        if before != after {
            self.reindex(*key, Some(&before), Some(&after));
            if !before.same_mapping(&after, now) {
                self.changed.insert(before.next_hop);
                self.changed.insert(after.next_hop);
            }
        }
        Some(r)
    }

    fn unindex(&mut self, key: Key, i: &Indexed) {
        self.reindex(key, Some(i), None);
    }

    /// Moves `key` in each index from what `old` puts it under to what `new` does, touching
    /// only the indexes whose field differs (a registration refresh moves only its deadline).
    fn reindex(&mut self, key: Key, old: Option<&Indexed>, new: Option<&Indexed>) {
        fn moved<T: PartialEq + Copy>(
            old: Option<&Indexed>,
            new: Option<&Indexed>,
            f: impl Fn(&Indexed) -> Option<T>,
        ) -> Option<(Option<T>, Option<T>)> {
            let (a, b) = (old.and_then(&f), new.and_then(&f));
            (a != b).then_some((a, b))
        }
        if let Some((a, b)) = moved(old, new, |i| i.deadline) {
            if let Some(d) = a {
                self.by_deadline.remove(&(d, key));
            }
            if let Some(d) = b {
                self.by_deadline.insert((d, key));
            }
        }
        if let Some((a, b)) = moved(old, new, |i| Some(i.next_hop)) {
            if let Some(n) = a {
                self.by_next_hop.remove(&(n, key));
            }
            if let Some(n) = b {
                self.by_next_hop.insert((n, key));
            }
        }
        if let Some((a, b)) = moved(old, new, |i| Some(i.effective_nbma())) {
            if let Some(n) = a {
                self.by_nbma.remove(&(n, key));
            }
            if let Some(n) = b {
                self.by_nbma.insert((n, key));
            }
        }
        if let Some((a, b)) = moved(old, new, Indexed::nated) {
            if let Some(n) = a {
                self.nated.remove(&(n, key));
            }
            if let Some(n) = b {
                self.nated.insert((n, key));
            }
        }
        if let Some((a, b)) = moved(old, new, |i| i.member.then(|| i.effective_nbma())) {
            if let Some(nbma) = a
                && let Some(n) = self.multicast.get_mut(&nbma)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.multicast.remove(&nbma);
                    Self::note_membership(&mut self.multicast_changes, nbma, false);
                }
            }
            if let Some(nbma) = b {
                let n = self.multicast.entry(nbma).or_insert(0);
                *n += 1;
                if *n == 1 {
                    Self::note_membership(&mut self.multicast_changes, nbma, true);
                }
            }
        }
    }

    /// Records that `nbma` joined (`true`) or left the multicast set, cancelling the opposite
    /// change not yet taken (the set then equals what the last taker saw).
    fn note_membership(changes: &mut BTreeMap<IpAddr, bool>, nbma: IpAddr, joined: bool) {
        if changes.get(&nbma) == Some(&!joined) {
            changes.remove(&nbma);
        } else {
            changes.insert(nbma, joined);
        }
    }

    /// The earliest timer of any entry.
    pub(super) fn first_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Keys of the entries whose earliest timer is at or before `now`, in key order.
    pub(super) fn due(&self, now: Instant) -> Vec<Key> {
        let mut due: Vec<Key> = self
            .by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, k)| *k)
            .collect();
        due.sort_unstable();
        due
    }

    /// The first (lowest-key) live entry whose next hop is `next_hop`.
    pub(super) fn first_live_by_next_hop(
        &self,
        next_hop: IpAddr,
        now: Instant,
    ) -> Option<&CacheEntry> {
        Self::range_of(&self.by_next_hop, next_hop)
            .filter_map(|k| self.entries.get(&k))
            .find(|e| e.is_live(now))
    }

    /// Keys of the entries whose next hop is `next_hop`, in key order.
    pub(super) fn keys_by_next_hop(&self, next_hop: IpAddr) -> impl Iterator<Item = Key> + '_ {
        Self::range_of(&self.by_next_hop, next_hop)
    }

    /// Keys of the entries whose effective NBMA address is `nbma`, in key order.
    pub(super) fn keys_by_nbma(&self, nbma: IpAddr) -> impl Iterator<Item = Key> + '_ {
        Self::range_of(&self.by_nbma, nbma)
    }

    /// Keys of the entries for the address `addr` itself, any prefix length, in key order.
    pub(super) fn keys_for_address(&self, addr: IpAddr) -> impl Iterator<Item = Key> + '_ {
        self.entries
            .range((addr, 0)..=(addr, u8::MAX))
            .map(|(k, _)| *k)
    }

    /// Whether a live entry was registered from behind NAT with `nbma` as its post-NAT
    /// address (and a different claimed one).
    pub(super) fn nated_live(&self, nbma: IpAddr, now: Instant) -> bool {
        Self::range_of(&self.nated, nbma)
            .filter_map(|k| self.entries.get(&k))
            .any(|e| e.is_live(now))
    }

    /// The hub's multicast set as the index holds it (registered dynamic entries, expired ones
    /// until `handle_timeout` removes them).
    #[cfg(test)]
    pub(super) fn multicast_members(&self) -> impl Iterator<Item = &IpAddr> {
        self.multicast.keys()
    }

    /// Net joins (`true`) and leaves of the multicast membership since the last call.
    pub(super) fn take_multicast_changes(&mut self) -> Vec<(IpAddr, bool)> {
        std::mem::take(&mut self.multicast_changes)
            .into_iter()
            .collect()
    }

    /// Marks `next_hop`'s mapping as possibly changed (for mappings the table does not hold:
    /// the NHSs').
    pub(super) fn note_changed(&mut self, next_hop: IpAddr) {
        self.changed.insert(next_hop);
    }

    /// The next hops whose mapping may have changed since the last call, in address order.
    pub(super) fn take_changed(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// The keys paired with `addr` in `index`, in key order: O(log N + k).
    fn range_of(index: &BTreeSet<(IpAddr, Key)>, addr: IpAddr) -> impl Iterator<Item = Key> + '_ {
        // The lowest key of all: IPv4 sorts before IPv6.
        let lowest: Key = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        index
            .range((addr, lowest)..)
            .take_while(move |(a, _)| *a == addr)
            .map(|(_, k)| *k)
    }

    /// Checks every index against a recomputation from the entries (tests).
    #[cfg(test)]
    pub(super) fn assert_consistent(&self) {
        let mut t = CacheTable::default();
        for (k, e) in &self.entries {
            t.reindex(*k, None, Some(&Indexed::of(e)));
        }
        assert_eq!(t.by_deadline, self.by_deadline, "deadline index");
        assert_eq!(t.by_next_hop, self.by_next_hop, "next hop index");
        assert_eq!(t.by_nbma, self.by_nbma, "NBMA index");
        assert_eq!(t.nated, self.nated, "NAT index");
        assert_eq!(t.multicast, self.multicast, "multicast refcounts");
    }
}
