//! The last NHRP event per destination prefix and the last NHRP Error Indication per peer,
//! for `dmvpnctl explain` ("why does traffic to X go where it goes"). Nothing else in the
//! node keeps history: the NHRP engine reports shortcuts and failed resolutions as events and
//! forgets them.
//!
//! Both tables grow with what peers send (every resolution target, every sender of an error
//! indication), so each is capped: past [`MAX_EXPLAIN_RECORDS`] the oldest record is evicted
//! and counted in [`ExplainLog::evicted`].

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use dmvpn_nhrp::Event as NhrpEvent;

use crate::Node;

/// Records kept per table.
pub const MAX_EXPLAIN_RECORDS: usize = 4096;

/// What NHRP last did for a destination prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NhrpNote {
    /// A Resolution Reply gave a shortcut: `prefix` via `next_hop`, whose NBMA is `nbma`.
    ShortcutInstalled {
        next_hop: Ipv4Addr,
        nbma: Option<Ipv4Addr>,
    },
    /// A Resolution Request for the destination went to the NHS at `nhs` (a traffic
    /// indication named it).
    ResolutionRequested { nhs: Ipv4Addr },
    /// The shortcut via `next_hop` expired, was purged or replaced.
    ShortcutWithdrawn { next_hop: Ipv4Addr },
    /// A Resolution Request for the destination was refused (`code`, the CIE code) or went
    /// unanswered (`None`).
    ResolutionFailed { code: Option<u8> },
}

/// One record of [`ExplainLog::nhrp_event_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NhrpRecord {
    pub at: Instant,
    /// The prefix the event was about (a /32 for a resolution target).
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    pub note: NhrpNote,
}

/// An NHRP Error Indication from a peer (RFC 2332 §5.2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorRecord {
    pub at: Instant,
    /// Its error code (`dmvpn_nhrp::ErrorCode`, named by its `Display`).
    pub code: u16,
}

/// A map with a cap: inserting past it evicts the least recently written key.
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, (u64, V)>,
    /// write sequence → key, oldest first
    order: BTreeMap<u64, K>,
    seq: u64,
    cap: usize,
    evicted: u64,
}

impl<K: Hash + Eq + Copy, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            cap,
            evicted: 0,
        }
    }

    fn insert(&mut self, k: K, v: V) {
        self.seq += 1;
        if let Some((old, _)) = self.map.insert(k, (self.seq, v)) {
            self.order.remove(&old);
        }
        self.order.insert(self.seq, k);
        while self.map.len() > self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
            self.evicted += 1;
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(_, v)| v)
    }

    /// The value and when it was written, in write order.
    fn get_with_seq(&self, k: &K) -> Option<(u64, &V)> {
        self.map.get(k).map(|(s, v)| (*s, v))
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct ExplainLog {
    nhrp: Bounded<(Ipv4Addr, u8), NhrpRecord>,
    errors: Bounded<Ipv4Addr, ErrorRecord>,
}

impl Default for ExplainLog {
    fn default() -> Self {
        Self::with_cap(MAX_EXPLAIN_RECORDS)
    }
}

fn network(addr: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    Ipv4Addr::from_bits(addr.to_bits() & mask)
}

fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

impl Node {
    /// The last NHRP event per destination and error indication per peer.
    pub fn explain_log(&self) -> &ExplainLog {
        &self.explain_log
    }
}

impl ExplainLog {
    /// Records what `ev` says about a destination or a peer (the node calls it with every
    /// NHRP event before acting on it); other events are not kept. IPv6 is ignored: the
    /// tunnel carries IPv4.
    pub fn observe(&mut self, now: Instant, ev: &NhrpEvent) {
        match *ev {
            NhrpEvent::InstallRoute {
                prefix,
                prefix_len,
                next_hop,
                nbma,
            } => {
                if let (Some(p), Some(next_hop)) = (v4(prefix), v4(next_hop)) {
                    let note = NhrpNote::ShortcutInstalled {
                        next_hop,
                        nbma: v4(nbma),
                    };
                    self.nhrp_event(now, p, prefix_len, note);
                }
            }
            NhrpEvent::WithdrawRoute {
                prefix,
                prefix_len,
                next_hop,
            } => {
                if let (Some(p), Some(next_hop)) = (v4(prefix), v4(next_hop)) {
                    let note = NhrpNote::ShortcutWithdrawn { next_hop };
                    self.nhrp_event(now, p, prefix_len, note);
                }
            }
            NhrpEvent::ResolutionRequested { target, nhs_nbma } => {
                if let (Some(t), Some(nhs)) = (v4(target), v4(nhs_nbma)) {
                    self.nhrp_event(now, t, 32, NhrpNote::ResolutionRequested { nhs });
                }
            }
            NhrpEvent::ResolutionFailed { target, code } => {
                if let Some(t) = v4(target) {
                    let code = code.map(|c| c.0);
                    self.nhrp_event(now, t, 32, NhrpNote::ResolutionFailed { code });
                }
            }
            NhrpEvent::ErrorIndication { from_nbma, code } => {
                if let Some(from) = v4(from_nbma) {
                    self.error_indication(now, from, code.0);
                }
            }
            _ => {}
        }
    }

    /// A log keeping at most `cap` records per table (tests use a small one).
    pub fn with_cap(cap: usize) -> Self {
        Self {
            nhrp: Bounded::new(cap),
            errors: Bounded::new(cap),
        }
    }

    /// Records an NHRP event about `prefix/prefix_len`, replacing the one before.
    pub fn nhrp_event(&mut self, at: Instant, prefix: Ipv4Addr, prefix_len: u8, note: NhrpNote) {
        if prefix_len > 32 {
            return;
        }
        let prefix = network(prefix, prefix_len);
        self.nhrp.insert(
            (prefix, prefix_len),
            NhrpRecord {
                at,
                prefix,
                prefix_len,
                note,
            },
        );
    }

    /// Records an Error Indication from `from` (its NBMA address).
    pub fn error_indication(&mut self, at: Instant, from: Ipv4Addr, code: u16) {
        self.errors.insert(from, ErrorRecord { at, code });
    }

    /// The latest NHRP event about a prefix covering `dst` (at most 33 probes: one per
    /// prefix length). The last recorded wins — by write order, not timestamp, so the /24
    /// shortcut a /32 resolution request led to is reported even within one instant — and
    /// a failed resolution of the /32 after a withdrawn /24 shortcut is what is reported,
    /// and the other way round.
    pub fn nhrp_event_for(&self, dst: Ipv4Addr) -> Option<NhrpRecord> {
        (0..=32u8)
            .filter_map(|len| self.nhrp.get_with_seq(&(network(dst, len), len)))
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, r)| *r)
    }

    /// The latest failed resolution recorded for a prefix covering `dst` (a later event of
    /// another prefix, such as the shortcut that eventually formed, does not hide it; a new
    /// request for the same target replaces it).
    pub fn last_failure_for(&self, dst: Ipv4Addr) -> Option<NhrpRecord> {
        (0..=32u8)
            .filter_map(|len| self.nhrp.get_with_seq(&(network(dst, len), len)))
            .filter(|(_, r)| matches!(r.note, NhrpNote::ResolutionFailed { .. }))
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, r)| *r)
    }

    /// The last Error Indication from the peer at NBMA address `from`.
    pub fn last_error_from(&self, from: Ipv4Addr) -> Option<ErrorRecord> {
        self.errors.get(&from).copied()
    }

    /// Records dropped because a table was full, since start.
    pub fn evicted(&self) -> u64 {
        self.nhrp.evicted + self.errors.evicted
    }

    /// Records held (both tables).
    pub fn len(&self) -> usize {
        self.nhrp.map.len() + self.errors.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_latest_event_covering_the_destination_wins() {
        let t0 = Instant::now();
        let mut log = ExplainLog::default();
        assert_eq!(log.nhrp_event_for(ip("10.1.2.3")), None);
        let b = ip("10.250.0.5");
        log.nhrp_event(
            t0,
            ip("10.1.2.77"),
            24,
            NhrpNote::ShortcutInstalled {
                next_hop: b,
                nbma: Some(ip("203.0.113.7")),
            },
        );
        let r = log.nhrp_event_for(ip("10.1.2.3")).unwrap();
        assert_eq!((r.prefix, r.prefix_len), (ip("10.1.2.0"), 24), "masked");
        assert!(matches!(r.note, NhrpNote::ShortcutInstalled { .. }));
        assert_eq!(log.nhrp_event_for(ip("10.1.3.3")), None, "not covered");

        let t1 = t0 + Duration::from_secs(5);
        log.nhrp_event(
            t1,
            ip("10.1.2.3"),
            32,
            NhrpNote::ResolutionFailed { code: None },
        );
        assert_eq!(
            log.nhrp_event_for(ip("10.1.2.3")).unwrap().note,
            NhrpNote::ResolutionFailed { code: None }
        );
        // The /24's own record still answers for its other addresses.
        assert!(matches!(
            log.nhrp_event_for(ip("10.1.2.4")).unwrap().note,
            NhrpNote::ShortcutInstalled { .. }
        ));
        assert_eq!(
            log.last_failure_for(ip("10.1.2.3")).map(|r| r.prefix_len),
            Some(32)
        );
        assert_eq!(log.last_failure_for(ip("10.1.2.4")), None);
        // A later withdrawal of the /24 is newer than the /32's failure.
        let t2 = t1 + Duration::from_secs(5);
        log.nhrp_event(
            t2,
            ip("10.1.2.0"),
            24,
            NhrpNote::ShortcutWithdrawn { next_hop: b },
        );
        let r = log.nhrp_event_for(ip("10.1.2.3")).unwrap();
        assert_eq!(
            (r.at, r.note),
            (t2, NhrpNote::ShortcutWithdrawn { next_hop: b })
        );
        assert_eq!(
            log.last_failure_for(ip("10.1.2.3")).map(|r| r.at),
            Some(t1),
            "the failure is still the last error"
        );
        assert_eq!(log.len(), 2, "the /24 was replaced, not added");
        log.nhrp_event(
            t2,
            ip("10.0.0.0"),
            33,
            NhrpNote::ResolutionFailed { code: None },
        );
        assert_eq!(log.len(), 2, "an impossible prefix length is ignored");
    }

    #[test]
    fn the_last_written_wins_within_one_instant() {
        let t0 = Instant::now();
        let mut log = ExplainLog::default();
        let hub = ip("198.51.100.1");
        log.nhrp_event(
            t0,
            ip("10.1.2.3"),
            32,
            NhrpNote::ResolutionRequested { nhs: hub },
        );
        let b = ip("10.250.0.5");
        let installed = NhrpNote::ShortcutInstalled {
            next_hop: b,
            nbma: None,
        };
        log.nhrp_event(t0, ip("10.1.2.0"), 24, installed);
        assert_eq!(log.nhrp_event_for(ip("10.1.2.3")).unwrap().note, installed);
        log.nhrp_event(
            t0,
            ip("10.1.2.3"),
            32,
            NhrpNote::ResolutionRequested { nhs: hub },
        );
        assert_eq!(
            log.nhrp_event_for(ip("10.1.2.3")).unwrap().note,
            NhrpNote::ResolutionRequested { nhs: hub }
        );
    }

    #[test]
    fn nhrp_events_are_observed() {
        use dmvpn_nhrp::{CieCode, ErrorCode};
        let t0 = Instant::now();
        let mut log = ExplainLog::default();
        let v4 = |s: &str| IpAddr::V4(ip(s));
        log.observe(
            t0,
            &NhrpEvent::ResolutionRequested {
                target: v4("10.1.2.3"),
                nhs_nbma: v4("198.51.100.1"),
            },
        );
        assert_eq!(
            log.nhrp_event_for(ip("10.1.2.3")).unwrap().note,
            NhrpNote::ResolutionRequested {
                nhs: ip("198.51.100.1")
            }
        );
        log.observe(
            t0,
            &NhrpEvent::InstallRoute {
                prefix: v4("10.1.2.0"),
                prefix_len: 24,
                next_hop: v4("10.250.0.5"),
                nbma: v4("203.0.113.7"),
            },
        );
        assert_eq!(
            log.nhrp_event_for(ip("10.1.2.3")).unwrap().note,
            NhrpNote::ShortcutInstalled {
                next_hop: ip("10.250.0.5"),
                nbma: Some(ip("203.0.113.7"))
            }
        );
        log.observe(
            t0,
            &NhrpEvent::ResolutionFailed {
                target: v4("10.9.9.9"),
                code: Some(CieCode::ADMINISTRATIVELY_PROHIBITED),
            },
        );
        assert_eq!(
            log.last_failure_for(ip("10.9.9.9")).unwrap().note,
            NhrpNote::ResolutionFailed { code: Some(4) }
        );
        log.observe(
            t0,
            &NhrpEvent::ErrorIndication {
                from_nbma: v4("203.0.113.7"),
                code: ErrorCode::PROTOCOL_ERROR,
            },
        );
        assert_eq!(log.last_error_from(ip("203.0.113.7")).unwrap().code, 7);
        let before = log.len();
        log.observe(
            t0,
            &NhrpEvent::NeedSa {
                nbma: v4("203.0.113.7"),
            },
        );
        log.observe(
            t0,
            &NhrpEvent::ResolutionFailed {
                target: "2001:db8::1".parse().unwrap(),
                code: None,
            },
        );
        assert_eq!(log.len(), before, "nothing else is kept");
    }

    #[test]
    fn full_tables_evict_the_oldest_and_count() {
        let t0 = Instant::now();
        let mut log = ExplainLog::with_cap(3);
        for i in 0..5u8 {
            log.nhrp_event(
                t0 + Duration::from_secs(u64::from(i)),
                Ipv4Addr::new(10, 9, 0, i),
                32,
                NhrpNote::ResolutionFailed { code: Some(i) },
            );
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.evicted(), 2);
        assert_eq!(log.nhrp_event_for(Ipv4Addr::new(10, 9, 0, 0)), None);
        assert_eq!(log.nhrp_event_for(Ipv4Addr::new(10, 9, 0, 1)), None);
        assert!(log.nhrp_event_for(Ipv4Addr::new(10, 9, 0, 4)).is_some());
        // Rewriting a key refreshes it: 10.9.0.2 survives the next insertion, .3 does not.
        log.nhrp_event(
            t0,
            Ipv4Addr::new(10, 9, 0, 2),
            32,
            NhrpNote::ResolutionFailed { code: None },
        );
        log.nhrp_event(
            t0,
            Ipv4Addr::new(10, 9, 0, 9),
            32,
            NhrpNote::ResolutionFailed { code: None },
        );
        assert!(log.nhrp_event_for(Ipv4Addr::new(10, 9, 0, 2)).is_some());
        assert_eq!(log.nhrp_event_for(Ipv4Addr::new(10, 9, 0, 3)), None);
        assert_eq!(log.evicted(), 3);

        for i in 0..4u8 {
            log.error_indication(t0, Ipv4Addr::new(198, 51, 100, i), 7);
        }
        assert_eq!(log.last_error_from(Ipv4Addr::new(198, 51, 100, 0)), None);
        assert_eq!(
            log.last_error_from(Ipv4Addr::new(198, 51, 100, 3))
                .unwrap()
                .code,
            7
        );
        assert_eq!(log.evicted(), 4);
        assert_eq!(log.len(), 6);
    }
}
