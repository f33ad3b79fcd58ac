//! One spoke of the DMVPN is hostile: it holds the shared NHRP key, so its packets
//! authenticate; what it claims must still be checked against what it is (issue: trust
//! boundaries). In-memory network from `dmvpn_nhrp::testing`.

use dmvpn_nhrp::counters::DropReason;
use dmvpn_nhrp::packet::{Packet, ip_bytes};
use dmvpn_nhrp::testing::{A, B, HUB, Net, a_nbma, a_tun, b_tun, hub_tun};
use dmvpn_nhrp::{CieCode, EntryKind, PacketType};

/// Spoke A sends, via the hub, a Resolution Request for B whose source protocol address is
/// `claimed` (with A's own NBMA) and the longest holding time; returns the network after it.
fn forged_resolution_request(claimed: std::net::IpAddr) -> Net {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let mut p: Packet = net.nodes[A].engine.resolution_request(b_tun(), 0x5eed);
    p.src_protocol = ip_bytes(claimed);
    if let dmvpn_nhrp::Body::Common { cies, .. } = &mut p.body {
        for c in cies {
            c.holding_time = u16::MAX;
        }
    }
    let mut bytes = Vec::new();
    p.emit(&mut bytes).unwrap();
    let now = net.now;
    net.nodes[HUB].engine.handle_packet(now, a_nbma(), &bytes);
    net.pump();
    net
}

/// Whether B holds a learned (dynamic or shortcut) entry for `addr`.
fn b_caches(net: &Net, addr: std::net::IpAddr) -> bool {
    let now = net.now;
    net.nodes[B].engine.cache_entries(now).iter().any(|e| {
        e.protocol_addr == addr && matches!(e.kind, EntryKind::Dynamic | EntryKind::Shortcut)
    })
}

#[test]
fn a_forged_request_source_cannot_take_over_the_hubs_address() {
    let net = forged_resolution_request(hub_tun());
    assert!(
        !b_caches(&net, hub_tun()),
        "B cached the hub's tunnel address as learned from A: {:?}",
        net.nodes[B].engine.cache_entries(net.now)
    );
    // The hub did not pass it on at all: the source is not A's registration.
    let forwarded = net
        .sent(PacketType::RESOLUTION_REQUEST)
        .into_iter()
        .filter(|(from, _, _)| *from == HUB)
        .count();
    assert_eq!(
        forwarded, 0,
        "the hub forwarded a request whose source A does not hold"
    );
}

#[test]
fn a_request_in_someone_elses_name_is_not_forwarded() {
    // A claims to be a third spoke's address that it never registered.
    let other = dmvpn_nhrp::testing::ip(10, 250, 0, 77);
    let net = forged_resolution_request(other);
    assert!(!b_caches(&net, other));
}

#[test]
fn an_honest_request_still_reaches_the_owner_and_is_cached_there() {
    let net = forged_resolution_request(a_tun());
    assert!(b_caches(&net, a_tun()), "B learns A from A's own request");
}

#[test]
fn traffic_indications_and_registration_replies_count_only_from_an_nhs() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let a_host = dmvpn_nhrp::testing::ip(10, 0, 101, 5);
    let b_host = dmvpn_nhrp::testing::ip(10, 0, 103, 5);
    // A real indication (hub → A) and a real registration reply (hub → A), replayed to B by
    // spoke A over its own SA: B must act on neither.
    net.data_via_hub(A, a_host, b_host);
    net.pump();
    let from_hub = |t: PacketType| {
        net.wire
            .iter()
            .filter(|(i, _, b)| *i == HUB && Packet::parse(b).is_ok_and(|p| p.packet_type == t))
            .map(|(_, _, b)| b.clone())
            .next()
            .unwrap()
    };
    let ti = from_hub(PacketType::TRAFFIC_INDICATION);
    let reply = from_hub(PacketType::REGISTRATION_REPLY);
    let requests_before = net.sent(PacketType::RESOLUTION_REQUEST).len();
    let now = net.now;
    net.nodes[B].engine.handle_packet(now, a_nbma(), &ti);
    net.nodes[B].engine.handle_packet(now, a_nbma(), &reply);
    net.pump();
    let b = &net.nodes[B].engine;
    assert_eq!(b.counters().dropped(DropReason::SourceMismatch), 2);
    let b_requests = net
        .sent(PacketType::RESOLUTION_REQUEST)
        .into_iter()
        .skip(requests_before)
        .filter(|(i, _, _)| *i == B)
        .count();
    assert_eq!(b_requests, 0, "B resolved on a spoke's say-so");
}

#[test]
fn a_registration_outside_the_tunnel_prefix_is_refused() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let mut p: Packet = net.nodes[A].engine.registration_request(0, 77).unwrap();
    let outside = dmvpn_nhrp::testing::ip(10, 1, 1, 1);
    if let dmvpn_nhrp::Body::Common { cies, .. } = &mut p.body {
        for c in cies {
            c.client_protocol = ip_bytes(outside);
        }
    }
    let mut bytes = Vec::new();
    p.emit(&mut bytes).unwrap();
    let now = net.now;
    net.nodes[HUB].engine.handle_packet(now, a_nbma(), &bytes);
    net.pump();
    let hub = &net.nodes[HUB].engine;
    assert!(
        !hub.cache_entries(now)
            .iter()
            .any(|e| e.protocol_addr == outside),
        "the hub registered {outside}, an address outside 10.250.0.0/24"
    );
    let refused = net
        .sent(PacketType::REGISTRATION_REPLY)
        .into_iter()
        .rev()
        .find(|(i, _, _)| *i == HUB)
        .unwrap()
        .2;
    assert_eq!(refused.cies()[0].code, CieCode::ADMINISTRATIVELY_PROHIBITED);
}

/// Registrations grow the hub's cache; it is capped (`Config::max_cache_entries`): past the
/// cap a new registration is refused with Insufficient Resources (RFC 2332 §5.2.4) and
/// counted, while a registered spoke still refreshes.
#[test]
fn registrations_past_the_cache_cap_are_refused_and_counted() {
    use dmvpn_nhrp::Event;
    let mut net = Net::hub_and_two_spokes();
    let mut c = net.nodes[HUB].engine.config().clone();
    c.max_cache_entries = 1;
    net.nodes[HUB].engine.reconfigure(c).unwrap();
    net.register_all();
    let now = net.now;
    let learned: Vec<_> = net.nodes[HUB]
        .engine
        .cache_entries(now)
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dynamic)
        .collect();
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert!(net.nodes[HUB].engine.counters().cache_full >= 1);
    let refused = [A, B].into_iter().find(|&i| {
        net.take_events(i).iter().any(|e| {
            matches!(e, Event::RegistrationRefused { code, .. } if *code == CieCode::INSUFFICIENT_RESOURCES)
        })
    });
    assert!(
        refused.is_some(),
        "one spoke was told Insufficient Resources"
    );
    // The registered spoke refreshes (a third of the holding time later) and stays.
    net.advance(std::time::Duration::from_secs(7200 / 3 + 1));
    let now = net.now;
    let still = net.nodes[HUB]
        .engine
        .cache_entries(now)
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dynamic)
        .count();
    assert_eq!(still, 1);
}

/// Where B would reach A after A's request for B, rewritten by `forge`, went through the hub:
/// the NBMA address B's entry for A names, and whether B asked for an SA to `elsewhere`.
fn b_reaches_a_after(
    forge: impl FnOnce(&mut Packet),
    elsewhere: std::net::IpAddr,
) -> (Option<std::net::IpAddr>, bool) {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.take_events(B);
    let mut p: Packet = net.nodes[A].engine.resolution_request(b_tun(), 0x5eed);
    forge(&mut p);
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &p.to_bytes().unwrap());
    net.pump();
    let at = net.nodes[B]
        .engine
        .cache_entries(net.now)
        .into_iter()
        .find(|e| e.protocol_addr == a_tun() && e.kind == EntryKind::Dynamic)
        .map(|e| e.effective_nbma());
    let asked = net
        .take_events(B)
        .contains(&dmvpn_nhrp::Event::NeedSa { nbma: elsewhere });
    (at, asked)
}

#[test]
fn a_request_naming_another_source_nbma_is_not_forwarded() {
    let elsewhere = dmvpn_nhrp::testing::ip(192, 0, 2, 66);
    let (at, asked) = b_reaches_a_after(|p| p.src_nbma = ip_bytes(elsewhere), elsewhere);
    assert_eq!(at, None, "B learned A at a forged NBMA address");
    assert!(!asked, "B was sent to bring IKE up to {elsewhere}");
}

#[test]
fn a_requesters_own_nat_claim_is_replaced_by_what_the_hub_saw() {
    let elsewhere = dmvpn_nhrp::testing::ip(192, 0, 2, 66);
    let forge = |p: &mut Packet| {
        for e in p.extensions.iter_mut().flatten() {
            if let dmvpn_nhrp::ExtensionBody::CiscoNatAddress(c) = &mut e.body {
                *c = vec![dmvpn_nhrp::Cie {
                    prefix_len: 32,
                    client_nbma: ip_bytes(elsewhere),
                    client_protocol: ip_bytes(a_tun()),
                    ..dmvpn_nhrp::Cie::default()
                }];
            }
        }
    };
    let (at, asked) = b_reaches_a_after(forge, elsewhere);
    assert_eq!(
        at,
        Some(a_nbma()),
        "B learned A where A said, not where it is"
    );
    assert!(!asked);
}
