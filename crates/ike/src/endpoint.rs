//! The sans-IO IKEv2 endpoint: IKE_SA_INIT and IKE_AUTH (RFC 7296 §1.2,
//! §2.15), CREATE_CHILD_SA (§1.3, §2.8, §2.17, §2.18), INFORMATIONAL (§1.4,
//! §2.4), message IDs and retransmission (§2.1–2.3), cookies (§2.6),
//! INVALID_KE_PAYLOAD (§1.2, §2.7), NAT traversal (§2.23, §2.23.1),
//! simultaneous rekeying (§2.8.1) and fragment reassembly (RFC 7383 §2.6).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dmvpn_crypto::{AesGcm256, DhAlg, DhPrivate, PrfAlg, Rng, Secret, prf::constant_time_eq};
use dmvpn_wire::Reader;

use crate::codes::*;
#[cfg(test)]
use crate::config::EspProposal;
use crate::config::{Config, DpdMode};
use crate::keys::{IkeKeys, child_keys, nat_hash, psk_auth};
use crate::message::*;
use crate::proposal::{self, EspSuite, IkeSuite};
use crate::sk;

/// Nonce length we send: at least half the PRF key size (§2.10); 32 bytes
/// covers SHA2-512's 256-bit strength.
const NONCE_LEN: usize = 32;
/// How many INVALID_KE_PAYLOAD / COOKIE round trips we follow before giving
/// up, so a misbehaving responder cannot keep us looping.
const MAX_INIT_RETRIES: u8 = 3;
/// How long an IKE SA replaced by a peer-initiated rekey waits for the
/// peer's DELETE before we drop it ourselves.
const SUPERSEDED_GRACE: Duration = Duration::from_secs(30);
/// Most fragments we buffer for one message (RFC 7383 §2.6 lets us bound it).
const MAX_FRAGMENTS: u16 = 32;
/// Unprotected error notifies (INVALID_IKE_SPI, INVALID_MAJOR_VERSION) we
/// send per second at most: §2.21.4 lets us answer unknown SPIs but such
/// answers must not make us a reflector.
const UNPROTECTED_NOTIFIES_PER_SEC: u32 = 10;
/// §2.6: the cookie secret SHOULD be changed periodically; this often.
const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// §2.6: cookies from the previous secret are accepted this long after a
/// change, so an initiator caught mid-exchange is not refused.
const COOKIE_PREVIOUS_GRACE: Duration = Duration::from_secs(60);

/// The responder's cookie secrets (§2.6), rotated lazily as `now` advances.
struct CookieSecrets {
    /// <VersionIDofSecret> of `current`, the cookie's first octet.
    version: u8,
    current: [u8; 32],
    /// When `current` came into use; `None` until the first cookie.
    since: Option<Instant>,
    /// The version before `current`, still accepted during the grace.
    previous: Option<(u8, [u8; 32])>,
}

impl CookieSecrets {
    fn new(rng: &mut dyn Rng) -> Self {
        let mut current = [0u8; 32];
        rng.fill(&mut current);
        Self {
            version: 0,
            current,
            since: None,
            previous: None,
        }
    }

    /// Replaces the secret once it is `COOKIE_SECRET_LIFETIME` old, keeping
    /// the old one (if it only just expired) for `COOKIE_PREVIOUS_GRACE`.
    fn rotate(&mut self, now: Instant, rng: &mut dyn Rng) {
        let Some(since) = self.since else {
            self.since = Some(now);
            return;
        };
        let age = now.saturating_duration_since(since);
        if age < COOKIE_SECRET_LIFETIME {
            return;
        }
        let mut fresh = [0u8; 32];
        rng.fill(&mut fresh);
        let old = std::mem::replace(&mut self.current, fresh);
        // Cookies handed out just before the change stay valid a little;
        // a secret unused for a whole extra period has no such cookies.
        self.previous =
            (age < COOKIE_SECRET_LIFETIME + COOKIE_PREVIOUS_GRACE).then_some((self.version, old));
        self.version = self.version.wrapping_add(1);
        self.since = Some(now);
    }

    /// The secret for a cookie's version octet, if still accepted.
    fn for_version(&self, version: u8, now: Instant) -> Option<&[u8; 32]> {
        if version == self.version {
            return Some(&self.current);
        }
        let within_grace = self
            .since
            .is_some_and(|s| now.saturating_duration_since(s) < COOKIE_PREVIOUS_GRACE);
        match &self.previous {
            Some((v, secret)) if *v == version && within_grace => Some(secret),
            _ => None,
        }
    }
}

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
/// (wire-notes 19).
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

/// Why an IKE SA went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// DPD or another request got no answer: the peer is dead.
    PeerDead {
        /// The SA that timed out.
        sa: IkeSaId,
        /// The peer.
        remote: SocketAddr,
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
    Encode(#[from] ParseError),
}

/// Read-only view of an IKE SA for `dmvpnctl show sa`.
#[derive(Debug, Clone)]
pub struct IkeSaInfo {
    /// Our SPI.
    pub id: IkeSaId,
    /// State name.
    pub state: &'static str,
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

// ---------------------------------------------------------------------------
// Per-SA state.

/// Initiator, IKE_SA_INIT sent.
struct ExpectSaInitResponse {
    dh: DhPrivate,
    nonce_i: Vec<u8>,
    cookie: Option<Vec<u8>>,
    retries: u8,
}

/// Responder, IKE_SA_INIT answered.
struct ExpectAuthRequest {
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    deadline: Instant,
}

/// Initiator, IKE_AUTH sent.
struct ExpectAuthResponse {
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    init_response: Vec<u8>,
    child_spi: u32,
}

/// Authenticated; exchanges run one at a time (window size 1, §2.3).
struct Established {
    rekey_at: Instant,
    expire_at: Instant,
}

/// Waiting for the answer to our DELETE, or (superseded by a peer's rekey)
/// for the peer's DELETE.
struct Deleting {
    deadline: Instant,
    /// Set when the peer rekeyed this IKE SA while our own rekey of it was
    /// in flight (§2.8.1): which new SA survives is settled once our
    /// exchange completes.
    collision: Option<RekeyCollision>,
}

/// The peer's half of a simultaneous IKE SA rekey (§2.8.1, §2.8.2).
struct RekeyCollision {
    /// The IKE SA the peer's exchange created (the children now live there).
    peer_new: u64,
    /// Ni and Nr of the peer's exchange.
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
}

enum State {
    ExpectSaInitResponse(ExpectSaInitResponse),
    ExpectAuthRequest(ExpectAuthRequest),
    ExpectAuthResponse(ExpectAuthResponse),
    Established(Established),
    Deleting(Deleting),
    /// Terminal: the SA is removed after the current step.
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectSaInitResponse(_) => "ExpectSaInitResponse",
            Self::ExpectAuthRequest(_) => "ExpectAuthRequest",
            Self::ExpectAuthResponse(_) => "ExpectAuthResponse",
            Self::Established(_) => "Established",
            Self::Deleting(_) => "Deleting",
            Self::Closed => "Closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildStatus {
    Active,
    /// Our CREATE_CHILD_SA rekeying it is in flight.
    Rekeying,
    /// A replacement exists; DELETE pending.
    Replaced,
}

struct Child {
    spi_in: u32,
    spi_out: u32,
    suite: EspSuite,
    created: Instant,
    rekey_at: Instant,
    expire_at: Instant,
    status: ChildStatus,
    /// Nonces of a peer's rekey of this child we answered while rekeying it
    /// ourselves (§2.8.1), with the new child's inbound SPI.
    peer_rekey: Option<(u32, Vec<u8>, Vec<u8>)>,
}

enum Req {
    SaInit,
    Auth,
    Dpd,
    DeleteIke,
    DeleteChild(Vec<u32>),
    CreateChild {
        rekey_of: Option<u32>,
        spi_in: u32,
        nonce_i: Vec<u8>,
        dh: Option<DhPrivate>,
    },
    RekeyIke {
        new_spi: u64,
        nonce_i: Vec<u8>,
        dh: DhPrivate,
    },
}

struct Pending {
    message_id: u32,
    bytes: Vec<u8>,
    tries: u32,
    next_at: Instant,
    req: Req,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Dpd,
    DeleteIke,
    DeleteChild(u32),
    RekeyChild(u32),
    RekeyIke,
}

struct Reassembly {
    message_id: u32,
    total: u16,
    first: PayloadType,
    parts: Vec<Option<Vec<u8>>>,
}

struct IkeSa {
    id: u64,
    spi_i: u64,
    spi_r: u64,
    initiator: bool,
    local: SocketAddr,
    remote: SocketAddr,
    state: State,
    suite: Option<IkeSuite>,
    keys: Option<IkeKeys>,
    remote_id: Option<Identification>,
    children: Vec<Child>,
    next_request_id: u32,
    pending: Option<Pending>,
    queue: VecDeque<Queued>,
    expect_request_id: u32,
    last_response: Option<(u32, Vec<u8>)>,
    iv_counter: u64,
    nat_local: bool,
    nat_remote: bool,
    created: Instant,
    last_rx: Instant,
    last_traffic_out: Option<Instant>,
    /// When our last DPD probe went out (or the SA came up): periodic DPD
    /// probes every `delay` from here.
    last_probe: Instant,
    reassembly: Option<Reassembly>,
    /// Replaced by a rekeyed IKE SA (§2.18), or a redundant one from a
    /// rekey collision (§2.8.1): its end is reported as
    /// [`DownReason::Rekeyed`].
    superseded: bool,
}

impl IkeSa {
    fn new(
        id: u64,
        initiator: bool,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
        state: State,
    ) -> Self {
        Self {
            id,
            spi_i: if initiator { id } else { 0 },
            spi_r: if initiator { 0 } else { id },
            initiator,
            local,
            remote,
            state,
            suite: None,
            keys: None,
            remote_id: None,
            children: Vec::new(),
            next_request_id: 0,
            pending: None,
            queue: VecDeque::new(),
            expect_request_id: 0,
            last_response: None,
            iv_counter: 0,
            nat_local: false,
            nat_remote: false,
            created: now,
            last_rx: now,
            last_traffic_out: None,
            last_probe: now,
            reassembly: None,
            superseded: false,
        }
    }

    fn flags(&self, response: bool) -> u8 {
        let mut f = 0;
        if self.initiator {
            f |= flags::INITIATOR;
        }
        if response {
            f |= flags::RESPONSE;
        }
        f
    }

    fn out_key(&self) -> Option<AesGcm256> {
        let k = self.keys.as_ref()?;
        AesGcm256::new(if self.initiator {
            k.sk_ei.expose()
        } else {
            k.sk_er.expose()
        })
        .ok()
    }

    fn in_key(&self) -> Option<AesGcm256> {
        let k = self.keys.as_ref()?;
        AesGcm256::new(if self.initiator {
            k.sk_er.expose()
        } else {
            k.sk_ei.expose()
        })
        .ok()
    }

    fn seal(
        &mut self,
        exchange: ExchangeType,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Option<Vec<u8>> {
        let key = self.out_key()?;
        self.iv_counter = self.iv_counter.wrapping_add(1);
        sk::seal(
            self.spi_i,
            self.spi_r,
            exchange,
            self.flags(response),
            message_id,
            payloads,
            &key,
            self.iv_counter.to_be_bytes(),
        )
        .ok()
    }

    fn prf(&self) -> Option<PrfAlg> {
        self.keys.as_ref().map(|k| k.prf)
    }

    fn udp_encap(&self) -> bool {
        self.nat_local || self.nat_remote
    }

    fn child_by_in(&mut self, spi: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.spi_in == spi)
    }
}

// ---------------------------------------------------------------------------

/// Outcome of processing a decrypted request.
type Reply = Vec<Payload>;

fn notify(ty: NotifyType) -> Payload {
    Payload::Notify(Notify::new(ty, Vec::new()))
}

fn nonce_of(p: &[Payload]) -> Option<&Vec<u8>> {
    p.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n),
        _ => None,
    })
}

fn sa_of(p: &[Payload]) -> Option<&Vec<Proposal>> {
    p.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

fn ke_of(p: &[Payload]) -> Option<&KeyExchange> {
    p.iter().find_map(|p| match p {
        Payload::Ke(k) => Some(k),
        _ => None,
    })
}

fn ts_of(p: &[Payload]) -> (Option<&Vec<TrafficSelector>>, Option<&Vec<TrafficSelector>>) {
    let i = p.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    });
    let r = p.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    });
    (i, r)
}

fn first_error(p: &[Payload]) -> Option<NotifyType> {
    notifies(p).map(|n| n.ty).find(|t| t.is_error())
}

/// §2.23.1: in transport mode behind a NAT the peer's selector names its
/// private address; accept any single host then, else require the address
/// the IKE SA runs over.
fn pick_ts(list: &[TrafficSelector], addr: IpAddr, natted: bool) -> Option<TrafficSelector> {
    if let Some(t) = list.iter().find(|t| t.admits_gre_host(addr)) {
        // Narrow to the one host and GRE (§2.9).
        return Some(TrafficSelector::gre_host(if t.start == t.end {
            t.start
        } else {
            addr
        }));
    }
    if natted {
        return list
            .iter()
            .find(|t| {
                t.start == t.end
                    && (t.ip_protocol == 0 || t.ip_protocol == 47)
                    && t.start.is_ipv4() == addr.is_ipv4()
            })
            .map(|t| TrafficSelector::gre_host(t.start));
    }
    None
}

/// The sans-IO IKEv2 endpoint owning every IKE SA of the daemon.
pub struct Endpoint {
    config: Config,
    rng: Box<dyn Rng>,
    sas: HashMap<u64, IkeSa>,
    half_open: HashMap<(SocketAddr, u64), u64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    cookies: CookieSecrets,
    /// Start of the current one-second window and unprotected notifies sent
    /// in it.
    unprotected_budget: (Option<Instant>, u32),
}

impl core::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("ike_sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint; `rng` supplies SPIs, nonces, D-H keys and IVs' salt.
    pub fn new(config: Config, mut rng: Box<dyn Rng>) -> Self {
        let cookies = CookieSecrets::new(rng.as_mut());
        Self {
            config,
            rng,
            sas: HashMap::new(),
            half_open: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cookies,
            unprotected_budget: (None, 0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- randomness -------------------------------------------------------

    fn new_spi(&mut self) -> u64 {
        loop {
            let s = self.rng.next_u64();
            if s != 0 && !self.sas.contains_key(&s) {
                return s;
            }
        }
    }

    fn new_child_spi(&mut self) -> u32 {
        loop {
            // SPIs 1..=255 are reserved by IANA (RFC 4303 §2.1).
            let s = self.rng.next_u32();
            if s >= 256
                && !self
                    .sas
                    .values()
                    .any(|sa| sa.children.iter().any(|c| c.spi_in == s))
            {
                return s;
            }
        }
    }

    fn nonce(&mut self) -> Vec<u8> {
        let mut n = vec![0u8; NONCE_LEN];
        self.rng.fill(&mut n);
        n
    }

    fn jitter(&mut self, margin: Duration) -> Duration {
        let max = margin
            .as_millis()
            .saturating_mul(u128::from(self.config.lifetimes.jitter_percent))
            / 100;
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.rng.next_u64() % (max + 1))
    }

    fn rekey_deadline(&mut self, now: Instant, lifetime: Duration, margin: Duration) -> Instant {
        let lead = margin + self.jitter(margin);
        now + lifetime.saturating_sub(lead)
    }

    // ---- output helpers ---------------------------------------------------

    fn tx(&mut self, sa: &IkeSa, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit {
            local: sa.local,
            remote: sa.remote,
            bytes,
        });
    }

    fn retransmit_interval(&self, req: &Req, tries: u32) -> Duration {
        if let (Req::Dpd, Some(d)) = (req, self.config.dpd) {
            return d.retry;
        }
        let r = self.config.retransmit;
        let shift = tries.saturating_sub(1).min(16);
        r.initial.saturating_mul(1 << shift).min(r.max_interval)
    }

    fn max_tries(&self, req: &Req) -> u32 {
        match (req, self.config.dpd) {
            (Req::Dpd, Some(d)) => d.max_tries,
            _ => self.config.retransmit.max_tries,
        }
    }

    /// Sends an encrypted request and arms its retransmission.
    fn request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        payloads: &[Payload],
        req: Req,
    ) {
        let id = sa.next_request_id;
        let Some(bytes) = sa.seal(exchange, false, id, payloads) else {
            return;
        };
        sa.next_request_id = id.wrapping_add(1);
        let next_at = now + self.retransmit_interval(&req, 1);
        sa.pending = Some(Pending {
            message_id: id,
            bytes: bytes.clone(),
            tries: 1,
            next_at,
            req,
        });
        self.tx(sa, bytes);
    }

    /// Sends an encrypted response and caches it for retransmitted requests
    /// (§2.1: the responder MUST answer a retransmission from its cache).
    fn respond(
        &mut self,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload],
    ) {
        let Some(bytes) = sa.seal(exchange, true, message_id, payloads) else {
            return;
        };
        sa.last_response = Some((message_id, bytes.clone()));
        self.tx(sa, bytes);
    }

    fn local_id(&self, sa: &IkeSa) -> Identification {
        self.config
            .local_id
            .clone()
            .unwrap_or_else(|| Identification::from_ip(sa.local.ip()))
    }

    // ---- commands ---------------------------------------------------------

    /// Starts an IKE SA (and its first, transport-mode Child SA) to `remote`
    /// from `local` (normally both on port 500).
    pub fn initiate(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, Error> {
        let first = *self.config.ike_proposals.first().ok_or(Error::NoProposal)?;
        let id = self.new_spi();
        let dh = DhPrivate::generate(first.dh, self.rng.as_mut())?;
        let nonce_i = self.nonce();
        let mut sa = IkeSa::new(
            id,
            true,
            local,
            remote,
            now,
            State::ExpectSaInitResponse(ExpectSaInitResponse {
                dh,
                nonce_i,
                cookie: None,
                retries: 0,
            }),
        );
        self.send_sa_init(now, &mut sa)?;
        self.sas.insert(id, sa);
        Ok(IkeSaId(id))
    }

    fn send_sa_init(&mut self, now: Instant, sa: &mut IkeSa) -> Result<(), Error> {
        let State::ExpectSaInitResponse(st) = &sa.state else {
            return Ok(());
        };
        let mut payloads = Vec::new();
        if let Some(c) = &st.cookie {
            // §2.6: the cookie MUST be the first payload.
            payloads.push(Payload::Notify(Notify::new(NotifyType::COOKIE, c.clone())));
        }
        payloads.push(Payload::Sa(proposal::ike_offer(
            &self.config.ike_proposals,
            None,
        )));
        payloads.push(Payload::Ke(KeyExchange {
            dh_group: DhId::from(st.dh.alg()),
            data: st.dh.public_value().to_vec(),
        }));
        payloads.push(Payload::Nonce(st.nonce_i.clone()));
        let src = if self.config.force_encap {
            let mut b = vec![0u8; 20];
            self.rng.fill(&mut b);
            b
        } else {
            nat_hash(sa.spi_i, 0, sa.local).to_vec()
        };
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            src,
        )));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_hash(sa.spi_i, 0, sa.remote).to_vec(),
        )));
        let msg = Message {
            header: Header {
                spi_i: sa.spi_i,
                spi_r: 0,
                next_payload: PayloadType::NONE,
                version: 0x20,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
                length: 0,
            },
            payloads,
        };
        let bytes = msg.emit()?;
        sa.next_request_id = 1;
        sa.pending = Some(Pending {
            message_id: 0,
            bytes: bytes.clone(),
            tries: 1,
            next_at: now + self.retransmit_interval(&Req::SaInit, 1),
            req: Req::SaInit,
        });
        self.tx(sa, bytes);
        Ok(())
    }

    /// Deletes every IKE SA with `peer` (sends DELETE, §1.4.1).
    pub fn delete(&mut self, now: Instant, peer: IpAddr) -> Result<(), Error> {
        let ids: Vec<u64> = self
            .sas
            .values()
            .filter(|s| s.remote.ip() == peer)
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            return Err(Error::NoSuchSa);
        }
        for id in ids {
            self.delete_sa(now, IkeSaId(id))?;
        }
        Ok(())
    }

    /// Deletes one IKE SA and its Child SAs.
    pub fn delete_sa(&mut self, now: Instant, sa: IkeSaId) -> Result<(), Error> {
        let mut s = self.sas.remove(&sa.0).ok_or(Error::NoSuchSa)?;
        if matches!(s.state, State::Established(_)) {
            s.queue.push_front(Queued::DeleteIke);
            self.pump(now, &mut s);
        } else {
            self.close(&mut s, DownReason::DeletedLocally);
        }
        self.put_back(s);
        Ok(())
    }

    /// Rekeys the Child SA with inbound SPI `spi_in` now (ESP sequence
    /// numbers near exhaustion, RFC 4303 §3.3.3).
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32) -> Result<(), Error> {
        let id = self
            .sas
            .values()
            .find(|s| s.children.iter().any(|c| c.spi_in == spi_in))
            .map(|s| s.id)
            .ok_or(Error::NoSuchSa)?;
        let mut s = self.sas.remove(&id).ok_or(Error::NoSuchSa)?;
        if !s.queue.contains(&Queued::RekeyChild(spi_in)) {
            s.queue.push_back(Queued::RekeyChild(spi_in));
        }
        self.pump(now, &mut s);
        self.put_back(s);
        Ok(())
    }

    /// Rekeys an IKE SA now (§2.18).
    pub fn rekey_ike(&mut self, now: Instant, sa: IkeSaId) -> Result<(), Error> {
        let mut s = self.sas.remove(&sa.0).ok_or(Error::NoSuchSa)?;
        if !s.queue.contains(&Queued::RekeyIke) {
            s.queue.push_back(Queued::RekeyIke);
        }
        self.pump(now, &mut s);
        self.put_back(s);
        Ok(())
    }

    /// Sends a liveness check now.
    pub fn probe(&mut self, now: Instant, sa: IkeSaId) -> Result<(), Error> {
        let mut s = self.sas.remove(&sa.0).ok_or(Error::NoSuchSa)?;
        s.queue.push_back(Queued::Dpd);
        self.pump(now, &mut s);
        self.put_back(s);
        Ok(())
    }

    /// The daemon sent ESP to `peer` (drives on-demand DPD).
    pub fn note_outbound(&mut self, now: Instant, peer: IpAddr) {
        for s in self.sas.values_mut().filter(|s| s.remote.ip() == peer) {
            s.last_traffic_out = Some(now);
        }
    }

    /// The daemon received authenticated ESP from `peer` (proof of life).
    pub fn note_inbound(&mut self, now: Instant, peer: IpAddr) {
        for s in self.sas.values_mut().filter(|s| s.remote.ip() == peer) {
            s.last_rx = s.last_rx.max(now);
        }
    }

    /// Replaces the configuration (proposals, keyring, lifetimes, DPD) for what happens from
    /// now on — SAs already up keep their keys. Returns the IKE SAs whose peer the new keyring
    /// has no key for, which the caller deletes (a reload must not keep an SA that the new
    /// configuration would refuse).
    pub fn set_config(&mut self, config: Config) -> Vec<IkeSaId> {
        self.config = config;
        self.sas
            .values()
            .filter(|s| {
                self.config
                    .keyring
                    .lookup(s.remote.ip(), s.remote_id.as_ref())
                    .is_none()
            })
            .map(|s| IkeSaId(s.id))
            .collect()
    }

    /// The SK_ei / SK_er of an established IKE SA (key ‖ salt each), for the operator's
    /// opt-in Wireshark key export (`ikev2_decryption_table`). `None` before IKE_SA_INIT
    /// completes. Returns (SPIi, SPIr, SK_ei, SK_er).
    pub fn export_sk_e(&self, sa: IkeSaId) -> Option<(u64, u64, Secret, Secret)> {
        let s = self.sas.get(&sa.0)?;
        let k = s.keys.as_ref()?;
        Some((s.spi_i, s.spi_r, k.sk_ei.clone(), k.sk_er.clone()))
    }

    /// Introspection for the operator tool.
    pub fn ike_sas(&self, now: Instant) -> Vec<IkeSaInfo> {
        let mut v: Vec<IkeSaInfo> = self
            .sas
            .values()
            .map(|s| IkeSaInfo {
                id: IkeSaId(s.id),
                state: s.state.name(),
                local: s.local,
                remote: s.remote,
                spi_i: s.spi_i,
                spi_r: s.spi_r,
                initiator: s.initiator,
                suite: s.suite,
                remote_id: s.remote_id.clone(),
                age: now.saturating_duration_since(s.created),
                rekey_in: match &s.state {
                    State::Established(e) => Some(e.rekey_at.saturating_duration_since(now)),
                    _ => None,
                },
                nat_local: s.nat_local,
                nat_remote: s.nat_remote,
                children: s
                    .children
                    .iter()
                    .map(|c| ChildSaInfo {
                        spi_in: c.spi_in,
                        spi_out: c.spi_out,
                        mode: Mode::Transport,
                        esn: c.suite.esn,
                        udp_encap: s.udp_encap(),
                        age: now.saturating_duration_since(c.created),
                        rekey_in: Some(c.rekey_at.saturating_duration_since(now)),
                    })
                    .collect(),
            })
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    // ---- SA bookkeeping ---------------------------------------------------

    fn put_back(&mut self, sa: IkeSa) {
        if matches!(sa.state, State::Closed) {
            self.half_open.retain(|_, v| *v != sa.id);
        } else {
            self.sas.insert(sa.id, sa);
        }
    }

    /// Tears an SA down locally, reporting its children.
    fn close(&mut self, sa: &mut IkeSa, reason: DownReason) {
        for c in sa.children.drain(..) {
            self.events.push_back(Event::ChildSaDeleted {
                ike_sa: IkeSaId(sa.id),
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                remote: sa.remote,
            });
        }
        let reason = if sa.superseded {
            DownReason::Rekeyed
        } else {
            reason
        };
        if sa.remote_id.is_some() {
            self.events.push_back(Event::IkeSaDown {
                sa: IkeSaId(sa.id),
                remote: sa.remote,
                reason,
            });
        }
        sa.state = State::Closed;
        sa.pending = None;
    }

    #[allow(clippy::too_many_arguments)]
    fn install_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        spi_in: u32,
        spi_out: u32,
        suite: EspSuite,
        keys: crate::keys::ChildKeys,
        replaces: Option<u32>,
    ) {
        // i_to_r is the initiator's outbound (§2.17: initiator→responder
        // first), where "initiator" is the exchange's initiator.
        let (key_in, key_out) = (keys.i_to_r, keys.r_to_i);
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.child, lt.child_margin);
        sa.children.push(Child {
            spi_in,
            spi_out,
            suite,
            created: now,
            rekey_at,
            expire_at: now + lt.child,
            status: ChildStatus::Active,
            peer_rekey: None,
        });
        self.events
            .push_back(Event::ChildSaInstalled(ChildSaInstalled {
                ike_sa: IkeSaId(sa.id),
                spi_in,
                spi_out,
                key_in,
                key_out,
                mode: Mode::Transport,
                esn: suite.esn,
                udp_encap: sa.udp_encap(),
                local: sa.local,
                remote: sa.remote,
                replaces,
            }));
    }

    // ---- input ------------------------------------------------------------

    /// Processes one received IKE datagram (`bytes` without the non-ESP
    /// marker). `local` is the address it arrived on, `remote` its source.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        let header = match Header::parse(&mut Reader::new(bytes)) {
            Ok(h) => h,
            Err(ParseError::MajorVersion(v)) if v > 2 => {
                self.invalid_major_version(now, local, remote, bytes);
                return;
            }
            // §2.5 / §2.21: unparseable headers cannot be answered usefully.
            Err(_) => return,
        };
        if usize::try_from(header.length).ok() != Some(bytes.len()) {
            return;
        }
        if header.exchange == ExchangeType::IKE_SA_INIT && !header.is_response() {
            if header.is_initiator() && header.message_id == 0 {
                self.responder_sa_init(now, local, remote, &header, bytes);
            }
            return;
        }
        // Our SPI is the responder SPI in messages from the original
        // initiator, else the initiator SPI (§3.1 Initiator flag).
        let ours = if header.is_initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        let Some(mut sa) = self.sas.remove(&ours) else {
            // §1.5, §2.21.4: a request outside any IKE SA we know MAY get an
            // unprotected INVALID_IKE_SPI; a response MUST NOT be answered.
            if !header.is_response() {
                self.unprotected_notify(now, local, remote, &header, NotifyType::INVALID_IKE_SPI);
            }
            return;
        };
        let theirs = if sa.initiator {
            header.spi_r
        } else {
            header.spi_i
        };
        let their_expected = if sa.initiator { sa.spi_r } else { sa.spi_i };
        // The I flag MUST match the role (§3.1), and the peer SPI must be
        // the one we know (only unknown while waiting for IKE_SA_INIT).
        let role_ok = header.is_initiator() != sa.initiator;
        let spi_ok = theirs == their_expected
            || (their_expected == 0 && matches!(sa.state, State::ExpectSaInitResponse(_)));
        if role_ok && spi_ok {
            if header.is_response() {
                self.on_response(now, &mut sa, local, remote, &header, bytes);
            } else {
                self.on_request(now, &mut sa, local, remote, &header, bytes);
            }
            if !matches!(sa.state, State::Closed) {
                self.pump(now, &mut sa);
            }
        }
        self.put_back(sa);
    }

    /// §2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>).
    fn cookie_with(
        version: u8,
        secret: &[u8; 32],
        nonce_i: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> Vec<u8> {
        let ip = match remote.ip() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let mut c = vec![version];
        c.extend_from_slice(
            PrfAlg::HmacSha256
                .prf(secret, &[nonce_i, &ip, &spi_i.to_be_bytes()])
                .expose(),
        );
        c
    }

    /// The cookie we hand out now.
    fn cookie_for(&self, nonce_i: &[u8], remote: SocketAddr, spi_i: u64) -> Vec<u8> {
        let c = &self.cookies;
        Self::cookie_with(c.version, &c.current, nonce_i, remote, spi_i)
    }

    /// Whether `cookie` is one we issued with the current secret, or with the
    /// previous one within its grace (§2.6).
    fn cookie_valid(
        &self,
        now: Instant,
        cookie: &[u8],
        nonce_i: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> bool {
        let Some((&version, _)) = cookie.split_first() else {
            return false;
        };
        self.cookies
            .for_version(version, now)
            .is_some_and(|secret| {
                let want = Self::cookie_with(version, secret, nonce_i, remote, spi_i);
                constant_time_eq(cookie, &want)
            })
    }

    /// True if another unprotected notify fits this second's budget.
    fn unprotected_allowed(&mut self, now: Instant) -> bool {
        let (start, sent) = &mut self.unprotected_budget;
        match start {
            Some(s) if now.saturating_duration_since(*s) < Duration::from_secs(1) => {}
            _ => {
                *start = Some(now);
                *sent = 0;
            }
        }
        if *sent >= UNPROTECTED_NOTIFIES_PER_SEC {
            return false;
        }
        *sent += 1;
        true
    }

    /// An unprotected error notify answering request `h` outside any IKE SA
    /// (§1.5, §2.21.4): sent back to where it came from, with the IKE SPIs
    /// and Message ID copied, the Response flag set and never encrypted.
    /// Rate-limited; the receiver MUST NOT change any SA state for it.
    fn unprotected_notify(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        ty: NotifyType,
    ) {
        if !self.unprotected_allowed(now) {
            return;
        }
        let msg = Message {
            header: Header {
                spi_i: h.spi_i,
                spi_r: h.spi_r,
                next_payload: PayloadType::NONE,
                // §2.5 / §3.10.1: for INVALID_MAJOR_VERSION the header
                // carries the closest version we support: 2.0.
                version: 0x20,
                exchange: h.exchange,
                // We answer as the other party of the request's sender.
                flags: flags::RESPONSE
                    | if h.is_initiator() {
                        0
                    } else {
                        flags::INITIATOR
                    },
                message_id: h.message_id,
                length: 0,
            },
            payloads: vec![notify(ty)],
        };
        if let Ok(bytes) = msg.emit() {
            self.transmits.push_back(Transmit {
                local,
                remote,
                bytes,
            });
        }
    }

    /// §2.5: a message with a higher major version MUST be dropped; an
    /// IKE_SA_INIT request of one MAY (§1.5) get an unprotected
    /// INVALID_MAJOR_VERSION naming 2.0 in its header, which we send.
    fn invalid_major_version(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        // The header fields as §3.1 lays them out; only the version failed.
        let read = || -> Option<Header> {
            let mut r = Reader::new(bytes);
            let spi_i = r.u64().ok()?;
            let spi_r = r.u64().ok()?;
            let next_payload = PayloadType(r.u8().ok()?);
            let version = r.u8().ok()?;
            Some(Header {
                spi_i,
                spi_r,
                next_payload,
                version,
                exchange: ExchangeType(r.u8().ok()?),
                flags: r.u8().ok()?,
                message_id: r.u32().ok()?,
                length: r.u32().ok()?,
            })
        };
        let Some(h) = read() else {
            return;
        };
        if usize::try_from(h.length).ok() != Some(bytes.len())
            || h.exchange != ExchangeType::IKE_SA_INIT
            || h.is_response()
            || !h.is_initiator()
            || h.message_id != 0
            || h.spi_r != 0
        {
            return;
        }
        self.unprotected_notify(now, local, remote, &h, NotifyType::INVALID_MAJOR_VERSION);
    }

    fn plain_reply(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        spi_r: u64,
        payloads: Vec<Payload>,
    ) -> Option<Vec<u8>> {
        let msg = Message {
            header: Header {
                spi_i: h.spi_i,
                spi_r,
                next_payload: PayloadType::NONE,
                version: 0x20,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: flags::RESPONSE,
                message_id: 0,
                length: 0,
            },
            payloads,
        };
        let bytes = msg.emit().ok()?;
        self.transmits.push_back(Transmit {
            local,
            remote,
            bytes: bytes.clone(),
        });
        Some(bytes)
    }

    fn responder_sa_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) {
        // A retransmitted request: answer from the cache (§2.1).
        if let Some(id) = self.half_open.get(&(remote, h.spi_i)) {
            if let Some(sa) = self.sas.get(id) {
                if let Some((0, resp)) = &sa.last_response {
                    let resp = resp.clone();
                    self.transmits.push_back(Transmit {
                        local,
                        remote,
                        bytes: resp,
                    });
                }
            }
            return;
        }
        if h.spi_r != 0 {
            return;
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                // §2.21.1: an error notify in an unprotected response.
                let (ty, data) = e.notify();
                self.plain_reply(
                    local,
                    remote,
                    h,
                    0,
                    vec![Payload::Notify(Notify::new(ty, data))],
                );
                return;
            }
        };
        let p = &msg.payloads;
        let (Some(proposals), Some(ke), Some(nonce_i)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::INVALID_SYNTAX)],
            );
            return;
        };
        // §2.10: nonces are 16..=256 bytes.
        if !(16..=256).contains(&nonce_i.len()) {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::INVALID_SYNTAX)],
            );
            return;
        }
        let half_open = self
            .sas
            .values()
            .filter(|s| matches!(s.state, State::ExpectAuthRequest(_)))
            .count();
        if half_open >= self.config.cookie_threshold {
            self.cookies.rotate(now, self.rng.as_mut());
            let ok = matches!(p.first(), Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE
                && self.cookie_valid(now, &n.data, nonce_i, remote, h.spi_i));
            if !ok {
                let want = self.cookie_for(nonce_i, remote, h.spi_i);
                // §2.6: answer with only the cookie and keep no state.
                self.plain_reply(
                    local,
                    remote,
                    h,
                    0,
                    vec![Payload::Notify(Notify::new(NotifyType::COOKIE, want))],
                );
                return;
            }
        }
        let Some((suite, chosen)) = proposal::select_ike(&self.config.ike_proposals, proposals)
        else {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::NO_PROPOSAL_CHOSEN)],
            );
            return;
        };
        if ke.dh_group != DhId::from(suite.dh) {
            // §1.2: tell the initiator which group we want.
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![Payload::Notify(Notify::new(
                    NotifyType::INVALID_KE_PAYLOAD,
                    suite.dh.ike_group().to_be_bytes().to_vec(),
                ))],
            );
            return;
        }
        let Ok(dh) = DhPrivate::generate(suite.dh, self.rng.as_mut()) else {
            return;
        };
        let Ok(gir) = dh.agree(&ke.data) else {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::INVALID_SYNTAX)],
            );
            return;
        };
        let id = self.new_spi();
        let nonce_r = self.nonce();
        let Ok(keys) = IkeKeys::derive(suite.prf, nonce_i, &nonce_r, gir.expose(), h.spi_i, id)
        else {
            return;
        };
        let (nat_local, nat_remote) = nat_detect(p, h.spi_i, 0, local, remote);
        let mut sa = IkeSa::new(id, false, local, remote, now, State::Closed);
        sa.spi_i = h.spi_i;
        sa.suite = Some(suite);
        sa.keys = Some(keys);
        sa.nat_local = nat_local || self.config.force_encap;
        sa.nat_remote = nat_remote;
        sa.expect_request_id = 1;
        let src = if self.config.force_encap {
            let mut b = vec![0u8; 20];
            self.rng.fill(&mut b);
            b
        } else {
            nat_hash(h.spi_i, id, local).to_vec()
        };
        let reply = vec![
            Payload::Sa(vec![chosen]),
            Payload::Ke(KeyExchange {
                dh_group: DhId::from(suite.dh),
                data: dh.public_value().to_vec(),
            }),
            Payload::Nonce(nonce_r.clone()),
            Payload::Notify(Notify::new(NotifyType::NAT_DETECTION_SOURCE_IP, src)),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_hash(h.spi_i, id, remote).to_vec(),
            )),
        ];
        let Some(resp) = self.plain_reply(local, remote, h, id, reply) else {
            return;
        };
        sa.last_response = Some((0, resp.clone()));
        sa.state = State::ExpectAuthRequest(ExpectAuthRequest {
            nonce_i: nonce_i.clone(),
            nonce_r,
            init_request: bytes.to_vec(),
            init_response: resp,
            deadline: now + self.config.half_open_timeout,
        });
        self.half_open.insert((remote, h.spi_i), id);
        self.sas.insert(id, sa);
    }

    /// Decrypts an SK/SKF message, reassembling fragments (RFC 7383 §2.6).
    /// `None` = drop (integrity failure MUST be silent, §2.21.2) or wait.
    fn decrypt(
        &mut self,
        sa: &mut IkeSa,
        h: &Header,
        bytes: &[u8],
    ) -> Option<Result<Vec<Payload>, ParseError>> {
        let key = sa.in_key()?;
        // Every error of the outer message (no SK, malformed chain, bytes
        // after SK, bad fragment numbers, ICV) comes before or with the
        // integrity check: such a message is not authenticated and MUST be
        // dropped without changing any state (§2.21.2, §2.21.4). Only
        // errors inside the authenticated plaintext are answered.
        let Ok(opened) = sk::open(bytes, &key) else {
            return None;
        };
        let (first, plain) = match opened.fragment {
            None => (opened.first, opened.plaintext),
            Some((n, total)) => {
                if total > MAX_FRAGMENTS {
                    return None;
                }
                let r = match &mut sa.reassembly {
                    Some(r) if r.message_id == h.message_id && r.total == total => r,
                    _ => sa.reassembly.insert(Reassembly {
                        message_id: h.message_id,
                        total,
                        first: PayloadType::NONE,
                        parts: vec![None; usize::from(total)],
                    }),
                };
                if n == 1 {
                    r.first = opened.first;
                }
                if let Some(slot) = r.parts.get_mut(usize::from(n) - 1) {
                    *slot = Some(opened.plaintext);
                }
                if r.parts.iter().any(Option::is_none) {
                    return None;
                }
                let r = sa.reassembly.take()?;
                let plain: Vec<u8> = r.parts.into_iter().flatten().flatten().collect();
                (r.first, plain)
            }
        };
        Some(parse_payloads(first, &plain))
    }

    fn on_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) {
        if let Some((id, resp)) = &sa.last_response {
            if *id == h.message_id {
                let resp = resp.clone();
                self.tx(sa, resp);
                return;
            }
        }
        // §2.3: with window size 1 we only accept the next message ID.
        if h.message_id != sa.expect_request_id {
            return;
        }
        let Some(parsed) = self.decrypt(sa, h, bytes) else {
            return;
        };
        // Authenticated: this is proof of life, and under NAT the peer's
        // current address (§2.23: update on authenticated messages).
        sa.last_rx = now;
        if sa.udp_encap() && (remote != sa.remote || local != sa.local) {
            sa.remote = remote;
            sa.local = local;
        }
        sa.expect_request_id = h.message_id.wrapping_add(1);
        let payloads = match parsed {
            Ok(p) => p,
            Err(e) => {
                let (ty, data) = e.notify();
                let reply = vec![Payload::Notify(Notify::new(ty, data))];
                self.respond(sa, h.exchange, h.message_id, &reply);
                if matches!(sa.state, State::ExpectAuthRequest(_)) {
                    sa.state = State::Closed;
                }
                return;
            }
        };
        let reply = match (h.exchange, &sa.state) {
            (ExchangeType::IKE_AUTH, State::ExpectAuthRequest(_)) => {
                self.responder_auth(now, sa, &payloads)
            }
            (ExchangeType::CREATE_CHILD_SA, State::Established(_)) => {
                self.on_create_child(now, sa, &payloads)
            }
            (ExchangeType::CREATE_CHILD_SA, _) => vec![notify(NotifyType::TEMPORARY_FAILURE)],
            (
                ExchangeType::INFORMATIONAL,
                State::Established(_) | State::Deleting(_) | State::ExpectAuthResponse(_),
            ) => self.on_informational(sa, &payloads),
            _ => return,
        };
        self.respond(sa, h.exchange, h.message_id, &reply);
    }
}

fn nat_detect(
    p: &[Payload],
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> (bool, bool) {
    let src: Vec<&Notify> = notifies(p)
        .filter(|n| n.ty == NotifyType::NAT_DETECTION_SOURCE_IP)
        .collect();
    let dst: Vec<&Notify> = notifies(p)
        .filter(|n| n.ty == NotifyType::NAT_DETECTION_DESTINATION_IP)
        .collect();
    if src.is_empty() || dst.is_empty() {
        return (false, false);
    }
    let want_src = nat_hash(spi_i, spi_r, remote);
    let want_dst = nat_hash(spi_i, spi_r, local);
    let nat_remote = !src.iter().any(|n| n.data == want_src);
    let nat_local = !dst.iter().any(|n| n.data == want_dst);
    (nat_local, nat_remote)
}

// ---------------------------------------------------------------------------
// Exchanges.

impl Endpoint {
    /// Responder side of IKE_AUTH (§1.2, §2.15).
    fn responder_auth(&mut self, now: Instant, sa: &mut IkeSa, p: &[Payload]) -> Reply {
        let State::ExpectAuthRequest(st) = std::mem::replace(&mut sa.state, State::Closed) else {
            return Vec::new();
        };
        let (Some(prf), Some(keys)) = (sa.prf(), sa.keys.clone()) else {
            return Vec::new();
        };
        let idi = p.iter().find_map(|p| match p {
            Payload::IdI(i) => Some(i.clone()),
            _ => None,
        });
        let auth = p.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idi), Some(auth)) = (idi, auth) else {
            // Stays Closed: an IKE_AUTH without ID/AUTH cannot be recovered.
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        };
        let psk = self
            .config
            .keyring
            .lookup(sa.remote.ip(), Some(&idi))
            .cloned();
        let ok = auth.method == AuthMethod::SHARED_KEY_MIC
            && psk.as_ref().is_some_and(|psk| {
                let want = psk_auth(
                    prf,
                    psk.expose(),
                    &st.init_request,
                    &st.nonce_r,
                    &keys.sk_pi,
                    &idi,
                );
                constant_time_eq(want.expose(), &auth.data)
            });
        if !ok {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: format!("peer {idi} AUTH did not verify"),
            });
            // §2.21.2: AUTHENTICATION_FAILED in the (encrypted) response,
            // then the half-open SA is gone.
            return vec![notify(NotifyType::AUTHENTICATION_FAILED)];
        }
        let Some(psk) = psk else { return Vec::new() };
        let idr = self.local_id(sa);
        let my_auth = psk_auth(
            prf,
            psk.expose(),
            &st.init_response,
            &st.nonce_i,
            &keys.sk_pr,
            &idr,
        );
        sa.remote_id = Some(idi.clone());
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.ike, lt.ike_margin);
        sa.state = State::Established(Established {
            rekey_at,
            expire_at: now + lt.ike,
        });
        self.half_open.retain(|_, v| *v != sa.id);
        self.events.push_back(Event::IkeSaUp {
            sa: IkeSaId(sa.id),
            local: sa.local,
            remote: sa.remote,
            remote_id: idi.clone(),
            initiator: false,
            nat_local: sa.nat_local,
            nat_remote: sa.nat_remote,
        });
        if find_notify(p, NotifyType::INITIAL_CONTACT).is_some() {
            self.initial_contact(sa.id, &idi);
        }
        let mut reply = vec![
            Payload::IdR(idr),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY_MIC,
                data: my_auth.expose().to_vec(),
            }),
        ];
        // The first Child SA; failures here leave the IKE SA up (§1.2).
        match self.child_responder(now, sa, p, &st.nonce_i, &st.nonce_r, None, None) {
            Ok(mut c) => reply.append(&mut c),
            Err(ty) => {
                self.events.push_back(Event::ChildSaFailed {
                    ike_sa: IkeSaId(sa.id),
                    remote: sa.remote,
                    reason: ty,
                });
                reply.push(notify(ty));
            }
        }
        reply
    }

    /// §2.4: INITIAL_CONTACT means the peer has no other SAs with us; drop
    /// every other IKE SA authenticated to the same identity.
    fn initial_contact(&mut self, keep: u64, id: &Identification) {
        let stale: Vec<u64> = self
            .sas
            .values()
            .filter(|s| s.id != keep && s.remote_id.as_ref() == Some(id))
            .map(|s| s.id)
            .collect();
        for sid in stale {
            if let Some(mut s) = self.sas.remove(&sid) {
                self.close(&mut s, DownReason::Replaced);
                self.put_back(s);
            }
        }
    }

    /// Builds a responder's Child SA from SA/TS/nonces (IKE_AUTH or
    /// CREATE_CHILD_SA). Returns the reply payloads (without Nr/KE).
    #[allow(clippy::too_many_arguments)]
    fn child_responder(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        nonce_i: &[u8],
        nonce_r: &[u8],
        pfs: Option<(DhAlg, Secret)>,
        replaces: Option<u32>,
    ) -> Result<Reply, NotifyType> {
        let prf = sa.prf().ok_or(NotifyType::INVALID_SYNTAX)?;
        let sk_d = sa
            .keys
            .as_ref()
            .map(|k| k.sk_d.clone())
            .ok_or(NotifyType::INVALID_SYNTAX)?;
        // wire-notes 19: transport mode or nothing for GRE.
        if find_notify(p, NotifyType::USE_TRANSPORT_MODE).is_none() {
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        }
        let proposals = sa_of(p).ok_or(NotifyType::INVALID_SYNTAX)?;
        let (suite, spi_out, mut chosen) =
            proposal::select_esp(&self.config.esp, proposals, pfs.as_ref().map(|(g, _)| *g))
                .ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let (Some(tsi), Some(tsr)) = ts_of(p) else {
            return Err(NotifyType::TS_UNACCEPTABLE);
        };
        let tsi = pick_ts(tsi, sa.remote.ip(), sa.nat_remote).ok_or(NotifyType::TS_UNACCEPTABLE)?;
        let tsr = pick_ts(tsr, sa.local.ip(), sa.nat_local).ok_or(NotifyType::TS_UNACCEPTABLE)?;
        let spi_in = self.new_child_spi();
        chosen.spi = spi_in.to_be_bytes().to_vec();
        let keys = child_keys(
            prf,
            &sk_d,
            pfs.as_ref().map(|(_, s)| s.expose()),
            nonce_i,
            nonce_r,
        )
        .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)?;
        // We are the exchange responder: inbound is i→r, as `child_keys` orders them.
        self.install_child(now, sa, spi_in, spi_out, suite, keys, replaces);
        Ok(vec![
            notify(NotifyType::USE_TRANSPORT_MODE),
            Payload::Sa(vec![chosen]),
            Payload::TsI(vec![tsi]),
            Payload::TsR(vec![tsr]),
        ])
    }

    /// CREATE_CHILD_SA request (§1.3): new child, child rekey, IKE rekey.
    fn on_create_child(&mut self, now: Instant, sa: &mut IkeSa, p: &[Payload]) -> Reply {
        let Some(nonce_i) = nonce_of(p).cloned() else {
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        };
        if !(16..=256).contains(&nonce_i.len()) {
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        }
        let Some(proposals) = sa_of(p) else {
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        };
        if proposals.iter().any(|pr| pr.protocol == ProtocolId::IKE) {
            return self.on_rekey_ike_request(now, sa, p, &nonce_i);
        }
        let nonce_r = self.nonce();
        let rekey_of =
            notifies(p).find(|n| n.ty == NotifyType::REKEY_SA && n.protocol == ProtocolId::ESP);
        let mut replaces = None;
        if let Some(n) = rekey_of {
            // The SPI in REKEY_SA is the peer's inbound = our outbound
            // (§1.3.3).
            let Ok(spi) = <[u8; 4]>::try_from(n.spi.as_slice()) else {
                return vec![notify(NotifyType::INVALID_SYNTAX)];
            };
            let spi = u32::from_be_bytes(spi);
            match sa.children.iter().find(|c| c.spi_out == spi) {
                Some(c) => replaces = Some(c.spi_in),
                None => {
                    // §2.25: the peer rekeys something we already deleted.
                    let mut n = Notify::new(NotifyType::CHILD_SA_NOT_FOUND, Vec::new());
                    n.protocol = ProtocolId::ESP;
                    n.spi = spi.to_be_bytes().to_vec();
                    return vec![Payload::Notify(n)];
                }
            }
        }
        // Our policy demands PFS on CREATE_CHILD_SA: no KE, no child.
        if self.config.esp.pfs.is_some() && ke_of(p).is_none() {
            return vec![notify(NotifyType::NO_PROPOSAL_CHOSEN)];
        }
        // PFS: a KE payload means the peer wants a fresh D-H.
        let mut ke_reply = None;
        let mut pfs = None;
        if let Some(ke) = ke_of(p) {
            let Some(g) = ke.dh_group.alg() else {
                return vec![Payload::Notify(Notify::new(
                    NotifyType::INVALID_KE_PAYLOAD,
                    self.config
                        .esp
                        .pfs
                        .unwrap_or(DhAlg::Ecp256)
                        .ike_group()
                        .to_be_bytes()
                        .to_vec(),
                ))];
            };
            let Ok(dh) = DhPrivate::generate(g, self.rng.as_mut()) else {
                return vec![notify(NotifyType::NO_PROPOSAL_CHOSEN)];
            };
            let Ok(gir) = dh.agree(&ke.data) else {
                return vec![notify(NotifyType::INVALID_SYNTAX)];
            };
            ke_reply = Some(Payload::Ke(KeyExchange {
                dh_group: ke.dh_group,
                data: dh.public_value().to_vec(),
            }));
            pfs = Some((g, gir));
        }
        match self.child_responder(now, sa, p, &nonce_i, &nonce_r, pfs, replaces) {
            Ok(mut c) => {
                if let (Some(old_in), Some(new)) = (replaces, sa.children.last().map(|c| c.spi_in))
                {
                    if let Some(old) = sa.child_by_in(old_in) {
                        if old.status == ChildStatus::Rekeying {
                            // §2.8.1: simultaneous rekey; remember the
                            // peer's nonces to settle it once ours completes.
                            old.peer_rekey = Some((new, nonce_i.clone(), nonce_r.clone()));
                        } else {
                            old.status = ChildStatus::Replaced;
                        }
                    }
                }
                // Order: N(USE_TRANSPORT_MODE), SA, Nr, [KE], TSi, TSr.
                let ts = c.split_off(2);
                c.push(Payload::Nonce(nonce_r));
                if let Some(k) = ke_reply {
                    c.push(k);
                }
                c.extend(ts);
                c
            }
            Err(ty) => vec![notify(ty)],
        }
    }

    fn on_rekey_ike_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        nonce_i: &[u8],
    ) -> Reply {
        let (Some(old_keys), Some(proposals), Some(ke)) = (sa.keys.clone(), sa_of(p), ke_of(p))
        else {
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        };
        let Some((suite, mut chosen)) = proposal::select_ike(&self.config.ike_proposals, proposals)
        else {
            return vec![notify(NotifyType::NO_PROPOSAL_CHOSEN)];
        };
        let Ok(peer_spi) = <[u8; 8]>::try_from(chosen.spi.as_slice()) else {
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        };
        let peer_spi = u64::from_be_bytes(peer_spi);
        if ke.dh_group != DhId::from(suite.dh) {
            return vec![Payload::Notify(Notify::new(
                NotifyType::INVALID_KE_PAYLOAD,
                suite.dh.ike_group().to_be_bytes().to_vec(),
            ))];
        }
        let Ok(dh) = DhPrivate::generate(suite.dh, self.rng.as_mut()) else {
            return vec![notify(NotifyType::NO_PROPOSAL_CHOSEN)];
        };
        let Ok(gir) = dh.agree(&ke.data) else {
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        };
        let new_id = self.new_spi();
        let nonce_r = self.nonce();
        // The peer initiated the rekey, so it is the new SA's initiator.
        let Ok(keys) = IkeKeys::derive_rekey(
            old_keys.prf,
            &old_keys.sk_d,
            suite.prf,
            gir.expose(),
            nonce_i,
            &nonce_r,
            peer_spi,
            new_id,
        ) else {
            return vec![notify(NotifyType::NO_PROPOSAL_CHOSEN)];
        };
        chosen.spi = new_id.to_be_bytes().to_vec();
        // §2.8.1: our own rekey of this SA is in flight, so the rekeys
        // collide. The children move to the peer's new SA right away (they
        // stay on a live SA whatever becomes of our exchange); our response
        // then settles which new SA survives (§2.8.2).
        let collision = matches!(
            &sa.pending,
            Some(Pending {
                req: Req::RekeyIke { .. },
                ..
            })
        )
        .then(|| RekeyCollision {
            peer_new: new_id,
            nonce_i: nonce_i.to_vec(),
            nonce_r: nonce_r.clone(),
        });
        self.spawn_rekeyed(now, sa, new_id, peer_spi, false, suite, keys);
        if let State::Deleting(d) = &mut sa.state {
            d.collision = collision;
        }
        vec![
            Payload::Sa(vec![chosen]),
            Payload::Nonce(nonce_r),
            Payload::Ke(KeyExchange {
                dh_group: DhId::from(suite.dh),
                data: dh.public_value().to_vec(),
            }),
        ]
    }

    /// Creates the IKE SA that replaces `old` (§2.18) and moves the Child
    /// SAs over; the old SA then waits for its DELETE.
    #[allow(clippy::too_many_arguments)]
    fn spawn_rekeyed(
        &mut self,
        now: Instant,
        old: &mut IkeSa,
        new_id: u64,
        peer_spi: u64,
        we_initiated: bool,
        suite: IkeSuite,
        keys: IkeKeys,
    ) {
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.ike, lt.ike_margin);
        let mut n = IkeSa::new(
            new_id,
            we_initiated,
            old.local,
            old.remote,
            now,
            State::Established(Established {
                rekey_at,
                expire_at: now + lt.ike,
            }),
        );
        if we_initiated {
            n.spi_r = peer_spi;
        } else {
            n.spi_i = peer_spi;
        }
        n.suite = Some(suite);
        n.keys = Some(keys);
        n.remote_id = old.remote_id.clone();
        n.nat_local = old.nat_local;
        n.nat_remote = old.nat_remote;
        n.last_rx = now;
        n.last_traffic_out = old.last_traffic_out;
        n.children = std::mem::take(&mut old.children);
        old.superseded = true;
        self.sas.insert(new_id, n);
        self.events.push_back(Event::IkeSaRekeyed {
            old: IkeSaId(old.id),
            new: IkeSaId(new_id),
        });
        if !we_initiated {
            old.state = State::Deleting(Deleting {
                deadline: now + SUPERSEDED_GRACE,
                collision: None,
            });
        }
    }

    /// INFORMATIONAL request (§1.4): DELETE, liveness, notifies.
    fn on_informational(&mut self, sa: &mut IkeSa, p: &[Payload]) -> Reply {
        let mut reply_spis = Vec::new();
        for d in p.iter().filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        }) {
            if d.protocol == ProtocolId::IKE {
                // §1.4.1: the IKE SA and all its children go; answer empty.
                self.close(sa, DownReason::DeletedByPeer);
                return Vec::new();
            }
            if d.protocol != ProtocolId::ESP {
                continue;
            }
            for spi in &d.spis {
                let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                    continue;
                };
                let spi_out = u32::from_be_bytes(b);
                if let Some(pos) = sa.children.iter().position(|c| c.spi_out == spi_out) {
                    let c = sa.children.remove(pos);
                    // §1.4.1: if we are deleting it ourselves too, it is not
                    // listed in the response.
                    let ours_pending = matches!(&sa.pending, Some(Pending { req: Req::DeleteChild(s), .. }) if s.contains(&c.spi_in));
                    if !ours_pending {
                        reply_spis.push(c.spi_in.to_be_bytes().to_vec());
                    }
                    sa.queue.retain(|q| {
                        *q != Queued::DeleteChild(c.spi_in) && *q != Queued::RekeyChild(c.spi_in)
                    });
                    self.events.push_back(Event::ChildSaDeleted {
                        ike_sa: IkeSaId(sa.id),
                        spi_in: c.spi_in,
                        spi_out: c.spi_out,
                        remote: sa.remote,
                    });
                }
            }
        }
        if reply_spis.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: reply_spis,
            })]
        }
    }

    // ---- responses --------------------------------------------------------

    fn on_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) {
        if sa.pending.as_ref().map(|p| p.message_id) != Some(h.message_id) {
            return;
        }
        if h.exchange == ExchangeType::IKE_SA_INIT {
            let Ok(msg) = Message::parse(bytes) else {
                return;
            };
            self.initiator_sa_init_response(now, sa, h, bytes, &msg.payloads);
            return;
        }
        let Some(parsed) = self.decrypt(sa, h, bytes) else {
            return;
        };
        let Some(pending) = sa.pending.take() else {
            return;
        };
        sa.last_rx = now;
        if sa.udp_encap() && (remote != sa.remote || local != sa.local) {
            sa.remote = remote;
            sa.local = local;
        }
        // A malformed response to our request: the exchange failed, which
        // the handlers see as a response without the payloads they need.
        let p = parsed.unwrap_or_default();
        match pending.req {
            Req::SaInit => {}
            Req::Auth => self.initiator_auth_response(now, sa, &p),
            Req::Dpd => {}
            Req::DeleteIke => self.close(sa, DownReason::DeletedLocally),
            Req::DeleteChild(spis) => {
                for spi in spis {
                    if let Some(pos) = sa.children.iter().position(|c| c.spi_in == spi) {
                        let c = sa.children.remove(pos);
                        self.events.push_back(Event::ChildSaDeleted {
                            ike_sa: IkeSaId(sa.id),
                            spi_in: c.spi_in,
                            spi_out: c.spi_out,
                            remote: sa.remote,
                        });
                    }
                }
            }
            Req::CreateChild {
                rekey_of,
                spi_in,
                nonce_i,
                dh,
            } => self.create_child_response(now, sa, &p, rekey_of, spi_in, &nonce_i, dh),
            Req::RekeyIke {
                new_spi,
                nonce_i,
                dh,
            } => self.rekey_ike_response(now, sa, &p, new_spi, &nonce_i, dh),
        }
    }

    fn initiator_sa_init_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        h: &Header,
        bytes: &[u8],
        p: &[Payload],
    ) {
        let State::ExpectSaInitResponse(mut st) = std::mem::replace(&mut sa.state, State::Closed)
        else {
            return;
        };
        if let Some(c) = find_notify(p, NotifyType::COOKIE) {
            // §2.6: retry with the cookie first, everything else unchanged.
            if st.retries < MAX_INIT_RETRIES && (1..=64).contains(&c.data.len()) {
                st.retries += 1;
                st.cookie = Some(c.data.clone());
                sa.state = State::ExpectSaInitResponse(st);
                let _ = self.send_sa_init(now, sa);
            } else {
                self.events.push_back(Event::EstablishFailed {
                    remote: sa.remote,
                    reason: NotifyType::COOKIE,
                });
            }
            return;
        }
        if let Some(n) = find_notify(p, NotifyType::INVALID_KE_PAYLOAD) {
            // §1.2: retry with the group the responder asked for, if we
            // offered it (otherwise the responder is misbehaving).
            let group = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(u16::from_be_bytes)
                .and_then(DhAlg::from_ike_group);
            let offered = group.filter(|g| {
                self.config.ike_proposals.iter().any(|pr| pr.dh == *g) && *g != st.dh.alg()
            });
            match (offered, st.retries < MAX_INIT_RETRIES) {
                (Some(g), true) => {
                    let Ok(dh) = DhPrivate::generate(g, self.rng.as_mut()) else {
                        return;
                    };
                    st.dh = dh;
                    st.retries += 1;
                    sa.state = State::ExpectSaInitResponse(st);
                    let _ = self.send_sa_init(now, sa);
                }
                _ => self.events.push_back(Event::EstablishFailed {
                    remote: sa.remote,
                    reason: NotifyType::INVALID_KE_PAYLOAD,
                }),
            }
            return;
        }
        if let Some(e) = first_error(p) {
            self.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason: e,
            });
            return;
        }
        // Message 1 for AUTH (§2.15) is the request we last sent, cookie
        // and corrected KE included.
        let msg1 = sa.pending.take().map(|p| p.bytes).unwrap_or_default();
        let fail = |me: &mut Self, sa: &IkeSa| {
            me.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason: NotifyType::INVALID_SYNTAX,
            });
        };
        let (Some(props), Some(ke), Some(nonce_r)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            return fail(self, sa);
        };
        let Some(suite) = proposal::accept_ike_reply(&self.config.ike_proposals, props) else {
            return self.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason: NotifyType::NO_PROPOSAL_CHOSEN,
            });
        };
        if suite.dh != st.dh.alg()
            || ke.dh_group != DhId::from(suite.dh)
            || h.spi_r == 0
            || !(16..=256).contains(&nonce_r.len())
        {
            return fail(self, sa);
        }
        let Ok(gir) = st.dh.agree(&ke.data) else {
            return fail(self, sa);
        };
        sa.spi_r = h.spi_r;
        let Ok(keys) = IkeKeys::derive(
            suite.prf,
            &st.nonce_i,
            nonce_r,
            gir.expose(),
            sa.spi_i,
            sa.spi_r,
        ) else {
            return;
        };
        sa.suite = Some(suite);
        sa.keys = Some(keys.clone());
        let (nat_local, nat_remote) = nat_detect(p, sa.spi_i, sa.spi_r, sa.local, sa.remote);
        sa.nat_local = nat_local || self.config.force_encap;
        sa.nat_remote = nat_remote;
        if sa.udp_encap() {
            // §2.23: float to the NAT-T port once a NAT is seen.
            sa.local = SocketAddr::new(sa.local.ip(), self.config.natt_port);
            sa.remote = SocketAddr::new(sa.remote.ip(), self.config.natt_port);
        }
        let Some(psk) = self.config.keyring.lookup(sa.remote.ip(), None).cloned() else {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: "no pre-shared key for peer".into(),
            });
            return;
        };
        let idi = self.local_id(sa);
        let auth = psk_auth(suite.prf, psk.expose(), &msg1, nonce_r, &keys.sk_pi, &idi);
        let child_spi = self.new_child_spi();
        let mut payloads = vec![
            Payload::IdI(idi),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY_MIC,
                data: auth.expose().to_vec(),
            }),
        ];
        if self.config.initial_contact
            && !self.sas.values().any(|s| {
                s.remote.ip() == sa.remote.ip() && matches!(s.state, State::Established(_))
            })
        {
            payloads.push(notify(NotifyType::INITIAL_CONTACT));
        }
        payloads.push(notify(NotifyType::USE_TRANSPORT_MODE));
        // IKE_AUTH never carries a KE, so no PFS here (§1.2).
        payloads.push(Payload::Sa(proposal::esp_offer(
            &self.config.esp,
            child_spi,
            None,
            false,
        )));
        payloads.push(Payload::TsI(vec![TrafficSelector::gre_host(sa.local.ip())]));
        payloads.push(Payload::TsR(vec![TrafficSelector::gre_host(
            sa.remote.ip(),
        )]));
        sa.state = State::ExpectAuthResponse(ExpectAuthResponse {
            nonce_i: st.nonce_i,
            nonce_r: nonce_r.clone(),
            init_response: bytes.to_vec(),
            child_spi,
        });
        self.request(now, sa, ExchangeType::IKE_AUTH, &payloads, Req::Auth);
    }
}

impl Endpoint {
    /// Initiator: IKE_AUTH response (§1.2, §2.15).
    fn initiator_auth_response(&mut self, now: Instant, sa: &mut IkeSa, p: &[Payload]) {
        let State::ExpectAuthResponse(st) = std::mem::replace(&mut sa.state, State::Closed) else {
            return;
        };
        let (Some(prf), Some(keys)) = (sa.prf(), sa.keys.clone()) else {
            return;
        };
        if find_notify(p, NotifyType::AUTHENTICATION_FAILED).is_some() {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: "peer answered AUTHENTICATION_FAILED".into(),
            });
            return;
        }
        let idr = p.iter().find_map(|p| match p {
            Payload::IdR(i) => Some(i.clone()),
            _ => None,
        });
        let auth = p.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let reason = first_error(p).unwrap_or(NotifyType::INVALID_SYNTAX);
            self.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason,
            });
            return;
        };
        let ok = auth.method == AuthMethod::SHARED_KEY_MIC
            && self
                .config
                .keyring
                .lookup(sa.remote.ip(), Some(&idr))
                .is_some_and(|psk| {
                    let want = psk_auth(
                        prf,
                        psk.expose(),
                        &st.init_response,
                        &st.nonce_i,
                        &keys.sk_pr,
                        &idr,
                    );
                    constant_time_eq(want.expose(), &auth.data)
                });
        if !ok {
            // §2.21.2: the responder's AUTH is bad; tear down (the peer's SA
            // is deleted by an INFORMATIONAL we cannot trust it to accept).
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: format!("responder {idr} AUTH did not verify"),
            });
            return;
        }
        sa.remote_id = Some(idr.clone());
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.ike, lt.ike_margin);
        sa.state = State::Established(Established {
            rekey_at,
            expire_at: now + lt.ike,
        });
        self.events.push_back(Event::IkeSaUp {
            sa: IkeSaId(sa.id),
            local: sa.local,
            remote: sa.remote,
            remote_id: idr,
            initiator: true,
            nat_local: sa.nat_local,
            nat_remote: sa.nat_remote,
        });
        if let Err(reason) = self.child_initiator_finish(
            now,
            sa,
            p,
            st.child_spi,
            &st.nonce_i,
            &st.nonce_r,
            None,
            None,
        ) {
            self.events.push_back(Event::ChildSaFailed {
                ike_sa: IkeSaId(sa.id),
                remote: sa.remote,
                reason,
            });
        }
    }

    /// Validates a Child SA response and installs it (initiator side).
    #[allow(clippy::too_many_arguments)]
    fn child_initiator_finish(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        spi_in: u32,
        nonce_i: &[u8],
        nonce_r: &[u8],
        pfs: Option<(DhAlg, Secret)>,
        replaces: Option<u32>,
    ) -> Result<(), NotifyType> {
        if let Some(e) = first_error(p) {
            return Err(e);
        }
        let proposals = sa_of(p).ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let (suite, spi_out) =
            proposal::accept_esp_reply(&self.config.esp, proposals, pfs.as_ref().map(|(g, _)| *g))
                .ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        if find_notify(p, NotifyType::USE_TRANSPORT_MODE).is_none() {
            // wire-notes 19: the responder installed tunnel mode. Never use
            // it; delete what the peer created (§1.4.1).
            sa.queue.push_back(Queued::DeleteChild(spi_in));
            sa.children.push(Child {
                spi_in,
                spi_out,
                suite,
                created: now,
                rekey_at: now,
                expire_at: now,
                status: ChildStatus::Replaced,
                peer_rekey: None,
            });
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        }
        let (Some(tsi), Some(tsr)) = ts_of(p) else {
            return Err(NotifyType::TS_UNACCEPTABLE);
        };
        if pick_ts(tsi, sa.local.ip(), sa.nat_local).is_none()
            || pick_ts(tsr, sa.remote.ip(), sa.nat_remote).is_none()
        {
            sa.queue.push_back(Queued::DeleteChild(spi_in));
            return Err(NotifyType::TS_UNACCEPTABLE);
        }
        let prf = sa.prf().ok_or(NotifyType::INVALID_SYNTAX)?;
        let sk_d = sa
            .keys
            .as_ref()
            .map(|k| k.sk_d.clone())
            .ok_or(NotifyType::INVALID_SYNTAX)?;
        let k = child_keys(
            prf,
            &sk_d,
            pfs.as_ref().map(|(_, s)| s.expose()),
            nonce_i,
            nonce_r,
        )
        .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)?;
        // We initiated this exchange: inbound is r→i.
        let keys = crate::keys::ChildKeys {
            i_to_r: k.r_to_i,
            r_to_i: k.i_to_r,
        };
        self.install_child(now, sa, spi_in, spi_out, suite, keys, replaces);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_child_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        rekey_of: Option<u32>,
        spi_in: u32,
        nonce_i: &[u8],
        dh: Option<DhPrivate>,
    ) {
        let nonce_r = nonce_of(p).cloned().unwrap_or_default();
        let mut pfs = None;
        if let Some(dh) = &dh {
            match ke_of(p).and_then(|k| dh.agree(&k.data).ok()) {
                Some(g) => pfs = Some((dh.alg(), g)),
                None => {
                    if let Some(old) = rekey_of.and_then(|s| sa.child_by_in(s)) {
                        old.status = ChildStatus::Active;
                    }
                    self.events.push_back(Event::ChildSaFailed {
                        ike_sa: IkeSaId(sa.id),
                        remote: sa.remote,
                        reason: first_error(p).unwrap_or(NotifyType::INVALID_KE_PAYLOAD),
                    });
                    return;
                }
            }
        }
        match self.child_initiator_finish(now, sa, p, spi_in, nonce_i, &nonce_r, pfs, rekey_of) {
            Ok(()) => {
                let Some(old_in) = rekey_of else { return };
                let Some(old) = sa.child_by_in(old_in) else {
                    return;
                };
                old.status = ChildStatus::Replaced;
                let victim = match old.peer_rekey.take() {
                    // §2.8.1: both rekeyed. The SA created with the lowest of
                    // the four nonces is redundant and is deleted by whoever
                    // created it; the other side deletes the old SA.
                    Some((_peer_new, pi, pr)) => {
                        let ours_lowest =
                            nonce_i.min(nonce_r.as_slice()) < pi.as_slice().min(pr.as_slice());
                        if ours_lowest { spi_in } else { old_in }
                    }
                    None => old_in,
                };
                if victim == spi_in {
                    // Keep the old one until the peer deletes it.
                    if let Some(c) = sa.child_by_in(spi_in) {
                        c.status = ChildStatus::Replaced;
                    }
                }
                sa.queue.push_back(Queued::DeleteChild(victim));
            }
            Err(reason) => {
                if let Some(old) = rekey_of.and_then(|s| sa.child_by_in(s)) {
                    old.status = ChildStatus::Active;
                    old.peer_rekey = None;
                }
                self.events.push_back(Event::ChildSaFailed {
                    ike_sa: IkeSaId(sa.id),
                    remote: sa.remote,
                    reason,
                });
            }
        }
    }

    fn rekey_ike_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        new_spi: u64,
        nonce_i: &[u8],
        dh: DhPrivate,
    ) {
        let fail = |me: &mut Self, sa: &IkeSa, reason| {
            // Superseded by the peer's colliding rekey (e.g. its
            // TEMPORARY_FAILURE, §2.8.2): the peer's new SA stands.
            if matches!(sa.state, State::Deleting(_)) {
                return;
            }
            me.events.push_back(Event::ChildSaFailed {
                ike_sa: IkeSaId(sa.id),
                remote: sa.remote,
                reason,
            });
        };
        if let Some(e) = first_error(p) {
            return fail(self, sa, e);
        }
        let (Some(old_keys), Some(props), Some(ke), Some(nonce_r)) =
            (sa.keys.clone(), sa_of(p), ke_of(p), nonce_of(p))
        else {
            return fail(self, sa, NotifyType::INVALID_SYNTAX);
        };
        let Some(suite) = proposal::accept_ike_reply(&self.config.ike_proposals, props) else {
            return fail(self, sa, NotifyType::NO_PROPOSAL_CHOSEN);
        };
        let peer_spi = props
            .first()
            .and_then(|pr| <[u8; 8]>::try_from(pr.spi.as_slice()).ok())
            .map(u64::from_be_bytes);
        let (Some(peer_spi), true) = (peer_spi, suite.dh == dh.alg()) else {
            return fail(self, sa, NotifyType::INVALID_SYNTAX);
        };
        let Ok(gir) = dh.agree(&ke.data) else {
            return fail(self, sa, NotifyType::INVALID_SYNTAX);
        };
        let Ok(keys) = IkeKeys::derive_rekey(
            old_keys.prf,
            &old_keys.sk_d,
            suite.prf,
            gir.expose(),
            nonce_i,
            nonce_r,
            new_spi,
            peer_spi,
        ) else {
            return;
        };
        let collision = match std::mem::replace(&mut sa.state, State::Closed) {
            State::Deleting(Deleting {
                deadline,
                collision: Some(c),
            }) => {
                sa.state = State::Deleting(Deleting {
                    deadline,
                    collision: None,
                });
                Some(c)
            }
            other => {
                sa.state = other;
                None
            }
        };
        let Some(c) = collision else {
            self.spawn_rekeyed(now, sa, new_spi, peer_spi, true, suite, keys);
            // §2.18: the rekey initiator deletes the old IKE SA.
            sa.queue.push_front(Queued::DeleteIke);
            return;
        };
        // §2.8.1/§2.8.2: both ends rekeyed this SA. "The SA created with the
        // lowest of the four nonces used in the two exchanges SHOULD be
        // closed by the endpoint that created it" (octet-wise comparison, a
        // prefix being lower: exactly slice ordering), and "the node that
        // initiated the surviving rekeyed SA should delete the replaced SA".
        // Both ends see the same four nonces, so they agree.
        let ours_lowest =
            nonce_i.min(nonce_r.as_slice()) < c.nonce_i.as_slice().min(c.nonce_r.as_slice());
        if ours_lowest {
            // Ours is redundant and we created it: delete it over itself.
            // The peer's SA (already holding the children) survives, and the
            // peer deletes the old SA, which keeps waiting in Deleting.
            let mut redundant = IkeSa::new(
                new_spi,
                true,
                sa.local,
                sa.remote,
                now,
                State::Established(Established {
                    rekey_at: now + self.config.lifetimes.ike,
                    expire_at: now + self.config.lifetimes.ike,
                }),
            );
            redundant.spi_r = peer_spi;
            redundant.suite = Some(suite);
            redundant.keys = Some(keys);
            redundant.remote_id = sa.remote_id.clone();
            redundant.nat_local = sa.nat_local;
            redundant.nat_remote = sa.nat_remote;
            redundant.superseded = true;
            redundant.queue.push_back(Queued::DeleteIke);
            self.pump(now, &mut redundant);
            self.put_back(redundant);
            return;
        }
        // The peer's SA is redundant; the peer deletes it. Ours survives and
        // "MUST inherit all the CHILD_SAs" (§2.8.2) from it.
        match self.sas.remove(&c.peer_new) {
            Some(mut theirs) => {
                self.spawn_rekeyed(now, &mut theirs, new_spi, peer_spi, true, suite, keys);
                theirs.state = State::Deleting(Deleting {
                    deadline: now + SUPERSEDED_GRACE,
                    collision: None,
                });
                self.put_back(theirs);
            }
            None => self.spawn_rekeyed(now, sa, new_spi, peer_spi, true, suite, keys),
        }
        // We initiated the survivor, so the old SA is ours to delete
        // (§2.8.1). It is already Deleting, which `pump` would not serve.
        if sa.pending.is_none() {
            self.start(now, sa, Queued::DeleteIke);
        }
    }

    // ---- starting local requests (window size 1, §2.3) -------------------

    fn pump(&mut self, now: Instant, sa: &mut IkeSa) {
        if sa.pending.is_some() || !matches!(sa.state, State::Established(_)) {
            return;
        }
        while let Some(q) = sa.queue.pop_front() {
            if self.start(now, sa, q) {
                return;
            }
        }
    }

    /// Starts one queued request; false if it became moot.
    fn start(&mut self, now: Instant, sa: &mut IkeSa, q: Queued) -> bool {
        match q {
            Queued::Dpd => {
                sa.last_probe = now;
                self.request(now, sa, ExchangeType::INFORMATIONAL, &[], Req::Dpd);
            }
            Queued::DeleteIke => {
                let d = Payload::Delete(Delete {
                    protocol: ProtocolId::IKE,
                    spi_size: 0,
                    spis: Vec::new(),
                });
                self.request(now, sa, ExchangeType::INFORMATIONAL, &[d], Req::DeleteIke);
                // Children are gone for the daemon as soon as we decide.
                for c in sa.children.drain(..) {
                    self.events.push_back(Event::ChildSaDeleted {
                        ike_sa: IkeSaId(sa.id),
                        spi_in: c.spi_in,
                        spi_out: c.spi_out,
                        remote: sa.remote,
                    });
                }
                sa.state = State::Deleting(Deleting {
                    collision: None,
                    deadline: now
                        + self.config.retransmit.max_interval
                            * self.config.retransmit.max_tries.max(1),
                });
            }
            Queued::DeleteChild(spi) => {
                if sa.children.iter().all(|c| c.spi_in != spi) {
                    return false;
                }
                let d = Payload::Delete(Delete {
                    protocol: ProtocolId::ESP,
                    spi_size: 4,
                    spis: vec![spi.to_be_bytes().to_vec()],
                });
                self.request(
                    now,
                    sa,
                    ExchangeType::INFORMATIONAL,
                    &[d],
                    Req::DeleteChild(vec![spi]),
                );
            }
            Queued::RekeyChild(old) => {
                let Some(c) = sa.children.iter().find(|c| c.spi_in == old) else {
                    return false;
                };
                if c.status != ChildStatus::Active {
                    return false;
                }
                let integ_none = c.suite.integ_none;
                let spi_in = self.new_child_spi();
                let nonce_i = self.nonce();
                let dh = match self.config.esp.pfs {
                    Some(g) => match DhPrivate::generate(g, self.rng.as_mut()) {
                        Ok(d) => Some(d),
                        Err(_) => return false,
                    },
                    None => None,
                };
                // §1.3.3: REKEY_SA carries the SPI we expect in inbound ESP.
                let mut rekey = Notify::new(NotifyType::REKEY_SA, Vec::new());
                rekey.protocol = ProtocolId::ESP;
                rekey.spi = old.to_be_bytes().to_vec();
                let mut payloads = vec![
                    Payload::Notify(rekey),
                    notify(NotifyType::USE_TRANSPORT_MODE),
                    // Same proposal shape the peer used (wire-notes 20).
                    Payload::Sa(proposal::esp_offer(
                        &self.config.esp,
                        spi_in,
                        dh.as_ref().map(DhPrivate::alg),
                        integ_none,
                    )),
                    Payload::Nonce(nonce_i.clone()),
                ];
                if let Some(d) = &dh {
                    payloads.push(Payload::Ke(KeyExchange {
                        dh_group: DhId::from(d.alg()),
                        data: d.public_value().to_vec(),
                    }));
                }
                payloads.push(Payload::TsI(vec![TrafficSelector::gre_host(sa.local.ip())]));
                payloads.push(Payload::TsR(vec![TrafficSelector::gre_host(
                    sa.remote.ip(),
                )]));
                if let Some(c) = sa.child_by_in(old) {
                    c.status = ChildStatus::Rekeying;
                }
                self.request(
                    now,
                    sa,
                    ExchangeType::CREATE_CHILD_SA,
                    &payloads,
                    Req::CreateChild {
                        rekey_of: Some(old),
                        spi_in,
                        nonce_i,
                        dh,
                    },
                );
            }
            Queued::RekeyIke => {
                let Some(first) = self.config.ike_proposals.first().copied() else {
                    return false;
                };
                let Ok(dh) = DhPrivate::generate(first.dh, self.rng.as_mut()) else {
                    return false;
                };
                let new_spi = self.new_spi();
                let nonce_i = self.nonce();
                let payloads = vec![
                    Payload::Sa(proposal::ike_offer(
                        &self.config.ike_proposals,
                        Some(new_spi),
                    )),
                    Payload::Nonce(nonce_i.clone()),
                    Payload::Ke(KeyExchange {
                        dh_group: DhId::from(dh.alg()),
                        data: dh.public_value().to_vec(),
                    }),
                ];
                self.request(
                    now,
                    sa,
                    ExchangeType::CREATE_CHILD_SA,
                    &payloads,
                    Req::RekeyIke {
                        new_spi,
                        nonce_i,
                        dh,
                    },
                );
            }
        }
        true
    }

    // ---- timers -----------------------------------------------------------

    fn dpd_deadline(&self, sa: &IkeSa) -> Option<Instant> {
        let d = self.config.dpd?;
        if !matches!(sa.state, State::Established(_)) || sa.pending.is_some() {
            return None;
        }
        match d.mode {
            // A liveness check (§2.4: an empty INFORMATIONAL) every `delay`
            // whatever the traffic: ESP flowing proves the peer's kernel is
            // up, not its IKE daemon.
            DpdMode::Periodic => Some(sa.last_probe + d.delay),
            // Probe only if we sent traffic since we last heard from the
            // peer, and it has been silent for `delay`.
            DpdMode::OnDemand => match sa.last_traffic_out {
                Some(tx) if tx > sa.last_rx => Some((sa.last_rx + d.delay).max(tx)),
                _ => None,
            },
        }
    }

    fn sa_deadline(&self, sa: &IkeSa) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        if let Some(p) = &sa.pending {
            t.push(p.next_at);
        }
        match &sa.state {
            State::ExpectAuthRequest(s) => t.push(s.deadline),
            State::Deleting(s) => t.push(s.deadline),
            State::Established(e) => {
                t.push(e.rekey_at);
                t.push(e.expire_at);
                for c in &sa.children {
                    if c.status == ChildStatus::Active {
                        t.push(c.rekey_at);
                    }
                    t.push(c.expire_at);
                }
                t.extend(self.dpd_deadline(sa));
            }
            _ => {}
        }
        t.into_iter().min()
    }

    /// The earliest deadline at which [`Endpoint::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(|s| self.sa_deadline(s)).min()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .sas
            .values()
            .filter(|s| self.sa_deadline(s).is_some_and(|d| d <= now))
            .map(|s| s.id)
            .collect();
        for id in due {
            let Some(mut sa) = self.sas.remove(&id) else {
                continue;
            };
            self.timeout_sa(now, &mut sa);
            if !matches!(sa.state, State::Closed) {
                self.pump(now, &mut sa);
            }
            self.put_back(sa);
        }
    }

    fn timeout_sa(&mut self, now: Instant, sa: &mut IkeSa) {
        if let Some(p) = &mut sa.pending {
            if p.next_at <= now {
                let max = self.max_tries(&p.req);
                if p.tries >= max {
                    // §2.4: no answer after the retransmission limit means
                    // the peer is dead; the SA is deleted without notice.
                    let established = sa.remote_id.is_some();
                    let was_dpd = matches!(p.req, Req::Dpd);
                    if established && !matches!(sa.state, State::Deleting(_)) {
                        self.events.push_back(Event::PeerDead {
                            sa: IkeSaId(sa.id),
                            remote: sa.remote,
                        });
                    } else if !established {
                        self.events.push_back(Event::EstablishFailed {
                            remote: sa.remote,
                            reason: NotifyType::TEMPORARY_FAILURE,
                        });
                    }
                    let _ = was_dpd;
                    self.close(sa, DownReason::Timeout);
                    return;
                }
                p.tries += 1;
                let interval = self.retransmit_interval(&p.req, p.tries);
                p.next_at = now + interval;
                let bytes = p.bytes.clone();
                self.tx(sa, bytes);
            }
        }
        match &mut sa.state {
            State::ExpectAuthRequest(s) if s.deadline <= now => {
                // A half-open SA that never authenticated: drop silently.
                sa.state = State::Closed;
            }
            State::Deleting(s) if s.deadline <= now => {
                self.close(sa, DownReason::DeletedLocally);
            }
            State::Established(e) => {
                if e.expire_at <= now {
                    // Hard lifetime: delete (the peer is told, §1.4.1).
                    sa.queue.push_front(Queued::DeleteIke);
                    return;
                }
                if e.rekey_at <= now {
                    // Re-arm far out; the rekey replaces this SA.
                    e.rekey_at = e.expire_at;
                    if !sa.queue.contains(&Queued::RekeyIke) {
                        sa.queue.push_back(Queued::RekeyIke);
                    }
                }
                let mut expired = Vec::new();
                for c in &mut sa.children {
                    if c.expire_at <= now {
                        expired.push(c.spi_in);
                    } else if c.status == ChildStatus::Active && c.rekey_at <= now {
                        c.rekey_at = c.expire_at;
                        if !sa.queue.contains(&Queued::RekeyChild(c.spi_in)) {
                            sa.queue.push_back(Queued::RekeyChild(c.spi_in));
                        }
                    }
                }
                for spi in expired {
                    if !sa.queue.contains(&Queued::DeleteChild(spi)) {
                        sa.queue.push_back(Queued::DeleteChild(spi));
                    }
                    if let Some(c) = sa.child_by_in(spi) {
                        c.expire_at = now
                            + self.config.retransmit.max_interval
                                * self.config.retransmit.max_tries.max(1);
                    }
                }
                if self.dpd_deadline(sa).is_some_and(|d| d <= now)
                    && !sa.queue.contains(&Queued::Dpd)
                {
                    sa.queue.push_back(Queued::Dpd);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmvpn_crypto::TestRng;

    fn pair() -> (Endpoint, Endpoint, Instant, SocketAddr, SocketAddr) {
        let mut c = Config::default();
        c.keyring.set_wildcard(b"k");
        let mut a = Endpoint::new(c.clone(), Box::new(TestRng::new(5)));
        let mut b = Endpoint::new(c, Box::new(TestRng::new(6)));
        let (la, lb): (SocketAddr, SocketAddr) = (
            "192.0.2.1:500".parse().unwrap(),
            "192.0.2.2:500".parse().unwrap(),
        );
        let now = Instant::now();
        a.initiate(now, la, lb).unwrap();
        for _ in 0..4 {
            while let Some(t) = a.poll_transmit() {
                b.handle_datagram(now, lb, la, &t.bytes);
            }
            while let Some(t) = b.poll_transmit() {
                a.handle_datagram(now, la, lb, &t.bytes);
            }
        }
        (a, b, now, la, lb)
    }

    #[test]
    fn reply_without_use_transport_mode_is_refused_and_deleted() {
        let (mut a, _b, now, _, _) = pair();
        while a.poll_event().is_some() {}
        let id = *a.sas.keys().next().unwrap();
        let mut sa = a.sas.remove(&id).unwrap();
        let reply = vec![
            Payload::Sa(proposal::esp_offer(
                &EspProposal::default(),
                0x4444,
                None,
                false,
            )),
            Payload::TsI(vec![TrafficSelector::gre_host(sa.local.ip())]),
            Payload::TsR(vec![TrafficSelector::gre_host(sa.remote.ip())]),
        ];
        let r =
            a.child_initiator_finish(now, &mut sa, &reply, 0x5555, &[1; 32], &[2; 32], None, None);
        assert_eq!(r, Err(NotifyType::NO_PROPOSAL_CHOSEN));
        assert!(
            a.poll_event().is_none(),
            "no tunnel-mode SA is ever installed"
        );
        assert_eq!(sa.queue.back(), Some(&Queued::DeleteChild(0x5555)));
        // With the notify it would have been accepted.
        let mut ok = reply.clone();
        ok.insert(0, notify(NotifyType::USE_TRANSPORT_MODE));
        assert!(
            a.child_initiator_finish(now, &mut sa, &ok, 0x6666, &[1; 32], &[2; 32], None, None)
                .is_ok()
        );
        assert!(
            matches!(a.poll_event(), Some(Event::ChildSaInstalled(c)) if c.spi_in == 0x6666 && c.spi_out == 0x4444)
        );
    }

    #[test]
    fn fragmented_request_is_reassembled() {
        let (a, mut b, now, la, lb) = pair();
        while b.poll_event().is_some() {}
        let sa = a.sas.values().next().unwrap();
        let child = sa.children[0].spi_in;
        let keys = sa.keys.clone().unwrap();
        let key = AesGcm256::new(keys.sk_ei.expose()).unwrap();
        let inner = vec![Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: vec![child.to_be_bytes().to_vec()],
        })];
        let mut plain = Vec::new();
        emit_payloads(&inner, &mut dmvpn_wire::Writer::new(&mut plain)).unwrap();
        let (c1, c2) = plain.split_at(5);
        let mid = sa.next_request_id;
        let f1 = sk::seal_fragment(
            sa.spi_i,
            sa.spi_r,
            ExchangeType::INFORMATIONAL,
            flags::INITIATOR,
            mid,
            PayloadType::D,
            (1, 2),
            c1,
            &key,
            [0xf1; 8],
        )
        .unwrap();
        let f2 = sk::seal_fragment(
            sa.spi_i,
            sa.spi_r,
            ExchangeType::INFORMATIONAL,
            flags::INITIATOR,
            mid,
            PayloadType::NONE,
            (2, 2),
            c2,
            &key,
            [0xf2; 8],
        )
        .unwrap();
        // Out of order; nothing happens until both are in.
        b.handle_datagram(now, lb, la, &f2);
        assert!(b.poll_event().is_none());
        b.handle_datagram(now, lb, la, &f1);
        assert!(
            matches!(b.poll_event(), Some(Event::ChildSaDeleted { spi_out, .. }) if spi_out == child)
        );
        assert!(b.poll_transmit().is_some());
    }
}
