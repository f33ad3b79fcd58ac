//! Operator commands (`dmvpnctl clear …`, `reload`) and the orderly shutdown.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmvpn_config::{Config, Role};

use crate::config::{ike_config, nhrp_config, restart_only_changes};
use crate::drive::v4;
use crate::{Node, NodeError, RouteUpdate, SHORTCUT_METRIC, STATIC_METRIC};

impl Node {
    /// `clear sa PEER`: deletes the IKE SA with `peer` (and its Child SAs) and forgets the
    /// peer's NHRP state.
    pub fn clear_sa(&mut self, now: Instant, peer: IpAddr) -> Result<(), NodeError> {
        // The operator clears a peer to start over: no back-off from earlier failures, and
        // a peer still wanted (an NHS) is tried again at once if it has no SA to delete.
        let mut backoff_reset = false;
        if let Some(p) = v4(peer)
            && self.peers.reset(p)
            && !self.ike.has_sa_with(peer)
        {
            backoff_reset = true;
            tracing::info!(%peer, "clear sa: back-off reset by the operator");
            if self.still_wanted(p) {
                self.ensure_sa(now, p);
            }
        }
        let result = match (self.ike.delete(now, peer), v4(peer)) {
            (Ok(()), Some(p)) => {
                self.remove_peer_sas(p);
                self.nhrp.peer_dead(now, peer);
                tracing::info!(%peer, "clear sa: IKE SA deleted by the operator");
                Ok(())
            }
            // A held-down peer has no SA to delete; resetting its back-off was the point.
            _ if backoff_reset => Ok(()),
            _ => Err(NodeError::NoIkeSa(peer)),
        };
        self.drive(now);
        result
    }

    /// `clear child-sa PEER`: deletes the Child SAs with `peer` (an INFORMATIONAL DELETE for
    /// each, RFC 7296 §1.4.1) and keeps the IKE SA and the NHRP state, as IOS's `clear crypto
    /// sa peer` does. The peer's path is gone until traffic or NHRP brings a new SA up, from
    /// either end (a hub initiates for a registered spoke it has traffic for). Returns how
    /// many Child SAs were deleted.
    pub fn clear_child_sa(&mut self, now: Instant, peer: IpAddr) -> Result<usize, NodeError> {
        let Some((p, n)) = v4(peer)
            .and_then(|p| Some((p, self.children.get(&p)?.len())))
            .filter(|&(_, n)| n > 0)
        else {
            return Err(NodeError::NoChildSa(peer));
        };
        // Starting over: earlier failures with the peer do not hold the new SA back.
        self.peers.reset(p);
        self.delete_child_sas(now, p);
        tracing::info!(%peer, child_sas = n, "clear child-sa: Child SAs deleted by the operator; the IKE SA stays");
        Ok(n)
    }

    /// `clear nhrp`: removes the dynamic NHRP entries; returns how many.
    pub fn clear_nhrp(&mut self, now: Instant) -> usize {
        let n = self.nhrp.clear_dynamic();
        tracing::info!(
            entries = n,
            "clear nhrp: dynamic NHRP entries removed by the operator"
        );
        self.drive(now);
        n
    }

    /// Applies a reloaded configuration: keys, proposals, lifetimes, DPD, NHRP key and timers,
    /// NHS priorities, `nhs-fallback`, NHS clusters and `max-connections`, adjust-mss,
    /// redirect, NAT keepalives and static routes (as route updates). SAs stay up unless the
    /// new keyring no longer has a key for their peer (or their NHS goes to reserve). A change that needs a new
    /// TUN device, role, underlay or NHRP identity is refused and nothing is applied.
    pub fn reload(&mut self, now: Instant, new: Config) -> Result<(), NodeError> {
        let restart = restart_only_changes(&self.config, &new);
        if !restart.is_empty() {
            return Err(NodeError::RestartRequired(restart));
        }
        // Build everything first so a bad value applies nothing.
        let ike = ike_config(&new)?;
        self.nhrp
            .reconfigure(nhrp_config(&new, self.local_nbma))
            .map_err(|e| NodeError::Nhrp(e.to_string()))?;
        for id in self.ike.set_config(ike) {
            tracing::info!(ike_sa = %id, "reload: the new keyring has no key, or another key, for this peer: deleting its SA (a new one authenticates with the new key)");
            let _ = self.ike.delete_sa(now, id);
        }
        self.master.tunnel.adjust_mss = new.tunnel.adjust_mss;
        self.master.tunnel.redirect = matches!(new.nhrp.role, Role::Hub { redirect: true });
        self.tables_changed = true;
        let old = &self.config;
        for r in old.routes.iter().filter(|r| !new.routes.contains(r)) {
            self.route_updates.push_back(RouteUpdate::Withdraw {
                prefix: r.prefix.addr,
                prefix_len: r.prefix.prefix_len,
                via: Some(r.via),
                metric: STATIC_METRIC,
            });
        }
        for r in new.routes.iter().filter(|r| !old.routes.contains(r)) {
            self.route_updates.push_back(RouteUpdate::Install {
                prefix: r.prefix.addr,
                prefix_len: r.prefix.prefix_len,
                via: Some(r.via),
                metric: STATIC_METRIC,
            });
        }
        self.keepalives.set_interval(new.ike.nat_keepalive);
        if new.ignore_purge && !self.config.ignore_purge {
            crate::warn_ignore_purge();
        }
        self.config = Arc::new(new);
        // NHS priorities, the fallback time and the clusters apply live, as `ip nhrp nhs …
        // priority` does on IOS: only the NHS choice is re-made.
        self.reconfigure_nhs(now);
        // The reload may have fixed what failed (a key, a proposal): no peer waits out its
        // back-off, and those still wanted (an unregistered NHS) are tried at once.
        for peer in self.peers.reset_all() {
            if self.still_wanted(peer) {
                tracing::info!(%peer, "reload: retrying IKE now");
                self.ensure_sa(now, peer);
            }
        }
        self.drive(now);
        Ok(())
    }

    /// Begins the orderly shutdown (SIGTERM): purges the NHRP registrations (RFC 2332 §5.2.5)
    /// so that each NHS forgets us at once instead of at expiry. Returns when the IKE SAs are
    /// to go ([`Node::finish_shutdown`]) if not every NHS has answered by then
    /// ([`Node::purges_answered`]): the purge rides ESP and the IKE DELETE rides IKE, so an
    /// NHS may handle the DELETE first and the purge would find nothing; waiting for the
    /// Purge Reply makes the order causal. A hub that ignores purges (FRR's nhrpd) costs the
    /// whole wait, and its registration goes with the DELETE.
    pub fn begin_shutdown(&mut self, now: Instant) -> Instant {
        self.nhrp.shutdown(now);
        self.drive(now);
        now + PURGE_REPLY_WAIT
    }

    /// Whether every NHS purged at [`Node::begin_shutdown`] has answered.
    pub fn purges_answered(&self) -> bool {
        self.nhrp.purges_unanswered() == 0
    }

    /// Ends the orderly shutdown: deletes the IKE SAs, like `clear crypto session`, and
    /// withdraws the shortcuts.
    pub fn finish_shutdown(&mut self, now: Instant) {
        let sas: Vec<_> = self.ike.ike_sas(now).into_iter().map(|s| s.id).collect();
        for id in sas {
            let _ = self.ike.delete_sa(now, id);
        }
        self.drive(now);
        for (p, l, nh) in self.shortcuts.take_all() {
            self.route_updates.push_back(RouteUpdate::Withdraw {
                prefix: p,
                prefix_len: l,
                via: Some(nh),
                metric: SHORTCUT_METRIC,
            });
        }
    }
}

/// How long a stopping node waits for the NHSs' Purge Replies before it deletes its IKE SAs
/// anyway: a few round trips across the Internet; systemd's stop timeout is far longer.
pub const PURGE_REPLY_WAIT: Duration = Duration::from_secs(1);
