#![no_main]
//! Arbitrary NHRP packets into engines that hold real state: a hub with two registered
//! spokes (one behind a NAT) and spoke A with a Resolution Request pending (its forward to
//! B goes nowhere), from `dmvpn_nhrp::testing`. Each input is delivered to the hub as if from
//! spoke A's NBMA address, to spoke A as if from the hub and as if from spoke B (a peer that
//! is no NHS, the path of review 13's F2), as a traffic indication quote to the hub, then
//! timers run. Nothing may panic, and the bindings issue 13 asks for must hold whatever the
//! bytes say (a fuzzer that only looks for panics cannot find a hijack, review 13 L8):
//! - the hub: what A sends never moves B's registration;
//! - spoke A: what B sends never changes A's NHS state nor the public address A learned;
//! - spoke A: no learned entry for its NHS's tunnel address or its own, ever.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dmvpn_nhrp::testing::{A, HUB, Net, a_nbma, a_tun, b_public, b_tun, hub_nbma, hub_tun};
use dmvpn_nhrp::{Engine, EntryKind};
use libfuzzer_sys::fuzz_target;

/// The hub's binding for B's tunnel address: (kind, claimed NBMA, post-NAT NBMA).
fn b_binding(hub: &Engine, now: Instant) -> Option<(EntryKind, IpAddr, Option<IpAddr>)> {
    hub.cache_entries(now)
        .into_iter()
        .find(|e| e.protocol_addr == b_tun() && e.prefix_len == 32)
        .map(|e| (e.kind, e.nbma, e.post_nat_nbma))
}

/// What only an NHS may change on a spoke: each NHS's state, and our learned public address.
fn nhs_view(spoke: &Engine, now: Instant) -> (Vec<String>, Option<IpAddr>) {
    let states = spoke
        .nhs_status(now)
        .into_iter()
        .map(|n| format!("{} {:?}", n.nbma_addr, n.state))
        .collect();
    (states, spoke.public_nbma())
}

/// No learned host entry for the NHS's tunnel address or our own (issue 13 item 1).
fn assert_no_learned_entry_for_nhs_or_self(spoke: &Engine, now: Instant) {
    for e in spoke.cache_entries(now) {
        if e.prefix_len != 32 {
            continue;
        }
        if e.protocol_addr == hub_tun() {
            assert!(
                matches!(e.kind, EntryKind::Nhs | EntryKind::Static),
                "spoke A learned an entry for its NHS's address: {e:?}"
            );
            assert_eq!(e.nbma, hub_nbma(), "the NHS mapping moved: {e:?}");
        }
        if e.protocol_addr == a_tun() {
            assert_eq!(
                e.kind,
                EntryKind::Local,
                "spoke A learned its own address: {e:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.blackhole.push(b_public());
    let now = net.now;
    net.nodes[A].engine.resolve(now, b_tun());
    net.pump();

    // Fix up the packet size and checksum (RFC 2332 §5.2.0.1) so most inputs reach the
    // engine's handlers rather than the checksum check. Fixed header: ar$afn 0..2,
    // ar$pro.type 2..4, ar$pktsz 10..12, ar$chksum 12..14, ar$op.version 16. The address
    // family, protocol and version are set too: the engine drops anything but IPv4 over
    // NHRP version 1 before its handlers.
    let mut body = data.to_vec();
    if let (true, Ok(len)) = (body.len() >= 20, u16::try_from(body.len())) {
        body[0..2].copy_from_slice(&1u16.to_be_bytes());
        body[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        body[16] = 1;
        body[10..12].copy_from_slice(&len.to_be_bytes());
        body[12..14].copy_from_slice(&[0, 0]);
        let sum = dmvpn_nhrp::packet::checksum(&body);
        body[12..14].copy_from_slice(&sum.to_be_bytes());
    }
    let now = net.now;
    let b_before = b_binding(&net.nodes[HUB].engine, now);
    assert!(b_before.is_some(), "the fixture registers B");
    net.nodes[HUB].engine.handle_packet(now, a_nbma(), &body);
    assert_eq!(
        b_binding(&net.nodes[HUB].engine, now),
        b_before,
        "a packet from A moved B's registration at the hub"
    );

    let view_before = nhs_view(&net.nodes[A].engine, now);
    net.nodes[A].engine.handle_packet(now, b_public(), &body);
    assert_eq!(
        nhs_view(&net.nodes[A].engine, now),
        view_before,
        "a packet from B (no NHS) changed A's NHS state or public address"
    );
    assert_no_learned_entry_for_nhs_or_self(&net.nodes[A].engine, now);

    net.nodes[A].engine.handle_packet(now, hub_nbma(), &body);
    assert_no_learned_entry_for_nhs_or_self(&net.nodes[A].engine, now);
    net.nodes[HUB]
        .engine
        .traffic_indication_needed(now, a_nbma(), &body);
    // What the engines sent in answer travels the in-memory network.
    net.pump();
    assert_eq!(
        b_binding(&net.nodes[HUB].engine, net.now),
        b_before,
        "B's registration at the hub moved after the exchange A's packet started"
    );
    assert_no_learned_entry_for_nhs_or_self(&net.nodes[A].engine, net.now);
    // Retransmissions over the network, then expiry on each engine alone (cheap: nothing
    // it sends is delivered).
    net.advance(Duration::from_secs(30));
    assert_no_learned_entry_for_nhs_or_self(&net.nodes[A].engine, net.now);
    let later = net.now + Duration::from_secs(8000);
    for n in &mut net.nodes {
        n.engine.handle_timeout(later);
        while n.engine.poll_transmit().is_some() {}
        while n.engine.poll_event().is_some() {}
        let _ = n.engine.poll_timeout();
        let _ = n.engine.cache_entries(later);
    }
});
