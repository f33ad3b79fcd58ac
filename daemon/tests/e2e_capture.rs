//! End-to-end (issue 5, item 7): what the underlay carries while a hub and two spokes register,
//! exchange traffic and build a shortcut (spoke B behind the NAT; topology in
//! `dmvpn_tests::e2e`). Captured with tcpdump on the WAN bridge and dissected with tshark: only
//! IKE, ESP, NAT keepalives (spoke B sends some) and ARP in clear; with the daemons' exported
//! keys every ESP packet decrypts to GRE, the NHRP registrations and the hub's traffic
//! indication are there and nothing is malformed. Checks later steps do not depend on are
//! reported together at the end, so one run shows every failing check.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft`, `ping`, `tcpdump` and `tshark`
//! (tests/install-deps.sh). The scratch directory (configs, logs, capture, keys) is kept when a
//! test fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dmvpn_tests::e2e::{
    Capture, ExportedKeys, NAT_OUTSIDE, Node, SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL, SPOKE_B_LAN_HOST,
    SPOKE_B_TUNNEL, TestDir, Topology, Tshark, underlay_violations,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{NAT_KEEPALIVE, Scenario, e2e_config, start_registered};

#[test]
fn the_underlay_carries_only_ike_esp_and_keepalives_and_decrypts_with_the_exported_keys() {
    require_root_and_tools();
    let dir = TestDir::new("capture").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut cap = Capture::start(&t.wan, "any", &dir.path().join("underlay.pcap"))
        .expect("starting tcpdump on the WAN");
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, cfgs) = start_registered("e2e", &t, &dir, &spokes, e2e_config);

    s.step("traffic hub ↔ spokes and LAN ↔ LAN via the hub");
    s.reach_all_via_hub(&t);

    s.step("spoke-to-spoke traffic: the hub redirects, shortcuts on both spokes");
    s.wait_shortcuts(
        &[SPOKE_B_LAN_HOST, SPOKE_B_TUNNEL],
        &[SPOKE_A_LAN_HOST, SPOKE_A_TUNNEL],
        Duration::from_secs(20),
    );
    s.reach(&t.lan_a, "spoke A LAN host", SPOKE_B_LAN_HOST);
    s.reach(&t.spoke_a, "spoke A", SPOKE_B_TUNNEL);
    s.reach(&t.spoke_b, "spoke B", SPOKE_A_TUNNEL);
    s.reach(&t.lan_b, "spoke B LAN host", SPOKE_A_LAN_HOST);

    s.step("7. the underlay carried only IKE, ESP, NAT keepalives (and ARP)");
    cap.stop().unwrap_or_else(|e| s.fail(format!("{e:#}")));
    let plain = Tshark::plain(&dir.path().join("tshark-plain")).unwrap();
    check_underlay_capture(&s, &plain, &cap.file);

    s.step("8. the captured ESP decrypts with the exported keys; GRE and NHRP dissect cleanly");
    let exports: Vec<&Path> = cfgs.iter().map(|c| c.key_export.as_path()).collect();
    let exported = ExportedKeys::read(&exports).unwrap_or_else(|e| s.fail(format!("{e:#}")));
    if exported.esp_sa.is_empty() || exported.ikev2.is_empty() {
        s.fail(format!("key export incomplete: {exported:?}"));
    }
    let keyed = Tshark::with_keys(&dir.path().join("tshark-keys"), &exported).unwrap();
    check_decrypted_capture(&s, &keyed, &cap.file);

    s.step("no daemon logged an error");
    s.check_no_errors();
    s.check_alive();
    s.finish();
}

/// Every captured frame is ARP, IKE, ESP or a NAT keepalive (in particular no GRE and no NHRP
/// in clear); spoke B, behind the NAT, sent NAT keepalives.
fn check_underlay_capture(r: &Scenario<'_>, tshark: &Tshark, cap: &Path) {
    let t = |filter: &str| {
        tshark
            .frames(cap, filter)
            .unwrap_or_else(|e| r.fail(format!("{e:#}")))
    };
    let (all, ike, esp) = (t("frame"), t("isakmp"), t("esp"));
    let keepalive_src = tshark
        .fields(cap, "udpencap.nat_keepalive", &["ip.src"])
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    let mut keepalives: BTreeMap<String, usize> = BTreeMap::new();
    for row in keepalive_src {
        *keepalives.entry(row.join(",")).or_default() += 1;
    }
    eprintln!(
        "e2e: underlay capture: {} frames, {} IKE, {} ESP, NAT keepalives by source {keepalives:?}",
        all.len(),
        ike.len(),
        esp.len()
    );
    if ike.is_empty() || esp.is_empty() {
        r.fail_later(format!(
            "capture {} lacks IKE ({}) or ESP ({}) frames",
            cap.display(),
            ike.len(),
            esp.len()
        ));
    }
    let bad = underlay_violations(tshark, cap, 20).unwrap_or_else(|e| r.fail(format!("{e:#}")));
    if !bad.is_empty() {
        r.fail_later(format!(
            "frames other than IKE, ESP, NAT keepalives and ARP on the underlay:\n{}",
            bad.join("\n")
        ));
    }
    if !keepalives.contains_key(NAT_OUTSIDE) {
        r.fail_later(format!(
            "no NAT keepalive from spoke B (behind the NAT, seen as {NAT_OUTSIDE}) with ike.nat-keepalive = {NAT_KEEPALIVE}; keepalives seen: {keepalives:?}"
        ));
    }
}

/// With the exported keys: every ESP packet decrypts to GRE; both spokes' NHRP registration
/// request and reply and the hub's traffic indication are there; nothing is malformed.
fn check_decrypted_capture(r: &Scenario<'_>, tshark: &Tshark, cap: &Path) {
    let frames = |filter: &str| {
        tshark
            .frames(cap, filter)
            .unwrap_or_else(|e| r.fail(format!("{e:#}")))
    };
    let undecrypted = frames("esp and not gre");
    if !undecrypted.is_empty() {
        r.fail_later(format!(
            "{} ESP frames did not decrypt to GRE with the exported keys:\n{}",
            undecrypted.len(),
            undecrypted
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let bad = frames("_ws.malformed or _ws.expert.severity == error");
    if !bad.is_empty() {
        r.fail_later(format!(
            "malformed or expert-error frames after decryption:\n{}",
            bad.join("\n")
        ));
    }
    let verbose = tshark
        .run(cap, &["-n", "-V", "-Y", "nhrp"])
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    if verbose.contains("Malformed") || verbose.contains("[Expert Info (Error") {
        let at = verbose
            .find("Malformed")
            .or_else(|| verbose.find("[Expert Info (Error"))
            .unwrap_or(0);
        let start = verbose[..at].rfind("\nFrame ").unwrap_or(0);
        r.fail_later(format!(
            "NHRP dissection has errors:\n{}",
            &verbose[start..(at + 200).min(verbose.len())]
        ));
    }
    let nhrp = tshark
        .fields(
            cap,
            "nhrp",
            &[
                "frame.number",
                "nhrp.hdr.op.type",
                "nhrp.src.prot.addr",
                "nhrp.dst.prot.addr",
                "nhrp.code",
            ],
        )
        .unwrap_or_else(|e| r.fail(format!("{e:#}")));
    let mut ops: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &nhrp {
        let op = row.get(1).cloned().unwrap_or_default();
        let src = row.get(2).cloned().unwrap_or_default();
        *ops.entry((op, src)).or_default() += 1;
    }
    eprintln!("e2e: decrypted NHRP (op type, source) → count: {ops:?}");
    for spoke in [SPOKE_A_TUNNEL, SPOKE_B_TUNNEL] {
        // RFC 2332 op types: 3 Registration Request, 4 Registration Reply (src = the spoke's).
        for (op, name) in [("3", "Registration Request"), ("4", "Registration Reply")] {
            if !ops.contains_key(&(op.to_owned(), spoke.to_owned())) {
                r.fail_later(format!(
                    "no decrypted NHRP {name} for {spoke}; NHRP seen: {ops:?}"
                ));
            }
        }
    }
    // Cisco op type 8: Traffic Indication (the hub's redirect).
    if !ops.keys().any(|(op, _)| op == "8") {
        r.fail_later(format!(
            "no decrypted NHRP Traffic Indication (redirect); NHRP seen: {ops:?}"
        ));
    }
    if frames("isakmp.id.type").is_empty() {
        r.fail_later(
            "no IKE_AUTH decrypted with the exported IKEv2 keys (no Identification payload)",
        );
    }
}
