//! Coming back from a peer that lost its SAs (issue 14): a restarted hub answers our probes
//! with an unprotected INVALID_IKE_SPI (RFC 7296 §2.21.4), which starts a replacement IKE SA
//! at once instead of after the whole DPD budget; and a hub with traffic for a spoke whose
//! registration lives but whose SA is gone initiates IKE back to it (through the spoke's NAT
//! on port 4500 when it registered from behind one), under the one retry discipline.
//!
//! The hint is unauthenticated, so it only ever adds: one IKE SA in parallel per peer and
//! back-off interval ([`crate::peers::Peers::may_replace`]), while the old SA keeps carrying
//! traffic until the new one has authenticated (the IKE engine then retires the old one as an
//! INITIAL_CONTACT would). A replacement toward an NHS is followed by a fresh registration:
//! a hub that lost our SA lost our registration with it. A new IKE SA an NHS starts toward
//! us is followed by a refresh of the registration (nothing declared lost): the NHS may have
//! given up on that setup before our answer reached it, and the refresh shows it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use dmvpn_ike::{IkeSaId, IkeSaState};

use crate::Node;
use crate::config::{IKE_PORT, NATT_PORT};
use crate::drive::v4;
use crate::log_limit::LogKind;

/// What IKE has with a peer that has no Child SA (no dataplane path).
pub(crate) enum Existing {
    /// No IKE SA.
    None,
    /// An IKE SA being negotiated (by either side) or deleted: it settles the path itself.
    Settling,
    /// An IKE SA that is up without a Child SA (it expired or was deleted): it never brings
    /// a path up again, so a new one replaces it.
    Childless(IkeSaId),
}

/// Why a peer looks as if it lost its SAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartHint {
    /// It answered a request with INVALID_IKE_SPI (§2.21.4).
    InvalidIkeSpi,
    /// It left a liveness check unanswered for one retransmission interval: a restarted
    /// strongSwan hub is silent about SPIs it does not know, so without this the spoke
    /// waited out the whole DPD budget (65.5 s measured against strongSwan 6.0.1 in a VM,
    /// where the new SA then took 0.14 s).
    ProbeUnanswered,
}

impl RestartHint {
    fn says(self) -> &'static str {
        match self {
            Self::InvalidIkeSpi => "peer answered INVALID_IKE_SPI (restarted?)",
            Self::ProbeUnanswered => {
                "peer left a liveness check unanswered (restarted or unreachable?)"
            }
        }
    }
}

impl Node {
    /// The peer at `remote` may have lost the IKE SA `sa` (`why`): a new one is started
    /// alongside it, at most once per back-off interval, and replaces it only once it has
    /// authenticated; the old one keeps its traffic and its own DPD verdict meanwhile.
    pub(crate) fn restart_suspected(
        &mut self,
        now: Instant,
        sa: IkeSaId,
        remote: SocketAddr,
        why: RestartHint,
    ) {
        let Some(peer) = v4(remote.ip()) else {
            return;
        };
        // One setup of ours toward the peer at a time: one still retransmitting (its
        // IKE_SA_INIT lives longer than the in-flight window `may_replace` keeps) settles first.
        if self.ike.sas_with(remote.ip()).any(|(_, st)| {
            matches!(
                st,
                IkeSaState::ExpectSaInitResponse | IkeSaState::ExpectAuthResponse
            )
        }) {
            tracing::debug!(%peer, ike_sa = %sa, hint = ?why, "hint ignored: a setup of ours toward the peer is in flight");
            return;
        }
        if !self.peers.may_replace(now, peer) {
            tracing::debug!(%peer, ike_sa = %sa, hint = ?why, "hint ignored: a replacement is in flight or was tried within the back-off interval");
            return;
        }
        let (local, mut to) = self.initiation_addresses(now, peer);
        if self.is_hub() && local.port() == NATT_PORT && remote.port() != IKE_PORT {
            // Toward a spoke behind a NAT: the port its live SA uses is the one mapping known
            // to pass (the remembered one is cleared while a path is up).
            to = remote;
        }
        match self.ike.initiate_replacing(now, local, to, sa) {
            Ok(id) => {
                tracing::info!(%peer, stale_ike_sa = %sa, ike_sa = %id, "{}: initiating a new IKE SA alongside the old one", why.says());
                self.peers.initiated_replacing(now, peer, id, sa);
            }
            Err(e) => {
                if self.log_allowed(now, IpAddr::V4(peer), LogKind::IkeInitiateFailed) {
                    tracing::error!(%peer, "cannot initiate IKE: {e}");
                }
            }
        }
    }

    /// A Child SA of our replacement toward `peer` is installed: an NHS that lost our SA
    /// (or whose SA with us had no Child SA to carry our refreshes) may have lost our
    /// registration too, so register again now rather than at the next refresh. (An SA the
    /// NHS started toward us only refreshes the registration: `install_child`.)
    pub(crate) fn replaced(&mut self, now: Instant, peer: Ipv4Addr) {
        if self.is_nhs(peer) {
            tracing::info!(nhs = %peer, "IKE SA with the NHS replaced: registering again");
            // NHRP forgets what it had via the lost SA and waits for an SA again; `sa_up`
            // (which the caller sends next) registers.
            self.nhrp.peer_dead(now, IpAddr::V4(peer));
        }
    }

    /// The IKE SAs with `nbma`, a peer without a path.
    pub(crate) fn existing_ike_sa(&self, nbma: Ipv4Addr) -> Existing {
        let mut up = None;
        for (id, st) in self.ike.sas_with(IpAddr::V4(nbma)) {
            if st != IkeSaState::Established {
                return Existing::Settling;
            }
            up = up.or(Some(id));
        }
        up.map_or(Existing::None, Existing::Childless)
    }

    /// Our address and the peer's to initiate IKE with. Normally UDP 500 both ends (IKE
    /// floats to 4500 when it detects a NAT, RFC 7296 §2.23). A hub initiating back to a
    /// spoke that registered from behind a NAT starts on 4500 instead (§2.23 allows it), to
    /// the port the spoke's last NAT-T path came from if known: an unsolicited datagram to
    /// the NAT's port 500 has no mapping to pass. The mapping may have expired meanwhile;
    /// then the attempt times out and is held down like any other.
    pub(crate) fn initiation_addresses(
        &self,
        now: Instant,
        nbma: Ipv4Addr,
    ) -> (SocketAddr, SocketAddr) {
        let ip = IpAddr::V4((self.local_address)(nbma));
        if self.is_hub() && self.nhrp.is_nated_peer(IpAddr::V4(nbma), now) {
            let port = self.peers.natt_port(nbma).unwrap_or(NATT_PORT);
            (
                SocketAddr::new(ip, NATT_PORT),
                SocketAddr::new(IpAddr::V4(nbma), port),
            )
        } else {
            (
                SocketAddr::new(ip, IKE_PORT),
                SocketAddr::new(IpAddr::V4(nbma), IKE_PORT),
            )
        }
    }

    /// ESP for an unknown SPI arrived from `from`: if IKE knows nothing of the sender (we
    /// restarted), it tells the sender with an unprotected INVALID_SPI (RFC 7296 §1.5), on
    /// the port the ESP came from (UDP 4500 with the non-ESP marker when encapsulated, else
    /// UDP 500), so the peer probes at once instead of after its DPD delay.
    pub(crate) fn unknown_spi(&mut self, now: Instant, from: SocketAddrV4, encap: bool, spi: u32) {
        let ip = IpAddr::V4((self.local_address)(*from.ip()));
        let (local, remote) = if encap {
            (SocketAddr::new(ip, NATT_PORT), SocketAddr::V4(from))
        } else {
            (
                SocketAddr::new(ip, IKE_PORT),
                SocketAddr::new(IpAddr::V4(*from.ip()), IKE_PORT),
            )
        };
        tracing::debug!(from = %from, spi = format_args!("{spi:#010x}"), "ESP for an unknown SPI: telling the sender (INVALID_SPI) unless we have an IKE SA with it");
        self.ike.unknown_esp_spi(now, local, remote, spi);
    }

    /// Deletes the Child SAs with `peer` and keeps its IKE SA: what [`Node::clear_child_sa`]
    /// does, without its checks, for tests (an IKE SA whose Child SA expired or was deleted).
    #[doc(hidden)]
    pub fn delete_child_sas(&mut self, now: Instant, peer: Ipv4Addr) {
        let spis: Vec<u32> = self
            .children
            .get(&peer)
            .map(|l| l.iter().map(|c| c.spi_in).collect())
            .unwrap_or_default();
        for spi in spis {
            let _ = self.ike.delete_child(now, spi);
        }
        self.drive(now);
    }
}
