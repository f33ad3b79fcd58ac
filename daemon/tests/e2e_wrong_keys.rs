//! End-to-end (issue 5, item 7): a spoke with the wrong IKE pre-shared key, or the wrong NHRP
//! authentication key, is refused with a clear log line and gets no SA, no registration and no
//! traffic (topology in `dmvpn_tests::e2e`); with the wrong PSK, `dmvpnctl explain` on the spoke
//! names the failed IKE setup as the destination's last error, with the retry time, and `show ike`
//! and `show nhrp` show the hold-down with its next attempt (issue 14 item 1).
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use dmvpn_tests::e2e::{HUB_NBMA, HUB_TUNNEL, Keys, Node, SPOKE_A_TUNNEL, TestDir, Topology, ping};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::{
    REGISTRATION_TIMEOUT, SETTLE_TIMEOUT, Scenario, e2e_config, expect, keys, start_hub_then_spokes,
};

/// Starts the hub with `hub_keys`, then spoke A with `spoke_keys`.
fn hub_and_spoke_a<'t>(
    t: &'t Topology,
    dir: &TestDir,
    hub_keys: &Keys,
    spoke_keys: &Keys,
) -> Scenario<'t> {
    let cfgs = [
        e2e_config(dir, Node::Hub, hub_keys),
        e2e_config(dir, Node::SpokeA, spoke_keys),
    ];
    start_hub_then_spokes("e2e", t, &cfgs)
}

/// Neither side registered spoke A, and the hub's cache does not hold it.
fn no_registration(s: &Scenario<'_>, why: &str) {
    let nhs = &expect::registered_with_nhs;
    s.no_line(
        Node::SpokeA,
        0,
        &format!("`NHRP registered with NHS` {why}"),
        nhs,
    );
    s.no_line(
        Node::Hub,
        0,
        &format!("a registration of spoke A {why}"),
        &|l| expect::hub_registered(l, SPOKE_A_TUNNEL),
    );
    if let Some(e) = s.nhrp_entry(Node::Hub, SPOKE_A_TUNNEL) {
        s.fail(format!("the hub's NHRP cache holds spoke A {why}: {e}"));
    }
}

#[test]
fn wrong_psk_is_refused_with_a_clear_log_line_and_no_sa() {
    require_root_and_tools();
    let dir = TestDir::new("psk").unwrap();
    let t = Topology::new().expect("building the topology");
    let good = keys();
    let wrong = Keys {
        psk: format!("{}-wrong", good.psk),
        nhrp: good.nhrp.clone(),
    };
    let mut s = hub_and_spoke_a(&t, &dir, &good, &wrong);

    s.step("the PSK mismatch is logged");
    let (node, line) = s.wait_line_any(
        &[Node::Hub, Node::SpokeA],
        "IKE authentication failed",
        REGISTRATION_TIMEOUT,
        &expect::ike_auth_failed,
    );
    s.note(format!("{}: {line}", node.name()));

    s.step("no SA, no registration, no traffic");
    let (got, out) = ping(&t.spoke_a, HUB_TUNNEL, 3, "0.5").unwrap();
    if got != 0 {
        s.fail(format!(
            "the tunnel carries traffic with a wrong PSK:\n{out}"
        ));
    }
    for node in [Node::Hub, Node::SpokeA] {
        for (what, pred) in [
            ("`IKE SA up`", &expect::ike_sa_up as &dyn Fn(&str) -> bool),
            ("`child SA installed`", &expect::child_sa_installed),
            ("`NHRP registered with NHS`", &expect::registered_with_nhs),
        ] {
            s.no_line(node, 0, &format!("{what} with a wrong PSK"), pred);
        }
    }
    no_registration(&s, "with a wrong PSK");

    s.step("`dmvpnctl explain` on spoke A names the failure and the retry");
    let why = s.eventually(
        "explain's last_error: the IKE setup toward the hub, authentication_failed",
        SETTLE_TIMEOUT,
        |s| {
            let out = s.ctl_ok(Node::SpokeA, &["explain", HUB_TUNNEL, "--json"]);
            let v: serde_json::Value =
                serde_json::from_str(&out).map_err(|e| format!("not JSON: {e}: {out}"))?;
            let e = &v["last_error"];
            if e["source"] == "ike_setup" && e["reason"] == "authentication_failed" {
                Ok(e.to_string())
            } else {
                Err(format!("last_error {e}"))
            }
        },
    );
    s.note(format!("spoke A: explain {HUB_TUNNEL}: last_error {why}"));

    s.step("`show ike` and `show nhrp` on spoke A show the hold-down and when IKE retries");
    let held = s.eventually(
        "the hub held down in show ike and show nhrp, with the next attempt and the failure",
        SETTLE_TIMEOUT,
        |s| {
            let ike = s.ctl_ok(Node::SpokeA, &["show", "ike"]);
            let row = ike
                .lines()
                .skip_while(|l| !l.contains("Held down"))
                .find(|l| l.starts_with(HUB_NBMA))
                .filter(|l| l.contains(" sec") && l.contains("authentication_failed"))
                .ok_or_else(|| format!("no held-down row for {HUB_NBMA}:\n{ike}"))?
                .to_owned();
            let nhrp = s.ctl_ok(Node::SpokeA, &["show", "nhrp"]);
            let line = nhrp
                .lines()
                .find(|l| {
                    l.contains("IKE held down: next attempt in")
                        && l.contains("authentication_failed")
                })
                .ok_or_else(|| format!("no hold-down under the NHS:\n{nhrp}"))?
                .trim()
                .to_owned();
            Ok(format!("show ike `{}`; show nhrp `{line}`", row.trim()))
        },
    );
    s.note(format!("spoke A: {held}"));
    s.check_alive();
}

#[test]
fn wrong_nhrp_key_is_refused_with_a_clear_log_line_and_no_registration() {
    require_root_and_tools();
    let dir = TestDir::new("nhrpkey").unwrap();
    let t = Topology::new().expect("building the topology");
    let good = keys();
    let wrong = Keys {
        psk: good.psk.clone(),
        nhrp: "WRONGKEY".into(),
    };
    assert_ne!(good.nhrp, wrong.nhrp);
    let mut s = hub_and_spoke_a(&t, &dir, &good, &wrong);

    s.step("the NHRP key mismatch is logged");
    let (node, line) = s.wait_line_any(
        &[Node::Hub, Node::SpokeA],
        "NHRP authentication failure",
        REGISTRATION_TIMEOUT,
        &expect::nhrp_auth_failed,
    );
    s.note(format!("{}: {line}", node.name()));

    s.step("no registration, no traffic over the tunnel");
    let (got, out) = ping(&t.spoke_a, HUB_TUNNEL, 3, "0.5").unwrap();
    if got != 0 {
        s.fail(format!(
            "the hub answers a spoke whose registration it refused:\n{out}"
        ));
    }
    no_registration(&s, "with a wrong NHRP key");
    s.eventually(
        "the hub counts an NHRP authentication failure",
        SETTLE_TIMEOUT,
        |s| {
            let report = s.show_json(Node::Hub, "nhrp");
            match report["counters"]["auth_failures"].as_u64() {
                Some(n) if n > 0 => Ok(()),
                _ => Err(format!("{report}")),
            }
        },
    );
    s.check_alive();
}
