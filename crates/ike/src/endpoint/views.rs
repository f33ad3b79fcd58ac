//! What the operator sees of each IKE SA, kept beside the table in a structurally shared map.
//!
//! A hub's `show` or metrics scrape needs every SA. Copying 10,000 SAs out of the table on the
//! control loop (each boxed, with an identity and a Child SA list to clone) held the loop for
//! 10–40 ms (issue 12's budget is 50 ms, and the copy grows with N). So the table keeps one
//! [`SaView`] per SA, rebuilt whenever an exchange puts the SA back (the only way an SA
//! changes), in a [`SnapMap`]: [`SaViews`] is an O(1) clone the caller can read anywhere, at
//! any `now`, while the endpoint goes on. Times are kept as instants, so a view never goes
//! stale between exchanges: ages and rekey times are computed when it is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dmvpn_snapmap::SnapMap;

use super::event::{ChildSaInfo, IkeSaId, IkeSaInfo, IkeSaState, Mode};
use super::sa::{IkeSa, State};
use crate::message::Identification;
use crate::proposal::IkeSuite;

/// One IKE SA as it was when last put back into the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaView {
    id: u64,
    state: IkeSaState,
    local: SocketAddr,
    remote: SocketAddr,
    spi_i: u64,
    spi_r: u64,
    initiator: bool,
    suite: Option<IkeSuite>,
    remote_id: Option<Identification>,
    created: Instant,
    /// Established: when we rekey it.
    rekey_at: Option<Instant>,
    nat_local: bool,
    nat_remote: bool,
    children: Vec<ChildView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ChildView {
    spi_in: u32,
    spi_out: u32,
    esn: bool,
    created: Instant,
    rekey_at: Instant,
}

impl SaView {
    pub(super) fn of(sa: &IkeSa) -> Self {
        SaView {
            id: sa.id,
            state: sa.state.public(),
            local: sa.local,
            remote: sa.remote,
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            initiator: sa.initiator,
            suite: sa.suite,
            remote_id: sa.remote_id.clone(),
            created: sa.created,
            rekey_at: match &sa.state {
                State::Established(e) => Some(e.rekey_at),
                _ => None,
            },
            nat_local: sa.nat_local,
            nat_remote: sa.nat_remote,
            children: sa
                .children
                .iter()
                .map(|c| ChildView {
                    spi_in: c.spi_in,
                    spi_out: c.spi_out,
                    esn: c.suite.esn,
                    created: c.created,
                    rekey_at: c.rekey_at,
                })
                .collect(),
        }
    }

    /// The SA's id.
    pub fn id(&self) -> IkeSaId {
        IkeSaId(self.id)
    }

    /// The SA as [`crate::Endpoint::ike_sas`] reports it at `now`.
    pub fn info(&self, now: Instant) -> IkeSaInfo {
        let udp_encap = self.nat_local || self.nat_remote;
        IkeSaInfo {
            id: IkeSaId(self.id),
            state: self.state,
            local: self.local,
            remote: self.remote,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: self.initiator,
            suite: self.suite,
            remote_id: self.remote_id.clone(),
            age: now.saturating_duration_since(self.created),
            rekey_in: self.rekey_at.map(|t| t.saturating_duration_since(now)),
            nat_local: self.nat_local,
            nat_remote: self.nat_remote,
            children: self
                .children
                .iter()
                .map(|c| ChildSaInfo {
                    spi_in: c.spi_in,
                    spi_out: c.spi_out,
                    mode: Mode::Transport,
                    esn: c.esn,
                    udp_encap,
                    age: now.saturating_duration_since(c.created),
                    rekey_in: Some(c.rekey_at.saturating_duration_since(now)),
                })
                .collect(),
        }
    }
}

/// Every IKE SA's [`SaView`]: cloning it is O(1), and later changes to the endpoint's SAs do
/// not show in a clone taken before.
#[derive(Debug, Clone, Default)]
pub struct SaViews(SnapMap<u64, Arc<SaView>>);

impl SaViews {
    /// Number of SAs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The views, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &SaView> {
        self.0.values().map(|v| &**v)
    }

    /// Every SA as [`crate::Endpoint::ike_sas`] reports it at `now`, in no particular order.
    pub fn infos(&self, now: Instant) -> Vec<IkeSaInfo> {
        self.iter().map(|v| v.info(now)).collect()
    }

    pub(super) fn put(&mut self, sa: &IkeSa) {
        self.0.insert(sa.id, Arc::new(SaView::of(sa)));
    }

    pub(super) fn take(&mut self, id: u64) {
        self.0.remove(&id);
    }

    #[cfg(any(test, feature = "testing"))]
    pub(super) fn get(&self, id: u64) -> Option<&SaView> {
        self.0.get(&id).map(|v| &**v)
    }
}
