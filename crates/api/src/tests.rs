//! The renderers against the IOS layouts, the JSON field names of schema v1, and the control
//! socket's wire format, all on the example reports.

use crate::ctl::{Prefix, Request, Response, Show, ShowFilter, group_id, group_name};
use crate::fixtures;
use crate::render::ios_time;
use crate::schema::*;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// The line after the one equal to `anchor` that starts with `prefix`.
fn after<'a>(text: &'a str, anchor: &str, prefix: &str) -> &'a str {
    let l = lines(text);
    let start = l
        .iter()
        .position(|x| x.trim_end() == anchor)
        .unwrap_or_else(|| panic!("no {anchor:?} in\n{text}"));
    l[start..]
        .iter()
        .find(|x| x.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} after {anchor:?} in\n{text}"))
}

#[test]
fn ios_times() {
    assert_eq!(ios_time(0), "00:00:00");
    assert_eq!(ios_time(252), "00:04:12");
    assert_eq!(ios_time(86_399), "23:59:59");
    assert_eq!(ios_time(86_400 * 2 + 3 * 3600 + 59), "2d03h");
    assert_eq!(ios_time(86_400 * 9), "1w2d");
}

#[test]
fn show_dmvpn_columns() {
    let text = fixtures::dmvpn().to_string();
    assert!(text.starts_with("Legend: Attrb --> S - Static, D - Dynamic, I - Incomplete\n"));
    assert!(text.contains("\nInterface: dmvpn0, IPv4 NHRP Details (address 10.250.0.9/24)\n"));
    assert!(text.contains("\nType:Spoke, NHRP Peers:2,\n"));
    let l = lines(&text);
    let header = l.iter().position(|x| x.starts_with(" # Ent")).unwrap();
    assert_eq!(
        l[header],
        " # Ent Peer NBMA Addr  Peer Tunnel Add State  UpDn Tm Attrb"
    );
    assert_eq!(
        l[header + 1],
        " ----- --------------- --------------- ----- -------- -----"
    );
    assert_eq!(
        l[header + 2],
        "     1 198.51.100.1         10.250.0.1    UP 00:04:12     S"
    );
    assert_eq!(
        l[header + 3],
        "     2 203.0.113.7          10.250.0.5  NHRP    2d03h  DNT1"
    );
    // Every value ends under the end of its dashes (right-aligned) or starts under their
    // start (NBMA, left-aligned), as on IOS.
    let dashes = l[header + 1];
    let spans: Vec<(usize, usize)> =
        dashes
            .match_indices('-')
            .fold(Vec::new(), |mut v: Vec<(usize, usize)>, (i, _)| {
                match v.last_mut() {
                    Some(last) if last.1 == i => last.1 = i + 1,
                    _ => v.push((i, i + 1)),
                }
                v
            });
    assert_eq!(spans.len(), 6);
    let row = l[header + 2];
    assert_eq!(&row[spans[1].0..spans[1].0 + 12], "198.51.100.1");
    assert_eq!(&row[spans[2].1 - 10..spans[2].1], "10.250.0.1");
    assert_eq!(&row[spans[3].1 - 2..spans[3].1], "UP");
    assert_eq!(&row[spans[4].1 - 8..spans[4].1], "00:04:12");
    assert_eq!(&row[spans[5].1 - 1..spans[5].1], "S");
}

#[test]
fn show_sa_reads_like_show_crypto_ipsec_sa() {
    let text = fixtures::sa().to_string();
    let l = lines(&text);
    assert_eq!(l[0], "interface: dmvpn0");
    assert!(l.contains(&"   current_peer 198.51.100.1 port 4500"));
    assert!(l.contains(&"   peer NBMA 198.51.100.1, tunnel address 10.250.0.1, NHRP: up"));
    assert!(l.contains(
        &"   IKEv2 SA: READY (Established), spi_i 8f1e2d3c4b5a6978, spi_r 0102030405060708, initiator"
    ));
    assert!(l.contains(
        &"     Encr: aes-gcm-256, PRF: sha512, DH Grp:19, age 00:20:34, rekey in 23:39:26"
    ));
    assert!(l.contains(&"    #pkts encaps: 1204, #pkts encrypt: 1204, #pkts digest: 1204"));
    assert!(l.contains(&"    #pkts decaps: 1187, #pkts decrypt: 1187, #pkts verify: 1187"));
    assert!(l.contains(&"    #pkts verify failed: 2"));
    assert!(l.contains(&"    #pkts replay failed (rcv): 3"));
    assert!(
        l.contains(&"     local crypto endpt.: 172.16.0.10, remote crypto endpt.: 198.51.100.1")
    );
    assert!(l.contains(&"     current outbound spi: 0xC0FFEE01(3237998081)"));
    // The inbound SPI is listed under inbound, the outbound one under outbound.
    assert_eq!(
        after(&text, "     inbound esp sas:", "      spi:"),
        "      spi: 0x1A2B3C4D(439041101)"
    );
    assert_eq!(
        after(&text, "     outbound esp sas:", "      spi:"),
        "      spi: 0xC0FFEE01(3237998081)"
    );
    assert_eq!(
        after(&text, "     inbound esp sas:", "        in use settings"),
        "        in use settings ={Transport UDP-Encaps, }"
    );
    assert_eq!(
        after(&text, "     inbound esp sas:", "        packets:"),
        "        packets: 1187, inner bytes: 145020, esp bytes: 196656"
    );
    assert_eq!(
        after(&text, "     outbound esp sas:", "        packets:"),
        "        packets: 1204, inner bytes: 150112, esp bytes: 202060"
    );
    assert_eq!(
        after(&text, "     inbound esp sas:", "        sa timing"),
        "        sa timing: remaining key lifetime (sec): 2400"
    );
    assert_eq!(
        after(&text, "     inbound esp sas:", "        replay drops"),
        "        replay drops: 3, auth failures: 2"
    );
}

#[test]
fn show_nhrp_reads_like_show_ip_nhrp() {
    let text = fixtures::nhrp().to_string();
    let l = lines(&text);
    assert_eq!(l[0], "10.250.0.9/32 via 10.250.0.9");
    assert_eq!(l[1], "   dmvpn0 created 00:00:00, never expire");
    assert_eq!(l[2], "   Type: local (local), Flags: unique nat");
    assert_eq!(l[3], "   NBMA address: 192.0.2.10");
    assert_eq!(l[4], "    (Claimed NBMA address: 172.16.0.10)");
    assert_eq!(l[5], "10.250.0.1/32 via 10.250.0.1");
    assert_eq!(l[6], "   dmvpn0 created 00:00:00, expire 01:39:06");
    assert_eq!(l[7], "   Type: static (nhs), Flags: registered nhs");
    assert_eq!(l[8], "   NBMA address: 198.51.100.1");
    assert!(
        l.contains(&"10.250.0.1      RE NBMA Address: 198.51.100.1 UP up, priority 0 (preferred), expire 01:39:06, multicast")
    );
    assert!(l.contains(&"dmvpn0: Sent: Total 12"));
    assert!(l.contains(&"           12 registration_request"));
    assert!(l.contains(&"   Dropped (unexpected_reply): 1"));
}

#[test]
fn show_ike_and_interface() {
    let text = fixtures::ike_report().to_string();
    let l = lines(&text);
    assert_eq!(
        l[2],
        "Tunnel-id Local                 Remote                fvrf/ivrf   Status"
    );
    assert_eq!(
        l[3],
        "1         172.16.0.10:4500      198.51.100.1:4500     none/none   READY"
    );
    assert!(l.contains(&"      Active Time: 1234 sec, rekey in: 85166 sec"));
    assert!(l.contains(&"      NAT-T: inside (we are behind NAT)"));
    assert!(
        l.contains(&"198.51.100.77         3         in 31 sec         authentication_failed"),
        "{text}"
    );
    let v = serde_json::to_value(fixtures::ike_report()).unwrap();
    assert_eq!(v["backoff"][0]["next_attempt_in_secs"], 31);
    assert_eq!(v["backoff"][0]["last_failure"], "authentication_failed");
    // Reports from a daemon without the field still decode.
    let old: IkeReport = serde_json::from_str(r#"{"schema_version":1,"sas":[]}"#).unwrap();
    assert!(old.backoff.is_empty());

    let text = fixtures::interface().to_string();
    let l = lines(&text);
    assert_eq!(l[0], "dmvpn0 is up, line protocol is up");
    assert!(l.contains(&"  Internet address is 10.250.0.9/24"));
    assert!(l.contains(&"     1187 packets input, 145020 bytes (ESP 196656 bytes)"));
    assert!(l.contains(&"     1204 packets output, 150112 bytes (ESP 202060 bytes)"));
    assert!(l.contains(&"     5 drops"));
    assert!(l.contains(&"                3 replay"));
    assert!(l.contains(&"                2 auth_failed"));
    assert!(!text.contains("no_room"), "zero reasons are not listed");
}

#[test]
fn json_field_names_are_stable() {
    let v = serde_json::to_value(fixtures::dmvpn()).unwrap();
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["nhrp_role"], "spoke");
    assert_eq!(v["tunnel_addr"], "10.250.0.9/24");
    let p = &v["peers"][1];
    assert_eq!(p["peer_nbma"], "203.0.113.7");
    assert_eq!(p["peer_tunnel"], "10.250.0.5");
    assert_eq!(p["state"], "NHRP");
    assert_eq!(p["updn_secs"], 2 * 86_400 + 3 * 3600);
    assert_eq!(p["attrs"], serde_json::json!(["D", "N", "T1"]));

    let v = serde_json::to_value(fixtures::sa()).unwrap();
    let p = &v["peers"][0];
    // Absent values are null, not missing.
    assert!(p.as_object().unwrap().contains_key("post_nat_nbma"));
    assert!(p["post_nat_nbma"].is_null());
    assert_eq!(p["nhrp_state"], "up");
    assert_eq!(p["ike"]["state"], "established");
    assert_eq!(p["ike"]["spi_i"], "8f1e2d3c4b5a6978");
    assert_eq!(p["ike"]["local"], "172.16.0.10:4500");
    assert_eq!(p["ike"]["dh_group"], 19);
    let c = &p["children"][0];
    assert_eq!(c["spi_in"], "0x1a2b3c4d");
    assert_eq!(c["mode"], "transport");
    assert_eq!(c["replay_drops"], 3);
    assert_eq!(c["rekey_in_secs"], 2400);
    // Schema 2: every byte counter says which bytes it counts.
    assert_eq!(c["inner_bytes_in"], 145_020);
    assert_eq!(c["esp_bytes_out"], 202_060);
    assert!(c.get("bytes_in").is_none());

    let v = serde_json::to_value(fixtures::nhrp()).unwrap();
    assert_eq!(v["entries"][0]["kind"], "local");
    assert_eq!(
        v["entries"][0]["flags"],
        serde_json::json!(["unique", "nat"])
    );
    assert!(v["entries"][0]["expires_in_secs"].is_null());
    assert_eq!(v["nhs"][0]["state"], "up");
    assert_eq!(v["counters"]["tx"]["registration_request"], 12);
    assert_eq!(v["counters"]["rx"].as_object().unwrap().len(), 9);

    // Everything round-trips.
    let back: SaReport =
        serde_json::from_value(serde_json::to_value(fixtures::sa()).unwrap()).unwrap();
    assert_eq!(back, fixtures::sa());
    let back: NhrpReport =
        serde_json::from_value(serde_json::to_value(fixtures::nhrp()).unwrap()).unwrap();
    assert_eq!(back, fixtures::nhrp());
}

#[test]
fn request_wire_format() {
    let cases = [
        (
            r#"{"cmd":"show","what":"sa"}"#,
            Request::Show {
                what: Show::Sa,
                filter: ShowFilter::default(),
            },
        ),
        (
            r#"{"cmd":"show","what":"interface"}"#,
            Request::Show {
                what: Show::Interface,
                filter: ShowFilter::default(),
            },
        ),
        (
            r#"{"cmd":"show","what":"dmvpn","peer":"198.51.100.7","prefix":"10.250.0.0/16"}"#,
            Request::Show {
                what: Show::Dmvpn,
                filter: ShowFilter {
                    peer: Some("198.51.100.7".parse().unwrap()),
                    prefix: Some("10.250.9.9/16".parse().unwrap()),
                },
            },
        ),
        (
            r#"{"cmd":"clear_sa","peer":"198.51.100.1"}"#,
            Request::ClearSa {
                peer: "198.51.100.1".parse().unwrap(),
            },
        ),
        (
            r#"{"cmd":"clear_child_sa","peer":"198.51.100.1"}"#,
            Request::ClearChildSa {
                peer: "198.51.100.1".parse().unwrap(),
            },
        ),
        (r#"{"cmd":"clear_nhrp"}"#, Request::ClearNhrp),
        (r#"{"cmd":"reload"}"#, Request::Reload),
    ];
    for (text, req) in cases {
        assert_eq!(
            serde_json::from_str::<Request>(text).unwrap(),
            req,
            "{text}"
        );
        assert_eq!(serde_json::to_string(&req).unwrap(), text);
    }
    for bad in [
        r#"{"cmd":"show","what":"routes"}"#,
        r#"{"cmd":"clear_sa","peer":"not-an-ip"}"#,
        r#"{"cmd":"clear_child_sa"}"#,
        r#"{"cmd":"reload","extra":1}"#,
        r#"{"cmd":"clear_nhrp","peer":"198.51.100.1"}"#,
        r#"{"cmd":"show","what":"nhrp","prefix":"10.250.0.0/33"}"#,
        r#"{"cmd":"reload","prefix":"10.0.0.0/8"}"#,
        r#"{"cmd":"show"}"#,
        r#"{"what":"sa"}"#,
        r#"{"cmd":"format_disk"}"#,
        r#"[]"#,
    ] {
        assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
    }
}

#[test]
fn response_wire_format() {
    let ok = Response::ok(&Ack::new("cleared"));
    assert_eq!(
        String::from_utf8(ok.line()).unwrap(),
        // Through `Response::ok` keys inside data come out sorted (serde_json's map); JSON
        // readers don't care (`show` answers, by `ok_line`, keep the structs' order).
        "{\"schema_version\":2,\"ok\":true,\"data\":{\"message\":\"cleared\",\"schema_version\":2}}\n"
    );
    let err = Response::error("nope");
    assert_eq!(
        String::from_utf8(err.line()).unwrap(),
        "{\"schema_version\":2,\"ok\":false,\"error\":\"nope\"}\n"
    );
    let back: Response = serde_json::from_slice(&Response::ok(&fixtures::sa()).line()).unwrap();
    assert!(back.ok);
    assert_eq!(
        serde_json::from_value::<SaReport>(back.data.unwrap()).unwrap(),
        fixtures::sa()
    );
}

#[test]
fn etc_group_lines() {
    let text = "root:x:0:\ndmvpnd:x:991:alice,bob\n# comment\nbroken\nnogid:x::\n";
    let v: Vec<_> = crate::ctl::group_entries(text).collect();
    assert_eq!(v, vec![("root", 0), ("dmvpnd", 991)]);
    assert_eq!(group_id("root"), Some(0));
    assert_eq!(group_name(0).as_deref(), Some("root"));
}

#[test]
fn answers_decode_by_request() {
    let show = |what| Request::Show {
        what,
        filter: ShowFilter::default(),
    };
    let v = |r: serde_json::Result<serde_json::Value>| r.unwrap();
    let cases = [
        (
            show(Show::Sa),
            v(serde_json::to_value(fixtures::sa())),
            fixtures::sa().to_string(),
        ),
        (
            show(Show::Dmvpn),
            v(serde_json::to_value(fixtures::dmvpn())),
            fixtures::dmvpn().to_string(),
        ),
        (
            show(Show::Nhrp),
            v(serde_json::to_value(fixtures::nhrp())),
            fixtures::nhrp().to_string(),
        ),
        (
            show(Show::Ike),
            v(serde_json::to_value(fixtures::ike_report())),
            fixtures::ike_report().to_string(),
        ),
        (
            show(Show::Interface),
            v(serde_json::to_value(fixtures::interface())),
            fixtures::interface().to_string(),
        ),
        (
            Request::ClearNhrp,
            v(serde_json::to_value(Ack::new("cleared"))),
            "cleared\n".to_owned(),
        ),
    ];
    for (req, data, want) in cases {
        assert_eq!(crate::render::text(&req, data).unwrap(), want, "{req:?}");
    }
    // A report where an Ack is expected, and a future schema.
    let e = crate::render::text(&Request::Reload, serde_json::json!({"schema_version": 2}))
        .unwrap_err();
    assert_eq!(e.other_version(), None);
    let e = crate::render::text(
        &show(Show::Dmvpn),
        serde_json::json!({"schema_version": 3, "peers": "renamed"}),
    )
    .unwrap_err();
    assert_eq!(e.other_version(), Some(3));
    assert!(
        e.to_string().starts_with("schema version 3, expected 2: "),
        "{e}"
    );
}

// The daemon encodes its `show` answers off the control loop with `ok_line` (keys in the
// structs' order; explain and acknowledgements go through `Response::ok`, keys sorted): a
// client must read exactly what `Response::ok(..).line()` gives, whatever the order.
#[test]
fn ok_line_reads_back_as_ok() {
    fn same<T: serde::Serialize>(data: &T) {
        let line = Response::ok_line(data);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let back: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, Response::ok(data));
        let classic: Response = serde_json::from_slice(&Response::ok(data).line()).unwrap();
        assert_eq!(back, classic);
    }
    same(&fixtures::sa());
    same(&fixtures::dmvpn());
    same(&fixtures::nhrp());
    same(&fixtures::ike_report());
    same(&fixtures::interface());
    same(&fixtures::explain());
    same(&Ack::new("cleared"));
}

/// Schema v1 byte for byte, field order included (`show` lines keep the structs' order;
/// lines that go through `serde_json::Value` sort the keys).
#[test]
fn schema_v1_golden() {
    assert_eq!(
        serde_json::to_string(&fixtures::dmvpn()).unwrap(),
        concat!(
            r#"{"schema_version":2,"interface":"dmvpn0","tunnel_addr":"10.250.0.9/24","#,
            r#""nhrp_role":"spoke","peers":[{"peer_nbma":"198.51.100.1","#,
            r#""peer_tunnel":"10.250.0.1","entries":1,"state":"UP","updn_secs":252,"#,
            r#""attrs":["S"]},{"peer_nbma":"203.0.113.7","peer_tunnel":"10.250.0.5","#,
            r#""entries":2,"state":"NHRP","updn_secs":183600,"attrs":["D","N","T1"]}]}"#,
        )
    );
    assert_eq!(
        serde_json::to_string(&fixtures::sa()).unwrap(),
        concat!(
            r#"{"schema_version":2,"interface":"dmvpn0","peers":[{"nbma":"198.51.100.1","#,
            r#""post_nat_nbma":null,"tunnel_addr":"10.250.0.1","nhrp_state":"up","#,
            r#""ike":{"state":"established","state_detail":"Established","#,
            r#""spi_i":"8f1e2d3c4b5a6978","spi_r":"0102030405060708","initiator":true,"#,
            r#""encryption":"aes-gcm-256","prf":"sha512","dh_group":19,"age_secs":1234,"#,
            r#""rekey_in_secs":85166,"local":"172.16.0.10:4500","remote":"198.51.100.1:4500","#,
            r#""remote_id":"198.51.100.1","nat_local":true,"nat_remote":false,"child_count":1},"#,
            r#""children":[{"spi_in":"0x1a2b3c4d","spi_out":"0xc0ffee01","mode":"transport","#,
            r#""transform":"esp-gcm-256","esn":false,"udp_encap":true,"packets_in":1187,"#,
            r#""inner_bytes_in":145020,"esp_bytes_in":196656,"packets_out":1204,"#,
            r#""inner_bytes_out":150112,"esp_bytes_out":202060,"replay_drops":3,"#,
            r#""auth_failures":2,"age_secs":1200,"rekey_in_secs":2400}]}]}"#,
        )
    );
}

#[test]
fn show_prefixes_parse_mask_and_match() {
    let p: Prefix = "10.250.9.9/16".parse().unwrap();
    assert_eq!(p.to_string(), "10.250.0.0/16");
    assert!(p.contains("10.250.200.1".parse().unwrap()));
    assert!(!p.contains("10.251.0.1".parse().unwrap()));
    assert!(!p.contains("2001:db8::1".parse().unwrap()));
    let host: Prefix = "10.250.0.9".parse().unwrap();
    assert_eq!(host.len, 32);
    assert!(host.contains("10.250.0.9".parse().unwrap()));
    let all: Prefix = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("192.0.2.1".parse().unwrap()));
    for bad in ["10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/-1"] {
        assert!(bad.parse::<Prefix>().is_err(), "{bad}");
    }
}
