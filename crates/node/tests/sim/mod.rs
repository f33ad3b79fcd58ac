//! An in-memory DMVPN: dmvpn-node instances with the real dataplane tables, a kernel-like
//! route table and "TUN" per host, a simulated underlay with an optional 1:1 NAT per host
//! (an EC2 Elastic IP: addresses rewritten, ports kept), a seeded RNG per host and a
//! simulated clock. Deterministic: same seeds, same run.

#![allow(dead_code)]

mod faults;
pub mod three;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmvpn_crypto::TestRng;
use dmvpn_dataplane::{DropReason, Inbound, Outbound, Route, RouteProto, RouteTable, Tables};
use dmvpn_nhrp::EntryKind;
use dmvpn_node::{Event, Node, RouteUpdate, SlowPath, Transmit};
use dmvpn_wire::PacketBuf;
use dmvpn_wire::gre::EtherType;

pub const PSK: &str = "an in-memory test PSK of 32 byte";
pub const NHRP_KEY: &str = "dmvpnkey";

/// The IKE and IPsec settings every node shares: the reference proposal, one wildcard PSK,
/// DPD 40/5 on demand, Child SAs of 300 s (IKE SAs 600 s) so a test crosses rekeys quickly.
fn common() -> String {
    format!(
        r#"[[ike.proposal]]
encryption = "aes-gcm-256"
prf = "sha512"
group = 19
[[ike.keyring]]
name = "ANY"
peer = "0.0.0.0/0"
psk = "{PSK}"
[ike.dpd]
delay = 40
retry = 5
mode = "on-demand"
[ipsec]
transform = "aes-gcm-256"
mode = "transport"
replay-window = 1024
lifetime = 300
"#
    )
}

/// Configuration text for a spoke at `tunnel` (/24) with LAN route `via_hub` (static).
pub fn spoke_config(tunnel: &str, hub_nbma: Ipv4Addr, extra: &str) -> String {
    let common = common();
    format!(
        r#"
[ike]
nat-keepalive = 20
lifetime = 600
{common}[tunnel]
address = "{tunnel}/24"
mtu = 1400
adjust-mss = 1360
gre-key = 100
[nhrp]
role = "spoke"
network-id = 100
holding-time = 600
shortcut = true
authentication = "{NHRP_KEY}"
[[nhrp.nhs]]
address = "10.250.0.1"
nbma = "{hub_nbma}"
multicast = true
[[route]]
prefix = "10.0.0.0/16"
via = "10.250.0.1"
{extra}
"#
    )
}

/// Configuration text for the hub at 10.250.0.1 with NBMA `nbma`.
pub fn hub_config(nbma: Ipv4Addr) -> String {
    let common = common();
    format!(
        r#"
[ike]
lifetime = 600
{common}[tunnel]
address = "10.250.0.1/24"
mtu = 1400
adjust-mss = 1360
gre-key = 100
[nhrp]
role = "hub"
network-id = 100
holding-time = 600
redirect = true
authentication = "{NHRP_KEY}"
[underlay]
local-address = "{nbma}"
"#
    )
}

pub fn parse(text: &str) -> dmvpn_config::Config {
    dmvpn_config::parse_str(text, Path::new("/nonexistent/dmvpnd.toml")).expect("valid config")
}

/// The node keeps its NHRP mappings and multicast list up to date incrementally; they must
/// equal a recomputation from the whole NHRP cache: the NHSs' configured mappings, then, per
/// tunnel next hop, the first live learned entry (in `cache_entries` order) whose peer has a
/// path (on a hub: or is a spoke's registration), never replacing an NHS.
pub fn check_mappings(node: &Node, now: Instant) {
    let t = node.tables();
    let mut want: HashMap<Ipv4Addr, Ipv4Addr> = HashMap::new();
    let nhs: Vec<Ipv4Addr> = node.config().nhrp.nhs.iter().map(|n| n.address).collect();
    let hub = matches!(node.config().nhrp.role, dmvpn_config::Role::Hub { .. });
    for n in &node.config().nhrp.nhs {
        want.insert(n.address, n.nbma);
    }
    for e in node.nhrp().cache_entries(now) {
        let (IpAddr::V4(nh), IpAddr::V4(nbma)) = (e.next_hop, e.effective_nbma()) else {
            continue;
        };
        if e.kind == EntryKind::Local
            || !e.is_live(now)
            || nhs.contains(&nh)
            || want.contains_key(&nh)
            || !(t.paths.contains_key(&nbma) || hub && e.flags.registered)
        {
            continue;
        }
        want.insert(nh, nbma);
    }
    let got: HashMap<Ipv4Addr, Ipv4Addr> = t.mappings.iter().map(|(k, m)| (*k, m.nbma)).collect();
    assert_eq!(
        got, want,
        "incremental NHRP mappings differ from a recomputation"
    );
    let mut mc: Vec<Ipv4Addr> = t.multicast.iter().copied().collect();
    mc.sort();
    let want_mc: Vec<Ipv4Addr> = node
        .nhrp()
        .multicast_nbmas(now)
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect();
    assert_eq!(mc, want_mc, "incremental multicast list differs");
}

/// One router: the node, what it published, its kernel routes and what reached its LAN.
pub struct Host {
    pub name: &'static str,
    pub node: Node,
    pub tables: Arc<Tables>,
    pub routes: RouteTable,
    /// Address on its own interface (pre-NAT).
    pub private: Ipv4Addr,
    /// Address the world sees (post-NAT); equal to `private` without NAT.
    pub public: Ipv4Addr,
    /// The LAN behind it: packets to it are delivered locally.
    pub lan: (Ipv4Addr, u8),
    pub tunnel: Ipv4Addr,
    pub events: Vec<Event>,
    /// Inner packets delivered to this host's LAN.
    pub delivered: Vec<Vec<u8>>,
    /// Datagrams this host sent: (destination, kind).
    pub sent: Vec<(SocketAddrV4, Kind)>,
    /// The IKE messages this host sent (destination, bytes without the non-ESP marker).
    pub ike_sent: Vec<(SocketAddrV4, Vec<u8>)>,
    pub alive: bool,
    /// A new NAT mapping in front of the host: its port 4500 appears as this port, and
    /// datagrams to the old mapping (4500) are lost. `None`: ports kept.
    pub nat_port: Option<u16>,
    /// IKE jobs come out of the node (offload mode) and are run here, out of order, as the
    /// daemon's worker pool would.
    pub offload: bool,
    /// How many IKE jobs ran for it.
    pub jobs_run: usize,
}

/// Decides whether a datagram (source, destination — post-NAT —, kind and bytes) is lost.
pub type Loss = Box<dyn FnMut(SocketAddrV4, SocketAddrV4, Kind, &[u8]) -> bool>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ike,
    Esp,
    Keepalive,
}

#[derive(Debug)]
enum Payload {
    Ike { bytes: Vec<u8> },
    Esp { bytes: Vec<u8> },
    Keepalive,
}

#[derive(Debug)]
struct Datagram {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: Payload,
}

/// Builds an IPv4/UDP packet (UDP checksum 0, IPv4 checksum computed).
pub fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, id: u16, payload_len: usize) -> Vec<u8> {
    let total = 20 + 8 + payload_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for c in p[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    p
}

fn in_prefix(a: Ipv4Addr, (p, l): (Ipv4Addr, u8)) -> bool {
    let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
    a.to_bits() & m == p.to_bits() & m
}

pub struct Net {
    pub hosts: Vec<Host>,
    pub now: Instant,
    in_flight: VecDeque<Datagram>,
    /// Datagrams lost because no host owns the destination or a host is down.
    pub lost: usize,
    /// Loses the datagrams it returns true for (counted in `lost`).
    pub loss: Option<Loss>,
}

impl Net {
    pub fn new() -> Self {
        Net {
            hosts: Vec::new(),
            now: Instant::now(),
            in_flight: VecDeque::new(),
            lost: 0,
            loss: None,
        }
    }

    /// Adds a host; returns its index. `kernel_routes` are routes into the tunnel besides
    /// the connected tunnel subnet (e.g. what OSPF would install on a hub).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        name: &'static str,
        config: &str,
        private: Ipv4Addr,
        public: Ipv4Addr,
        lan: (Ipv4Addr, u8),
        kernel_routes: &[(Ipv4Addr, u8, Ipv4Addr)],
        seed: u64,
    ) -> usize {
        let config = Arc::new(parse(config));
        let tunnel = config.tunnel.address.addr;
        let mut routes = RouteTable::new();
        routes.insert(Route {
            prefix: config.tunnel.network.addr,
            prefix_len: config.tunnel.network.prefix_len,
            gateway: None,
            metric: 0,
            proto: RouteProto::KERNEL,
        });
        for &(prefix, prefix_len, via) in kernel_routes {
            routes.insert(Route {
                prefix,
                prefix_len,
                gateway: Some(via),
                metric: 20,
                proto: RouteProto(188),
            });
        }
        let node = Node::new(
            config,
            private,
            Box::new(move |_| private),
            Box::new(TestRng::new(seed)),
            Box::new(dmvpn_nhrp::SeededRequestIds::new(seed)),
            self.now,
        )
        .expect("node");
        let tables = Arc::new(node.tables().clone());
        self.hosts.push(Host {
            name,
            node,
            tables,
            routes,
            private,
            public,
            lan,
            tunnel,
            events: Vec::new(),
            delivered: Vec::new(),
            sent: Vec::new(),
            ike_sent: Vec::new(),
            alive: true,
            nat_port: None,
            offload: false,
            jobs_run: 0,
        });
        let h = self.hosts.len() - 1;
        self.outputs(h);
        let now = self.now;
        let host = &mut self.hosts[h];
        host.node.set_local_prefixes(vec![lan]);
        host.node.set_routes(Arc::new(host.routes.clone()));
        host.node.start(now);
        self.outputs(h);
        h
    }

    /// Carries out what host `h`'s node polled out, in the daemon's order.
    pub fn outputs(&mut self, h: usize) {
        let now = self.now;
        let host = &mut self.hosts[h];
        if host.offload {
            let mut jobs = Vec::new();
            while let Some(j) = host.node.poll_ike_job() {
                jobs.push(j);
            }
            host.jobs_run += jobs.len();
            for j in jobs.into_iter().rev() {
                host.node.complete_ike_job(now, j.run());
            }
        }
        check_mappings(&host.node, now);
        if let Some(t) = host.node.poll_tables() {
            host.tables = Arc::new(t);
        }
        let mut routes_changed = false;
        while let Some(r) = host.node.poll_routes() {
            routes_changed = true;
            match r {
                RouteUpdate::Install {
                    prefix,
                    prefix_len,
                    via,
                    metric,
                } => host.routes.insert(Route {
                    prefix,
                    prefix_len,
                    gateway: via,
                    metric,
                    proto: RouteProto::DMVPND,
                }),
                RouteUpdate::Withdraw {
                    prefix,
                    prefix_len,
                    metric,
                    ..
                } => {
                    host.routes.remove(prefix, prefix_len, metric);
                }
            }
        }
        if routes_changed {
            host.node.set_routes(Arc::new(host.routes.clone()));
        }
        while let Some(e) = host.node.poll_event() {
            host.events.push(e);
        }
        while let Some(t) = host.node.poll_transmit() {
            let (dst, natt, payload, kind) = match t {
                Transmit::Ike { to, natt, bytes } => (to, natt, Payload::Ike { bytes }, Kind::Ike),
                Transmit::Esp { to, udp_encap, buf } => (
                    if udp_encap {
                        to
                    } else {
                        SocketAddrV4::new(*to.ip(), 0)
                    },
                    udp_encap,
                    Payload::Esp {
                        bytes: buf.as_slice().to_vec(),
                    },
                    Kind::Esp,
                ),
                Transmit::NatKeepalive { to } => (to, true, Payload::Keepalive, Kind::Keepalive),
            };
            host.sent.push((dst, kind));
            if let Payload::Ike { bytes } = &payload {
                host.ike_sent.push((dst, bytes.clone()));
            }
            let src_port = match (&payload, natt) {
                (Payload::Esp { .. }, false) => 0,
                (_, true) => host.nat_port.unwrap_or(4500),
                (_, false) => 500,
            };
            // The host's own NAT rewrites the source address (1:1, ports kept).
            let src = SocketAddrV4::new(host.public, src_port);
            self.in_flight.push_back(Datagram { src, dst, payload });
        }
    }

    fn host_by_public(&self, a: Ipv4Addr) -> Option<usize> {
        self.hosts.iter().position(|h| h.public == a)
    }

    /// Delivers datagrams until the underlay is quiet.
    pub fn flush(&mut self) {
        let mut steps = 0;
        while let Some(d) = self.in_flight.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the network does not settle");
            let (Some(h), Some(s)) = (
                self.host_by_public(*d.dst.ip()),
                self.host_by_public(*d.src.ip()),
            ) else {
                self.lost += 1;
                continue;
            };
            if !self.hosts[h].alive || !self.hosts[s].alive {
                self.lost += 1;
                continue;
            }
            // The old NAT mapping is gone.
            let mapped = self.hosts[h].nat_port;
            if mapped.is_some() && d.dst.port() == 4500 {
                self.lost += 1;
                continue;
            }
            let (kind, bytes): (Kind, &[u8]) = match &d.payload {
                Payload::Ike { bytes } => (Kind::Ike, bytes),
                Payload::Esp { bytes } => (Kind::Esp, bytes),
                Payload::Keepalive => (Kind::Keepalive, &[]),
            };
            if self
                .loss
                .as_mut()
                .is_some_and(|l| l(d.src, d.dst, kind, bytes))
            {
                self.lost += 1;
                continue;
            }
            let now = self.now;
            match d.payload {
                Payload::Ike { bytes } => {
                    let natt = d.dst.port() == 4500 || Some(d.dst.port()) == mapped;
                    self.hosts[h].node.handle_ike(now, d.src, natt, &bytes);
                }
                Payload::Esp { bytes } => self.receive_esp(h, d.src, &bytes),
                Payload::Keepalive => {}
            }
            self.outputs(h);
        }
    }

    /// Delivers `bytes` to host `h` as an ESP datagram from `src` (any source: a spoofed one
    /// too), then carries out what it caused.
    pub fn inject_esp(&mut self, h: usize, src: SocketAddrV4, bytes: &[u8]) {
        self.receive_esp(h, src, bytes);
        self.outputs(h);
        self.flush();
    }

    fn receive_esp(&mut self, h: usize, src: SocketAddrV4, bytes: &[u8]) {
        let mut buf = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, bytes).expect("fits");
        let host = &mut self.hosts[h];
        let tables = host.tables.clone();
        let verdict = tables.inbound(&host.routes, *src.ip(), &mut buf);
        // As the daemon's datapath does (rate-limited there per source).
        if let Inbound::Data { peer, .. } | Inbound::Nhrp { peer } = verdict
            && src.port() != 0
            && tables.path_port_moved(peer, src.port())
        {
            let now = self.now;
            host.node
                .handle_slow_path(now, SlowPath::NatMapping { peer, from: src });
        }
        match verdict {
            Inbound::Data { peer, redirect } => {
                if redirect {
                    let quote = buf.as_slice()[..28.min(buf.len())].to_vec();
                    let now = self.now;
                    host.node
                        .handle_slow_path(now, SlowPath::Redirect { peer, quote });
                }
                self.kernel_receive(h, buf.as_slice().to_vec());
            }
            Inbound::Nhrp { peer } => {
                let bytes = buf.as_slice().to_vec();
                let now = self.now;
                host.node
                    .handle_slow_path(now, SlowPath::Nhrp { peer, bytes });
            }
            // As the daemon's datapath does (rate-limited there per source).
            Inbound::Drop(DropReason::UnknownSpi) => {
                let spi = u32::from_be_bytes(bytes[..4].try_into().expect("ESP header"));
                let now = self.now;
                let encap = src.port() != 0;
                host.node.handle_slow_path(
                    now,
                    SlowPath::UnknownSpi {
                        from: src,
                        encap,
                        spi,
                    },
                );
            }
            Inbound::Drop(_) => {}
        }
    }

    /// An inner packet reached host `h`'s kernel from the tunnel: delivered locally, or
    /// forwarded back into the tunnel (a hub's hairpin).
    fn kernel_receive(&mut self, h: usize, packet: Vec<u8>) {
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let host = &mut self.hosts[h];
        if dst == host.tunnel || in_prefix(dst, host.lan) {
            host.delivered.push(packet);
        } else {
            self.send_from_lan(h, packet);
        }
    }

    /// A packet from host `h`'s LAN (or kernel) enters its TUN.
    pub fn send_from_lan(&mut self, h: usize, packet: Vec<u8>) {
        let mut buf = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &packet).expect("fits");
        let now = self.now;
        let host = &mut self.hosts[h];
        if !host.alive {
            return;
        }
        let tables = host.tables.clone();
        match tables.outbound(&host.routes, &mut buf) {
            Outbound::Send {
                nbma,
                port,
                udp_encap,
            } => {
                let dst = SocketAddrV4::new(nbma, if udp_encap { port } else { 0 });
                host.sent.push((dst, Kind::Esp));
                let src_port = if udp_encap {
                    host.nat_port.unwrap_or(4500)
                } else {
                    0
                };
                let src = SocketAddrV4::new(host.public, src_port);
                self.in_flight.push_back(Datagram {
                    src,
                    dst,
                    payload: Payload::Esp {
                        bytes: buf.as_slice().to_vec(),
                    },
                });
            }
            Outbound::NeedSa { nbma } => {
                host.node.handle_slow_path(
                    now,
                    SlowPath::NeedSa {
                        nbma,
                        protocol: EtherType::IPV4,
                        buf,
                    },
                );
            }
            Outbound::Multicast | Outbound::Drop(_) => {}
        }
        self.outputs(h);
        self.flush();
    }

    /// Runs deadlines and deliveries until `now + d`, calling `tick` once per simulated
    /// second (to send traffic).
    pub fn run_for(&mut self, d: Duration, mut tick: impl FnMut(&mut Net)) {
        let until = self.now + d;
        let mut next_tick = self.now;
        self.flush();
        loop {
            let next_deadline = self
                .hosts
                .iter()
                .filter(|h| h.alive)
                .map(|h| h.node.poll_timeout())
                .min()
                .unwrap_or(until);
            let next = next_deadline.min(next_tick);
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if self.now >= next_tick {
                next_tick = self.now + Duration::from_secs(1);
                tick(self);
            }
            for h in 0..self.hosts.len() {
                if self.hosts[h].alive && self.hosts[h].node.poll_timeout() <= self.now {
                    let now = self.now;
                    self.hosts[h].node.handle_timeout(now);
                    self.outputs(h);
                }
            }
            self.flush();
        }
        self.now = until;
    }

    /// A hub at `hub_nbma` (10.250.0.1, LAN 10.0.0.0/24) and one spoke at `spoke_nbma`
    /// (10.250.0.11, LAN 10.0.1.0/24), with the configurations given; hosts 0 and 1.
    pub fn hub_and_spoke(hub_nbma: Ipv4Addr, hub: &str, spoke_nbma: Ipv4Addr, spoke: &str) -> Self {
        let mut net = Self::new();
        net.add(
            "hub",
            hub,
            hub_nbma,
            hub_nbma,
            (Ipv4Addr::new(10, 0, 0, 0), 24),
            &[],
            1,
        );
        net.add(
            "spoke-a",
            spoke,
            spoke_nbma,
            spoke_nbma,
            (Ipv4Addr::new(10, 0, 1, 0), 24),
            &[],
            2,
        );
        net
    }

    /// Reloads host `h` with configuration `text` (as SIGHUP does).
    pub fn reload(&mut self, h: usize, text: &str) {
        let now = self.now;
        self.hosts[h]
            .node
            .reload(now, parse(text))
            .expect("reload accepted");
        self.outputs(h);
        self.flush();
    }

    /// Stops host `h` the way SIGTERM does: purges, the wait for their replies (bounded),
    /// deletes, then silence. Returns how long the host waited for the Purge Replies.
    pub fn shutdown(&mut self, h: usize) -> Duration {
        let began = self.now;
        let delete_by = self.hosts[h].node.begin_shutdown(began);
        self.outputs(h);
        self.flush();
        if !self.hosts[h].node.purges_answered() {
            self.idle(delete_by.saturating_duration_since(self.now));
        }
        let now = self.now;
        self.hosts[h].node.finish_shutdown(now);
        self.outputs(h);
        self.flush();
        self.hosts[h].alive = false;
        now - began
    }

    pub fn idle(&mut self, d: Duration) {
        self.run_for(d, |_| {});
    }
}
