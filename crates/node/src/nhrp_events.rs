//! What the node does with NHRP's events, and the NHRP mappings the dataplane reads.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use dmvpn_dataplane::Mapping;
use dmvpn_nhrp::{EntryKind, Event as NhrpEvent};

use crate::drive::v4;
use crate::log_limit::LogKind;
use crate::{Event, Node, RouteUpdate, SHORTCUT_METRIC};

/// A log value for an address that may be unknown.
fn opt(a: Option<IpAddr>) -> String {
    a.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

impl Node {
    pub(crate) fn handle_nhrp_event(&mut self, now: Instant, ev: NhrpEvent) {
        self.explain_log.observe(now, &ev);
        match ev {
            NhrpEvent::NeedSa { nbma } => {
                if let Some(n) = v4(nbma) {
                    self.ensure_sa(now, n);
                }
            }
            NhrpEvent::HolderChallenged {
                protocol_addr,
                holder,
                claimant,
            } => {
                // A verdict of death comes as IKE's PeerDead, which frees the address.
                if self.ike.challenge(now, holder) {
                    tracing::info!(
                        address = %protocol_addr,
                        %holder,
                        %claimant,
                        "registration refused: the address is held from another NBMA address; checking that its holder is alive"
                    );
                }
            }
            NhrpEvent::ResetSa { nbma } => {
                tracing::warn!(nhs = %nbma, "NHS unanswered: restarting IKE");
                self.events.push_back(Event::RegistrationTimedOut { nbma });
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
                let s = (p, prefix_len, nh);
                let wait_for = v4(nbma).filter(|n| !self.master.paths.contains_key(n));
                // A refresh re-teaches a live shortcut: only new ones are timed.
                if !self.shortcuts.contains(&s) {
                    self.shortcut_timer.learned(s);
                }
                self.shortcuts.learned(s, wait_for);
                match wait_for {
                    Some(n) => {
                        tracing::info!(prefix = %format_args!("{p}/{prefix_len}"), via = %nh, %nbma, "NHRP shortcut learned: waiting for an SA to install it");
                        self.ensure_sa(now, n);
                    }
                    None => self.install_shortcut_route(now, s),
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
                self.shortcut_timer.forget((p, prefix_len, nh));
                if self.shortcuts.withdrawn((p, prefix_len, nh)) {
                    self.route_updates.push_back(RouteUpdate::Withdraw {
                        prefix: p,
                        prefix_len,
                        via: Some(nh),
                        metric: SHORTCUT_METRIC,
                    });
                    self.events.push_back(Event::ShortcutWithdrawn {
                        prefix: p,
                        prefix_len,
                        via: nh,
                    });
                }
            }
            NhrpEvent::NhsUp {
                protocol_addr,
                nbma,
            } => {
                tracing::info!(nhs = %opt(protocol_addr), %nbma, "NHRP registered with NHS");
                if let Some(n) = v4(nbma) {
                    self.nhs_state(now, Some((n, true)));
                }
                self.events.push_back(Event::NhsUp { nbma });
            }
            NhrpEvent::NhsDown {
                protocol_addr,
                nbma,
            } => {
                tracing::warn!(nhs = %opt(protocol_addr), %nbma, "NHRP registration with NHS lost");
                if let Some(n) = v4(nbma) {
                    self.nhs_state(now, Some((n, false)));
                }
                self.events.push_back(Event::NhsDown { nbma });
            }
            NhrpEvent::RegistrationRefused { nbma, code } => {
                tracing::error!(%nbma, code = %code, "NHS refused our NHRP registration");
            }
            NhrpEvent::PeerRegistered {
                protocol_addr,
                nbma,
            } => {
                tracing::info!(peer = %protocol_addr, %nbma, "NHRP registration accepted");
                self.events.push_back(Event::PeerRegistered {
                    protocol_addr,
                    nbma,
                });
            }
            NhrpEvent::PeerUnregistered {
                protocol_addr,
                nbma,
            } => {
                tracing::info!(peer = %protocol_addr, %nbma, "NHRP registration removed");
                self.events.push_back(Event::PeerUnregistered {
                    protocol_addr,
                    nbma,
                });
            }
            NhrpEvent::PublicNbmaLearned { nbma } => {
                tracing::info!(%nbma, "public NBMA address learned from the NHS (behind NAT)");
            }
            NhrpEvent::ResolutionFailed { target, code } => {
                tracing::debug!(%target, code = %code.map_or("timeout".to_owned(), |c| c.to_string()), "NHRP resolution failed");
            }
            NhrpEvent::RequestAnswered {
                kind,
                target,
                rtt,
                accepted,
            } => {
                if kind == dmvpn_nhrp::RequestKind::Resolution
                    && accepted
                    && let (Some(t), Some(requested)) = (v4(target), now.checked_sub(rtt))
                {
                    self.shortcut_timer.answered(t, requested, now);
                }
                self.events.push_back(Event::NhrpAnswered {
                    kind,
                    target,
                    rtt,
                    accepted,
                });
            }
            NhrpEvent::ErrorIndication { from_nbma, code } => {
                // Any member can send these at packet rate: rate-limited per sender.
                if self.log_allowed(now, from_nbma, LogKind::NhrpErrorIndication) {
                    tracing::warn!(from = %from_nbma, code = %code, "NHRP error indication received");
                }
            }
            // Recorded for `dmvpnctl explain` above; nothing else to do.
            NhrpEvent::ResolutionRequested { target, nhs_nbma } => {
                tracing::debug!(%target, nhs = %nhs_nbma, "NHRP resolution requested");
            }
        }
    }

    /// Brings the NHRP-derived parts of the tables (mappings, multicast list) up to date with
    /// what changed since the last call: the next hops NHRP reports changed, those whose
    /// peer's path (SA) came or went, and the multicast joins and leaves. O(changes), not
    /// O(cache): a hub with 10,000 registrations pays per registration what it pays with ten.
    /// `Mapping`s that did not change are kept, with their "used" marks.
    pub(crate) fn sync_nhrp_tables(&mut self, now: Instant) {
        let mut dirty = self.nhrp.take_mapping_changes();
        for nbma in std::mem::take(&mut self.paths_changed) {
            dirty.extend(self.nhrp.next_hops_at(IpAddr::V4(nbma)));
        }
        for nh in dirty {
            if let Some(nh) = v4(nh) {
                self.sync_mapping(now, nh);
            }
        }
        for (nbma, joined) in self.nhrp.take_multicast_changes() {
            let Some(nbma) = v4(nbma) else { continue };
            let changed = if joined {
                self.master.multicast.insert(nbma)
            } else {
                self.master.multicast.remove(&nbma)
            };
            self.tables_changed |= changed;
        }
    }

    /// The mapping of tunnel next hop `nh`, from its live NHRP entry. On a spoke only peers
    /// with an SA get one: without it the packet would wait for IKE (or, toward a peer that
    /// refuses it, be lost) where the path via the NHS works. On a hub a spoke's live
    /// registration keeps its mapping without an SA: there is no other path to the spoke, so
    /// its traffic waits in the SA queue while the hub initiates IKE back to the registered
    /// (post-NAT) address (issue 14, hub-initiated recovery). An NHS's mapping comes from the
    /// configuration and is never replaced by a learned entry: one hostile spoke must not be
    /// able to take over the path to the hub (and everything routed via it).
    fn sync_mapping(&mut self, now: Instant, nh: Ipv4Addr) {
        if self.config.nhrp.nhs.iter().any(|n| n.address == nh) {
            return;
        }
        let want = self
            .nhrp
            .mapping(IpAddr::V4(nh), now)
            .filter(|m| m.kind != EntryKind::Local)
            .filter(|m| {
                let registered = self.is_hub() && m.kind == EntryKind::Dynamic;
                registered || v4(m.nbma).is_some_and(|n| self.master.paths.contains_key(&n))
            })
            .and_then(|m| v4(m.nbma));
        match (want, self.master.mappings.get(&nh)) {
            (Some(n), Some(m)) if m.nbma == n => {}
            (Some(n), _) => {
                self.master.mappings.insert(nh, Mapping::new(n));
                self.tables_changed = true;
            }
            (None, Some(_)) => {
                self.master.mappings.remove(&nh);
                self.tables_changed = true;
            }
            (None, None) => {}
        }
    }
}
