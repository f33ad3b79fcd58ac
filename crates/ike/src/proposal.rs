//! Building and choosing SA proposals (RFC 7296 §2.7, §3.3) for IKE and ESP
//! with AES-GCM (RFC 5282 §8: no integrity transform, or INTEG NONE).

use dmvpn_crypto::{DhAlg, PrfAlg};

use crate::codes::*;
use crate::config::{EspProposal, IkeProposal};
use crate::message::{Proposal, Transform};

/// What an IKE SA negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    /// AES-GCM key bits.
    pub encr_key_bits: u16,
    /// PRF.
    pub prf: PrfAlg,
    /// D-H group.
    pub dh: DhAlg,
}

/// What a Child SA negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspSuite {
    /// Extended sequence numbers.
    pub esn: bool,
    /// PFS group used, if any.
    pub pfs: Option<DhAlg>,
    /// The peer listed INTEG NONE; we mirror the shape it used (docs/interop-notes.md §20).
    pub integ_none: bool,
}

/// Our IKE offer, one proposal per configured suite (§3.3.1 numbering).
pub fn ike_offer(ours: &[IkeProposal], spi: Option<u64>) -> Vec<Proposal> {
    ours.iter()
        .enumerate()
        .map(|(i, p)| Proposal {
            number: u8::try_from(i + 1).unwrap_or(u8::MAX),
            protocol: ProtocolId::IKE,
            spi: spi.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default(),
            transforms: vec![
                Transform::encr(EncrId::ENCR_AES_GCM_16, p.encr_key_bits),
                Transform::new(TransformType::PRF, PrfId::from(p.prf).0),
                Transform::new(TransformType::DH, DhId::from(p.dh).0),
            ],
        })
        .collect()
}

/// Our ESP offer.
pub fn esp_offer(
    ours: &EspProposal,
    spi: u32,
    pfs: Option<DhAlg>,
    integ_none: bool,
) -> Vec<Proposal> {
    let mut t = vec![Transform::encr(EncrId::ENCR_AES_GCM_16, 256)];
    if integ_none {
        t.push(Transform::new(TransformType::INTEG, IntegId::NONE.0));
    }
    if let Some(g) = pfs {
        t.push(Transform::new(TransformType::DH, DhId::from(g).0));
    }
    if ours.esn {
        t.push(Transform::new(TransformType::ESN, EsnId::ESN.0));
    }
    t.push(Transform::new(TransformType::ESN, EsnId::NO_ESN.0));
    vec![Proposal {
        number: 1,
        protocol: ProtocolId::ESP,
        spi: spi.to_be_bytes().to_vec(),
        transforms: t,
    }]
}

fn gcm256(p: &Proposal, bits: u16) -> Option<Transform> {
    p.of_type(TransformType::ENCR)
        .find(|t| t.id == EncrId::ENCR_AES_GCM_16.0 && t.key_length() == Some(bits))
        .cloned()
}

/// RFC 5282 §8: with an AEAD cipher, integrity is absent or NONE only.
fn integ_ok(p: &Proposal) -> Option<bool> {
    let mut listed = false;
    for t in p.of_type(TransformType::INTEG) {
        if t.id != IntegId::NONE.0 {
            return None;
        }
        listed = true;
    }
    Some(listed)
}

/// Responder: the first peer proposal (peer's preference, §2.7) that one of
/// our suites accepts, and the single-transform proposal to send back.
pub fn select_ike(ours: &[IkeProposal], theirs: &[Proposal]) -> Option<(IkeSuite, Proposal)> {
    for p in theirs.iter().filter(|p| p.protocol == ProtocolId::IKE) {
        let Some(integ_listed) = integ_ok(p) else {
            continue;
        };
        for o in ours {
            let Some(encr) = gcm256(p, o.encr_key_bits) else {
                continue;
            };
            let prf_ok = p
                .of_type(TransformType::PRF)
                .any(|t| t.id == PrfId::from(o.prf).0);
            let dh_ok = p
                .of_type(TransformType::DH)
                .any(|t| t.id == DhId::from(o.dh).0);
            if !(prf_ok && dh_ok) {
                continue;
            }
            let mut t = vec![
                encr,
                Transform::new(TransformType::PRF, PrfId::from(o.prf).0),
            ];
            if integ_listed {
                t.push(Transform::new(TransformType::INTEG, IntegId::NONE.0));
            }
            t.push(Transform::new(TransformType::DH, DhId::from(o.dh).0));
            let reply = Proposal {
                number: p.number,
                protocol: ProtocolId::IKE,
                spi: p.spi.clone(),
                transforms: t,
            };
            return Some((
                IkeSuite {
                    encr_key_bits: o.encr_key_bits,
                    prf: o.prf,
                    dh: o.dh,
                },
                reply,
            ));
        }
    }
    None
}

/// Initiator: checks the responder chose exactly one proposal with one
/// transform per type from what we offered (§2.7: anything else is an
/// error, and the SA must not be used).
pub fn accept_ike_reply(ours: &[IkeProposal], reply: &[Proposal]) -> Option<IkeSuite> {
    let [p] = reply else { return None };
    if !one_per_type(p) {
        return None;
    }
    let (suite, _) = select_ike(ours, reply)?;
    Some(suite)
}

fn one_per_type(p: &Proposal) -> bool {
    let mut seen = [false; 6];
    for t in &p.transforms {
        if let Some(s) = seen.get_mut(usize::from(t.ty.0)) {
            if *s {
                return false;
            }
            *s = true;
        }
    }
    true
}

/// Responder for a Child SA: the first acceptable ESP proposal. `pfs` is the
/// group a KE payload in the request uses (None: no KE, no PFS allowed).
pub fn select_esp(
    ours: &EspProposal,
    theirs: &[Proposal],
    pfs: Option<DhAlg>,
) -> Option<(EspSuite, u32, Proposal)> {
    for p in theirs.iter().filter(|p| p.protocol == ProtocolId::ESP) {
        let Some(integ_none) = integ_ok(p) else {
            continue;
        };
        let Some(encr) = gcm256(p, 256) else { continue };
        let Ok(spi) = <[u8; 4]>::try_from(p.spi.as_slice()) else {
            continue;
        };
        let dh: Vec<u16> = p.of_type(TransformType::DH).map(|t| t.id).collect();
        let dh_choice = match pfs {
            // PFS requested by the peer: we need that group listed, and our
            // policy must allow it (any supported group is fine as a
            // responder; a configured PFS group is a minimum requirement).
            Some(g) if dh.contains(&DhId::from(g).0) => Some(g),
            Some(_) => continue,
            // Without KE (IKE_AUTH, or no PFS) no group may be chosen;
            // whether PFS is demanded is checked by the exchange.
            None if dh.iter().all(|&d| d == DhId::NONE.0) => None,
            None => continue,
        };
        let esn: Vec<u16> = p.of_type(TransformType::ESN).map(|t| t.id).collect();
        let use_esn = if ours.esn && esn.contains(&EsnId::ESN.0) {
            true
        } else if esn.is_empty() || esn.contains(&EsnId::NO_ESN.0) {
            false
        } else {
            continue;
        };
        let mut t = vec![encr];
        if integ_none {
            t.push(Transform::new(TransformType::INTEG, IntegId::NONE.0));
        }
        if let Some(g) = dh_choice {
            t.push(Transform::new(TransformType::DH, DhId::from(g).0));
        }
        t.push(Transform::new(
            TransformType::ESN,
            if use_esn {
                EsnId::ESN.0
            } else {
                EsnId::NO_ESN.0
            },
        ));
        let reply = Proposal {
            number: p.number,
            protocol: ProtocolId::ESP,
            spi: Vec::new(),
            transforms: t,
        };
        return Some((
            EspSuite {
                esn: use_esn,
                pfs: dh_choice,
                integ_none,
            },
            u32::from_be_bytes(spi),
            reply,
        ));
    }
    None
}

/// Initiator: validates the responder's ESP choice against our offer.
pub fn accept_esp_reply(
    ours: &EspProposal,
    reply: &[Proposal],
    pfs: Option<DhAlg>,
) -> Option<(EspSuite, u32)> {
    let [p] = reply else { return None };
    if !one_per_type(p) {
        return None;
    }
    let (suite, spi, _) = select_esp(ours, reply, pfs)?;
    let esn_listed = p.of_type(TransformType::ESN).next().is_some();
    // A reply that picks ESN we did not offer is refused by select_esp;
    // a missing ESN transform means no ESN.
    if suite.esn && !esn_listed {
        return None;
    }
    Some((suite, spi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ike_selection_accepts_integ_none_and_absent_and_refuses_hmac() {
        let ours = [IkeProposal::default()];
        let mut offer = ike_offer(&ours, None);
        let (s, reply) = select_ike(&ours, &offer).unwrap();
        assert_eq!(s.dh, DhAlg::Ecp256);
        assert_eq!(reply.transforms.len(), 3);
        offer[0]
            .transforms
            .push(Transform::new(TransformType::INTEG, 0));
        let (_, reply) = select_ike(&ours, &offer).unwrap();
        assert_eq!(reply.transforms.len(), 4);
        assert!(accept_ike_reply(&ours, &[reply]).is_some());
        offer[0]
            .transforms
            .push(Transform::new(TransformType::INTEG, 12));
        assert!(select_ike(&ours, &offer).is_none());
    }

    #[test]
    fn esn_chosen_only_when_both_offer() {
        let with = EspProposal {
            esn: true,
            pfs: None,
        };
        let without = EspProposal::default();
        let (s, spi, _) = select_esp(&with, &esp_offer(&with, 0x1234, None, false), None).unwrap();
        assert!(s.esn);
        assert_eq!(spi, 0x1234);
        let (s, _, _) = select_esp(&without, &esp_offer(&with, 1, None, false), None).unwrap();
        assert!(!s.esn);
        let (s, _, _) = select_esp(&with, &esp_offer(&without, 1, None, false), None).unwrap();
        assert!(!s.esn);
        // A DH transform without KE, or KE without the group: refused.
        let pfs = EspProposal {
            esn: false,
            pfs: Some(DhAlg::Ecp256),
        };
        assert!(select_esp(&pfs, &esp_offer(&pfs, 1, Some(DhAlg::Ecp256), false), None).is_none());
        assert!(
            select_esp(
                &pfs,
                &esp_offer(&without, 1, None, false),
                Some(DhAlg::Ecp256)
            )
            .is_none()
        );
        assert!(
            select_esp(
                &pfs,
                &esp_offer(&pfs, 1, Some(DhAlg::Ecp256), false),
                Some(DhAlg::Ecp256)
            )
            .is_some()
        );
    }
}
