//! `explain`: its request on the wire, its report's JSON field names and its text.

use crate::ctl::{Request, Show, ShowFilter};
use crate::explain::*;
use crate::fixtures;

#[test]
fn explain_request_wire_format() {
    let text = r#"{"cmd":"explain","destination":"10.1.2.3"}"#;
    let req = Request::Explain {
        destination: "10.1.2.3".parse().unwrap(),
    };
    assert_eq!(serde_json::from_str::<Request>(text).unwrap(), req);
    assert_eq!(serde_json::to_string(&req).unwrap(), text);
    // A show request still serializes without the new field.
    let show = Request::Show {
        what: Show::Sa,
        filter: ShowFilter::default(),
    };
    assert_eq!(
        serde_json::to_string(&show).unwrap(),
        r#"{"cmd":"show","what":"sa"}"#
    );

    let err = |line: &str| {
        serde_json::from_str::<Request>(line)
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(r#"{"cmd":"explain"}"#).contains("explain needs \"destination\""),
        "{}",
        err(r#"{"cmd":"explain"}"#)
    );
    assert!(
        err(r#"{"cmd":"explain","destination":"10.1.2"}"#)
            .contains("\"10.1.2\" is not an IPv4 address")
    );
    assert!(err(r#"{"cmd":"explain","destination":"2001:db8::1"}"#).contains("IPv4 only"));
    for bad in [
        r#"{"cmd":"explain","destination":"10.1.2.0/24"}"#,
        r#"{"cmd":"explain","destination":""}"#,
        r#"{"cmd":"explain","destination":7}"#,
        r#"{"cmd":"explain","destination":"10.1.2.3","peer":"198.51.100.1"}"#,
        r#"{"cmd":"explain","destination":"10.1.2.3","what":"sa"}"#,
        r#"{"cmd":"explain","destination":"10.1.2.3","extra":1}"#,
        r#"{"cmd":"show","what":"sa","destination":"10.1.2.3"}"#,
        r#"{"cmd":"reload","destination":"10.1.2.3"}"#,
    ] {
        assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
    }
}

#[test]
fn explain_json_field_names_are_stable() {
    let v = serde_json::to_value(fixtures::explain()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "schema_version",
        "interface",
        "destination",
        "forwarding",
        "kernel",
        "route",
        "next_hop",
        "via_nhs_default",
        "nbma",
        "nhrp_entry",
        "nhrp_shortcut",
        "outbound",
        "peer",
        "multicast_to",
        "last_nhrp_event",
        "last_error",
        "history_evicted",
    ];
    want.sort_unstable();
    assert_eq!(keys, want, "serde_json::Value sorts keys");
    assert_eq!(v["forwarding"], "send");
    assert_eq!(v["route"]["source"], "nhrp_shortcut");
    assert_eq!(v["kernel"]["lookup"], "tunnel");
    assert!(v["kernel"]["error"].is_null());
    assert_eq!(v["route"]["protocol"], 77);
    assert_eq!(v["route"]["gateway"], "10.250.0.5");
    assert_eq!(v["nhrp_entry"]["post_nat_nbma"], "203.0.113.7");
    assert_eq!(v["outbound"]["spi_out"], "0xc0ffee07");
    assert_eq!(v["peer"]["ike"]["state"], "established");
    assert_eq!(v["peer"]["children"][0]["packets_out"], 55);
    assert_eq!(v["last_nhrp_event"]["kind"], "shortcut_installed");
    assert!(
        v["last_error"].is_null(),
        "absent values are null, not missing"
    );
    let back: ExplainReport = serde_json::from_value(v).unwrap();
    assert_eq!(back, fixtures::explain());
}

#[test]
fn explain_text_condenses_route_nhrp_and_crypto() {
    let text = fixtures::explain().to_string();
    let l: Vec<&str> = text.lines().collect();
    assert_eq!(
        l[0],
        "Destination 10.1.2.3: sent to NBMA 203.0.113.7 (send)"
    );
    assert_eq!(l[1], "Routing entry for 10.1.2.0/24");
    assert_eq!(l[2], "  Known via \"nhrp_shortcut\" (proto 77), metric 10");
    assert_eq!(l[3], "  * 10.250.0.5, via dmvpn0");
    assert_eq!(l[4], "Kernel: into dmvpn0 via 10.250.0.5");
    assert_eq!(
        l[5],
        "Next hop 10.250.0.5: NHRP mapping to NBMA 203.0.113.7"
    );
    assert_eq!(l[6], "NHRP entry:");
    assert_eq!(l[7], "10.250.0.5/32 via 10.250.0.5");
    assert!(
        l.contains(&"   Type: dynamic (shortcut), Flags: used nat"),
        "{text}"
    );
    assert!(l.contains(&"   NBMA address: 203.0.113.7"));
    assert!(l.contains(&"    (Claimed NBMA address: 172.16.1.7)"));
    assert!(l.contains(&"Crypto: outbound spi 0xC0FFEE07(3237998087), UDP-Encaps port 4500"));
    assert!(l.contains(
        &"   peer NBMA 172.16.1.7 (post-NAT 203.0.113.7), tunnel address 10.250.0.5, NHRP: resolved"
    ));
    assert!(l.contains(
        &"   IKEv2 SA: READY (Established), 203.0.113.7:4500, age 00:01:15, rekey in 23:53:20"
    ));
    assert!(
        text.contains("   Child SA spi in 0x2B3C4D5E(725372254) out 0xC0FFEE07(3237998087): #pkts encaps 55, decaps 52,"),
        "{text}"
    );
    assert!(l.contains(&"Last NHRP event: shortcut_installed 10.1.2.0/24 via 10.250.0.5 (NBMA 203.0.113.7), 00:01:15 ago"));
    assert_eq!(l.last(), Some(&"Last error: none"));
}

#[test]
fn explain_text_of_no_route_multicast_and_errors() {
    let mut r = fixtures::explain();
    r.destination = "192.0.2.1".parse().unwrap();
    r.forwarding = ExplainForwarding::NoRoute;
    r.route = None;
    r.kernel = ExplainKernel {
        lookup: "unreachable".to_owned(),
        route_type: None,
        interface_index: None,
        gateway: None,
        error: Some("Network is unreachable".to_owned()),
    };
    r.next_hop = None;
    r.nbma = None;
    r.nhrp_entry = None;
    r.nhrp_shortcut = None;
    r.outbound = None;
    r.peer = None;
    r.last_nhrp_event = None;
    r.last_error = Some(ExplainError {
        source: "ike_setup".to_owned(),
        peer: Some("203.0.113.9".parse().unwrap()),
        reason: "authentication_failed".to_owned(),
        age_secs: None,
        retry_in_secs: Some(31),
    });
    let text = r.to_string();
    let l: Vec<&str> = text.lines().collect();
    assert_eq!(
        l[0],
        "Destination 192.0.2.1: not routed into dmvpn0: the kernel does not hand it to dmvpnd (no_route)"
    );
    assert_eq!(l[1], "% Network not in table (tunnel routes of dmvpn0)");
    assert_eq!(l[2], "Kernel: unreachable (Network is unreachable)");
    assert_eq!(l[3], "Last NHRP event: none recorded");
    assert_eq!(
        l[4],
        "Last error: ike_setup 203.0.113.9: authentication_failed, next attempt in 31 sec"
    );
    assert_eq!(l.len(), 5, "{text}");

    // A tunnel route the kernel overrides with a longer one elsewhere.
    let mut o = fixtures::explain();
    o.forwarding = ExplainForwarding::NoRoute;
    o.kernel = ExplainKernel {
        lookup: "other_interface".to_owned(),
        route_type: Some("unicast".to_owned()),
        interface_index: Some(2),
        gateway: None,
        error: None,
    };
    let text = o.to_string();
    assert!(
        text.contains("\nKernel: out of interface index 2, not dmvpn0\n"),
        "{text}"
    );
    assert!(text.contains("\nRouting entry for 10.1.2.0/24\n"), "{text}");

    r.destination = "224.0.0.5".parse().unwrap();
    r.forwarding = ExplainForwarding::Multicast;
    r.multicast_to = vec!["198.51.100.1".parse().unwrap()];
    let text = r.to_string();
    assert!(text.starts_with(
        "Destination 224.0.0.5: multicast/broadcast, replicated to 1 NBMA address(es) (multicast)\n"
    ));
    assert!(text.contains("\nMulticast to: 198.51.100.1\n"), "{text}");
}

#[test]
fn explain_answers_decode_as_the_report() {
    let req = Request::Explain {
        destination: "10.1.2.3".parse().unwrap(),
    };
    let data = serde_json::to_value(fixtures::explain()).unwrap();
    assert_eq!(
        crate::render::text(&req, data).unwrap(),
        fixtures::explain().to_string()
    );
    let e = crate::render::text(&req, serde_json::json!({"schema_version": 2})).unwrap_err();
    assert_eq!(e.other_version(), None);
}

/// docs/dmvpnctl.md documents every field of the explain report and its objects, and its
/// JSON example is the fixture's.
#[test]
fn explain_schema_is_documented() {
    let docs = include_str!("../../../docs/dmvpnctl.md");
    let start = docs
        .find("### `explain` — ExplainReport")
        .expect("docs/dmvpnctl.md has the explain schema section");
    let section = &docs[start..];
    let end = section[3..]
        .find("\n## ")
        .map_or(section.len(), |i| i + 3)
        .min(section[3..].find("\n### ").map_or(section.len(), |i| i + 3));
    let section = &section[..end];
    let mut r = fixtures::explain();
    r.last_error = Some(ExplainError {
        source: "ike_setup".to_owned(),
        peer: None,
        reason: "timeout".to_owned(),
        age_secs: None,
        retry_in_secs: None,
    });
    let v = serde_json::to_value(&r).unwrap();
    let objects = [
        ("ExplainReport", &v),
        ("ExplainRoute", &v["route"]),
        ("ExplainKernel", &v["kernel"]),
        ("ExplainPath", &v["outbound"]),
        ("ExplainNhrpEvent", &v["last_nhrp_event"]),
        ("ExplainError", &v["last_error"]),
    ];
    for (name, o) in objects {
        for key in o.as_object().unwrap().keys() {
            assert!(
                section.contains(&format!("`{key}`")),
                "docs/dmvpnctl.md does not document {name}.{key}"
            );
        }
    }
    let example = docs
        .split("`dmvpnctl explain 10.1.2.3 --json`")
        .nth(1)
        .and_then(|rest| rest.split("```json\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("docs/dmvpnctl.md has the explain JSON example");
    let example: serde_json::Value = serde_json::from_str(example).unwrap();
    assert_eq!(example, serde_json::to_value(fixtures::explain()).unwrap());
}
