//! What the node does with NHRP's events, and the NHRP mappings the dataplane reads.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use dmvpn_dataplane::Mapping;
use dmvpn_nhrp::{EntryKind, Event as NhrpEvent};
use dmvpn_snapmap::SnapMap;

use crate::drive::v4;
use crate::{Event, Node, RouteUpdate, SHORTCUT_METRIC};

impl Node {
    pub(crate) fn handle_nhrp_event(&mut self, now: Instant, ev: NhrpEvent) {
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
                let s = (p, prefix_len, nh);
                let wait_for = v4(nbma).filter(|n| !self.master.paths.contains_key(n));
                self.shortcuts.learned(s, wait_for);
                match wait_for {
                    Some(n) => {
                        tracing::info!(prefix = %format_args!("{p}/{prefix_len}"), via = %nh, %nbma, "NHRP shortcut learned: waiting for an SA to install it");
                        self.ensure_sa(now, n);
                    }
                    None => self.install_shortcut_route(s),
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
                tracing::info!(nhs = ?protocol_addr, %nbma, "NHRP registered with NHS");
                self.events.push_back(Event::NhsUp { nbma });
            }
            NhrpEvent::NhsDown {
                protocol_addr,
                nbma,
            } => {
                tracing::warn!(nhs = ?protocol_addr, %nbma, "NHRP registration with NHS lost");
                self.events.push_back(Event::NhsDown { nbma });
            }
            NhrpEvent::RegistrationRefused { nbma, code } => {
                tracing::error!(%nbma, ?code, "NHS refused our NHRP registration");
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
                tracing::debug!(%target, ?code, "NHRP resolution failed");
            }
            NhrpEvent::ErrorIndication { from_nbma, code } => {
                tracing::warn!(from = %from_nbma, ?code, "NHRP error indication received");
            }
        }
    }

    /// Rebuilds the NHRP-derived parts of the tables (mappings, multicast list); marks them
    /// changed when they differ. `Mapping`s that did not change are kept, with their "used"
    /// marks.
    pub(crate) fn sync_nhrp_tables(&mut self, now: Instant) {
        let mut mappings: HashMap<Ipv4Addr, Arc<Mapping>> = HashMap::new();
        let mut put = |proto: Ipv4Addr, nbma: Ipv4Addr, old: &SnapMap<Ipv4Addr, Arc<Mapping>>| {
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
            // peer that refuses it, be lost) where the path via the NHS works. And a learned
            // entry never replaces an NHS's mapping: one hostile spoke must not be able to
            // take over the path to the hub (and everything routed via it).
            if let (Some(nh), Some(nbma)) = (v4(e.next_hop), v4(e.effective_nbma()))
                && self.master.paths.contains_key(&nbma)
                && !self.config.nhrp.nhs.iter().any(|n| n.address == nh)
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
        // Apply the difference only: the master tables share their shards with the last
        // published snapshot, and an edit copies only the shards it touches.
        let stale: Vec<Ipv4Addr> = self
            .master
            .mappings
            .keys()
            .filter(|k| !mappings.contains_key(*k))
            .copied()
            .collect();
        for k in stale {
            self.master.mappings.remove(&k);
            self.tables_changed = true;
        }
        for (k, v) in mappings {
            if !self
                .master
                .mappings
                .get(&k)
                .is_some_and(|o| Arc::ptr_eq(o, &v))
            {
                self.master.mappings.insert(k, v);
                self.tables_changed = true;
            }
        }
        let left: Vec<Ipv4Addr> = self
            .master
            .multicast
            .iter()
            .filter(|n| !multicast.contains(n))
            .copied()
            .collect();
        for n in left {
            self.master.multicast.remove(&n);
            self.tables_changed = true;
        }
        for n in multicast {
            self.tables_changed |= self.master.multicast.insert(n);
        }
    }
}
