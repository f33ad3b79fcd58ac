//! The IKE_AUTH exchange with PSK authentication (RFC 7296 §1.2, §2.15,
//! §2.16) and INITIAL_CONTACT (§2.4).

use super::*;

impl Endpoint {
    /// Responder side of IKE_AUTH (§1.2, §2.15).
    pub(super) fn responder_auth(&mut self, now: Instant, sa: &mut IkeSa, p: &[Payload]) -> Reply {
        let State::ExpectAuthRequest(st) = std::mem::replace(&mut sa.state, State::Closed) else {
            return Vec::new();
        };
        let (Some(prf), Some(keys)) = (sa.prf(), sa.keys.clone()) else {
            return Vec::new();
        };
        let idi = p.iter().find_map(|p| match p {
            Payload::IdI(i) => Some(i.clone()),
            _ => None,
        });
        let auth = p.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idi), Some(auth)) = (idi, auth) else {
            // Stays Closed: an IKE_AUTH without ID/AUTH cannot be recovered.
            return vec![notify(NotifyType::INVALID_SYNTAX)];
        };
        let psk = self
            .config
            .keyring
            .lookup(sa.remote.ip(), Some(&idi))
            .cloned();
        let ok = auth.method == AuthMethod::SHARED_KEY_MIC
            && psk.as_ref().is_some_and(|psk| {
                let want = psk_auth(
                    prf,
                    psk.expose(),
                    &st.init_request,
                    &st.nonce_r,
                    &keys.sk_pi,
                    &idi,
                );
                constant_time_eq(want.expose(), &auth.data)
            });
        if !ok {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: format!("peer {idi} AUTH did not verify"),
            });
            // §2.21.2: AUTHENTICATION_FAILED in the (encrypted) response,
            // then the half-open SA is gone.
            return vec![notify(NotifyType::AUTHENTICATION_FAILED)];
        }
        let Some(psk) = psk else { return Vec::new() };
        let idr = self.local_id(sa);
        let my_auth = psk_auth(
            prf,
            psk.expose(),
            &st.init_response,
            &st.nonce_i,
            &keys.sk_pr,
            &idr,
        );
        sa.remote_id = Some(idi.clone());
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.ike, lt.ike_margin);
        sa.state = State::Established(Established {
            rekey_at,
            expire_at: now + lt.ike,
        });
        self.half_open.retain(|_, v| *v != sa.id);
        self.events.push_back(Event::IkeSaUp {
            sa: IkeSaId(sa.id),
            local: sa.local,
            remote: sa.remote,
            remote_id: idi.clone(),
            initiator: false,
            nat_local: sa.nat_local,
            nat_remote: sa.nat_remote,
        });
        if find_notify(p, NotifyType::INITIAL_CONTACT).is_some() {
            self.initial_contact(sa.id, &idi);
        }
        let mut reply = vec![
            Payload::IdR(idr),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY_MIC,
                data: my_auth.expose().to_vec(),
            }),
        ];
        // The first Child SA; failures here leave the IKE SA up (§1.2).
        match self.child_responder(now, sa, p, &st.nonce_i, &st.nonce_r, None, None) {
            Ok(mut c) => reply.append(&mut c),
            Err(ty) => {
                self.events.push_back(Event::ChildSaFailed {
                    ike_sa: IkeSaId(sa.id),
                    remote: sa.remote,
                    reason: ty,
                });
                reply.push(notify(ty));
            }
        }
        reply
    }

    /// §2.4: INITIAL_CONTACT means the peer has no other SAs with us; drop
    /// every other IKE SA authenticated to the same identity.
    pub(super) fn initial_contact(&mut self, keep: u64, id: &Identification) {
        let stale: Vec<u64> = self
            .sas
            .values()
            .filter(|s| s.id != keep && s.remote_id.as_ref() == Some(id))
            .map(|s| s.id)
            .collect();
        for sid in stale {
            if let Some(mut s) = self.sas.remove(&sid) {
                self.close(&mut s, DownReason::Replaced);
                self.put_back(s);
            }
        }
    }

    /// Initiator: IKE_AUTH response (§1.2, §2.15).
    pub(super) fn initiator_auth_response(&mut self, now: Instant, sa: &mut IkeSa, p: &[Payload]) {
        let State::ExpectAuthResponse(st) = std::mem::replace(&mut sa.state, State::Closed) else {
            return;
        };
        let (Some(prf), Some(keys)) = (sa.prf(), sa.keys.clone()) else {
            return;
        };
        if find_notify(p, NotifyType::AUTHENTICATION_FAILED).is_some() {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: "peer answered AUTHENTICATION_FAILED".into(),
            });
            return;
        }
        let idr = p.iter().find_map(|p| match p {
            Payload::IdR(i) => Some(i.clone()),
            _ => None,
        });
        let auth = p.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let reason = first_error(p).unwrap_or(NotifyType::INVALID_SYNTAX);
            self.events.push_back(Event::EstablishFailed {
                remote: sa.remote,
                reason,
            });
            return;
        };
        let ok = auth.method == AuthMethod::SHARED_KEY_MIC
            && self
                .config
                .keyring
                .lookup(sa.remote.ip(), Some(&idr))
                .is_some_and(|psk| {
                    let want = psk_auth(
                        prf,
                        psk.expose(),
                        &st.init_response,
                        &st.nonce_i,
                        &keys.sk_pr,
                        &idr,
                    );
                    constant_time_eq(want.expose(), &auth.data)
                });
        if !ok {
            // §2.21.2: the responder's AUTH is bad; tear down (the peer's SA
            // is deleted by an INFORMATIONAL we cannot trust it to accept).
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: format!("responder {idr} AUTH did not verify"),
            });
            return;
        }
        sa.remote_id = Some(idr.clone());
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.ike, lt.ike_margin);
        sa.state = State::Established(Established {
            rekey_at,
            expire_at: now + lt.ike,
        });
        self.events.push_back(Event::IkeSaUp {
            sa: IkeSaId(sa.id),
            local: sa.local,
            remote: sa.remote,
            remote_id: idr,
            initiator: true,
            nat_local: sa.nat_local,
            nat_remote: sa.nat_remote,
        });
        if let Err(reason) = self.child_initiator_finish(
            now,
            sa,
            p,
            st.child_spi,
            &st.nonce_i,
            &st.nonce_r,
            None,
            None,
        ) {
            self.events.push_back(Event::ChildSaFailed {
                ike_sa: IkeSaId(sa.id),
                remote: sa.remote,
                reason,
            });
        }
    }
}
