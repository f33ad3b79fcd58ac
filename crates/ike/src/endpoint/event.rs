//! The endpoint's public view (RFC 7296 §1): what the daemon sends
//! ([`Transmit`]), installs ([`ChildSaInstalled`]), is told ([`Event`]) and
//! may inspect ([`IkeSaInfo`]).

use super::*;

/// Identifies an IKE SA: our own SPI for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

impl core::fmt::Display for IkeSaId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Our address and port to send from.
    pub local: SocketAddr,
    /// Destination.
    pub remote: SocketAddr,
    /// The IKE message, without the non-ESP marker.
    pub bytes: Vec<u8>,
}

impl Transmit {
    /// True when the datagram goes over the NAT-T port, where the daemon
    /// MUST prefix the four-byte non-ESP marker (RFC 3948 §2.2).
    pub fn needs_non_esp_marker(&self, natt_port: u16) -> bool {
        self.local.port() == natt_port || self.remote.port() == natt_port
    }
}

/// IPsec mode of a Child SA. Only transport mode is ever installed: GRE
/// between NBMA addresses must not silently become tunnel mode
/// (docs/interop-notes.md §19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ESP transport mode (RFC 4303 §3.1.1).
    Transport,
}

/// A Child SA for the daemon's ESP SA table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaInstalled {
    /// Owning IKE SA.
    pub ike_sa: IkeSaId,
    /// SPI of the inbound SA (we chose it).
    pub spi_in: u32,
    /// SPI of the outbound SA (the peer chose it).
    pub spi_out: u32,
    /// Inbound key ‖ salt (36 bytes, RFC 4106 §8.1).
    pub key_in: Secret,
    /// Outbound key ‖ salt.
    pub key_out: Secret,
    /// Always transport.
    pub mode: Mode,
    /// Extended sequence numbers.
    pub esn: bool,
    /// ESP must be UDP-encapsulated (RFC 3948) between `local` and `remote`.
    pub udp_encap: bool,
    /// Our IKE address and port (the ESP-in-UDP source when encapsulating).
    pub local: SocketAddr,
    /// The peer's observed address and port.
    pub remote: SocketAddr,
    /// Inbound SPI of the SA this one replaces (child rekey).
    pub replaces: Option<u32>,
    /// We initiated the exchange that created it. The responder of a rekey installs first
    /// (when it sends its response) and the initiator only when that response arrives, so a
    /// responder that sent on the new SA at once could reach the initiator before it can
    /// decrypt: the node keeps sending on the old SA until the initiator shows it is ready
    /// (RFC 7296 §2.8 leaves the switch-over to the implementation).
    pub initiator: bool,
}

impl ChildSaInstalled {
    /// The 4-byte salt of the inbound key.
    pub fn salt_in(&self) -> &[u8] {
        self.key_in.expose().get(32..).unwrap_or_default()
    }
    /// The 4-byte salt of the outbound key.
    pub fn salt_out(&self) -> &[u8] {
        self.key_out.expose().get(32..).unwrap_or_default()
    }
}

impl DownReason {
    /// The name in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DeletedByPeer => "deleted_by_peer",
            Self::DeletedLocally => "deleted_locally",
            Self::Timeout => "timeout",
            Self::Replaced => "replaced_by_initial_contact",
            Self::Rekeyed => "rekeyed",
        }
    }
}

impl core::fmt::Display for DownReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an IKE SA went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The peer sent DELETE.
    DeletedByPeer,
    /// We deleted it (command or hard lifetime).
    DeletedLocally,
    /// Requests went unanswered (§2.4).
    Timeout,
    /// The peer sent INITIAL_CONTACT from a new IKE SA (§2.4).
    Replaced,
    /// Replaced by a rekeyed IKE SA (§2.18).
    Rekeyed,
}

/// Something the daemon must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An IKE SA is authenticated.
    IkeSaUp {
        /// The SA.
        sa: IkeSaId,
        /// Our address.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// The peer's authenticated identity.
        remote_id: Identification,
        /// We initiated it.
        initiator: bool,
        /// We are behind a NAT.
        nat_local: bool,
        /// The peer is behind a NAT.
        nat_remote: bool,
    },
    /// An IKE SA was rekeyed; its Child SAs now belong to `new`.
    IkeSaRekeyed {
        /// Replaced SA.
        old: IkeSaId,
        /// New SA.
        new: IkeSaId,
    },
    /// An IKE SA is gone (its Child SAs are reported deleted separately).
    IkeSaDown {
        /// The SA.
        sa: IkeSaId,
        /// The peer.
        remote: SocketAddr,
        /// Why.
        reason: DownReason,
    },
    /// Install this Child SA.
    ChildSaInstalled(ChildSaInstalled),
    /// Remove the ESP SAs with these SPIs.
    ChildSaDeleted {
        /// Owning IKE SA.
        ike_sa: IkeSaId,
        /// Inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
        /// The peer.
        remote: SocketAddr,
    },
    /// Under NAT-T the peer's address or port changed (its NAT gave it a new mapping), seen
    /// on an authenticated message (§2.23): its Child SAs' ESP-in-UDP goes to `remote` now.
    PeerMoved {
        /// The SA.
        sa: IkeSaId,
        /// The address and port it moved from.
        from: SocketAddr,
        /// The address and port to send to now.
        remote: SocketAddr,
    },
    /// DPD or another request got no answer: the peer is dead.
    PeerDead {
        /// The SA that timed out.
        sa: IkeSaId,
        /// The peer.
        remote: SocketAddr,
    },
    /// An unprotected INVALID_IKE_SPI answered our request on `sa` from the
    /// peer's address (§2.21.4): the peer may have lost its SAs (restarted).
    /// Unauthenticated, so `sa` is unchanged; the caller may start a new IKE
    /// SA in parallel ([`Endpoint::initiate_replacing`]) and must bound how
    /// often.
    InvalidIkeSpi {
        /// The SA the answer names.
        sa: IkeSaId,
        /// The peer.
        remote: SocketAddr,
    },
    /// A liveness check on the established `sa` went unanswered for one retransmission
    /// interval (§2.4), and nothing else (ESP the caller reported, IKE) came from the peer
    /// since it began. A peer that restarted and says nothing about SPIs it does not know
    /// (strongSwan and the Linux kernel send neither INVALID_IKE_SPI nor INVALID_SPI) looks
    /// like this until the whole DPD budget is spent. `sa` is unchanged and the check goes
    /// on; as for [`Event::InvalidIkeSpi`], the caller may start a new IKE SA in parallel
    /// and must bound how often. Reported once per check.
    ProbeUnanswered {
        /// The SA being checked.
        sa: IkeSaId,
        /// The peer.
        remote: SocketAddr,
    },
    /// Two IKE SAs with one peer, one initiated by each side at about the same time, are
    /// both up (crossed.rs): `kept` stays and `dropped` goes, deleted by us now if
    /// `we_delete` (we initiated it), otherwise by the peer.
    CrossedSetup {
        /// The peer.
        remote: SocketAddr,
        /// The SA both ends keep.
        kept: IkeSaId,
        /// The SA both ends drop.
        dropped: IkeSaId,
        /// We initiated `dropped` and send its DELETE.
        we_delete: bool,
    },
    /// Authentication failed (either direction).
    AuthFailed {
        /// The peer.
        remote: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// IKE SA setup failed before authentication (no proposal, timeout...).
    EstablishFailed {
        /// The peer.
        remote: SocketAddr,
        /// The notify received or caused.
        reason: NotifyType,
    },
    /// IKE SA setup went unanswered through every retransmission (§2.4):
    /// the peer (or the path to it) is silent, it refused nothing.
    EstablishTimedOut {
        /// The peer.
        remote: SocketAddr,
    },
    /// A Child SA could not be created (IKE SA stays up).
    ChildSaFailed {
        /// Owning IKE SA.
        ike_sa: IkeSaId,
        /// The peer.
        remote: SocketAddr,
        /// The error notify.
        reason: NotifyType,
    },
}

/// Errors from commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No IKE or Child SA matches.
    #[error("no such SA")]
    NoSuchSa,
    /// No IKE proposals configured.
    #[error("no IKE proposal configured")]
    NoProposal,
    /// The crypto provider failed.
    #[error("crypto: {0}")]
    Crypto(#[from] dmvpn_crypto::Error),
    /// A message could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] EmitError),
}

/// Where an IKE SA is in its life (RFC 7296 §1.2, §1.4.1), for operators.
/// [`Display`](core::fmt::Display) and [`IkeSaState::as_str`] give the
/// stable names `dmvpnctl` and the status JSON show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IkeSaState {
    /// We initiated; IKE_SA_INIT sent.
    ExpectSaInitResponse,
    /// We answered IKE_SA_INIT; waiting for IKE_AUTH.
    ExpectAuthRequest,
    /// We initiated; IKE_AUTH sent.
    ExpectAuthResponse,
    /// Authenticated.
    Established,
    /// Being deleted (or replaced by a rekeyed SA).
    Deleting,
    /// Gone.
    Closed,
}

impl IkeSaState {
    /// The state's name, as operator output shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExpectSaInitResponse => "ExpectSaInitResponse",
            Self::ExpectAuthRequest => "ExpectAuthRequest",
            Self::ExpectAuthResponse => "ExpectAuthResponse",
            Self::Established => "Established",
            Self::Deleting => "Deleting",
            Self::Closed => "Closed",
        }
    }
}

impl core::fmt::Display for IkeSaState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of [`IkeSaState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown IKE SA state {0:?}")]
pub struct UnknownIkeSaState(pub String);

impl core::str::FromStr for IkeSaState {
    type Err = UnknownIkeSaState;

    /// Parses a name [`IkeSaState::as_str`] gives.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::ExpectSaInitResponse,
            Self::ExpectAuthRequest,
            Self::ExpectAuthResponse,
            Self::Established,
            Self::Deleting,
            Self::Closed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| UnknownIkeSaState(s.to_owned()))
    }
}

/// Read-only view of an IKE SA for `dmvpnctl show sa`.
#[derive(Debug, Clone)]
pub struct IkeSaInfo {
    /// Our SPI.
    pub id: IkeSaId,
    /// Where the SA is in its life (Display gives the state's name).
    pub state: IkeSaState,
    /// Our address.
    pub local: SocketAddr,
    /// Peer address.
    pub remote: SocketAddr,
    /// Initiator SPI.
    pub spi_i: u64,
    /// Responder SPI.
    pub spi_r: u64,
    /// We are the original initiator.
    pub initiator: bool,
    /// Negotiated algorithms.
    pub suite: Option<IkeSuite>,
    /// Peer identity once authenticated.
    pub remote_id: Option<Identification>,
    /// Age.
    pub age: Duration,
    /// Time until rekey.
    pub rekey_in: Option<Duration>,
    /// We are behind NAT.
    pub nat_local: bool,
    /// Peer is behind NAT.
    pub nat_remote: bool,
    /// Child SAs.
    pub children: Vec<ChildSaInfo>,
}

/// Read-only view of a Child SA.
#[derive(Debug, Clone)]
pub struct ChildSaInfo {
    /// Inbound SPI.
    pub spi_in: u32,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Mode.
    pub mode: Mode,
    /// ESN.
    pub esn: bool,
    /// UDP encapsulation.
    pub udp_encap: bool,
    /// Age.
    pub age: Duration,
    /// Time until rekey.
    pub rekey_in: Option<Duration>,
}
