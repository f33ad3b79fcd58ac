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
        let src = if self.config.force_encap {
            let mut b = vec![0u8; 20];
            self.rng.fill(&mut b);
            b
        } else {
            nat_hash(sa.spi_i, 0, sa.local).to_vec()
        };
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

    pub(super) fn responder_sa_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        h: &Header,
        bytes: &[u8],
    ) {
        // A retransmitted request: answer from the cache (§2.1).
        if let Some(id) = self.half_open.get(&(remote, h.spi_i)) {
            if let Some(sa) = self.sas.get(id) {
                if let Some((0, resp)) = &sa.last_response {
                    let resp = resp.clone();
                    self.transmits.push_back(Transmit {
                        local,
                        remote,
                        bytes: resp,
                    });
                }
            }
            return;
        }
        if h.spi_r != 0 {
            return;
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                // §2.21.1: an error notify in an unprotected response.
                let (ty, data) = e.notify();
                self.plain_reply(
                    local,
                    remote,
                    h,
                    0,
                    vec![Payload::Notify(Notify::new(ty, data))],
                );
                return;
            }
        };
        let p = &msg.payloads;
        let (Some(proposals), Some(ke), Some(nonce_i)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::INVALID_SYNTAX)],
            );
            return;
        };
        // §2.10: nonces are 16..=256 bytes.
        if !(16..=256).contains(&nonce_i.len()) {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::INVALID_SYNTAX)],
            );
            return;
        }
        let half_open = self
            .sas
            .values()
            .filter(|s| matches!(s.state, State::ExpectAuthRequest(_)))
            .count();
        if half_open >= self.config.cookie_threshold {
            self.cookies.rotate(now, self.rng.as_mut());
            let ok = matches!(p.first(), Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE
                && self.cookie_valid(now, &n.data, nonce_i, remote, h.spi_i));
            if !ok {
                let want = self.cookie_for(nonce_i, remote, h.spi_i);
                // §2.6: answer with only the cookie and keep no state.
                self.plain_reply(
                    local,
                    remote,
                    h,
                    0,
                    vec![Payload::Notify(Notify::new(NotifyType::COOKIE, want))],
                );
                return;
            }
        }
        let Some((suite, chosen)) = proposal::select_ike(&self.config.ike_proposals, proposals)
        else {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::NO_PROPOSAL_CHOSEN)],
            );
            return;
        };
        if ke.dh_group != DhId::from(suite.dh) {
            // §1.2: tell the initiator which group we want.
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![Payload::Notify(Notify::new(
                    NotifyType::INVALID_KE_PAYLOAD,
                    suite.dh.ike_group().to_be_bytes().to_vec(),
                ))],
            );
            return;
        }
        let Ok(dh) = DhPrivate::generate(suite.dh, self.rng.as_mut()) else {
            return;
        };
        let Ok(gir) = dh.agree(&ke.data) else {
            self.plain_reply(
                local,
                remote,
                h,
                0,
                vec![notify(NotifyType::INVALID_SYNTAX)],
            );
            return;
        };
        let id = self.new_spi();
        let nonce_r = self.nonce();
        let Ok(keys) = IkeKeys::derive(suite.prf, nonce_i, &nonce_r, gir.expose(), h.spi_i, id)
        else {
            return;
        };
        let (nat_local, nat_remote) = nat_detect(p, h.spi_i, 0, local, remote);
        let mut sa = IkeSa::new(id, false, local, remote, now, State::Closed);
        sa.spi_i = h.spi_i;
        sa.suite = Some(suite);
        sa.keys = Some(keys);
        sa.nat_local = nat_local || self.config.force_encap;
        sa.nat_remote = nat_remote;
        sa.expect_request_id = 1;
        let src = if self.config.force_encap {
            let mut b = vec![0u8; 20];
            self.rng.fill(&mut b);
            b
        } else {
            nat_hash(h.spi_i, id, local).to_vec()
        };
        let reply = vec![
            Payload::Sa(vec![chosen]),
            Payload::Ke(KeyExchange {
                dh_group: DhId::from(suite.dh),
                data: dh.public_value().to_vec(),
            }),
            Payload::Nonce(nonce_r.clone()),
            Payload::Notify(Notify::new(NotifyType::NAT_DETECTION_SOURCE_IP, src)),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_hash(h.spi_i, id, remote).to_vec(),
            )),
        ];
        let Some(resp) = self.plain_reply(local, remote, h, id, reply) else {
            return;
        };
        sa.last_response = Some((0, resp.clone()));
        sa.state = State::ExpectAuthRequest(ExpectAuthRequest {
            nonce_i: nonce_i.clone(),
            nonce_r,
            init_request: bytes.to_vec(),
            init_response: resp,
            deadline: now + self.config.half_open_timeout,
        });
        self.half_open.insert((remote, h.spi_i), id);
        self.sas.insert(id, sa);
    }

    pub(super) fn initiator_sa_init_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        h: &Header,
        bytes: &[u8],
        p: &[Payload],
    ) {
        let State::ExpectSaInitResponse(mut st) = std::mem::replace(&mut sa.state, State::Closed)
        else {
            return;
        };
        if let Some(c) = find_notify(p, NotifyType::COOKIE) {
            // §2.6: retry with the cookie first, everything else unchanged.
            if st.retries < MAX_INIT_RETRIES && (1..=64).contains(&c.data.len()) {
                st.retries += 1;
                st.cookie = Some(c.data.clone());
                sa.state = State::ExpectSaInitResponse(st);
                let _ = self.send_sa_init(now, sa);
            } else {
                self.events.push_back(Event::EstablishFailed {
                    remote: sa.remote,
                    reason: NotifyType::COOKIE,
                });
            }
            return;
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
                (Some(g), true) => {
                    let Ok(dh) = DhPrivate::generate(g, self.rng.as_mut()) else {
                        return;
                    };
                    st.dh = dh;
                    st.retries += 1;
                    sa.state = State::ExpectSaInitResponse(st);
                    let _ = self.send_sa_init(now, sa);
                }
                _ => self.events.push_back(Event::EstablishFailed {
                    remote: sa.remote,
                    reason: NotifyType::INVALID_KE_PAYLOAD,
                }),
            }
            return;
        }
        if let Some(e) = first_error(p) {
            self.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason: e,
            });
            return;
        }
        // Message 1 for AUTH (§2.15) is the request we last sent, cookie
        // and corrected KE included.
        let msg1 = sa.pending.take().map(|p| p.bytes).unwrap_or_default();
        let fail = |me: &mut Self, sa: &IkeSa| {
            me.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason: NotifyType::INVALID_SYNTAX,
            });
        };
        let (Some(props), Some(ke), Some(nonce_r)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            return fail(self, sa);
        };
        let Some(suite) = proposal::accept_ike_reply(&self.config.ike_proposals, props) else {
            return self.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason: NotifyType::NO_PROPOSAL_CHOSEN,
            });
        };
        if suite.dh != st.dh.alg()
            || ke.dh_group != DhId::from(suite.dh)
            || h.spi_r == 0
            || !(16..=256).contains(&nonce_r.len())
        {
            return fail(self, sa);
        }
        let Ok(gir) = st.dh.agree(&ke.data) else {
            return fail(self, sa);
        };
        sa.spi_r = h.spi_r;
        let Ok(keys) = IkeKeys::derive(
            suite.prf,
            &st.nonce_i,
            nonce_r,
            gir.expose(),
            sa.spi_i,
            sa.spi_r,
        ) else {
            return;
        };
        sa.suite = Some(suite);
        sa.keys = Some(keys.clone());
        let (nat_local, nat_remote) = nat_detect(p, sa.spi_i, sa.spi_r, sa.local, sa.remote);
        sa.nat_local = nat_local || self.config.force_encap;
        sa.nat_remote = nat_remote;
        if sa.udp_encap() {
            // §2.23: float to the NAT-T port once a NAT is seen.
            sa.local = SocketAddr::new(sa.local.ip(), self.config.natt_port);
            sa.remote = SocketAddr::new(sa.remote.ip(), self.config.natt_port);
        }
        let Some(psk) = self.config.keyring.lookup(sa.remote.ip(), None).cloned() else {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: "no pre-shared key for peer".into(),
            });
            return;
        };
        let idi = self.local_id(sa);
        let auth = psk_auth(suite.prf, psk.expose(), &msg1, nonce_r, &keys.sk_pi, &idi);
        let child_spi = self.new_child_spi();
        let mut payloads = vec![
            Payload::IdI(idi),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY_MIC,
                data: auth.expose().to_vec(),
            }),
        ];
        if self.config.initial_contact
            && !self.sas.values().any(|s| {
                s.remote.ip() == sa.remote.ip() && matches!(s.state, State::Established(_))
            })
        {
            payloads.push(notify(NotifyType::INITIAL_CONTACT));
        }
        payloads.push(notify(NotifyType::USE_TRANSPORT_MODE));
        // IKE_AUTH never carries a KE, so no PFS here (§1.2).
        payloads.push(Payload::Sa(proposal::esp_offer(
            &self.config.esp,
            child_spi,
            None,
            false,
        )));
        payloads.push(Payload::TsI(vec![TrafficSelector::gre_host(sa.local.ip())]));
        payloads.push(Payload::TsR(vec![TrafficSelector::gre_host(
            sa.remote.ip(),
        )]));
        sa.state = State::ExpectAuthResponse(ExpectAuthResponse {
            nonce_i: st.nonce_i,
            nonce_r: nonce_r.clone(),
            init_response: bytes.to_vec(),
            child_spi,
        });
        self.request(now, sa, ExchangeType::IKE_AUTH, &payloads, Req::Auth);
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
