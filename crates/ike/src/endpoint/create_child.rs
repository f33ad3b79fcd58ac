//! Child SAs (RFC 7296 §1.3.1, §1.3.3, §2.8, §2.8.1, §2.9, §2.17, §2.23.1):
//! the first one in IKE_AUTH, CREATE_CHILD_SA for new and rekeyed Child SAs,
//! traffic selector narrowing and key installation.

use super::*;

/// Child SAs one IKE SA may hold when the peer asks for another (new or rekey; RFC 7296
/// §3.10.1 NO_ADDITIONAL_SAS past it). DMVPN needs one, two while a rekey overlaps, a few
/// more if rekeys collide; every holder of the shared PSK is an authenticated peer, and each
/// Child SA costs an inbound SPI, keys and dataplane entries (review of issue 13).
pub const MAX_CHILD_SAS_PER_IKE_SA: usize = 8;

/// §2.23.1: in transport mode behind a NAT the peer's selector names its
/// private address; accept any single host then, else require the address
/// the IKE SA runs over.
fn pick_ts(list: &[TrafficSelector], addr: IpAddr, natted: bool) -> Option<TrafficSelector> {
    if let Some(t) = list.iter().find(|t| t.admits_gre_host(addr)) {
        // Narrow to the one host and GRE (§2.9).
        return Some(TrafficSelector::gre_host(if t.start == t.end {
            t.start
        } else {
            addr
        }));
    }
    if natted {
        return list
            .iter()
            .find(|t| {
                t.start == t.end
                    && (t.ip_protocol == 0 || t.ip_protocol == 47)
                    && t.start.is_ipv4() == addr.is_ipv4()
            })
            .map(|t| TrafficSelector::gre_host(t.start));
    }
    None
}

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn install_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        spi_in: u32,
        spi_out: u32,
        suite: EspSuite,
        keys: crate::keys::ChildKeys,
        replaces: Option<u32>,
        initiator: bool,
    ) {
        // i_to_r is the initiator's outbound (§2.17: initiator→responder
        // first), where "initiator" is the exchange's initiator.
        let (key_in, key_out) = (keys.i_to_r, keys.r_to_i);
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.child, lt.child_margin);
        // An IKE SA holds one Child SA, two during a rekey: room for exactly that, not the
        // four a first push reserves (a hub keeps one of these per spoke).
        sa.children.reserve_exact(1);
        sa.children.push(Child {
            spi_in,
            spi_out,
            suite,
            created: now,
            rekey_at,
            expire_at: now + lt.child,
            status: ChildStatus::Active,
            peer_rekey: None,
        });
        self.events
            .push_back(Event::ChildSaInstalled(ChildSaInstalled {
                ike_sa: IkeSaId(sa.id),
                spi_in,
                spi_out,
                key_in,
                key_out,
                mode: Mode::Transport,
                esn: suite.esn,
                udp_encap: sa.udp_encap(),
                local: sa.local,
                remote: sa.remote,
                replaces,
                initiator,
            }));
    }

    /// Builds a responder's Child SA from SA/TS/nonces (IKE_AUTH or
    /// CREATE_CHILD_SA). Returns the reply payloads (without Nr/KE).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn child_responder(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        nonce_i: &[u8],
        nonce_r: &[u8],
        pfs: Option<(DhAlg, Secret)>,
        replaces: Option<u32>,
    ) -> Result<Reply, ExchangeError> {
        let prf = sa.prf().ok_or(ExchangeError::InvalidSyntax)?;
        let sk_d = sa
            .keys
            .as_ref()
            .map(|k| k.sk_d.clone())
            .ok_or(ExchangeError::InvalidSyntax)?;
        // docs/interop-notes.md §19: transport mode or nothing for GRE.
        if find_notify(p, NotifyType::USE_TRANSPORT_MODE).is_none() {
            return Err(ExchangeError::NoProposalChosen);
        }
        let proposals = sa_of(p).ok_or(ExchangeError::InvalidSyntax)?;
        let (suite, spi_out, mut chosen) =
            proposal::select_esp(&self.config.esp, proposals, pfs.as_ref().map(|(g, _)| *g))
                .ok_or(ExchangeError::NoProposalChosen)?;
        let (Some(tsi), Some(tsr)) = ts_of(p) else {
            return Err(ExchangeError::TsUnacceptable);
        };
        // §2.9: narrow to what our policy (one GRE host each way) allows.
        let tsi =
            pick_ts(tsi, sa.remote.ip(), sa.nat_remote).ok_or(ExchangeError::TsUnacceptable)?;
        let tsr = pick_ts(tsr, sa.local.ip(), sa.nat_local).ok_or(ExchangeError::TsUnacceptable)?;
        let spi_in = self.new_child_spi(sa.id);
        chosen.spi = spi_in.to_be_bytes().to_vec();
        let keys = child_keys(
            prf,
            &sk_d,
            pfs.as_ref().map(|(_, s)| s.expose()),
            nonce_i,
            nonce_r,
        )
        .map_err(|_| ExchangeError::NoProposalChosen)?;
        // We are the exchange responder: inbound is i→r, as `child_keys` orders them.
        self.install_child(now, sa, spi_in, spi_out, suite, keys, replaces, false);
        Ok(vec![
            notify(NotifyType::USE_TRANSPORT_MODE),
            Payload::Sa(vec![chosen]),
            Payload::TsI(vec![tsi]),
            Payload::TsR(vec![tsr]),
        ])
    }

    /// CREATE_CHILD_SA request (§1.3): new child, child rekey, IKE rekey.
    pub(super) fn on_create_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
    ) -> Result<Reply, ExchangeError> {
        let nonce_i = nonce_of(p).cloned().ok_or(ExchangeError::InvalidSyntax)?;
        // §2.10: nonces are 16..=256 bytes.
        if !(16..=256).contains(&nonce_i.len()) {
            return Err(ExchangeError::InvalidSyntax);
        }
        let proposals = sa_of(p).ok_or(ExchangeError::InvalidSyntax)?;
        if proposals.iter().any(|pr| pr.protocol == ProtocolId::IKE) {
            return self.on_rekey_ike_request(now, sa, p, &nonce_i);
        }
        // Before any D-H work (PFS): the cap costs the peer's request nothing of ours.
        if sa.children.len() >= MAX_CHILD_SAS_PER_IKE_SA {
            self.counters.child_sas_refused += 1;
            return Err(ExchangeError::NoAdditionalSas);
        }
        let nonce_r = self.nonce();
        let replaces = Self::rekeyed_child(sa, p)?;
        // Our policy demands PFS on CREATE_CHILD_SA: no KE, no child.
        if self.config.esp.pfs.is_some() && ke_of(p).is_none() {
            return Err(ExchangeError::NoProposalChosen);
        }
        // PFS: a KE payload means the peer wants a fresh D-H.
        let (ke_reply, pfs) = match ke_of(p) {
            Some(ke) => {
                let (reply, shared) = self.child_pfs(ke)?;
                (Some(reply), Some(shared))
            }
            None => (None, None),
        };
        let mut c = self.child_responder(now, sa, p, &nonce_i, &nonce_r, pfs, replaces)?;
        if let (Some(old_in), Some(new)) = (replaces, sa.children.last().map(|c| c.spi_in))
            && let Some(old) = sa.child_by_in(old_in)
        {
            if old.status == ChildStatus::Rekeying {
                // §2.8.1: simultaneous rekey; remember the
                // peer's nonces to settle it once ours completes.
                old.peer_rekey = Some((new, nonce_i.clone(), nonce_r.clone()));
            } else {
                old.status = ChildStatus::Replaced;
            }
        }
        // Order: N(USE_TRANSPORT_MODE), SA, Nr, [KE], TSi, TSr.
        let ts = c.split_off(2);
        c.push(Payload::Nonce(nonce_r));
        if let Some(k) = ke_reply {
            c.push(k);
        }
        c.extend(ts);
        Ok(c)
    }

    /// The inbound SPI of the Child SA a REKEY_SA notify names (§1.3.3), if
    /// the request rekeys one.
    fn rekeyed_child(sa: &IkeSa, p: &[Payload]) -> Result<Option<u32>, ExchangeError> {
        let Some(n) =
            notifies(p).find(|n| n.ty == NotifyType::REKEY_SA && n.protocol == ProtocolId::ESP)
        else {
            return Ok(None);
        };
        // The SPI in REKEY_SA is the peer's inbound = our outbound
        // (§1.3.3).
        let spi =
            <[u8; 4]>::try_from(n.spi.as_slice()).map_err(|_| ExchangeError::InvalidSyntax)?;
        let spi = u32::from_be_bytes(spi);
        match sa.children.iter().find(|c| c.spi_out == spi) {
            Some(c) => Ok(Some(c.spi_in)),
            // §2.25: the peer rekeys something we already deleted.
            None => Err(ExchangeError::ChildSaNotFound(spi)),
        }
    }

    /// Our half of a Child SA's PFS exchange (§1.3.1): our KE payload and
    /// the shared secret.
    fn child_pfs(&mut self, ke: &KeyExchange) -> Result<(Payload, (DhAlg, Secret)), ExchangeError> {
        let Some(g) = ke.dh_group.alg() else {
            return Err(ExchangeError::InvalidKePayload(
                self.config.esp.pfs.unwrap_or(DhAlg::Ecp256),
            ));
        };
        let dh = DhPrivate::generate(g, self.rng.as_mut())
            .map_err(|_| ExchangeError::NoProposalChosen)?;
        let gir = dh
            .agree(&ke.data)
            .map_err(|_| ExchangeError::InvalidSyntax)?;
        let reply = Payload::Ke(KeyExchange {
            dh_group: ke.dh_group,
            data: dh.public_value().to_vec(),
        });
        Ok((reply, (g, gir)))
    }

    /// Validates a Child SA response and installs it (initiator side).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn child_initiator_finish(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        spi_in: u32,
        nonce_i: &[u8],
        nonce_r: &[u8],
        pfs: Option<(DhAlg, Secret)>,
        replaces: Option<u32>,
    ) -> Result<(), NotifyType> {
        if let Some(e) = first_error(p) {
            return Err(e);
        }
        let proposals = sa_of(p).ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let (suite, spi_out) =
            proposal::accept_esp_reply(&self.config.esp, proposals, pfs.as_ref().map(|(g, _)| *g))
                .ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        if find_notify(p, NotifyType::USE_TRANSPORT_MODE).is_none() {
            // docs/interop-notes.md §19: the responder installed tunnel mode. Never use
            // it; delete what the peer created (§1.4.1).
            sa.queue.push_back(Queued::DeleteChild(spi_in));
            sa.children.reserve_exact(1);
            sa.children.push(Child {
                spi_in,
                spi_out,
                suite,
                created: now,
                rekey_at: now,
                expire_at: now,
                status: ChildStatus::Replaced,
                peer_rekey: None,
            });
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        }
        let (Some(tsi), Some(tsr)) = ts_of(p) else {
            return Err(NotifyType::TS_UNACCEPTABLE);
        };
        if pick_ts(tsi, sa.local.ip(), sa.nat_local).is_none()
            || pick_ts(tsr, sa.remote.ip(), sa.nat_remote).is_none()
        {
            sa.queue.push_back(Queued::DeleteChild(spi_in));
            return Err(NotifyType::TS_UNACCEPTABLE);
        }
        let prf = sa.prf().ok_or(NotifyType::INVALID_SYNTAX)?;
        let sk_d = sa
            .keys
            .as_ref()
            .map(|k| k.sk_d.clone())
            .ok_or(NotifyType::INVALID_SYNTAX)?;
        let k = child_keys(
            prf,
            &sk_d,
            pfs.as_ref().map(|(_, s)| s.expose()),
            nonce_i,
            nonce_r,
        )
        .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)?;
        // We initiated this exchange: inbound is r→i.
        let keys = crate::keys::ChildKeys {
            i_to_r: k.r_to_i,
            r_to_i: k.i_to_r,
        };
        self.install_child(now, sa, spi_in, spi_out, suite, keys, replaces, true);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_child_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        rekey_of: Option<u32>,
        spi_in: u32,
        nonce_i: &[u8],
        dh: Option<DhPrivate>,
    ) {
        let nonce_r = nonce_of(p).cloned().unwrap_or_default();
        let mut pfs = None;
        if let Some(dh) = &dh {
            match ke_of(p).and_then(|k| dh.agree(&k.data).ok()) {
                Some(g) => pfs = Some((dh.alg(), g)),
                None => {
                    if let Some(old) = rekey_of.and_then(|s| sa.child_by_in(s)) {
                        old.status = ChildStatus::Active;
                    }
                    self.events.push_back(Event::ChildSaFailed {
                        ike_sa: IkeSaId(sa.id),
                        remote: sa.remote,
                        reason: first_error(p).unwrap_or(NotifyType::INVALID_KE_PAYLOAD),
                    });
                    return;
                }
            }
        }
        match self.child_initiator_finish(now, sa, p, spi_in, nonce_i, &nonce_r, pfs, rekey_of) {
            Ok(()) => {
                let Some(old_in) = rekey_of else { return };
                let Some(old) = sa.child_by_in(old_in) else {
                    return;
                };
                old.status = ChildStatus::Replaced;
                let victim = match old.peer_rekey.take() {
                    // §2.8.1: both rekeyed. The SA created with the lowest of
                    // the four nonces is redundant and is deleted by whoever
                    // created it; the other side deletes the old SA.
                    Some((_peer_new, pi, pr)) => {
                        let ours_lowest =
                            nonce_i.min(nonce_r.as_slice()) < pi.as_slice().min(pr.as_slice());
                        if ours_lowest { spi_in } else { old_in }
                    }
                    None => old_in,
                };
                if victim == spi_in {
                    // Keep the old one until the peer deletes it.
                    if let Some(c) = sa.child_by_in(spi_in) {
                        c.status = ChildStatus::Replaced;
                    }
                }
                sa.queue.push_back(Queued::DeleteChild(victim));
            }
            Err(reason) => {
                if let Some(old) = rekey_of.and_then(|s| sa.child_by_in(s)) {
                    old.status = ChildStatus::Active;
                    old.peer_rekey = None;
                }
                self.events.push_back(Event::ChildSaFailed {
                    ike_sa: IkeSaId(sa.id),
                    remote: sa.remote,
                    reason,
                });
            }
        }
    }

    /// Rekeys the Child SA `old` (§1.3.3, §2.8); false if it is gone or busy.
    pub(super) fn start_rekey_child(&mut self, now: Instant, sa: &mut IkeSa, old: u32) -> bool {
        let Some(c) = sa.children.iter().find(|c| c.spi_in == old) else {
            return false;
        };
        if c.status != ChildStatus::Active {
            return false;
        }
        let integ_none = c.suite.integ_none;
        let spi_in = self.new_child_spi(sa.id);
        let nonce_i = self.nonce();
        let dh = match self.config.esp.pfs {
            Some(g) => match DhPrivate::generate(g, self.rng.as_mut()) {
                Ok(d) => Some(d),
                Err(_) => return false,
            },
            None => None,
        };
        // §1.3.3: REKEY_SA carries the SPI we expect in inbound ESP.
        let mut rekey = Notify::new(NotifyType::REKEY_SA, Vec::new());
        rekey.protocol = ProtocolId::ESP;
        rekey.spi = old.to_be_bytes().to_vec();
        let mut payloads = vec![
            Payload::Notify(rekey),
            notify(NotifyType::USE_TRANSPORT_MODE),
            // Same proposal shape the peer used (docs/interop-notes.md §20).
            Payload::Sa(proposal::esp_offer(
                &self.config.esp,
                spi_in,
                dh.as_ref().map(DhPrivate::alg),
                integ_none,
            )),
            Payload::Nonce(nonce_i.clone()),
        ];
        if let Some(d) = &dh {
            payloads.push(Payload::Ke(KeyExchange {
                dh_group: DhId::from(d.alg()),
                data: d.public_value().to_vec(),
            }));
        }
        payloads.push(Payload::TsI(vec![TrafficSelector::gre_host(sa.local.ip())]));
        payloads.push(Payload::TsR(vec![TrafficSelector::gre_host(
            sa.remote.ip(),
        )]));
        if let Some(c) = sa.child_by_in(old) {
            c.status = ChildStatus::Rekeying;
        }
        self.request(
            now,
            sa,
            ExchangeType::CREATE_CHILD_SA,
            &payloads,
            Req::CreateChild {
                rekey_of: Some(old),
                spi_in,
                nonce_i,
                dh,
            },
        );
        true
    }
}
