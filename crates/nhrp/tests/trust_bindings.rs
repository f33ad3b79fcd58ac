//! One spoke of the DMVPN is hostile (issue 13, continued from `trust.rs`): it holds the
//! shared NHRP key, so its packets authenticate, and every binding it touches must still be
//! tied to the peer that created it — a purge to its registrant, a reply to the request and
//! target it answers and to the spoke the request went to, registrations to a per-NBMA quota,
//! resolutions to a rate, a registration reply to the NHS it answers. In-memory network from `dmvpn_nhrp::testing`.

use std::net::IpAddr;
use std::time::Duration;

use dmvpn_nhrp::packet::ip_bytes;
use dmvpn_nhrp::testing::{
    A, B, HUB, Net, a_nbma, a_tun, b_private, b_public, b_tun, c_nbma, c_tun, hub_nbma, hub_tun,
    ip, key, keyed, spoke,
};
use dmvpn_nhrp::{
    Body, Cie, CieCode, Config, DropReason, Engine, EntryKind, Event, Flags, NhsConfig, NhsState,
    Packet, PacketType, SeededRequestIds,
};

fn cie(prefix_len: u8, nbma: IpAddr, protocol: IpAddr) -> Cie {
    Cie {
        code: CieCode::SUCCESS,
        prefix_len,
        holding_time: 600,
        client_nbma: ip_bytes(nbma),
        client_protocol: ip_bytes(protocol),
        ..Cie::default()
    }
}

fn common(request_id: u32, cies: Vec<Cie>) -> Body {
    Body::Common {
        flags: Flags::RESOLUTION_A | Flags::RESOLUTION_D,
        request_id,
        cies,
    }
}

/// A Resolution Reply to `requester`'s request `id` for `target`, claiming `prefix_len`
/// through `next_hop` at `nbma`.
fn reply(
    requester: IpAddr,
    id: u32,
    target: IpAddr,
    prefix_len: u8,
    hop: (IpAddr, IpAddr),
) -> Vec<u8> {
    keyed(
        PacketType::RESOLUTION_REPLY,
        common(id, vec![cie(prefix_len, hop.0, hop.1)]),
        (hop.0, requester),
        target,
    )
}

fn hub_registration(net: &Net, tun: IpAddr) -> Option<dmvpn_nhrp::CacheEntry> {
    net.nodes[HUB]
        .engine
        .cache_entries(net.now)
        .into_iter()
        .find(|e| e.kind == EntryKind::Dynamic && e.protocol_addr == tun)
}

fn shortcuts(net: &Net, i: usize) -> Vec<(IpAddr, u8, IpAddr)> {
    net.nodes[i]
        .engine
        .cache_entries(net.now)
        .into_iter()
        .filter(|e| e.kind == EntryKind::Shortcut)
        .map(|e| (e.protocol_addr, e.prefix_len, e.next_hop))
        .collect()
}

/// The request id of the last Resolution Request node `i` sent.
fn last_request_id(net: &Net, i: usize) -> u32 {
    net.sent(PacketType::RESOLUTION_REQUEST)
        .into_iter()
        .rev()
        .find(|(from, _, _)| *from == i)
        .and_then(|(_, _, p)| p.request_id())
        .unwrap()
}

#[test]
fn a_purge_from_another_spoke_leaves_the_registration() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let forged = keyed(
        PacketType::PURGE_REQUEST,
        common(0x1234_5678, vec![cie(32, a_nbma(), a_tun())]),
        (b_private(), b_tun()),
        hub_tun(),
    );
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, b_public(), &forged);
    net.pump();
    assert!(
        hub_registration(&net, a_tun()).is_some_and(|e| e.nbma == a_nbma()),
        "B purged A's registration"
    );
    let hub = &net.nodes[HUB].engine;
    assert_eq!(hub.counters().dropped(DropReason::NotRegistrant), 1);
    assert_eq!(
        net.sent(PacketType::PURGE_REPLY).len(),
        0,
        "a refused purge is not confirmed"
    );
    // A's own purge (on shutdown) still removes it.
    net.nodes[A].engine.shutdown(now);
    net.pump();
    assert!(hub_registration(&net, a_tun()).is_none());
}

#[test]
fn a_purge_from_a_stranger_leaves_a_spokes_shortcut() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
    let via_b = (ip(10, 0, 103, 0), 24, b_tun());
    assert_eq!(shortcuts(&net, A), vec![via_b]);
    net.take_events(A);
    // A spoke other than B (not A's NHS either) purges B's binding at A.
    let forged = keyed(
        PacketType::PURGE_REQUEST,
        common(0x1234_5678, vec![cie(32, b_private(), b_tun())]),
        (c_nbma(), b_tun()),
        a_tun(),
    );
    let now = net.now;
    net.nodes[A].engine.handle_packet(now, c_nbma(), &forged);
    net.pump();
    assert_eq!(
        shortcuts(&net, A),
        vec![via_b],
        "a stranger purged B's shortcut"
    );
    assert!(
        !net.take_events(A)
            .iter()
            .any(|e| matches!(e, Event::WithdrawRoute { .. }))
    );
    let a = &net.nodes[A].engine;
    assert_eq!(a.counters().dropped(DropReason::NotRegistrant), 1);
}

#[test]
fn an_unsolicited_reply_is_not_forwarded_by_the_hub() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    // B offers A a shortcut to B's LAN that A never asked for.
    let forged = reply(a_tun(), 0x77, ip(10, 0, 103, 5), 24, (b_private(), b_tun()));
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, b_public(), &forged);
    net.pump();
    let forwarded = net
        .sent(PacketType::RESOLUTION_REPLY)
        .into_iter()
        .filter(|(from, _, _)| *from == HUB)
        .count();
    assert_eq!(forwarded, 0, "the hub passed on a reply to no request");
    let hub = &net.nodes[HUB].engine;
    assert_eq!(hub.counters().dropped(DropReason::UnexpectedReply), 1);
}

#[test]
fn a_reply_from_another_spoke_than_the_one_asked_is_not_forwarded() {
    let mut net = Net::hub_and_two_spokes();
    net.add(spoke(c_tun(), c_nbma(), 4), c_nbma());
    net.register_all();
    // B resolves a host on A's LAN; the hub forwards the request to A, which stays silent.
    net.blackhole.push(a_nbma());
    let target = ip(10, 0, 101, 5);
    let now = net.now;
    net.nodes[B].engine.resolve(now, target);
    net.pump();
    let id = last_request_id(&net, B);
    // C answers in A's place, with the right id and target: through C.
    let forged = reply(b_tun(), id, target, 24, (c_nbma(), c_tun()));
    net.nodes[HUB].engine.handle_packet(now, c_nbma(), &forged);
    net.pump();
    assert!(shortcuts(&net, B).is_empty(), "B took C's word for A's LAN");
    assert_eq!(
        net.nodes[HUB]
            .engine
            .counters()
            .dropped(DropReason::UnexpectedReply),
        1
    );
    // A's own answer through the hub still reaches B.
    net.blackhole.clear();
    let honest = reply(b_tun(), id, target, 24, (a_nbma(), a_tun()));
    net.nodes[HUB].engine.handle_packet(now, a_nbma(), &honest);
    net.pump();
    assert_eq!(shortcuts(&net, B), vec![(ip(10, 0, 101, 0), 24, a_tun())]);
}

/// Spoke A resolving `target` while the hub's forward to B goes nowhere: returns its id.
fn a_resolving(net: &mut Net, target: IpAddr) -> u32 {
    net.register_all();
    net.blackhole.push(b_public());
    let now = net.now;
    net.nodes[A].engine.resolve(now, target);
    net.pump();
    last_request_id(net, A)
}

#[test]
fn a_reply_for_another_target_is_refused_and_the_request_stays() {
    let mut net = Net::hub_and_two_spokes();
    let target = ip(10, 0, 103, 5);
    let id = a_resolving(&mut net, target);
    // Right id, other target: a shortcut for 10.1.1.7 (the hub's own LAN) through C.
    let now = net.now;
    let forged = reply(a_tun(), id, ip(10, 1, 1, 7), 32, (c_nbma(), c_tun()));
    net.nodes[A].engine.handle_packet(now, c_nbma(), &forged);
    net.pump();
    assert!(shortcuts(&net, A).is_empty(), "{:?}", shortcuts(&net, A));
    let a = &net.nodes[A].engine;
    assert_eq!(a.counters().dropped(DropReason::UnexpectedReply), 1);
    // The request is still outstanding: B's real answer is taken.
    let honest = reply(a_tun(), id, target, 24, (b_private(), b_tun()));
    net.nodes[A].engine.handle_packet(now, b_public(), &honest);
    net.pump();
    assert_eq!(shortcuts(&net, A), vec![(ip(10, 0, 103, 0), 24, b_tun())]);
}

#[test]
fn a_shortcut_wider_than_the_minimum_prefix_is_refused() {
    for (min, installed) in [(None, false), (Some(16), true)] {
        let mut net = Net::hub_and_two_spokes();
        if let Some(min) = min {
            let mut c = net.nodes[A].engine.config().clone();
            c.min_shortcut_prefix_len = min;
            net.nodes[A].engine.reconfigure(c).unwrap();
        }
        let target = ip(10, 0, 103, 5);
        let id = a_resolving(&mut net, target);
        // B answers for a /16: everything in 10.0.0.0/16, A's own neighbours too, via B.
        let wide = reply(a_tun(), id, target, 16, (b_private(), b_tun()));
        let now = net.now;
        net.nodes[A].engine.handle_packet(now, b_public(), &wide);
        net.pump();
        let got = shortcuts(&net, A);
        assert_eq!(!got.is_empty(), installed, "minimum {min:?}: {got:?}");
        let refused = net.nodes[A]
            .engine
            .counters()
            .dropped(DropReason::ShortcutRefused);
        assert_eq!(refused, u64::from(!installed));
    }
}

#[test]
fn a_shortcut_covering_the_hub_or_through_a_next_hop_outside_the_tunnel_is_refused() {
    // A /24 over the tunnel prefix itself: the hub's address would go via C.
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let target = ip(10, 250, 0, 77);
    let now = net.now;
    net.nodes[A].engine.resolve(now, target);
    let id = last_request_id_pending(&mut net);
    let forged = reply(a_tun(), id, target, 24, (c_nbma(), c_tun()));
    net.nodes[A].engine.handle_packet(now, c_nbma(), &forged);
    net.pump();
    assert!(shortcuts(&net, A).is_empty(), "{:?}", shortcuts(&net, A));
    assert_eq!(
        net.nodes[A]
            .engine
            .counters()
            .dropped(DropReason::ShortcutRefused),
        1
    );
    // A next hop outside the tunnel prefix: no tunnel address to map.
    let mut net = Net::hub_and_two_spokes();
    let target = ip(10, 0, 103, 5);
    let id = a_resolving(&mut net, target);
    let forged = reply(a_tun(), id, target, 24, (c_nbma(), ip(10, 9, 9, 9)));
    let now = net.now;
    net.nodes[A].engine.handle_packet(now, c_nbma(), &forged);
    net.pump();
    assert!(shortcuts(&net, A).is_empty(), "{:?}", shortcuts(&net, A));
}

/// The id of the Resolution Request spoke A queued but did not send yet.
fn last_request_id_pending(net: &mut Net) -> u32 {
    let t = net.nodes[A].engine.poll_transmit().unwrap();
    Packet::parse(&t.bytes).unwrap().request_id().unwrap()
}

#[test]
fn new_resolutions_are_rate_limited() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let burst = net.nodes[A].engine.config().resolution_burst;
    let refill = net.nodes[A].engine.config().resolution_refill;
    let now = net.now;
    let a = &mut net.nodes[A].engine;
    let before = a.counters().sent(PacketType::RESOLUTION_REQUEST);
    let target = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a05_0000 + i));
    for i in 0..burst + 50 {
        a.resolve(now, target(i));
    }
    let sent = a.counters().sent(PacketType::RESOLUTION_REQUEST) - before;
    assert_eq!(sent, u64::from(burst));
    assert_eq!(a.counters().dropped(DropReason::RateLimited), 50);
    // Ten refills later, ten more.
    let later = now + refill * 10;
    for i in 0..50 {
        a.resolve(later, target(burst + 1000 + i));
    }
    let sent = a.counters().sent(PacketType::RESOLUTION_REQUEST) - before;
    assert_eq!(sent, u64::from(burst) + 10);
}

#[test]
fn registrations_past_the_per_nbma_cap_are_refused() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let cap = net.nodes[HUB].engine.config().max_registrations_per_nbma;
    // A registers 12 more addresses of the tunnel prefix in one request.
    let mut p = net.nodes[A].engine.registration_request(0, 0x4242).unwrap();
    if let Body::Common { cies, .. } = &mut p.body {
        *cies = (100..112)
            .map(|d| cie(32, a_nbma(), ip(10, 250, 0, d)))
            .collect();
    }
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &p.to_bytes().unwrap());
    net.pump();
    let held = net.nodes[HUB]
        .engine
        .cache_entries(now)
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dynamic && e.nbma == a_nbma())
        .count();
    assert_eq!(held, cap, "A's own address plus {} more", cap - 1);
    let answer = net
        .sent(PacketType::REGISTRATION_REPLY)
        .into_iter()
        .rev()
        .find(|(from, to, _)| *from == HUB && *to == a_nbma())
        .unwrap()
        .2;
    let refused = answer
        .cies()
        .iter()
        .filter(|c| c.code == CieCode::ADMINISTRATIVELY_PROHIBITED)
        .count();
    assert_eq!(refused, 12 - (cap - 1));
    let hub = &net.nodes[HUB].engine;
    assert_eq!(
        hub.counters().dropped(DropReason::NbmaLimit),
        refused as u64
    );
    // A's own registration still refreshes; B is not affected by A's quota.
    net.advance(Duration::from_secs(7200 / 3 + 1));
    assert!(hub_registration(&net, a_tun()).is_some());
    assert!(hub_registration(&net, b_tun()).is_some());
}

#[test]
fn a_non_unique_address_does_not_move_while_its_holder_is_alive() {
    let mut net = Net::hub_and_two_spokes();
    let mut c = net.nodes[A].engine.config().clone();
    c.unique = false;
    net.nodes[A].engine.reconfigure(c).unwrap();
    net.register_all();
    assert!(hub_registration(&net, a_tun()).is_some_and(|e| !e.flags.unique));
    // B registers A's address (without the unique flag) from its own NBMA.
    let mut p = net.nodes[B].engine.registration_request(0, 0x4243).unwrap();
    if let Body::Common { flags, cies, .. } = &mut p.body {
        *flags &= !Flags::REGISTRATION_U;
        *cies = vec![cie(32, b_private(), a_tun())];
    }
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, b_public(), &p.to_bytes().unwrap());
    net.pump();
    assert!(
        hub_registration(&net, a_tun()).is_some_and(|e| e.effective_nbma() == a_nbma()),
        "B took over A's address: {:?}",
        hub_registration(&net, a_tun())
    );
    let answer = net
        .sent(PacketType::REGISTRATION_REPLY)
        .into_iter()
        .rev()
        .find(|(from, to, _)| *from == HUB && *to == b_public())
        .unwrap()
        .2;
    assert_eq!(
        answer.cies()[0].code,
        CieCode::UNIQUE_ADDRESS_ALREADY_REGISTERED
    );
    // Once A's SA is gone, the address may move (a spoke that changed its NBMA address).
    net.nodes[HUB].engine.peer_dead(now, a_nbma());
    net.nodes[HUB]
        .engine
        .handle_packet(now, b_public(), &p.to_bytes().unwrap());
    net.pump();
    assert!(hub_registration(&net, a_tun()).is_some_and(|e| e.effective_nbma() == b_public()));
}

#[test]
fn a_unique_address_claimed_from_elsewhere_challenges_its_holder_and_moves_once_it_is_dead() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    assert!(hub_registration(&net, a_tun()).is_some_and(|e| e.flags.unique));
    let _ = net.take_events(HUB);
    // A registration of A's address, unique flag set, from B's NBMA (A rebooted behind a
    // new address, or B is hostile: the hub cannot tell yet).
    let mut p = net.nodes[B].engine.registration_request(0, 0x4245).unwrap();
    if let Body::Common { cies, .. } = &mut p.body {
        *cies = vec![cie(32, b_private(), a_tun())];
    }
    let bytes = p.to_bytes().unwrap();
    let now = net.now;
    net.nodes[HUB].engine.handle_packet(now, b_public(), &bytes);
    net.pump();
    assert!(hub_registration(&net, a_tun()).is_some_and(|e| e.effective_nbma() == a_nbma()));
    let challenged: Vec<_> = net
        .take_events(HUB)
        .into_iter()
        .filter_map(|e| match e {
            Event::HolderChallenged {
                protocol_addr,
                holder,
                claimant,
            } => Some((protocol_addr, holder, claimant)),
            _ => None,
        })
        .collect();
    assert_eq!(challenged, vec![(a_tun(), a_nbma(), b_public())]);
    // The challenge's verdict: A is dead. Unique or not, the address moves.
    net.nodes[HUB].engine.peer_dead(now, a_nbma());
    net.nodes[HUB].engine.handle_packet(now, b_public(), &bytes);
    net.pump();
    assert!(hub_registration(&net, a_tun()).is_some_and(|e| e.effective_nbma() == b_public()));
}

/// A registration whose CIEs `addrs` (A's NBMA, holding time `hold`) A sends to the hub.
fn a_registers(net: &mut Net, addrs: impl Iterator<Item = IpAddr>, hold: u16) {
    let mut p = net.nodes[A].engine.registration_request(0, 0x4244).unwrap();
    if let Body::Common { cies, .. } = &mut p.body {
        *cies = addrs
            .map(|a| Cie {
                holding_time: hold,
                ..cie(32, a_nbma(), a)
            })
            .collect();
    }
    let now = net.now;
    net.nodes[HUB]
        .engine
        .handle_packet(now, a_nbma(), &p.to_bytes().unwrap());
    net.pump();
}

#[test]
fn a_packet_with_too_many_cies_is_dropped_whole() {
    use dmvpn_nhrp::engine::MAX_CIES_PER_PACKET;
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let mut c = net.nodes[HUB].engine.config().clone();
    c.max_registrations_per_nbma = 1000;
    net.nodes[HUB].engine.reconfigure(c).unwrap();
    let replies = net.sent(PacketType::REGISTRATION_REPLY).len();
    let n = u8::try_from(MAX_CIES_PER_PACKET + 1).unwrap();
    a_registers(&mut net, (100..100 + n).map(|d| ip(10, 250, 0, d)), 600);
    assert!(hub_registration(&net, ip(10, 250, 0, 100)).is_none());
    assert_eq!(net.sent(PacketType::REGISTRATION_REPLY).len(), replies);
    let hub = &net.nodes[HUB].engine;
    assert_eq!(hub.counters().dropped(DropReason::TooManyCies), 1);
    // At the cap, the packet is taken.
    let n = u8::try_from(MAX_CIES_PER_PACKET).unwrap();
    a_registers(&mut net, (100..100 + n).map(|d| ip(10, 250, 0, d)), 600);
    assert!(hub_registration(&net, ip(10, 250, 0, 100)).is_some());
}

#[test]
fn peer_holding_times_are_clamped_to_the_configured_maximum() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let mut c = net.nodes[HUB].engine.config().clone();
    c.max_holding_time = Duration::from_secs(600);
    net.nodes[HUB].engine.reconfigure(c).unwrap();
    // A asks the hub to hold an address for 18 hours.
    a_registers(&mut net, std::iter::once(ip(10, 250, 0, 100)), u16::MAX);
    let e = hub_registration(&net, ip(10, 250, 0, 100)).unwrap();
    assert_eq!(e.holding_time, Duration::from_secs(600));
    assert!(e.expires.unwrap() <= net.now + Duration::from_secs(600));
    // The reply says so, so the registrant refreshes in time.
    let answer = net
        .sent(PacketType::REGISTRATION_REPLY)
        .into_iter()
        .rev()
        .find(|(from, _, _)| *from == HUB)
        .unwrap()
        .2;
    assert_eq!(answer.cies()[0].holding_time, 600);
    // A spoke clamps a shortcut the same way.
    let mut net = Net::hub_and_two_spokes();
    let mut c = net.nodes[A].engine.config().clone();
    c.max_holding_time = Duration::from_secs(600);
    net.nodes[A].engine.reconfigure(c).unwrap();
    let target = ip(10, 0, 103, 5);
    let id = a_resolving(&mut net, target);
    let mut p = Packet::parse(&reply(a_tun(), id, target, 24, (b_private(), b_tun()))).unwrap();
    if let Body::Common { cies, .. } = &mut p.body {
        cies[0].holding_time = u16::MAX;
    }
    let now = net.now;
    net.nodes[A]
        .engine
        .handle_packet(now, b_public(), &p.to_bytes().unwrap());
    let sc = net.nodes[A]
        .engine
        .cache_entries(now)
        .into_iter()
        .find(|e| e.kind == EntryKind::Shortcut)
        .unwrap();
    assert_eq!(sc.holding_time, Duration::from_secs(600));
}

#[test]
fn a_responder_cannot_move_another_spokes_next_hop_to_itself() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
    assert_eq!(
        net.nodes[A].engine.lookup_nbma(b_tun(), net.now),
        Some(b_public())
    );
    // C answers A for its own LAN, naming B's tunnel address as the next hop at C's NBMA.
    let target = ip(10, 0, 104, 5);
    let now = net.now;
    net.nodes[A].engine.resolve(now, target);
    let id = last_request_id_pending(&mut net);
    let forged = reply(a_tun(), id, target, 24, (c_nbma(), b_tun()));
    net.nodes[A].engine.handle_packet(now, c_nbma(), &forged);
    net.pump();
    assert_eq!(
        shortcuts(&net, A),
        vec![(ip(10, 0, 103, 0), 24, b_tun())],
        "C bound B's tunnel address to itself"
    );
    assert_eq!(
        net.nodes[A]
            .engine
            .counters()
            .dropped(DropReason::ShortcutRefused),
        1
    );
}

#[test]
fn a_spoke_filling_the_redirect_table_does_not_stop_other_spokes_redirects() {
    use dmvpn_nhrp::engine::MAX_REDIRECT_PAIRS;
    use dmvpn_nhrp::testing::ipv4_header;
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    // B sends data for as many (source, destination) pairs as the table holds, and keeps on.
    let now = net.now;
    for i in 0..MAX_REDIRECT_PAIRS + 10 {
        let [_, _, x, y] = u32::try_from(i).unwrap().to_be_bytes();
        let quote = ipv4_header(ip(10, 0, 103, 1), ip(10, 7, x, y));
        net.nodes[HUB]
            .engine
            .traffic_indication_needed(now, b_public(), &quote);
    }
    net.pump();
    let before = net.sent(PacketType::TRAFFIC_INDICATION).len();
    // A's traffic towards B's LAN still earns A its redirect.
    net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
    let to_a = net
        .sent(PacketType::TRAFFIC_INDICATION)
        .into_iter()
        .skip(before)
        .filter(|(_, to, _)| *to == a_nbma())
        .count();
    assert_eq!(
        to_a, 1,
        "A got no redirect while B's pairs filled the table"
    );
}

#[test]
fn a_registration_reply_counts_only_from_the_nhs_it_answers() {
    // A spoke with two NHSs: the test network's hub, and a second one at 198.51.100.2.
    let second_nbma = ip(198, 51, 100, 2);
    let mut c = Config::spoke(
        a_tun(),
        24,
        a_nbma(),
        vec![
            NhsConfig {
                protocol_addr: Some(hub_tun()),
                nbma_addr: hub_nbma(),
                multicast: false,
            },
            NhsConfig {
                protocol_addr: Some(ip(10, 250, 0, 2)),
                nbma_addr: second_nbma,
                multicast: false,
            },
        ],
    );
    key(&mut c);
    let mut spoke = Engine::new(c, SeededRequestIds::new(5)).unwrap();
    let mut net = Net::hub_and_two_spokes();
    let now = net.now;
    spoke.sa_up(now, hub_nbma());
    spoke.sa_up(now, second_nbma);
    spoke.register(now);
    let to_hub = std::iter::from_fn(|| spoke.poll_transmit())
        .find(|t| t.dst_nbma == hub_nbma())
        .expect("a registration request to the first NHS");
    let hub = &mut net.nodes[HUB].engine;
    hub.handle_packet(now, a_nbma(), &to_hub.bytes);
    let reply = hub.poll_transmit().expect("the hub's registration reply");
    assert_eq!(
        Packet::parse(&reply.bytes).unwrap().packet_type,
        PacketType::REGISTRATION_REPLY
    );
    let state = |e: &Engine, nbma: IpAddr| {
        e.nhs_status(now)
            .into_iter()
            .find(|n| n.nbma_addr == nbma)
            .map(|n| n.state)
    };
    // The first NHS's answer, arriving from the second NHS (or a spoke spoofing it): the id
    // matches a pending request, the sender does not.
    spoke.handle_packet(now, second_nbma, &reply.bytes);
    assert_ne!(state(&spoke, hub_nbma()), Some(NhsState::Up));
    assert_ne!(state(&spoke, second_nbma), Some(NhsState::Up));
    assert_eq!(spoke.counters().dropped(DropReason::UnexpectedReply), 1);
    // From the NHS the request went to, the same reply is taken.
    spoke.handle_packet(now, hub_nbma(), &reply.bytes);
    assert_eq!(state(&spoke, hub_nbma()), Some(NhsState::Up));
    assert_eq!(spoke.counters().dropped(DropReason::UnexpectedReply), 1);
}
