//! The SA gate's per-NBMA hold queues (see `sa_gate`) with an index of each queue's oldest
//! packet, so `poll_timeout` and the queue timer never walk every queue (issue 12). Packets
//! are appended with `now + SA_QUEUE_TIMEOUT`, so a queue's front is its earliest deadline.
//! The fields are private to this module, so the index changes only with the queues.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use super::sa_gate::Queued;
use super::{MAX_SA_QUEUES, SA_QUEUE_LEN};

/// What [`QueueTable::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued as the first packet for its address: ask for the SA.
    Started,
    /// Queued behind others.
    Queued,
    /// The queue holds `SA_QUEUE_LEN` packets already, or it would be a new queue past
    /// `MAX_SA_QUEUES`: dropped.
    Full,
}

#[derive(Debug, Default)]
pub(super) struct QueueTable {
    queues: BTreeMap<IpAddr, VecDeque<Queued>>,
    fronts: BTreeSet<(Instant, IpAddr)>,
}

impl QueueTable {
    pub(super) fn len(&self) -> usize {
        self.queues.len()
    }

    /// Appends `p` to `dst`'s queue, at most `SA_QUEUE_LEN` packets, in at most
    /// `MAX_SA_QUEUES` queues.
    pub(super) fn push(&mut self, dst: IpAddr, p: Queued) -> Pushed {
        if self.queues.len() >= MAX_SA_QUEUES && !self.queues.contains_key(&dst) {
            return Pushed::Full;
        }
        let q = self.queues.entry(dst).or_default();
        if q.len() >= SA_QUEUE_LEN {
            return Pushed::Full;
        }
        let started = q.is_empty();
        if started {
            self.fronts.insert((p.deadline, dst));
        }
        q.push_back(p);
        if started {
            Pushed::Started
        } else {
            Pushed::Queued
        }
    }

    /// Whether packets wait for `dst`.
    pub(super) fn holds(&self, dst: &IpAddr) -> bool {
        self.queues.get(dst).is_some_and(|q| !q.is_empty())
    }

    /// Takes `dst`'s whole queue.
    pub(super) fn take(&mut self, dst: &IpAddr) -> Option<VecDeque<Queued>> {
        let q = self.queues.remove(dst)?;
        if let Some(f) = q.front() {
            self.fronts.remove(&(f.deadline, *dst));
        }
        Some(q)
    }

    /// The earliest deadline of any queued packet.
    pub(super) fn first_deadline(&self) -> Option<Instant> {
        self.fronts.first().map(|(t, _)| *t)
    }

    /// Drops every packet whose deadline is at or before `now`; returns how many.
    pub(super) fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(&(t, dst)) = self.fronts.first() {
            if t > now {
                break;
            }
            self.fronts.remove(&(t, dst));
            let Some(q) = self.queues.get_mut(&dst) else {
                continue;
            };
            while q.front().is_some_and(|p| p.deadline <= now) {
                q.pop_front();
                expired += 1;
            }
            match q.front() {
                Some(f) => {
                    self.fronts.insert((f.deadline, dst));
                }
                None => {
                    self.queues.remove(&dst);
                }
            }
        }
        expired
    }

    /// Every queue's front deadline, brute force (tests).
    #[cfg(test)]
    pub(super) fn brute_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.front().map(|p| p.deadline))
            .min()
    }
}
