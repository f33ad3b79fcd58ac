//! FRR `bgpd` (with zebra) in test namespaces, for the BGP-over-dmvpnd test (issue 14, item 2):
//! the hubs as iBGP route reflectors that accept any spoke of the tunnel subnet (`bgp listen
//! range`), the spokes as their clients. The runner is [`crate::ospf::Frr`] (same path spaces,
//! permissions and cleanup), started here with bgpd instead of ospfd; dmvpnd configurations
//! without static routes come from [`crate::ospf::adapt_config`] as for OSPF.

use std::path::Path;

use anyhow::Result;

use crate::Netns;
use crate::ospf::{FRR_SBIN, Frr};

/// The AS every router is in (iBGP).
pub const ASN: u32 = 65000;

/// Panics unless zebra, bgpd and vtysh are installed (and the `frr` user exists).
pub fn require_bgpd() {
    crate::ospf::require_frr();
    let p = format!("{FRR_SBIN}/bgpd");
    assert!(
        Path::new(&p).exists(),
        "{p} is missing: install FRR (tests/install-deps.sh installs the Debian package `frr`)"
    );
}

/// The BGP settings of one router, rendered into a `bgpd` configuration by [`Self::render`].
#[derive(Debug, Clone)]
pub struct BgpSettings {
    pub hostname: String,
    pub router_id: String,
    /// `timers bgp KEEPALIVE HOLD` (FRR's defaults: 60 180).
    pub keepalive: u32,
    pub hold: u32,
    /// On a hub: `bgp listen range PREFIX peer-group SPOKES`, the peer group being route
    /// reflector clients.
    pub listen_range: Option<String>,
    /// Configured neighbors: (address, `update-source` if any). On a spoke: the hubs' tunnel
    /// addresses (peer group HUBS); on a hub: the other hub.
    pub neighbors: Vec<(String, Option<String>)>,
    /// `network PREFIX` statements (the router's LAN).
    pub networks: Vec<String>,
}

impl BgpSettings {
    /// The `bgpd` configuration (`log file` in `log`).
    pub fn render(&self, log: &Path) -> String {
        let mut s = format!(
            "hostname {}\nlog file {} informational\n!\nrouter bgp {ASN}\n bgp router-id {}\n bgp log-neighbor-changes\n timers bgp {} {}\n",
            self.hostname,
            log.display(),
            self.router_id,
            self.keepalive,
            self.hold
        );
        let mut af = String::new();
        if let Some(range) = &self.listen_range {
            s += &format!(
                " neighbor SPOKES peer-group\n neighbor SPOKES remote-as {ASN}\n bgp listen range {range} peer-group SPOKES\n"
            );
            af += "  neighbor SPOKES route-reflector-client\n";
        }
        for (addr, source) in &self.neighbors {
            s += &format!(" neighbor {addr} remote-as {ASN}\n");
            if let Some(src) = source {
                s += &format!(" neighbor {addr} update-source {src}\n");
            }
        }
        for n in &self.networks {
            af += &format!("  network {n}\n");
        }
        s += &format!(" !\n address-family ipv4 unicast\n{af} exit-address-family\n!\n");
        s
    }
}

/// Starts zebra + bgpd with `bgp`'s configuration in `ns` (files under `parent/frr-<tag>/`) and
/// waits until bgpd answers `show bgp summary json` with its router-id.
pub fn start(ns: &Netns, tag: &str, parent: &Path, bgp: &BgpSettings) -> Result<Frr> {
    let rid = bgp.router_id.as_str();
    Frr::start_daemon(
        ns,
        tag,
        parent,
        &bgp.hostname,
        "bgpd",
        &|log| bgp.render(log),
        &|frr| {
            frr.vtysh_json("show bgp summary json")
                .is_ok_and(|v| v["ipv4Unicast"]["routerId"].as_str() == Some(rid))
        },
    )
}

/// One BGP session from `show bgp summary json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub peer: String,
    /// "Established", "Active", "Connect", …
    pub state: String,
    /// Prefixes received (and accepted) from the peer.
    pub prefixes: u64,
}

impl Session {
    pub fn is_established(&self) -> bool {
        self.state == "Established"
    }
}

/// Parses `show bgp summary json` (`{"ipv4Unicast": {"peers": {ADDR: {"state": …}}}}`).
pub fn parse_summary(v: &serde_json::Value) -> Vec<Session> {
    let Some(peers) = v["ipv4Unicast"]["peers"].as_object() else {
        return Vec::new();
    };
    peers
        .iter()
        .map(|(peer, p)| Session {
            peer: peer.clone(),
            state: p["state"].as_str().unwrap_or_default().to_owned(),
            prefixes: p["pfxRcd"].as_u64().unwrap_or_default(),
        })
        .collect()
}

/// The BGP sessions of `frr`.
pub fn sessions(frr: &Frr) -> Result<Vec<Session>> {
    Ok(parse_summary(&frr.vtysh_json("show bgp summary json")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_parses_frr8_json() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"ipv4Unicast":{"routerId":"10.250.0.9","as":65000,"peers":{
                "10.250.0.1":{"remoteAs":65000,"state":"Established","pfxRcd":2},
                "10.250.0.2":{"remoteAs":65000,"state":"Active","pfxRcd":0}}}}"#,
        )
        .unwrap();
        let s = parse_summary(&v);
        assert_eq!(s.len(), 2);
        assert!(s[0].is_established() && s[0].prefixes == 2);
        assert!(!s[1].is_established());
    }

    #[test]
    fn hub_config_reflects_to_the_listen_range() {
        let s = BgpSettings {
            hostname: "hub".into(),
            router_id: "10.250.0.1".into(),
            keepalive: 3,
            hold: 9,
            listen_range: Some("10.250.0.0/24".into()),
            neighbors: vec![("198.51.100.4".into(), Some("198.51.100.1".into()))],
            networks: vec![],
        }
        .render(Path::new("/tmp/bgpd.log"));
        for l in [
            "bgp listen range 10.250.0.0/24 peer-group SPOKES",
            "neighbor SPOKES remote-as 65000",
            "  neighbor SPOKES route-reflector-client",
            "neighbor 198.51.100.4 update-source 198.51.100.1",
            "timers bgp 3 9",
        ] {
            assert!(s.contains(l), "missing `{l}` in\n{s}");
        }
        assert!(!s.contains("next-hop-self"));
    }
}
