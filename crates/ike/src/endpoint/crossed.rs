//! Crossed setups: two peers that start IKE toward each other at the same time (two spokes
//! that resolved each other, RFC 2332 §5.2.1, and both want the shortcut) end up with two
//! IKE SAs, one initiated by each side. RFC 7296 settles the crossing only for rekeys
//! (§2.8.1: the SA with the lowest nonce goes); for two fresh setups it says nothing, and
//! dropping one's own half-open initiation when the peer's SA comes up does not work: by
//! then the peer may have answered it, so each end keeps a different SA and sends into SPIs
//! the other no longer has.
//!
//! So both setups are allowed to complete, and once an end has both authenticated it keeps
//! one by a rule both ends evaluate alike from what both know: an SA with a Child SA beats
//! one without; otherwise the SA with the higher initiator SPI stays (both SPIs travel in
//! every header, so each end sees the same values). Only the initiator of the loser deletes
//! it (a DELETE over that SA, §1.4.1); the other end waits for that DELETE. The winner's
//! Child SA carries the traffic meanwhile at the deleting end; at the other end the loser's
//! inbound half lingers after its deletion, so packets in flight on it are not lost.
//!
//! "Crossed" means concurrent: the other SA authenticated while this one was being set up
//! (or at most [`CROSSED_SLACK`] before it began, for an IKE_SA_INIT that was retransmitted),
//! each end judging by its own clock. An SA that was up before is not a twin but stale or
//! wanted (a peer that restarted, a childless SA a replacement is for); INITIAL_CONTACT and
//! the replacement logic deal with those, and INITIAL_CONTACT in turn spares an SA we
//! initiated that authenticated while the SA carrying it was being set up
//! (`initial_contact`): the peer that sent it could not know of it. Where the ends' clocks
//! disagree on whether two SAs crossed, the worst outcome is that both are kept: every
//! deletion here is a DELETE the other end sees, never a silent drop. The responder sends
//! its DELETE only after its IKE_AUTH response (`on_request`), so the peer has the twin up
//! before it loses the other.

use super::*;

/// How long before an SA's setup began another may have authenticated and still count as
/// its twin: the initiator's IKE_SA_INIT may have been retransmitted (1 s, then 2 s).
pub(super) const CROSSED_SLACK: Duration = Duration::from_secs(3);

impl Endpoint {
    /// `sa` (taken out of the table) has just authenticated and set up its first Child SA.
    /// If another authenticated SA with the same peer was initiated by the other side
    /// concurrently, the two are settled: the loser is deleted here if we initiated it.
    pub(super) fn settle_crossed(&mut self, now: Instant, sa: &mut IkeSa) {
        if sa.authenticated_at.is_none() {
            return;
        }
        let same_peer = |s: &IkeSa| {
            s.remote.ip() == sa.remote.ip()
                && (!sa.nat_remote || s.remote.port() == sa.remote.port())
        };
        let other = self
            .sas
            .with_peer(sa.remote.ip())
            .iter()
            .copied()
            .find(|&id| {
                self.sas.get(id).is_some_and(|o| {
                    same_peer(o)
                        && o.initiator != sa.initiator
                        && !o.superseded
                        && matches!(o.state, State::Established(_))
                        && o.remote_id == sa.remote_id
                        && o.authenticated_at
                            .is_some_and(|t| t + CROSSED_SLACK >= sa.created)
                })
            });
        let Some(other_id) = other else {
            return;
        };
        let Some(o) = self.sas.get(other_id) else {
            return;
        };
        let sa_wins = crossed_rank(sa) > crossed_rank(o);
        let (kept, dropped, dropped_ours) = if sa_wins {
            (sa.id, other_id, o.initiator)
        } else {
            (other_id, sa.id, sa.initiator)
        };
        self.events.push_back(Event::CrossedSetup {
            remote: sa.remote,
            kept: IkeSaId(kept),
            dropped: IkeSaId(dropped),
            we_delete: dropped_ours,
        });
        if !dropped_ours {
            return; // the peer initiated the loser and deletes it
        }
        if sa_wins {
            if let Some(mut o) = self.sas.remove(other_id) {
                o.queue.push_front(Queued::DeleteIke);
                self.pump(now, &mut o);
                self.put_back(o);
            }
        } else {
            sa.queue.push_front(Queued::DeleteIke);
            self.pump(now, sa);
        }
    }
}

/// The order both ends agree on: with a Child SA before without, then by initiator SPI
/// (then responder SPI, for a collision of 64-bit random values).
fn crossed_rank(s: &IkeSa) -> (bool, u64, u64) {
    (!s.children.is_empty(), s.spi_i, s.spi_r)
}
