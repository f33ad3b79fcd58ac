//! Deterministic in-memory initiator ↔ responder runs of the whole engine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dmvpn_crypto::{DhAlg, TestRng};
use dmvpn_ike::testing::*;
use dmvpn_ike::*;

fn assert_pair(a: &ChildSaInstalled, b: &ChildSaInstalled) {
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.key_in, b.key_out);
    assert_eq!(a.key_out, b.key_in);
    assert_ne!(a.key_in, a.key_out);
    assert_eq!(a.key_in.len(), 36);
    assert_eq!(a.mode, Mode::Transport);
}

#[test]
fn establishes_transport_child_without_nat() {
    let mut n = Net::new(config(b"keykey00"), config(b"keykey00"), false);
    n.initiate();
    assert!(matches!(
        &n.ev_a[0],
        Event::IkeSaUp {
            initiator: true,
            nat_local: false,
            nat_remote: false,
            ..
        }
    ));
    assert!(
        matches!(&n.ev_b[0], Event::IkeSaUp { initiator: false, remote_id, .. } if remote_id.ip() == Some(n.a_priv))
    );
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert_eq!((ca.len(), cb.len()), (1, 1));
    assert_pair(ca[0], cb[0]);
    assert!(!ca[0].udp_encap && !cb[0].udp_encap);
    assert!(!ca[0].esn);
    assert_eq!(ca[0].local.port(), 500);
    // Exactly four messages: SA_INIT and AUTH, one each way.
    assert_eq!(n.sent_a.len() + n.sent_b.len(), 4);
    let info = n.a.ike_sas(n.now);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].state, IkeSaState::Established);
    assert_eq!(info[0].children.len(), 1);
    assert_eq!(info[0].suite.unwrap().dh, DhAlg::Ecp256);
}

#[test]
fn nat_is_detected_and_ike_floats_to_4500() {
    let mut n = Net::new(config(b"k"), config(b"k"), true);
    n.initiate();
    assert!(matches!(
        &n.ev_a[0],
        Event::IkeSaUp {
            nat_local: true,
            nat_remote: false,
            ..
        }
    ));
    assert!(
        matches!(&n.ev_b[0], Event::IkeSaUp { nat_local: false, nat_remote: true, remote, .. } if remote.port() == 14500)
    );
    // IKE_AUTH went out from 4500 to 4500 and needs the non-ESP marker.
    assert_eq!(n.sent_a[1].local.port(), 4500);
    assert_eq!(n.sent_a[1].remote.port(), 4500);
    assert!(n.sent_a[1].needs_non_esp_marker(4500));
    assert!(!n.sent_a[0].needs_non_esp_marker(4500));
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert_pair(ca[0], cb[0]);
    assert!(ca[0].udp_encap && cb[0].udp_encap);
    assert_eq!(cb[0].remote, SocketAddr::new(n.a_pub, 14500));
}

#[test]
fn forced_encapsulation_without_nat() {
    let mut ca = config(b"k");
    ca.force_encap = true;
    let mut n = Net::new(ca, config(b"k"), false);
    n.initiate();
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert!(ca[0].udp_encap && cb[0].udp_encap);
}

#[test]
fn wrong_psk_fails_authentication_on_both_sides() {
    let mut n = Net::new(config(b"right"), config(b"wrong"), false);
    n.initiate();
    assert_eq!(count(&n.ev_b, |e| matches!(e, Event::AuthFailed { .. })), 1);
    assert_eq!(count(&n.ev_a, |e| matches!(e, Event::AuthFailed { .. })), 1);
    assert!(Net::children(&n.ev_a).is_empty());
    assert!(n.a.ike_sas(n.now).is_empty());
    assert!(n.b.ike_sas(n.now).is_empty());
}

#[test]
fn invalid_ke_retry_uses_the_group_the_responder_asks_for() {
    let mut ca = config(b"k");
    ca.ike_proposals = vec![
        IkeProposal {
            dh: DhAlg::Curve25519,
            ..IkeProposal::default()
        },
        IkeProposal::default(),
    ];
    let mut n = Net::new(ca, config(b"k"), false);
    n.initiate();
    let inits = n
        .sent_a
        .iter()
        .filter(|t| {
            Message::parse(&t.bytes).is_ok_and(|m| m.header.exchange == ExchangeType::IKE_SA_INIT)
        })
        .count();
    assert_eq!(inits, 2);
    assert_eq!(Net::children(&n.ev_a).len(), 1);
    assert_eq!(n.a.ike_sas(n.now)[0].suite.unwrap().dh, DhAlg::Ecp256);
}

#[test]
fn cookie_challenge_when_half_open_threshold_reached() {
    let mut cb = config(b"k");
    cb.cookie_threshold = 0;
    let mut n = Net::new(config(b"k"), cb, false);
    n.initiate();
    // First SA_INIT got a COOKIE answer with no responder SPI.
    let first = Message::parse(&n.sent_b[0].bytes).unwrap();
    assert_eq!(first.header.spi_r, 0);
    assert!(first.notifies().any(|x| x.ty == NotifyType::COOKIE));
    let retry = Message::parse(&n.sent_a[1].bytes).unwrap();
    assert!(matches!(&retry.payloads[0], Payload::Notify(x) if x.ty == NotifyType::COOKIE));
    assert_eq!(Net::children(&n.ev_b).len(), 1);
}

#[test]
fn lost_auth_response_is_retransmitted_and_answered_from_cache() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let mut dropped = 0;
    n.filter = Box::new(move |to_b, bytes| {
        let m = dmvpn_ike::message::Header::parse(&mut dmvpn_wire::Reader::new(bytes)).unwrap();
        if !to_b && m.exchange == ExchangeType::IKE_AUTH && dropped == 0 {
            dropped += 1;
            return false;
        }
        true
    });
    n.initiate();
    assert!(Net::children(&n.ev_a).is_empty());
    n.run_for(Duration::from_secs(3));
    // One child on each side: the responder did not process the request twice.
    assert_eq!(Net::children(&n.ev_a).len(), 1);
    assert_eq!(Net::children(&n.ev_b).len(), 1);
    assert_pair(Net::children(&n.ev_a)[0], Net::children(&n.ev_b)[0]);
    // The retransmitted response is byte-identical to the lost one.
    let auths: Vec<&Transmit> = n.sent_b.iter().filter(|t| t.bytes[18] == 35).collect();
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[0].bytes, auths[1].bytes);
}

#[test]
fn unanswered_initiator_gives_up_with_exponential_backoff() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.filter = Box::new(|to_b, _| !to_b);
    let t0 = n.now;
    n.initiate();
    n.run_for(Duration::from_secs(600));
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::EstablishTimedOut { .. })),
        1
    );
    assert_eq!(n.sent_a.len(), Retransmit::default().max_tries as usize);
    assert!(n.a.poll_timeout().is_none());
    assert!(n.a.ike_sas(n.now).is_empty());
    let _ = t0;
}

#[test]
fn dpd_on_demand_declares_a_silent_peer_dead() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let id = n.initiate();
    n.ev_a.clear();
    // Without outbound traffic on-demand DPD sends nothing.
    n.run_for(Duration::from_secs(300));
    assert_eq!(n.sent_a.len(), 2);
    // The peer vanishes; we keep sending ESP.
    n.filter = Box::new(|_, _| false);
    let start = n.now;
    n.a.note_outbound(n.now, n.b_ip);
    let mut dead_at = None;
    for _ in 0..200 {
        n.run_for(Duration::from_secs(1));
        n.a.note_outbound(n.now, n.b_ip);
        if n.ev_a
            .iter()
            .any(|e| matches!(e, Event::PeerDead { sa, .. } if *sa == id))
        {
            dead_at = Some(n.now);
            break;
        }
    }
    let dead_at = dead_at.expect("peer declared dead");
    // Last receipt was at `start - 300 s` (establishment), so the first probe
    // goes out right away, then 4 retries 5 s apart, then 5 s of waiting.
    let probes = n.sent_a.len() - 2;
    assert_eq!(probes, 5);
    let waited = dead_at - start;
    assert!(
        waited >= Duration::from_secs(25) && waited <= Duration::from_secs(26),
        "{waited:?}"
    );
    assert!(count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })) == 1);
    // One liveness check, retransmitted until the verdict: counted once, never answered.
    let c = n.a.counters();
    assert_eq!((c.dpd_probes_sent, c.dpd_probes_answered), (1, 0));
}

#[test]
fn dpd_probe_answered_keeps_sa_and_waits_delay_after_inbound() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    n.run_for(Duration::from_secs(10));
    n.a.note_inbound(n.now, n.b_ip);
    n.a.note_outbound(n.now + Duration::from_secs(1), n.b_ip);
    n.run_for(Duration::from_secs(39));
    assert_eq!(n.sent_a.len(), 2, "no probe before 40 s of silence");
    n.run_for(Duration::from_secs(2));
    assert_eq!(n.sent_a.len(), 3, "probe after 40 s");
    assert_eq!(n.sent_b.len(), 3, "probe answered");
    assert!(!n.ev_a.iter().any(|e| matches!(e, Event::PeerDead { .. })));
    let c = n.a.counters();
    assert_eq!((c.dpd_probes_sent, c.dpd_probes_answered), (1, 1));
}

#[test]
fn delete_removes_ike_and_child_sas_on_both_sides() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    n.a.delete(n.now, n.b_ip).unwrap();
    n.flush();
    assert_eq!(
        count(&n.ev_b, |e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::DeletedByPeer,
                ..
            }
        )),
        1
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert_eq!(
        count(&n.ev_a, |e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::DeletedLocally,
                ..
            }
        )),
        1
    );
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert!(n.a.ike_sas(n.now).is_empty() && n.b.ike_sas(n.now).is_empty());
    assert_eq!(n.a.delete(n.now, n.b_ip), Err(Error::NoSuchSa));
}

fn only_child(e: &Endpoint, now: Instant) -> ChildSaInfo {
    let s = e.ike_sas(now);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].children.len(), 1, "{:?}", s[0].children);
    s[0].children[0].clone()
}

#[test]
fn child_rekey_replaces_and_deletes_the_old_sa() {
    let mut ca = config(b"k");
    ca.esp.pfs = Some(DhAlg::Ecp256);
    let mut cb = config(b"k");
    cb.esp.pfs = Some(DhAlg::Ecp256);
    let mut n = Net::new(ca, cb, true);
    n.initiate();
    let old = Net::children(&n.ev_a)[0].spi_in;
    n.a.rekey_child(n.now, old).unwrap();
    n.flush();
    let (ca, cb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
    assert_eq!((ca.len(), cb.len()), (2, 2));
    assert_pair(ca[1], cb[1]);
    assert_eq!(ca[1].replaces, Some(old));
    assert_ne!(ca[1].key_in, ca[0].key_in);
    assert!(ca[1].udp_encap);
    assert_eq!(
        count(
            &n.ev_a,
            |e| matches!(e, Event::ChildSaDeleted { spi_in, .. } if *spi_in == old)
        ),
        1
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert_eq!(only_child(&n.a, n.now).spi_in, ca[1].spi_in);
    assert_eq!(only_child(&n.b, n.now).spi_in, cb[1].spi_in);
}

#[test]
fn simultaneous_child_rekey_leaves_exactly_one_matching_pair() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    let a_old = Net::children(&n.ev_a)[0].spi_in;
    let b_old = Net::children(&n.ev_b)[0].spi_in;
    n.a.rekey_child(n.now, a_old).unwrap();
    n.b.rekey_child(n.now, b_old).unwrap();
    n.flush();
    n.run_for(Duration::from_secs(5));
    let ca = only_child(&n.a, n.now);
    let cb = only_child(&n.b, n.now);
    assert_eq!(ca.spi_in, cb.spi_out);
    assert_eq!(ca.spi_out, cb.spi_in);
    assert_ne!(ca.spi_in, a_old);
    // Two new pairs were created, one redundant pair and the old one deleted.
    assert_eq!(Net::children(&n.ev_a).len(), 3);
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })),
        2
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        2
    );
}

#[test]
fn ike_rekey_moves_children_and_deletes_old_sa() {
    let mut n = Net::new(config(b"k"), config(b"k"), true);
    let old = n.initiate();
    n.a.rekey_ike(n.now, old).unwrap();
    n.flush();
    let new_a = n.ev_a.iter().find_map(|e| match e {
        Event::IkeSaRekeyed { old: o, new } if *o == old => Some(*new),
        _ => None,
    });
    let new_a = new_a.expect("rekeyed on A");
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::IkeSaRekeyed { .. })),
        1
    );
    // Children survive the IKE rekey: no ChildSaDeleted anywhere.
    assert_eq!(
        count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })),
        0
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        0
    );
    let sa_a = n.a.ike_sas(n.now);
    assert_eq!(sa_a.len(), 1);
    assert_eq!(sa_a[0].id, new_a);
    assert_eq!(sa_a[0].children.len(), 1);
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
    // The new SA works: a child rekey over it, then a delete.
    let spi = sa_a[0].children[0].spi_in;
    n.a.rekey_child(n.now, spi).unwrap();
    n.flush();
    assert_eq!(Net::children(&n.ev_b).len(), 2);
    n.a.delete(n.now, n.b_ip).unwrap();
    n.flush();
    assert!(n.b.ike_sas(n.now).is_empty());
}

#[test]
fn lifetimes_trigger_child_and_ike_rekeys_automatically() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    n.run_for(Duration::from_secs(3600));
    // Child rekeyed within [lifetime - 2*margin, lifetime - margin].
    assert!(Net::children(&n.ev_a).len() >= 2);
    assert!(Net::children(&n.ev_a)[1].replaces.is_some());
    n.run_for(Duration::from_secs(24 * 3600));
    assert!(count(&n.ev_a, |e| matches!(e, Event::IkeSaRekeyed { .. })) >= 1);
    assert_eq!(n.a.ike_sas(n.now).len(), 1);
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
    assert_eq!(n.a.ike_sas(n.now)[0].children.len(), 1);
    assert!(!n.ev_a.iter().any(|e| matches!(e, Event::PeerDead { .. })));
}

#[test]
fn initial_contact_clears_old_sas_of_the_same_identity() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    // A reboots: a fresh endpoint with the same address starts over.
    n.a = Endpoint::new(config(b"k"), Box::new(TestRng::new(99)));
    n.ev_b.clear();
    n.initiate();
    assert_eq!(
        count(&n.ev_b, |e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::Replaced,
                ..
            }
        )),
        1
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        1
    );
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
}

#[test]
fn initial_contact_from_another_address_claiming_the_identity_clears_nothing() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    let victim = n.a_priv;
    // Another holder of the wildcard PSK, at another address, claims the first peer's
    // identity (its ID_IPV4_ADDR) and sends INITIAL_CONTACT.
    let mut c = config(b"k");
    c.local_id = Some(Identification::from_ip(victim));
    n.a = Endpoint::new(c, Box::new(TestRng::new(98)));
    n.a_priv = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6));
    n.a_pub = n.a_priv;
    n.ev_b.clear();
    n.initiate();
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::IkeSaDown { .. })),
        0,
        "{:?}",
        n.ev_b
    );
    // Without NAT the claimed address identity must be the source (tests/identity.rs): the
    // impostor is refused outright, and the victim's SA stays.
    assert_eq!(count(&n.ev_b, |e| matches!(e, Event::AuthFailed { .. })), 1);
    let remotes: Vec<IpAddr> = n.b.ike_sas(n.now).iter().map(|s| s.remote.ip()).collect();
    assert!(
        remotes.contains(&victim) && !remotes.contains(&n.a_priv),
        "{remotes:?}"
    );
}

#[test]
fn esn_is_negotiated_only_when_both_offer_it() {
    let mut ca = config(b"k");
    ca.esp.esn = true;
    let mut cb = config(b"k");
    cb.esp.esn = true;
    let mut n = Net::new(ca.clone(), cb, false);
    n.initiate();
    assert!(Net::children(&n.ev_a)[0].esn && Net::children(&n.ev_b)[0].esn);
    let mut n = Net::new(ca, config(b"k"), false);
    n.initiate();
    assert!(!Net::children(&n.ev_a)[0].esn && !Net::children(&n.ev_b)[0].esn);
}

#[test]
fn responder_ignores_garbage_and_truncations() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.initiate();
    let auth = n.sent_a[1].bytes.clone();
    for cut in 0..auth.len() {
        n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &auth[..cut]);
    }
    // Every truncation was dropped silently (no replies).
    assert!(n.b.poll_transmit().is_none());
    // A corrupted request with a new message ID fails the ICV: dropped.
    let mut flipped = auth.clone();
    flipped[23] = 2;
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &flipped);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &flipped);
    assert!(n.b.poll_event().is_none());
    assert!(n.b.poll_transmit().is_none());
}

#[test]
fn set_config_names_only_the_sas_the_new_keyring_refuses() {
    let mut n = Net::new(config(b"keykey00"), config(b"keykey00"), false);
    n.initiate();
    assert_eq!(n.b.ike_sas(n.now).len(), 1);
    // An unrelated change (another peer's key, the same wildcard): the SA stays.
    let mut same = config(b"keykey00");
    same.keyring
        .add_address("192.0.2.99".parse().unwrap(), b"other");
    assert!(n.b.set_config(same).is_empty());
    // Only a key for a different peer: A's SA is no longer allowed.
    let mut c = Config::default();
    c.keyring
        .add_address("192.0.2.99".parse().unwrap(), b"other");
    let refused = n.b.set_config(c);
    let ids: Vec<_> = n.b.ike_sas(n.now).into_iter().map(|s| s.id).collect();
    assert_eq!(refused, ids);
}

/// RFC 7296 §2.8.1/§2.8.2: both ends rekey the IKE SA at once. Over several
/// RNG seeds (so either end's exchange may hold the lowest nonce), exactly one
/// new IKE SA survives on both sides, the same one, holding the child.
#[test]
fn simultaneous_ike_rekey_leaves_one_matching_sa_with_the_children() {
    let mut winners = (0, 0);
    for seed in 1..=8u64 {
        let mut n = Net::new(config(b"k"), config(b"k"), false);
        n.a = Endpoint::new(config(b"k"), Box::new(TestRng::new(100 + seed)));
        let old_a = n.initiate();
        let old_b = n.b.ike_sas(n.now)[0].id;
        let (ca, cb) = (
            Net::children(&n.ev_a)[0].clone(),
            Net::children(&n.ev_b)[0].clone(),
        );
        // Both requests are in flight before either is delivered.
        n.a.rekey_ike(n.now, old_a).unwrap();
        n.b.rekey_ike(n.now, old_b).unwrap();
        n.flush();
        n.run_for(Duration::from_secs(60));
        let (sa, sb) = (n.a.ike_sas(n.now), n.b.ike_sas(n.now));
        assert_eq!((sa.len(), sb.len()), (1, 1), "seed {seed}: {sa:?} {sb:?}");
        let (sa, sb) = (&sa[0], &sb[0]);
        assert_eq!(sa.state, IkeSaState::Established);
        assert_eq!(sb.state, IkeSaState::Established);
        assert_ne!(sa.id, old_a);
        assert_eq!((sa.spi_i, sa.spi_r), (sb.spi_i, sb.spi_r), "seed {seed}");
        // The side that initiated the surviving exchange is its initiator.
        assert_ne!(sa.initiator, sb.initiator);
        if sa.initiator {
            winners.0 += 1;
        } else {
            winners.1 += 1;
        }
        // The child moved, untouched, to the survivor on both sides.
        assert_eq!(sa.children.len(), 1);
        assert_eq!(sb.children.len(), 1);
        assert_eq!(sa.children[0].spi_in, ca.spi_in);
        assert_eq!(sb.children[0].spi_in, cb.spi_in);
        assert_eq!(
            count(&n.ev_a, |e| matches!(e, Event::ChildSaDeleted { .. })),
            0
        );
        assert_eq!(
            count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
            0
        );
        // Superseded and redundant SAs go down as Rekeyed, never as a dead peer.
        for ev in [&n.ev_a, &n.ev_b] {
            assert!(!ev.iter().any(|e| matches!(
                e,
                Event::PeerDead { .. }
                    | Event::IkeSaDown {
                        reason: DownReason::DeletedByPeer
                            | DownReason::DeletedLocally
                            | DownReason::Timeout,
                        ..
                    }
            )));
        }
        // The survivor works end to end: a child rekey over it yields a
        // matching key pair, then a delete takes everything down.
        n.a.rekey_child(n.now, ca.spi_in).unwrap();
        n.flush();
        let (na, nb) = (Net::children(&n.ev_a), Net::children(&n.ev_b));
        assert_eq!((na.len(), nb.len()), (2, 2));
        assert_pair(na[1], nb[1]);
        assert_eq!(na[1].ike_sa, sa.id);
        n.a.delete(n.now, n.b_ip).unwrap();
        n.flush();
        assert!(n.a.ike_sas(n.now).is_empty() && n.b.ike_sas(n.now).is_empty());
    }
    assert!(winners.0 > 0 && winners.1 > 0, "{winners:?}");
}

/// §2.8.2: only B notices the collision (its request is lost); A's DELETE of
/// the old SA tells B to forget its own rekey. One SA each, the child kept.
#[test]
fn ike_rekey_collision_noticed_by_one_side_only() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let old_a = n.initiate();
    let old_b = n.b.ike_sas(n.now)[0].id;
    let mut dropped = false;
    n.filter = Box::new(move |to_b, bytes| {
        let h = dmvpn_ike::message::Header::parse(&mut dmvpn_wire::Reader::new(bytes)).unwrap();
        if !to_b && !dropped && h.exchange == ExchangeType::CREATE_CHILD_SA && !h.is_response() {
            dropped = true;
            return false;
        }
        true
    });
    n.a.rekey_ike(n.now, old_a).unwrap();
    n.b.rekey_ike(n.now, old_b).unwrap();
    n.flush();
    n.run_for(Duration::from_secs(60));
    let (sa, sb) = (n.a.ike_sas(n.now), n.b.ike_sas(n.now));
    assert_eq!((sa.len(), sb.len()), (1, 1));
    assert_eq!((sa[0].spi_i, sa[0].spi_r), (sb[0].spi_i, sb[0].spi_r));
    assert_eq!((sa[0].children.len(), sb[0].children.len()), (1, 1));
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaDeleted { .. })),
        0
    );
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::ChildSaFailed { .. })),
        0
    );
}

fn periodic() -> Config {
    let mut c = config(b"k");
    c.dpd = Some(Dpd {
        mode: DpdMode::Periodic,
        ..Dpd::default()
    });
    c
}

/// Runs `secs` one-second steps with ESP flowing both ways (as the daemon
/// reports it), returning the first PeerDead time.
fn run_with_traffic(n: &mut Net, secs: u64) -> Option<Instant> {
    for _ in 0..secs {
        n.a.note_outbound(n.now, n.b_ip);
        n.a.note_inbound(n.now, n.b_ip);
        n.run_for(Duration::from_secs(1));
        if n.ev_a.iter().any(|e| matches!(e, Event::PeerDead { .. })) {
            return Some(n.now);
        }
    }
    None
}

#[test]
fn periodic_dpd_probes_every_delay_even_with_traffic() {
    let mut n = Net::new(periodic(), config(b"k"), false);
    n.initiate();
    assert_eq!(run_with_traffic(&mut n, 205), None);
    // Probes at 40, 80, 120, 160 and 200 s, each answered.
    assert_eq!(n.sent_a.len() - 2, 5);
    assert_eq!(n.sent_b.len() - 2, 5);
    assert!(n.sent_a[2..].iter().all(|t| {
        let m = Message::parse(&t.bytes).unwrap();
        m.header.exchange == ExchangeType::INFORMATIONAL && !m.header.is_response()
    }));
    assert_eq!(n.a.ike_sas(n.now).len(), 1);
    assert_eq!(Net::children(&n.ev_a).len(), 1);
}

#[test]
fn periodic_dpd_declares_a_silent_peer_dead_despite_esp() {
    let mut n = Net::new(periodic(), config(b"k"), false);
    let id = n.initiate();
    let start = n.now;
    // The peer's IKE daemon is gone; its kernel still sends ESP.
    n.filter = Box::new(|_, _| false);
    let dead_at = run_with_traffic(&mut n, 200).expect("peer declared dead");
    assert!(
        n.ev_a
            .iter()
            .any(|e| matches!(e, Event::PeerDead { sa, .. } if *sa == id))
    );
    // First probe at 40 s, four retries 5 s apart, then 5 s of waiting.
    assert_eq!(n.sent_a.len() - 2, 5);
    let waited = dead_at - start;
    assert!(
        waited >= Duration::from_secs(65) && waited <= Duration::from_secs(66),
        "{waited:?}"
    );
    assert!(n.a.ike_sas(n.now).is_empty());
}

/// §2.6: the cookie secret changes every 5 minutes; cookies of the previous
/// secret are accepted for a short while after the change, then refused.
#[test]
fn cookie_secret_rotates_and_previous_version_is_accepted_briefly() {
    let mut cb = config(b"k");
    cb.cookie_threshold = 0;
    let mut n = Net::new(config(b"k"), cb, false);
    let is_cookie_retry = |bytes: &[u8]| {
        let m = Message::parse(bytes).unwrap();
        m.header.exchange == ExchangeType::IKE_SA_INIT
            && matches!(&m.payloads[0], Payload::Notify(x) if x.ty == NotifyType::COOKIE)
    };
    // Collect three cookie-carrying retries (from three initiations), none
    // of which reaches B yet.
    n.filter = Box::new(move |to_b, bytes| !(to_b && is_cookie_retry(bytes)));
    for _ in 0..3 {
        n.initiate();
    }
    let retries: Vec<Vec<u8>> = n
        .sent_a
        .iter()
        .map(|t| t.bytes.clone())
        .filter(|b| is_cookie_retry(b))
        .collect();
    assert_eq!(retries.len(), 3);
    let t0 = n.now;
    let answer = |n: &mut Net, at: Duration, req: &[u8]| {
        n.now = t0 + at;
        n.b.handle_datagram(n.now, n.b_local(), n.a_local(), req);
        let t = n.b.poll_transmit().expect("an answer");
        assert!(n.b.poll_transmit().is_none());
        Message::parse(&t.bytes).unwrap()
    };
    let accepted =
        |m: &Message| m.header.spi_r != 0 && !m.notifies().any(|x| x.ty == NotifyType::COOKIE);
    // Before the change: the current secret.
    let r = answer(&mut n, Duration::from_secs(4 * 60), &retries[0]);
    assert!(accepted(&r));
    // Just after the change (5 min): the previous secret still works.
    let r = answer(&mut n, Duration::from_secs(5 * 60 + 10), &retries[1]);
    assert!(accepted(&r));
    // Past the grace: refused with a fresh cookie of the new version.
    let r = answer(&mut n, Duration::from_secs(5 * 60 + 10 + 61), &retries[2]);
    assert_eq!(r.header.spi_r, 0);
    let fresh = r
        .notifies()
        .find(|x| x.ty == NotifyType::COOKIE)
        .expect("new cookie");
    let old = Message::parse(&retries[2]).unwrap();
    let Payload::Notify(old) = &old.payloads[0] else {
        unreachable!()
    };
    assert_ne!(fresh.data[0], old.data[0], "version octet changed");
    assert_ne!(fresh.data, old.data);
}

fn set_len(bytes: &mut [u8]) {
    let len = u32::try_from(bytes.len()).unwrap().to_be_bytes();
    bytes[24..28].copy_from_slice(&len);
}

/// A copy of `bytes` with a payload header after the SK payload (malformed
/// outside the ICV, hence unauthenticated).
fn with_trailing_payload(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.extend_from_slice(&[0, 0, 0, 4]);
    set_len(&mut v);
    v
}

fn unprotected(
    spi_i: u64,
    spi_r: u64,
    flag_bits: u8,
    message_id: u32,
    payloads: Vec<Payload>,
) -> Vec<u8> {
    use dmvpn_ike::message::Header;
    Message {
        header: Header {
            spi_i,
            spi_r,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::INFORMATIONAL,
            flags: flag_bits,
            message_id,
            length: 0,
        },
        payloads,
    }
    .emit()
    .unwrap()
}

/// §2.21.2/§2.21.4: messages on an existing SA's SPIs that fail
/// authentication (bad ICV, malformed outside the SK payload, or plain
/// unprotected notifies/DELETEs) are dropped and change nothing: no answer,
/// no message ID consumed, no pending request satisfied, no SA torn down.
#[test]
fn forged_messages_on_a_live_sa_are_dropped_without_effect() {
    use dmvpn_ike::message::{Delete, Notify, flags};
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let id = n.initiate();
    let (child_a, child_b) = (
        Net::children(&n.ev_a)[0].spi_in,
        Net::children(&n.ev_b)[0].spi_in,
    );
    n.ev_a.clear();
    n.ev_b.clear();
    let sa = n.a.ike_sas(n.now)[0].clone();
    // A genuine liveness check, held back.
    n.a.probe(n.now, id).unwrap();
    let real = n.a.poll_transmit().unwrap().bytes;
    let mid = Message::parse(&real).unwrap().header.message_id;
    let kill = |fl| {
        unprotected(
            sa.spi_i,
            sa.spi_r,
            fl,
            mid,
            vec![
                Payload::Notify(Notify::new(NotifyType::INVALID_IKE_SPI, Vec::new())),
                Payload::Delete(Delete {
                    protocol: ProtocolId::IKE,
                    spi_size: 0,
                    spis: Vec::new(),
                }),
            ],
        )
    };
    let mut bad_icv = real.clone();
    *bad_icv.last_mut().unwrap() ^= 1;
    for forged in [
        bad_icv,
        with_trailing_payload(&real),
        kill(flags::INITIATOR),
    ] {
        n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &forged);
        assert!(n.b.poll_transmit().is_none());
        assert!(n.b.poll_event().is_none());
    }
    // The genuine request, with the same message ID, is still served.
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &real);
    let answer = n.b.poll_transmit().expect("probe answered").bytes;
    assert_eq!(only_child(&n.b, n.now).spi_in, child_b);
    // Forged answers to A's pending probe.
    let mut bad_icv = answer.clone();
    *bad_icv.last_mut().unwrap() ^= 1;
    for forged in [
        bad_icv,
        with_trailing_payload(&answer),
        kill(flags::RESPONSE),
        unprotected(
            sa.spi_i,
            sa.spi_r,
            flags::RESPONSE,
            mid,
            vec![Payload::Notify(Notify::new(
                NotifyType::INVALID_IKE_SPI,
                Vec::new(),
            ))],
        ),
    ] {
        n.a.handle_datagram(n.now, n.a_local(), n.b_local(), &forged);
        assert!(n.a.poll_transmit().is_none());
        // The unprotected INVALID_IKE_SPI is reported as a hint (and only
        // that); nothing else changes.
        while let Some(e) = n.a.poll_event() {
            assert!(
                matches!(e, Event::InvalidIkeSpi { sa, .. } if sa == id),
                "{e:?}"
            );
        }
    }
    assert_eq!(n.a.ike_sas(n.now)[0].state, IkeSaState::Established);
    assert_eq!(only_child(&n.a, n.now).spi_in, child_a);
    // None of them counted as the answer: with the real one withheld, the
    // probe is retransmitted to its limit and the peer declared dead.
    n.filter = Box::new(|_, _| false);
    n.run_for(Duration::from_secs(30));
    assert!(
        n.ev_a
            .iter()
            .any(|e| matches!(e, Event::PeerDead { sa, .. } if *sa == id))
    );
}

/// §2.21.4: a request for SPIs we do not know gets an unprotected, rate
/// limited INVALID_IKE_SPI response (SPIs and Message ID copied); responses
/// are never answered; the notify changes nothing at the receiver.
#[test]
fn unknown_spi_request_gets_rate_limited_unprotected_invalid_ike_spi() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let id = n.initiate();
    let child_a = Net::children(&n.ev_a)[0].spi_in;
    n.ev_a.clear();
    n.a.probe(n.now, id).unwrap();
    let mut stray = n.a.poll_transmit().unwrap().bytes;
    stray[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
    let req = Message::parse(&stray).unwrap().header;
    let mut answers = Vec::new();
    for _ in 0..30 {
        n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &stray);
        while let Some(t) = n.b.poll_transmit() {
            assert_eq!(t.remote, n.a_local());
            answers.push(t.bytes);
        }
    }
    assert_eq!(answers.len(), 10, "rate-limited");
    let m = Message::parse(&answers[0]).unwrap();
    assert!(m.header.is_response() && !m.header.is_initiator());
    assert_eq!((m.header.spi_i, m.header.spi_r), (req.spi_i, req.spi_r));
    assert_eq!(m.header.message_id, req.message_id);
    assert_eq!(m.header.exchange, ExchangeType::INFORMATIONAL);
    assert!(matches!(&m.payloads[..], [Payload::Notify(x)] if x.ty == NotifyType::INVALID_IKE_SPI));
    // A new second, a new budget.
    n.now += Duration::from_secs(1);
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &stray);
    assert!(n.b.poll_transmit().is_some());
    // A response to unknown SPIs MUST NOT be answered.
    let mut resp = stray.clone();
    resp[19] |= 0x20;
    n.now += Duration::from_secs(1);
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &resp);
    assert!(n.b.poll_transmit().is_none());
    // A receives the notify (it names its SA and pending message ID): it MUST
    // NOT change any SA state.
    n.a.handle_datagram(n.now, n.a_local(), n.b_local(), &answers[0]);
    assert!(n.a.poll_transmit().is_none());
    assert!(n.a.poll_event().is_none());
    assert_eq!(only_child(&n.a, n.now).spi_in, child_a);
    assert!(n.b.poll_event().is_none());
}

/// §2.5/§1.5: an IKE_SA_INIT of major version 3 is dropped (no state) and
/// answered with an unprotected INVALID_MAJOR_VERSION carrying 2.0 in its
/// header; other version-3 messages are only dropped.
#[test]
fn higher_major_version_sa_init_gets_invalid_major_version() {
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    n.a.initiate(n.now, n.a_local(), n.b_local()).unwrap();
    let mut init = n.a.poll_transmit().unwrap().bytes;
    init[17] = 0x30;
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &init);
    let t = n.b.poll_transmit().expect("answered");
    assert!(n.b.poll_transmit().is_none());
    assert_eq!(t.remote, n.a_local());
    let m = Message::parse(&t.bytes).unwrap();
    assert_eq!(m.header.version, 0x20);
    assert_eq!(m.header.exchange, ExchangeType::IKE_SA_INIT);
    assert!(m.header.is_response() && !m.header.is_initiator());
    assert_eq!(m.header.message_id, 0);
    assert_eq!(m.header.spi_r, 0);
    assert_eq!(
        m.header.spi_i,
        u64::from_be_bytes(init[..8].try_into().unwrap())
    );
    assert!(
        matches!(&m.payloads[..], [Payload::Notify(x)] if x.ty == NotifyType::INVALID_MAJOR_VERSION)
    );
    assert!(n.b.ike_sas(n.now).is_empty());
    assert!(n.b.poll_event().is_none());
    // Not an IKE_SA_INIT request: dropped silently.
    let mut resp = init.clone();
    resp[19] |= 0x20;
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &resp);
    let mut info = init.clone();
    info[18] = ExchangeType::INFORMATIONAL.0;
    n.b.handle_datagram(n.now, n.b_local(), n.a_local(), &info);
    assert!(n.b.poll_transmit().is_none());
}

#[test]
fn half_open_sas_are_capped_globally_and_per_source() {
    // (global cap, per-source cap, kept, refused outright, evicted): past the per-source
    // cap the requests get a cookie challenge instead (never answered here); at the global
    // cap the oldest half-open SA gives way to the new request, so the table stays full of
    // the newest and nobody is locked out.
    for (global, per_peer, kept, refused, evicted) in [(100, 2, 2, 0, 0), (3, 100, 3, 0, 2)] {
        let mut cb = config(b"k");
        cb.max_half_open = global;
        cb.max_half_open_per_peer = per_peer;
        cb.cookie_threshold = 1000;
        let mut n = Net::new(config(b"k"), cb, false);
        // B's answers never arrive: every SA B creates stays half open.
        n.filter = Box::new(|to_b, _| to_b);
        for _ in 0..5 {
            n.a.initiate(n.now, n.a_local(), n.b_local()).unwrap();
            n.flush();
        }
        let half_open =
            n.b.ike_sas(n.now)
                .iter()
                .filter(|s| s.state == IkeSaState::ExpectAuthRequest)
                .count();
        assert_eq!(half_open, kept, "global {global}, per peer {per_peer}");
        assert_eq!(n.b.counters().half_open_refused, refused);
        assert_eq!(n.b.counters().half_open_evicted, evicted);
        // Every request was answered (response or cookie) except the refused ones.
        assert_eq!(
            n.sent_b.len() as u64,
            5 - refused,
            "global {global}, per peer {per_peer}"
        );
        // They expire and make room again.
        n.run_for(Duration::from_secs(60));
        assert!(n.b.ike_sas(n.now).is_empty());
    }
}

/// RFC 7296 §2.21.1: an unprotected error in an IKE_SA_INIT response may be forged; the
/// initiator keeps waiting for a valid response, and reports the refusal only at the timeout.
#[test]
fn a_forged_sa_init_refusal_does_not_abort_the_exchange() {
    let mut refusing = config(b"k");
    refusing.ike_proposals = vec![IkeProposal {
        prf: dmvpn_crypto::PrfAlg::HmacSha256,
        ..IkeProposal::default()
    }];
    let mut forger = Endpoint::new(refusing.clone(), Box::new(TestRng::new(7)));
    // And one that asks for a group we never offered (INVALID_KE_PAYLOAD, §1.2).
    let mut other_group = config(b"k");
    other_group.ike_proposals = vec![IkeProposal {
        dh: DhAlg::Ecp384,
        ..IkeProposal::default()
    }];
    let mut ke_forger = Endpoint::new(other_group, Box::new(TestRng::new(8)));
    let mut n = Net::new(config(b"k"), config(b"k"), false);
    let (la, lb) = (n.a_local(), n.b_local());
    n.a.initiate(n.now, la, lb).unwrap();
    let init = n.a.poll_transmit().expect("IKE_SA_INIT");
    forger.handle_datagram(n.now, lb, la, &init.bytes);
    let forged = forger.poll_transmit().expect("a refusal");
    n.a.handle_datagram(n.now, la, lb, &forged.bytes);
    ke_forger.handle_datagram(n.now, lb, la, &init.bytes);
    let forged = ke_forger.poll_transmit().expect("an INVALID_KE_PAYLOAD");
    n.a.handle_datagram(n.now, la, lb, &forged.bytes);
    while let Some(e) = n.a.poll_event() {
        assert!(
            !matches!(e, Event::EstablishFailed { .. }),
            "aborted by a forged refusal: {e:?}"
        );
    }
    // The genuine response still completes the exchange.
    n.b.handle_datagram(n.now, lb, la, &init.bytes);
    n.flush();
    assert_eq!(Net::children(&n.ev_a).len(), 1, "{:?}", n.ev_a);

    // A responder that really refuses: the failure (with its reason) comes at the timeout.
    let mut n = Net::new(config(b"k"), refusing, false);
    let t0 = n.now;
    n.initiate();
    assert!(
        !n.ev_a
            .iter()
            .any(|e| matches!(e, Event::EstablishFailed { .. })),
        "failed before the timeout"
    );
    n.run_for(Duration::from_secs(600));
    assert_eq!(
        count(&n.ev_a, |e| matches!(
            e,
            Event::EstablishFailed {
                reason: NotifyType::NO_PROPOSAL_CHOSEN,
                ..
            }
        )),
        1,
        "{:?} after {:?}",
        n.ev_a,
        n.now - t0
    );
}

/// A blind attacker spoofing a peer's address fills that address's half-open quota; the real
/// peer still gets in, because past the quota a cookie is demanded, and the peer, unlike the
/// spoofer, receives it and retries with it (§2.6).
#[test]
fn a_spoofed_flood_does_not_lock_the_real_peer_out() {
    let mut cb = config(b"k");
    cb.max_half_open_per_peer = 2;
    let mut n = Net::new(config(b"k"), cb, false);
    n.filter = Box::new(|to_b, _| to_b);
    for _ in 0..4 {
        n.a.initiate(n.now, n.a_local(), n.b_local()).unwrap();
        n.flush();
    }
    n.filter = Box::new(|_, _| true);
    n.ev_a.clear();
    n.initiate();
    assert_eq!(Net::children(&n.ev_a).len(), 1, "{:?}", n.ev_a);
}

/// §2.6: at the hard cap the oldest half-open SA gives way, so a peer arriving while a
/// flood holds the table (even one that returns cookies) still gets its SA.
#[test]
fn a_full_half_open_table_gives_way_to_a_new_peer() {
    let mut cb = config(b"k");
    cb.max_half_open = 4;
    cb.cookie_threshold = 1000;
    let mut n = Net::new(config(b"k"), cb, false);
    // A "flood" from other addresses whose answers never arrive, one request per 100 ms.
    let mut flood = Endpoint::new(config(b"k"), Box::new(TestRng::new(77)));
    for i in 0..10u8 {
        let src: std::net::SocketAddr = format!("192.0.2.{}:500", i + 10).parse().unwrap();
        flood.initiate(n.now, src, n.b_local()).unwrap();
        let t = flood.poll_transmit().expect("IKE_SA_INIT");
        n.b.handle_datagram(n.now, n.b_local(), src, &t.bytes);
        while n.b.poll_transmit().is_some() {}
        n.now += Duration::from_millis(100);
    }
    assert_eq!(n.b.counters().half_open_evicted, 6);
    // An honest spoke now: it gets through at once.
    n.initiate();
    assert_eq!(
        count(&n.ev_b, |e| matches!(e, Event::IkeSaUp { .. })),
        1,
        "{:?}",
        n.ev_b
    );
    assert_eq!(n.b.counters().half_open_refused, 0);
}

/// Only a request that passed every check (its cookie too) takes a half-open slot: at the cap,
/// spoofed requests that cannot return the cookie evict nothing.
#[test]
fn requests_without_their_cookie_evict_nothing_at_the_cap() {
    let mut cb = config(b"k");
    cb.max_half_open = 2;
    cb.cookie_threshold = 2;
    let mut n = Net::new(config(b"k"), cb, false);
    let mut flood = Endpoint::new(config(b"k"), Box::new(TestRng::new(78)));
    for i in 0..7u8 {
        let src: std::net::SocketAddr = format!("192.0.2.{}:500", i + 10).parse().unwrap();
        flood.initiate(n.now, src, n.b_local()).unwrap();
        let t = flood.poll_transmit().expect("IKE_SA_INIT");
        n.b.handle_datagram(n.now, n.b_local(), src, &t.bytes);
        while n.b.poll_transmit().is_some() {}
    }
    let half_open =
        n.b.ike_sas(n.now)
            .iter()
            .filter(|s| s.state == IkeSaState::ExpectAuthRequest)
            .count();
    assert_eq!(half_open, 2);
    assert_eq!(n.b.counters().half_open_evicted, 0);
}
