//! One spoke of the DMVPN is hostile: it holds the shared NHRP key, so its packets
//! authenticate; what it claims must still be checked against what it is (issue: trust
//! boundaries). In-memory network from `dmvpn_nhrp::testing`.

use dmvpn_nhrp::packet::{Packet, ip_bytes};
use dmvpn_nhrp::testing::{A, B, HUB, Net, a_nbma, a_tun, b_tun, hub_tun};
use dmvpn_nhrp::{EntryKind, PacketType};

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

fn b_caches(net: &Net, addr: std::net::IpAddr) -> bool {
    let now = net.now;
    net.nodes[B]
        .engine
        .cache_entries(now)
        .iter()
        .any(|e| e.protocol_addr == addr && e.kind != EntryKind::Local)
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
