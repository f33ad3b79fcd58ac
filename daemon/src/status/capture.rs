//! What a report is built from, copied out of the node on the control loop.
//!
//! At 10,000 peers the joins of a `show` (peer by NBMA address, the best IKE SA of each, the
//! UpDn bookkeeping, strings for every field) took most of the 40–50 ms a `show dmvpn` held the
//! control loop (issue 12's budget is 50 ms). So the loop only copies the engines' views into a
//! [`Capture`], which owns them and is `Send`; filters, joins and encoding run on tokio's
//! blocking pool from [`Capture::snapshot`], while the loop goes back to IKE, NHRP and DPD.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use dmvpn_api::ShowFilter;
use dmvpn_ike::IkeSaInfo;
use dmvpn_nhrp::{CacheEntry, NhsStatus};
use dmvpn_node::peers::Backoff;

use super::{NodeView, Snapshot};

/// The engines' views of one instant, owned.
#[derive(Debug)]
pub struct Capture {
    now: Instant,
    interface: String,
    view: NodeView,
    cache: Vec<CacheEntry>,
    nhs: Vec<NhsStatus>,
    ike: Vec<IkeSaInfo>,
    backoff: Vec<(IpAddr, Backoff)>,
    changes: HashMap<Ipv4Addr, (bool, Instant)>,
    preferred_nhs: Option<IpAddr>,
}

impl Capture {
    /// Copies what the reports need from `node` at `now`: O(N) copies, no joins or sorting.
    pub fn of(node: &dmvpn_node::Node, now: Instant) -> Self {
        let (ike, nhrp) = (node.ike(), node.nhrp());
        Capture {
            now,
            interface: node.config().tunnel.interface.clone(),
            view: NodeView::of(node),
            cache: nhrp.cache_entries(now),
            nhs: nhrp.nhs_status(now),
            ike: ike.ike_sas_unordered(now),
            backoff: node.backoffs().map(|(p, b)| (IpAddr::V4(p), b)).collect(),
            changes: node.peer_changes().all().clone(),
            preferred_nhs: node.preferred_nhs().map(IpAddr::V4),
        }
    }

    /// The IKE SAs captured (in no particular order until [`Capture::snapshot`]).
    pub fn ike(&self) -> &[IkeSaInfo] {
        &self.ike
    }

    /// The peers held down after failed IKE setups.
    pub fn backoff(&self) -> &[(IpAddr, Backoff)] {
        &self.backoff
    }

    /// Narrows the capture to `filter` (`show … --peer`, `show nhrp PREFIX`): a hub answers
    /// for one peer or prefix without listing the other 10,000.
    pub fn filter(&mut self, filter: ShowFilter) {
        if let Some(p) = filter.peer {
            self.cache
                .retain(|e| e.nbma == p || e.effective_nbma() == p);
            self.nhs.retain(|n| n.nbma_addr == p);
        }
        if let Some(pf) = filter.prefix {
            self.cache
                .retain(|e| pf.contains(e.protocol_addr) || pf.contains(e.next_hop));
            self.nhs
                .retain(|n| n.protocol_addr.is_some_and(|a| pf.contains(a)));
        }
        if filter.peer.is_some() || filter.prefix.is_some() {
            // IKE knows a peer by its post-NAT address: keep the SAs of every peer the
            // filtered entries name (and the asked-for address itself).
            let peers: std::collections::HashSet<IpAddr> = self
                .cache
                .iter()
                .map(CacheEntry::effective_nbma)
                .chain(self.nhs.iter().map(|n| n.nbma_addr))
                .chain(filter.peer.filter(|_| filter.prefix.is_none()))
                .collect();
            self.ike.retain(|s| peers.contains(&s.remote.ip()));
        }
        let ike = &self.ike;
        self.backoff.retain(|(p, _)| {
            filter.peer.is_none_or(|f| f == *p)
                && (filter.prefix.is_none() || ike.iter().any(|s| s.remote.ip() == *p))
        });
    }

    /// The snapshot the report builders read, with the IKE SAs ordered by id and the held-down
    /// peers by address (as `show ike` lists them).
    pub fn snapshot(&mut self) -> Snapshot<'_> {
        self.ike.sort_unstable_by_key(|i| i.id);
        self.backoff.sort_by_key(|(p, _)| *p);
        Snapshot {
            now: self.now,
            interface: &self.interface,
            tunnel_addr: &self.view.tunnel_addr,
            role: self.view.role,
            cache: &self.cache,
            nhs: &self.nhs,
            ike: &self.ike,
            backoff: &self.backoff,
            changes: Some(&self.changes),
            nhs_priority: &self.view.nhs_priority,
            nhs_places: &self.view.nhs_places,
            preferred_nhs: self.preferred_nhs,
            shortcuts_waiting: &self.view.shortcuts_waiting,
        }
    }
}
