//! `Tables::explain` against `Tables::outbound`: for every kind of destination the explained
//! decision must be the verdict the packet path really gives (so `dmvpnctl explain` cannot
//! drift from the dataplane), and explaining must not mark a shortcut as used.

use std::net::Ipv4Addr;
use std::sync::Arc;

use dmvpn_dataplane::{
    Decision, Forwarding, Mapping, Outbound, PeerPath, Role, Route, RouteProto, RouteTable, Tables,
    TunnelParams,
};
use dmvpn_esp::{OutboundSa, Spi};
use dmvpn_wire::checksum::checksum;
use dmvpn_wire::{IpProtocol, PacketBuf};

const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const B_NBMA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const C_NBMA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 8);
const ME: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 9);
const HUB: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 5);
const C: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 6);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn route(p: &str, len: u8, gw: Option<Ipv4Addr>, metric: u32, proto: RouteProto) -> Route {
    Route {
        prefix: ip(p),
        prefix_len: len,
        gateway: gw,
        metric,
        proto,
    }
}

fn path(spi: u32, udp_encap: bool) -> PeerPath {
    PeerPath {
        out_sa: Arc::new(OutboundSa::new(Spi(spi), &[0x11; 36], false).unwrap()),
        port: if udp_encap { 4500 } else { 0 },
        udp_encap,
    }
}

fn packet(dst: Ipv4Addr) -> PacketBuf {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = IpProtocol::ICMP.0;
    p[12..16].copy_from_slice(&ME.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
    PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &p).unwrap()
}

/// A spoke: NHS mapped with an SA over NAT-T, spoke B mapped with a raw ESP SA and a
/// shortcut to its LAN, spoke C mapped without an SA; a static route to a hub LAN.
fn spoke() -> (Tables, RouteTable, Arc<Mapping>) {
    let mut t = Tables::new(TunnelParams {
        role: Role::Spoke,
        gre_key: 100,
        address: ME,
        prefix_len: 24,
        adjust_mss: None,
        redirect: false,
    });
    t.default_nbma = Some(HUB_NBMA);
    t.mappings.insert(HUB, Mapping::new(HUB_NBMA));
    let b = Mapping::new(B_NBMA);
    t.mappings.insert(B, b.clone());
    t.mappings.insert(C, Mapping::new(C_NBMA));
    t.paths.insert(HUB_NBMA, path(0x1001, true));
    t.paths.insert(B_NBMA, path(0x2002, false));
    t.multicast.insert(HUB_NBMA);
    let mut r = RouteTable::new();
    r.insert(route("10.250.0.0", 24, None, 0, RouteProto::KERNEL));
    r.insert(route("10.1.0.0", 16, Some(HUB), 100, RouteProto::DMVPND));
    r.insert(route("10.1.2.0", 24, Some(B), 10, RouteProto::DMVPND));
    (t, r, b)
}

/// The verdict `outbound` gives, in the explain's terms.
fn real(t: &Tables, r: &RouteTable, dst: Ipv4Addr) -> (Forwarding, Option<Ipv4Addr>) {
    match t.outbound(r, &mut packet(dst)) {
        Outbound::Send { nbma, .. } => (Forwarding::Send, Some(nbma)),
        Outbound::NeedSa { nbma } => (Forwarding::NeedSa, Some(nbma)),
        Outbound::Multicast => (Forwarding::Multicast, None),
        Outbound::Drop(_) => (Forwarding::NoMapping, None),
    }
}

#[test]
fn explain_follows_the_packet_path() {
    let (t, r, _) = spoke();
    let cases: [(&str, Forwarding, Option<Ipv4Addr>); 7] = [
        ("10.250.0.1", Forwarding::Send, Some(HUB_NBMA)), // connected, the NHS
        ("10.1.7.7", Forwarding::Send, Some(HUB_NBMA)),   // static via the hub
        ("10.1.2.3", Forwarding::Send, Some(B_NBMA)),     // shortcut via B
        ("10.250.0.6", Forwarding::NeedSa, Some(C_NBMA)), // C mapped, no SA
        ("10.250.0.77", Forwarding::Send, Some(HUB_NBMA)), // unmapped: the NHS by default
        ("224.0.0.5", Forwarding::Multicast, None),       // OSPF hello
        ("10.250.0.255", Forwarding::Multicast, None),    // the subnet's broadcast
    ];
    for (dst, forwarding, nbma) in cases {
        let dst = ip(dst);
        let d = t.explain(&r, dst);
        assert_eq!(d.forwarding, forwarding, "{dst}: {d:?}");
        if forwarding != Forwarding::Multicast {
            assert_eq!(d.nbma, nbma, "{dst}: {d:?}");
        }
        assert_eq!(
            real(&t, &r, dst),
            (forwarding, nbma),
            "{dst}: explain {d:?}"
        );
    }
}

#[test]
fn the_decision_names_route_next_hop_mapping_and_sa() {
    let (t, r, _) = spoke();
    let d = t.explain(&r, ip("10.1.2.3"));
    assert_eq!(d.route.unwrap().prefix_len, 24);
    assert_eq!(d.route.unwrap().metric, 10);
    assert_eq!(d.next_hop, B);
    assert_eq!(d.mapping, Some(B_NBMA));
    assert!(!d.via_default_nhs);
    let p = d.path.unwrap();
    assert_eq!((p.spi_out, p.udp_encap), (0x2002, false));

    let d = t.explain(&r, ip("10.250.0.77"));
    assert_eq!(d.route.unwrap().gateway, None, "on-link");
    assert_eq!((d.next_hop, d.mapping), (ip("10.250.0.77"), None));
    assert!(d.via_default_nhs);
    assert_eq!(d.path.unwrap().spi_out, 0x1001);
    assert!(d.path.unwrap().udp_encap);
    assert_eq!(d.path.unwrap().port, 4500);

    // Nothing in the mirrored table: the kernel does not send it into the tunnel.
    let d: Decision = t.explain(&r, ip("192.0.2.1"));
    assert_eq!(d.route, None);
    assert_eq!(d.next_hop, ip("192.0.2.1"));
}

#[test]
fn a_hub_drops_unmapped_destinations_and_says_so() {
    let mut t = Tables::new(TunnelParams {
        role: Role::Hub,
        gre_key: 100,
        address: HUB,
        prefix_len: 24,
        adjust_mss: None,
        redirect: true,
    });
    t.mappings.insert(B, Mapping::new(B_NBMA));
    let mut r = RouteTable::new();
    r.insert(route("10.250.0.0", 24, None, 0, RouteProto::KERNEL));
    let d = t.explain(&r, ip("10.250.0.77"));
    assert_eq!(d.forwarding, Forwarding::NoMapping);
    assert!(!d.via_default_nhs);
    assert_eq!(d.nbma, None);
    assert_eq!(real(&t, &r, ip("10.250.0.77")).0, Forwarding::NoMapping);
    let d = t.explain(&r, B);
    assert_eq!((d.forwarding, d.nbma), (Forwarding::NeedSa, Some(B_NBMA)));
    assert_eq!(real(&t, &r, B), (Forwarding::NeedSa, Some(B_NBMA)));
}

#[test]
fn explaining_leaves_the_used_mark_alone() {
    let (t, r, b) = spoke();
    let _ = t.explain(&r, ip("10.1.2.3"));
    assert!(!b.take_used(), "explain must not refresh a shortcut");
    let _ = t.outbound(&r, &mut packet(ip("10.1.2.3")));
    assert!(b.take_used(), "the packet path does");
}
