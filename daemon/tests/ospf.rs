//! OSPF over dmvpnd (issue 6, item 3): FRR's zebra + ospfd on a dmvpnd hub and two dmvpnd
//! spokes, the tunnel as OSPF point-to-multipoint (hello 10 s, dead 40 s) as in the reference
//! deployment. Proves that multicast written to the tunnel (OSPF hellos to 224.0.0.5) is
//! replicated (spoke → NHS flagged `multicast`, hub → every registered spoke): the adjacencies
//! form over the tunnel, the spokes learn each other's LAN (and the hub's) from OSPF alone (the
//! dmvpnd configurations have no `[[route]]`), LAN-to-LAN traffic flows, and after the hub's
//! redirect it takes the NHRP shortcut (proto 77) while the OSPF route stays via the hub. Both
//! tunnel addressings of docs/ospf.md: the subnet on every dmvpn0 (`10.250.0.X/24`, as IOS), and
//! (issue 14, item 7) a /32 with `tunnel.network` on every router (as FRR nhrpd hubs), and the
//! two mixed, which OSPF refuses by the hello's mask.
//!
//! Topology and configurations: `dmvpn_tests::e2e` (spoke B is behind the NAT router), FRR
//! helpers: `dmvpn_tests::ospf`, driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`,
//! `ping` and FRR (tests/install-deps.sh). On failure the scratch directory (dmvpnd and FRR
//! configs and logs) is kept and its path printed.

use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{
    HUB_LAN, HUB_LAN_HOST, HUB_TUNNEL, Keys, Node, NodeConfig, SPOKE_A_LAN, SPOKE_A_LAN_HOST,
    SPOKE_A_TUNNEL, SPOKE_B_LAN, SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL, TUNNEL_IF, TestDir, Topology,
    WAN_IF, ping, routes_with_proto, write_config,
};
use dmvpn_tests::ospf::{
    Neighbor, OspfSettings, adapt_config, cleanup_stale, host_tunnel_address, require_frr,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    PROTO_DMVPND, SETTLE_TIMEOUT, Scenario, keys, route_get, start_hub_then_spokes,
};

/// LAN side of every router namespace in the e2e topology.
const LAN_IF: &str = "eth1";
/// The reference deployment's `ip ospf hello-interval 10` (dead interval 4 × hello).
const HELLO: u32 = 10;
const DEAD: u32 = 40;

/// First hello at interface up, 2-Way on the neighbor's next hello (≤ 10 s), then DB exchange:
/// normally ~10–20 s; the dead interval plus margin bounds it.
const ADJACENCY_TIMEOUT: Duration = Duration::from_secs(60);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);

/// Each router's expected OSPF neighbors: the hub both spokes, each spoke only the hub.
const NEIGHBORS: [(Node, &[&str]); 3] = [
    (Node::Hub, &[SPOKE_A_TUNNEL, SPOKE_B_TUNNEL]),
    (Node::SpokeA, &[HUB_TUNNEL]),
    (Node::SpokeB, &[HUB_TUNNEL]),
];

/// The OSPF route (proto ospf) for exactly `prefix` in `ns`, if out of the tunnel via `via`.
fn ospf_route(ns: &dmvpn_tests::Netns, prefix: &str, via: &str) -> Option<serde_json::Value> {
    routes_with_proto(ns, "ospf").ok()?.into_iter().find(|r| {
        r["dst"].as_str() == Some(prefix)
            && r["dev"].as_str() == Some(TUNNEL_IF)
            && r["gateway"].as_str() == Some(via)
    })
}

fn settings(node: Node) -> OspfSettings {
    let lan = match node {
        // Hub 2 has no LAN; no OSPF test starts it.
        Node::Hub | Node::Hub2 => HUB_LAN,
        Node::SpokeA => SPOKE_A_LAN,
        Node::SpokeB => SPOKE_B_LAN,
        // Spoke C belongs to the BGP test.
        Node::SpokeC => unreachable!("no OSPF test starts spoke C"),
    };
    OspfSettings {
        hostname: node.name().to_owned(),
        router_id: node.tunnel_address().to_owned(),
        tunnel_if: TUNNEL_IF.to_owned(),
        hello: HELLO,
        dead: DEAD,
        // Every dmvpn0 has mtu 1400, so the DBD MTU check passes without mtu-ignore (see
        // docs/ospf.md): a full adjacency here proves it.
        mtu_ignore: false,
        passive: vec![LAN_IF.to_owned()],
        networks: vec!["10.250.0.0/24".to_owned(), lan.to_owned()],
    }
}

/// How the routers address their tunnel interfaces (docs/ospf.md): as IOS does, with the
/// subnet (`10.250.0.9/24`), or as FRR nhrpd routers do, with a /32 and `tunnel.network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    Subnet,
    Host,
}

/// The `conf/` configuration of `node` without static routes (OSPF supplies them).
fn config(dir: &TestDir, node: Node, keys: &Keys, addressing: Addressing) -> NodeConfig {
    let c = write_config(dir.path(), node, keys, None).and_then(|c| {
        adapt_config(&c)?;
        if addressing == Addressing::Host {
            host_tunnel_address(&c)?;
        }
        Ok(c)
    });
    let c = c.unwrap_or_else(|e| panic!("generating the {} configuration: {e:#}", node.name()));
    let text = std::fs::read_to_string(&c.config).unwrap();
    assert!(
        !text.lines().any(|l| l.trim() == "[[route]]"),
        "{} still has static routes:\n{text}",
        c.config.display()
    );
    c
}

/// Missing FULL adjacencies (fails at once on a neighbor that should not exist).
fn missing_adjacencies(s: &Scenario<'_>) -> Vec<String> {
    let mut missing = Vec::new();
    for (node, want) in &NEIGHBORS {
        let got = s.frr(*node).neighbors().unwrap_or_default();
        for w in *want {
            if !got.iter().any(|n| n.router_id == *w && n.is_full()) {
                missing.push(format!("{} → {w} (has {got:?})", node.name()));
            }
        }
        if let Some(x) = got.iter().find(|n| !want.contains(&n.router_id.as_str())) {
            s.fail(format!("{} has an unexpected neighbor {x:?}", node.name()));
        }
    }
    missing
}

/// Steps 0–4: dmvpnd on the hub and both spokes (registered), no LAN routed over the tunnel
/// before OSPF, FRR started, FULL adjacencies, OSPF routes in the kernels.
fn ospf_up<'t>(t: &'t Topology, dir: &TestDir, addressing: Addressing) -> Scenario<'t> {
    let keys = keys();
    let cfgs = [Node::Hub, Node::SpokeA, Node::SpokeB].map(|n| config(dir, n, &keys, addressing));
    let mut s = start_hub_then_spokes("ospf", t, &cfgs);
    s.step("0. both spokes register");
    s.wait_registered(Node::SpokeA, 0, 0);
    s.wait_registered(Node::SpokeB, 0, 0);

    s.step("1. without OSPF no LAN is routed over the tunnel");
    for (ns, name, dst) in [
        (&t.spoke_a, "spoke A", SPOKE_B_LAN_HOST),
        (&t.spoke_b, "spoke B", SPOKE_A_LAN_HOST),
        (&t.spoke_a, "spoke A", HUB_LAN_HOST),
        (&t.hub, "hub", SPOKE_A_LAN_HOST),
    ] {
        let rt = route_get(ns, dst);
        if rt["dev"].as_str() == Some(TUNNEL_IF) {
            s.fail(format!(
                "{name} routes {dst} into the tunnel before OSPF runs: {rt}"
            ));
        }
    }

    s.step("2. start zebra + ospfd in the hub and both spokes");
    for node in [Node::Hub, Node::SpokeA, Node::SpokeB] {
        s.start_frr(node, dir.path(), &settings(node));
    }
    let frr_started = Instant::now();

    s.step("3. FULL adjacencies hub ↔ each spoke (spokes do not neighbor each other)");
    s.eventually("FULL adjacencies", ADJACENCY_TIMEOUT, |s| {
        let missing = missing_adjacencies(s);
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("{missing:?}"))
    });
    s.note(format!(
        "all adjacencies FULL {:.1} s after FRR started",
        frr_started.elapsed().as_secs_f32()
    ));

    s.step("4. OSPF routes in the kernels: spokes via the hub, the hub via each spoke");
    let wanted = [
        (&t.spoke_a, "spoke A", SPOKE_B_LAN, HUB_TUNNEL),
        (&t.spoke_a, "spoke A", HUB_LAN, HUB_TUNNEL),
        (&t.spoke_b, "spoke B", SPOKE_A_LAN, HUB_TUNNEL),
        (&t.spoke_b, "spoke B", HUB_LAN, HUB_TUNNEL),
        (&t.hub, "hub", SPOKE_A_LAN, SPOKE_A_TUNNEL),
        (&t.hub, "hub", SPOKE_B_LAN, SPOKE_B_TUNNEL),
    ];
    s.eventually("OSPF routes after FULL", ROUTE_TIMEOUT, |_| {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(ns, _, p, via)| ospf_route(ns, p, via).is_none())
            .map(|(_, n, p, via)| format!("{n}: {p} via {via} dev {TUNNEL_IF} proto ospf"))
            .collect();
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("missing {missing:?}"))
    });
    for (ns, name, p, via) in &wanted {
        let r = ospf_route(ns, p, via).unwrap_or_default();
        s.note(format!("{name}: {r}"));
    }
    s
}

#[test]
fn ospf_point_to_multipoint_over_dmvpnd_learns_the_lans_and_carries_lan_traffic() {
    require_root_and_tools();
    require_frr();
    cleanup_stale().expect("removing stale FRR run directories");
    let dir = TestDir::new("ospf").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = ospf_up(&t, &dir, Addressing::Subnet);

    s.step("5. LAN ↔ LAN over the OSPF routes (hub LAN and the other spoke's LAN)");
    s.reach(&t.lan_a, "spoke A LAN host", HUB_LAN_HOST);
    s.reach(&t.lan_b, "spoke B LAN host", HUB_LAN_HOST);
    s.reach(&t.lan_hub, "hub LAN host", SPOKE_A_LAN_HOST);
    s.reach(&t.lan_hub, "hub LAN host", SPOKE_B_LAN_HOST);
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    s.check_alive();
    s.note(format!("passed in {:.1} s", s.elapsed().as_secs_f32()));
}

#[test]
fn ospf_routes_give_way_to_nhrp_shortcuts_and_come_back_when_they_go() {
    shortcuts_over_ospf(Addressing::Subnet);
}

/// Phase 3 with FRR-style /32 tunnel addresses: the shortcut's next hop is reached through
/// dmvpnd's route of the tunnel network instead of the connected one.
#[test]
fn ospf_routes_give_way_to_nhrp_shortcuts_with_host_tunnel_addresses() {
    shortcuts_over_ospf(Addressing::Host);
}

fn shortcuts_over_ospf(addressing: Addressing) {
    require_root_and_tools();
    require_frr();
    cleanup_stale().expect("removing stale FRR run directories");
    let dir = TestDir::new("ospf-sc").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = ospf_up(&t, &dir, addressing);
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);

    s.step("6. the hub's redirect leads to shortcut routes (proto 77) on both spokes");
    let twenty = Duration::from_secs(20);
    let (sc_a, sc_b) = s.wait_shortcuts(&[SPOKE_B_LAN_HOST], &[SPOKE_A_LAN_HOST], twenty);
    s.note(format!("shortcut on spoke A {sc_a}, on spoke B {sc_b}"));
    // The kernel now prefers the shortcut to the OSPF route via the hub.
    s.eventually(
        "spoke A routes LAN B via the shortcut",
        SETTLE_TIMEOUT,
        |_| {
            let rt = route_get(&t.spoke_a, SPOKE_B_LAN_HOST);
            match rt["gateway"].as_str() {
                Some(HUB_TUNNEL) => Err(format!("still via the hub: {rt}")),
                _ => Ok(()),
            }
        },
    );

    s.step("7. LAN A → LAN B flows directly: the hub's underlay rx stops growing");
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    let hub_wan0 = s.counters(&t.hub, WAN_IF);
    let a_wan0 = s.counters(&t.spoke_a, WAN_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 100, "0.01").unwrap();
    let (wan_rx, _) = s.counters(&t.hub, WAN_IF).since(&hub_wan0);
    let (a_rx, a_tx) = s.counters(&t.spoke_a, WAN_IF).since(&a_wan0);
    s.note(format!(
        "100 echoes A LAN → B LAN: hub {WAN_IF} rx +{wan_rx}, spoke A {WAN_IF} rx +{a_rx} tx +{a_tx}"
    ));
    if got != 100 {
        s.fail(format!("direct path lost echoes ({got}/100):\n{out}"));
    }
    // Via the hub it would receive ≥ 200; allow OSPF hellos, DPD, NAT keepalives, ARP.
    if wan_rx > 10 {
        s.fail(format!(
            "traffic still crosses the hub: hub {WAN_IF} rx +{wan_rx} (≤ 10 allowed)"
        ));
    }
    if a_tx < 100 || a_rx < 100 {
        s.fail(format!(
            "spoke A's underlay did not carry the echoes: rx +{a_rx} tx +{a_tx}"
        ));
    }
    s.reach(&t.lan_b, "spoke B LAN host", SPOKE_A_LAN_HOST);

    s.step("8. adjacencies stay FULL; zebra keeps the OSPF route to LAN B as a fallback");
    s.eventually("FULL adjacencies still", SETTLE_TIMEOUT, |s| {
        let missing = missing_adjacencies(s);
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("lost {missing:?}"))
    });
    // zebra sees dmvpnd's shortcut as a kernel route (distance 0) for the same prefix, selects
    // it and withdraws its own OSPF route from the kernel; the OSPF route stays in its RIB.
    let what =
        format!("spoke A's zebra holds the shortcut (kernel) and the OSPF route for {SPOKE_B_LAN}");
    s.eventually(&what, SETTLE_TIMEOUT, |s| {
        let rib = s
            .frr(Node::SpokeA)
            .vtysh_json(&format!("show ip route {SPOKE_B_LAN} json"))
            .map_err(|e| format!("{e:#}"))?;
        let entries = rib[SPOKE_B_LAN].as_array().cloned().unwrap_or_default();
        let has = |proto: &str| {
            entries
                .iter()
                .any(|e| e["protocol"].as_str() == Some(proto))
        };
        (has("ospf") && has("kernel"))
            .then_some(())
            .ok_or(format!("{rib}"))
    });

    s.step("9. when the shortcut goes, zebra puts the OSPF route via the hub back");
    // As on expiry: the shortcut route leaves the kernel (deleted here by the test).
    let dst = sc_a["dst"].as_str().unwrap_or(SPOKE_B_LAN).to_owned();
    let via = sc_a["gateway"]
        .as_str()
        .unwrap_or(SPOKE_B_TUNNEL)
        .to_owned();
    let del = [
        "route",
        "del",
        &dst,
        "via",
        &via,
        "dev",
        TUNNEL_IF,
        "proto",
        PROTO_DMVPND,
        "metric",
        "10",
    ];
    t.spoke_a
        .ip(&del)
        .unwrap_or_else(|e| s.fail(format!("deleting the shortcut: {e:#}")));
    let what = format!(
        "OSPF route {SPOKE_B_LAN} via {HUB_TUNNEL} on spoke A after the shortcut's removal"
    );
    s.poll(&what, Duration::from_secs(10), |_| {
        ospf_route(&t.spoke_a, SPOKE_B_LAN, HUB_TUNNEL)
    });
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    s.check_alive();
    s.note(format!("passed in {:.1} s", s.elapsed().as_secs_f32()));
}

/// FRR-style addressing on every router (`address = "10.250.0.X/32"`, `network =
/// "10.250.0.0/24"`), as against an FRR nhrpd hub: each dmvpn0 holds only its /32, dmvpnd routes
/// the subnet into it, and point-to-multipoint adjacencies form with /32 masks in the hellos
/// (FRR skips the mask check on a point-to-multipoint /32, RFC 2328 §10.5 only on
/// point-to-point links); the LANs are learned and reachable, spoke to spoke too.
#[test]
fn ospf_point_to_multipoint_with_host_tunnel_addresses_learns_the_lans() {
    require_root_and_tools();
    require_frr();
    cleanup_stale().expect("removing stale FRR run directories");
    let dir = TestDir::new("ospf32").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = ospf_up(&t, &dir, Addressing::Host);

    s.step("5. every dmvpn0 has only its /32; the tunnel subnet is dmvpnd's on-link route");
    for (ns, node) in [
        (&t.hub, Node::Hub),
        (&t.spoke_a, Node::SpokeA),
        (&t.spoke_b, Node::SpokeB),
    ] {
        let addr = ns
            .ip_json(&["-4", "addr", "show", "dev", TUNNEL_IF])
            .unwrap_or_default();
        let info = &addr[0]["addr_info"][0];
        if info["local"].as_str() != Some(node.tunnel_address()) || info["prefixlen"] != 32 {
            s.fail(format!(
                "{}: {TUNNEL_IF} is not {}/32: {addr}",
                node.name(),
                node.tunnel_address()
            ));
        }
        let rt = routes_with_proto(ns, PROTO_DMVPND).unwrap_or_default();
        if !rt.iter().any(|r| {
            r["dst"].as_str() == Some("10.250.0.0/24")
                && r["dev"].as_str() == Some(TUNNEL_IF)
                && r.get("gateway").is_none()
        }) {
            s.fail(format!(
                "{}: no on-link 10.250.0.0/24 proto 77: {rt:?}",
                node.name()
            ));
        }
    }

    s.step("6. LAN ↔ LAN over the OSPF routes");
    s.reach(&t.lan_a, "spoke A LAN host", HUB_LAN_HOST);
    s.reach(&t.lan_hub, "hub LAN host", SPOKE_B_LAN_HOST);
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    s.check_alive();
    s.note(format!("passed in {:.1} s", s.elapsed().as_secs_f32()));
}

/// Mixed addressing against one IOS-like hub (docs/ospf.md's table, last row): the hub and spoke
/// A use the subnet, spoke B a /32 with `tunnel.network`. NHRP does not mind (both spokes
/// register and the tunnel carries their traffic), but OSPF does: the hub's point-to-multipoint
/// /24 interface checks the Network Mask of each hello (RFC 2328 §10.5) and drops spoke B's
/// 255.255.255.255 ones, so hub ↔ A reaches Full and spoke B never becomes the hub's neighbor.
/// Every router of one DMVPN has to address the tunnel as its hub does.
#[test]
fn ospf_with_a_subnet_hub_refuses_a_host_addressed_spoke_by_its_hello_mask() {
    require_root_and_tools();
    require_frr();
    cleanup_stale().expect("removing stale FRR run directories");
    let dir = TestDir::new("ospfmix").unwrap();
    let t = Topology::new().expect("building the topology");
    let keys = keys();
    let cfgs = [
        config(&dir, Node::Hub, &keys, Addressing::Subnet),
        config(&dir, Node::SpokeA, &keys, Addressing::Subnet),
        config(&dir, Node::SpokeB, &keys, Addressing::Host),
    ];
    let mut s = start_hub_then_spokes("ospfmix", &t, &cfgs);
    s.step("0. both spokes register (spoke B with 10.250.0.10/32) and reach the hub");
    s.wait_registered(Node::SpokeA, 0, 0);
    s.wait_registered(Node::SpokeB, 0, 0);
    s.reach(&t.spoke_b, "spoke B", HUB_TUNNEL);

    s.step("1. start zebra + ospfd in the hub and both spokes");
    for node in [Node::Hub, Node::SpokeA, Node::SpokeB] {
        s.start_frr(node, dir.path(), &settings(node));
    }
    let frr_started = Instant::now();

    s.step("2. hub ↔ spoke A (both /24) reach Full");
    s.eventually("hub ↔ spoke A Full", ADJACENCY_TIMEOUT, |s| {
        let full = |node: Node, rid: &str| {
            s.frr(node)
                .neighbors()
                .unwrap_or_default()
                .iter()
                .any(|n| n.router_id == rid && n.is_full())
        };
        (full(Node::Hub, SPOKE_A_TUNNEL) && full(Node::SpokeA, HUB_TUNNEL))
            .then_some(())
            .ok_or_else(|| "not Full yet".to_owned())
    });
    s.note(format!(
        "hub ↔ spoke A Full {:.1} s after FRR started",
        frr_started.elapsed().as_secs_f32()
    ));

    s.step("3. the hub's ospfd drops spoke B's hellos: NetworkMask mismatch, 24 against 32");
    let mismatches = |s: &Scenario<'_>| {
        s.frr(Node::Hub)
            .daemon_log()
            .lines()
            .filter(|l| {
                l.contains("NetworkMask mismatch")
                    && l.contains(SPOKE_B_TUNNEL)
                    && l.contains("indicates 32")
            })
            .count()
    };
    let first = s.eventually(
        "the hub logs the mismatch",
        ADJACENCY_TIMEOUT,
        |s| match mismatches(s) {
            0 => Err(s.frr(Node::Hub).tail(20)),
            n => Ok(n),
        },
    );
    let line = s
        .frr(Node::Hub)
        .daemon_log()
        .lines()
        .find(|l| l.contains("NetworkMask mismatch"))
        .unwrap_or_default()
        .to_owned();
    s.note(format!("hub: {line}"));

    s.step("4. two hellos later spoke B is still nobody's Full neighbor, A learns no B LAN");
    // Each of B's hellos (every HELLO s) is another mismatch: two more of them mean two more
    // chances to form the adjacency, and none did.
    s.eventually(
        "two more of spoke B's hellos refused",
        3 * Duration::from_secs(HELLO.into()),
        |s| {
            let n = mismatches(s);
            (n >= first + 2)
                .then_some(())
                .ok_or(format!("{n} mismatches"))
        },
    );
    let hub = s.frr(Node::Hub).neighbors().unwrap_or_default();
    if hub.iter().any(|n| n.router_id == SPOKE_B_TUNNEL) {
        s.fail(format!("the hub has spoke B as a neighbor: {hub:?}"));
    }
    let b = s.frr(Node::SpokeB).neighbors().unwrap_or_default();
    if b.iter().any(Neighbor::is_full) {
        s.fail(format!("spoke B has a Full neighbor: {b:?}"));
    }
    s.note(format!("spoke B's view of the hub: {b:?}"));
    if let Some(r) = ospf_route(&t.spoke_a, SPOKE_B_LAN, HUB_TUNNEL) {
        s.fail(format!("spoke A learned spoke B's LAN: {r}"));
    }
    s.check_alive();
    s.note(format!("passed in {:.1} s", s.elapsed().as_secs_f32()));
}
