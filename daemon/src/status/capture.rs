//! What a report is built from, copied out of the node on the control loop.
//!
//! At 10,000 peers a `show dmvpn` held the control loop 25–40 ms (issue 12's budget is 50 ms,
//! and the cost grows with N), most of it copying the IKE SAs out of their table. So the loop
//! takes the IKE engine's structurally shared views of its SAs (an O(1) clone,
//! `dmvpn_ike::SaViews`) and copies the NHRP cache (plain values), into a [`Capture`], which
//! owns them and is `Send`; turning the views into `IkeSaInfo`s, filters, joins and encoding
//! run on tokio's blocking pool from [`Capture::snapshot`], while the loop goes back to IKE,
//! NHRP and DPD.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use dmvpn_api::ShowFilter;
use dmvpn_ike::{IkeSaInfo, SaViews};
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
    /// Until [`Capture::ike`] or [`Capture::filter`] turns them into `ike`.
    ike_views: Option<SaViews>,
    ike: Vec<IkeSaInfo>,
    backoff: Vec<(IpAddr, Backoff)>,
    changes: HashMap<Ipv4Addr, (bool, Instant)>,
    preferred_nhs: Option<IpAddr>,
}

impl Capture {
    /// Takes what the reports need from `node` at `now`: the IKE SAs in O(1), the NHRP cache
    /// as a copy of plain values, no joins or sorting.
    pub fn of(node: &dmvpn_node::Node, now: Instant) -> Self {
        let (ike, nhrp) = (node.ike(), node.nhrp());
        Capture {
            now,
            interface: node.config().tunnel.interface.clone(),
            view: NodeView::of(node),
            cache: nhrp.cache_entries(now),
            nhs: nhrp.nhs_status(now),
            ike_views: Some(ike.sa_views()),
            ike: Vec::new(),
            backoff: node.backoffs().map(|(p, b)| (IpAddr::V4(p), b)).collect(),
            changes: node.peer_changes().all().clone(),
            preferred_nhs: node.preferred_nhs().map(IpAddr::V4),
        }
    }

    /// The IKE SAs captured (in no particular order until [`Capture::snapshot`]).
    pub fn ike(&mut self) -> &[IkeSaInfo] {
        if let Some(views) = self.ike_views.take() {
            self.ike = views.infos(self.now);
        }
        &self.ike
    }

    /// The peers held down after failed IKE setups.
    pub fn backoff(&self) -> &[(IpAddr, Backoff)] {
        &self.backoff
    }

    /// Narrows the capture to `filter` (`show … --peer`, `show nhrp PREFIX`): a hub answers
    /// for one peer or prefix without listing the other 10,000.
    pub fn filter(&mut self, filter: ShowFilter) {
        self.ike();
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
        self.ike();
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
