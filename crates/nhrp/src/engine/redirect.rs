//! Cisco DMVPN traffic indication (redirect, NHRP type 8; docs/interop-notes.md
//! §10): the hub's rate-limited indication and the spoke's resolution of
//! the quoted packet's destination.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use crate::codes::{PacketType, TRAFFIC_CODE_REDIRECT};
use crate::config::Role;
use crate::counters::DropReason;
use crate::packet::{Body, Packet, ip_bytes};

use dmvpn_wire::{Ipv4Packet, ipv4};

use super::{
    DIRECT_HOP_COUNT, Engine, MAX_REDIRECT_PAIRS, REDIRECT_BURST, REDIRECT_REFILL, REDIRECT_SPACING,
};

#[derive(Debug, Clone, Copy)]
struct RedirectBucket {
    tokens: u32,
    last_refill: Instant,
    last_sent: Option<Instant>,
    /// When a data packet of this pair last asked for an indication (the LRU order).
    last_used: Instant,
}

type Pair = (IpAddr, IpAddr);

/// The token buckets per (source, destination) pair, with an index by last use so the least
/// recently used bucket is found without walking the table (issue 12). Private fields:
/// `last_used` changes only in [`RedirectBuckets::allow`], which reindexes it.
#[derive(Debug, Default)]
pub(super) struct RedirectBuckets {
    buckets: HashMap<Pair, RedirectBucket>,
    by_use: BTreeSet<(Instant, Pair)>,
}

impl RedirectBuckets {
    /// Token bucket per (source, destination) pair: `REDIRECT_BURST` tokens, one back per
    /// `REDIRECT_REFILL`, sends at least `REDIRECT_SPACING` apart. At most
    /// `MAX_REDIRECT_PAIRS` pairs, least recently used evicted first: the pairs come from
    /// the inner addresses of a spoke's data, so one hostile spoke can name thousands of
    /// them a minute. Refusing new pairs while the table is full of its pairs would stop
    /// every other spoke's redirects (all traffic then crosses the hub); evicting the least
    /// recently used only costs an evicted pair a fresh bucket, and the indications it then
    /// earns go to the spoke that sent its packets.
    fn allow(&mut self, now: Instant, pair: Pair) -> bool {
        if !self.buckets.contains_key(&pair)
            && self.buckets.len() >= MAX_REDIRECT_PAIRS
            && let Some((_, lru)) = self.by_use.pop_first()
        {
            self.buckets.remove(&lru);
        }
        let b = self.buckets.entry(pair).or_insert(RedirectBucket {
            tokens: REDIRECT_BURST,
            last_refill: now,
            last_sent: None,
            last_used: now,
        });
        self.by_use.remove(&(b.last_used, pair));
        b.last_used = b.last_used.max(now);
        self.by_use.insert((b.last_used, pair));
        let elapsed = now.saturating_duration_since(b.last_refill);
        let refills =
            u32::try_from(elapsed.as_secs() / REDIRECT_REFILL.as_secs()).unwrap_or(u32::MAX);
        if refills > 0 {
            b.tokens = b.tokens.saturating_add(refills).min(REDIRECT_BURST);
            b.last_refill = now;
        }
        let spaced = b
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= REDIRECT_SPACING);
        if b.tokens == 0 || !spaced {
            return false;
        }
        b.tokens -= 1;
        b.last_sent = Some(now);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// Source and destination of the IPv4 packet quoted in a traffic
/// indication or handed over by the data plane (docs/interop-notes.md §10: the
/// redirect's payload, not its dst proto, names the destination). A quote
/// is usually cut short, so only the fixed header must be there: version 4,
/// IHL ≥ 5 and 20 bytes (RFC 791 §3.1), not the whole total length that
/// [`Ipv4Packet::new_checked`] asks for.
fn inner_ipv4(data: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let p = Ipv4Packet::new_unchecked(data);
    if data.len() < ipv4::HEADER_LEN || p.version() != 4 || p.header_len() < ipv4::HEADER_LEN {
        return None;
    }
    Some((IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr())))
}

impl Engine {
    /// Hub: a data packet came in from `src_nbma` over the tunnel and goes
    /// back out over the tunnel; `inner` is its IP header and leading bytes.
    /// Sends a traffic indication (redirect) to the source, rate-limited per
    /// (source, destination) pair.
    pub fn traffic_indication_needed(&mut self, now: Instant, src_nbma: IpAddr, inner: &[u8]) {
        if self.config.role != Role::Hub || !self.config.redirect {
            return;
        }
        let Some((src, dst)) = inner_ipv4(inner) else {
            self.counters.drop(DropReason::BadInnerPacket);
            return;
        };
        if !self.redirects.allow(now, (src, dst)) {
            self.counters.drop(DropReason::RateLimited);
            return;
        }
        // Data arrived from `src_nbma`, so an SA to it exists.
        self.sa_ready.insert(src_nbma);
        let mut pkt = self.base_packet(
            PacketType::TRAFFIC_INDICATION,
            DIRECT_HOP_COUNT,
            Body::TrafficIndication {
                traffic_code: TRAFFIC_CODE_REDIRECT,
                data: inner.to_vec(),
            },
        );
        // docs/interop-notes.md §10: dst proto is the source of the offending
        // packet, the spoke being told.
        pkt.dst_protocol = ip_bytes(src);
        pkt.extensions = self.auth_only_extensions();
        self.send(now, src_nbma, &pkt);
    }

    /// Spoke: a traffic indication (redirect) from the hub; with shortcuts on, resolves the quoted
    /// packet's destination.
    pub(super) fn on_traffic_indication(&mut self, now: Instant, p: &Packet) {
        let Body::TrafficIndication { traffic_code, data } = &p.body else {
            return;
        };
        if *traffic_code != TRAFFIC_CODE_REDIRECT || !self.config.shortcut {
            self.counters.drop(DropReason::UnhandledType);
            return;
        }
        // docs/interop-notes.md §10: resolve the inner destination; dst proto only
        // names us.
        let Some((_, dst)) = inner_ipv4(data) else {
            self.counters.drop(DropReason::BadInnerPacket);
            return;
        };
        self.resolve(now, dst);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn redirect_pairs_are_capped_and_the_least_recently_used_evicted() {
        let t0 = Instant::now();
        let mut r = RedirectBuckets::default();
        let pair = |i: usize| {
            let [_, _, a, b] = u32::try_from(i).unwrap().to_be_bytes();
            (
                IpAddr::V4(Ipv4Addr::new(10, 0, a, b)),
                IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
            )
        };
        for i in 0..MAX_REDIRECT_PAIRS {
            assert!(r.allow(t0, pair(i)));
        }
        // Pair 0 is used again; then a new pair evicts the least recently used, pair 1.
        let later = t0 + REDIRECT_SPACING;
        assert!(r.allow(later, pair(0)));
        assert!(r.allow(later, pair(MAX_REDIRECT_PAIRS)));
        assert_eq!(r.len(), MAX_REDIRECT_PAIRS);
        assert!(r.buckets.contains_key(&pair(0)));
        assert!(!r.buckets.contains_key(&pair(1)));
        // Pair 0 kept its bucket: its spacing still holds.
        assert!(!r.allow(later, pair(0)));
        assert_eq!(r.by_use.len(), r.len(), "index and table agree");
    }

    #[test]
    fn inner_ipv4_reads_a_cut_short_quote() {
        // Header of a 1400-byte packet, quoted with 8 bytes of payload.
        let mut q = vec![0x45, 0, 0x05, 0x78, 0, 0, 0x40, 0, 64, 1, 0, 0];
        q.extend_from_slice(&[10, 0, 101, 5, 10, 0, 103, 7]);
        q.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        let (s, d) = inner_ipv4(&q).unwrap();
        assert_eq!(s, IpAddr::V4(Ipv4Addr::new(10, 0, 101, 5)));
        assert_eq!(d, IpAddr::V4(Ipv4Addr::new(10, 0, 103, 7)));
        assert!(inner_ipv4(&q[..20]).is_some());
        assert!(inner_ipv4(&q[..19]).is_none());
        q[0] = 0x44; // IHL 4
        assert!(inner_ipv4(&q).is_none());
        q[0] = 0x65; // IPv6 version nibble
        assert!(inner_ipv4(&q).is_none());
        assert!(inner_ipv4(&[]).is_none());
    }
}
