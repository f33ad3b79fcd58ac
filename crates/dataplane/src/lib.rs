//! The per-packet pipeline of dmvpnd: TUN → route → NHRP mapping → GRE → ESP → underlay,
//! and back.
//!
//! Everything here works on one [`PacketBuf`] per packet, in place, against an immutable
//! [`Tables`] snapshot that the control plane publishes (RCU style: the daemon swaps an
//! `Arc<Tables>`; the dataplane never waits on a lock except an inbound SA's own replay
//! window). Drops are counted by [`DropReason`], never logged per packet.
//!
//! GRE and NHRP leave only inside ESP: a packet whose next hop has no outbound SA is
//! handed back as [`Outbound::NeedSa`] for the daemon to queue, never sent in clear.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod batch;
mod counters;
mod explain;
pub mod routes;
mod tables;

pub use counters::{Counters, DropReason, Totals};
pub use explain::{Decision, Forwarding, PathInfo};
pub use routes::{Route, RouteProto, RouteTable};
pub use tables::{Mapping, PeerPath, Role, Tables, TunnelParams};

use std::net::Ipv4Addr;

use dmvpn_esp::{Error as EspError, SeqBlock};
use dmvpn_wire::gre::{self, EtherType};
use dmvpn_wire::{IpProtocol, Ipv4Packet, PacketBuf, clamp_mss};

/// What to do with a packet read from the TUN device (or an NHRP packet to send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// The buffer now holds an ESP packet for `nbma`: send it over UDP (NAT-T, to `port`)
    /// or as raw IP protocol 50.
    Send {
        /// Peer NBMA address.
        nbma: Ipv4Addr,
        /// Destination UDP port when `udp_encap`.
        port: u16,
        /// ESP-in-UDP (RFC 3948) rather than raw ESP.
        udp_encap: bool,
    },
    /// No outbound SA to `nbma` yet: the buffer is unchanged (the inner packet); queue it
    /// and ask IKE for an SA.
    NeedSa {
        /// Peer NBMA address.
        nbma: Ipv4Addr,
    },
    /// A multicast or broadcast packet: replicate it to [`Tables::multicast`] with
    /// [`Tables::seal_to_then`], one copy per NBMA.
    Multicast,
    /// Dropped and counted.
    Drop(DropReason),
}

/// What a packet received from the underlay turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The buffer holds an inner IP packet for the TUN device, received from `peer`.
    Data {
        /// NBMA address of the SA's peer.
        peer: Ipv4Addr,
        /// Hub only: the packet entered over the tunnel and will leave over it towards
        /// another peer, so the source should be told to go direct (NHRP traffic
        /// indication, phase 3).
        redirect: bool,
    },
    /// The buffer holds an NHRP packet (GRE protocol 0x2001) from `peer`.
    Nhrp {
        /// NBMA address of the SA's peer.
        peer: Ipv4Addr,
    },
    /// Dropped and counted.
    Drop(DropReason),
}

pub(crate) const fn is_multicast_or_broadcast(dst: Ipv4Addr, tunnel: &TunnelParams) -> bool {
    dst.is_multicast() || dst.is_broadcast() || dst.to_bits() == tunnel.broadcast().to_bits()
}

impl Tables {
    /// Decides the next hop of an inner IPv4 packet read from the TUN device and, when an
    /// SA exists, encapsulates and encrypts it in place.
    pub fn outbound(&self, routes: &RouteTable, buf: &mut PacketBuf) -> Outbound {
        let inner = buf.len();
        let out = self.outbound_inner(routes, buf);
        self.count_out(inner, buf.len(), out);
        out
    }

    fn outbound_inner(&self, routes: &RouteTable, buf: &mut PacketBuf) -> Outbound {
        match self.route(routes, buf) {
            Ok(nbma) => self.seal_inner(nbma, EtherType::IPV4, buf),
            Err(verdict) => verdict,
        }
    }

    /// The first half of [`Self::outbound`]: the NBMA address the inner packet in `buf` goes
    /// to (its MSS clamped on the way), or the verdict when it goes nowhere unicast.
    fn route(&self, routes: &RouteTable, buf: &mut PacketBuf) -> Result<Ipv4Addr, Outbound> {
        let dst = match Ipv4Packet::new_checked(buf.as_slice()) {
            Ok(p) => p.dst_addr(),
            Err(_) => return Err(Outbound::Drop(DropReason::NotIpv4)),
        };
        if is_multicast_or_broadcast(dst, &self.tunnel) {
            return Err(Outbound::Multicast);
        }
        let Some(nbma) = self.nbma_for(routes, dst) else {
            return Err(Outbound::Drop(DropReason::NoMapping));
        };
        if let Some(mss) = self.tunnel.adjust_mss {
            // A malformed TCP header is passed through; the IPv4 header parsed above.
            let _ = clamp_mss(buf.as_mut_slice(), mss);
        }
        Ok(nbma)
    }

    /// The NBMA address a packet to `dst` goes to: the tunnel route's gateway (or `dst`
    /// itself on the connected tunnel subnet), then its NHRP mapping; on a spoke, a
    /// destination without a mapping goes to the NHS.
    pub fn nbma_for(&self, routes: &RouteTable, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let (_, next_hop) = Self::next_hop_of(routes, dst);
        if let Some(m) = self.mappings.get(&next_hop) {
            m.mark_used();
            return Some(m.nbma);
        }
        match self.tunnel.role {
            Role::Spoke => self.default_nbma,
            // A hub has nowhere to send an unmapped destination: dropping is the only
            // fail-closed choice.
            Role::Hub => None,
        }
    }

    /// Encapsulates the packet in `buf` in GRE with `protocol` and seals it for `nbma`, for a
    /// caller that sends later. It sends after the SA's turn (dmvpn_esp::OutboundSa::turn) is
    /// given up, so a packet workers send meanwhile may overtake it: dmvpnd's own senders
    /// (multicast copies, the node's NHRP and SA-queue packets) use [`Self::seal_to_then`],
    /// which sends within the turn.
    pub fn seal_to(&self, nbma: Ipv4Addr, protocol: EtherType, buf: &mut PacketBuf) -> Outbound {
        self.seal_to_then(nbma, protocol, buf, |_, _| {})
    }

    /// [`Self::seal_to`], calling `send` with the sealed buffer and the verdict while the
    /// SA's turn is still held, so the packet keeps its place among the SA's numbers. Not
    /// called when `nbma` has no SA (`NeedSa`); `send` must not seal to the same SA (the turn
    /// is not reentrant).
    pub fn seal_to_then(
        &self,
        nbma: Ipv4Addr,
        protocol: EtherType,
        buf: &mut PacketBuf,
        send: impl FnOnce(&PacketBuf, Outbound),
    ) -> Outbound {
        let inner = buf.len();
        let Some(path) = self.paths.get(&nbma) else {
            let out = Outbound::NeedSa { nbma };
            self.count_out(inner, buf.len(), out);
            return out;
        };
        let turn = path.out_sa.turn();
        // A number the packet then has no room for is skipped, which the receiver allows
        // (RFC 4303 §3.4.3: unique and rising, not contiguous).
        let out = match turn.reserve(1) {
            Ok(mut seqs) => {
                Self::seal_from(nbma, path, &mut seqs, protocol, buf, self.tunnel.gre_key)
            }
            Err(_) => Outbound::Drop(DropReason::SequenceExhausted),
        };
        self.count_out(inner, buf.len(), out);
        send(buf, out);
        drop(turn);
        out
    }

    fn seal_inner(&self, nbma: Ipv4Addr, protocol: EtherType, buf: &mut PacketBuf) -> Outbound {
        let Some(path) = self.paths.get(&nbma) else {
            return Outbound::NeedSa { nbma };
        };
        if gre::encap(buf, protocol, self.tunnel.gre_key).is_err() {
            return Outbound::Drop(DropReason::NoRoom);
        }
        // `seal` checks the room before it claims a sequence number.
        let sealed = path.out_sa.seal(buf, IpProtocol::GRE);
        Self::sealed(nbma, path, sealed, buf)
    }

    /// `seal_inner` with the next number of `seqs`, a block taken from `path`'s outbound SA
    /// for a batch.
    fn seal_from(
        nbma: Ipv4Addr,
        path: &PeerPath,
        seqs: &mut SeqBlock<'_>,
        protocol: EtherType,
        buf: &mut PacketBuf,
        gre_key: u32,
    ) -> Outbound {
        if gre::encap(buf, protocol, gre_key).is_err() {
            return Outbound::Drop(DropReason::NoRoom);
        }
        let sealed = seqs.seal(buf, IpProtocol::GRE);
        Self::sealed(nbma, path, sealed, buf)
    }

    /// The verdict on a GRE packet that ESP sealed, or refused to.
    fn sealed(
        nbma: Ipv4Addr,
        path: &PeerPath,
        sealed: Result<u64, EspError>,
        buf: &mut PacketBuf,
    ) -> Outbound {
        match sealed {
            Ok(_) => Outbound::Send {
                nbma,
                port: path.port,
                udp_encap: path.udp_encap,
            },
            Err(e) => {
                // Leave the buffer as it came, so a caller could still queue it.
                let _ = buf.pull_front(gre::KEYED_HEADER_LEN);
                Outbound::Drop(match e {
                    EspError::SequenceExhausted => DropReason::SequenceExhausted,
                    _ => DropReason::NoRoom,
                })
            }
        }
    }

    /// Counts a verdict; a packet sent counts its inner bytes (before GRE and ESP) and the
    /// ESP packet's (`esp_len`, what `buf` holds once sealed), as the received ones do.
    fn count_out(&self, inner_len: usize, esp_len: usize, out: Outbound) {
        match out {
            Outbound::Send { .. } => self.counters.tx(inner_len, esp_len),
            Outbound::Drop(r) => self.counters.count_drop(r),
            Outbound::NeedSa { .. } | Outbound::Multicast => {}
        }
    }

    /// Decrypts and decapsulates an ESP packet (without any UDP header) from `from`.
    pub fn inbound(&self, routes: &RouteTable, from: Ipv4Addr, buf: &mut PacketBuf) -> Inbound {
        let esp = buf.len();
        let r = self.inbound_inner(routes, from, buf);
        match r {
            Inbound::Drop(reason) => self.counters.count_drop(reason),
            Inbound::Data { .. } | Inbound::Nhrp { .. } => self.counters.rx(buf.len(), esp),
        }
        r
    }

    fn inbound_inner(&self, routes: &RouteTable, from: Ipv4Addr, buf: &mut PacketBuf) -> Inbound {
        // The replay check precedes decryption and the window moves only after the ICV
        // verifies (RFC 4303 §3.4.3); both happen inside `open`.
        let (spi, next_header) = match self.inbound.open(buf) {
            Ok(x) => x,
            Err(e) => {
                return Inbound::Drop(match e {
                    EspError::UnknownSpi => DropReason::UnknownSpi,
                    EspError::Replay => DropReason::Replay,
                    EspError::Auth => DropReason::AuthFailed,
                    _ => DropReason::MalformedEsp,
                });
            }
        };
        // Transport mode protecting GRE: anything else inside the SA is not ours.
        if next_header != IpProtocol::GRE {
            return Inbound::Drop(DropReason::NotGre);
        }
        // The SA names the peer; the outer source may have moved (NAT rebinding).
        let peer = self.spi_peer.get(&spi).copied().unwrap_or(from);
        match gre::decap(buf, self.tunnel.gre_key) {
            Ok(EtherType::NHRP) => Inbound::Nhrp { peer },
            Ok(EtherType::IPV4) => {
                let dst = match Ipv4Packet::new_checked(buf.as_slice()) {
                    Ok(p) => p.dst_addr(),
                    Err(_) => return Inbound::Drop(DropReason::NotIpv4),
                };
                if let Some(mss) = self.tunnel.adjust_mss {
                    let _ = clamp_mss(buf.as_mut_slice(), mss);
                }
                let redirect = self.tunnel.role == Role::Hub
                    && self.tunnel.redirect
                    && !is_multicast_or_broadcast(dst, &self.tunnel)
                    && self.nbma_for_peek(routes, dst).is_some_and(|n| n != peer);
                Inbound::Data { peer, redirect }
            }
            Ok(_) => Inbound::Drop(DropReason::UnsupportedProtocol),
            Err(_) => Inbound::Drop(DropReason::GreKey),
        }
    }

    /// `nbma_for` without marking a shortcut as used.
    fn nbma_for_peek(&self, routes: &RouteTable, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let (_, next_hop) = Self::next_hop_of(routes, dst);
        self.mappings.get(&next_hop).map(|m| m.nbma)
    }
}
