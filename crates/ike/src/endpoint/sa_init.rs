//! The IKE_SA_INIT exchange (RFC 7296 §1.2, §2.6, §2.7, §2.10, §2.23):
//! both roles, COOKIE and INVALID_KE_PAYLOAD retries, NAT detection.

use super::*;

/// How many INVALID_KE_PAYLOAD / COOKIE round trips we follow before giving
/// up, so a misbehaving responder cannot keep us looping.
const MAX_INIT_RETRIES: u8 = 3;

impl Endpoint {
    pub(super) fn send_sa_init(&mut self, now: Instant, sa: &mut IkeSa) -> Result<(), Error> {
        let State::ExpectSaInitResponse(st) = &sa.state else {
            return Ok(());
        };
        let mut payloads = Vec::new();
        if let Some(c) = &st.cookie {
            // §2.6: the cookie MUST be the first payload.
            payloads.push(Payload::Notify(Notify::new(NotifyType::COOKIE, c.clone())));
        }
        payloads.push(Payload::Sa(proposal::ike_offer(
            &self.config.ike_proposals,
            None,
        )));
        payloads.push(Payload::Ke(KeyExchange {
            dh_group: DhId::from(st.dh.alg()),
            data: st.dh.public_value().to_vec(),
        }));
        payloads.push(Payload::Nonce(st.nonce_i.clone()));
        let src = self.nat_source_hash(sa.spi_i, 0, sa.local);
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            src,
        )));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_hash(sa.spi_i, 0, sa.remote).to_vec(),
        )));
        let msg = Message {
            header: Header {
                spi_i: sa.spi_i,
                spi_r: 0,
                next_payload: PayloadType::NONE,
                version: 0x20,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
                length: 0,
            },
            payloads,
        };
        let bytes = msg.emit()?;
        sa.next_request_id = 1;
        sa.pending = Some(Pending {
            message_id: 0,
            bytes: bytes.clone(),
            tries: 1,
            next_at: now + self.retransmit_interval(&Req::SaInit, 1),
            req: Req::SaInit,
        });
        self.tx(sa, bytes);
        Ok(())
    }

    /// Responder: an IKE_SA_INIT request (§1.2). Refusals are answered with
    /// an unprotected notify (§2.21.1) and leave no state.
    pub(super) fn responder_sa_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) {
        // A retransmitted request: answer from the cache (§2.1).
        if let Some(id) = self.sas.half_open(remote, h.spi_i) {
            if let Some(sa) = self.sas.get(id)
                && let Some((0, resp)) = &sa.last_response
            {
                let resp = resp.clone();
                self.transmits.push_back(Transmit {
                    local,
                    remote,
                    bytes: resp,
                });
            }
            return;
        }
        if h.spi_r != 0 {
            return;
        }
        // §2.6 flood resistance, before any D-H work: a cap per source here, the hard cap
        // (which evicts the oldest) once the request is accepted. Past the per-source cap a cookie is demanded rather than the request dropped: a
        // blind attacker spoofing a victim's address could otherwise fill the victim's quota
        // and lock it out, but cannot return the cookie (it goes to the victim, whose own
        // retry carries it). With cookies a source may hold twice the cap, no more.
        let from_source = self.sas.half_open_from(remote.ip());
        let per_source = self.config.max_half_open_per_peer;
        if from_source >= per_source.saturating_mul(2) {
            self.counters.half_open_refused += 1;
            return;
        }
        let busy_source = from_source >= per_source;
        if let Err(e) = self.accept_sa_init(now, local, remote, h, bytes, busy_source) {
            self.plain_reply(local, remote, h, 0, e.reply());
        }
    }

    /// Validates an IKE_SA_INIT request, and if it is acceptable creates the
    /// half-open SA and sends our response. `Ok` also covers the silent
    /// drops (a failure of our own crypto provider).
    fn accept_sa_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
        busy_source: bool,
    ) -> Result<(), ExchangeError> {
        let msg = Message::parse(bytes).map_err(ExchangeError::Malformed)?;
        let p = &msg.payloads;
        let (Some(proposals), Some(ke), Some(nonce_i)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            return Err(ExchangeError::InvalidSyntax);
        };
        // §2.10: nonces are 16..=256 bytes.
        if !(16..=256).contains(&nonce_i.len()) {
            return Err(ExchangeError::InvalidSyntax);
        }
        self.check_cookie(now, remote, h, p, nonce_i, busy_source)?;
        let (suite, chosen) = proposal::select_ike(&self.config.ike_proposals, proposals)
            .ok_or(ExchangeError::NoProposalChosen)?;
        if ke.dh_group != DhId::from(suite.dh) {
            // §1.2: tell the initiator which group we want.
            return Err(ExchangeError::InvalidKePayload(suite.dh));
        }
        // The KE data's length is checked here, cheaply; whether it is a point on the
        // curve only the D-H computation tells (RFC 5903 §7, RFC 8031 §2.1).
        if ke.data.len() != suite.dh.public_len() {
            return Err(ExchangeError::InvalidSyntax);
        }
        // The request passed every check (a cookie too, past the threshold): only now may
        // it take a half-open slot. At the hard cap the oldest half-open SA gives way rather
        // than the newcomer: a flood that returns cookies (so from addresses it really has)
        // would otherwise hold the whole table for the half-open timeout and lock every new
        // peer out; this way a half-open SA lives as long as the flood takes to send the
        // cap's worth of valid requests, far longer than an honest peer's round trip to
        // IKE_AUTH.
        if self.sas.half_open_count() >= self.config.max_half_open
            && let Some(oldest) = self
                .sas
                .oldest_half_open()
                .and_then(|id| self.sas.remove(id))
        {
            self.sas.forget(&oldest);
            self.counters.half_open_evicted += 1;
        }
        // Our private scalar, SPI and Nr now, in the order the inline code always drew
        // them: the job that computes the keys needs no randomness (jobs.rs).
        let mut scalar = Secret::zeroed(suite.dh.private_len());
        self.rng.fill(scalar.expose_mut());
        let id = self.new_spi();
        let nonce_r = self.nonce();
        let (nat_local, nat_remote) = nat_detect(p, h.spi_i, 0, local, remote);
        let mut sa = IkeSa::new(id, false, local, remote, now, State::Closed);
        sa.spi_i = h.spi_i;
        sa.nat_local = nat_local || self.config.force_encap;
        sa.nat_remote = nat_remote;
        sa.expect_request_id = 1;
        self.next_job = self.next_job.wrapping_add(1);
        let st = ExpectSaInitKeys {
            job: self.next_job,
            request: h.clone(),
            init_request: bytes.to_vec(),
            nonce_i: nonce_i.clone(),
            nonce_r,
            suite,
            chosen,
            nat_source: self.nat_source_hash(h.spi_i, id, local),
            deadline: now + self.config.half_open_timeout,
        };
        self.start_sa_init_keys(sa, st, scalar, ke.data.clone());
        Ok(())
    }

    /// Our NAT_DETECTION_SOURCE_IP data (§2.23); random when we pretend to
    /// be behind a NAT to force UDP encapsulation.
    fn nat_source_hash(&mut self, spi_i: u64, spi_r: u64, local: SocketAddr) -> Vec<u8> {
        if self.config.force_encap {
            let mut b = vec![0u8; 20];
            self.rng.fill(&mut b);
            b
        } else {
            nat_hash(spi_i, spi_r, local).to_vec()
        }
    }

    /// Initiator: follows a responder's COOKIE (§2.6) or INVALID_KE_PAYLOAD
    /// (§1.2) by sending IKE_SA_INIT again, at most `MAX_INIT_RETRIES`
    /// times. Returns the state back when the response is neither.
    fn sa_init_retry(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        mut st: ExpectSaInitResponse,
        p: &[Payload],
    ) -> Option<ExpectSaInitResponse> {
        if let Some(c) = find_notify(p, NotifyType::COOKIE) {
            // §2.6: retry with the cookie first, everything else unchanged.
            if st.retries < MAX_INIT_RETRIES && (1..=64).contains(&c.data.len()) {
                st.retries += 1;
                st.cookie = Some(c.data.clone());
                sa.state = State::ExpectSaInitResponse(st);
                let _ = self.send_sa_init(now, sa);
            } else {
                // Unauthenticated (§2.21.1): a bad or endless cookie may be forged; keep
                // waiting for a usable response.
                Self::keep_waiting(sa, st, NotifyType::COOKIE);
            }
            return None;
        }
        if let Some(n) = find_notify(p, NotifyType::INVALID_KE_PAYLOAD) {
            // §1.2: retry with the group the responder asked for, if we
            // offered it (otherwise the responder is misbehaving).
            let group = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(u16::from_be_bytes)
                .and_then(DhAlg::from_ike_group);
            let offered = group.filter(|g| {
                self.config.ike_proposals.iter().any(|pr| pr.dh == *g) && *g != st.dh.alg()
            });
            match (offered, st.retries < MAX_INIT_RETRIES) {
                (Some(g), true) => match DhPrivate::generate(g, self.rng.as_mut()) {
                    Ok(dh) => {
                        st.dh = dh;
                        st.retries += 1;
                        sa.state = State::ExpectSaInitResponse(st);
                        let _ = self.send_sa_init(now, sa);
                    }
                    // Our own crypto provider failed: say so (the node backs off).
                    Err(_) => self.events.push_back(Event::EstablishFailed {
                        remote: sa.remote,
                        reason: NotifyType::INVALID_KE_PAYLOAD,
                    }),
                },
                // A group we never offered, or one retry too many: unauthenticated, so maybe
                // forged (§2.21.1); keep waiting.
                _ => Self::keep_waiting(sa, st, NotifyType::INVALID_KE_PAYLOAD),
            }
            return None;
        }
        Some(st)
    }

    /// Initiator: an IKE_SA_INIT response we cannot act on. The request stays
    /// pending (and is retransmitted); `reason` is what the timeout reports.
    fn keep_waiting(sa: &mut IkeSa, mut st: ExpectSaInitResponse, reason: NotifyType) {
        st.refused = Some(reason);
        sa.state = State::ExpectSaInitResponse(st);
    }

    /// Initiator: the IKE_SA_INIT response (§1.2): the chosen proposal, KE and
    /// Nr give the keys (§2.14), NAT detection (§2.23) runs, then IKE_AUTH.
    pub(super) fn initiator_sa_init_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        st: ExpectSaInitResponse,
        h: &Header,
        bytes: &[u8],
        p: &[Payload],
    ) {
        // §2.6, §1.2: a COOKIE or INVALID_KE_PAYLOAD answer means "ask again".
        let Some(st) = self.sa_init_retry(now, sa, st, p) else {
            return;
        };
        // §2.21.1: an IKE_SA_INIT response is unauthenticated, so an error notify in it (or
        // an answer we cannot use) may be forged by anyone on the path. The exchange keeps
        // waiting for a valid response until it times out, and only then reports what the
        // last refusal said.
        if let Some(e) = first_error(p) {
            return Self::keep_waiting(sa, st, e);
        }
        let (Some(props), Some(ke), Some(nonce_r)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            return Self::keep_waiting(sa, st, NotifyType::INVALID_SYNTAX);
        };
        let Some(suite) = proposal::accept_ike_reply(&self.config.ike_proposals, props) else {
            return Self::keep_waiting(sa, st, NotifyType::NO_PROPOSAL_CHOSEN);
        };
        if suite.dh != st.dh.alg()
            || ke.dh_group != DhId::from(suite.dh)
            || h.spi_r == 0
            || !(16..=256).contains(&nonce_r.len())
        {
            return Self::keep_waiting(sa, st, NotifyType::INVALID_SYNTAX);
        }
        let Ok(gir) = st.dh.agree(&ke.data) else {
            return Self::keep_waiting(sa, st, NotifyType::INVALID_SYNTAX);
        };
        // Message 1 for AUTH (§2.15) is the request we last sent, cookie
        // and corrected KE included.
        let msg1 = sa.pending.take().map(|p| p.bytes).unwrap_or_default();
        sa.spi_r = h.spi_r;
        let Ok(keys) = IkeKeys::derive(
            suite.prf,
            &st.nonce_i,
            nonce_r,
            gir.expose(),
            sa.spi_i,
            sa.spi_r,
        ) else {
            return self.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason: NotifyType::INVALID_SYNTAX,
            });
        };
        sa.suite = Some(suite);
        let auth_keys = AuthKeys::of(&keys);
        sa.keys = Some(keys);
        let (nat_local, nat_remote) = nat_detect(p, sa.spi_i, sa.spi_r, sa.local, sa.remote);
        sa.nat_local = nat_local || self.config.force_encap;
        sa.nat_remote = nat_remote;
        if sa.udp_encap() {
            // §2.23: float to the NAT-T port once a NAT is seen.
            sa.local = SocketAddr::new(sa.local.ip(), self.config.natt_port);
            sa.remote = SocketAddr::new(sa.remote.ip(), self.config.natt_port);
        }
        self.send_auth_request(
            now,
            sa,
            auth_keys,
            (st.nonce_i, nonce_r.clone()),
            &msg1,
            bytes.to_vec(),
        );
    }
}

fn nat_detect(
    p: &[Payload],
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> (bool, bool) {
    let src: Vec<&Notify> = notifies(p)
        .filter(|n| n.ty == NotifyType::NAT_DETECTION_SOURCE_IP)
        .collect();
    let dst: Vec<&Notify> = notifies(p)
        .filter(|n| n.ty == NotifyType::NAT_DETECTION_DESTINATION_IP)
        .collect();
    if src.is_empty() || dst.is_empty() {
        return (false, false);
    }
    let want_src = nat_hash(spi_i, spi_r, remote);
    let want_dst = nat_hash(spi_i, spi_r, local);
    let nat_remote = !src.iter().any(|n| n.data == want_src);
    let nat_local = !dst.iter().any(|n| n.data == want_dst);
    (nat_local, nat_remote)
}
