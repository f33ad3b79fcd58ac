//! Cross-field validation of the raw configuration into [`Config`]: ranges, the relations between
//! tunnel subnet, NHS and routes, role-specific keys, and where each secret comes from. Every
//! error points at the key it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::error::{ConfigError, Location};
use crate::model::*;
use crate::net::Ipv4Net;
use crate::raw::{RawConfig, RawRole, RawSecrets};

pub(crate) struct SecretsFile {
    pub path: PathBuf,
    pub text: String,
    pub raw: RawSecrets,
}

impl SecretsFile {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            path: &self.path,
            text: &self.text,
        }
    }
}

/// Builds errors located in one file.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            location: Location::from_offset(self.path, self.text, span.start),
            key: Some(key.to_owned()),
            message: message.into(),
        })
    }
}

fn secs<T: Copy + Into<u64>>(v: &Option<Spanned<T>>, default: u64) -> Duration {
    Duration::from_secs(v.as_ref().map_or(default, |s| (*s.get_ref()).into()))
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    cx: &Ctx<'_>,
    v: &Option<Spanned<T>>,
    key: &str,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ConfigError> {
    if let Some(v) = v
        && !range.contains(v.get_ref())
    {
        return cx.err(
            v.span(),
            key,
            format!(
                "{} is out of range ({}..={}{unit})",
                v.get_ref(),
                range.start(),
                range.end()
            ),
        );
    }
    Ok(())
}

pub(crate) fn validate(
    raw: RawConfig,
    text: &str,
    path: &Path,
    secrets: Option<SecretsFile>,
) -> Result<Config, ConfigError> {
    let cx = Ctx { path, text };

    // IKE
    let ike = &raw.ike;
    if ike.proposals.get_ref().is_empty() {
        return cx.err(
            ike.proposals.span(),
            "ike.proposal",
            "at least one proposal is required",
        );
    }
    if ike.keyring.get_ref().is_empty() {
        return cx.err(
            ike.keyring.span(),
            "ike.keyring",
            "at least one keyring entry is required (peer = \"0.0.0.0/0\" for any peer)",
        );
    }
    let mut names = BTreeSet::new();
    let mut used_secret_psks = BTreeSet::new();
    let mut keyring = Vec::new();
    for (i, e) in ike.keyring.get_ref().iter().enumerate() {
        let key = format!("ike.keyring[{i}]");
        let name = e.name.get_ref();
        if name.is_empty() {
            return cx.err(e.name.span(), &format!("{key}.name"), "must not be empty");
        }
        if !names.insert(name.clone()) {
            return cx.err(
                e.name.span(),
                &format!("{key}.name"),
                format!("duplicate keyring entry `{name}`"),
            );
        }
        let from_file = secrets.as_ref().and_then(|s| {
            s.raw
                .psk
                .get_key_value(name.as_str())
                .map(|kv| (s.ctx(), kv))
        });
        let psk = match (&e.psk, from_file) {
            (Some(_), Some((scx, (k, _)))) => {
                return scx.err(
                    k.span(),
                    &format!("psk.{name}"),
                    format!(
                        "pre-shared key for `{name}` is also set inline in {}",
                        path.display()
                    ),
                );
            }
            (Some(inline), None) => {
                if inline.get_ref().is_empty() {
                    return cx.err(inline.span(), &format!("{key}.psk"), "must not be empty");
                }
                Secret::new(inline.get_ref().as_bytes().to_vec())
            }
            (None, Some((scx, (k, v)))) => {
                used_secret_psks.insert(k.get_ref().clone());
                if v.get_ref().is_empty() {
                    return scx.err(v.span(), &format!("psk.{name}"), "must not be empty");
                }
                Secret::new(v.get_ref().as_bytes().to_vec())
            }
            (None, None) => {
                let where_ = match &raw.secrets {
                    Some(_) => "in the secrets file's [psk] table",
                    None => "with `psk = \"…\"` or in a secrets file",
                };
                return cx.err(
                    e.name.span(),
                    &format!("{key}.psk"),
                    format!("no pre-shared key for keyring entry `{name}`: set it {where_}"),
                );
            }
        };
        keyring.push(KeyringEntry {
            name: name.clone(),
            peer: e.peer,
            psk,
        });
    }
    if let Some(s) = &secrets
        && let Some((k, _)) = s
            .raw
            .psk
            .iter()
            .find(|(k, _)| !used_secret_psks.contains(k.get_ref()))
    {
        return s.ctx().err(
            k.span(),
            &format!("psk.{}", k.get_ref()),
            format!(
                "no keyring entry named `{}` in {}",
                k.get_ref(),
                path.display()
            ),
        );
    }
    in_range(&cx, &ike.dpd.delay, "ike.dpd.delay", 1..=3600, " s")?;
    in_range(&cx, &ike.dpd.retry, "ike.dpd.retry", 1..=60, " s")?;
    in_range(
        &cx,
        &ike.nat_keepalive,
        "ike.nat-keepalive",
        0..=3600,
        " s; 0 disables",
    )?;
    // Down to 60 s for tests and labs; below 120 s `Config::warnings` says so.
    in_range(&cx, &ike.lifetime, "ike.lifetime", 60..=86400, " s")?;
    in_range(&cx, &ike.workers, "ike.workers", 0..=64, "; 0 = none")?;
    let ike_out = Ike {
        proposals: ike
            .proposals
            .get_ref()
            .iter()
            .map(|p| IkeProposal {
                encryption: p.encryption,
                prf: p.prf,
                group: p.group,
            })
            .collect(),
        keyring,
        dpd: Dpd {
            delay: secs(&ike.dpd.delay, 40),
            retry: secs(&ike.dpd.retry, 5),
            mode: ike.dpd.mode.unwrap_or(DpdMode::OnDemand),
        },
        nat_keepalive: Some(secs(&ike.nat_keepalive, 20)).filter(|d| !d.is_zero()),
        lifetime: secs(&ike.lifetime, 86400),
        workers: ike.workers.as_ref().map(|w| *w.get_ref()),
    };

    // IPsec
    let ipsec = &raw.ipsec;
    if let Some(mode) = &ipsec.mode
        && mode.get_ref() != "transport"
    {
        return cx.err(
            mode.span(),
            "ipsec.mode",
            format!(
                "`{}` is not supported: only \"transport\" (GRE carries the inner packet)",
                mode.get_ref()
            ),
        );
    }
    in_range(
        &cx,
        &ipsec.replay_window,
        "ipsec.replay-window",
        32..=4096,
        " packets",
    )?;
    in_range(&cx, &ipsec.lifetime, "ipsec.lifetime", 60..=86400, " s")?;
    // Cisco's range for `lifetime kilobytes` (2560 KB = 2.5 MB at least).
    in_range(
        &cx,
        &ipsec.lifetime_kilobytes,
        "ipsec.lifetime-kilobytes",
        2560..=4_294_967_295,
        " KB",
    )?;
    let ipsec_out = Ipsec {
        transform: ipsec.transform.unwrap_or(Encryption::AesGcm256),
        mode: IpsecMode::Transport,
        replay_window: ipsec.replay_window.as_ref().map_or(1024, |w| *w.get_ref()),
        lifetime: secs(&ipsec.lifetime, 3600),
        lifetime_kilobytes: ipsec.lifetime_kilobytes.as_ref().map(|k| *k.get_ref()),
    };

    // Tunnel
    let t = &raw.tunnel;
    let interface = match &t.interface {
        None => "dmvpn0".to_owned(),
        Some(n) => {
            check_ifname(&cx, n, "tunnel.interface")?;
            n.get_ref().clone()
        }
    };
    let address = *t.address.get_ref();
    let network = tunnel_network(&cx, t)?;
    let mtu = t.mtu.as_ref().map_or(1400, |m| *m.get_ref());
    if let Some(m) = &t.mtu
        && !(576..=9000).contains(m.get_ref())
    {
        return cx.err(
            m.span(),
            "tunnel.mtu",
            format!("{} is out of range (576..=9000)", m.get_ref()),
        );
    }
    if let Some(mss) = &t.adjust_mss {
        // 40 = minimal IPv4 + TCP headers; a larger MSS would not fit into the tunnel MTU.
        let max = mtu - 40;
        if !(500..=max).contains(mss.get_ref()) {
            return cx.err(
                mss.span(),
                "tunnel.adjust-mss",
                format!(
                    "{} is out of range (500..={max}, i.e. at most tunnel.mtu - 40)",
                    mss.get_ref()
                ),
            );
        }
    }
    in_range(
        &cx,
        &t.txqueuelen,
        "tunnel.txqueuelen",
        64..=65536,
        " packets",
    )?;
    let tunnel = Tunnel {
        interface,
        address,
        network,
        mtu,
        adjust_mss: t.adjust_mss.as_ref().map(|m| *m.get_ref()),
        gre_key: t.gre_key,
        txqueuelen: t
            .txqueuelen
            .as_ref()
            .map_or(crate::model::DEFAULT_TXQUEUELEN, |q| *q.get_ref()),
    };

    // NHRP
    let n = &raw.nhrp;
    if *n.network_id.get_ref() == 0 {
        return cx.err(
            n.network_id.span(),
            "nhrp.network-id",
            "must be 1..=4294967295",
        );
    }
    // The holding time travels in a 16-bit CIE field (RFC 2332 §5.2.0.1).
    in_range(&cx, &n.holding_time, "nhrp.holding-time", 1..=65535, " s")?;
    let from_file = secrets
        .as_ref()
        .and_then(|s| s.raw.nhrp.authentication.as_ref().map(|v| (s.ctx(), v)));
    let authentication = match (&n.authentication, from_file) {
        (Some(_), Some((scx, f))) => {
            return scx.err(
                f.span(),
                "nhrp.authentication",
                format!("also set inline in {}; keep one", path.display()),
            );
        }
        (Some(v), None) => Some(check_nhrp_key(&cx, v)?),
        (None, Some((scx, v))) => Some(check_nhrp_key(&scx, v)?),
        (None, None) => None,
    };
    // The shortest shortcut FRR accepts is a /8 (docs/interop-notes.md §9).
    in_range(
        &cx,
        &n.max_shortcut_prefix,
        "nhrp.max-shortcut-prefix",
        8..=32,
        "",
    )?;
    in_range(
        &cx,
        &n.max_registrations_per_nbma,
        "nhrp.max-registrations-per-nbma",
        1..=65535,
        "",
    )?;
    // A holding time below 3 s would make a third of it zero (the refresh interval).
    in_range(
        &cx,
        &n.max_holding_time,
        "nhrp.max-holding-time",
        3..=65535,
        " s",
    )?;
    // `ip nhrp nhs fallback` takes 0..=3600 s.
    in_range(&cx, &n.nhs_fallback, "nhrp.nhs-fallback", 0..=3600, " s")?;
    let role = match n.role.get_ref() {
        RawRole::Spoke => {
            if let Some(r) = &n.redirect {
                return cx.err(r.span(), "nhrp.redirect", "applies to role = \"hub\" only");
            }
            if let Some(r) = &n.max_registrations_per_nbma {
                return cx.err(
                    r.span(),
                    "nhrp.max-registrations-per-nbma",
                    "applies to role = \"hub\" only",
                );
            }
            if n.nhs.is_empty() {
                return cx.err(
                    n.role.span(),
                    "nhrp.nhs",
                    "a spoke needs at least one [[nhrp.nhs]]",
                );
            }

            Role::Spoke {
                shortcut: n.shortcut.as_ref().is_none_or(|s| *s.get_ref()),
            }
        }
        RawRole::Hub => {
            if let Some(c) = n.cluster.first() {
                return cx.err(
                    c.id.span(),
                    "nhrp.cluster",
                    "applies to role = \"spoke\" only",
                );
            }
            if let Some(s) = &n.shortcut {
                return cx.err(
                    s.span(),
                    "nhrp.shortcut",
                    "applies to role = \"spoke\" only",
                );
            }
            if let Some(s) = &n.max_shortcut_prefix {
                return cx.err(
                    s.span(),
                    "nhrp.max-shortcut-prefix",
                    "applies to role = \"spoke\" only",
                );
            }
            Role::Hub {
                redirect: n.redirect.as_ref().is_some_and(|r| *r.get_ref()),
            }
        }
    };
    let mut nhs = Vec::new();
    for (i, e) in n.nhs.iter().enumerate() {
        let a = *e.address.get_ref();
        if !network.contains(a) || a == address.addr {
            return cx.err(
                e.address.span(),
                &format!("nhrp.nhs[{i}].address"),
                format!("{a} is not another address in the tunnel subnet {network}"),
            );
        }
        // IOS numbers NHS clusters 0..=10.
        in_range(
            &cx,
            &e.cluster,
            &format!("nhrp.nhs[{i}].cluster"),
            0..=MAX_NHS_CLUSTER,
            "",
        )?;
        nhs.push(Nhs {
            address: a,
            nbma: e.nbma,
            multicast: e.multicast,
            priority: e.priority,
            cluster: e.cluster.as_ref().map_or(0, |c| *c.get_ref()),
        });
    }
    // A cluster without a [[nhrp.cluster]] entry has no limit (the spoke registers with all
    // of its NHSs, as before clusters existed); an entry limits it to max-connections. IOS
    // accepts 0 connections, which would leave a cluster's NHSs configured but never used:
    // refused here, remove the NHSs instead.
    let mut cluster_limits = BTreeMap::new();
    for (i, c) in n.cluster.iter().enumerate() {
        let id = Some(c.id.clone());
        in_range(
            &cx,
            &id,
            &format!("nhrp.cluster[{i}].id"),
            0..=MAX_NHS_CLUSTER,
            "",
        )?;
        let max = Some(c.max_connections.clone());
        in_range(
            &cx,
            &max,
            &format!("nhrp.cluster[{i}].max-connections"),
            1..=255,
            "",
        )?;
        let limit = u8::try_from(*c.max_connections.get_ref()).unwrap_or(u8::MAX);
        if cluster_limits.insert(*c.id.get_ref(), limit).is_some() {
            return cx.err(
                c.id.span(),
                &format!("nhrp.cluster[{i}].id"),
                format!("cluster {} is configured twice", c.id.get_ref()),
            );
        }
    }
    let nhrp = Nhrp {
        network_id: *n.network_id.get_ref(),
        authentication,
        holding_time: secs(&n.holding_time, 7200),
        role,
        nhs,
        max_shortcut_prefix: n
            .max_shortcut_prefix
            .as_ref()
            .map_or(DEFAULT_MAX_SHORTCUT_PREFIX, |v| *v.get_ref()),
        max_registrations_per_nbma: n
            .max_registrations_per_nbma
            .as_ref()
            .map_or(DEFAULT_MAX_REGISTRATIONS_PER_NBMA, |v| *v.get_ref()),
        max_holding_time: secs(&n.max_holding_time, 65535),
        nhs_fallback: secs(&n.nhs_fallback, 0),
        cluster_limits,
    };

    // Underlay
    if let Some(i) = &raw.underlay.interface {
        check_ifname(&cx, i, "underlay.interface")?;
    }
    let underlay = Underlay {
        interface: raw.underlay.interface.as_ref().map(|i| i.get_ref().clone()),
        local_address: raw.underlay.local_address,
    };

    // Routes
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let prefix: Ipv4Net = *r.prefix.get_ref();
        if !prefix.is_network() {
            return cx.err(
                r.prefix.span(),
                &format!("route[{i}].prefix"),
                format!(
                    "{prefix} has host bits set; did you mean {}/{}?",
                    prefix.network(),
                    prefix.prefix_len
                ),
            );
        }
        let via = *r.via.get_ref();
        if !network.contains(via) || via == address.addr {
            return cx.err(
                r.via.span(),
                &format!("route[{i}].via"),
                format!("{via} is not a peer address in the tunnel subnet {network}"),
            );
        }
        routes.push(StaticRoute { prefix, via });
    }

    let key_export = match &raw.debug.key_export {
        None => None,
        Some(p) if Path::new(p.get_ref()).is_absolute() => Some(PathBuf::from(p.get_ref())),
        Some(p) => return cx.err(p.span(), "debug.key-export", "must be an absolute path"),
    };

    let socket = match &raw.control.socket {
        None => PathBuf::from(crate::model::DEFAULT_CONTROL_SOCKET),
        Some(p) if Path::new(p.get_ref()).is_absolute() => PathBuf::from(p.get_ref()),
        Some(p) => return cx.err(p.span(), "control.socket", "must be an absolute path"),
    };
    let control = crate::model::Control {
        socket,
        group: raw.control.group.clone(),
        admin_group: raw.control.admin_group.clone(),
    };

    in_range(&cx, &raw.dataplane.workers, "dataplane.workers", 0..=64, "")?;
    in_range(
        &cx,
        &raw.dataplane.socket_buffer,
        "dataplane.socket-buffer",
        65536..=(256 << 20),
        " bytes",
    )?;
    let aead = match raw
        .dataplane
        .aead
        .as_ref()
        .map(|a| (a.get_ref().as_str(), a.span()))
    {
        None | Some(("auto", _)) => crate::model::AeadChoice::Auto,
        Some(("ring", _)) => crate::model::AeadChoice::Ring,
        Some(("aws-lc-rs", _)) => crate::model::AeadChoice::AwsLc,
        Some((_, span)) => {
            return cx.err(
                span,
                "dataplane.aead",
                "must be \"auto\", \"ring\" or \"aws-lc-rs\"",
            );
        }
    };
    let dataplane = crate::model::Dataplane {
        aead,
        workers: raw.dataplane.workers.as_ref().map_or(0, |w| *w.get_ref()),
        offload: raw.dataplane.offload.unwrap_or(true),
        socket_buffer: raw
            .dataplane
            .socket_buffer
            .as_ref()
            .map_or(crate::model::DEFAULT_SOCKET_BUFFER, |b| *b.get_ref()),
    };

    let metrics = validate_metrics(&cx, &raw.metrics)?;

    Ok(Config {
        ike: ike_out,
        ipsec: ipsec_out,
        tunnel,
        nhrp,
        underlay,
        routes,
        key_export,
        ignore_purge: raw.debug.ignore_purge.unwrap_or(false),
        control,
        dataplane,
        metrics,
    })
}

/// `[metrics]`: `listen` must be an address with a port (a host name would be resolved at
/// every start, and could resolve to a public address); `max-peers` is bounded so a typo
/// cannot turn a hub's scrape into millions of series.
fn validate_metrics(
    cx: &Ctx<'_>,
    raw: &crate::raw::RawMetrics,
) -> Result<crate::model::Metrics, ConfigError> {
    in_range(cx, &raw.max_peers, "metrics.max-peers", 0..=100_000, "")?;
    let listen = match &raw.listen {
        None => None,
        Some(l) => match l.get_ref().parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                return cx.err(l.span(), "metrics.listen", "needs a port other than 0");
            }
            Ok(a) => Some(a),
            Err(_) => {
                return cx.err(
                    l.span(),
                    "metrics.listen",
                    format!(
                        "`{}` is not an address:port (e.g. \"127.0.0.1:9477\" or \"[::1]:9477\")",
                        l.get_ref()
                    ),
                );
            }
        },
    };
    Ok(crate::model::Metrics {
        listen,
        max_peers: raw
            .max_peers
            .as_ref()
            .map_or(crate::model::DEFAULT_METRICS_MAX_PEERS, |m| *m.get_ref()),
    })
}

/// `tunnel.address` and `tunnel.network`, checked together; returns the tunnel subnet.
///
/// Two layouts, as the peers use them. IOS addresses a multipoint tunnel with the subnet
/// (`ip address 10.250.0.9 255.255.255.0`): `address = "10.250.0.9/24"`, the subnet is the
/// address's, and `network` may only repeat it. FRR nhrpd routers put a host prefix on the GRE
/// interface and route the subnet into it (FRR's nhrpd documentation): `address =
/// "10.250.0.9/32"` with `network = "10.250.0.0/24"`, required then. OSPF needs the layout of
/// the hub: a point-to-multipoint interface checks the hello's network mask against its own
/// unless that is a /32 (RFC 2328 §10.5 skips the check on point-to-point links only; FRR's
/// ospfd since 8.0 also on point-to-multipoint /32), docs/ospf.md.
fn tunnel_network(cx: &Ctx<'_>, t: &crate::raw::RawTunnel) -> Result<Ipv4Net, ConfigError> {
    let address = *t.address.get_ref();
    // A peer's address, not the subnet's network or (directed) broadcast address.
    let hosts = |net: &Ipv4Net| {
        net.contains(address.addr) && address.addr != net.addr && address.addr != broadcast(net)
    };
    if address.prefix_len == 32 {
        let Some(n) = &t.network else {
            let hint = Ipv4Net {
                addr: Ipv4Net {
                    addr: address.addr,
                    prefix_len: 24,
                }
                .network(),
                prefix_len: 24,
            };
            return cx.err(
                t.address.span(),
                "tunnel.address",
                format!(
                    "{address} is a host address: name the tunnel subnet in tunnel.network (e.g. network = \"{hint}\"), which dmvpnd then routes into the tunnel"
                ),
            );
        };
        let net = *n.get_ref();
        if !net.is_network() {
            return cx.err(
                n.span(),
                "tunnel.network",
                format!(
                    "{net} has host bits set; did you mean {}/{}?",
                    net.network(),
                    net.prefix_len
                ),
            );
        }
        if !(8..=30).contains(&net.prefix_len) {
            return cx.err(
                n.span(),
                "tunnel.network",
                format!(
                    "prefix length /{} is not a multipoint subnet (8..=30)",
                    net.prefix_len
                ),
            );
        }
        if !hosts(&net) {
            return cx.err(
                n.span(),
                "tunnel.network",
                format!(
                    "{net} does not hold tunnel.address {} as a host address (inside it, not its network or broadcast address)",
                    address.addr
                ),
            );
        }
        return Ok(net);
    }
    let net = Ipv4Net {
        addr: address.network(),
        prefix_len: address.prefix_len,
    };
    if address.prefix_len > 30 || !hosts(&net) {
        return cx.err(
            t.address.span(),
            "tunnel.address",
            format!(
                "{address} is not a host address in a multipoint subnet (prefix length 8..=30, not the network or broadcast address; or a /32 with tunnel.network)"
            ),
        );
    }
    if address.prefix_len < 8 {
        return cx.err(
            t.address.span(),
            "tunnel.address",
            format!("prefix length /{} is wider than /8", address.prefix_len),
        );
    }
    if let Some(n) = &t.network
        && *n.get_ref() != net
    {
        return cx.err(
            n.span(),
            "tunnel.network",
            format!(
                "{} is not the subnet of tunnel.address {address} ({net}): tunnel.network names the subnet of a /32 tunnel.address; with a /{} address leave it out",
                n.get_ref(),
                address.prefix_len
            ),
        );
    }
    Ok(net)
}

fn broadcast(n: &Ipv4Net) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(n.network()) | !u32::from(n.netmask()))
}

/// Linux interface names: 1..=15 bytes (IFNAMSIZ 16 with the NUL), no '/', no whitespace, not
/// "." or ".." (dev_valid_name() in net/core/dev.c).
fn check_ifname(cx: &Ctx<'_>, n: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    let s = n.get_ref();
    let bad_char = s
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if s.is_empty() || s.len() > 15 || bad_char || s == "." || s == ".." {
        return cx.err(
            n.span(),
            key,
            format!(
                "`{s}` is not a valid Linux interface name (1 to 15 bytes, no '/', ':' or spaces)"
            ),
        );
    }
    Ok(())
}

/// Cisco `ip nhrp authentication` takes at most 8 characters; they travel as-is in the
/// authentication extension (RFC 2332 §5.3.4.1, type 1 cleartext).
fn check_nhrp_key(cx: &Ctx<'_>, v: &Spanned<String>) -> Result<Secret, ConfigError> {
    let len = v.get_ref().len();
    if len == 0 || len > 8 {
        return cx.err(
            v.span(),
            "nhrp.authentication",
            format!("must be 1 to 8 bytes (Cisco limit), got {len}"),
        );
    }
    Ok(Secret::new(v.get_ref().as_bytes().to_vec()))
}
