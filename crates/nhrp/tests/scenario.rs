//! Scenarios on the in-memory DMVPN of `dmvpn_nhrp::testing`: one hub and
//! two spokes, spoke B behind 1:1 NAT as on EC2.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dmvpn_nhrp::packet::{Body, Cie, ExtensionBody, Packet};
use dmvpn_nhrp::testing::{
    A, B, HUB, Net, a_nbma, a_tun, b_private, b_public, b_tun, hub_nbma, hub_tun, ip, ipv4_header,
    key, spoke,
};
use dmvpn_nhrp::{
    CieCode, Config, DropReason, Engine, EntryKind, ErrorCode, Event, ExtensionType, Flags,
    NhsConfig, NhsState, PacketType, SeededRequestIds,
};

fn registered(net: &Net, tun: IpAddr) -> Option<dmvpn_nhrp::CacheEntry> {
    net.nodes[HUB]
        .engine
        .cache_entries(net.now)
        .into_iter()
        .find(|e| e.kind == EntryKind::Dynamic && e.protocol_addr == tun)
}

#[test]
fn registration_with_nat_learning() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let a = registered(&net, a_tun()).expect("A registered");
    assert_eq!(
        (a.nbma, a.post_nat_nbma, a.flags.nat, a.flags.unique),
        (a_nbma(), None, false, true)
    );
    let b = registered(&net, b_tun()).expect("B registered");
    assert_eq!(
        (b.nbma, b.post_nat_nbma, b.flags.nat),
        (b_private(), Some(b_public()), true)
    );
    assert!(
        net.take_events(B)
            .contains(&Event::PublicNbmaLearned { nbma: b_public() })
    );
    assert_eq!(net.nodes[B].engine.public_nbma(), Some(b_public()));
    assert_eq!(
        net.nodes[A].engine.public_nbma(),
        None,
        "A is not behind NAT"
    );
    for s in [A, B] {
        assert_eq!(
            net.nodes[s].engine.nhs_status(net.now)[0].state,
            NhsState::Up
        );
        assert_eq!(
            net.nodes[s].engine.multicast_nbmas(net.now),
            vec![hub_nbma()]
        );
    }
    let hub_events = net.take_events(HUB);
    assert!(hub_events.contains(&Event::PeerRegistered {
        protocol_addr: b_tun(),
        nbma: b_public()
    }));
    assert_eq!(
        net.nodes[HUB].engine.multicast_nbmas(net.now),
        vec![a_nbma(), b_public()]
    );
}

#[test]
fn wire_note_8_nat_extension_second_cie_only_when_natted() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let replies = net.sent(PacketType::REGISTRATION_REPLY);
    let to_b = replies.iter().find(|(_, to, _)| *to == b_public()).unwrap();
    let nat = to_b
        .2
        .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
        .unwrap();
    assert_eq!(nat.len(), 2);
    assert_eq!(
        (nat[1].client_nbma_ip(), nat[1].client_protocol_ip()),
        (Some(b_public()), Some(b_tun()))
    );
    let to_a = replies.iter().find(|(_, to, _)| *to == a_nbma()).unwrap();
    assert_eq!(
        to_a.2
            .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .unwrap()
            .len(),
        1
    );
    // The NHS's identity comes back in the Responder Address extension.
    let ra = to_b
        .2
        .extension_cies(ExtensionType::RESPONDER_ADDRESS)
        .unwrap();
    assert_eq!(ra[0].client_protocol_ip(), Some(hub_tun()));
}

#[test]
fn wire_note_7_reregister_at_a_third_and_backoff_when_unanswered() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let regs = |net: &Net| {
        net.sent(PacketType::REGISTRATION_REQUEST)
            .iter()
            .filter(|(i, _, _)| *i == A)
            .count()
    };
    assert_eq!(regs(&net), 1);
    // At a third of the holding time (2400 s), less at most a tenth of that as jitter.
    net.advance(Duration::from_secs(2400 - 240 - 1));
    assert_eq!(regs(&net), 1);
    net.advance(Duration::from_secs(241));
    assert_eq!(regs(&net), 2, "re-registration at holding time / 3");
    // Now the hub stops answering: 2, 4, 8, 16, 32, 64 s, then the SA is reset.
    net.blackhole.push(hub_nbma());
    net.take_events(A);
    // The next refresh, within a third of the holding time (found to the second)...
    let mut waited = 0;
    while regs(&net) < 3 && waited <= 2400 {
        net.advance(Duration::from_secs(1));
        waited += 1;
    }
    assert_eq!(regs(&net), 3, "the second refresh within 2400 s");
    // ...then retransmissions 2, 4, 8, 16, 32 s apart; when the 64 s wait also passes
    // unanswered the SA is reset.
    net.advance(Duration::from_secs(2 + 4 + 8 + 16 + 32 + 63));
    assert_eq!(
        regs(&net),
        3 + 5,
        "initial, two refreshes, five retransmissions"
    );
    assert!(
        !net.take_events(A)
            .contains(&Event::ResetSa { nbma: hub_nbma() })
    );
    net.advance(Duration::from_secs(1));
    let ev = net.take_events(A);
    assert!(ev.contains(&Event::ResetSa { nbma: hub_nbma() }), "{ev:?}");
    assert!(ev.contains(&Event::NeedSa { nbma: hub_nbma() }), "{ev:?}");
    assert_eq!(regs(&net), 8, "no ninth attempt before a new SA");
    // Retransmissions reuse the request id.
    let ids: Vec<_> = net
        .sent(PacketType::REGISTRATION_REQUEST)
        .iter()
        .filter(|(i, _, _)| *i == A)
        .map(|(_, _, p)| p.request_id())
        .collect();
    assert!(ids[2..].iter().all(|id| *id == ids[2]));
    assert_ne!(ids[1], ids[2]);
}

#[test]
fn wire_note_6_unique_registration_refuses_new_nbma_until_expiry() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    // An impostor claims A's tunnel address from elsewhere.
    let mut c = Config::spoke(
        a_tun(),
        24,
        ip(192, 0, 2, 99),
        vec![NhsConfig {
            protocol_addr: Some(hub_tun()),
            nbma_addr: hub_nbma(),
            multicast: false,
        }],
    );
    key(&mut c);
    c.holding_time = Duration::from_secs(60);
    let mut imp = Engine::new(c, SeededRequestIds::new(9)).unwrap();
    imp.sa_up(net.now, hub_nbma());
    imp.register(net.now);
    let req = imp.poll_transmit().unwrap();
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, ip(192, 0, 2, 99), &req.bytes);
    let reply = net.nodes[HUB].engine.poll_transmit().unwrap();
    let p = Packet::parse(&reply.bytes).unwrap();
    assert_eq!(p.cies()[0].code, CieCode::UNIQUE_ADDRESS_ALREADY_REGISTERED);
    assert_eq!(registered(&net, a_tun()).unwrap().nbma, a_nbma());
    imp.handle_packet(now, hub_nbma(), &reply.bytes);
    assert!(matches!(
        imp.poll_event(),
        Some(Event::RequestAnswered {
            accepted: false,
            ..
        })
    ));
    assert!(matches!(
        imp.poll_event(),
        Some(Event::RegistrationRefused {
            code: CieCode::UNIQUE_ADDRESS_ALREADY_REGISTERED,
            ..
        })
    ));
    // A goes away (no refresh reaches the hub); once the entry expires the new NBMA is accepted.
    net.blackhole.push(hub_nbma());
    net.advance(Duration::from_secs(7201));
    assert!(registered(&net, a_tun()).is_none());
    assert!(net.take_events(HUB).contains(&Event::PeerUnregistered {
        protocol_addr: a_tun(),
        nbma: a_nbma()
    }));
    let id_req = Packet::parse(&req.bytes).unwrap();
    let mut again = id_req.clone();
    if let Body::Common { request_id, .. } = &mut again.body {
        *request_id += 1;
    }
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, ip(192, 0, 2, 99), &again.to_bytes().unwrap());
    let reply = net.nodes[HUB].engine.poll_transmit().unwrap();
    assert_eq!(
        Packet::parse(&reply.bytes).unwrap().cies()[0].code,
        CieCode::SUCCESS
    );
}

/// Redirect from the hub, resolution through it, answer direct from B.
fn redirect_a_to_b(net: &mut Net) {
    net.register_all();
    net.take_events(A);
    net.take_events(B);
    net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
}

#[test]
fn redirect_resolution_and_shortcut() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    let ev = net.take_events(A);
    assert!(
        ev.contains(&Event::InstallRoute {
            prefix: ip(10, 0, 103, 0),
            prefix_len: 24,
            next_hop: b_tun(),
            nbma: b_public(),
        }),
        "{ev:?}"
    );
    // B asked the daemon for an SA to A before its reply could leave.
    assert!(
        net.take_events(B)
            .contains(&Event::NeedSa { nbma: a_nbma() })
    );
    let replies = net.sent(PacketType::RESOLUTION_REPLY);
    assert_eq!(replies.len(), 1);
    let (from, to, rep) = &replies[0];
    assert_eq!(
        (*from, *to),
        (B, a_nbma()),
        "reply goes directly to the requester"
    );
    assert_eq!(
        rep.cies()[0].prefix_len,
        24,
        "CIE carries the covering prefix"
    );
    assert_eq!(
        net.nodes[A].engine.lookup_nbma(b_tun(), net.now),
        Some(b_public())
    );
    let sc = net.nodes[A]
        .engine
        .cache_entries(net.now)
        .into_iter()
        .find(|e| e.kind == EntryKind::Shortcut)
        .unwrap();
    assert_eq!(
        (sc.protocol_addr, sc.prefix_len, sc.post_nat_nbma),
        (ip(10, 0, 103, 0), 24, Some(b_public()))
    );
}

#[test]
fn wire_note_10_traffic_indication_names_source_and_receiver_resolves_inner_destination() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    let tis = net.sent(PacketType::TRAFFIC_INDICATION);
    assert_eq!(tis.len(), 1);
    let (from, to, ti) = &tis[0];
    assert_eq!((*from, *to), (HUB, a_nbma()));
    assert_eq!(ti.src_protocol_ip(), Some(hub_tun()));
    assert_eq!(
        ti.dst_protocol_ip(),
        Some(ip(10, 0, 101, 2)),
        "dst proto = source of the data packet"
    );
    let Body::TrafficIndication { traffic_code, data } = &ti.body else {
        panic!()
    };
    assert_eq!(
        (*traffic_code, data.as_slice()),
        (
            0,
            ipv4_header(ip(10, 0, 101, 2), ip(10, 0, 103, 2)).as_slice()
        )
    );
    let req = &net.sent(PacketType::RESOLUTION_REQUEST)[0].2;
    assert_eq!(
        req.dst_protocol_ip(),
        Some(ip(10, 0, 103, 2)),
        "resolves the inner destination"
    );
}

#[test]
fn wire_note_9_resolution_request_shape_and_nat_extension() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    // B (behind NAT) is redirected towards A.
    net.data_via_hub(B, ip(10, 0, 103, 2), ip(10, 0, 101, 2));
    let reqs = net.sent(PacketType::RESOLUTION_REQUEST);
    let (_, to, first) = &reqs[0];
    assert_eq!(*to, hub_nbma());
    assert_eq!(
        first.flags(),
        Flags::RESOLUTION_Q | Flags::RESOLUTION_A | Flags::RESOLUTION_S | Flags::CISCO_NAT
    );
    assert_eq!(
        first.src_nbma_ip(),
        Some(b_private()),
        "src NBMA is the own private address"
    );
    let nat = first
        .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
        .unwrap();
    assert_eq!(
        (nat[0].client_nbma_ip(), nat[0].client_protocol_ip()),
        (Some(b_public()), Some(b_tun()))
    );
    // A answers directly to B's post-NAT address taken from the NAT extension.
    let reps = net.sent(PacketType::RESOLUTION_REPLY);
    assert_eq!((reps[0].0, reps[0].1), (A, b_public()));
    let f = reps[0].2.flags();
    assert_eq!(
        f & (Flags::RESOLUTION_A | Flags::RESOLUTION_D),
        Flags::RESOLUTION_A | Flags::RESOLUTION_D
    );
    assert!(net.take_events(B).contains(&Event::InstallRoute {
        prefix: ip(10, 0, 101, 0),
        prefix_len: 24,
        next_hop: a_tun(),
        nbma: a_nbma()
    }));
}

#[test]
fn wire_note_15_forwarding_appends_transit_fills_nat_and_regenerates_auth() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.data_via_hub(B, ip(10, 0, 103, 2), ip(10, 0, 101, 2));
    let fwd = net
        .sent(PacketType::RESOLUTION_REQUEST)
        .into_iter()
        .find(|(i, _, _)| *i == HUB)
        .unwrap()
        .2;
    let ft = fwd
        .extension_cies(ExtensionType::FORWARD_TRANSIT_RECORD)
        .unwrap();
    assert_eq!(ft.len(), 1);
    assert_eq!(ft[0].client_protocol_ip(), Some(hub_tun()));
    assert_eq!(fwd.hop_count, 63, "hop count decremented");
    let exts = fwd.extensions.as_ref().unwrap();
    let auths = exts
        .iter()
        .filter(|e| e.ext_type() == ExtensionType::AUTHENTICATION)
        .count();
    assert_eq!(
        auths, 1,
        "exactly one authentication extension, never duplicated"
    );
    assert_eq!(
        exts.last().unwrap().ext_type(),
        ExtensionType::AUTHENTICATION
    );

    // A's own request has an empty NAT extension (not behind NAT); nothing to fill.
    // A request arriving with an empty NAT extension from a NATed spoke gets it filled:
    let mut b2 = spoke(b_tun(), b_private(), 77);
    let mut req = b2.resolution_request(ip(10, 0, 101, 7), 4242);
    assert!(
        req.extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
            .unwrap()
            .is_empty()
    );
    req.hop_count = 5;
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, b_public(), &req.to_bytes().unwrap());
    let out = Packet::parse(&net.nodes[HUB].engine.poll_transmit().unwrap().bytes).unwrap();
    let nat = out
        .extension_cies(ExtensionType::CISCO_NAT_ADDRESS)
        .unwrap();
    assert_eq!(
        (nat[0].client_nbma_ip(), nat[0].client_protocol_ip()),
        (Some(b_public()), Some(b_tun()))
    );
    let _ = b2.poll_transmit();
}

#[test]
fn wire_note_14_loop_detected_is_code_3_and_hop_exceeded_is_15() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let a = spoke(a_tun(), a_nbma(), 5);
    let mut req = a.resolution_request(ip(10, 0, 103, 2), 777);
    for e in req.extensions.as_mut().unwrap() {
        if let ExtensionBody::ForwardTransit(c) = &mut e.body {
            c.push(Cie {
                client_nbma: hub_nbma()
                    .to_string()
                    .parse::<Ipv4Addr>()
                    .unwrap()
                    .octets()
                    .to_vec(),
                client_protocol: vec![10, 250, 0, 1],
                ..Cie::default()
            });
        }
    }
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &req.to_bytes().unwrap());
    let ei = Packet::parse(&net.nodes[HUB].engine.poll_transmit().unwrap().bytes).unwrap();
    assert!(
        matches!(
            ei.body,
            Body::ErrorIndication {
                error_code: ErrorCode(3),
                ..
            }
        ),
        "{ei:?}"
    );
    assert_eq!(
        net.nodes[HUB]
            .engine
            .counters()
            .dropped(DropReason::LoopDetected),
        1
    );

    let mut req = a.resolution_request(ip(10, 0, 103, 2), 778);
    req.hop_count = 1;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &req.to_bytes().unwrap());
    let ei = Packet::parse(&net.nodes[HUB].engine.poll_transmit().unwrap().bytes).unwrap();
    assert!(
        matches!(
            ei.body,
            Body::ErrorIndication {
                error_code: ErrorCode(15),
                ..
            }
        ),
        "{ei:?}"
    );
    assert_eq!(
        ei.dst_protocol,
        vec![10, 250, 0, 9],
        "sent to the offending packet's source"
    );
}

#[test]
fn redirects_are_rate_limited_per_pair() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let count = |net: &Net| net.sent(PacketType::TRAFFIC_INDICATION).len();
    for _ in 0..10 {
        net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
    }
    assert_eq!(count(&net), 1, "spacing suppresses repeats");
    net.data_via_hub(A, ip(10, 0, 101, 3), ip(10, 0, 103, 2));
    assert_eq!(count(&net), 2, "another pair is not limited");
    assert_eq!(
        net.nodes[HUB]
            .engine
            .counters()
            .dropped(DropReason::RateLimited),
        9
    );
    net.advance(Duration::from_secs(5));
    net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
    assert_eq!(count(&net), 3);
}

#[test]
fn shortcut_expires_unless_used_then_refreshes() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    net.take_events(A);
    let reqs = |net: &Net| {
        net.sent(PacketType::RESOLUTION_REQUEST)
            .iter()
            .filter(|(i, _, _)| *i == A)
            .count()
    };
    assert_eq!(reqs(&net), 1);
    // Used: refreshed at two thirds of the holding time, so no withdraw.
    net.advance(Duration::from_secs(1000));
    let now = net.now;
    net.nodes[A].engine.shortcut_used(now, ip(10, 0, 103, 2));
    net.advance(Duration::from_secs(4000));
    assert_eq!(reqs(&net), 2, "refresh sent");
    assert!(
        !net.take_events(A)
            .iter()
            .any(|e| matches!(e, Event::WithdrawRoute { .. }))
    );
    // Unused: withdrawn when the holding time runs out.
    net.advance(Duration::from_secs(7200));
    let ev = net.take_events(A);
    assert!(
        ev.contains(&Event::WithdrawRoute {
            prefix: ip(10, 0, 103, 0),
            prefix_len: 24,
            next_hop: b_tun()
        }),
        "{ev:?}"
    );
    assert!(
        !net.nodes[A]
            .engine
            .cache_entries(net.now)
            .iter()
            .any(|e| e.kind == EntryKind::Shortcut)
    );
}

#[test]
fn purge_on_shutdown_removes_registration() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    net.take_events(HUB);
    let now = net.now;
    net.nodes[A].engine.shutdown(now);
    net.pump();
    let ev = net.take_events(HUB);
    assert!(
        ev.contains(&Event::PeerUnregistered {
            protocol_addr: a_tun(),
            nbma: a_nbma()
        }),
        "{ev:?}"
    );
    assert!(registered(&net, a_tun()).is_none());
    assert_eq!(net.sent(PacketType::PURGE_REPLY).len(), 1);
    let a_ev = net.take_events(A);
    assert!(
        a_ev.iter()
            .any(|e| matches!(e, Event::WithdrawRoute { .. }))
    );
    assert!(a_ev.iter().any(|e| matches!(e, Event::NhsDown { .. })));
}

/// The purges sent at shutdown are awaited until the NHS's Purge Reply (RFC 2332 §5.2.6) with
/// their request id arrives from it: a reply from another address or with another id (a
/// hostile spoke guessing) does not count, so the caller's IKE DELETE cannot overtake the purge.
#[test]
fn shutdown_awaits_the_purge_reply_from_the_nhs_with_its_id() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.blackhole.push(a_nbma()); // the hub's answers to A are lost for now
    let now = net.now;
    net.nodes[A].engine.shutdown(now);
    net.pump();
    assert_eq!(net.nodes[A].engine.purges_unanswered(), 1);
    let (_, to, reply) = net
        .sent(PacketType::PURGE_REPLY)
        .pop()
        .expect("the hub answered the purge");
    assert_eq!(to, a_nbma());
    let bytes = reply.to_bytes().unwrap();
    let mut other_id = reply.clone();
    if let Body::Common { request_id, .. } = &mut other_id.body {
        *request_id = request_id.wrapping_add(1);
    }
    let engine = &mut net.nodes[A].engine;
    engine.handle_packet(now, b_public(), &bytes);
    engine.handle_packet(now, hub_nbma(), &other_id.to_bytes().unwrap());
    assert_eq!(engine.purges_unanswered(), 1, "neither answers our purge");
    engine.handle_packet(now, hub_nbma(), &bytes);
    assert_eq!(engine.purges_unanswered(), 0);
}

#[test]
fn wire_note_6_purge_carries_the_registration_request_id() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let reg_id = net
        .sent(PacketType::REGISTRATION_REQUEST)
        .iter()
        .find(|(i, _, _)| *i == A)
        .unwrap()
        .2
        .request_id();
    let now = net.now;
    net.nodes[A].engine.set_nbma(now, ip(198, 51, 100, 33));
    // The old address is purged with the old id; the new one is registered.
    net.nodes[A].public = ip(198, 51, 100, 33);
    net.pump();
    let purge = &net.sent(PacketType::PURGE_REQUEST)[0].2;
    assert_eq!(purge.request_id(), reg_id);
    assert_eq!(purge.cies()[0].client_nbma_ip(), Some(a_nbma()));
    let e = registered(&net, a_tun()).unwrap();
    assert_eq!(
        e.nbma,
        ip(198, 51, 100, 33),
        "re-registered after the purge freed the unique entry"
    );
}

/// Spoke A's configuration with an NHRP key the hub does not share.
fn spoke_a_with_wrong_key() -> Config {
    let mut c = Config::spoke(
        a_tun(),
        24,
        a_nbma(),
        vec![NhsConfig {
            protocol_addr: Some(hub_tun()),
            nbma_addr: hub_nbma(),
            multicast: false,
        }],
    );
    c.auth_key = Some(b"wrong".to_vec());
    c
}

#[test]
fn wire_note_11_auth_mismatch_dropped_counted_and_answered_with_code_11() {
    let mut net = Net::hub_and_two_spokes();
    let c = spoke_a_with_wrong_key();
    let mut bad = Engine::new(c, SeededRequestIds::new(4)).unwrap();
    bad.sa_up(net.now, hub_nbma());
    bad.register(net.now);
    let req = bad.poll_transmit().unwrap();
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &req.bytes);
    assert!(registered(&net, a_tun()).is_none());
    assert_eq!(net.nodes[HUB].engine.counters().auth_failures, 1);
    let ei = net.nodes[HUB].engine.poll_transmit().unwrap();
    let p = Packet::parse(&ei.bytes).unwrap();
    assert!(matches!(
        p.body,
        Body::ErrorIndication {
            error_code: ErrorCode::AUTHENTICATION_FAILURE,
            ..
        }
    ));
    assert!(
        p.extensions.is_none(),
        "RFC 2332 §5.2.7: no extensions in an Error Indication"
    );
    bad.handle_packet(now, hub_nbma(), &ei.bytes);
    assert_eq!(
        bad.poll_event(),
        Some(Event::ErrorIndication {
            from_nbma: hub_nbma(),
            code: ErrorCode::AUTHENTICATION_FAILURE
        })
    );
    // An Error Indication with the wrong key is dropped and counted, but
    // never answered with another Error Indication.
    let mut with_auth = p.clone();
    with_auth.extensions = Some(vec![dmvpn_nhrp::Extension::compulsory(
        ExtensionBody::Authentication(dmvpn_nhrp::Authentication::cleartext(b"keykey00")),
    )]);
    bad.handle_packet(now, hub_nbma(), &with_auth.to_bytes().unwrap());
    assert_eq!(bad.counters().auth_failures, 1);
    assert!(bad.poll_transmit().is_none());
    assert!(bad.poll_event().is_none());
    // A packet without any authentication is a failure too.
    let mut p = Packet::parse(&req.bytes).unwrap();
    p.extensions = None;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &p.to_bytes().unwrap());
    assert_eq!(net.nodes[HUB].engine.counters().auth_failures, 2);
}

#[test]
fn wire_note_4_hop_count_at_least_one() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    net.data_via_hub(B, ip(10, 0, 103, 2), ip(10, 0, 101, 2));
    let now = net.now;
    net.nodes[A].engine.shutdown(now);
    net.pump();
    let mut types = std::collections::BTreeSet::new();
    for (_, _, b) in &net.wire {
        let p = Packet::parse(b).unwrap();
        assert!(p.hop_count >= 1, "{p:?}");
        types.insert(p.packet_type.0);
    }
    assert!(
        types.is_superset(&[1, 2, 3, 4, 5, 6, 8].into_iter().collect()),
        "{types:?}"
    );
    // Registration and traffic indication use 1, as FRR does.
    assert_eq!(net.sent(PacketType::REGISTRATION_REQUEST)[0].2.hop_count, 1);
    assert_eq!(net.sent(PacketType::TRAFFIC_INDICATION)[0].2.hop_count, 1);
}

#[test]
fn wire_note_5_unique_flag_positions() {
    let net = Net::hub_and_two_spokes();
    let a = &net.nodes[A].engine;
    let reg = a.registration_request(0, 1).unwrap();
    assert_eq!(reg.flags(), Flags::REGISTRATION_U | Flags::CISCO_NAT);
    assert_eq!(reg.flags(), 0x8002);
    assert_eq!(reg.cies()[0].prefix_len, 0xff, "unique host prefix");
    let res = a.resolution_request(ip(10, 0, 103, 2), 1);
    assert_eq!(
        res.flags() & 0x8000,
        Flags::RESOLUTION_Q,
        "0x8000 is Q, not unique, in resolution"
    );
    assert_eq!(res.flags() & Flags::RESOLUTION_U, 0);
}

#[test]
fn wire_note_12_and_13_nat_extension_optional_and_end_marker() {
    let net = Net::hub_and_two_spokes();
    let bytes = net.nodes[A]
        .engine
        .registration_request(0, 1)
        .unwrap()
        .to_bytes()
        .unwrap();
    let p = Packet::parse(&bytes).unwrap();
    assert!(
        !p.extension(ExtensionType::CISCO_NAT_ADDRESS)
            .unwrap()
            .compulsory
    );
    let off = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    // Walk the extension chain on the raw bytes.
    let mut at = off;
    let mut words = vec![];
    loop {
        let w = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let l = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        words.push((w, l));
        at += 4 + l;
        if w & 0x7fff == 0 {
            break;
        }
    }
    assert_eq!(at, bytes.len(), "End is the last thing in the packet");
    assert_eq!(
        words.iter().map(|w| w.0).collect::<Vec<_>>(),
        [0x8004, 0x8005, 0x8003, 0x0009, 0x8007, 0x8000]
    );
    assert_eq!(*words.last().unwrap(), (0x8000, 0));
    assert_eq!(
        words[4].1, 12,
        "auth: 0x00000001 then the 8-byte key, no padding"
    );
}

#[test]
fn wire_note_16_network_id_never_on_the_wire() {
    let build = |id: u32| {
        let mut c = Config::spoke(
            a_tun(),
            24,
            a_nbma(),
            vec![NhsConfig {
                protocol_addr: Some(hub_tun()),
                nbma_addr: hub_nbma(),
                multicast: false,
            }],
        );
        c.network_id = id;
        let mut e = Engine::new(c, SeededRequestIds::new(1)).unwrap();
        e.sa_up(Instant::now(), hub_nbma());
        e.register(Instant::now());
        e.poll_transmit().unwrap().bytes
    };
    assert_eq!(build(100), build(0x0102_0304));
    assert_eq!(
        dmvpn_nhrp::config::DEFAULT_HOLDING_TIME,
        Duration::from_secs(7200)
    );
    assert_eq!(
        Packet::parse(&build(7)).unwrap().cies()[0].holding_time,
        7200
    );
}

#[test]
fn hub_answers_for_its_own_prefixes_and_refuses_unknown() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let now = net.now;
    net.nodes[A].engine.resolve(now, ip(10, 1, 1, 106));
    net.nodes[A].engine.resolve(now, ip(10, 9, 9, 9));
    net.pump();
    let reps = net.sent(PacketType::RESOLUTION_REPLY);
    assert_eq!(reps.len(), 2);
    assert!(reps.iter().all(|(i, _, _)| *i == HUB));
    let codes: BTreeMap<_, _> = reps
        .iter()
        .map(|(_, _, p)| (p.dst_protocol.clone(), p.cies()[0].code))
        .collect();
    assert_eq!(codes[&vec![10, 1, 1, 106]], CieCode::SUCCESS);
    assert_eq!(codes[&vec![10, 9, 9, 9]], CieCode::NO_BINDING_EXISTS);
    let ev = net.take_events(A);
    assert!(ev.contains(&Event::ResolutionFailed {
        target: ip(10, 9, 9, 9),
        code: Some(CieCode::NO_BINDING_EXISTS)
    }));
    assert!(
        !ev.iter().any(|e| matches!(e, Event::InstallRoute { .. })),
        "no shortcut to the hub itself"
    );
}

#[test]
fn peer_dead_withdraws_shortcuts_and_marks_nhs_down() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    net.take_events(A);
    let now = net.now;
    net.nodes[A].engine.peer_dead(now, b_public());
    net.nodes[A].engine.peer_dead(now, hub_nbma());
    let ev: Vec<_> = std::iter::from_fn(|| net.nodes[A].engine.poll_event()).collect();
    assert!(ev.iter().any(|e| matches!(e, Event::WithdrawRoute { .. })));
    assert!(ev.contains(&Event::NhsDown {
        protocol_addr: Some(hub_tun()),
        nbma: hub_nbma()
    }));
    assert!(ev.contains(&Event::NeedSa { nbma: hub_nbma() }));
}

/// A pcap (linktype 101, raw IPv4) of NHRP packets in GRE with key 100.
fn pcap(packets: &[(IpAddr, IpAddr, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in [
        0xa1b2_c3d4u32.to_le_bytes().to_vec(),
        2u16.to_le_bytes().to_vec(),
        4u16.to_le_bytes().to_vec(),
    ] {
        out.extend(w);
    }
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(65535u32.to_le_bytes());
    out.extend(101u32.to_le_bytes());
    for (n, (src, dst, nhrp)) in packets.iter().enumerate() {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
            unreachable!()
        };
        let total = 20 + 8 + nhrp.len();
        let mut ipv4 = vec![0x45, 0];
        ipv4.extend((total as u16).to_be_bytes());
        ipv4.extend([0, 0, 0x40, 0, 64, 47, 0, 0]);
        ipv4.extend(s.octets());
        ipv4.extend(d.octets());
        let c = dmvpn_nhrp::packet::checksum(&ipv4);
        ipv4[10..12].copy_from_slice(&c.to_be_bytes());
        // GRE: K bit only, protocol 0x2001 (NHRP), key 100 (docs/interop-notes.md §1).
        ipv4.extend([0x20, 0x00, 0x20, 0x01, 0, 0, 0, 100]);
        ipv4.extend(nhrp);
        out.extend((n as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((ipv4.len() as u32).to_le_bytes());
        out.extend((ipv4.len() as u32).to_le_bytes());
        out.extend(ipv4);
    }
    out
}

#[test]
fn every_emitted_packet_type_dissects_in_tshark() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    net.data_via_hub(B, ip(10, 0, 103, 2), ip(10, 0, 101, 2));
    let now = net.now;
    net.nodes[A].engine.resolve(now, ip(10, 9, 9, 9)); // negative reply from the hub
    net.pump();
    net.nodes[A].engine.shutdown(now);
    net.pump();
    let mut packets: Vec<(IpAddr, IpAddr, Vec<u8>)> = net
        .wire
        .iter()
        .map(|(i, to, b)| (net.nodes[*i].public, *to, b.clone()))
        .collect();
    // An Error Indication: a packet with a wrong key reaches the hub.
    let mut c = Config::spoke(
        ip(10, 250, 0, 20),
        24,
        ip(192, 0, 2, 20),
        vec![NhsConfig {
            protocol_addr: Some(hub_tun()),
            nbma_addr: hub_nbma(),
            multicast: false,
        }],
    );
    c.auth_key = Some(b"nope".to_vec());
    let mut bad = Engine::new(c, SeededRequestIds::new(8)).unwrap();
    bad.sa_up(now, hub_nbma());
    bad.register(now);
    let req = bad.poll_transmit().unwrap();
    packets.push((ip(192, 0, 2, 20), hub_nbma(), req.bytes.clone()));
    net.nodes[HUB]
        .engine
        .handle_packet(now, ip(192, 0, 2, 20), &req.bytes);
    let ei = net.nodes[HUB].engine.poll_transmit().unwrap();
    packets.push((hub_nbma(), ei.dst_nbma, ei.bytes));

    let types: std::collections::BTreeSet<u8> = packets
        .iter()
        .map(|p| Packet::parse(&p.2).unwrap().packet_type.0)
        .collect();
    assert_eq!(types, (1..=8).collect(), "every packet type is emitted");

    let path = std::env::temp_dir().join(format!("dmvpn-nhrp-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(&packets)).unwrap();
    // Must fail, not skip, without tshark: CI installs it.
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args(["-V", "-o", "nhrp.auth_ext_has_addr:FALSE"])
        .output()
        .expect("tshark is required (apt-get install tshark)");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    assert!(
        !stderr.contains("nhrp.auth_ext_has_addr"),
        "preference unknown: {stderr}"
    );
    let top_level = stdout
        .lines()
        .filter(|l| l.starts_with("Next Hop Resolution Protocol"))
        .count();
    assert_eq!(top_level, packets.len(), "{stdout}");
    for bad in ["Malformed", "Expert Info (Error", "Expert Info (Warning"] {
        assert!(!stdout.contains(bad), "{bad} in tshark output:\n{stdout}");
    }
    // The Cisco authentication extension is read as SPI 1 + the key.
    assert!(stdout.contains("SPI=1: Data=6b65796b65793030"), "{stdout}");
}

#[test]
fn reconfigure_applies_a_new_key_and_refuses_identity_changes() {
    let mut net = Net::hub_and_two_spokes();
    let mut c = spoke_a_with_wrong_key();
    c.network_id = 100;
    let mut a = Engine::new(c.clone(), SeededRequestIds::new(9)).unwrap();
    // With the wrong key the hub refuses the registration...
    a.sa_up(net.now, hub_nbma());
    a.register(net.now);
    let req = a.poll_transmit().unwrap();
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &req.bytes);
    assert!(registered(&net, a_tun()).is_none());
    // ...a reload with the right key is taken, and the next registration is accepted.
    let mut fixed = c.clone();
    fixed.auth_key = Some(b"keykey00".to_vec());
    a.reconfigure(fixed).unwrap();
    a.register(now);
    let req = a.poll_transmit().unwrap();
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &req.bytes);
    assert!(registered(&net, a_tun()).is_some());
    // A different tunnel address is an identity change: refused, config kept.
    let mut moved = c.clone();
    moved.protocol_addr = b_tun();
    assert_eq!(
        a.reconfigure(moved),
        Err(dmvpn_nhrp::ConfigError::NeedsRestart)
    );
    let mut long_key = c;
    long_key.auth_key = Some(b"123456789".to_vec());
    assert_eq!(
        a.reconfigure(long_key),
        Err(dmvpn_nhrp::ConfigError::AuthKeyTooLong)
    );
}

#[test]
fn clear_dynamic_forgets_registrations_and_shortcuts_only() {
    let mut net = Net::hub_and_two_spokes();
    redirect_a_to_b(&mut net);
    assert!(registered(&net, a_tun()).is_some());
    let now = net.now;
    let hub = &mut net.nodes[HUB].engine;
    while hub.poll_event().is_some() {}
    let removed = hub.clear_dynamic();
    assert!(
        removed >= 2,
        "both spokes' registrations are dynamic entries"
    );
    let mut unregistered = 0;
    while let Some(e) = hub.poll_event() {
        if matches!(e, Event::PeerUnregistered { .. }) {
            unregistered += 1;
        }
    }
    assert_eq!(unregistered, 2);
    assert!(hub.cache_entries(now).iter().all(|e| !matches!(
        e.kind,
        dmvpn_nhrp::EntryKind::Dynamic | dmvpn_nhrp::EntryKind::Shortcut
    )));
    assert_eq!(hub.clear_dynamic(), 0);
}

/// docs/interop-notes.md §7 with the shipped holding time (7200 s): after the hub's SA is lost and
/// a first attempt to bring it back fails, the spoke asks for an SA again within 120 s (FRR retries
/// a "waiting link" registration after 120 s), not after holding time / 4 = 30 minutes. Found by the
/// interop `dpd.sh` (IX_DPD_IDLE=1 IX_DPD_OUTAGE=150): an idle dmvpnd spoke stayed unregistered
/// long after the strongSwan + FRR hub came back.
#[test]
fn wire_note_7_sa_retry_after_hub_loss_is_capped_at_two_minutes() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let regs = |net: &Net| {
        net.sent(PacketType::REGISTRATION_REQUEST)
            .iter()
            .filter(|(i, _, _)| *i == A)
            .count()
    };
    let need = |ev: &[Event]| {
        ev.iter()
            .filter(|e| **e == Event::NeedSa { nbma: hub_nbma() })
            .count()
    };
    assert_eq!(regs(&net), 1);
    net.take_events(A);
    // The hub goes silent and DPD declares it dead: the SA cannot come back yet.
    net.blackhole.push(hub_nbma());
    let now = net.now;
    net.nodes[A].engine.peer_dead(now, hub_nbma());
    net.pump();
    assert_eq!(need(&net.take_events(A)), 1);
    net.advance(Duration::from_secs(119));
    assert_eq!(need(&net.take_events(A)), 0);
    net.advance(Duration::from_secs(1));
    assert_eq!(
        need(&net.take_events(A)),
        1,
        "SA asked for again after 120 s, not after holding time / 4"
    );
    // The hub is back: the next retry brings the SA up and registers.
    net.blackhole.clear();
    net.advance(Duration::from_secs(120));
    assert_eq!(regs(&net), 2, "registered again within two retry periods");
    assert!(registered(&net, a_tun()).is_some());
}

/// The incremental views the node builds its tables from (issue 12): `take_mapping_changes`,
/// `mapping`, `next_hops_at`, `is_nated_peer` and `take_multicast_changes`, on a spoke (NHS,
/// shortcut, Local entry behind NAT) and on the hub (registrations, multicast set).
#[test]
fn mapping_and_multicast_changes_on_spokes_and_hub() {
    use dmvpn_nhrp::MappingInfo;
    let mut net = Net::hub_and_two_spokes();
    // Before the first call every mapping counts as absent: a spoke reports its NHS.
    assert_eq!(
        net.nodes[HUB].engine.take_mapping_changes(),
        Vec::<IpAddr>::new()
    );
    for i in [A, B] {
        assert_eq!(net.nodes[i].engine.take_mapping_changes(), vec![hub_tun()]);
        assert_eq!(
            net.nodes[i].engine.take_mapping_changes(),
            Vec::<IpAddr>::new()
        );
    }
    // A spoke's multicast set (its multicast NHSs) is reported once, as joins from empty.
    assert_eq!(
        net.nodes[A].engine.take_multicast_changes(),
        vec![(hub_nbma(), true)]
    );
    assert_eq!(net.nodes[A].engine.take_multicast_changes(), vec![]);
    net.register_all();
    let now = net.now;
    let a = &mut net.nodes[A].engine;
    assert_eq!(
        a.take_mapping_changes(),
        vec![hub_tun()],
        "NHS registered (expiry moved)"
    );
    assert_eq!(a.take_mapping_changes(), Vec::<IpAddr>::new());
    assert_eq!(
        a.mapping(hub_tun(), now),
        Some(MappingInfo {
            nbma: hub_nbma(),
            kind: EntryKind::Nhs
        })
    );
    assert_eq!(
        a.mapping(a_tun(), now),
        None,
        "the Local entry never counts"
    );
    assert_eq!(a.next_hops_at(hub_nbma()), vec![hub_tun()]);
    // B is behind NAT: its own (Local) entry has the post-NAT address.
    assert!(net.nodes[B].engine.is_nated_peer(b_public(), now));
    assert!(!net.nodes[A].engine.is_nated_peer(a_nbma(), now));

    let hub = &mut net.nodes[HUB].engine;
    let mut changes = hub.take_mapping_changes();
    changes.sort();
    assert_eq!(changes, vec![a_tun(), b_tun()]);
    assert_eq!(
        hub.take_multicast_changes(),
        vec![(a_nbma(), true), (b_public(), true)]
    );
    assert_eq!(
        hub.mapping(b_tun(), now),
        Some(MappingInfo {
            nbma: b_public(),
            kind: EntryKind::Dynamic
        })
    );
    assert_eq!(hub.next_hops_at(b_public()), vec![b_tun()]);
    assert!(hub.is_nated_peer(b_public(), now));
    assert!(!hub.is_nated_peer(b_private(), now));
    assert!(!hub.is_nated_peer(a_nbma(), now));

    // A shortcut to B on A: the mapping of B's address appears, and goes with B's SA.
    redirect_a_to_b(&mut net);
    let now = net.now;
    let a = &mut net.nodes[A].engine;
    assert!(a.take_mapping_changes().contains(&b_tun()));
    assert_eq!(
        a.mapping(b_tun(), now),
        Some(MappingInfo {
            nbma: b_public(),
            kind: EntryKind::Shortcut
        })
    );
    assert!(
        a.is_nated_peer(b_public(), now),
        "learned B's post-NAT address"
    );
    assert_eq!(a.next_hops_at(b_public()), vec![b_tun()]);
    a.peer_dead(now, b_public());
    assert_eq!(a.take_mapping_changes(), vec![b_tun()]);
    assert_eq!(a.mapping(b_tun(), now), None);
    assert_eq!(a.next_hops_at(b_public()), Vec::<IpAddr>::new());

    // The hub: a purge and an expiry leave the multicast set, each reported once.
    let hub = &mut net.nodes[HUB].engine;
    hub.take_mapping_changes();
    hub.peer_dead(now, b_public());
    assert_eq!(hub.take_multicast_changes(), vec![(b_public(), false)]);
    assert_eq!(hub.take_mapping_changes(), vec![b_tun()]);
    assert_eq!(hub.multicast_nbmas(now), vec![a_nbma()]);
}

/// Outstanding resolutions are capped (`MAX_PENDING_RESOLUTIONS`): one past the cap is not
/// started and counts as rate limited.
#[test]
fn resolutions_past_the_cap_are_not_started() {
    use dmvpn_nhrp::engine::MAX_PENDING_RESOLUTIONS;
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let now = net.now;
    let a = &mut net.nodes[A].engine;
    // The cap, not the rate limit (its own test in trust.rs), is what this checks.
    let mut c = a.config().clone();
    c.resolution_burst = u32::MAX;
    a.reconfigure(c).unwrap();
    let before = a.counters().sent(PacketType::RESOLUTION_REQUEST);
    for i in 0..=MAX_PENDING_RESOLUTIONS {
        let t = Ipv4Addr::from(0x0a05_0000 + u32::try_from(i).unwrap());
        a.resolve(now, IpAddr::V4(t));
    }
    assert_eq!(
        a.counters().sent(PacketType::RESOLUTION_REQUEST) - before,
        MAX_PENDING_RESOLUTIONS as u64
    );
    assert_eq!(a.counters().dropped(DropReason::RateLimited), 1);
}

/// Spokes that registered together do not refresh together: the refresh is a third of the
/// holding time less a jitter taken from the request id, so a hub's registration waves
/// (after its restart) spread out instead of recurring forever.
#[test]
fn spokes_registered_together_refresh_apart() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let now = net.now;
    let due: Vec<Instant> = [A, B]
        .iter()
        .map(|&i| {
            net.nodes[i]
                .engine
                .poll_timeout()
                .expect("a refresh deadline")
        })
        .collect();
    for d in &due {
        let ahead = *d - now;
        assert!(
            ahead <= Duration::from_secs(2400) && ahead > Duration::from_secs(2160),
            "{ahead:?}"
        );
    }
    assert_ne!(due[0], due[1], "both spokes refresh at the same instant");
}

/// `show nhrp` ages count from creation for every kind: our own entry and the configured NHS
/// entries from the engine's start, a learned one from when it was learned (the local and NHS
/// entries used to be made afresh on every call, so always age 0; then the NHS entry aged from
/// its registration and showed 0 while the NHS was down, found by the independent VM run).
#[test]
fn entry_ages_count_from_creation() {
    let mut net = Net::hub_and_two_spokes();
    let start = net.now;
    // Registering, not yet registered, looked at 15 s on: the NHS entry is as old as the
    // local one.
    net.nodes[A].engine.register(start);
    let early = net.nodes[A]
        .engine
        .cache_entries(start + Duration::from_secs(15));
    let created = |k| early.iter().find(|e| e.kind == k).map(|e| e.created);
    assert!(created(EntryKind::Local).is_some());
    assert_eq!(created(EntryKind::Nhs), created(EntryKind::Local));
    net.register_all();
    let registered_at = net.now;
    net.advance(Duration::from_secs(30));
    let now = net.now;
    let entries = net.nodes[A].engine.cache_entries(now);
    let local = entries.iter().find(|e| e.kind == EntryKind::Local).unwrap();
    let nhs = entries.iter().find(|e| e.kind == EntryKind::Nhs).unwrap();
    assert!(
        local.created <= start + Duration::from_secs(1),
        "{:?}",
        now - local.created
    );
    assert_eq!(nhs.created, local.created, "both exist from the start");
    assert!(nhs.created <= registered_at);
    assert!(now - nhs.created >= Duration::from_secs(30));
    let a = registered(&net, a_tun()).expect("A registered");
    assert!(now - a.created >= Duration::from_secs(30));
}

/// An NHS kept in reserve (an NHS cluster's `max-connections`, chosen by the node) is neither
/// registered with nor sent multicast; made active it registers at once, and put back in
/// reserve its registration is purged at the hub.
#[test]
fn an_nhs_in_reserve_is_not_registered_and_gets_no_multicast() {
    let mut net = Net::hub_and_two_spokes();
    let now = net.now;
    net.nodes[A].engine.set_nhs_active(now, hub_nbma(), false);
    assert_eq!(
        net.nodes[A].engine.take_multicast_changes(),
        vec![],
        "reported set: the active multicast NHSs (none)"
    );
    net.register_all();
    assert!(registered(&net, a_tun()).is_none(), "A did not register");
    assert!(registered(&net, b_tun()).is_some(), "B did");
    let st = net.nodes[A].engine.nhs_status(net.now);
    assert_eq!(st[0].state, NhsState::Standby);
    assert!(!net.nodes[A].engine.nhs_active(hub_nbma()));
    assert!(net.nodes[A].engine.multicast_nbmas(net.now).is_empty());
    net.advance(Duration::from_secs(3000));
    assert!(registered(&net, a_tun()).is_none(), "not even later");

    let now = net.now;
    net.nodes[A].engine.set_nhs_active(now, hub_nbma(), true);
    net.pump();
    assert!(registered(&net, a_tun()).is_some(), "active: registered");
    assert_eq!(
        net.nodes[A].engine.take_multicast_changes(),
        vec![(hub_nbma(), true)]
    );
    assert!(
        net.take_events(A)
            .iter()
            .any(|e| matches!(e, Event::NhsUp { .. }))
    );

    let purges = net.sent(PacketType::PURGE_REQUEST).len();
    let now = net.now;
    net.nodes[A].engine.set_nhs_active(now, hub_nbma(), false);
    net.pump();
    assert_eq!(
        net.sent(PacketType::PURGE_REQUEST).len(),
        purges + 1,
        "purged"
    );
    assert!(registered(&net, a_tun()).is_none(), "the hub dropped it");
    assert!(
        net.take_events(A)
            .iter()
            .any(|e| matches!(e, Event::NhsDown { .. }))
    );
    assert_eq!(
        net.nodes[A].engine.take_multicast_changes(),
        vec![(hub_nbma(), false)]
    );
    assert_eq!(
        net.nodes[A].engine.nhs_status(net.now)[0].state,
        NhsState::Standby
    );
}
