//! Translation behaviour on small IOS texts (the binary, the reference files and the lints are
//! tested end to end in tests/import_ios.rs).

use std::collections::BTreeMap;
use std::path::Path;

use super::translate::Options;
use super::{Finding, Kind, import};

/// A minimal spoke; `{TUNNEL}` and `{CRYPTO}` take extra lines.
const SPOKE: &str = "\
crypto ikev2 proposal P
 encryption aes-gcm-256
 prf sha512
 group 19
!
crypto ikev2 policy POL
 proposal P
!
crypto ikev2 keyring K
 peer HUB
  address 198.51.100.1
  pre-shared-key hub-psk-secret
!
crypto ikev2 profile IKEP
 match identity remote address 0.0.0.0
 authentication remote pre-share
 authentication local pre-share
 keyring local K
 dpd 30 5 periodic
!
crypto ipsec security-association replay window-size 1024
crypto ipsec transform-set TS esp-gcm 256
 mode transport require
{CRYPTO}!
crypto ipsec profile IPP
 set transform-set TS
 set ikev2-profile IKEP
!
interface Tunnel1
 ip address 10.9.0.5 255.255.255.0
 ip mtu 1400
 ip tcp adjust-mss 1360
 ip nhrp authentication nhrpkey1
 ip nhrp network-id 7
{TUNNEL} tunnel source 192.0.2.5
 tunnel mode gre multipoint
 tunnel key 9
 tunnel protection ipsec profile IPP
!
";

fn spoke(tunnel: &str, crypto: &str) -> String {
    SPOKE
        .replace("{TUNNEL}", tunnel)
        .replace("{CRYPTO}", crypto)
}

fn run(text: &str) -> (Option<dmvpn_config::Config>, Option<String>, Vec<Finding>) {
    let imp = import(text, &BTreeMap::new(), &Options::default());
    let config = imp.config.as_ref().map(|c| {
        dmvpn_config::parse_str_with_secrets(c, Path::new("/x/dmvpnd.toml"), &imp.secrets)
            .unwrap_or_else(|e| panic!("{e}\n{c}"))
    });
    (config, imp.config, imp.findings)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.starts_with(needle)).unwrap() + 1
}

fn has(findings: &[Finding], line: usize, kind: Kind) -> bool {
    findings.iter().any(|f| f.line == line && f.kind == kind)
}

#[test]
fn minimal_spoke_translates_cleanly() {
    let text = spoke(" ip nhrp nhs 10.9.0.1 nbma 198.51.100.1 multicast\n", "");
    let (c, toml, findings) = run(&text);
    let c = c.unwrap();
    assert!(
        findings.iter().all(|f| f.kind == Kind::Note),
        "{findings:?}"
    );
    assert_eq!(c.tunnel.interface, "dmvpn1");
    assert_eq!(c.tunnel.gre_key, Some(9));
    assert_eq!(c.underlay.local_address, Some("192.0.2.5".parse().unwrap()));
    assert_eq!(c.ike.dpd.mode, dmvpn_config::DpdMode::Periodic);
    assert_eq!(c.ike.keyring[0].peer.to_string(), "198.51.100.1/32");
    assert_eq!(c.nhrp.nhs[0].nbma.to_string(), "198.51.100.1");
    // Keys go to the secrets file only.
    let toml = toml.unwrap();
    assert!(
        !toml.contains("hub-psk-secret") && !toml.contains("nhrpkey1"),
        "{toml}"
    );
}

#[test]
fn old_style_nhs_with_static_maps() {
    let text = spoke(
        " ip nhrp map 10.9.0.1 198.51.100.1\n ip nhrp map multicast 198.51.100.1\n ip nhrp nhs 10.9.0.1\n",
        "",
    );
    let (c, _, findings) = run(&text);
    let nhs = &c.unwrap().nhrp.nhs;
    assert_eq!(nhs.len(), 1);
    assert_eq!(nhs[0].nbma.to_string(), "198.51.100.1");
    assert!(nhs[0].multicast);
    assert!(
        !findings.iter().any(|f| f.kind == Kind::NotTranslated),
        "{findings:?}"
    );
}

#[test]
fn hub_with_redirect_and_routes() {
    let mut text = spoke(" ip nhrp redirect\n ip nhrp map multicast dynamic\n", "");
    text.push_str("ip route 10.50.0.0 255.255.0.0 10.9.0.77\nip route 0.0.0.0 0.0.0.0 192.0.2.1\n");
    let (c, _, findings) = run(&text);
    let c = c.unwrap();
    assert_eq!(c.nhrp.role, dmvpn_config::Role::Hub { redirect: true });
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].prefix.to_string(), "10.50.0.0/16");
    assert!(has(
        &findings,
        line_of(&text, "ip route 0.0.0.0"),
        Kind::Note
    ));
}

#[test]
fn cbc_transform_is_an_error_at_its_line() {
    let text = spoke(" ip nhrp nhs 10.9.0.1 nbma 198.51.100.1\n", "").replace(
        "transform-set TS esp-gcm 256",
        "transform-set TS esp-aes 256 esp-sha256-hmac",
    );
    let (c, _, findings) = run(&text);
    assert!(c.is_none());
    assert!(has(
        &findings,
        line_of(&text, "crypto ipsec transform-set"),
        Kind::Error
    ));
}

#[test]
fn tunnel_mode_and_unknown_lines_are_reported_not_dropped() {
    let text = spoke(
        " ip nhrp nhs 10.9.0.1 nbma 198.51.100.1\n tunnel path-mtu-discovery\n ip ospf authentication-key 7 OSPFSECRET\n",
        "",
    )
    .replace(" mode transport require", " mode tunnel");
    let (c, _, findings) = run(&text);
    assert_eq!(c.unwrap().ipsec.mode, dmvpn_config::IpsecMode::Transport);
    assert!(has(
        &findings,
        line_of(&text, " mode tunnel"),
        Kind::NotTranslated
    ));
    assert!(has(
        &findings,
        line_of(&text, " tunnel path-mtu-discovery"),
        Kind::NotTranslated
    ));
    // Reported, but the key is never echoed.
    assert!(has(&findings, line_of(&text, " ip ospf"), Kind::Note));
    assert!(
        findings.iter().all(|f| !f.message.contains("OSPFSECRET")),
        "{findings:?}"
    );
}

#[test]
fn unsupported_group_is_reported_and_the_rest_translated() {
    let text = spoke(" ip nhrp nhs 10.9.0.1 nbma 198.51.100.1\n", "")
        .replace(" group 19\n", " group 14 19 20\n");
    let (c, _, findings) = run(&text);
    let groups: Vec<u16> = c.unwrap().ike.proposals.iter().map(|p| p.group.0).collect();
    assert_eq!(groups, [19, 20]);
    assert!(has(
        &findings,
        line_of(&text, " group 14"),
        Kind::NotTranslated
    ));
}

#[test]
fn replay_disable_and_profile_override() {
    let text = spoke(" ip nhrp nhs 10.9.0.1 nbma 198.51.100.1\n", "")
        .replace(
            " set ikev2-profile IKEP\n",
            " set ikev2-profile IKEP\n set security-association replay window-size 2048\n set security-association lifetime seconds 1800\n",
        );
    let (c, _, findings) = run(&text);
    let c = c.unwrap();
    assert_eq!(c.ipsec.replay_window, 2048);
    assert_eq!(c.ipsec.lifetime.as_secs(), 1800);
    assert!(has(
        &findings,
        line_of(&text, " set security-association replay"),
        Kind::Lint("replay-window-mismatch")
    ));
    let text = text.replace("window-size 2048", "disable");
    let (c, _, findings) = run(&text);
    assert_eq!(c.unwrap().ipsec.replay_window, 4096);
    assert!(has(
        &findings,
        line_of(&text, " set security-association replay"),
        Kind::NotTranslated
    ));
}

#[test]
fn missing_network_id_is_an_error() {
    let text = spoke(" ip nhrp nhs 10.9.0.1 nbma 198.51.100.1\n", "")
        .replace(" ip nhrp network-id 7\n", "");
    let (c, _, findings) = run(&text);
    assert!(c.is_none());
    assert!(has(
        &findings,
        line_of(&text, "interface Tunnel1"),
        Kind::Error
    ));
}

#[test]
fn unreadable_optional_forms_are_not_translated_rather_than_errors() {
    let text = spoke(
        " ip nhrp nhs 10.9.0.1 nbma 198.51.100.1\n ip nhrp nhs cluster 0 max-connections 0\n ip nhrp map group G1 service-policy output QOS\n",
        "crypto ipsec security-association lifetime kilobytes 4608000\n",
    );
    let (c, _, findings) = run(&text);
    assert!(c.is_some(), "{findings:?}");
    for needle in [
        " ip nhrp nhs cluster",
        " ip nhrp map group",
        "crypto ipsec security-association lifetime kilobytes",
    ] {
        assert!(
            has(&findings, line_of(&text, needle), Kind::NotTranslated),
            "{needle}: {findings:?}"
        );
    }
}

#[test]
fn no_tunnel_is_one_error_and_no_tunnel_lints() {
    let text = spoke("", "");
    let text = &text[..text.find("interface Tunnel1").unwrap()];
    let (c, _, findings) = run(text);
    assert!(c.is_none());
    let errors: Vec<_> = findings.iter().filter(|f| f.kind == Kind::Error).collect();
    assert_eq!(errors.len(), 1, "{findings:?}");
    assert!(
        !findings.iter().any(|f| matches!(f.kind, Kind::Lint(_))),
        "{findings:?}"
    );
}

#[test]
fn nhs_priority_cluster_and_max_connections_translate() {
    let text = spoke(
        " ip nhrp nhs 10.9.0.1 nbma 198.51.100.1 multicast priority 1 cluster 1\n ip nhrp nhs 10.9.0.2 nbma 198.51.100.2 multicast priority 2 cluster 1\n ip nhrp nhs 10.9.0.3 nbma 198.51.100.3 priority 3\n ip nhrp nhs cluster 1 max-connections 1\n",
        "",
    );
    let (c, toml, findings) = run(&text);
    let c = c.unwrap_or_else(|| panic!("{findings:?}"));
    assert!(
        findings.iter().all(|f| f.kind == Kind::Note),
        "{findings:?}"
    );
    let got: Vec<(String, u8, u8)> = c
        .nhrp
        .nhs
        .iter()
        .map(|n| (n.nbma.to_string(), n.priority, n.cluster))
        .collect();
    assert_eq!(
        got,
        [
            ("198.51.100.1".to_owned(), 1, 1),
            ("198.51.100.2".to_owned(), 2, 1),
            ("198.51.100.3".to_owned(), 3, 0),
        ]
    );
    assert_eq!(
        c.nhrp.cluster_limits.into_iter().collect::<Vec<_>>(),
        [(1, 1)]
    );
    let toml = toml.unwrap();
    assert!(
        toml.contains("ip nhrp nhs cluster 1 max-connections 1\n[[nhrp.cluster]]"),
        "{toml}"
    );
    // An out-of-range cluster is a bad value, not silently dropped.
    let bad = spoke(" ip nhrp nhs 10.9.0.1 nbma 198.51.100.1 cluster 11\n", "");
    let (_, _, findings) = run(&bad);
    assert!(
        findings
            .iter()
            .any(|f| f.line == line_of(&bad, " ip nhrp nhs 10.9.0.1") && f.kind != Kind::Note),
        "{findings:?}"
    );
}
