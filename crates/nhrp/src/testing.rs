//! A deterministic in-memory NHRP network for tests (cargo feature `testing`).
//!
//! Real engines exchange real bytes; [`Net`] plays the NBMA network
//! (delivering by NBMA address, with the NAT rewrite of the outer source)
//! and the daemon (bringing SAs up when an engine asks). Time only moves
//! through [`Net::advance`]. [`Net::hub_and_two_spokes`] builds the usual
//! topology: one hub and two spokes, spoke B behind 1:1 NAT as on EC2.
//!
//! A harness, not protocol code: it panics when the network never settles
//! or a fixture is inconsistent.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::codes::PacketType;
use crate::config::{Config, NhsConfig, Role, Route, SeededRequestIds};
use crate::engine::{Engine, Event};
use crate::packet::{Packet, checksum};

/// Index of the hub in [`Net::hub_and_two_spokes`].
pub const HUB: usize = 0;
/// Index of spoke A (no NAT) in [`Net::hub_and_two_spokes`].
pub const A: usize = 1;
/// Index of spoke B (behind 1:1 NAT) in [`Net::hub_and_two_spokes`].
pub const B: usize = 2;

/// An IPv4 address.
pub fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Hub tunnel address.
pub fn hub_tun() -> IpAddr {
    ip(10, 250, 0, 1)
}
/// Spoke A tunnel address.
pub fn a_tun() -> IpAddr {
    ip(10, 250, 0, 9)
}
/// Spoke B tunnel address.
pub fn b_tun() -> IpAddr {
    ip(10, 250, 0, 10)
}
/// Hub NBMA address.
pub fn hub_nbma() -> IpAddr {
    ip(198, 51, 100, 1)
}
/// Spoke A NBMA address.
pub fn a_nbma() -> IpAddr {
    ip(198, 51, 100, 3)
}
/// Spoke B NBMA address as it knows it (inside the NAT).
pub fn b_private() -> IpAddr {
    ip(172, 16, 0, 10)
}
/// Spoke B NBMA address as others see it (outside the NAT).
pub fn b_public() -> IpAddr {
    ip(203, 0, 113, 10)
}

/// A third spoke's tunnel address (the attacker, or a bystander, in the trust tests).
pub fn c_tun() -> IpAddr {
    ip(10, 250, 0, 11)
}
/// That third spoke's NBMA address.
pub fn c_nbma() -> IpAddr {
    ip(198, 51, 100, 7)
}

/// An NHRP packet of type `t` carrying the network's key, as any member can build one:
/// source NBMA and protocol addresses `src`, destination protocol address `dst_protocol`.
pub fn keyed(
    t: PacketType,
    body: crate::packet::Body,
    src: (IpAddr, IpAddr),
    dst_protocol: IpAddr,
) -> Vec<u8> {
    use crate::packet::{Authentication, Extension, ExtensionBody, ip_bytes};
    let mut p = Packet::new_ipv4(t, 64, body);
    p.src_nbma = ip_bytes(src.0);
    p.src_protocol = ip_bytes(src.1);
    p.dst_protocol = ip_bytes(dst_protocol);
    p.extensions = Some(vec![Extension::compulsory(ExtensionBody::Authentication(
        Authentication::cleartext(b"keykey00"),
    ))]);
    match p.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("a test packet does not encode: {e}"),
    }
}

/// The authentication key and network-id every node of the topology shares.
pub fn key(c: &mut Config) {
    c.auth_key = Some(b"keykey00".to_vec());
    c.network_id = 100;
}

fn engine(c: Config, seed: u64) -> Engine {
    match Engine::new(c, SeededRequestIds::new(seed)) {
        Ok(e) => e,
        Err(e) => panic!("test fixture configuration refused: {e}"),
    }
}

/// A spoke of the topology: tunnel `tun`, NBMA `nbma`, the hub as its NHS
/// (with multicast), request ids from `seed`.
pub fn spoke(tun: IpAddr, nbma: IpAddr, seed: u64) -> Engine {
    let mut c = Config::spoke(
        tun,
        24,
        nbma,
        vec![NhsConfig {
            protocol_addr: Some(hub_tun()),
            nbma_addr: hub_nbma(),
            multicast: true,
        }],
    );
    key(&mut c);
    engine(c, seed)
}

fn route(prefix: IpAddr, prefix_len: u8, next_hop: Option<IpAddr>) -> Route {
    Route {
        prefix,
        prefix_len,
        next_hop,
    }
}

/// One router on the network.
#[derive(Debug)]
pub struct Node {
    /// Its NHRP engine.
    pub engine: Engine,
    /// Address the node's packets appear from (after NAT).
    pub public: IpAddr,
    /// Every event the engine emitted, in order (see [`Net::take_events`]).
    pub events: Vec<Event>,
}

/// The network: nodes, the clock and a record of every packet sent.
#[derive(Debug)]
pub struct Net {
    /// Current time.
    pub now: Instant,
    /// The routers, by index.
    pub nodes: Vec<Node>,
    /// Every packet that crossed the network: (from node, to NBMA, bytes).
    pub wire: Vec<(usize, IpAddr, Vec<u8>)>,
    /// Drop everything sent to these NBMA addresses, and bring up no SA to them.
    pub blackhole: Vec<IpAddr>,
}

impl Net {
    /// A network with no nodes, its clock at `now`.
    pub fn empty(now: Instant) -> Self {
        Net {
            now,
            nodes: Vec::new(),
            wire: Vec::new(),
            blackhole: Vec::new(),
        }
    }

    /// Adds a router whose packets appear from `public`; returns its index.
    pub fn add(&mut self, engine: Engine, public: IpAddr) -> usize {
        self.nodes.push(Node {
            engine,
            public,
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// The hub ([`HUB`]) with routes to both spokes' LANs and a LAN of its
    /// own, spoke [`A`] owning 10.0.101.0/24 and spoke [`B`], behind NAT,
    /// owning 10.0.103.0/24. Nobody is registered yet.
    pub fn hub_and_two_spokes() -> Self {
        let mut hc = Config::hub(hub_tun(), 24, hub_nbma());
        key(&mut hc);
        let mut hub = engine(hc, 1);
        hub.set_routes(vec![
            route(ip(10, 0, 101, 0), 24, Some(a_tun())),
            route(ip(10, 0, 103, 0), 24, Some(b_tun())),
            route(ip(10, 1, 1, 0), 24, None),
        ]);
        let mut a = spoke(a_tun(), a_nbma(), 2);
        a.set_routes(vec![route(ip(10, 0, 101, 0), 24, None)]);
        let mut b = spoke(b_tun(), b_private(), 3);
        b.set_routes(vec![route(ip(10, 0, 103, 0), 24, None)]);
        let mut net = Net::empty(Instant::now());
        net.add(hub, hub_nbma());
        net.add(a, a_nbma());
        net.add(b, b_public());
        net
    }

    /// The node whose packets appear from `nbma`.
    pub fn by_nbma(&self, nbma: IpAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.public == nbma)
    }

    /// Runs until nothing moves: delivers packets, plays the daemon for SAs.
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                moved |= self.drain_events(i);
                moved |= self.deliver_transmits(i);
            }
            if !moved {
                return;
            }
        }
        panic!("network did not settle");
    }

    fn drain_events(&mut self, i: usize) -> bool {
        let mut moved = false;
        while let Some(ev) = self.nodes.get_mut(i).and_then(|n| n.engine.poll_event()) {
            moved = true;
            if let Event::NeedSa { nbma } = ev {
                self.bring_up_sa(i, nbma);
            }
            if let Some(n) = self.nodes.get_mut(i) {
                n.events.push(ev);
            }
        }
        moved
    }

    /// Plays the daemon: node `i` asked for an SA to `nbma`; both ends learn it is up.
    fn bring_up_sa(&mut self, i: usize, nbma: IpAddr) {
        let (Some(j), Some(from)) = (self.by_nbma(nbma), self.nodes.get(i).map(|n| n.public))
        else {
            return;
        };
        if self.blackhole.contains(&nbma) {
            return;
        }
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(i) {
            n.engine.sa_up(now, nbma);
        }
        if let Some(n) = self.nodes.get_mut(j) {
            n.engine.sa_up(now, from);
        }
    }

    fn deliver_transmits(&mut self, i: usize) -> bool {
        let mut moved = false;
        let Some(from) = self.nodes.get(i).map(|n| n.public) else {
            return false;
        };
        while let Some(t) = self.nodes.get_mut(i).and_then(|n| n.engine.poll_transmit()) {
            moved = true;
            self.wire.push((i, t.dst_nbma, t.bytes.clone()));
            if self.blackhole.contains(&t.dst_nbma) {
                continue;
            }
            let now = self.now;
            if let Some(n) = self.by_nbma(t.dst_nbma).and_then(|j| self.nodes.get_mut(j)) {
                n.engine.handle_packet(now, from, &t.bytes);
            }
        }
        moved
    }

    /// Advances time to `now + d`, firing every deadline on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.poll_timeout())
            .filter(|t| *t <= end)
            .min()
        {
            self.now = self.now.max(t);
            self.fire_timers();
        }
        self.now = end;
        self.fire_timers();
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            n.engine.handle_timeout(now);
        }
        self.pump();
    }

    /// Every spoke registers with its NHSs.
    pub fn register_all(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            if n.engine.config().role == Role::Spoke {
                n.engine.register(now);
            }
        }
        self.pump();
    }

    /// The events node `i` emitted since the last call.
    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        self.nodes
            .get_mut(i)
            .map(|n| std::mem::take(&mut n.events))
            .unwrap_or_default()
    }

    /// Every packet of type `t` sent so far: (from node, to NBMA, packet).
    pub fn sent(&self, t: PacketType) -> Vec<(usize, IpAddr, Packet)> {
        self.wire
            .iter()
            .filter_map(|(i, to, b)| Packet::parse(b).ok().map(|p| (*i, *to, p)))
            .filter(|(_, _, p)| p.packet_type == t)
            .collect()
    }

    /// The hub ([`HUB`]) sees a data packet from node `from` (src → dst) that
    /// goes back out the tunnel.
    pub fn data_via_hub(&mut self, from: usize, src: IpAddr, dst: IpAddr) {
        let Some(nbma) = self.nodes.get(from).map(|n| n.public) else {
            return;
        };
        let now = self.now;
        if let Some(hub) = self.nodes.get_mut(HUB) {
            hub.engine
                .traffic_indication_needed(now, nbma, &ipv4_header(src, dst));
        }
        self.pump();
    }
}

fn octets(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => panic!("IPv4 only: {a}"),
    }
}

/// An ICMP echo's IPv4 header plus 8 bytes, checksummed.
pub fn ipv4_header(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let addrs = [octets(src), octets(dst)].concat();
    let fixed = [0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 1];
    let sum = checksum(&[&fixed[..], &[0, 0], &addrs].concat());
    let echo = [8, 0, 0, 0, 0, 1, 0, 1];
    let [e0, e1] = checksum(&echo).to_be_bytes();
    [
        &fixed[..],
        &sum.to_be_bytes(),
        &addrs,
        &[8, 0, e0, e1, 0, 1, 0, 1],
    ]
    .concat()
}
