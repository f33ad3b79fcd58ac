//! `dmvpnctl explain DEST` against running daemons (issue 15, item 4): on spoke A of a hub and
//! two spokes (spoke B behind the NAT router; topology in `dmvpn_tests::e2e`), why traffic to
//! (1) the hub's tunnel address, (2) spoke B's LAN host before a shortcut, (3) the same host
//! after the phase 3 shortcut formed, (4) an address with no tunnel route and (5) OSPF's
//! multicast group goes where it goes — in `--json` (every documented field, checked against
//! what `show` and the kernel say) and in text.
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).

use std::time::Duration;

use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, NAT_OUTSIDE, Node, SPOKE_A_TUNNEL, SPOKE_B_LAN, SPOKE_B_LAN_HOST,
    SPOKE_B_PRIVATE, SPOKE_B_TUNNEL, TUNNEL_IF, TestDir, Topology, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::schema::{array, schema_violations};
use dmvpn_tests::scenario::{Scenario, covers, e2e_config, start_registered};
use serde_json::Value;

/// `dmvpnctl explain DST --json` on `node`: parsed, with every documented field.
#[track_caller]
fn explain(s: &Scenario<'_>, node: Node, dst: &str) -> Value {
    let out = s.ctl_ok(node, &["explain", dst, "--json"]);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| s.fail(format!("`explain {dst} --json` is not JSON: {e}\n{out}")));
    let bad = schema_violations("explain", &v);
    if !bad.is_empty() {
        s.fail(format!(
            "`explain {dst} --json` does not follow docs/dmvpnctl.md: {bad:?}\n{out}"
        ));
    }
    v
}

/// Fails with the report unless `ok`.
#[track_caller]
fn want(s: &Scenario<'_>, ok: bool, what: &str, v: &Value) {
    if !ok {
        s.fail(format!(
            "explain {}: want {what}, got {v:#}",
            v["destination"]
        ));
    }
}

/// The sum of `packets_out` over the report's Child SAs.
fn packets_out(v: &Value) -> u64 {
    array(&v["peer"], "children")
        .iter()
        .filter_map(|c| c["packets_out"].as_u64())
        .sum()
}

/// The text form, which must carry `lines` (each a whole line).
#[track_caller]
fn text_has(s: &Scenario<'_>, dst: &str, lines: &[&str]) -> String {
    let text = s.ctl_ok(Node::SpokeA, &["explain", dst]);
    for l in lines {
        if !text.lines().any(|x| x == *l) {
            s.fail(format!("`explain {dst}`: no line {l:?} in\n{text}"));
        }
    }
    text
}

#[test]
fn explain_follows_the_dataplane_from_nhs_to_shortcut() {
    require_root_and_tools();
    let dir = TestDir::new("ops-explain").unwrap();
    let t = Topology::new().expect("building the topology");
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, _) = start_registered("ops-explain", &t, &dir, &spokes, e2e_config);
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);

    s.step("1. the hub's tunnel address: connected route, NHS entry, IKE and Child SA up");
    let v = explain(&s, Node::SpokeA, HUB_TUNNEL);
    let r = &v["route"];
    want(
        &s,
        v["forwarding"] == "send"
            && r["source"] == "connected"
            && r["gateway"].is_null()
            && r["prefix"] == "10.250.0.0"
            && r["prefix_len"] == 24
            && v["kernel"]["lookup"] == "tunnel"
            && v["next_hop"] == HUB_TUNNEL
            && v["via_nhs_default"] == false
            && v["nbma"] == HUB_NBMA,
        "send to the NHS over the connected route, which the kernel uses too",
        &v,
    );
    let e = &v["nhrp_entry"];
    want(
        &s,
        e["protocol_addr"] == HUB_TUNNEL
            && e["kind"] == "nhs"
            && e["nbma"] == HUB_NBMA
            && e["expires_in_secs"].as_u64().is_some_and(|x| x > 0),
        "the NHS's NHRP entry with its expiry",
        &v,
    );
    let p = &v["peer"];
    want(
        &s,
        p["nbma"] == HUB_NBMA
            && p["nhrp_state"] == "up"
            && p["ike"]["state"] == "established"
            && !array(p, "children").is_empty()
            && v["outbound"]["udp_encap"] == false
            && array(p, "children")
                .iter()
                .any(|c| c["spi_out"] == v["outbound"]["spi_out"]),
        "the hub's IKE SA and the Child SA the dataplane seals with",
        &v,
    );
    let sa = s
        .sa_peer(Node::SpokeA, HUB_NBMA)
        .unwrap_or_else(|| s.fail("no hub in show sa"));
    want(
        &s,
        sa["ike"]["spi_i"] == p["ike"]["spi_i"]
            && sa["children"].as_array().map(Vec::len) == p["children"].as_array().map(Vec::len),
        &format!("the SAs `show sa` lists: {sa:#}"),
        &v,
    );
    // The counters are live: pings to the hub are sealed on that SA.
    let before = packets_out(&v);
    let (got, out) = ping(&t.spoke_a, HUB_TUNNEL, 5, "0.1").unwrap();
    if got < 5 {
        s.fail(format!("ping spoke A → hub: {got}/5\n{out}"));
    }
    let after = s.eventually(
        "explain's counters count the pings",
        Duration::from_secs(5),
        |s| {
            let n = packets_out(&explain(s, Node::SpokeA, HUB_TUNNEL));
            if n >= before + 5 {
                Ok(n)
            } else {
                Err(format!("packets_out {before} → {n}"))
            }
        },
    );
    s.note(format!("packets_out toward the hub {before} → {after}"));
    let _ = text_has(
        &s,
        HUB_TUNNEL,
        &[
            &format!("Destination {HUB_TUNNEL}: sent to NBMA {HUB_NBMA} (send)"),
            "Routing entry for 10.250.0.0/24",
            &format!("  * directly connected, via {TUNNEL_IF}"),
            &format!("Kernel: into {TUNNEL_IF}"),
            &format!("Next hop {HUB_TUNNEL}: NHRP mapping to NBMA {HUB_NBMA}"),
            "Last error: none",
        ],
    );

    s.step("2. spoke B's LAN host before any shortcut: the configured route via the hub");
    let v = explain(&s, Node::SpokeA, SPOKE_B_LAN_HOST);
    let r = &v["route"];
    want(
        &s,
        v["forwarding"] == "send"
            && r["source"] == "dmvpnd_static"
            && r["protocol"] == 77
            && r["gateway"] == HUB_TUNNEL
            && format!("{}/{}", r["prefix"].as_str().unwrap_or(""), r["prefix_len"]) == SPOKE_B_LAN
            && v["next_hop"] == HUB_TUNNEL
            && v["nbma"] == HUB_NBMA
            && v["nhrp_shortcut"].is_null()
            && v["last_nhrp_event"].is_null(),
        "the static route via the hub, no shortcut, no NHRP event yet",
        &v,
    );
    let _ = text_has(
        &s,
        SPOKE_B_LAN_HOST,
        &[
            "  Known via \"dmvpnd_static\" (proto 77), metric 100",
            &format!("  * {HUB_TUNNEL}, via {TUNNEL_IF}"),
            "Last NHRP event: none recorded",
        ],
    );

    s.step("3. after the hub's redirect: the NHRP shortcut, B's entry, the direct SA");
    let v = s.eventually(
        "explain names the shortcut to spoke B",
        Duration::from_secs(30),
        |s| {
            let v = explain(s, Node::SpokeA, SPOKE_B_LAN_HOST);
            if v["route"]["source"] == "nhrp_shortcut" && v["forwarding"] == "send" {
                return Ok(v);
            }
            let _ = ping(&t.lan_a, SPOKE_B_LAN_HOST, 1, "1");
            Err(format!("{v:#}"))
        },
    );
    let r = &v["route"];
    let e = &v["nhrp_entry"];
    want(
        &s,
        r["gateway"] == SPOKE_B_TUNNEL
            && r["protocol"] == 77
            && covers(
                &format!("{}/{}", r["prefix"].as_str().unwrap_or(""), r["prefix_len"]),
                SPOKE_B_LAN_HOST,
            )
            && v["next_hop"] == SPOKE_B_TUNNEL
            && v["via_nhs_default"] == false
            && v["nbma"] == NAT_OUTSIDE,
        "the shortcut via spoke B, to B's post-NAT NBMA",
        &v,
    );
    want(
        &s,
        e["protocol_addr"] == SPOKE_B_TUNNEL
            && e["nbma"] == SPOKE_B_PRIVATE
            && e["post_nat_nbma"] == NAT_OUTSIDE
            && e["expires_in_secs"].as_u64().is_some_and(|x| x > 0)
            && v["nhrp_shortcut"]["kind"] == "shortcut"
            && v["nhrp_shortcut"]["next_hop"] == SPOKE_B_TUNNEL,
        "B's NHRP entry (claimed and post-NAT NBMA) and the shortcut entry",
        &v,
    );
    let p = &v["peer"];
    want(
        &s,
        p["ike"]["state"] == "established"
            && p["ike"]["remote"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("{NAT_OUTSIDE}:")))
            && v["outbound"]["udp_encap"] == true
            && v["outbound"]["port"].as_u64().is_some_and(|x| x > 0)
            && array(p, "children")
                .iter()
                .any(|c| c["spi_out"] == v["outbound"]["spi_out"] && c["udp_encap"] == true),
        "the direct IKE SA to spoke B (through the NAT) and its NAT-T Child SA",
        &v,
    );
    let ev = &v["last_nhrp_event"];
    want(
        &s,
        ev["kind"] == "shortcut_installed"
            && ev["next_hop"] == SPOKE_B_TUNNEL
            && ev["prefix"] == r["prefix"]
            && ev["prefix_len"] == r["prefix_len"]
            && ev["age_secs"].as_u64().is_some_and(|a| a < 60)
            && v["history_evicted"] == 0,
        "the shortcut's installation as the last NHRP event",
        &v,
    );
    let text = text_has(
        &s,
        SPOKE_B_LAN_HOST,
        &[
            &format!("Destination {SPOKE_B_LAN_HOST}: sent to NBMA {NAT_OUTSIDE} (send)"),
            "  Known via \"nhrp_shortcut\" (proto 77), metric 10",
            &format!("  * {SPOKE_B_TUNNEL}, via {TUNNEL_IF}"),
            &format!("Next hop {SPOKE_B_TUNNEL}: NHRP mapping to NBMA {NAT_OUTSIDE}"),
        ],
    );
    s.note(format!(
        "explain {SPOKE_B_LAN_HOST} after the shortcut:\n{text}"
    ));
    // Spoke B's own tunnel address now goes direct too, not via the NHS.
    let v = explain(&s, Node::SpokeA, SPOKE_B_TUNNEL);
    want(
        &s,
        v["nbma"] == NAT_OUTSIDE && v["via_nhs_default"] == false,
        "spoke B's tunnel address direct",
        &v,
    );

    s.step("4. an address without a tunnel route: the kernel does not send it to dmvpnd");
    let v = explain(&s, Node::SpokeA, "192.0.2.77");
    want(
        &s,
        v["forwarding"] == "no_route"
            && (v["kernel"]["lookup"] == "other_interface"
                || v["kernel"]["lookup"] == "unreachable")
            && v["route"].is_null()
            && v["next_hop"].is_null()
            && v["nbma"].is_null()
            && v["peer"].is_null()
            && v["outbound"].is_null(),
        "no_route and nothing else",
        &v,
    );
    let _ = text_has(
        &s,
        "192.0.2.77",
        &[&format!(
            "% Network not in table (tunnel routes of {TUNNEL_IF})"
        )],
    );

    s.step("4b. a longer route off the tunnel wins in the kernel over the tunnel route");
    // The mirror holds only tunnel routes, so its match (B's LAN via the hub, or the
    // shortcut) is not what decides: the kernel's lookup is.
    let off_tunnel = "172.16.13.99";
    t.spoke_a
        .ip(&["route", "add", &format!("{off_tunnel}/32"), "dev", "eth0"])
        .unwrap_or_else(|e| s.fail(format!("adding a route off the tunnel: {e:#}")));
    let v = explain(&s, Node::SpokeA, off_tunnel);
    let _ = t
        .spoke_a
        .ip(&["route", "del", &format!("{off_tunnel}/32"), "dev", "eth0"]);
    want(
        &s,
        v["forwarding"] == "no_route"
            && v["kernel"]["lookup"] == "other_interface"
            && !v["route"].is_null()
            && covers(
                &format!(
                    "{}/{}",
                    v["route"]["prefix"].as_str().unwrap_or(""),
                    v["route"]["prefix_len"]
                ),
                off_tunnel,
            ),
        "no_route: the kernel sends it out of eth0 although a tunnel route covers it",
        &v,
    );
    let v = explain(&s, Node::SpokeA, off_tunnel);
    want(
        &s,
        v["forwarding"] == "send" && v["kernel"]["lookup"] == "tunnel",
        "the tunnel again once the longer route is gone",
        &v,
    );

    s.step("5. OSPF's multicast group: replicated to the NHS");
    let v = explain(&s, Node::SpokeA, "224.0.0.5");
    want(
        &s,
        v["forwarding"] == "multicast" && strs_contain(&v["multicast_to"], HUB_NBMA),
        "multicast to the NHS",
        &v,
    );

    s.step("6. bad destinations are refused without reaching the daemon's state");
    for bad in ["10.250.0", "10.250.0.1/24", "2001:db8::1"] {
        let c = s.ctl(Node::SpokeA, &["explain", bad]);
        if c.code != Some(1) || c.stderr.is_empty() || !c.stdout.is_empty() {
            s.fail(format!("explain {bad}: want exit 1 and an error: {c}"));
        }
    }
    // The hub answers too: spoke A is a registered peer with a direct SA.
    let v = explain(&s, Node::Hub, SPOKE_A_TUNNEL);
    want(
        &s,
        v["forwarding"] == "send" && v["nhrp_entry"]["kind"] == "dynamic",
        "the hub sends to spoke A on its registration",
        &v,
    );

    s.check_no_errors();
    s.check_alive();
    s.finish();
}

fn strs_contain(v: &Value, s: &str) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(s)))
}
