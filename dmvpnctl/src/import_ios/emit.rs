//! The emitting phase of the IOS translation: the dmvpnd configuration and secrets text
//! from what the reading phase gathered, each key citing the IOS line it comes from.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::Kind;
use super::ios::{At, Dpd, Ios};
use super::reader::{Line, is_placeholder};
use super::translate::{Facts, Options, Proposal, Tx, cisco_nhrp_key, q};

/// What the reading phase of [`super::translate::build`] gathered from the IOS file, for
/// the emitting phase.
pub(super) struct Gathered<'a> {
    pub tunnel: &'a Line,
    pub tunnel_name: String,
    pub description: Option<String>,
    pub hub: bool,
    pub addr: Ipv4Addr,
    pub plen: u8,
    pub addr_line: usize,
    pub network_id: At<u32>,
    pub redirect: Option<usize>,
    pub shortcut: Option<(bool, usize)>,
    pub gre_key: Option<At<u32>>,
    pub mcast_dynamic: Option<&'a Line>,
    pub nhs_out: Vec<NhsOut>,
    /// `ip nhrp nhs cluster N max-connections M`: (N, M, line).
    pub clusters: Vec<(u8, u8, usize)>,
    pub underlay_if: Option<(String, String)>,
    pub local_address: Option<(Ipv4Addr, String)>,
    pub transform: &'static str,
    pub replay_window: (u32, String),
    pub ipsec_lifetime: (u32, String),
    pub ike_lifetime: (u32, String),
    pub dpd_out: Option<(Dpd, String)>,
    pub keyring_out: Vec<(String, String, String, usize)>,
    pub used_keyring: Option<String>,
    pub proposals: Vec<Proposal>,
    pub routes: Vec<(String, Ipv4Addr, usize)>,
}

/// One `ip nhrp nhs` as translated.
#[derive(Debug)]
pub(super) struct NhsOut {
    pub address: Ipv4Addr,
    pub nbma: Ipv4Addr,
    pub multicast: bool,
    pub priority: u8,
    pub cluster: u8,
    /// The IOS lines it comes from (`line N` or `lines N, M`).
    pub lines: String,
}

/// The configuration text and the secrets text.
pub(super) fn emit(
    ios: &Ios,
    opts: &Options,
    tx: &mut Tx,
    facts: &Facts,
    g: Gathered<'_>,
) -> (String, String) {
    let Gathered {
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
    } = g;
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
    for n in &nhs_out {
        let mut ios = format!("ip nhrp nhs {} nbma {}", n.address, n.nbma);
        if n.multicast {
            ios.push_str(" multicast");
        }
        if n.priority != 0 {
            let _ = write!(ios, " priority {}", n.priority);
        }
        if n.cluster != 0 {
            let _ = write!(ios, " cluster {}", n.cluster);
        }
        let _ = writeln!(c, "\n# {}: {ios}", n.lines);
        let _ = writeln!(
            c,
            "[[nhrp.nhs]]\naddress = {}\nnbma = {}\nmulticast = {}",
            q(&n.address.to_string()),
            q(&n.nbma.to_string()),
            n.multicast
        );
        if n.priority != 0 {
            let _ = writeln!(c, "priority = {}", n.priority);
        }
        if n.cluster != 0 {
            let _ = writeln!(c, "cluster = {}", n.cluster);
        }
    }
    for (id, max, line) in &clusters {
        let _ = writeln!(
            c,
            "\n# line {line}: ip nhrp nhs cluster {id} max-connections {max}\n[[nhrp.cluster]]\nid = {id}\nmax-connections = {max}"
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

    (c, s)
}
