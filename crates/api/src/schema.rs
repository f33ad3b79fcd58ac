//! The versioned JSON schema of the reports (documented field by field in docs/dmvpnctl.md).
//!
//! Stability: every report carries `schema_version` ([`SCHEMA_VERSION`]). Within one version
//! fields are only ever added, never renamed, removed or retyped, and absent values are `null`
//! rather than missing, so scripts can index fields without probing for them. Field order is
//! the declaration order below, and is kept.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Version of the JSON schema; bumped only for an incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// NHRP packet type names, the keys of [`NhrpCounters::rx`] and [`NhrpCounters::tx`], by
/// counter index (RFC 2332 §5 type codes 1–8; index 0 collects any other type).
pub const NHRP_PACKET_TYPES: [&str; 9] = [
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
    /// NHS (spoke): kept in reserve by its cluster's `max-connections` (not registering).
    Standby,
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

    pub(crate) fn text(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Registering => "registering",
            Self::WaitingForSa => "waiting for SA",
            Self::Standby => "standby",
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
    /// The IOS `show crypto ikev2 sa` status word.
    pub(crate) fn ios(self) -> &'static str {
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
    /// Inner bytes of those packets (after ESP and GRE).
    pub inner_bytes_in: u64,
    /// ESP bytes of those packets (header to ICV; no IP or NAT-T UDP header).
    pub esp_bytes_in: u64,
    /// Packets sealed.
    pub packets_out: u64,
    /// Inner bytes of those packets (before GRE and ESP).
    pub inner_bytes_out: u64,
    /// ESP bytes of those packets (header to ICV; no IP or NAT-T UDP header).
    pub esp_bytes_out: u64,
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
    pub(crate) fn ios(self) -> &'static str {
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
    /// `up`, `registering`, `waiting_for_sa` or `standby` (in reserve: its cluster has
    /// `max-connections` better NHSs).
    pub state: NhrpPeerState,
    pub expires_in_secs: Option<u64>,
    /// Current registration retransmission wait; 0 when none.
    pub retry_wait_secs: u64,
    /// IKE toward this NHS is held down after failed setups: the next attempt is in this
    /// many seconds; `null` when not held down.
    #[serde(default)]
    pub ike_retry_in_secs: Option<u64>,
    /// Why the last IKE setup toward it failed (`authentication_failed`, `refused`,
    /// `timeout`); `null` when none failed since the last success or reset.
    #[serde(default)]
    pub ike_last_failure: Option<String>,
    /// Cisco's NHS status (`show ip nhrp nhs`): `UP`, `PROBE` (registration requests out,
    /// none answered; or in reserve and probed: better than a registered NHS of its cluster)
    /// or `DOWN` (in reserve and not probed, too).
    #[serde(default)]
    pub status: NhsUpDown,
    /// `ip nhrp nhs … priority`: lower is preferred.
    #[serde(default)]
    pub priority: u8,
    /// Traffic without an NHRP mapping of its own goes to this NHS now.
    #[serde(default)]
    pub preferred: bool,
    /// `ip nhrp nhs … cluster`: its NHS cluster (0: the default one).
    #[serde(default)]
    pub cluster: u8,
}

/// An NHS's status as IOS names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NhsUpDown {
    /// Registered.
    Up,
    /// Registration requests sent, none answered yet.
    Probe,
    /// Neither: no SA, or given up until the next retry.
    #[default]
    Down,
}

impl NhsUpDown {
    /// From the registration state.
    pub fn of(state: NhrpPeerState) -> Self {
        match state {
            NhrpPeerState::Up => Self::Up,
            NhrpPeerState::Registering => Self::Probe,
            _ => Self::Down,
        }
    }

    pub(crate) fn text(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Probe => "PROBE",
            Self::Down => "DOWN",
        }
    }
}

/// A peer whose IKE setups failed and that is held down (`show ike`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct IkeBackoff {
    /// Peer NBMA address.
    pub peer: IpAddr,
    /// Consecutive failed setups.
    pub failures: u32,
    /// Seconds until the next attempt is allowed (0 when the hold-down ended).
    pub next_attempt_in_secs: u64,
    /// `authentication_failed`, `refused` or `timeout`; `null` for a hold-down that follows
    /// a peer's DELETE or death rather than a failed setup.
    pub last_failure: Option<String>,
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
    /// Peers held down after failed setups (one retry discipline for every initiation).
    #[serde(default)]
    pub backoff: Vec<IkeBackoff>,
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
    /// Inner packets sealed and handed to the underlay.
    pub tx_packets: u64,
    /// Their inner bytes (before GRE and ESP).
    pub tx_inner_bytes: u64,
    /// The bytes of the ESP packets that carried them (header to ICV).
    pub tx_esp_bytes: u64,
    /// Inner packets that passed ESP and GRE.
    pub rx_packets: u64,
    /// Their inner bytes (after ESP and GRE).
    pub rx_inner_bytes: u64,
    /// The bytes of the ESP packets that carried them (header to ICV).
    pub rx_esp_bytes: u64,
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
