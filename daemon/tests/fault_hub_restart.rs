//! Fault (issue 14, item 5): the hub killed with SIGKILL and started again with the same
//! configuration. The restarted hub has no SAs: it answers the spokes' ESP with an
//! unprotected INVALID_SPI (RFC 7296 §1.5), so each spoke probes at once, and the probe with
//! an unprotected INVALID_IKE_SPI (§2.21.4); the spoke takes that as a hint, brings up a new
//! IKE SA alongside the old one and registers again, instead of waiting out the whole DPD
//! budget (topology in `dmvpn_tests::e2e`: spoke A direct, spoke B behind the NAT). Spoke C
//! sends nothing after its first registration: an idle spoke learns of the restart from its
//! next registration refresh (a third of its holding time, here 60 s) and must be back within
//! that interval and a few seconds, as Cisco's `ip nhrp registration timeout` promises.
//!
//! The DPD timers here are the reference configuration's (`dpd 40 5 on-demand`, five
//! probes), not the e2e test's short ones: that budget is what a spoke with traffic waited
//! before. The recovery times are printed with the machine's load.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{
    HUB_TUNNEL, Keys, Node, NodeConfig, SPOKE_A_TUNNEL, SPOKE_B_TUNNEL, SPOKE_C_TUNNEL, TestDir,
    Topology, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{DPD_TRIES, e2e_config, edit_config, expect, start_registered, table};

/// The reference DPD timers (conf/*.toml: `dpd 40 5 on-demand`).
const DELAY: u32 = 40;
const RETRY: u32 = 5;
/// What a spoke with traffic waited before, from its last answered packet: the DPD delay,
/// then every probe unanswered, then a new IKE SA and registration.
const DPD_BUDGET: Duration = Duration::from_secs((DELAY + DPD_TRIES * RETRY) as u64);
/// The bound asserted: well under the budget, generous for a slow shared machine.
const BOUND: Duration = Duration::from_secs(20);
/// The idle spoke's holding time: it refreshes its registration every third of it (less up
/// to a tenth of that as jitter).
const IDLE_HOLDING_TIME: u32 = 60;
/// The idle spoke's bound: one registration interval and the IKE setup and registration
/// that follow, with room for a slow shared machine.
const IDLE_BOUND: Duration = Duration::from_secs(IDLE_HOLDING_TIME as u64 / 3 + 12);

fn config(dir: &TestDir, node: Node, keys: &Keys) -> NodeConfig {
    let cfg = e2e_config(dir, node, keys);
    edit_config(&cfg.config, |t| {
        let dpd = table(table(t, "ike"), "dpd");
        dpd.insert("delay".into(), toml::Value::Integer(DELAY.into()));
        dpd.insert("retry".into(), toml::Value::Integer(RETRY.into()));
        if node == Node::SpokeC {
            table(t, "nhrp").insert(
                "holding-time".into(),
                toml::Value::Integer(IDLE_HOLDING_TIME.into()),
            );
        }
    });
    cfg
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[test]
fn spokes_pinging_the_hub_come_back_from_its_sigkill_and_restart_well_within_the_dpd_budget() {
    require_root_and_tools();
    assert!(BOUND < DPD_BUDGET);
    let dir = TestDir::new("fault-hub-restart").unwrap();
    let t = Topology::new().expect("building the topology");
    let spokes = [Node::SpokeA, Node::SpokeB, Node::SpokeC];
    let (mut s, cfgs) = start_registered("fault", &t, &dir, &spokes, config);
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.reach(&t.spoke_b, "spoke B (NATed)", HUB_TUNNEL);
    // Spoke C is idle from here on: no pings, only its own refreshes.

    s.step("SIGKILL the hub (by its PID) and start it again with the same configuration");
    let from = [s.log_len(Node::SpokeA), s.log_len(Node::SpokeB)];
    s.kill(Node::Hub);
    let killed = Instant::now();
    s.start(&cfgs[0]);
    s.wait_line(
        Node::Hub,
        "underlay sockets open",
        0,
        Duration::from_secs(10),
        &expect::underlay_open,
    );
    s.note(format!(
        "hub restarted {:?} after the kill",
        killed.elapsed()
    ));

    s.step("the spokes, pinging the hub all along, register again and their pings flow");
    let rows = [
        (Node::SpokeA, SPOKE_A_TUNNEL),
        (Node::SpokeB, SPOKE_B_TUNNEL),
    ];
    let mut back: [Option<Duration>; 2] = [None, None];
    let mut idle_back: Option<Duration> = None;
    let what = "spokes A and B registered with the restarted hub and answered pings, idle spoke C registered";
    // Polled past the bound (and the budget), so a slow recovery is measured, not just failed.
    let (a, b) = s.eventually(what, DPD_BUDGET + Duration::from_secs(30), |s| {
        for (i, (node, tunnel)) in rows.iter().enumerate() {
            if back[i].is_some() {
                continue;
            }
            let replies = ping(node.netns(s.t), HUB_TUNNEL, 1, "1").map_or(0, |(n, _)| n);
            let registered = !s
                .lines(Node::Hub, 0, &|l| expect::registration_accepted(l, tunnel))
                .is_empty();
            if registered && replies > 0 {
                back[i] = Some(killed.elapsed());
            }
        }
        if idle_back.is_none()
            && !s
                .lines(Node::Hub, 0, &|l| {
                    expect::registration_accepted(l, SPOKE_C_TUNNEL)
                })
                .is_empty()
        {
            idle_back = Some(killed.elapsed());
        }
        match (back, idle_back) {
            ([Some(a), Some(b)], Some(_)) => Ok((a, b)),
            _ => Err(format!(
                "back so far (A, B): {back:?}, idle C: {idle_back:?}"
            )),
        }
    });
    let c = idle_back.unwrap_or_default();
    s.note(format!(
        "recovery after SIGKILL + restart of the hub: spoke A {a:.1?}, spoke B (NAT) {b:.1?}; DPD budget {DPD_BUDGET:?}, bound {BOUND:?}; idle spoke C {c:.1?} (registration interval {} s, bound {IDLE_BOUND:?}); load average {}",
        IDLE_HOLDING_TIME / 3,
        load()
    ));
    if c >= IDLE_BOUND {
        s.fail_later(format!(
            "idle spoke C back only after {c:?}: not within its registration interval ({} s) and the setup (bound {IDLE_BOUND:?})",
            IDLE_HOLDING_TIME / 3
        ));
    }
    for ((node, _), from) in rows.iter().zip(from) {
        // The hint is what brought it back, not the DPD verdict.
        let hinted = s.lines(*node, from, &|l| l.contains("INVALID_IKE_SPI"));
        if hinted.is_empty() {
            s.fail_later(format!(
                "{} never logged the INVALID_IKE_SPI hint",
                node.name()
            ));
        }
        let dead = s.lines(*node, from, &expect::peer_dead);
        if !dead.is_empty() {
            s.fail_later(format!("{} declared the hub dead: {dead:?}", node.name()));
        }
    }
    for (name, took) in [("A", a), ("B (NAT)", b)] {
        if took >= BOUND {
            s.fail_later(format!(
                "spoke {name} back only after {took:?}: not well under the DPD budget {DPD_BUDGET:?} (bound {BOUND:?})"
            ));
        }
    }
    s.reach(&t.lan_a, "spoke A LAN host", dmvpn_tests::e2e::HUB_LAN_HOST);
    s.reach(
        &t.lan_hub,
        "hub LAN host",
        dmvpn_tests::e2e::SPOKE_B_LAN_HOST,
    );
    s.check_alive();
    s.finish();
}
