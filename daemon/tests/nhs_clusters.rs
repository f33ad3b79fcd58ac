//! NHS clusters (issue 14, item 2): two hubs in one cluster with `max-connections = 1`
//! (`ip nhrp nhs cluster 1 max-connections 1`), hub 1 preferred (`priority` 0 and 1),
//! `nhs-fallback = 10`. Spokes A and B (B behind the NAT) register with hub 1 only; hub 2
//! stands by (`standby`, DOWN: no IKE, no registration). Hub 1 is killed (SIGKILL): the spokes
//! notice (DPD), register with hub 2 at once and traffic A → B continues through it; hub 1 is
//! started again: probed with IKE under the back-off, it registers once its SA has been up for
//! the fallback time, and hub 2 goes back to standby. Then both spokes are reloaded with hub 2
//! first: hub 2 registers at once and hub 1 goes to standby, A → B through hub 2. Timings
//! printed.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{
    HUB_NBMA, HUB2_NBMA, Node, SPOKE_B_TUNNEL, TestDir, Topology, WAN_IF, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    REGISTRATION_TIMEOUT, Scenario, edit_config, start_hub_then_spokes, table, two_hub_configs,
};

const FALLBACK: u64 = 10;

/// (state, status) of the spoke's NHS at `nbma`, e.g. ("up", "UP").
fn place(s: &Scenario<'_>, node: Node, nbma: &str) -> Option<(String, String)> {
    let n = s.nhs(node, nbma)?;
    Some((
        n["state"].as_str()?.to_owned(),
        n["status"].as_str()?.to_owned(),
    ))
}

#[test]
fn one_hub_registered_the_other_stands_by_takes_over_and_gives_way() {
    require_root_and_tools();
    let dir = TestDir::new("nhs-clusters").unwrap();
    let t = Topology::new().expect("building the topology");
    let cfgs = two_hub_configs(&dir, FALLBACK, Some(1));
    for c in &cfgs[2..] {
        edit_config(&c.config, |t| {
            let mut cluster = toml::Table::new();
            cluster.insert("id".into(), toml::Value::Integer(1));
            cluster.insert("max-connections".into(), toml::Value::Integer(1));
            table(t, "nhrp").insert(
                "cluster".into(),
                toml::Value::Array(vec![toml::Value::Table(cluster)]),
            );
        });
    }
    let mut s = start_hub_then_spokes("nhs-clusters", &t, &cfgs);
    s.step("both spokes register with hub 1 only; hub 2 stands by");
    for spoke in [Node::SpokeA, Node::SpokeB] {
        s.wait_registered(spoke, 0, 0);
        s.eventually(
            &format!("{} registered with hub 1", spoke.name()),
            REGISTRATION_TIMEOUT,
            |s| match place(s, spoke, HUB_NBMA) {
                Some((_, st)) if st == "UP" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        let hub2 = s.nhs(spoke, HUB2_NBMA).unwrap_or_default();
        if hub2["state"] != "standby" || hub2["status"] != "DOWN" || hub2["cluster"] != 1 {
            s.fail(format!(
                "{}: hub 2 {hub2}\n{}",
                spoke.name(),
                s.show(spoke, "nhrp")
            ));
        }
    }
    s.reach(&t.spoke_a, "spoke A", SPOKE_B_TUNNEL);
    let hub2_rx = s.counters(&t.hub2, WAN_IF);
    let (got, out) = ping(&t.spoke_a, SPOKE_B_TUNNEL, 20, "0.05").unwrap();
    let (rx2, _) = s.counters(&t.hub2, WAN_IF).since(&hub2_rx);
    if got != 20 || rx2 > 4 {
        s.fail(format!(
            "A → B via hub 1: {got}/20 answered, hub 2 (standby) received {rx2} packets\n{out}"
        ));
    }

    s.step("hub 1 killed: both spokes register with hub 2 at once, A → B through it");
    let killed = Instant::now();
    s.kill(Node::Hub);
    let mut took = Vec::new();
    for spoke in [Node::SpokeA, Node::SpokeB] {
        let up = s.poll(
            &format!("{} registered with hub 2", spoke.name()),
            Duration::from_secs(60),
            |s| {
                // Traffic makes on-demand DPD probe the dead hub.
                let _ = ping(&t.spoke_a, SPOKE_B_TUNNEL, 1, "0.2");
                let _ = ping(&t.spoke_b, dmvpn_tests::e2e::SPOKE_A_TUNNEL, 1, "0.2");
                let (_, st) = place(s, spoke, HUB2_NBMA)?;
                (st == "UP").then(|| killed.elapsed())
            },
        );
        took.push(up);
    }
    let resumed = s.poll(
        "pings A → B answered through hub 2",
        Duration::from_secs(30),
        |_| {
            let (got, _) = ping(&t.spoke_a, SPOKE_B_TUNNEL, 3, "0.2").ok()?;
            (got >= 2).then(|| killed.elapsed())
        },
    );
    s.note(format!(
        "hub 1 killed: spoke A registered with hub 2 after {:.1?}, spoke B after {:.1?}, pings A → B answered again after {resumed:.1?}",
        took[0], took[1]
    ));
    match place(&s, Node::SpokeA, HUB_NBMA) {
        Some((state, st)) if state == "standby" && st == "PROBE" => {}
        other => s.fail(format!(
            "hub 1 dead should be standby/PROBE: {other:?}\n{}",
            s.show(Node::SpokeA, "nhrp")
        )),
    }

    s.step(&format!(
        "hub 1 back: registered again once reachable for {FALLBACK} s, hub 2 back to standby"
    ));
    let restarted = Instant::now();
    s.start(&cfgs[0]);
    let up_again = s.poll(
        "spoke A registered with hub 1 again",
        Duration::from_secs(150),
        |s| {
            let _ = ping(&t.spoke_a, SPOKE_B_TUNNEL, 1, "0.2");
            let (_, st) = place(s, Node::SpokeA, HUB_NBMA)?;
            (st == "UP").then(Instant::now)
        },
    );
    let standby = s.poll(
        "spoke A puts hub 2 back in standby",
        Duration::from_secs(10),
        |s| {
            let (state, _) = place(s, Node::SpokeA, HUB2_NBMA)?;
            (state == "standby").then(Instant::now)
        },
    );
    s.note(format!(
        "hub 1 restarted: spoke A registered with it after {:.1?} (IKE back-off, then {FALLBACK} s fallback), hub 2 in standby {:.1?} after that",
        up_again - restarted,
        standby.saturating_duration_since(up_again)
    ));
    if up_again - restarted + Duration::from_secs(1) < Duration::from_secs(FALLBACK) {
        s.fail(format!(
            "hub 1 registered {:?} after its restart, before the {FALLBACK} s fallback",
            up_again - restarted
        ));
    }
    s.reach(&t.spoke_a, "spoke A", SPOKE_B_TUNNEL);

    s.step("reload both spokes with hub 2 first: hub 2 registers, then hub 1 goes to standby");
    for c in &cfgs[2..] {
        edit_config(&c.config, |t| {
            let list = table(t, "nhrp")
                .get_mut("nhs")
                .and_then(toml::Value::as_array_mut)
                .expect("[[nhrp.nhs]]");
            for (n, p) in list
                .iter_mut()
                .filter_map(toml::Value::as_table_mut)
                .zip([5, 0])
            {
                n.insert("priority".into(), toml::Value::Integer(p));
            }
        });
    }
    let reloaded = Instant::now();
    for spoke in [Node::SpokeA, Node::SpokeB] {
        s.ctl_ok(spoke, &["reload"]);
    }
    let mut took = Vec::new();
    for spoke in [Node::SpokeA, Node::SpokeB] {
        let swapped = s.poll(
            &format!("{}: hub 2 registered, hub 1 in standby", spoke.name()),
            Duration::from_secs(15),
            |s| {
                let hub1 = place(s, spoke, HUB_NBMA)?;
                let hub2 = place(s, spoke, HUB2_NBMA)?;
                (hub2.1 == "UP" && hub1.0 == "standby").then(|| reloaded.elapsed())
            },
        );
        took.push(swapped);
        let hub1 = s.nhs(spoke, HUB_NBMA).unwrap_or_default();
        if hub1["priority"] != 5 || hub1["status"] != "DOWN" {
            s.fail(format!("{}: hub 1 after the reload: {hub1}", spoke.name()));
        }
    }
    s.note(format!(
        "reload with hub 2 first: spoke A on hub 2 with hub 1 in standby after {:.1?}, spoke B after {:.1?}",
        took[0], took[1]
    ));
    let hub2_rx = s.counters(&t.hub2, WAN_IF);
    let (got, out) = ping(&t.spoke_a, SPOKE_B_TUNNEL, 20, "0.05").unwrap();
    let (rx2, _) = s.counters(&t.hub2, WAN_IF).since(&hub2_rx);
    if got < 19 || rx2 < 20 {
        s.fail(format!(
            "A → B via hub 2 after the reload: {got}/20 answered, hub 2 received {rx2} packets\n{out}"
        ));
    }
    s.check_alive();
    s.finish();
}
