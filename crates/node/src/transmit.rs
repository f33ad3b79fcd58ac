//! The node's outgoing datagrams, and why a tunnel packet is sealed when it is sent rather
//! than when it is queued.
//!
//! The packet workers seal on the SAs the node shares with them, all the time. A packet the
//! node itself sends through the tunnel (NHRP, the first packets that waited for an SA)
//! used to take its sequence number when the node queued it, and left only after the daemon
//! had published the tables and applied routes (a netlink round trip): meanwhile a worker
//! could put dozens of later numbers on the wire, and a peer with a small replay window
//! (strongSwan's default is 32, interop notes §27) dropped the node's packet as too old
//! (RFC 4303 §3.4.3). So a tunnel packet waits here unsealed and takes its number when it
//! is polled; [`Node::poll_transmit_then`] also sends it inside the SA's turn
//! (`dmvpn_esp::OutboundSa::turn`), so no worker's packet gets between the number and the
//! wire.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use dmvpn_dataplane::Outbound;
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;

use crate::{Node, Transmit};

/// One queued datagram.
pub(crate) enum Queued {
    /// Ready as it is: IKE, NAT keepalives, never ESP (`queue_transmit` refuses it), so every
    /// ESP datagram polled has gone through `send_esp`.
    Ready(Transmit),
    /// An inner packet (GRE payload `protocol`) for `nbma`, which had an SA when it was
    /// queued at `at`; sealed when polled.
    Tunnel {
        nbma: Ipv4Addr,
        protocol: EtherType,
        buf: PacketBuf,
        at: Instant,
    },
}

impl Node {
    /// The next datagram to send. A tunnel packet is sealed now; the caller sends it after
    /// the SA's turn is given up, so a worker's packet may still get ahead of it:
    /// [`Self::poll_transmit_then`] closes that gap.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit_then(|_, _, _| {})
    }

    /// [`Self::poll_transmit`], calling `send_esp(to, udp_encap, packet)` for an ESP
    /// datagram while its SA's turn is held, so it goes on the wire in its number's place.
    /// The datagram is returned afterwards as well (the caller sends only what `send_esp`
    /// was not called for). `send_esp` must not seal to the same SA: the turn is not
    /// reentrant.
    #[must_use]
    pub fn poll_transmit_then(
        &mut self,
        mut send_esp: impl FnMut(SocketAddrV4, bool, &PacketBuf),
    ) -> Option<Transmit> {
        loop {
            let (nbma, protocol, mut buf, at) = match self.transmits.pop_front()? {
                Queued::Ready(t) => return Some(t),
                Queued::Tunnel {
                    nbma,
                    protocol,
                    buf,
                    at,
                } => (nbma, protocol, buf, at),
            };
            if !self.master.paths.contains_key(&nbma) {
                // `drive` requeues these (`requeue_orphans`) before it returns, and the
                // paths change only in `drive`; should one get here all the same, it waits
                // for the next SA.
                debug_assert!(false, "a queued tunnel packet lost its SA outside drive");
                self.send_tunnel(at, nbma, protocol, buf);
                continue;
            }
            let mut to = None;
            self.master
                .seal_to_then(nbma, protocol, &mut buf, |sealed, out| {
                    if let Outbound::Send {
                        nbma,
                        port,
                        udp_encap,
                    } = out
                    {
                        let dst = SocketAddrV4::new(nbma, port);
                        send_esp(dst, udp_encap, sealed);
                        to = Some((dst, udp_encap));
                    }
                });
            // Otherwise dropped (counted by the tables), e.g. the SA ran out of numbers.
            if let Some((to, udp_encap)) = to {
                return Some(Transmit::Esp { to, udp_encap, buf });
            }
        }
    }

    /// Queues an inner packet for `nbma`, whose SA exists: it is sealed when polled.
    pub(crate) fn queue_tunnel(
        &mut self,
        now: Instant,
        nbma: Ipv4Addr,
        protocol: EtherType,
        buf: PacketBuf,
    ) {
        self.transmits.push_back(Queued::Tunnel {
            nbma,
            protocol,
            buf,
            at: now,
        });
    }

    /// Moves the queued tunnel packets whose peer has no SA any more into the SA queue
    /// (starting IKE toward the peer); returns whether there were any.
    pub(crate) fn requeue_orphans(&mut self, now: Instant) -> bool {
        let paths = &self.master.paths;
        if !self
            .transmits
            .iter()
            .any(|q| matches!(q, Queued::Tunnel { nbma, .. } if !paths.contains_key(nbma)))
        {
            return false;
        }
        let queued = std::mem::take(&mut self.transmits);
        for q in queued {
            match q {
                Queued::Tunnel {
                    nbma,
                    protocol,
                    buf,
                    ..
                } if !self.master.paths.contains_key(&nbma) => {
                    self.send_tunnel(now, nbma, protocol, buf);
                }
                q => self.transmits.push_back(q),
            }
        }
        true
    }

    /// Queues a datagram that is ready as it is.
    pub(crate) fn queue_transmit(&mut self, t: Transmit) {
        if matches!(t, Transmit::Esp { .. }) {
            debug_assert!(false, "ESP is queued unsealed, with queue_tunnel");
            return;
        }
        self.transmits.push_back(Queued::Ready(t));
    }
}
