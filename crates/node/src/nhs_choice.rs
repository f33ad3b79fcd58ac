//! Which NHS a spoke sends through when a destination has no mapping of its own (the next hop
//! of everything not yet resolved, and the first path of every resolution), with several NHSs:
//! Cisco's `ip nhrp nhs ADDR priority N` and `ip nhrp nhs fallback SECS`. The spoke registers
//! with every NHS (the NHRP engine does); of those that are up it prefers the lowest priority
//! value, then the order of configuration. A better NHS that comes back is used only once it
//! has stayed up for the fallback time, so a flapping primary does not move the traffic
//! back and forth (at start, an NHS that registers for the first time is used at once). When none is up, the best configured one is used, so traffic still
//! brings its SA up.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// One configured NHS as the selector sees it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    nbma: Ipv4Addr,
    priority: u8,
    /// Registered since.
    up_since: Option<Instant>,
    /// Its registration was up once and went down: coming back, it waits out the fallback
    /// time (one that comes up for the first time, at start, is used at once).
    went_down: bool,
}

/// The spoke's NHS preference.
#[derive(Debug, Clone)]
pub struct NhsChoice {
    /// In configuration order.
    candidates: Vec<Candidate>,
    fallback: Duration,
    current: Option<Ipv4Addr>,
}

impl NhsChoice {
    /// NHSs as (NBMA, priority), in configuration order; `fallback` as configured.
    pub fn new(nhs: impl IntoIterator<Item = (Ipv4Addr, u8)>, fallback: Duration) -> Self {
        let candidates: Vec<Candidate> = nhs
            .into_iter()
            .map(|(nbma, priority)| Candidate {
                nbma,
                priority,
                up_since: None,
                went_down: false,
            })
            .collect();
        let mut c = Self {
            candidates,
            fallback,
            current: None,
        };
        c.current = c.best_configured();
        c
    }

    /// The best by configuration alone (lowest priority value, then first configured).
    fn best_configured(&self) -> Option<Ipv4Addr> {
        self.candidates
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (c.priority, *i))
            .map(|(_, c)| c.nbma)
    }

    fn rank(&self, nbma: Ipv4Addr) -> Option<(u8, usize)> {
        self.candidates
            .iter()
            .position(|c| c.nbma == nbma)
            .and_then(|i| self.candidates.get(i).map(|c| (c.priority, i)))
    }

    /// A reload changed the priorities or the fallback time (the NHSs themselves, and their
    /// order, only change with a restart): re-ranks them, keeping what is known of each
    /// (registered since, went down once), and re-decides at `now`; true when the choice
    /// changed. A newly best NHS that has been up all along carries traffic at once; one
    /// that came back less than the fallback time ago waits out the rest of it, as it would
    /// have without the reload (the fallback time protects against a flapping NHS, whatever
    /// its rank).
    pub fn reconfigure(
        &mut self,
        nhs: impl IntoIterator<Item = (Ipv4Addr, u8)>,
        fallback: Duration,
        now: Instant,
    ) -> bool {
        let old = std::mem::take(&mut self.candidates);
        self.candidates = nhs
            .into_iter()
            .map(
                |(nbma, priority)| match old.iter().find(|c| c.nbma == nbma) {
                    Some(c) => Candidate { priority, ..*c },
                    None => Candidate {
                        nbma,
                        priority,
                        up_since: None,
                        went_down: false,
                    },
                },
            )
            .collect();
        self.fallback = fallback;
        if self.current.is_some_and(|n| self.rank(n).is_none()) {
            self.current = None;
        }
        self.decide(now)
    }

    /// Whether the registration with `nbma` is up, as last recorded by [`Self::set_up`].
    pub fn is_up(&self, nbma: Ipv4Addr) -> bool {
        self.candidates
            .iter()
            .any(|c| c.nbma == nbma && c.up_since.is_some())
    }

    /// The NHS traffic goes to now.
    pub fn current(&self) -> Option<Ipv4Addr> {
        self.current
    }

    /// Records that the registration with `nbma` came up (or went down) at `now`, and
    /// re-decides; true when the choice changed.
    pub fn set_up(&mut self, nbma: Ipv4Addr, up: bool, now: Instant) -> bool {
        for c in self.candidates.iter_mut().filter(|c| c.nbma == nbma) {
            c.went_down |= !up && c.up_since.is_some();
            c.up_since = match (up, c.up_since) {
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
                (false, _) => None,
            };
        }
        self.decide(now)
    }

    /// Re-decides at `now` (call at [`Self::deadline`]); true when the choice changed.
    pub fn decide(&mut self, now: Instant) -> bool {
        let old = self.current;
        let current_up = old.is_some_and(|n| self.is_up(n));
        let current_rank = old.and_then(|n| self.rank(n));
        // The best NHS that is up and may carry traffic now: the current one always may; a
        // better one only after the fallback time; any one when the current is down.
        let best = self
            .candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let since = c.up_since?;
                let settled = !c.went_down || now.saturating_duration_since(since) >= self.fallback;
                let allowed = Some(c.nbma) == old || !current_up || settled;
                allowed.then_some(((c.priority, i), c.nbma))
            })
            .min_by_key(|(rank, _)| *rank);
        self.current = match (best, current_up) {
            (Some((rank, nbma)), true) if current_rank.is_some_and(|r| rank < r) => Some(nbma),
            (Some(_), true) => old,
            (Some((_, nbma)), false) => Some(nbma),
            (None, _) => self.best_configured(),
        };
        self.current != old
    }

    /// `nbma` served its fallback time elsewhere (its cluster brought it back only after it
    /// was reachable that long): once registered it carries traffic at once.
    pub fn settle(&mut self, nbma: Ipv4Addr) {
        for c in self.candidates.iter_mut().filter(|c| c.nbma == nbma) {
            c.went_down = false;
        }
    }

    /// When a better NHS's fallback time ends, so that [`Self::decide`] can move to it.
    pub fn deadline(&self) -> Option<Instant> {
        let current_rank = self.current.and_then(|n| self.rank(n))?;
        if !self.current.is_some_and(|n| self.is_up(n)) {
            return None;
        }
        self.candidates
            .iter()
            .enumerate()
            .filter(|(i, c)| (c.priority, *i) < current_rank && c.went_down)
            .filter_map(|(_, c)| c.up_since.map(|t| t + self.fallback))
            .min()
    }
}

/// How long an NHS its cluster made active may take to register before the next one of the
/// cluster is tried instead (IKE, then a registration and its first retransmissions).
pub const ACTIVATION_GRACE: Duration = Duration::from_secs(30);

/// An NHS's place in its cluster (`show nhrp`: UP or PROBE while active, PROBE or DOWN in
/// reserve, as IOS names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    /// Registered with, or being registered.
    Active,
    /// In reserve and probed: better than an active one of its cluster (or the cluster is
    /// short), so IKE is brought up toward it to learn when it is reachable.
    Probe,
    /// In reserve, not probed: the cluster has `max-connections` better ones.
    Down,
}

/// What [`NhsClusters::plan`] decided for one NHS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterChange {
    /// Register with it: its cluster is short of `max-connections`.
    Activate(Ipv4Addr),
    /// Register with it: it is better than the worst active one and has been reachable for
    /// the fallback time; the worst goes to reserve once this one is registered.
    Promote(Ipv4Addr),
    /// Back to reserve (purge the registration): the cluster has `max-connections` better
    /// NHSs registered.
    Reserve(Ipv4Addr),
    /// Back to reserve because it failed: its registration went down, or did not come up
    /// within [`ACTIVATION_GRACE`]. Tried again only once an SA with it came up after that.
    Failed(Ipv4Addr),
    /// Register with it: a reload (new priorities, `max-connections` or cluster) made it one
    /// of its cluster's best; those it displaces go to reserve once it is registered.
    Chosen(Ipv4Addr),
}

/// Where an NHS of a limited cluster stands.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Made active at `since`; `lost`: its registration was up and went down.
    Active { since: Instant, lost: bool },
    /// In reserve; `failed_at`: when it failed while active, if that is why.
    Reserve { failed_at: Option<Instant> },
}

#[derive(Debug, Clone, Copy)]
struct Member {
    nbma: Ipv4Addr,
    /// (priority, configuration order): lower is better.
    rank: (u8, usize),
    cluster: u8,
    slot: Slot,
    up: bool,
    /// An SA with it is up since.
    reachable_since: Option<Instant>,
}

impl Member {
    fn active(&self) -> bool {
        matches!(self.slot, Slot::Active { .. })
    }

    /// In reserve and fit to be made active: it never failed, or an SA with it came up
    /// since it did.
    fn eligible(&self) -> bool {
        match self.slot {
            Slot::Active { .. } => false,
            Slot::Reserve { failed_at: None } => true,
            Slot::Reserve { failed_at: Some(t) } => self.reachable_since.is_some_and(|r| r > t),
        }
    }
}

/// Cisco's NHS clusters (`ip nhrp nhs cluster N max-connections M`, `ip nhrp nhs ADDR
/// priority P cluster N`): in a cluster with a limit the spoke keeps at most that many NHSs
/// registered, the best available by priority (lowest value, then configuration order), and
/// the rest in reserve. When an active one fails the next best in reserve is made active at
/// once; one in reserve that is better than the worst active one is probed (IKE toward it)
/// and, once reachable for the fallback time, made active, and the worst active one goes to
/// reserve as soon as the better one is registered (make before break: for that moment the
/// cluster has one more registration than its limit). A cluster without a limit (cluster 0
/// unless configured) keeps every NHS active, as without clusters.
#[derive(Debug, Clone)]
pub struct NhsClusters {
    /// In configuration order; members of limited clusters only.
    members: Vec<Member>,
    limits: BTreeMap<u8, usize>,
    fallback: Duration,
}

impl NhsClusters {
    /// NHSs as (NBMA, priority, cluster) in configuration order, the per-cluster limits and
    /// the fallback time; at `now` the best of each limited cluster are active.
    pub fn new(
        nhs: impl IntoIterator<Item = (Ipv4Addr, u8, u8)>,
        limits: &BTreeMap<u8, u8>,
        fallback: Duration,
        now: Instant,
    ) -> Self {
        let limits: BTreeMap<u8, usize> =
            limits.iter().map(|(c, m)| (*c, usize::from(*m))).collect();
        let members = nhs
            .into_iter()
            .enumerate()
            .filter(|(_, (_, _, c))| limits.contains_key(c))
            .map(|(i, (nbma, priority, cluster))| Member {
                nbma,
                rank: (priority, i),
                cluster,
                slot: Slot::Reserve { failed_at: None },
                up: false,
                reachable_since: None,
            })
            .collect();
        let mut c = Self {
            members,
            limits,
            fallback,
        };
        let _ = c.plan(now);
        c
    }

    /// A reload changed priorities, clusters, `max-connections` or the fallback time (the
    /// NHSs themselves only change with a restart): re-ranks the members, keeping each one's
    /// place and history, and re-plans at `now`. `state` tells, for an NHS that was not in a
    /// limited cluster before, whether NHRP registers with it and whether that registration
    /// is up. Each cluster's best `max-connections` of its healthy NHSs (active, or in reserve
    /// without having failed) are made active at once, as at start, without the fallback
    /// time: the operator chose them, and they did not fail. One in reserve because it failed
    /// still has to be reachable for the fallback time ([`Self::plan`]'s promotion). Those
    /// displaced stay registered until the chosen ones are (make before break), then go to
    /// reserve. An NHS no longer in a limited cluster is no member any more:
    /// [`Self::role`] calls it active.
    pub fn reconfigure(
        &mut self,
        nhs: impl IntoIterator<Item = (Ipv4Addr, u8, u8)>,
        limits: &BTreeMap<u8, u8>,
        fallback: Duration,
        now: Instant,
        state: impl Fn(Ipv4Addr) -> (bool, bool),
    ) -> Vec<ClusterChange> {
        self.limits = limits.iter().map(|(c, m)| (*c, usize::from(*m))).collect();
        self.fallback = fallback;
        let old = std::mem::take(&mut self.members);
        self.members = nhs
            .into_iter()
            .enumerate()
            .filter(|(_, (_, _, c))| self.limits.contains_key(c))
            .map(|(i, (nbma, priority, cluster))| {
                let rank = (priority, i);
                match old.iter().find(|m| m.nbma == nbma) {
                    Some(m) => Member {
                        rank,
                        cluster,
                        ..*m
                    },
                    None => {
                        let (active, up) = state(nbma);
                        Member {
                            nbma,
                            rank,
                            cluster,
                            slot: if active {
                                Slot::Active {
                                    since: now,
                                    lost: false,
                                }
                            } else {
                                Slot::Reserve { failed_at: None }
                            },
                            up,
                            reachable_since: None,
                        }
                    }
                }
            })
            .collect();
        let mut out = Vec::new();
        let clusters: Vec<u8> = self.limits.keys().copied().collect();
        for c in clusters {
            let healthy = |m: &Member| {
                matches!(
                    m.slot,
                    Slot::Active { lost: false, .. } | Slot::Reserve { failed_at: None }
                )
            };
            let mut best: Vec<(u8, usize)> = self
                .cluster(c)
                .filter(|m| healthy(m))
                .map(|m| m.rank)
                .collect();
            best.sort_unstable();
            best.truncate(self.limit(c));
            for m in self
                .members
                .iter_mut()
                .filter(|m| !m.active() && best.contains(&m.rank))
            {
                m.slot = Slot::Active {
                    since: now,
                    lost: false,
                };
                out.push(ClusterChange::Chosen(m.nbma));
            }
        }
        out.extend(self.plan(now));
        out
    }

    /// Whether any cluster has a limit (else every NHS is always active).
    pub fn limited(&self) -> bool {
        !self.members.is_empty()
    }

    /// The NHSs of limited clusters.
    pub fn nbmas(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.members.iter().map(|m| m.nbma)
    }

    /// `nbma`'s place; an NHS of an unlimited cluster is always active.
    pub fn role(&self, nbma: Ipv4Addr) -> ClusterRole {
        let Some(m) = self.members.iter().find(|m| m.nbma == nbma) else {
            return ClusterRole::Active;
        };
        if m.active() {
            ClusterRole::Active
        } else if self.probed(m) {
            ClusterRole::Probe
        } else {
            ClusterRole::Down
        }
    }

    /// The NHSs in reserve that are probed.
    pub fn probes(&self) -> Vec<Ipv4Addr> {
        self.members
            .iter()
            .filter(|m| !m.active() && self.probed(m))
            .map(|m| m.nbma)
            .collect()
    }

    fn cluster(&self, c: u8) -> impl Iterator<Item = &Member> + '_ {
        self.members.iter().filter(move |m| m.cluster == c)
    }

    fn limit(&self, c: u8) -> usize {
        self.limits.get(&c).copied().unwrap_or(usize::MAX)
    }

    fn active_count(&self, c: u8) -> usize {
        self.cluster(c).filter(|m| m.active()).count()
    }

    fn worst_active(&self, c: u8) -> Option<(u8, usize)> {
        self.cluster(c).filter(|m| m.active()).map(|m| m.rank).max()
    }

    fn probed(&self, m: &Member) -> bool {
        self.active_count(m.cluster) < self.limit(m.cluster)
            || self.worst_active(m.cluster).is_some_and(|w| m.rank < w)
    }

    /// Records that the registration with `nbma` came up or went down.
    pub fn set_up(&mut self, nbma: Ipv4Addr, up: bool) {
        for m in self.members.iter_mut().filter(|m| m.nbma == nbma) {
            if let Slot::Active { since, lost } = m.slot {
                m.slot = Slot::Active {
                    since,
                    lost: lost || (m.up && !up),
                };
            }
            m.up = up;
        }
    }

    /// Records whether an SA with `nbma` is up at `now`.
    pub fn set_reachable(&mut self, nbma: Ipv4Addr, reachable: bool, now: Instant) {
        for m in self.members.iter_mut().filter(|m| m.nbma == nbma) {
            m.reachable_since = match (reachable, m.reachable_since) {
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
                (false, _) => None,
            };
        }
    }

    /// Re-decides every limited cluster at `now`: failed active NHSs go to reserve, a short
    /// cluster takes the best eligible ones in reserve, a better one reachable for the
    /// fallback time is promoted (one at a time), and once the best `max-connections` active
    /// ones are registered the others go to reserve.
    pub fn plan(&mut self, now: Instant) -> Vec<ClusterChange> {
        let mut out = Vec::new();
        let clusters: Vec<u8> = self.limits.keys().copied().collect();
        for c in clusters {
            let limit = self.limit(c);
            for m in self.members.iter_mut().filter(|m| m.cluster == c) {
                if let Slot::Active { since, lost } = m.slot
                    && (lost || (!m.up && now >= since + ACTIVATION_GRACE))
                {
                    m.slot = Slot::Reserve {
                        failed_at: Some(now),
                    };
                    out.push(ClusterChange::Failed(m.nbma));
                }
            }
            while self.active_count(c) < limit {
                let Some(m) = self
                    .members
                    .iter_mut()
                    .filter(|m| m.cluster == c && m.eligible())
                    .min_by_key(|m| m.rank)
                else {
                    break;
                };
                m.slot = Slot::Active {
                    since: now,
                    lost: false,
                };
                out.push(ClusterChange::Activate(m.nbma));
            }
            if self.active_count(c) == limit
                && let Some(worst) = self.worst_active(c)
            {
                let fallback = self.fallback;
                if let Some(m) = self
                    .members
                    .iter_mut()
                    .filter(|m| m.cluster == c && m.eligible() && m.rank < worst)
                    .filter(|m| m.reachable_since.is_some_and(|r| now >= r + fallback))
                    .min_by_key(|m| m.rank)
                {
                    m.slot = Slot::Active {
                        since: now,
                        lost: false,
                    };
                    out.push(ClusterChange::Promote(m.nbma));
                }
            }
            let mut active: Vec<(u8, usize)> = self
                .cluster(c)
                .filter(|m| m.active())
                .map(|m| m.rank)
                .collect();
            active.sort_unstable();
            let best_up = active
                .iter()
                .take(limit)
                .all(|r| self.members.iter().any(|m| m.rank == *r && m.up));
            if active.len() > limit && best_up {
                let surplus: Vec<(u8, usize)> = active.split_off(limit);
                for m in self
                    .members
                    .iter_mut()
                    .filter(|m| surplus.contains(&m.rank))
                {
                    m.slot = Slot::Reserve { failed_at: None };
                    out.push(ClusterChange::Reserve(m.nbma));
                }
            }
        }
        out
    }

    /// When [`Self::plan`] has work without an event: an active NHS's grace ends, or a better
    /// one in reserve has been reachable for the fallback time.
    pub fn deadline(&self) -> Option<Instant> {
        let mut at = None;
        for c in self.limits.keys().copied() {
            let full = self.active_count(c) == self.limit(c);
            let worst = self.worst_active(c);
            for m in self.cluster(c) {
                let t = match m.slot {
                    Slot::Active { since, lost: false } if !m.up => Some(since + ACTIVATION_GRACE),
                    Slot::Reserve { .. }
                        if full && m.eligible() && worst.is_some_and(|w| m.rank < w) =>
                    {
                        m.reachable_since.map(|r| r + self.fallback)
                    }
                    _ => None,
                };
                at = match (at, t) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 4);
    const C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 5);

    fn secs(t: Instant, s: u64) -> Instant {
        t + Duration::from_secs(s)
    }

    #[test]
    fn the_best_up_nhs_carries_traffic_and_a_better_one_after_the_fallback_time() {
        let t = Instant::now();
        // B is the primary (priority 1), A the secondary (priority 2) although listed first.
        let mut c = NhsChoice::new([(A, 2), (B, 1)], Duration::from_secs(30));
        assert_eq!(c.current(), Some(B), "nothing up: the best configured");
        assert!(c.set_up(A, true, t), "only A up: A");
        assert_eq!(c.current(), Some(A));
        assert_eq!(c.deadline(), None);
        // B comes up for the first time (it was slower at start): at once.
        assert!(c.set_up(B, true, secs(t, 2)));
        assert_eq!(c.current(), Some(B));
        // B goes down: A at once.
        assert!(c.set_up(B, false, secs(t, 5)));
        assert_eq!(c.current(), Some(A));
        // B comes back: A stays until B has been up for 30 s.
        assert!(!c.set_up(B, true, secs(t, 10)));
        assert_eq!(c.current(), Some(A));
        assert_eq!(c.deadline(), Some(secs(t, 40)));
        assert!(!c.decide(secs(t, 39)));
        assert!(c.decide(secs(t, 40)));
        assert_eq!(c.current(), Some(B));
        assert_eq!(c.deadline(), None);
        // B goes down again: A at once.
        assert!(c.set_up(B, false, secs(t, 50)));
        assert_eq!(c.current(), Some(A));
        // B flaps back and down within the fallback time: traffic never moves.
        assert!(!c.set_up(B, true, secs(t, 60)));
        assert!(!c.set_up(B, false, secs(t, 70)));
        assert!(!c.decide(secs(t, 95)));
        assert_eq!(c.current(), Some(A));
        // Everything down: back to the best configured.
        assert!(c.set_up(A, false, secs(t, 100)));
        assert_eq!(c.current(), Some(B));
    }

    #[test]
    fn equal_priorities_keep_configuration_order_and_no_fallback_moves_at_once() {
        let t = Instant::now();
        let mut c = NhsChoice::new([(A, 0), (B, 0), (C, 0)], Duration::ZERO);
        assert_eq!(c.current(), Some(A));
        c.set_up(C, true, t);
        assert_eq!(c.current(), Some(C));
        c.set_up(B, true, t);
        assert_eq!(c.current(), Some(B), "fallback 0: the better one at once");
        c.set_up(A, true, t);
        assert_eq!(c.current(), Some(A));
        c.set_up(A, false, t);
        assert_eq!(c.current(), Some(B));
        let empty = NhsChoice::new([], Duration::ZERO);
        assert_eq!(empty.current(), None);
        assert_eq!(empty.deadline(), None);
    }

    #[test]
    fn a_reload_re_ranks_and_keeps_what_is_known_of_each_nhs() {
        let t = Instant::now();
        let mut c = NhsChoice::new([(A, 0), (B, 1)], Duration::from_secs(30));
        c.set_up(A, true, t);
        c.set_up(B, true, t);
        assert_eq!(c.current(), Some(A));
        // B first now; up all along: at once.
        assert!(c.reconfigure([(A, 1), (B, 0)], Duration::from_secs(30), secs(t, 5)));
        assert_eq!(c.current(), Some(B));
        // A first again, but A went down and came back 10 s ago: it serves the rest of its
        // fallback time (30 s) ...
        c.set_up(A, false, secs(t, 10));
        c.set_up(A, true, secs(t, 20));
        assert!(!c.reconfigure([(A, 0), (B, 1)], Duration::from_secs(30), secs(t, 30)));
        assert_eq!(c.deadline(), Some(secs(t, 50)));
        // ... unless the reload shortens it below the 10 s A has been up.
        assert!(c.reconfigure([(A, 0), (B, 1)], Duration::from_secs(5), secs(t, 30)));
        assert_eq!(c.current(), Some(A));
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn a_cluster_reload_chooses_the_healthy_best_and_leaves_a_failed_one_to_prove_itself() {
        let t = Instant::now();
        let mut c = one_cluster(1, 60, t);
        c.set_up(C, true);
        assert_eq!(roles(&c), [Down, Down, Active]);
        // B becomes the best: chosen at once (it never failed); C stays until B is up.
        let nhs = [(A, 2, 1), (B, 0, 1), (C, 1, 1)];
        let limits = BTreeMap::from([(1, 1)]);
        let fallback = Duration::from_secs(60);
        let state = |_| (false, false);
        assert_eq!(
            c.reconfigure(nhs, &limits, fallback, secs(t, 1), state),
            [ClusterChange::Chosen(B)]
        );
        assert_eq!(roles(&c), [Down, Active, Active]);
        c.set_up(B, true);
        assert_eq!(c.plan(secs(t, 2)), [ClusterChange::Reserve(C)]);
        // B fails; C takes over. A reload that ranks B first again does not bring it back
        // before an SA with it has been up for the fallback time.
        c.set_up(B, false);
        assert_eq!(
            c.plan(secs(t, 3)),
            [ClusterChange::Failed(B), ClusterChange::Activate(C)]
        );
        c.set_up(C, true);
        assert_eq!(c.reconfigure(nhs, &limits, fallback, secs(t, 4), state), []);
        assert_eq!(roles(&c), [Down, Probe, Active]);
        c.set_reachable(B, true, secs(t, 5));
        assert_eq!(c.plan(secs(t, 65)), [ClusterChange::Promote(B)]);
        // No limit any more: no member, every NHS active.
        assert_eq!(
            c.reconfigure(nhs, &BTreeMap::new(), fallback, secs(t, 66), state),
            []
        );
        assert!(!c.limited());
        assert_eq!(roles(&c), [Active, Active, Active]);
        // A limit again: A, new to the cluster, brings NHRP's view (registered, up).
        let mut c = NhsClusters::new([(A, 0, 0), (B, 1, 0)], &limits, fallback, t);
        assert!(!c.limited());
        let moved = c.reconfigure(
            [(A, 0, 1), (B, 1, 1)],
            &limits,
            fallback,
            secs(t, 1),
            |_| (true, true),
        );
        assert_eq!(moved, [ClusterChange::Reserve(B)], "A is up: B at once");
        assert_eq!([c.role(A), c.role(B)], [Active, Down]);
    }

    fn one_cluster(max: u8, fallback: u64, t: Instant) -> NhsClusters {
        // C is the best (priority 1), then A (2), then B (3).
        NhsClusters::new(
            [(A, 2, 1), (B, 3, 1), (C, 1, 1)],
            &BTreeMap::from([(1, max)]),
            Duration::from_secs(fallback),
            t,
        )
    }

    fn roles(c: &NhsClusters) -> [ClusterRole; 3] {
        [c.role(A), c.role(B), c.role(C)]
    }

    use ClusterRole::{Active, Down, Probe};

    #[test]
    fn a_cluster_keeps_its_best_active_and_the_next_takes_over_at_once() {
        let t = Instant::now();
        let mut c = one_cluster(2, 30, t);
        assert!(c.limited());
        assert_eq!(
            roles(&c),
            [Active, Down, Active],
            "the best two by priority"
        );
        assert!(c.probes().is_empty());
        c.set_up(C, true);
        c.set_up(A, true);
        assert_eq!(c.plan(secs(t, 1)), []);
        assert_eq!(c.deadline(), None);
        // C's registration is lost: B at once, C probed (better than B).
        c.set_up(C, false);
        assert_eq!(
            c.plan(secs(t, 10)),
            [ClusterChange::Failed(C), ClusterChange::Activate(B)]
        );
        assert_eq!(roles(&c), [Active, Active, Probe]);
        assert_eq!(c.probes(), [C]);
        c.set_up(B, true);
        // An SA with C that comes up after it failed makes it eligible again, and C is
        // promoted once that SA has been up for the fallback time.
        c.set_reachable(C, true, secs(t, 20));
        assert_eq!(c.deadline(), Some(secs(t, 50)));
        assert_eq!(c.plan(secs(t, 49)), []);
        assert_eq!(c.plan(secs(t, 50)), [ClusterChange::Promote(C)]);
        assert_eq!(
            roles(&c),
            [Active, Active, Active],
            "B stays until C registers"
        );
        assert_eq!(c.deadline(), Some(secs(t, 50) + ACTIVATION_GRACE));
        c.set_up(C, true);
        assert_eq!(c.plan(secs(t, 51)), [ClusterChange::Reserve(B)]);
        assert_eq!(roles(&c), [Active, Down, Active]);
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn one_that_never_registers_gives_way_and_a_flapping_sa_restarts_the_fallback_time() {
        let t = Instant::now();
        let mut c = one_cluster(1, 60, t);
        assert_eq!(roles(&c), [Down, Down, Active]);
        // C never registers: after the grace A is tried, and C is probed.
        assert_eq!(c.deadline(), Some(t + ACTIVATION_GRACE));
        assert_eq!(
            c.plan(t + ACTIVATION_GRACE),
            [ClusterChange::Failed(C), ClusterChange::Activate(A)]
        );
        assert_eq!(roles(&c), [Active, Down, Probe]);
        c.set_up(A, true);
        let t1 = t + ACTIVATION_GRACE;
        c.set_reachable(C, true, secs(t1, 10));
        c.set_reachable(C, false, secs(t1, 40));
        c.set_reachable(C, true, secs(t1, 50));
        assert_eq!(c.plan(secs(t1, 70)), [], "reachable again only since 50 s");
        assert_eq!(c.plan(secs(t1, 110)), [ClusterChange::Promote(C)]);
        // C fails to register again: back to A alone, which stayed active.
        assert_eq!(
            c.plan(secs(t1, 110) + ACTIVATION_GRACE),
            [ClusterChange::Failed(C)]
        );
        assert_eq!(roles(&c), [Active, Down, Probe]);
    }

    #[test]
    fn every_nhs_down_probes_all_and_an_unlimited_cluster_keeps_all_active() {
        let t = Instant::now();
        let mut c = one_cluster(1, 0, t);
        c.set_up(C, true);
        c.set_up(C, false);
        assert_eq!(
            c.plan(secs(t, 1)),
            [ClusterChange::Failed(C), ClusterChange::Activate(A)]
        );
        c.set_up(A, true);
        c.set_up(A, false);
        assert_eq!(
            c.plan(secs(t, 2)),
            [ClusterChange::Failed(A), ClusterChange::Activate(B)]
        );
        c.set_up(B, true);
        c.set_up(B, false);
        assert_eq!(c.plan(secs(t, 3)), [ClusterChange::Failed(B)]);
        assert_eq!(
            roles(&c),
            [Probe, Probe, Probe],
            "nothing active: all probed"
        );
        // Fallback 0: the first one reachable is taken at once.
        c.set_reachable(B, true, secs(t, 4));
        assert_eq!(c.plan(secs(t, 4)), [ClusterChange::Activate(B)]);

        let unlimited = NhsClusters::new(
            [(A, 2, 0), (B, 3, 4)],
            &BTreeMap::from([(1, 1)]),
            Duration::ZERO,
            t,
        );
        assert!(!unlimited.limited());
        assert_eq!([unlimited.role(A), unlimited.role(B)], [Active, Active]);
        assert_eq!(unlimited.deadline(), None);
    }
}
