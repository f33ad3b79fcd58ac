//! Cisco DMVPN traffic indication (redirect, NHRP type 8; wire notes
//! item 10): the hub's rate-limited indication and the spoke's resolution of
//! the quoted packet's destination.

use std::net::IpAddr;
use std::time::Instant;

use crate::codes::{PacketType, TRAFFIC_CODE_REDIRECT};
use crate::config::Role;
use crate::counters::DropReason;
use crate::packet::{Body, Packet, ip_bytes};

use super::{DIRECT_HOP_COUNT, Engine, REDIRECT_BURST, REDIRECT_REFILL, REDIRECT_SPACING};

#[derive(Debug, Clone, Copy)]
pub(super) struct RedirectBucket {
    pub(super) tokens: u32,
    pub(super) last_refill: Instant,
    pub(super) last_sent: Option<Instant>,
}

/// Source and destination of an IPv4 header (wire notes item 10: the
/// redirect's payload, not its dst proto, names the destination).
pub(super) fn inner_ipv4(data: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let first = *data.first()?;
    if first >> 4 != 4 || usize::from(first & 0x0f) < 5 {
        return None;
    }
    let src: [u8; 4] = data.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = data.get(16..20)?.try_into().ok()?;
    Some((IpAddr::from(src), IpAddr::from(dst)))
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
        if !self.redirect_allowed(now, src, dst) {
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
        // Wire notes item 10: dst proto is the source of the offending
        // packet, the spoke being told.
        pkt.dst_protocol = ip_bytes(src);
        pkt.extensions = self.auth_only_extensions();
        self.send(now, src_nbma, &pkt);
    }

    pub(super) fn redirect_allowed(&mut self, now: Instant, src: IpAddr, dst: IpAddr) -> bool {
        if self.redirects.len() > 4096 {
            let idle = REDIRECT_REFILL * REDIRECT_BURST * 6;
            self.redirects
                .retain(|_, b| now.saturating_duration_since(b.last_refill) < idle);
        }
        let b = self.redirects.entry((src, dst)).or_insert(RedirectBucket {
            tokens: REDIRECT_BURST,
            last_refill: now,
            last_sent: None,
        });
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

    pub(super) fn on_traffic_indication(&mut self, now: Instant, p: &Packet) {
        let Body::TrafficIndication { traffic_code, data } = &p.body else {
            return;
        };
        if *traffic_code != TRAFFIC_CODE_REDIRECT || !self.config.shortcut {
            self.counters.drop(DropReason::UnhandledType);
            return;
        }
        // Wire notes item 10: resolve the inner destination; dst proto only
        // names us.
        let Some((_, dst)) = inner_ipv4(data) else {
            self.counters.drop(DropReason::BadInnerPacket);
            return;
        };
        self.resolve(now, dst);
    }
}
