//! Graceful shutdown (issue 6, item 5): SIGTERM to a spoke makes it purge its registration and
//! delete its SA (the hub sees both at once, without DPD), exit 0 and leave no device, route or
//! control socket behind (topology in `dmvpn_tests::e2e`).
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{
    HUB_TUNNEL, Node, SPOKE_A_NBMA, SPOKE_A_TUNNEL, TUNNEL_IF, TestDir, Topology, route_dump,
    routes_with_proto,
};
use dmvpn_tests::scenario::{PROTO_DMVPND, SETTLE_TIMEOUT, expect, ops_config, start_registered};
use dmvpn_tests::{Netns, require_root_and_tools};

/// Whether `ip -j link show` in `ns` lists `dev`.
fn has_link(ns: &Netns, dev: &str) -> Result<bool, String> {
    let v = ns
        .ip_json(&["link", "show"])
        .map_err(|e| format!("{e:#}"))?;
    Ok(v.as_array()
        .is_some_and(|a| a.iter().any(|l| l["ifname"] == dev)))
}

#[test]
fn sigterm_purges_the_registration_deletes_the_sa_and_leaves_nothing_behind() {
    require_root_and_tools();
    let dir = TestDir::new("ops-term").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, cfgs) = start_registered("ops", &t, &dir, &[Node::SpokeA], ops_config);
    let socket = cfgs[1].socket.clone();
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);

    s.step("before: spoke A has its device, proto-77 routes and control socket");
    s.eventually("spoke A's device, routes and socket", SETTLE_TIMEOUT, |_| {
        let routes = routes_with_proto(&t.spoke_a, PROTO_DMVPND).unwrap_or_default();
        let link = has_link(&t.spoke_a, TUNNEL_IF);
        if link != Ok(true) || routes.is_empty() || !socket.exists() {
            return Err(format!(
                "{TUNNEL_IF} {link:?}, proto {PROTO_DMVPND} routes {routes:?}, socket {} exists {}",
                socket.display(),
                socket.exists()
            ));
        }
        Ok(())
    });

    s.step("SIGTERM spoke A: it exits 0 and the hub sees the purge and the delete at once");
    let from = s.log_len(Node::Hub);
    let sent = Instant::now();
    let status = s.terminate(Node::SpokeA, Duration::from_secs(10));
    let exited = sent.elapsed();
    match &status {
        Ok(st) if st.code() == Some(0) => {}
        other => s.fail(format!(
            "dmvpnd (spoke A) after SIGTERM: {other:?} (want exit status 0)"
        )),
    }
    // All three lines within 2 s of the signal ("at once"); each is looked for at least once.
    let within = Duration::from_secs(2);
    let removed = s.wait_line(
        Node::Hub,
        "NHRP registration removed peer=10.250.0.9",
        from,
        within.saturating_sub(sent.elapsed()),
        &|l| expect::registration_removed(l, SPOKE_A_TUNNEL),
    );
    let down = s.wait_line(
        Node::Hub,
        "IKE SA down peer=198.51.100.3 … reason=deleted_by_peer",
        from,
        within.saturating_sub(sent.elapsed()),
        &|l| expect::ike_sa_down(l, SPOKE_A_NBMA),
    );
    let child = s.wait_line(
        Node::Hub,
        "child SA deleted peer=198.51.100.3",
        from,
        within.saturating_sub(sent.elapsed()),
        &|l| expect::child_sa_deleted(l, SPOKE_A_NBMA),
    );
    let seen = sent.elapsed();
    if expect::field(&down, "reason") != Some("deleted_by_peer") {
        s.fail(format!(
            "the hub's IKE SA with spoke A went down for another reason: {down}"
        ));
    }
    s.no_line(
        Node::Hub,
        from,
        "DPD instead of the delete",
        &expect::peer_dead,
    );
    s.note(format!(
        "spoke A exited {exited:?} after SIGTERM; hub saw it by {seen:?}:\n  {removed}\n  {down}\n  {child}"
    ));

    s.step("after: no device, no proto-77 route, no socket on spoke A; the hub forgot it");
    match has_link(&t.spoke_a, TUNNEL_IF) {
        Ok(false) => {}
        other => s.fail(format!(
            "{TUNNEL_IF} left behind in spoke A's namespace (listed: {other:?})"
        )),
    }
    let routes =
        routes_with_proto(&t.spoke_a, PROTO_DMVPND).unwrap_or_else(|e| s.fail(format!("{e:#}")));
    if !routes.is_empty() {
        s.fail(format!(
            "proto {PROTO_DMVPND} routes left behind on spoke A: {routes:?}\n{}",
            route_dump(&t.spoke_a)
        ));
    }
    if socket.exists() {
        s.fail(format!(
            "spoke A's control socket {} left behind",
            socket.display()
        ));
    }
    s.eventually("the hub forgets spoke A", SETTLE_TIMEOUT, |s| {
        if let Some(e) = s.nhrp_entry(Node::Hub, SPOKE_A_TUNNEL) {
            return Err(format!("the hub's NHRP cache still holds spoke A: {e:#}"));
        }
        if let Some(p) = s.sa_peer(Node::Hub, SPOKE_A_NBMA) {
            return Err(format!("the hub's show sa still lists spoke A: {p:#}"));
        }
        Ok(())
    });
    s.check_alive();
}
