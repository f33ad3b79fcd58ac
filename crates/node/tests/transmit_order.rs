//! A tunnel packet the node sends itself (NHRP, a packet that waited for its SA) takes its
//! ESP sequence number when it is polled, not when the node queued it, and
//! `poll_transmit_then` sends it inside the SA's turn: a packet worker sealing on the same SA
//! meanwhile cannot put a later number on the wire before it (crates/node/src/transmit.rs).
//! Before, the node's packet was numbered at queue time and sent after the daemon's netlink
//! work, so a busy worker could push it out of a 32-packet replay window.

mod sim;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmvpn_dataplane::Outbound;
use dmvpn_node::{Event, SlowPath, Transmit};
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;
use sim::{Net, hub_config, spoke_config, udp_packet};

const HUB_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const A_NBMA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const HUB: usize = 0;
const A: usize = 1;

fn registered() -> Net {
    let mut net = Net::hub_and_spoke(
        HUB_NBMA,
        &hub_config(HUB_NBMA),
        A_NBMA,
        &spoke_config("10.250.0.11", HUB_NBMA, ""),
    );
    net.idle(Duration::from_secs(5));
    assert!(
        net.hosts[HUB]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerRegistered { .. })),
        "spoke A did not register"
    );
    net
}

fn lan_packet(id: u16) -> PacketBuf {
    let p = udp_packet(
        Ipv4Addr::new(10, 0, 1, 5),
        Ipv4Addr::new(10, 0, 0, 5),
        id,
        100,
    );
    PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &p).expect("fits")
}

/// The ESP sequence number (RFC 4303 §2.2) of a sealed packet that starts at the SPI.
fn seq(esp: &[u8]) -> u32 {
    u32::from_be_bytes(esp[4..8].try_into().expect("ESP header"))
}

/// Has spoke A's node queue one packet for the hub through its slow path (as the daemon
/// does with a packet a worker found no SA for, which may have come up meanwhile).
fn queue_on_node(net: &mut Net, id: u16) {
    let now = net.now;
    net.hosts[A].node.handle_slow_path(
        now,
        SlowPath::NeedSa {
            nbma: HUB_NBMA,
            protocol: EtherType::IPV4,
            buf: lan_packet(id),
        },
    );
}

/// A worker's packet, sealed on A's published tables in the SA's turn as the daemon's
/// workers do.
fn worker_seal(net: &Net, id: u16) -> Vec<u8> {
    let host = &net.hosts[A];
    let mut bufs = [lan_packet(id)];
    let mut verdicts = [Outbound::Multicast];
    let mut wire = Vec::new();
    host.tables
        .outbound_batch_then(&host.routes, &mut bufs, &mut verdicts, |run, v| {
            assert!(matches!(v[0], Outbound::Send { nbma: HUB_NBMA, .. }));
            wire = run[0].as_slice().to_vec();
        });
    assert!(!wire.is_empty(), "the worker's packet was not sealed");
    wire
}

#[test]
fn a_queued_tunnel_packet_is_numbered_when_polled() {
    let mut net = registered();
    queue_on_node(&mut net, 1);
    // A worker seals after the node queued its packet but before the daemon polls it.
    let worker = worker_seal(&net, 2);
    let mut node_esp = None;
    while let Some(t) = net.hosts[A].node.poll_transmit() {
        if let Transmit::Esp { to, buf, .. } = t {
            assert_eq!(*to.ip(), HUB_NBMA);
            node_esp = Some(buf.as_slice().to_vec());
        }
    }
    let node_esp = node_esp.expect("the node sent its queued packet");
    assert!(
        seq(&node_esp) > seq(&worker),
        "the node's packet kept the number it had when queued ({} against the worker's {})",
        seq(&node_esp),
        seq(&worker)
    );
    // Both arrive, in the order of their numbers.
    let before = net.hosts[HUB].delivered.len();
    let src = SocketAddrV4::new(A_NBMA, 0);
    net.inject_esp(HUB, src, &worker);
    net.inject_esp(HUB, src, &node_esp);
    assert_eq!(net.hosts[HUB].delivered.len(), before + 2);
}

#[test]
fn poll_transmit_then_sends_inside_the_sas_turn() {
    let mut net = registered();
    queue_on_node(&mut net, 1);
    let tables = Arc::clone(&net.hosts[A].tables);
    let routes = net.hosts[A].routes.clone();
    // What reaches the "wire", in order: (who, sequence number).
    let wire: Arc<Mutex<Vec<(&str, u32)>>> = Arc::default();
    let mut worker = None;
    let mut sent = None;
    while let Some(t) = net.hosts[A].node.poll_transmit_then(|to, _, buf| {
        assert_eq!(*to.ip(), HUB_NBMA);
        // A worker starts sealing to the same SA while the node's packet is on its way out;
        // the node's send is slow (preempted). The worker must wait for it.
        let (tables, routes, w) = (Arc::clone(&tables), routes.clone(), Arc::clone(&wire));
        let (started, running) = std::sync::mpsc::channel();
        worker = Some(std::thread::spawn(move || {
            let mut bufs = [lan_packet(2)];
            let mut verdicts = [Outbound::Multicast];
            let _ = started.send(());
            tables.outbound_batch_then(&routes, &mut bufs, &mut verdicts, |run, _| {
                w.lock().unwrap().push(("worker", seq(run[0].as_slice())));
            });
        }));
        // The worker runs before the node's send goes on (a loaded machine may not schedule it
        // at once); it then has 200 ms to reach the SA's turn, which it holds for far less.
        running
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker thread started");
        std::thread::sleep(Duration::from_millis(200));
        wire.lock().unwrap().push(("node", seq(buf.as_slice())));
    }) {
        if let Transmit::Esp { buf, .. } = t {
            sent = Some(seq(buf.as_slice()));
        }
    }
    worker
        .expect("the node sent an ESP packet")
        .join()
        .expect("worker");
    let wire = wire.lock().unwrap().clone();
    assert_eq!(wire.len(), 2, "{wire:?}");
    assert_eq!(
        wire[0].0, "node",
        "a worker's packet reached the wire first: {wire:?}"
    );
    assert!(wire[0].1 < wire[1].1, "{wire:?}");
    // The transmit returned afterwards is the packet that was sent.
    assert_eq!(sent, Some(wire[0].1));
}

/// A responder that holds packets for the initiator (here the hub, which had traffic for the
/// spoke and started its own, crossed, setup) sends them after its IKE_AUTH response: the
/// initiator installs its inbound SA only when that response arrives (RFC 7296 §1.2), so
/// ESP ahead of it meets an unknown SPI and is lost.
#[test]
fn a_responders_queued_packets_follow_its_ike_auth_response() {
    let mut net = sim::Net::new();
    net.add(
        "hub",
        &hub_config(HUB_NBMA),
        HUB_NBMA,
        HUB_NBMA,
        (Ipv4Addr::new(10, 0, 0, 0), 24),
        &[],
        1,
    );
    // The spoke's IKE_SA_INIT is in flight; the hub gets a packet for the spoke meanwhile.
    net.add(
        "spoke-a",
        &spoke_config("10.250.0.11", HUB_NBMA, ""),
        A_NBMA,
        A_NBMA,
        (Ipv4Addr::new(10, 0, 1, 0), 24),
        &[],
        2,
    );
    let p = udp_packet(
        Ipv4Addr::new(10, 0, 0, 5),
        Ipv4Addr::new(10, 0, 1, 5),
        77,
        100,
    );
    let now = net.now;
    net.hosts[HUB].node.handle_slow_path(
        now,
        SlowPath::NeedSa {
            nbma: A_NBMA,
            protocol: EtherType::IPV4,
            buf: PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &p).expect("fits"),
        },
    );
    net.outputs(HUB);
    net.idle(Duration::from_secs(5));
    let unknown = net.hosts[A]
        .tables
        .counters
        .drops(dmvpn_dataplane::DropReason::UnknownSpi);
    let got = net.hosts[A]
        .delivered
        .iter()
        .any(|d| d.len() == p.len() && d[4..6] == p[4..6]);
    assert!(
        got && unknown == 0,
        "the hub's queued packet was lost (delivered: {got}, unknown-SPI drops at the spoke: {unknown})"
    );
}

/// A queued tunnel packet whose SA is deleted before it is sent is not sealed on the dead SA:
/// it waits in the SA queue and goes on the next SA.
#[test]
fn a_queued_packet_whose_sa_goes_away_waits_for_the_next() {
    let mut net = registered();
    queue_on_node(&mut net, 42);
    let now = net.now;
    net.hosts[A]
        .node
        .clear_sa(now, std::net::IpAddr::V4(HUB_NBMA))
        .expect("clear");
    let mut polled = Vec::new();
    while let Some(t) = net.hosts[A].node.poll_transmit() {
        polled.push(t);
    }
    assert!(
        !polled.iter().any(|t| matches!(t, Transmit::Esp { .. })),
        "ESP sent on the cleared SA: {polled:?}"
    );
    // (The clear's IKE datagrams polled above are lost; the hub learns by DPD or the new
    // setup.) The spoke sets up a new SA and the packet goes on it.
    net.idle(Duration::from_secs(10));
    let got = net.hosts[HUB]
        .delivered
        .iter()
        .any(|d| u16::from_be_bytes([d[4], d[5]]) == 42);
    assert!(got, "the queued packet never reached the hub");
}
