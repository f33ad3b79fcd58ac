//! Configuration reload (issue 6, item 5) with `dmvpnctl reload` and SIGHUP against a running hub
//! and spoke A (topology in `dmvpn_tests::e2e`): routes are applied and withdrawn while the SAs
//! stay, a change that needs a restart is refused and changes nothing, and a narrowed keyring
//! drops the peer it no longer has a key for.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use dmvpn_tests::e2e::toml;
use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, Node, SPOKE_A_NBMA, SPOKE_A_TUNNEL, TUNNEL_IF, TestDir, Topology, ping,
    route_dump, routes_with_proto,
};
use dmvpn_tests::scenario::schema::array;
use dmvpn_tests::scenario::show::json_spis;
use dmvpn_tests::scenario::{
    PROTO_DMVPND, SETTLE_TIMEOUT, Scenario, edit_config, expect, ops_config, start_registered,
    table,
};
use dmvpn_tests::{Netns, require_root_and_tools};
use serde_json::Value;

/// A prefix no test node uses (TEST-NET-1), for a static route added by reload.
const EXTRA_PREFIX: &str = "192.0.2.0/24";

/// The hub's IKE SA with spoke A and its Child SA SPIs, for comparing across reloads.
type SaIdentity = (String, String, BTreeSet<String>, BTreeSet<String>);

fn sa_identity(s: &Scenario<'_>) -> Result<SaIdentity, String> {
    let sa = s
        .ike_sa(Node::Hub, SPOKE_A_NBMA)
        .ok_or_else(|| format!("no IKE SA with {SPOKE_A_NBMA} on the hub"))?;
    let peer = s
        .sa_peer(Node::Hub, SPOKE_A_NBMA)
        .ok_or_else(|| format!("no peer {SPOKE_A_NBMA} in the hub's show sa"))?;
    let (i, o) = json_spis(&peer);
    Ok((
        sa["spi_i"].as_str().unwrap_or_default().to_owned(),
        sa["spi_r"].as_str().unwrap_or_default().to_owned(),
        i,
        o,
    ))
}

/// Fails unless the hub's SAs with spoke A are still `before`.
#[track_caller]
fn same_sas(s: &Scenario<'_>, before: &SaIdentity, what: &str) {
    match sa_identity(s) {
        Ok(after) if after == *before => {}
        after => s.fail(format!(
            "{what} changed the SAs with spoke A: {before:?} → {after:?}"
        )),
    }
}

fn extra_route(ns: &Netns) -> Option<Value> {
    routes_with_proto(ns, PROTO_DMVPND)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r["dst"] == EXTRA_PREFIX)
}

/// The hub and spoke A, registered, with traffic; the hub's configuration file and its SAs.
fn started<'t>(t: &'t Topology, dir: &TestDir) -> (Scenario<'t>, PathBuf, SaIdentity) {
    let (mut s, cfgs) = start_registered("ops", t, dir, &[Node::SpokeA], ops_config);
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    let before = s.eventually("the hub's SAs with spoke A", SETTLE_TIMEOUT, |s| {
        sa_identity(s).and_then(|id| {
            if id.2.is_empty() {
                Err(format!("no Child SA with spoke A on the hub: {id:?}"))
            } else {
                Ok(id)
            }
        })
    });
    s.note(format!("hub's SA with spoke A before reloads: {before:?}"));
    (s, cfgs[0].config.clone(), before)
}

#[test]
fn reload_and_sighup_apply_route_changes_and_keep_the_sas() {
    require_root_and_tools();
    let dir = TestDir::new("ops-reload-routes").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, hub_cfg, before) = started(&t, &dir);

    s.step("a. add a static route, `dmvpnctl reload`: route installed, SAs kept");
    if extra_route(&t.hub).is_some() {
        s.fail(format!(
            "{EXTRA_PREFIX} routed before the reload:\n{}",
            route_dump(&t.hub)
        ));
    }
    edit_config(&hub_cfg, |c| {
        let routes = c
            .get_mut("route")
            .and_then(toml::Value::as_array_mut)
            .expect("the hub configuration has [[route]]");
        let mut route = toml::Table::new();
        route.insert("prefix".into(), EXTRA_PREFIX.into());
        route.insert("via".into(), SPOKE_A_TUNNEL.into());
        routes.push(toml::Value::Table(route));
    });
    let from = s.log_len(Node::Hub);
    let out = s.ctl_ok(Node::Hub, &["reload"]);
    if out.trim() != "configuration reloaded" {
        s.fail(format!("dmvpnctl reload printed {out:?}"));
    }
    let reloaded = &expect::reloaded;
    let five = Duration::from_secs(5);
    s.wait_line(Node::Hub, "configuration reloaded", from, five, reloaded);
    let route = s.poll(
        &format!("{EXTRA_PREFIX} via {SPOKE_A_TUNNEL} proto {PROTO_DMVPND} on the hub"),
        five,
        |_| extra_route(&t.hub),
    );
    if route["gateway"] != SPOKE_A_TUNNEL || route["dev"] != TUNNEL_IF {
        s.fail(format!(
            "route after reload: {route}\n{}",
            route_dump(&t.hub)
        ));
    }
    same_sas(&s, &before, "reload");
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);

    s.step("a'. change ike.dpd.delay and remove the route, SIGHUP: route withdrawn, SAs kept");
    edit_config(&hub_cfg, |c| {
        let ike = table(c, "ike");
        table(ike, "dpd").insert("delay".into(), toml::Value::Integer(30));
        c.get_mut("route")
            .and_then(toml::Value::as_array_mut)
            .expect("[[route]]")
            .retain(|r| r.get("prefix").and_then(toml::Value::as_str) != Some(EXTRA_PREFIX));
    });
    let from = s.log_len(Node::Hub);
    s.signal(Node::Hub, "HUP");
    let sighup = &expect::sighup_reload;
    s.wait_line(Node::Hub, "SIGHUP: reloading", from, five, sighup);
    s.wait_line(Node::Hub, "configuration reloaded", from, five, reloaded);
    s.poll(
        &format!("{EXTRA_PREFIX} withdrawn from the hub"),
        five,
        |_| extra_route(&t.hub).is_none().then_some(()),
    );
    same_sas(&s, &before, "SIGHUP reload");
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.check_alive();
}

#[test]
fn reload_refuses_a_tunnel_address_change_and_changes_nothing() {
    require_root_and_tools();
    let dir = TestDir::new("ops-reload-refused").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, hub_cfg, before) = started(&t, &dir);

    s.step("c. a tunnel address change is refused: restart needed, nothing changes");
    edit_config(&hub_cfg, |c| {
        table(c, "tunnel").insert("address".into(), "10.250.0.2/24".into());
    });
    let from = s.log_len(Node::Hub);
    let c = s.ctl(Node::Hub, &["reload"]);
    if c.code != Some(1)
        || !c.stdout.is_empty()
        || !c.stderr.starts_with("dmvpnctl: ")
        || !c.stderr.contains("tunnel.address")
        || !c.stderr.contains("restart dmvpnd to apply")
    {
        s.fail(format!(
            "want exit 1 and `… tunnel.address changed; restart dmvpnd to apply`: {c}"
        ));
    }
    s.no_line(Node::Hub, from, "a reload it refused", &expect::reloaded);
    let addrs = t
        .hub
        .ip_json(&["addr", "show", "dev", TUNNEL_IF])
        .unwrap_or_else(|e| s.fail(format!("{e:#}")));
    let local: Vec<&str> = array(&addrs[0], "addr_info")
        .iter()
        .filter_map(|a| a["local"].as_str())
        .collect();
    if local != [HUB_TUNNEL] {
        s.fail(format!(
            "the hub's {TUNNEL_IF} addresses after a refused reload: {local:?}"
        ));
    }
    let dm = s.show_json(Node::Hub, "dmvpn");
    if dm["tunnel_addr"] != "10.250.0.1/24" {
        s.fail(format!("show dmvpn after a refused reload: {dm:#}"));
    }
    same_sas(&s, &before, "a refused reload");
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.check_alive();
}

#[test]
fn reload_with_a_narrowed_keyring_drops_the_peer_for_good() {
    require_root_and_tools();
    let dir = TestDir::new("ops-reload-keyring").unwrap();
    let t = Topology::new().expect("building the topology");
    let (mut s, hub_cfg, _) = started(&t, &dir);

    s.step("b. narrow the keyring to 203.0.113.0/24: spoke A's SA goes, and cannot come back");
    edit_config(&hub_cfg, |c| {
        let ring = table(c, "ike")
            .get_mut("keyring")
            .and_then(toml::Value::as_array_mut)
            .and_then(|a| a.first_mut())
            .and_then(toml::Value::as_table_mut)
            .expect("[[ike.keyring]]");
        ring.insert("peer".into(), "203.0.113.0/24".into());
    });
    let (hub_from, spoke_from) = (s.log_len(Node::Hub), s.log_len(Node::SpokeA));
    let out = s.ctl_ok(Node::Hub, &["reload"]);
    if out.trim() != "configuration reloaded" {
        s.fail(format!("dmvpnctl reload printed {out:?}"));
    }
    let five = Duration::from_secs(5);
    s.wait_line(
        Node::Hub,
        "reload: the new keyring has no key, or another key, for this peer: deleting its SA",
        hub_from,
        five,
        &expect::keyring_delete,
    );
    s.wait_line(
        Node::Hub,
        "IKE SA down peer=198.51.100.3",
        hub_from,
        five,
        &|l| expect::ike_sa_down(l, SPOKE_A_NBMA),
    );
    let auth = s.poll(
        "`IKE authentication failed` on the hub or spoke A",
        Duration::from_secs(20),
        |s| {
            let hub = s.lines(Node::Hub, hub_from, &expect::ike_auth_failed);
            let spoke = s.lines(Node::SpokeA, spoke_from, &expect::ike_auth_failed);
            hub.into_iter().chain(spoke).next()
        },
    );
    s.note(format!(
        "after narrowing the keyring: {auth}\nops: the hub's show sa entry for spoke A: {:?}",
        s.sa_peer(Node::Hub, SPOKE_A_NBMA)
    ));
    // No established SA with spoke A, now or after its retries.
    let established = |s: &Scenario<'_>| {
        s.sa_peer(Node::Hub, SPOKE_A_NBMA)
            .filter(|p| p["ike"]["state"] == "established" || !array(p, "children").is_empty())
    };
    s.eventually("spoke A gone from the hub's show sa", SETTLE_TIMEOUT, |s| {
        if let Some(p) = established(s) {
            return Err(format!("--json still lists spoke A with an SA: {p:#}"));
        }
        let text = s.show(Node::Hub, "sa");
        if text.contains(&format!("remote crypto endpt.: {SPOKE_A_NBMA}")) {
            return Err(format!("the text still lists spoke A:\n{text}"));
        }
        Ok(())
    });
    let (got, out) = ping(&t.spoke_a, HUB_TUNNEL, 3, "0.5").unwrap();
    if got != 0 {
        s.fail(format!(
            "spoke A still reaches the hub without a key:\n{out}"
        ));
    }
    if let Some(p) = established(&s) {
        s.fail(format!("spoke A re-established an SA without a key: {p:#}"));
    }
    for (node, from, peer) in [
        (Node::Hub, hub_from, SPOKE_A_NBMA),
        (Node::SpokeA, spoke_from, HUB_NBMA),
    ] {
        s.no_line(
            node,
            from,
            "a Child SA after the keyring was narrowed",
            &|l| expect::child_sa_installed_with(l, peer),
        );
    }
    s.check_alive();
}
