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
use super::reader::{Line, is_placeholder};
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

struct Tx {
    findings: Vec<Finding>,
}

impl Tx {
    fn push(&mut self, line: usize, kind: Kind, message: impl Into<String>) {
        self.findings.push(Finding {
            line,
            kind,
            message: message.into(),
        });
    }
    fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Kind::Error, message);
    }
    fn untranslated(&mut self, l: &Line, why: &str) {
        self.push(
            l.num,
            Kind::NotTranslated,
            format!("`{}`: {why}", redacted(l)),
        );
    }
    fn note(&mut self, line: usize, message: impl Into<String>) {
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
fn q(s: &str) -> String {
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

fn net(a: Ipv4Addr, len: u8) -> String {
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

struct Proposal {
    encryption: &'static str,
    prf: &'static str,
    group: u16,
    line: usize,
    name: String,
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
    let mut nhs: Vec<(Ipv4Addr, Option<Ipv4Addr>, bool, usize)> = Vec::new();
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
                nhs.push((addr, nbma, multicast, c.num));
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
    let mut nhs_out: Vec<(Ipv4Addr, Ipv4Addr, bool, String)> = Vec::new();
    let mut used_maps = BTreeSet::new();
    for (a, nbma, multicast, line) in &nhs {
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
        nhs_out.push((*a, nbma, multicast, lines));
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

    // --- crypto chain -------------------------------------------------------------------
    let mut transform = "aes-gcm-256";
    let mut replay_window: (u32, String) =
        (64, "IOS default (no replay window-size configured)".into());
    let mut ipsec_lifetime: (u32, String) = (3600, "IOS default".into());
    let mut ike_lifetime: (u32, String) = (86400, "IOS default".into());
    let mut dpd_out: Option<(Dpd, String)> = None;
    let mut keyring_out: Vec<(String, String, String, usize)> = Vec::new(); // name, peer, psk, line
    let mut used_ipsec_profile = None;
    let mut used_tset = BTreeSet::new();
    let mut used_ike_profile = None;
    let mut used_keyring = None;
    if let Some(r) = &ios.replay {
        replay_window = replay_from(tx, r, "global");
    }
    if let Some(l) = &ios.ipsec_lifetime {
        ipsec_lifetime = (l.value, format!("line {}", l.line));
    }
    match protection {
        None => tx.error(
            tunnel.num,
            format!(
                "`{}` has no `tunnel protection ipsec profile`: dmvpnd always protects the tunnel \
                 with IPsec, so its peers would need it too",
                tunnel.text
            ),
        ),
        Some(p) => {
            let pname = p.word(4).to_owned();
            match ios.ipsec_profile(&pname) {
                None => tx.error(
                    p.num,
                    format!("no `crypto ipsec profile {pname}` in the file"),
                ),
                Some(prof) => {
                    used_ipsec_profile = Some(prof.name.clone());
                    facts.ipsec_profile_line = Some(prof.line);
                    for l in &prof.unhandled {
                        tx.untranslated(l, "no dmvpnd equivalent");
                    }
                    if let Some(pfs) = &prof.pfs {
                        tx.push(
                            pfs.line,
                            Kind::NotTranslated,
                            format!("`set pfs {}`: no dmvpnd setting", pfs.value),
                        );
                    }
                    if let Some(r) = &prof.replay {
                        facts.profile_replay = Some(r.clone());
                        replay_window = replay_from(tx, r, "IPsec profile");
                    }
                    if let Some(l) = &prof.lifetime {
                        ipsec_lifetime = (l.value, format!("line {}", l.line));
                    }
                    // Transform set.
                    match prof.transform_sets.first() {
                        None => tx.error(
                            prof.line,
                            format!(
                                "`crypto ipsec profile {}` has no `set transform-set`",
                                prof.name
                            ),
                        ),
                        Some(ts) => {
                            for other in &prof.transform_sets[1..] {
                                tx.push(other.line, Kind::NotTranslated, format!("transform set `{}`: dmvpnd offers one ESP transform; only `{}` is translated", other.value, ts.value));
                            }
                            match ios.transform_set(&ts.value) {
                                None => tx.error(
                                    ts.line,
                                    format!(
                                        "no `crypto ipsec transform-set {}` in the file",
                                        ts.value
                                    ),
                                ),
                                Some(t) => {
                                    used_tset.insert(t.name.clone());
                                    facts.transform_set = Some(t.clone());
                                    for l in &t.unhandled {
                                        tx.untranslated(l, "no dmvpnd equivalent");
                                    }
                                    match esp_gcm(&t.transforms) {
                                        Some(e) => transform = e,
                                        None => tx.error(t.line, format!("transform set `{}` ({}): dmvpnd does ESP with AES-GCM only (esp-gcm 128 or esp-gcm 256, RFC 4106)", t.name, t.transforms.join(" "))),
                                    }
                                    match &t.mode {
                                        Some(m) if m.value.0 == "transport" => {}
                                        Some(m) => tx.push(m.line, Kind::NotTranslated, format!("`mode {}`: dmvpnd runs ESP in transport mode only (GRE carries the inner packet, RFC 4303 §3.1.1); translated as transport, so the peers must offer transport mode", m.value.0)),
                                        None => tx.push(t.line, Kind::NotTranslated, "no `mode` line: IOS defaults to tunnel mode; dmvpnd runs transport mode only (translated as transport, so the peers must offer it)"),
                                    }
                                }
                            }
                        }
                    }
                    // IKEv2 profile.
                    match &prof.ikev2_profile {
                        None => tx.error(prof.line, format!("`crypto ipsec profile {}` has no `set ikev2-profile` (IKEv1 is not supported)", prof.name)),
                        Some(ip) => match ios.ike_profile(&ip.value) {
                            None => tx.error(ip.line, format!("no `crypto ikev2 profile {}` in the file", ip.value)),
                            Some(ikp) => {
                                used_ike_profile = Some(ikp.name.clone());
                                facts.ike_profile_line = Some(ikp.line);
                                for l in &ikp.unhandled {
                                    tx.untranslated(l, "no dmvpnd equivalent");
                                }
                                for (what, a) in [("local", &ikp.auth_local), ("remote", &ikp.auth_remote)] {
                                    if let Some(a) = a {
                                        if !a.value.eq_ignore_ascii_case("pre-share") {
                                            tx.error(a.line, format!("`authentication {what} {}`: dmvpnd authenticates with pre-shared keys only", a.value));
                                        }
                                    }
                                }
                                if let Some(l) = &ikp.lifetime {
                                    ike_lifetime = (l.value, format!("line {}", l.line));
                                }
                                let dpd = ikp.dpd.clone().or(ios.ikev2_dpd.clone());
                                facts.dpd = dpd.clone();
                                if let Some(d) = dpd {
                                    dpd_out = Some((d.value, format!("line {}", d.line)));
                                }
                                match &ikp.keyring {
                                    None => tx.error(ikp.line, format!("`crypto ikev2 profile {}` has no `keyring local`", ikp.name)),
                                    Some(kr) => match ios.keyring(&kr.value) {
                                        None => tx.error(kr.line, format!("no `crypto ikev2 keyring {}` in the file", kr.value)),
                                        Some(k) => {
                                            used_keyring = Some(k.name.clone());
                                            for l in &k.unhandled {
                                                tx.untranslated(l, "no dmvpnd equivalent");
                                            }
                                            for p in &k.peers {
                                                for l in &p.unhandled {
                                                    tx.untranslated(l, "no dmvpnd equivalent (type 6 keys cannot be read without the router's master key)");
                                                }
                                                let Some(a) = &p.address else {
                                                    tx.untranslated(&Line { num: p.line, indent: 1, text: format!("peer {}", p.name), words: vec![], children: vec![] }, "no `address`: dmvpnd matches keyring peers by address only");
                                                    continue;
                                                };
                                                let psk = match (&p.psk, &p.psk_local, &p.psk_remote) {
                                                    (Some(k), _, _) => Some(k.clone()),
                                                    (None, Some(l), Some(r)) if l.value == r.value => Some(l.clone()),
                                                    (None, Some(l), Some(_)) => {
                                                        tx.error(l.line, format!("peer {}: different local and remote pre-shared keys; dmvpnd uses one key both ways", p.name));
                                                        None
                                                    }
                                                    _ => {
                                                        tx.error(p.line, format!("peer {}: no pre-shared key", p.name));
                                                        None
                                                    }
                                                };
                                                let Some(psk) = psk else { continue };
                                                if is_placeholder(&psk.value) {
                                                    tx.push(psk.line, Kind::NotTranslated, format!("peer {}: the pre-shared key is the unresolved placeholder {}; written to the secrets file as is (give the key with --placeholder)", p.name, psk.value));
                                                }
                                                keyring_out.push((p.name.clone(), net(a.value.0, a.value.1), psk.value.clone(), p.line));
                                            }
                                        }
                                    },
                                }
                            }
                        },
                    }
                }
            }
        }
    }
    if keyring_out.is_empty() && !tx.findings.iter().any(|f| f.kind == Kind::Error) {
        tx.error(tunnel.num, "no usable IKEv2 keyring peer for the tunnel");
    }

    // Proposals: those referenced by a policy; IOS ignores the rest.
    let referenced: Vec<&At<String>> = ios.policies.iter().flat_map(|p| &p.proposals).collect();
    for p in &ios.policies {
        for l in &p.unhandled {
            tx.untranslated(l, "no dmvpnd equivalent");
        }
    }
    let mut chosen: Vec<&super::ios::Proposal> = Vec::new();
    for r in &referenced {
        match ios.proposals.iter().find(|p| p.name == r.value) {
            Some(p) if !chosen.iter().any(|c| c.name == p.name) => chosen.push(p),
            Some(_) => {}
            None => tx.push(
                r.line,
                Kind::NotTranslated,
                format!("`proposal {}`: no such `crypto ikev2 proposal`", r.value),
            ),
        }
    }
    if chosen.is_empty() && !ios.proposals.is_empty() {
        // Lint `proposal-unused` says why; translate what was written so the output is usable.
        chosen = ios.proposals.iter().collect();
        tx.note(chosen[0].line, "no `crypto ikev2 policy` references a proposal: translating the proposals as written, though IOS negotiates its default proposal instead");
    }
    let mut proposals: Vec<Proposal> = Vec::new();
    for p in &chosen {
        for l in &p.unhandled {
            tx.untranslated(l, "no dmvpnd equivalent");
        }
        for i in &p.integrity {
            tx.push(
                i.line,
                Kind::NotTranslated,
                format!(
                    "`integrity {}`: AES-GCM has no separate integrity algorithm",
                    i.value
                ),
            );
        }
        let encs: Vec<&'static str> = p.encryption.iter().filter_map(|e| match e.value.to_ascii_lowercase().as_str() {
            "aes-gcm-256" => Some("aes-gcm-256"),
            "aes-gcm-128" => Some("aes-gcm-128"),
            other => {
                tx.push(e.line, Kind::NotTranslated, format!("proposal {}: encryption `{other}` is not supported (AES-GCM 128/256 only)", p.name));
                None
            }
        }).collect();
        let prfs: Vec<&'static str> = p
            .prf
            .iter()
            .filter_map(|e| match e.value.to_ascii_lowercase().as_str() {
                "sha256" => Some("sha256"),
                "sha384" => Some("sha384"),
                "sha512" => Some("sha512"),
                other => {
                    tx.push(
                        e.line,
                        Kind::NotTranslated,
                        format!(
                            "proposal {}: prf `{other}` is not supported (sha256, sha384, sha512)",
                            p.name
                        ),
                    );
                    None
                }
            })
            .collect();
        let groups: Vec<u16> = p
            .group
            .iter()
            .filter_map(|e| match e.value.parse::<u16>() {
                Ok(g) if dmvpn_config::DhGroup::SUPPORTED.contains(&g) => Some(g),
                _ => {
                    tx.push(
                        e.line,
                        Kind::NotTranslated,
                        format!(
                            "proposal {}: group {} is not supported (19, 20, 31)",
                            p.name, e.value
                        ),
                    );
                    None
                }
            })
            .collect();
        if p.prf.is_empty() {
            tx.error(
                p.line,
                format!(
                    "proposal {}: no `prf` (AES-GCM needs one, RFC 5282)",
                    p.name
                ),
            );
        }
        for e in &encs {
            for f in &prfs {
                for g in &groups {
                    if !proposals
                        .iter()
                        .any(|x| x.encryption == *e && x.prf == *f && x.group == *g)
                    {
                        proposals.push(Proposal {
                            encryption: e,
                            prf: f,
                            group: *g,
                            line: p.line,
                            name: p.name.clone(),
                        });
                    }
                }
            }
        }
    }
    if proposals.is_empty() {
        tx.error(
            0,
            "no IKEv2 proposal dmvpnd can use (AES-GCM with sha256/384/512 and group 19, 20 or 31)",
        );
    }

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

    // --- emit ---------------------------------------------------------------------------
    let mut c = String::new();
    let mut s = String::new();
    let _ = writeln!(
        c,
        "# dmvpnd {} translated from an IOS-XE configuration by `dmvpnctl import-ios`.",
        if hub { "hub" } else { "spoke" }
    );
    let _ = writeln!(
        c,
        "# Each key cites the IOS line it comes from; durations are seconds."
    );
    if let Some(d) = &description {
        let _ = writeln!(c, "# {tunnel_name}: {d}");
    }
    let _ = writeln!(c, "\nsecrets = \"secrets.toml\"\n");
    let _ = writeln!(c, "[ike]");
    match &ios.nat_keepalive {
        Some(k) => {
            let _ = writeln!(
                c,
                "nat-keepalive = {}  # line {}: crypto ikev2 nat keepalive",
                k.value, k.line
            );
        }
        None => {
            let _ = writeln!(
                c,
                "nat-keepalive = 20  # not configured on IOS (its default: off); dmvpnd's default"
            );
        }
    }
    let _ = writeln!(c, "lifetime = {}  # {}", ike_lifetime.0, ike_lifetime.1);
    for p in &proposals {
        let _ = writeln!(c, "\n# line {}: crypto ikev2 proposal {}", p.line, p.name);
        let _ = writeln!(
            c,
            "[[ike.proposal]]\nencryption = {}\nprf = {}\ngroup = {}",
            q(p.encryption),
            q(p.prf),
            p.group
        );
    }
    let _ = writeln!(
        s,
        "# dmvpnd secrets translated by `dmvpnctl import-ios`: keep this file mode 0600.\n\n[psk]"
    );
    for (name, peer, psk, line) in &keyring_out {
        let _ = writeln!(
            c,
            "\n# line {line}: keyring {} peer {name}",
            used_keyring.as_deref().unwrap_or("")
        );
        let _ = writeln!(c, "[[ike.keyring]]\nname = {}\npeer = {}", q(name), q(peer));
        let _ = writeln!(s, "{} = {}", q(name), q(psk));
    }
    match &dpd_out {
        Some((d, src)) => {
            let _ = writeln!(
                c,
                "\n# {src}: dpd {} {} {}",
                d.interval,
                d.retry,
                if d.periodic { "periodic" } else { "on-demand" }
            );
            let _ = writeln!(
                c,
                "[ike.dpd]\ndelay = {}\nretry = {}\nmode = {}",
                d.interval,
                d.retry,
                q(if d.periodic { "periodic" } else { "on-demand" })
            );
        }
        None => {
            let _ = writeln!(
                c,
                "\n# no dpd on IOS: dmvpnd's default on-demand DPD (40 s, retry 5 s) applies"
            );
        }
    }
    if let Some(t) = &facts.transform_set {
        let mode = t.mode.as_ref().map_or(String::new(), |m| {
            format!(
                " / line {}: mode {}{}",
                m.line,
                m.value.0,
                if m.value.1 { " require" } else { "" }
            )
        });
        let _ = writeln!(
            c,
            "\n# line {}: crypto ipsec transform-set {} {}{mode}",
            t.line,
            t.name,
            t.transforms.join(" ")
        );
    }
    let _ = writeln!(c, "[ipsec]\ntransform = {}", q(transform));
    let _ = writeln!(c, "mode = \"transport\"");
    let _ = writeln!(
        c,
        "replay-window = {}  # {}",
        replay_window.0, replay_window.1
    );
    let _ = writeln!(c, "lifetime = {}  # {}", ipsec_lifetime.0, ipsec_lifetime.1);

    let linux_tunnel = opts
        .interfaces
        .get(&tunnel_name)
        .cloned()
        .unwrap_or_else(|| {
            let n = tunnel_name.trim_start_matches(|ch: char| ch.is_ascii_alphabetic());
            format!("dmvpn{n}")
        });
    let _ = writeln!(c, "\n# line {}: {}", tunnel.num, tunnel.text);
    let _ = writeln!(c, "[tunnel]\ninterface = {}", q(&linux_tunnel));
    let _ = writeln!(
        c,
        "address = {}  # line {addr_line}: ip address",
        q(&format!("{addr}/{plen}"))
    );
    let mtu = match &facts.ip_mtu {
        Some(m) => {
            let _ = writeln!(c, "mtu = {}  # line {}: ip mtu", m.value, m.line);
            m.value
        }
        None => {
            let _ = writeln!(c, "mtu = 1400  # no ip mtu on IOS: dmvpnd's default");
            1400
        }
    };
    if let Some(m) = &facts.mss {
        let max = mtu.saturating_sub(40);
        let v = m.value.clamp(500, max.max(500));
        if v != m.value {
            let _ = writeln!(
                c,
                "adjust-mss = {v}  # line {}: ip tcp adjust-mss {} (clamped to dmvpnd's 500..=mtu-40)",
                m.line, m.value
            );
            tx.push(m.line, Kind::NotTranslated, format!("ip tcp adjust-mss {}: dmvpnd accepts 500..={max} with this MTU; translated as {v}", m.value));
        } else {
            let _ = writeln!(c, "adjust-mss = {v}  # line {}: ip tcp adjust-mss", m.line);
        }
    }
    if let Some(k) = &gre_key {
        let _ = writeln!(c, "gre-key = {}  # line {}: tunnel key", k.value, k.line);
    }

    let _ = writeln!(
        c,
        "\n[nhrp]\nrole = {}",
        q(if hub { "hub" } else { "spoke" })
    );
    let _ = writeln!(
        c,
        "network-id = {}  # line {}: ip nhrp network-id",
        network_id.value, network_id.line
    );
    match &facts.holdtime {
        Some(h) => {
            let _ = writeln!(
                c,
                "holding-time = {}  # line {}: ip nhrp holdtime",
                h.value, h.line
            );
        }
        None => {
            let _ = writeln!(c, "holding-time = 7200  # IOS default");
        }
    }
    if hub {
        if let Some(l) = redirect {
            let _ = writeln!(c, "redirect = true  # line {l}: ip nhrp redirect");
        }
        if let Some((true, l)) = shortcut {
            tx.push(l, Kind::NotTranslated, "ip nhrp shortcut on a hub: dmvpnd's hub forwards and redirects, it installs no shortcuts");
        }
        if let Some(l) = mcast_dynamic {
            let _ = writeln!(
                c,
                "# line {}: ip nhrp map multicast dynamic (a dmvpnd hub replicates multicast to registered spokes)",
                l.num
            );
        }
    } else {
        match shortcut {
            Some((v, l)) => {
                let _ = writeln!(c, "shortcut = {v}  # line {l}");
            }
            None => {
                let _ = writeln!(
                    c,
                    "shortcut = true  # no ip nhrp shortcut line: dmvpnd's default (phase 3)"
                );
                tx.note(tunnel.num, "no `ip nhrp shortcut` line: translated as dmvpnd's default shortcut = true (write `no ip nhrp shortcut` to turn it off)");
            }
        }
        if let Some(l) = redirect {
            tx.push(
                l,
                Kind::NotTranslated,
                "ip nhrp redirect on a spoke: dmvpnd sends traffic indications only as hub",
            );
        }
        if let Some(l) = mcast_dynamic {
            tx.untranslated(
                l,
                "multicast to dynamic peers is a hub's; a dmvpnd spoke sends multicast to its NHSs",
            );
        }
    }
    if let Some(a) = &facts.nhrp_auth {
        let key = cisco_nhrp_key(&a.value);
        let _ = writeln!(
            c,
            "# line {}: ip nhrp authentication (key in the secrets file)",
            a.line
        );
        let _ = writeln!(s, "\n[nhrp]\nauthentication = {}", q(&key));
        if is_placeholder(&a.value) {
            tx.push(a.line, Kind::NotTranslated, format!("the NHRP key is the unresolved placeholder {}; written as Cisco would send it (its first 8 bytes) — give the key with --placeholder", a.value));
        }
    }
    for (a, nbma, mc, lines) in &nhs_out {
        let _ = writeln!(
            c,
            "\n# {lines}: ip nhrp nhs {a} nbma {nbma}{}",
            if *mc { " multicast" } else { "" }
        );
        let _ = writeln!(
            c,
            "[[nhrp.nhs]]\naddress = {}\nnbma = {}\nmulticast = {mc}",
            q(&a.to_string()),
            q(&nbma.to_string())
        );
    }

    let _ = writeln!(c, "\n[underlay]");
    match &underlay_if {
        Some((n, src)) => {
            let _ = writeln!(c, "interface = {}  # {src}", q(n));
        }
        None => {
            let _ = writeln!(
                c,
                "# interface: not set (binds to any); see the import report"
            );
        }
    }
    match &local_address {
        Some((a, src)) => {
            let _ = writeln!(c, "local-address = {}  # {src}", q(&a.to_string()));
        }
        None => {
            let _ = writeln!(
                c,
                "# local-address: the source address of the route to each peer"
            );
        }
    }
    for (p, via, line) in &routes {
        let _ = writeln!(
            c,
            "\n# line {line}: ip route\n[[route]]\nprefix = {}\nvia = {}",
            q(p),
            q(&via.to_string())
        );
    }

    if tx.findings.iter().any(|f| f.kind == Kind::Error) {
        return None;
    }
    Some((c, s))
}

/// `esp-gcm [128|192|256]` → the dmvpnd transform name.
fn esp_gcm(t: &[String]) -> Option<&'static str> {
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

fn replay_from(tx: &mut Tx, r: &At<Replay>, scope: &str) -> (u32, String) {
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
