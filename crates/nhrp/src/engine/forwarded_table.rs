//! The Resolution Requests a hub forwarded (RFC 2332 §5.3.2) and still expects a reply to
//! (§5.2.2, §5.3.3): a reply is passed back to its requester only when it answers one of them
//! — same requester, request id and target — and comes from the NBMA address the request was
//! forwarded to. Every spoke holds the NHRP key, so without this any spoke could hand any
//! other spoke a shortcut through itself by sending the hub an unsolicited reply.
//!
//! Bounded: at most [`MAX_FORWARDED_REQUESTS`] records, each kept [`FORWARDED_REQUEST_WAIT`];
//! expired ones are pruned from the oldest when a new one needs room (a deadline index, no
//! walk of the table and no timer of its own). One sender (the NBMA address a request came
//! from, unless it is an NHS relaying) holds at most [`MAX_FORWARDED_PER_SENDER`] of them: the
//! replies come straight from the responder, not back through us, so a record lives its whole
//! wait, and without a share one spoke asking for fresh ids fills the table and stops every
//! other spoke's resolutions (review of issue 13).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Forwarded requests remembered at once; past the cap (with none expired) a request is not
/// forwarded, counted as `DropReason::RateLimited`.
pub const MAX_FORWARDED_REQUESTS: usize = 4096;

/// How long a forwarded request waits for its reply: longer than a requester's whole
/// retransmission schedule (1 + 2 + 4 + 8 s, docs/interop-notes.md §9); each retransmission
/// forwarded renews it.
pub const FORWARDED_REQUEST_WAIT: Duration = Duration::from_secs(30);

/// Records one sender may hold at once: more than a spoke's resolution token bucket lets it
/// start within [`FORWARDED_REQUEST_WAIT`] at the defaults (100 at once, then 10 a second:
/// 400), an eighth of the table.
pub const MAX_FORWARDED_PER_SENDER: usize = 512;

/// (requester protocol address, request id).
type Key = (IpAddr, u32);

#[derive(Debug, Clone, Copy)]
struct Forwarded {
    target: IpAddr,
    to_nbma: IpAddr,
    expires: Instant,
    /// The sender whose share it counts in (`None`: an NHS, not counted).
    sender: Option<IpAddr>,
}

#[derive(Debug, Default)]
pub(super) struct ForwardedTable {
    by_key: BTreeMap<Key, Forwarded>,
    by_expiry: BTreeSet<(Instant, Key)>,
    /// Records per sender (absent: none).
    per_sender: BTreeMap<IpAddr, usize>,
}

impl ForwardedTable {
    /// Records that the request `(requester, request_id)` for `target`, received from
    /// `sender` (`None` for an NHS), went to `to_nbma`; false when the table is full of live
    /// records or `sender` holds its share.
    pub(super) fn insert(
        &mut self,
        now: Instant,
        requester: IpAddr,
        request_id: u32,
        target: IpAddr,
        to_nbma: IpAddr,
        sender: Option<IpAddr>,
    ) -> bool {
        let key = (requester, request_id);
        self.take(&key);
        let sender_full = |t: &Self| {
            sender.is_some_and(|s| {
                t.per_sender.get(&s).copied().unwrap_or(0) >= MAX_FORWARDED_PER_SENDER
            })
        };
        // Expired records go from the oldest, as long as one is in the way.
        while self.by_key.len() >= MAX_FORWARDED_REQUESTS || sender_full(self) {
            match self.by_expiry.first().copied() {
                Some((t, k)) if t <= now => {
                    self.take(&k);
                }
                _ => return false,
            }
        }
        let expires = now + FORWARDED_REQUEST_WAIT;
        self.by_expiry.insert((expires, key));
        if let Some(s) = sender {
            *self.per_sender.entry(s).or_insert(0) += 1;
        }
        self.by_key.insert(
            key,
            Forwarded {
                target,
                to_nbma,
                expires,
                sender,
            },
        );
        true
    }

    /// Removes the record at `key` from the table and its indexes.
    fn take(&mut self, key: &Key) -> Option<Forwarded> {
        let f = self.by_key.remove(key)?;
        self.by_expiry.remove(&(f.expires, *key));
        if let Some(s) = f.sender
            && let Some(n) = self.per_sender.get_mut(&s)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_sender.remove(&s);
            }
        }
        Some(f)
    }

    /// Takes the record a reply from `from_nbma` answers: the request `(requester,
    /// request_id)` for `target`, forwarded to `from_nbma`, not expired. Anything else leaves
    /// the table as it was (a forged reply does not cancel the real one).
    pub(super) fn take_answered(
        &mut self,
        now: Instant,
        requester: IpAddr,
        request_id: u32,
        target: IpAddr,
        from_nbma: IpAddr,
    ) -> bool {
        let key = (requester, request_id);
        let matches = self
            .by_key
            .get(&key)
            .is_some_and(|f| f.target == target && f.to_nbma == from_nbma && now < f.expires);
        if matches {
            self.take(&key);
        }
        matches
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))
    }

    #[test]
    fn a_reply_must_match_requester_id_target_and_sender() {
        let t0 = Instant::now();
        let mut t = ForwardedTable::default();
        assert!(t.insert(t0, ip(1), 7, ip(2), ip(3), None));
        assert!(!t.take_answered(t0, ip(1), 8, ip(2), ip(3)), "other id");
        assert!(!t.take_answered(t0, ip(1), 7, ip(9), ip(3)), "other target");
        assert!(!t.take_answered(t0, ip(1), 7, ip(2), ip(9)), "other sender");
        assert!(
            !t.take_answered(t0, ip(9), 7, ip(2), ip(3)),
            "other requester"
        );
        assert!(t.take_answered(t0, ip(1), 7, ip(2), ip(3)));
        assert!(
            !t.take_answered(t0, ip(1), 7, ip(2), ip(3)),
            "answered once"
        );
        assert!(t.insert(t0, ip(1), 7, ip(2), ip(3), None));
        let late = t0 + FORWARDED_REQUEST_WAIT;
        assert!(!t.take_answered(late, ip(1), 7, ip(2), ip(3)), "expired");
    }

    #[test]
    fn the_table_is_capped_and_expired_records_make_room() {
        let t0 = Instant::now();
        let mut t = ForwardedTable::default();
        for i in 0..MAX_FORWARDED_REQUESTS {
            let id = u32::try_from(i).unwrap();
            assert!(t.insert(t0, ip(1), id, ip(2), ip(3), None));
        }
        assert!(
            !t.insert(t0, ip(1), u32::MAX, ip(2), ip(3), None),
            "full of live records"
        );
        assert_eq!(t.len(), MAX_FORWARDED_REQUESTS);
        let late = t0 + FORWARDED_REQUEST_WAIT;
        assert!(t.insert(late, ip(1), u32::MAX, ip(2), ip(3), None));
        assert_eq!(t.len(), MAX_FORWARDED_REQUESTS);
        assert_eq!(t.by_expiry.len(), t.len(), "index and table agree");
    }

    #[test]
    fn one_sender_holds_at_most_its_share_and_gets_it_back() {
        let t0 = Instant::now();
        let mut t = ForwardedTable::default();
        let (s, other) = (Some(ip(8)), Some(ip(9)));
        for i in 0..MAX_FORWARDED_PER_SENDER {
            let id = u32::try_from(i).unwrap();
            assert!(t.insert(t0, ip(1), id, ip(2), ip(3), s));
        }
        assert!(
            !t.insert(t0, ip(1), u32::MAX, ip(2), ip(3), s),
            "share used"
        );
        assert!(
            t.insert(t0, ip(4), 1, ip(2), ip(3), other),
            "others still get in"
        );
        assert!(
            t.insert(t0, ip(5), 1, ip(2), ip(3), None),
            "an NHS is not counted"
        );
        // An answered record gives its slot back; so does time.
        assert!(t.take_answered(t0, ip(1), 0, ip(2), ip(3)));
        assert!(t.insert(t0, ip(1), u32::MAX, ip(2), ip(3), s));
        assert!(!t.insert(t0, ip(1), u32::MAX - 1, ip(2), ip(3), s));
        let late = t0 + FORWARDED_REQUEST_WAIT;
        assert!(t.insert(late, ip(1), u32::MAX - 1, ip(2), ip(3), s));
        // Pruned lazily, as far as room is needed: the share stays bounded.
        assert!(
            t.per_sender
                .get(&ip(8))
                .is_some_and(|n| *n <= MAX_FORWARDED_PER_SENDER)
        );
        let held: usize = t.per_sender.values().sum();
        assert_eq!(
            held + 1,
            t.len(),
            "every counted record is in the table (+1 NHS)"
        );
    }
}
