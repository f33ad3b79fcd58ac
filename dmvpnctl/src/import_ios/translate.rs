//! IOS-XE DMVPN configuration → dmvpnd configuration and secrets (TOML text), following the
//! chain IOS itself follows: `interface Tunnel` → `tunnel protection ipsec profile` → its
//! transform set and `set ikev2-profile` → that profile's keyring, with the proposals the
//! `crypto ikev2 policy` blocks reference. Every line of those blocks is either translated (and
//! cited in a comment of the output) or reported; lines outside them are reported once per
//! block as outside dmvpnd's scope.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::ios::{At, Dpd, Ios, Replay, mask_len};
use super::reader::Line;
use super::{Finding, Kind};

/// Caller's choices that the IOS text cannot supply.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// IOS interface name → Linux interface name (`--interface GigabitEthernet1=eth0`).
    pub interfaces: BTreeMap<String, String>,
    /// Which `interface Tunnel…` to translate; default: the first mGRE one.
    pub tunnel: Option<String>,
}

/// What the lints need to know about the translated tunnel, with the lines it came from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub tunnel_line: usize,
    pub hub: bool,
    pub ip_mtu: Option<At<u32>>,
    pub mss: Option<At<u32>>,
    /// `mtu`/`ip mtu` of the interface `tunnel source` names; `None` = 1500.
    pub underlay_mtu: Option<At<u32>>,
    pub gre_key: bool,
    /// The transform set in use: its line, transforms and `mode` line.
    pub transform_set: Option<super::ios::TransformSet>,
    pub nhrp_auth: Option<At<String>>,
    pub holdtime: Option<At<u32>>,
    pub registration_timeout: Option<At<u32>>,
    /// The IPsec profile in use (its line) and its replay setting.
    pub ipsec_profile_line: Option<usize>,
    pub profile_replay: Option<At<Replay>>,
    /// The IKEv2 profile in use: its line and DPD.
    pub ike_profile_line: Option<usize>,
    pub dpd: Option<At<Dpd>>,
}

/// The result: both files' text (if a configuration could be built) and everything to report.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    pub config: Option<String>,
    pub secrets: String,
    pub findings: Vec<Finding>,
    pub facts: Facts,
}

pub(super) struct Tx {
    pub(super) findings: Vec<Finding>,
}

impl Tx {
    pub(super) fn push(&mut self, line: usize, kind: Kind, message: impl Into<String>) {
        self.findings.push(Finding {
            line,
            kind,
            message: message.into(),
        });
    }
    pub(super) fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Kind::Error, message);
    }
    pub(super) fn untranslated(&mut self, l: &Line, why: &str) {
        self.push(
            l.num,
            Kind::NotTranslated,
            format!("`{}`: {why}", redacted(l)),
        );
    }
    pub(super) fn note(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Kind::Note, message);
    }
}

/// The command with anything after a key-like word hidden, so keys never reach messages or
/// comments (`ip ospf authentication-key 7 …`, `pre-shared-key …`).
pub fn redacted(l: &Line) -> String {
    let mut out = Vec::new();
    for w in l.text.split_whitespace() {
        out.push(w);
        let lw = w.to_ascii_lowercase();
        if ["key", "password", "secret", "authentication"]
            .iter()
            .any(|k| lw.contains(k))
            && out.len() < l.text.split_whitespace().count()
        {
            out.push("…");
            break;
        }
    }
    out.join(" ")
}

/// TOML basic string.
pub(super) fn q(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub(super) fn net(a: Ipv4Addr, len: u8) -> String {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    format!("{}/{len}", Ipv4Addr::from(u32::from(a) & mask))
}

fn ipv4(w: &str) -> Option<Ipv4Addr> {
    w.parse().ok()
}

/// `ip address A M` of an interface block.
fn if_address(l: &Line) -> Option<(Ipv4Addr, u8, usize)> {
    l.children.iter().find_map(|c| {
        if c.starts(&["ip", "address"]) && c.words.len() == 4 {
            Some((ipv4(c.word(2))?, mask_len(ipv4(c.word(3))?)?, c.num))
        } else {
            None
        }
    })
}

/// The NHRP authentication key as Cisco sends it: the first 8 bytes of what was configured.
pub fn cisco_nhrp_key(k: &str) -> String {
    let mut out = String::new();
    for c in k.chars() {
        if out.len() + c.len_utf8() > 8 {
            break;
        }
        out.push(c);
    }
    out
}

pub(super) struct Proposal {
    pub(super) encryption: &'static str,
    pub(super) prf: &'static str,
    pub(super) group: u16,
    pub(super) line: usize,
    pub(super) name: String,
}

/// Translates `ios`; the caller validates the text with dmvpn-config.
pub fn translate(ios: &Ios, opts: &Options) -> Translation {
    let mut tx = Tx {
        findings: Vec::new(),
    };
    let mut facts = Facts::default();
    let out = build(ios, opts, &mut tx, &mut facts);
    let (config, secrets) = match out {
        Some((c, s)) => (Some(c), s),
        None => (None, String::new()),
    };
    Translation {
        config,
        secrets,
        findings: tx.findings,
        facts,
    }
}

fn build(ios: &Ios, opts: &Options, tx: &mut Tx, facts: &mut Facts) -> Option<(String, String)> {
    // --- which tunnel -------------------------------------------------------------------
    let tunnels: Vec<&Line> = ios
        .interfaces
        .iter()
        .filter(|i| i.word(1).to_ascii_lowercase().starts_with("tunnel"))
        .collect();
    let is_mgre = |t: &&&Line| {
        t.children
            .iter()
            .any(|c| c.starts(&["tunnel", "mode", "gre", "multipoint"]))
    };
    let tunnel = match &opts.tunnel {
        Some(name) => match tunnels
            .iter()
            .find(|t| t.rest(1).eq_ignore_ascii_case(name))
        {
            Some(t) => *t,
            None => {
                tx.error(0, format!("no `interface {name}` in the file"));
                return None;
            }
        },
        None => match tunnels.iter().find(is_mgre).or(tunnels.first()) {
            Some(t) => *t,
            None => {
                tx.error(
                    0,
                    "no `interface Tunnel…` in the file: nothing to translate",
                );
                return None;
            }
        },
    };
    facts.tunnel_line = tunnel.num;
    let tunnel_name = tunnel.rest(1);
    for t in &tunnels {
        if t.num != tunnel.num {
            tx.note(
                t.num,
                format!(
                    "`{}` not translated: one dmvpnd runs one tunnel; translate it with --tunnel {}",
                    t.text,
                    t.rest(1)
                ),
            );
        }
    }

    // --- the tunnel interface's lines ---------------------------------------------------
    let mut address: Option<(Ipv4Addr, u8, usize)> = None;
    let mut network_id: Option<At<u32>> = None;
    let mut redirect: Option<usize> = None;
    let mut shortcut: Option<(bool, usize)> = None;
    // (address, NBMA, multicast, priority, cluster, line)
    let mut nhs: Vec<(Ipv4Addr, Option<Ipv4Addr>, bool, u8, u8, usize)> = Vec::new();
    // `ip nhrp nhs cluster N max-connections M`: (cluster, limit, line)
    let mut clusters: Vec<(u8, u8, usize)> = Vec::new();
    let mut maps: Vec<(Ipv4Addr, Ipv4Addr, &Line)> = Vec::new();
    let mut mcast_maps: Vec<(Ipv4Addr, &Line)> = Vec::new();
    let mut mcast_dynamic: Option<&Line> = None;
    let mut source: Option<&Line> = None;
    let mut protection: Option<&Line> = None;
    let mut gre_key: Option<At<u32>> = None;
    let mut mode_ok = false;
    let mut description: Option<String> = None;
    let bad_value = |tx: &mut Tx, l: &Line| {
        if l.placeholders().is_empty() {
            tx.error(l.num, format!("`{}`: cannot read the value", redacted(l)));
        } else {
            tx.error(
                l.num,
                format!(
                    "`{}`: unresolved placeholder {}; give its value with --placeholder NAME=VALUE",
                    redacted(l),
                    l.placeholders().join(", ")
                ),
            );
        }
    };
    // A form of an optional command this translator does not read: not translated, unless a
    // placeholder hides the value (then the user can fix it, and it is an error).
    let other_form = |tx: &mut Tx, l: &Line| {
        if l.placeholders().is_empty() {
            tx.untranslated(l, "this form has no dmvpnd equivalent");
        } else {
            bad_value(tx, l);
        }
    };
    for c in &tunnel.children {
        let n = |i: usize| c.word(i).parse::<u32>().ok();
        if c.starts(&["description"]) {
            description = Some(c.rest(1));
        } else if c.starts(&["ip", "address"]) {
            match (
                c.words.len(),
                ipv4(c.word(2)),
                ipv4(c.word(3)).and_then(mask_len),
            ) {
                (4, Some(a), Some(len)) => address = Some((a, len, c.num)),
                _ => tx.untranslated(c, "dmvpnd takes one static address per tunnel"),
            }
        } else if c.starts(&["ip", "mtu"]) {
            match n(2) {
                Some(v) => {
                    facts.ip_mtu = Some(At {
                        value: v,
                        line: c.num,
                    })
                }
                None => bad_value(tx, c),
            }
        } else if c.starts(&["ip", "tcp", "adjust-mss"]) {
            match n(3) {
                Some(v) => {
                    facts.mss = Some(At {
                        value: v,
                        line: c.num,
                    })
                }
                None => bad_value(tx, c),
            }
        } else if c.starts(&["ip", "nhrp", "authentication"]) {
            facts.nhrp_auth = Some(At {
                value: c.rest(3),
                line: c.num,
            });
        } else if c.starts(&["ip", "nhrp", "network-id"]) {
            match n(3) {
                Some(v) => {
                    network_id = Some(At {
                        value: v,
                        line: c.num,
                    })
                }
                None => bad_value(tx, c),
            }
        } else if c.starts(&["ip", "nhrp", "holdtime"]) {
            match n(3) {
                Some(v) => {
                    facts.holdtime = Some(At {
                        value: v,
                        line: c.num,
                    })
                }
                None => bad_value(tx, c),
            }
        } else if c.starts(&["ip", "nhrp", "registration", "timeout"]) {
            match n(4) {
                Some(v) => {
                    facts.registration_timeout = Some(At {
                        value: v,
                        line: c.num,
                    });
                    tx.untranslated(
                        c,
                        "dmvpnd refreshes its registration at a third of the holding time \
                         (as FRR does, docs/interop-notes.md §7); the interval is not configurable",
                    );
                }
                None => bad_value(tx, c),
            }
        } else if c.starts(&["ip", "nhrp", "nhs", "cluster"]) {
            // IOS takes 0..=255 connections; dmvpnd refuses 0 (a cluster never used).
            let id = c.word(4).parse::<u8>().ok().filter(|n| *n <= 10);
            let max = c.word(6).parse::<u8>().ok().filter(|n| *n >= 1);
            match (id, c.word(5).eq_ignore_ascii_case("max-connections"), max) {
                (Some(id), true, Some(max)) if c.words.len() == 7 => {
                    clusters.push((id, max, c.num));
                }
                (Some(_), true, None) if c.word(6) == "0" => tx.untranslated(
                    c,
                    "max-connections 0 never registers with the cluster's NHSs: leave them out instead",
                ),
                _ => other_form(tx, c),
            }
        } else if c.starts(&["ip", "nhrp", "nhs"]) {
            if c.word(3).eq_ignore_ascii_case("dynamic") {
                tx.untranslated(
                    c,
                    "dmvpnd needs the NHS's tunnel address (ip nhrp nhs ADDRESS nbma NBMA)",
                );
                continue;
            }
            let Some(addr) = ipv4(c.word(3)) else {
                other_form(tx, c);
                continue;
            };
            let mut nbma = None;
            let mut multicast = false;
            let mut priority = 0u8;
            let mut cluster = 0u8;
            let mut i = 4;
            let mut extra = Vec::new();
            let mut bad = false;
            while i < c.words.len() {
                let w = c.word(i).to_ascii_lowercase();
                if w == "nbma" {
                    match ipv4(c.word(i + 1)) {
                        Some(a) => nbma = Some(a),
                        None => {
                            bad_value(tx, c);
                            bad = true;
                            break;
                        }
                    }
                    i += 2;
                } else if w == "multicast" {
                    multicast = true;
                    i += 1;
                } else if w == "priority" || w == "cluster" {
                    // priority 0..=255; cluster 0..=10.
                    let v = c.word(i + 1).parse::<u8>().ok();
                    match (w.as_str(), v) {
                        ("priority", Some(p)) => priority = p,
                        ("cluster", Some(n)) if n <= 10 => cluster = n,
                        _ => {
                            bad_value(tx, c);
                            bad = true;
                            break;
                        }
                    }
                    i += 2;
                } else {
                    extra.push(c.word(i).to_owned());
                    i += 1;
                }
            }
            if !extra.is_empty() {
                tx.untranslated(
                    c,
                    &format!(
                        "`{}` has no dmvpnd equivalent (the NHS itself is translated)",
                        extra.join(" ")
                    ),
                );
            }
            if !bad {
                nhs.push((addr, nbma, multicast, priority, cluster, c.num));
            }
        } else if c.starts(&["ip", "nhrp", "map", "multicast", "dynamic"]) {
            mcast_dynamic = Some(c);
        } else if c.starts(&["ip", "nhrp", "map", "multicast"]) {
            match ipv4(c.word(4)) {
                Some(a) => mcast_maps.push((a, c)),
                None => other_form(tx, c),
            }
        } else if c.starts(&["ip", "nhrp", "map"]) {
            match (ipv4(c.word(3)), ipv4(c.word(4))) {
                (Some(p), Some(nb)) if c.words.len() == 5 => maps.push((p, nb, c)),
                _ => other_form(tx, c),
            }
        } else if c.starts(&["ip", "nhrp", "redirect"]) {
            redirect = Some(c.num);
        } else if c.starts(&["ip", "nhrp", "shortcut"]) {
            shortcut = Some((true, c.num));
        } else if c.starts(&["no", "ip", "nhrp", "shortcut"]) {
            shortcut = Some((false, c.num));
        } else if c.starts(&["tunnel", "source"]) {
            source = Some(c);
        } else if c.starts(&["tunnel", "mode", "gre", "multipoint"]) {
            mode_ok = true;
        } else if c.starts(&["tunnel", "mode"]) {
            tx.error(
                c.num,
                format!(
                    "`{}`: dmvpnd is multipoint GRE only (tunnel mode gre multipoint)",
                    c.text
                ),
            );
        } else if c.starts(&["tunnel", "key"]) {
            match n(2) {
                Some(v) => {
                    gre_key = Some(At {
                        value: v,
                        line: c.num,
                    })
                }
                None => bad_value(tx, c),
            }
        } else if c.starts(&["tunnel", "protection", "ipsec", "profile"]) {
            protection = Some(c);
            if c.words.len() > 5 && !c.word(5).eq_ignore_ascii_case("shared") {
                tx.untranslated(c, "only the profile name is translated");
            }
        } else if c.starts(&["ip", "ospf"]) {
            tx.note(
                c.num,
                format!(
                    "`{}` not translated: OSPF runs in FRR on the host, over the tunnel device \
                     (docs/ospf.md)",
                    redacted(c)
                ),
            );
        } else if c.starts(&["no", "ip", "redirects"]) {
            tx.note(
                c.num,
                "`no ip redirects` not translated: ICMP redirects are the host kernel's \
                 (sysctl net.ipv4.conf.<tunnel>.send_redirects=0)",
            );
        } else {
            tx.untranslated(c, "no dmvpnd equivalent");
        }
    }
    if !mode_ok {
        tx.error(
            tunnel.num,
            format!("`{}` has no `tunnel mode gre multipoint`", tunnel.text),
        );
    }
    let Some((addr, plen, addr_line)) = address else {
        tx.error(
            tunnel.num,
            format!("`{}` has no `ip address A M`", tunnel.text),
        );
        return None;
    };
    let Some(network_id) = network_id else {
        tx.error(
            tunnel.num,
            format!(
                "`{}` has no `ip nhrp network-id`: IOS runs no NHRP on it",
                tunnel.text
            ),
        );
        return None;
    };
    facts.gre_key = gre_key.is_some();

    // NHSs: `ip nhrp nhs A nbma N` or the older `ip nhrp nhs A` + `ip nhrp map A N`.
    let mut nhs_out: Vec<super::emit::NhsOut> = Vec::new();
    let mut used_maps = BTreeSet::new();
    for (a, nbma, multicast, priority, cluster, line) in &nhs {
        let nbma = match nbma {
            Some(n) => Some((*n, format!("line {line}"))),
            None => maps.iter().find(|(p, _, _)| p == a).map(|(_, n, l)| {
                used_maps.insert(l.num);
                (*n, format!("lines {line}, {}", l.num))
            }),
        };
        let Some((nbma, lines)) = nbma else {
            tx.error(
                *line,
                format!("NHS {a} has no NBMA address (neither `nbma` nor an `ip nhrp map {a} …`)"),
            );
            continue;
        };
        let mut multicast = *multicast;
        if let Some((_, l)) = mcast_maps.iter().find(|(m, _)| *m == nbma) {
            multicast = true;
            used_maps.insert(l.num);
        }
        nhs_out.push(super::emit::NhsOut {
            address: *a,
            nbma,
            multicast,
            priority: *priority,
            cluster: *cluster,
            lines,
        });
    }
    for (_, _, l) in &maps {
        if !used_maps.contains(&l.num) {
            tx.untranslated(
                l,
                "dmvpnd has no static NHRP mappings other than its NHSs (ip nhrp nhs … nbma …)",
            );
        }
    }
    for (_, l) in &mcast_maps {
        if !used_maps.contains(&l.num) {
            tx.untranslated(
                l,
                "multicast goes only to NHSs (spoke) or registered spokes (hub)",
            );
        }
    }
    let hub = nhs.is_empty();
    facts.hub = hub;

    // --- tunnel source: underlay interface and address ---------------------------------
    let mut underlay_if: Option<(String, String)> = None;
    let mut local_address: Option<(Ipv4Addr, String)> = None;
    match source {
        None => tx.note(
            tunnel.num,
            "no `tunnel source`: dmvpnd binds the underlay to any interface",
        ),
        Some(s) => {
            let name = s.rest(2);
            if let Some(a) = ipv4(&name) {
                local_address = Some((a, format!("line {}: {}", s.num, s.text)));
            } else {
                match opts.interfaces.get(&name) {
                    Some(linux) => {
                        underlay_if = Some((linux.clone(), format!("line {}: {}", s.num, s.text)));
                    }
                    None => tx.untranslated(
                        s,
                        &format!(
                            "`{name}` is an IOS interface name; give the Linux one with \
                             --interface {name}=LINUX-NAME (the output binds to any interface)"
                        ),
                    ),
                }
                match ios.interface(&name) {
                    None => tx.note(
                        s.num,
                        format!(
                            "`interface {name}` is not in this file: underlay.local-address \
                             left to the source address of the route to each peer"
                        ),
                    ),
                    Some(i) => {
                        if let Some((a, _, line)) = if_address(i) {
                            local_address = Some((a, format!("line {line}: interface {name}")));
                        } else if i
                            .children
                            .iter()
                            .any(|c| c.starts(&["ip", "address", "dhcp"]))
                        {
                            // DHCP: the address is whatever the route to the peer uses.
                        }
                        tx.note(
                            i.num,
                            format!(
                                "`{}`: only its address and MTU are used; the rest of it is the \
                                 host's network configuration",
                                i.text
                            ),
                        );
                        for c in &i.children {
                            if c.starts(&["mtu"]) || c.starts(&["ip", "mtu"]) {
                                let v = c.words.last().and_then(|w| w.parse().ok());
                                if let Some(v) = v {
                                    facts.underlay_mtu = Some(At {
                                        value: v,
                                        line: c.num,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    let super::crypto::Crypto {
        transform,
        replay_window,
        ipsec_lifetime,
        ike_lifetime,
        dpd_out,
        keyring_out,
        used_ipsec_profile,
        used_tset,
        used_ike_profile,
        used_keyring,
        proposals,
    } = super::crypto::crypto_chain(ios, tx, facts, tunnel, protection);
    // Blocks not on the tunnel's chain.
    for p in &ios.ipsec_profiles {
        if used_ipsec_profile.as_deref() != Some(p.name.as_str()) {
            tx.note(
                p.line,
                format!(
                    "`crypto ipsec profile {}` not used by {tunnel_name}: not translated",
                    p.name
                ),
            );
        }
    }
    for t in &ios.transform_sets {
        if !used_tset.contains(&t.name) {
            tx.note(
                t.line,
                format!(
                    "`crypto ipsec transform-set {}` not used by {tunnel_name}: not translated",
                    t.name
                ),
            );
        }
    }
    for p in &ios.ike_profiles {
        if used_ike_profile.as_deref() != Some(p.name.as_str()) {
            tx.note(
                p.line,
                format!(
                    "`crypto ikev2 profile {}` not used by {tunnel_name}: not translated",
                    p.name
                ),
            );
        }
    }
    for k in &ios.keyrings {
        if used_keyring.as_deref() != Some(k.name.as_str()) {
            tx.note(
                k.line,
                format!(
                    "`crypto ikev2 keyring {}` not used by {tunnel_name}: not translated",
                    k.name
                ),
            );
        }
    }
    // `crypto isakmp keepalive` is reported by the lint `isakmp-keepalive`.
    for l in &ios.other_crypto {
        if l.starts(&["crypto", "ipsec", "df-bit"]) {
            tx.untranslated(
                l,
                "no dmvpnd setting (dmvpnd accepts fragmented ESP, docs/interop-notes.md §28)",
            );
        } else if l.starts(&["crypto", "ipsec", "security-association"])
            || l.starts(&["crypto", "ikev2", "nat"])
            || l.starts(&["crypto", "ikev2", "dpd"])
            || l.starts(&["crypto", "ikev2", "fragmentation"])
            || l.starts(&["crypto", "ikev2", "limit"])
            || l.starts(&["crypto", "ikev2", "cookie-challenge"])
        {
            // Global IKEv2/IPsec settings apply to the tunnel's SAs.
            tx.untranslated(l, "no dmvpnd setting");
        } else {
            tx.note(
                l.num,
                format!(
                    "`{}` not translated: not part of the DMVPN tunnel's IKEv2/IPsec chain",
                    redacted(l)
                ),
            );
        }
    }
    for i in &ios.interfaces {
        let name = i.rest(1);
        let is_source = source.is_some_and(|s| s.rest(2).eq_ignore_ascii_case(&name));
        if i.num != tunnel.num && !tunnels.iter().any(|t| t.num == i.num) && !is_source {
            tx.note(
                i.num,
                format!(
                    "`{}` not translated: neither the tunnel nor its source",
                    i.text
                ),
            );
        }
    }
    for l in &ios.other {
        let why = if l.starts(&["router"]) {
            "routing runs in FRR on the host (docs/ospf.md)"
        } else {
            "outside the DMVPN blocks"
        };
        tx.note(l.num, format!("`{}` not translated: {why}", redacted(l)));
    }

    // Routes into the tunnel.
    let mut routes: Vec<(String, Ipv4Addr, usize)> = Vec::new();
    let in_subnet = |a: Ipv4Addr| {
        let mask = if plen == 0 {
            0
        } else {
            u32::MAX << (32 - plen)
        };
        u32::from(a) & mask == u32::from(addr) & mask && a != addr
    };
    for r in &ios.routes {
        let prefix = ipv4(r.word(2));
        let len = ipv4(r.word(3)).and_then(mask_len);
        let via = r
            .words
            .get(4..)
            .unwrap_or_default()
            .iter()
            .find_map(|w| ipv4(w));
        let through_tunnel = r
            .words
            .get(4..)
            .unwrap_or_default()
            .iter()
            .any(|w| w.eq_ignore_ascii_case(&tunnel_name));
        match (prefix, len, via) {
            (Some(p), Some(len), Some(v)) if in_subnet(v) => routes.push((net(p, len), v, r.num)),
            _ if through_tunnel => tx.untranslated(
                r,
                "a route into the tunnel needs a next hop in the tunnel subnet",
            ),
            _ => tx.note(
                r.num,
                format!(
                    "`{}` not translated: not through the tunnel (the host's routing table)",
                    r.text
                ),
            ),
        }
    }

    let (c, s) = super::emit::emit(
        ios,
        opts,
        tx,
        facts,
        super::emit::Gathered {
            tunnel,
            tunnel_name,
            description,
            hub,
            addr,
            plen,
            addr_line,
            network_id,
            redirect,
            shortcut,
            gre_key,
            mcast_dynamic,
            nhs_out,
            clusters,
            underlay_if,
            local_address,
            transform,
            replay_window,
            ipsec_lifetime,
            ike_lifetime,
            dpd_out,
            keyring_out,
            used_keyring,
            proposals,
            routes,
        },
    );
    if tx.findings.iter().any(|f| f.kind == Kind::Error) {
        return None;
    }
    Some((c, s))
}

/// `esp-gcm [128|192|256]` → the dmvpnd transform name.
pub(super) fn esp_gcm(t: &[String]) -> Option<&'static str> {
    let i = t.iter().position(|w| w.eq_ignore_ascii_case("esp-gcm"))?;
    if t.len() > i + 2 || (t.len() == i + 2 && t[i + 1].parse::<u32>().is_err()) {
        return None; // a second transform (integrity) next to GCM
    }
    match t.get(i + 1).map(String::as_str) {
        None | Some("128") => Some("aes-gcm-128"),
        Some("256") => Some("aes-gcm-256"),
        _ => None,
    }
}

pub(super) fn replay_from(tx: &mut Tx, r: &At<Replay>, scope: &str) -> (u32, String) {
    match r.value {
        Replay::Window(n) if (32..=4096).contains(&n) => (
            n,
            format!("line {}: {scope} replay window-size {n}", r.line),
        ),
        Replay::Window(n) => {
            let v = n.clamp(32, 4096);
            tx.push(
                r.line,
                Kind::NotTranslated,
                format!("replay window-size {n}: dmvpnd accepts 32..=4096; translated as {v}"),
            );
            (
                v,
                format!("line {}: {scope} replay window-size {n}, clamped", r.line),
            )
        }
        Replay::Disabled => {
            tx.push(r.line, Kind::NotTranslated, "replay disable: dmvpnd always checks replay (RFC 4303 §3.4.3); translated as its largest window, 4096");
            (
                4096,
                format!(
                    "line {}: {scope} replay disable (dmvpnd cannot disable it)",
                    r.line
                ),
            )
        }
    }
}
