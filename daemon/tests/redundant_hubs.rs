//! Redundant hubs (issue 14, item 2): two hubs, and spokes A and B (B behind the NAT) that list
//! both as NHSs, hub 1 preferred (`priority` 0 and 1) with `nhs-fallback = 10`. The hubs do not
//! redirect, so spoke-to-spoke traffic keeps crossing the preferred NHS. Multicast to OSPF's
//! group (echo requests out of spoke A's tunnel) reaches both hubs: each NHS is flagged
//! `multicast`, and the spoke replicates to every one it is registered with. Hub 1 is killed
//! (SIGKILL): the spokes notice (DPD), traffic A → B continues through hub 2; hub 1 is started
//! again: the spokes register with it again and move back to it only once it has been up for
//! the fallback time. Then spoke A is reloaded with hub 2 first (priorities 5 and 1): it
//! prefers hub 2 at once, `show nhrp` gives the new priorities, and the IKE SAs and both
//! registrations stay. Timings printed.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::Netns;
use dmvpn_tests::e2e::{
    HUB_NBMA, HUB2_NBMA, Node, SPOKE_B_TUNNEL, TUNNEL_IF, TestDir, Topology, WAN_IF, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    REGISTRATION_TIMEOUT, Scenario, edit_config, start_hub_then_spokes, table, two_hub_configs,
};

const FALLBACK: u64 = 10;

fn preferred(s: &Scenario<'_>, node: Node) -> Option<String> {
    let v = s.show_json(node, "nhrp");
    v["nhs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["preferred"] == true)
        .and_then(|n| n["nbma"].as_str().map(str::to_owned))
}

/// OSPF's all-routers group: what a spoke's hellos are sent to.
const GROUP: &str = "224.0.0.5";

/// Counts packets to [`GROUP`] coming out of `ns`'s tunnel device (nftables, before routing,
/// so no group membership is needed for them to be seen).
fn count_group(ns: &Netns) {
    let rule = format!("iifname {TUNNEL_IF} ip daddr {GROUP} counter");
    ns.nft(&[
        vec!["add", "table", "ip", "mcprobe"],
        vec![
            "add",
            "chain",
            "ip",
            "mcprobe",
            "pre",
            "{ type filter hook prerouting priority -300 ; }",
        ],
        vec!["add", "rule", "ip", "mcprobe", "pre", &rule],
    ])
    .expect("nftables counter for the group");
}

/// Packets [`count_group`] has counted in `ns`.
fn group_hits(ns: &Netns) -> u64 {
    let out = ns
        .exec("nft", &["-j", "list", "chain", "ip", "mcprobe", "pre"])
        .expect("nft list");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flatten()
        .find_map(|e| e["counter"]["packets"].as_u64())
        .unwrap_or(0)
}

/// Three echo requests to [`GROUP`] out of `ns`'s tunnel device, as a routing daemon's hellos
/// would leave it (TTL 1).
fn send_to_group(ns: &Netns) {
    let _ = ns.exec(
        "ping",
        &[
            "-n", "-c", "3", "-i", "0.2", "-t", "1", "-W", "1", "-I", TUNNEL_IF, GROUP,
        ],
    );
}

#[test]
fn traffic_fails_over_to_the_second_hub_and_falls_back() {
    require_root_and_tools();
    let dir = TestDir::new("redundant-hubs").unwrap();
    let t = Topology::new().expect("building the topology");
    let cfgs = two_hub_configs(&dir, FALLBACK, None);
    let mut s = start_hub_then_spokes("redundant", &t, &cfgs);
    s.step("both spokes register with both hubs; hub 1 is preferred");
    for spoke in [Node::SpokeA, Node::SpokeB] {
        s.wait_registered(spoke, 0, 0);
        for nbma in [HUB_NBMA, HUB2_NBMA] {
            s.eventually(
                &format!("{} registered with {nbma}", spoke.name()),
                REGISTRATION_TIMEOUT,
                |s| {
                    let n = s.nhs(spoke, nbma).ok_or("no NHS entry")?;
                    (n["status"] == "UP").then_some(()).ok_or(n.to_string())
                },
            );
        }
        if preferred(&s, spoke).as_deref() != Some(HUB_NBMA) {
            s.fail(format!("{}: {}", spoke.name(), s.show(spoke, "nhrp")));
        }
    }
    s.reach(&t.spoke_a, "spoke A", SPOKE_B_TUNNEL);

    s.step("multicast (OSPF's group) from spoke A reaches both hubs, each an NHS with multicast");
    for hub in [&t.hub, &t.hub2] {
        count_group(hub);
    }
    let sent = Instant::now();
    let both = s.poll(
        "both hubs' tunnels receive spoke A's multicast",
        Duration::from_secs(20),
        |_| {
            send_to_group(&t.spoke_a);
            let hits = [group_hits(&t.hub), group_hits(&t.hub2)];
            hits.iter().all(|&h| h >= 3).then_some(hits)
        },
    );
    println!(
        "redundant: 224.0.0.5 from spoke A: hub 1 got {}, hub 2 got {} ({:.1?})",
        both[0],
        both[1],
        sent.elapsed()
    );
    let hub2_rx = s.counters(&t.hub2, WAN_IF);
    let (got, out) = ping(&t.spoke_a, SPOKE_B_TUNNEL, 20, "0.05").unwrap();
    let (rx2, _) = s.counters(&t.hub2, WAN_IF).since(&hub2_rx);
    if got != 20 || rx2 > 10 {
        s.fail(format!(
            "A → B via hub 1: {got}/20 answered, hub 2 received {rx2} packets\n{out}"
        ));
    }

    s.step("hub 1 killed: traffic A → B continues through hub 2");
    let killed = Instant::now();
    s.kill(Node::Hub);
    let moved = s.poll("spoke A prefers hub 2", Duration::from_secs(30), |s| {
        // Traffic makes on-demand DPD probe the dead hub.
        let _ = ping(&t.spoke_a, SPOKE_B_TUNNEL, 1, "0.2");
        (preferred(s, Node::SpokeA).as_deref() == Some(HUB2_NBMA)).then(|| killed.elapsed())
    });
    let resumed = s.poll(
        "pings A → B answered through hub 2",
        Duration::from_secs(30),
        |_| {
            let (got, _) = ping(&t.spoke_a, SPOKE_B_TUNNEL, 3, "0.2").ok()?;
            (got >= 2).then(|| killed.elapsed())
        },
    );
    s.note(format!(
        "hub 1 killed: spoke A moved to hub 2 after {moved:.1?}, pings to B answered again after {resumed:.1?}"
    ));
    let hub2_rx = s.counters(&t.hub2, WAN_IF);
    let (got, out) = ping(&t.spoke_a, SPOKE_B_TUNNEL, 20, "0.05").unwrap();
    let (rx2, _) = s.counters(&t.hub2, WAN_IF).since(&hub2_rx);
    if got < 19 || rx2 < 20 {
        s.fail(format!(
            "A → B via hub 2: {got}/20 answered, hub 2 received {rx2} packets\n{out}"
        ));
    }

    s.step(&format!(
        "hub 1 back: the spokes register again and return to it after {FALLBACK} s"
    ));
    let restarted = Instant::now();
    s.start(&cfgs[0]);
    let up_again = s.poll(
        "spoke A registered with hub 1 again",
        Duration::from_secs(60),
        |s| {
            let _ = ping(&t.spoke_a, SPOKE_B_TUNNEL, 1, "0.2");
            let n = s.nhs(Node::SpokeA, HUB_NBMA)?;
            (n["status"] == "UP").then(Instant::now)
        },
    );
    let back = s.poll(
        "spoke A prefers hub 1 again",
        Duration::from_secs(FALLBACK + 20),
        |s| (preferred(s, Node::SpokeA).as_deref() == Some(HUB_NBMA)).then(Instant::now),
    );
    let waited = back - up_again;
    s.note(format!(
        "hub 1 restarted: spoke A registered with it after {:.1?}, preferred it {waited:.1?} later (fallback {FALLBACK} s)",
        up_again - restarted
    ));
    // Polled every 100 ms and `show` is asked in between: allow a little either side.
    if waited + Duration::from_secs(1) < Duration::from_secs(FALLBACK) {
        s.fail(format!(
            "back on hub 1 {waited:?} after it came up, before the {FALLBACK} s fallback"
        ));
    }
    s.reach(&t.spoke_a, "spoke A", SPOKE_B_TUNNEL);

    s.step("reload spoke A with hub 2 first: it moves at once, SAs and registrations kept");
    let spis = |s: &Scenario<'_>| {
        [HUB_NBMA, HUB2_NBMA].map(|nbma| {
            s.ike_sa(Node::SpokeA, nbma)
                .map(|sa| (sa["spi_i"].to_string(), sa["spi_r"].to_string()))
        })
    };
    let before = spis(&s);
    edit_config(&cfgs[2].config, |t| {
        let list = table(t, "nhrp")
            .get_mut("nhs")
            .and_then(toml::Value::as_array_mut)
            .expect("[[nhrp.nhs]]");
        for (n, p) in list
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .zip([5, 1])
        {
            n.insert("priority".into(), toml::Value::Integer(p));
        }
    });
    let reloaded = Instant::now();
    s.ctl_ok(Node::SpokeA, &["reload"]);
    let moved = s.poll(
        "spoke A prefers hub 2 after the reload",
        Duration::from_secs(2),
        |s| (preferred(s, Node::SpokeA).as_deref() == Some(HUB2_NBMA)).then(|| reloaded.elapsed()),
    );
    for (nbma, priority) in [(HUB_NBMA, 5), (HUB2_NBMA, 1)] {
        let n = s
            .nhs(Node::SpokeA, nbma)
            .unwrap_or_else(|| s.fail("no NHS entry"));
        if n["priority"] != priority || n["status"] != "UP" {
            s.fail(format!("after the reload, NHS {nbma}: {n}"));
        }
    }
    if spis(&s) != before {
        s.fail(format!(
            "IKE SAs changed by the reload: {before:?} → {:?}",
            spis(&s)
        ));
    }
    let hub2_rx = s.counters(&t.hub2, WAN_IF);
    let (got, out) = ping(&t.spoke_a, SPOKE_B_TUNNEL, 20, "0.05").unwrap();
    let (rx2, _) = s.counters(&t.hub2, WAN_IF).since(&hub2_rx);
    if got < 19 || rx2 < 20 {
        s.fail(format!(
            "A → B via hub 2 after the reload: {got}/20 answered, hub 2 received {rx2} packets\n{out}"
        ));
    }
    s.note(format!(
        "reload with hub 2 first: spoke A preferred it after {moved:.1?}, same IKE SAs, both NHSs UP"
    ));
    s.check_alive();
    s.finish();
}
