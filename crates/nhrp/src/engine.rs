//! The sans-IO NHRP engine: next hop client (RFC 2332 §5.2.3 registration,
//! §5.2.1 resolution, §5.2.5 purge), next hop server (§5.2.2–§5.2.4, §5.2.6,
//! §5.2.7 error indication, §5.3 extension processing) and the Cisco DMVPN
//! phase 3 additions (NAT extension, traffic indication, shortcuts).
//!
//! ## SA gating: the engine queues
//!
//! Every NHRP packet rides GRE inside ESP, so nothing can be sent to an NBMA
//! address before an IPsec SA to it exists. The engine tracks which NBMA
//! addresses have an SA: the daemon reports [`Engine::sa_up`] and
//! [`Engine::peer_dead`], and any NHRP packet received from an address
//! proves an SA (the daemon only hands over decrypted traffic). A
//! packet for an address without an SA is held in a small per-address queue
//! and [`Event::NeedSa`] is emitted once; [`Engine::sa_up`] releases the
//! queue. So the phase 3 answering spoke emits "need SA to the requester's
//! post-NAT NBMA" and its resolution reply leaves only when that SA is up
//! (wire notes item 9): the daemon never has to buffer NHRP.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::cache::{CacheEntry, Counters, DropReason, EntryFlags, EntryKind, NhsState, NhsStatus};
use crate::codes::{
    AFN_IPV4, AUTH_SPI_CLEARTEXT, CieCode, ErrorCode, ExtensionType, Flags, PREFIX_LEN_UNIQUE_HOST,
    PROTOCOL_TYPE_IPV4, PacketType, TRAFFIC_CODE_REDIRECT,
};
use crate::config::{Config, ConfigError, NhsConfig, RequestIdSource, Role, Route};
use crate::packet::{Authentication, Body, Cie, Extension, ExtensionBody, Packet, ip_bytes};

/// Hop count for registrations, purges and traffic indications, which go
/// to a directly connected peer: FRR uses 1, and Cisco rejects 0 (wire
/// notes item 4).
pub const DIRECT_HOP_COUNT: u8 = 1;
/// Hop count for packets that may be forwarded (what FRR sends in replies,
/// as the golden registration reply shows).
pub const DEFAULT_HOP_COUNT: u8 = 64;
/// First registration retransmission wait; doubled up to [`MAX_REGISTRATION_WAIT`] (wire notes item 7).
pub const INITIAL_REGISTRATION_WAIT: Duration = Duration::from_secs(2);
/// After this wait passes unanswered the SA to the NHS is reset (FRR).
pub const MAX_REGISTRATION_WAIT: Duration = Duration::from_secs(64);
/// Longest wait before asking again for an SA to an NHS that has none: the
/// retry is every holding time / 4, but at most this (FRR nhrp_nhs.c retries
/// a registration "waiting link" after 120 s). Without the cap the shipped
/// holding time of 7200 s left a spoke unregistered for 30 minutes after a
/// hub outage that outlasted one IKE attempt (interop `dpd.sh` with
/// `IX_DPD_IDLE=1 IX_DPD_OUTAGE=150`).
pub const MAX_SA_RETRY_WAIT: Duration = Duration::from_secs(120);
/// First resolution retransmission wait (wire notes item 9).
pub const INITIAL_RESOLUTION_WAIT: Duration = Duration::from_secs(1);
/// Resolution attempts before giving up.
pub const RESOLUTION_ATTEMPTS: u8 = 4;
/// Packets held per NBMA address while its SA comes up.
pub const SA_QUEUE_LEN: usize = 8;
/// How long a packet may wait for an SA.
pub const SA_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Traffic indications allowed in a burst per (source, destination) pair
/// (OpenNHRP uses 4 tokens, wire notes item 10).
pub const REDIRECT_BURST: u32 = 4;
/// One traffic indication token comes back per this interval (≈ FRR's 4/min).
pub const REDIRECT_REFILL: Duration = Duration::from_secs(15);
/// Minimum spacing of traffic indications for one pair (OpenNHRP: 5 s).
pub const REDIRECT_SPACING: Duration = Duration::from_secs(5);
/// Narrowest shortcut prefix accepted (FRR refuses wider than /8, wire notes item 9).
pub const MIN_SHORTCUT_PREFIX_LEN: u8 = 8;
/// Bytes of an offending packet copied into an Error Indication.
const MAX_ERROR_CONTENTS: usize = 512;

/// An NHRP packet for the daemon to wrap in GRE (protocol 0x2001, with the
/// tunnel key) and ESP, and send to `dst_nbma`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// NBMA destination (the post-NAT address where known).
    pub dst_nbma: IpAddr,
    /// The NHRP packet only.
    pub bytes: Vec<u8>,
}

/// What the engine tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bring up an IPsec SA to this NBMA address; NHRP for it is queued.
    NeedSa {
        /// Peer NBMA (post-NAT) address.
        nbma: IpAddr,
    },
    /// Registration went unanswered through the whole backoff: tear the SA
    /// down and start over (FRR does this through VICI; it recovers silently
    /// broken IPsec, wire notes item 7).
    ResetSa {
        /// NHS NBMA address.
        nbma: IpAddr,
    },
    /// Install a route `prefix/prefix_len` via tunnel next hop `next_hop`
    /// whose NBMA is `nbma`.
    InstallRoute {
        /// Network.
        prefix: IpAddr,
        /// Length.
        prefix_len: u8,
        /// Tunnel next hop.
        next_hop: IpAddr,
        /// NBMA address of the next hop.
        nbma: IpAddr,
    },
    /// Withdraw a route installed earlier.
    WithdrawRoute {
        /// Network.
        prefix: IpAddr,
        /// Length.
        prefix_len: u8,
        /// Tunnel next hop it pointed at.
        next_hop: IpAddr,
    },
    /// Spoke: an NHS accepted our registration.
    NhsUp {
        /// NHS tunnel address, when known.
        protocol_addr: Option<IpAddr>,
        /// NHS NBMA address.
        nbma: IpAddr,
    },
    /// Spoke: our registration with an NHS lapsed or its SA died.
    NhsDown {
        /// NHS tunnel address, when known.
        protocol_addr: Option<IpAddr>,
        /// NHS NBMA address.
        nbma: IpAddr,
    },
    /// Spoke: an NHS refused our registration.
    RegistrationRefused {
        /// NHS NBMA address.
        nbma: IpAddr,
        /// CIE code it answered.
        code: CieCode,
    },
    /// Hub: a spoke registered (or changed its NBMA address).
    PeerRegistered {
        /// Spoke tunnel address.
        protocol_addr: IpAddr,
        /// NBMA address to reach it (observed, post-NAT).
        nbma: IpAddr,
    },
    /// Hub: a registration was purged or expired.
    PeerUnregistered {
        /// Spoke tunnel address.
        protocol_addr: IpAddr,
        /// NBMA address it had.
        nbma: IpAddr,
    },
    /// Spoke: the NHS reported our post-NAT NBMA address (wire notes item 8).
    PublicNbmaLearned {
        /// Our public NBMA address.
        nbma: IpAddr,
    },
    /// Spoke: a resolution was refused or went unanswered.
    ResolutionFailed {
        /// What we tried to resolve.
        target: IpAddr,
        /// The negative CIE code, `None` on timeout.
        code: Option<CieCode>,
    },
    /// An Error Indication arrived.
    ErrorIndication {
        /// Who sent it.
        from_nbma: IpAddr,
        /// Its code.
        code: ErrorCode,
    },
}

#[derive(Debug, Clone, Copy)]
enum NhsPhase {
    Idle,
    ExpectSa {
        retry_at: Instant,
    },
    ExpectRegistrationReply {
        request_id: u32,
        wait: Duration,
        retry_at: Instant,
        registered_until: Option<Instant>,
    },
    Registered {
        refresh_at: Instant,
        expires: Instant,
    },
}

#[derive(Debug)]
struct Nhs {
    config: NhsConfig,
    protocol_addr: Option<IpAddr>,
    phase: NhsPhase,
    /// Id of the accepted registration: IOS expects a purge to carry it
    /// (wire notes item 6).
    registered_id: Option<u32>,
}

impl Nhs {
    fn is_up(&self, now: Instant) -> bool {
        match self.phase {
            NhsPhase::Registered { expires, .. } => now < expires,
            NhsPhase::ExpectRegistrationReply {
                registered_until, ..
            } => registered_until.is_some_and(|u| now < u),
            _ => false,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            NhsPhase::Idle => None,
            NhsPhase::ExpectSa { retry_at } => Some(retry_at),
            NhsPhase::ExpectRegistrationReply {
                retry_at,
                registered_until,
                ..
            } => Some(registered_until.map_or(retry_at, |u| u.min(retry_at))),
            NhsPhase::Registered { refresh_at, .. } => Some(refresh_at),
        }
    }
}

#[derive(Debug, Clone)]
struct PendingResolution {
    request_id: u32,
    nhs_nbma: IpAddr,
    wait: Duration,
    retry_at: Instant,
    attempts: u8,
    packet: Vec<u8>,
}

#[derive(Debug)]
struct Queued {
    deadline: Instant,
    packet_type: PacketType,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct RedirectBucket {
    tokens: u32,
    last_refill: Instant,
    last_sent: Option<Instant>,
}

/// One NHRP interface (one network-id): its cache, NHS client state and
/// server state. See the module documentation for the SA gating rule.
pub struct Engine {
    config: Config,
    ids: Box<dyn RequestIdSource>,
    public_nbma: Option<IpAddr>,
    nhs: Vec<Nhs>,
    /// Keyed by (network prefix, prefix length). One engine serves one
    /// network-id, so this map is the network-id's cache scope.
    cache: BTreeMap<(IpAddr, u8), CacheEntry>,
    pending: BTreeMap<IpAddr, PendingResolution>,
    routes: Vec<Route>,
    sa_ready: BTreeSet<IpAddr>,
    queues: BTreeMap<IpAddr, VecDeque<Queued>>,
    redirects: HashMap<(IpAddr, IpAddr), RedirectBucket>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    shut_down: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("role", &self.config.role)
            .field("protocol_addr", &self.config.protocol_addr)
            .field("network_id", &self.config.network_id)
            .field("cache_entries", &self.cache.len())
            .finish_non_exhaustive()
    }
}

fn secs16(d: Duration) -> u16 {
    u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
}

/// The network of `ip/len`; IPv4 only (the config rejects IPv6).
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        v6 => v6,
    }
}

fn covers(prefix: IpAddr, len: u8, ip: IpAddr) -> bool {
    prefix.is_ipv4() == ip.is_ipv4() && mask(ip, len) == prefix
}

/// A CIE prefix length as a host prefix: 0xFF means "this host, uniquely".
fn host_len(p: u8) -> u8 {
    if p == PREFIX_LEN_UNIQUE_HOST || p > 32 {
        32
    } else {
        p
    }
}

/// Source and destination of an IPv4 header (wire notes item 10: the
/// redirect's payload, not its dst proto, names the destination).
fn inner_ipv4(data: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let first = *data.first()?;
    if first >> 4 != 4 || usize::from(first & 0x0f) < 5 {
        return None;
    }
    let src: [u8; 4] = data.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = data.get(16..20)?.try_into().ok()?;
    Some((IpAddr::from(src), IpAddr::from(dst)))
}

impl Engine {
    /// Builds an engine. Nothing is sent until [`Engine::register`] (spoke).
    pub fn new(config: Config, ids: impl RequestIdSource + 'static) -> Result<Self, ConfigError> {
        config.validate()?;
        let nhs = config
            .nhs
            .iter()
            .map(|c| Nhs {
                config: c.clone(),
                protocol_addr: c.protocol_addr,
                phase: NhsPhase::Idle,
                registered_id: None,
            })
            .collect();
        Ok(Self {
            config,
            ids: Box::new(ids),
            public_nbma: None,
            nhs,
            cache: BTreeMap::new(),
            pending: BTreeMap::new(),
            routes: Vec::new(),
            sa_ready: BTreeSet::new(),
            queues: BTreeMap::new(),
            redirects: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            shut_down: false,
        })
    }

    // ----------------------------------------------------------------- outputs

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the daemon.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`Engine::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let nhs = self.nhs.iter().filter_map(Nhs::deadline);
        let pending = self.pending.values().map(|p| p.retry_at);
        let cache = self.cache.values().flat_map(|e| {
            [e.expires, e.refresh_at]
                .into_iter()
                .flatten()
                .filter(|_| e.kind == EntryKind::Dynamic || e.kind == EntryKind::Shortcut)
        });
        let queues = self
            .queues
            .values()
            .filter_map(|q| q.front().map(|p| p.deadline));
        nhs.chain(pending).chain(cache).chain(queues).min()
    }

    // ------------------------------------------------------------ read access

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Our post-NAT NBMA address as learned from an NHS.
    pub fn public_nbma(&self) -> Option<IpAddr> {
        self.public_nbma
    }

    /// The cache as the operator sees it: own address, NHSs, then learned entries.
    pub fn cache_entries(&self, now: Instant) -> Vec<CacheEntry> {
        let own = CacheEntry {
            kind: EntryKind::Local,
            protocol_addr: self.config.protocol_addr,
            prefix_len: 32,
            next_hop: self.config.protocol_addr,
            nbma: self.config.nbma_addr,
            post_nat_nbma: self.public_nbma,
            flags: EntryFlags {
                unique: self.config.unique,
                nat: self.public_nbma.is_some_and(|p| p != self.config.nbma_addr),
                ..EntryFlags::default()
            },
            created: now,
            expires: None,
            holding_time: self.config.holding_time,
            request_id: 0,
            refresh_at: None,
        };
        let nhs = self.nhs.iter().filter_map(|n| {
            let p = n.protocol_addr?;
            let expires = match n.phase {
                NhsPhase::Registered { expires, .. } => Some(expires),
                _ => None,
            };
            Some(CacheEntry {
                kind: EntryKind::Nhs,
                protocol_addr: p,
                prefix_len: 32,
                next_hop: p,
                nbma: n.config.nbma_addr,
                post_nat_nbma: None,
                flags: EntryFlags {
                    registered: n.is_up(now),
                    ..EntryFlags::default()
                },
                created: now,
                expires,
                holding_time: self.config.holding_time,
                request_id: n.registered_id.unwrap_or(0),
                refresh_at: None,
            })
        });
        std::iter::once(own)
            .chain(nhs)
            .chain(self.cache.values().filter(|e| e.is_live(now)).cloned())
            .collect()
    }

    /// NHS states (spoke).
    pub fn nhs_status(&self, now: Instant) -> Vec<NhsStatus> {
        self.nhs
            .iter()
            .map(|n| NhsStatus {
                protocol_addr: n.protocol_addr,
                nbma_addr: n.config.nbma_addr,
                multicast: n.config.multicast,
                state: if n.is_up(now) {
                    NhsState::Up
                } else if matches!(n.phase, NhsPhase::ExpectRegistrationReply { .. }) {
                    NhsState::Registering
                } else {
                    NhsState::WaitingForSa
                },
                expires: match n.phase {
                    NhsPhase::Registered { expires, .. } => Some(expires),
                    NhsPhase::ExpectRegistrationReply {
                        registered_until, ..
                    } => registered_until,
                    _ => None,
                },
                retry_wait: match n.phase {
                    NhsPhase::ExpectRegistrationReply { wait, .. } => wait,
                    _ => Duration::ZERO,
                },
            })
            .collect()
    }

    /// NBMA addresses that get a copy of multicast (OSPF hellos): on a spoke
    /// the NHSs configured with `multicast`, on a hub every registered spoke.
    pub fn multicast_nbmas(&self, now: Instant) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = match self.config.role {
            Role::Spoke => self
                .nhs
                .iter()
                .filter(|n| n.config.multicast)
                .map(|n| n.config.nbma_addr)
                .collect(),
            Role::Hub => self
                .cache
                .values()
                .filter(|e| e.kind == EntryKind::Dynamic && e.flags.registered && e.is_live(now))
                .map(CacheEntry::effective_nbma)
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// The NBMA address for a tunnel address, from the NHSs and the cache.
    pub fn lookup_nbma(&self, protocol_addr: IpAddr, now: Instant) -> Option<IpAddr> {
        if let Some(n) = self
            .nhs
            .iter()
            .find(|n| n.protocol_addr == Some(protocol_addr))
        {
            return Some(n.config.nbma_addr);
        }
        self.cache
            .values()
            .find(|e| e.next_hop == protocol_addr && e.is_live(now))
            .map(CacheEntry::effective_nbma)
    }

    // ----------------------------------------------------------------- commands

    /// `clear ip nhrp`: forgets every dynamic and shortcut entry (withdrawing shortcut routes
    /// and reporting removed registrations as events); static, NHS and local entries stay.
    /// Spokes whose registration was removed re-register at their next refresh, as with Cisco.
    /// Returns how many entries were removed.
    pub fn clear_dynamic(&mut self) -> usize {
        let keys: Vec<(IpAddr, u8)> = self
            .cache
            .iter()
            .filter(|(_, e)| matches!(e.kind, EntryKind::Dynamic | EntryKind::Shortcut))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.remove_entry(*k);
        }
        keys.len()
    }

    /// Applies a reloaded configuration. Only what can change without a new identity is
    /// taken — the authentication key, holding time, unique flag, MTU, redirect and shortcut —
    /// and the next packets use it; a change of role, addresses, network-id or NHS list is
    /// refused (the caller restarts instead), and so is an invalid configuration.
    pub fn reconfigure(&mut self, new: Config) -> Result<(), ConfigError> {
        new.validate()?;
        let identity = |c: &Config| {
            (
                c.role,
                c.protocol_addr,
                c.prefix_len,
                c.nbma_addr,
                c.network_id,
                c.nhs.clone(),
            )
        };
        if identity(&new) != identity(&self.config) {
            return Err(ConfigError::NeedsRestart);
        }
        self.config = new;
        Ok(())
    }

    /// The routing table the engine answers resolutions from: routes with no
    /// next hop are this router's own prefixes.
    pub fn set_routes(&mut self, routes: Vec<Route>) {
        self.routes = routes;
    }

    /// Spoke: register with every NHS (asking for SAs first where needed).
    pub fn register(&mut self, now: Instant) {
        self.shut_down = false;
        for i in 0..self.nhs.len() {
            self.nhs_start(now, i);
        }
    }

    /// The daemon brought up an SA to `nbma`: release what waits for it.
    pub fn sa_up(&mut self, now: Instant, nbma: IpAddr) {
        self.sa_ready.insert(nbma);
        self.flush_queue(now, nbma);
        if self.shut_down {
            return;
        }
        for i in 0..self.nhs.len() {
            let waiting = self.nhs.get(i).is_some_and(|n| {
                n.config.nbma_addr == nbma && matches!(n.phase, NhsPhase::ExpectSa { .. })
            });
            if waiting {
                self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, None);
            }
        }
    }

    /// The SA to `nbma` is gone (DPD, delete): drop what depends on it.
    pub fn peer_dead(&mut self, now: Instant, nbma: IpAddr) {
        self.sa_ready.remove(&nbma);
        if let Some(q) = self.queues.remove(&nbma) {
            for _ in q {
                self.counters.drop(crate::cache::DropReason::QueueExpired);
            }
        }
        let keys: Vec<_> = self
            .cache
            .iter()
            .filter(|(_, e)| e.effective_nbma() == nbma)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.remove_entry(k);
        }
        let retry = now + Self::sa_retry_wait(self.config.holding_time);
        for n in &mut self.nhs {
            if n.config.nbma_addr != nbma || matches!(n.phase, NhsPhase::Idle) {
                continue;
            }
            if n.is_up(now) {
                self.events.push_back(Event::NhsDown {
                    protocol_addr: n.protocol_addr,
                    nbma,
                });
            }
            n.phase = NhsPhase::ExpectSa { retry_at: retry };
            if !self.shut_down {
                self.events.push_back(Event::NeedSa { nbma });
            }
        }
    }

    /// Our NBMA address changed: purge the old registrations, then register
    /// the new address (wire notes item 6).
    pub fn set_nbma(&mut self, now: Instant, nbma: IpAddr) {
        if nbma == self.config.nbma_addr {
            return;
        }
        self.send_purges(now);
        self.config.nbma_addr = nbma;
        self.public_nbma = None;
        for i in 0..self.nhs.len() {
            if let Some(n) = self.nhs.get_mut(i) {
                n.phase = NhsPhase::Idle;
            }
            self.nhs_start(now, i);
        }
    }

    /// Shutting down: purge our registrations and withdraw shortcuts.
    pub fn shutdown(&mut self, now: Instant) {
        self.send_purges(now);
        self.shut_down = true;
        for n in &mut self.nhs {
            if n.is_up(now) {
                self.events.push_back(Event::NhsDown {
                    protocol_addr: n.protocol_addr,
                    nbma: n.config.nbma_addr,
                });
            }
            n.phase = NhsPhase::Idle;
        }
        let keys: Vec<_> = self.cache.keys().copied().collect();
        for k in keys {
            self.remove_entry(k);
        }
        self.pending.clear();
    }

    /// Spoke: find a shortcut for `target` (a data destination). A live
    /// shortcut is marked used, so it is refreshed before it expires.
    pub fn resolve(&mut self, now: Instant, target: IpAddr) {
        if self.config.role != Role::Spoke || self.shut_down || !target.is_ipv4() {
            return;
        }
        if let Some(e) = self.cache.values_mut().find(|e| {
            e.kind == EntryKind::Shortcut
                && e.is_live(now)
                && covers(e.protocol_addr, e.prefix_len, target)
        }) {
            e.flags.used = true;
            return;
        }
        if self.pending.contains_key(&target) {
            return;
        }
        let Some(nhs_nbma) = self
            .nhs
            .iter()
            .find(|n| n.is_up(now))
            .map(|n| n.config.nbma_addr)
        else {
            self.counters.drop(DropReason::NoRoute);
            return;
        };
        self.start_resolution(now, target, nhs_nbma);
    }

    /// Spoke: the data plane used a route towards `target`; a shortcut
    /// covering it will be refreshed rather than left to expire.
    pub fn shortcut_used(&mut self, now: Instant, target: IpAddr) {
        for e in self.cache.values_mut() {
            if e.kind == EntryKind::Shortcut
                && e.is_live(now)
                && covers(e.protocol_addr, e.prefix_len, target)
            {
                e.flags.used = true;
            }
        }
    }

    /// Hub: a data packet came in from `src_nbma` over the tunnel and goes
    /// back out over the tunnel; `inner` is its IP header and leading bytes.
    /// Sends a traffic indication (redirect) to the source, rate-limited per
    /// (source, destination) pair.
    pub fn traffic_indication_needed(&mut self, now: Instant, src_nbma: IpAddr, inner: &[u8]) {
        if self.config.role != Role::Hub || !self.config.redirect {
            return;
        }
        let Some((src, dst)) = inner_ipv4(inner) else {
            self.counters.drop(DropReason::BadInnerPacket);
            return;
        };
        if !self.redirect_allowed(now, src, dst) {
            self.counters.drop(DropReason::RateLimited);
            return;
        }
        // Data arrived from `src_nbma`, so an SA to it exists.
        self.sa_ready.insert(src_nbma);
        let mut pkt = self.base_packet(
            PacketType::TRAFFIC_INDICATION,
            DIRECT_HOP_COUNT,
            Body::TrafficIndication {
                traffic_code: TRAFFIC_CODE_REDIRECT,
                data: inner.to_vec(),
            },
        );
        // Wire notes item 10: dst proto is the source of the offending
        // packet, the spoke being told.
        pkt.dst_protocol = ip_bytes(src);
        pkt.extensions = self.auth_only_extensions();
        self.send(now, src_nbma, &pkt);
    }

    fn redirect_allowed(&mut self, now: Instant, src: IpAddr, dst: IpAddr) -> bool {
        if self.redirects.len() > 4096 {
            let idle = REDIRECT_REFILL * REDIRECT_BURST * 6;
            self.redirects
                .retain(|_, b| now.saturating_duration_since(b.last_refill) < idle);
        }
        let b = self.redirects.entry((src, dst)).or_insert(RedirectBucket {
            tokens: REDIRECT_BURST,
            last_refill: now,
            last_sent: None,
        });
        let elapsed = now.saturating_duration_since(b.last_refill);
        let refills =
            u32::try_from(elapsed.as_secs() / REDIRECT_REFILL.as_secs()).unwrap_or(u32::MAX);
        if refills > 0 {
            b.tokens = b.tokens.saturating_add(refills).min(REDIRECT_BURST);
            b.last_refill = now;
        }
        let spaced = b
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= REDIRECT_SPACING);
        if b.tokens == 0 || !spaced {
            return false;
        }
        b.tokens -= 1;
        b.last_sent = Some(now);
        true
    }

    // ------------------------------------------------------------------ timers

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.nhs.len() {
            self.nhs_timeout(now, i);
        }
        self.resolution_timeouts(now);
        self.cache_timeouts(now);
        let mut expired = 0;
        for q in self.queues.values_mut() {
            while q.front().is_some_and(|p| p.deadline <= now) {
                q.pop_front();
                expired += 1;
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
        for _ in 0..expired {
            self.counters.drop(DropReason::QueueExpired);
        }
    }

    fn nhs_timeout(&mut self, now: Instant, i: usize) {
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        let nbma = n.config.nbma_addr;
        match n.phase {
            NhsPhase::Idle => {}
            NhsPhase::ExpectSa { retry_at } if retry_at <= now => {
                if self.sa_ready.contains(&nbma) {
                    self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, None);
                } else {
                    n.phase = NhsPhase::ExpectSa {
                        retry_at: now + Self::sa_retry_wait(self.config.holding_time),
                    };
                    self.events.push_back(Event::NeedSa { nbma });
                }
            }
            NhsPhase::ExpectSa { .. } => {}
            NhsPhase::ExpectRegistrationReply {
                request_id,
                wait,
                retry_at,
                registered_until,
            } => {
                let mut registered_until = registered_until;
                if registered_until.is_some_and(|u| u <= now) {
                    registered_until = None;
                    n.phase = NhsPhase::ExpectRegistrationReply {
                        request_id,
                        wait,
                        retry_at,
                        registered_until,
                    };
                    self.events.push_back(Event::NhsDown {
                        protocol_addr: n.protocol_addr,
                        nbma,
                    });
                }
                if retry_at > now {
                    return;
                }
                let next = wait * 2;
                if next > MAX_REGISTRATION_WAIT {
                    if registered_until.is_some() {
                        self.events.push_back(Event::NhsDown {
                            protocol_addr: n.protocol_addr,
                            nbma,
                        });
                    }
                    n.phase = NhsPhase::ExpectSa {
                        retry_at: now + Self::sa_retry_wait(self.config.holding_time),
                    };
                    self.sa_ready.remove(&nbma);
                    self.events.push_back(Event::ResetSa { nbma });
                    self.events.push_back(Event::NeedSa { nbma });
                } else {
                    // Retransmissions keep the request id so a late reply
                    // still matches (RFC 2332 §5.2.0.1 Request ID).
                    self.send_registration(now, i, Some(request_id), next, registered_until);
                }
            }
            NhsPhase::Registered {
                refresh_at,
                expires,
            } if refresh_at <= now => {
                // Re-register at a third of the holding time (wire notes item 7).
                self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, Some(expires));
            }
            NhsPhase::Registered { .. } => {}
        }
    }

    fn resolution_timeouts(&mut self, now: Instant) {
        let due: Vec<IpAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.retry_at <= now)
            .map(|(t, _)| *t)
            .collect();
        for target in due {
            let Some(mut p) = self.pending.remove(&target) else {
                continue;
            };
            if p.attempts >= RESOLUTION_ATTEMPTS {
                self.events
                    .push_back(Event::ResolutionFailed { target, code: None });
                continue;
            }
            // Wire notes item 9: retries reuse the request id, backoff from 1 s.
            p.attempts += 1;
            p.wait *= 2;
            p.retry_at = now + p.wait;
            self.send_bytes(
                now,
                p.nhs_nbma,
                PacketType::RESOLUTION_REQUEST,
                p.packet.clone(),
            );
            self.pending.insert(target, p);
        }
    }

    fn cache_timeouts(&mut self, now: Instant) {
        let expired: Vec<_> = self
            .cache
            .iter()
            .filter(|(_, e)| !e.is_live(now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.remove_entry(k);
        }
        let refresh: Vec<_> = self
            .cache
            .iter()
            .filter(|(_, e)| e.refresh_at.is_some_and(|r| r <= now))
            .map(|(k, e)| (*k, e.flags.used))
            .collect();
        for ((prefix, len), used) in refresh {
            if let Some(e) = self.cache.get_mut(&(prefix, len)) {
                e.refresh_at = None;
                e.flags.used = false;
            }
            if used {
                // A used shortcut is re-resolved before it expires; an unused
                // one is left to expire.
                self.pending.remove(&prefix);
                self.resolve_uncached(now, prefix);
            }
        }
    }

    fn resolve_uncached(&mut self, now: Instant, target: IpAddr) {
        let Some(nhs_nbma) = self
            .nhs
            .iter()
            .find(|n| n.is_up(now))
            .map(|n| n.config.nbma_addr)
        else {
            return;
        };
        self.start_resolution(now, target, nhs_nbma);
    }

    /// Sends a Resolution Request for `target` through the NHS at `nhs_nbma` and tracks it
    /// for retransmission with the same request id (wire notes item 9).
    fn start_resolution(&mut self, now: Instant, target: IpAddr, nhs_nbma: IpAddr) {
        let request_id = self.ids.next_request_id();
        let pkt = self.resolution_request(target, request_id);
        let Some(bytes) = self.encode(&pkt) else {
            return;
        };
        self.send_bytes(now, nhs_nbma, PacketType::RESOLUTION_REQUEST, bytes.clone());
        self.pending.insert(
            target,
            PendingResolution {
                request_id,
                nhs_nbma,
                wait: INITIAL_RESOLUTION_WAIT,
                retry_at: now + INITIAL_RESOLUTION_WAIT,
                attempts: 1,
                packet: bytes,
            },
        );
    }

    fn remove_entry(&mut self, key: (IpAddr, u8)) {
        let Some(e) = self.cache.remove(&key) else {
            return;
        };
        match e.kind {
            EntryKind::Shortcut => self.events.push_back(Event::WithdrawRoute {
                prefix: e.protocol_addr,
                prefix_len: e.prefix_len,
                next_hop: e.next_hop,
            }),
            EntryKind::Dynamic if e.flags.registered => {
                self.events.push_back(Event::PeerUnregistered {
                    protocol_addr: e.protocol_addr,
                    nbma: e.effective_nbma(),
                })
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------ input

    /// A received NHRP packet (after GRE, protocol 0x2001). `from_nbma` is
    /// the observed outer source address (post-NAT).
    pub fn handle_packet(&mut self, now: Instant, from_nbma: IpAddr, bytes: &[u8]) {
        // The daemon hands over only NHRP that arrived inside ESP, so any
        // packet from this address proves an SA to it (even one that then
        // fails NHRP authentication, which must still get its Error Indication).
        if self.sa_ready.insert(from_nbma) {
            self.flush_queue(now, from_nbma);
        }
        let pkt = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                let reason = if e.error_code().is_none() {
                    DropReason::Checksum
                } else {
                    DropReason::Malformed
                };
                self.counters.drop(reason);
                if let (Some(code), Some(src)) = (e.error_code(), Packet::peek_source(bytes)) {
                    // RFC 2332 §5.2.7: never answer an Error Indication with one.
                    if src.packet_type != PacketType::ERROR_INDICATION && self.authentic_raw(bytes)
                    {
                        self.send_error(
                            now,
                            from_nbma,
                            src.src_protocol,
                            code,
                            e.error_offset(),
                            bytes,
                        );
                    }
                }
                return;
            }
        };
        self.counters.count_rx(pkt.packet_type);
        if pkt.afn != AFN_IPV4 || pkt.protocol_type != PROTOCOL_TYPE_IPV4 {
            self.counters.drop(DropReason::UnsupportedAddressFamily);
            return;
        }
        if !self.authentic(&pkt) {
            self.counters.auth_failures += 1;
            self.counters.drop(DropReason::AuthFailure);
            // Wire notes item 11: code 11, never in reply to an Error Indication.
            if pkt.packet_type != PacketType::ERROR_INDICATION {
                self.send_error(
                    now,
                    from_nbma,
                    pkt.src_protocol.clone(),
                    ErrorCode::AUTHENTICATION_FAILURE,
                    0,
                    bytes,
                );
            }
            return;
        }
        match (pkt.packet_type, self.config.role) {
            (PacketType::REGISTRATION_REQUEST, Role::Hub) => {
                self.on_registration_request(now, from_nbma, &pkt)
            }
            (PacketType::REGISTRATION_REPLY, Role::Spoke) => self.on_registration_reply(now, &pkt),
            (PacketType::RESOLUTION_REQUEST, _) => {
                self.on_resolution_request(now, from_nbma, &pkt, bytes)
            }
            (PacketType::RESOLUTION_REPLY, _) => {
                self.on_resolution_reply(now, from_nbma, &pkt, bytes)
            }
            (PacketType::PURGE_REQUEST, _) => self.on_purge_request(now, from_nbma, &pkt),
            (PacketType::PURGE_REPLY, _) => {}
            (PacketType::ERROR_INDICATION, _) => {
                if let Body::ErrorIndication { error_code, .. } = pkt.body {
                    self.events.push_back(Event::ErrorIndication {
                        from_nbma,
                        code: error_code,
                    });
                }
            }
            (PacketType::TRAFFIC_INDICATION, Role::Spoke) => self.on_traffic_indication(now, &pkt),
            _ => self.counters.drop(DropReason::UnhandledType),
        }
    }

    /// Wire notes item 11: with a key configured, every received packet must
    /// carry exactly that cleartext key.
    fn authentic(&self, pkt: &Packet) -> bool {
        let Some(key) = &self.config.auth_key else {
            return true;
        };
        match pkt
            .extension(ExtensionType::AUTHENTICATION)
            .map(|e| &e.body)
        {
            Some(ExtensionBody::Authentication(a)) => {
                a.spi == AUTH_SPI_CLEARTEXT && a.data.as_slice() == key.as_slice()
            }
            // An RFC 2332 §5.2.7 Error Indication has no extensions at all;
            // one that carries authentication is still checked above.
            None if pkt.packet_type == PacketType::ERROR_INDICATION && pkt.extensions.is_none() => {
                true
            }
            _ => false,
        }
    }

    /// For packets that failed to decode: only answer with an Error
    /// Indication when no key is configured, since the key cannot be checked.
    fn authentic_raw(&self, _bytes: &[u8]) -> bool {
        self.config.auth_key.is_none()
    }

    // ------------------------------------------------------------ building

    fn base_packet(&self, t: PacketType, hop_count: u8, body: Body) -> Packet {
        let mut p = Packet::new_ipv4(t, hop_count, body);
        p.src_nbma = ip_bytes(self.config.nbma_addr);
        p.src_protocol = ip_bytes(self.config.protocol_addr);
        p
    }

    /// A fresh authentication extension: generated per packet, never
    /// copied from a received one (wire notes item 11).
    fn auth_extension(&self) -> Option<Extension> {
        self.config.auth_key.as_ref().map(|k| {
            Extension::compulsory(ExtensionBody::Authentication(Authentication::cleartext(k)))
        })
    }

    fn auth_only_extensions(&self) -> Option<Vec<Extension>> {
        self.auth_extension().map(|a| vec![a])
    }

    /// This router's identity for Responder Address and transit records.
    fn identity_cie(&self) -> Cie {
        Cie {
            code: CieCode::SUCCESS,
            prefix_len: 0,
            mtu: self.config.mtu,
            holding_time: secs16(self.config.holding_time),
            client_nbma: ip_bytes(self.config.nbma_addr),
            client_nbma_subaddr: Vec::new(),
            client_protocol: ip_bytes(self.config.protocol_addr),
            preference: 0,
        }
    }

    /// Our post-NAT (NBMA, protocol) pair for the NAT extension, once known.
    fn own_nat_cies(&self) -> Vec<Cie> {
        match self.public_nbma {
            Some(p) => vec![Cie {
                prefix_len: 32,
                mtu: self.config.mtu,
                client_nbma: ip_bytes(p),
                client_protocol: ip_bytes(self.config.protocol_addr),
                ..Cie::default()
            }],
            None => Vec::new(),
        }
    }

    fn request_prefix_len(&self) -> u8 {
        if self.config.unique {
            PREFIX_LEN_UNIQUE_HOST
        } else {
            32
        }
    }

    /// Extensions of our own requests in the order FRR sends them (wire
    /// notes item 7): forward transit, reverse transit, responder address
    /// (all empty), NAT, authentication.
    fn request_extensions(&self, nat: Vec<Cie>) -> Vec<Extension> {
        let mut v = vec![
            Extension::compulsory(ExtensionBody::ForwardTransit(Vec::new())),
            Extension::compulsory(ExtensionBody::ReverseTransit(Vec::new())),
            Extension::compulsory(ExtensionBody::ResponderAddress(Vec::new())),
            // Non-compulsory, as FRR and OpenNHRP send it (wire notes item 12).
            Extension::optional(ExtensionBody::CiscoNatAddress(nat)),
        ];
        v.extend(self.auth_extension());
        v
    }

    /// The registration request for NHS `i` (wire notes item 7).
    pub fn registration_request(&self, i: usize, request_id: u32) -> Option<Packet> {
        let n = self.nhs.get(i)?;
        let mut flags = Flags::CISCO_NAT;
        if self.config.unique {
            flags |= Flags::REGISTRATION_U;
        }
        let mut p = self.base_packet(
            PacketType::REGISTRATION_REQUEST,
            DIRECT_HOP_COUNT,
            Body::Common {
                flags,
                request_id,
                cies: vec![Cie {
                    prefix_len: self.request_prefix_len(),
                    mtu: self.config.mtu,
                    holding_time: secs16(self.config.holding_time),
                    ..Cie::default()
                }],
            },
        );
        // RFC 2332 §5.2.3: dst proto is the NHS, or our own address when
        // the NHS address is not known.
        p.dst_protocol = ip_bytes(n.protocol_addr.unwrap_or(self.config.protocol_addr));
        let nhs_cie = Cie {
            prefix_len: 32,
            mtu: self.config.mtu,
            client_nbma: ip_bytes(n.config.nbma_addr),
            client_protocol: ip_bytes(n.protocol_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            ..Cie::default()
        };
        p.extensions = Some(self.request_extensions(vec![nhs_cie]));
        Some(p)
    }

    /// The resolution request for `target` (wire notes item 9).
    pub fn resolution_request(&self, target: IpAddr, request_id: u32) -> Packet {
        let mut p = self.base_packet(
            PacketType::RESOLUTION_REQUEST,
            DEFAULT_HOP_COUNT,
            Body::Common {
                flags: Flags::RESOLUTION_Q
                    | Flags::RESOLUTION_A
                    | Flags::RESOLUTION_S
                    | Flags::CISCO_NAT,
                request_id,
                cies: vec![Cie {
                    prefix_len: self.request_prefix_len(),
                    mtu: self.config.mtu,
                    holding_time: secs16(self.config.holding_time),
                    ..Cie::default()
                }],
            },
        );
        p.dst_protocol = ip_bytes(target);
        p.extensions = Some(self.request_extensions(self.own_nat_cies()));
        p
    }

    /// Extensions of a reply to `req`, in the request's order: transit
    /// records copied, Responder Address filled with us, the NAT extension
    /// as `nat` makes it, other extensions copied, authentication
    /// regenerated at the end (RFC 2332 §5.3, wire notes items 11 and 15).
    fn reply_extensions(
        &self,
        req: &Packet,
        nat: impl Fn(&[Cie]) -> Vec<Cie>,
    ) -> Option<Vec<Extension>> {
        let Some(exts) = &req.extensions else {
            return self.auth_only_extensions();
        };
        let mut out = Vec::with_capacity(exts.len() + 1);
        for e in exts {
            let body = match &e.body {
                ExtensionBody::ResponderAddress(_) => {
                    ExtensionBody::ResponderAddress(vec![self.identity_cie()])
                }
                ExtensionBody::CiscoNatAddress(c) => ExtensionBody::CiscoNatAddress(nat(c)),
                ExtensionBody::Authentication(_) => continue,
                other => other.clone(),
            };
            out.push(Extension {
                compulsory: e.compulsory,
                body,
            });
        }
        out.extend(self.auth_extension());
        Some(out)
    }

    fn error_indication(
        &self,
        dst_protocol: Vec<u8>,
        code: ErrorCode,
        offset: u16,
        offending: &[u8],
    ) -> Packet {
        let contents = offending
            .get(..MAX_ERROR_CONTENTS)
            .unwrap_or(offending)
            .to_vec();
        let mut p = self.base_packet(
            PacketType::ERROR_INDICATION,
            DEFAULT_HOP_COUNT,
            Body::ErrorIndication {
                error_code: code,
                error_offset: offset,
                contents,
            },
        );
        p.dst_protocol = dst_protocol;
        // RFC 2332 §5.2.7 gives Error Indications no extensions (Wireshark
        // reports any as malformed), so ours carry no authentication either;
        // FRR and Cisco add them, and `authentic` accepts both forms.
        p.extensions = None;
        p
    }

    fn send_error(
        &mut self,
        now: Instant,
        to: IpAddr,
        dst_protocol: Vec<u8>,
        code: ErrorCode,
        offset: u16,
        offending: &[u8],
    ) {
        let p = self.error_indication(dst_protocol, code, offset, offending);
        self.send(now, to, &p);
    }

    // ------------------------------------------------------------- sending

    fn encode(&mut self, p: &Packet) -> Option<Vec<u8>> {
        match p.to_bytes() {
            Ok(b) => Some(b),
            Err(_) => {
                self.counters.drop(DropReason::EncodeFailed);
                None
            }
        }
    }

    fn send(&mut self, now: Instant, dst: IpAddr, p: &Packet) {
        if let Some(b) = self.encode(p) {
            self.send_bytes(now, dst, p.packet_type, b);
        }
    }

    fn send_bytes(&mut self, now: Instant, dst: IpAddr, t: PacketType, bytes: Vec<u8>) {
        if self.sa_ready.contains(&dst) {
            self.counters.count_tx(t);
            self.transmits.push_back(Transmit {
                dst_nbma: dst,
                bytes,
            });
            return;
        }
        let q = self.queues.entry(dst).or_default();
        if q.is_empty() {
            self.events.push_back(Event::NeedSa { nbma: dst });
        }
        if q.len() >= SA_QUEUE_LEN {
            self.counters.drop(DropReason::QueueFull);
            return;
        }
        q.push_back(Queued {
            deadline: now + SA_QUEUE_TIMEOUT,
            packet_type: t,
            bytes,
        });
    }

    fn flush_queue(&mut self, now: Instant, nbma: IpAddr) {
        let Some(q) = self.queues.remove(&nbma) else {
            return;
        };
        for p in q {
            if p.deadline <= now {
                self.counters.drop(DropReason::QueueExpired);
                continue;
            }
            self.counters.count_tx(p.packet_type);
            self.transmits.push_back(Transmit {
                dst_nbma: nbma,
                bytes: p.bytes,
            });
        }
    }

    // -------------------------------------------------------- NHS client

    /// Wire notes item 7: while the SA to an NHS is not up, ask for one again
    /// every holding time / 4, capped at [`MAX_SA_RETRY_WAIT`].
    fn sa_retry_wait(holding_time: Duration) -> Duration {
        (holding_time / 4).min(MAX_SA_RETRY_WAIT)
    }

    fn nhs_start(&mut self, now: Instant, i: usize) {
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        let nbma = n.config.nbma_addr;
        if self.sa_ready.contains(&nbma) {
            self.send_registration(now, i, None, INITIAL_REGISTRATION_WAIT, None);
        } else {
            // Wire notes item 7: while the SA is not up, retry every holdtime/4 (capped).
            n.phase = NhsPhase::ExpectSa {
                retry_at: now + Self::sa_retry_wait(self.config.holding_time),
            };
            self.events.push_back(Event::NeedSa { nbma });
        }
    }

    fn send_registration(
        &mut self,
        now: Instant,
        i: usize,
        request_id: Option<u32>,
        wait: Duration,
        registered_until: Option<Instant>,
    ) {
        let request_id = request_id.unwrap_or_else(|| self.ids.next_request_id());
        let Some(p) = self.registration_request(i, request_id) else {
            return;
        };
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        n.phase = NhsPhase::ExpectRegistrationReply {
            request_id,
            wait,
            retry_at: now + wait,
            registered_until,
        };
        let nbma = n.config.nbma_addr;
        self.send(now, nbma, &p);
    }

    fn on_registration_reply(&mut self, now: Instant, p: &Packet) {
        let Some(id) = p.request_id() else {
            return;
        };
        let Some(i) = self.nhs.iter().position(|n| {
            matches!(n.phase, NhsPhase::ExpectRegistrationReply { request_id, .. } if request_id == id)
        }) else {
            self.counters.drop(DropReason::UnexpectedReply);
            return;
        };
        let Some(cie) = p.cies().first() else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let own = self.config.protocol_addr;
        let Some(n) = self.nhs.get_mut(i) else {
            return;
        };
        let nbma = n.config.nbma_addr;
        if cie.code != CieCode::SUCCESS {
            self.events.push_back(Event::RegistrationRefused {
                nbma,
                code: cie.code,
            });
            return;
        }
        if n.protocol_addr.is_none() {
            n.protocol_addr = p
                .extension_cies(ExtensionType::RESPONDER_ADDRESS)
                .and_then(|c| c.first())
                .and_then(Cie::client_protocol_ip);
        }
        let was_up = n.is_up(now);
        let hold = match cie.holding_time {
            0 => self.config.holding_time,
            s => Duration::from_secs(u64::from(s)),
        };
        n.phase = NhsPhase::Registered {
            refresh_at: now + hold / 3,
            expires: now + hold,
        };
        n.registered_id = Some(id);
        if !was_up {
            self.events.push_back(Event::NhsUp {
                protocol_addr: n.protocol_addr,
                nbma,
            });
        }
        // Wire notes item 8: the NHS adds a CIE with our observed (post-NAT)
        // NBMA address and our tunnel address to the NAT extension.
        let learned = p
            .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .into_iter()
            .flatten()
            .filter(|c| c.client_protocol_ip() == Some(own))
            .find_map(Cie::client_nbma_ip);
        if let Some(public) = learned {
            if self.public_nbma != Some(public) {
                self.public_nbma = Some(public);
                self.events
                    .push_back(Event::PublicNbmaLearned { nbma: public });
            }
        }
    }

    fn send_purges(&mut self, now: Instant) {
        for i in 0..self.nhs.len() {
            let Some(n) = self.nhs.get(i) else {
                continue;
            };
            let (Some(id), true) = (n.registered_id, n.is_up(now)) else {
                continue;
            };
            let mut p = self.base_packet(
                PacketType::PURGE_REQUEST,
                DIRECT_HOP_COUNT,
                Body::Common {
                    flags: Flags::CISCO_NAT,
                    // Wire notes item 6: IOS matches the purge to the registration by id.
                    request_id: id,
                    cies: vec![Cie {
                        prefix_len: self.request_prefix_len(),
                        mtu: self.config.mtu,
                        client_nbma: ip_bytes(self.config.nbma_addr),
                        client_protocol: ip_bytes(self.config.protocol_addr),
                        ..Cie::default()
                    }],
                },
            );
            p.dst_protocol = ip_bytes(n.protocol_addr.unwrap_or(self.config.protocol_addr));
            p.extensions = self.auth_only_extensions();
            let nbma = n.config.nbma_addr;
            self.send(now, nbma, &p);
        }
    }

    // -------------------------------------------------------- NHS server

    fn on_registration_request(&mut self, now: Instant, from_nbma: IpAddr, req: &Packet) {
        let (Some(src_proto), Some(src_nbma)) = (req.src_protocol_ip(), req.src_nbma_ip()) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let unique = req.flags() & Flags::REGISTRATION_U != 0;
        let forwarded = req
            .extension_cies(ExtensionType::FORWARD_TRANSIT_RECORD)
            .is_some_and(|c| !c.is_empty());
        let mut replies = Vec::with_capacity(req.cies().len());
        for cie in req.cies() {
            let client = cie.client_protocol_ip().unwrap_or(src_proto);
            let claimed = cie.client_nbma_ip().unwrap_or(src_nbma);
            let len = host_len(cie.prefix_len);
            let key = (mask(client, len), len);
            let code = self.register_client(now, key, client, claimed, from_nbma, unique, cie, req);
            replies.push(Cie {
                code,
                ..cie.clone()
            });
        }
        let mut reply = req.clone();
        reply.packet_type = PacketType::REGISTRATION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        if let Body::Common { cies, .. } = &mut reply.body {
            *cies = replies;
        }
        // Wire notes item 8: the first-hop NHS that sees a claimed NBMA
        // different from the outer source adds the observed address.
        let nat_seen = !forwarded && from_nbma != src_nbma;
        let mtu = self.config.mtu;
        reply.extensions = self.reply_extensions(req, |c| {
            let mut v = c.to_vec();
            if nat_seen {
                v.push(Cie {
                    prefix_len: 32,
                    mtu,
                    client_nbma: ip_bytes(from_nbma),
                    client_protocol: ip_bytes(src_proto),
                    ..Cie::default()
                });
            }
            v
        });
        self.send(now, from_nbma, &reply);
    }

    #[allow(clippy::too_many_arguments)]
    fn register_client(
        &mut self,
        now: Instant,
        key: (IpAddr, u8),
        client: IpAddr,
        claimed: IpAddr,
        observed: IpAddr,
        unique: bool,
        cie: &Cie,
        req: &Packet,
    ) -> CieCode {
        if !client.is_ipv4() || !claimed.is_ipv4() {
            return CieCode::ADMINISTRATIVELY_PROHIBITED;
        }
        if client == self.config.protocol_addr {
            return CieCode::ADMINISTRATIVELY_PROHIBITED;
        }
        let post_nat = (observed != claimed).then_some(observed);
        if let Some(old) = self.cache.get(&key).filter(|e| e.is_live(now)) {
            if old.kind != EntryKind::Dynamic {
                return CieCode::ADMINISTRATIVELY_PROHIBITED;
            }
            // Cisco `unique` (wire notes item 6): a unique registration keeps
            // its NBMA address until it expires or is purged.
            if old.flags.unique && (old.nbma != claimed || old.post_nat_nbma != post_nat) {
                return CieCode::UNIQUE_ADDRESS_ALREADY_REGISTERED;
            }
        }
        let hold = Duration::from_secs(u64::from(cie.holding_time));
        let previous = self
            .cache
            .get(&key)
            .filter(|e| e.is_live(now))
            .map(CacheEntry::effective_nbma);
        let created = self
            .cache
            .get(&key)
            .filter(|e| e.is_live(now))
            .map_or(now, |e| e.created);
        self.cache.insert(
            key,
            CacheEntry {
                kind: EntryKind::Dynamic,
                protocol_addr: key.0,
                prefix_len: key.1,
                next_hop: client,
                nbma: claimed,
                post_nat_nbma: post_nat,
                flags: EntryFlags {
                    unique,
                    registered: true,
                    used: false,
                    nat: post_nat.is_some(),
                },
                created,
                expires: Some(now + hold),
                holding_time: hold,
                request_id: req.request_id().unwrap_or(0),
                refresh_at: None,
            },
        );
        if previous != Some(observed) {
            self.events.push_back(Event::PeerRegistered {
                protocol_addr: client,
                nbma: observed,
            });
        }
        CieCode::SUCCESS
    }

    fn on_purge_request(&mut self, now: Instant, from_nbma: IpAddr, req: &Packet) {
        let Some(src_proto) = req.src_protocol_ip() else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        for cie in req.cies() {
            let client = cie.client_protocol_ip().unwrap_or(src_proto);
            let keys: Vec<_> = self
                .cache
                .iter()
                .filter(|(_, e)| e.next_hop == client || e.protocol_addr == client)
                .filter(|(_, e)| e.kind == EntryKind::Dynamic || e.kind == EntryKind::Shortcut)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                self.remove_entry(k);
            }
        }
        // RFC 2332 §5.2.5: N set means the sender wants no reply.
        if req.flags() & Flags::PURGE_N != 0 {
            return;
        }
        let mut reply = req.clone();
        reply.packet_type = PacketType::PURGE_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        reply.extensions = self.reply_extensions(req, <[Cie]>::to_vec);
        self.send(now, from_nbma, &reply);
    }

    // ------------------------------------------------------------ resolution

    /// The prefix length we answer authoritatively for `target`: our own
    /// tunnel address, or a route attached to this router.
    fn local_prefix_for(&self, target: IpAddr) -> Option<u8> {
        if target == self.config.protocol_addr {
            return Some(32);
        }
        self.routes
            .iter()
            .filter(|r| r.next_hop.is_none() && covers(r.prefix, r.prefix_len, target))
            .map(|r| r.prefix_len)
            .max()
    }

    /// Hub: the registered spoke that owns `target`, directly or as the
    /// routing next hop.
    fn registered_owner(&self, now: Instant, target: IpAddr) -> Option<CacheEntry> {
        let live = |ip: IpAddr| {
            self.cache
                .get(&(ip, 32))
                .filter(|e| e.kind == EntryKind::Dynamic && e.flags.registered && e.is_live(now))
                .cloned()
        };
        if let Some(e) = live(target) {
            return Some(e);
        }
        let nh = self
            .routes
            .iter()
            .filter(|r| covers(r.prefix, r.prefix_len, target))
            .max_by_key(|r| r.prefix_len)
            .and_then(|r| r.next_hop)?;
        live(nh)
    }

    fn on_resolution_request(&mut self, now: Instant, from_nbma: IpAddr, req: &Packet, raw: &[u8]) {
        let (Some(target), Some(src_proto), Some(src_nbma)) = (
            req.dst_protocol_ip(),
            req.src_protocol_ip(),
            req.src_nbma_ip(),
        ) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let own = self.config.protocol_addr;
        // RFC 2332 §5.3.2: a station that finds itself in the forward
        // transit record MUST drop the packet and report a loop.
        if req
            .extension_cies(ExtensionType::FORWARD_TRANSIT_RECORD)
            .is_some_and(|c| c.iter().any(|c| c.client_protocol_ip() == Some(own)))
        {
            self.counters.drop(DropReason::LoopDetected);
            self.send_error(
                now,
                from_nbma,
                req.src_protocol.clone(),
                ErrorCode::LOOP_DETECTED,
                0,
                raw,
            );
            return;
        }
        if let Some(prefix_len) = self.local_prefix_for(target) {
            self.answer_resolution(now, from_nbma, req, src_proto, src_nbma, prefix_len);
            return;
        }
        if self.config.role == Role::Hub {
            if let Some(owner) = self.registered_owner(now, target) {
                let authoritative = req.flags() & Flags::RESOLUTION_A != 0;
                if !authoritative && owner.protocol_addr == target {
                    // RFC 2332 §5.2.2: a non-authoritative request may be
                    // answered from the cache (A clear in the reply).
                    self.answer_from_cache(now, from_nbma, req, &owner);
                } else if owner.next_hop != src_proto {
                    // Phase 3: the spoke that owns the destination answers
                    // directly, with its prefix, after bringing up IKE.
                    self.forward_request(now, from_nbma, req, raw, owner.effective_nbma());
                } else {
                    self.negative_reply(now, from_nbma, req);
                }
                return;
            }
        }
        self.negative_reply(now, from_nbma, req);
    }

    fn reply_flags(req: &Packet) -> u16 {
        // Wire notes item 9: replies copy Q and S (and NAT), set D and A.
        (req.flags() & (Flags::RESOLUTION_Q | Flags::RESOLUTION_S | Flags::CISCO_NAT))
            | Flags::RESOLUTION_A
            | Flags::RESOLUTION_D
    }

    fn answer_resolution(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
        src_proto: IpAddr,
        src_nbma: IpAddr,
        prefix_len: u8,
    ) {
        let hold = req
            .cies()
            .first()
            .map(|c| c.holding_time)
            .filter(|h| *h != 0)
            .unwrap_or_else(|| secs16(self.config.holding_time));
        let mut reply = req.clone();
        reply.packet_type = PacketType::RESOLUTION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        reply.body = Body::Common {
            flags: Self::reply_flags(req),
            request_id: req.request_id().unwrap_or(0),
            cies: vec![Cie {
                code: CieCode::SUCCESS,
                prefix_len,
                mtu: self.config.mtu,
                holding_time: secs16(self.config.holding_time),
                client_nbma: ip_bytes(self.config.nbma_addr),
                client_nbma_subaddr: Vec::new(),
                client_protocol: ip_bytes(self.config.protocol_addr),
                preference: 0,
            }],
        };
        let own_nat = self.own_nat_cies();
        reply.extensions = self.reply_extensions(req, |_| own_nat.clone());
        // Wire notes item 9: the requester is reached at its post-NAT address
        // from the NAT extension, else its claimed NBMA; a hub that is the
        // first hop answers back along the path it came.
        let requester_nbma = req
            .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .into_iter()
            .flatten()
            .filter(|c| c.client_protocol_ip() == Some(src_proto))
            .find_map(Cie::client_nbma_ip)
            .unwrap_or(src_nbma);
        let to = if self.config.role == Role::Hub {
            from_nbma
        } else {
            requester_nbma
        };
        if self.config.role == Role::Spoke && to != from_nbma {
            // Remember the requester, so return traffic can use the shortcut
            // once the SA is up.
            let created = now;
            self.cache.insert(
                (src_proto, 32),
                CacheEntry {
                    kind: EntryKind::Dynamic,
                    protocol_addr: src_proto,
                    prefix_len: 32,
                    next_hop: src_proto,
                    nbma: src_nbma,
                    post_nat_nbma: (requester_nbma != src_nbma).then_some(requester_nbma),
                    flags: EntryFlags {
                        nat: requester_nbma != src_nbma,
                        ..EntryFlags::default()
                    },
                    created,
                    expires: Some(now + Duration::from_secs(u64::from(hold))),
                    holding_time: Duration::from_secs(u64::from(hold)),
                    request_id: req.request_id().unwrap_or(0),
                    refresh_at: None,
                },
            );
        }
        self.send(now, to, &reply);
    }

    fn answer_from_cache(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
        owner: &CacheEntry,
    ) {
        let mut reply = req.clone();
        reply.packet_type = PacketType::RESOLUTION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        let remaining = owner
            .expires
            .map_or(owner.holding_time, |e| e.saturating_duration_since(now));
        reply.body = Body::Common {
            flags: Self::reply_flags(req) & !Flags::RESOLUTION_A,
            request_id: req.request_id().unwrap_or(0),
            cies: vec![Cie {
                code: CieCode::SUCCESS,
                prefix_len: 32,
                mtu: self.config.mtu,
                holding_time: secs16(remaining),
                client_nbma: ip_bytes(owner.nbma),
                client_nbma_subaddr: Vec::new(),
                client_protocol: ip_bytes(owner.next_hop),
                preference: 0,
            }],
        };
        let nat: Vec<Cie> = owner
            .post_nat_nbma
            .map(|p| Cie {
                prefix_len: 32,
                mtu: self.config.mtu,
                client_nbma: ip_bytes(p),
                client_protocol: ip_bytes(owner.next_hop),
                ..Cie::default()
            })
            .into_iter()
            .collect();
        reply.extensions = self.reply_extensions(req, |_| nat.clone());
        self.send(now, from_nbma, &reply);
    }

    fn negative_reply(&mut self, now: Instant, from_nbma: IpAddr, req: &Packet) {
        let mut reply = req.clone();
        reply.packet_type = PacketType::RESOLUTION_REPLY;
        reply.hop_count = DEFAULT_HOP_COUNT;
        let mut cies: Vec<Cie> = req.cies().to_vec();
        if cies.is_empty() {
            cies.push(Cie::default());
        }
        for c in &mut cies {
            c.code = CieCode::NO_BINDING_EXISTS;
        }
        reply.body = Body::Common {
            flags: req.flags() & (Flags::RESOLUTION_Q | Flags::RESOLUTION_S | Flags::CISCO_NAT),
            request_id: req.request_id().unwrap_or(0),
            cies,
        };
        reply.extensions = self.reply_extensions(req, <[Cie]>::to_vec);
        self.send(now, from_nbma, &reply);
    }

    /// Forwards a request or reply one hop (RFC 2332 §5.3.2/§5.3.3, wire
    /// notes item 15): decrement the hop count, append ourselves to the
    /// transit record, fill an empty NAT extension, regenerate authentication.
    fn forward_request(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        req: &Packet,
        raw: &[u8],
        to: IpAddr,
    ) {
        self.forward(
            now,
            from_nbma,
            req,
            raw,
            to,
            ExtensionType::FORWARD_TRANSIT_RECORD,
        );
    }

    fn forward(
        &mut self,
        now: Instant,
        from_nbma: IpAddr,
        p: &Packet,
        raw: &[u8],
        to: IpAddr,
        transit: ExtensionType,
    ) {
        // RFC 2332 §5.2: a packet whose hop count would reach zero is
        // dropped with "Hop Count Exceeded".
        if p.hop_count <= 1 {
            self.counters.drop(DropReason::HopCountExceeded);
            self.send_error(
                now,
                from_nbma,
                p.src_protocol.clone(),
                ErrorCode::HOP_COUNT_EXCEEDED,
                8,
                raw,
            );
            return;
        }
        let direct = p
            .extension_cies(ExtensionType::FORWARD_TRANSIT_RECORD)
            .is_none_or(<[Cie]>::is_empty);
        let requester = p.src_protocol_ip();
        let requester_nat = requester.and_then(|r| {
            self.cache
                .get(&(r, 32))
                .filter(|e| e.is_live(now))
                .and_then(|e| e.post_nat_nbma)
                .or_else(|| (direct && p.src_nbma_ip() != Some(from_nbma)).then_some(from_nbma))
        });
        let mut out = p.clone();
        out.hop_count = p.hop_count - 1;
        let me = self.identity_cie();
        if let Some(exts) = &mut out.extensions {
            exts.retain(|e| e.ext_type() != ExtensionType::AUTHENTICATION);
            for e in exts.iter_mut() {
                match &mut e.body {
                    ExtensionBody::ForwardTransit(c)
                        if transit == ExtensionType::FORWARD_TRANSIT_RECORD =>
                    {
                        c.push(me.clone())
                    }
                    ExtensionBody::ReverseTransit(c)
                        if transit == ExtensionType::REVERSE_TRANSIT_RECORD =>
                    {
                        c.push(me.clone())
                    }
                    ExtensionBody::CiscoNatAddress(c)
                        if c.is_empty() && transit == ExtensionType::FORWARD_TRANSIT_RECORD =>
                    {
                        if let (Some(nat), Some(r)) = (requester_nat, requester) {
                            c.push(Cie {
                                prefix_len: 32,
                                mtu: self.config.mtu,
                                client_nbma: ip_bytes(nat),
                                client_protocol: ip_bytes(r),
                                ..Cie::default()
                            });
                        }
                    }
                    _ => {}
                }
            }
            exts.extend(self.auth_extension());
        } else {
            out.extensions = self.auth_only_extensions();
        }
        self.send(now, to, &out);
    }

    fn on_resolution_reply(&mut self, now: Instant, from_nbma: IpAddr, p: &Packet, raw: &[u8]) {
        let (Some(src_proto), Some(target)) = (p.src_protocol_ip(), p.dst_protocol_ip()) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let own = self.config.protocol_addr;
        if src_proto != own {
            // A reply for someone else: a hub forwards it towards the requester.
            if self.config.role == Role::Hub {
                if p.extension_cies(ExtensionType::REVERSE_TRANSIT_RECORD)
                    .is_some_and(|c| c.iter().any(|c| c.client_protocol_ip() == Some(own)))
                {
                    self.counters.drop(DropReason::LoopDetected);
                    self.send_error(
                        now,
                        from_nbma,
                        p.src_protocol.clone(),
                        ErrorCode::LOOP_DETECTED,
                        0,
                        raw,
                    );
                    return;
                }
                if let Some(e) = self.registered_owner(now, src_proto) {
                    self.forward(
                        now,
                        from_nbma,
                        p,
                        raw,
                        e.effective_nbma(),
                        ExtensionType::REVERSE_TRANSIT_RECORD,
                    );
                    return;
                }
            }
            self.counters.drop(DropReason::NoRoute);
            return;
        }
        let id = p.request_id();
        let Some((&pending_target, _)) = self
            .pending
            .iter()
            .find(|(_, pr)| Some(pr.request_id) == id)
        else {
            self.counters.drop(DropReason::UnexpectedReply);
            return;
        };
        self.pending.remove(&pending_target);
        let Some(cie) = p.cies().first() else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if cie.code != CieCode::SUCCESS {
            self.events.push_back(Event::ResolutionFailed {
                target: pending_target,
                code: Some(cie.code),
            });
            return;
        }
        let prefix_len = host_len(cie.prefix_len);
        let next_hop = cie.client_protocol_ip().unwrap_or(target);
        if prefix_len < MIN_SHORTCUT_PREFIX_LEN || !next_hop.is_ipv4() {
            self.counters.drop(DropReason::Malformed);
            return;
        }
        if self.nhs.iter().any(|n| n.protocol_addr == Some(next_hop)) {
            // The hub answered for itself: traffic already goes there.
            return;
        }
        let from_nhs = self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma);
        let claimed = cie.client_nbma_ip().unwrap_or(from_nbma);
        let nat_nbma = p
            .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .into_iter()
            .flatten()
            .filter(|c| c.client_protocol_ip() == Some(next_hop))
            .find_map(Cie::client_nbma_ip);
        // The address that works: the responder's post-NAT address, or the
        // outer source of a reply that came straight from it.
        let effective = nat_nbma
            .or((!from_nhs).then_some(from_nbma))
            .unwrap_or(claimed);
        let prefix = mask(target, prefix_len);
        let hold = Duration::from_secs(u64::from(cie.holding_time));
        let key = (prefix, prefix_len);
        let created = self.cache.get(&key).map_or(now, |e| e.created);
        self.cache.insert(
            key,
            CacheEntry {
                kind: EntryKind::Shortcut,
                protocol_addr: prefix,
                prefix_len,
                next_hop,
                nbma: claimed,
                post_nat_nbma: (effective != claimed).then_some(effective),
                flags: EntryFlags {
                    nat: effective != claimed,
                    ..EntryFlags::default()
                },
                created,
                expires: Some(now + hold),
                holding_time: hold,
                request_id: id.unwrap_or(0),
                // Refresh while a third of the holding time is left.
                refresh_at: Some(now + hold * 2 / 3),
            },
        );
        self.events.push_back(Event::InstallRoute {
            prefix,
            prefix_len,
            next_hop,
            nbma: effective,
        });
    }

    fn on_traffic_indication(&mut self, now: Instant, p: &Packet) {
        let Body::TrafficIndication { traffic_code, data } = &p.body else {
            return;
        };
        if *traffic_code != TRAFFIC_CODE_REDIRECT || !self.config.shortcut {
            self.counters.drop(DropReason::UnhandledType);
            return;
        }
        // Wire notes item 10: resolve the inner destination; dst proto only
        // names us.
        let Some((_, dst)) = inner_ipv4(data) else {
            self.counters.drop(DropReason::BadInnerPacket);
            return;
        };
        self.resolve(now, dst);
    }
}
