//! Next hop client: registration with each NHS (RFC 2332 §5.2.3), its
//! refresh at a third of the holding time, retransmission with backoff and
//! the SA reset when an NHS stays silent (FRR behaviour, docs/interop-notes.md §7),
//! and purge of our own registrations (§5.2.5, docs/interop-notes.md §6).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::codes::{CieCode, ExtensionType, Flags, PacketType};
use crate::config::NhsConfig;
use crate::counters::DropReason;
use crate::packet::{Body, Cie, Packet, ip_bytes};

use super::{
    DIRECT_HOP_COUNT, Engine, Event, INITIAL_REGISTRATION_WAIT, MAX_REGISTRATION_WAIT,
    MAX_SA_RETRY_WAIT, RequestKind, secs16,
};

#[derive(Debug, Clone, Copy)]
pub(super) enum NhsPhase {
    Idle,
    ExpectSa {
        retry_at: Instant,
    },
    ExpectRegistrationReply {
        request_id: u32,
        wait: Duration,
        retry_at: Instant,
        registered_until: Option<Instant>,
        /// First transmission of `request_id` (the RTT in `Event::RequestAnswered`).
        first_sent: Instant,
    },
    Registered {
        refresh_at: Instant,
        expires: Instant,
    },
}

#[derive(Debug)]
pub(super) struct Nhs {
    pub(super) config: NhsConfig,
    pub(super) protocol_addr: Option<IpAddr>,
    pub(super) phase: NhsPhase,
    /// Id of the accepted registration: IOS expects a purge to carry it
    /// (docs/interop-notes.md §6).
    pub(super) registered_id: Option<u32>,
    /// When the current (or last) registration came up: the NHS entry's creation in
    /// `show nhrp`.
    pub(super) up_since: Option<Instant>,
    /// Registered with (or to be): false while the spoke keeps this NHS in reserve (its NHS
    /// cluster has `max-connections` better ones up, Cisco's backup NHS).
    pub(super) active: bool,
}

impl Nhs {
    /// Registered, or still inside the previous registration while its refresh is unanswered.
    pub(super) fn is_up(&self, now: Instant) -> bool {
        match self.phase {
            NhsPhase::Registered { expires, .. } => now < expires,
            NhsPhase::ExpectRegistrationReply {
                registered_until, ..
            } => registered_until.is_some_and(|u| now < u),
            _ => false,
        }
    }

    /// When this NHS next needs `handle_timeout`.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            NhsPhase::Idle => None,
            NhsPhase::ExpectSa { retry_at } => Some(retry_at),
            NhsPhase::ExpectRegistrationReply {
                retry_at,
                registered_until,
                ..
            } => Some(registered_until.map_or(retry_at, |u| u.min(retry_at))),
            NhsPhase::Registered { refresh_at, .. } => Some(refresh_at),
        }
    }
}

impl Engine {
    /// Spoke: register with every active NHS (asking for SAs first where needed).
    pub fn register(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        self.shut_down = false;
        self.purges_awaited.clear();
        self.registering = true;
        for i in 0..self.nhs.len() {
            if self.nhs.get(i).is_some_and(|n| n.active) {
                self.nhs_start(now, i);
            }
        }
    }

    /// Spoke: registers with the NHS at `nbma` (`active`), or stops: purges a registration it
    /// holds there (RFC 2332 §5.2.5), reports it down and leaves it idle, neither asking for
    /// an SA nor registering, until made active again. Every NHS starts active; the node keeps
    /// the ones an NHS cluster's `max-connections` leaves out in reserve. Multicast follows:
    /// it is replicated to active NHSs only ([`Engine::take_multicast_changes`]).
    pub fn set_nhs_active(&mut self, now: Instant, nbma: IpAddr, active: bool) {
        for i in 0..self.nhs.len() {
            let Some(n) = self.nhs.get_mut(i) else {
                continue;
            };
            if n.config.nbma_addr != nbma || n.active == active {
                continue;
            }
            n.active = active;
            if n.config.multicast && self.multicast_nhs_reported {
                self.multicast_nhs_changes.push((nbma, active));
            }
            if active {
                if self.registering && !self.shut_down {
                    self.nhs_start(now, i);
                }
                continue;
            }
            self.send_purge(now, i);
            let Some(n) = self.nhs.get_mut(i) else {
                continue;
            };
            if n.is_up(now) {
                self.events.push_back(Event::NhsDown {
                    protocol_addr: n.protocol_addr,
                    nbma,
                });
            }
            n.phase = NhsPhase::Idle;
            n.registered_id = None;
        }
    }

    /// Whether the NHS at `nbma` is registered with or to be (see [`Engine::set_nhs_active`]).
    pub fn nhs_active(&self, nbma: IpAddr) -> bool {
        self.nhs
            .iter()
            .any(|n| n.config.nbma_addr == nbma && n.active)
    }

    /// Our NBMA address changed: purge the old registrations, then register
    /// the new address (docs/interop-notes.md §6).
    pub fn set_nbma(&mut self, now: Instant, nbma: IpAddr) {
        if nbma == self.config.nbma_addr {
            return;
        }
        self.send_purges(now);
        self.config.nbma_addr = nbma;
        self.public_nbma = None;
        for i in 0..self.nhs.len() {
            let Some(n) = self.nhs.get_mut(i) else {
                continue;
            };
            n.phase = NhsPhase::Idle;
            if n.active {
                self.nhs_start(now, i);
            }
        }
    }

    /// Shutting down: purge our registrations and withdraw shortcuts. The purges sent are
    /// awaited ([`Engine::purges_unanswered`]) so that the caller can hold back the IKE
    /// DELETEs until each NHS has answered: the purge travels in ESP, the DELETE in IKE, and
    /// nothing orders the two on the way or inside the NHS.
    pub fn shutdown(&mut self, now: Instant) {
        self.purges_awaited = self
            .nhs
            .iter()
            .filter(|n| n.is_up(now))
            .filter_map(|n| Some((n.config.nbma_addr, n.registered_id?)))
            .collect();
        self.send_purges(now);
        self.shut_down = true;
        for n in &mut self.nhs {
            if n.is_up(now) {
                self.events.push_back(Event::NhsDown {
                    protocol_addr: n.protocol_addr,
                    nbma: n.config.nbma_addr,
                });
            }
            n.phase = NhsPhase::Idle;
        }
        let keys: Vec<_> = self.cache.keys().copied().collect(); // O(N): once, at shutdown
        for k in keys {
            self.remove_entry(k);
        }
        self.pending.clear();
    }

    /// How many of the Purge Requests sent at [`Engine::shutdown`] no NHS has answered yet. A
    /// hub that ignores purges (FRR's nhrpd) never answers: the caller bounds its wait.
    pub fn purges_unanswered(&self) -> usize {
        self.purges_awaited.len()
    }

    /// A Purge Reply (RFC 2332 §5.2.6): it answers our purge if it comes from the NHS the
    /// purge went to and carries its request id; anything else is ignored, as before.
    pub(super) fn on_purge_reply(&mut self, from_nbma: IpAddr, reply: &Packet) {
        let Some(id) = reply.request_id() else {
            return;
        };
        self.purges_awaited
            .retain(|&(nbma, awaited)| !(nbma == from_nbma && awaited == id));
    }

    /// NHS `i`'s timers (docs/interop-notes.md §7): ask again for a missing SA, retransmit an
    /// unanswered registration with the same request id and a doubled wait, reset the SA once the
    /// wait would pass `MAX_REGISTRATION_WAIT`, refresh a registration at a third of its holding
    /// time.
    pub(super) fn nhs_timeout(&mut self, now: Instant, i: usize) {
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        let nbma = n.config.nbma_addr;
        match n.phase {
            NhsPhase::Idle => {}
            NhsPhase::ExpectSa { retry_at } if retry_at <= now => {
                if self.sa_ready.contains(&nbma) {
                    self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, None);
                } else {
                    n.phase = NhsPhase::ExpectSa {
                        retry_at: now + Self::sa_retry_wait(self.config.holding_time),
                    };
                    self.events.push_back(Event::NeedSa { nbma });
                }
            }
            NhsPhase::ExpectSa { .. } => {}
            NhsPhase::ExpectRegistrationReply {
                request_id,
                wait,
                retry_at,
                registered_until,
                first_sent,
            } => {
                let mut registered_until = registered_until;
                if registered_until.is_some_and(|u| u <= now) {
                    registered_until = None;
                    n.phase = NhsPhase::ExpectRegistrationReply {
                        request_id,
                        wait,
                        retry_at,
                        registered_until,
                        first_sent,
                    };
                    self.events.push_back(Event::NhsDown {
                        protocol_addr: n.protocol_addr,
                        nbma,
                    });
                }
                if retry_at > now {
                    return;
                }
                let next = wait * 2;
                if next > MAX_REGISTRATION_WAIT {
                    if registered_until.is_some() {
                        self.events.push_back(Event::NhsDown {
                            protocol_addr: n.protocol_addr,
                            nbma,
                        });
                    }
                    n.phase = NhsPhase::ExpectSa {
                        retry_at: now + Self::sa_retry_wait(self.config.holding_time),
                    };
                    self.sa_ready.remove(&nbma);
                    self.events.push_back(Event::ResetSa { nbma });
                    self.events.push_back(Event::NeedSa { nbma });
                } else {
                    // Retransmissions keep the request id so a late reply
                    // still matches (RFC 2332 §5.2.0.1 Request ID).
                    self.send_registration(now, i, Some(request_id), next, registered_until);
                }
            }
            NhsPhase::Registered {
                refresh_at,
                expires,
            } if refresh_at <= now => {
                // Re-register at a third of the holding time (docs/interop-notes.md §7).
                self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, Some(expires));
            }
            NhsPhase::Registered { .. } => {}
        }
    }

    /// The registration request for NHS `i` (docs/interop-notes.md §7).
    pub fn registration_request(&self, i: usize, request_id: u32) -> Option<Packet> {
        let n = self.nhs.get(i)?;
        let mut flags = Flags::CISCO_NAT;
        if self.config.unique {
            flags |= Flags::REGISTRATION_U;
        }
        let mut p = self.base_packet(
            PacketType::REGISTRATION_REQUEST,
            DIRECT_HOP_COUNT,
            Body::Common {
                flags,
                request_id,
                cies: vec![Cie {
                    prefix_len: self.request_prefix_len(),
                    mtu: self.config.mtu,
                    holding_time: secs16(self.config.holding_time),
                    ..Cie::default()
                }],
            },
        );
        // RFC 2332 §5.2.3: dst proto is the NHS, or our own address when
        // the NHS address is not known.
        p.dst_protocol = ip_bytes(n.protocol_addr.unwrap_or(self.config.protocol_addr));
        let nhs_cie = Cie {
            prefix_len: 32,
            mtu: self.config.mtu,
            client_nbma: ip_bytes(n.config.nbma_addr),
            client_protocol: ip_bytes(n.protocol_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            ..Cie::default()
        };
        p.extensions = Some(self.request_extensions(vec![nhs_cie]));
        Some(p)
    }

    /// docs/interop-notes.md §7: while the SA to an NHS is not up, ask for one again
    /// every holding time / 4, capped at [`MAX_SA_RETRY_WAIT`].
    pub(super) fn sa_retry_wait(holding_time: Duration) -> Duration {
        (holding_time / 4).min(MAX_SA_RETRY_WAIT)
    }

    /// Starts registering with NHS `i`: at once when its SA is up, else after asking for one.
    fn nhs_start(&mut self, now: Instant, i: usize) {
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        let nbma = n.config.nbma_addr;
        if self.sa_ready.contains(&nbma) {
            self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, None);
        } else {
            // docs/interop-notes.md §7: while the SA is not up, retry every holdtime/4 (capped).
            n.phase = NhsPhase::ExpectSa {
                retry_at: now + Self::sa_retry_wait(self.config.holding_time),
            };
            self.events.push_back(Event::NeedSa { nbma });
        }
    }

    /// Sends a Registration Request to NHS `i` (a fresh request id unless retransmitting) and waits
    /// `wait` for its reply.
    pub(super) fn send_registration(
        &mut self,
        now: Instant,
        i: usize,
        request_id: Option<u32>,
        wait: Duration,
        registered_until: Option<Instant>,
    ) {
        let request_id = request_id.unwrap_or_else(|| self.ids.next_request_id());
        let Some(p) = self.registration_request(i, request_id) else {
            return;
        };
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        let first_sent = match n.phase {
            NhsPhase::ExpectRegistrationReply {
                request_id: id,
                first_sent,
                ..
            } if id == request_id => first_sent,
            _ => now,
        };
        n.phase = NhsPhase::ExpectRegistrationReply {
            request_id,
            wait,
            retry_at: now + wait,
            registered_until,
            first_sent,
        };
        let nbma = n.config.nbma_addr;
        self.send(now, nbma, &p);
    }

    /// A Registration Reply (RFC 2332 §5.2.3), matched to its NHS by request id: the first CIE's
    /// code says accepted or refused. Learns the NHS's tunnel address from the Responder Address
    /// extension (§5.3.1) and our post-NAT NBMA from the NAT extension (docs/interop-notes.md §8).
    pub(super) fn on_registration_reply(&mut self, now: Instant, from_nbma: IpAddr, p: &Packet) {
        let Some(id) = p.request_id() else {
            return;
        };
        // The reply must come from the NHS the request went to: with several NHSs, one of
        // them (or a spoke spoofing its address) must not answer for another, which would mark
        // that NHS up and set the public address it sees.
        let Some(i) = self.nhs.iter().position(|n| {
            n.config.nbma_addr == from_nbma
                && matches!(n.phase, NhsPhase::ExpectRegistrationReply { request_id, .. } if request_id == id)
        }) else {
            self.counters.drop(DropReason::UnexpectedReply);
            return;
        };
        let Some(cie) = p.cies().first() else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let own = self.config.protocol_addr;
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        let nbma = n.config.nbma_addr;
        if let NhsPhase::ExpectRegistrationReply { first_sent, .. } = n.phase {
            self.events.push_back(Event::RequestAnswered {
                kind: RequestKind::Registration,
                target: nbma,
                rtt: now.saturating_duration_since(first_sent),
                accepted: cie.code == CieCode::SUCCESS,
            });
        }
        if cie.code != CieCode::SUCCESS {
            self.events.push_back(Event::RegistrationRefused {
                nbma,
                code: cie.code,
            });
            return;
        }
        if n.protocol_addr.is_none() {
            n.protocol_addr = p
                .extension_cies(ExtensionType::RESPONDER_ADDRESS)
                .and_then(|c| c.first())
                .and_then(Cie::client_protocol_ip);
        }
        let was_up = n.is_up(now);
        let hold = match cie.holding_time {
            0 => self.config.holding_time,
            s => Duration::from_secs(u64::from(s)),
        };
        // Refresh at a third of the holding time, less up to a tenth of that as jitter
        // (from the request id, so runs stay deterministic): spokes that registered together
        // (a hub restart) would otherwise refresh in the same waves forever, and a hub with
        // thousands of them answers part of each wave late.
        let third = hold / 3;
        let spread = u64::try_from(third.as_millis() / 10).unwrap_or(0);
        let jitter = Duration::from_millis(u64::from(id) % spread.max(1));
        n.phase = NhsPhase::Registered {
            refresh_at: now + third - jitter,
            expires: now + hold,
        };
        n.registered_id = Some(id);
        if !was_up {
            n.up_since = Some(now);
            self.events.push_back(Event::NhsUp {
                protocol_addr: n.protocol_addr,
                nbma,
            });
        }
        // docs/interop-notes.md §8: the NHS adds a CIE with our observed (post-NAT)
        // NBMA address and our tunnel address to the NAT extension.
        let learned = p
            .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .into_iter()
            .flatten()
            .filter(|c| c.client_protocol_ip() == Some(own))
            .find_map(Cie::client_nbma_ip);
        if let Some(public) = learned
            && self.public_nbma != Some(public)
        {
            self.public_nbma = Some(public);
            self.events
                .push_back(Event::PublicNbmaLearned { nbma: public });
        }
    }

    /// Purges our registration at every NHS that holds one (RFC 2332 §5.2.5), with the
    /// registration's request id (docs/interop-notes.md §6).
    fn send_purges(&mut self, now: Instant) {
        for i in 0..self.nhs.len() {
            self.send_purge(now, i);
        }
    }

    /// Purges our registration at NHS `i` if it holds one.
    fn send_purge(&mut self, now: Instant, i: usize) {
        let Some(n) = self.nhs.get(i) else {
            return;
        };
        let (Some(id), true) = (n.registered_id, n.is_up(now)) else {
            return;
        };
        let mut p = self.base_packet(
            PacketType::PURGE_REQUEST,
            DIRECT_HOP_COUNT,
            Body::Common {
                flags: Flags::CISCO_NAT,
                // docs/interop-notes.md §6: IOS matches the purge to the registration by id.
                request_id: id,
                cies: vec![Cie {
                    prefix_len: self.request_prefix_len(),
                    mtu: self.config.mtu,
                    client_nbma: ip_bytes(self.config.nbma_addr),
                    client_protocol: ip_bytes(self.config.protocol_addr),
                    ..Cie::default()
                }],
            },
        );
        p.dst_protocol = ip_bytes(n.protocol_addr.unwrap_or(self.config.protocol_addr));
        p.extensions = self.auth_only_extensions();
        let nbma = n.config.nbma_addr;
        self.send(now, nbma, &p);
    }
}
