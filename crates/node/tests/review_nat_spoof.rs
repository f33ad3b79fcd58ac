//! Independent review of issue 13: can one PSK holder move another peer's path by sending from
//! a spoofed address? The NAT-mapping follower (`SlowPath::NatMapping`, RFC 7296 §2.23) is
//! triggered by *authenticated* ESP-in-UDP, but the check and the report disagree on whose
//! path moved: the datapath (daemon/src/datapath.rs `handle_esp`, mirrored by the sim) asks
//! whether the path of the SA's peer (`Inbound::*::peer`, from the SPI) has another port,
//! then reports the packet's outer source; the node (`drive.rs`) and IKE
//! (`Endpoint::peer_port_moved`) move every SA and path of *that source's* address. So spoke C,
//! behind a NAT (or merely claiming to be, so its SA is UDP-encapsulated), sends one ESP packet
//! sealed with its own SA's keys from a spoofed source: spoke B's public address and a port of
//! its choosing. The hub then sends B's ESP and IKE to that port: B is cut off until B's next
//! authenticated packet moves it back (and C can repeat at will), or B's DPD gives up.
//!
//! Failed before the review's fix: `SlowPath::NatMapping` now carries the SA's `peer`, and the
//! node follows a new port only when the packet's source address is that peer's.

mod sim;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use dmvpn_node::Event;
use sim::three::{B_PUBLIC, HUB, HUB_NBMA};
use sim::{Kind, Net, spoke_config, udp_packet};

const C_PRIVATE: Ipv4Addr = Ipv4Addr::new(192, 168, 3, 3);
const C_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
const C_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 5);
const HUB_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const SPOOFED_PORT: u16 = 40_000;

#[test]
fn esp_from_a_spoofed_source_does_not_move_another_peers_path() {
    let mut net = Net::hub_and_two_spokes();
    let c = net.add(
        "spoke-c",
        &spoke_config("10.250.0.13", HUB_NBMA, ""),
        C_PRIVATE,
        C_PUBLIC,
        (Ipv4Addr::new(10, 0, 3, 0), 24),
        &[],
        4,
    );
    net.idle(Duration::from_secs(5));
    let port_of = |net: &Net, a: Ipv4Addr| net.hosts[HUB].tables.paths.get(&a).map(|p| p.port);
    assert_eq!(port_of(&net, B_PUBLIC), Some(4500), "fixture: B's path");
    assert_eq!(port_of(&net, C_PUBLIC), Some(4500), "fixture: C's path");

    // One of C's own ESP packets to the hub, taken off the wire before it arrives.
    let taken: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let t = Rc::clone(&taken);
    net.loss = Some(Box::new(move |src, dst, kind, bytes| {
        let mine = kind == Kind::Esp && *src.ip() == C_PUBLIC && *dst.ip() == HUB_NBMA;
        if mine && t.borrow().is_none() {
            *t.borrow_mut() = Some(bytes.to_vec());
            return true;
        }
        false
    }));
    net.send_from_lan(c, udp_packet(C_HOST, HUB_HOST, 1, 64));
    // B's NAT has no mapping at the port C names: what goes there is lost (the sim would
    // otherwise hand it to B by address alone, and B's answer would move the path back).
    net.loss = Some(Box::new(|_, dst, _, _| {
        dst == SocketAddrV4::new(B_PUBLIC, SPOOFED_PORT)
    }));
    let esp = taken.borrow_mut().take().expect("C sent ESP to the hub");

    // C sends it again, from B's public address and a port of its choosing.
    let events_before = net.hosts[HUB].events.len();
    net.inject_esp(HUB, SocketAddrV4::new(B_PUBLIC, SPOOFED_PORT), &esp);
    let moved: Vec<_> = net.hosts[HUB].events[events_before..]
        .iter()
        .filter(|e| format!("{e:?}").contains("Moved"))
        .collect();
    assert_eq!(
        port_of(&net, B_PUBLIC),
        Some(4500),
        "the hub now sends B's traffic to {B_PUBLIC}:{:?} on C's say-so (events {moved:?})",
        port_of(&net, B_PUBLIC)
    );
    // And while it lasts the hub's traffic to B is lost.
    let b = sim::three::B;
    let before = net.hosts[b].delivered.len();
    net.send_from_lan(HUB, udp_packet(HUB_HOST, sim::three::B_TUNNEL, 2, 64));
    assert_eq!(net.hosts[b].delivered.len(), before + 1, "hub → B lost");
    assert!(
        !net.hosts[HUB]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerDown { peer } if *peer == B_PUBLIC)),
        "the hub lost B"
    );
}
