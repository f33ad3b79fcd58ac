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
}
