//! The sans-IO NHRP engine: next hop client (RFC 2332 §5.2.3 registration,
//! §5.2.1 resolution, §5.2.5 purge), next hop server (§5.2.2–§5.2.4, §5.2.6,
//! §5.2.7 error indication, §5.3 extension processing) and the Cisco DMVPN
//! phase 3 additions (NAT extension, traffic indication, shortcuts).
//!
//! This module holds the [`Engine`] with its entry points (packets in, timers,
//! commands, read access); each exchange lives in its own file:
//!
//! - `nhc`: registration with the NHSs and purge of our registrations (§5.2.3, §5.2.5);
//! - `nhs`: the server side of registration and purge (§5.2.3, §5.2.5);
//! - `resolution`: resolution requests, as requester, responder and hub (§5.2.1, §5.2.2);
//! - `shortcut`: replies to our own requests and the shortcuts they install (§5.2.2);
//! - `forward`: forwarding between NHSs and loop detection (§5.3.2, §5.3.3);
//! - `forwarded_table`: the requests a hub forwarded, which the replies it passes on must
//!   answer;
//! - `redirect`: Cisco traffic indications (redirects);
//! - `sa_gate`: the per-NBMA queue that holds packets until an IPsec SA is
//!   up (see there for the rule);
//! - `auth`: the check of received authentication extensions (§5.3.4);
//! - `build`: the packets, extensions and Error Indications we send (§5.1, §5.3, §5.2.7);
//! - `cache_table`, `pending_table`, `queue_table`: the cache, the outstanding resolutions and
//!   the SA gate's queues, each with the indexes that keep every per-event path O(log N) in
//!   the number of entries (issue 12: a hub holding 10,000 spokes).

mod auth;
mod build;
mod cache_table;
mod forward;
mod forwarded_table;
#[cfg(test)]
mod index_props;
mod nhc;
mod nhs;
mod pending_table;
mod queue_table;
mod redirect;
mod resolution;
mod route_table;
mod sa_gate;
mod shortcut;
mod views;

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::cache::{CacheEntry, EntryKind};
use crate::codes::{
    AFN_IPV4, CieCode, ErrorCode, PREFIX_LEN_UNIQUE_HOST, PROTOCOL_TYPE_IPV4, PacketType,
};
use crate::config::{Config, ConfigError, RequestIdSource, Role, Route};
use crate::counters::{Counters, DropReason};
use crate::packet::{Body, Packet};
use dmvpn_wire::Ipv4Cidr;

use cache_table::CacheTable;
use forwarded_table::ForwardedTable;
pub use forwarded_table::{
    FORWARDED_REQUEST_WAIT, MAX_FORWARDED_PER_SENDER, MAX_FORWARDED_REQUESTS,
};
use nhc::{Nhs, NhsPhase};
use pending_table::PendingTable;
use queue_table::QueueTable;
use redirect::RedirectBuckets;
use route_table::RouteTable;

/// Hop count for registrations, purges and traffic indications, which go
/// to a directly connected peer: FRR uses 1, and Cisco rejects 0 (docs/interop-notes.md
/// §4).
pub const DIRECT_HOP_COUNT: u8 = 1;

/// Hop count for packets that may be forwarded (what FRR sends in replies,
/// as the golden registration reply shows).
pub const DEFAULT_HOP_COUNT: u8 = 64;

/// First registration retransmission wait; doubled up to [`MAX_REGISTRATION_WAIT`]
/// (docs/interop-notes.md §7).
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

/// First resolution retransmission wait (docs/interop-notes.md §9).
pub const INITIAL_RESOLUTION_WAIT: Duration = Duration::from_secs(1);

/// Resolution attempts before giving up.
pub const RESOLUTION_ATTEMPTS: u8 = 4;

/// Packets held per NBMA address while its SA comes up.
pub const SA_QUEUE_LEN: usize = 8;

/// NBMA addresses with packets waiting for an SA. A spoke answers a resolution at the
/// requester's NBMA address as the request names it, so peers choose these addresses: past
/// the cap a packet for a new address is dropped (counted as [`DropReason::QueueFull`]).
pub const MAX_SA_QUEUES: usize = 4096;

/// Resolutions outstanding at once (a spoke starts one per redirected destination); past the
/// cap a new one is not started (counted as [`DropReason::RateLimited`]).
pub const MAX_PENDING_RESOLUTIONS: usize = 4096;

/// How long a packet may wait for an SA.
pub const SA_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Traffic indications allowed in a burst per (source, destination) pair
/// (OpenNHRP uses 4 tokens, docs/interop-notes.md §10).
pub const REDIRECT_BURST: u32 = 4;

/// One traffic indication token comes back per this interval (≈ FRR's 4/min).
pub const REDIRECT_REFILL: Duration = Duration::from_secs(15);

/// Minimum spacing of traffic indications for one pair (OpenNHRP: 5 s).
pub const REDIRECT_SPACING: Duration = Duration::from_secs(5);

/// (source, destination) pairs with a traffic indication bucket. The pairs come from data
/// packets a spoke sends (their inner addresses are the spoke's to choose), so the table is
/// capped: past the cap a new pair evicts the least recently used bucket (see
/// `RedirectBuckets::allow` for why eviction rather than refusal).
pub const MAX_REDIRECT_PAIRS: usize = 4096;

/// Narrowest shortcut prefix ever accepted (FRR refuses wider than /8, docs/interop-notes.md
/// §9): the floor of `Config::min_shortcut_prefix_len`, which is what is enforced.
pub const MIN_SHORTCUT_PREFIX_LEN: u8 = 8;

/// Most CIEs a received packet may carry. Cisco, FRR and we send one; each CIE of a
/// registration or purge costs index lookups, so a packet with thousands (a 64 KiB datagram
/// holds about 3,000) is dropped whole, counted as [`DropReason::TooManyCies`].
pub const MAX_CIES_PER_PACKET: usize = 16;

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

/// Which of our requests a [`Event::RequestAnswered`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Registration Request to an NHS (RFC 2332 §5.2.3).
    Registration,
    /// Resolution Request (RFC 2332 §5.2.1).
    Resolution,
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
    /// broken IPsec, docs/interop-notes.md §7).
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
    /// Hub: a spoke at `claimant` registered `protocol_addr`, which a live entry from
    /// `holder` has; it was refused. Check now that `holder` is alive (an IKE liveness check
    /// with a short verdict): if it is dead, `Engine::peer_dead` frees the address and the
    /// claimant's next attempt succeeds (a spoke back from a reboot with a new public address).
    HolderChallenged {
        /// The tunnel address both claim.
        protocol_addr: IpAddr,
        /// NBMA address (post-NAT) of the entry's holder.
        holder: IpAddr,
        /// NBMA address (post-NAT) the refused registration came from.
        claimant: IpAddr,
    },
    /// Hub: a registration was purged or expired.
    PeerUnregistered {
        /// Spoke tunnel address.
        protocol_addr: IpAddr,
        /// NBMA address it had.
        nbma: IpAddr,
    },
    /// Spoke: the NHS reported our post-NAT NBMA address (docs/interop-notes.md §8).
    PublicNbmaLearned {
        /// Our public NBMA address.
        nbma: IpAddr,
    },
    /// Spoke: a Resolution Request for `target` went to the NHS at `nhs_nbma` (after a
    /// traffic indication named it); retransmissions are not reported again.
    ResolutionRequested {
        /// What we are resolving.
        target: IpAddr,
        /// The NHS asked.
        nhs_nbma: IpAddr,
    },
    /// Spoke: a resolution was refused or went unanswered.
    ResolutionFailed {
        /// What we tried to resolve.
        target: IpAddr,
        /// The negative CIE code, `None` on timeout.
        code: Option<CieCode>,
    },
    /// Spoke: the reply to one of our requests arrived, `rtt` after the request was first sent
    /// (retransmissions keep the request id and so the first send time: a lost request shows
    /// as a long RTT, not as a short one). For the operator's latency figures; what the reply
    /// caused comes as its own event (`NhsUp`, `InstallRoute`, `ResolutionFailed`, …).
    RequestAnswered {
        /// Registration or resolution.
        kind: RequestKind,
        /// Registration: the NHS's NBMA address; resolution: the address resolved.
        target: IpAddr,
        /// From the first transmission to the reply.
        rtt: Duration,
        /// The reply's CIE code was success.
        accepted: bool,
    },
    /// An Error Indication arrived.
    ErrorIndication {
        /// Who sent it.
        from_nbma: IpAddr,
        /// Its code.
        code: ErrorCode,
    },
}

/// The tunnel-to-NBMA binding of one next hop, as [`Engine::mapping`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingInfo {
    /// The NBMA address packets to the next hop go to: the post-NAT address when known
    /// ([`CacheEntry::effective_nbma`]).
    pub nbma: IpAddr,
    /// The kind of entry the binding comes from.
    pub kind: EntryKind,
}

/// What [`Engine::take_mapping_changes`] last saw of an NHS's cache entry: its tunnel address
/// (no entry while unknown) and its registration's expiry.
type NhsMark = Option<(IpAddr, Option<Instant>)>;

/// One NHRP interface (one network-id): its cache, NHS client state and
/// server state. See the module documentation for the SA gating rule.
pub struct Engine {
    config: Config,
    ids: Box<dyn RequestIdSource>,
    public_nbma: Option<IpAddr>,
    /// When the engine first ran (registration or a timer): our own entry's creation.
    started: Option<Instant>,
    nhs: Vec<Nhs>,
    /// Keyed by (network prefix, prefix length). One engine serves one
    /// network-id, so this table is the network-id's cache scope.
    cache: CacheTable,
    pending: PendingTable,
    /// Hub: the resolution requests forwarded to a spoke, whose replies may come back.
    forwarded: ForwardedTable,
    /// Spoke: the new-resolution token bucket (tokens, last refill).
    resolution_tokens: (u32, Option<Instant>),
    routes: RouteTable,
    sa_ready: BTreeSet<IpAddr>,
    queues: QueueTable,
    /// Per NHS (same order as `nhs`), its entry as `take_mapping_changes` last reported it.
    nhs_marks: Vec<NhsMark>,
    /// Spoke: whether `take_multicast_changes` reported the NHSs' multicast set yet.
    multicast_nhs_reported: bool,
    /// Spoke: multicast NHSs made active (true) or kept in reserve since that report.
    multicast_nhs_changes: Vec<(IpAddr, bool)>,
    /// Spoke: `register` was called (an NHS made active later starts registering at once).
    registering: bool,
    redirects: RedirectBuckets,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    shut_down: bool,
    /// Spoke, shutting down: the Purge Requests sent by [`Engine::shutdown`] not answered yet,
    /// as (NHS NBMA address, request id); at most one per configured NHS.
    purges_awaited: Vec<(IpAddr, u32)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("role", &self.config.role)
            .field("protocol_addr", &self.config.protocol_addr)
            .field("network_id", &self.config.network_id)
            .field("cache_entries", &self.cache.len())
            .field("pending_resolutions", &self.pending.len())
            .field("sa_queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

fn secs16(d: Duration) -> u16 {
    u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
}

/// The network of `ip/len`, a length over 32 taken as 32; IPv4 only (the
/// config rejects IPv6, whose addresses are left as they are).
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => Ipv4Cidr::new(a, len.min(32)).map_or(ip, |c| IpAddr::V4(c.network())),
        v6 => v6,
    }
}

/// True when the prefix `prefix/len` (a cache key or a route) covers `ip`.
/// A prefix written with host bits set covers nothing: cache keys are masked
/// and kernel routes never have them.
fn covers(prefix: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (prefix, ip) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            Ipv4Cidr::new(p, len.min(32)).is_ok_and(|c| c.address() == c.network() && c.contains(a))
        }
        // IPv6 is never configured; an IPv6 "prefix" matches only itself.
        (p, a) => p == a,
    }
}

/// A CIE prefix length as a host prefix: 0xFF means "this host, uniquely".
fn host_len(p: u8) -> u8 {
    if p == PREFIX_LEN_UNIQUE_HOST || p > 32 {
        32
    } else {
        p
    }
}

impl Engine {
    /// Builds an engine. Nothing is sent until [`Engine::register`] (spoke).
    pub fn new(config: Config, ids: impl RequestIdSource + 'static) -> Result<Self, ConfigError> {
        config.validate()?;
        let nhs: Vec<Nhs> = config
            .nhs
            .iter()
            .map(|c| Nhs {
                config: c.clone(),
                protocol_addr: c.protocol_addr,
                phase: NhsPhase::Idle,
                registered_id: None,
                up_since: None,
                active: true,
            })
            .collect();
        Ok(Self {
            config,
            ids: Box::new(ids),
            public_nbma: None,
            started: None,
            nhs_marks: vec![None; nhs.len()],
            nhs,
            cache: CacheTable::default(),
            pending: PendingTable::default(),
            forwarded: ForwardedTable::default(),
            resolution_tokens: (0, None),
            routes: RouteTable::default(),
            sa_ready: BTreeSet::new(),
            queues: QueueTable::default(),
            multicast_nhs_reported: false,
            multicast_nhs_changes: Vec::new(),
            registering: false,
            redirects: RedirectBuckets::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            shut_down: false,
            purges_awaited: Vec::new(),
        })
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the daemon.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`Engine::handle_timeout`] has work: O(log N) in the
    /// number of cache entries, resolutions and queues (each keeps a deadline index), plus
    /// the configured NHSs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let nhs = self.nhs.iter().filter_map(Nhs::deadline);
        nhs.chain(self.pending.first_deadline())
            .chain(self.cache.first_deadline())
            .chain(self.queues.first_deadline())
            .min()
    }

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

    /// NBMA addresses that get a copy of multicast (OSPF hellos): on a spoke
    /// the NHSs configured with `multicast`, on a hub every registered spoke. O(N): for the
    /// operator's views; per event, [`Engine::take_multicast_changes`] tells what changed.
    pub fn multicast_nbmas(&self, now: Instant) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = match self.config.role {
            Role::Spoke => self
                .nhs
                .iter()
                .filter(|n| n.config.multicast && n.active)
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

    /// The NBMA address for a tunnel address, from the NHSs and the cache (the lowest-key
    /// live entry with that next hop; O(log N) through the next-hop index).
    pub fn lookup_nbma(&self, protocol_addr: IpAddr, now: Instant) -> Option<IpAddr> {
        if let Some(n) = self
            .nhs
            .iter()
            .find(|n| n.protocol_addr == Some(protocol_addr))
        {
            return Some(n.config.nbma_addr);
        }
        self.cache
            .first_live_by_next_hop(protocol_addr, now)
            .map(CacheEntry::effective_nbma)
    }

    /// The NHS entry [`Engine::cache_entries`] lists for NHS `n`, as a mark: its tunnel
    /// address (none while unknown) and its registration's expiry.
    fn nhs_mark(n: &Nhs) -> NhsMark {
        let expires = match n.phase {
            NhsPhase::Registered { expires, .. } => Some(expires),
            _ => None,
        };
        n.protocol_addr.map(|p| (p, expires))
    }

    /// The binding of tunnel next hop `next_hop` at `now`: the first live entry with that
    /// next hop in [`Engine::cache_entries`] order (the NHSs in configuration order, then the
    /// learned entries by lowest key); the Local entry never counts. O(log N) in the number
    /// of cache entries (plus the configured NHSs).
    pub fn mapping(&self, next_hop: IpAddr, now: Instant) -> Option<MappingInfo> {
        let nhs = self.nhs.iter().find(|n| {
            Self::nhs_mark(n).is_some_and(|(p, exp)| p == next_hop && exp.is_none_or(|e| now < e))
        });
        if let Some(n) = nhs {
            return Some(MappingInfo {
                nbma: n.config.nbma_addr,
                kind: EntryKind::Nhs,
            });
        }
        self.cache
            .first_live_by_next_hop(next_hop, now)
            .map(|e| MappingInfo {
                nbma: e.effective_nbma(),
                kind: e.kind,
            })
    }

    /// The tunnel next hops whose binding ([`Engine::mapping`]) may have changed since the
    /// last call: an entry added, replaced, removed or expired, its NBMA or post-NAT NBMA
    /// changed, its liveness changed; NHS entries (their tunnel address learned, their
    /// registration's expiry moved) too. Deduplicated, in address order. An expiry is
    /// reported by the [`Engine::handle_timeout`] that removes the entry, which
    /// [`Engine::poll_timeout`] schedules for it. Before the first call every mapping counts
    /// as absent, so the first call reports each known NHS. O(k log k) for k changes (plus the
    /// configured NHSs); an empty result does not allocate.
    pub fn take_mapping_changes(&mut self) -> Vec<IpAddr> {
        for (n, mark) in self.nhs.iter().zip(self.nhs_marks.iter_mut()) {
            let now_mark = Self::nhs_mark(n);
            if now_mark != *mark {
                for (p, _) in [*mark, now_mark].into_iter().flatten() {
                    self.cache.note_changed(p);
                }
                *mark = now_mark;
            }
        }
        self.cache.take_changed()
    }

    /// The tunnel next hops of the entries whose effective (post-NAT when known) NBMA address
    /// is `nbma` — what an SA to `nbma` coming up or going down affects — NHSs included, the
    /// Local entry not. Entries past their expiry count until the [`Engine::handle_timeout`]
    /// that removes them. Deduplicated, in address order; O(log N + k) for k entries there.
    pub fn next_hops_at(&self, nbma: IpAddr) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .nhs
            .iter()
            .filter(|n| n.config.nbma_addr == nbma)
            .filter_map(|n| n.protocol_addr)
            .collect();
        out.extend(
            self.cache
                .keys_by_nbma(nbma)
                .filter_map(|k| self.cache.get(&k))
                .map(|e| e.next_hop),
        );
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether NHRP learned `nbma` as the post-NAT address of a peer behind NAT: some live
    /// entry of [`Engine::cache_entries`] has `post_nat_nbma == Some(nbma)` and a different
    /// claimed `nbma` (the Local entry included: a spoke behind the same NAT as we are).
    /// O(log N) through the NAT index.
    pub fn is_nated_peer(&self, nbma: IpAddr, now: Instant) -> bool {
        let local = self.public_nbma == Some(nbma) && self.config.nbma_addr != nbma;
        local || self.cache.nated_live(nbma, now)
    }

    /// The NBMA addresses that joined (`true`) or left (`false`) the set
    /// [`Engine::multicast_nbmas`] returns since the last call: net changes, each address at
    /// most once, in address order. Before the first call the set counts as empty, so a
    /// spoke's first call reports its multicast NHSs. On a hub the set is the registered
    /// spokes' effective NBMA addresses; an expired registration leaves it at the
    /// [`Engine::handle_timeout`] that removes it. O(k log k) for k changes.
    pub fn take_multicast_changes(&mut self) -> Vec<(IpAddr, bool)> {
        let table = self.cache.take_multicast_changes();
        match self.config.role {
            Role::Hub => table,
            Role::Spoke => {
                if std::mem::replace(&mut self.multicast_nhs_reported, true) {
                    return std::mem::take(&mut self.multicast_nhs_changes);
                }
                let mut out: Vec<(IpAddr, bool)> = self
                    .nhs
                    .iter()
                    .filter(|n| n.config.multicast && n.active)
                    .map(|n| (n.config.nbma_addr, true))
                    .collect();
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }

    /// `clear ip nhrp`: forgets every dynamic and shortcut entry (withdrawing shortcut routes
    /// and reporting removed registrations as events); static, NHS and local entries stay.
    /// Spokes whose registration was removed re-register at their next refresh, as with Cisco.
    /// Returns how many entries were removed. O(N): an operator command.
    pub fn clear_dynamic(&mut self) -> usize {
        let keys: Vec<(IpAddr, u8)> = self
            .cache
            .values()
            .filter(|e| matches!(e.kind, EntryKind::Dynamic | EntryKind::Shortcut))
            .map(|e| (e.protocol_addr, e.prefix_len))
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
    /// next hop are this router's own prefixes. Indexed here in O(R); lookups are then one
    /// hash probe per prefix length present.
    pub fn set_routes(&mut self, routes: Vec<Route>) {
        self.routes = RouteTable::new(routes);
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        for i in 0..self.nhs.len() {
            self.nhs_timeout(now, i);
        }
        self.resolution_timeouts(now);
        self.cache_timeouts(now);
        self.queue_timeouts(now);
    }

    /// Removes expired entries and re-resolves the used shortcuts whose refresh time came.
    /// Only the entries the deadline index names as due are visited (O(k log N)), first the
    /// expiries, then the refreshes, each in key order.
    fn cache_timeouts(&mut self, now: Instant) {
        let due = self.cache.due(now);
        if due.is_empty() {
            return;
        }
        let mut refresh = Vec::new();
        for k in due {
            match self.cache.get(&k) {
                Some(e) if !e.is_live(now) => self.remove_entry(k),
                Some(e) if e.refresh_at.is_some_and(|r| r <= now) => refresh.push(k),
                _ => {}
            }
        }
        for key in refresh {
            let (prefix, _) = key;
            let used = self.cache.modify(now, &key, |e| {
                e.refresh_at = None;
                std::mem::take(&mut e.flags.used)
            });
            if used == Some(true) {
                // A used shortcut is re-resolved before it expires; an unused
                // one is left to expire.
                self.pending.remove(&prefix);
                self.resolve_uncached(now, prefix);
            }
        }
    }

    /// A holding time a peer asked for (a registration, a resolution request or reply),
    /// clamped to `Config::max_holding_time`: a peer cannot keep an entry of ours alive longer
    /// than the operator allows.
    fn peer_holding_time(&self, secs: u16) -> Duration {
        Duration::from_secs(u64::from(secs)).min(self.config.max_holding_time)
    }

    /// Whether a new entry at `key` must be refused: the cache is full and `key` would not
    /// replace an entry (counted).
    fn cache_full_for(&mut self, key: &(IpAddr, u8)) -> bool {
        let full =
            self.cache.len() >= self.config.max_cache_entries && self.cache.get(key).is_none();
        if full {
            self.counters.cache_full += 1;
        }
        full
    }

    /// Removes a cache entry and tells the daemon: a shortcut's route is withdrawn, a registration
    /// reported gone.
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
            // RFC 2332 §5.3.4: a packet that fails authentication is dropped
            // and answered with Authentication Failure (code 11, docs/interop-notes.md
            // §11), never in reply to an Error Indication (§5.2.7).
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
        if pkt.cies().len() > MAX_CIES_PER_PACKET {
            self.counters.drop(DropReason::TooManyCies);
            return;
        }
        // Only an NHS answers our registrations and tells us to go direct: from anyone else
        // (another spoke over its SA) these would set our public address or start resolutions.
        let from_nhs = self.nhs.iter().any(|n| n.config.nbma_addr == from_nbma);
        match (pkt.packet_type, self.config.role) {
            (PacketType::REGISTRATION_REPLY | PacketType::TRAFFIC_INDICATION, Role::Spoke)
                if !from_nhs =>
            {
                self.counters.drop(DropReason::SourceMismatch)
            }
            (PacketType::REGISTRATION_REQUEST, Role::Hub) => {
                self.on_registration_request(now, from_nbma, &pkt)
            }
            (PacketType::REGISTRATION_REPLY, Role::Spoke) => {
                self.on_registration_reply(now, from_nbma, &pkt)
            }
            (PacketType::RESOLUTION_REQUEST, _) => {
                self.on_resolution_request(now, from_nbma, &pkt, bytes)
            }
            (PacketType::RESOLUTION_REPLY, _) => {
                self.on_resolution_reply(now, from_nbma, &pkt, bytes)
            }
            // `[debug] ignore-purge`: as a router without §5.2.5 purges (FRR's nhrpd).
            (PacketType::PURGE_REQUEST, _) if self.config.ignore_purge => {
                self.counters.drop(DropReason::UnhandledType)
            }
            (PacketType::PURGE_REQUEST, _) => self.on_purge_request(now, from_nbma, &pkt),
            (PacketType::PURGE_REPLY, _) => self.on_purge_reply(from_nbma, &pkt),
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
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn mask_and_covers() {
        assert_eq!(mask(v4(10, 0, 101, 77), 24), v4(10, 0, 101, 0));
        assert_eq!(mask(v4(10, 0, 101, 77), 0), v4(0, 0, 0, 0));
        assert_eq!(mask(v4(10, 0, 101, 77), 40), v4(10, 0, 101, 77));
        assert!(covers(v4(10, 0, 101, 0), 24, v4(10, 0, 101, 77)));
        assert!(covers(v4(0, 0, 0, 0), 0, v4(192, 0, 2, 1)));
        assert!(!covers(v4(10, 0, 101, 0), 24, v4(10, 0, 102, 1)));
        // Host bits in the prefix: covers nothing, not even itself.
        assert!(!covers(v4(10, 0, 101, 5), 24, v4(10, 0, 101, 5)));
        assert!(covers(v4(10, 0, 101, 5), 40, v4(10, 0, 101, 5)));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!covers(v4(0, 0, 0, 0), 0, v6));
        assert!(covers(v6, 64, v6));
        assert_eq!(mask(v6, 64), v6);
    }
}
