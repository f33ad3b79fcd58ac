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
}

type Pair = (IpAddr, IpAddr);

/// The token buckets per (source, destination) pair, with an index by last refill so idle
/// buckets are pruned from the oldest without walking the table (issue 12). Private fields:
/// `last_refill` changes only in [`RedirectBuckets::allow`], which reindexes it.
#[derive(Debug, Default)]
pub(super) struct RedirectBuckets {
    buckets: HashMap<Pair, RedirectBucket>,
    by_refill: BTreeSet<(Instant, Pair)>,
}

impl RedirectBuckets {
    /// Token bucket per (source, destination) pair: `REDIRECT_BURST` tokens, one back per
    /// `REDIRECT_REFILL`, sends at least `REDIRECT_SPACING` apart. At most
    /// `MAX_REDIRECT_PAIRS` pairs: a new pair past that first prunes the buckets idle for six
    /// full refills (they would be full again anyway), oldest first, and is refused when none
    /// is.
    fn allow(&mut self, now: Instant, pair: Pair) -> bool {
        if !self.buckets.contains_key(&pair) && self.buckets.len() >= MAX_REDIRECT_PAIRS {
            let idle = REDIRECT_REFILL * REDIRECT_BURST * 6;
            while let Some(&(t, p)) = self.by_refill.first() {
                if now.saturating_duration_since(t) < idle {
                    break;
                }
                self.by_refill.remove(&(t, p));
                self.buckets.remove(&p);
            }
            if self.buckets.len() >= MAX_REDIRECT_PAIRS {
                return false;
            }
        }
        let b = self.buckets.entry(pair).or_insert_with(|| {
            self.by_refill.insert((now, pair));
            RedirectBucket {
                tokens: REDIRECT_BURST,
                last_refill: now,
                last_sent: None,
            }
        });
        let elapsed = now.saturating_duration_since(b.last_refill);
        let refills =
            u32::try_from(elapsed.as_secs() / REDIRECT_REFILL.as_secs()).unwrap_or(u32::MAX);
        if refills > 0 {
            b.tokens = b.tokens.saturating_add(refills).min(REDIRECT_BURST);
            self.by_refill.remove(&(b.last_refill, pair));
            b.last_refill = now;
            self.by_refill.insert((now, pair));
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
    fn redirect_pairs_are_capped_and_idle_ones_pruned() {
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
        // Full and nothing idle: a new pair is refused, a known one still served.
        let later = t0 + REDIRECT_SPACING;
        assert!(!r.allow(later, pair(MAX_REDIRECT_PAIRS)));
        assert!(r.allow(later, pair(0)));
        assert_eq!(r.len(), MAX_REDIRECT_PAIRS);
        // Six refills later every bucket is idle (pair 0 was used within one refill period,
        // so it kept its refill time): the pruning makes room, each pair removed once.
        let idle = t0 + REDIRECT_REFILL * REDIRECT_BURST * 6;
        assert!(r.allow(idle, pair(MAX_REDIRECT_PAIRS)));
        assert!(r.len() <= MAX_REDIRECT_PAIRS);
        assert_eq!(r.by_refill.len(), r.len(), "index and table agree");
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
