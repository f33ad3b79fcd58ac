//! The IKE_AUTH exchange with PSK authentication (RFC 7296 §1.2, §2.15,
//! §2.16) and INITIAL_CONTACT (§2.4).

use super::*;

/// Established IKE SAs one peer address and port may hold with us: its SA, the twin of a
/// rekey or of a crossed setup, a replacement after a restart. Past it, IKE_AUTH is refused
/// with TEMPORARY_FAILURE (counted, [`Counters::ike_sas_refused`]).
pub const MAX_IKE_SAS_PER_SOURCE: usize = 4;

impl Endpoint {
    /// §2.15: our AUTH payload, signing `our_message` (the IKE_SA_INIT
    /// message we sent) with the peer's nonce and prf(SK_p, IDours).
    fn our_psk_auth(
        keys: &AuthKeys,
        we_initiated: bool,
        psk: &Secret,
        our_message: &[u8],
        peer_nonce: &[u8],
        our_id: &Identification,
    ) -> Payload {
        let sk_p = if we_initiated {
            &keys.sk_pi
        } else {
            &keys.sk_pr
        };
        let data = psk_auth(
            keys.prf,
            psk.expose(),
            our_message,
            peer_nonce,
            sk_p,
            our_id,
        );
        Payload::Auth(Authentication {
            method: AuthMethod::SHARED_KEY_MIC,
            data: data.expose().to_vec(),
        })
    }

    /// §2.15, §2.16: the one check of a peer's AUTH payload. It MUST be a
    /// shared key MIC computed with the key our keyring holds for the
    /// peer's address and identity, over the IKE_SA_INIT message the peer
    /// sent, our nonce and prf(SK_p of the peer, IDpeer), compared in
    /// constant time. Returns the key when it verified.
    fn verify_peer_psk(
        &self,
        sa: &IkeSa,
        keys: &AuthKeys,
        peer_id: &Identification,
        auth: &Authentication,
        peer_message: &[u8],
        our_nonce: &[u8],
    ) -> Option<Secret> {
        if auth.method != AuthMethod::SHARED_KEY_MIC {
            return None;
        }
        let psk = self.config.keyring.lookup(sa.remote.ip(), Some(peer_id))?;
        let sk_p = if sa.initiator {
            &keys.sk_pr
        } else {
            &keys.sk_pi
        };
        let want = psk_auth(
            keys.prf,
            psk.expose(),
            peer_message,
            our_nonce,
            sk_p,
            peer_id,
        );
        constant_time_eq(want.expose(), &auth.data).then(|| psk.clone())
    }

    /// A peer that authenticated with a key many peers share (the reference deployment's
    /// wildcard PSK) proved only that it belongs to the DMVPN; any member could claim any
    /// identity. An address identity is believed only where the address can be seen: with
    /// no NAT in front of the peer (§2.23 NAT detection) it MUST be the address the IKE SA
    /// comes from, so one spoke cannot pose as another (whose SAs INITIAL_CONTACT would then
    /// clear, and whose name `show ike` would print). Behind a NAT the identity is the
    /// peer's private address and cannot be checked; other identity types are not bound.
    fn identity_bound(&self, sa: &IkeSa, peer_id: &Identification) -> Result<(), String> {
        let source = sa.remote.ip();
        match peer_id.ip() {
            Some(claimed)
                if !sa.nat_remote
                    && claimed != source
                    && self.config.keyring.is_shared(source, Some(peer_id)) =>
            {
                Err(format!(
                    "identity {claimed} is not the address it comes from ({source}) and its key is shared"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Initiator: sends IKE_AUTH once IKE_SA_INIT completed (§1.2): IDi,
    /// AUTH over message 1 (§2.15: the request we last sent, cookie and
    /// corrected KE included), [INITIAL_CONTACT] and the first Child SA.
    pub(super) fn send_auth_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        keys: AuthKeys,
        (nonce_i, nonce_r): (Vec<u8>, Vec<u8>),
        msg1: &[u8],
        init_response: Vec<u8>,
    ) {
        let Some(psk) = self.config.keyring.lookup(sa.remote.ip(), None).cloned() else {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: "no pre-shared key for peer".into(),
            });
            return;
        };
        let idi = self.local_id(sa);
        let auth = Self::our_psk_auth(&keys, true, &psk, msg1, &nonce_r, &idi);
        let child_spi = self.new_child_spi(sa.id);
        let mut payloads = vec![Payload::IdI(idi), auth];
        if self.config.initial_contact && self.first_contact(sa) {
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
            nonce_i,
            nonce_r,
            init_response,
            child_spi,
            keys,
        });
        self.request(now, sa, ExchangeType::IKE_AUTH, &payloads, Req::Auth);
    }

    /// Responder side of IKE_AUTH (§1.2, §2.15). The half-open state is
    /// consumed: on any refusal the SA stays Closed.
    pub(super) fn responder_auth(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        st: ExpectAuthRequest,
        p: &[Payload],
    ) -> Result<Reply, ExchangeError> {
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
            return Err(ExchangeError::InvalidSyntax);
        };
        let Some(psk) =
            self.verify_peer_psk(sa, &st.keys, &idi, &auth, &st.init_request, &st.nonce_r)
        else {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: format!("peer {idi} AUTH did not verify"),
            });
            // §2.21.2: AUTHENTICATION_FAILED in the (encrypted) response,
            // then the half-open SA is gone.
            return Err(ExchangeError::AuthenticationFailed);
        };
        if let Err(reason) = self.identity_bound(sa, &idi) {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason,
            });
            return Err(ExchangeError::AuthenticationFailed);
        }
        // Every PSK holder can authenticate, so one must not grow our SA table without
        // bound by opening IKE SA after IKE SA. INITIAL_CONTACT removes the sender's others
        // below, so it is not refused for them.
        if find_notify(p, NotifyType::INITIAL_CONTACT).is_none() && self.sas_full_from(sa.remote) {
            self.counters.ike_sas_refused += 1;
            return Err(ExchangeError::TemporaryFailure);
        }
        let idr = self.local_id(sa);
        let my_auth =
            Self::our_psk_auth(&st.keys, false, &psk, &st.init_response, &st.nonce_i, &idr);
        self.established(now, sa, idi.clone(), psk.clone());
        if find_notify(p, NotifyType::INITIAL_CONTACT).is_some() {
            self.initial_contact(sa.created, sa.id, &idi, sa.remote, sa.nat_remote);
        }
        let mut reply = vec![Payload::IdR(idr), my_auth];
        // The first Child SA; failures here leave the IKE SA up (§1.2).
        match self.child_responder(now, sa, p, &st.nonce_i, &st.nonce_r, None, None) {
            Ok(mut c) => reply.append(&mut c),
            Err(e) => {
                self.events.push_back(Event::ChildSaFailed {
                    ike_sa: IkeSaId(sa.id),
                    remote: sa.remote,
                    reason: e.notify(),
                });
                reply.push(e.payload());
            }
        }
        // (A crossed twin is settled once the response is out: `on_request`.)
        Ok(reply)
    }

    /// Whether `remote` already holds as many established IKE SAs as we allow: from its
    /// address and port (one peer: its SA, a rekey's or a crossed setup's twin, a
    /// replacement), or from its address (many spokes behind one NAT, each its own port).
    fn sas_full_from(&self, remote: SocketAddr) -> bool {
        let (mut same_port, mut same_ip) = (0, 0);
        for &id in self.sas.with_peer(remote.ip()) {
            let Some(s) = self.sas.get(id) else { continue };
            if s.superseded || !matches!(s.state, State::Established(_)) {
                continue;
            }
            same_ip += 1;
            if s.remote.port() == remote.port() {
                same_port += 1;
            }
        }
        same_port >= MAX_IKE_SAS_PER_SOURCE || same_ip >= self.config.max_sas_per_address
    }

    /// The peer is authenticated: the SA is up, with its lifetimes armed.
    fn established(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        remote_id: Identification,
        key: Secret,
    ) {
        sa.remote_id = Some(remote_id.clone());
        sa.auth_key = Some(key);
        sa.authenticated_at = Some(now);
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.ike, lt.ike_margin);
        sa.state = State::Established(Established {
            rekey_at,
            expire_at: now + lt.ike,
            challenge: None,
        });
        self.events.push_back(Event::IkeSaUp {
            sa: IkeSaId(sa.id),
            local: sa.local,
            remote: sa.remote,
            remote_id,
            initiator: sa.initiator,
            nat_local: sa.nat_local,
            nat_remote: sa.nat_remote,
        });
    }

    /// §2.4: INITIAL_CONTACT means the peer has no other SAs with us; drop
    /// every other IKE SA authenticated to the same identity *from the same
    /// address* (and port, behind a NAT). With one wildcard PSK every spoke
    /// can claim any identity, so the identity alone would let one spoke
    /// knock another off, and two honest spokes behind different NATs with
    /// the same private address (their default ID_IPV4_ADDR) would knock each
    /// other off in a loop.
    pub(super) fn initial_contact(
        &mut self,
        since: Instant,
        keep: u64,
        id: &Identification,
        from: SocketAddr,
        natted: bool,
    ) {
        let same_peer =
            |s: &IkeSa| s.remote.ip() == from.ip() && (!natted || s.remote.port() == from.port());
        // An SA we initiated that authenticated while the one carrying INITIAL_CONTACT was
        // being set up is the twin of a crossed setup, not stale state from before the
        // peer's restart: the peer sent INITIAL_CONTACT before it knew of it (crossed.rs
        // settles the two with a DELETE both ends see).
        let twin = |s: &IkeSa| s.initiator && s.authenticated_at.is_some_and(|t| t >= since);
        let stale: Vec<u64> = self
            .sas
            .with_identity(id)
            .iter()
            .copied()
            .filter(|&s| s != keep && self.sas.get(s).is_some_and(|s| same_peer(s) && !twin(s)))
            .collect();
        for sid in stale {
            if let Some(mut s) = self.sas.remove(sid) {
                self.close(&mut s, DownReason::Replaced);
                self.put_back(s);
            }
        }
    }

    /// Initiator: IKE_AUTH response (§1.2, §2.15). The waiting state is
    /// consumed: unless the responder authenticates, the SA stays Closed.
    pub(super) fn initiator_auth_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        st: ExpectAuthResponse,
        p: &[Payload],
    ) {
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
        let verified =
            self.verify_peer_psk(sa, &st.keys, &idr, &auth, &st.init_response, &st.nonce_i);
        let Some(key) = verified else {
            // §2.21.2: the responder's AUTH is bad; tear down (the peer's SA
            // is deleted by an INFORMATIONAL we cannot trust it to accept).
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason: format!("responder {idr} AUTH did not verify"),
            });
            return;
        };
        if let Err(reason) = self.identity_bound(sa, &idr) {
            self.events.push_back(Event::AuthFailed {
                remote: sa.remote,
                reason,
            });
            return;
        }
        self.established(now, sa, idr, key);
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
        // Only now, authenticated, may it take the place of the SA the peer
        // seemed to have lost (the hint that started it was not), and only
        // after its Child SA is installed, so the dataplane always has one to
        // send on. Even if the Child SA failed: the peer has processed our
        // INITIAL_CONTACT, so the old SA is gone there either way.
        self.replace_stale(sa);
        self.settle_crossed(now, sa);
    }
}
