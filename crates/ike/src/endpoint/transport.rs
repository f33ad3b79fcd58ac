//! Message transport (RFC 7296 §2.1–§2.3, §2.21, §2.23): dispatching
//! datagrams to an IKE SA, message IDs and the window of one, request
//! retransmission, the response cache, unprotected error notifies (§1.5,
//! §2.21.4) and the queue of local requests.

use super::*;

/// Unprotected error notifies (INVALID_IKE_SPI, INVALID_MAJOR_VERSION) we
/// send per second at most: §2.21.4 lets us answer unknown SPIs but such
/// answers must not make us a reflector.
const UNPROTECTED_NOTIFIES_PER_SEC: u32 = 10;

impl Endpoint {
    // ---- output helpers ---------------------------------------------------

    pub(super) fn tx(&mut self, sa: &IkeSa, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit {
            local: sa.local,
            remote: sa.remote,
            bytes,
        });
    }

    pub(super) fn retransmit_interval(&self, req: &Req, tries: u32) -> Duration {
        if let (Req::Dpd, Some(d)) = (req, self.config.dpd) {
            return d.retry;
        }
        let r = self.config.retransmit;
        let shift = tries.saturating_sub(1).min(16);
        r.initial.saturating_mul(1 << shift).min(r.max_interval)
    }

    pub(super) fn max_tries(&self, req: &Req) -> u32 {
        match (req, self.config.dpd) {
            (Req::Dpd, Some(d)) => d.max_tries,
            _ => self.config.retransmit.max_tries,
        }
    }

    /// Sends an encrypted request and arms its retransmission.
    pub(super) fn request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        payloads: &[Payload],
        req: Req,
    ) {
        let id = sa.next_request_id;
        let Some(bytes) = sa.seal(exchange, false, id, payloads) else {
            return;
        };
        sa.next_request_id = id.wrapping_add(1);
        let next_at = now + self.retransmit_interval(&req, 1);
        sa.pending = Some(Pending {
            message_id: id,
            bytes: bytes.clone(),
            tries: 1,
            next_at,
            req,
        });
        self.tx(sa, bytes);
    }

    /// Sends an encrypted response and caches it for retransmitted requests
    /// (§2.1: the responder MUST answer a retransmission from its cache).
    pub(super) fn respond(
        &mut self,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload],
    ) {
        let Some(bytes) = sa.seal(exchange, true, message_id, payloads) else {
            return;
        };
        sa.last_response = Some((message_id, bytes.clone()));
        self.tx(sa, bytes);
    }

    // ---- input ------------------------------------------------------------

    /// Processes one received IKE datagram (`bytes` without the non-ESP
    /// marker). `local` is the address it arrived on, `remote` its source.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        let header = match Header::parse(&mut Reader::new(bytes)) {
            Ok(h) => h,
            Err(ParseError::MajorVersion(v)) if v > 2 => {
                self.invalid_major_version(now, local, remote, bytes);
                return;
            }
            // §2.5 / §2.21: unparseable headers cannot be answered usefully.
            Err(_) => return,
        };
        if usize::try_from(header.length).ok() != Some(bytes.len()) {
            return;
        }
        if header.exchange == ExchangeType::IKE_SA_INIT && !header.is_response() {
            if header.is_initiator() && header.message_id == 0 {
                self.responder_sa_init(now, local, remote, &header, bytes);
            }
            return;
        }
        // Our SPI is the responder SPI in messages from the original
        // initiator, else the initiator SPI (§3.1 Initiator flag).
        let ours = if header.is_initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        let Some(mut sa) = self.sas.remove(ours) else {
            // §1.5: an unprotected INVALID_SPI (a peer that lost our Child SA
            // answering our ESP) is a hint, and MUST NOT be answered.
            if self.invalid_esp_spi_hint(now, remote, &header, bytes) {
                return;
            }
            // §1.5, §2.21.4: a request outside any IKE SA we know MAY get an
            // unprotected INVALID_IKE_SPI; a response MUST NOT be answered.
            if !header.is_response() {
                self.unprotected_notify(now, local, remote, &header, &ExchangeError::InvalidIkeSpi);
            }
            return;
        };
        let theirs = if sa.initiator {
            header.spi_r
        } else {
            header.spi_i
        };
        let their_expected = if sa.initiator { sa.spi_r } else { sa.spi_i };
        // The I flag MUST match the role (§3.1), and the peer SPI must be
        // the one we know (only unknown while waiting for IKE_SA_INIT).
        let role_ok = header.is_initiator() != sa.initiator;
        let spi_ok = theirs == their_expected
            || (their_expected == 0 && matches!(sa.state, State::ExpectSaInitResponse(_)));
        if role_ok && spi_ok {
            if header.is_response() {
                self.on_response(now, &mut sa, local, remote, &header, bytes);
            } else {
                self.on_request(now, &mut sa, local, remote, &header, bytes);
            }
            if !matches!(sa.state, State::Closed) {
                self.pump(now, &mut sa);
            }
        }
        self.put_back(sa);
    }

    /// True if another unprotected notify fits this second's budget.
    pub(super) fn unprotected_allowed(&mut self, now: Instant) -> bool {
        let (start, sent) = &mut self.unprotected_budget;
        match start {
            Some(s) if now.saturating_duration_since(*s) < Duration::from_secs(1) => {}
            _ => {
                *start = Some(now);
                *sent = 0;
            }
        }
        if *sent >= UNPROTECTED_NOTIFIES_PER_SEC {
            return false;
        }
        *sent += 1;
        true
    }

    /// An unprotected error notify answering request `h` outside any IKE SA
    /// (§1.5, §2.21.4): sent back to where it came from, with the IKE SPIs
    /// and Message ID copied, the Response flag set and never encrypted.
    /// Rate-limited; the receiver MUST NOT change any SA state for it.
    pub(super) fn unprotected_notify(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        error: &ExchangeError,
    ) {
        if !self.unprotected_allowed(now) {
            return;
        }
        let msg = Message {
            header: Header {
                spi_i: h.spi_i,
                spi_r: h.spi_r,
                next_payload: PayloadType::NONE,
                // §2.5 / §3.10.1: for INVALID_MAJOR_VERSION the header
                // carries the closest version we support: 2.0.
                version: 0x20,
                exchange: h.exchange,
                // We answer as the other party of the request's sender.
                flags: flags::RESPONSE
                    | if h.is_initiator() {
                        0
                    } else {
                        flags::INITIATOR
                    },
                message_id: h.message_id,
                length: 0,
            },
            payloads: error.reply(),
        };
        if let Ok(bytes) = msg.emit() {
            self.transmits.push_back(Transmit {
                local,
                remote,
                bytes,
            });
        }
    }

    /// §2.5: a message with a higher major version MUST be dropped; an
    /// IKE_SA_INIT request of one MAY (§1.5) get an unprotected
    /// INVALID_MAJOR_VERSION naming 2.0 in its header, which we send.
    pub(super) fn invalid_major_version(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        // The header fields as §3.1 lays them out; only the version failed.
        let read = || -> Option<Header> {
            let mut r = Reader::new(bytes);
            let spi_i = r.u64().ok()?;
            let spi_r = r.u64().ok()?;
            let next_payload = PayloadType(r.u8().ok()?);
            let version = r.u8().ok()?;
            Some(Header {
                spi_i,
                spi_r,
                next_payload,
                version,
                exchange: ExchangeType(r.u8().ok()?),
                flags: r.u8().ok()?,
                message_id: r.u32().ok()?,
                length: r.u32().ok()?,
            })
        };
        let Some(h) = read() else {
            return;
        };
        if usize::try_from(h.length).ok() != Some(bytes.len())
            || h.exchange != ExchangeType::IKE_SA_INIT
            || h.is_response()
            || !h.is_initiator()
            || h.message_id != 0
            || h.spi_r != 0
        {
            return;
        }
        self.unprotected_notify(now, local, remote, &h, &ExchangeError::InvalidMajorVersion);
    }

    /// An unprotected IKE_SA_INIT response (§1.2; errors per §2.21.1) with
    /// our SPI `spi_r` (0 when refusing); returns the bytes sent.
    pub(super) fn plain_reply(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        spi_r: u64,
        payloads: Vec<Payload>,
    ) -> Option<Vec<u8>> {
        let msg = Message {
            header: Header {
                spi_i: h.spi_i,
                spi_r,
                next_payload: PayloadType::NONE,
                version: 0x20,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: flags::RESPONSE,
                message_id: 0,
                length: 0,
            },
            payloads,
        };
        let bytes = msg.emit().ok()?;
        self.transmits.push_back(Transmit {
            local,
            remote,
            bytes: bytes.clone(),
        });
        Some(bytes)
    }

    pub(super) fn on_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) {
        if let Some((id, resp)) = &sa.last_response
            && *id == h.message_id
        {
            let resp = resp.clone();
            self.tx(sa, resp);
            return;
        }
        // §2.3: with window size 1 we only accept the next message ID.
        if h.message_id != sa.expect_request_id {
            return;
        }
        let Some(parsed) = self.decrypt(sa, h, bytes) else {
            return;
        };
        // Authenticated: this is proof of life, and under NAT the peer's
        // current address (§2.23: update on authenticated messages).
        sa.last_rx = now;
        if sa.udp_encap() && (remote != sa.remote || local != sa.local) {
            self.moved(sa, remote, local);
        }
        sa.expect_request_id = h.message_id.wrapping_add(1);
        let reply = match parsed {
            Ok(payloads) => {
                let Some(r) = self.dispatch_request(now, sa, h.exchange, &payloads) else {
                    return;
                };
                r
            }
            Err(e) => {
                // §2.21.1: an error in the authenticated plaintext is
                // answered; a half-open SA cannot recover from it.
                if matches!(sa.state, State::ExpectAuthRequest(_)) {
                    sa.state = State::Closed;
                }
                Err(ExchangeError::Malformed(e))
            }
        };
        // The one place a refused request gets its error notify.
        let reply = reply.unwrap_or_else(|e| e.reply());
        self.respond(sa, h.exchange, h.message_id, &reply);
        // The SA this IKE_AUTH set up may be the twin of one we initiated (crossed.rs): a
        // DELETE for either goes after the response, so the peer has this one first.
        if h.exchange == ExchangeType::IKE_AUTH && matches!(sa.state, State::Established(_)) {
            self.settle_crossed(now, sa);
        }
    }

    /// Hands a decrypted request to its exchange's handler; the state it
    /// needs is moved into the handler, which sets the next one. `None`:
    /// no answer (the exchange is not valid in this state).
    fn dispatch_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        payloads: &[Payload],
    ) -> Option<Result<Reply, ExchangeError>> {
        let state = std::mem::replace(&mut sa.state, State::Closed);
        Some(match (exchange, state) {
            (ExchangeType::IKE_AUTH, State::ExpectAuthRequest(st)) => {
                self.responder_auth(now, sa, st, payloads)
            }
            (ExchangeType::CREATE_CHILD_SA, state @ State::Established(_)) => {
                sa.state = state;
                self.on_create_child(now, sa, payloads)
            }
            (ExchangeType::CREATE_CHILD_SA, state) => {
                // §2.7: not now, try again later.
                sa.state = state;
                Err(ExchangeError::TemporaryFailure)
            }
            (
                ExchangeType::INFORMATIONAL,
                state @ (State::Established(_) | State::Deleting(_) | State::ExpectAuthResponse(_)),
            ) => {
                sa.state = state;
                Ok(self.on_informational(sa, payloads))
            }
            (_, state) => {
                sa.state = state;
                return None;
            }
        })
    }

    // ---- responses --------------------------------------------------------

    pub(super) fn on_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) {
        if sa.pending.as_ref().map(|p| p.message_id) != Some(h.message_id) {
            return;
        }
        if h.exchange == ExchangeType::IKE_SA_INIT {
            let Ok(msg) = Message::parse(bytes) else {
                return;
            };
            if let State::ExpectSaInitResponse(st) = std::mem::replace(&mut sa.state, State::Closed)
            {
                self.initiator_sa_init_response(now, sa, st, h, bytes, &msg.payloads);
            }
            return;
        }
        // §2.21.4: an unprotected INVALID_IKE_SPI is only a hint; it never
        // completes the request nor changes the SA.
        if self.invalid_spi_hint(sa, remote, h, bytes) {
            return;
        }
        let Some(parsed) = self.decrypt(sa, h, bytes) else {
            return;
        };
        let Some(pending) = sa.pending.take() else {
            return;
        };
        sa.last_rx = now;
        if sa.udp_encap() && (remote != sa.remote || local != sa.local) {
            self.moved(sa, remote, local);
        }
        // A malformed response to our request: the exchange failed, which
        // the handlers see as a response without the payloads they need.
        let p = parsed.unwrap_or_default();
        match pending.req {
            Req::SaInit => {}
            // The IKE_AUTH response consumes the state that awaited it.
            Req::Auth => {
                if let State::ExpectAuthResponse(st) =
                    std::mem::replace(&mut sa.state, State::Closed)
                {
                    self.initiator_auth_response(now, sa, st, &p);
                }
            }
            Req::Dpd => self.counters.dpd_probes_answered += 1,
            Req::DeleteIke => self.close(sa, DownReason::DeletedLocally),
            Req::DeleteChild(spis) => {
                for spi in spis {
                    if let Some(pos) = sa.children.iter().position(|c| c.spi_in == spi) {
                        let c = sa.children.remove(pos);
                        self.events.push_back(Event::ChildSaDeleted {
                            ike_sa: IkeSaId(sa.id),
                            spi_in: c.spi_in,
                            spi_out: c.spi_out,
                            remote: sa.remote,
                        });
                    }
                }
            }
            Req::CreateChild {
                rekey_of,
                spi_in,
                nonce_i,
                dh,
            } => self.create_child_response(now, sa, &p, rekey_of, spi_in, &nonce_i, dh),
            Req::RekeyIke {
                new_spi,
                nonce_i,
                dh,
            } => self.rekey_ike_response(now, sa, &p, new_spi, &nonce_i, dh),
        }
    }

    // ---- starting local requests (window size 1, §2.3) -------------------

    pub(super) fn pump(&mut self, now: Instant, sa: &mut IkeSa) {
        if sa.pending.is_some() || !matches!(sa.state, State::Established(_)) {
            return;
        }
        while let Some(q) = sa.queue.pop_front() {
            if self.start(now, sa, q) {
                return;
            }
        }
    }

    /// Starts one queued request; false if it became moot.
    pub(super) fn start(&mut self, now: Instant, sa: &mut IkeSa, q: Queued) -> bool {
        match q {
            Queued::Dpd => {
                self.start_dpd(now, sa);
                true
            }
            Queued::DeleteIke => {
                self.start_delete_ike(now, sa);
                true
            }
            Queued::DeleteChild(spi) => self.start_delete_child(now, sa, spi),
            Queued::RekeyChild(old) => self.start_rekey_child(now, sa, old),
            Queued::RekeyIke => self.start_rekey_ike(now, sa),
        }
    }
}
