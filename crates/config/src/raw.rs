//! The configuration file as written (serde view with spans), before cross-field validation.
//! Every table denies unknown keys so a misspelt key is reported at its position instead of
//! being silently ignored.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{DhGroup, DpdMode, Encryption, Prf};
use crate::net::Ipv4Net;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawConfig {
    pub secrets: Option<Spanned<String>>,
    pub ike: RawIke,
    #[serde(default)]
    pub ipsec: RawIpsec,
    pub tunnel: RawTunnel,
    pub nhrp: RawNhrp,
    #[serde(default)]
    pub underlay: RawUnderlay,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub debug: RawDebug,
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub dataplane: RawDataplane,
    #[serde(default)]
    pub metrics: RawMetrics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawIke {
    #[serde(rename = "proposal")]
    pub proposals: Spanned<Vec<RawProposal>>,
    #[serde(rename = "keyring")]
    pub keyring: Spanned<Vec<RawKeyringEntry>>,
    #[serde(default)]
    pub dpd: RawDpd,
    pub nat_keepalive: Option<Spanned<u32>>,
    pub lifetime: Option<Spanned<u32>>,
    pub workers: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawProposal {
    pub encryption: Encryption,
    pub prf: Prf,
    pub group: DhGroup,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawKeyringEntry {
    pub name: Spanned<String>,
    pub peer: Ipv4Net,
    pub psk: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDpd {
    pub delay: Option<Spanned<u32>>,
    pub retry: Option<Spanned<u32>>,
    pub mode: Option<DpdMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawIpsec {
    pub transform: Option<Encryption>,
    pub mode: Option<Spanned<String>>,
    pub replay_window: Option<Spanned<u32>>,
    pub lifetime: Option<Spanned<u32>>,
    pub lifetime_kilobytes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawTunnel {
    pub interface: Option<Spanned<String>>,
    pub address: Spanned<Ipv4Net>,
    pub network: Option<Spanned<Ipv4Net>>,
    pub mtu: Option<Spanned<u16>>,
    pub adjust_mss: Option<Spanned<u16>>,
    pub gre_key: Option<u32>,
    pub txqueuelen: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawNhrp {
    pub network_id: Spanned<u32>,
    pub authentication: Option<Spanned<String>>,
    pub holding_time: Option<Spanned<u32>>,
    pub role: Spanned<RawRole>,
    pub redirect: Option<Spanned<bool>>,
    pub shortcut: Option<Spanned<bool>>,
    pub max_shortcut_prefix: Option<Spanned<u8>>,
    pub max_registrations_per_nbma: Option<Spanned<u32>>,
    pub max_holding_time: Option<Spanned<u32>>,
    pub nhs_fallback: Option<Spanned<u32>>,
    #[serde(default)]
    pub nhs: Vec<RawNhs>,
    #[serde(default)]
    pub cluster: Vec<RawCluster>,
}

/// `[[nhrp.cluster]]`: `ip nhrp nhs cluster ID max-connections N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawCluster {
    pub id: Spanned<u8>,
    pub max_connections: Spanned<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawRole {
    Spoke,
    Hub,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawNhs {
    pub address: Spanned<Ipv4Addr>,
    pub nbma: Ipv4Addr,
    #[serde(default)]
    pub multicast: bool,
    #[serde(default)]
    pub priority: u8,
    pub cluster: Option<Spanned<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawUnderlay {
    pub interface: Option<Spanned<String>>,
    pub local_address: Option<Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawRoute {
    pub prefix: Spanned<Ipv4Net>,
    pub via: Spanned<Ipv4Addr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDebug {
    pub key_export: Option<Spanned<String>>,
    pub ignore_purge: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawControl {
    pub socket: Option<Spanned<String>>,
    pub group: Option<String>,
    pub admin_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDataplane {
    pub workers: Option<Spanned<u32>>,
    pub offload: Option<bool>,
    pub socket_buffer: Option<Spanned<u32>>,
    pub aead: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawMetrics {
    pub listen: Option<Spanned<String>>,
    pub max_peers: Option<Spanned<u32>>,
}

/// The separate secrets file: `[psk]` maps keyring entry names to keys, `[nhrp]` holds the NHRP
/// authentication key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSecrets {
    #[serde(default)]
    pub psk: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub nhrp: RawSecretsNhrp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSecretsNhrp {
    pub authentication: Option<Spanned<String>>,
}
