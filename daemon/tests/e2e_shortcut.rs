//! End-to-end (issue 5, item 7): spoke-to-spoke traffic first crosses the hub, whose redirect
//! leads to NHRP shortcut routes (proto 77) on both spokes; then it flows directly and the hub's
//! counters stop growing (spoke B behind the NAT; topology in `dmvpn_tests::e2e`).
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::Duration;

use dmvpn_tests::e2e::{
    HUB_LAN_HOST, Node, SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL, SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL,
    TUNNEL_IF, TestDir, Topology, WAN_IF, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{e2e_config, shortcuts, start_registered};

#[test]
fn spoke_to_spoke_traffic_is_redirected_onto_a_direct_shortcut() {
    require_root_and_tools();
    let dir = TestDir::new("shortcut").unwrap();
    let t = Topology::new().expect("building the topology");
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, _) = start_registered("e2e", &t, &dir, &spokes, e2e_config);

    s.step("2. each spoke's LAN reaches the hub's LAN over the tunnel");
    s.reach(&t.lan_a, "spoke A LAN host", HUB_LAN_HOST);
    s.reach(&t.lan_b, "spoke B LAN host", HUB_LAN_HOST);

    s.step("3. the first spoke-to-spoke packet crosses the hub");
    for (ns, name) in [(&t.spoke_a, "spoke A"), (&t.spoke_b, "spoke B")] {
        let rs = shortcuts(ns);
        if !rs.is_empty() {
            s.fail(format!(
                "{name} has shortcut routes before any spoke-to-spoke traffic: {rs:?}"
            ));
        }
    }
    let hub_tun0 = s.counters(&t.hub, TUNNEL_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "1").unwrap();
    let (hub_rx, hub_tx) = s.counters(&t.hub, TUNNEL_IF).since(&hub_tun0);
    if got != 1 {
        s.fail(format!(
            "first echo {SPOKE_A_LAN_HOST} → {SPOKE_B_LAN_HOST} unanswered:\n{out}"
        ));
    }
    if hub_rx < 1 || hub_tx < 1 {
        s.fail(format!(
            "the first echo did not cross the hub: hub {TUNNEL_IF} rx +{hub_rx}, tx +{hub_tx}"
        ));
    }

    s.step("4. the hub's redirect leads to shortcut routes (proto 77) on both spokes");
    let (route_a, route_b) = s.wait_shortcuts(
        &[SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL],
        &[SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL],
        Duration::from_secs(20),
    );
    s.note(format!(
        "shortcut on spoke A {route_a}, on spoke B {route_b}"
    ));

    s.step("5. spoke-to-spoke traffic flows directly: the hub's counters stop growing");
    // Let packets in flight and the resolution exchange settle: the first direct echo proves
    // the path before the measurement starts.
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    let hub_wan0 = s.counters(&t.hub, WAN_IF);
    let hub_tun0 = s.counters(&t.hub, TUNNEL_IF);
    let a_wan0 = s.counters(&t.spoke_a, WAN_IF);
    let (got, out) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 100, "0.01").unwrap();
    let (wan_rx, _) = s.counters(&t.hub, WAN_IF).since(&hub_wan0);
    let (tun_rx, tun_tx) = s.counters(&t.hub, TUNNEL_IF).since(&hub_tun0);
    let (a_rx, a_tx) = s.counters(&t.spoke_a, WAN_IF).since(&a_wan0);
    s.note(format!(
        "100 echoes A LAN → B LAN: hub {WAN_IF} rx +{wan_rx}, hub {TUNNEL_IF} rx +{tun_rx} tx +{tun_tx}, spoke A {WAN_IF} rx +{a_rx} tx +{a_tx}"
    ));
    if got != 100 {
        s.fail(format!(
            "direct path lost echoes ({got}/100 answered):\n{out}"
        ));
    }
    // 200 packets would cross the hub on the hub path; allow a few unrelated ones (DPD, ARP,
    // NAT keepalives), none of them transit packets.
    if wan_rx > 10 || tun_rx > 0 || tun_tx > 0 {
        s.fail(format!(
            "traffic still crosses the hub after the shortcut: hub {WAN_IF} rx +{wan_rx} (≤ 10 allowed), {TUNNEL_IF} rx +{tun_rx} tx +{tun_tx} (0 allowed)"
        ));
    }
    if a_tx < 100 || a_rx < 100 {
        s.fail(format!(
            "spoke A's underlay did not carry the echoes: rx +{a_rx} tx +{a_tx}"
        ));
    }

    s.step("6. ping spoke ↔ spoke tunnel addresses and LAN B → LAN A");
    s.reach(&t.spoke_a, "spoke A", SPOKE_B_TUNNEL);
    s.reach(&t.spoke_b, "spoke B", SPOKE_A_TUNNEL);
    s.reach(&t.lan_b, "spoke B LAN host", SPOKE_A_LAN_HOST);

    s.step("no daemon logged an error");
    s.check_no_errors();
    s.check_alive();
    s.finish();
}
