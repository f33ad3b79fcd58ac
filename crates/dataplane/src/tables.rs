//! The snapshot the control plane publishes for the dataplane: routes, NHRP mappings,
//! outbound paths with their SAs, inbound SAs by SPI, and the multicast list.
//!
//! The maps are [`SnapMap`]s: the control plane edits its master copy in place and
//! publishes a clone, which shares every shard the next edit leaves alone, so one
//! registration on a hub with 10,000 spokes copies tens of entries, not 10,000.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dmvpn_esp::{InboundSa, OutboundSa, SaTable, Spi};
use dmvpn_snapmap::{SnapMap, SnapSet};

use crate::Counters;

/// The router's role in the DMVPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Next hop client: unmapped destinations go to the NHS.
    Spoke,
    /// Next hop server: unmapped destinations are dropped.
    Hub,
}

/// Per-tunnel constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelParams {
    /// Spoke or hub.
    pub role: Role,
    /// GRE key on every packet (RFC 2890), e.g. 100.
    pub gre_key: u32,
    /// Our tunnel address.
    pub address: Ipv4Addr,
    /// Tunnel prefix length.
    pub prefix_len: u8,
    /// TCP MSS clamp (`ip tcp adjust-mss`), both directions.
    pub adjust_mss: Option<u16>,
    /// Hub: send NHRP traffic indications for hairpinned traffic (phase 3).
    pub redirect: bool,
}

impl TunnelParams {
    /// The tunnel subnet's directed broadcast address.
    pub const fn broadcast(&self) -> Ipv4Addr {
        let host_bits = match self.prefix_len {
            0 => u32::MAX,
            l if l >= 32 => 0,
            l => u32::MAX >> l,
        };
        Ipv4Addr::from_bits(self.address.to_bits() | host_bits)
    }
}

/// An NHRP mapping: tunnel (protocol) address → NBMA address.
#[derive(Debug)]
pub struct Mapping {
    /// Where to send (post-NAT when known).
    pub nbma: Ipv4Addr,
    used: AtomicBool,
}

impl Mapping {
    /// A mapping to `nbma`.
    pub fn new(nbma: Ipv4Addr) -> Arc<Self> {
        Arc::new(Self {
            nbma,
            used: AtomicBool::new(false),
        })
    }

    pub(crate) fn mark_used(&self) {
        // A relaxed store of `true` costs nothing measurable and keeps the hot path free
        // of channels: the control plane polls `take_used` to refresh shortcuts.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Whether traffic used this mapping since the last call; clears the flag.
    pub fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }
}

/// How to reach a peer's NBMA address: its outbound SA and the encapsulation.
#[derive(Debug, Clone)]
pub struct PeerPath {
    /// The current outbound SA.
    pub out_sa: Arc<OutboundSa>,
    /// UDP port for ESP-in-UDP (4500, or the peer's NAT-mapped port).
    pub port: u16,
    /// ESP in UDP (a NAT was detected) or raw IP protocol 50.
    pub udp_encap: bool,
}

/// One immutable snapshot of everything the per-packet path reads.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Tunnel constants.
    pub tunnel: TunnelParams,
    /// NHRP mappings by tunnel address, shared between snapshots so "used" marks persist.
    pub mappings: SnapMap<Ipv4Addr, Arc<Mapping>>,
    /// Spoke: the NHS's NBMA address, for destinations without a mapping.
    pub default_nbma: Option<Ipv4Addr>,
    /// Outbound paths by peer NBMA address.
    pub paths: SnapMap<Ipv4Addr, PeerPath>,
    /// Inbound SAs by SPI.
    pub inbound: SaTable,
    /// Which peer each inbound SPI belongs to.
    pub spi_peer: SnapMap<Spi, Ipv4Addr>,
    /// NBMA addresses that receive multicast (spoke: NHS with `multicast`; hub: every
    /// registered spoke).
    pub multicast: SnapSet<Ipv4Addr>,
    /// Counters, shared by every snapshot.
    pub counters: Arc<Counters>,
}

impl Tables {
    /// Empty tables for a tunnel.
    pub fn new(tunnel: TunnelParams) -> Self {
        Self {
            tunnel,
            mappings: SnapMap::new(),
            default_nbma: None,
            paths: SnapMap::new(),
            inbound: SaTable::new(),
            spi_peer: SnapMap::new(),
            multicast: SnapSet::new(),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Installs an inbound SA for `peer`.
    pub fn add_inbound(&mut self, peer: Ipv4Addr, sa: Arc<InboundSa>) {
        self.spi_peer.insert(sa.spi(), peer);
        self.inbound.insert(sa);
    }

    /// Removes an inbound SA.
    pub fn remove_inbound(&mut self, spi: Spi) {
        self.spi_peer.remove(&spi);
        self.inbound.remove(spi);
    }

    /// Whether authenticated ESP-in-UDP from `peer` came from another port than the one we
    /// send to: the NAT in front of the peer gave it a new mapping (RFC 3948 §2.2 leaves
    /// the source port to the NAT). One lookup; only asked for UDP-encapsulated packets.
    pub fn path_port_moved(&self, peer: Ipv4Addr, port: u16) -> bool {
        self.paths
            .get(&peer)
            .is_some_and(|p| p.udp_encap && p.port != port)
    }
}
