//! The operator's view of the daemon: joins of the engines' read-only views into the reports
//! of [`dmvpn_api`] (IKE SAs with their Child SAs' ESP counters, NHRP cache entries and NHSs,
//! the dataplane's counters). Each builder takes `now` so every age in one report is measured
//! at the same instant. The schema and the text renderers live in `dmvpn-api`, shared with
//! dmvpnctl.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dmvpn_api::{
    ChildSa, DmvpnPeer, DmvpnReport, IkeBackoff, IkeReport, IkeSa, IkeState, InterfaceReport,
    NHRP_PACKET_TYPES, NhrpCounters, NhrpEntry, NhrpKind, NhrpPeerState, NhrpReport, NhsEntry,
    PeerState, SCHEMA_VERSION, SaPeer, SaReport,
};
use dmvpn_crypto::PrfAlg;
use dmvpn_esp::SaCounters;
use dmvpn_ike::{ChildSaInfo, IkeSaInfo, Mode};
use dmvpn_nhrp::{CacheEntry, EntryKind, NhsState, NhsStatus};
use dmvpn_node::peers::Backoff;

pub use capture::Capture;
/// The answer to `clear …`/`reload`, and the role a [`Snapshot`] names: re-exported for the
/// control loop, which uses them with the builders here.
pub use dmvpn_api::{Ack, NhrpRole};

mod capture;

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

/// The engine's name for the SA's state (`state_detail`). The one place that reads
/// `IkeSaInfo::state`: through `Display`, so a string and a state enum read the same.
fn engine_state(info: &IkeSaInfo) -> String {
    info.state.to_string()
}

/// The schema's coarse, stable state for an engine state.
pub fn ike_state(info: &IkeSaInfo) -> IkeState {
    use dmvpn_ike::IkeSaState as S;
    match info.state {
        S::ExpectSaInitResponse | S::ExpectAuthRequest | S::ExpectAuthResponse => {
            IkeState::Negotiating
        }
        S::Established => IkeState::Established,
        S::Deleting => IkeState::Deleting,
        S::Closed => IkeState::Closed,
        _ => IkeState::Unknown,
    }
}

/// An IKE SA from `Endpoint::ike_sas(now)`.
pub fn ike_sa(info: &IkeSaInfo) -> IkeSa {
    IkeSa {
        state: ike_state(info),
        state_detail: engine_state(info),
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
        // ESP counts its payload, the GRE packet; every GRE header here is the keyed 8 bytes
        // (RFC 2890; anything else is dropped), so inner bytes are exact, as `show interface`
        // counts them.
        packets_in: i.packets,
        inner_bytes_in: i.bytes.saturating_sub(GRE_HEADER * i.packets),
        esp_bytes_in: i.esp_bytes,
        packets_out: o.packets,
        inner_bytes_out: o.bytes.saturating_sub(GRE_HEADER * o.packets),
        esp_bytes_out: o.esp_bytes,
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
        NhsState::Standby => NhrpPeerState::Standby,
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
        ike_retry_in_secs: None,
        ike_last_failure: None,
        status: dmvpn_api::NhsUpDown::of(nhs_state(s.state)),
        priority: 0,
        preferred: false,
        cluster: 0,
    }
}

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
        R::SourceMismatch => "source_mismatch",
        R::NotRegistrant => "not_registrant",
        R::ShortcutRefused => "shortcut_refused",
        R::NbmaLimit => "nbma_limit",
        R::TooManyCies => "too_many_cies",
    }
}

/// NHRP counters from `Engine::counters()`.
pub fn nhrp_counters(c: &dmvpn_nhrp::Counters) -> NhrpCounters {
    let by_type = |a: &[u64; 9]| {
        NHRP_PACKET_TYPES
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

/// `show sa` of `snap`, with each Child SA's ESP counters read from the dataplane's `tables`.
pub fn sa_report(snap: &Snapshot<'_>, tables: &dmvpn_dataplane::Tables) -> SaReport {
    // Outbound SAs by SPI, once: a lookup per child keeps a hub's `show sa` linear.
    let outbound: HashMap<dmvpn_esp::Spi, _> = tables
        .paths
        .values()
        .map(|p| (p.out_sa.spi(), &p.out_sa))
        .collect();
    snap.sa_report(|c| {
        let inbound = tables
            .inbound
            .get(dmvpn_esp::Spi(c.spi_in))
            .map(|s| s.stats().snapshot());
        let outbound = outbound
            .get(&dmvpn_esp::Spi(c.spi_out))
            .map(|o| o.stats().snapshot());
        (inbound, outbound)
    })
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
    let (tx, rx) = (c.tx_totals(), c.rx_totals());
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
        tx_packets: tx.packets,
        tx_inner_bytes: tx.inner_bytes,
        tx_esp_bytes: tx.esp_bytes,
        rx_packets: rx.packets,
        rx_inner_bytes: rx.inner_bytes,
        rx_esp_bytes: rx.esp_bytes,
        drops,
    }
}

/// What a [`Snapshot`] needs from the node's configuration, owned (part of a [`Capture`]).
#[derive(Debug)]
pub struct NodeView {
    tunnel_addr: String,
    role: NhrpRole,
    nhs_priority: Vec<(IpAddr, u8)>,
    /// Spoke: each NHS's cluster and whether, in reserve, it is probed.
    nhs_places: Vec<(IpAddr, u8, bool)>,
    /// Peers whose shortcuts wait for an SA: learned, no route yet.
    shortcuts_waiting: Vec<IpAddr>,
}

impl NodeView {
    pub fn of(node: &dmvpn_node::Node) -> Self {
        let config = node.config();
        NodeView {
            shortcuts_waiting: node.shortcuts_waiting_for_sa().map(IpAddr::V4).collect(),
            tunnel_addr: config.tunnel.address.to_string(),
            role: match config.nhrp.role {
                dmvpn_config::Role::Spoke { .. } => NhrpRole::Spoke,
                dmvpn_config::Role::Hub { .. } => NhrpRole::Hub,
            },
            nhs_priority: config
                .nhrp
                .nhs
                .iter()
                .map(|n| (IpAddr::V4(n.nbma), n.priority))
                .collect(),
            nhs_places: config
                .nhrp
                .nhs
                .iter()
                .filter_map(|n| {
                    let (cluster, role) = node.nhs_cluster(n.nbma)?;
                    let probed = role == dmvpn_node::nhs_choice::ClusterRole::Probe;
                    Some((IpAddr::V4(n.nbma), cluster, probed))
                })
                .collect(),
        }
    }
}

/// The keyed GRE header on every tunnel packet (RFC 2890 §2).
const GRE_HEADER: u64 = dmvpn_wire::gre::KEYED_HEADER_LEN as u64;

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
    ///
    /// `changed` is the node's record of the peer's last up or down: a change it saw after the
    /// start recorded here (a `clear sa` and a new SA between two queries, which sampling alone
    /// misses) moves the start to it, when it agrees with the state now.
    pub fn observe(
        &mut self,
        peer: IpAddr,
        state: PeerState,
        now: Instant,
        since: Option<Duration>,
        changed: Option<(bool, Instant)>,
    ) -> Duration {
        let start = now.checked_sub(since.unwrap_or_default()).unwrap_or(now);
        let entry = self.seen.entry(peer).or_insert((state, start));
        if entry.0 != state {
            *entry = (state, now);
        }
        if let Some((up, at)) = changed
            && at > entry.1
            && at <= now
            && up == (state != PeerState::Down)
        {
            entry.1 = at;
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
    /// Peers held down after failed IKE setups: `dmvpn_node::Node::backoffs()`.
    pub backoff: &'a [(IpAddr, Backoff)],
    /// When each peer's tunnel last came up or went down: `dmvpn_node::Node::peer_changes()`.
    pub changes: Option<&'a HashMap<Ipv4Addr, (bool, Instant)>>,
    /// Spoke: each NHS's configured priority by NBMA address, and the NHS that carries
    /// traffic without a mapping (`dmvpn_node::Node::preferred_nhs()`).
    pub nhs_priority: &'a [(IpAddr, u8)],
    /// Spoke: each NHS's cluster and whether, in reserve, it is probed
    /// (`dmvpn_node::Node::nhs_cluster()`).
    pub nhs_places: &'a [(IpAddr, u8, bool)],
    pub preferred_nhs: Option<IpAddr>,
    /// Peers whose NHRP shortcuts wait for an SA (`dmvpn_node::Node::shortcuts_waiting_for_sa()`):
    /// their routes are not installed.
    pub shortcuts_waiting: &'a [IpAddr],
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
            .filter(|s| ike_state(s) == IkeState::Established)
            .max_by_key(|s| (s.children.len(), std::cmp::Reverse(s.age)))
            .or_else(|| self.ike.iter().copied().min_by_key(|s| s.age))
    }

    fn state(&self) -> PeerState {
        let Some(ike) = self.best_ike() else {
            return PeerState::Down;
        };
        match ike_state(ike) {
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

    /// `show dmvpn`; updates `updown` and, unless the snapshot was filtered (`partial`),
    /// forgets peers that are gone.
    pub fn dmvpn_report_of(&self, updown: &mut UpDown, partial: bool) -> DmvpnReport {
        self.dmvpn_report_inner(updown, !partial)
    }

    /// `show dmvpn` of the whole table; forgets peers that are gone.
    pub fn dmvpn_report(&self, updown: &mut UpDown) -> DmvpnReport {
        self.dmvpn_report_inner(updown, true)
    }

    fn dmvpn_report_inner(&self, updown: &mut UpDown, prune: bool) -> DmvpnReport {
        let joined = self.peers();
        let peers = joined
            .iter()
            .map(|p| {
                let state = p.state();
                let key = p.post_nat.unwrap_or(p.nbma);
                // A peer seen for the first time has been in its state about as long as its
                // IKE SA has existed: up since it was established, negotiating since it began
                // (a first `show dmvpn` during a long setup said 00:00:00).
                let since = p.best_ike().map(|s| s.age);
                let changed = match key {
                    IpAddr::V4(v4) => self.changes.and_then(|c| c.get(&v4).copied()),
                    IpAddr::V6(_) => None,
                };
                let updn = updown.observe(key, state, self.now, since, changed);
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
                // T1 is "route installed" (IOS): a shortcut whose SA is not up yet has an NHRP
                // entry but no route (issue 14: `DOWN … DT1` while nothing was installed).
                let waiting = |a: &IpAddr| self.shortcuts_waiting.contains(a);
                if has(EntryKind::Shortcut)
                    && !waiting(&p.nbma)
                    && !p.post_nat.is_some_and(|a| waiting(&a))
                {
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
        let present: std::collections::HashSet<IpAddr> = joined
            .iter()
            .map(|p| p.post_nat.unwrap_or(p.nbma))
            .collect();
        if prune {
            updown.retain(|k| present.contains(k));
        }
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
            nhs: self
                .nhs
                .iter()
                .map(|n| {
                    let mut e = nhs_entry(n, self.now);
                    e.priority = self
                        .nhs_priority
                        .iter()
                        .find(|(a, _)| *a == n.nbma_addr)
                        .map_or(0, |(_, p)| *p);
                    e.preferred = self.preferred_nhs == Some(n.nbma_addr);
                    if let Some((_, cluster, probed)) =
                        self.nhs_places.iter().find(|(a, ..)| *a == n.nbma_addr)
                    {
                        e.cluster = *cluster;
                        // IOS's names for an NHS in reserve: PROBE while the spoke tries to
                        // reach it (it is better than a registered one), else DOWN.
                        if *probed {
                            e.status = dmvpn_api::NhsUpDown::Probe;
                        }
                    }
                    if let Some((_, b)) = self.backoff.iter().find(|(p, _)| *p == n.nbma_addr)
                        && b.until > self.now
                    {
                        e.ike_retry_in_secs = Some(secs(b.until - self.now));
                        e.ike_last_failure = b.last.map(|l| l.as_str().to_owned());
                    }
                    e
                })
                .collect(),
            counters: nhrp_counters(counters),
        }
    }

    /// `show ike`.
    pub fn ike_report(&self) -> IkeReport {
        IkeReport {
            schema_version: SCHEMA_VERSION,
            sas: self.ike.iter().map(ike_sa).collect(),
            backoff: self
                .backoff
                .iter()
                .filter(|(_, b)| b.last.is_some() || b.until > self.now)
                .map(|(peer, b)| IkeBackoff {
                    peer: *peer,
                    failures: b.failures,
                    next_attempt_in_secs: secs(b.until.saturating_duration_since(self.now)),
                    last_failure: b.last.map(|l| l.as_str().to_owned()),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
