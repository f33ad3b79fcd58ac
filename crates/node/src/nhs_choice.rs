//! Which NHS a spoke sends through when a destination has no mapping of its own (the next hop
//! of everything not yet resolved, and the first path of every resolution), with several NHSs:
//! Cisco's `ip nhrp nhs ADDR priority N` and `ip nhrp nhs fallback SECS`. The spoke registers
//! with every NHS (the NHRP engine does); of those that are up it prefers the lowest priority
//! value, then the order of configuration. A better NHS that comes back is used only once it
//! has stayed up for the fallback time, so a flapping primary does not move the traffic
//! back and forth (at start, an NHS that registers for the first time is used at once). When none is up, the best configured one is used, so traffic still
//! brings its SA up.

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

    fn is_up(&self, nbma: Ipv4Addr) -> bool {
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
}
