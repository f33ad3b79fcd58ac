//! `dmvpnctl show` against running daemons (issue 6, item 5): every `show` command in text and
//! `--json` form with concrete content, on a hub with two registered spokes (spoke B behind the
//! NAT router; topology in `dmvpn_tests::e2e`). The JSON must carry every field documented in
//! docs/dmvpnctl.md (`dmvpn_tests::scenario::schema`).
//!
//! Driver: `dmvpn_tests::scenario`. Needs root, `ip`, `nft` and `ping` (tests/install-deps.sh).
//! A failing step prints what it expected, what it got and the last log lines of every daemon;
//! the scratch directory (configurations, logs) is kept.

use std::collections::BTreeSet;

use dmvpn_tests::e2e::{
    HUB_NBMA, HUB_TUNNEL, NAT_OUTSIDE, Node, SPOKE_A_NBMA, SPOKE_A_TUNNEL, SPOKE_B_PRIVATE,
    SPOKE_B_TUNNEL, TUNNEL_IF, TestDir, Topology, ping,
};
use dmvpn_tests::require_root_and_tools;
use dmvpn_tests::scenario::schema::array;
use dmvpn_tests::scenario::show::{
    dmvpn_row, interface_packets, json_spis, number_after, sa_block, strs, text_spis,
};
use dmvpn_tests::scenario::{
    HOLDING_TIME, SETTLE_TIMEOUT, Scenario, expect, ops_config, start_registered,
};
use serde_json::Value;

/// Both spokes registered, traffic over both spokes' SAs.
fn registered<'t>(t: &'t Topology, dir: &TestDir) -> Scenario<'t> {
    let spokes = [Node::SpokeA, Node::SpokeB];
    let (mut s, _) = start_registered("ops", t, dir, &spokes, ops_config);
    s.step("traffic over both spokes' SAs");
    s.reach(&t.spoke_a, "spoke A", HUB_TUNNEL);
    s.reach(&t.hub, "hub", SPOKE_A_TUNNEL);
    s.reach(&t.spoke_b, "spoke B", HUB_TUNNEL);
    s
}

/// The hub's `show dmvpn` row and JSON peer for `tunnel`: at `nbma`, UP, with `attrs`.
fn check_hub_dmvpn_peer(
    text: &str,
    json: &Value,
    tunnel: &str,
    nbma: &str,
    attrs: &[&str],
) -> Result<(), String> {
    let row = dmvpn_row(text, tunnel);
    let ok = row
        .as_ref()
        .is_some_and(|c| c[1] == nbma && c[3] == "UP" && attrs.iter().all(|a| c[5].contains(a)));
    if !ok {
        return Err(format!(
            "want a row `{nbma} {tunnel} UP … {}`, got {row:?}:\n{text}",
            attrs.concat()
        ));
    }
    let peer = array(json, "peers")
        .iter()
        .find(|p| p["peer_tunnel"] == tunnel)
        .ok_or_else(|| format!("no peer {tunnel} in {json:#}"))?;
    let got = strs(&peer["attrs"]);
    if peer["peer_nbma"] != nbma
        || peer["state"] != "UP"
        || !attrs.iter().all(|a| got.contains(a))
        || peer["entries"].as_u64().unwrap_or(0) < 1
        || !peer["updn_secs"].is_u64()
    {
        return Err(format!(
            "--json: want {tunnel} at {nbma}, UP, attrs ⊇ {attrs:?}: {peer:#}"
        ));
    }
    Ok(())
}

#[test]
fn show_dmvpn_lists_both_spokes_on_the_hub_and_the_nhs_on_a_spoke() {
    require_root_and_tools();
    let dir = TestDir::new("ops-show-dmvpn").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = registered(&t, &dir);

    s.step("show dmvpn on the hub: both spokes UP, D, spoke B N at its post-NAT NBMA");
    s.eventually("show dmvpn on the hub", SETTLE_TIMEOUT, |s| {
        let text = s.show(Node::Hub, "dmvpn");
        let json = s.show_json(Node::Hub, "dmvpn");
        if !text.contains("Interface: dmvpn0, IPv4 NHRP Details (address 10.250.0.1/24)")
            || !text.contains("Type:Hub, NHRP Peers:2,")
        {
            return Err(format!("header:\n{text}"));
        }
        if json["interface"] != TUNNEL_IF
            || json["tunnel_addr"] != "10.250.0.1/24"
            || json["nhrp_role"] != "hub"
        {
            return Err(format!("--json: {json:#}"));
        }
        check_hub_dmvpn_peer(&text, &json, SPOKE_A_TUNNEL, SPOKE_A_NBMA, &["D"])?;
        check_hub_dmvpn_peer(&text, &json, SPOKE_B_TUNNEL, NAT_OUTSIDE, &["D", "N"])
    });

    s.step("show dmvpn --peer / show nhrp PREFIX on the hub: only what was asked for");
    s.eventually("filtered shows on the hub", SETTLE_TIMEOUT, |s| {
        let out = s.ctl_ok(
            Node::Hub,
            &["show", "dmvpn", "--peer", SPOKE_A_NBMA, "--json"],
        );
        let json: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        let peers: Vec<&Value> = array(&json, "peers")
            .iter()
            .map(|p| &p["peer_tunnel"])
            .collect();
        if peers != [&Value::from(SPOKE_A_TUNNEL)] {
            return Err(format!(
                "--peer {SPOKE_A_NBMA}: want only spoke A, got {json:#}"
            ));
        }
        let prefix = format!("{SPOKE_B_TUNNEL}/32");
        let out = s.ctl_ok(Node::Hub, &["show", "nhrp", &prefix, "--json"]);
        let json: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        let entries = array(&json, "entries");
        if entries.is_empty() || entries.iter().any(|e| e["protocol_addr"] != SPOKE_B_TUNNEL) {
            return Err(format!(
                "show nhrp {prefix}: want only spoke B, got {json:#}"
            ));
        }
        Ok(())
    });

    s.step("show dmvpn on spoke A: the NHS 10.250.0.1, UP, S");
    s.eventually("show dmvpn on spoke A", SETTLE_TIMEOUT, |s| {
        let text = s.show(Node::SpokeA, "dmvpn");
        let json = s.show_json(Node::SpokeA, "dmvpn");
        let row = dmvpn_row(&text, HUB_TUNNEL);
        if !text.contains("Type:Spoke")
            || !row
                .as_ref()
                .is_some_and(|c| c[1] == HUB_NBMA && c[3] == "UP" && c[5].contains('S'))
        {
            return Err(format!(
                "want `{HUB_NBMA} {HUB_TUNNEL} UP … S`, got {row:?}:\n{text}"
            ));
        }
        let hub = array(&json, "peers")
            .iter()
            .find(|p| p["peer_tunnel"] == HUB_TUNNEL)
            .cloned()
            .unwrap_or_default();
        if json["nhrp_role"] != "spoke"
            || json["tunnel_addr"] != "10.250.0.9/24"
            || hub["peer_nbma"] != HUB_NBMA
            || hub["state"] != "UP"
            || !strs(&hub["attrs"]).contains(&"S")
        {
            return Err(format!("--json: {json:#}"));
        }
        Ok(())
    });
    s.check_alive();
}

/// (SPI in, SPI out) pairs of the hub's `child SA installed` lines for spoke A.
fn logged_spi_pairs(s: &Scenario<'_>) -> BTreeSet<(String, String)> {
    s.lines(Node::Hub, 0, &|l| {
        expect::child_sa_installed_with(l, SPOKE_A_NBMA)
    })
    .iter()
    .filter_map(|l| {
        Some((
            expect::field(l, "spi_in")?.to_owned(),
            expect::field(l, "spi_out")?.to_owned(),
        ))
    })
    .collect()
}

/// The hub's `show sa` block for spoke A: endpoints, transport, esp-gcm 256, counters.
fn check_hub_sa_block(block: &str) -> Result<(), String> {
    let want = [
        format!("local crypto endpt.: {HUB_NBMA}, remote crypto endpt.: {SPOKE_A_NBMA}"),
        format!("peer NBMA {SPOKE_A_NBMA}, tunnel address {SPOKE_A_TUNNEL}, NHRP: "),
        "in use settings ={Transport, }".to_owned(),
        "transform: esp-gcm 256 ,".to_owned(),
        "Encr: aes-gcm-256, PRF: sha512, DH Grp:19".to_owned(),
    ];
    if let Some(w) = want.iter().find(|w| !block.contains(w.as_str())) {
        return Err(format!("lacks `{w}` for spoke A:\n{block}"));
    }
    let enc = number_after(block, "#pkts encaps:").unwrap_or(0);
    let dec = number_after(block, "#pkts decaps:").unwrap_or(0);
    if enc == 0 || dec == 0 {
        return Err(format!(
            "#pkts encaps {enc}, decaps {dec} after pings:\n{block}"
        ));
    }
    Ok(())
}

#[test]
fn show_sa_on_the_hub_agrees_with_json_the_log_and_the_spokes_mirror_image() {
    require_root_and_tools();
    let dir = TestDir::new("ops-show-sa").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = registered(&t, &dir);

    s.step("show sa on the hub: endpoints, transport, esp-gcm 256, counters, SPIs = JSON = log");
    let (json_in, json_out) = s.eventually("show sa on the hub, spoke A", SETTLE_TIMEOUT, |s| {
        let text = s.show(Node::Hub, "sa");
        let a_peer = s
            .sa_peer(Node::Hub, SPOKE_A_NBMA)
            .ok_or_else(|| format!("no peer {SPOKE_A_NBMA} in show sa --json"))?;
        let block = sa_block(&text, SPOKE_A_NBMA)
            .ok_or_else(|| format!("no block for {SPOKE_A_NBMA} in show sa:\n{text}"))?;
        check_hub_sa_block(&block)?;
        let (text_in, text_out) = text_spis(&block);
        let (json_in, json_out) = json_spis(&a_peer);
        let log_spis = logged_spi_pairs(s);
        let json_pairs: BTreeSet<(String, String)> = array(&a_peer, "children")
            .iter()
            .filter_map(|c| {
                Some((
                    c["spi_in"].as_str()?.to_owned(),
                    c["spi_out"].as_str()?.to_owned(),
                ))
            })
            .collect();
        if json_pairs.is_empty()
            || text_in != json_in
            || text_out != json_out
            || !json_pairs.is_subset(&log_spis)
        {
            return Err(format!(
                "SPIs of spoke A's Child SAs disagree: text in {text_in:?} out {text_out:?}; JSON {json_pairs:?}; log `child SA installed` {log_spis:?}\n{block}\n{a_peer:#}"
            ));
        }
        let child_ok = |c: &Value| {
            c["mode"] == "transport"
                && c["transform"] == "esp-gcm-256"
                && c["udp_encap"] == false
                && c["packets_in"].as_u64().unwrap_or(0) > 0
                && c["packets_out"].as_u64().unwrap_or(0) > 0
        };
        if a_peer["tunnel_addr"] != SPOKE_A_TUNNEL
            || a_peer["nhrp_state"] != "registered"
            || a_peer["ike"]["state"] != "established"
            || !array(&a_peer, "children").iter().any(child_ok)
        {
            return Err(format!("show sa --json, spoke A: {a_peer:#}"));
        }
        Ok((json_in, json_out))
    });

    s.step("show sa on spoke A: the mirror image of the hub's SPIs");
    s.eventually("show sa on spoke A", SETTLE_TIMEOUT, |s| {
        let text = s.show(Node::SpokeA, "sa");
        let block = sa_block(&text, HUB_NBMA)
            .ok_or_else(|| format!("no block for {HUB_NBMA}:\n{text}"))?;
        let (s_in, s_out) = text_spis(&block);
        if !block.contains(&format!(
            "local crypto endpt.: {SPOKE_A_NBMA}, remote crypto endpt.: {HUB_NBMA}"
        )) || s_in != json_out
            || s_out != json_in
        {
            return Err(format!(
                "spoke A's SPIs (in {s_in:?}, out {s_out:?}) must mirror the hub's (in {json_in:?}, out {json_out:?}):\n{block}"
            ));
        }
        Ok(())
    });
    s.check_alive();
}

#[test]
fn show_sa_shows_spoke_b_behind_the_nat_with_esp_in_udp() {
    require_root_and_tools();
    let dir = TestDir::new("ops-show-sa-nat").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = registered(&t, &dir);

    s.step("show sa on the hub, spoke B (behind the NAT): port 4500, UDP-Encaps");
    s.eventually("show sa on the hub, spoke B", SETTLE_TIMEOUT, |s| {
        let text = s.show(Node::Hub, "sa");
        let b_block = sa_block(&text, NAT_OUTSIDE)
            .ok_or_else(|| format!("no block for {NAT_OUTSIDE} in show sa:\n{text}"))?;
        if !b_block.contains(&format!("current_peer {NAT_OUTSIDE} port 4500"))
            || !b_block.contains("in use settings ={Transport UDP-Encaps, }")
        {
            return Err(format!("text:\n{b_block}"));
        }
        let b_peer = s
            .sa_peer(Node::Hub, NAT_OUTSIDE)
            .ok_or_else(|| format!("no peer {NAT_OUTSIDE} in the hub's show sa --json"))?;
        if b_peer["post_nat_nbma"] != NAT_OUTSIDE
            || b_peer["nbma"] != SPOKE_B_PRIVATE
            || b_peer["ike"]["nat_remote"] != true
            || !array(&b_peer, "children")
                .iter()
                .any(|c| c["udp_encap"] == true)
        {
            return Err(format!("--json: {b_peer:#}"));
        }
        Ok(())
    });
    s.check_alive();
}

/// The hub's `show nhrp` text and JSON: spoke A dynamic and registered, spoke B with its
/// claimed and post-NAT NBMA, the counters of two registrations, no NHS.
fn check_hub_nhrp(s: &Scenario<'_>) -> Result<(), String> {
    let text = s.show(Node::Hub, "nhrp");
    let head = format!("{SPOKE_A_TUNNEL}/32 via {SPOKE_A_TUNNEL}");
    let entry_text: Vec<&str> = text.lines().skip_while(|l| *l != head).take(4).collect();
    let ok = entry_text.len() == 4
        && entry_text[1].contains("dmvpn0 created ")
        && entry_text[1].contains(", expire ")
        && entry_text[2].starts_with("   Type: dynamic (dynamic), Flags: ")
        && entry_text[2].contains("registered")
        && entry_text[3].trim() == format!("NBMA address: {SPOKE_A_NBMA}");
    if !ok {
        return Err(format!(
            "want `{head}`, dynamic, registered, an expiry, NBMA {SPOKE_A_NBMA}; got {entry_text:?}:\n{text}"
        ));
    }
    let json = s.show_json(Node::Hub, "nhrp");
    let a = s
        .nhrp_entry(Node::Hub, SPOKE_A_TUNNEL)
        .ok_or_else(|| format!("no NHRP entry for {SPOKE_A_TUNNEL}: {json:#}"))?;
    let exp = a["expires_in_secs"].as_u64().unwrap_or(0);
    if a["kind"] != "dynamic"
        || !strs(&a["flags"]).contains(&"registered")
        || a["nbma"] != SPOKE_A_NBMA
        || a["next_hop"] != SPOKE_A_TUNNEL
        || a["holding_time_secs"] != HOLDING_TIME
        || !(1..=HOLDING_TIME).contains(&exp)
    {
        return Err(format!(
            "--json, {SPOKE_A_TUNNEL}: want dynamic, registered, NBMA {SPOKE_A_NBMA}, holding time {HOLDING_TIME}, expiry in 1..={HOLDING_TIME} s: {a:#}"
        ));
    }
    let b = s
        .nhrp_entry(Node::Hub, SPOKE_B_TUNNEL)
        .ok_or_else(|| format!("no NHRP entry for {SPOKE_B_TUNNEL}: {json:#}"))?;
    if b["nbma"] != SPOKE_B_PRIVATE
        || b["post_nat_nbma"] != NAT_OUTSIDE
        || !strs(&b["flags"]).contains(&"nat")
        || !text.contains(&format!("(Claimed NBMA address: {SPOKE_B_PRIVATE})"))
    {
        return Err(format!(
            "spoke B: want claimed {SPOKE_B_PRIVATE}, post-NAT {NAT_OUTSIDE}, flag nat: {b:#}\n{text}"
        ));
    }
    let c = &json["counters"];
    if c["rx"]["registration_request"].as_u64().unwrap_or(0) < 2
        || c["tx"]["registration_reply"].as_u64().unwrap_or(0) < 2
        || c["auth_failures"] != 0
        || !array(&json, "nhs").is_empty()
    {
        return Err(format!("--json counters/nhs: {json:#}"));
    }
    Ok(())
}

#[test]
fn show_nhrp_lists_dynamic_entries_on_the_hub_and_the_nhs_on_a_spoke() {
    require_root_and_tools();
    let dir = TestDir::new("ops-show-nhrp").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = registered(&t, &dir);

    s.step("show nhrp on the hub: 10.250.0.9/32 dynamic registered with expiry");
    s.eventually("show nhrp on the hub", SETTLE_TIMEOUT, check_hub_nhrp);

    s.step("show nhrp on spoke A: the NHS up");
    s.eventually("show nhrp on spoke A: the NHS up", SETTLE_TIMEOUT, |s| {
        let text = s.show(Node::SpokeA, "nhrp");
        let json = s.show_json(Node::SpokeA, "nhrp");
        let nhs = array(&json, "nhs").first().cloned().unwrap_or_default();
        let ok = nhs["protocol_addr"] == HUB_TUNNEL
            && nhs["nbma"] == HUB_NBMA
            && nhs["state"] == "up"
            && nhs["multicast"] == true
            && nhs["expires_in_secs"].is_u64()
            && text.lines().any(|l| {
                l.starts_with(HUB_TUNNEL)
                    && l.contains(&format!(
                        "RE NBMA Address: {HUB_NBMA} UP up, priority 0 (preferred), expire "
                    ))
            });
        ok.then_some(())
            .ok_or_else(|| format!("NHS {HUB_TUNNEL} not up:\n{text}\n{json:#}"))
    });
    s.check_alive();
}

#[test]
fn show_ike_shows_the_same_established_sa_on_the_hub_and_the_spoke() {
    require_root_and_tools();
    let dir = TestDir::new("ops-show-ike").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = registered(&t, &dir);

    s.step("show ike on the hub: aes-gcm-256/sha512/19, established, SPIs as in JSON");
    let sa = s.eventually("show ike on the hub, spoke A", SETTLE_TIMEOUT, |s| {
        let text = s.show(Node::Hub, "ike");
        let sa = s
            .ike_sa(Node::Hub, SPOKE_A_NBMA)
            .ok_or_else(|| format!("no IKE SA with {SPOKE_A_NBMA} in show ike --json"))?;
        let spi_ok = |k: &str| {
            sa[k]
                .as_str()
                .is_some_and(|s| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        if sa["state"] != "established"
            || sa["encryption"] != "aes-gcm-256"
            || sa["prf"] != "sha512"
            || sa["dh_group"] != 19
            || sa["local"] != format!("{HUB_NBMA}:500")
            || sa["remote"] != format!("{SPOKE_A_NBMA}:500")
            || sa["initiator"] != false
            || !spi_ok("spi_i")
            || !spi_ok("spi_r")
            || sa["child_count"].as_u64().unwrap_or(0) < 1
        {
            return Err(format!("--json: {sa:#}"));
        }
        let want = [
            "Encr: aes-gcm-256, PRF: sha512, Hash: None, DH Grp:19, Auth: PSK".to_owned(),
            format!("Initiator SPI : {}", sa["spi_i"].as_str().unwrap_or("?")),
            format!("Responder SPI : {}", sa["spi_r"].as_str().unwrap_or("?")),
            "NAT-T: outside (peer is behind NAT)".to_owned(),
        ];
        let row = text.lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() == 5
                && c[1] == format!("{HUB_NBMA}:500")
                && c[2] == format!("{SPOKE_A_NBMA}:500")
                && c[4] == "READY"
        });
        if !row || want.iter().any(|w| !text.contains(w.as_str())) {
            return Err(format!(
                "want a READY row {HUB_NBMA}:500 → {SPOKE_A_NBMA}:500 and {want:?}:\n{text}"
            ));
        }
        Ok(sa)
    });

    s.step("show ike on spoke A: the hub's SA, initiated by the spoke");
    s.eventually("spoke A's IKE SA", SETTLE_TIMEOUT, |s| {
        let spoke_sa = s
            .ike_sa(Node::SpokeA, HUB_NBMA)
            .ok_or_else(|| format!("no IKE SA with {HUB_NBMA} on spoke A"))?;
        if spoke_sa["initiator"] != true
            || spoke_sa["spi_i"] != sa["spi_i"]
            || spoke_sa["spi_r"] != sa["spi_r"]
        {
            return Err(format!(
                "must be the hub's, initiated by the spoke: spoke {spoke_sa:#}, hub {sa:#}"
            ));
        }
        Ok(())
    });
    s.check_alive();
}

#[test]
fn show_interface_counters_grow_with_traffic() {
    require_root_and_tools();
    let dir = TestDir::new("ops-show-if").unwrap();
    let t = Topology::new().expect("building the topology");
    let mut s = registered(&t, &dir);

    s.step("show interface on the hub: up, address, MTU");
    let (json0, (in0, out0)) = s.eventually("show interface on the hub", SETTLE_TIMEOUT, |s| {
        let text0 = s.show(Node::Hub, "interface");
        let json0 = s.show_json(Node::Hub, "interface");
        if !text0.contains("dmvpn0 is up, line protocol is up")
            || !text0.contains("Internet address is 10.250.0.1/24")
            || !text0.contains("MTU 1400 bytes")
            || json0["interface"] != TUNNEL_IF
            || json0["tunnel_addr"] != "10.250.0.1/24"
            || json0["mtu"] != 1400
        {
            return Err(format!("{text0}\n{json0:#}"));
        }
        let packets = interface_packets(&text0)
            .ok_or_else(|| format!("no packet counters in show interface:\n{text0}"))?;
        Ok((json0, packets))
    });

    s.step("10 echoes hub → spoke A: the counters grow by at least 10 packets each way");
    let (got, out) = ping(&t.hub, SPOKE_A_TUNNEL, 10, "0.05").unwrap();
    if got != 10 {
        s.fail(format!("10 pings hub → spoke A: {got} answered\n{out}"));
    }
    s.eventually(
        "show interface counters after 10 echoes",
        SETTLE_TIMEOUT,
        |s| {
            let text1 = s.show(Node::Hub, "interface");
            let json1 = s.show_json(Node::Hub, "interface");
            let (in1, out1) = interface_packets(&text1)
                .ok_or_else(|| format!("no packet counters in show interface:\n{text1}"))?;
            let d = |k: &str| {
                json1[k]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(json0[k].as_u64().unwrap_or(0))
            };
            if in1 < in0 + 10
                || out1 < out0 + 10
                || d("rx_packets") < 10
                || d("tx_packets") < 10
                || d("rx_inner_bytes") < 10 * 84
                || d("tx_inner_bytes") < 10 * 84
                // Each ESP packet is at least its inner packet plus 42 bytes (GRE, ESP header,
                // IV, trailer, ICV).
                || d("rx_esp_bytes") < d("rx_inner_bytes") + 42 * d("rx_packets")
                || d("tx_esp_bytes") < d("tx_inner_bytes") + 42 * d("tx_packets")
            {
                return Err(format!(
                    "text in {in0}→{in1}, out {out0}→{out1}; JSON before {json0:#} after {json1:#}"
                ));
            }
            Ok(())
        },
    );

    s.step("the tunnel has no IPv6 link-local address and counts no not_ipv4 drops");
    let out = t
        .hub
        .exec("ip", &["-6", "addr", "show", "dev", TUNNEL_IF])
        .expect("ip -6 addr");
    let addrs = String::from_utf8_lossy(&out.stdout).into_owned();
    if addrs.contains("fe80") {
        s.fail(format!("IPv6 address generation is on: {addrs}"));
    }
    let json = s.show_json(Node::Hub, "interface");
    if json["drops"]["not_ipv4"] != 0 {
        s.fail(format!("IPv6 noise counted as drops: {json:#}"));
    }
    s.check_alive();
}
