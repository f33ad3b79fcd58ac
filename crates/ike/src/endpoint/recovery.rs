//! Recovering from a peer that lost its IKE SAs (RFC 7296 §2.4, §2.21.4): an
//! unprotected INVALID_IKE_SPI answer to one of our requests is reported as
//! a hint, and an IKE SA started because of it replaces the stale one only
//! once it has authenticated.
//!
//! The same holds for the unprotected INVALID_SPI a peer without our Child SA
//! may send for our ESP (§1.5), which we send ourselves when ESP arrives from
//! a host we have no IKE SA with (a restart lost them): on receipt it only
//! makes us probe the IKE SA of that Child SA (§2.21.4: "initiate a liveness
//! check"), at most once per [`HINT_PROBE_INTERVAL`], and the probe's answer
//! tells the rest.
//!
//! A peer that restarted (a hub killed and started again) answers our DPD
//! probe at once with INVALID_IKE_SPI; without the hint we would wait out
//! every retransmission of the probe (the whole DPD budget) before starting
//! again. The notify is not authenticated, so it changes no SA state here
//! (§2.21.4: the recipient MUST NOT change the state of any existing SA): a
//! host spoofing the peer's address can at most make the caller start one
//! new IKE SA in parallel, which the caller rate-limits.

use super::*;

/// At most one liveness check per IKE SA per this long because of INVALID_SPI
/// hints (§1.5): forged ones cost us one INFORMATIONAL exchange per interval.
pub const HINT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

impl Endpoint {
    /// §1.5: an ESP packet from `remote` (received on `local`) carried SPI
    /// `spi`, which no Child SA of ours has. If we have no IKE SA with the
    /// sender at all (we restarted and lost it), tell it with an unprotected
    /// INVALID_SPI notify: IKE SPIs random (§1.5 allows random or zero),
    /// Initiator flag set, Response flag clear, the SPI as notification data.
    /// With an IKE SA the notify would belong inside it; we leave that case
    /// to DPD. An IKE SA still being set up does not count: it holds no
    /// Child SA the sender's ESP could be for (our own speculative setup
    /// toward a peer that went silent must not mute the hint that brings it
    /// back). Shares the unprotected notifies' rate limit (§2.21.4).
    pub fn unknown_esp_spi(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        spi: u32,
    ) {
        let authenticated = self
            .sas_with(remote.ip())
            .any(|(_, st)| matches!(st, IkeSaState::Established | IkeSaState::Deleting));
        if authenticated || !self.unprotected_allowed(now) {
            return;
        }
        let spi_i = self.rng.next_u64() | 1;
        let msg = Message {
            header: Header {
                spi_i,
                spi_r: 0,
                next_payload: PayloadType::NONE,
                version: 0x20,
                exchange: ExchangeType::INFORMATIONAL,
                flags: flags::INITIATOR,
                message_id: 0,
                length: 0,
            },
            payloads: vec![Payload::Notify(Notify::new(
                NotifyType::INVALID_SPI,
                spi.to_be_bytes().to_vec(),
            ))],
        };
        if let Ok(bytes) = msg.emit() {
            self.transmits.push_back(Transmit {
                local,
                remote,
                bytes,
            });
        }
    }

    /// §1.5: a message for IKE SPIs we do not know that is an unprotected
    /// INVALID_SPI notify. Returns true if so: it MUST NOT be answered. If it
    /// names the outbound SPI of one of our Child SAs with the sender's
    /// address, that Child SA's IKE SA gets a liveness check (unless one is
    /// in flight or one was started for a hint within
    /// [`HINT_PROBE_INTERVAL`]); nothing else changes.
    pub(super) fn invalid_esp_spi_hint(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) -> bool {
        if h.exchange != ExchangeType::INFORMATIONAL
            || h.next_payload == PayloadType::SK
            || h.next_payload == PayloadType::SKF
        {
            return false;
        }
        let Ok(msg) = Message::parse(bytes) else {
            return false;
        };
        let [Payload::Notify(n)] = &msg.payloads[..] else {
            return false;
        };
        if n.ty != NotifyType::INVALID_SPI {
            return false;
        }
        let spi = <[u8; 4]>::try_from(n.data.as_slice())
            .or_else(|_| <[u8; 4]>::try_from(n.spi.as_slice()))
            .map(u32::from_be_bytes);
        let Ok(spi) = spi else {
            return true;
        };
        let owner = self.sas.with_peer(remote.ip()).iter().copied().find(|&id| {
            self.sas.get(id).is_some_and(|s| {
                matches!(s.state, State::Established(_))
                    && s.children.iter().any(|c| c.spi_out == spi)
            })
        });
        let Some(mut sa) = owner.and_then(|id| self.sas.remove(id)) else {
            return true;
        };
        let due = sa
            .hint_probe_at
            .is_none_or(|t| now >= t + HINT_PROBE_INTERVAL);
        if due && sa.pending.is_none() && !sa.queue.contains(&Queued::Dpd) {
            sa.hint_probe_at = Some(now);
            sa.queue.push_back(Queued::Dpd);
            self.pump(now, &mut sa);
        }
        self.put_back(sa);
        true
    }

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
