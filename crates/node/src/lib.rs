//! dmvpn-node: one DMVPN router — IKEv2 (RFC 7296), NHRP (RFC 2332, Cisco phase 3) and the
//! ESP/GRE dataplane tables — coupled without I/O, in the style of quinn-proto.
//!
//! The daemon feeds a [`Node`] what arrives ([`Node::handle_ike`], [`Node::handle_slow_path`]),
//! its deadlines ([`Node::handle_timeout`] at [`Node::poll_timeout`]) and operator commands
//! ([`Node::clear_sa`], [`Node::reload`], …), always with `now` as an argument, and carries
//! out what it polls: [`Node::poll_tables`] (a new dataplane snapshot to publish),
//! [`Node::poll_routes`] (kernel routes to install or withdraw), [`Node::poll_transmit`]
//! (datagrams to send; [`Node::poll_transmit_then`] sends ESP in its SA's turn) and
//! [`Node::poll_event`]. Randomness comes through the injected RNG, so a test runs a hub and spokes deterministically in memory (`tests/network.rs`).
//!
//! Policy that lives here because it couples the engines: when to start IKE toward a peer
//! ([`peers`]: one attempt at a time, NAT grace, hold-down), the one queue of packets waiting
//! for an SA ([`sa_queue`]), when an NHRP shortcut may carry traffic ([`shortcuts`]), which
//! Child SA the dataplane sends on, DPD traffic sampling, NAT keepalives ([`keepalive`]) and
//! the NHRP mappings the dataplane uses.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod commands;
pub use commands::PURGE_REPLY_WAIT;
pub mod config;
pub mod deadlines;
mod drive;
pub mod explain_log;
mod ike_events;
pub mod keepalive;
pub mod log_limit;
mod nhrp_events;
pub mod nhs_choice;
pub mod peers;
mod recovery;
mod rekey_switch;
pub mod sa_queue;
pub mod shortcuts;
pub mod sweep;
pub mod timing;
mod transmit;
mod types;
pub mod updown;

pub use config::{IKE_PORT, NATT_PORT, ike_config, nhrp_config, restart_only_changes};
pub use types::{Event, KeyExport, NodeError, RouteUpdate, SlowPath, Transmit};

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmvpn_config::Config;
use dmvpn_crypto::Rng;
use dmvpn_dataplane::{Mapping, PeerPath, RouteTable, Tables};
use dmvpn_ike::Endpoint;

use crate::keepalive::NatKeepalives;
use crate::peers::Peers;
use crate::sa_queue::SaQueue;
use crate::shortcuts::Shortcuts;
use crate::timing::ShortcutTimer;

/// Period of the housekeeping deadline (DPD traffic sampling, shortcut refresh, routes for
/// NHRP).
pub const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// How often the SAs' packet counters are read for on-demand DPD (see
/// `Node::sample_traffic`): it bounds how far a DPD verdict may come after delay + tries ×
/// retry. Two atomic loads and a map update per SA.
pub const TRAFFIC_SAMPLE: Duration = Duration::from_millis(250);
/// About how many SAs (outbound paths and inbound SAs together) one loop turn of the
/// traffic sample looks at (`Node::sample_traffic`): a hub with 50,000 spokes takes some 25
/// turns per sample instead of one that held the loop for 20–50 ms.
pub const TRAFFIC_SAMPLE_STEP: usize = 4096;
/// Kernel metric of NHRP shortcut routes: below static (and OSPF) routes to the same prefix,
/// so a shortcut wins while it lives and withdrawing it falls back to the path via the hub.
pub const SHORTCUT_METRIC: u32 = 10;
/// Kernel metric of configured static routes into the tunnel.
pub const STATIC_METRIC: u32 = 100;

/// The local (pre-NAT) address to use toward a peer: the daemon asks the kernel's routing
/// table; a test answers with a constant.
pub type LocalAddress = Box<dyn Fn(Ipv4Addr) -> Ipv4Addr + Send>;

/// One installed Child SA toward a peer. A peer can have more than one (a rekey overlap, or
/// both sides initiating at once); the dataplane sends on the newest, except for a rekey we
/// answered until the peer shows it installed it too ([`rekey_switch`]).
#[derive(Debug)]
struct InstalledChild {
    spi_in: u32,
    path: PeerPath,
}

/// A DMVPN router node without I/O.
pub struct Node {
    config: Arc<Config>,
    /// Own NBMA address as configured on the interface (pre-NAT).
    local_nbma: Ipv4Addr,
    local_address: LocalAddress,
    ike: Endpoint,
    nhrp: dmvpn_nhrp::Engine,
    /// The master copy of what the dataplane reads; `tables_changed` says it must be
    /// published again.
    master: Tables,
    tables_changed: bool,
    sa_queue: SaQueue,
    /// Peers whose SA came up in this `drive` turn: their queued packets leave after IKE's
    /// datagrams of the turn.
    sa_queue_release: Vec<Ipv4Addr>,
    peers: Peers,
    /// Child SAs installed per peer NBMA, oldest first.
    children: HashMap<Ipv4Addr, Vec<InstalledChild>>,
    /// Rekeys we answered whose new SA does not carry our traffic yet.
    pending_switches: rekey_switch::PendingSwitches,
    /// Inbound SAs of replaced Child SAs the peer deleted, still decrypting a moment.
    retired: rekey_switch::Retired,
    shortcuts: Shortcuts,
    /// When the stages of new shortcuts happened ([`Event::ShortcutTimed`]).
    shortcut_timer: ShortcutTimer,
    /// The tunnel's routes as the kernel has them (from the daemon's route mirror).
    routes: Arc<RouteTable>,
    /// The router's own prefixes off the tunnel (NHRP answers resolutions for them).
    local_prefixes: Vec<(Ipv4Addr, u8)>,
    /// Last seen packet count per SA (by SPI), to tell IKE about traffic for DPD.
    sa_packets: HashMap<u32, u64>,
    /// Outbound SAs (SPI → peer) whose volume or sequence limit asked for a rekey already.
    rekeys_asked: HashMap<u32, (Ipv4Addr, Instant)>,
    /// Rate limits for the log lines a peer can cause at will (see `log_limit`).
    log_limit: log_limit::LogLimit<(std::net::IpAddr, log_limit::LogKind)>,
    /// Peers whose path (SA) appeared or went since the NHRP mappings were last synced.
    paths_changed: Vec<Ipv4Addr>,
    keepalives: NatKeepalives,
    /// Spoke: which NHS carries traffic without a mapping (priority, fallback).
    nhs_choice: crate::nhs_choice::NhsChoice,
    /// Spoke: which NHSs of clusters with `max-connections` are registered with, probed or
    /// kept in reserve.
    nhs_clusters: crate::nhs_choice::NhsClusters,
    /// When each peer last came up or went down (`show dmvpn` UpDn).
    changes: crate::updown::PeerChanges,
    next_housekeeping: Instant,
    next_traffic_sample: Instant,
    /// Where the traffic sample's walk over the tables stands.
    traffic_sweep: sweep::Sweep,
    transmits: VecDeque<transmit::Queued>,
    events: VecDeque<Event>,
    route_updates: VecDeque<RouteUpdate>,
    /// Last NHRP event per destination and error indication per peer (`dmvpnctl explain`).
    explain_log: explain_log::ExplainLog,
}

/// `[debug] ignore-purge` is on (at start, and at a reload that turns it on).
pub(crate) fn warn_ignore_purge() {
    tracing::warn!(
        "[debug] ignore-purge: every NHRP Purge Request received is dropped (counted as unhandled_type), as FRR's nhrpd does; a lab knob, never for production"
    );
}

/// NHRP request ids drawn from an [`Rng`] (the daemon passes the system RNG): the request id
/// binds a reply to its request and a purge to its registration (RFC 2332 §5.2.0.1, §5.2.5),
/// and every spoke holding the NHRP key sees some of ours, so they must be unpredictable.
pub struct RngRequestIds(pub Box<dyn Rng>);

impl std::fmt::Debug for RngRequestIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RngRequestIds")
    }
}

impl dmvpn_nhrp::RequestIdSource for RngRequestIds {
    fn next_request_id(&mut self) -> u32 {
        self.0.next_u32()
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("local_nbma", &self.local_nbma)
            .field("tunnel", &self.config.tunnel.address)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node for `config` whose own NBMA address is `local_nbma`. `rng` feeds IKE (SPIs,
    /// nonces, DH keys); `request_ids` gives NHRP request ids (the daemon's come from the
    /// system RNG, [`RngRequestIds`]; tests pass a seeded source). The configured static
    /// routes come out of [`Node::poll_routes`] at once.
    pub fn new(
        config: Arc<Config>,
        local_nbma: Ipv4Addr,
        local_address: LocalAddress,
        rng: Box<dyn Rng>,
        request_ids: Box<dyn dmvpn_nhrp::RequestIdSource>,
        now: Instant,
    ) -> Result<Self, NodeError> {
        let tunnel = config::tunnel_params(&config)?;
        if config.ignore_purge {
            warn_ignore_purge();
        }
        let ike = Endpoint::new(ike_config(&config)?, rng);
        let nhrp = dmvpn_nhrp::Engine::new(nhrp_config(&config, local_nbma), request_ids)
            .map_err(|e| NodeError::Nhrp(e.to_string()))?;
        let mut master = Tables::new(tunnel);
        let nhs_choice = crate::nhs_choice::NhsChoice::new(
            config.nhrp.nhs.iter().map(|n| (n.nbma, n.priority)),
            config.nhrp.nhs_fallback,
        );
        master.default_nbma = nhs_choice.current();
        let nhs_clusters = crate::nhs_choice::NhsClusters::new(
            config
                .nhrp
                .nhs
                .iter()
                .map(|n| (n.nbma, n.priority, n.cluster)),
            &config.nhrp.cluster_limits,
            config.nhrp.nhs_fallback,
            now,
        );
        for n in &config.nhrp.nhs {
            master.mappings.insert(n.address, Mapping::new(n.nbma));
        }
        let route_updates = config
            .routes
            .iter()
            .map(|r| RouteUpdate::Install {
                prefix: r.prefix.addr,
                prefix_len: r.prefix.prefix_len,
                via: Some(r.via),
                metric: STATIC_METRIC,
            })
            .collect();
        let mut node = Node {
            keepalives: NatKeepalives::new(config.ike.nat_keepalive),
            nhs_choice,
            nhs_clusters,
            changes: crate::updown::PeerChanges::default(),
            config,
            local_nbma,
            local_address,
            ike,
            nhrp,
            master,
            tables_changed: true,
            sa_queue: SaQueue::default(),
            sa_queue_release: Vec::new(),
            peers: Peers::with_jitter_seed(u64::from(local_nbma.to_bits())),
            children: HashMap::new(),
            pending_switches: rekey_switch::PendingSwitches::default(),
            retired: rekey_switch::Retired::default(),
            shortcuts: Shortcuts::default(),
            shortcut_timer: ShortcutTimer::default(),
            routes: Arc::new(RouteTable::new()),
            local_prefixes: Vec::new(),
            sa_packets: HashMap::new(),
            rekeys_asked: HashMap::new(),
            log_limit: log_limit::LogLimit::default(),
            paths_changed: Vec::new(),
            next_housekeeping: now,
            next_traffic_sample: now,
            traffic_sweep: sweep::Sweep::new(
                dmvpn_snapmap::SHARDS,
                TRAFFIC_SAMPLE_STEP,
                TRAFFIC_SAMPLE,
            ),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            route_updates,
            explain_log: explain_log::ExplainLog::default(),
        };
        // NHSs their cluster keeps in reserve are neither registered with nor sent multicast.
        for nbma in node.nhs_clusters.nbmas().collect::<Vec<_>>() {
            if node.nhs_clusters.role(nbma) != crate::nhs_choice::ClusterRole::Active {
                node.nhrp.set_nhs_active(now, IpAddr::V4(nbma), false);
            }
        }
        // The NHRP-derived tables (an NHS's multicast flag) are right from the first snapshot.
        node.sync_nhrp_tables(now);
        Ok(node)
    }

    /// Starts the node: feeds NHRP the routes known so far and, on a spoke, registers with
    /// the NHSs.
    pub fn start(&mut self, now: Instant) {
        self.sample_traffic(now);
        self.housekeeping(now);
        self.nhrp.register(now);
        self.drive(now);
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Own NBMA address (pre-NAT).
    pub fn local_nbma(&self) -> Ipv4Addr {
        self.local_nbma
    }

    /// The IKE engine, for status.
    pub fn ike(&self) -> &Endpoint {
        &self.ike
    }

    /// The NHRP engine, for status.
    pub fn nhrp(&self) -> &dmvpn_nhrp::Engine {
        &self.nhrp
    }

    /// The IKE back-off of `peer` (hold-down end, failures, last failure), if it has one.
    pub fn backoff(&self, peer: Ipv4Addr) -> Option<crate::peers::Backoff> {
        self.peers.backoff(peer)
    }

    /// Every peer with IKE back-off state.
    pub fn backoffs(&self) -> impl Iterator<Item = (Ipv4Addr, crate::peers::Backoff)> + '_ {
        self.peers.backoffs()
    }

    /// The NBMA addresses of peers whose NHRP shortcuts are learned but not installed yet:
    /// they wait for an SA (`show dmvpn` has no T1 for them).
    pub fn shortcuts_waiting_for_sa(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.shortcuts.waiting_nbmas()
    }

    /// When each peer's tunnel last came up or went down.
    pub fn peer_changes(&self) -> &crate::updown::PeerChanges {
        &self.changes
    }

    /// The master dataplane tables (what the last [`Node::poll_tables`] returned, or newer).
    pub fn tables(&self) -> &Tables {
        &self.master
    }

    /// The tunnel's kernel routes, as the route mirror sees them. NHRP reads them at the next
    /// housekeeping deadline.
    pub fn set_routes(&mut self, routes: Arc<RouteTable>) {
        self.routes = routes;
        // NHRP answers resolutions from these routes: a route a routing daemon just
        // installed must not wait for the next housekeeping (up to 2 s, during which a
        // resolution for it was refused). One pass over the table per update the daemon
        // mirrors, which batches the kernel's notifications.
        self.feed_nhrp_routes();
    }

    /// The router's own prefixes off the tunnel.
    pub fn set_local_prefixes(&mut self, prefixes: Vec<(Ipv4Addr, u8)>) {
        self.local_prefixes = prefixes;
    }

    /// A new dataplane snapshot when the tables changed since the last call. The daemon
    /// publishes it **before** sending what [`Node::poll_transmit`] (or
    /// [`Node::poll_transmit_then`]) returns: an IKE_AUTH response must not leave before its
    /// Child SA can receive the initiator's first ESP.
    #[must_use]
    pub fn poll_tables(&mut self) -> Option<Tables> {
        std::mem::take(&mut self.tables_changed).then(|| self.master.clone())
    }

    /// The next kernel route change.
    #[must_use]
    pub fn poll_routes(&mut self) -> Option<RouteUpdate> {
        self.route_updates.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline of any engine or timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        [
            self.ike.poll_timeout(),
            self.nhrp.poll_timeout(),
            self.keepalives.poll_timeout(),
            self.peers.poll_timeout(),
            self.nhs_choice.deadline(),
            self.nhs_clusters.deadline(),
            self.pending_switches.deadline(),
            self.retired.deadline(),
        ]
        .into_iter()
        .flatten()
        .fold(
            self.next_housekeeping.min(self.next_traffic_sample),
            Instant::min,
        )
    }

    /// Records an NHS registration coming up or going down and, when that changes which NHS
    /// carries traffic without a mapping, republishes the tables.
    /// `None`: only a fallback time ended.
    pub(crate) fn nhs_state(&mut self, now: Instant, change: Option<(Ipv4Addr, bool)>) {
        if let Some((nbma, up)) = change {
            self.nhs_clusters.set_up(nbma, up);
            self.plan_nhs_clusters(now);
        }
        let changed = match change {
            Some((nbma, up)) => self.nhs_choice.set_up(nbma, up, now),
            None => self.nhs_choice.decide(now),
        };
        if changed {
            self.master.default_nbma = self.nhs_choice.current();
            self.tables_changed = true;
            tracing::info!(
                nhs = %self.nhs_choice.current().map_or_else(|| "none".to_owned(), |n| n.to_string()),
                "traffic without an NHRP mapping now goes to this NHS"
            );
        }
    }

    /// Applies what the NHS clusters decide at `now` (after an NHS came up or went down, at
    /// their deadline, and at each drive and housekeeping): NHSs made active register,
    /// those put in reserve are purged, one that failed loses its SA (so that probing it
    /// starts over with IKE, which proves it reachable), and the probed ones get IKE.
    pub(crate) fn plan_nhs_clusters(&mut self, now: Instant) {
        if !self.nhs_clusters.limited() {
            return;
        }
        for nbma in self.nhs_clusters.nbmas().collect::<Vec<_>>() {
            let reachable = self.master.paths.contains_key(&nbma);
            self.nhs_clusters.set_reachable(nbma, reachable, now);
        }
        let changes = self.nhs_clusters.plan(now);
        self.apply_cluster_changes(now, changes);
        for nbma in self.nhs_clusters.probes() {
            if !self.master.paths.contains_key(&nbma) {
                self.ensure_sa(now, nbma);
            }
        }
    }

    /// Registers with, purges or fails the NHSs as their clusters decided.
    fn apply_cluster_changes(
        &mut self,
        now: Instant,
        changes: Vec<crate::nhs_choice::ClusterChange>,
    ) {
        use crate::nhs_choice::ClusterChange;
        for change in changes {
            match change {
                ClusterChange::Activate(nbma) => {
                    tracing::info!(nhs = %nbma, "NHS cluster short of max-connections: registering with the next best NHS");
                    self.nhrp.set_nhs_active(now, IpAddr::V4(nbma), true);
                }
                ClusterChange::Promote(nbma) => {
                    tracing::info!(nhs = %nbma, "better NHS reachable for the fallback time: registering with it (the worst of its cluster follows to reserve)");
                    self.nhs_choice.settle(nbma);
                    self.nhrp.set_nhs_active(now, IpAddr::V4(nbma), true);
                }
                ClusterChange::Reserve(nbma) => {
                    tracing::info!(nhs = %nbma, "NHS cluster at max-connections with better NHSs: registration purged, NHS in reserve");
                    self.nhrp.set_nhs_active(now, IpAddr::V4(nbma), false);
                }
                ClusterChange::Failed(nbma) => {
                    tracing::warn!(nhs = %nbma, "NHS failed: in reserve (probed) until an SA with it comes up again");
                    self.nhrp.set_nhs_active(now, IpAddr::V4(nbma), false);
                    if self.ike.has_sa_with(IpAddr::V4(nbma)) {
                        let _ = self.ike.delete(now, IpAddr::V4(nbma));
                        self.remove_peer_sas(nbma);
                    }
                }
                ClusterChange::Chosen(nbma) => {
                    tracing::info!(nhs = %nbma, "reload: NHS now among the best of its cluster: registering with it (those it displaces follow to reserve once it is registered)");
                    // The operator ranked it first and it did not fail: once registered it
                    // carries traffic without waiting out the fallback time.
                    self.nhs_choice.settle(nbma);
                    self.nhrp.set_nhs_active(now, IpAddr::V4(nbma), true);
                }
            }
        }
    }

    /// A reload changed NHS priorities, `nhs-fallback`, clusters or `max-connections` (the
    /// NHSs themselves are the same: NHRP refuses another list without a restart). Re-ranks
    /// which NHS carries traffic without a mapping and re-plans the clusters; SAs and the
    /// registrations still wanted stay, an NHS newly among its cluster's best registers, and
    /// those it displaces are purged once it is registered (`plan_nhs_clusters`), their SAs
    /// closed at the next housekeeping when they are not probed (`close_reserve_sas`).
    pub(crate) fn reconfigure_nhs(&mut self, now: Instant) {
        let config = Arc::clone(&self.config);
        let nhs = &config.nhrp.nhs;
        let fallback = config.nhrp.nhs_fallback;
        let changes = {
            let (nhrp, choice) = (&self.nhrp, &self.nhs_choice);
            self.nhs_clusters.reconfigure(
                nhs.iter().map(|n| (n.nbma, n.priority, n.cluster)),
                &config.nhrp.cluster_limits,
                fallback,
                now,
                |nbma| (nhrp.nhs_active(IpAddr::V4(nbma)), choice.is_up(nbma)),
            )
        };
        self.apply_cluster_changes(now, changes);
        // An NHS whose cluster lost its limit (or that moved to an unlimited one) is
        // registered with, as every NHS of an unlimited cluster is.
        for n in nhs {
            if self.nhs_clusters.role(n.nbma) == crate::nhs_choice::ClusterRole::Active
                && !self.nhrp.nhs_active(IpAddr::V4(n.nbma))
            {
                tracing::info!(nhs = %n.nbma, "reload: NHS no longer limited by its cluster: registering with it");
                self.nhrp.set_nhs_active(now, IpAddr::V4(n.nbma), true);
            }
        }
        self.plan_nhs_clusters(now);
        if self
            .nhs_choice
            .reconfigure(nhs.iter().map(|n| (n.nbma, n.priority)), fallback, now)
        {
            self.master.default_nbma = self.nhs_choice.current();
            self.tables_changed = true;
            tracing::info!(
                nhs = %self.nhs_choice.current().map_or_else(|| "none".to_owned(), |n| n.to_string()),
                "reload: traffic without an NHRP mapping now goes to this NHS"
            );
        }
    }

    /// Closes the SA with each NHS its cluster keeps in reserve without probing it (DOWN):
    /// max-connections limits the hubs a spoke holds tunnels with, not only registrations, and
    /// an idle SA would otherwise be rekeyed forever. Run at housekeeping, so the purge of its
    /// registration (sent through that SA when it went to reserve) has left long before.
    pub(crate) fn close_reserve_sas(&mut self, now: Instant) {
        if !self.nhs_clusters.limited() {
            return;
        }
        for nbma in self.nhs_clusters.nbmas().collect::<Vec<_>>() {
            let idle = self.nhs_clusters.role(nbma) == crate::nhs_choice::ClusterRole::Down
                && !self.nhrp.nhs_active(IpAddr::V4(nbma))
                && self.master.paths.contains_key(&nbma)
                && !self.shortcuts.waits_for(nbma)
                && !self.sa_queue.has(nbma);
            if idle && self.ike.delete(now, IpAddr::V4(nbma)).is_ok() {
                tracing::info!(nhs = %nbma, "NHS in reserve: its SA closed");
                self.remove_peer_sas(nbma);
            }
        }
    }

    /// `nbma`'s NHS cluster and its place there (`show nhrp`); `None` for a peer that is not
    /// an NHS.
    pub fn nhs_cluster(&self, nbma: Ipv4Addr) -> Option<(u8, crate::nhs_choice::ClusterRole)> {
        let n = self.config.nhrp.nhs.iter().find(|n| n.nbma == nbma)?;
        Some((n.cluster, self.nhs_clusters.role(nbma)))
    }

    /// Whether IKE toward NHS `peer` is wanted: NHRP registers with it or its cluster probes
    /// it (one in reserve that is not probed waits until its cluster needs it).
    pub(crate) fn nhs_wanted(&self, peer: Ipv4Addr) -> bool {
        self.is_nhs(peer) && self.nhs_clusters.role(peer) != crate::nhs_choice::ClusterRole::Down
    }

    /// Whether a better NHS's fallback time has ended.
    pub(crate) fn nhs_choice_due(&self, now: Instant) -> bool {
        self.nhs_choice.deadline().is_some_and(|d| d <= now)
    }

    /// The NHS that traffic without a mapping goes to now (`show nhrp`).
    pub fn preferred_nhs(&self) -> Option<Ipv4Addr> {
        self.nhs_choice.current()
    }

    /// Whether this router is a hub (an NHS: spokes register with it).
    fn is_hub(&self) -> bool {
        matches!(self.config.nhrp.role, dmvpn_config::Role::Hub { .. })
    }

    fn is_nhs(&self, peer: Ipv4Addr) -> bool {
        self.config.nhrp.nhs.iter().any(|n| n.nbma == peer)
    }
}
