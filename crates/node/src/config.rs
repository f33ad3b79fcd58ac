//! Translation of the operator's configuration (`dmvpn-config`) into the engines' own
//! configurations, and the rules for what a reload may change.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dmvpn_config::{Config, DpdMode, Role};
use dmvpn_crypto::{DhAlg, PrfAlg};
use dmvpn_dataplane::TunnelParams;

use crate::NodeError;

/// UDP port of IKE (RFC 7296 §2).
pub const IKE_PORT: u16 = 500;
/// UDP port of NAT-T: IKE after a NAT was detected and ESP-in-UDP (RFC 3948 §2).
pub const NATT_PORT: u16 = 4500;

/// Rekey margin: strongSwan's 9 minutes, but never more than a tenth of a short lifetime, so
/// a lab lifetime of a few minutes still rekeys well before it expires.
fn rekey_margin(lifetime: Duration) -> Duration {
    Duration::from_secs(540).min(lifetime / 10)
}

/// Builds the IKE engine's configuration from ours.
pub fn ike_config(config: &Config) -> Result<dmvpn_ike::Config, NodeError> {
    let ike_proposals = config
        .ike
        .proposals
        .iter()
        .map(|p| {
            Ok(dmvpn_ike::IkeProposal {
                encr_key_bits: match p.encryption {
                    dmvpn_config::Encryption::AesGcm128 => 128,
                    dmvpn_config::Encryption::AesGcm256 => 256,
                },
                prf: match p.prf {
                    dmvpn_config::Prf::Sha256 => PrfAlg::HmacSha256,
                    dmvpn_config::Prf::Sha384 => PrfAlg::HmacSha384,
                    dmvpn_config::Prf::Sha512 => PrfAlg::HmacSha512,
                },
                dh: DhAlg::from_ike_group(p.group.0)
                    .ok_or(NodeError::UnsupportedDhGroup(p.group.0))?,
            })
        })
        .collect::<Result<_, NodeError>>()?;
    let mut keyring = dmvpn_ike::Keyring::new();
    for k in &config.ike.keyring {
        keyring.add_prefix(IpAddr::V4(k.peer.addr), k.peer.prefix_len, k.psk.expose());
    }
    Ok(dmvpn_ike::Config {
        ike_proposals,
        keyring,
        dpd: Some(dmvpn_ike::Dpd {
            delay: config.ike.dpd.delay,
            retry: config.ike.dpd.retry,
            mode: match config.ike.dpd.mode {
                DpdMode::OnDemand => dmvpn_ike::DpdMode::OnDemand,
                DpdMode::Periodic => dmvpn_ike::DpdMode::Periodic,
            },
            ..dmvpn_ike::Dpd::default()
        }),
        lifetimes: dmvpn_ike::Lifetimes {
            ike: config.ike.lifetime,
            ike_margin: rekey_margin(config.ike.lifetime),
            child: config.ipsec.lifetime,
            child_margin: rekey_margin(config.ipsec.lifetime),
            ..dmvpn_ike::Lifetimes::default()
        },
        natt_port: NATT_PORT,
        // Each spoke behind one NAT address holds an IKE SA (two while a setup crosses or a
        // rekey overlaps) and registers its address: a hub that lets one NBMA address
        // register more lets it hold as many IKE SAs.
        max_sas_per_address: usize::try_from(config.nhrp.max_registrations_per_nbma)
            .unwrap_or(usize::MAX)
            .saturating_mul(2)
            .max(dmvpn_ike::Config::default().max_sas_per_address),
        ..dmvpn_ike::Config::default()
    })
}

/// Builds the NHRP engine's configuration from ours.
pub fn nhrp_config(config: &Config, local_nbma: Ipv4Addr) -> dmvpn_nhrp::Config {
    let addr = IpAddr::V4(config.tunnel.address.addr);
    // NHRP's prefix is the tunnel subnet, also with a /32 interface address: its checks ("a
    // registered or next-hop address lies in the tunnel prefix") must not lapse because the
    // interface is addressed FRR-style.
    let len = config.tunnel.network.prefix_len;
    let mut c = match config.nhrp.role {
        Role::Spoke { shortcut } => {
            let nhs = config
                .nhrp
                .nhs
                .iter()
                .map(|n| dmvpn_nhrp::NhsConfig {
                    protocol_addr: Some(IpAddr::V4(n.address)),
                    nbma_addr: IpAddr::V4(n.nbma),
                    multicast: n.multicast,
                })
                .collect();
            let mut c = dmvpn_nhrp::Config::spoke(addr, len, IpAddr::V4(local_nbma), nhs);
            c.shortcut = shortcut;
            c
        }
        Role::Hub { redirect } => {
            let mut c = dmvpn_nhrp::Config::hub(addr, len, IpAddr::V4(local_nbma));
            c.redirect = redirect;
            c
        }
    };
    c.network_id = config.nhrp.network_id;
    c.auth_key = config
        .nhrp
        .authentication
        .as_ref()
        .map(|k| k.expose().to_vec());
    c.holding_time = config.nhrp.holding_time;
    c.min_shortcut_prefix_len = config.nhrp.max_shortcut_prefix;
    c.max_registrations_per_nbma =
        usize::try_from(config.nhrp.max_registrations_per_nbma).unwrap_or(usize::MAX);
    c.max_holding_time = config.nhrp.max_holding_time;
    c.ignore_purge = config.ignore_purge;
    c.mtu = 0;
    c
}

/// The dataplane's per-tunnel constants.
pub fn tunnel_params(config: &Config) -> Result<TunnelParams, NodeError> {
    let Some(gre_key) = config.tunnel.gre_key else {
        return Err(NodeError::NoGreKey);
    };
    Ok(TunnelParams {
        role: match config.nhrp.role {
            Role::Spoke { .. } => dmvpn_dataplane::Role::Spoke,
            Role::Hub { .. } => dmvpn_dataplane::Role::Hub,
        },
        gre_key,
        address: config.tunnel.address.addr,
        // The subnet's, for its directed broadcast (a /32 would make our own address the
        // broadcast).
        prefix_len: config.tunnel.network.prefix_len,
        adjust_mss: config.tunnel.adjust_mss,
        redirect: matches!(config.nhrp.role, Role::Hub { redirect: true }),
    })
}

/// The settings a reload cannot apply (they need a new TUN device, new sockets or a new NHRP
/// identity): the names of those that differ between `old` and `new`.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let t = (&new.tunnel, &old.tunnel);
    [
        ("tunnel.interface", t.0.interface != t.1.interface),
        ("tunnel.address", t.0.address != t.1.address),
        ("tunnel.network", t.0.network != t.1.network),
        ("tunnel.mtu", t.0.mtu != t.1.mtu),
        ("tunnel.gre-key", t.0.gre_key != t.1.gre_key),
        ("tunnel.txqueuelen", t.0.txqueuelen != t.1.txqueuelen),
        ("nhrp.role", new.nhrp.role != old.nhrp.role),
        ("underlay", new.underlay != old.underlay),
        ("debug.key-export", new.key_export != old.key_export),
        ("dataplane", new.dataplane != old.dataplane),
        // The IKE worker pool is started once, with the daemon.
        ("ike.workers", new.ike.workers != old.ike.workers),
        // The listener is bound once at start; max-peers is read at every scrape.
        ("metrics.listen", new.metrics.listen != old.metrics.listen),
        // The socket is bound and its groups resolved once at start; a reload that seemed to
        // take a user out of admin-group while it kept its access would be worse than a refusal.
        ("control", new.control != old.control),
        // Which NHSs there are, in which order, is NHRP's identity (the NHC's per-NHS state
        // is indexed by it); their priorities and clusters reload (`Node::reconfigure_nhs`).
        (
            "nhrp.nhs",
            !new.nhrp
                .nhs
                .iter()
                .map(|n| (n.address, n.nbma, n.multicast))
                .eq(old
                    .nhrp
                    .nhs
                    .iter()
                    .map(|n| (n.address, n.nbma, n.multicast))),
        ),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spoke(tunnel: &str) -> Config {
        let text = format!(
            r#"
[[ike.proposal]]
encryption = "aes-gcm-256"
prf = "sha512"
group = 19
[[ike.keyring]]
name = "ANY"
peer = "0.0.0.0/0"
psk = "a test PSK of at least 16 bytes"
[tunnel]
{tunnel}
gre-key = 100
[nhrp]
role = "spoke"
network-id = 100
[[nhrp.nhs]]
address = "10.250.0.1"
nbma = "198.51.100.1"
multicast = true
"#
        );
        dmvpn_config::parse_str(&text, std::path::Path::new("/nonexistent/dmvpnd.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// With FRR-style addressing the engines still see the tunnel subnet: NHRP's prefix
    /// checks and the directed broadcast are those of a /24 address, not of the /32.
    #[test]
    fn a_host_tunnel_address_gives_nhrp_and_the_dataplane_the_tunnel_subnet() {
        let host = spoke("address = \"10.250.0.9/32\"\nnetwork = \"10.250.0.0/24\"");
        let subnet = spoke("address = \"10.250.0.9/24\"");
        for c in [&host, &subnet] {
            let n = nhrp_config(c, Ipv4Addr::new(198, 51, 100, 9));
            assert_eq!(
                (n.protocol_addr, n.prefix_len),
                (IpAddr::V4(Ipv4Addr::new(10, 250, 0, 9)), 24)
            );
            let t = tunnel_params(c).unwrap();
            assert_eq!(t.prefix_len, 24);
            assert_eq!(t.broadcast(), Ipv4Addr::new(10, 250, 0, 255));
        }
        assert_eq!(restart_only_changes(&subnet, &host), ["tunnel.address"]);
        let wider = spoke("address = \"10.250.0.9/32\"\nnetwork = \"10.250.0.0/16\"");
        assert_eq!(restart_only_changes(&host, &wider), ["tunnel.network"]);
    }
}
