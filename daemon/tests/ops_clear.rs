//! `dmvpnctl clear sa`, `clear child-sa` and `clear nhrp` against running daemons (issue 6,
//! item 5; issue 14, item 3): an unknown peer is refused with a message, a cleared SA comes
//! back with new SPIs, cleared Child SAs come back through an IKE SA the hub initiates for its
//! traffic, cleared NHRP entries come back as the spokes re-register (topology in
//! `dmvpn_tests::e2e`).
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, Keys, NAT_OUTSIDE, Node, NodeConfig, SPOKE_A_NBMA, SPOKE_A_TUNNEL,
    SPOKE_B_TUNNEL, TestDir, Timers, Topology, ping, write_config_with,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::show::{json_spis, strs};
use dmvpn_tests::scenario::{
    HOLDING_TIME, REGISTRATION_TIMEOUT, SETTLE_TIMEOUT, Scenario, expect, ops_config,
    start_registered,
};

/// An address no node has, for `clear sa` of an unknown peer (TEST-NET-3).
const NO_PEER: &str = "203.0.113.99";

#[test]
fn clear_sa_of_an_unknown_peer_fails_with_a_message() {
    require_root_and_tools();
    let dir = TestDir::new("ops-clear-none").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, _) = start_registered("ops", &t, &dir, &[Node::SpokeA], ops_config);

    s.step("clear sa 203.0.113.99 (no such peer) fails with a message");
    let c = s.ctl(Node::Hub, &["clear", "sa", NO_PEER]);
    if c.code != Some(1)
        || !c.stdout.is_empty()
        || !c
            .stderr
            .contains(&format!("dmvpnctl: no IKE SA with {NO_PEER}"))
    {
        s.fail(format!(
            "want exit 1 and `dmvpnctl: no IKE SA with {NO_PEER}`: {c}"
        ));
    }
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.check_alive();
}

#[test]
fn clear_sa_brings_the_spoke_back_with_new_spis() {
    require_root_and_tools();
    let dir = TestDir::new("ops-clear-sa").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, _) = start_registered("ops", &t, &dir, &[Node::SpokeA], ops_config);
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    let old_in = s.eventually("spoke A's Child SA on the hub", SETTLE_TIMEOUT, |s| {
        let p = s.sa_peer(Node::Hub, SPOKE_A_NBMA);
        let (i, _) = p.as_ref().map(json_spis).unwrap_or_default();
        if i.is_empty() {
            return Err(format!("show sa --json peer {SPOKE_A_NBMA}: {p:?}"));
        }
        Ok(i)
    });

    // show dmvpn's UpDn for spoke A on the hub, once it has counted a few seconds.
    let updn = |s: &dmvpn_tests::scenario::Scenario<'_>| {
        let d = s.show_json(Node::Hub, "dmvpn");
        d["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer_nbma"] == SPOKE_A_NBMA && p["state"] == "UP")
            .and_then(|p| p["updn_secs"].as_u64())
    };
    s.poll("spoke A UP for 3 s in show dmvpn", SETTLE_TIMEOUT, |s| {
        updn(s).filter(|u| *u >= 3)
    });

    s.step("clear sa 198.51.100.3 on the hub: the spoke comes back with new SPIs");
    let cleared = std::time::Instant::now();
    let (hub_from, spoke_from) = (s.log_len(Node::Hub), s.log_len(Node::SpokeA));
    let out = s.ctl_ok(Node::Hub, &["clear", "sa", SPOKE_A_NBMA]);
    if out.trim() != format!("IKE SA with {SPOKE_A_NBMA} deleted") {
        s.fail(format!("clear sa printed {out:?}"));
    }
    s.wait_line(
        Node::SpokeA,
        "IKE SA down … deleted_by_peer",
        spoke_from,
        Duration::from_secs(5),
        &|l| {
            expect::ike_sa_down(l, HUB_NBMA)
                && expect::field(l, "reason") == Some("deleted_by_peer")
        },
    );
    let new_in = s.poll(
        "spoke A's new Child SA on the hub (show sa --json)",
        REGISTRATION_TIMEOUT,
        |s| {
            let p = s.sa_peer(Node::Hub, SPOKE_A_NBMA)?;
            let (i, _) = json_spis(&p);
            (p["ike"]["state"] == "established" && !i.is_empty() && i.is_disjoint(&old_in))
                .then_some(i)
        },
    );
    s.wait_registered(Node::SpokeA, spoke_from, hub_from);
    s.note(format!(
        "spoke A's inbound SPIs on the hub {old_in:?} → {new_in:?}"
    ));
    // UpDn counts from the SA that came back, not from before the clear (show dmvpn was not
    // asked while the spoke was down, so only the recorded change can tell).
    let since_clear = cleared.elapsed().as_secs();
    let now_updn = s.poll("spoke A UP again in show dmvpn", SETTLE_TIMEOUT, updn);
    s.note(format!(
        "UpDn {now_updn} s, {since_clear} s after the clear"
    ));
    if now_updn > since_clear + 1 {
        s.fail(format!(
            "show dmvpn UpDn {now_updn} s did not restart at the clear {since_clear} s ago"
        ));
    }
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
    s.check_alive();
}

#[test]
fn clear_nhrp_drops_the_entries_and_the_spokes_register_again() {
    require_root_and_tools();
    let dir = TestDir::new("ops-clear-nhrp").unwrap();
    let t = Topology::new().expect("building the topology");
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, _) = start_registered("ops", &t, &dir, &spokes, ops_config);

    s.step("clear nhrp on the hub: the entries go, then come back as the spokes re-register");
    let hub_from = s.log_len(Node::Hub);
    let out = s.ctl_ok(Node::Hub, &["clear", "nhrp"]);
    let cleared = out
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok());
    if cleared.is_none_or(|n| n < 2) || !out.contains("dynamic NHRP entries cleared") {
        s.fail(format!(
            "clear nhrp printed {out:?} (want ≥ 2 entries cleared)"
        ));
    }
    let cleared_at = Instant::now();
    for tunnel in [SPOKE_A_TUNNEL, SPOKE_B_TUNNEL] {
        s.wait_line(
            Node::Hub,
            &format!("NHRP registration removed peer={tunnel}"),
            hub_from,
            Duration::from_secs(10),
            &|l| expect::registration_removed(l, tunnel),
        );
        // Gone from the cache, unless the spoke registered again in between (the cache is read
        // before the log, so a re-registration that put the entry back has been logged).
        let what = format!("{tunnel} gone from the hub's cache after clear nhrp");
        s.eventually(&what, SETTLE_TIMEOUT, |s| {
            let Some(e) = s.nhrp_entry(Node::Hub, tunnel) else {
                return Ok(());
            };
            let back = s.lines(Node::Hub, hub_from, &|l| {
                expect::registration_accepted(l, tunnel)
            });
            if back.is_empty() {
                return Err(format!("still in the cache, not registered again: {e:#}"));
            }
            Ok(())
        });
    }
    for tunnel in [SPOKE_A_TUNNEL, SPOKE_B_TUNNEL] {
        let e = s.poll(
            &format!("{tunnel} back in the hub's NHRP cache, registered"),
            Duration::from_secs(HOLDING_TIME / 3 + 5),
            |s| {
                s.nhrp_entry(Node::Hub, tunnel)
                    .filter(|e| strs(&e["flags"]).contains(&"registered"))
            },
        );
        s.note(format!(
            "{tunnel} re-registered {:?} after clear nhrp: {e}",
            cleared_at.elapsed()
        ));
    }
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
    s.reach(&t.hub, "hub", SPOKE_B_TUNNEL);
    s.check_alive();
}

/// The example configurations with addresses changed and nothing shortened: the spoke's
/// registration refresh (a third of the default holding time) does not come during the test,
/// so nothing but the hub's own traffic brings a new SA.
fn quiet_spoke_config(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    write_config_with(dir.path(), node, keys, Timers::default())
        .unwrap_or_else(|e| panic!("generating the {} configuration: {e:#}", node.name()))
}

/// The only IKE SA `node` has with the peer at `nbma`, if it is established, carries a Child
/// SA and is not the one whose initiator SPI is `not`.
fn one_with_children(
    s: &Scenario<'_>,
    node: Node,
    nbma: &str,
    not: &str,
) -> Result<serde_json::Value, String> {
    let sas = s.ike_sas(node, nbma);
    match sas.as_slice() {
        [sa] if sa["spi_i"] != not
            && sa["state"] == "established"
            && sa["child_count"].as_u64() >= Some(1) =>
        {
            Ok(sa.clone())
        }
        _ => Err(format!("{sas:?}")),
    }
}

/// `clear child-sa` on the hub (IOS's `clear crypto sa peer`): the Child SAs with a spoke go
/// at both ends, the IKE SA and the registration stay. The spoke is idle; the hub has traffic
/// for it, and because the registration lives it initiates IKE back to the spoke (issue 14,
/// item 3: "a hub that has a live registration for a spoke but no SA initiates IKE when it has
/// traffic for that spoke"), to spoke B through its NAT on port 4500 once B has had its grace
/// to initiate first (`NATED_PEER_GRACE`, 3 s); the new SA replaces the childless one and the
/// traffic goes through. Before, the hub dropped traffic to a registered
/// spoke without an SA.
#[test]
fn clear_child_sa_keeps_the_ike_sa_and_the_hub_brings_the_spoke_back_for_its_traffic() {
    require_root_and_tools();
    let dir = TestDir::new("ops-clear-child").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, _) = start_registered(
        "ops",
        &t,
        &dir,
        &[Node::SpokeA, Node::SpokeB],
        quiet_spoke_config,
    );
    for (spoke, nbma, tunnel) in [
        (Node::SpokeA, SPOKE_A_NBMA, SPOKE_A_TUNNEL),
        (Node::SpokeB, NAT_OUTSIDE, SPOKE_B_TUNNEL),
    ] {
        hub_brings_back(&mut s, &t, spoke, nbma, tunnel);
    }
    s.check_alive();
}

/// One spoke of [`clear_child_sa_keeps_the_ike_sa_and_the_hub_brings_the_spoke_back_for_its_traffic`],
/// known to the hub at `nbma` (post-NAT) with tunnel address `tunnel`.
fn hub_brings_back(s: &mut Scenario<'_>, t: &Topology, spoke: Node, nbma: &str, tunnel: &str) {
    let name = spoke.name();
    s.reach(&t.hub, "hub", tunnel);
    let old = s.eventually(
        &format!("the hub's IKE SA with {name}"),
        SETTLE_TIMEOUT,
        |s| {
            one_with_children(s, Node::Hub, nbma, "")
                .map(|sa| sa["spi_i"].as_str().unwrap_or_default().to_owned())
        },
    );

    s.step(&format!(
        "clear child-sa {nbma} ({name}) on the hub: the Child SAs go, the IKE SA stays"
    ));
    let out = s.ctl_ok(Node::Hub, &["clear", "child-sa", nbma]);
    let want = format!("with {nbma} deleted; the IKE SA stays");
    if !(out.trim().ends_with(&want) && out.contains(" Child SA")) {
        s.fail(format!("clear child-sa printed {out:?}"));
    }
    s.eventually(
        "no Child SA at either end, the same IKE SA up at both",
        SETTLE_TIMEOUT,
        |s| {
            let hub = s.ike_sas(Node::Hub, nbma);
            let at_spoke = s.ike_sas(spoke, HUB_NBMA);
            let childless = |sas: &[serde_json::Value]| {
                matches!(sas, [sa] if sa["spi_i"] == old.as_str()
                    && sa["state"] == "established"
                    && sa["child_count"] == 0)
            };
            (childless(&hub) && childless(&at_spoke))
                .then_some(())
                .ok_or(format!("hub {hub:?}, {name} {at_spoke:?}"))
        },
    );
    let entry = s.nhrp_entry(Node::Hub, tunnel);
    if !entry
        .as_ref()
        .is_some_and(|e| e["kind"] == "dynamic" && strs(&e["flags"]).contains(&"registered"))
    {
        s.fail(format!("the hub kept {name}'s registration: {entry:?}"));
    }
    let again = s.ctl(Node::Hub, &["clear", "child-sa", nbma]);
    if again.code != Some(1)
        || !again
            .stderr
            .contains(&format!("dmvpnctl: no Child SA with {nbma}"))
    {
        s.fail(format!("a second clear child-sa: {again}"));
    }

    s.step(&format!(
        "traffic from the hub to the idle {name}: the hub initiates IKE back to it"
    ));
    let began = Instant::now();
    let back = s.poll(
        &format!("the hub's pings to {name} answered again"),
        REGISTRATION_TIMEOUT,
        |_| {
            let (got, _) = ping(&t.hub, tunnel, 1, "0.2").unwrap_or_default();
            (got == 1).then(|| began.elapsed())
        },
    );
    let sa = s.eventually(
        &format!("one IKE SA with {name} on the hub, new, initiated by the hub"),
        SETTLE_TIMEOUT,
        |s| one_with_children(s, Node::Hub, nbma, &old),
    );
    if sa["initiator"] != true {
        s.fail(format!("{name}, not the hub, brought the SA back: {sa}"));
    }
    println!(
        "ops: clear child-sa {nbma} on the hub: its pings to the idle {name} answered again after {back:.1?}, through an IKE SA the hub initiated to {}",
        sa["remote"]
    );
    s.reach(&t.hub, "hub", tunnel);
}
