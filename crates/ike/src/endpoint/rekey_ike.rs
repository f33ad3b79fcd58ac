//! Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 §1.3.2, §2.18) and
//! simultaneous IKE SA rekeys (§2.8.1, §2.8.2).

use super::*;

/// How long an IKE SA replaced by a peer-initiated rekey waits for the
/// peer's DELETE before we drop it ourselves.
const SUPERSEDED_GRACE: Duration = Duration::from_secs(30);

impl Endpoint {
    /// Responder: a CREATE_CHILD_SA request rekeying this IKE SA (§1.3.2).
    pub(super) fn on_rekey_ike_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        nonce_i: &[u8],
    ) -> Result<Reply, ExchangeError> {
        let (Some(old_keys), Some(proposals), Some(ke)) = (sa.keys.clone(), sa_of(p), ke_of(p))
        else {
            return Err(ExchangeError::InvalidSyntax);
        };
        let (suite, mut chosen) = proposal::select_ike(&self.config.ike_proposals, proposals)
            .ok_or(ExchangeError::NoProposalChosen)?;
        let peer_spi =
            <[u8; 8]>::try_from(chosen.spi.as_slice()).map_err(|_| ExchangeError::InvalidSyntax)?;
        let peer_spi = u64::from_be_bytes(peer_spi);
        if ke.dh_group != DhId::from(suite.dh) {
            // §1.3.2 with §1.2: name the group we want.
            return Err(ExchangeError::InvalidKePayload(suite.dh));
        }
        let dh = DhPrivate::generate(suite.dh, self.rng.as_mut())
            .map_err(|_| ExchangeError::NoProposalChosen)?;
        let gir = dh
            .agree(&ke.data)
            .map_err(|_| ExchangeError::InvalidSyntax)?;
        let new_id = self.new_spi();
        let nonce_r = self.nonce();
        // The peer initiated the rekey, so it is the new SA's initiator.
        let Ok(keys) = IkeKeys::derive_rekey(
            old_keys.prf,
            &old_keys.sk_d,
            suite.prf,
            gir.expose(),
            nonce_i,
            &nonce_r,
            peer_spi,
            new_id,
        ) else {
            return Err(ExchangeError::NoProposalChosen);
        };
        chosen.spi = new_id.to_be_bytes().to_vec();
        // §2.8.1: our own rekey of this SA is in flight, so the rekeys
        // collide. The children move to the peer's new SA right away (they
        // stay on a live SA whatever becomes of our exchange); our response
        // then settles which new SA survives (§2.8.2).
        let collision = matches!(
            &sa.pending,
            Some(Pending {
                req: Req::RekeyIke { .. },
                ..
            })
        )
        .then(|| RekeyCollision {
            peer_new: new_id,
            nonce_i: nonce_i.to_vec(),
            nonce_r: nonce_r.clone(),
        });
        self.spawn_rekeyed(now, sa, new_id, peer_spi, false, suite, keys);
        if let State::Deleting(d) = &mut sa.state {
            d.collision = collision;
        }
        Ok(vec![
            Payload::Sa(vec![chosen]),
            Payload::Nonce(nonce_r),
            Payload::Ke(KeyExchange {
                dh_group: DhId::from(suite.dh),
                data: dh.public_value().to_vec(),
            }),
        ])
    }

    /// Creates the IKE SA that replaces `old` (§2.18) and moves the Child
    /// SAs over; the old SA then waits for its DELETE.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn_rekeyed(
        &mut self,
        now: Instant,
        old: &mut IkeSa,
        new_id: u64,
        peer_spi: u64,
        we_initiated: bool,
        suite: IkeSuite,
        keys: IkeKeys,
    ) {
        let lt = self.config.lifetimes;
        let rekey_at = self.rekey_deadline(now, lt.ike, lt.ike_margin);
        let mut n = IkeSa::new(
            new_id,
            we_initiated,
            old.local,
            old.remote,
            now,
            State::Established(Established {
                rekey_at,
                expire_at: now + lt.ike,
                challenge: None,
            }),
        );
        if we_initiated {
            n.spi_r = peer_spi;
        } else {
            n.spi_i = peer_spi;
        }
        n.suite = Some(suite);
        n.keys = Some(keys);
        n.remote_id = old.remote_id.clone();
        n.auth_key = old.auth_key.clone();
        n.nat_local = old.nat_local;
        n.nat_remote = old.nat_remote;
        n.authenticated_at = old.authenticated_at;
        n.last_rx = now;
        n.last_traffic_out = old.last_traffic_out;
        n.children = std::mem::take(&mut old.children);
        old.superseded = true;
        self.put_back(n);
        self.events.push_back(Event::IkeSaRekeyed {
            old: IkeSaId(old.id),
            new: IkeSaId(new_id),
        });
        if !we_initiated {
            old.state = State::Deleting(Deleting {
                deadline: now + SUPERSEDED_GRACE,
                collision: None,
            });
        }
    }

    /// Initiator: the response to our rekey of this IKE SA (§1.3.2, §2.18).
    pub(super) fn rekey_ike_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        p: &[Payload],
        new_spi: u64,
        nonce_i: &[u8],
        dh: DhPrivate,
    ) {
        let (suite, peer_spi, keys, nonce_r) =
            match self.accept_rekey_ike_reply(sa, p, new_spi, nonce_i, dh) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => return,
                Err(reason) => {
                    // Superseded by the peer's colliding rekey (e.g. its
                    // TEMPORARY_FAILURE, §2.8.2): the peer's new SA stands.
                    if !matches!(sa.state, State::Deleting(_)) {
                        self.events.push_back(Event::ChildSaFailed {
                            ike_sa: IkeSaId(sa.id),
                            remote: sa.remote,
                            reason,
                        });
                    }
                    return;
                }
            };
        let collision = match std::mem::replace(&mut sa.state, State::Closed) {
            State::Deleting(Deleting {
                deadline,
                collision: Some(c),
            }) => {
                sa.state = State::Deleting(Deleting {
                    deadline,
                    collision: None,
                });
                Some(c)
            }
            other => {
                sa.state = other;
                None
            }
        };
        let Some(c) = collision else {
            self.spawn_rekeyed(now, sa, new_spi, peer_spi, true, suite, keys);
            // §2.18: the rekey initiator deletes the old IKE SA.
            sa.queue.push_front(Queued::DeleteIke);
            return;
        };
        // §2.8.1/§2.8.2: both ends rekeyed this SA. "The SA created with the
        // lowest of the four nonces used in the two exchanges SHOULD be
        // closed by the endpoint that created it" (octet-wise comparison, a
        // prefix being lower: exactly slice ordering), and "the node that
        // initiated the surviving rekeyed SA should delete the replaced SA".
        // Both ends see the same four nonces, so they agree.
        let ours_lowest = nonce_i.min(nonce_r) < c.nonce_i.as_slice().min(c.nonce_r.as_slice());
        if ours_lowest {
            self.delete_redundant_rekey(now, sa, new_spi, peer_spi, suite, keys);
            return;
        }
        // The peer's SA is redundant; the peer deletes it. Ours survives and
        // "MUST inherit all the CHILD_SAs" (§2.8.2) from it.
        match self.sas.remove(c.peer_new) {
            Some(mut theirs) => {
                self.spawn_rekeyed(now, &mut theirs, new_spi, peer_spi, true, suite, keys);
                theirs.state = State::Deleting(Deleting {
                    deadline: now + SUPERSEDED_GRACE,
                    collision: None,
                });
                self.put_back(theirs);
            }
            None => self.spawn_rekeyed(now, sa, new_spi, peer_spi, true, suite, keys),
        }
        // We initiated the survivor, so the old SA is ours to delete
        // (§2.8.1). It is already Deleting, which `pump` would not serve.
        if sa.pending.is_none() {
            self.start(now, sa, Queued::DeleteIke);
        }
    }

    /// §2.8.1: our rekey lost the nonce comparison. Its new SA is redundant
    /// and we created it, so we delete it over itself.
    fn delete_redundant_rekey(
        &mut self,
        now: Instant,
        sa: &IkeSa,
        new_spi: u64,
        peer_spi: u64,
        suite: IkeSuite,
        keys: IkeKeys,
    ) {
        // Ours is redundant and we created it: delete it over itself.
        // The peer's SA (already holding the children) survives, and the
        // peer deletes the old SA, which keeps waiting in Deleting.
        let mut redundant = IkeSa::new(
            new_spi,
            true,
            sa.local,
            sa.remote,
            now,
            State::Established(Established {
                rekey_at: now + self.config.lifetimes.ike,
                expire_at: now + self.config.lifetimes.ike,
                challenge: None,
            }),
        );
        redundant.spi_r = peer_spi;
        redundant.suite = Some(suite);
        redundant.keys = Some(keys);
        redundant.remote_id = sa.remote_id.clone();
        redundant.auth_key = sa.auth_key.clone();
        redundant.nat_local = sa.nat_local;
        redundant.nat_remote = sa.nat_remote;
        redundant.superseded = true;
        redundant.queue.push_back(Queued::DeleteIke);
        self.pump(now, &mut redundant);
        self.put_back(redundant);
    }

    /// Checks the rekey response (SA with the responder's new SPI, Nr, KE of
    /// the group we offered) and derives the new SA's keys (§2.18). `Err`
    /// names why the exchange failed; `Ok(None)` is a silent failure of our
    /// own crypto.
    #[allow(clippy::type_complexity)]
    fn accept_rekey_ike_reply<'p>(
        &self,
        sa: &IkeSa,
        p: &'p [Payload],
        new_spi: u64,
        nonce_i: &[u8],
        dh: DhPrivate,
    ) -> Result<Option<(IkeSuite, u64, IkeKeys, &'p [u8])>, NotifyType> {
        if let Some(e) = first_error(p) {
            return Err(e);
        }
        let (Some(old_keys), Some(props), Some(ke), Some(nonce_r)) =
            (sa.keys.clone(), sa_of(p), ke_of(p), nonce_of(p))
        else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let Some(suite) = proposal::accept_ike_reply(&self.config.ike_proposals, props) else {
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        };
        let peer_spi = props
            .first()
            .and_then(|pr| <[u8; 8]>::try_from(pr.spi.as_slice()).ok())
            .map(u64::from_be_bytes);
        let (Some(peer_spi), true) = (peer_spi, suite.dh == dh.alg()) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let Ok(gir) = dh.agree(&ke.data) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let Ok(keys) = IkeKeys::derive_rekey(
            old_keys.prf,
            &old_keys.sk_d,
            suite.prf,
            gir.expose(),
            nonce_i,
            nonce_r,
            new_spi,
            peer_spi,
        ) else {
            return Ok(None);
        };
        Ok(Some((suite, peer_spi, keys, nonce_r)))
    }

    /// Rekeys the IKE SA (§1.3.2): SA with the new SPI, Ni, KE.
    pub(super) fn start_rekey_ike(&mut self, now: Instant, sa: &mut IkeSa) -> bool {
        let Some(first) = self.config.ike_proposals.first().copied() else {
            return false;
        };
        let Ok(dh) = DhPrivate::generate(first.dh, self.rng.as_mut()) else {
            return false;
        };
        let new_spi = self.new_spi();
        let nonce_i = self.nonce();
        let payloads = vec![
            Payload::Sa(proposal::ike_offer(
                &self.config.ike_proposals,
                Some(new_spi),
            )),
            Payload::Nonce(nonce_i.clone()),
            Payload::Ke(KeyExchange {
                dh_group: DhId::from(dh.alg()),
                data: dh.public_value().to_vec(),
            }),
        ];
        self.request(
            now,
            sa,
            ExchangeType::CREATE_CHILD_SA,
            &payloads,
            Req::RekeyIke {
                new_spi,
                nonce_i,
                dh,
            },
        );
        true
    }
}
