//! The IKE SA table and its indexes: every lookup an event needs (by our
//! SPI, by peer address, by peer identity, by inbound Child SA SPI, the
//! half-open SAs of §2.6, the next deadline) is O(1) or O(log N) in the
//! number of SAs, so a hub with 10,000 spokes pays per event what it pays
//! with ten.
//!
//! An SA is taken out of the table while an exchange works on it and put
//! back afterwards (the handlers own it by value); the indexes are derived
//! from the SA's content when it goes back in, so no handler can forget to
//! update them. Only the Child SA SPI index keeps an SA's entries while it
//! is out, because new inbound SPIs are drawn then and must not collide
//! with its own children (RFC 4303 §2.1: the SPI alone selects the SA).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::sa::{IkeSa, Req, State};
use super::views::SaViews;
use crate::message::Identification;

/// What an SA was indexed under when it went in, so it can be taken out
/// exactly even if it changed meanwhile.
struct Indexed {
    deadline: Option<Instant>,
    ip: IpAddr,
    identity: Option<Identification>,
    half_open: Option<(SocketAddr, u64)>,
    /// Its key in `half_open_age` while half-open.
    half_open_age: Option<(Instant, u64)>,
    spis: Vec<u32>,
}

#[derive(Default)]
pub(super) struct SaTable {
    /// Boxed: an `IkeSa` is about 900 bytes (its largest state's), and a hash table holds
    /// up to twice as many slots as entries, so inline values cost a hub about 1.8 kB per
    /// spoke at the wrong table size; a box costs the SA's size once (issue 12: RSS per spoke).
    sas: HashMap<u64, Box<IkeSa>>,
    indexed: HashMap<u64, Indexed>,
    deadlines: BTreeSet<(Instant, u64)>,
    by_ip: HashMap<IpAddr, Vec<u64>>,
    by_identity: HashMap<Identification, Vec<u64>>,
    /// Inbound Child SA SPI (installed or being negotiated) → owning SA.
    spis: HashMap<u32, u64>,
    /// Responder SAs waiting for IKE_AUTH, by (peer, SPIi): matches a
    /// retransmitted IKE_SA_INIT (§2.1) and counts toward the cookie
    /// threshold (§2.6).
    half_open: HashMap<(SocketAddr, u64), u64>,
    /// Half-open responder SAs per peer IP (§2.6 flood accounting).
    half_open_by_ip: HashMap<IpAddr, usize>,
    /// Half-open responder SAs oldest first (creation time, id): the one to give up when
    /// the hard cap is reached.
    half_open_age: BTreeSet<(Instant, u64)>,
    /// What the operator sees of each SA in the table, rebuilt as it goes back in.
    views: SaViews,
}

/// Every inbound SPI an SA holds: its children's, and the ones it offered
/// in an exchange still in flight.
fn spis_of(sa: &IkeSa) -> Vec<u32> {
    let mut v: Vec<u32> = sa.children.iter().map(|c| c.spi_in).collect();
    v.extend(
        sa.children
            .iter()
            .filter_map(|c| c.peer_rekey.as_ref().map(|p| p.0)),
    );
    if let State::ExpectAuthResponse(s) = &sa.state {
        v.push(s.child_spi);
    }
    if let Some(p) = &sa.pending
        && let Req::CreateChild { spi_in, .. } = p.req
    {
        v.push(spi_in);
    }
    v
}

/// A responder SA that has not seen IKE_AUTH yet, its keys computed or not
/// (§2.6 counts both: each holds state an unauthenticated peer created).
fn is_half_open(state: &State) -> bool {
    matches!(
        state,
        State::ExpectSaInitKeys(_) | State::ExpectAuthRequest(_)
    )
}

fn unlink<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Vec<u64>>, k: &K, id: u64) {
    if let Some(v) = m.get_mut(k) {
        v.retain(|&x| x != id);
        if v.is_empty() {
            m.remove(k);
        }
    }
}

impl SaTable {
    /// Inserts (or puts back) `sa`, due at `deadline`.
    pub(super) fn insert(&mut self, sa: IkeSa, deadline: Option<Instant>) {
        let id = sa.id;
        if self.sas.contains_key(&id) {
            // Replacing an SA that was never taken out: unindex it first.
            let _ = self.remove(id);
        }
        let spis = spis_of(&sa);
        let before = self.indexed.remove(&id).map(|i| i.spis).unwrap_or_default();
        for s in &before {
            if !spis.contains(s) && self.spis.get(s) == Some(&id) {
                self.spis.remove(s);
            }
        }
        for &s in &spis {
            self.spis.insert(s, id);
        }
        if let Some(d) = deadline {
            self.deadlines.insert((d, id));
        }
        let ip = sa.remote.ip();
        self.by_ip.entry(ip).or_default().push(id);
        let identity = sa.remote_id.clone();
        if let Some(i) = &identity {
            self.by_identity.entry(i.clone()).or_default().push(id);
        }
        let half_open = is_half_open(&sa.state).then_some((sa.remote, sa.spi_i));
        let mut half_open_age = None;
        if let Some(k) = half_open
            && self.half_open.insert(k, id).is_none()
        {
            *self.half_open_by_ip.entry(k.0.ip()).or_default() += 1;
            let age = (sa.created, id);
            self.half_open_age.insert(age);
            half_open_age = Some(age);
        }
        self.indexed.insert(
            id,
            Indexed {
                deadline,
                ip,
                identity,
                half_open,
                half_open_age,
                spis,
            },
        );
        self.views.put(&sa);
        self.sas.insert(id, Box::new(sa));
    }

    /// Takes an SA out to work on it; its inbound SPIs stay reserved until
    /// it is put back or [`SaTable::forget`] runs.
    pub(super) fn remove(&mut self, id: u64) -> Option<IkeSa> {
        let sa = *self.sas.remove(&id)?;
        self.views.take(id);
        if let Some(ix) = self.indexed.get_mut(&id) {
            if let Some(d) = ix.deadline.take() {
                self.deadlines.remove(&(d, id));
            }
            unlink(&mut self.by_ip, &ix.ip, id);
            if let Some(i) = ix.identity.take() {
                unlink(&mut self.by_identity, &i, id);
            }
            if let Some(age) = ix.half_open_age.take() {
                self.half_open_age.remove(&age);
            }
            if let Some(k) = ix.half_open.take()
                && self.half_open.get(&k) == Some(&id)
            {
                self.half_open.remove(&k);
                if let Some(n) = self.half_open_by_ip.get_mut(&k.0.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        self.half_open_by_ip.remove(&k.0.ip());
                    }
                }
            }
        }
        Some(sa)
    }

    /// An SA taken out that will not come back (closed): releases its SPIs.
    pub(super) fn forget(&mut self, sa: &IkeSa) {
        let mut spis = spis_of(sa);
        if let Some(ix) = self.indexed.remove(&sa.id) {
            spis.extend(ix.spis);
        }
        for s in spis {
            if self.spis.get(&s) == Some(&sa.id) {
                self.spis.remove(&s);
            }
        }
    }

    /// Whether inbound SPI `spi` is free; if so, reserves it for SA `owner`
    /// (taken out or not) until `owner` is put back without using it.
    pub(super) fn reserve_spi(&mut self, spi: u32, owner: u64) -> bool {
        if self.spis.contains_key(&spi) {
            return false;
        }
        if let Some(ix) = self.indexed.get_mut(&owner) {
            ix.spis.push(spi);
            self.spis.insert(spi, owner);
        }
        true
    }

    pub(super) fn get(&self, id: u64) -> Option<&IkeSa> {
        self.sas.get(&id).map(|sa| &**sa)
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        self.sas.contains_key(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.sas.len()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &IkeSa> {
        self.sas.values().map(|sa| &**sa)
    }

    /// The operator's view of every SA in the table: an O(1) clone.
    pub(super) fn views(&self) -> &SaViews {
        &self.views
    }

    /// The SAs with a peer at `ip`.
    pub(super) fn with_peer(&self, ip: IpAddr) -> &[u64] {
        self.by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }

    /// The SAs authenticated as `id`.
    pub(super) fn with_identity(&self, id: &Identification) -> &[u64] {
        self.by_identity.get(id).map_or(&[], Vec::as_slice)
    }

    /// The SA that owns inbound Child SA SPI `spi` (installed or offered).
    pub(super) fn spi_owner(&self, spi: u32) -> Option<u64> {
        self.spis.get(&spi).copied()
    }

    /// The half-open responder SA for an IKE_SA_INIT from `remote` with `spi_i`.
    pub(super) fn half_open(&self, remote: SocketAddr, spi_i: u64) -> Option<u64> {
        self.half_open.get(&(remote, spi_i)).copied()
    }

    /// Number of half-open responder SAs (§2.6).
    pub(super) fn half_open_count(&self) -> usize {
        self.half_open.len()
    }

    /// The oldest half-open responder SA.
    pub(super) fn oldest_half_open(&self) -> Option<u64> {
        self.half_open_age.first().map(|&(_, id)| id)
    }

    /// Number of half-open responder SAs from `ip`.
    pub(super) fn half_open_from(&self, ip: IpAddr) -> usize {
        self.half_open_by_ip.get(&ip).copied().unwrap_or(0)
    }

    /// The earliest deadline of any SA in the table.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// The SAs whose deadline is at or before `now`, earliest first.
    pub(super) fn due(&self, now: Instant) -> Vec<u64> {
        self.deadlines
            .iter()
            .take_while(|&&(d, _)| d <= now)
            .map(|&(_, id)| id)
            .collect()
    }

    /// Checks every index against a recomputation from the SAs (tests).
    #[cfg(any(test, feature = "testing"))]
    pub(super) fn check(&self, deadline_of: impl Fn(&IkeSa) -> Option<Instant>) {
        assert_eq!(self.indexed.len(), self.sas.len());
        assert_eq!(self.views.len(), self.sas.len(), "a view per SA");
        for sa in self.sas.values() {
            assert_eq!(
                self.views.get(sa.id),
                Some(&super::views::SaView::of(sa)),
                "the view of SA {:#x} is stale",
                sa.id
            );
        }
        let mut deadlines = BTreeSet::new();
        let mut half_open = HashMap::new();
        let mut n_ip = 0;
        for sa in self.sas.values() {
            if let Some(d) = deadline_of(sa) {
                deadlines.insert((d, sa.id));
            }
            assert!(self.with_peer(sa.remote.ip()).contains(&sa.id));
            n_ip += 1;
            if let Some(i) = &sa.remote_id {
                assert!(self.with_identity(i).contains(&sa.id));
            }
            if is_half_open(&sa.state) {
                half_open.insert((sa.remote, sa.spi_i), sa.id);
            }
            for s in spis_of(sa) {
                assert_eq!(self.spis.get(&s), Some(&sa.id), "SPI {s:#x} not indexed");
            }
        }
        assert_eq!(deadlines, self.deadlines);
        assert_eq!(half_open, self.half_open);
        let mut by_ip: HashMap<IpAddr, usize> = HashMap::new();
        for k in half_open.keys() {
            *by_ip.entry(k.0.ip()).or_default() += 1;
        }
        assert_eq!(by_ip, self.half_open_by_ip);
        let ages: BTreeSet<(Instant, u64)> = half_open
            .values()
            .filter_map(|id| self.sas.get(id))
            .map(|sa| (sa.created, sa.id))
            .collect();
        assert_eq!(ages, self.half_open_age);
        assert_eq!(n_ip, self.by_ip.values().map(Vec::len).sum::<usize>());
        let live: usize = self.sas.values().map(|s| spis_of(s).len()).sum();
        assert_eq!(live, self.spis.len(), "stale SPI reservations");
    }
}
