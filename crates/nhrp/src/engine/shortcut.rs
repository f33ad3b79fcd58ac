//! Resolution Replies (RFC 2332 §5.2.2) to our own requests, and the shortcuts they become
//! (Cisco DMVPN phase 3, docs/interop-notes.md §9), with the checks that keep one hostile
//! spoke — it holds the shared NHRP key, so its packets authenticate — from steering our
//! traffic: a reply must answer an outstanding request by request id *and* target, and the
//! shortcut it installs must be a prefix covering that target no wider than
//! `Config::min_shortcut_prefix_len`, covering no NHS's address nor ours, through a next hop
//! inside the tunnel prefix that is neither an NHS nor us nor bound to another NBMA address by
//! a live entry. Refusals are counted.

use std::net::IpAddr;
use std::time::Instant;

use crate::cache::{CacheEntry, EntryFlags, EntryKind};
use crate::codes::{CieCode, ExtensionType};
use crate::counters::DropReason;
use crate::packet::{Cie, Packet};

use super::{Engine, Event, RequestKind, covers, host_len, mask};

impl Engine {
    /// A Resolution Reply (RFC 2332 §5.2.2): a hub forwards one meant for another station; ours
    /// must match an outstanding request by request id and target (§5.2.2: the reply carries
    /// the request's Request ID and Destination Protocol Address), and becomes a shortcut or an
    /// `Event::ResolutionFailed`. A reply matching nothing leaves the request outstanding, so a
    /// forged one cannot cancel the real answer.
    pub(super) fn on_resolution_reply(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        p: &Packet,
        raw: &[u8],
    ) {
        let (Some(src_proto), Some(target)) = (p.src_protocol_ip(), p.dst_protocol_ip()) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if src_proto != self.config.protocol_addr {
            self.forward_reply(now, from_nbma, p, raw, src_proto);
            return;
        }
        if !p
            .request_id()
            .is_some_and(|id| self.pending.is_outstanding(id, target))
        {
            self.counters.drop(DropReason::UnexpectedReply);
            return;
        }
        let first_sent = self.pending.remove(&target).map(|r| r.first_sent);
        let Some(cie) = p.cies().first() else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if let Some(sent) = first_sent {
            self.events.push_back(Event::RequestAnswered {
                kind: RequestKind::Resolution,
                target,
                rtt: now.saturating_duration_since(sent),
                accepted: cie.code == CieCode::SUCCESS,
            });
        }
        if cie.code != CieCode::SUCCESS {
            self.events.push_back(Event::ResolutionFailed {
                target,
                code: Some(cie.code),
            });
            return;
        }
        self.install_shortcut(now, from_nbma, p, cie, target);
    }

    /// Whether `addr` is inside our tunnel prefix (always, for a /32 tunnel address, which
    /// names no prefix).
    pub(super) fn in_tunnel_prefix(&self, addr: IpAddr) -> bool {
        let len = self.config.prefix_len;
        len >= 32 || covers(mask(self.config.protocol_addr, len), len, addr)
    }

    /// Whether a shortcut `prefix/len` through `next_hop` may be installed: see the module
    /// documentation.
    fn shortcut_allowed(&self, prefix: IpAddr, len: u8, next_hop: IpAddr) -> bool {
        let own = self.config.protocol_addr;
        let nhs_covered = self
            .nhs
            .iter()
            .filter_map(|n| n.protocol_addr)
            .any(|a| covers(prefix, len, a));
        len >= self.config.min_shortcut_prefix_len
            && !nhs_covered
            && !covers(prefix, len, own)
            && next_hop != own
            && self.in_tunnel_prefix(next_hop)
    }

    /// Spoke: a positive reply to our own request for `target` becomes a shortcut entry
    /// and a route (phase 3, docs/interop-notes.md §9).
    fn install_shortcut(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        p: &Packet,
        cie: &Cie,
        target: IpAddr,
    ) {
        let prefix_len = host_len(cie.prefix_len);
        let next_hop = cie.client_protocol_ip().unwrap_or(target);
        if !next_hop.is_ipv4() {
            self.counters.drop(DropReason::Malformed);
            return;
        }
        if self.nhs.iter().any(|n| n.protocol_addr == Some(next_hop)) {
            // The hub answered for itself: traffic already goes there.
            return;
        }
        let prefix = mask(target, prefix_len);
        let key = (prefix, prefix_len);
        // A learned entry never replaces one that was not learned (RFC 2332 §5.2.2 leaves
        // configured bindings to the operator).
        let replaces_fixed = self
            .cache
            .get(&key)
            .is_some_and(|e| !matches!(e.kind, EntryKind::Shortcut | EntryKind::Dynamic));
        if !self.shortcut_allowed(prefix, prefix_len, next_hop) || replaces_fixed {
            self.counters.drop(DropReason::ShortcutRefused);
            return;
        }
        let from_nhs = self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma);
        let claimed = cie.client_nbma_ip().unwrap_or(from_nbma);
        let nat_nbma = p
            .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .into_iter()
            .flatten()
            .filter(|c| c.client_protocol_ip() == Some(next_hop))
            .find_map(Cie::client_nbma_ip);
        // The address that works: the responder's post-NAT address, or the
        // outer source of a reply that came straight from it.
        let effective = nat_nbma
            .or((!from_nhs).then_some(from_nbma))
            .unwrap_or(claimed);
        // A next hop already bound, by a live entry other than this one, to another NBMA
        // address stays where it is: a responder may answer for its own prefix, but not move
        // another spoke's tunnel address to itself (every mapping lookup by next hop would
        // follow it).
        let held_elsewhere = self
            .cache
            .keys_by_next_hop(next_hop)
            .filter(|k| *k != key)
            .filter_map(|k| self.cache.get(&k))
            .any(|e| e.is_live(now) && e.effective_nbma() != effective);
        if held_elsewhere {
            self.counters.drop(DropReason::ShortcutRefused);
            return;
        }
        let hold = self.peer_holding_time(cie.holding_time);
        if self.cache_full_for(&key) {
            return;
        }
        let created = self.cache.get(&key).map_or(now, |e| e.created);
        self.cache.insert(
            now,
            key,
            CacheEntry {
                kind: EntryKind::Shortcut,
                protocol_addr: prefix,
                prefix_len,
                next_hop,
                nbma: claimed,
                post_nat_nbma: (effective != claimed).then_some(effective),
                flags: EntryFlags {
                    nat: effective != claimed,
                    ..EntryFlags::default()
                },
                created,
                expires: Some(now + hold),
                holding_time: hold,
                request_id: p.request_id().unwrap_or(0),
                // Refresh while a third of the holding time is left.
                refresh_at: Some(now + hold * 2 / 3),
            },
        );
        self.events.push_back(Event::InstallRoute {
            prefix,
            prefix_len,
            next_hop,
            nbma: effective,
        });
    }
}
