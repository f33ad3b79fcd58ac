//! The daemon's I/O layer in real network namespaces: the TUN device, route mirroring and
//! installation over rtnetlink, and the UDP 500/4500 + raw ESP underlay with its demultiplexer.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dmvpn_config::{Ipv4Net, Tunnel};
use dmvpn_tests::{NatTopology, Netns, require_root_and_tools, veth};
use dmvpnd::netlink::{Netlink, spawn_route_mirror};
use dmvpnd::routes::{RouteProto, RouteTable, shared};
use dmvpnd::tun::TunDevice;
use dmvpnd::underlay::{
    ControlQueues, EspToChannel, Received, Underlay, UnderlayConfig, local_address_for,
};
use serde_json::Value;
use tokio::sync::mpsc;

fn tunnel_cfg(name: &str) -> Tunnel {
    Tunnel {
        interface: name.to_owned(),
        address: "10.250.0.9/24".parse::<Ipv4Net>().unwrap(),
        network: "10.250.0.0/24".parse::<Ipv4Net>().unwrap(),
        mtu: 1400,
        adjust_mss: Some(1360),
        gre_key: Some(100),
        txqueuelen: 2048,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The routes `ip -j route show dev DEV` lists in the namespace.
fn kernel_routes(ns: &Netns, dev: &str) -> Vec<Value> {
    ns.ip_json(&["route", "show", "dev", dev])
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Both control-plane queues on one channel: these tests look at what arrives, not where.
fn queues(tx: &mpsc::Sender<Received>) -> ControlQueues {
    ControlQueues {
        established: tx.clone(),
        sa_init: tx.clone(),
    }
}

#[test]
fn tun_device_has_address_mtu_and_flags() {
    require_root_and_tools();
    let ns = Netns::new("tun").unwrap();
    let name = "dmvpn0";
    ns.block_on(async {
        let nl = Netlink::open().unwrap();
        let tun = TunDevice::create(&tunnel_cfg(name), &nl, 2, true)
            .await
            .unwrap();
        assert_eq!(tun.queues.len(), 2, "one queue per worker");
        assert_eq!(tun.name, name);
        assert_eq!(nl.link_index(name).await.unwrap(), tun.index);

        let link = &ns.ip_json(&["link", "show", "dev", name]).unwrap()[0];
        assert_eq!(link["mtu"], 1400, "{link}");
        // The kernel's default for a TUN device is 500.
        assert_eq!(link["txqlen"], 2048, "{link}");
        let flags: Vec<&str> = link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for f in ["UP", "MULTICAST", "NOARP", "POINTOPOINT"] {
            assert!(flags.contains(&f), "flag {f} missing from {flags:?}");
        }
        let addr = &ns.ip_json(&["addr", "show", "dev", name]).unwrap()[0];
        let inet: Vec<&Value> = addr["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["family"] == "inet")
            .collect();
        assert_eq!(inet.len(), 1, "{addr}");
        assert_eq!(inet[0]["local"], "10.250.0.9");
        assert_eq!(inet[0]["prefixlen"], 24);

        // Configuring again (daemon restart onto a persistent device) is not an error.
        nl.configure_tunnel(tun.index, ip("10.250.0.9"), 24, 1400, 2048)
            .await
            .unwrap();
        drop(tun);
    });
    // A non-persistent TUN disappears with its file descriptor.
    assert!(
        ns.ip(&["link", "show", "dev", name]).is_err(),
        "device should be gone"
    );
}

/// FRR-style addressing (`address = "10.250.0.9/32"`, `network = "10.250.0.0/24"`): the
/// interface holds only the /32, and dmvpnd routes the subnet into the tunnel itself (the kernel
/// adds no route for a host address), so the other routers' tunnel addresses stay reachable
/// through the tunnel and the route mirror hands them to the dataplane on-link.
#[test]
fn tun_device_with_a_host_address_routes_the_tunnel_network() {
    require_root_and_tools();
    let ns = Netns::new("tun32").unwrap();
    let dev = "dmvpn0";
    ns.block_on(async {
        let nl = Netlink::open().unwrap();
        let cfg = Tunnel {
            address: "10.250.0.9/32".parse::<Ipv4Net>().unwrap(),
            ..tunnel_cfg(dev)
        };
        let tun = TunDevice::create(&cfg, &nl, 1, false).await.unwrap();
        let routes = shared(RouteTable::new());
        spawn_route_mirror(tun.index, routes.clone()).await.unwrap();

        let addr = &ns.ip_json(&["addr", "show", "dev", dev]).unwrap()[0];
        let inet: Vec<&Value> = addr["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["family"] == "inet")
            .collect();
        assert_eq!(inet.len(), 1, "{addr}");
        assert_eq!(inet[0]["local"], "10.250.0.9");
        assert_eq!(inet[0]["prefixlen"], 32, "{addr}");

        let all = kernel_routes(&ns, dev);
        let net = all
            .iter()
            .find(|r| r["dst"] == "10.250.0.0/24")
            .unwrap_or_else(|| panic!("no route of the tunnel network: {all:?}"));
        assert_eq!(net["scope"], "link", "{net}");
        assert_eq!(net["prefsrc"], "10.250.0.9", "{net}");
        assert_eq!(net["protocol"], "77", "{net}");
        assert!(net.get("gateway").is_none(), "{net}");
        // The kernel sends a peer's tunnel address into the tunnel, from our own address.
        let got = &ns
            .ip_json(&["route", "get", "10.250.0.1"])
            .unwrap_or_default()[0];
        assert_eq!(got["dev"], dev, "{got}");
        assert_eq!(got["prefsrc"], "10.250.0.9", "{got}");

        // The mirror sees it as the on-link tunnel subnet, as for a /24 address.
        let r = poll(|| routes.load().lookup(ip("10.250.0.77")).copied())
            .await
            .expect("tunnel network in the mirror");
        assert_eq!(
            (r.prefix, r.prefix_len, r.gateway),
            (ip("10.250.0.0"), 24, None)
        );
        assert_eq!(r.next_hop(ip("10.250.0.77")), ip("10.250.0.77"));

        // Configuring again (a restart onto a persistent device) replaces it.
        nl.install_network_route(tun.index, ip("10.250.0.0"), 24, ip("10.250.0.9"))
            .await
            .unwrap();
        drop(tun);
    });
}

#[test]
fn route_mirror_follows_kernel_and_installed_routes() {
    require_root_and_tools();
    let ns = Netns::new("rt").unwrap();
    let dev = "dmvpn0";
    ns.block_on(async {
        let nl = Netlink::open().unwrap();
        let tun = TunDevice::create(&tunnel_cfg(dev), &nl, 1, false)
            .await
            .unwrap();
        let routes = shared(RouteTable::new());
        spawn_route_mirror(tun.index, routes.clone()).await.unwrap();

        // The connected tunnel subnet is mirrored, on-link.
        let r = *routes
            .load()
            .lookup(ip("10.250.0.77"))
            .expect("connected subnet");
        assert_eq!(
            (r.prefix, r.prefix_len, r.gateway),
            (ip("10.250.0.0"), 24, None)
        );
        assert_eq!(r.next_hop(ip("10.250.0.77")), ip("10.250.0.77"));
        assert!(routes.load().lookup(ip("10.1.1.106")).is_none());

        // A route an operator or routing daemon adds through the tunnel.
        ns.ip(&[
            "route",
            "add",
            "10.1.1.0/24",
            "via",
            "10.250.0.1",
            "dev",
            dev,
        ])
        .unwrap();
        let hop = poll(|| {
            routes
                .load()
                .lookup(ip("10.1.1.106"))
                .map(|r| r.next_hop(ip("10.1.1.106")))
        })
        .await;
        assert_eq!(hop, Some(ip("10.250.0.1")));
        // Routes out of other devices are not mirrored.
        ns.ip(&[
            "link", "add", "other9", "type", "veth", "peer", "name", "other9p",
        ])
        .unwrap();
        ns.ip(&["link", "set", "other9", "up"]).unwrap();
        ns.ip(&["route", "add", "10.9.0.0/16", "dev", "other9"])
            .unwrap();

        // A shortcut the daemon installs: visible to the host as a kernel route, and mirrored.
        nl.install_route(tun.index, ip("10.1.2.0"), 24, Some(ip("10.250.0.5")), 10)
            .await
            .unwrap();
        let kr = kernel_routes(&ns, dev);
        let shortcut = kr
            .iter()
            .find(|r| r["dst"] == "10.1.2.0/24")
            .unwrap_or_else(|| panic!("{kr:?}"));
        assert_eq!(shortcut["gateway"], "10.250.0.5");
        assert_eq!(shortcut["protocol"], RouteProto::DMVPND.0.to_string());
        let hop = poll(|| {
            routes
                .load()
                .lookup(ip("10.1.2.3"))
                .map(|r| r.next_hop(ip("10.1.2.3")))
        })
        .await;
        assert_eq!(hop, Some(ip("10.250.0.5")));
        assert_eq!(
            routes.load().lookup(ip("10.1.2.3")).unwrap().proto,
            RouteProto::DMVPND
        );
        assert!(
            routes.load().lookup(ip("10.9.1.1")).is_none(),
            "other9 route leaked into the tunnel table"
        );

        // Withdrawal, by the daemon and by the operator.
        nl.withdraw_route(tun.index, ip("10.1.2.0"), 24, Some(ip("10.250.0.5")), 10)
            .await
            .unwrap();
        nl.withdraw_route(tun.index, ip("10.1.2.0"), 24, Some(ip("10.250.0.5")), 10)
            .await
            .unwrap();
        assert!(
            !kernel_routes(&ns, dev)
                .iter()
                .any(|r| r["dst"] == "10.1.2.0/24")
        );
        ns.ip(&["route", "del", "10.1.1.0/24", "dev", dev]).unwrap();
        let gone = poll(|| {
            let t = routes.load();
            (t.lookup(ip("10.1.2.3")).is_none_or(|r| r.prefix_len == 0)
                && t.lookup(ip("10.1.1.106")).is_none())
            .then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "withdrawn routes still mirrored: {:?}",
            routes.load().iter().collect::<Vec<_>>()
        );

        // Taking the link down flushes its routes without RTM_DELROUTE; the mirror re-dumps.
        ns.ip(&["link", "set", dev, "down"]).unwrap();
        let flushed = poll(|| routes.load().is_empty().then_some(())).await;
        assert!(
            flushed.is_some(),
            "{:?}",
            routes.load().iter().collect::<Vec<_>>()
        );
        drop(tun);
    });
}

/// Polls a condition from async code for up to 5 s.
async fn poll<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..250 {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn recv(rx: &mut mpsc::Receiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("datagram within 5 s")
        .expect("reader alive")
}

/// A raw ESP packet (IP protocol 50) sent from a namespace; used without NAT.
fn send_raw_esp(to: Ipv4Addr, payload: &[u8]) {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(50))).unwrap();
    s.send_to(payload, &std::net::SocketAddr::from((to, 0)).into())
        .unwrap();
}

#[test]
fn underlay_demultiplexes_datagrams_from_another_namespace() {
    require_root_and_tools();
    let a = Netns::new("ua").unwrap();
    let b = Netns::new("ub").unwrap();
    veth(&a, "192.0.2.1/24", &b, "192.0.2.2/24").unwrap();
    let (a_ip, b_ip) = (ip("192.0.2.1"), ip("192.0.2.2"));

    // Peer side: sockets in namespace b, bound before a's daemon sends anything to them.
    let (peer500, peer4500) = b.run_in(|| {
        (
            UdpSocket::bind((b_ip, 500)).unwrap(),
            UdpSocket::bind((b_ip, 4500)).unwrap(),
        )
    });
    for s in [&peer500, &peer4500] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }

    a.block_on(async {
        assert_eq!(local_address_for(b_ip, None).unwrap(), a_ip);
        let underlay = Underlay::open(&UnderlayConfig {
            bind: Ipv4Addr::UNSPECIFIED,
            interface: None,
            ike_port: 500,
            natt_port: 4500,
            workers: 2,
            socket_buffer: 1 << 20,
            offload: true,
        })
        .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        underlay
            .spawn_readers(queues(&tx), Arc::new(EspToChannel(tx)))
            .unwrap();

        let ike_msg = [0x11u8; 28];
        let esp = [0xC0, 0xFF, 0xEE, 0x01, 0, 0, 0, 7, 0xAB, 0xCD];
        b.run_in(|| {
            let mut natt = vec![0, 0, 0, 0];
            natt.extend_from_slice(&ike_msg);
            peer4500.send_to(&natt, (a_ip, 4500)).unwrap();
            peer4500.send_to(&[0xFF], (a_ip, 4500)).unwrap();
            peer4500.send_to(&[1, 2, 3], (a_ip, 4500)).unwrap(); // malformed: dropped, counted
            peer4500.send_to(&esp, (a_ip, 4500)).unwrap();
            peer500.send_to(&ike_msg, (a_ip, 500)).unwrap();
            send_raw_esp(a_ip, &esp);
        });
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(recv(&mut rx).await);
        }
        // Each socket has its own reader task, so only the order within one socket is defined.
        let from4500 = SocketAddrV4::new(b_ip, 4500);
        let on4500: Vec<&Received> = got
            .iter()
            .filter(|r| match r {
                Received::Ike { from, .. }
                | Received::Esp { from, .. }
                | Received::NatKeepalive { from } => from.port() == 4500,
            })
            .collect();
        assert_eq!(
            on4500,
            [
                &Received::Ike {
                    from: from4500,
                    natt: true,
                    message: ike_msg.to_vec()
                },
                &Received::NatKeepalive { from: from4500 },
                &Received::Esp {
                    from: from4500,
                    encap: true,
                    packet: esp.to_vec()
                },
            ]
        );
        let ike500 = Received::Ike {
            from: SocketAddrV4::new(b_ip, 500),
            natt: false,
            message: ike_msg.to_vec(),
        };
        assert!(got.contains(&ike500), "{got:?}");
        let raw = Received::Esp {
            from: SocketAddrV4::new(b_ip, 0),
            encap: false,
            packet: esp.to_vec(),
        };
        assert!(got.contains(&raw), "{got:?}");
        assert_eq!(
            underlay
                .stats
                .malformed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );

        // And the sending side: marker on 4500, none on 500, keepalive is one 0xFF byte.
        underlay
            .send_ike(SocketAddrV4::new(b_ip, 4500), true, &ike_msg)
            .await
            .unwrap();
        underlay
            .send_ike(SocketAddrV4::new(b_ip, 500), false, &ike_msg)
            .await
            .unwrap();
        underlay
            .send_nat_keepalive(SocketAddrV4::new(b_ip, 4500))
            .await
            .unwrap();
        underlay
            .send_esp(0, SocketAddrV4::new(b_ip, 4500), true, &esp)
            .unwrap();
    });
    let mut buf = [0u8; 2048];
    let (n, from) = peer4500.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..4], &buf[4..n], from.port()),
        (&[0u8; 4][..], &[0x11u8; 28][..], 4500)
    );
    let (n, from) = peer500.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.port()), (&[0x11u8; 28][..], 500));
    let (n, _) = peer4500.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[0xFF]);
    let (n, _) = peer4500.recv_from(&mut buf).unwrap();
    assert_eq!(buf[..n], [0xC0, 0xFF, 0xEE, 0x01, 0, 0, 0, 7, 0xAB, 0xCD]);
}

#[test]
fn nat_keepalive_and_ike_cross_a_nat_router() {
    require_root_and_tools();
    let t = NatTopology::new().unwrap();
    let hub_ip = t.outside_addr;
    // The hub's underlay, in the outside namespace.
    let (tx, mut rx) = mpsc::channel(16);
    let hub = t.outside.run_in(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let u = rt
            .block_on(async {
                Underlay::open(&UnderlayConfig {
                    bind: hub_ip,
                    interface: None,
                    ike_port: 500,
                    natt_port: 4500,
                    workers: 1,
                    socket_buffer: 1 << 20,
                    offload: false,
                })
            })
            .unwrap();
        let _guard = rt.enter();
        u.spawn_readers(queues(&tx), Arc::new(EspToChannel(tx)))
            .unwrap();
        (rt, u)
    });
    // The spoke behind the NAT sends from its private address; the hub sees the router's.
    let spoke_local = t.inside.run_in(|| local_address_for(hub_ip, None).unwrap());
    assert_eq!(spoke_local, t.inside_addr);
    t.inside.run_in(|| {
        let s = UdpSocket::bind((t.inside_addr, 4500)).unwrap();
        s.send_to(&[0, 0, 0, 0, 0x2A], (hub_ip, 4500)).unwrap();
        s.send_to(&[0xFF], (hub_ip, 4500)).unwrap();
    });
    let (rt, underlay) = hub;
    rt.block_on(async {
        match recv(&mut rx).await {
            Received::Ike {
                from,
                natt: true,
                message,
            } => {
                assert_eq!(
                    *from.ip(),
                    t.router_outside_addr,
                    "source should be translated"
                );
                assert_eq!(message, [0x2A]);
            }
            other => panic!("expected IKE, got {other:?}"),
        }
        match recv(&mut rx).await {
            Received::NatKeepalive { from } => assert_eq!(*from.ip(), t.router_outside_addr),
            other => panic!("expected a keepalive, got {other:?}"),
        }
    });
    assert_eq!(
        underlay
            .stats
            .nat_keepalives
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
