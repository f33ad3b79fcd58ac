//! The operator's view of the daemon: the stable JSON schema behind `dmvpnctl show … --json`
//! (documented field by field in docs/dmvpnctl.md), builders that fill it from the engines'
//! read-only views, and text renderers laid out like the IOS commands operators already know
//! (`show dmvpn`, `show crypto ipsec sa`, `show ip nhrp`, `show crypto ikev2 sa detailed`,
//! `show interfaces`).
//!
//! Stability: every report carries `schema_version` ([`SCHEMA_VERSION`]). Within one version
//! fields are only ever added, never renamed, removed or retyped, and absent values are `null`
//! rather than missing, so scripts can index fields without probing for them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dmvpn_crypto::PrfAlg;
use dmvpn_esp::SaCounters;
use dmvpn_ike::{ChildSaInfo, IkeSaInfo, Mode};
use dmvpn_nhrp::{CacheEntry, EntryKind, NhsState, NhsStatus};
use serde::{Deserialize, Serialize};

/// Version of the JSON schema; bumped only for an incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

// ---------------------------------------------------------------------------------------------
// Schema

/// `show sa`: one entry per peer, with its IKE SA and Child SAs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SaReport {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// Tunnel interface name.
    pub interface: String,
    pub peers: Vec<SaPeer>,
}

/// One peer in `show sa`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SaPeer {
    /// The peer's NBMA address as it claims it (NHRP), or the IKE peer address.
    pub nbma: IpAddr,
    /// The address packets really go to when a NAT rewrites it; `null` without NAT.
    pub post_nat_nbma: Option<IpAddr>,
    /// The peer's tunnel (protocol) address; `null` while NHRP has not learned it.
    pub tunnel_addr: Option<IpAddr>,
    pub nhrp_state: NhrpPeerState,
    /// The peer's current IKE SA (an established one when there is one); `null` if none.
    pub ike: Option<IkeSa>,
    /// Child SAs of all the peer's IKE SAs (two overlap during a rekey).
    pub children: Vec<ChildSa>,
}

/// NHRP's view of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NhrpPeerState {
    /// NHS (spoke): registered.
    Up,
    /// NHS (spoke): registration sent, no reply yet.
    Registering,
    /// NHS (spoke): waiting for the IPsec SA before registering.
    WaitingForSa,
    /// Hub: the peer registered with us.
    Registered,
    /// Spoke: learned by resolution (phase 3 shortcut).
    Resolved,
    /// Configured mapping.
    Static,
    /// No NHRP entry (an IKE SA only).
    None,
}

impl NhrpPeerState {
    /// True when NHRP has what it needs to forward to the peer.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            Self::Up | Self::Registered | Self::Resolved | Self::Static
        )
    }

    fn text(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Registering => "registering",
            Self::WaitingForSa => "waiting for SA",
            Self::Registered => "registered",
            Self::Resolved => "resolved",
            Self::Static => "static",
            Self::None => "none",
        }
    }
}

/// An IKE SA (`show sa` and `show ike`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct IkeSa {
    pub state: IkeState,
    /// The engine's own state name (diagnostic; not part of the stability promise).
    pub state_detail: String,
    /// Initiator SPI, 16 lowercase hex digits.
    pub spi_i: String,
    /// Responder SPI, 16 lowercase hex digits (zero until the responder answered).
    pub spi_r: String,
    /// We initiated this SA.
    pub initiator: bool,
    /// `aes-gcm-256`; `null` before negotiation.
    pub encryption: Option<String>,
    /// `sha256`, `sha384`, `sha512`; `null` before negotiation.
    pub prf: Option<String>,
    /// IANA Diffie-Hellman group number; `null` before negotiation.
    pub dh_group: Option<u16>,
    pub age_secs: u64,
    /// `null` unless established.
    pub rekey_in_secs: Option<u64>,
    /// Our address:port.
    pub local: SocketAddr,
    /// The peer's address:port as observed.
    pub remote: SocketAddr,
    /// The peer's authenticated identity; `null` before authentication.
    pub remote_id: Option<String>,
    /// A NAT is in front of us.
    pub nat_local: bool,
    /// A NAT is in front of the peer.
    pub nat_remote: bool,
    /// Number of Child SAs.
    pub child_count: u32,
}

/// IKE SA state, coarse and stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IkeState {
    Negotiating,
    Established,
    Deleting,
    Closed,
    /// A state this schema version does not know (see `state_detail`).
    Unknown,
}

impl IkeState {
    fn from_engine(name: &str) -> Self {
        match name {
            "ExpectSaInitResponse" | "ExpectAuthRequest" | "ExpectAuthResponse" => {
                Self::Negotiating
            }
            "Established" => Self::Established,
            "Deleting" => Self::Deleting,
            "Closed" => Self::Closed,
            _ => Self::Unknown,
        }
    }

    /// The IOS `show crypto ikev2 sa` status word.
    fn ios(self) -> &'static str {
        match self {
            Self::Negotiating => "IN-NEG",
            Self::Established => "READY",
            Self::Deleting => "DELETE",
            Self::Closed => "DELETED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// A Child (ESP) SA pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ChildSa {
    /// Inbound SPI, `0x` and 8 lowercase hex digits.
    pub spi_in: String,
    /// Outbound SPI, same form.
    pub spi_out: String,
    /// `transport`.
    pub mode: String,
    /// `esp-gcm-256`.
    pub transform: String,
    /// Extended sequence numbers.
    pub esn: bool,
    /// ESP in UDP 4500 (RFC 3948).
    pub udp_encap: bool,
    /// Packets opened and authenticated.
    pub packets_in: u64,
    /// Inner bytes of those packets.
    pub bytes_in: u64,
    /// Packets sealed.
    pub packets_out: u64,
    /// Inner bytes of those packets.
    pub bytes_out: u64,
    /// Inbound packets refused by the anti-replay window.
    pub replay_drops: u64,
    /// Inbound packets whose ICV did not verify.
    pub auth_failures: u64,
    pub age_secs: u64,
    /// `null` when no rekey is scheduled.
    pub rekey_in_secs: Option<u64>,
}

/// `show dmvpn`: the peer table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct DmvpnReport {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub interface: String,
    /// Our tunnel address with prefix length, e.g. `10.250.0.9/24`.
    pub tunnel_addr: String,
    pub nhrp_role: NhrpRole,
    pub peers: Vec<DmvpnPeer>,
}

/// NHRP role of this router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NhrpRole {
    Hub,
    Spoke,
}

/// One row of `show dmvpn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct DmvpnPeer {
    /// Where packets to the peer go (post-NAT when known).
    pub peer_nbma: IpAddr,
    pub peer_tunnel: Option<IpAddr>,
    /// NHRP entries with this NBMA address (`# Ent`).
    pub entries: u32,
    pub state: PeerState,
    /// Time in the current state; `null` if unknown.
    pub updn_secs: Option<u64>,
    /// IOS attribute letters: `S`, `D`, `N`, `T1`, `I` (see the legend).
    pub attrs: Vec<String>,
}

/// Tunnel state as IOS shows it, from the bottom of the stack up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PeerState {
    /// No IKE SA.
    Down,
    /// IKE SA being negotiated.
    Ike,
    /// IKE SA up, no Child SA yet.
    Ipsec,
    /// IPsec up, NHRP registration or resolution not complete.
    Nhrp,
    /// Everything up.
    Up,
}

impl PeerState {
    fn ios(self) -> &'static str {
        match self {
            Self::Down => "DOWN",
            Self::Ike => "IKE",
            Self::Ipsec => "IPSEC",
            Self::Nhrp => "NHRP",
            Self::Up => "UP",
        }
    }
}

/// `show nhrp`: the cache, the NHSs and the counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NhrpReport {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub interface: String,
    pub entries: Vec<NhrpEntry>,
    pub nhs: Vec<NhsEntry>,
    pub counters: NhrpCounters,
}

/// One NHRP cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NhrpEntry {
    pub protocol_addr: IpAddr,
    pub prefix_len: u8,
    /// Protocol next hop: the tunnel address of the peer that serves the prefix.
    pub next_hop: IpAddr,
    /// NBMA address as the peer claims it.
    pub nbma: IpAddr,
    /// NBMA address packets go to when it differs (NAT); else `null`.
    pub post_nat_nbma: Option<IpAddr>,
    pub kind: NhrpKind,
    /// Any of `unique`, `registered`, `used`, `nat`, in that order.
    pub flags: Vec<String>,
    /// Time since the entry was created.
    pub age_secs: u64,
    /// `null`: never expires.
    pub expires_in_secs: Option<u64>,
    pub holding_time_secs: u64,
}

/// How an entry got into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NhrpKind {
    Static,
    Dynamic,
    Nhs,
    Shortcut,
    Local,
    /// Resolution outstanding (reserved: the current engine does not list these).
    Incomplete,
}

/// One NHS (spoke).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NhsEntry {
    /// `null` until learned, when not configured.
    pub protocol_addr: Option<IpAddr>,
    pub nbma: IpAddr,
    pub multicast: bool,
    /// `up`, `registering` or `waiting_for_sa`.
    pub state: NhrpPeerState,
    pub expires_in_secs: Option<u64>,
    /// Current registration retransmission wait; 0 when none.
    pub retry_wait_secs: u64,
}

/// NHRP packet counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NhrpCounters {
    /// Received, by packet type name (all nine keys always present).
    pub rx: BTreeMap<String, u64>,
    /// Sent, by packet type name.
    pub tx: BTreeMap<String, u64>,
    pub auth_failures: u64,
    /// Drops by reason name (only reasons that occurred).
    pub drops: BTreeMap<String, u64>,
}

/// `show ike`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct IkeReport {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub sas: Vec<IkeSa>,
}

/// `show interface`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct InterfaceReport {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub interface: String,
    pub tunnel_addr: String,
    pub mtu: u32,
    /// ESP packets handed to the underlay.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Inner packets that passed ESP and GRE.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Drops by reason name; every dataplane reason is present, zero or not.
    pub drops: BTreeMap<String, u64>,
}

/// The answer to `clear …` and `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Ack {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// What was done, for the operator.
    pub message: String,
}

impl Ack {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builders: engine views → schema. Each takes `now` so every age in one report is measured at
// the same instant.

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

fn prf_name(p: PrfAlg) -> &'static str {
    match p {
        PrfAlg::HmacSha256 => "sha256",
        PrfAlg::HmacSha384 => "sha384",
        PrfAlg::HmacSha512 => "sha512",
    }
}

/// An IKE SA from `Endpoint::ike_sas(now)`.
pub fn ike_sa(info: &IkeSaInfo) -> IkeSa {
    IkeSa {
        state: IkeState::from_engine(info.state.as_str()),
        state_detail: info.state.to_string(),
        spi_i: format!("{:016x}", info.spi_i),
        spi_r: format!("{:016x}", info.spi_r),
        initiator: info.initiator,
        encryption: info.suite.map(|s| format!("aes-gcm-{}", s.encr_key_bits)),
        prf: info.suite.map(|s| prf_name(s.prf).to_owned()),
        dh_group: info.suite.map(|s| s.dh.ike_group()),
        age_secs: secs(info.age),
        rekey_in_secs: info.rekey_in.map(secs),
        local: info.local,
        remote: info.remote,
        remote_id: info.remote_id.as_ref().map(ToString::to_string),
        nat_local: info.nat_local,
        nat_remote: info.nat_remote,
        child_count: u32::try_from(info.children.len()).unwrap_or(u32::MAX),
    }
}

/// A Child SA from `IkeSaInfo::children` with the ESP counters of its inbound SA
/// (`InboundSa::stats().snapshot()`) and outbound SA (`OutboundSa::stats().snapshot()`);
/// `None` when the dataplane has no such SA (yet, or any more): counted as zero.
pub fn child_sa(
    info: &ChildSaInfo,
    inbound: Option<SaCounters>,
    outbound: Option<SaCounters>,
) -> ChildSa {
    let i = inbound.unwrap_or_default();
    let o = outbound.unwrap_or_default();
    ChildSa {
        spi_in: format!("0x{:08x}", info.spi_in),
        spi_out: format!("0x{:08x}", info.spi_out),
        mode: match info.mode {
            Mode::Transport => "transport".to_owned(),
        },
        // The ESP crate implements exactly one transform (AES-256-GCM-16, RFC 4106).
        transform: "esp-gcm-256".to_owned(),
        esn: info.esn,
        udp_encap: info.udp_encap,
        packets_in: i.packets,
        bytes_in: i.bytes,
        packets_out: o.packets,
        bytes_out: o.bytes,
        replay_drops: i.replay_drops,
        auth_failures: i.auth_failures,
        age_secs: secs(info.age),
        rekey_in_secs: info.rekey_in.map(secs),
    }
}

fn nhrp_kind(k: EntryKind) -> NhrpKind {
    match k {
        EntryKind::Static => NhrpKind::Static,
        EntryKind::Dynamic => NhrpKind::Dynamic,
        EntryKind::Nhs => NhrpKind::Nhs,
        EntryKind::Shortcut => NhrpKind::Shortcut,
        EntryKind::Local => NhrpKind::Local,
    }
}

/// A cache entry from `Engine::cache_entries(now)`.
pub fn nhrp_entry(e: &CacheEntry, now: Instant) -> NhrpEntry {
    let mut flags = Vec::new();
    for (on, name) in [
        (e.flags.unique, "unique"),
        (e.flags.registered, "registered"),
        (e.flags.used, "used"),
        (e.flags.nat, "nat"),
    ] {
        if on {
            flags.push(name.to_owned());
        }
    }
    NhrpEntry {
        protocol_addr: e.protocol_addr,
        prefix_len: e.prefix_len,
        next_hop: e.next_hop,
        nbma: e.nbma,
        post_nat_nbma: e.post_nat_nbma.filter(|p| *p != e.nbma),
        kind: nhrp_kind(e.kind),
        flags,
        age_secs: secs(now.saturating_duration_since(e.created)),
        expires_in_secs: e.expires.map(|x| secs(x.saturating_duration_since(now))),
        holding_time_secs: secs(e.holding_time),
    }
}

fn nhs_state(s: NhsState) -> NhrpPeerState {
    match s {
        NhsState::Up => NhrpPeerState::Up,
        NhsState::Registering => NhrpPeerState::Registering,
        NhsState::WaitingForSa => NhrpPeerState::WaitingForSa,
    }
}

/// An NHS from `Engine::nhs_status(now)`.
pub fn nhs_entry(s: &NhsStatus, now: Instant) -> NhsEntry {
    NhsEntry {
        protocol_addr: s.protocol_addr,
        nbma: s.nbma_addr,
        multicast: s.multicast,
        state: nhs_state(s.state),
        expires_in_secs: s.expires.map(|x| secs(x.saturating_duration_since(now))),
        retry_wait_secs: secs(s.retry_wait),
    }
}

/// NHRP packet type names by counter index (RFC 2332 §5 type codes 1–8; 0 collects others).
const NHRP_TYPES: [&str; 9] = [
    "unknown",
    "resolution_request",
    "resolution_reply",
    "registration_request",
    "registration_reply",
    "purge_request",
    "purge_reply",
    "error_indication",
    "traffic_indication",
];

fn nhrp_drop_name(r: dmvpn_nhrp::DropReason) -> &'static str {
    use dmvpn_nhrp::DropReason as R;
    match r {
        R::Malformed => "malformed",
        R::Checksum => "checksum",
        R::AuthFailure => "auth_failure",
        R::UnsupportedAddressFamily => "unsupported_address_family",
        R::HopCountExceeded => "hop_count_exceeded",
        R::LoopDetected => "loop_detected",
        R::UnexpectedReply => "unexpected_reply",
        R::UnhandledType => "unhandled_type",
        R::QueueFull => "queue_full",
        R::QueueExpired => "queue_expired",
        R::RateLimited => "rate_limited",
        R::NoRoute => "no_route",
        R::BadInnerPacket => "bad_inner_packet",
        R::EncodeFailed => "encode_failed",
    }
}

/// NHRP counters from `Engine::counters()`.
pub fn nhrp_counters(c: &dmvpn_nhrp::Counters) -> NhrpCounters {
    let by_type = |a: &[u64; 9]| {
        NHRP_TYPES
            .iter()
            .zip(a.iter())
            .map(|(n, v)| ((*n).to_owned(), *v))
            .collect()
    };
    NhrpCounters {
        rx: by_type(&c.rx),
        tx: by_type(&c.tx),
        auth_failures: c.auth_failures,
        drops: c
            .drops
            .iter()
            .map(|(r, v)| (nhrp_drop_name(*r).to_owned(), *v))
            .collect(),
    }
}

/// `show interface` from the dataplane counters. `extra_drops` adds drops the daemon counts
/// itself (for example `("tun_no_route", n)`); names must be snake_case and not collide with
/// dataplane reason names.
pub fn interface_report(
    interface: &str,
    tunnel_addr: &str,
    mtu: u32,
    c: &dmvpn_dataplane::Counters,
    extra_drops: &[(&str, u64)],
) -> InterfaceReport {
    let (tx_packets, tx_bytes) = c.tx_totals();
    let (rx_packets, rx_bytes) = c.rx_totals();
    let mut drops: BTreeMap<String, u64> = dmvpn_dataplane::DropReason::ALL
        .iter()
        .map(|r| (r.name().to_owned(), c.drops(*r)))
        .collect();
    for (name, v) in extra_drops {
        *drops.entry((*name).to_owned()).or_default() += v;
    }
    InterfaceReport {
        schema_version: SCHEMA_VERSION,
        interface: interface.to_owned(),
        tunnel_addr: tunnel_addr.to_owned(),
        mtu,
        tx_packets,
        tx_bytes,
        rx_packets,
        rx_bytes,
        drops,
    }
}

/// Remembers when each peer entered its current state, for `show dmvpn`'s UpDn Tm. The control
/// loop owns one and passes it to [`Snapshot::dmvpn_report`]; calling [`UpDown::observe`] also
/// on IKE/NHRP events makes the times exact rather than measured from the first query.
#[derive(Debug, Default)]
pub struct UpDown {
    seen: HashMap<IpAddr, (PeerState, Instant)>,
}

impl UpDown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `state` for `peer` and returns how long the peer has been in it. A peer seen for
    /// the first time counts from `now - since`: the builders pass the IKE SA's age for a peer
    /// found already up, which is the best estimate available after a daemon restart.
    pub fn observe(
        &mut self,
        peer: IpAddr,
        state: PeerState,
        now: Instant,
        since: Option<Duration>,
    ) -> Duration {
        let start = now.checked_sub(since.unwrap_or_default()).unwrap_or(now);
        let entry = self.seen.entry(peer).or_insert((state, start));
        if entry.0 != state {
            *entry = (state, now);
        }
        now.saturating_duration_since(entry.1)
    }

    /// Forgets peers for which `keep` is false (gone from every table).
    pub fn retain(&mut self, mut keep: impl FnMut(&IpAddr) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

/// The engines' read-only views at one instant, from which every peer-oriented report is built:
/// `cache` = `nhrp::Engine::cache_entries(now)`, `nhs` = `nhrp::Engine::nhs_status(now)`,
/// `ike` = `ike::Endpoint::ike_sas(now)`.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub now: Instant,
    pub interface: &'a str,
    /// Our tunnel address with prefix length.
    pub tunnel_addr: &'a str,
    pub role: NhrpRole,
    pub cache: &'a [CacheEntry],
    pub nhs: &'a [NhsStatus],
    pub ike: &'a [IkeSaInfo],
}

/// What is known about one NBMA peer across NHRP and IKE.
#[derive(Debug)]
struct PeerJoin<'a> {
    nbma: IpAddr,
    post_nat: Option<IpAddr>,
    tunnel: Option<IpAddr>,
    entries: Vec<&'a CacheEntry>,
    nhs: Option<&'a NhsStatus>,
    ike: Vec<&'a IkeSaInfo>,
}

impl PeerJoin<'_> {
    fn nhrp_state(&self) -> NhrpPeerState {
        if let Some(n) = self.nhs {
            return nhs_state(n.state);
        }
        let has = |k: EntryKind| self.entries.iter().any(|e| e.kind == k);
        if self
            .entries
            .iter()
            .any(|e| e.kind == EntryKind::Dynamic && e.flags.registered)
        {
            NhrpPeerState::Registered
        } else if has(EntryKind::Shortcut) || has(EntryKind::Dynamic) {
            NhrpPeerState::Resolved
        } else if has(EntryKind::Static) || has(EntryKind::Nhs) {
            NhrpPeerState::Static
        } else {
            NhrpPeerState::None
        }
    }

    /// The IKE SA to show: an established one with the most children, else the youngest.
    fn best_ike(&self) -> Option<&IkeSaInfo> {
        self.ike
            .iter()
            .copied()
            .filter(|s| IkeState::from_engine(s.state.as_str()) == IkeState::Established)
            .max_by_key(|s| (s.children.len(), std::cmp::Reverse(s.age)))
            .or_else(|| self.ike.iter().copied().min_by_key(|s| s.age))
    }

    fn state(&self) -> PeerState {
        let Some(ike) = self.best_ike() else {
            return PeerState::Down;
        };
        match IkeState::from_engine(ike.state.as_str()) {
            IkeState::Established => {}
            IkeState::Negotiating | IkeState::Unknown => return PeerState::Ike,
            IkeState::Deleting | IkeState::Closed => return PeerState::Down,
        }
        if ike.children.is_empty() {
            PeerState::Ipsec
        } else if !self.nhrp_state().is_up() {
            PeerState::Nhrp
        } else {
            PeerState::Up
        }
    }

    fn natted(&self) -> bool {
        self.post_nat.is_some()
            || self.entries.iter().any(|e| e.flags.nat)
            || self.ike.iter().any(|s| s.nat_remote)
    }
}

impl<'a> Snapshot<'a> {
    /// Joins NHRP and IKE by the NBMA address packets go to (post-NAT), which is the address
    /// IKE sees as the peer's. Ordered by that address.
    fn peers(&self) -> Vec<PeerJoin<'a>> {
        let mut map: BTreeMap<IpAddr, PeerJoin<'a>> = BTreeMap::new();
        let new = |nbma| PeerJoin {
            nbma,
            post_nat: None,
            tunnel: None,
            entries: Vec::new(),
            nhs: None,
            ike: Vec::new(),
        };
        for e in self.cache.iter().filter(|e| e.kind != EntryKind::Local) {
            let key = e.effective_nbma();
            let p = map.entry(key).or_insert_with(|| new(e.nbma));
            p.nbma = e.nbma;
            if e.effective_nbma() != e.nbma {
                p.post_nat = Some(key);
            }
            // The host entry of the peer itself names its tunnel address better than a
            // shortcut prefix behind it.
            if p.tunnel.is_none() || e.protocol_addr == e.next_hop {
                p.tunnel = Some(e.next_hop);
            }
            p.entries.push(e);
        }
        for n in self.nhs {
            let p = map.entry(n.nbma_addr).or_insert_with(|| new(n.nbma_addr));
            p.nhs = Some(n);
            if p.tunnel.is_none() {
                p.tunnel = n.protocol_addr;
            }
        }
        for s in self.ike {
            map.entry(s.remote.ip())
                .or_insert_with(|| new(s.remote.ip()))
                .ike
                .push(s);
        }
        map.into_values().collect()
    }

    /// `show sa`. `counters` gives the ESP counters of a Child SA's (inbound, outbound) SAs:
    /// `SaTable::get(Spi(c.spi_in))` and the outbound SA with `c.spi_out`, each
    /// `.stats().snapshot()`.
    pub fn sa_report(
        &self,
        counters: impl Fn(&ChildSaInfo) -> (Option<SaCounters>, Option<SaCounters>),
    ) -> SaReport {
        let peers = self
            .peers()
            .iter()
            .map(|p| SaPeer {
                nbma: p.nbma,
                post_nat_nbma: p.post_nat,
                tunnel_addr: p.tunnel,
                nhrp_state: p.nhrp_state(),
                ike: p.best_ike().map(ike_sa),
                children: p
                    .ike
                    .iter()
                    .flat_map(|s| s.children.iter())
                    .map(|c| {
                        let (i, o) = counters(c);
                        child_sa(c, i, o)
                    })
                    .collect(),
            })
            .collect();
        SaReport {
            schema_version: SCHEMA_VERSION,
            interface: self.interface.to_owned(),
            peers,
        }
    }

    /// `show dmvpn`; updates `updown` and forgets peers that are gone.
    pub fn dmvpn_report(&self, updown: &mut UpDown) -> DmvpnReport {
        let joined = self.peers();
        let peers = joined
            .iter()
            .map(|p| {
                let state = p.state();
                let key = p.post_nat.unwrap_or(p.nbma);
                let since = if state == PeerState::Up {
                    p.best_ike().map(|s| s.age)
                } else {
                    None
                };
                let updn = updown.observe(key, state, self.now, since);
                let mut attrs = Vec::new();
                let has = |k: EntryKind| p.entries.iter().any(|e| e.kind == k);
                if p.nhs.is_some() || has(EntryKind::Static) || has(EntryKind::Nhs) {
                    attrs.push("S");
                }
                if has(EntryKind::Dynamic) || has(EntryKind::Shortcut) {
                    attrs.push("D");
                }
                if p.natted() {
                    attrs.push("N");
                }
                if has(EntryKind::Shortcut) {
                    attrs.push("T1");
                }
                if p.tunnel.is_none() && (p.nhs.is_some() || !p.entries.is_empty()) {
                    attrs.push("I");
                }
                DmvpnPeer {
                    peer_nbma: key,
                    peer_tunnel: p.tunnel,
                    entries: u32::try_from(p.entries.len()).unwrap_or(u32::MAX),
                    state,
                    updn_secs: Some(secs(updn)),
                    attrs: attrs.into_iter().map(str::to_owned).collect(),
                }
            })
            .collect();
        updown.retain(|k| joined.iter().any(|p| p.post_nat.unwrap_or(p.nbma) == *k));
        DmvpnReport {
            schema_version: SCHEMA_VERSION,
            interface: self.interface.to_owned(),
            tunnel_addr: self.tunnel_addr.to_owned(),
            nhrp_role: self.role,
            peers,
        }
    }

    /// `show nhrp`, with `counters` = `nhrp::Engine::counters()`.
    pub fn nhrp_report(&self, counters: &dmvpn_nhrp::Counters) -> NhrpReport {
        NhrpReport {
            schema_version: SCHEMA_VERSION,
            interface: self.interface.to_owned(),
            entries: self.cache.iter().map(|e| nhrp_entry(e, self.now)).collect(),
            nhs: self.nhs.iter().map(|n| nhs_entry(n, self.now)).collect(),
            counters: nhrp_counters(counters),
        }
    }

    /// `show ike`.
    pub fn ike_report(&self) -> IkeReport {
        IkeReport {
            schema_version: SCHEMA_VERSION,
            sas: self.ike.iter().map(ike_sa).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Text renderers

/// IOS-style duration: `00:04:12` under a day, `2d03h` under a week, `1w2d` beyond.
pub fn ios_time(secs: u64) -> String {
    const DAY: u64 = 86_400;
    if secs < DAY {
        format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    } else if secs < 7 * DAY {
        format!("{}d{:02}h", secs / DAY, secs % DAY / 3600)
    } else {
        format!("{}w{}d", secs / (7 * DAY), secs % (7 * DAY) / DAY)
    }
}

fn opt_addr(a: Option<IpAddr>) -> String {
    a.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

fn spi_ios(hex: &str) -> String {
    // `0x1a2b3c4d` → `0x1A2B3C4D(439041101)`, the IOS form; anything else is shown as given.
    let decimal = hex
        .strip_prefix("0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    match decimal {
        Some(d) => format!("0x{:08X}({d})", d),
        None => hex.to_owned(),
    }
}

/// Column layout of the `show dmvpn` table, shared by header and rows so they cannot drift.
fn dmvpn_row(
    f: &mut fmt::Formatter<'_>,
    ent: &str,
    nbma: &str,
    tunnel: &str,
    state: &str,
    updn: &str,
    attrb: &str,
) -> fmt::Result {
    writeln!(
        f,
        " {ent:>5} {nbma:<15} {tunnel:>15} {state:>5} {updn:>8} {attrb:>5}"
    )
}

impl fmt::Display for DmvpnReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Legend: Attrb --> S - Static, D - Dynamic, I - Incomplete\n        \
             N - NATed, L - Local, X - No Socket\n        \
             T1 - Route Installed, T2 - Nexthop-override\n        \
             # Ent --> Number of NHRP entries with same NBMA peer\n        \
             UpDn Time --> Up or Down Time for a Tunnel\n\
             =========================================================================="
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Interface: {}, IPv4 NHRP Details (address {})",
            self.interface, self.tunnel_addr
        )?;
        let role = match self.nhrp_role {
            NhrpRole::Hub => "Hub",
            NhrpRole::Spoke => "Spoke",
        };
        writeln!(f, "Type:{role}, NHRP Peers:{},", self.peers.len())?;
        writeln!(f)?;
        // IOS prints "Peer Tunnel Add" (sic): kept so eyes and scripts used to it find it.
        dmvpn_row(
            f,
            "# Ent",
            "Peer NBMA Addr",
            "Peer Tunnel Add",
            "State",
            "UpDn Tm",
            "Attrb",
        )?;
        dmvpn_row(
            f,
            "-----",
            "---------------",
            "---------------",
            "-----",
            "--------",
            "-----",
        )?;
        for p in &self.peers {
            dmvpn_row(
                f,
                &p.entries.to_string(),
                &p.peer_nbma.to_string(),
                &opt_addr(p.peer_tunnel),
                p.state.ios(),
                &p.updn_secs.map_or_else(|| "never".to_owned(), ios_time),
                &p.attrs.concat(),
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for SaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "interface: {}", self.interface)?;
        if self.peers.is_empty() {
            writeln!(f, "   (no peers)")?;
        }
        for p in &self.peers {
            writeln!(f)?;
            // IOS prints bare addresses here; the ports are on the current_peer line.
            let (local, remote) = match &p.ike {
                Some(s) => (s.local.ip().to_string(), s.remote.ip().to_string()),
                None => ("-".to_owned(), "-".to_owned()),
            };
            let peer_ip = p
                .ike
                .as_ref()
                .map_or(p.post_nat_nbma.unwrap_or(p.nbma), |s| s.remote.ip());
            let port = p.ike.as_ref().map_or(0, |s| s.remote.port());
            writeln!(f, "   current_peer {peer_ip} port {port}")?;
            writeln!(
                f,
                "   peer NBMA {}{}, tunnel address {}, NHRP: {}",
                p.nbma,
                p.post_nat_nbma
                    .map(|a| format!(" (post-NAT {a})"))
                    .unwrap_or_default(),
                opt_addr(p.tunnel_addr),
                p.nhrp_state.text()
            )?;
            match &p.ike {
                Some(s) => {
                    writeln!(
                        f,
                        "   IKEv2 SA: {} ({}), spi_i {}, spi_r {}, {}",
                        s.state.ios(),
                        s.state_detail,
                        s.spi_i,
                        s.spi_r,
                        if s.initiator {
                            "initiator"
                        } else {
                            "responder"
                        }
                    )?;
                    writeln!(
                        f,
                        "     Encr: {}, PRF: {}, DH Grp:{}, age {}, rekey in {}",
                        s.encryption.as_deref().unwrap_or("-"),
                        s.prf.as_deref().unwrap_or("-"),
                        s.dh_group.map_or_else(|| "-".to_owned(), |g| g.to_string()),
                        ios_time(s.age_secs),
                        s.rekey_in_secs.map_or_else(|| "-".to_owned(), ios_time)
                    )?;
                }
                None => writeln!(f, "   IKEv2 SA: none")?,
            }
            let sum = |g: fn(&ChildSa) -> u64| p.children.iter().map(g).sum::<u64>();
            let (enc, dec) = (sum(|c| c.packets_out), sum(|c| c.packets_in));
            writeln!(
                f,
                "    #pkts encaps: {enc}, #pkts encrypt: {enc}, #pkts digest: {enc}"
            )?;
            writeln!(
                f,
                "    #pkts decaps: {dec}, #pkts decrypt: {dec}, #pkts verify: {dec}"
            )?;
            writeln!(
                f,
                "    #bytes encaps: {}, #bytes decaps: {}",
                sum(|c| c.bytes_out),
                sum(|c| c.bytes_in)
            )?;
            writeln!(f, "    #pkts verify failed: {}", sum(|c| c.auth_failures))?;
            writeln!(
                f,
                "    #pkts replay failed (rcv): {}",
                sum(|c| c.replay_drops)
            )?;
            writeln!(f)?;
            writeln!(
                f,
                "     local crypto endpt.: {local}, remote crypto endpt.: {remote}"
            )?;
            // The newest Child SA carries new traffic after a rekey (RFC 7296 §2.8).
            let current = p.children.iter().min_by_key(|c| c.age_secs);
            writeln!(
                f,
                "     current outbound spi: {}",
                current.map_or_else(|| "0x0(0)".to_owned(), |c| spi_ios(&c.spi_out))
            )?;
            for (dir, inbound) in [("inbound", true), ("outbound", false)] {
                writeln!(f)?;
                writeln!(f, "     {dir} esp sas:")?;
                for c in &p.children {
                    let spi = if inbound { &c.spi_in } else { &c.spi_out };
                    writeln!(f, "      spi: {}", spi_ios(spi))?;
                    writeln!(f, "        transform: esp-gcm 256 ,")?;
                    let mode = if c.mode == "transport" {
                        "Transport"
                    } else {
                        c.mode.as_str()
                    };
                    let encap = if c.udp_encap { " UDP-Encaps" } else { "" };
                    writeln!(f, "        in use settings ={{{mode}{encap}, }}")?;
                    let (pk, by) = if inbound {
                        (c.packets_in, c.bytes_in)
                    } else {
                        (c.packets_out, c.bytes_out)
                    };
                    writeln!(f, "        packets: {pk}, bytes: {by}")?;
                    writeln!(
                        f,
                        "        sa timing: remaining key lifetime (sec): {}",
                        c.rekey_in_secs
                            .map_or_else(|| "-".to_owned(), |s| s.to_string())
                    )?;
                    if inbound {
                        writeln!(f, "        replay detection support: Y")?;
                        writeln!(
                            f,
                            "        replay drops: {}, auth failures: {}",
                            c.replay_drops, c.auth_failures
                        )?;
                    }
                    writeln!(f, "        Status: ACTIVE(ACTIVE)")?;
                }
            }
        }
        Ok(())
    }
}

fn nhrp_kind_text(k: NhrpKind) -> &'static str {
    match k {
        NhrpKind::Static => "static",
        NhrpKind::Dynamic => "dynamic",
        NhrpKind::Nhs => "static",
        NhrpKind::Shortcut => "dynamic",
        NhrpKind::Local => "local",
        NhrpKind::Incomplete => "incomplete",
    }
}

impl fmt::Display for NhrpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{}/{} via {}", e.protocol_addr, e.prefix_len, e.next_hop)?;
            writeln!(
                f,
                "   {} created {}, {}",
                self.interface,
                ios_time(e.age_secs),
                e.expires_in_secs.map_or_else(
                    || "never expire".to_owned(),
                    |s| format!("expire {}", ios_time(s))
                )
            )?;
            // IOS shows NHS and shortcut entries as static/dynamic; our finer kind follows in
            // parentheses so nothing is lost.
            let mut flags = e.flags.clone();
            if e.kind == NhrpKind::Nhs {
                flags.push("nhs".to_owned());
            }
            writeln!(
                f,
                "   Type: {} ({}), Flags: {}",
                nhrp_kind_text(e.kind),
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                if flags.is_empty() {
                    "none".to_owned()
                } else {
                    flags.join(" ")
                }
            )?;
            match e.post_nat_nbma {
                Some(p) => {
                    writeln!(f, "   NBMA address: {p}")?;
                    writeln!(f, "    (Claimed NBMA address: {})", e.nbma)?;
                }
                None => writeln!(f, "   NBMA address: {}", e.nbma)?,
            }
        }
        if !self.nhs.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "Legend: E=Expecting replies, R=Responding, W=Waiting for SA"
            )?;
            writeln!(f, "{}:", self.interface)?;
            for n in &self.nhs {
                let letters = match n.state {
                    NhrpPeerState::Up => "RE",
                    NhrpPeerState::Registering => "E",
                    _ => "W",
                };
                writeln!(
                    f,
                    "{:<15} {:<2} NBMA Address: {} {}, expire {}{}",
                    opt_addr(n.protocol_addr),
                    letters,
                    n.nbma,
                    n.state.text(),
                    n.expires_in_secs.map_or_else(|| "-".to_owned(), ios_time),
                    if n.multicast { ", multicast" } else { "" }
                )?;
            }
        }
        writeln!(f)?;
        let c = &self.counters;
        for (label, m) in [("Sent", &c.tx), ("Rcvd", &c.rx)] {
            writeln!(
                f,
                "{}: {label}: Total {}",
                self.interface,
                m.values().sum::<u64>()
            )?;
            for name in NHRP_TYPES {
                let v = m.get(name).copied().unwrap_or(0);
                if v > 0 {
                    writeln!(f, "   {v:>10} {name}")?;
                }
            }
        }
        writeln!(f, "   Authentication failures: {}", c.auth_failures)?;
        for (name, v) in &c.drops {
            writeln!(f, "   Dropped ({name}): {v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for IkeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, " IPv4 Crypto IKEv2  SA")?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10}{:<22}{:<22}{:<12}Status",
            "Tunnel-id", "Local", "Remote", "fvrf/ivrf"
        )?;
        for (i, s) in self.sas.iter().enumerate() {
            writeln!(
                f,
                "{:<10}{:<22}{:<22}{:<12}{}",
                i + 1,
                s.local.to_string(),
                s.remote.to_string(),
                "none/none",
                s.state.ios()
            )?;
            writeln!(
                f,
                "      Encr: {}, PRF: {}, Hash: None, DH Grp:{}, Auth: PSK",
                s.encryption.as_deref().unwrap_or("-"),
                s.prf.as_deref().unwrap_or("-"),
                s.dh_group.map_or_else(|| "-".to_owned(), |g| g.to_string())
            )?;
            writeln!(
                f,
                "      Active Time: {} sec, rekey in: {}",
                s.age_secs,
                s.rekey_in_secs
                    .map_or_else(|| "-".to_owned(), |r| format!("{r} sec"))
            )?;
            writeln!(f, "      Initiator SPI : {}", s.spi_i)?;
            writeln!(f, "      Responder SPI : {}", s.spi_r)?;
            writeln!(
                f,
                "      Initiator of SA : {}",
                if s.initiator { "Yes" } else { "No" }
            )?;
            writeln!(
                f,
                "      Remote id: {}",
                s.remote_id.as_deref().unwrap_or("-")
            )?;
            let nat = match (s.nat_local, s.nat_remote) {
                (false, false) => "none",
                (true, false) => "inside (we are behind NAT)",
                (false, true) => "outside (peer is behind NAT)",
                (true, true) => "inside and outside",
            };
            writeln!(f, "      NAT-T: {nat}")?;
            writeln!(f, "      Child sa: {}", s.child_count)?;
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for InterfaceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} is up, line protocol is up", self.interface)?;
        writeln!(f, "  Hardware is Tunnel (dmvpnd, mGRE over IPsec)")?;
        writeln!(f, "  Internet address is {}", self.tunnel_addr)?;
        writeln!(f, "  MTU {} bytes", self.mtu)?;
        writeln!(
            f,
            "     {} packets input, {} bytes",
            self.rx_packets, self.rx_bytes
        )?;
        writeln!(
            f,
            "     {} packets output, {} bytes",
            self.tx_packets, self.tx_bytes
        )?;
        let total: u64 = self.drops.values().sum();
        writeln!(f, "     {total} drops")?;
        for (name, v) in self.drops.iter().filter(|(_, v)| **v > 0) {
            writeln!(f, "       {v:>10} {name}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Examples: the reference deployment's spoke (10.250.0.9 behind the EC2 Elastic IP's 1:1 NAT)
// with its hub. Used by the tests and to produce the samples in docs/dmvpnctl.md.

pub mod examples {
    use super::*;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn ike() -> IkeSa {
        IkeSa {
            state: IkeState::Established,
            state_detail: "Established".to_owned(),
            spi_i: "8f1e2d3c4b5a6978".to_owned(),
            spi_r: "0102030405060708".to_owned(),
            initiator: true,
            encryption: Some("aes-gcm-256".to_owned()),
            prf: Some("sha512".to_owned()),
            dh_group: Some(19),
            age_secs: 1234,
            rekey_in_secs: Some(85_166),
            local: sock("172.16.0.10:4500"),
            remote: sock("198.51.100.1:4500"),
            remote_id: Some("198.51.100.1".to_owned()),
            nat_local: true,
            nat_remote: false,
            child_count: 1,
        }
    }

    pub fn sa() -> SaReport {
        SaReport {
            schema_version: SCHEMA_VERSION,
            interface: "dmvpn0".to_owned(),
            peers: vec![SaPeer {
                nbma: addr("198.51.100.1"),
                post_nat_nbma: None,
                tunnel_addr: Some(addr("10.250.0.1")),
                nhrp_state: NhrpPeerState::Up,
                ike: Some(ike()),
                children: vec![ChildSa {
                    spi_in: "0x1a2b3c4d".to_owned(),
                    spi_out: "0xc0ffee01".to_owned(),
                    mode: "transport".to_owned(),
                    transform: "esp-gcm-256".to_owned(),
                    esn: false,
                    udp_encap: true,
                    packets_in: 1187,
                    bytes_in: 145_020,
                    packets_out: 1204,
                    bytes_out: 150_112,
                    replay_drops: 3,
                    auth_failures: 2,
                    age_secs: 1200,
                    rekey_in_secs: Some(2400),
                }],
            }],
        }
    }

    pub fn dmvpn() -> DmvpnReport {
        DmvpnReport {
            schema_version: SCHEMA_VERSION,
            interface: "dmvpn0".to_owned(),
            tunnel_addr: "10.250.0.9/24".to_owned(),
            nhrp_role: NhrpRole::Spoke,
            peers: vec![
                DmvpnPeer {
                    peer_nbma: addr("198.51.100.1"),
                    peer_tunnel: Some(addr("10.250.0.1")),
                    entries: 1,
                    state: PeerState::Up,
                    updn_secs: Some(252),
                    attrs: vec!["S".to_owned()],
                },
                DmvpnPeer {
                    peer_nbma: addr("203.0.113.7"),
                    peer_tunnel: Some(addr("10.250.0.5")),
                    entries: 2,
                    state: PeerState::Nhrp,
                    updn_secs: Some(2 * 86_400 + 3 * 3600),
                    attrs: vec!["D".to_owned(), "N".to_owned(), "T1".to_owned()],
                },
            ],
        }
    }

    pub fn nhrp() -> NhrpReport {
        let mut rx: BTreeMap<String, u64> =
            NHRP_TYPES.iter().map(|n| ((*n).to_owned(), 0)).collect();
        let mut tx = rx.clone();
        tx.insert("registration_request".to_owned(), 12);
        rx.insert("registration_reply".to_owned(), 12);
        NhrpReport {
            schema_version: SCHEMA_VERSION,
            interface: "dmvpn0".to_owned(),
            entries: vec![
                NhrpEntry {
                    protocol_addr: addr("10.250.0.9"),
                    prefix_len: 32,
                    next_hop: addr("10.250.0.9"),
                    nbma: addr("172.16.0.10"),
                    post_nat_nbma: Some(addr("192.0.2.10")),
                    kind: NhrpKind::Local,
                    flags: vec!["unique".to_owned(), "nat".to_owned()],
                    age_secs: 0,
                    expires_in_secs: None,
                    holding_time_secs: 7200,
                },
                NhrpEntry {
                    protocol_addr: addr("10.250.0.1"),
                    prefix_len: 32,
                    next_hop: addr("10.250.0.1"),
                    nbma: addr("198.51.100.1"),
                    post_nat_nbma: None,
                    kind: NhrpKind::Nhs,
                    flags: vec!["registered".to_owned()],
                    age_secs: 0,
                    expires_in_secs: Some(5946),
                    holding_time_secs: 7200,
                },
            ],
            nhs: vec![NhsEntry {
                protocol_addr: Some(addr("10.250.0.1")),
                nbma: addr("198.51.100.1"),
                multicast: true,
                state: NhrpPeerState::Up,
                expires_in_secs: Some(5946),
                retry_wait_secs: 0,
            }],
            counters: NhrpCounters {
                rx,
                tx,
                auth_failures: 0,
                drops: BTreeMap::from([("unexpected_reply".to_owned(), 1)]),
            },
        }
    }

    pub fn ike_report() -> IkeReport {
        IkeReport {
            schema_version: SCHEMA_VERSION,
            sas: vec![ike()],
        }
    }

    pub fn interface() -> InterfaceReport {
        let mut drops: BTreeMap<String, u64> = dmvpn_dataplane::DropReason::ALL
            .iter()
            .map(|r| (r.name().to_owned(), 0))
            .collect();
        drops.insert("replay".to_owned(), 3);
        drops.insert("auth_failed".to_owned(), 2);
        InterfaceReport {
            schema_version: SCHEMA_VERSION,
            interface: "dmvpn0".to_owned(),
            tunnel_addr: "10.250.0.9/24".to_owned(),
            mtu: 1400,
            tx_packets: 1204,
            tx_bytes: 150_112,
            rx_packets: 1187,
            rx_bytes: 145_020,
            drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmvpn_crypto::DhAlg;
    use dmvpn_ike::proposal::IkeSuite;
    use dmvpn_ike::{ChildSaInfo, IkeSaId, IkeSaInfo, Mode};

    fn lines(s: &str) -> Vec<&str> {
        s.lines().collect()
    }

    /// The line after the one equal to `anchor` that starts with `prefix`.
    fn after<'a>(text: &'a str, anchor: &str, prefix: &str) -> &'a str {
        let l = lines(text);
        let start = l
            .iter()
            .position(|x| x.trim_end() == anchor)
            .unwrap_or_else(|| panic!("no {anchor:?} in\n{text}"));
        l[start..]
            .iter()
            .find(|x| x.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} after {anchor:?} in\n{text}"))
    }

    #[test]
    fn ios_times() {
        assert_eq!(ios_time(0), "00:00:00");
        assert_eq!(ios_time(252), "00:04:12");
        assert_eq!(ios_time(86_399), "23:59:59");
        assert_eq!(ios_time(86_400 * 2 + 3 * 3600 + 59), "2d03h");
        assert_eq!(ios_time(86_400 * 9), "1w2d");
    }

    #[test]
    fn show_dmvpn_columns() {
        let text = examples::dmvpn().to_string();
        assert!(text.starts_with("Legend: Attrb --> S - Static, D - Dynamic, I - Incomplete\n"));
        assert!(text.contains("\nInterface: dmvpn0, IPv4 NHRP Details (address 10.250.0.9/24)\n"));
        assert!(text.contains("\nType:Spoke, NHRP Peers:2,\n"));
        let l = lines(&text);
        let header = l.iter().position(|x| x.starts_with(" # Ent")).unwrap();
        assert_eq!(
            l[header],
            " # Ent Peer NBMA Addr  Peer Tunnel Add State  UpDn Tm Attrb"
        );
        assert_eq!(
            l[header + 1],
            " ----- --------------- --------------- ----- -------- -----"
        );
        assert_eq!(
            l[header + 2],
            "     1 198.51.100.1         10.250.0.1    UP 00:04:12     S"
        );
        assert_eq!(
            l[header + 3],
            "     2 203.0.113.7          10.250.0.5  NHRP    2d03h  DNT1"
        );
        // Every value ends under the end of its dashes (right-aligned) or starts under their
        // start (NBMA, left-aligned), as on IOS.
        let dashes = l[header + 1];
        let spans: Vec<(usize, usize)> =
            dashes
                .match_indices('-')
                .fold(Vec::new(), |mut v: Vec<(usize, usize)>, (i, _)| {
                    match v.last_mut() {
                        Some(last) if last.1 == i => last.1 = i + 1,
                        _ => v.push((i, i + 1)),
                    }
                    v
                });
        assert_eq!(spans.len(), 6);
        let row = l[header + 2];
        assert_eq!(&row[spans[1].0..spans[1].0 + 12], "198.51.100.1");
        assert_eq!(&row[spans[2].1 - 10..spans[2].1], "10.250.0.1");
        assert_eq!(&row[spans[3].1 - 2..spans[3].1], "UP");
        assert_eq!(&row[spans[4].1 - 8..spans[4].1], "00:04:12");
        assert_eq!(&row[spans[5].1 - 1..spans[5].1], "S");
    }

    #[test]
    fn show_sa_reads_like_show_crypto_ipsec_sa() {
        let text = examples::sa().to_string();
        let l = lines(&text);
        assert_eq!(l[0], "interface: dmvpn0");
        assert!(l.contains(&"   current_peer 198.51.100.1 port 4500"));
        assert!(l.contains(&"   peer NBMA 198.51.100.1, tunnel address 10.250.0.1, NHRP: up"));
        assert!(l.contains(
            &"   IKEv2 SA: READY (Established), spi_i 8f1e2d3c4b5a6978, spi_r 0102030405060708, initiator"
        ));
        assert!(l.contains(
            &"     Encr: aes-gcm-256, PRF: sha512, DH Grp:19, age 00:20:34, rekey in 23:39:26"
        ));
        assert!(l.contains(&"    #pkts encaps: 1204, #pkts encrypt: 1204, #pkts digest: 1204"));
        assert!(l.contains(&"    #pkts decaps: 1187, #pkts decrypt: 1187, #pkts verify: 1187"));
        assert!(l.contains(&"    #pkts verify failed: 2"));
        assert!(l.contains(&"    #pkts replay failed (rcv): 3"));
        assert!(l.contains(
            &"     local crypto endpt.: 172.16.0.10, remote crypto endpt.: 198.51.100.1"
        ));
        assert!(l.contains(&"     current outbound spi: 0xC0FFEE01(3237998081)"));
        // The inbound SPI is listed under inbound, the outbound one under outbound.
        assert_eq!(
            after(&text, "     inbound esp sas:", "      spi:"),
            "      spi: 0x1A2B3C4D(439041101)"
        );
        assert_eq!(
            after(&text, "     outbound esp sas:", "      spi:"),
            "      spi: 0xC0FFEE01(3237998081)"
        );
        assert_eq!(
            after(&text, "     inbound esp sas:", "        in use settings"),
            "        in use settings ={Transport UDP-Encaps, }"
        );
        assert_eq!(
            after(&text, "     inbound esp sas:", "        packets:"),
            "        packets: 1187, bytes: 145020"
        );
        assert_eq!(
            after(&text, "     outbound esp sas:", "        packets:"),
            "        packets: 1204, bytes: 150112"
        );
        assert_eq!(
            after(&text, "     inbound esp sas:", "        sa timing"),
            "        sa timing: remaining key lifetime (sec): 2400"
        );
        assert_eq!(
            after(&text, "     inbound esp sas:", "        replay drops"),
            "        replay drops: 3, auth failures: 2"
        );
    }

    #[test]
    fn show_nhrp_reads_like_show_ip_nhrp() {
        let text = examples::nhrp().to_string();
        let l = lines(&text);
        assert_eq!(l[0], "10.250.0.9/32 via 10.250.0.9");
        assert_eq!(l[1], "   dmvpn0 created 00:00:00, never expire");
        assert_eq!(l[2], "   Type: local (local), Flags: unique nat");
        assert_eq!(l[3], "   NBMA address: 192.0.2.10");
        assert_eq!(l[4], "    (Claimed NBMA address: 172.16.0.10)");
        assert_eq!(l[5], "10.250.0.1/32 via 10.250.0.1");
        assert_eq!(l[6], "   dmvpn0 created 00:00:00, expire 01:39:06");
        assert_eq!(l[7], "   Type: static (nhs), Flags: registered nhs");
        assert_eq!(l[8], "   NBMA address: 198.51.100.1");
        assert!(l.contains(
            &"10.250.0.1      RE NBMA Address: 198.51.100.1 up, expire 01:39:06, multicast"
        ));
        assert!(l.contains(&"dmvpn0: Sent: Total 12"));
        assert!(l.contains(&"           12 registration_request"));
        assert!(l.contains(&"   Dropped (unexpected_reply): 1"));
    }

    #[test]
    fn show_ike_and_interface() {
        let text = examples::ike_report().to_string();
        let l = lines(&text);
        assert_eq!(
            l[2],
            "Tunnel-id Local                 Remote                fvrf/ivrf   Status"
        );
        assert_eq!(
            l[3],
            "1         172.16.0.10:4500      198.51.100.1:4500     none/none   READY"
        );
        assert!(l.contains(&"      Active Time: 1234 sec, rekey in: 85166 sec"));
        assert!(l.contains(&"      NAT-T: inside (we are behind NAT)"));

        let text = examples::interface().to_string();
        let l = lines(&text);
        assert_eq!(l[0], "dmvpn0 is up, line protocol is up");
        assert!(l.contains(&"  Internet address is 10.250.0.9/24"));
        assert!(l.contains(&"     1187 packets input, 145020 bytes"));
        assert!(l.contains(&"     1204 packets output, 150112 bytes"));
        assert!(l.contains(&"     5 drops"));
        assert!(l.contains(&"                3 replay"));
        assert!(l.contains(&"                2 auth_failed"));
        assert!(!text.contains("no_room"), "zero reasons are not listed");
    }

    #[test]
    fn json_field_names_are_stable() {
        let v = serde_json::to_value(examples::dmvpn()).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["nhrp_role"], "spoke");
        assert_eq!(v["tunnel_addr"], "10.250.0.9/24");
        let p = &v["peers"][1];
        assert_eq!(p["peer_nbma"], "203.0.113.7");
        assert_eq!(p["peer_tunnel"], "10.250.0.5");
        assert_eq!(p["state"], "NHRP");
        assert_eq!(p["updn_secs"], 2 * 86_400 + 3 * 3600);
        assert_eq!(p["attrs"], serde_json::json!(["D", "N", "T1"]));

        let v = serde_json::to_value(examples::sa()).unwrap();
        let p = &v["peers"][0];
        // Absent values are null, not missing.
        assert!(p.as_object().unwrap().contains_key("post_nat_nbma"));
        assert!(p["post_nat_nbma"].is_null());
        assert_eq!(p["nhrp_state"], "up");
        assert_eq!(p["ike"]["state"], "established");
        assert_eq!(p["ike"]["spi_i"], "8f1e2d3c4b5a6978");
        assert_eq!(p["ike"]["local"], "172.16.0.10:4500");
        assert_eq!(p["ike"]["dh_group"], 19);
        let c = &p["children"][0];
        assert_eq!(c["spi_in"], "0x1a2b3c4d");
        assert_eq!(c["mode"], "transport");
        assert_eq!(c["replay_drops"], 3);
        assert_eq!(c["rekey_in_secs"], 2400);

        let v = serde_json::to_value(examples::nhrp()).unwrap();
        assert_eq!(v["entries"][0]["kind"], "local");
        assert_eq!(
            v["entries"][0]["flags"],
            serde_json::json!(["unique", "nat"])
        );
        assert!(v["entries"][0]["expires_in_secs"].is_null());
        assert_eq!(v["nhs"][0]["state"], "up");
        assert_eq!(v["counters"]["tx"]["registration_request"], 12);
        assert_eq!(v["counters"]["rx"].as_object().unwrap().len(), 9);

        // Everything round-trips.
        let back: SaReport =
            serde_json::from_value(serde_json::to_value(examples::sa()).unwrap()).unwrap();
        assert_eq!(back, examples::sa());
        let back: NhrpReport =
            serde_json::from_value(serde_json::to_value(examples::nhrp()).unwrap()).unwrap();
        assert_eq!(back, examples::nhrp());
    }

    fn suite() -> IkeSuite {
        IkeSuite {
            encr_key_bits: 256,
            prf: PrfAlg::HmacSha512,
            dh: DhAlg::Ecp256,
        }
    }

    fn child(spi_in: u32, spi_out: u32, age: u64) -> ChildSaInfo {
        ChildSaInfo {
            spi_in,
            spi_out,
            mode: Mode::Transport,
            esn: false,
            udp_encap: true,
            age: Duration::from_secs(age),
            rekey_in: Some(Duration::from_secs(3000)),
        }
    }

    fn ike_info(remote: &str, state: &'static str, children: Vec<ChildSaInfo>) -> IkeSaInfo {
        IkeSaInfo {
            id: IkeSaId(1),
            state: state.parse().unwrap(),
            local: "172.16.0.10:4500".parse().unwrap(),
            remote: remote.parse().unwrap(),
            spi_i: 0x8f1e_2d3c_4b5a_6978,
            spi_r: 0x0102_0304_0506_0708,
            initiator: true,
            suite: (state == "Established").then(suite),
            remote_id: None,
            age: Duration::from_secs(600),
            rekey_in: Some(Duration::from_secs(85_800)),
            nat_local: true,
            nat_remote: false,
            children,
        }
    }

    fn nhs(nbma: &str, tunnel: &str, state: NhsState) -> NhsStatus {
        NhsStatus {
            protocol_addr: Some(tunnel.parse().unwrap()),
            nbma_addr: nbma.parse().unwrap(),
            multicast: true,
            state,
            expires: None,
            retry_wait: Duration::ZERO,
        }
    }

    #[test]
    fn peer_states_from_the_engines() {
        let now = Instant::now();
        let nhs_list = [
            nhs("198.51.100.1", "10.250.0.1", NhsState::Up),
            nhs("198.51.100.2", "10.250.0.2", NhsState::Registering),
            nhs("198.51.100.3", "10.250.0.3", NhsState::WaitingForSa),
            nhs("198.51.100.4", "10.250.0.4", NhsState::WaitingForSa),
        ];
        let ike = [
            ike_info(
                "198.51.100.1:4500",
                "Established",
                vec![child(0x1a2b_3c4d, 0xc0ff_ee01, 100)],
            ),
            ike_info("198.51.100.2:4500", "Established", vec![child(2, 3, 5)]),
            ike_info("198.51.100.3:500", "Established", vec![]),
            ike_info("198.51.100.4:500", "ExpectSaInitResponse", vec![]),
            // An IKE SA NHRP knows nothing about (a spoke reaching us before resolving).
            ike_info("203.0.113.7:4500", "Established", vec![child(4, 5, 5)]),
        ];
        let snap = Snapshot {
            now,
            interface: "dmvpn0",
            tunnel_addr: "10.250.0.9/24",
            role: NhrpRole::Spoke,
            cache: &[],
            nhs: &nhs_list,
            ike: &ike,
        };
        let mut updown = UpDown::new();
        let d = snap.dmvpn_report(&mut updown);
        let row = |nbma: &str| {
            d.peers
                .iter()
                .find(|p| p.peer_nbma.to_string() == nbma)
                .unwrap_or_else(|| panic!("no {nbma}"))
        };
        assert_eq!(row("198.51.100.1").state, PeerState::Up);
        assert_eq!(
            row("198.51.100.1").peer_tunnel,
            Some("10.250.0.1".parse().unwrap())
        );
        assert_eq!(row("198.51.100.1").attrs, vec!["S"]);
        // Up: measured from the IKE SA's age on first sight.
        assert_eq!(row("198.51.100.1").updn_secs, Some(600));
        assert_eq!(row("198.51.100.2").state, PeerState::Nhrp);
        assert_eq!(row("198.51.100.3").state, PeerState::Ipsec);
        assert_eq!(row("198.51.100.4").state, PeerState::Ike);
        assert_eq!(row("203.0.113.7").state, PeerState::Nhrp);
        assert_eq!(row("203.0.113.7").peer_tunnel, None);
        assert_eq!(d.peers.len(), 5);

        let sa = snap.sa_report(|c| {
            let n = u64::from(c.spi_in);
            (
                Some(SaCounters {
                    packets: n,
                    bytes: n * 100,
                    replay_drops: 1,
                    auth_failures: 2,
                }),
                None,
            )
        });
        let p = &sa.peers[0];
        assert_eq!(p.nbma.to_string(), "198.51.100.1");
        assert_eq!(p.nhrp_state, NhrpPeerState::Up);
        let ike = p.ike.as_ref().unwrap();
        assert_eq!(ike.state, IkeState::Established);
        assert_eq!(ike.spi_i, "8f1e2d3c4b5a6978");
        assert_eq!(ike.encryption.as_deref(), Some("aes-gcm-256"));
        assert_eq!(ike.prf.as_deref(), Some("sha512"));
        assert_eq!(ike.dh_group, Some(19));
        assert_eq!(p.children[0].spi_in, "0x1a2b3c4d");
        assert_eq!(p.children[0].spi_out, "0xc0ffee01");
        assert_eq!(p.children[0].packets_in, 0x1a2b_3c4d);
        assert_eq!(p.children[0].packets_out, 0, "no outbound SA: zero");
        assert_eq!(p.children[0].auth_failures, 2);
        let negotiating = sa
            .peers
            .iter()
            .find(|p| p.nbma.to_string() == "198.51.100.4")
            .unwrap();
        assert_eq!(
            negotiating.ike.as_ref().unwrap().state,
            IkeState::Negotiating
        );
        assert_eq!(negotiating.ike.as_ref().unwrap().encryption, None);
        assert_eq!(negotiating.nhrp_state, NhrpPeerState::WaitingForSa);
    }

    #[test]
    fn updown_counts_from_the_last_change() {
        let t0 = Instant::now();
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        let mut u = UpDown::new();
        assert_eq!(u.observe(peer, PeerState::Ike, t0, None), Duration::ZERO);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            u.observe(peer, PeerState::Ike, t1, None),
            Duration::from_secs(5)
        );
        assert_eq!(
            u.observe(peer, PeerState::Up, t1, Some(Duration::from_secs(99))),
            Duration::ZERO
        );
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(
            u.observe(peer, PeerState::Up, t2, None),
            Duration::from_secs(60)
        );
        u.retain(|_| false);
        assert_eq!(
            u.observe(peer, PeerState::Up, t2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn counters_builders() {
        let mut c = dmvpn_nhrp::Counters::default();
        c.rx[4] = 12;
        c.tx[3] = 13;
        c.drops.insert(dmvpn_nhrp::DropReason::AuthFailure, 2);
        let n = nhrp_counters(&c);
        assert_eq!(n.rx["registration_reply"], 12);
        assert_eq!(n.tx["registration_request"], 13);
        assert_eq!(n.drops["auth_failure"], 2);

        let d = dmvpn_dataplane::Counters::default();
        d.count_drop(dmvpn_dataplane::DropReason::Replay);
        let r = interface_report("dmvpn0", "10.250.0.9/24", 1400, &d, &[("tun_no_route", 4)]);
        assert_eq!(r.drops["replay"], 1);
        assert_eq!(r.drops["no_room"], 0);
        assert_eq!(r.drops["tun_no_route"], 4);
        assert_eq!(r.drops.len(), dmvpn_dataplane::DropReason::ALL.len() + 1);
    }
}
