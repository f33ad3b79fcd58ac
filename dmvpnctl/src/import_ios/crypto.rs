//! The crypto chain of the IOS translation: from the tunnel's `tunnel protection ipsec
//! profile` through the transform set and IKEv2 profile to the keyring, and the proposals the
//! IKEv2 policies reference (IOS ignores the rest).

use std::collections::BTreeSet;

use super::Kind;
use super::ios::{At, Dpd, Ios};
use super::reader::{Line, is_placeholder};
use super::translate::{Facts, Proposal, Tx, esp_gcm, net, replay_from};

/// What the chain yields for the configuration, and which blocks it used (the others are
/// reported as not translated).
pub(super) struct Crypto {
    pub transform: &'static str,
    pub replay_window: (u32, String),
    pub ipsec_lifetime: (u32, String),
    pub ike_lifetime: (u32, String),
    pub dpd_out: Option<(Dpd, String)>,
    pub keyring_out: Vec<(String, String, String, usize)>,
    pub used_ipsec_profile: Option<String>,
    pub used_tset: BTreeSet<String>,
    pub used_ike_profile: Option<String>,
    pub used_keyring: Option<String>,
    pub proposals: Vec<Proposal>,
}

/// Follows the chain from `protection` (the tunnel's `tunnel protection` line).
pub(super) fn crypto_chain(
    ios: &Ios,
    tx: &mut Tx,
    facts: &mut Facts,
    tunnel: &Line,
    protection: Option<&Line>,
) -> Crypto {
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
                                    if let Some(a) = a
                                        && !a.value.eq_ignore_ascii_case("pre-share") {
                                            tx.error(a.line, format!("`authentication {what} {}`: dmvpnd authenticates with pre-shared keys only", a.value));
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

    Crypto {
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
    }
}
