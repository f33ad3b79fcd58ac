//! What goes in and out of a [`crate::Node`].

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dmvpn_crypto::Secret;
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;

/// Slow-path work the dataplane hands to the node.
#[derive(Debug)]
pub enum SlowPath {
    /// No SA to `nbma` yet: queue this packet (GRE payload of type `protocol`) until IKE
    /// brings one up.
    NeedSa {
        /// Peer NBMA address.
        nbma: Ipv4Addr,
        /// GRE protocol of the payload.
        protocol: EtherType,
        /// The payload, unencapsulated.
        buf: PacketBuf,
    },
    /// An NHRP packet arrived inside ESP from `peer`.
    Nhrp {
        /// NBMA address of the SA's peer.
        peer: Ipv4Addr,
        /// The NHRP packet.
        bytes: Vec<u8>,
    },
    /// ESP from `from` (in UDP when `encap`; raw ESP has port 0) for an SPI no inbound SA
    /// has: a peer that still holds an SA we lost (we restarted). The daemon rate-limits
    /// these per source.
    UnknownSpi {
        /// Where the packet came from.
        from: SocketAddrV4,
        /// UDP-encapsulated (RFC 3948).
        encap: bool,
        /// The packet's SPI.
        spi: u32,
    },
    /// Authenticated ESP-in-UDP from `from`, whose port is not the one we send that peer's
    /// ESP to ([`dmvpn_dataplane::Tables::path_port_moved`]): the NAT in front of it gave it a
    /// new mapping. The daemon rate-limits these per source.
    NatMapping {
        /// The peer the packet's SA belongs to (`Inbound`'s `peer`, from the SPI).
        peer: Ipv4Addr,
        /// Where the packet came from.
        from: SocketAddrV4,
    },
    /// Hub: a packet from `peer` enters and leaves over the tunnel (phase 3 redirect).
    Redirect {
        /// NBMA address of the source.
        peer: Ipv4Addr,
        /// The start of the packet (IP header + 8 bytes).
        quote: Vec<u8>,
    },
}

/// A datagram to send.
#[derive(Debug)]
pub enum Transmit {
    /// An IKE message; on the NAT-T port (`natt`) the sender prefixes the four-byte non-ESP
    /// marker (RFC 3948 §2.2).
    Ike {
        /// Destination.
        to: SocketAddrV4,
        /// Send from UDP 4500 with the non-ESP marker, rather than from UDP 500.
        natt: bool,
        /// The IKE message.
        bytes: Vec<u8>,
    },
    /// A sealed ESP packet (GRE inside): UDP-encapsulated to `to` (RFC 3948), or raw IP
    /// protocol 50 to its address.
    Esp {
        /// Destination (the port matters only with `udp_encap`).
        to: SocketAddrV4,
        /// ESP-in-UDP.
        udp_encap: bool,
        /// The ESP packet.
        buf: PacketBuf,
    },
    /// An RFC 3948 §4 NAT keepalive (one 0xFF byte) from UDP 4500.
    NatKeepalive {
        /// Destination.
        to: SocketAddrV4,
    },
}

/// A kernel route into the tunnel to add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteUpdate {
    /// Add (or replace) the route.
    Install {
        /// Network.
        prefix: Ipv4Addr,
        /// Length.
        prefix_len: u8,
        /// Tunnel next hop; `None` for on-link.
        via: Option<Ipv4Addr>,
        /// Kernel metric ([`crate::SHORTCUT_METRIC`] or [`crate::STATIC_METRIC`]).
        metric: u32,
    },
    /// Remove the route.
    Withdraw {
        /// Network.
        prefix: Ipv4Addr,
        /// Length.
        prefix_len: u8,
        /// Tunnel next hop.
        via: Option<Ipv4Addr>,
        /// Kernel metric.
        metric: u32,
    },
}

/// Keys for the Wireshark key export (`[debug] key-export`), emitted only when it is on.
#[derive(Debug, Clone)]
pub enum KeyExport {
    /// An IKE SA's encryption keys (AES-GCM, no integrity key).
    Ike {
        /// Initiator SPI.
        spi_i: u64,
        /// Responder SPI.
        spi_r: u64,
        /// SK_ei.
        sk_ei: Secret,
        /// SK_er.
        sk_er: Secret,
    },
    /// One direction of a Child SA; addresses are `None` under UDP encapsulation (Wireshark
    /// then matches any address).
    Esp {
        /// Source address.
        src: Option<IpAddr>,
        /// Destination address.
        dst: Option<IpAddr>,
        /// SPI.
        spi: u32,
        /// Key ‖ salt.
        key: Secret,
    },
}

/// What happened, for the daemon (key export) and for tests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A Child SA to `peer` carries traffic.
    ChildSaInstalled {
        /// Peer NBMA address.
        peer: Ipv4Addr,
        /// Our inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
        /// ESP-in-UDP.
        udp_encap: bool,
        /// It replaces an older Child SA (rekey).
        rekey: bool,
    },
    /// A Child SA to `peer` is gone.
    ChildSaDeleted {
        /// Peer NBMA address.
        peer: Ipv4Addr,
        /// Our inbound SPI.
        spi_in: u32,
    },
    /// Every SA to `peer` is gone (DPD, the peer's delete, an operator's clear).
    PeerDown {
        /// Peer NBMA address.
        peer: Ipv4Addr,
    },
    /// IKE toward `peer` failed; no new attempt for `hold_down` (`None` for an NHS, which
    /// NHRP's registration schedule paces).
    SetupFailed {
        /// Peer NBMA address.
        peer: Ipv4Addr,
        /// How long no new attempt is made.
        hold_down: Option<Duration>,
    },
    /// A shortcut route is in place.
    ShortcutInstalled {
        /// Network.
        prefix: Ipv4Addr,
        /// Length.
        prefix_len: u8,
        /// Tunnel next hop.
        via: Ipv4Addr,
    },
    /// A shortcut route went away.
    ShortcutWithdrawn {
        /// Network.
        prefix: Ipv4Addr,
        /// Length.
        prefix_len: u8,
        /// Tunnel next hop.
        via: Ipv4Addr,
    },
    /// Spoke: registered with the NHS at `nbma`.
    NhsUp {
        /// NHS NBMA address.
        nbma: IpAddr,
    },
    /// Spoke: the registration with the NHS at `nbma` lapsed.
    NhsDown {
        /// NHS NBMA address.
        nbma: IpAddr,
    },
    /// Hub: a spoke registered.
    PeerRegistered {
        /// Its tunnel address.
        protocol_addr: IpAddr,
        /// Its NBMA address.
        nbma: IpAddr,
    },
    /// Hub: a registration went away.
    PeerUnregistered {
        /// Its tunnel address.
        protocol_addr: IpAddr,
        /// Its NBMA address.
        nbma: IpAddr,
    },
    /// Spoke: a new shortcut carries traffic. When each stage happened (the `now` of the calls
    /// that saw them): its Resolution Request first sent (at once on a Traffic Indication), the
    /// reply, the SA to the next hop up (the reply's instant when one was up already), and the
    /// route handed out ([`Node::poll_routes`](crate::Node::poll_routes) right after).
    ShortcutTimed {
        /// Network.
        prefix: Ipv4Addr,
        /// Length.
        prefix_len: u8,
        /// Tunnel next hop.
        via: Ipv4Addr,
        /// Resolution Request first sent.
        requested: std::time::Instant,
        /// Resolution Reply received.
        replied: std::time::Instant,
        /// SA to the next hop up; the route is installed at the same instant.
        sa_up: std::time::Instant,
    },
    /// Spoke: the reply to one of our NHRP requests, `rtt` after the request was first sent.
    NhrpAnswered {
        /// Registration or resolution.
        kind: dmvpn_nhrp::RequestKind,
        /// Registration: the NHS's NBMA address; resolution: the address resolved.
        target: IpAddr,
        /// From the first transmission to the reply.
        rtt: Duration,
        /// The reply's code was success (a refused registration is `false`).
        accepted: bool,
    },
    /// Spoke: a registration with the NHS at `nbma` went unanswered through its whole
    /// back-off; the SA to it is reset.
    RegistrationTimedOut {
        /// NHS NBMA address.
        nbma: IpAddr,
    },
    /// Dead peer detection (RFC 7296 §2.4) gave up on an IKE SA with `peer`. `stale`: the
    /// peer has a newer SA that stays up (a NAT mapping changed), so only the old one went.
    DpdDead {
        /// Peer NBMA address.
        peer: Ipv4Addr,
        /// Only a stale SA died; the peer is up.
        stale: bool,
    },
    /// An IKE SA was rekeyed (RFC 7296 §2.18), by either end.
    IkeSaRekeyed {
        /// Peer NBMA address (post-NAT).
        peer: Ipv4Addr,
    },
    /// Two IKE SAs with `peer`, one started by each end at once, were settled on one.
    CrossedSetup {
        /// Peer NBMA address.
        peer: Ipv4Addr,
    },
    /// Keys to export for Wireshark.
    Keys(KeyExport),
}

/// Errors from building a node or from commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// DMVPN peers tell tunnels apart by the GRE key (RFC 2890 §2.1).
    #[error("tunnel.gre-key is required: DMVPN peers tell tunnels apart by the GRE key")]
    NoGreKey,
    /// The IKE engine has no such group.
    #[error("unsupported DH group {0}")]
    UnsupportedDhGroup(u16),
    /// The NHRP engine refused its configuration.
    #[error("NHRP configuration: {0}")]
    Nhrp(String),
    /// A reload changed what only a restart can apply.
    #[error("not reloaded: {} changed; restart dmvpnd to apply", .0.join(", "))]
    RestartRequired(Vec<&'static str>),
    /// `clear sa` for a peer without an IKE SA.
    #[error("no IKE SA with {0}")]
    NoIkeSa(IpAddr),
    /// `clear child-sa` for a peer without a Child SA.
    #[error("no Child SA with {0}")]
    NoChildSa(IpAddr),
}
