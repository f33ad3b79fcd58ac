//! The SA gate, a DMVPN rule outside RFC 2332 (as FRR and Cisco run NHRP
//! over IPsec; docs/interop-notes.md §9): nothing leaves for an NBMA address
//! without an IPsec SA to it.
//!
//! Every NHRP packet rides GRE inside ESP, so nothing can be sent to an NBMA
//! address before an IPsec SA to it exists. The engine tracks which NBMA
//! addresses have an SA: the daemon reports [`Engine::sa_up`] and
//! [`Engine::peer_dead`], and any NHRP packet received from an address
//! proves an SA (the daemon only hands over decrypted traffic). A
//! packet for an address without an SA is held in a small per-address queue
//! and [`Event::NeedSa`] is emitted once; [`Engine::sa_up`] releases the
//! queue. So the phase 3 answering spoke emits "need SA to the requester's
//! post-NAT NBMA" and its resolution reply leaves only when that SA is up
//! (docs/interop-notes.md §9): the daemon never has to buffer NHRP.

use std::net::IpAddr;
use std::time::Instant;

use crate::codes::PacketType;
use crate::counters::DropReason;
use crate::packet::Packet;

use super::queue_table::Pushed;
use super::{Engine, Event, INITIAL_REGISTRATION_WAIT, NhsPhase, SA_QUEUE_TIMEOUT, Transmit};

#[derive(Debug)]
pub(super) struct Queued {
    pub(super) deadline: Instant,
    pub(super) packet_type: PacketType,
    pub(super) bytes: Vec<u8>,
}

impl Engine {
    /// The daemon brought up an SA to `nbma`: release what waits for it.
    pub fn sa_up(&mut self, now: Instant, nbma: IpAddr) {
        self.sa_ready.insert(nbma);
        self.flush_queue(now, nbma);
        if self.shut_down {
            return;
        }
        for i in 0..self.nhs.len() {
            let waiting = self.nhs.get(i).is_some_and(|n| {
                n.config.nbma_addr == nbma && matches!(n.phase, NhsPhase::ExpectSa { .. })
            });
            if waiting {
                self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, None);
            }
        }
    }

    /// The peer at `nbma` set up a new SA toward us (it initiated): an NHS does that when it
    /// thinks it lost our old SA, and with it our registration, or when it may be left
    /// without the new SA itself (it gave up on that setup before our answer reached it).
    /// A registration with it is refreshed now, as at a third of the holding time: nothing
    /// is declared lost (the registration stays up until it expires or the refresh fails),
    /// and the refresh is the traffic that shows whether the NHS has the SA. A registration
    /// already under way or waiting for an SA is left to its own schedule.
    pub fn refresh_registration(&mut self, now: Instant, nbma: IpAddr) {
        if self.shut_down {
            return;
        }
        for i in 0..self.nhs.len() {
            let phase = self
                .nhs
                .get(i)
                .filter(|n| n.config.nbma_addr == nbma)
                .map(|n| n.phase);
            if let Some(NhsPhase::Registered { expires, .. }) = phase {
                self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, Some(expires));
            }
        }
    }

    /// Whether NHRP packets wait for an SA to `nbma` (a phase 3 answer to a requester, say).
    /// [`Event::NeedSa`] came once, when the first of them was queued; a daemon whose setup
    /// was held back then asks this when it may try again.
    pub fn holds_for_sa(&self, nbma: IpAddr) -> bool {
        self.queues.holds(&nbma)
    }

    /// The SA to `nbma` is gone (DPD, delete): drop what depends on it.
    pub fn peer_dead(&mut self, now: Instant, nbma: IpAddr) {
        self.sa_ready.remove(&nbma);
        if let Some(q) = self.queues.take(&nbma) {
            for _ in q {
                self.counters.drop(DropReason::QueueExpired);
            }
        }
        // The entries reached at `nbma`, from the NBMA index: O(log N + k).
        let keys: Vec<_> = self.cache.keys_by_nbma(nbma).collect();
        for k in keys {
            self.remove_entry(k);
        }
        let retry = now + Self::sa_retry_wait(self.config.holding_time);
        for n in &mut self.nhs {
            if n.config.nbma_addr != nbma || matches!(n.phase, NhsPhase::Idle) {
                continue;
            }
            if n.is_up(now) {
                self.events.push_back(Event::NhsDown {
                    protocol_addr: n.protocol_addr,
                    nbma,
                });
            }
            n.phase = NhsPhase::ExpectSa { retry_at: retry };
            if !self.shut_down {
                self.events.push_back(Event::NeedSa { nbma });
            }
        }
    }

    /// Encodes `p`, counting a refusal.
    pub(super) fn encode(&mut self, p: &Packet) -> Option<Vec<u8>> {
        match p.to_bytes() {
            Ok(b) => Some(b),
            Err(_) => {
                self.counters.drop(DropReason::EncodeFailed);
                None
            }
        }
    }

    /// Encodes `p` and sends it through the gate.
    pub(super) fn send(&mut self, now: Instant, dst: IpAddr, p: &Packet) {
        if let Some(b) = self.encode(p) {
            self.send_bytes(now, dst, p.packet_type, b);
        }
    }

    /// Sends at once when `dst` has an SA; else queues (at most `SA_QUEUE_LEN` packets, for
    /// `SA_QUEUE_TIMEOUT`) and asks for the SA when the queue starts.
    pub(super) fn send_bytes(&mut self, now: Instant, dst: IpAddr, t: PacketType, bytes: Vec<u8>) {
        if self.sa_ready.contains(&dst) {
            self.counters.count_tx(t);
            self.transmits.push_back(Transmit {
                dst_nbma: dst,
                bytes,
            });
            return;
        }
        let pushed = self.queues.push(
            dst,
            Queued {
                deadline: now + SA_QUEUE_TIMEOUT,
                packet_type: t,
                bytes,
            },
        );
        match pushed {
            Pushed::Started => self.events.push_back(Event::NeedSa { nbma: dst }),
            Pushed::Queued => {}
            Pushed::Full => self.counters.drop(DropReason::QueueFull),
        }
    }

    /// Releases what waited for `nbma`'s SA, dropping what outlived its wait.
    pub(super) fn flush_queue(&mut self, now: Instant, nbma: IpAddr) {
        let Some(q) = self.queues.take(&nbma) else {
            return;
        };
        for p in q {
            if p.deadline <= now {
                self.counters.drop(DropReason::QueueExpired);
                continue;
            }
            self.counters.count_tx(p.packet_type);
            self.transmits.push_back(Transmit {
                dst_nbma: nbma,
                bytes: p.bytes,
            });
        }
    }

    /// Drops queued packets that waited longer than [`super::SA_QUEUE_TIMEOUT`].
    pub(super) fn queue_timeouts(&mut self, now: Instant) {
        // Only the queues whose oldest packet is due: O(k log N).
        let expired = self.queues.expire(now);
        for _ in 0..expired {
            self.counters.drop(DropReason::QueueExpired);
        }
    }
}
