//! Address resolution (RFC 2332 §5.2.1 Resolution Request, §5.2.2
//! Resolution Reply) as requester, responder and hub, with the Cisco DMVPN
//! phase 3 shortcut rules (docs/interop-notes.md §9).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::cache::{CacheEntry, EntryFlags, EntryKind};
use crate::codes::{CieCode, ExtensionType, Flags, PacketType};
use crate::config::Role;
use crate::counters::DropReason;
use crate::packet::{Body, Cie, Packet, ip_bytes};

use super::{
    DEFAULT_HOP_COUNT, Engine, Event, INITIAL_RESOLUTION_WAIT, MAX_PENDING_RESOLUTIONS,
    RESOLUTION_ATTEMPTS, covers, mask, secs16,
};

#[derive(Debug, Clone)]
pub(super) struct PendingResolution {
    pub(super) request_id: u32,
    pub(super) nhs_nbma: IpAddr,
    pub(super) wait: Duration,
    pub(super) retry_at: Instant,
    pub(super) attempts: u8,
    pub(super) packet: Vec<u8>,
    /// First transmission; retransmissions keep it (the RTT in `Event::RequestAnswered`).
    pub(super) first_sent: Instant,
}

impl Engine {
    /// Spoke: find a shortcut for `target` (a data destination). A live
    /// shortcut is marked used, so it is refreshed before it expires.
    pub fn resolve(&mut self, now: Instant, target: IpAddr) {
        if self.config.role != Role::Spoke || self.shut_down || !target.is_ipv4() {
            return;
        }
        if let Some(key) = self.live_shortcuts_covering(now, target).into_iter().min() {
            self.cache.modify(now, &key, |e| e.flags.used = true);
            return;
        }
        if self.pending.contains(&target) {
            return;
        }
        if !self.take_resolution_token(now) {
            self.counters.drop(DropReason::RateLimited);
            return;
        }
        let Some(nhs_nbma) = self
            .nhs
            .iter()
            .find(|n| n.is_up(now))
            .map(|n| n.config.nbma_addr)
        else {
            self.counters.drop(DropReason::NoRoute);
            return;
        };
        self.start_resolution(now, target, nhs_nbma);
    }

    /// The token bucket of new resolutions: `Config::resolution_burst` tokens, one back per
    /// `Config::resolution_refill`. Each new destination costs a request to the NHS and,
    /// through it, an IKE exchange with the responder, so a host scanning addresses behind
    /// us must not turn into a flood of them.
    fn take_resolution_token(&mut self, now: Instant) -> bool {
        let burst = self.config.resolution_burst;
        let refill = self.config.resolution_refill;
        let (mut tokens, last) = match self.resolution_tokens {
            (_, None) => (burst, now),
            (tokens, Some(last)) => {
                let earned =
                    now.saturating_duration_since(last).as_nanos() / refill.as_nanos().max(1);
                // The refill time moves by whole tokens only, so fractions carry over.
                let moved = u32::try_from(earned)
                    .ok()
                    .filter(|n| *n < burst.saturating_sub(tokens))
                    .and_then(|n| Some((n, last.checked_add(refill.checked_mul(n)?)?)));
                match moved {
                    Some((n, t)) => (tokens + n, t),
                    None if earned == 0 => (tokens.min(burst), last),
                    None => (burst, now),
                }
            }
        };
        let granted = tokens > 0;
        if granted {
            tokens -= 1;
        }
        self.resolution_tokens = (tokens, Some(last));
        granted
    }

    /// Spoke: the data plane used a route towards `target`; a shortcut
    /// covering it will be refreshed rather than left to expire.
    pub fn shortcut_used(&mut self, now: Instant, target: IpAddr) {
        for key in self.live_shortcuts_covering(now, target) {
            self.cache.modify(now, &key, |e| e.flags.used = true);
        }
    }

    /// Keys of the live shortcuts whose prefix covers `target`. Cache keys are masked
    /// prefixes, so for IPv4 these are among the 33 keys (`target` masked to 0..=32 bits),
    /// looked up directly: O(log N), not a walk of the cache. An IPv6 "prefix" covers only
    /// itself (see `covers`), at any length.
    fn live_shortcuts_covering(&self, now: Instant, target: IpAddr) -> Vec<(IpAddr, u8)> {
        let candidates: Vec<(IpAddr, u8)> = match target {
            IpAddr::V4(_) => (0..=32).map(|len| (mask(target, len), len)).collect(),
            IpAddr::V6(_) => self.cache.keys_for_address(target).collect(),
        };
        candidates
            .into_iter()
            .filter(|k| {
                self.cache.get(k).is_some_and(|e| {
                    e.kind == EntryKind::Shortcut
                        && e.is_live(now)
                        && covers(e.protocol_addr, e.prefix_len, target)
                })
            })
            .collect()
    }

    /// Retransmits unanswered Resolution Requests with the same request id and a doubled wait;
    /// after `RESOLUTION_ATTEMPTS` reports `Event::ResolutionFailed`.
    pub(super) fn resolution_timeouts(&mut self, now: Instant) {
        for target in self.pending.due(now) {
            let Some(mut p) = self.pending.remove(&target) else {
                continue;
            };
            if p.attempts >= RESOLUTION_ATTEMPTS {
                self.events
                    .push_back(Event::ResolutionFailed { target, code: None });
                continue;
            }
            // docs/interop-notes.md §9: retries reuse the request id, backoff from 1 s.
            p.attempts += 1;
            p.wait *= 2;
            p.retry_at = now + p.wait;
            self.send_bytes(
                now,
                p.nhs_nbma,
                PacketType::RESOLUTION_REQUEST,
                p.packet.clone(),
            );
            self.pending.insert(target, p);
        }
    }

    /// Resolves `target` through the first NHS that is up, whatever the cache holds (a shortcut
    /// refresh).
    pub(super) fn resolve_uncached(&mut self, now: Instant, target: IpAddr) {
        let Some(nhs_nbma) = self
            .nhs
            .iter()
            .find(|n| n.is_up(now))
            .map(|n| n.config.nbma_addr)
        else {
            return;
        };
        self.start_resolution(now, target, nhs_nbma);
    }

    /// Sends a Resolution Request for `target` through the NHS at `nhs_nbma` and tracks it
    /// for retransmission with the same request id (docs/interop-notes.md §9).
    fn start_resolution(&mut self, now: Instant, target: IpAddr, nhs_nbma: IpAddr) {
        if self.pending.len() >= MAX_PENDING_RESOLUTIONS && !self.pending.contains(&target) {
            self.counters.drop(DropReason::RateLimited);
            return;
        }
        let request_id = self.ids.next_request_id();
        let pkt = self.resolution_request(target, request_id);
        let Some(bytes) = self.encode(&pkt) else {
            return;
        };
        self.send_bytes(now, nhs_nbma, PacketType::RESOLUTION_REQUEST, bytes.clone());
        self.events
            .push_back(Event::ResolutionRequested { target, nhs_nbma });
        self.pending.insert(
            target,
            PendingResolution {
                request_id,
                nhs_nbma,
                wait: INITIAL_RESOLUTION_WAIT,
                retry_at: now + INITIAL_RESOLUTION_WAIT,
                attempts: 1,
                packet: bytes,
                first_sent: now,
            },
        );
    }

    /// The resolution request for `target` (docs/interop-notes.md §9).
    pub fn resolution_request(&self, target: IpAddr, request_id: u32) -> Packet {
        let mut p = self.base_packet(
            PacketType::RESOLUTION_REQUEST,
            DEFAULT_HOP_COUNT,
            Body::Common {
                flags: Flags::RESOLUTION_Q
                    | Flags::RESOLUTION_A
                    | Flags::RESOLUTION_S
                    | Flags::CISCO_NAT,
                request_id,
                cies: vec![Cie {
                    prefix_len: self.request_prefix_len(),
                    mtu: self.config.mtu,
                    holding_time: secs16(self.config.holding_time),
                    ..Cie::default()
                }],
            },
        );
        p.dst_protocol = ip_bytes(target);
        p.extensions = Some(self.request_extensions(self.own_nat_cies()));
        p
    }

    /// The prefix length we answer authoritatively for `target`: our own
    /// tunnel address, or a route attached to this router.
    fn local_prefix_for(&self, target: IpAddr) -> Option<u8> {
        if target == self.config.protocol_addr {
            return Some(32);
        }
        self.routes
            .longest_covering(target, |r| r.next_hop.is_none())
            .map(|r| r.prefix_len)
    }

    /// Hub: the registered spoke that owns `target`, directly or as the
    /// routing next hop.
    pub(super) fn registered_owner(&self, now: Instant, target: IpAddr) -> Option<CacheEntry> {
        let live = |ip: IpAddr| {
            self.cache
                .get(&(ip, 32))
                .filter(|e| e.kind == EntryKind::Dynamic && e.flags.registered && e.is_live(now))
                .cloned()
        };
        if let Some(e) = live(target) {
            return Some(e);
        }
        let nh = self
            .routes
            .longest_covering(target, |_| true)
            .and_then(|r| r.next_hop)?;
        live(nh)
    }

    /// A Resolution Request (RFC 2332 §5.2.1): dropped on a loop (§5.3.2); answered when the target
    /// is ours; on a hub answered from a registration, forwarded to the spoke that owns the target
    /// (phase 3), or refused.
    pub(super) fn on_resolution_request(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
        raw: &[u8],
    ) {
        let (Some(target), Some(src_proto), Some(src_nbma)) = (
            req.dst_protocol_ip(),
            req.src_protocol_ip(),
            req.src_nbma_ip(),
        ) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if self.drop_looped(
            now,
            from_nbma,
            req,
            raw,
            ExtensionType::FORWARD_TRANSIT_RECORD,
        ) {
            return;
        }
        if !self.source_held_by_sender(now, from_nbma, src_proto, src_nbma) {
            self.counters.drop(DropReason::SourceMismatch);
            return;
        }
        if let Some(prefix_len) = self.local_prefix_for(target) {
            self.answer_resolution(now, from_nbma, req, src_proto, src_nbma, prefix_len);
            return;
        }
        if self.config.role == Role::Hub
            && let Some(owner) = self.registered_owner(now, target)
        {
            let authoritative = req.flags() & Flags::RESOLUTION_A != 0;
            if !authoritative && owner.protocol_addr == target {
                // RFC 2332 §5.2.2: a non-authoritative request may be
                // answered from the cache (A clear in the reply).
                self.answer_from_cache(now, from_nbma, req, &owner);
            } else if owner.next_hop != src_proto {
                // Phase 3: the spoke that owns the destination answers
                // directly, with its prefix, after bringing up IKE. A reply that comes
                // back through us must answer this request (`forward_reply`).
                let to = owner.effective_nbma();
                let id = req.request_id().unwrap_or(0);
                // An NHS relaying for its spokes has no share of its own (they were
                // counted there); a spoke has one.
                let relay = self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma);
                let sender = (!relay).then_some(from_nbma);
                if !self
                    .forwarded
                    .insert(now, src_proto, id, target, to, sender)
                {
                    self.counters.drop(DropReason::RateLimited);
                    return;
                }
                self.forward_request(now, from_nbma, req, raw, to);
            } else {
                self.negative_reply(now, from_nbma, req);
            }
            return;
        }
        self.negative_reply(now, from_nbma, req);
    }

    /// Whether the peer at `from_nbma` may speak for `src_proto`. Every spoke holds the same
    /// NHRP key, so authentication proves membership only: a hub takes a spoke's request only
    /// for the address that spoke registered (reached at the NBMA address the request came
    /// from, post-NAT, and with the NBMA address it registered as its source NBMA: the
    /// responder answers, and brings IKE up, there), and nobody speaks for an NHS's address or
    /// ours. Requests relayed by an NHS were checked by it.
    fn source_held_by_sender(
        &self,
        now: Instant,
        from_nbma: IpAddr,
        src_proto: IpAddr,
        src_nbma: IpAddr,
    ) -> bool {
        if src_proto == self.config.protocol_addr || self.is_nhs_protocol_addr(src_proto) {
            return false;
        }
        if self.config.role != Role::Hub || self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma)
        {
            return true;
        }
        self.cache.get(&(src_proto, 32)).is_some_and(|e| {
            e.kind == EntryKind::Dynamic
                && e.flags.registered
                && e.is_live(now)
                && e.effective_nbma() == from_nbma
                && (src_nbma == e.nbma || src_nbma == from_nbma)
        })
    }

    fn is_nhs_protocol_addr(&self, addr: IpAddr) -> bool {
        self.nhs.iter().any(|n| n.protocol_addr == Some(addr))
    }

    /// Flags of a positive Resolution Reply to `req`.
    fn reply_flags(req: &Packet) -> u16 {
        // docs/interop-notes.md §9: replies copy Q and S (and NAT), set D and A.
        (req.flags() & (Flags::RESOLUTION_Q | Flags::RESOLUTION_S | Flags::CISCO_NAT))
            | Flags::RESOLUTION_A
            | Flags::RESOLUTION_D
    }

    /// Answers authoritatively for our own prefix of length `prefix_len` (RFC 2332 §5.2.2). A spoke
    /// sends the reply straight to the requester's post-NAT NBMA and remembers the requester.
    fn answer_resolution(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
        src_proto: IpAddr,
        src_nbma: IpAddr,
        prefix_len: u8,
    ) {
        let hold = req
            .cies()
            .first()
            .map(|c| c.holding_time)
            .filter(|h| *h != 0)
            .map_or(self.config.holding_time, |h| self.peer_holding_time(h));
        let mut reply = req.clone();
        reply.packet_type = PacketType::RESOLUTION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        reply.body = Body::Common {
            flags: Self::reply_flags(req),
            request_id: req.request_id().unwrap_or(0),
            cies: vec![Cie {
                code: CieCode::SUCCESS,
                prefix_len,
                mtu: self.config.mtu,
                holding_time: secs16(self.config.holding_time),
                client_nbma: ip_bytes(self.config.nbma_addr),
                client_nbma_subaddr: Vec::new(),
                client_protocol: ip_bytes(self.config.protocol_addr),
                preference: 0,
            }],
        };
        let own_nat = self.own_nat_cies();
        reply.extensions = self.reply_extensions(req, |_| own_nat.clone());
        // docs/interop-notes.md §9: the requester is reached at its post-NAT address
        // from the NAT extension, else its claimed NBMA; a hub that is the
        // first hop answers back along the path it came.
        let requester_nbma = req
            .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .into_iter()
            .flatten()
            .filter(|c| c.client_protocol_ip() == Some(src_proto))
            .find_map(Cie::client_nbma_ip)
            .unwrap_or(src_nbma);
        // Only a request relayed by an NHS was checked against the requester's registration
        // (`source_held_by_sender` on the hub): one straight from another peer names whatever
        // source it likes, so it is answered where it came from and teaches us nothing.
        let from_nhs = self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma);
        let to = if self.config.role == Role::Hub || !from_nhs {
            from_nbma
        } else {
            requester_nbma
        };
        // Never learn an NHS's address, our own, or one outside the tunnel prefix from a peer:
        // such an entry would redirect traffic meant for the hub (or anything routed via it).
        let learnable = !self.is_nhs_protocol_addr(src_proto)
            && src_proto != self.config.protocol_addr
            && self.in_tunnel_prefix(src_proto);
        if self.config.role == Role::Spoke
            && from_nhs
            && to != from_nbma
            && learnable
            && !self.cache_full_for(&(src_proto, 32))
        {
            // Remember the requester, so return traffic can use the shortcut
            // once the SA is up.
            let created = now;
            self.cache.insert(
                now,
                (src_proto, 32),
                CacheEntry {
                    kind: EntryKind::Dynamic,
                    protocol_addr: src_proto,
                    prefix_len: 32,
                    next_hop: src_proto,
                    nbma: src_nbma,
                    post_nat_nbma: (requester_nbma != src_nbma).then_some(requester_nbma),
                    flags: EntryFlags {
                        nat: requester_nbma != src_nbma,
                        ..EntryFlags::default()
                    },
                    created,
                    expires: Some(now + hold),
                    holding_time: hold,
                    request_id: req.request_id().unwrap_or(0),
                    refresh_at: None,
                },
            );
        }
        self.send(now, to, &reply);
    }

    /// Hub: answers a non-authoritative request from a registration (RFC 2332 §5.2.2, A clear in
    /// the reply).
    fn answer_from_cache(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
        owner: &CacheEntry,
    ) {
        let mut reply = req.clone();
        reply.packet_type = PacketType::RESOLUTION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        let remaining = owner
            .expires
            .map_or(owner.holding_time, |e| e.saturating_duration_since(now));
        reply.body = Body::Common {
            flags: Self::reply_flags(req) & !Flags::RESOLUTION_A,
            request_id: req.request_id().unwrap_or(0),
            cies: vec![Cie {
                code: CieCode::SUCCESS,
                prefix_len: 32,
                mtu: self.config.mtu,
                holding_time: secs16(remaining),
                client_nbma: ip_bytes(owner.nbma),
                client_nbma_subaddr: Vec::new(),
                client_protocol: ip_bytes(owner.next_hop),
                preference: 0,
            }],
        };
        let nat: Vec<Cie> = owner
            .post_nat_nbma
            .map(|p| Cie {
                prefix_len: 32,
                mtu: self.config.mtu,
                client_nbma: ip_bytes(p),
                client_protocol: ip_bytes(owner.next_hop),
                ..Cie::default()
            })
            .into_iter()
            .collect();
        reply.extensions = self.reply_extensions(req, |_| nat.clone());
        self.send(now, from_nbma, &reply);
    }

    /// Refuses a resolution: every CIE comes back with code 12, no binding exists (RFC 2332
    /// §5.2.2).
    fn negative_reply(&mut self, now: Instant, from_nbma: IpAddr, req: &Packet) {
        let mut reply = req.clone();
        reply.packet_type = PacketType::RESOLUTION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        let mut cies: Vec<Cie> = req.cies().to_vec();
        if cies.is_empty() {
            cies.push(Cie::default());
        }
        for c in &mut cies {
            c.code = CieCode::NO_BINDING_EXISTS;
        }
        reply.body = Body::Common {
            flags: req.flags() & (Flags::RESOLUTION_Q | Flags::RESOLUTION_S | Flags::CISCO_NAT),
            request_id: req.request_id().unwrap_or(0),
            cies,
        };
        reply.extensions = self.reply_extensions(req, <[Cie]>::to_vec);
        self.send(now, from_nbma, &reply);
    }
}
