//! Self-checks of the end-to-end setup, without dmvpnd running: the generated configurations
//! are valid and differ from the `conf/` examples only where a test needs it, and the topology
//! of `dmvpn_tests::e2e` routes the underlay, hides spoke B behind the NAT and keeps the LANs
//! apart, with capture plumbing that sees exactly that.
//!
//! Needs root, `ip`, `nft`, `ping`, `tcpdump` and `tshark` (tests/install-deps.sh).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use dmvpn_tests::e2e::toml;
use dmvpn_tests::e2e::{
    Capture, HUB_NBMA, NAT_OUTSIDE, Node, SPOKE_A_NBMA, SPOKE_B_LAN_HOST, SPOKE_B_PRIVATE, TestDir,
    Topology, Tshark, conf_dir, ping, underlay_violations,
};
use dmvpn_tests::scenario::{e2e_config, keys};
use dmvpn_tests::{Netns, require_root_and_tools};

/// Flattens a TOML document to `dotted.key` → value (arrays of tables as `key[i].sub`).
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// The generated configurations are valid (`dmvpnd --check-config`), their secrets are mode
/// 0600, and they differ from the examples only in addresses, interface, routes, key export,
/// control socket and the DPD and NAT keepalive timers.
#[test]
fn generated_configs_differ_from_the_examples_only_where_needed() {
    let dir = TestDir::new("self").unwrap();
    let keys = keys();
    let dmvpnd = dmvpn_tests::bin("dmvpnd");
    for node in [Node::Hub, Node::SpokeA, Node::SpokeB] {
        let cfg = e2e_config(&dir, node, &keys);
        let out = Command::new(&dmvpnd)
            .arg("--check-config")
            .arg(&cfg.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            cfg.config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&cfg.secrets).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", cfg.secrets.display());
        let example = if node == Node::Hub {
            "hub.toml"
        } else {
            "spoke.toml"
        };
        let parse = |p: &Path| -> toml::Value {
            toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &parse(&conf_dir().join(example)), &mut a);
        flatten("", &parse(&cfg.config), &mut b);
        let allowed = |k: &str| {
            k.starts_with("route[")
                || k.starts_with("debug.")
                || k.starts_with("nhrp.nhs[")
                || [
                    "underlay.interface",
                    "underlay.local-address",
                    "tunnel.address",
                    "ike.dpd.delay",
                    "ike.dpd.retry",
                    "ike.nat-keepalive",
                    "control.socket",
                ]
                .contains(&k)
        };
        let keys_all: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys_all {
            if a.get(k) != b.get(k) {
                assert!(
                    allowed(k),
                    "{}: {k} changed: {:?} → {:?}",
                    node.name(),
                    a.get(k),
                    b.get(k)
                );
            }
        }
    }
}

/// The underlay routes, the NAT hides spoke B, each LAN host reaches its router, and the
/// capture plumbing works.
#[test]
fn topology_routes_the_underlay_and_hides_spoke_b_behind_the_nat() {
    require_root_and_tools();
    let dir = TestDir::new("self-topo").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut cap = Capture::start(&t.wan, "any", &dir.path().join("underlay.pcap")).unwrap();
    let must_reach = |ns: &Netns, dst: &str| {
        let (got, out) = ping(ns, dst, 2, "0.2").unwrap();
        assert_eq!(got, 2, "{} → {dst}:\n{out}", ns.name());
    };
    must_reach(&t.hub, SPOKE_A_NBMA);
    must_reach(&t.spoke_a, HUB_NBMA);
    must_reach(&t.spoke_b, HUB_NBMA);
    must_reach(&t.spoke_b, SPOKE_A_NBMA);
    must_reach(&t.lan_hub, HUB_NBMA);
    must_reach(&t.lan_a, SPOKE_A_NBMA);
    must_reach(&t.lan_b, SPOKE_B_PRIVATE);
    // Spoke B's private address is not routed on the WAN, and its LAN is not reachable before
    // the tunnel exists.
    let (got, _) = ping(&t.hub, SPOKE_B_PRIVATE, 1, "1").unwrap();
    assert_eq!(
        got, 0,
        "spoke B's private address must not be reachable from the hub"
    );
    let (got, _) = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "1").unwrap();
    assert_eq!(
        got, 0,
        "spoke B's LAN must not be reachable without the tunnel"
    );
    cap.stop().unwrap();

    let tshark = Tshark::plain(&dir.path().join("tshark")).unwrap();
    let src = |filter: &str| tshark.fields(&cap.file, filter, &["ip.src"]).unwrap();
    let from_b = src(&format!(
        "icmp.type == 8 and ip.dst == {HUB_NBMA} and ip.src == {NAT_OUTSIDE}"
    ));
    assert_eq!(
        from_b.len(),
        2,
        "spoke B's echoes reach the hub from the NAT's outside address"
    );
    assert!(
        src(&format!("ip.addr == {SPOKE_B_PRIVATE}")).is_empty(),
        "spoke B's private address leaked onto the WAN"
    );
    // IPv6 is off: nothing but ARP and our ICMP on the wire.
    let other = tshark.frames(&cap.file, "not (arp or icmp)").unwrap();
    assert!(other.is_empty(), "unexpected frames on the WAN: {other:?}");
    // The underlay check of the dmvpnd tests flags exactly the ICMP (it can fail).
    let icmp = tshark.frames(&cap.file, "icmp").unwrap();
    let flagged = underlay_violations(&tshark, &cap.file, usize::MAX).unwrap();
    assert!(
        !icmp.is_empty() && flagged == icmp,
        "{flagged:?} vs {icmp:?}"
    );
}
