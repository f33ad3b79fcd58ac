//! Forwarding by an NHS (RFC 2332 §5.3.2 forward and §5.3.3 reverse transit
//! records, hop count) and NHRP loop detection (§5.3.2, §5.3.3).

use std::net::IpAddr;
use std::time::Instant;

use crate::codes::{ErrorCode, ExtensionType};
use crate::config::Role;
use crate::counters::DropReason;
use crate::packet::{Cie, ExtensionBody, Packet, ip_bytes};

use super::Engine;

impl Engine {
    /// NHRP loop detection (RFC 2332 §5.3.2 for requests and the forward
    /// transit record, §5.3.3 for replies and the reverse one): a station
    /// that finds its own address in the record MUST drop the packet and
    /// send an Error Indication "NHRP Loop Detected". True when it did.
    pub(super) fn drop_looped(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        p: &Packet,
        raw: &[u8],
        transit: ExtensionType,
    ) -> bool {
        let own = self.config.protocol_addr;
        let looped = p
            .extension_cies(transit)
            .is_some_and(|c| c.iter().any(|c| c.client_protocol_ip() == Some(own)));
        if looped {
            self.counters.drop(DropReason::LoopDetected);
            self.send_error(
                now,
                from_nbma,
                p.src_protocol.clone(),
                ErrorCode::LOOP_DETECTED,
                0,
                raw,
            );
        }
        looped
    }

    /// Forwards a request or reply one hop (RFC 2332 §5.3.2/§5.3.3, docs/interop-notes.md
    /// §15): decrement the hop count, append ourselves to the
    /// transit record, fill an empty NAT extension, regenerate authentication.
    pub(super) fn forward_request(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
        raw: &[u8],
        to: IpAddr,
    ) {
        self.forward(
            now,
            from_nbma,
            req,
            raw,
            to,
            ExtensionType::FORWARD_TRANSIT_RECORD,
        );
    }

    /// The forwarding step shared by requests (`transit` = forward transit record) and replies
    /// (reverse transit record).
    pub(super) fn forward(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        p: &Packet,
        raw: &[u8],
        to: IpAddr,
        transit: ExtensionType,
    ) {
        // RFC 2332 §5.2: a packet whose hop count would reach zero is
        // dropped with "Hop Count Exceeded".
        if p.hop_count <= 1 {
            self.counters.drop(DropReason::HopCountExceeded);
            self.send_error(
                now,
                from_nbma,
                p.src_protocol.clone(),
                ErrorCode::HOP_COUNT_EXCEEDED,
                8,
                raw,
            );
            return;
        }
        let direct = p
            .extension_cies(ExtensionType::FORWARD_TRANSIT_RECORD)
            .is_none_or(<[Cie]>::is_empty);
        // Whether we are the requester's first hop: it did not come from an NHS. Not read from
        // the transit record, which the requester writes.
        let first_hop = !self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma);
        let requester = p.src_protocol_ip();
        let requester_nat = requester.and_then(|r| {
            self.cache
                .get(&(r, 32))
                .filter(|e| e.is_live(now))
                .and_then(|e| e.post_nat_nbma)
                .or_else(|| (direct && p.src_nbma_ip() != Some(from_nbma)).then_some(from_nbma))
        });
        let mut out = p.clone();
        out.hop_count = p.hop_count - 1;
        let me = self.identity_cie();
        if let Some(exts) = &mut out.extensions {
            exts.retain(|e| e.ext_type() != ExtensionType::AUTHENTICATION);
            for e in exts.iter_mut() {
                match &mut e.body {
                    ExtensionBody::ForwardTransit(c)
                        if transit == ExtensionType::FORWARD_TRANSIT_RECORD =>
                    {
                        c.push(me.clone())
                    }
                    ExtensionBody::ReverseTransit(c)
                        if transit == ExtensionType::REVERSE_TRANSIT_RECORD =>
                    {
                        c.push(me.clone())
                    }
                    ExtensionBody::CiscoNatAddress(c)
                        if transit == ExtensionType::FORWARD_TRANSIT_RECORD
                            && (first_hop || c.is_empty()) =>
                    {
                        // The first hop replaces what the requester says about its own
                        // post-NAT address with what it knows (the registration, the outer
                        // source): the responder answers and caches the requester there, so a
                        // spoke could otherwise point it at any address.
                        if first_hop {
                            c.retain(|x| x.client_protocol_ip() != requester);
                        }
                        if let (Some(nat), Some(r)) = (requester_nat, requester) {
                            c.push(Cie {
                                prefix_len: 32,
                                mtu: self.config.mtu,
                                client_nbma: ip_bytes(nat),
                                client_protocol: ip_bytes(r),
                                ..Cie::default()
                            });
                        }
                    }
                    _ => {}
                }
            }
            exts.extend(self.auth_extension());
        } else {
            out.extensions = self.auth_only_extensions();
        }
        self.send(now, to, &out);
    }

    /// Hub: a Resolution Reply for another station goes back towards the
    /// requester, unless it already passed through us (§5.3.3), and only when it answers a
    /// request we forwarded (same requester, request id and target) and comes from the
    /// station we forwarded it to: every spoke holds the NHRP key, so anything else is one
    /// spoke offering another a binding nobody asked it for (counted as
    /// [`DropReason::UnexpectedReply`]).
    pub(super) fn forward_reply(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        p: &Packet,
        raw: &[u8],
        requester: IpAddr,
    ) {
        if self.config.role == Role::Hub {
            if self.drop_looped(
                now,
                from_nbma,
                p,
                raw,
                ExtensionType::REVERSE_TRANSIT_RECORD,
            ) {
                return;
            }
            let answered = p
                .request_id()
                .zip(p.dst_protocol_ip())
                .is_some_and(|(id, t)| {
                    self.forwarded
                        .take_answered(now, requester, id, t, from_nbma)
                });
            if !answered {
                self.counters.drop(DropReason::UnexpectedReply);
                return;
            }
            if let Some(e) = self.registered_owner(now, requester) {
                self.forward(
                    now,
                    from_nbma,
                    p,
                    raw,
                    e.effective_nbma(),
                    ExtensionType::REVERSE_TRANSIT_RECORD,
                );
                return;
            }
        }
        self.counters.drop(DropReason::NoRoute);
    }
}
