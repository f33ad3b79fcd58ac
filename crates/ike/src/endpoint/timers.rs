//! Timers (RFC 7296 §2.4, §2.8, §2.1): retransmission deadlines, liveness
//! checks (dead peer detection), half-open and DELETE timeouts, rekey and
//! hard lifetimes.

use super::*;

impl Endpoint {
    pub(super) fn dpd_deadline(&self, sa: &IkeSa) -> Option<Instant> {
        let d = self.config.dpd?;
        if !matches!(sa.state, State::Established(_)) || sa.pending.is_some() {
            return None;
        }
        match d.mode {
            // A liveness check (§2.4: an empty INFORMATIONAL) every `delay`
            // whatever the traffic: ESP flowing proves the peer's kernel is
            // up, not its IKE daemon.
            DpdMode::Periodic => Some(sa.last_probe + d.delay),
            // Probe only if we sent traffic since we last heard from the
            // peer, and it has been silent for `delay`.
            DpdMode::OnDemand => match sa.last_traffic_out {
                Some(tx) if tx > sa.last_rx => Some((sa.last_rx + d.delay).max(tx)),
                _ => None,
            },
        }
    }

    /// The earliest of an SA's timers; the SA table indexes SAs by it
    /// whenever one goes back in (no allocation: it runs on every exchange).
    pub(super) fn sa_deadline(&self, sa: &IkeSa) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |d: Instant| t = Some(t.map_or(d, |m| m.min(d)));
        if let Some(p) = &sa.pending {
            add(p.next_at);
        }
        match &sa.state {
            State::ExpectAuthRequest(s) => add(s.deadline),
            State::ExpectSaInitKeys(s) => add(s.deadline),
            State::Deleting(s) => add(s.deadline),
            State::Established(e) => {
                add(e.rekey_at);
                add(e.expire_at);
                if let Some(c) = &e.challenge {
                    add(c.deadline());
                }
                for c in &sa.children {
                    if c.status == ChildStatus::Active {
                        add(c.rekey_at);
                    }
                    add(c.expire_at);
                }
                if let Some(d) = self.dpd_deadline(sa) {
                    add(d);
                }
            }
            _ => {}
        }
        t
    }

    /// The earliest deadline at which [`Endpoint::handle_timeout`] must run:
    /// the first entry of the SA table's deadline index, O(log N).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.next_deadline()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for id in self.sas.due(now) {
            let Some(mut sa) = self.sas.remove(id) else {
                continue;
            };
            self.timeout_sa(now, &mut sa);
            if !matches!(sa.state, State::Closed) {
                self.pump(now, &mut sa);
            }
            self.put_back(sa);
        }
    }

    pub(super) fn timeout_sa(&mut self, now: Instant, sa: &mut IkeSa) {
        if let Some(p) = &mut sa.pending
            && p.next_at <= now
        {
            let max = self.max_tries(&p.req);
            if p.tries >= max {
                // §2.4: no answer after the retransmission limit means
                // the peer is dead; the SA is deleted without notice.
                let established = sa.remote_id.is_some();
                if established && !matches!(sa.state, State::Deleting(_)) {
                    self.events.push_back(Event::PeerDead {
                        sa: IkeSaId(sa.id),
                        remote: sa.remote,
                    });
                } else if !established {
                    let refused = match &sa.state {
                        State::ExpectSaInitResponse(s) => s.refused,
                        _ => None,
                    };
                    self.events.push_back(match refused {
                        // The peer kept refusing and nothing better came (§2.21.1).
                        Some(reason) => Event::EstablishFailed {
                            remote: sa.remote,
                            reason,
                        },
                        None => Event::EstablishTimedOut { remote: sa.remote },
                    });
                }
                self.close(sa, DownReason::Timeout);
                return;
            }
            // Only when nothing at all came from the peer since the check began: a peer whose
            // ESP or IKE still arrives is alive, and one lost answer must not cost it its SA.
            if matches!(p.req, Req::Dpd)
                && p.tries == 1
                && sa.last_rx <= sa.last_probe
                && sa.remote_id.is_some()
                && !matches!(sa.state, State::Deleting(_))
            {
                self.events.push_back(Event::ProbeUnanswered {
                    sa: IkeSaId(sa.id),
                    remote: sa.remote,
                });
            }
            p.tries += 1;
            let interval = self.retransmit_interval(&p.req, p.tries);
            p.next_at = now + interval;
            let bytes = p.bytes.clone();
            self.tx(sa, bytes);
        }
        if self.challenge_due(now, sa) {
            return;
        }
        match &mut sa.state {
            State::ExpectAuthRequest(s) if s.deadline <= now => {
                // A half-open SA that never authenticated: drop silently.
                sa.state = State::Closed;
            }
            State::ExpectSaInitKeys(s) if s.deadline <= now => {
                // Its job never came back (the daemon lost it): the same. A result
                // arriving later finds no SA and is counted late.
                sa.state = State::Closed;
            }
            State::Deleting(s) if s.deadline <= now => {
                self.close(sa, DownReason::DeletedLocally);
            }
            State::Established(e) => {
                if e.expire_at <= now {
                    // Hard lifetime: delete (the peer is told, §1.4.1). Re-armed past the
                    // DELETE's own retransmissions so the deadline does not stay in the past
                    // while another exchange is still pending.
                    if !sa.queue.contains(&Queued::DeleteIke) {
                        sa.queue.push_front(Queued::DeleteIke);
                    }
                    e.expire_at = now
                        + self.config.retransmit.max_interval
                            * self.config.retransmit.max_tries.max(1);
                    return;
                }
                if e.rekey_at <= now {
                    // Re-arm far out; the rekey replaces this SA.
                    e.rekey_at = e.expire_at;
                    if !sa.queue.contains(&Queued::RekeyIke) {
                        sa.queue.push_back(Queued::RekeyIke);
                    }
                }
                self.child_timers(now, sa);
                if self.dpd_deadline(sa).is_some_and(|d| d <= now)
                    && !sa.queue.contains(&Queued::Dpd)
                {
                    sa.queue.push_back(Queued::Dpd);
                }
            }
            _ => {}
        }
    }

    /// Child SA lifetimes of an established SA (§2.8): a rekey at the soft lifetime, a
    /// DELETE at the hard one (re-armed past the DELETE's retransmissions).
    fn child_timers(&self, now: Instant, sa: &mut IkeSa) {
        let mut expired = Vec::new();
        for c in &mut sa.children {
            if c.expire_at <= now {
                expired.push(c.spi_in);
            } else if c.status == ChildStatus::Active && c.rekey_at <= now {
                c.rekey_at = c.expire_at;
                if !sa.queue.contains(&Queued::RekeyChild(c.spi_in)) {
                    sa.queue.push_back(Queued::RekeyChild(c.spi_in));
                }
            }
        }
        for spi in expired {
            if !sa.queue.contains(&Queued::DeleteChild(spi)) {
                sa.queue.push_back(Queued::DeleteChild(spi));
            }
            if let Some(c) = sa.child_by_in(spi) {
                c.expire_at = now
                    + self.config.retransmit.max_interval * self.config.retransmit.max_tries.max(1);
            }
        }
    }
}
