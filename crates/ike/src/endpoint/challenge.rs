//! A liveness check on demand, with a short verdict (RFC 7296 §2.4: "an endpoint MAY send
//! an empty INFORMATIONAL to check liveness at any time").
//!
//! The node asks for one when another peer claims something this peer holds (an NHRP
//! registration of the same tunnel address from a new NBMA address: a spoke that rebooted
//! with a new public address). DPD's own budget (`dpd 40 5`: minutes) is for deciding a
//! silent peer is gone without a reason to ask; here the question is urgent and the answer
//! is expected within a round trip, so the check is resent every `RESEND` and the peer is
//! declared dead when `BUDGET` passes without any authenticated message from it (IKE or, as
//! the node reports, ESP). An answer ends the check; the claimant stays refused.

use super::*;

/// Resend interval of the liveness check.
pub(super) const RESEND: Duration = Duration::from_secs(1);
/// Silence after which a challenged peer is dead: four sends, one second apart.
pub const CHALLENGE_BUDGET: Duration = Duration::from_secs(4);

/// A running challenge of an established SA.
#[derive(Debug, Clone, Copy)]
pub(super) struct Challenge {
    /// When it started: anything authenticated heard after this answers it.
    pub(super) since: Instant,
    /// When to resend (or first send, if a request was in flight).
    pub(super) next_at: Instant,
}

impl Challenge {
    pub(super) fn deadline(&self) -> Instant {
        self.next_at.min(self.since + CHALLENGE_BUDGET)
    }
}

impl Endpoint {
    /// Checks at once that the peer at `peer` is alive: a liveness check over each
    /// established IKE SA with it, resent every second; no authenticated message within
    /// [`CHALLENGE_BUDGET`] makes it [`Event::PeerDead`]. A check already running is not
    /// restarted (a claimant repeating itself buys nothing). Returns whether a new one
    /// started (false: one runs already, or there is no established SA with `peer`).
    pub fn challenge(&mut self, now: Instant, peer: IpAddr) -> bool {
        let mut any = false;
        for id in self.sas.with_peer(peer).to_vec() {
            let Some(mut s) = self.sas.remove(id) else {
                continue;
            };
            if let State::Established(e) = &mut s.state
                && e.challenge.is_none()
            {
                any = true;
                e.challenge = Some(Challenge {
                    since: now,
                    next_at: now,
                });
                self.challenge_due(now, &mut s);
                self.pump(now, &mut s);
            }
            self.put_back(s);
        }
        any
    }

    /// The challenge part of an established SA's timers. Returns whether the SA closed.
    pub(super) fn challenge_due(&mut self, now: Instant, sa: &mut IkeSa) -> bool {
        let State::Established(e) = &mut sa.state else {
            return false;
        };
        let Some(c) = &mut e.challenge else {
            return false;
        };
        if sa.last_rx > c.since {
            e.challenge = None;
            return false;
        }
        if now >= c.since + CHALLENGE_BUDGET {
            self.events.push_back(Event::PeerDead {
                sa: IkeSaId(sa.id),
                remote: sa.remote,
            });
            self.close(sa, DownReason::Timeout);
            return true;
        }
        if now >= c.next_at {
            c.next_at = now + RESEND;
            match &sa.pending {
                // Our liveness check is in flight: the same message again (§2.1: a
                // retransmission keeps the message id).
                Some(p) if matches!(p.req, Req::Dpd) => {
                    let bytes = p.bytes.clone();
                    self.tx(sa, bytes);
                }
                // Another request is in flight: its answer counts as well, and only one
                // request may be outstanding (§2.3, window 1).
                Some(_) => {}
                None => {
                    if !sa.queue.contains(&Queued::Dpd) {
                        sa.queue.push_front(Queued::Dpd);
                    }
                }
            }
        }
        false
    }
}
