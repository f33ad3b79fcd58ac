//! The dataplane end to end in memory: a spoke's TUN packet is routed, GRE-encapsulated
//! and sealed by one `Tables`, then opened and decapsulated by the hub's, with real ESP SAs.

use std::net::Ipv4Addr;
use std::sync::Arc;

use std::ops::{Deref, DerefMut};

use dmvpn_dataplane::{
    DropReason, Inbound, Mapping, Outbound, PeerPath, Role, Route, RouteProto, RouteTable, Tables,
    TunnelParams,
};
use dmvpn_esp::{InboundSa, OutboundSa, Spi};
use dmvpn_wire::checksum::{checksum, fold, pseudo_header_v4, sum};
use dmvpn_wire::gre::EtherType;
use dmvpn_wire::{IpProtocol, PacketBuf};

const SPOKE_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SPOKE2_NBMA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const SPOKE: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 9);
const SPOKE2: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 10);
const HUB: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const KEYMAT_UP: [u8; 36] = [0x11; 36];
const KEYMAT_DOWN: [u8; 36] = [0x22; 36];

fn params(role: Role, address: Ipv4Addr, gre_key: u32) -> TunnelParams {
    TunnelParams {
        role,
        gre_key,
        address,
        prefix_len: 24,
        adjust_mss: Some(1360),
        redirect: role == Role::Hub,
    }
}

/// One router: its published tables and the route snapshot the mirror would publish.
struct Node {
    tables: Tables,
    routes: RouteTable,
}

impl Node {
    fn new(tables: Tables) -> Self {
        let mut routes = RouteTable::new();
        // The kernel's connected route for the tunnel subnet, as the mirror sees it.
        routes.insert(route(tables.tunnel.address, 24, None));
        Self { tables, routes }
    }
    fn outbound(&self, b: &mut PacketBuf) -> Outbound {
        self.tables.outbound(&self.routes, b)
    }
    fn inbound(&self, from: Ipv4Addr, b: &mut PacketBuf) -> Inbound {
        self.tables.inbound(&self.routes, from, b)
    }
}

impl Deref for Node {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        &self.tables
    }
}

impl DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }
}

fn route(prefix: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr>) -> Route {
    Route {
        prefix,
        prefix_len,
        gateway,
        metric: 0,
        proto: RouteProto::DMVPND,
    }
}

/// A spoke and a hub with a pair of SAs between them (spoke→hub SPI 0x1001).
fn pair(hub_key: u32) -> (Node, Node) {
    let mut spoke = Tables::new(params(Role::Spoke, SPOKE, 100));
    spoke.default_nbma = Some(HUB_NBMA);
    spoke.mappings.insert(HUB, Mapping::new(HUB_NBMA));
    spoke.paths.insert(
        HUB_NBMA,
        PeerPath {
            out_sa: Arc::new(OutboundSa::new(Spi(0x1001), &KEYMAT_UP, false).unwrap()),
            port: 4500,
            udp_encap: true,
        },
    );
    spoke.add_inbound(
        HUB_NBMA,
        Arc::new(InboundSa::new(Spi(0x2001), &KEYMAT_DOWN, false, 1024).unwrap()),
    );

    let mut hub = Tables::new(params(Role::Hub, HUB, hub_key));
    hub.mappings.insert(SPOKE, Mapping::new(SPOKE_NBMA));
    hub.paths.insert(
        SPOKE_NBMA,
        PeerPath {
            out_sa: Arc::new(OutboundSa::new(Spi(0x2001), &KEYMAT_DOWN, false).unwrap()),
            port: 4500,
            udp_encap: true,
        },
    );
    hub.add_inbound(
        SPOKE_NBMA,
        Arc::new(InboundSa::new(Spi(0x1001), &KEYMAT_UP, false, 1024).unwrap()),
    );
    (Node::new(spoke), Node::new(hub))
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = protocol.0;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(payload);
    p
}

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    ipv4(
        src,
        dst,
        IpProtocol::ICMP,
        &[8, 0, 0xf7, 0xfe, 0, 1, 0, 0, 1, 2, 3, 4],
    )
}

fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, mss: u16) -> Vec<u8> {
    let mut tcp = vec![0u8; 24];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&22u16.to_be_bytes());
    tcp[12] = 6 << 4; // data offset: 6 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    let acc = sum(pseudo_header_v4(src, dst, IpProtocol::TCP, 24), &tcp);
    let c = !fold(acc);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, IpProtocol::TCP, &tcp)
}

fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let seg = &packet[20..];
    fold(sum(
        pseudo_header_v4(src, dst, IpProtocol::TCP, seg.len() as u16),
        seg,
    )) == 0xffff
}

fn buf(bytes: &[u8]) -> PacketBuf {
    PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, bytes).unwrap()
}

#[test]
fn spoke_to_hub_round_trip_via_nhs_default() {
    let (spoke, hub) = pair(100);
    let inner = icmp_echo(SPOKE, Ipv4Addr::new(10, 1, 1, 106));
    let mut b = buf(&inner);
    assert_eq!(
        spoke.outbound(&mut b),
        Outbound::Send {
            nbma: HUB_NBMA,
            port: 4500,
            udp_encap: true
        }
    );
    // SPI, then the ciphertext: the inner packet must not be visible.
    let esp_len = b.len();
    assert_eq!(&b.as_slice()[..4], &0x1001u32.to_be_bytes());
    assert!(
        !b.as_slice()
            .windows(inner.len())
            .any(|w| w == inner.as_slice())
    );
    assert_eq!(
        hub.inbound(SPOKE_NBMA, &mut b),
        Inbound::Data {
            peer: SPOKE_NBMA,
            redirect: false
        }
    );
    assert_eq!(b.as_slice(), inner.as_slice());
    // Both ends count the inner packet and the ESP packet that carried it, the same way.
    let (tx, rx) = (spoke.counters.tx_totals(), hub.counters.rx_totals());
    assert_eq!(tx, rx);
    assert_eq!(
        (rx.packets, rx.inner_bytes, rx.esp_bytes),
        (1, inner.len() as u64, esp_len as u64)
    );
}

#[test]
fn no_sa_means_need_sa_and_nothing_leaves_in_clear() {
    let (mut spoke, _) = pair(100);
    spoke.paths.clear();
    let inner = icmp_echo(SPOKE, HUB);
    let mut b = buf(&inner);
    assert_eq!(spoke.outbound(&mut b), Outbound::NeedSa { nbma: HUB_NBMA });
    assert_eq!(
        b.as_slice(),
        inner.as_slice(),
        "buffer kept for the SA queue"
    );
}

#[test]
fn hub_drops_unmapped_destinations_and_counts() {
    let (_, hub) = pair(100);
    let mut b = buf(&icmp_echo(HUB, Ipv4Addr::new(10, 250, 0, 77)));
    assert_eq!(hub.outbound(&mut b), Outbound::Drop(DropReason::NoMapping));
    assert_eq!(hub.counters.drops(DropReason::NoMapping), 1);
    let mut junk = buf(&[0x60, 0, 0, 0]);
    assert_eq!(hub.outbound(&mut junk), Outbound::Drop(DropReason::NotIpv4));
}

#[test]
fn multicast_and_broadcast_are_replicated_by_the_caller() {
    let (spoke, hub) = pair(100);
    for dst in [
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::new(10, 250, 0, 255),
        Ipv4Addr::BROADCAST,
    ] {
        let mut b = buf(&icmp_echo(SPOKE, dst));
        assert_eq!(spoke.outbound(&mut b), Outbound::Multicast);
    }
    // A copy sealed to the NHS arrives as data at the hub.
    let hello = ipv4(
        SPOKE,
        Ipv4Addr::new(224, 0, 0, 5),
        IpProtocol(89),
        &[2, 1, 0, 44],
    );
    let mut b = buf(&hello);
    assert!(matches!(
        spoke.seal_to(HUB_NBMA, EtherType::IPV4, &mut b),
        Outbound::Send { .. }
    ));
    assert!(matches!(
        hub.inbound(SPOKE_NBMA, &mut b),
        Inbound::Data {
            redirect: false,
            ..
        }
    ));
    assert_eq!(b.as_slice(), hello.as_slice());
}

#[test]
fn nhrp_rides_gre_0x2001_inside_esp() {
    let (spoke, hub) = pair(100);
    let nhrp = [0u8, 1, 8, 0, 0, 0, 0, 0, 0, 1, 0, 20];
    let mut b = buf(&nhrp);
    assert!(matches!(
        spoke.seal_to(HUB_NBMA, EtherType::NHRP, &mut b),
        Outbound::Send { .. }
    ));
    assert_eq!(
        hub.inbound(SPOKE_NBMA, &mut b),
        Inbound::Nhrp { peer: SPOKE_NBMA }
    );
    assert_eq!(b.as_slice(), &nhrp);
}

#[test]
fn wrong_gre_key_replay_and_tamper_are_counted_drops() {
    let (spoke, hub) = pair(101);
    let mut b = buf(&icmp_echo(SPOKE, HUB));
    spoke.outbound(&mut b);
    assert_eq!(
        hub.inbound(SPOKE_NBMA, &mut b),
        Inbound::Drop(DropReason::GreKey)
    );

    let (spoke, hub) = pair(100);
    let mut b = buf(&icmp_echo(SPOKE, HUB));
    spoke.outbound(&mut b);
    let sealed = b.as_slice().to_vec();
    let mut again = buf(&sealed);
    let mut tampered = buf(&sealed);
    let last = tampered.len() - 1;
    tampered.as_mut_slice()[last] ^= 0x80;
    assert_eq!(
        hub.inbound(SPOKE_NBMA, &mut tampered),
        Inbound::Drop(DropReason::AuthFailed)
    );
    assert!(matches!(
        hub.inbound(SPOKE_NBMA, &mut b),
        Inbound::Data { .. }
    ));
    assert_eq!(
        hub.inbound(SPOKE_NBMA, &mut again),
        Inbound::Drop(DropReason::Replay)
    );
    let mut unknown = buf(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(
        hub.inbound(SPOKE_NBMA, &mut unknown),
        Inbound::Drop(DropReason::UnknownSpi)
    );
    assert_eq!(hub.counters.drops(DropReason::Replay), 1);
    assert_eq!(hub.counters.drops(DropReason::AuthFailed), 1);
}

#[test]
fn hub_flags_hairpinned_traffic_for_redirect() {
    let (spoke, mut hub) = pair(100);
    hub.mappings.insert(SPOKE2, Mapping::new(SPOKE2_NBMA));
    hub.routes
        .insert(route(Ipv4Addr::new(192, 168, 2, 0), 24, Some(SPOKE2)));
    // Spoke → spoke2's LAN through the hub: redirect.
    let mut b = buf(&icmp_echo(SPOKE, Ipv4Addr::new(192, 168, 2, 5)));
    spoke.outbound(&mut b);
    assert_eq!(
        hub.inbound(SPOKE_NBMA, &mut b),
        Inbound::Data {
            peer: SPOKE_NBMA,
            redirect: true
        }
    );
    // Spoke → the hub itself or the hub's LAN: no redirect.
    for dst in [HUB, Ipv4Addr::new(10, 1, 1, 106)] {
        let mut b = buf(&icmp_echo(SPOKE, dst));
        spoke.outbound(&mut b);
        assert!(matches!(
            hub.inbound(SPOKE_NBMA, &mut b),
            Inbound::Data {
                redirect: false,
                ..
            }
        ));
    }
}

#[test]
fn shortcut_route_wins_and_marks_mapping_used() {
    let (mut spoke, _) = pair(100);
    let shortcut = Mapping::new(SPOKE2_NBMA);
    spoke.mappings.insert(SPOKE2, shortcut.clone());
    spoke
        .routes
        .insert(route(Ipv4Addr::new(192, 168, 2, 0), 24, Some(SPOKE2)));
    let mut b = buf(&icmp_echo(SPOKE, Ipv4Addr::new(192, 168, 2, 5)));
    // No SA to spoke2 yet: the shortcut's NBMA is asked for, not the hub's.
    assert_eq!(
        spoke.outbound(&mut b),
        Outbound::NeedSa { nbma: SPOKE2_NBMA }
    );
    assert!(shortcut.take_used());
    assert!(!shortcut.take_used());
}

#[test]
fn tcp_mss_is_clamped_in_both_directions_with_valid_checksums() {
    let (spoke, hub) = pair(100);
    let syn = tcp_syn(SPOKE, Ipv4Addr::new(10, 1, 1, 106), 1460);
    assert!(tcp_checksum_ok(&syn));
    let mut b = buf(&syn);
    spoke.outbound(&mut b);
    hub.inbound(SPOKE_NBMA, &mut b);
    let out = b.as_slice();
    assert_eq!(u16::from_be_bytes([out[42], out[43]]), 1360);
    assert!(tcp_checksum_ok(out));
    // A smaller MSS is left alone.
    let syn = tcp_syn(SPOKE, Ipv4Addr::new(10, 1, 1, 106), 1200);
    let mut b = buf(&syn);
    spoke.outbound(&mut b);
    hub.inbound(SPOKE_NBMA, &mut b);
    assert_eq!(b.as_slice(), syn.as_slice());
}
