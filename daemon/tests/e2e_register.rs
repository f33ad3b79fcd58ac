//! End-to-end (issue 5, item 7): a hub and two spokes, all the real dmvpnd binary, on a WAN
//! bridge with a NAT router (nftables masquerade) in front of spoke B and a LAN host behind each
//! router (topology in `dmvpn_tests::e2e`). Configurations come from `conf/hub.toml` and
//! `conf/spoke.toml` with only addresses changed (and short DPD and NAT keepalive timers). Both
//! spokes register, the hub's cache holds them (spoke B at its post-NAT address), and the
//! tunnel carries traffic hub ↔ spokes and hub LAN ↔ spoke LANs.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).
//! Each step fails with its name, what was expected and the last log lines of every daemon; the
//! scratch directory (configs, logs, exported keys) is kept when a test fails.

use dmvpn_tests::e2e::{
    NAT_OUTSIDE, Node, SPOKE_A_NBMA, SPOKE_A_TUNNEL, SPOKE_B_TUNNEL, TestDir, Topology,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{SETTLE_TIMEOUT, e2e_config, start_registered};

#[test]
fn hub_and_two_spokes_register_and_carry_traffic_between_hub_and_spokes() {
    require_root_and_tools();
    let dir = TestDir::new("register").unwrap();
    let t = Topology::new().expect("building the topology");
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, _) = start_registered("e2e", &t, &dir, &spokes, e2e_config);

    s.step("the hub's NHRP cache (dmvpnctl show nhrp) holds both spokes, registered");
    for (tunnel, nbma) in [
        (SPOKE_A_TUNNEL, SPOKE_A_NBMA),
        (SPOKE_B_TUNNEL, NAT_OUTSIDE),
    ] {
        let what = format!("{tunnel} registered in the hub's cache, reached at {nbma}");
        s.eventually(&what, SETTLE_TIMEOUT, |s| {
            let entry = s.nhrp_entry(Node::Hub, tunnel).ok_or_else(|| {
                format!("no entry for {tunnel}: {}", s.show_json(Node::Hub, "nhrp"))
            })?;
            let flags = entry["flags"].to_string();
            let packets_to = entry["post_nat_nbma"]
                .as_str()
                .or(entry["nbma"].as_str())
                .unwrap_or_default();
            if !flags.contains("registered") || packets_to != nbma {
                return Err(format!("{entry}"));
            }
            Ok(())
        });
    }

    s.step("ping spoke ↔ hub over the tunnel, and hub LAN ↔ spoke LANs");
    s.reach_all_via_hub(&t);

    s.step("no daemon logged an error");
    s.check_no_errors();
    s.check_alive();
    s.finish();
}
