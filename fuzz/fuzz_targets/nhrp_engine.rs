#![no_main]
//! Arbitrary NHRP packets into engines that hold real state: a hub with two registered
//! spokes (one behind a NAT) and spoke A with a Resolution Request pending (its forward to
//! B goes nowhere), from `dmvpn_nhrp::testing`. Each input is delivered to the hub as if from
//! spoke A's NBMA address and to spoke A as if from the hub, as a traffic indication quote to
//! the hub, then timers run. Nothing may panic.

use std::time::Duration;

use dmvpn_nhrp::testing::{A, HUB, Net, a_nbma, b_public, b_tun, hub_nbma};
use libfuzzer_sys::fuzz_target;

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
    net.nodes[HUB].engine.handle_packet(now, a_nbma(), &body);
    net.nodes[A].engine.handle_packet(now, hub_nbma(), &body);
    net.nodes[HUB]
        .engine
        .traffic_indication_needed(now, a_nbma(), &body);
    // What the engines sent in answer travels the in-memory network.
    net.pump();
    // Retransmissions over the network, then expiry on each engine alone (cheap: nothing
    // it sends is delivered).
    net.advance(Duration::from_secs(30));
    let later = net.now + Duration::from_secs(8000);
    for n in &mut net.nodes {
        n.engine.handle_timeout(later);
        while n.engine.poll_transmit().is_some() {}
        while n.engine.poll_event().is_some() {}
        let _ = n.engine.poll_timeout();
        let _ = n.engine.cache_entries(later);
    }
});
