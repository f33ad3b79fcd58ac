//! A set of per-key deadlines with O(log N) earliest-first access, for the node's own
//! timers (NAT keepalives, deferred initiations): a hub has one per spoke, and the drive
//! loop asks for the earliest on every turn.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// At most one deadline per key.
#[derive(Debug)]
pub struct Deadlines<K> {
    by_time: BTreeSet<(Instant, K)>,
    at: HashMap<K, Instant>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            at: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Copy> Deadlines<K> {
    /// Sets (or moves) `k`'s deadline.
    pub fn set(&mut self, k: K, t: Instant) {
        if let Some(old) = self.at.insert(k, t) {
            self.by_time.remove(&(old, k));
        }
        self.by_time.insert((t, k));
    }

    /// Sets `k`'s deadline unless it has one.
    pub fn set_if_absent(&mut self, k: K, t: Instant) {
        if !self.at.contains_key(&k) {
            self.set(k, t);
        }
    }

    /// Forgets `k`'s deadline.
    pub fn remove(&mut self, k: K) -> Option<Instant> {
        let t = self.at.remove(&k)?;
        self.by_time.remove(&(t, k));
        Some(t)
    }

    /// Forgets every deadline.
    pub fn clear(&mut self) {
        self.by_time.clear();
        self.at.clear();
    }

    /// The earliest deadline.
    pub fn first(&self) -> Option<Instant> {
        self.by_time.first().map(|&(t, _)| t)
    }

    /// Removes and returns the keys due at `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some(&(t, k)) = self.by_time.first() {
            if t > now {
                break;
            }
            self.by_time.pop_first();
            self.at.remove(&k);
            out.push(k);
        }
        out
    }

    /// Whether `k` has a deadline.
    pub fn contains(&self, k: K) -> bool {
        self.at.contains_key(&k)
    }

    /// Number of keys with a deadline.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// True when no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_moves() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Deadlines::default();
        d.set(1u32, t0 + s(5));
        d.set(2, t0 + s(3));
        d.set_if_absent(2, t0 + s(1));
        assert_eq!(d.first(), Some(t0 + s(3)));
        d.set(2, t0 + s(9));
        assert_eq!(d.first(), Some(t0 + s(5)));
        assert_eq!(d.take_due(t0 + s(5)), vec![1]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.remove(2), Some(t0 + s(9)));
        assert!(d.is_empty() && d.first().is_none());
    }
}
