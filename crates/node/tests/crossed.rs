//! Two spokes that resolve each other at the same moment both start IKE toward each other
//! (seen in the BGP namespace test between two spokes, 2 runs in 7). Each answers the other's
//! setup; both must end with the same single IKE SA and Child SA, so traffic flows at once.
//! Before the fix each end dropped its own half-open setup when the peer's SA came up, but
//! the peer had already answered it: each end kept a different SA and sent into SPIs the
//! other did not have, until an INVALID_SPI hint rebuilt the SA seconds later.

mod sim;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dmvpn_ike::IkeSaState;
use dmvpn_node::Event;
use sim::three::{A, A_HOST, A_NBMA, B, B_HOST, B_OWN_PUBLIC as B_PUBLIC, HUB_NBMA};
use sim::{Kind, Net, udp_packet};

const IKE_SA_INIT: u8 = 34;
const IKE_AUTH: u8 = 35;

/// The exchange type of an IKE datagram (RFC 7296 §3.1: octet 18 of the header), with or
/// without the non-ESP marker of port 4500.
fn exchange(bytes: &[u8]) -> Option<u8> {
    let b = if bytes.starts_with(&[0, 0, 0, 0]) {
        &bytes[4..]
    } else {
        bytes
    };
    b.get(18).copied()
}

/// The Response flag (RFC 7296 §3.1, octet 19, bit 5).
fn is_response(bytes: &[u8]) -> bool {
    let b = if bytes.starts_with(&[0, 0, 0, 0]) {
        &bytes[4..]
    } else {
        bytes
    };
    b.get(19).is_some_and(|f| f & 0x20 != 0)
}

/// The established IKE SAs host `h` has with `peer`, as (SPIi, SPIr).
fn sas_with(net: &Net, h: usize, peer: Ipv4Addr) -> Vec<(u64, u64)> {
    net.hosts[h]
        .node
        .ike()
        .ike_sas(net.now)
        .into_iter()
        .filter(|s| s.remote.ip() == IpAddr::V4(peer) && s.state == IkeSaState::Established)
        .map(|s| (s.spi_i, s.spi_r))
        .collect()
}

#[test]
fn crossed_setups_between_two_spokes_settle_on_one_sa() {
    let mut net = Net::hub_and_two_public_spokes();
    net.idle(Duration::from_secs(5));
    // Each spoke's first IKE_SA_INIT toward the other is lost: both retransmit after the
    // same interval, so the two setups cross on the wire (both IKE_SA_INITs, then both
    // IKE_AUTHs, in flight before any answer).
    let mut lost: HashMap<(Ipv4Addr, Ipv4Addr), bool> = HashMap::new();
    net.loss = Some(Box::new(move |src, dst, kind, bytes| {
        let spoke_to_spoke = *src.ip() != HUB_NBMA && *dst.ip() != HUB_NBMA;
        if kind == Kind::Ike && spoke_to_spoke && exchange(bytes) == Some(IKE_SA_INIT) {
            let first = lost.insert((*src.ip(), *dst.ip()), true).is_none();
            return first;
        }
        false
    }));
    // Traffic both ways, once a second: the hub redirects both, both resolve, both
    // initiate in the same instant.
    let mut i = 0u16;
    net.run_for(Duration::from_secs(6), |net| {
        i += 1;
        net.send_from_lan(A, udp_packet(A_HOST, B_HOST, i, 64));
        net.send_from_lan(B, udp_packet(B_HOST, A_HOST, i, 64));
    });
    // Both ends sent an IKE_AUTH request to the other: the setups crossed.
    let auth_requests = |h: usize, to: Ipv4Addr| {
        net.hosts[h]
            .ike_sent
            .iter()
            .filter(|(d, b)| *d.ip() == to && exchange(b) == Some(IKE_AUTH) && !is_response(b))
            .count()
    };
    let (auth_a, auth_b) = (auth_requests(A, B_PUBLIC), auth_requests(B, A_NBMA));
    println!("IKE_AUTH requests: A→B {auth_a}, B→A {auth_b}");
    assert!(auth_a >= 1 && auth_b >= 1, "the setups did not cross");
    let at_a = sas_with(&net, A, B_PUBLIC);
    let at_b = sas_with(&net, B, A_NBMA);
    println!("IKE SAs A–B: at A {at_a:x?}, at B {at_b:x?}");
    assert_eq!(at_a.len(), 1, "A keeps one IKE SA with B: {at_a:x?}");
    assert_eq!(at_a, at_b, "both ends keep the same IKE SA");
    assert!(
        !net.hosts[A]
            .events
            .iter()
            .chain(&net.hosts[B].events)
            .any(|e| matches!(e, Event::SetupFailed { .. })),
        "a redundant setup must not count as a failure (hold-down)"
    );
    // Traffic flows directly both ways at once, on SAs the other end has.
    let (a0, b0) = (net.hosts[A].delivered.len(), net.hosts[B].delivered.len());
    let direct = |net: &Net, h: usize, to: Ipv4Addr| {
        net.hosts[h]
            .sent
            .iter()
            .filter(|(d, k)| *k == Kind::Esp && *d.ip() == to)
            .count()
    };
    let (da, db) = (direct(&net, A, B_PUBLIC), direct(&net, B, A_NBMA));
    for i in 10..30u16 {
        net.send_from_lan(A, udp_packet(A_HOST, B_HOST, i, 64));
        net.send_from_lan(B, udp_packet(B_HOST, A_HOST, i, 64));
        net.idle(Duration::from_millis(10));
    }
    let got_b = net.hosts[B].delivered.len() - b0;
    let got_a = net.hosts[A].delivered.len() - a0;
    println!(
        "20 packets each way: B got {got_b}, A got {got_a}; sent directly A→B {}, B→A {}",
        direct(&net, A, B_PUBLIC) - da,
        direct(&net, B, A_NBMA) - db
    );
    assert_eq!((got_a, got_b), (20, 20));
    assert_eq!(direct(&net, A, B_PUBLIC) - da, 20, "A→B over the shortcut");
    assert_eq!(direct(&net, B, A_NBMA) - db, 20, "B→A over the shortcut");
}
