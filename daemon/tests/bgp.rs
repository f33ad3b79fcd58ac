//! BGP over dmvpnd (issue 14, item 2; recipe: docs/bgp.md): two dmvpnd hubs running FRR bgpd as
//! iBGP route reflectors (`bgp listen range 10.250.0.0/24`, the spokes as clients, the hubs
//! peering with each other), and three dmvpnd spokes (B behind the NAT) that list both hubs as
//! NHSs and peer with both hubs' tunnel addresses, each announcing its LAN. No dmvpnd
//! configuration has a `[[route]]`: BGP supplies every LAN route. Proves: every spoke's
//! sessions to both hubs come up; each spoke learns the other spokes' LANs with the next hop
//! left at that spoke's tunnel address (reflection does not change it); LAN-to-LAN traffic
//! flows; the hub's redirect leads to an NHRP shortcut A ↔ C, after which A → C no longer
//! crosses either hub; hub 1 killed (dmvpnd SIGKILL, its FRR stopped): the sessions via hub 2
//! keep the routes and the pings continue (outage printed).
//!
//! Topology: `dmvpn_tests::e2e` (spoke C on the WAN bridge), FRR: `dmvpn_tests::bgp` and
//! `dmvpn_tests::ospf::Frr`, driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`, `ping`
//! and FRR (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::bgp::{BgpSettings, Session, require_bgpd, sessions, start};
use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, HUB2_NBMA, HUB2_TUNNEL, Keys, Node, NodeConfig, SPOKE_A_LAN,
    SPOKE_A_LAN_HOST, SPOKE_A_NBMA, SPOKE_A_TUNNEL, SPOKE_B_LAN, SPOKE_B_LAN_HOST, SPOKE_C_LAN,
    SPOKE_C_LAN_HOST, SPOKE_C_NBMA, SPOKE_C_TUNNEL, TUNNEL_IF, TestDir, Topology, WAN_IF,
    answered_echoes, ping, routes_with_proto,
};
use dmvpn_tests::ospf::{adapt_config, cleanup_stale};
use dmvpn_tests::scenario::{
    PROTO_DMVPND, REGISTRATION_TIMEOUT, SETTLE_TIMEOUT, Scenario, e2e_config, edit_config, keys,
    route_get, shortcut_route, shortcuts, start_hub_then_spokes, table,
};
use dmvpn_tests::{Netns, require_root_and_tools};
use serde_json::Value;

const HUBS: [Node; 2] = [Node::Hub, Node::Hub2];
const SPOKES: [Node; 3] = [Node::SpokeA, Node::SpokeB, Node::SpokeC];
/// `timers bgp 3 9`: a dead hub's sessions drop within 9 s.
const KEEPALIVE: u32 = 3;
const HOLD: u32 = 9;
/// TCP connect retries (FRR's connect timer, 120 s by default, restarts on a failed connect;
/// a spoke's first attempt may precede its SA): the spokes' sessions come up within it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);
/// The stream pinged through the hub's death: 300 echoes, 100 ms apart.
const STREAM: u32 = 300;
const STREAM_INTERVAL: f32 = 0.1;

fn lan(node: Node) -> &'static str {
    match node {
        Node::SpokeA => SPOKE_A_LAN,
        Node::SpokeB => SPOKE_B_LAN,
        Node::SpokeC => SPOKE_C_LAN,
        Node::Hub | Node::Hub2 => unreachable!("the hubs announce no LAN here"),
    }
}

fn lan_host(node: Node) -> &'static str {
    match node {
        Node::SpokeA => SPOKE_A_LAN_HOST,
        Node::SpokeB => SPOKE_B_LAN_HOST,
        Node::SpokeC => SPOKE_C_LAN_HOST,
        Node::Hub | Node::Hub2 => unreachable!("no LAN host behind the hubs here"),
    }
}

fn nbma(node: Node) -> &'static str {
    match node {
        Node::SpokeA => SPOKE_A_NBMA,
        Node::SpokeC => SPOKE_C_NBMA,
        other => unreachable!("{} is not checked for a direct path", other.name()),
    }
}

fn lan_ns(t: &Topology, node: Node) -> &Netns {
    match node {
        Node::SpokeA => &t.lan_a,
        Node::SpokeB => &t.lan_b,
        Node::SpokeC => &t.lan_c,
        Node::Hub | Node::Hub2 => &t.lan_hub,
    }
}

/// The e2e configuration without static routes; the spokes list hub 2 as a second NHS.
fn config(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    let c = e2e_config(dir, node, keys);
    adapt_config(&c).unwrap_or_else(|e| panic!("adapting {}: {e:#}", node.name()));
    if SPOKES.contains(&node) {
        edit_config(&c.config, |t| {
            let nhrp = table(t, "nhrp");
            let mut second = toml::Table::new();
            second.insert("address".into(), HUB2_TUNNEL.into());
            second.insert("nbma".into(), HUB2_NBMA.into());
            second.insert("multicast".into(), true.into());
            second.insert("priority".into(), toml::Value::Integer(1));
            nhrp.get_mut("nhs")
                .and_then(toml::Value::as_array_mut)
                .expect("[[nhrp.nhs]]")
                .push(toml::Value::Table(second));
        });
    }
    let text = std::fs::read_to_string(&c.config).unwrap();
    assert!(
        !text.lines().any(|l| l.trim() == "[[route]]"),
        "{} still has static routes:\n{text}",
        c.config.display()
    );
    c
}

fn settings(node: Node) -> BgpSettings {
    let (listen_range, neighbors, networks) = match node {
        Node::Hub => (
            Some("10.250.0.0/24".to_owned()),
            vec![(HUB2_NBMA.to_owned(), Some(HUB_NBMA.to_owned()))],
            vec![],
        ),
        Node::Hub2 => (
            Some("10.250.0.0/24".to_owned()),
            vec![(HUB_NBMA.to_owned(), Some(HUB2_NBMA.to_owned()))],
            vec![],
        ),
        spoke => (
            None,
            vec![
                (HUB_TUNNEL.to_owned(), None),
                (HUB2_TUNNEL.to_owned(), None),
            ],
            vec![lan(spoke).to_owned()],
        ),
    };
    BgpSettings {
        hostname: node.name().to_owned(),
        router_id: node.tunnel_address().to_owned(),
        keepalive: KEEPALIVE,
        hold: HOLD,
        listen_range,
        neighbors,
        networks,
    }
}

/// The sessions each router must have: a spoke both hubs' tunnel addresses, a hub the three
/// spokes (dynamic neighbors) and the other hub's underlay address.
fn wanted_peers(node: Node) -> Vec<&'static str> {
    match node {
        Node::Hub => vec![SPOKE_A_TUNNEL, "10.250.0.10", SPOKE_C_TUNNEL, HUB2_NBMA],
        Node::Hub2 => vec![SPOKE_A_TUNNEL, "10.250.0.10", SPOKE_C_TUNNEL, HUB_NBMA],
        _ => vec![HUB_TUNNEL, HUB2_TUNNEL],
    }
}

fn session_state(s: &Scenario<'_>, node: Node) -> Result<Vec<Session>, String> {
    sessions(s.frr(node)).map_err(|e| format!("{}: {e:#}", node.name()))
}

/// Sessions of `nodes` not Established (to peers in `wanted_peers`).
fn missing_sessions(s: &Scenario<'_>, nodes: &[Node]) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    for &node in nodes {
        let got = session_state(s, node)?;
        for w in wanted_peers(node) {
            if !got.iter().any(|x| x.peer == w && x.is_established()) {
                let st = got.iter().find(|x| x.peer == w).map(|x| x.state.as_str());
                missing.push(format!("{} → {w}: {st:?}", node.name()));
            }
        }
    }
    Ok(missing)
}

/// The kernel route of `ns` for exactly `prefix` out of the tunnel with protocol `proto`.
fn route(ns: &Netns, proto: &str, prefix: &str) -> Option<Value> {
    routes_with_proto(ns, proto)
        .ok()?
        .into_iter()
        .find(|r| r["dst"].as_str() == Some(prefix) && r["dev"].as_str() == Some(TUNNEL_IF))
}

/// Each spoke's kernel route to every other spoke's LAN, which must be out of the tunnel via
/// that spoke's tunnel address with one of `protos` ("bgp"; once shortcuts exist also "77":
/// zebra then withdraws its BGP route from the kernel in favour of dmvpnd's, as with OSPF):
/// (spoke, prefix, route) of each, or what is wrong.
fn check_lan_routes(
    t: &Topology,
    protos: &[&str],
) -> Result<Vec<(Node, &'static str, Value)>, String> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for spoke in SPOKES {
        for other in SPOKES.into_iter().filter(|&o| o != spoke) {
            let prefix = lan(other);
            let via = other.tunnel_address();
            let found = protos.iter().find_map(|p| route(spoke.netns(t), p, prefix));
            match found {
                Some(r) if r["gateway"].as_str() == Some(via) => good.push((spoke, prefix, r)),
                r => bad.push(format!(
                    "{}: {prefix} via {via} proto {protos:?}, have {r:?}",
                    spoke.name()
                )),
            }
        }
    }
    bad.is_empty().then_some(good).ok_or(format!("{bad:?}"))
}

/// Whether zebra on `node` holds a BGP route for `prefix` via `via` (selected or not).
fn rib_has_bgp(s: &Scenario<'_>, node: Node, prefix: &str, via: &str) -> Result<(), String> {
    let rib = s
        .frr(node)
        .vtysh_json(&format!("show ip route {prefix} json"))
        .map_err(|e| format!("{e:#}"))?;
    let ok = rib[prefix].as_array().into_iter().flatten().any(|e| {
        e["protocol"] == "bgp"
            && e["nexthops"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["ip"] == via)
    });
    ok.then_some(()).ok_or(format!("{}: {rib}", node.name()))
}

/// The longest run of unanswered echoes in a stream of `count` (`icmp_seq` 1..=count).
fn longest_gap(answered: &[u32], count: u32) -> u32 {
    let (mut longest, mut run) = (0, 0);
    for seq in 1..=count {
        if answered.contains(&seq) {
            run = 0;
        } else {
            run += 1;
            longest = longest.max(run);
        }
    }
    longest
}

/// `ping -c STREAM -i STREAM_INTERVAL` from `ns` to `dst`: the answered sequence numbers.
fn stream(ns: &Netns, dst: &str) -> Vec<u32> {
    let count = STREAM.to_string();
    let interval = STREAM_INTERVAL.to_string();
    ns.exec(
        "ping",
        &["-n", "-c", &count, "-i", &interval, "-W", "1", dst],
    )
    .map(|o| answered_echoes(&String::from_utf8_lossy(&o.stdout)))
    .unwrap_or_default()
}

#[test]
fn bgp_route_reflectors_on_two_hubs_keep_spoke_next_hops_for_shortcuts_and_survive_a_hub() {
    require_root_and_tools();
    require_bgpd();
    cleanup_stale().expect("removing stale FRR run directories");
    let dir = TestDir::new("bgp").unwrap();
    let t = Topology::new().expect("building the topology");
    let k = keys();
    let nodes = [
        Node::Hub,
        Node::Hub2,
        Node::SpokeA,
        Node::SpokeB,
        Node::SpokeC,
    ];
    let cfgs = nodes.map(|n| config(&dir, n, &k));
    let mut s = start_hub_then_spokes("bgp", &t, &cfgs);

    s.step("0. the three spokes register with both hubs");
    for spoke in SPOKES {
        s.wait_registered(spoke, 0, 0);
        s.eventually(
            &format!("{} registered with hub 2", spoke.name()),
            REGISTRATION_TIMEOUT,
            |s| {
                let v = s.show_json(spoke, "nhrp");
                let up = v["nhs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|n| n["nbma"] == HUB2_NBMA)
                    .map(|n| n["status"].clone());
                (up.as_ref().and_then(Value::as_str) == Some("UP"))
                    .then_some(())
                    .ok_or(format!("{up:?}"))
            },
        );
    }

    s.step("1. without BGP no spoke routes another spoke's LAN into the tunnel");
    for spoke in SPOKES {
        for other in SPOKES.into_iter().filter(|&o| o != spoke) {
            let rt = route_get(spoke.netns(&t), lan_host(other));
            if rt["dev"].as_str() == Some(TUNNEL_IF) {
                s.fail(format!(
                    "{} routes {} into the tunnel before BGP runs: {rt}",
                    spoke.name(),
                    lan_host(other)
                ));
            }
        }
    }

    s.step("2. start zebra + bgpd on both hubs (route reflectors) and the three spokes");
    for node in nodes {
        let settings = settings(node);
        s.start_frr_with(node, |ns| start(ns, node.name(), dir.path(), &settings));
    }
    let frr_started = Instant::now();

    s.step("3. every spoke's sessions to both hubs, and the hubs' to each other, Established");
    s.eventually("BGP sessions Established", SESSION_TIMEOUT, |s| {
        let missing = missing_sessions(s, &nodes)?;
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("{missing:?}"))
    });
    s.note(format!(
        "all 7 sessions (3 spokes × 2 hubs, hub ↔ hub 2) Established at both ends {:.1} s after FRR started",
        frr_started.elapsed().as_secs_f32()
    ));

    s.step("4. each spoke has the other spokes' LANs, next hop = that spoke's tunnel address");
    let good = s.eventually("BGP routes in the spokes' kernels", ROUTE_TIMEOUT, |_| {
        check_lan_routes(&t, &["bgp"])
    });
    s.note(format!(
        "all 6 spoke LAN routes in the kernels {:.1} s after FRR started",
        frr_started.elapsed().as_secs_f32()
    ));
    for (spoke, prefix, r) in &good {
        s.note(format!("{}: {prefix}: {r}", spoke.name()));
    }
    // The hubs route each spoke's LAN to that spoke (for the traffic they carry until a
    // shortcut forms).
    for hub in HUBS {
        for spoke in SPOKES {
            let what = format!(
                "{}: {} via {}",
                hub.name(),
                lan(spoke),
                spoke.tunnel_address()
            );
            s.poll(&what, ROUTE_TIMEOUT, |_| {
                route(hub.netns(&t), "bgp", lan(spoke))
                    .filter(|r| r["gateway"].as_str() == Some(spoke.tunnel_address()))
            });
        }
    }

    for spoke in SPOKES {
        let rs = shortcuts(spoke.netns(&t));
        if !rs.is_empty() {
            s.fail(format!(
                "{} has shortcuts before any spoke-to-spoke traffic: {rs:?}",
                spoke.name()
            ));
        }
    }

    s.step("5. LAN A → LAN B and LAN C; the first echo crosses hub 1");
    // dmvpnd hands its NHRP engine the routing table every housekeeping tick (2 s): a
    // resolution the hub forwards by a BGP route younger than that is refused (code 12).
    std::thread::sleep(Duration::from_secs(3));
    let hub_tun0 = s.counters(&t.hub, TUNNEL_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_C_LAN_HOST, 1, "1").unwrap();
    let (hub_rx, hub_tx) = s.counters(&t.hub, TUNNEL_IF).since(&hub_tun0);
    if got != 1 || hub_rx < 1 || hub_tx < 1 {
        s.fail(format!(
            "first echo A → C: {got}/1 answered, hub {TUNNEL_IF} rx +{hub_rx} tx +{hub_tx} (≥ 1 each)\n{out}"
        ));
    }
    // The hub redirects both ends (the echo and its reply each cross it), so A and C resolve
    // each other at once and both initiate IKE. dmvpnd's INITIAL_CONTACT handling can then
    // leave each side sending on an SA the other dropped, until the INVALID_SPI hint brings a
    // new one (seconds): the echoes are awaited with a bound, and the crossing is reported.
    for other in [Node::SpokeB, Node::SpokeC] {
        let from = Instant::now();
        let what = format!("LAN A → LAN {} answered again", other.name());
        s.poll(&what, ROUTE_TIMEOUT, |_| {
            let (got, _) = ping(&t.lan_a, lan_host(other), 3, "0.2").ok()?;
            (got == 3).then_some(())
        });
        s.note(format!(
            "LAN A → {} LAN: 3 of 3 echoes answered {:.1} s after the first",
            other.name(),
            from.elapsed().as_secs_f32()
        ));
    }
    for node in [Node::SpokeA, Node::SpokeC] {
        let hints = s.lines(node, 0, &|l| l.contains("ESP for an unknown SPI"));
        if !hints.is_empty() {
            s.note(format!(
                "{}: {} ESP packets on an SPI it did not have while the A ↔ C SAs came up (crossed initiations); first: {}",
                node.name(),
                hints.len(),
                hints[0]
            ));
        }
    }

    s.step("6. the hub's redirect leads to a spoke-to-spoke path A ↔ C (NHRP resolution)");
    // Each side ends up with a shortcut route (proto 77) toward the other, or at least the
    // NHRP mapping of the other's tunnel address (the BGP next hop): either sends A ↔ C
    // traffic straight to the other spoke. When both resolutions cross, one of them may be
    // refused (code 12); the other side's reply still leaves the mapping (docs/bgp.md).
    let shortcut_from = Instant::now();
    let direct = |s: &Scenario<'_>, node: Node, peer: Node| -> Option<String> {
        let targets = [lan_host(peer), peer.tunnel_address()];
        if let Some(r) = shortcut_route(node.netns(&t), &targets) {
            return (r["gateway"].as_str() == Some(peer.tunnel_address()))
                .then(|| format!("shortcut route {r}"));
        }
        s.nhrp_entry(node, peer.tunnel_address())
            .filter(|e| e["nbma"] == nbma(peer) && e["kind"] == "dynamic")
            .map(|e| format!("NHRP mapping only (no proto 77 route) {e}"))
    };
    let (via_a, via_c) = s.eventually(
        "spoke-to-spoke paths A → C and C → A",
        ROUTE_TIMEOUT,
        |s| {
            let a = direct(s, Node::SpokeA, Node::SpokeC);
            let c = direct(s, Node::SpokeC, Node::SpokeA);
            if let (Some(a), Some(c)) = (&a, &c) {
                return Ok((a.clone(), c.clone()));
            }
            let _ = ping(&t.lan_a, SPOKE_C_LAN_HOST, 1, "1");
            let _ = ping(&t.lan_c, SPOKE_A_LAN_HOST, 1, "1");
            Err(format!("spoke A: {a:?}, spoke C: {c:?}"))
        },
    );
    s.note(format!(
        "after {:.1} s: spoke A → C: {via_a}; spoke C → A: {via_c}",
        shortcut_from.elapsed().as_secs_f32()
    ));
    for (node, peer) in [(Node::SpokeA, Node::SpokeC), (Node::SpokeC, Node::SpokeA)] {
        let e = s.nhrp_entry(node, peer.tunnel_address());
        s.note(format!(
            "{} NHRP entry for {}: {e:?}",
            node.name(),
            peer.name()
        ));
    }

    s.step("7. LAN A → LAN C flows directly: neither hub's underlay carries it");
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_C_LAN_HOST);
    let hub_rx0 = HUBS.map(|h| s.counters(h.netns(&t), WAN_IF));
    let c_wan0 = s.counters(&t.spoke_c, WAN_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_C_LAN_HOST, 100, "0.01").unwrap();
    let hub_rx: Vec<u64> = HUBS
        .iter()
        .zip(&hub_rx0)
        .map(|(h, c0)| s.counters(h.netns(&t), WAN_IF).since(c0).0)
        .collect();
    let (c_rx, c_tx) = s.counters(&t.spoke_c, WAN_IF).since(&c_wan0);
    s.note(format!(
        "100 echoes A LAN → C LAN: hub {WAN_IF} rx +{}, hub 2 {WAN_IF} rx +{}, spoke C {WAN_IF} rx +{c_rx} tx +{c_tx}",
        hub_rx[0], hub_rx[1]
    ));
    if got != 100 {
        s.fail(format!("direct path lost echoes ({got}/100):\n{out}"));
    }
    // Through a hub it would be ≥ 200; allow BGP keepalives, DPD, NAT keepalives, ARP.
    if hub_rx.iter().any(|&rx| rx > 20) {
        s.fail(format!(
            "A → C still crosses a hub: hub {WAN_IF} rx +{hub_rx:?} (≤ 20 allowed)"
        ));
    }
    if c_rx < 100 || c_tx < 100 {
        s.fail(format!(
            "spoke C's underlay did not carry the echoes: rx +{c_rx} tx +{c_tx}"
        ));
    }

    s.step("8. hub 1 dies (dmvpnd SIGKILL, FRR stopped): BGP via hub 2 keeps the routes");
    // B ↔ C has exchanged no traffic: its stream, started at the kill, goes through the
    // preferred NHS (the dead hub 1) until DPD moves spoke B to hub 2.
    if let Some(r) = shortcut_route(&t.spoke_b, &[SPOKE_C_LAN_HOST, SPOKE_C_TUNNEL]) {
        s.fail(format!("spoke B already has a shortcut toward C: {r}"));
    }
    let (a_to_b, a_to_c, b_to_c, killed_at, sessions_down) = std::thread::scope(|scope| {
        let b = scope.spawn(|| stream(&t.lan_a, SPOKE_B_LAN_HOST));
        let c = scope.spawn(|| stream(&t.lan_a, SPOKE_C_LAN_HOST));
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        s.kill(Node::Hub);
        s.stop_frr(Node::Hub);
        let bc = scope.spawn(|| stream(&t.lan_b, SPOKE_C_LAN_HOST));
        let killed_at = 2.0;
        // The spokes' sessions to hub 1 go down within the hold time; those to hub 2 stay.
        let hold = Duration::from_secs(u64::from(HOLD) + 5);
        let down = s.eventually("the spokes' sessions to hub 1 down", hold, |s| {
            for spoke in SPOKES {
                let got = session_state(s, spoke)?;
                let hub = got.iter().find(|x| x.peer == HUB_TUNNEL);
                if hub.is_some_and(Session::is_established) {
                    return Err(format!("{}: {hub:?}", spoke.name()));
                }
            }
            Ok(started.elapsed())
        });
        let (b, c, bc) = (b.join().unwrap(), c.join().unwrap(), bc.join().unwrap());
        (b, c, bc, killed_at, down)
    });
    s.note(format!(
        "hub 1 killed {killed_at:.1} s into the streams; the spokes' sessions to it down after {sessions_down:.1?}"
    ));
    let missing = missing_sessions(&s, &[Node::SpokeA, Node::SpokeB, Node::SpokeC])
        .unwrap_or_else(|e| s.fail(e));
    let via_hub2: Vec<&String> = missing.iter().filter(|m| m.contains(HUB2_TUNNEL)).collect();
    if !via_hub2.is_empty() {
        s.fail(format!("sessions to hub 2 lost: {via_hub2:?}"));
    }
    for (name, answered) in [
        ("A → B (shortcut)", &a_to_b),
        ("A → C (shortcut)", &a_to_c),
        ("B → C (no shortcut, started at the kill)", &b_to_c),
    ] {
        let gap = longest_gap(answered, STREAM);
        let outage = gap as f32 * STREAM_INTERVAL;
        s.note(format!(
            "stream {name} (LAN hosts, {STREAM} echoes every {STREAM_INTERVAL} s): {} answered, longest outage {gap} echoes ≈ {outage:.1} s",
            answered.len()
        ));
        // The end of the stream (well past the hold time) must be answered throughout.
        let tail = (STREAM - 30 + 1..=STREAM)
            .filter(|q| !answered.contains(q))
            .count();
        if tail > 0 {
            s.fail(format!("{name}: {tail} of the last 30 echoes unanswered"));
        }
        // DPD (3 s + 5 × 1 s) bounds how long a spoke keeps sending through the dead hub.
        if outage > 15.0 {
            s.fail(format!("{name}: outage {outage:.1} s (≤ 15 s allowed)"));
        }
    }
    let good = s.eventually(
        "the spoke LAN routes after hub 1's death",
        SETTLE_TIMEOUT,
        |_| check_lan_routes(&t, &["bgp", PROTO_DMVPND]),
    );
    for (spoke, prefix, r) in &good {
        s.note(format!(
            "{} after hub 1's death: {prefix}: {r}",
            spoke.name()
        ));
    }
    // With hub 1's sessions gone, zebra's BGP routes are hub 2's reflections.
    s.eventually(
        "BGP routes from hub 2 in every spoke's RIB",
        SETTLE_TIMEOUT,
        |s| {
            for spoke in SPOKES {
                for other in SPOKES.into_iter().filter(|&o| o != spoke) {
                    rib_has_bgp(s, spoke, lan(other), other.tunnel_address())?;
                }
            }
            Ok(())
        },
    );
    for (from, to) in [
        (Node::SpokeA, Node::SpokeB),
        (Node::SpokeA, Node::SpokeC),
        (Node::SpokeC, Node::SpokeB),
    ] {
        s.reach(lan_ns(&t, from), from.name(), lan_host(to));
    }
    s.check_alive();
    s.note(format!("passed in {:.1} s", s.elapsed().as_secs_f32()));
    s.finish();
}
