//! Coming back from a peer that lost its SAs (issue 14): a restarted hub answers our probes
//! with an unprotected INVALID_IKE_SPI (RFC 7296 §2.21.4), which starts a replacement IKE SA
//! at once instead of after the whole DPD budget.
//!
//! The hint is unauthenticated, so it only ever adds: one IKE SA in parallel per peer and
//! back-off interval ([`crate::peers::Peers::may_replace`]), while the old SA keeps carrying
//! traffic until the new one has authenticated (the IKE engine then retires the old one as an
//! INITIAL_CONTACT would). A replacement toward an NHS is followed by a fresh registration:
//! a hub that lost our SA lost our registration with it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use dmvpn_ike::IkeSaId;

use crate::Node;
use crate::config::IKE_PORT;
use crate::drive::v4;

impl Node {
    /// The peer at `remote` answered a request on `sa` with INVALID_IKE_SPI.
    pub(crate) fn invalid_spi_hint(&mut self, now: Instant, sa: IkeSaId, remote: SocketAddr) {
        let Some(peer) = v4(remote.ip()) else {
            return;
        };
        if !self.peers.may_replace(now, peer) {
            tracing::debug!(%peer, ike_sa = %sa, "INVALID_IKE_SPI hint ignored: a replacement is in flight or was tried within the back-off interval");
            return;
        }
        let local = SocketAddr::new(IpAddr::V4((self.local_address)(peer)), IKE_PORT);
        let to = SocketAddr::new(IpAddr::V4(peer), IKE_PORT);
        match self.ike.initiate_replacing(now, local, to, sa) {
            Ok(id) => {
                tracing::info!(%peer, stale_ike_sa = %sa, ike_sa = %id, "peer answered INVALID_IKE_SPI (restarted?): initiating a new IKE SA alongside the old one");
                self.peers.initiated_replacing(now, peer, id, sa);
            }
            Err(e) => tracing::error!(%peer, "cannot initiate IKE: {e}"),
        }
    }

    /// A Child SA of our replacement toward `peer` is installed: an NHS that lost our SA lost
    /// our registration too, so register again now rather than at the next refresh.
    pub(crate) fn replaced(&mut self, now: Instant, peer: Ipv4Addr) {
        if self.is_nhs(peer) {
            tracing::info!(nhs = %peer, "IKE SA with the NHS replaced: registering again");
            // NHRP forgets what it had via the lost SA and waits for an SA again; `sa_up`
            // (which the caller sends next) registers.
            self.nhrp.peer_dead(now, IpAddr::V4(peer));
        }
    }
}
