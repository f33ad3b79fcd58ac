//! The node's inputs and its drive loop: datagrams, slow-path packets and deadlines go into
//! the engines; the engines' outputs are drained until nothing moves.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use dmvpn_dataplane::DropReason;
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;

use crate::config::{IKE_PORT, NATT_PORT};
use crate::log_limit::LogKind;
use crate::recovery::Existing;
use crate::{HOUSEKEEPING, Node, SlowPath, Transmit};

/// A worn-out Child SA whose rekey did not happen is asked again after this long.
const REKEY_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

impl Node {
    /// An IKE message from `from`, received on UDP 4500 (`natt`, non-ESP marker already
    /// stripped) or UDP 500.
    pub fn handle_ike(&mut self, now: Instant, from: SocketAddrV4, natt: bool, message: &[u8]) {
        let port = if natt { NATT_PORT } else { IKE_PORT };
        let local = SocketAddr::new(IpAddr::V4((self.local_address)(*from.ip())), port);
        self.ike
            .handle_datagram(now, local, SocketAddr::V4(from), message);
        self.drive(now);
    }

    /// Offload mode for IKE's expensive computations (`dmvpn_ike`'s jobs): the daemon turns
    /// it on when it runs a worker pool; simulations leave it off and stay inline.
    pub fn set_ike_offload(&mut self, on: bool) {
        self.ike.set_offload(on);
    }

    /// The next IKE job to run (offload mode): [`dmvpn_ike::Job::run`] on any thread, then
    /// [`Node::complete_ike_job`].
    #[must_use]
    pub fn poll_ike_job(&mut self) -> Option<dmvpn_ike::Job> {
        self.ike.poll_job()
    }

    /// A finished IKE job: its IKE SA answers the IKE_SA_INIT it waited for.
    pub fn complete_ike_job(&mut self, now: Instant, done: dmvpn_ike::JobDone) {
        self.ike.complete_job(now, done);
        self.drive(now);
    }

    /// An IKE job the daemon cannot queue: its IKE_SA_INIT goes unanswered (counted).
    pub fn cancel_ike_job(&mut self, job: dmvpn_ike::Job) {
        self.ike.cancel_job(job);
    }

    /// A packet the dataplane could not finish on its own.
    pub fn handle_slow_path(&mut self, now: Instant, s: SlowPath) {
        match s {
            SlowPath::NeedSa {
                nbma,
                protocol,
                buf,
            } => self.send_tunnel(now, nbma, protocol, buf),
            SlowPath::Nhrp { peer, bytes } => {
                let before = self.nhrp.counters().auth_failures;
                self.nhrp.handle_packet(now, IpAddr::V4(peer), &bytes);
                if self.nhrp.counters().auth_failures > before
                    && self.log_allowed(now, IpAddr::V4(peer), LogKind::NhrpAuthFailed)
                {
                    tracing::warn!(
                        peer = %peer,
                        "NHRP authentication failure: packet dropped (wrong `nhrp authentication` key?)"
                    );
                }
            }
            SlowPath::UnknownSpi { from, encap, spi } => self.unknown_spi(now, from, encap, spi),
            // IKE follows (and confirms with a liveness check); its PeerMoved moves the paths.
            // Only the SA's own peer's port: the outer source address is the sender's to
            // choose, so ESP sealed under one peer's SA from another peer's address (spoofed)
            // must not move that other peer's paths (review of issue 13).
            SlowPath::NatMapping { peer, from } => {
                if *from.ip() == peer && self.master.path_port_moved(peer, from.port()) {
                    self.ike.peer_port_moved(now, SocketAddr::V4(from));
                }
            }
            SlowPath::Redirect { peer, quote } => {
                self.nhrp
                    .traffic_indication_needed(now, IpAddr::V4(peer), &quote);
            }
        }
        self.drive(now);
    }

    /// Runs every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for to in self.keepalives.due(now) {
            self.queue_transmit(Transmit::NatKeepalive { to });
        }
        self.ike.handle_timeout(now);
        self.nhrp.handle_timeout(now);
        // Initiations held back for NATed peers: `ensure_sa` skips those whose SA came up
        // (or is being negotiated by the peer) meanwhile.
        for peer in self.peers.take_due_deferred(now) {
            self.ensure_sa_inner(now, peer, false);
        }
        for peer in self.peers.take_due_retries(now) {
            if self.still_wanted(peer) {
                self.ensure_sa_inner(now, peer, false);
            }
        }
        if self.nhs_choice_due(now) {
            self.nhs_state(now, None);
        }
        // (NHS clusters: their deadline is served by the `drive` below.)
        for (peer, spi_in) in self.pending_switches.take_due(now) {
            self.switch_outbound(peer, spi_in, "switch limit");
        }
        for (peer, spi) in self.retired.take_due(now) {
            self.retired_gone(peer, spi);
        }
        if now >= self.next_traffic_sample {
            self.sample_traffic(now);
        }
        if now >= self.next_housekeeping {
            self.housekeeping(now);
        }
        self.drive(now);
    }

    /// Tells IKE which peers carried traffic since the last look, from the SAs' packet
    /// counters: DPD on demand probes only a peer we send to and hear nothing from (RFC 7296
    /// §2.4), so how often this runs bounds how late a verdict comes (a sample every
    /// `TRAFFIC_SAMPLE`: the verdict lands within that of delay + tries × retry). On a large
    /// hub the look is spread over several loop turns ([`crate::sweep::Sweep`]), shard by
    /// shard of the tables, each SA still looked at once per `TRAFFIC_SAMPLE`.
    pub(crate) fn sample_traffic(&mut self, now: Instant) {
        let mut sweep = self.traffic_sweep;
        self.next_traffic_sample = sweep.step(now, |i| self.sample_shard(now, i));
        self.traffic_sweep = sweep;
    }

    /// The traffic sample of shard `i` of the paths and of the inbound SAs; returns how many
    /// entries it looked at.
    fn sample_shard(&mut self, now: Instant, i: usize) -> usize {
        let mut seen = 0;
        for (nbma, path) in self.master.paths.shard(i) {
            seen += 1;
            let spi = path.out_sa.spi().0;
            let n = path.out_sa.stats().snapshot().packets;
            if self.sa_packets.insert(spi, n) != Some(n) && n > 0 {
                self.ike.note_outbound(now, IpAddr::V4(*nbma));
            }
        }
        let mut arrived = Vec::new();
        for sa in self.master.inbound.shard(i) {
            seen += 1;
            let spi = sa.spi();
            let n = sa.stats().snapshot().packets;
            if self.sa_packets.insert(spi.0, n) != Some(n)
                && n > 0
                && let Some(peer) = self.master.spi_peer.get(&spi)
            {
                self.ike.note_inbound(now, IpAddr::V4(*peer));
                if self.pending_switches.waits_for(*peer, spi.0) {
                    arrived.push((*peer, spi.0));
                }
            }
        }
        // The peer sends on the new SA of a rekey we answered: it has installed it.
        for (peer, spi_in) in arrived {
            self.pending_switches.cancel(peer);
            self.switch_outbound(peer, spi_in, "traffic arrived on it");
        }
        seen
    }

    /// Replaces worn-out Child SAs, refreshes used shortcuts, and feeds NHRP the routing
    /// table.
    pub(crate) fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING;
        self.log_limit_summaries(now);
        let volume = self
            .config
            .ipsec
            .lifetime_kilobytes
            .map(|k| k.saturating_mul(1024));
        let mut worn_out = Vec::new();
        for (nbma, path) in self.master.paths.iter() {
            let spi = path.out_sa.spi().0;
            let s = path.out_sa.stats().snapshot();
            // RFC 4303 §3.3.3: without ESN the sequence number must not cycle, so the SA is
            // replaced before it runs out (the soft limit leaves 1/64 of the space); and the
            // configured volume lifetime.
            // Asked already: again after REKEY_RETRY if that rekey did not happen (refused,
            // collided), so a worn-out SA is not left to run out.
            let asked_recently = self
                .rekeys_asked
                .get(&spi)
                .is_some_and(|(_, at)| now < *at + REKEY_RETRY);
            if (path.out_sa.rekey_soon() || volume.is_some_and(|v| s.bytes >= v)) && !asked_recently
            {
                worn_out.push((*nbma, spi));
            }
        }
        for (nbma, spi_out) in worn_out {
            let spi_in = self.children.get(&nbma).and_then(|list| {
                list.iter()
                    .find(|c| c.path.out_sa.spi().0 == spi_out)
                    .map(|c| c.spi_in)
            });
            if let Some(spi_in) = spi_in {
                tracing::info!(peer = %nbma, spi_out = format_args!("{spi_out:#010x}"), "child SA worn out (volume or sequence limit): rekeying");
                self.rekeys_asked.insert(spi_out, (nbma, now));
                if let Err(e) = self.ike.rekey_child(now, spi_in) {
                    tracing::warn!(peer = %nbma, "cannot rekey a worn-out child SA: {e}");
                }
            }
        }
        // Forget the requests whose SA is no longer the peer's current one.
        let paths = &self.master.paths;
        self.rekeys_asked
            .retain(|spi, (nbma, _)| paths.get(nbma).is_some_and(|p| p.out_sa.spi().0 == *spi));
        let used: HashSet<Ipv4Addr> = self
            .shortcuts
            .iter()
            .map(|s| s.2)
            .filter(|nh| self.master.mappings.get(nh).is_some_and(|m| m.take_used()))
            .collect();
        let refresh: Vec<Ipv4Addr> = self
            .shortcuts
            .iter()
            .filter(|s| used.contains(&s.2))
            .map(|s| s.0)
            .collect();
        for prefix in refresh {
            self.nhrp.shortcut_used(now, IpAddr::V4(prefix));
        }
        self.feed_nhrp_routes();
        self.close_reserve_sas(now);
    }

    /// NHRP answers resolutions from the routing table: routes into the tunnel name the next
    /// hop that owns a destination (hub); the router's other prefixes are its own (spoke).
    pub(crate) fn feed_nhrp_routes(&mut self) {
        let mut v: Vec<dmvpn_nhrp::Route> = self
            .routes
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

    /// Queues `buf` (GRE payload `protocol`) for `nbma`, to be sealed when it is sent
    /// ([`crate::transmit`]), or queues the packet until an SA to `nbma` exists (starting IKE
    /// toward it).
    pub(crate) fn send_tunnel(
        &mut self,
        now: Instant,
        nbma: Ipv4Addr,
        protocol: EtherType,
        buf: PacketBuf,
    ) {
        if self.master.paths.contains_key(&nbma) {
            self.queue_tunnel(now, nbma, protocol, buf);
            return;
        }
        if self.sa_queue.push(nbma, protocol, buf).is_err() {
            // A queue that fills while the peer is held down after a failed setup
            // overflows because of that failure: say so, rather than that it was short.
            let reason = if self.peers.held_down(now, nbma) {
                DropReason::IkeFailed
            } else {
                DropReason::SaQueueFull
            };
            self.master.counters.count_drop(reason);
        }
        self.ensure_sa(now, nbma);
    }

    /// Starts IKE toward `nbma` unless an SA exists or is being negotiated (by either side:
    /// when both spokes answer each other's resolution, both would otherwise initiate).
    pub(crate) fn ensure_sa(&mut self, now: Instant, nbma: Ipv4Addr) {
        self.ensure_sa_inner(now, nbma, true);
    }

    fn ensure_sa_inner(&mut self, now: Instant, nbma: Ipv4Addr, allow_defer: bool) {
        if self.master.paths.contains_key(&nbma) {
            self.nhrp.sa_up(now, IpAddr::V4(nbma));
            return;
        }
        if self.peers.connecting_recently(now, nbma) {
            return;
        }
        if self.peers.held_down(now, nbma) {
            // One retry discipline for every asker: what is asked for during the hold-down is
            // tried once when it ends, if still wanted then.
            self.peers.retry_later(nbma);
            return;
        }
        // An IKE SA being negotiated (by either side) or deleted will settle the path; one
        // that is up without a Child SA (it expired or was deleted) never will, and is replaced.
        let childless = match self.existing_ike_sa(nbma) {
            Existing::None => None,
            Existing::Childless(stale) => Some(stale),
            Existing::Settling => return,
        };
        if allow_defer && self.peer_is_nated(now, nbma) {
            // Once per peer: the deadline calls back without deferral.
            self.peers.defer(now, nbma);
            return;
        }
        let (local, remote) = self.initiation_addresses(now, nbma);
        let started = match childless {
            Some(stale) => self.ike.initiate_replacing(now, local, remote, stale),
            None => self.ike.initiate(now, local, remote),
        };
        match started {
            Ok(id) => {
                tracing::info!(peer = %nbma, ike_sa = %id, to = %remote, replaces = %childless.map_or_else(|| "none".to_owned(), |s| s.to_string()), "initiating IKE");
                match childless {
                    Some(stale) => self.peers.initiated_replacing(now, nbma, id, stale),
                    None => self.peers.initiated(now, nbma, id),
                }
            }
            Err(e) => {
                if self.log_allowed(now, IpAddr::V4(nbma), LogKind::IkeInitiateFailed) {
                    tracing::error!(peer = %nbma, "cannot initiate IKE: {e}");
                }
            }
        }
    }

    /// Whether NHRP learned `nbma` as the post-NAT address of a peer behind NAT.
    fn peer_is_nated(&self, now: Instant, nbma: Ipv4Addr) -> bool {
        self.nhrp.is_nated_peer(IpAddr::V4(nbma), now)
    }

    /// Drains the engines' outputs after every input or timeout, until nothing moves.
    pub(crate) fn drive(&mut self, now: Instant) {
        // What came in may have brought an SA with an NHS in reserve up or down.
        self.plan_nhs_clusters(now);
        loop {
            let mut moved = false;
            // Events first: a responder's Child SA must be installed (and published, see
            // `poll_tables`) before its IKE_AUTH response leaves, or the initiator's first
            // ESP packet (its NHRP registration, sent the moment the response arrives) would
            // meet no inbound SA here.
            while let Some(ev) = self.ike.poll_event() {
                moved = true;
                self.handle_ike_event(now, ev);
            }
            while let Some(t) = self.ike.poll_transmit() {
                moved = true;
                let SocketAddr::V4(to) = t.remote else {
                    continue;
                };
                let natt = t.needs_non_esp_marker(NATT_PORT);
                self.queue_transmit(Transmit::Ike {
                    to,
                    natt,
                    bytes: t.bytes,
                });
            }
            for peer in std::mem::take(&mut self.sa_queue_release) {
                for (protocol, buf) in self.sa_queue.take(peer) {
                    moved = true;
                    self.send_tunnel(now, peer, protocol, buf);
                }
            }
            let mut nhrp_moved = false;
            while let Some(ev) = self.nhrp.poll_event() {
                nhrp_moved = true;
                self.handle_nhrp_event(now, ev);
            }
            moved |= nhrp_moved;
            // Every turn: NHRP records what changed (expiries too, which raise no event), and
            // an unchanged engine costs nothing here.
            self.sync_nhrp_tables(now);
            while let Some(t) = self.nhrp.poll_transmit() {
                moved = true;
                let Some(nbma) = v4(t.dst_nbma) else { continue };
                match PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &t.bytes) {
                    Ok(buf) => self.send_tunnel(now, nbma, EtherType::NHRP, buf),
                    Err(e) => tracing::warn!("NHRP packet too large: {e}"),
                }
            }
            // A tunnel packet queued earlier whose SA went away since (deleted in this
            // drive) waits for the next one, as a packet that never had one.
            moved |= self.requeue_orphans(now);
            if !moved {
                break;
            }
        }
    }
}
