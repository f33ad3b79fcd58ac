//! What the node does with IKE's events: Child SAs become dataplane paths and inbound SAs,
//! dead or deleted peers lose their SAs and NHRP state, failed setups are held down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmvpn_crypto::PrfAlg;
use dmvpn_dataplane::{DropReason, PeerPath};
use dmvpn_esp::{InboundSa, OutboundSa, Spi};
use dmvpn_ike::{ChildSaInstalled, DownReason, Event as IkeEvent};

use crate::drive::v4;
use crate::log_limit::LogKind;
use crate::peers::{FIRST_HOLD_DOWN, SetupFailure};
use crate::recovery::RestartHint;
use crate::shortcuts::Shortcut;
use crate::{Event, InstalledChild, KeyExport, NATT_PORT, Node, RouteUpdate, SHORTCUT_METRIC};

impl Node {
    pub(crate) fn handle_ike_event(&mut self, now: Instant, ev: IkeEvent) {
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
                let (prf, (group, dh)) = self.ike.suite_of(sa).map_or(("?", (0, "?")), |s| {
                    (
                        match s.prf {
                            PrfAlg::HmacSha256 => "PRF-HMAC-SHA2-256",
                            PrfAlg::HmacSha384 => "PRF-HMAC-SHA2-384",
                            PrfAlg::HmacSha512 => "PRF-HMAC-SHA2-512",
                        },
                        (s.dh.ike_group(), s.dh.name()),
                    )
                });
                tracing::info!(
                    peer = %remote,
                    ike_sa = %sa,
                    id = %remote_id,
                    initiator,
                    nat_local,
                    nat_remote,
                    encryption = "AES-GCM-256",
                    prf,
                    dh_group = group,
                    dh,
                    "IKE SA up"
                );
                if nat_local && let SocketAddr::V4(r) = remote {
                    self.keepalives.add(r, now);
                }
                if let Some(peer) = v4(remote.ip()) {
                    self.changes.up(peer, now);
                }
                self.export_ike_keys(sa);
            }
            IkeEvent::IkeSaRekeyed { old, new } => {
                let remote = self.ike.remote_of(new);
                tracing::info!(peer = %remote.map_or_else(|| "?".to_owned(), |r| r.to_string()), old = %old, new = %new, "IKE SA rekeyed");
                if let Some(peer) = remote.and_then(|r| v4(r.ip())) {
                    self.events.push_back(Event::IkeSaRekeyed { peer });
                }
                self.export_ike_keys(new);
            }
            IkeEvent::IkeSaDown { sa, remote, reason } => {
                tracing::info!(peer = %remote, ike_sa = %sa, reason = %reason, "IKE SA down");
                // Its Child SAs were reported deleted one by one just before. The peer is gone
                // for NHRP only if no other IKE SA with it is still up.
                let other_up = self
                    .ike
                    .sas_with(remote.ip())
                    .any(|(id, st)| id != sa && st == dmvpn_ike::IkeSaState::Established);
                if !matches!(reason, DownReason::Rekeyed | DownReason::Replaced)
                    && !other_up
                    && let Some(peer) = v4(remote.ip())
                {
                    self.remove_peer_sas(peer);
                    self.changes.down(peer, now);
                    if reason == DownReason::DeletedByPeer {
                        // A peer that said goodbye is not called back at once: an NHRP answer
                        // to its last packets (a purge reply) must not start a new IKE SA.
                        self.hold_down(now, peer, FIRST_HOLD_DOWN);
                    }
                    self.nhrp.peer_dead(now, IpAddr::V4(peer));
                }
            }
            IkeEvent::ChildSaInstalled(c) => self.install_child(now, c),
            IkeEvent::ChildSaDeleted {
                spi_in,
                spi_out,
                remote,
                ..
            } => self.child_deleted(now, spi_in, spi_out, remote),
            IkeEvent::PeerMoved { from, remote, .. } => self.peer_moved(from, remote),
            IkeEvent::PeerDead { sa, remote } => {
                // Another IKE SA with the same address that is up (a NATed peer that came back
                // through a new mapping, whose INITIAL_CONTACT did not clear the old SA): the
                // peer is alive; only the dead SA's children went (reported one by one).
                let other_up = self
                    .ike
                    .sas_with(remote.ip())
                    .any(|(id, st)| id != sa && st == dmvpn_ike::IkeSaState::Established);
                let dead = v4(remote.ip());
                if let Some(peer) = dead {
                    self.events.push_back(Event::DpdDead {
                        peer,
                        stale: other_up,
                    });
                }
                if other_up {
                    tracing::info!(peer = %remote, ike_sa = %sa, "stale IKE SA dead (DPD); the peer's newer SA stays");
                    return;
                }
                tracing::warn!(peer = %remote, ike_sa = %sa, "peer dead (DPD): clearing its SAs and NHRP state");
                // A replacement started when the check went unanswered is still retransmitting
                // on its backed-off schedule: the setup the verdict leads to starts afresh
                // instead of waiting for it. (The peer's own setup toward us is kept.)
                let ours: Vec<_> = self
                    .ike
                    .sas_with(remote.ip())
                    .filter(|(id, st)| {
                        *id != sa
                            && matches!(
                                st,
                                dmvpn_ike::IkeSaState::ExpectSaInitResponse
                                    | dmvpn_ike::IkeSaState::ExpectAuthResponse
                            )
                    })
                    .map(|(id, _)| id)
                    .collect();
                for id in ours {
                    let _ = self.ike.delete_sa(now, id);
                }
                if let Some(peer) = v4(remote.ip()) {
                    self.peers.forget_attempt(peer);
                    self.remove_peer_sas(peer);
                    self.changes.down(peer, now);
                    self.drop_pending(peer);
                    self.hold_down(now, peer, FIRST_HOLD_DOWN);
                    self.nhrp.peer_dead(now, IpAddr::V4(peer));
                }
            }
            IkeEvent::AuthFailed { remote, reason } => {
                if self.log_allowed(now, remote.ip(), LogKind::IkeAuthFailed) {
                    tracing::error!(peer = %remote, "IKE authentication failed: {reason} (check the pre-shared key)");
                }
                if let Some(peer) = v4(remote.ip()) {
                    self.setup_failed(now, peer, SetupFailure::Authentication);
                }
            }
            IkeEvent::EstablishFailed { remote, reason } => {
                tracing::warn!(peer = %remote, reason = %reason, "IKE SA could not be established: refused");
                if let Some(peer) = v4(remote.ip()) {
                    self.setup_failed(now, peer, SetupFailure::Refused);
                }
            }
            IkeEvent::EstablishTimedOut { remote } => {
                tracing::warn!(peer = %remote, "IKE SA could not be established: no answer (timeout)");
                if let Some(peer) = v4(remote.ip()) {
                    self.setup_failed(now, peer, SetupFailure::Timeout);
                }
            }
            IkeEvent::ChildSaFailed { remote, reason, .. } => {
                tracing::warn!(peer = %remote, reason = %reason, "child SA refused");
            }
            IkeEvent::InvalidIkeSpi { sa, remote } => {
                self.restart_suspected(now, sa, remote, RestartHint::InvalidIkeSpi);
            }
            IkeEvent::ProbeUnanswered { sa, remote } => {
                self.restart_suspected(now, sa, remote, RestartHint::ProbeUnanswered);
            }
            IkeEvent::CrossedSetup {
                remote,
                kept,
                dropped,
                we_delete,
            } => {
                tracing::info!(
                    peer = %remote,
                    kept = %kept,
                    dropped = %dropped,
                    deleted_by = if we_delete { "us" } else { "the peer" },
                    "crossed IKE setups: both ends keep one SA"
                );
                if let Some(peer) = v4(remote.ip()) {
                    self.events.push_back(Event::CrossedSetup { peer });
                }
            }
            // Events added to the IKE engine later are logged until the node handles them.
            other => tracing::debug!(?other, "IKE event not handled"),
        }
    }

    fn export_ike_keys(&mut self, sa: dmvpn_ike::IkeSaId) {
        if self.config.key_export.is_some()
            && let Some((spi_i, spi_r, sk_ei, sk_er)) = self.ike.export_sk_e(sa)
        {
            self.events.push_back(Event::Keys(KeyExport::Ike {
                spi_i,
                spi_r,
                sk_ei,
                sk_er,
            }));
        }
    }

    fn install_child(&mut self, now: Instant, c: ChildSaInstalled) {
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
        // A rekey we answered: the initiator installs the new SA only when our response
        // arrives, so our traffic stays on the old one until it shows it has (rekey_switch).
        let defer = c.replaces.is_some() && !c.initiator && self.master.paths.contains_key(&peer);
        if defer {
            self.pending_switches.defer(peer, c.spi_in, now);
        } else {
            self.pending_switches.cancel(peer);
            self.master.paths.insert(peer, path.clone());
            self.paths_changed.push(peer);
        }
        self.children.entry(peer).or_default().push(InstalledChild {
            spi_in: c.spi_in,
            path,
        });
        // A replaced SA's inbound half stays until IKE deletes it: packets the peer sealed
        // before switching may still be in flight.
        self.master.add_inbound(peer, Arc::new(in_sa));
        self.tables_changed = true;
        tracing::info!(
            %peer,
            spi_in = format_args!("{:#010x}", c.spi_in),
            spi_out = format_args!("{:#010x}", c.spi_out),
            udp_encap = c.udp_encap,
            esn = c.esn,
            rekey = c.replaces.is_some(),
            "child SA installed (ESP transport, AES-GCM-256, GRE)"
        );
        self.events.push_back(Event::ChildSaInstalled {
            peer,
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            udp_encap: c.udp_encap,
            rekey: c.replaces.is_some(),
        });
        self.export_esp_keys(&c);
        // Our own initiation, if the peer's SA came up first, is left to finish: the peer may
        // have answered it already, and dropping it here would leave each end with a
        // different SA. Once both are up, IKE keeps one of the twins (crossed.rs); a failure
        // of ours meanwhile is ignored (`setup_failed`: an SA is up).
        // Our replacement of a stale IKE SA (after an INVALID_IKE_SPI hint, or of one without
        // a Child SA) is up, or the peer's new SA beat it: either way the peer lost what the
        // stale SA carried.
        let our_replacement = self
            .peers
            .sa_up(peer)
            .is_some_and(|mine| mine.replaces.is_some());
        if our_replacement {
            self.replaced(now, peer);
        }
        for s in self.shortcuts.take_pending(peer) {
            self.install_shortcut_route(now, s);
        }
        // Released by `drive` after IKE's datagrams: as a responder, our IKE_AUTH response
        // is among them, and the initiator installs its inbound SA only when that arrives
        // (RFC 7296 §1.2), so ESP sent ahead of it would meet an unknown SPI.
        self.sa_queue_release.push(peer);
        self.nhrp.sa_up(now, IpAddr::V4(peer));
        // A new IKE SA the peer started (we answered; not a rekey): an NHS that does so
        // thinks it lost ours (a probe went unanswered, a hint, traffic for us without an SA),
        // and it may have given up on that setup before our IKE_AUTH response reached it (its
        // DPD verdict on the old SA), leaving us on an SA it never had. Our registration with
        // it is refreshed now, on the new SA: where the NHS lacks the SA, its unknown-SPI and
        // probe answers bring us back (recovery.rs), where an idle spoke would otherwise wait
        // for its next refresh. Nothing is declared lost meanwhile (no NhsDown, no failover).
        if !c.initiator && c.replaces.is_none() && !our_replacement && self.is_nhs(peer) {
            tracing::info!(nhs = %peer, "the NHS set up a new IKE SA: refreshing our registration");
            self.nhrp.refresh_registration(now, IpAddr::V4(peer));
        }
    }

    fn export_esp_keys(&mut self, c: &ChildSaInstalled) {
        if self.config.key_export.is_none() {
            return;
        }
        // Under NAT-T the outer addresses are not the ones Wireshark sees on both sides of
        // the NAT: leave them as wildcards.
        let nat = c.udp_encap;
        let (local, remote) = (c.local.ip(), c.remote.ip());
        for (src, dst, spi, key) in [
            (remote, local, c.spi_in, &c.key_in),
            (local, remote, c.spi_out, &c.key_out),
        ] {
            self.events.push_back(Event::Keys(KeyExport::Esp {
                src: (!nat).then_some(src),
                dst: (!nat).then_some(dst),
                spi,
                key: key.clone(),
            }));
        }
    }

    fn child_deleted(&mut self, now: Instant, spi_in: u32, spi_out: u32, remote: SocketAddr) {
        let mut linger = false;
        if let Some(peer) = v4(remote.ip())
            && let Some(list) = self.children.get_mut(&peer)
        {
            list.retain(|c| c.spi_in != spi_in);
            // A replaced SA (another one remains): the peer's last packets on it may still
            // be queued behind the DELETE (rekey_switch).
            if !list.is_empty() {
                linger = true;
                self.retired.retire(peer, spi_in, now);
            }
            // The peer deleted the SA a rekey replaced, so it has the new one: a switch that
            // waited for that happens here.
            let waited = self.pending_switches.cancel(peer);
            // Fall back to the newest remaining Child SA, if any.
            match list.last() {
                Some(c) => {
                    self.master.paths.insert(peer, c.path.clone());
                    if waited.is_some_and(|w| w != spi_in) {
                        tracing::info!(
                            %peer,
                            spi_in = format_args!("{:#010x}", c.spi_in),
                            spi_out = format_args!("{:#010x}", c.path.out_sa.spi().0),
                            why = "the peer deleted the SA it replaced",
                            "sending on the rekeyed Child SA"
                        );
                    }
                }
                None => {
                    self.children.remove(&peer);
                    if let Some(p) = self.master.paths.remove(&peer)
                        && p.udp_encap
                    {
                        self.peers.remember_natt_port(peer, p.port);
                    }
                    self.paths_changed.push(peer);
                }
            }
            self.events
                .push_back(Event::ChildSaDeleted { peer, spi_in });
        }
        if !linger {
            self.master.remove_inbound(Spi(spi_in));
        }
        self.sa_packets.remove(&spi_in);
        self.sa_packets.remove(&spi_out);
        self.tables_changed = true;
        tracing::info!(
            peer = %remote,
            spi_in = format_args!("{spi_in:#010x}"),
            spi_out = format_args!("{spi_out:#010x}"),
            inbound_linger_ms = if linger { crate::rekey_switch::RETIRED_LINGER.as_millis() } else { 0 },
            "child SA deleted"
        );
    }

    /// The peer's NAT mapping changed (IKE saw it on an authenticated message, or followed
    /// authenticated ESP from a new port): its ESP-in-UDP goes to the new port. Peers are
    /// known by address, so a move to another address is only logged: its SAs die by DPD
    /// and it comes back through a new IKE SA.
    fn peer_moved(&mut self, from: SocketAddr, remote: SocketAddr) {
        let (Some(peer), Some(old)) = (v4(remote.ip()), v4(from.ip())) else {
            return;
        };
        if peer != old {
            tracing::warn!(%from, to = %remote, "peer moved to another address: not followed");
            return;
        }
        let port = remote.port();
        if let Some(list) = self.children.get_mut(&peer) {
            for c in list.iter_mut().filter(|c| c.path.udp_encap) {
                c.path.port = port;
            }
        }
        if let Some(p) = self.master.paths.get(&peer)
            && p.udp_encap
            && p.port != port
        {
            let mut p = p.clone();
            p.port = port;
            self.master.paths.insert(peer, p);
            self.tables_changed = true;
        }
        tracing::info!(%peer, from = %from, to = %remote, "NAT mapping of peer changed: ESP follows");
    }

    /// A replaced SA's linger ended: its inbound half goes, unless IKE has given its SPI to
    /// a new Child SA meanwhile (SPIs are random; a reuse within seconds is unlikely, not
    /// impossible): of another peer (`spi_peer` names it) or of this one (its children).
    pub(crate) fn retired_gone(&mut self, peer: Ipv4Addr, spi_in: u32) {
        let reused = self
            .children
            .get(&peer)
            .is_some_and(|l| l.iter().any(|c| c.spi_in == spi_in));
        if !reused && self.master.spi_peer.get(&Spi(spi_in)) == Some(&peer) {
            self.master.remove_inbound(Spi(spi_in));
            // Traffic sampling saw it while it lingered.
            self.sa_packets.remove(&spi_in);
            self.tables_changed = true;
        }
    }

    /// Our traffic to `peer` moves to the Child SA with inbound `spi_in` (a rekey we answered;
    /// see rekey_switch for `why`).
    pub(crate) fn switch_outbound(&mut self, peer: Ipv4Addr, spi_in: u32, why: &'static str) {
        let Some(c) = self
            .children
            .get(&peer)
            .and_then(|l| l.iter().find(|c| c.spi_in == spi_in))
        else {
            return;
        };
        self.master.paths.insert(peer, c.path.clone());
        self.tables_changed = true;
        tracing::info!(
            %peer,
            spi_in = format_args!("{spi_in:#010x}"),
            spi_out = format_args!("{:#010x}", c.path.out_sa.spi().0),
            why,
            "sending on the rekeyed Child SA"
        );
    }

    /// Forgets every SA to `peer` (DPD death, IKE SA gone, operator's clear).
    pub(crate) fn remove_peer_sas(&mut self, peer: Ipv4Addr) {
        if let Some(p) = self.master.paths.remove(&peer)
            && p.udp_encap
        {
            self.peers.remember_natt_port(peer, p.port);
        }
        self.paths_changed.push(peer);
        // Every inbound SA of the peer is one of its installed children (install_child adds
        // both, child_deleted removes both), so there is no need to scan all SPIs.
        for c in self.children.remove(&peer).unwrap_or_default() {
            self.master.remove_inbound(Spi(c.spi_in));
        }
        self.pending_switches.cancel(peer);
        for spi in self.retired.take_peer(peer) {
            self.master.remove_inbound(Spi(spi));
        }
        self.keepalives.remove(SocketAddrV4::new(peer, NATT_PORT));
        self.peers.forget_attempt(peer);
        self.tables_changed = true;
        self.events.push_back(Event::PeerDown { peer });
    }

    /// IKE toward `peer` failed: hold further attempts down (doubling up to a minute), drop
    /// what waited for it, and tell NHRP the peer is unreachable so its shortcuts go and
    /// traffic keeps using the path via the hub (the next Traffic Indication resolves again).
    /// An NHS is held down like any peer (data toward it would otherwise start an exchange
    /// per packet), and initiated again when the hold-down ends: its registration is always
    /// wanted.
    fn setup_failed(&mut self, now: Instant, peer: Ipv4Addr, why: SetupFailure) {
        if self.master.paths.contains_key(&peer) {
            // A redundant initiation (crossed with the peer's, whose SA carries the
            // traffic) failed: nothing is lost, so no hold-down and no NHRP verdict.
            tracing::debug!(%peer, reason = why.as_str(), "redundant IKE initiation failed; an SA with the peer is up");
            return;
        }
        let waiting: Vec<Shortcut> = self.shortcuts.take_pending(peer);
        for s in waiting {
            self.shortcut_timer.forget(s);
        }
        self.drop_pending(peer);
        let wait = self.peers.failed(now, peer, why);
        tracing::info!(%peer, reason = why.as_str(), next_attempt_secs = wait.as_secs(), "IKE toward this peer held down");
        self.events.push_back(Event::SetupFailed {
            peer,
            hold_down: Some(wait),
        });
        if self.is_nhs(peer) {
            self.peers.retry_later(peer);
        } else if !self.master.paths.contains_key(&peer) {
            self.nhrp.peer_dead(now, IpAddr::V4(peer));
        }
    }

    /// Whether an initiation toward `peer` is still wanted when its hold-down ends: an NHS
    /// always (until registered), another peer while a shortcut, data packets or NHRP packets
    /// (the answer to its resolution request, on the answering spoke) wait for it. NHRP asks
    /// for the SA only when its first packet for the peer is queued, and answers to the
    /// requester's retransmissions join that queue: forgetting them here left the answering
    /// spoke without an SA for as long as the requester kept asking.
    pub(crate) fn still_wanted(&self, peer: Ipv4Addr) -> bool {
        !self.master.paths.contains_key(&peer)
            && (self.nhs_wanted(peer)
                || self.shortcuts.waits_for(peer)
                || self.sa_queue.has(peer)
                || self.nhrp.holds_for_sa(IpAddr::V4(peer)))
    }

    /// No initiation toward `peer` for `wait` (it may still initiate toward us). NHSs NHRP
    /// registers with are exempt: its registration schedule paces those retries itself (one
    /// its cluster keeps in reserve is probed under the back-off like any peer).
    pub(crate) fn hold_down(&mut self, now: Instant, peer: Ipv4Addr, wait: Duration) {
        if !(self.is_nhs(peer) && self.nhrp.nhs_active(IpAddr::V4(peer))) {
            self.peers.hold_down(now, peer, wait);
        }
    }

    /// Drops the packets waiting for `nbma`: its setup failed or the peer died (counted as
    /// such, not as a full queue).
    pub(crate) fn drop_pending(&mut self, nbma: Ipv4Addr) {
        for _ in self.sa_queue.take(nbma) {
            self.master.counters.count_drop(DropReason::IkeFailed);
        }
    }

    /// A shortcut's kernel route (the next hop's own /32 inside the tunnel subnet needs none:
    /// the subnet's route, connected or dmvpnd's for a /32 address, carries it).
    pub(crate) fn install_shortcut_route(&mut self, now: Instant, (p, len, nh): Shortcut) {
        tracing::info!(prefix = %format_args!("{p}/{len}"), via = %nh, "NHRP shortcut installed");
        let connected = len == 32 && p == nh && self.config.tunnel.network.contains(p);
        if !connected {
            self.route_updates.push_back(RouteUpdate::Install {
                prefix: p,
                prefix_len: len,
                via: Some(nh),
                metric: SHORTCUT_METRIC,
            });
        }
        self.events.push_back(Event::ShortcutInstalled {
            prefix: p,
            prefix_len: len,
            via: nh,
        });
        if let Some(a) = self.shortcut_timer.installed((p, len, nh)) {
            self.events.push_back(Event::ShortcutTimed {
                prefix: p,
                prefix_len: len,
                via: nh,
                requested: a.requested,
                replied: a.replied,
                sa_up: now,
            });
        }
    }
}
