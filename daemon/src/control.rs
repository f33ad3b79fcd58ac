//! The control plane: one task owns the sans-IO protocol engines (IKEv2 and NHRP, quinn-proto
//! style) and the master copy of the dataplane tables. It is fed by bounded channels from the
//! underlay readers (IKE, NAT keepalives) and the dataplane's slow path (packets waiting for
//! an SA, NHRP packets, redirect triggers); its only timer is the earliest deadline any engine
//! asks for, plus a 2-second housekeeping tick that samples SA counters for DPD and shortcut
//! refresh. Engine events become IKE initiations, SA installs (published to the dataplane as a
//! new immutable snapshot), kernel routes for NHRP shortcuts, and log lines.
//!
//! Also starts the daemon (TUN, sockets, route mirror, engines, static routes) in the order
//! each step depends on.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use dmvpn_config::{Config, DpdMode, Role};
use dmvpn_crypto::{DhAlg, PrfAlg, SystemRng};
use dmvpn_dataplane::{DropReason, Mapping, PeerPath, Tables, TunnelParams};
use dmvpn_esp::{InboundSa, OutboundSa, Spi};
use dmvpn_ike::{ChildSaInstalled, DownReason, Endpoint, Event as IkeEvent};
use dmvpn_nhrp::{EntryKind, Event as NhrpEvent};
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;
use tokio::sync::mpsc;

use crate::ctl::{self, Request, Response, Show};
use crate::datapath::{Datapath, SlowPath};
use crate::keylog::KeyLog;
use crate::netlink::{Netlink, spawn_route_mirror};
use crate::routes::{RouteTable, SharedRoutes, shared};
use crate::status::{self, Ack, NhrpRole, Snapshot, UpDown};
use crate::tun::TunDevice;
use crate::underlay::{IKE_PORT, NATT_PORT, Received, Underlay, UnderlayConfig, local_address_for};

/// Depth of the reader → control plane channels. Full channels drop and count.
const QUEUE_DEPTH: usize = 1024;
/// Packets held per peer while its SA is negotiated (then dropped and counted).
const SA_QUEUE_DEPTH: usize = 32;
/// A pending initiation older than this is retried when more traffic asks for the peer.
const CONNECT_RETRY: Duration = Duration::from_secs(30);
/// First hold-down after a failed IKE setup toward a peer; it doubles per failure up to
/// [`MAX_HOLD_DOWN`]. Without it every packet for the peer would start a new IKE_SA_INIT.
const FIRST_HOLD_DOWN: Duration = Duration::from_secs(10);
/// Longest hold-down between IKE attempts toward a peer that keeps failing.
const MAX_HOLD_DOWN: Duration = Duration::from_secs(60);
/// How long we leave a peer that NHRP knows to be behind NAT to initiate toward us first: a
/// masquerading NAT drops our unsolicited IKE_SA_INIT (a 1:1 NAT such as an EC2 Elastic IP
/// does not, and then our own initiation after this delay succeeds).
const NATED_PEER_GRACE: Duration = Duration::from_secs(3);
/// Period of the housekeeping tick (DPD traffic sampling, shortcut refresh).
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// How often the router's own (non-tunnel) prefixes are re-read for NHRP.
const LOCAL_PREFIX_REFRESH: Duration = Duration::from_secs(30);
/// Kernel metric of NHRP shortcut routes: below static (and OSPF) routes to the same prefix,
/// so a shortcut wins while it lives and withdrawing it falls back to the path via the hub.
pub const SHORTCUT_METRIC: u32 = 10;
/// Kernel metric of configured static routes into the tunnel.
pub const STATIC_METRIC: u32 = 100;
/// Schedules RFC 3948 §4 NAT keepalives to the peers whose IKE SA detected a NAT in front of us.
#[derive(Debug)]
pub struct NatKeepalives {
    interval: Option<Duration>,
    next: BTreeMap<SocketAddrV4, Instant>,
}

impl NatKeepalives {
    pub fn new(interval: Option<Duration>) -> Self {
        NatKeepalives {
            interval,
            next: BTreeMap::new(),
        }
    }

    /// Starts keepalives to `peer` (its NAT-T address); the first goes one interval from now.
    pub fn add(&mut self, peer: SocketAddrV4, now: Instant) {
        if let Some(i) = self.interval {
            self.next.entry(peer).or_insert(now + i);
        }
    }

    /// Applies a reloaded interval; scheduled peers keep their next deadline, or lose it when
    /// keepalives are switched off.
    pub fn set_interval(&mut self, interval: Option<Duration>) {
        if interval.is_none() {
            self.next.clear();
        }
        self.interval = interval;
    }

    pub fn remove(&mut self, peer: SocketAddrV4) {
        self.next.remove(&peer);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next.values().min().copied()
    }

    /// Peers due at `now`; each is rescheduled one interval later.
    pub fn due(&mut self, now: Instant) -> Vec<SocketAddrV4> {
        let Some(interval) = self.interval else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (peer, at) in self.next.iter_mut() {
            if *at <= now {
                out.push(*peer);
                *at = now + interval;
            }
        }
        out
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// An IKE SA we initiated toward a peer and that has no Child SA yet.
#[derive(Debug)]
struct Connecting {
    since: Instant,
    ike_sa: Option<dmvpn_ike::IkeSaId>,
}

/// One installed Child SA toward a peer. A peer can have more than one (a rekey overlap, or
/// both sides initiating at once); the dataplane sends on the newest.
#[derive(Debug)]
struct InstalledChild {
    spi_in: u32,
    path: PeerPath,
}

/// What the control task owns.
pub struct ControlPlane {
    pub config: Arc<Config>,
    /// Where `config` came from, re-read on SIGHUP.
    pub config_path: std::path::PathBuf,
    pub underlay: Arc<Underlay>,
    pub netlink: Netlink,
    pub tun_index: u32,
    /// Published by the route mirror; read here to feed NHRP.
    pub routes: SharedRoutes,
    pub keepalives: NatKeepalives,
    key_log: Option<KeyLog>,
    /// Own NBMA address as configured on the interface (pre-NAT).
    pub local_nbma: Ipv4Addr,
    dp: Arc<Datapath>,
    ike: Endpoint,
    nhrp: dmvpn_nhrp::Engine,
    /// The master copy of what the dataplane reads; published on change.
    master: Tables,
    pending: HashMap<Ipv4Addr, VecDeque<(EtherType, PacketBuf)>>,
    connecting: HashMap<Ipv4Addr, Connecting>,
    /// Child SAs installed per peer NBMA, oldest first.
    children: HashMap<Ipv4Addr, Vec<InstalledChild>>,
    /// Initiations held back for NATed peers: peer → when to initiate if still needed.
    deferred: HashMap<Ipv4Addr, Instant>,
    /// Peers whose IKE setup failed: no new initiation before the instant; failure count.
    held_down: HashMap<Ipv4Addr, (Instant, u32)>,
    /// Shortcut routes waiting for an SA to their next hop's NBMA: a shortcut is installed
    /// only once traffic over it can be protected, so a peer that refuses IKE never turns a
    /// working path via the hub into a blackhole.
    pending_routes: HashMap<Ipv4Addr, Vec<(Ipv4Addr, u8, Ipv4Addr)>>,
    /// NHRP shortcut routes installed in the kernel: (prefix, len, next hop).
    shortcuts: HashSet<(Ipv4Addr, u8, Ipv4Addr)>,
    local_prefixes: Vec<(Ipv4Addr, u8)>,
    /// Last seen packet count per SA (by SPI), to tell IKE about traffic for DPD.
    sa_packets: HashMap<u32, u64>,
    next_housekeeping: Instant,
    next_local_prefixes: Instant,
    /// When each peer entered its state, for `show dmvpn`'s UpDn Tm.
    updown: UpDown,
    /// The control socket server and where its requests arrive.
    ctl_task: Option<tokio::task::JoinHandle<()>>,
    ctl_rx: Option<mpsc::Receiver<ctl::Command>>,
    notifier: crate::sdnotify::Notifier,
    watchdog: Option<Duration>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("local_nbma", &self.local_nbma)
            .field("tun_index", &self.tun_index)
            .finish_non_exhaustive()
    }
}

/// Builds the IKE engine's configuration from ours.
fn ike_config(config: &Config) -> Result<dmvpn_ike::Config> {
    let ike_proposals = config
        .ike
        .proposals
        .iter()
        .map(|p| {
            Ok(dmvpn_ike::IkeProposal {
                encr_key_bits: match p.encryption {
                    dmvpn_config::Encryption::AesGcm128 => 128,
                    dmvpn_config::Encryption::AesGcm256 => 256,
                },
                prf: match p.prf {
                    dmvpn_config::Prf::Sha256 => PrfAlg::HmacSha256,
                    dmvpn_config::Prf::Sha384 => PrfAlg::HmacSha384,
                    dmvpn_config::Prf::Sha512 => PrfAlg::HmacSha512,
                },
                dh: DhAlg::from_ike_group(p.group.0)
                    .ok_or_else(|| anyhow!("unsupported DH group {}", p.group.0))?,
            })
        })
        .collect::<Result<_>>()?;
    let mut keyring = dmvpn_ike::Keyring::new();
    for k in &config.ike.keyring {
        keyring.add_prefix(IpAddr::V4(k.peer.addr), k.peer.prefix_len, k.psk.expose());
    }
    // Rekey margins: strongSwan's 9 minutes, but never more than a tenth of a short lifetime.
    let margin = |l: Duration| Duration::from_secs(540).min(l / 10);
    Ok(dmvpn_ike::Config {
        ike_proposals,
        keyring,
        dpd: Some(dmvpn_ike::Dpd {
            delay: config.ike.dpd.delay,
            retry: config.ike.dpd.retry,
            mode: match config.ike.dpd.mode {
                DpdMode::OnDemand => dmvpn_ike::DpdMode::OnDemand,
                DpdMode::Periodic => dmvpn_ike::DpdMode::Periodic,
            },
            ..dmvpn_ike::Dpd::default()
        }),
        lifetimes: dmvpn_ike::Lifetimes {
            ike: config.ike.lifetime,
            ike_margin: margin(config.ike.lifetime),
            child: config.ipsec.lifetime,
            child_margin: margin(config.ipsec.lifetime),
            ..dmvpn_ike::Lifetimes::default()
        },
        natt_port: NATT_PORT,
        ..dmvpn_ike::Config::default()
    })
}

/// Builds the NHRP engine's configuration from ours.
fn nhrp_config(config: &Config, local_nbma: Ipv4Addr) -> dmvpn_nhrp::Config {
    let addr = IpAddr::V4(config.tunnel.address.addr);
    let len = config.tunnel.address.prefix_len;
    let mut c = match config.nhrp.role {
        Role::Spoke { shortcut } => {
            let nhs = config
                .nhrp
                .nhs
                .iter()
                .map(|n| dmvpn_nhrp::NhsConfig {
                    protocol_addr: Some(IpAddr::V4(n.address)),
                    nbma_addr: IpAddr::V4(n.nbma),
                    multicast: n.multicast,
                })
                .collect();
            let mut c = dmvpn_nhrp::Config::spoke(addr, len, IpAddr::V4(local_nbma), nhs);
            c.shortcut = shortcut;
            c
        }
        Role::Hub { redirect } => {
            let mut c = dmvpn_nhrp::Config::hub(addr, len, IpAddr::V4(local_nbma));
            c.redirect = redirect;
            c
        }
    };
    c.network_id = config.nhrp.network_id;
    c.auth_key = config
        .nhrp
        .authentication
        .as_ref()
        .map(|k| k.expose().to_vec());
    c.holding_time = config.nhrp.holding_time;
    c.mtu = 0;
    c
}

impl ControlPlane {
    fn now() -> Instant {
        Instant::now()
    }

    /// The local address toward `peer`: configured, or the source of the route to it.
    fn local_ip_for(&self, peer: Ipv4Addr) -> Ipv4Addr {
        self.config.underlay.local_address.unwrap_or_else(|| {
            local_address_for(peer, self.config.underlay.interface.as_deref())
                .unwrap_or(self.local_nbma)
        })
    }

    /// Makes the dataplane see the master tables.
    fn publish(&self) {
        self.dp.tables.store(Arc::new(self.master.clone()));
    }

    /// Installs a route into the tunnel as a kernel route (so routing daemons see it); the
    /// route mirror then publishes it to the dataplane.
    pub async fn install_route(
        &self,
        prefix: Ipv4Addr,
        prefix_len: u8,
        via: Option<Ipv4Addr>,
        metric: u32,
    ) -> Result<()> {
        self.netlink
            .install_route(self.tun_index, prefix, prefix_len, via, metric)
            .await
    }

    /// The earliest deadline of any engine or timer.
    fn poll_timeout(&self) -> Instant {
        [
            self.ike.poll_timeout(),
            self.nhrp.poll_timeout(),
            self.keepalives.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .chain(self.deferred.values().copied())
        .fold(self.next_housekeeping, Instant::min)
    }

    async fn handle_timeout(&mut self, now: Instant) {
        for peer in self.keepalives.due(now) {
            if let Err(e) = self.underlay.send_nat_keepalive(peer).await {
                tracing::debug!(%peer, "NAT keepalive: {e}");
            }
        }
        self.ike.handle_timeout(now);
        self.nhrp.handle_timeout(now);
        // Initiations held back for NATed peers: `ensure_sa` skips those whose SA came up
        // (or is being negotiated by the peer) meanwhile.
        let due: Vec<Ipv4Addr> = self
            .deferred
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.deferred.remove(&peer);
            self.ensure_sa_inner(now, peer, false);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.housekeeping(now).await;
        }
    }

    /// Tells IKE which peers carried traffic (DPD on demand probes only a peer we send to and
    /// hear nothing from), refreshes used shortcuts, and feeds NHRP the routing table.
    async fn housekeeping(&mut self, now: Instant) {
        for (nbma, path) in &self.master.paths {
            let spi = path.out_sa.spi().0;
            let n = path.out_sa.stats().snapshot().packets;
            if self.sa_packets.insert(spi, n) != Some(n) && n > 0 {
                self.ike.note_outbound(now, IpAddr::V4(*nbma));
            }
        }
        for sa in self.master.inbound.iter() {
            let spi = sa.spi();
            let n = sa.stats().snapshot().packets;
            if self.sa_packets.insert(spi.0, n) != Some(n)
                && n > 0
                && let Some(peer) = self.master.spi_peer.get(&spi)
            {
                self.ike.note_inbound(now, IpAddr::V4(*peer));
            }
        }
        let used: HashSet<Ipv4Addr> = self
            .shortcuts
            .iter()
            .map(|s| s.2)
            .filter(|nh| self.master.mappings.get(nh).is_some_and(|m| m.take_used()))
            .collect();
        for &(prefix, _, nh) in &self.shortcuts {
            if used.contains(&nh) {
                self.nhrp.shortcut_used(now, IpAddr::V4(prefix));
            }
        }
        if now >= self.next_local_prefixes {
            self.next_local_prefixes = now + LOCAL_PREFIX_REFRESH;
            match self.netlink.local_prefixes(self.tun_index).await {
                Ok(p) => self.local_prefixes = p,
                Err(e) => tracing::warn!("reading local prefixes: {e:#}"),
            }
        }
        self.feed_nhrp_routes();
    }

    /// NHRP answers resolutions from the routing table: routes into the tunnel name the next
    /// hop that owns a destination (hub); the router's other prefixes are its own (spoke).
    fn feed_nhrp_routes(&mut self) {
        let routes = self.routes.load();
        let mut v: Vec<dmvpn_nhrp::Route> = routes
            .iter()
            .filter_map(|r| {
                Some(dmvpn_nhrp::Route {
                    prefix: IpAddr::V4(r.prefix),
                    prefix_len: r.prefix_len,
                    next_hop: Some(IpAddr::V4(r.gateway?)),
                })
            })
            .collect();
        v.extend(self.local_prefixes.iter().map(|&(p, l)| dmvpn_nhrp::Route {
            prefix: IpAddr::V4(p),
            prefix_len: l,
            next_hop: None,
        }));
        self.nhrp.set_routes(v);
    }

    async fn handle_underlay(&mut self, now: Instant, r: Received) {
        match r {
            Received::Ike {
                from,
                natt,
                message,
            } => {
                let port = if natt { NATT_PORT } else { IKE_PORT };
                let local = SocketAddr::new(IpAddr::V4(self.local_ip_for(*from.ip())), port);
                self.ike
                    .handle_datagram(now, local, SocketAddr::V4(from), &message);
            }
            // ESP never comes this way in the daemon (the readers hand it to the dataplane).
            Received::Esp { .. } => {}
            Received::NatKeepalive { from } => tracing::trace!(%from, "NAT keepalive"),
        }
    }

    async fn handle_slow_path(&mut self, now: Instant, s: SlowPath) {
        match s {
            SlowPath::NeedSa {
                nbma,
                protocol,
                buf,
            } => {
                if self.master.paths.contains_key(&nbma) {
                    // The SA came up while the packet was in flight to us.
                    self.dp.send_to(nbma, protocol, buf).await;
                    return;
                }
                let q = self.pending.entry(nbma).or_default();
                if q.len() >= SA_QUEUE_DEPTH {
                    self.master.counters.count_drop(DropReason::SaQueueFull);
                } else {
                    q.push_back((protocol, buf));
                }
                self.ensure_sa(now, nbma);
            }
            SlowPath::Nhrp { peer, bytes } => {
                let before = self.nhrp.counters().auth_failures;
                self.nhrp.handle_packet(now, IpAddr::V4(peer), &bytes);
                if self.nhrp.counters().auth_failures > before {
                    tracing::warn!(
                        peer = %peer,
                        "NHRP authentication failure: packet dropped (wrong `nhrp authentication` key?)"
                    );
                }
            }
            SlowPath::Redirect { peer, quote } => {
                self.nhrp
                    .traffic_indication_needed(now, IpAddr::V4(peer), &quote);
            }
        }
    }

    /// Starts IKE toward `nbma` unless an SA exists or is being negotiated (by either side:
    /// when both spokes answer each other's resolution, both would otherwise initiate).
    fn ensure_sa(&mut self, now: Instant, nbma: Ipv4Addr) {
        self.ensure_sa_inner(now, nbma, true);
    }

    fn ensure_sa_inner(&mut self, now: Instant, nbma: Ipv4Addr, allow_defer: bool) {
        if self.master.paths.contains_key(&nbma) {
            self.nhrp.sa_up(now, IpAddr::V4(nbma));
            return;
        }
        if let Some(c) = self.connecting.get(&nbma)
            && now.duration_since(c.since) < CONNECT_RETRY
        {
            return;
        }
        if self
            .held_down
            .get(&nbma)
            .is_some_and(|(until, _)| now < *until)
        {
            return;
        }
        let peer_ip = IpAddr::V4(nbma);
        if self
            .ike
            .ike_sas(now)
            .iter()
            .any(|s| s.remote.ip() == peer_ip)
        {
            // The peer is negotiating with us already; its Child SA will bring the path up.
            return;
        }
        if allow_defer && self.peer_is_nated(now, nbma) {
            // Once per peer: the timeout handler calls back without deferral.
            self.deferred.entry(nbma).or_insert(now + NATED_PEER_GRACE);
            return;
        }
        let local = SocketAddr::new(IpAddr::V4(self.local_ip_for(nbma)), IKE_PORT);
        let remote = SocketAddr::new(peer_ip, IKE_PORT);
        match self.ike.initiate(now, local, remote) {
            Ok(id) => {
                tracing::info!(peer = %nbma, ike_sa = %id, "initiating IKE");
                self.connecting.insert(
                    nbma,
                    Connecting {
                        since: now,
                        ike_sa: Some(id),
                    },
                );
            }
            Err(e) => tracing::error!(peer = %nbma, "cannot initiate IKE: {e}"),
        }
    }

    /// Whether NHRP learned `nbma` as the post-NAT address of a peer behind NAT.
    fn peer_is_nated(&self, now: Instant, nbma: Ipv4Addr) -> bool {
        self.nhrp
            .cache_entries(now)
            .iter()
            .any(|e| e.post_nat_nbma == Some(IpAddr::V4(nbma)) && e.nbma != IpAddr::V4(nbma))
    }

    /// A shortcut's kernel route (the next hop's own /32 on the connected tunnel subnet needs
    /// none).
    async fn install_shortcut_route(&self, p: Ipv4Addr, len: u8, nh: Ipv4Addr) {
        tracing::info!(prefix = %format_args!("{p}/{len}"), via = %nh, "NHRP shortcut installed");
        let connected = len == 32 && p == nh && self.config.tunnel.address.contains(p);
        if !connected && let Err(e) = self.install_route(p, len, Some(nh), SHORTCUT_METRIC).await {
            tracing::warn!("{e:#}");
        }
    }

    /// IKE toward `peer` failed: hold further attempts down (doubling up to a minute), drop
    /// what waited for it, and tell NHRP the peer is unreachable so its shortcuts go and
    /// traffic keeps using the path via the hub. An NHS is left to NHRP's registration
    /// retries (wire notes item 7), which pace themselves.
    fn setup_failed(&mut self, now: Instant, peer: Ipv4Addr) {
        self.connecting.remove(&peer);
        self.deferred.remove(&peer);
        self.pending_routes.remove(&peer);
        self.drop_pending(peer);
        if self.is_nhs(peer) {
            return;
        }
        let failures = self.held_down.get(&peer).map_or(0, |(_, n)| *n) + 1;
        let wait = FIRST_HOLD_DOWN
            .saturating_mul(1 << (failures - 1).min(6))
            .min(MAX_HOLD_DOWN);
        self.hold_down(now, peer, wait);
        if let Some(h) = self.held_down.get_mut(&peer) {
            h.1 = failures;
            tracing::info!(%peer, hold_down_secs = wait.as_secs(), "no new IKE attempt toward this peer before the hold-down ends");
        }
        if !self.master.paths.contains_key(&peer) {
            self.nhrp.peer_dead(now, IpAddr::V4(peer));
        }
    }

    fn is_nhs(&self, peer: Ipv4Addr) -> bool {
        self.config.nhrp.nhs.iter().any(|n| n.nbma == peer)
    }

    /// No initiation toward `peer` for `wait` (it may still initiate toward us). NHSs are
    /// exempt: NHRP's registration schedule paces those retries itself (wire notes item 7).
    fn hold_down(&mut self, now: Instant, peer: Ipv4Addr, wait: Duration) {
        if self.is_nhs(peer) {
            return;
        }
        let failures = self.held_down.get(&peer).map_or(0, |(_, n)| *n);
        self.held_down.insert(peer, (now + wait, failures));
    }

    /// Drops the packets waiting for `nbma` (counted).
    fn drop_pending(&mut self, nbma: Ipv4Addr) {
        if let Some(q) = self.pending.remove(&nbma) {
            for _ in q {
                self.master.counters.count_drop(DropReason::SaQueueFull);
            }
        }
    }

    async fn install_child(&mut self, now: Instant, c: ChildSaInstalled) {
        let Some(peer) = v4(c.remote.ip()) else {
            return;
        };
        let sas = OutboundSa::new(Spi(c.spi_out), c.key_out.expose(), c.esn).and_then(|o| {
            InboundSa::new(
                Spi(c.spi_in),
                c.key_in.expose(),
                c.esn,
                self.config.ipsec.replay_window,
            )
            .map(|i| (o, i))
        });
        let (out_sa, in_sa) = match sas {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(%peer, "cannot install child SA: {e}");
                return;
            }
        };
        let path = PeerPath {
            out_sa: Arc::new(out_sa),
            port: c.remote.port(),
            udp_encap: c.udp_encap,
        };
        self.master.paths.insert(peer, path.clone());
        self.children.entry(peer).or_default().push(InstalledChild {
            spi_in: c.spi_in,
            path,
        });
        // A replaced SA's inbound half stays until IKE deletes it: packets the peer sealed
        // before switching may still be in flight.
        self.master.add_inbound(peer, Arc::new(in_sa));
        self.publish();
        tracing::info!(
            %peer,
            spi_in = format_args!("{:#010x}", c.spi_in),
            spi_out = format_args!("{:#010x}", c.spi_out),
            udp_encap = c.udp_encap,
            esn = c.esn,
            rekey = c.replaces.is_some(),
            "child SA installed (ESP transport, AES-GCM-256, GRE)"
        );
        if let Some(k) = &mut self.key_log {
            let nat = c.udp_encap;
            let (local, remote) = (c.local.ip(), c.remote.ip());
            k.esp_sa(
                (!nat).then_some(remote),
                (!nat).then_some(local),
                c.spi_in,
                c.key_in.expose(),
            );
            k.esp_sa(
                (!nat).then_some(local),
                (!nat).then_some(remote),
                c.spi_out,
                c.key_out.expose(),
            );
        }
        // Our own initiation is redundant once the peer's SA carries traffic: drop it if it is
        // still half open (nothing is sent for that), or delete it if it completed too.
        if let Some(mine) = self.connecting.remove(&peer)
            && let Some(id) = mine.ike_sa
            && id != c.ike_sa
        {
            let _ = self.ike.delete_sa(now, id);
        }
        self.deferred.remove(&peer);
        self.held_down.remove(&peer);
        for (p, len, nh) in self.pending_routes.remove(&peer).unwrap_or_default() {
            self.install_shortcut_route(p, len, nh).await;
        }
        if let Some(q) = self.pending.remove(&peer) {
            for (protocol, buf) in q {
                self.dp.send_to(peer, protocol, buf).await;
            }
        }
        self.nhrp.sa_up(now, IpAddr::V4(peer));
    }

    /// Forgets every SA to `peer` (DPD death, IKE SA gone).
    fn remove_peer_sas(&mut self, peer: Ipv4Addr) {
        self.master.paths.remove(&peer);
        self.children.remove(&peer);
        self.deferred.remove(&peer);
        let spis: Vec<Spi> = self
            .master
            .spi_peer
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(s, _)| *s)
            .collect();
        for spi in spis {
            self.master.remove_inbound(spi);
        }
        self.keepalives.remove(SocketAddrV4::new(peer, NATT_PORT));
        self.connecting.remove(&peer);
        self.publish();
    }

    async fn handle_ike_event(&mut self, now: Instant, ev: IkeEvent) {
        match ev {
            IkeEvent::IkeSaUp {
                sa,
                remote,
                remote_id,
                initiator,
                nat_local,
                nat_remote,
                ..
            } => {
                tracing::info!(
                    peer = %remote,
                    ike_sa = %sa,
                    id = %remote_id,
                    initiator,
                    nat_local,
                    nat_remote,
                    "IKE SA up (AES-GCM-256/PRF-HMAC-SHA2/ECDH)"
                );
                if nat_local && let SocketAddr::V4(r) = remote {
                    self.keepalives.add(r, now);
                }
                if let Some(k) = &mut self.key_log
                    && let Some((spi_i, spi_r, ei, er)) = self.ike.export_sk_e(sa)
                {
                    k.ike_sa(spi_i, spi_r, ei.expose(), er.expose());
                }
            }
            IkeEvent::IkeSaRekeyed { old, new } => {
                tracing::info!(old = %old, new = %new, "IKE SA rekeyed");
                if let Some(k) = &mut self.key_log
                    && let Some((spi_i, spi_r, ei, er)) = self.ike.export_sk_e(new)
                {
                    k.ike_sa(spi_i, spi_r, ei.expose(), er.expose());
                }
            }
            IkeEvent::IkeSaDown { sa, remote, reason } => {
                tracing::info!(peer = %remote, ike_sa = %sa, ?reason, "IKE SA down");
                // Its Child SAs were reported deleted one by one just before. The peer is gone
                // for NHRP only if no other IKE SA with it is still up.
                let other_up = self.ike.ike_sas(now).iter().any(|s| {
                    s.id != sa && s.remote.ip() == remote.ip() && s.state == "Established"
                });
                if !matches!(reason, DownReason::Rekeyed | DownReason::Replaced)
                    && !other_up
                    && let Some(peer) = v4(remote.ip())
                {
                    self.remove_peer_sas(peer);
                    if reason == DownReason::DeletedByPeer {
                        // A peer that said goodbye is not called back at once: an NHRP answer
                        // to its last packets (a purge reply) must not start a new IKE SA.
                        self.hold_down(now, peer, FIRST_HOLD_DOWN);
                    }
                    self.nhrp.peer_dead(now, IpAddr::V4(peer));
                }
            }
            IkeEvent::ChildSaInstalled(c) => self.install_child(now, c).await,
            IkeEvent::ChildSaDeleted {
                spi_in,
                spi_out,
                remote,
                ..
            } => {
                self.master.remove_inbound(Spi(spi_in));
                if let Some(peer) = v4(remote.ip())
                    && let Some(list) = self.children.get_mut(&peer)
                {
                    list.retain(|c| c.spi_in != spi_in);
                    // Fall back to the newest remaining Child SA, if any.
                    match list.last() {
                        Some(c) => {
                            self.master.paths.insert(peer, c.path.clone());
                        }
                        None => {
                            self.children.remove(&peer);
                            self.master.paths.remove(&peer);
                        }
                    }
                }
                self.sa_packets.remove(&spi_in);
                self.sa_packets.remove(&spi_out);
                self.publish();
                tracing::info!(
                    peer = %remote,
                    spi_in = format_args!("{spi_in:#010x}"),
                    spi_out = format_args!("{spi_out:#010x}"),
                    "child SA deleted"
                );
            }
            IkeEvent::PeerDead { sa, remote } => {
                tracing::warn!(peer = %remote, ike_sa = %sa, "peer dead (DPD): clearing its SAs and NHRP state");
                if let Some(peer) = v4(remote.ip()) {
                    self.remove_peer_sas(peer);
                    self.drop_pending(peer);
                    self.hold_down(now, peer, FIRST_HOLD_DOWN);
                    self.nhrp.peer_dead(now, IpAddr::V4(peer));
                }
            }
            IkeEvent::AuthFailed { remote, reason } => {
                tracing::error!(peer = %remote, "IKE authentication failed: {reason} (check the pre-shared key)");
                if let Some(peer) = v4(remote.ip()) {
                    self.setup_failed(now, peer);
                }
            }
            IkeEvent::EstablishFailed { remote, reason } => {
                tracing::warn!(peer = %remote, ?reason, "IKE SA could not be established");
                if let Some(peer) = v4(remote.ip()) {
                    self.setup_failed(now, peer);
                }
            }
            IkeEvent::ChildSaFailed { remote, reason, .. } => {
                tracing::warn!(peer = %remote, ?reason, "child SA refused");
            }
        }
    }

    async fn handle_nhrp_event(&mut self, now: Instant, ev: NhrpEvent) {
        match ev {
            NhrpEvent::NeedSa { nbma } => {
                if let Some(n) = v4(nbma) {
                    self.ensure_sa(now, n);
                }
            }
            NhrpEvent::ResetSa { nbma } => {
                tracing::warn!(nhs = %nbma, "NHS unanswered: restarting IKE");
                let _ = self.ike.delete(now, nbma);
                if let Some(n) = v4(nbma) {
                    self.remove_peer_sas(n);
                }
            }
            NhrpEvent::InstallRoute {
                prefix,
                prefix_len,
                next_hop,
                nbma,
            } => {
                let (Some(p), Some(nh)) = (v4(prefix), v4(next_hop)) else {
                    return;
                };
                self.shortcuts.insert((p, prefix_len, nh));
                match v4(nbma) {
                    Some(n) if !self.master.paths.contains_key(&n) => {
                        tracing::info!(prefix = %format_args!("{p}/{prefix_len}"), via = %nh, %nbma, "NHRP shortcut learned: waiting for an SA to install it");
                        self.pending_routes
                            .entry(n)
                            .or_default()
                            .push((p, prefix_len, nh));
                        self.ensure_sa(now, n);
                    }
                    _ => self.install_shortcut_route(p, prefix_len, nh).await,
                }
            }
            NhrpEvent::WithdrawRoute {
                prefix,
                prefix_len,
                next_hop,
            } => {
                let (Some(p), Some(nh)) = (v4(prefix), v4(next_hop)) else {
                    return;
                };
                tracing::info!(prefix = %format_args!("{p}/{prefix_len}"), via = %nh, "NHRP shortcut withdrawn");
                for routes in self.pending_routes.values_mut() {
                    routes.retain(|r| *r != (p, prefix_len, nh));
                }
                if self.shortcuts.remove(&(p, prefix_len, nh))
                    && let Err(e) = self
                        .netlink
                        .withdraw_route(self.tun_index, p, prefix_len, Some(nh), SHORTCUT_METRIC)
                        .await
                {
                    tracing::warn!("{e:#}");
                }
            }
            NhrpEvent::NhsUp {
                protocol_addr,
                nbma,
            } => tracing::info!(nhs = ?protocol_addr, %nbma, "NHRP registered with NHS"),
            NhrpEvent::NhsDown {
                protocol_addr,
                nbma,
            } => tracing::warn!(nhs = ?protocol_addr, %nbma, "NHRP registration with NHS lost"),
            NhrpEvent::RegistrationRefused { nbma, code } => {
                tracing::error!(%nbma, ?code, "NHS refused our NHRP registration");
            }
            NhrpEvent::PeerRegistered {
                protocol_addr,
                nbma,
            } => tracing::info!(peer = %protocol_addr, %nbma, "NHRP registration accepted"),
            NhrpEvent::PeerUnregistered {
                protocol_addr,
                nbma,
            } => tracing::info!(peer = %protocol_addr, %nbma, "NHRP registration removed"),
            NhrpEvent::PublicNbmaLearned { nbma } => {
                tracing::info!(%nbma, "public NBMA address learned from the NHS (behind NAT)");
            }
            NhrpEvent::ResolutionFailed { target, code } => {
                tracing::debug!(%target, ?code, "NHRP resolution failed");
            }
            NhrpEvent::ErrorIndication { from_nbma, code } => {
                tracing::warn!(from = %from_nbma, ?code, "NHRP error indication received");
            }
        }
    }

    /// Rebuilds the NHRP-derived parts of the tables (mappings, multicast list); publishes
    /// when they changed. `Mapping`s that did not change are kept, with their "used" marks.
    fn sync_nhrp_tables(&mut self, now: Instant) {
        let mut mappings: HashMap<Ipv4Addr, Arc<Mapping>> = HashMap::new();
        let mut put = |proto: Ipv4Addr, nbma: Ipv4Addr, old: &HashMap<Ipv4Addr, Arc<Mapping>>| {
            let m = match old.get(&proto) {
                Some(m) if m.nbma == nbma => m.clone(),
                _ => Mapping::new(nbma),
            };
            mappings.insert(proto, m);
        };
        for n in &self.config.nhrp.nhs {
            put(n.address, n.nbma, &self.master.mappings);
        }
        for e in self.nhrp.cache_entries(now) {
            if e.kind == EntryKind::Local || !e.is_live(now) {
                continue;
            }
            // Only peers with an SA: without one the packet would wait for IKE (or, toward a
            // peer that refuses it, be lost) where the path via the NHS works.
            if let (Some(nh), Some(nbma)) = (v4(e.next_hop), v4(e.effective_nbma()))
                && self.master.paths.contains_key(&nbma)
            {
                put(nh, nbma, &self.master.mappings);
            }
        }
        let multicast: Vec<Ipv4Addr> = self
            .nhrp
            .multicast_nbmas(now)
            .into_iter()
            .filter_map(v4)
            .collect();
        let same = mappings.len() == self.master.mappings.len()
            && mappings.iter().all(|(k, v)| {
                self.master
                    .mappings
                    .get(k)
                    .is_some_and(|o| Arc::ptr_eq(o, v))
            })
            && multicast == self.master.multicast;
        if !same {
            self.master.mappings = mappings;
            self.master.multicast = multicast;
            self.publish();
        }
    }

    /// Drains the engines' outputs after every input or timeout, until nothing moves.
    async fn flush(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            // Events first: a responder's Child SA must be installed before its IKE_AUTH
            // response leaves, or the initiator's first ESP packet (its NHRP registration,
            // sent the moment the response arrives) would meet no inbound SA here.
            let mut sa_changed = false;
            while let Some(ev) = self.ike.poll_event() {
                moved = true;
                sa_changed = true;
                self.handle_ike_event(now, ev).await;
            }
            while let Some(t) = self.ike.poll_transmit() {
                moved = true;
                let SocketAddr::V4(to) = t.remote else {
                    continue;
                };
                let natt = t.needs_non_esp_marker(NATT_PORT);
                if let Err(e) = self.underlay.send_ike(to, natt, &t.bytes).await {
                    tracing::debug!(peer = %to, "IKE send: {e}");
                }
            }
            let mut nhrp_moved = false;
            while let Some(ev) = self.nhrp.poll_event() {
                nhrp_moved = true;
                self.handle_nhrp_event(now, ev).await;
            }
            if nhrp_moved || sa_changed {
                moved |= nhrp_moved;
                self.sync_nhrp_tables(now);
            }
            while let Some(t) = self.nhrp.poll_transmit() {
                moved = true;
                let Some(nbma) = v4(t.dst_nbma) else { continue };
                match PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &t.bytes) {
                    Ok(buf) => self.dp.send_to(nbma, EtherType::NHRP, buf).await,
                    Err(e) => tracing::warn!("NHRP packet too large: {e}"),
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Answers one `dmvpnctl` request from the engines' state at `now`.
    async fn answer(&mut self, now: Instant, req: Request) -> Response {
        match req {
            Request::Show { what } => {
                let cache = self.nhrp.cache_entries(now);
                let nhs = self.nhrp.nhs_status(now);
                let ike = self.ike.ike_sas(now);
                let addr = self.config.tunnel.address.to_string();
                let snap = Snapshot {
                    now,
                    interface: &self.config.tunnel.interface,
                    tunnel_addr: &addr,
                    role: match self.config.nhrp.role {
                        Role::Spoke { .. } => NhrpRole::Spoke,
                        Role::Hub { .. } => NhrpRole::Hub,
                    },
                    cache: &cache,
                    nhs: &nhs,
                    ike: &ike,
                };
                match what {
                    Show::Sa => {
                        let master = &self.master;
                        Response::ok(&snap.sa_report(|c| {
                            let inbound = master
                                .inbound
                                .get(Spi(c.spi_in))
                                .map(|s| s.stats().snapshot());
                            let outbound = master
                                .paths
                                .values()
                                .find(|p| p.out_sa.spi() == Spi(c.spi_out))
                                .map(|p| p.out_sa.stats().snapshot());
                            (inbound, outbound)
                        }))
                    }
                    Show::Dmvpn => Response::ok(&snap.dmvpn_report(&mut self.updown)),
                    Show::Nhrp => Response::ok(&snap.nhrp_report(self.nhrp.counters())),
                    Show::Ike => Response::ok(&snap.ike_report()),
                    Show::Interface => {
                        let u = &self.underlay.stats;
                        let load = |a: &std::sync::atomic::AtomicU64| {
                            a.load(std::sync::atomic::Ordering::Relaxed)
                        };
                        Response::ok(&status::interface_report(
                            &self.config.tunnel.interface,
                            &addr,
                            u32::from(self.config.tunnel.mtu),
                            &self.master.counters,
                            &[
                                ("underlay_queue_full", load(&u.queue_full)),
                                ("underlay_malformed", load(&u.malformed)),
                            ],
                        ))
                    }
                }
            }
            Request::ClearSa { peer } => match (self.ike.delete(now, peer), v4(peer)) {
                (Ok(()), Some(p)) => {
                    self.remove_peer_sas(p);
                    self.nhrp.peer_dead(now, peer);
                    tracing::info!(%peer, "clear sa: IKE SA deleted by the operator");
                    Response::ok(&Ack::new(format!("IKE SA with {peer} deleted")))
                }
                _ => Response::error(format!("no IKE SA with {peer}")),
            },
            Request::ClearNhrp => {
                let n = self.nhrp.clear_dynamic();
                tracing::info!(
                    entries = n,
                    "clear nhrp: dynamic NHRP entries removed by the operator"
                );
                Response::ok(&Ack::new(format!("{n} dynamic NHRP entries cleared")))
            }
            Request::Reload => match self.reload(now).await {
                Ok(()) => Response::ok(&Ack::new("configuration reloaded")),
                Err(e) => {
                    tracing::error!("{e:#}");
                    Response::error(format!("{e:#}"))
                }
            },
        }
    }

    /// Re-reads the configuration file and applies what can change without a restart: keys,
    /// proposals, lifetimes, DPD, NHRP key and timers, adjust-mss, redirect, static routes. SAs
    /// stay up unless the new keyring no longer has a key for their peer. A change that needs
    /// a new TUN device, role, underlay or NHRP identity is refused and nothing is applied.
    pub async fn reload(&mut self, now: Instant) -> Result<()> {
        let new = dmvpn_config::load(&self.config_path)?;
        let old = self.config.clone();
        let t = (&new.tunnel, &old.tunnel);
        let restart: Vec<&str> = [
            ("tunnel.interface", t.0.interface != t.1.interface),
            ("tunnel.address", t.0.address != t.1.address),
            ("tunnel.mtu", t.0.mtu != t.1.mtu),
            ("tunnel.gre-key", t.0.gre_key != t.1.gre_key),
            ("nhrp.role", new.nhrp.role != old.nhrp.role),
            ("underlay", new.underlay != old.underlay),
            ("debug.key-export", new.key_export != old.key_export),
        ]
        .into_iter()
        .filter_map(|(k, changed)| changed.then_some(k))
        .collect();
        if !restart.is_empty() {
            bail!(
                "not reloaded: {} changed; restart dmvpnd to apply",
                restart.join(", ")
            );
        }
        // Build everything first so a bad value applies nothing.
        let ike = ike_config(&new)?;
        self.nhrp
            .reconfigure(nhrp_config(&new, self.local_nbma))
            .map_err(|e| anyhow!("not reloaded: NHRP: {e}"))?;
        for id in self.ike.set_config(ike) {
            tracing::info!(ike_sa = %id, "reload: the new keyring has no key for this peer: deleting its SA");
            let _ = self.ike.delete_sa(now, id);
        }
        self.master.tunnel.adjust_mss = new.tunnel.adjust_mss;
        self.master.tunnel.redirect = matches!(new.nhrp.role, Role::Hub { redirect: true });
        self.publish();
        for r in old.routes.iter().filter(|r| !new.routes.contains(r)) {
            let (p, l) = (r.prefix.addr, r.prefix.prefix_len);
            if let Err(e) = self
                .netlink
                .withdraw_route(self.tun_index, p, l, Some(r.via), STATIC_METRIC)
                .await
            {
                tracing::warn!("reload: {e:#}");
            }
        }
        for r in new.routes.iter().filter(|r| !old.routes.contains(r)) {
            self.install_route(
                r.prefix.addr,
                r.prefix.prefix_len,
                Some(r.via),
                STATIC_METRIC,
            )
            .await?;
        }
        self.keepalives.set_interval(new.ike.nat_keepalive);
        self.config = Arc::new(new);
        tracing::info!(config = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    /// Purges NHRP registrations and deletes IKE SAs, like `clear crypto session` before a
    /// shutdown, so the hub forgets us at once instead of at expiry.
    async fn shutdown(&mut self) {
        let now = Self::now();
        self.nhrp.shutdown(now);
        self.flush(now).await;
        let sas: Vec<_> = self.ike.ike_sas(now).into_iter().map(|s| s.id).collect();
        for id in sas {
            let _ = self.ike.delete_sa(now, id);
        }
        self.flush(now).await;
        for (p, l, nh) in std::mem::take(&mut self.shortcuts) {
            let _ = self
                .netlink
                .withdraw_route(self.tun_index, p, l, Some(nh), SHORTCUT_METRIC)
                .await;
        }
    }

    /// Runs until `shutdown` resolves or the readers go away.
    pub async fn run(
        mut self,
        mut underlay_rx: mpsc::Receiver<Received>,
        mut slow_rx: mpsc::Receiver<SlowPath>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no SIGHUP handler, reload disabled: {e}");
                None
            }
        };
        let now = Self::now();
        self.housekeeping(now).await;
        self.nhrp.register(now);
        self.flush(now).await;
        let mut ctl_rx = self.ctl_rx.take();
        // systemd: ready once the control socket is up; the watchdog is fed from this loop, so
        // a wedged control plane gets the service restarted.
        let _ = self.notifier.ready();
        let mut watchdog = self.watchdog.map(|d| tokio::time::interval(d / 2));
        loop {
            let deadline = tokio::time::Instant::from_std(self.poll_timeout());
            tokio::select! {
                _ = &mut shutdown => break,
                r = underlay_rx.recv() => match r {
                    Some(r) => self.handle_underlay(Self::now(), r).await,
                    None => break,
                },
                s = slow_rx.recv() => match s {
                    Some(s) => self.handle_slow_path(Self::now(), s).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => self.handle_timeout(Self::now()).await,
                Some((req, reply)) = async { match ctl_rx.as_mut() { Some(r) => r.recv().await, None => None } } => {
                    let resp = self.answer(Self::now(), req).await;
                    let _ = reply.send(resp);
                }
                Some(_) = async { match watchdog.as_mut() { Some(w) => Some(w.tick().await), None => None } } => {
                    let _ = self.notifier.watchdog();
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    tracing::info!("SIGHUP: reloading configuration");
                    if let Err(e) = self.reload(Self::now()).await {
                        tracing::error!("{e:#}");
                    }
                }
            }
            self.flush(Self::now()).await;
        }
        let _ = self.notifier.stopping();
        self.shutdown().await;
        if let Some(t) = self.ctl_task.take() {
            t.abort();
            let _ = std::fs::remove_file(&self.config.control.socket);
        }
        tracing::info!("control plane stopped");
    }
}

/// A started daemon: everything opened and configured, ready to run the event loop.
#[derive(Debug)]
pub struct Daemon {
    pub control: ControlPlane,
    pub tun: Arc<TunDevice>,
    underlay_rx: mpsc::Receiver<Received>,
    slow_rx: mpsc::Receiver<SlowPath>,
}

impl Daemon {
    /// Creates the TUN, mirrors its routes, opens the underlay sockets, builds the engines,
    /// starts the per-packet tasks and installs static routes.
    pub async fn start(config: Config, config_path: &std::path::Path) -> Result<Self> {
        let config = Arc::new(config);
        let Some(gre_key) = config.tunnel.gre_key else {
            bail!("tunnel.gre-key is required: DMVPN peers tell tunnels apart by the GRE key");
        };
        let netlink = Netlink::open()?;
        let tun = Arc::new(TunDevice::create(&config.tunnel, &netlink).await?);
        tracing::info!(
            device = %tun.name,
            address = %config.tunnel.address,
            mtu = tun.mtu,
            "tunnel interface up"
        );
        let routes = shared(RouteTable::new());
        spawn_route_mirror(tun.index, routes.clone()).await?;

        let underlay = Underlay::open(&UnderlayConfig::from_config(&config.underlay))?;
        let first_peer = config.nhrp.nhs.first().map(|n| n.nbma);
        let local_nbma = match (config.underlay.local_address, first_peer) {
            (Some(a), _) => a,
            (None, Some(nhs)) => local_address_for(nhs, config.underlay.interface.as_deref())
                .with_context(|| {
                    format!("no route to the NHS {nhs}: set underlay.local-address or fix routing")
                })?,
            (None, None) => bail!(
                "a hub needs underlay.local-address (its own NBMA address) in the configuration"
            ),
        };
        tracing::info!(%local_nbma, role = ?config.nhrp.role, "underlay sockets open");

        let key_log = match &config.key_export {
            Some(p) => {
                tracing::warn!(path = %p.display(), "exporting IKE/ESP keys for Wireshark: debugging only");
                Some(KeyLog::open(p)?)
            }
            None => None,
        };

        let ike = Endpoint::new(ike_config(&config)?, Box::new(SystemRng::new()));
        let nhrp = dmvpn_nhrp::Engine::new(
            nhrp_config(&config, local_nbma),
            dmvpn_nhrp::SeededRequestIds::new(u64::from(std::process::id()) ^ 0x5eed),
        )
        .map_err(|e| anyhow!("NHRP configuration: {e}"))?;

        let role = match config.nhrp.role {
            Role::Spoke { .. } => dmvpn_dataplane::Role::Spoke,
            Role::Hub { .. } => dmvpn_dataplane::Role::Hub,
        };
        let mut master = Tables::new(TunnelParams {
            role,
            gre_key,
            address: config.tunnel.address.addr,
            prefix_len: config.tunnel.address.prefix_len,
            adjust_mss: config.tunnel.adjust_mss,
            redirect: matches!(config.nhrp.role, Role::Hub { redirect: true }),
        });
        master.default_nbma = first_peer;
        for n in &config.nhrp.nhs {
            master.mappings.insert(n.address, Mapping::new(n.nbma));
        }

        let (utx, underlay_rx) = mpsc::channel(QUEUE_DEPTH);
        let (stx, slow_rx) = mpsc::channel(QUEUE_DEPTH);
        let dp = Arc::new(Datapath::new(
            master.clone(),
            routes.clone(),
            tun.clone(),
            underlay.clone(),
            stx,
        ));
        underlay.spawn_readers(utx, dp.clone());
        tokio::spawn(dp.clone().run_tun());

        let now = Instant::now();
        let control = ControlPlane {
            keepalives: NatKeepalives::new(config.ike.nat_keepalive),
            config: config.clone(),
            config_path: config_path.to_path_buf(),
            underlay,
            netlink,
            tun_index: tun.index,
            routes,
            key_log,
            local_nbma,
            dp,
            ike,
            nhrp,
            master,
            pending: HashMap::new(),
            connecting: HashMap::new(),
            children: HashMap::new(),
            deferred: HashMap::new(),
            held_down: HashMap::new(),
            pending_routes: HashMap::new(),
            shortcuts: HashSet::new(),
            local_prefixes: Vec::new(),
            sa_packets: HashMap::new(),
            next_housekeeping: now + HOUSEKEEPING,
            next_local_prefixes: now,
            updown: UpDown::new(),
            ctl_task: None,
            ctl_rx: None,
            notifier: crate::sdnotify::Notifier::from_env()
                .context("connecting to systemd's NOTIFY_SOCKET")?,
            watchdog: crate::sdnotify::watchdog_interval(),
        };
        for r in &config.routes {
            control
                .install_route(
                    r.prefix.addr,
                    r.prefix.prefix_len,
                    Some(r.via),
                    STATIC_METRIC,
                )
                .await?;
        }
        let mut control = control;
        let group = match &config.control.group {
            Some(name) => Some(
                ctl::group_id(name)
                    .ok_or_else(|| anyhow!("control.group: no group named {name}"))?,
            ),
            None => None,
        };
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        control.ctl_task = Some(ctl::serve(&config.control.socket, group, ctl_tx).await?);
        control.ctl_rx = Some(ctl_rx);
        Ok(Daemon {
            control,
            tun,
            underlay_rx,
            slow_rx,
        })
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        self.control
            .run(self.underlay_rx, self.slow_rx, shutdown)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_schedule() {
        let t0 = Instant::now();
        let mut k = NatKeepalives::new(Some(Duration::from_secs(20)));
        let a = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 4500);
        let b = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 4500);
        assert_eq!(k.poll_timeout(), None);
        k.add(a, t0);
        k.add(b, t0 + Duration::from_secs(5));
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        assert!(k.due(t0 + Duration::from_secs(19)).is_empty());
        assert_eq!(k.due(t0 + Duration::from_secs(20)), vec![a]);
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(25)));
        k.remove(b);
        assert_eq!(k.poll_timeout(), Some(t0 + Duration::from_secs(40)));
        let mut off = NatKeepalives::new(None);
        off.add(a, t0);
        assert_eq!(off.poll_timeout(), None);
    }
}
