//! The DMVPN-relevant parts of an IOS-XE configuration as typed records, each value with the line
//! it came from. Sub-mode lines this module does not understand are kept in `unhandled` of their
//! block so the translator can report them instead of dropping them.

use std::net::Ipv4Addr;

use super::reader::Line;

/// A value and the 1-based line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub line: usize,
}

fn at<T>(value: T, line: &Line) -> At<T> {
    At {
        value,
        line: line.num,
    }
}

/// `crypto ikev2 proposal NAME`.
#[derive(Debug, Clone, Default)]
pub struct Proposal {
    pub name: String,
    pub line: usize,
    pub encryption: Vec<At<String>>,
    pub prf: Vec<At<String>>,
    pub integrity: Vec<At<String>>,
    pub group: Vec<At<String>>,
    pub unhandled: Vec<Line>,
}

/// `crypto ikev2 policy NAME`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub proposals: Vec<At<String>>,
    pub unhandled: Vec<Line>,
}

/// One `peer` of a `crypto ikev2 keyring`.
#[derive(Debug, Clone, Default)]
pub struct KeyringPeer {
    pub name: String,
    pub line: usize,
    /// `address A M` (or `address A` for one host): address and prefix length.
    pub address: Option<At<(Ipv4Addr, u8)>>,
    /// `pre-shared-key [0] KEY`; `local`/`remote` forms as (local, remote).
    pub psk: Option<At<String>>,
    pub psk_local: Option<At<String>>,
    pub psk_remote: Option<At<String>>,
    pub unhandled: Vec<Line>,
}

#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub name: String,
    pub line: usize,
    pub peers: Vec<KeyringPeer>,
    pub unhandled: Vec<Line>,
}

/// `dpd INTERVAL RETRY on-demand|periodic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dpd {
    pub interval: u32,
    pub retry: u32,
    pub periodic: bool,
}

/// `crypto ikev2 profile NAME`.
#[derive(Debug, Clone, Default)]
pub struct IkeProfile {
    pub name: String,
    pub line: usize,
    pub keyring: Option<At<String>>,
    pub dpd: Option<At<Dpd>>,
    pub lifetime: Option<At<u32>>,
    pub auth_local: Option<At<String>>,
    pub auth_remote: Option<At<String>>,
    pub unhandled: Vec<Line>,
}

/// `crypto ipsec transform-set NAME T1 [T2]`.
#[derive(Debug, Clone, Default)]
pub struct TransformSet {
    pub name: String,
    pub line: usize,
    pub transforms: Vec<String>,
    /// `mode transport|tunnel [require]`; `None` = IOS default (tunnel).
    pub mode: Option<At<(String, bool)>>,
    pub unhandled: Vec<Line>,
}

/// `replay window-size N` or `replay disable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    Window(u32),
    Disabled,
}

/// `crypto ipsec profile NAME`.
#[derive(Debug, Clone, Default)]
pub struct IpsecProfile {
    pub name: String,
    pub line: usize,
    pub transform_sets: Vec<At<String>>,
    pub ikev2_profile: Option<At<String>>,
    pub replay: Option<At<Replay>>,
    pub lifetime: Option<At<u32>>,
    pub pfs: Option<At<String>>,
    pub unhandled: Vec<Line>,
}

/// Everything read from the file, plus the top-level lines no record took.
#[derive(Debug, Clone, Default)]
pub struct Ios {
    pub proposals: Vec<Proposal>,
    pub policies: Vec<Policy>,
    pub keyrings: Vec<Keyring>,
    pub ike_profiles: Vec<IkeProfile>,
    pub transform_sets: Vec<TransformSet>,
    pub ipsec_profiles: Vec<IpsecProfile>,
    /// `interface NAME` blocks, as read.
    pub interfaces: Vec<Line>,
    /// `crypto ipsec security-association replay …`.
    pub replay: Option<At<Replay>>,
    /// `crypto ipsec security-association lifetime seconds N`.
    pub ipsec_lifetime: Option<At<u32>>,
    /// `crypto ikev2 nat keepalive N`.
    pub nat_keepalive: Option<At<u32>>,
    /// `crypto ikev2 dpd INTERVAL RETRY MODE` (global default for profiles without one).
    pub ikev2_dpd: Option<At<Dpd>>,
    /// `crypto isakmp keepalive …` (IKEv1 only).
    pub isakmp_keepalive: Option<Line>,
    /// `ip route …` lines.
    pub routes: Vec<Line>,
    /// Other crypto lines (DMVPN-related, not understood) and other top-level blocks.
    pub other_crypto: Vec<Line>,
    pub other: Vec<Line>,
}

fn num(line: &Line, i: usize) -> Option<u32> {
    line.word(i).parse().ok()
}

fn parse_dpd(line: &Line, first: usize) -> Option<Dpd> {
    let interval = num(line, first)?;
    let retry = num(line, first + 1)?;
    let periodic = match line.word(first + 2).to_ascii_lowercase().as_str() {
        "periodic" => true,
        "on-demand" => false,
        _ => return None,
    };
    Some(Dpd {
        interval,
        retry,
        periodic,
    })
}

/// Dotted-quad netmask to prefix length; `None` if not contiguous.
pub fn mask_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

fn parse_replay(line: &Line, first: usize) -> Option<Replay> {
    // `... replay window-size N` | `... replay disable`
    match line.word(first).to_ascii_lowercase().as_str() {
        "window-size" => num(line, first + 1).map(Replay::Window),
        "disable" => Some(Replay::Disabled),
        _ => None,
    }
}

/// Reads the typed records out of the parsed lines.
pub fn read(top: &[Line]) -> Ios {
    let mut ios = Ios::default();
    for l in top {
        if l.starts(&["crypto", "ikev2", "proposal"]) {
            let mut p = Proposal {
                name: l.rest(3),
                line: l.num,
                ..Default::default()
            };
            for c in &l.children {
                let vals = || c.words[1..].iter().map(|w| at(w.clone(), c)).collect();
                match c.word(0).to_ascii_lowercase().as_str() {
                    "encryption" => p.encryption = vals(),
                    "prf" => p.prf = vals(),
                    "integrity" => p.integrity = vals(),
                    "group" => p.group = vals(),
                    _ => p.unhandled.push(c.clone()),
                }
            }
            ios.proposals.push(p);
        } else if l.starts(&["crypto", "ikev2", "policy"]) {
            let mut p = Policy::default();
            for c in &l.children {
                if c.starts(&["proposal"]) {
                    p.proposals.push(at(c.rest(1), c));
                } else if c.starts(&["match", "fvrf", "any"]) || c.starts(&["match", "address"]) {
                    // Selects the policy by front-door VRF / local address; one dmvpnd has
                    // one underlay, so any match applies.
                } else {
                    p.unhandled.push(c.clone());
                }
            }
            ios.policies.push(p);
        } else if l.starts(&["crypto", "ikev2", "keyring"]) {
            let mut k = Keyring {
                name: l.rest(3),
                line: l.num,
                ..Default::default()
            };
            for c in &l.children {
                if !c.starts(&["peer"]) {
                    k.unhandled.push(c.clone());
                    continue;
                }
                let mut p = KeyringPeer {
                    name: c.rest(1),
                    line: c.num,
                    ..Default::default()
                };
                for d in &c.children {
                    if d.starts(&["address"]) {
                        let addr: Option<Ipv4Addr> = d.word(1).parse().ok();
                        let len = if d.words.len() == 2 {
                            Some(32)
                        } else {
                            d.word(2).parse().ok().and_then(mask_len)
                        };
                        match (addr, len) {
                            (Some(a), Some(n)) => p.address = Some(at((a, n), d)),
                            _ => p.unhandled.push(d.clone()),
                        }
                    } else if d.starts(&["pre-shared-key"]) {
                        // pre-shared-key [0|6] KEY | local [0|6] KEY | remote [0|6] KEY
                        let mut i = 1;
                        let which = d.word(1).to_ascii_lowercase();
                        if which == "local" || which == "remote" {
                            i = 2;
                        }
                        if d.word(i) == "6" {
                            // Type 6 is encrypted with the router's master key: not readable here.
                            p.unhandled.push(d.clone());
                            continue;
                        }
                        if d.word(i) == "0" && d.words.len() > i + 1 {
                            i += 1;
                        }
                        let key = at(d.rest(i), d);
                        match which.as_str() {
                            "local" => p.psk_local = Some(key),
                            "remote" => p.psk_remote = Some(key),
                            _ => p.psk = Some(key),
                        }
                    } else {
                        p.unhandled.push(d.clone());
                    }
                }
                k.peers.push(p);
            }
            ios.keyrings.push(k);
        } else if l.starts(&["crypto", "ikev2", "profile"]) {
            let mut p = IkeProfile {
                name: l.rest(3),
                line: l.num,
                ..Default::default()
            };
            for c in &l.children {
                if c.starts(&["keyring", "local"]) {
                    p.keyring = Some(at(c.rest(2), c));
                } else if c.starts(&["dpd"]) {
                    match parse_dpd(c, 1) {
                        Some(d) => p.dpd = Some(at(d, c)),
                        None => p.unhandled.push(c.clone()),
                    }
                } else if c.starts(&["lifetime"]) && num(c, 1).is_some() {
                    p.lifetime = num(c, 1).map(|n| at(n, c));
                } else if c.starts(&["authentication", "local"]) {
                    p.auth_local = Some(at(c.rest(2), c));
                } else if c.starts(&["authentication", "remote"]) {
                    p.auth_remote = Some(at(c.rest(2), c));
                } else if c.starts(&["description"])
                    || c.starts(&["match", "identity", "remote", "address", "0.0.0.0"])
                    || c.starts(&["match", "fvrf", "any"])
                {
                    // Cosmetic, or "any peer" (what a dmvpnd keyring wildcard does).
                } else {
                    p.unhandled.push(c.clone());
                }
            }
            ios.ike_profiles.push(p);
        } else if l.starts(&["crypto", "ipsec", "transform-set"]) {
            let mut t = TransformSet {
                name: l.word(3).to_owned(),
                line: l.num,
                transforms: l.words.get(4..).map_or(Vec::new(), <[String]>::to_vec),
                ..Default::default()
            };
            for c in &l.children {
                if c.starts(&["mode"]) {
                    let require = c.word(2).eq_ignore_ascii_case("require");
                    t.mode = Some(at((c.word(1).to_ascii_lowercase(), require), c));
                } else {
                    t.unhandled.push(c.clone());
                }
            }
            ios.transform_sets.push(t);
        } else if l.starts(&["crypto", "ipsec", "profile"]) {
            let mut p = IpsecProfile {
                name: l.rest(3),
                line: l.num,
                ..Default::default()
            };
            for c in &l.children {
                if c.starts(&["set", "transform-set"]) {
                    p.transform_sets = c.words[2..].iter().map(|w| at(w.clone(), c)).collect();
                } else if c.starts(&["set", "ikev2-profile"]) {
                    p.ikev2_profile = Some(at(c.rest(2), c));
                } else if c.starts(&["set", "security-association", "replay"]) {
                    match parse_replay(c, 3) {
                        Some(r) => p.replay = Some(at(r, c)),
                        None => p.unhandled.push(c.clone()),
                    }
                } else if c.starts(&["set", "security-association", "lifetime", "seconds"]) {
                    match num(c, 4) {
                        Some(n) => p.lifetime = Some(at(n, c)),
                        None => p.unhandled.push(c.clone()),
                    }
                } else if c.starts(&["set", "pfs"]) {
                    p.pfs = Some(at(c.rest(2), c));
                } else {
                    p.unhandled.push(c.clone());
                }
            }
            ios.ipsec_profiles.push(p);
        } else if l.starts(&["crypto", "ipsec", "security-association", "replay"]) {
            match parse_replay(l, 4) {
                Some(r) => ios.replay = Some(at(r, l)),
                None => ios.other_crypto.push(l.clone()),
            }
        } else if l.starts(&[
            "crypto",
            "ipsec",
            "security-association",
            "lifetime",
            "seconds",
        ]) && num(l, 5).is_some()
        {
            ios.ipsec_lifetime = num(l, 5).map(|n| at(n, l));
        } else if l.starts(&["crypto", "ikev2", "nat", "keepalive"]) && num(l, 4).is_some() {
            ios.nat_keepalive = num(l, 4).map(|n| at(n, l));
        } else if l.starts(&["crypto", "ikev2", "dpd"]) && parse_dpd(l, 3).is_some() {
            ios.ikev2_dpd = parse_dpd(l, 3).map(|d| at(d, l));
        } else if l.starts(&["crypto", "isakmp", "keepalive"]) {
            ios.isakmp_keepalive = Some(l.clone());
        } else if l.starts(&["crypto"]) {
            ios.other_crypto.push(l.clone());
        } else if l.starts(&["interface"]) {
            ios.interfaces.push(l.clone());
        } else if l.starts(&["ip", "route"]) {
            ios.routes.push(l.clone());
        } else {
            ios.other.push(l.clone());
        }
    }
    ios
}

impl Ios {
    pub fn interface(&self, name: &str) -> Option<&Line> {
        self.interfaces
            .iter()
            .find(|i| i.rest(1).eq_ignore_ascii_case(name))
    }

    pub fn ipsec_profile(&self, name: &str) -> Option<&IpsecProfile> {
        self.ipsec_profiles.iter().find(|p| p.name == name)
    }

    pub fn transform_set(&self, name: &str) -> Option<&TransformSet> {
        self.transform_sets.iter().find(|p| p.name == name)
    }

    pub fn ike_profile(&self, name: &str) -> Option<&IkeProfile> {
        self.ike_profiles.iter().find(|p| p.name == name)
    }

    pub fn keyring(&self, name: &str) -> Option<&Keyring> {
        self.keyrings.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_len("255.255.255.0".parse().unwrap()), Some(24));
        assert_eq!(mask_len("0.0.0.0".parse().unwrap()), Some(0));
        assert_eq!(mask_len("255.255.255.255".parse().unwrap()), Some(32));
        assert_eq!(mask_len("255.0.255.0".parse().unwrap()), None);
    }
}
