//! Why a packet to a destination goes where it goes (`dmvpnctl explain`): the same route →
//! next hop → NHRP mapping → path steps [`Tables::outbound`] takes, reported instead of
//! carried out. Both go through [`Tables::next_hop_of`], so the answer cannot drift from what
//! the workers do; `tests/explain.rs` also checks every verdict against `outbound` itself.

use std::net::Ipv4Addr;

use crate::routes::{Route, RouteTable};
use crate::{Role, Tables, is_multicast_or_broadcast};

/// What the dataplane does with a packet to the destination, in the order it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Multicast or broadcast: one copy to each NBMA of [`Tables::multicast`].
    Multicast,
    /// No NBMA address (a hub without a mapping for the next hop): dropped as
    /// `no_mapping`.
    NoMapping,
    /// An NBMA address without an outbound SA: the packet waits in the SA queue while IKE
    /// comes up.
    NeedSa,
    /// Sealed and sent on the outbound SA of the NBMA address.
    Send,
}

/// The outbound SA a packet would be sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathInfo {
    /// SPI of the outbound SA (the peer chose it).
    pub spi_out: u32,
    /// ESP in UDP (NAT-T) rather than raw protocol 50.
    pub udp_encap: bool,
    /// Destination UDP port when `udp_encap`.
    pub port: u16,
}

/// The dataplane's decision for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub forwarding: Forwarding,
    /// The tunnel route that matched; `None` when the mirrored route table has none (the
    /// kernel does not route the destination into the tunnel device at all, so no packet to
    /// it reaches the dataplane; the rest of the decision says what would happen if one did).
    pub route: Option<Route>,
    /// The tunnel address the packet goes to next (the route's gateway, else the
    /// destination itself).
    pub next_hop: Ipv4Addr,
    /// The NBMA address of the next hop's NHRP mapping, when it has one.
    pub mapping: Option<Ipv4Addr>,
    /// No mapping for the next hop, so a spoke sends to its NHS ([`Tables::default_nbma`]).
    pub via_default_nhs: bool,
    /// Where the packet goes on the underlay (post-NAT when known); `None` when nowhere.
    pub nbma: Option<Ipv4Addr>,
    /// The outbound SA toward `nbma`, when there is one.
    pub path: Option<PathInfo>,
}

impl Tables {
    /// The route and next hop of `dst` (shared with [`Tables::nbma_for`]).
    pub(crate) fn next_hop_of(routes: &RouteTable, dst: Ipv4Addr) -> (Option<&Route>, Ipv4Addr) {
        let route = routes.lookup(dst);
        (route, route.map_or(dst, |r| r.next_hop(dst)))
    }

    /// What [`Tables::outbound`] would do with a packet to `dst`, without touching any
    /// state (a shortcut's "used" mark is left alone, nothing is counted).
    pub fn explain(&self, routes: &RouteTable, dst: Ipv4Addr) -> Decision {
        let (route, next_hop) = Self::next_hop_of(routes, dst);
        let mapping = self.mappings.get(&next_hop).map(|m| m.nbma);
        let via_default_nhs = mapping.is_none() && self.tunnel.role == Role::Spoke;
        let nbma = mapping.or(if via_default_nhs {
            self.default_nbma
        } else {
            None
        });
        let path = nbma.and_then(|n| self.paths.get(&n)).map(|p| PathInfo {
            spi_out: p.out_sa.spi().0,
            udp_encap: p.udp_encap,
            port: p.port,
        });
        let forwarding = if is_multicast_or_broadcast(dst, &self.tunnel) {
            Forwarding::Multicast
        } else if nbma.is_none() {
            Forwarding::NoMapping
        } else if path.is_none() {
            Forwarding::NeedSa
        } else {
            Forwarding::Send
        };
        Decision {
            forwarding,
            route: route.copied(),
            next_hop,
            mapping,
            via_default_nhs: via_default_nhs && nbma.is_some(),
            nbma,
            path,
        }
    }
}
