//! Independent review of issue 13 (one hostile spoke holding the shared NHRP key): variants of
//! the binding attacks that the fixes in `trust.rs` / `trust_bindings.rs` do not cover. Each
//! test states the attack and asserts what must hold; the ones that fail on the current code
//! are `#[ignore]`d with the reason (see /work/notes/review-13.md).

use std::net::IpAddr;
use std::time::Duration;

use dmvpn_nhrp::packet::ip_bytes;
use dmvpn_nhrp::testing::{
    A, B, HUB, Net, a_nbma, a_tun, b_public, b_tun, c_nbma, c_tun, ip, keyed, spoke,
};
use dmvpn_nhrp::{
    Body, Cie, CieCode, DropReason, EntryKind, Event, ExtensionBody, Flags, Packet, PacketType,
};

/// An address no spoke has: where an attacker points a victim (a second host it controls,
/// or a black hole).
fn elsewhere() -> IpAddr {
    ip(192, 0, 2, 66)
}

fn cie(prefix_len: u8, nbma: IpAddr, protocol: IpAddr, holding_time: u16) -> Cie {
    Cie {
        code: CieCode::SUCCESS,
        prefix_len,
        holding_time,
        client_nbma: ip_bytes(nbma),
        client_protocol: ip_bytes(protocol),
        ..Cie::default()
    }
}

/// Hub: spoke A registers a CIE for B's tunnel address with a prefix length of 24 (not the
/// /32 or 0xFF every implementation sends). The cache key becomes 10.250.0.0/24, which no
/// live entry holds, so the "held by a live entry from another NBMA" check (`conflict`, keyed
/// by the exact (prefix, length)) never sees B's (10.250.0.10, 32) entry. The new entry's next
/// hop is B's address, and the hub's mapping for a next hop is the live entry with the lowest
/// key: 10.250.0.0/24 sorts before 10.250.0.10/32, so every packet the hub sends to B (and to
/// B's LAN, routed via B's tunnel address) goes to A. Failed before the review's fix in
/// `register_client` (only host registrations are taken).
#[test]
fn a_registration_with_a_short_prefix_does_not_move_another_spokes_next_hop() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let now = net.now;
    assert_eq!(
        net.nodes[HUB].engine.lookup_nbma(b_tun(), now),
        Some(b_public())
    );
    for len in [24u8, 31, 0] {
        let forged = keyed(
            PacketType::REGISTRATION_REQUEST,
            Body::Common {
                flags: Flags::CISCO_NAT,
                request_id: 0x4242 + u32::from(len),
                cies: vec![cie(len, a_nbma(), b_tun(), 7200)],
            },
            (a_nbma(), a_tun()),
            ip(10, 250, 0, 1),
        );
        net.nodes[HUB].engine.handle_packet(now, a_nbma(), &forged);
        net.pump();
        let hub = &net.nodes[HUB].engine;
        assert_eq!(
            hub.lookup_nbma(b_tun(), now),
            Some(b_public()),
            "after a /{len} registration of B's address from A the hub sends B's traffic to {:?}; cache: {:?}",
            hub.lookup_nbma(b_tun(), now),
            hub.cache_entries(now)
        );
        assert_eq!(
            hub.mapping(b_tun(), now).map(|m| m.nbma),
            Some(b_public()),
            "mapping for B's next hop moved (/{len})"
        );
    }
}

/// Spoke: requests relayed by an NHS are checked there (`source_held_by_sender`), but a spoke
/// takes a Resolution Request straight from any peer it has an SA with (any PSK holder can
/// bring one up to any spoke's NBMA address) without any check of its source. A sends B,
/// directly, a request for B's own address whose source is C's tunnel address and whose
/// source NBMA is an address of A's choosing: B answers there (and asks for an SA to it) and
/// learns C's tunnel address at that NBMA address, replacing the binding C itself gave B —
/// so B's traffic for C (and for every route via C's tunnel address) goes to A's host.
/// Failed before the review's fix in `answer_resolution` (learn, and answer elsewhere than the
/// sender, only for requests an NHS relayed).
#[test]
fn a_direct_request_cannot_bind_another_spokes_address_on_a_spoke() {
    let mut net = Net::hub_and_two_spokes();
    net.add(spoke(c_tun(), c_nbma(), 4), c_nbma());
    net.register_all();
    // C resolves B through the hub, honestly: B learns C at C's NBMA address.
    let now = net.now;
    net.nodes[3].engine.resolve(now, ip(10, 0, 103, 5));
    net.pump();
    assert_eq!(
        net.nodes[B].engine.lookup_nbma(c_tun(), net.now),
        Some(c_nbma()),
        "fixture: B learned C from C's own request"
    );
    net.take_events(B);
    // A, over its own SA with B, in C's name.
    let mut p: Packet = net.nodes[A].engine.resolution_request(b_tun(), 0x5eed);
    p.src_protocol = ip_bytes(c_tun());
    p.src_nbma = ip_bytes(elsewhere());
    if let Body::Common { cies, .. } = &mut p.body {
        for c in cies {
            c.holding_time = u16::MAX;
        }
    }
    for e in p.extensions.iter_mut().flatten() {
        if let ExtensionBody::CiscoNatAddress(c) = &mut e.body {
            c.clear();
        }
    }
    let now = net.now;
    net.nodes[B]
        .engine
        .handle_packet(now, a_nbma(), &p.to_bytes().unwrap());
    net.pump();
    let b = &net.nodes[B].engine;
    assert_eq!(
        b.lookup_nbma(c_tun(), net.now),
        Some(c_nbma()),
        "B now sends C's traffic to {:?}: {:?}",
        b.lookup_nbma(c_tun(), net.now),
        b.cache_entries(net.now)
            .into_iter()
            .filter(|e| e.kind == EntryKind::Dynamic)
            .collect::<Vec<_>>()
    );
    assert!(
        !net.take_events(B)
            .contains(&Event::NeedSa { nbma: elsewhere() }),
        "B was sent to bring IKE up to an address A chose"
    );
}

/// Hub: the table of forwarded resolution requests (`ForwardedTable`, 4,096 records kept 30 s
/// each) is shared by all spokes and has no per-requester share. A, resolving destinations
/// behind B under its own (registered, so accepted) source address with fresh request ids,
/// fills it in well under 30 s (about 140 requests a second); until the records expire the
/// hub refuses to forward any other spoke's resolution (`RateLimited`): no spoke of the DMVPN
/// gets a phase 3 shortcut while A keeps it up. Failed before the review's fix (a share per
/// sender, `MAX_FORWARDED_PER_SENDER`).
#[test]
fn one_spoke_cannot_fill_the_hubs_forwarded_request_table() {
    use dmvpn_nhrp::engine::MAX_FORWARDED_REQUESTS;
    let mut net = Net::hub_and_two_spokes();
    net.add(spoke(c_tun(), c_nbma(), 4), c_nbma());
    net.register_all();
    // B's answers would go straight to A; leave B out of it so the test stays small.
    net.blackhole.push(b_public());
    let now = net.now;
    for i in 0..MAX_FORWARDED_REQUESTS {
        let id = 0x1000_0000 + u32::try_from(i).unwrap();
        let p = net.nodes[A]
            .engine
            .resolution_request(ip(10, 0, 103, 5), id);
        net.nodes[HUB]
            .engine
            .handle_packet(now, a_nbma(), &p.to_bytes().unwrap());
    }
    net.pump();
    let refused_before = net.nodes[HUB]
        .engine
        .counters()
        .dropped(DropReason::RateLimited);
    assert!(
        refused_before > 0,
        "A's flood of forwarded requests was never refused"
    );
    // Ten seconds later C, honest, resolves a host on B's LAN.
    net.advance(Duration::from_secs(10));
    let now = net.now;
    net.nodes[3].engine.resolve(now, ip(10, 0, 103, 7));
    net.pump();
    let forwarded_for_c = net
        .sent(PacketType::RESOLUTION_REQUEST)
        .into_iter()
        .filter(|(from, to, p)| {
            *from == HUB && *to == b_public() && p.src_protocol_ip() == Some(c_tun())
        })
        .count();
    assert!(
        forwarded_for_c >= 1,
        "the hub did not forward C's resolution (refused {} times, {} before C asked)",
        net.nodes[HUB]
            .engine
            .counters()
            .dropped(DropReason::RateLimited),
        refused_before
    );
}

/// Hub: a purge carrying the request id of someone else's registration removes it
/// (`on_purge_request` accepts "the request id that created it" from any sender, for IOS
/// spokes whose NBMA address changed). The id is random and travels only inside the
/// registrant's SA, so this holds as long as ids stay unguessable: this test shows a wrong
/// guess is refused and counted, and documents that nothing rate-limits guesses.
#[test]
fn a_purge_with_a_guessed_request_id_is_refused() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let now = net.now;
    for guess in 0..64u32 {
        let forged = keyed(
            PacketType::PURGE_REQUEST,
            Body::Common {
                flags: Flags::CISCO_NAT,
                request_id: guess,
                cies: vec![cie(32, a_nbma(), b_tun(), 0)],
            },
            (a_nbma(), a_tun()),
            ip(10, 250, 0, 1),
        );
        net.nodes[HUB].engine.handle_packet(now, a_nbma(), &forged);
    }
    net.pump();
    let hub = &net.nodes[HUB].engine;
    assert_eq!(hub.lookup_nbma(b_tun(), now), Some(b_public()));
    assert_eq!(hub.counters().dropped(DropReason::NotRegistrant), 64);
}

/// Hub: holding time 0 in a registration is not "forever" nor "now": the entry is refused or
/// short-lived, never immortal; 65535 is clamped (checked in `trust_bindings.rs`). A /32
/// registration of one's own address with holding time 0 must not leave a live entry that
/// never expires.
#[test]
fn a_registration_with_holding_time_zero_does_not_live_forever() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    let now = net.now;
    let p = keyed(
        PacketType::REGISTRATION_REQUEST,
        Body::Common {
            flags: Flags::CISCO_NAT,
            request_id: 0x99,
            cies: vec![cie(32, a_nbma(), ip(10, 250, 0, 77), 0)],
        },
        (a_nbma(), a_tun()),
        ip(10, 250, 0, 1),
    );
    net.nodes[HUB].engine.handle_packet(now, a_nbma(), &p);
    net.pump();
    let e = net.nodes[HUB]
        .engine
        .cache_entries(now)
        .into_iter()
        .find(|e| e.protocol_addr == ip(10, 250, 0, 77));
    if let Some(e) = e {
        assert!(e.expires.is_some(), "an immortal entry: {e:?}");
    }
}
