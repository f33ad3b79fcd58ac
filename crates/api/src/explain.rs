//! `dmvpnctl explain DEST`: why traffic to a destination goes where it goes — the tunnel route
//! and its source, the next hop and its NHRP entry, the NBMA address, the outbound SA the
//! dataplane seals with, the peer's IKE and Child SAs (the types of `show sa`, so the JSON
//! agrees), the last NHRP event for the destination and the last error (docs/dmvpnctl.md,
//! "explain"). The daemon fills it from the dataplane's own decision (`Tables::explain`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::schema::{NhrpEntry, SCHEMA_VERSION, SaPeer};

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// What the dataplane does with a packet to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainForwarding {
    /// Sealed on the outbound SA to `nbma` and sent.
    Send,
    /// `nbma` has no outbound SA yet: packets wait in the SA queue while IKE comes up.
    NeedSa,
    /// No NBMA address for the next hop (a hub without an NHRP entry for it): dropped and
    /// counted as `no_mapping`.
    NoMapping,
    /// Multicast or broadcast: one copy to each address of `multicast_to`.
    Multicast,
    /// The kernel does not route the destination into the tunnel device (`kernel` says where
    /// instead), so such packets never reach dmvpnd.
    NoRoute,
}

impl ExplainForwarding {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::NeedSa => "need_sa",
            Self::NoMapping => "no_mapping",
            Self::Multicast => "multicast",
            Self::NoRoute => "no_route",
        }
    }
}

/// The tunnel route that matched, from the dataplane's mirror of the kernel's routes on the
/// tunnel device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ExplainRoute {
    pub prefix: IpAddr,
    pub prefix_len: u8,
    /// `null` for an on-link route (the connected tunnel subnet).
    pub gateway: Option<IpAddr>,
    pub metric: u32,
    /// The kernel's protocol number (`ip route` "proto").
    pub protocol: u8,
    /// `connected`, `nhrp_shortcut`, `dmvpnd_static` (a configured `[[route]]`), or the
    /// protocol's iproute2 name: `kernel`, `boot`, `static`, `zebra`, `bgp`, `isis`, `ospf`,
    /// `rip`, `eigrp`; `other` for anything else.
    pub source: String,
}

/// The kernel's own route lookup for the destination (`ip route get`): whether it hands such
/// packets to the tunnel device at all. dmvpnd mirrors only the routes on the tunnel, so a
/// longer route on another device, or policy routing, shows here and not in `route`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ExplainKernel {
    /// `tunnel` (out of the tunnel device), `other_interface`, `local` (one of this host's
    /// addresses or broadcasts), `unreachable` (an unreachable, blackhole or prohibit route, or
    /// no route at all), `failed` (no answer: the mirror alone decided).
    pub lookup: String,
    /// The route's type as the kernel reports it (`unicast`, `local`, `multicast`, …); `null`
    /// without a route.
    pub route_type: Option<String>,
    /// The output interface's index (`ip link`); `null` without one.
    pub interface_index: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// The kernel's reason for refusing the lookup, or why it did not answer; else `null`.
    pub error: Option<String>,
}

/// The outbound SA the dataplane seals packets to `nbma` with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ExplainPath {
    /// `0x` and 8 lowercase hex digits, as `spi_out` in `show sa`.
    pub spi_out: String,
    /// ESP in UDP (NAT-T).
    pub udp_encap: bool,
    /// UDP destination port when `udp_encap`, else 0.
    pub port: u16,
}

/// The last NHRP event about the destination (or the NBMA it goes to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ExplainNhrpEvent {
    /// `resolution_requested` (after a traffic indication), `shortcut_installed`,
    /// `shortcut_withdrawn`, `resolution_failed`, `error_indication`.
    pub kind: String,
    /// The prefix the event was about (the resolution target as a /32); `null` for an
    /// error indication.
    pub prefix: Option<IpAddr>,
    pub prefix_len: Option<u8>,
    /// The shortcut's next hop; else `null`.
    pub next_hop: Option<IpAddr>,
    /// The NHS a resolution was requested from, the shortcut's NBMA address, or who sent
    /// the error indication; else `null`.
    pub nbma: Option<IpAddr>,
    /// The CIE code of a refused resolution or the error indication's code (names, numbers
    /// for unknown codes); `null` for a resolution that timed out and for shortcuts.
    pub code: Option<String>,
    pub age_secs: u64,
}

/// The last error on the way to the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ExplainError {
    /// `ike_setup` (the last IKE setup toward `peer` failed, none succeeded since),
    /// `nhrp_resolution` (the
    /// resolution of the destination failed), `nhrp_error_indication` (`peer` sent one).
    pub source: String,
    /// The peer's NBMA address; `null` for a resolution failure.
    pub peer: Option<IpAddr>,
    /// `authentication_failed`, `refused`, `timeout` (IKE, resolution); the CIE or error
    /// code otherwise.
    pub reason: String,
    /// Seconds since it happened; `null` where it is not recorded (IKE setups).
    pub age_secs: Option<u64>,
    /// IKE only: seconds until the next attempt is allowed; `null` when not held down.
    pub retry_in_secs: Option<u64>,
}

/// `explain DEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ExplainReport {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub interface: String,
    pub destination: IpAddr,
    pub forwarding: ExplainForwarding,
    /// The kernel's lookup: does it send the destination into the tunnel at all.
    pub kernel: ExplainKernel,
    /// The longest tunnel route that matches, from dmvpnd's mirror of the kernel's routes on
    /// the tunnel device; `null` when none does.
    pub route: Option<ExplainRoute>,
    /// The tunnel address packets go to next; `null` for `no_route` and `multicast`.
    pub next_hop: Option<IpAddr>,
    /// The next hop has no NHRP mapping, so (on a spoke) packets go to the NHS.
    pub via_nhs_default: bool,
    /// Where packets go on the underlay (post-NAT when known); `null` when nowhere.
    pub nbma: Option<IpAddr>,
    /// The next hop's NHRP cache entry (its /32; pre- and post-NAT NBMA, flags, expiry).
    pub nhrp_entry: Option<NhrpEntry>,
    /// The longest NHRP shortcut entry covering the destination.
    pub nhrp_shortcut: Option<NhrpEntry>,
    /// The outbound SA the dataplane uses toward `nbma`.
    pub outbound: Option<ExplainPath>,
    /// `nbma` as `show sa --peer NBMA` lists it: NHRP state, IKE SA, Child SAs.
    pub peer: Option<SaPeer>,
    /// `multicast`: the NBMA addresses each copy goes to.
    pub multicast_to: Vec<IpAddr>,
    pub last_nhrp_event: Option<ExplainNhrpEvent>,
    pub last_error: Option<ExplainError>,
    /// Records the daemon's event history (4,096 destinations, 4,096 peers) evicted since it
    /// started: when non-zero, an older event for this destination may have been forgotten.
    pub history_evicted: u64,
}
