//! A hub started with IPv4 forwarding off in its namespace says so at start (found in the
//! independent VM run: a dmvpnd hub with forwarding off registered spokes and answered pings but
//! relayed nothing between spokes, without a word), and the tunnel comes up with its configured
//! TUN queue length. Needs root and `ip` (tests/install-deps.sh).

use std::time::Duration;

use dmvpn_tests::e2e::{Node, TestDir, Topology};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{Scenario, e2e_config, keys};

#[test]
fn a_hub_without_ip_forwarding_warns_and_its_tunnel_has_the_configured_queue() {
    require_root_and_tools();
    let dir = TestDir::new("fwdwarn").unwrap();
    let t = Topology::new().expect("building the topology");
    t.hub
        .sysctl("net.ipv4.ip_forward=0")
        .expect("turning forwarding off in the hub's namespace");
    let cfg = e2e_config(&dir, Node::Hub, &keys());
    let mut s = Scenario::new("fwdwarn", &t);
    s.step("start the hub with net.ipv4.ip_forward = 0");
    s.start(&cfg);
    let line = s.wait_line(
        Node::Hub,
        "the forwarding warning",
        0,
        Duration::from_secs(10),
        &|l| {
            l.contains("WARN")
                && l.contains("net.ipv4.ip_forward is 0")
                && l.contains("between spokes")
        },
    );
    s.note(line);

    s.step("dmvpn0 has the default txqueuelen, 4096 (the kernel's own is 500)");
    let link = t
        .hub
        .ip_json(&["link", "show", "dev", "dmvpn0"])
        .unwrap_or_default();
    if link[0]["txqlen"] != 4096 {
        s.fail(format!("dmvpn0: {link}"));
    }
    s.check_alive();
}
