//! Recovering from a peer that lost its IKE SAs (RFC 7296 §2.4, §2.21.4): an
//! unprotected INVALID_IKE_SPI answer to one of our requests is reported as
//! a hint, and an IKE SA started because of it replaces the stale one only
//! once it has authenticated.
//!
//! A peer that restarted (a hub killed and started again) answers our DPD
//! probe at once with INVALID_IKE_SPI; without the hint we would wait out
//! every retransmission of the probe (the whole DPD budget) before starting
//! again. The notify is not authenticated, so it changes no SA state here
//! (§2.21.4: the recipient MUST NOT change the state of any existing SA): a
//! host spoofing the peer's address can at most make the caller start one
//! new IKE SA in parallel, which the caller rate-limits.

use super::*;

impl Endpoint {
    /// An unprotected response to our pending request `h` on `sa` (already
    /// matched by SPIs and Message ID): if it is an INVALID_IKE_SPI notify
    /// from the SA's peer address, reports [`Event::InvalidIkeSpi`] once per
    /// request. Returns true when the message was such a notify (it is not
    /// a response that can complete the request either way).
    pub(super) fn invalid_spi_hint(
        &mut self,
        sa: &mut IkeSa,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) -> bool {
        // An encrypted message is never the unprotected notify; leave it to
        // the normal path.
        if h.next_payload == PayloadType::SK || h.next_payload == PayloadType::SKF {
            return false;
        }
        let Ok(msg) = Message::parse(bytes) else {
            return false;
        };
        let only_invalid_spi = matches!(
            &msg.payloads[..],
            [Payload::Notify(n)] if n.ty == NotifyType::INVALID_IKE_SPI
        );
        if !only_invalid_spi {
            return false;
        }
        // §2.21.4 names the hint "problems with SAs to that IP address":
        // only the address the SA talks to counts, and only an SA that is up
        // (a half-open one times out on its own), once per request however
        // many copies arrive.
        let established = matches!(sa.state, State::Established(_));
        if established && remote.ip() == sa.remote.ip() && sa.hinted_request != Some(h.message_id) {
            sa.hinted_request = Some(h.message_id);
            self.events.push_back(Event::InvalidIkeSpi {
                sa: IkeSaId(sa.id),
                remote: sa.remote,
            });
        }
        true
    }

    /// Starts an IKE SA to `remote` like [`Endpoint::initiate`] that, once
    /// authenticated, replaces `stale` (an SA with the same peer that the
    /// peer seems to have lost, [`Event::InvalidIkeSpi`]). Until then `stale`
    /// is untouched and keeps carrying traffic: the hint was not
    /// authenticated. The new SA's IKE_AUTH carries INITIAL_CONTACT (§2.4:
    /// once it is up we hold no other SA with the peer), so a peer that did
    /// not lose `stale` after all drops its copy too.
    pub fn initiate_replacing(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        stale: IkeSaId,
    ) -> Result<IkeSaId, Error> {
        let id = self.initiate(now, local, remote)?;
        if let Some(mut sa) = self.sas.remove(id.0) {
            sa.replaces = Some(stale.0);
            self.put_back(sa);
        }
        Ok(id)
    }

    /// Whether `sa` may claim INITIAL_CONTACT (§2.4): no IKE SA with the
    /// peer is up other than the one it replaces.
    pub(super) fn first_contact(&self, sa: &IkeSa) -> bool {
        !self.sas.with_peer(sa.remote.ip()).iter().any(|&id| {
            Some(id) != sa.replaces
                && self
                    .sas
                    .get(id)
                    .is_some_and(|s| matches!(s.state, State::Established(_)))
        })
    }

    /// `sa` just authenticated: the stale SA it replaces goes, reported as
    /// [`DownReason::Replaced`] with its Child SAs (the same end a peer's
    /// INITIAL_CONTACT gives it). Nothing is sent on it: the peer either lost
    /// it or drops it on our INITIAL_CONTACT.
    pub(super) fn replace_stale(&mut self, sa: &mut IkeSa) {
        let Some(old) = sa.replaces.take() else {
            return;
        };
        if old == sa.id {
            return;
        }
        if let Some(mut s) = self.sas.remove(old) {
            if s.remote.ip() == sa.remote.ip() {
                self.close(&mut s, DownReason::Replaced);
            }
            self.put_back(s);
        }
    }
}
