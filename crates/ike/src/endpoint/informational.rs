//! The INFORMATIONAL exchange (RFC 7296 §1.4): DELETE of IKE and Child SAs
//! (§1.4.1) and liveness checks (§2.4).

use super::*;

impl Endpoint {
    /// INFORMATIONAL request (§1.4): DELETE, liveness, notifies.
    pub(super) fn on_informational(&mut self, sa: &mut IkeSa, p: &[Payload]) -> Reply {
        let mut reply_spis = Vec::new();
        for d in p.iter().filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        }) {
            if d.protocol == ProtocolId::IKE {
                // §1.4.1: the IKE SA and all its children go; answer empty.
                self.close(sa, DownReason::DeletedByPeer);
                return Vec::new();
            }
            if d.protocol != ProtocolId::ESP {
                continue;
            }
            for spi in &d.spis {
                let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                    continue;
                };
                let spi_out = u32::from_be_bytes(b);
                if let Some(pos) = sa.children.iter().position(|c| c.spi_out == spi_out) {
                    let c = sa.children.remove(pos);
                    // §1.4.1: if we are deleting it ourselves too, it is not
                    // listed in the response.
                    let ours_pending = matches!(&sa.pending, Some(Pending { req: Req::DeleteChild(s), .. }) if s.contains(&c.spi_in));
                    if !ours_pending {
                        reply_spis.push(c.spi_in.to_be_bytes().to_vec());
                    }
                    sa.queue.retain(|q| {
                        *q != Queued::DeleteChild(c.spi_in) && *q != Queued::RekeyChild(c.spi_in)
                    });
                    self.events.push_back(Event::ChildSaDeleted {
                        ike_sa: IkeSaId(sa.id),
                        spi_in: c.spi_in,
                        spi_out: c.spi_out,
                        remote: sa.remote,
                    });
                }
            }
        }
        if reply_spis.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: reply_spis,
            })]
        }
    }

    /// Sends a liveness check (§2.4: an empty INFORMATIONAL request).
    pub(super) fn start_dpd(&mut self, now: Instant, sa: &mut IkeSa) {
        sa.last_probe = now;
        self.counters.dpd_probes_sent += 1;
        self.request(now, sa, ExchangeType::INFORMATIONAL, &[], Req::Dpd);
    }

    /// Deletes the IKE SA (§1.4.1): DELETE with protocol IKE and no SPI.
    pub(super) fn start_delete_ike(&mut self, now: Instant, sa: &mut IkeSa) {
        let d = Payload::Delete(Delete {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: Vec::new(),
        });
        self.request(now, sa, ExchangeType::INFORMATIONAL, &[d], Req::DeleteIke);
        // Children are gone for the daemon as soon as we decide.
        for c in sa.children.drain(..) {
            self.events.push_back(Event::ChildSaDeleted {
                ike_sa: IkeSaId(sa.id),
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                remote: sa.remote,
            });
        }
        sa.state = State::Deleting(Deleting {
            collision: None,
            deadline: now
                + self.config.retransmit.max_interval * self.config.retransmit.max_tries.max(1),
        });
    }

    /// Deletes one Child SA (§1.4.1); false if it is already gone.
    pub(super) fn start_delete_child(&mut self, now: Instant, sa: &mut IkeSa, spi: u32) -> bool {
        if sa.children.iter().all(|c| c.spi_in != spi) {
            return false;
        }
        let d = Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: vec![spi.to_be_bytes().to_vec()],
        });
        self.request(
            now,
            sa,
            ExchangeType::INFORMATIONAL,
            &[d],
            Req::DeleteChild(vec![spi]),
        );
        true
    }
}
