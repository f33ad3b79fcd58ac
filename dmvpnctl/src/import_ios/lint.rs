//! Lints: IOS settings that are accepted without complaint but silently do less than they
//! seem to, or make the tunnel fragment. Each finding names the line it is about. The codes are
//! stable (documented in docs/dmvpnctl.md).

use super::ios::{Ios, Replay, TransformSet};
use super::translate::Facts;
use super::{Finding, Kind};

/// dmvpnd's default replay window; smaller ones are flagged (see `replay-window-small`).
const REPLAY_RECOMMENDED: u32 = 1024;
/// IOS's replay window when none is configured (Cisco, "IPsec Anti-Replay Window: Expanding and
/// Disabling": "the default window size is 64 packets").
const IOS_DEFAULT_REPLAY: u32 = 64;
/// The underlay MTU assumed when the source interface sets none (Ethernet, and the EC2
/// Internet-gateway path).
const DEFAULT_UNDERLAY_MTU: u32 = 1500;
const IPV4: u32 = 20;
const UDP: u32 = 8;
const ESP_HEADER: u32 = 8; // SPI + sequence number (RFC 4303 §2)
const ESP_TRAILER: u32 = 2; // pad length + next header (RFC 4303 §2.4–2.6)

fn lint(out: &mut Vec<Finding>, line: usize, code: &'static str, message: String) {
    out.push(Finding {
        line,
        kind: Kind::Lint(code),
        message,
    });
}

/// ESP's per-packet cost for a transform set: (name, IV, block alignment, ICV).
fn esp_cost(t: &TransformSet) -> Option<(String, u32, u32, u32)> {
    let words: Vec<String> = t
        .transforms
        .iter()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    // AES-GCM/GMAC: 8-byte IV, 16-byte ICV, 4-byte alignment (RFC 4106 §3–§6, RFC 4543).
    if has("esp-gcm") || has("esp-gmac") {
        return Some(("esp-gcm".into(), 8, 4, 16));
    }
    // CBC ciphers: IV and padding of one block (RFC 3602 for AES, 16 bytes; 8 for (3)DES).
    let (name, iv) = if has("esp-aes") || has("esp-256-aes") || has("esp-192-aes") {
        ("esp-aes", 16)
    } else if has("esp-3des") || has("esp-des") {
        ("esp-3des", 8)
    } else {
        return None;
    };
    // Truncated HMACs: 96 bits for SHA-1/MD5 (RFC 2404, 2403), half the hash for SHA-2
    // (RFC 4868).
    let icv = if has("esp-sha512-hmac") {
        32
    } else if has("esp-sha384-hmac") {
        24
    } else if has("esp-sha256-hmac") {
        16
    } else if has("esp-sha-hmac") || has("esp-md5-hmac") {
        12
    } else {
        0
    };
    Some((name.into(), iv, iv, icv))
}

/// Outer IPv4 packet size for an inner packet of `inner` bytes: GRE (4, +4 with a key, RFC
/// 2890), ESP in transport mode (or tunnel mode: + a second IPv4 header), + UDP for NAT-T
/// (RFC 3948).
fn outer_size(
    inner: u32,
    gre_key: bool,
    cost: (u32, u32, u32),
    tunnel_mode: bool,
    natt: bool,
) -> u32 {
    let (iv, align, icv) = cost;
    let mut payload = inner + 4 + if gre_key { 4 } else { 0 };
    if tunnel_mode {
        payload += IPV4;
    }
    let padded = (payload + ESP_TRAILER).div_ceil(align) * align;
    IPV4 + if natt { UDP } else { 0 } + ESP_HEADER + iv + padded + icv
}

/// All lints for the translated tunnel.
pub fn check(ios: &Ios, facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();

    // proposal-unused: IOS uses only proposals a `crypto ikev2 policy` lists; without any
    // policy it negotiates its default policy and proposal (shared/reference/README.md; Cisco
    // "Configuring Internet Key Exchange Version 2 and FlexVPN Site-to-Site", IKEv2 smart
    // defaults: the default policy applies when no policy is configured).
    for p in &ios.proposals {
        let used = ios
            .policies
            .iter()
            .any(|pol| pol.proposals.iter().any(|r| r.value == p.name));
        if !used {
            let why = if ios.policies.is_empty() {
                "there is no `crypto ikev2 policy`, so IOS negotiates its default proposal instead"
            } else {
                "no `crypto ikev2 policy` lists it, so IOS never offers or accepts it"
            };
            lint(
                &mut out,
                p.line,
                "proposal-unused",
                format!("crypto ikev2 proposal {}: {why}", p.name),
            );
        }
    }

    // The rest is about the translated tunnel: nothing to say without one.
    if facts.tunnel_line == 0 {
        return out;
    }

    // transport-not-required: `mode transport` is a preference; when the peer does not agree
    // IOS quietly installs tunnel mode (docs/interop-notes.md §19), 20 bytes more per packet.
    // dmvpnd insists on transport mode, so a Cisco peer that falls back cannot talk to it.
    let cost = facts.transform_set.as_ref().and_then(esp_cost);
    let tunnel_mtu = tunnel_mtu(facts);
    let underlay = facts
        .underlay_mtu
        .as_ref()
        .map_or(DEFAULT_UNDERLAY_MTU, |m| m.value);
    if let Some(t) = &facts.transform_set
        && let Some(m) = &t.mode
        && m.value.0 == "transport"
        && !m.value.1
    {
        let mut msg = format!(
            "transform-set {}: `mode transport` without `require`: IOS falls back to \
                     tunnel mode if the peer does not agree (20 more bytes per packet; dmvpnd \
                     refuses tunnel mode)",
            t.name
        );
        if let Some((_, iv, align, icv)) = &cost {
            let fallback = outer_size(tunnel_mtu, facts.gre_key, (*iv, *align, *icv), true, true);
            if fallback > underlay {
                msg += &format!(
                    "; in tunnel mode a {tunnel_mtu}-byte packet becomes {fallback} bytes \
                             with NAT-T, over the {underlay}-byte underlay"
                );
            }
        }
        msg += "; write `mode transport require`";
        lint(&mut out, m.line, "transport-not-required", msg);
    }

    // nhrp-key-truncated: IOS takes at most 8 characters (Cisco command reference: "The string
    // can be up to eight characters long") and sends only those; the rest is silently unused.
    if let Some(a) = &facts.nhrp_auth
        && a.value.len() > 8
    {
        lint(
            &mut out,
            a.line,
            "nhrp-key-truncated",
            format!(
                "ip nhrp authentication: the key is {} bytes; IOS sends only the first 8, so \
                     the rest protects nothing (the secrets file holds those 8, as Cisco peers \
                     expect)",
                a.value.len()
            ),
        );
    }

    // mtu-missing / mtu-fragments: the outer packet for a full tunnel-MTU packet must fit the
    // underlay, with NAT-T, or IOS fragments every large packet (before encryption by
    // default, `crypto ipsec fragmentation`; after it otherwise).
    let mtu_line = facts.ip_mtu.as_ref().map_or(facts.tunnel_line, |m| m.line);
    if facts.ip_mtu.is_none() {
        lint(
            &mut out,
            facts.tunnel_line,
            "mtu-missing",
            format!(
                "no `ip mtu`: IOS sizes the tunnel from its source interface minus the GRE \
                 header (about {tunnel_mtu} bytes), without the IPsec overhead, so full-size \
                 packets are fragmented around the encryption; set `ip mtu 1400` (the translation \
                 uses dmvpnd's 1400)"
            ),
        );
    }
    if let (Some(t), Some((name, iv, align, icv))) = (&facts.transform_set, &cost) {
        let tunnel_mode = t.mode.as_ref().is_none_or(|m| m.value.0 != "transport");
        let c = (*iv, *align, *icv);
        let plain = outer_size(tunnel_mtu, facts.gre_key, c, tunnel_mode, false);
        let natt = outer_size(tunnel_mtu, facts.gre_key, c, tunnel_mode, true);
        if natt > underlay {
            let gre = if facts.gre_key { 8 } else { 4 };
            lint(
                &mut out,
                mtu_line,
                "mtu-fragments",
                format!(
                    "a {tunnel_mtu}-byte tunnel packet becomes {natt} bytes with NAT-T ({plain} \
                     without): GRE {gre} + ESP {name} ({ESP_HEADER} header + {iv} IV + padding + \
                     {ESP_TRAILER} trailer + {icv} ICV){} + IPv4 {IPV4} (+ UDP {UDP}), over the \
                     {underlay}-byte underlay{}; lower `ip mtu` to at most {}",
                    if tunnel_mode {
                        " in tunnel mode (+ IPv4 20)"
                    } else {
                        ""
                    },
                    facts
                        .underlay_mtu
                        .as_ref()
                        .map_or(String::new(), |m| format!(" (line {})", m.line)),
                    largest_fitting(underlay, facts.gre_key, c, tunnel_mode)
                ),
            );
        }
    }

    // mss-missing / mss-too-large: TCP sized for 1500-byte links overruns the tunnel MTU.
    match &facts.mss {
        None => lint(
            &mut out,
            facts.tunnel_line,
            "mss-missing",
            format!(
                "no `ip tcp adjust-mss`: hosts on 1500-byte links open TCP with MSS 1460, so \
                 full segments (1500 bytes) exceed the {tunnel_mtu}-byte tunnel and rely on \
                 fragmentation or path MTU discovery; set `ip tcp adjust-mss {}`",
                tunnel_mtu.saturating_sub(40)
            ),
        ),
        Some(m) if m.value + 40 > tunnel_mtu => lint(
            &mut out,
            m.line,
            "mss-too-large",
            format!(
                "ip tcp adjust-mss {}: a full segment is {} bytes (MSS + 40 bytes of IPv4 and \
                 TCP headers), over the {tunnel_mtu}-byte tunnel MTU; use at most {}",
                m.value,
                m.value + 40,
                tunnel_mtu.saturating_sub(40)
            ),
        ),
        Some(_) => {}
    }

    // Replay window: the receiver alone chooses it (RFC 4303 §3.4.3, docs/interop-notes.md
    // §27). QoS queues and parallel senders reorder packets of one SA; a packet that arrives
    // more than a window behind the newest is dropped as a replay (Cisco, "IPsec Anti-Replay
    // Window: Expanding and Disabling").
    let global = ios.replay.as_ref();
    let profile = facts.profile_replay.as_ref();
    let have_profile = facts.ipsec_profile_line.is_some();
    if let (Some(g), Some(p)) = (global, profile)
        && g.value != p.value
    {
        lint(
            &mut out,
            p.line,
            "replay-window-mismatch",
            format!(
                "the IPsec profile's replay setting ({}) overrides the global one on line {} \
                     ({}) for this tunnel",
                replay_text(p.value),
                g.line,
                replay_text(g.value)
            ),
        );
    }
    match profile.or(global) {
        None if !have_profile => {}
        None => lint(
            &mut out,
            facts.tunnel_line,
            "replay-window-default",
            format!(
                "no replay window-size: IOS uses {IOS_DEFAULT_REPLAY} packets, which QoS or \
                 multi-queue reordering overruns; set `crypto ipsec security-association replay \
                 window-size {REPLAY_RECOMMENDED}` (the translation keeps {IOS_DEFAULT_REPLAY})"
            ),
        ),
        Some(r) => {
            if let Replay::Window(n) = r.value
                && n < REPLAY_RECOMMENDED
            {
                lint(
                    &mut out,
                    r.line,
                    "replay-window-small",
                    format!(
                        "replay window-size {n} is below {REPLAY_RECOMMENDED} (dmvpnd's \
                             default): packets reordered by more than {n} (QoS queues, or a \
                             dmvpnd peer sending one SA from several packet workers) are \
                             dropped as replays"
                    ),
                );
            }
        }
    }

    // registration-timeout: IOS registers every holdtime/3 by default (as FRR and dmvpnd do,
    // docs/interop-notes.md §7); a longer interval leaves fewer than three chances per holding
    // time, and one at or over the holding time lets the hub's entry expire between
    // registrations (RFC 2332 §5.2.3: the registration is valid for the holding time only).
    if let Some(t) = &facts.registration_timeout {
        let hold = facts.holdtime.as_ref().map_or(7200, |h| h.value);
        if t.value >= hold {
            lint(
                &mut out,
                t.line,
                "registration-timeout",
                format!(
                    "registration timeout {} is not shorter than the holding time {hold}: the \
                     hub's entry expires before the next registration refreshes it",
                    t.value
                ),
            );
        } else if t.value > hold / 3 {
            lint(
                &mut out,
                t.line,
                "registration-timeout",
                format!(
                    "registration timeout {} is over a third of the holding time {hold} ({}): \
                     one lost registration or reply leaves the spoke unregistered at the hub",
                    t.value,
                    hold / 3
                ),
            );
        }
    }

    // isakmp-keepalive: `crypto isakmp keepalive` configures IKEv1 DPD; IKEv2 SAs use the IKEv2
    // profile's `dpd` (or `crypto ikev2 dpd`), so it looks like liveness checking but does
    // nothing for this tunnel.
    if let Some(l) = &ios.isakmp_keepalive {
        let applies = match &facts.dpd {
            Some(d) => format!(
                "the IKEv2 profile's `dpd {} {}` (line {}) is what applies",
                d.value.interval, d.value.retry, d.line
            ),
            None => "the IKEv2 SAs run no DPD at all".to_owned(),
        };
        lint(
            &mut out,
            l.num,
            "isakmp-keepalive",
            format!("`{}` is IKEv1 only: {applies}", l.text),
        );
    }

    // dpd-missing: without `dpd`, IOS never probes an IKEv2 peer, so a dead spoke's SAs and
    // NHRP entry linger until rekey or holding-time expiry (RFC 7296 §2.4 liveness checks are
    // optional).
    if facts.dpd.is_none()
        && let Some(line) = facts.ike_profile_line
    {
        lint(
            &mut out,
            line,
            "dpd-missing",
            "the IKEv2 profile has no `dpd`: IOS does not notice a dead peer until rekey; \
                 dmvpnd uses on-demand DPD (40 s, retry 5 s) by default"
                .to_owned(),
        );
    }

    out.sort_by_key(|f| f.line);
    out
}

fn replay_text(r: Replay) -> String {
    match r {
        Replay::Window(n) => format!("window-size {n}"),
        Replay::Disabled => "disable".to_owned(),
    }
}

/// The tunnel MTU in effect: `ip mtu`, else IOS's estimate (underlay minus IPv4 + GRE).
fn tunnel_mtu(facts: &Facts) -> u32 {
    match &facts.ip_mtu {
        Some(m) => m.value,
        None => {
            let underlay = facts
                .underlay_mtu
                .as_ref()
                .map_or(DEFAULT_UNDERLAY_MTU, |m| m.value);
            underlay.saturating_sub(IPV4 + 4 + if facts.gre_key { 4 } else { 0 })
        }
    }
}

fn largest_fitting(underlay: u32, gre_key: bool, cost: (u32, u32, u32), tunnel_mode: bool) -> u32 {
    (0..=underlay)
        .rev()
        .find(|m| outer_size(*m, gre_key, cost, tunnel_mode, true) <= underlay)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_transport_natt_budget_matches_interop_notes() {
        // docs/interop-notes.md §2: 1400 inner → 70..73 bytes of overhead with NAT-T.
        let s = outer_size(1400, true, (8, 4, 16), false, true);
        assert!((1470..=1473).contains(&s), "{s}");
        assert!(s <= 1500);
        assert_eq!(largest_fitting(1500, true, (8, 4, 16), false), 1430);
    }

    #[test]
    fn tunnel_mode_adds_an_ip_header() {
        let t = outer_size(1400, true, (8, 4, 16), true, true);
        assert_eq!(t, outer_size(1420, true, (8, 4, 16), false, true));
    }
}
