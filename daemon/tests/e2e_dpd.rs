//! End-to-end (issue 5, item 7): a spoke killed with `kill -9` (no delete, no purge) is declared
//! dead by the hub's on-demand DPD (short test timers) and leaves the hub's NHRP cache, while the
//! other spoke (behind the NAT) is unaffected (topology in `dmvpn_tests::e2e`).
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::{Duration, Instant};

use dmvpn_tests::e2e::{
    HUB_LAN_HOST, Node, SPOKE_A_NBMA, SPOKE_A_TUNNEL, SPOKE_B_TUNNEL, TestDir, Topology, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    DPD_DELAY, DPD_RETRY, DPD_TRIES, SETTLE_TIMEOUT, e2e_config, expect, start_registered,
};

#[test]
fn a_killed_spoke_is_declared_dead_by_dpd_and_leaves_the_hubs_cache() {
    require_root_and_tools();
    let dir = TestDir::new("dpd").unwrap();
    let t = Topology::new().expect("building the topology");
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, _) = start_registered("e2e", &t, &dir, &spokes, e2e_config);
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
    s.reach(&t.hub, "hub", SPOKE_B_TUNNEL);

    s.step("10. a killed spoke is declared dead by DPD and leaves the hub's cache");
    let from = s.log_len(Node::Hub);
    s.kill(Node::SpokeA);
    let killed = Instant::now();
    let budget = Duration::from_secs(u64::from(DPD_DELAY + DPD_RETRY * DPD_TRIES + 10));
    let what = format!("within {budget:?} of kill -9, the hub logs spoke A dead and dropped");
    let (dead, dropped) = s.eventually(&what, budget, |s| {
        // On-demand DPD probes when the hub has traffic for the peer.
        let _ = ping(&t.hub, SPOKE_A_TUNNEL, 1, "1");
        let dead = s.lines(Node::Hub, from, &|l| expect::peer_dead_at(l, SPOKE_A_NBMA));
        let dropped = s.lines(Node::Hub, from, &|l| {
            expect::cache_dropped(l, SPOKE_A_TUNNEL)
        });
        match (dead.first(), dropped.first()) {
            (Some(a), Some(b)) => Ok((a.clone(), b.clone())),
            (a, b) => Err(format!(
                "peer dead: {a:?}; cache entry of {SPOKE_A_TUNNEL} dropped: {b:?}"
            )),
        }
    });
    s.note(format!(
        "spoke A declared dead after {:?}: {dead}; {dropped}",
        killed.elapsed()
    ));
    s.eventually(
        "the hub's NHRP cache without spoke A",
        SETTLE_TIMEOUT,
        |s| match s.nhrp_entry(Node::Hub, SPOKE_A_TUNNEL) {
            None => Ok(()),
            Some(e) => Err(format!(
                "the hub logged the removal, yet its cache still holds {SPOKE_A_TUNNEL}: {e}"
            )),
        },
    );
    s.eventually("spoke B still in the hub's cache", SETTLE_TIMEOUT, |s| {
        s.nhrp_entry(Node::Hub, SPOKE_B_TUNNEL)
            .map(|_| ())
            .ok_or_else(|| {
                format!(
                    "spoke B left the hub's NHRP cache with spoke A: {}",
                    s.show_json(Node::Hub, "nhrp")
                )
            })
    });

    s.step("spoke B is unaffected");
    s.reach(&t.hub, "hub", SPOKE_B_TUNNEL);
    s.reach(&t.lan_b, "spoke B LAN host", HUB_LAN_HOST);
    s.check_alive();
}
